//! The durable Raft log: openraft's `RaftLogStorage` over the `raft-log` write-ahead log.
//!
//! raft-log checksums every record, truncates a torn tail on reopen and fails closed on fsync
//! errors. Records are MessagePack (self-delimiting, unlike JSON). openraft is told an append
//! is durable only from raft-log's flush callback, which runs after fsync; votes and
//! truncations wait for their own fsync before returning. A store carries a format version in
//! raft-log's user-data slot, checked on open.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};
use raft_log::api::raft_log_writer::RaftLogWriter;
use raft_log::codeq::{Decode, Encode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{Entry, LogId, Payload, TypeConfig, Vote};

/// Version of what this module writes into the WAL (the encoding of ids, votes and payloads).
pub const FORMAT_VERSION: u32 = 1;

/// A value stored in the WAL as MessagePack with named fields, so that adding a field later
/// stays readable.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Packed<T>(pub T);

impl<T: Serialize> Encode for Packed<T> {
    fn encode<W: io::Write>(&self, mut w: W) -> Result<usize, io::Error> {
        let bytes = rmp_serde::to_vec_named(&self.0).map_err(io::Error::other)?;
        w.write_all(&bytes)?;
        Ok(bytes.len())
    }
}

impl<T: DeserializeOwned> Decode for Packed<T> {
    fn decode<R: io::Read>(r: R) -> Result<Self, io::Error> {
        rmp_serde::from_read(r).map(Packed).map_err(|e| match e {
            // A record cut short by the end of its file (a torn tail: power lost mid-append)
            // must stay an end-of-file error: that is the one raft-log truncates on reopen.
            // Reported as invalid data, it made the log refuse to open instead.
            rmp_serde::decode::Error::InvalidMarkerRead(io) | rmp_serde::decode::Error::InvalidDataRead(io)
                if io.kind() == io::ErrorKind::UnexpectedEof =>
            {
                io
            }
            e => io::Error::new(io::ErrorKind::InvalidData, e),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreMeta {
    pub format_version: u32,
}

/// Completion of a raft-log flush: either openraft's own callback, or a waiter in this module.
pub enum Flushed {
    Raft(IOFlushed<TypeConfig>),
    Wait(tokio::sync::oneshot::Sender<io::Result<()>>),
    Blocking(std::sync::mpsc::SyncSender<io::Result<()>>),
}

impl raft_log::Callback for Flushed {
    fn send(self, res: Result<(), io::Error>) {
        match self {
            Flushed::Raft(cb) => cb.io_completed(res),
            Flushed::Wait(tx) => {
                // The waiter may have given up; nothing else is owed to it.
                tx.send(res).ok();
            }
            Flushed::Blocking(tx) => {
                tx.send(res);
            }
        }
    }
}

impl Debug for Flushed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Flushed")
    }
}

#[derive(Debug, Default, PartialEq, Eq, Clone)]
pub struct WalTypes;

impl raft_log::Types for WalTypes {
    type LogId = Packed<LogId>;
    type LogPayload = Packed<Payload>;
    type Vote = Packed<Vote>;
    type Callback = Flushed;
    type UserData = Packed<StoreMeta>;

    fn log_index(log_id: &Self::LogId) -> u64 {
        log_id.0.index
    }

    fn payload_size(_payload: &Self::LogPayload) -> u64 {
        // Only sizes raft-log's read cache; witness entries are small.
        256
    }
}

type Wal = raft_log::RaftLog<WalTypes>;

#[derive(Clone)]
pub struct LogStore {
    wal: Arc<Mutex<Wal>>,
}

impl LogStore {
    pub fn open(dir: &Path) -> io::Result<LogStore> {
        super::snapshot_file::create_dir_durably(dir)?;
        let config = raft_log::Config::new(dir.to_string_lossy());
        let mut wal = Wal::open(Arc::new(config))
            .map_err(|e| io::Error::new(e.kind(), format!("cannot open Raft log in {}: {e}", dir.display())))?;
        match wal.log_state().user_data.clone() {
            Some(Packed(meta)) if meta.format_version == FORMAT_VERSION => {}
            Some(Packed(meta)) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "Raft log in {} has format version {}, this build reads version {FORMAT_VERSION}",
                        dir.display(),
                        meta.format_version
                    ),
                ))
            }
            None => {
                wal.save_user_data(Some(Packed(StoreMeta { format_version: FORMAT_VERSION })))?;
                let (tx, rx) = std::sync::mpsc::sync_channel(1);
                wal.flush(true, Some(Flushed::Blocking(tx)))?;
                rx.recv().map_err(|_| io::Error::other("raft-log flush worker stopped"))??;
            }
        }
        Ok(LogStore { wal: Arc::new(Mutex::new(wal)) })
    }

    fn wal(&self) -> MutexGuard<'_, Wal> {
        // A poisoned lock means a panic mid-write; continuing could hide a half-applied change.
        self.wal.lock().expect("raft log lock poisoned")
    }

    /// Flushes with fsync and waits for it, without holding the lock while waiting.
    async fn sync(&self) -> io::Result<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.wal().flush(true, Some(Flushed::Wait(tx)))?;
        rx.await.map_err(|_| io::Error::other("raft-log flush worker stopped"))?
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s + 1,
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&e) => e + 1,
            Bound::Excluded(&e) => e,
            Bound::Unbounded => u64::MAX,
        };
        let wal = self.wal();
        wal.read(start, end).map(|r| r.map(|(id, payload)| Entry { log_id: id.0, payload: payload.0 })).collect()
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(self.wal().log_state().vote().map(|v| v.0))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let wal = self.wal();
        let st = wal.log_state();
        let last_purged_log_id = st.purged().map(|p| p.0);
        let last_log_id = st.last().map(|l| l.0).or(last_purged_log_id);
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        self.wal().save_vote(Packed(*vote))?;
        self.sync().await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        if let Some(id) = committed {
            let mut wal = self.wal();
            wal.commit(Packed(id))?;
            // Best effort: a lost commit index is recomputed from the quorum after restart.
            wal.flush(false, None)?;
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.wal().log_state().committed().map(|c| c.0))
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut wal = self.wal();
        wal.append(entries.into_iter().map(|e| (Packed(e.log_id), Packed(e.payload))))?;
        wal.flush(true, Some(Flushed::Raft(callback)))
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map_or(0, |id| id.index + 1);
        {
            let mut wal = self.wal();
            // Nothing stored at or after `from`: raft-log's truncate wants an existing entry
            // just before the cut, and there is nothing to cut anyway.
            if wal.log_state().last().is_none_or(|last| last.0.index < from) {
                return Ok(());
            }
            wal.truncate(from)?;
        }
        self.sync().await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        let mut wal = self.wal();
        wal.purge(Packed(log_id))?;
        wal.flush(true, None)
    }
}

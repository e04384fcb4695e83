//! openraft's `RaftStateMachine` over the pure [`State`]: applies committed entries in memory
//! and keeps snapshots in one file, `<data_dir>/snapshot/current.snap`.
//!
//! The state is small (sites, groups, epochs), so it lives in memory and a snapshot is the
//! whole of it. On start the last snapshot is loaded (its checksum verified; a bad file stops
//! the node rather than serving from a wrong state) and openraft replays the committed log
//! after it.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use futures::{Stream, TryStreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};

use super::{snapshot_file, LogId, SnapshotMeta, StoredMembership, TypeConfig};
use crate::state::{Response, State};

pub type Snapshot = openraft::alias::SnapshotOf<TypeConfig, Vec<u8>>;

/// What the state machine has applied: shared read-only with the API.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Applied {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    pub state: State,
}

/// The contents of a snapshot file.
#[derive(Serialize, Deserialize)]
struct SnapshotBody {
    meta: SnapshotMeta,
    applied: Applied,
}

pub type SharedApplied = Arc<RwLock<Applied>>;

pub struct StateMachine {
    applied: SharedApplied,
    snapshots: Arc<SnapshotFile>,
}

/// The one snapshot file. Writes are serialized and never replace a newer snapshot with an
/// older one: a snapshot built from an older state can finish after a newer one was installed
/// from the leader, and restarting from it would leave a gap before the (purged) log.
struct SnapshotFile {
    path: PathBuf,
    newest: Mutex<Option<LogId>>,
}

impl SnapshotFile {
    async fn save(self: &Arc<Self>, last_log_id: Option<LogId>, bytes: Vec<u8>) -> io::Result<()> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut newest = this.newest.lock().expect("snapshot lock poisoned");
            if *newest > last_log_id {
                return Ok(());
            }
            snapshot_file::write_atomic(&this.path, &bytes)?;
            *newest = last_log_id;
            Ok(())
        })
        .await
        .map_err(io::Error::other)?
    }
}

impl StateMachine {
    /// Opens the state machine of a data directory, loading its snapshot if there is one.
    pub fn open(data_dir: &Path) -> io::Result<StateMachine> {
        let snapshot_path = data_dir.join("snapshot").join("current.snap");
        let (snapshot_meta, applied) = match std::fs::read(&snapshot_path) {
            Ok(bytes) => {
                let (meta, applied) = decode(&bytes)
                    .map_err(|e| io::Error::new(e.kind(), format!("snapshot {}: {e}", snapshot_path.display())))?;
                (Some(meta), applied)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => (None, Applied::default()),
            Err(e) => {
                return Err(io::Error::new(e.kind(), format!("cannot read snapshot {}: {e}", snapshot_path.display())))
            }
        };
        Ok(StateMachine {
            applied: Arc::new(RwLock::new(applied)),
            snapshots: Arc::new(SnapshotFile {
                path: snapshot_path,
                newest: Mutex::new(snapshot_meta.and_then(|m| m.last_log_id)),
            }),
        })
    }

    pub fn shared(&self) -> SharedApplied {
        self.applied.clone()
    }
}

/// Checks a snapshot received from a leader: its frame, its checksum and that its contents
/// are the state its metadata describes. The transport calls this before handing the snapshot
/// to Raft, because Raft treats a failed install as a fatal storage error.
pub fn verify_received(meta: &SnapshotMeta, bytes: &[u8]) -> io::Result<Applied> {
    let (stored_meta, applied) = decode(bytes)?;
    if &stored_meta != meta || applied.last_applied != meta.last_log_id {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("snapshot contents ({stored_meta:?}) do not match its metadata ({meta:?})"),
        ));
    }
    Ok(applied)
}

/// A snapshot of `applied`: its meta, and its bytes as stored and sent to followers.
pub fn encode(applied: Applied) -> io::Result<(SnapshotMeta, Vec<u8>)> {
    let meta = SnapshotMeta { last_log_id: applied.last_applied, last_membership: applied.membership.clone() };
    let body = SnapshotBody { meta: meta.clone(), applied };
    Ok((meta, snapshot_file::encode(&serde_json::to_vec(&body).map_err(io::Error::other)?)))
}

fn decode(bytes: &[u8]) -> io::Result<(SnapshotMeta, Applied)> {
    let payload = snapshot_file::decode(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let body: SnapshotBody =
        serde_json::from_slice(payload).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    Ok((body.meta, body.applied))
}

pub struct SnapshotBuilder {
    applied: SharedApplied,
    snapshots: Arc<SnapshotFile>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let applied = self.applied.read().expect("state lock poisoned").clone();
        let (meta, bytes) = encode(applied)?;
        self.snapshots.save(meta.last_log_id, bytes.clone()).await?;
        Ok(Snapshot { meta, snapshot: bytes })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let a = self.applied.read().expect("state lock poisoned");
        Ok((a.last_applied, a.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        while let Some((entry, responder)) = entries.try_next().await? {
            let response = {
                let mut a = self.applied.write().expect("state lock poisoned");
                a.last_applied = Some(entry.log_id);
                match entry.payload {
                    EntryPayload::Blank => Response::None,
                    EntryPayload::Normal(logged) => a.state.apply_logged(logged),
                    EntryPayload::Membership(m) => {
                        a.membership = StoredMembership::new(Some(entry.log_id), m);
                        Response::None
                    }
                }
            };
            if let Some(r) = responder {
                r.send(response);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder { applied: self.applied.clone(), snapshots: self.snapshots.clone() }
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: Vec<u8>) -> Result<(), io::Error> {
        let applied = verify_received(meta, &snapshot)?;
        // Durable first: a crash after replacing memory but before the file would restart from
        // an older snapshot with a log that no longer reaches back to it.
        self.snapshots.save(meta.last_log_id, snapshot).await?;
        *self.applied.write().expect("state lock poisoned") = applied;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        match tokio::fs::read(&self.snapshots.path).await {
            Ok(bytes) => {
                let (meta, _) = decode(&bytes)?;
                Ok(Some(Snapshot { meta, snapshot: bytes }))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

//! The durable log store and state machine against openraft's storage conformance suite,
//! plus what the suite does not cover: reopening after a clean stop, a torn tail, and
//! snapshots across restarts.

use std::fs::OpenOptions;
use std::io::Write;

use openraft::storage::{IOFlushed, RaftLogStorage, RaftStateMachine};
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::type_config::TypeConfigExt;
use openraft::{EntryPayload, LogId, RaftLogReader, RaftSnapshotBuilder, StorageError, Vote};
use tempfile::TempDir;
use witness::raft::log_store::LogStore;
use witness::raft::state_machine::StateMachine;
use witness::raft::{Entry, NodeId, TypeConfig};
use witness::state::{Command, Epoch, Logged};

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = LogStore::open(&dir.path().join("raft-log")).expect("open log");
        let sm = StateMachine::open(dir.path()).expect("open sm");
        Ok((dir, log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite() -> Result<(), StorageError<TypeConfig>> {
    Suite::test_all(Builder).await
}

fn log_id(term: u64, index: u64) -> witness::raft::LogId {
    LogId::new(openraft::impls::leader_id_adv::LeaderId { term, node_id: NodeId(1) }, index)
}

fn entry(term: u64, index: u64) -> Entry {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(Logged {
            at_ms: index,
            command: Command::Activate {
                group: format!("g{index}").into(),
                site: "west".into(),
                expected_epoch: Epoch(index),
            },
            by: None,
        }),
    }
}

async fn append(store: &mut LogStore, entries: Vec<Entry>) {
    let (tx, rx) = TypeConfig::oneshot();
    store.append(entries, IOFlushed::signal(tx)).await.expect("append");
    rx.await.expect("flush callback").expect("fsync");
}

#[tokio::test]
async fn reopen_after_clean_stop_keeps_vote_entries_and_commit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raft-log");
    {
        let mut store = LogStore::open(&path).unwrap();
        store.save_vote(&Vote::new_committed(3, NodeId(2))).await.unwrap();
        append(&mut store, (1..=50).map(|i| entry(3, i)).collect()).await;
        store.save_committed(Some(log_id(3, 40))).await.unwrap();
        store.truncate_after(Some(log_id(3, 45))).await.unwrap();
    }
    let mut store = LogStore::open(&path).unwrap();
    assert_eq!(store.read_vote().await.unwrap(), Some(Vote::new_committed(3, NodeId(2))));
    let state = store.get_log_state().await.unwrap();
    assert_eq!(state.last_log_id, Some(log_id(3, 45)));
    let entries = store.try_get_log_entries(1..=45).await.unwrap();
    assert_eq!(entries.len(), 45);
    assert_eq!(entries[9], entry(3, 10));
    assert_eq!(store.read_committed().await.unwrap(), Some(log_id(3, 40)));
}

#[tokio::test]
async fn torn_tail_is_cut_and_earlier_entries_survive() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raft-log");
    {
        let mut store = LogStore::open(&path).unwrap();
        append(&mut store, (1..=20).map(|i| entry(1, i)).collect()).await;
    }
    // A crash while the file was being extended can leave a zero-filled tail after the last
    // complete record.
    let mut chunks: Vec<_> = std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()).collect();
    chunks.sort();
    let newest = chunks.last().expect("a chunk file");
    let mut f = OpenOptions::new().append(true).open(newest).unwrap();
    f.write_all(&[0u8; 4096]).unwrap();
    f.sync_all().unwrap();
    drop(f);

    let mut store = LogStore::open(&path).expect("reopen after torn write");
    assert_eq!(store.get_log_state().await.unwrap().last_log_id, Some(log_id(1, 20)));
    assert_eq!(store.try_get_log_entries(1..=20).await.unwrap().len(), 20);
    // The store stays writable after the repair.
    append(&mut store, vec![entry(1, 21)]).await;
    drop(store);
    let mut store = LogStore::open(&path).unwrap();
    assert_eq!(store.get_log_state().await.unwrap().last_log_id, Some(log_id(1, 21)));
}

#[tokio::test]
async fn truncated_last_record_is_dropped_not_misread() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raft-log");
    {
        let mut store = LogStore::open(&path).unwrap();
        append(&mut store, (1..=10).map(|i| entry(1, i)).collect()).await;
    }
    let mut chunks: Vec<_> = std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()).collect();
    chunks.sort();
    let newest = chunks.last().unwrap();
    let len = std::fs::metadata(newest).unwrap().len();
    OpenOptions::new().write(true).open(newest).unwrap().set_len(len - 5).unwrap();

    let mut store = LogStore::open(&path).expect("reopen after truncated write");
    let last = store.get_log_state().await.unwrap().last_log_id.expect("entries remain");
    assert_eq!(last, log_id(1, 9), "the torn 10th entry is gone, the 9 before it intact");
    assert_eq!(store.try_get_log_entries(1..=9).await.unwrap().len(), 9);
}

#[tokio::test]
async fn last_record_torn_at_any_byte_is_dropped_not_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raft-log");
    {
        let mut store = LogStore::open(&path).unwrap();
        append(&mut store, (1..=10).map(|i| entry(1, i)).collect()).await;
    }
    let files: Vec<(std::path::PathBuf, Vec<u8>)> = std::fs::read_dir(&path)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    let newest = files.iter().map(|f| &f.0).filter(|p| p.extension().is_some_and(|e| e == "wal")).max().unwrap();
    let len = std::fs::metadata(newest).unwrap().len();
    // Power lost while the 10th entry was being written leaves any prefix of it: each is cut
    // off on reopen (a tear inside the payload once made the log refuse to open).
    for cut in 1.. {
        std::fs::remove_dir_all(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        for (p, bytes) in &files {
            std::fs::write(p, bytes).unwrap();
        }
        OpenOptions::new().write(true).open(newest).unwrap().set_len(len - cut).unwrap();
        let mut store = LogStore::open(&path)
            .unwrap_or_else(|e| panic!("the log with its last {cut} bytes torn off must open: {e}"));
        let last = store.get_log_state().await.unwrap().last_log_id.expect("entries remain").index;
        if last < 9 {
            // The cut reached the 9th entry: every tear of the 10th was tried.
            assert_eq!(last, 8);
            assert!(cut > 20, "the 9th entry was reached after only {cut} bytes");
            break;
        }
        assert_eq!(last, 9, "with {cut} bytes torn off");
        assert_eq!(store.try_get_log_entries(1..=9).await.unwrap(), (1..=9).map(|i| entry(1, i)).collect::<Vec<_>>());
    }
}

#[tokio::test]
async fn snapshot_survives_restart_and_corruption_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = StateMachine::open(dir.path()).unwrap();
    let topology = witness::state::Topology { sites: ["east".into(), "west".into()].into(), ..Default::default() };
    sm.shared().write().unwrap().state.apply(Command::SyncTopology(topology));
    sm.shared().write().unwrap().last_applied = Some(log_id(2, 7));
    let snap = sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    assert_eq!(snap.meta.last_log_id, Some(log_id(2, 7)));
    let before = sm.shared().read().unwrap().clone();
    drop(sm);

    let mut reopened = StateMachine::open(dir.path()).unwrap();
    assert_eq!(*reopened.shared().read().unwrap(), before);
    let (applied, _) = reopened.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id(2, 7)));
    assert!(reopened.get_current_snapshot().await.unwrap().is_some());

    let file = dir.path().join("snapshot/current.snap");
    let mut bytes = std::fs::read(&file).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0xff;
    std::fs::write(&file, bytes).unwrap();
    let err = StateMachine::open(dir.path()).err().expect("corrupt snapshot must not load");
    assert!(err.to_string().contains("checksum"), "{err}");
    assert!(err.to_string().contains("current.snap"), "{err}");
}

#[tokio::test]
async fn an_older_snapshot_never_replaces_a_newer_one() {
    let dir = tempfile::tempdir().unwrap();
    // A snapshot at (3, 10) as a leader would send it.
    let newer = {
        let source = tempfile::tempdir().unwrap();
        let mut sm = StateMachine::open(source.path()).unwrap();
        sm.shared().write().unwrap().last_applied = Some(log_id(3, 10));
        sm.get_snapshot_builder().await.build_snapshot().await.unwrap()
    };
    let mut sm = StateMachine::open(dir.path()).unwrap();
    // A local build from an older state is under way when the newer snapshot is installed...
    sm.shared().write().unwrap().last_applied = Some(log_id(2, 5));
    let mut builder = sm.get_snapshot_builder().await;
    let older_state = sm.shared().read().unwrap().clone();
    sm.install_snapshot(&newer.meta, newer.snapshot.clone()).await.unwrap();
    // ...and finishes afterwards, from the state it captured.
    *sm.shared().write().unwrap() = older_state;
    builder.build_snapshot().await.unwrap();

    let on_disk = sm.get_current_snapshot().await.unwrap().expect("a snapshot");
    assert_eq!(on_disk.meta.last_log_id, Some(log_id(3, 10)));
    drop(sm);
    let (applied, _) = StateMachine::open(dir.path()).unwrap().applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id(3, 10)));
}

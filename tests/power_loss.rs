//! Power loss on real processes: every node's data directory sits on its own lazyfs mount
//! (`support::lazyfs`), which loses whatever was not fsynced when the power is cut. A cut here
//! stops the disks first (their syncs wait), lets the processes run on for a moment (as a
//! machine's last instant would), kills them (kill -9) and drops every unsynced write; then the
//! disks are mounted again and the nodes restarted. Scenarios:
//! - all three nodes at once, under a stream of operator failovers;
//! - the leader alone while the others run on;
//! - during a member removal, its joint configuration stuck uncommitted;
//! - a lagging follower while it installs the leader's snapshot, at the temporary file's sync
//!   and at the directory's sync after the rename;
//! - the log store itself: a vote is reported saved only once synced, flushed entries survive,
//!   unflushed ones may go but are never half-read, and a torn tail is repaired or refused
//!   with the file named;
//! - a lone node whose log tail is torn: it repairs it or refuses to start naming the file,
//!   and never serves from a corrupt log.
//!
//! A refusal names the file by the Raft log's directory and the chunk's id (the file is
//! `r-<id>.wal` there), as raft-log reports it. A tear that only cuts the last entry short is
//! always repaired; one that loses a sector before a kept one is damage, and refused.
//!
//! Throughout: every write the cluster acknowledged, and every journal event any node had
//! applied before the cut, is still there afterwards, unchanged and in order, and epochs never
//! go backwards.
//!
//! Needs root and /dev/fuse; without them it skips loudly, except with `CI=true`, where it
//! fails.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::type_config::TypeConfigExt;
use openraft::{EntryPayload, LogId, RaftLogReader};
use serde_json::Value;
use support::lazyfs::{self, Cut, LazyFs, Tear};
use support::{eventually, Cluster};
use witness::raft::log_store::LogStore;
use witness::raft::{Entry, NodeId, TypeConfig, Vote};
use witness::state::{Command, Epoch, Logged};

/// How long processes run on after their disks stopped, before they die.
const GRACE: Duration = Duration::from_millis(300);

/// Whether the tests can run here; outside CI they skip loudly when they cannot.
fn can_run() -> bool {
    match lazyfs::available() {
        Ok(()) => true,
        Err(why) => {
            assert!(std::env::var("CI").as_deref() != Ok("true"), "power-loss tests must run in CI: {why}");
            eprintln!("SKIPPED power-loss tests: {why}");
            false
        }
    }
}

/// The nodes' data directories, each on a lazyfs mount over a backing directory beside it.
struct Disks {
    disks: BTreeMap<u64, (PathBuf, PathBuf, Option<LazyFs>)>,
}

impl Disks {
    fn mount(c: &Cluster, ids: impl IntoIterator<Item = u64>) -> Disks {
        let mut disks = Disks { disks: BTreeMap::new() };
        for id in ids {
            let backing = c.dir.path().join(format!("node{id}.disk"));
            disks.disks.insert(id, (backing, c.data_dir(id), None));
            disks.remount(id);
        }
        disks
    }

    fn fs(&self, id: u64) -> &LazyFs {
        self.disks[&id].2.as_ref().expect("mounted")
    }

    fn backing(&self, id: u64) -> &Path {
        &self.disks[&id].0
    }

    /// Node `id`'s mount, taken out to be cut.
    fn take(&mut self, id: u64) -> LazyFs {
        self.disks.get_mut(&id).and_then(|d| d.2.take()).expect("mounted")
    }

    fn remount(&mut self, id: u64) {
        let (backing, point, fs) = self.disks.get_mut(&id).expect("a disk of this node");
        assert!(fs.is_none(), "node {id}'s disk is mounted");
        *fs = Some(LazyFs::mount(backing, point).unwrap_or_else(|e| panic!("mount node {id}'s disk: {e}")));
    }
}

/// The power goes out on `ids` together: their disks stop (every sync waits), the processes
/// run on for [`GRACE`], then die, then the disks lose what was not synced. Returns what every
/// node of the cluster had applied just before the processes died (committed, so it must
/// survive), and each disk's cut.
async fn power_cut(c: &mut Cluster, disks: &mut Disks, ids: &[u64]) -> (Seen, Vec<Cut>) {
    for id in ids {
        disks.fs(*id).hold_syncs(|_| true);
    }
    tokio::time::sleep(GRACE).await;
    let seen = Seen::capture(c).await;
    // Every process dies (kill -9), then every disk is cut, then the dead are reaped: see
    // `die_and_cut`.
    for id in ids {
        c.node(*id).signal(libc::SIGKILL);
    }
    let cuts: Vec<Cut> = ids.iter().map(|id| disks.take(*id).cut()).collect();
    for id in ids {
        c.node(*id).kill9();
    }
    for (id, cut) in ids.iter().zip(&cuts) {
        eprintln!("node {id} lost power: unsynced {:?}, syncs held {:?}", cut.lost, cut.held);
    }
    (seen, cuts)
}

/// Node `id` is killed (-9) and its disk cut (torn as `torn` says, if at all). The kill comes
/// first, so the process runs nothing more; it is reaped only after the cut, since a process
/// waiting on a held sync cannot die before the disk answers it.
fn die_and_cut(c: &mut Cluster, disks: &mut Disks, id: u64, torn: Option<(&Path, u64, Tear)>) -> Cut {
    c.node(id).signal(libc::SIGKILL);
    let fs = disks.take(id);
    let cut = match torn {
        Some((file, seed, tear)) => fs.cut_torn(file, seed, tear),
        None => fs.cut(),
    };
    c.node(id).kill9();
    cut
}

/// The whole journal of node `id`, oldest first.
async fn journal(c: &Cluster, id: u64) -> Option<Vec<Value>> {
    let mut events = Vec::new();
    loop {
        let since = events.last().map_or(0, |e: &Value| e["seq"].as_u64().unwrap_or(0));
        let url = c.nodes[id as usize - 1].url(&format!("/v1/events?since={since}"));
        let page: Value = c.http.get(url).timeout(Duration::from_secs(3)).send().await.ok()?.json().await.ok()?;
        let batch = page["events"].as_array()?;
        if batch.is_empty() {
            return Some(events);
        }
        events.extend(batch.iter().cloned());
    }
}

/// What the running nodes had applied: every journal event (by sequence number) and the
/// highest epoch of group `app`.
#[derive(Default)]
struct Seen {
    events: BTreeMap<u64, Value>,
    epoch: u64,
}

impl Seen {
    async fn capture(c: &Cluster) -> Seen {
        let mut seen = Seen::default();
        for n in c.nodes.iter().filter(|n| n.running()) {
            if let Some((_, epoch)) = c.group(n.id).await {
                seen.epoch = seen.epoch.max(epoch);
            }
            for e in journal(c, n.id).await.unwrap_or_default() {
                let seq = e["seq"].as_u64().expect("seq");
                if let Some(other) = seen.events.get(&seq) {
                    assert_eq!(other, &e, "two nodes applied different events at {seq}");
                }
                seen.events.insert(seq, e);
            }
        }
        seen
    }
}

/// An operator's write the cluster acknowledged: a forced failover with a unique reason, and
/// the epoch it answered.
#[derive(Debug, Clone)]
struct Ack {
    reason: String,
    epoch: u64,
}

/// Operator failovers of group `app`, one after another, to whichever node answers; every
/// acknowledged one recorded.
struct Writer {
    stop: Arc<AtomicBool>,
    acks: Arc<Mutex<Vec<Ack>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    fn start(c: &Cluster, tag: &str) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let acks = Arc::new(Mutex::new(Vec::new()));
        let http = c.http.clone();
        let urls: Vec<String> = c.nodes.iter().map(|n| n.url("/v1/groups/app/failover")).collect();
        let tag = tag.to_string();
        let task = tokio::spawn({
            let (stop, acks) = (stop.clone(), acks.clone());
            async move {
                let (mut to, mut via) = ("west", 0);
                for n in 1.. {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    // The dot ends the reason, so no reason is a prefix of another.
                    let reason = format!("{tag}-{n}.");
                    let order = serde_json::json!({ "to": to, "force": true, "reason": reason });
                    let sent = http.post(&urls[via]).json(&order).timeout(Duration::from_secs(3)).send().await;
                    match sent {
                        Ok(r) if r.status() == 200 => {
                            if let Some(epoch) =
                                r.json::<Value>().await.ok().and_then(|a| a["failover"]["outcome"]["epoch"].as_u64())
                            {
                                acks.lock().unwrap().push(Ack { reason, epoch });
                            }
                            to = if to == "west" { "east" } else { "west" };
                        }
                        // Already active (an order whose answer was lost took effect), or the
                        // compare-and-set lost: the other site next.
                        Ok(r) if r.status() == 409 => to = if to == "west" { "east" } else { "west" },
                        _ => {
                            via = (via + 1) % urls.len();
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
            }
        });
        Writer { stop, acks, task }
    }

    fn acked(&self) -> usize {
        self.acks.lock().unwrap().len()
    }

    /// Waits until `more` writes beyond those acknowledged so far are acknowledged.
    async fn wait_for(&self, more: usize) {
        let want = self.acked() + more;
        eventually(Duration::from_secs(20), &format!("{want} acknowledged writes"), || async {
            (self.acked() >= want).then_some(())
        })
        .await;
    }

    async fn stop(self) -> Vec<Ack> {
        self.stop.store(true, Ordering::Relaxed);
        tokio::time::timeout(Duration::from_secs(10), self.task).await.expect("writer stops").expect("writer");
        let acks = self.acks.lock().unwrap().clone();
        acks
    }
}

/// The epoch a journal event's message records (`... at epoch N: ...`), if any.
fn epoch_of(event: &Value) -> Option<u64> {
    let message = event["message"].as_str()?;
    let (_, rest) = message.split_once(" at epoch ")?;
    rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// Node `id`'s journal once it holds at least everything in `seen` and `acks`.
async fn caught_up(c: &Cluster, id: u64, seen: &Seen, acks: &[Ack]) -> Vec<Value> {
    let last = seen.events.last_key_value().map_or(0, |(seq, _)| *seq);
    eventually(Duration::from_secs(20), &format!("node {id} holds every committed event"), || async {
        let journal = journal(c, id).await?;
        let has_acks = acks.iter().all(|a| {
            journal
                .iter()
                .any(|e| e["message"].as_str().is_some_and(|m| m.contains(&format!("operator: {}", a.reason))))
        });
        (journal.last().and_then(|e| e["seq"].as_u64()).unwrap_or(0) >= last && has_acks).then_some(journal)
    })
    .await
}

/// Everything committed before the cut is in node `id`'s journal, unchanged; every
/// acknowledged write once, at the epoch it was acknowledged with, in the order acknowledged;
/// epochs only grow, and the node's group epoch is no lower than any seen before.
async fn assert_durable(c: &Cluster, id: u64, seen: &Seen, acks: &[Ack]) {
    let journal = caught_up(c, id, seen, acks).await;
    let by_seq: BTreeMap<u64, &Value> = journal.iter().map(|e| (e["seq"].as_u64().unwrap(), e)).collect();
    for (seq, event) in &seen.events {
        assert_eq!(
            by_seq.get(seq).copied(),
            Some(event),
            "node {id}: event {seq}, applied before the cut, changed or lost"
        );
    }
    let mut last_seq = 0;
    for ack in acks {
        let found: Vec<&Value> = journal
            .iter()
            .filter(|e| e["message"].as_str().is_some_and(|m| m.contains(&format!("operator: {}", ack.reason))))
            .collect();
        assert_eq!(found.len(), 1, "node {id}: acknowledged write {ack:?} must be in the journal exactly once");
        assert_eq!(epoch_of(found[0]), Some(ack.epoch), "node {id}: {ack:?} recorded as {}", found[0]);
        let seq = found[0]["seq"].as_u64().unwrap();
        assert!(seq > last_seq, "node {id}: {ack:?} at {seq}, not after the write acknowledged before it");
        last_seq = seq;
    }
    let epochs: Vec<u64> = journal.iter().filter_map(epoch_of).collect();
    assert!(epochs.windows(2).all(|w| w[0] <= w[1]), "node {id}: epochs went back in journal order: {epochs:?}");
    let floor = seen.epoch.max(acks.last().map_or(0, |a| a.epoch));
    let (_, epoch) = eventually(Duration::from_secs(10), "group state", || c.group(id)).await;
    assert!(epoch >= floor, "node {id}: epoch {epoch} went back below {floor}");
}

/// A forced failover now commits, and every node in `ids` applies it.
async fn serves(c: &Cluster, ids: &[u64]) {
    let leader = eventually(Duration::from_secs(20), "a ready leader", || async {
        for id in ids {
            let s = c.status(*id).await?;
            if s["ready"] == true && s["leader"]["id"].as_u64() == Some(*id) {
                return Some(*id);
            }
        }
        None
    })
    .await;
    let (active, _) = c.group(leader).await.expect("group state");
    let to = if active == "west" { "east" } else { "west" };
    let (status, body) = c.failover(leader, to).await;
    assert_eq!(status, 200, "a write after the power came back: {body}");
    let epoch = body["epoch"].as_u64().unwrap();
    for id in ids {
        eventually(Duration::from_secs(10), &format!("node {id} applies the write after the cut"), || async {
            (c.group(*id).await? == (to.to_string(), epoch)).then_some(())
        })
        .await;
    }
}

#[test]
fn lazyfs_keeps_what_was_synced_and_loses_the_rest() {
    use std::io::{Read, Seek, SeekFrom, Write};
    if !can_run() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (disk, mnt) = (dir.path().join("disk"), dir.path().join("mnt"));
    let fs = LazyFs::mount(&disk, &mnt).unwrap();
    let mut synced = std::fs::File::create(mnt.join("synced")).unwrap();
    synced.write_all(b"durable").unwrap();
    synced.sync_data().unwrap();
    synced.write_all(b" and more").unwrap();
    std::fs::create_dir(mnt.join("sub")).unwrap();
    // Closing is no sync.
    std::fs::write(mnt.join("sub/closed"), b"closed, never synced").unwrap();
    std::fs::write(mnt.join("renamed.tmp"), b"renamed, never synced").unwrap();
    std::fs::rename(mnt.join("renamed.tmp"), mnt.join("renamed")).unwrap();
    // Reads see what is held, size changes included.
    assert_eq!(std::fs::read(mnt.join("synced")).unwrap(), b"durable and more");
    assert_eq!(std::fs::read(mnt.join("renamed")).unwrap(), b"renamed, never synced");
    let mut f = std::fs::OpenOptions::new().read(true).write(true).open(mnt.join("sub/closed")).unwrap();
    f.set_len(3).unwrap();
    f.seek(SeekFrom::Start(5)).unwrap();
    f.write_all(b"!").unwrap();
    let mut back = Vec::new();
    f.seek(SeekFrom::Start(0)).unwrap();
    f.read_to_end(&mut back).unwrap();
    assert_eq!(back, b"clo\0\0!");
    drop(f);
    assert!(fs.unsynced().iter().any(|(p, n)| p == Path::new("synced") && *n == 9), "{:?}", fs.unsynced());

    let cut = fs.cut();
    assert!(synced.write_all(b"after").is_err(), "a cut disk takes no more writes");
    drop(synced);
    assert_eq!(cut.lost.len(), 3, "{cut:?}");
    let _fs = LazyFs::mount(&disk, &mnt).unwrap();
    assert_eq!(std::fs::read(mnt.join("synced")).unwrap(), b"durable");
    // Names are kept (metadata is applied at once), data never synced is not.
    assert_eq!(std::fs::read(mnt.join("sub/closed")).unwrap(), b"");
    assert_eq!(std::fs::read(mnt.join("renamed")).unwrap(), b"");
    assert!(!mnt.join("renamed.tmp").exists());
}

/// A file replaced by rename is, to a reader opening it by name, the old file or the new one,
/// never missing: the kernel looks the name up and then opens the inode it found, and the
/// filesystem must still open that inode if the rename came between (as every POSIX
/// filesystem does). A node reading its snapshot while it writes the next one depends on it.
#[test]
fn a_file_replaced_by_rename_is_never_missing_to_a_reader() {
    if !can_run() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    let _fs = LazyFs::mount(&dir.path().join("disk"), &mnt).unwrap();
    std::fs::write(mnt.join("current"), b"0").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let renamer = std::thread::spawn({
        let (mnt, stop) = (mnt.clone(), stop.clone());
        move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                std::fs::write(mnt.join("current.tmp"), n.to_string()).unwrap();
                std::fs::rename(mnt.join("current.tmp"), mnt.join("current")).unwrap();
            }
            n
        }
    });
    let mut last = 0u64;
    for _ in 0..5_000 {
        let read = std::fs::read(mnt.join("current")).unwrap_or_else(|e| panic!("reading a file being replaced: {e}"));
        let n: u64 = String::from_utf8(read).unwrap().parse().unwrap();
        assert!(n >= last, "read {n} after {last}");
        last = n;
    }
    stop.store(true, Ordering::Relaxed);
    let renames = renamer.join().unwrap();
    assert!(renames > 100, "the reads raced only {renames} renames");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_three_nodes_lose_power_at_once_under_load() {
    if !can_run() {
        return;
    }
    let mut c = Cluster::new(3, 0);
    let mut disks = Disks::mount(&c, 1..=3);
    c.start_voters(3).await;
    let writer = Writer::start(&c, "all");
    writer.wait_for(15).await;

    let (seen, cuts) = power_cut(&mut c, &mut disks, &[1, 2, 3]).await;
    let acks = writer.stop().await;
    assert!(cuts.iter().any(|cut| !cut.held.is_empty()), "the cut caught no sync in flight: {cuts:?}");
    for id in 1..=3 {
        disks.remount(id);
        c.node(id).start();
    }
    c.wait_leader(Duration::from_secs(20)).await;
    for id in 1..=3 {
        assert_durable(&c, id, &seen, &acks).await;
    }
    eprintln!("all three cut: {} acknowledged writes, {} committed events, all kept", acks.len(), seen.events.len());
    serves(&c, &[1, 2, 3]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_alone_loses_power_and_catches_up() {
    if !can_run() {
        return;
    }
    let mut c = Cluster::new(3, 0);
    let mut disks = Disks::mount(&c, 1..=3);
    let victim = c.start_voters(3).await;
    let writer = Writer::start(&c, "one");
    writer.wait_for(10).await;

    let (seen, _) = power_cut(&mut c, &mut disks, &[victim]).await;
    // The other two elect a leader and go on acknowledging writes.
    eventually(Duration::from_secs(15), "a new leader", || async { c.agreed_leader().await.filter(|l| *l != victim) })
        .await;
    writer.wait_for(10).await;
    disks.remount(victim);
    c.node(victim).start();
    writer.wait_for(5).await;
    let acks = writer.stop().await;
    for id in 1..=3 {
        assert_durable(&c, id, &seen, &acks).await;
    }
    // And the three agree on every event.
    Seen::capture(&c).await;
    c.wait_leader(Duration::from_secs(10)).await;
    serves(&c, &[1, 2, 3]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_lost_in_the_middle_of_a_member_removal() {
    if !can_run() {
        return;
    }
    let mut c = Cluster::new(3, 0);
    let mut disks = Disks::mount(&c, 1..=3);
    let leader = c.start_voters(3).await;
    let writer = Writer::start(&c, "member");
    writer.wait_for(5).await;
    let acks = writer.stop().await;
    let mut followers = (1..=3).filter(|id| *id != leader);
    let (staying, removed) = (followers.next().unwrap(), followers.next().unwrap());

    // The follower that stays has stopped syncing: the removal retires the node (a write the
    // leader and the removed node commit), but its joint configuration needs `staying` too
    // and cannot commit (the leader, short of that quorum, may even step down).
    disks.fs(staying).hold_syncs(|_| true);
    let removal = tokio::spawn({
        let (http, url) = (c.http.clone(), c.nodes[leader as usize - 1].url(&format!("/v1/members/{removed}")));
        async move { http.delete(url).timeout(Duration::from_secs(60)).send().await.map(|r| r.status().as_u16()) }
    });
    eventually(Duration::from_secs(10), "the leader applies the retirement", || async {
        journal(&c, leader).await?.iter().any(|e| e["kind"] == "member_retired").then_some(())
    })
    .await;
    eventually(Duration::from_secs(10), "the leader holds the joint configuration", || async {
        let s = c.status(leader).await?;
        let members = s["members"].as_array()?;
        (members.len() == 3 && s["last_log_index"].as_u64()? > s["committed_index"].as_u64()?).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!removal.is_finished(), "the removal cannot finish while its joint configuration is uncommitted");

    let (seen, _) = power_cut(&mut c, &mut disks, &[1, 2, 3]).await;
    removal.abort();
    for id in 1..=3 {
        disks.remount(id);
        c.node(id).start();
    }
    // The removal, asked again, completes; the removed node learns it.
    let remaining: Vec<u64> = (1..=3).filter(|id| *id != removed).collect();
    let answer = eventually(Duration::from_secs(30), "the removal completes when asked again", || async {
        let url = c.nodes[staying as usize - 1].url(&format!("/v1/members/{removed}"));
        let resp = c.http.delete(url).timeout(Duration::from_secs(20)).send().await.ok()?;
        if resp.status() != 200 {
            return None;
        }
        resp.json::<Value>().await.ok()
    })
    .await;
    assert_eq!(answer["membership"]["voters"], serde_json::json!(remaining), "{answer}");
    for id in &remaining {
        assert_durable(&c, *id, &seen, &acks).await;
    }
    let reason = eventually(Duration::from_secs(20), "the removed node knows it was removed", || async {
        c.status(removed).await?["not_ready_reason"]
            .as_str()
            .filter(|r| r.contains("removed this node"))
            .map(String::from)
    })
    .await;
    assert!(reason.contains("removed"), "{reason}");
    serves(&c, &remaining).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_lost_while_a_lagging_follower_installs_a_snapshot() {
    if !can_run() {
        return;
    }
    let mut c = Cluster::with_raft(3, 0, "snapshot_max_entries = 10\nlog_keep_after_snapshot = 0");
    let mut disks = Disks::mount(&c, 1..=3);
    let leader = c.start_voters(3).await;
    let lagging = (1..=3).find(|id| *id != leader).unwrap();
    let mut acks = Vec::new();
    // At the sync of the snapshot's temporary file (so before the rename), then at the
    // directory's sync after the rename.
    for (round, hold) in [(1, "snapshot/current.tmp"), (2, "snapshot")] {
        assert!(c.node(lagging).stop().success());
        let before = c.status(leader).await.unwrap()["last_log_index"].as_u64().unwrap();
        let writer = Writer::start(&c, &format!("snap{round}"));
        writer.wait_for(30).await;
        acks.extend(writer.stop().await);
        eventually(Duration::from_secs(15), "the leader drops the log the lagging node misses", || async {
            (c.status(leader).await?["purged_index"].as_u64()? > before + 5).then_some(())
        })
        .await;

        disks.fs(lagging).hold_syncs(move |p| p == Path::new(hold));
        c.node(lagging).start();
        eventually(Duration::from_secs(15), &format!("a sync of {hold} during the install"), || async {
            (!disks.fs(lagging).held().is_empty()).then_some(())
        })
        .await;
        let s = c.status(lagging).await.expect("lagging node answers");
        assert!(s["applied_index"].as_u64().unwrap_or(0) <= before, "the snapshot must not be installed yet: {s}");
        let seen = Seen::capture(&c).await;
        let cut = die_and_cut(&mut c, &mut disks, lagging, None);
        eprintln!("round {round}: cut at the sync of {hold}: {cut:?}");
        assert_eq!(cut.held, vec![PathBuf::from(hold)]);
        let snap = disks.backing(lagging).join("snapshot");
        eprintln!(
            "round {round}: on disk after the cut: current.snap {:?} bytes, current.tmp {:?} bytes",
            std::fs::metadata(snap.join("current.snap")).map(|m| m.len()).ok(),
            std::fs::metadata(snap.join("current.tmp")).map(|m| m.len()).ok()
        );
        // Whatever the cut left, the snapshot in place (if any) is whole: only a synced file
        // is ever renamed there.
        if let Ok(bytes) = std::fs::read(snap.join("current.snap")) {
            witness::raft::snapshot_file::decode(&bytes).unwrap_or_else(|e| panic!("round {round}: current.snap: {e}"));
        }

        disks.remount(lagging);
        c.node(lagging).start();
        let purged = c.status(leader).await.unwrap()["purged_index"].as_u64().unwrap();
        eventually(Duration::from_secs(20), "the lagging node restored from the snapshot", || async {
            let s = c.status(lagging).await?;
            (s["snapshot_index"].as_u64()? >= purged && c.group(lagging).await? == c.group(leader).await?).then_some(())
        })
        .await;
        assert_durable(&c, lagging, &seen, &acks).await;
    }
    serves(&c, &[1, 2, 3]).await;
}

fn log_id(term: u64, index: u64) -> witness::raft::LogId {
    LogId::new(openraft::impls::leader_id_adv::LeaderId { term, node_id: NodeId(1) }, index)
}

/// Entries of about 200 bytes, so that twenty of them span several sectors.
fn entry(index: u64) -> Entry {
    Entry {
        log_id: log_id(1, index),
        payload: EntryPayload::Normal(Logged {
            at_ms: index,
            command: Command::Activate {
                group: format!("group-{index}-{}", "x".repeat(120)).into(),
                site: "west".into(),
                expected_epoch: Epoch(index),
            },
            by: None,
        }),
    }
}

async fn append_flushed(store: &mut LogStore, entries: impl IntoIterator<Item = Entry>) {
    let (tx, rx) = TypeConfig::oneshot();
    store.append(entries.into_iter().collect::<Vec<_>>(), IOFlushed::signal(tx)).await.expect("append");
    tokio::time::timeout(Duration::from_secs(10), rx)
        .await
        .expect("flushed in time")
        .expect("callback")
        .expect("fsync");
}

/// Opens the store in `log`, which a cut may have torn: it is either whole up to some entry
/// at or after `flushed` (every entry read back exactly as written, and the store writable
/// again) or refused with the log's directory and its damaged chunk named.
async fn reopen_after_cut(log: &Path, flushed: u64, wal: &Path) -> Result<u64, String> {
    match LogStore::open(log) {
        Ok(mut store) => {
            let last = store.get_log_state().await.unwrap().last_log_id.map_or(0, |l| l.index);
            assert!(last >= flushed, "flushed entries lost: the log ends at {last}, {flushed} were flushed");
            let read = store.try_get_log_entries(1..=last).await.unwrap();
            assert_eq!(read, (1..=last).map(entry).collect::<Vec<_>>(), "entries read back differ from those written");
            append_flushed(&mut store, [entry(last + 1)]).await;
            Ok(last)
        }
        Err(e) => {
            let e = e.to_string();
            // The chunk file is r-<chunk id>.wal; the error names the directory and the id.
            let chunk = wal.file_stem().unwrap().to_str().unwrap().trim_start_matches("r-");
            assert!(e.contains(&log.display().to_string()) && e.contains(chunk), "the damaged file is not named: {e}");
            Err(e)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_store_keeps_votes_and_flushed_entries_and_never_half_reads() {
    if !can_run() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (disk, mnt) = (dir.path().join("disk"), dir.path().join("mnt"));
    let log = mnt.join("raft-log");

    // A vote reported saved is on the disk.
    let fs = LazyFs::mount(&disk, &mnt).unwrap();
    let mut store = LogStore::open(&log).unwrap();
    let saved = Vote::new(3, NodeId(2));
    store.save_vote(&saved).await.unwrap();
    fs.cut();
    drop(store);
    let fs = LazyFs::mount(&disk, &mnt).unwrap();
    let mut store = LogStore::open(&log).unwrap();
    assert_eq!(store.read_vote().await.unwrap(), Some(saved), "a saved vote was lost");

    // A vote is not reported saved before its sync: with the disk stopped, saving waits, and
    // fails with the power.
    fs.hold_syncs(|_| true);
    let saving = tokio::spawn(async move {
        let res = store.save_vote(&Vote::new(4, NodeId(3))).await;
        (store, res)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!saving.is_finished(), "save_vote returned before its sync completed");
    assert!(!fs.cut().held.is_empty());
    let (store, res) = tokio::time::timeout(Duration::from_secs(10), saving).await.unwrap().unwrap();
    assert!(res.is_err(), "a vote whose sync failed was reported saved");
    drop(store);
    let fs = LazyFs::mount(&disk, &mnt).unwrap();
    let mut store = LogStore::open(&log).unwrap();
    assert_eq!(store.read_vote().await.unwrap(), Some(saved));

    // Flushed entries survive; entries whose flush never came do not reach the disk.
    append_flushed(&mut store, (1..=20).map(entry)).await;
    fs.hold_syncs(|_| true);
    let (tx, mut rx) = TypeConfig::oneshot();
    store.append((21..=40).map(entry).collect::<Vec<_>>(), IOFlushed::signal(tx)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(rx.try_recv().is_err(), "an append was reported flushed before its sync");
    let cut = fs.cut();
    drop(store);
    let wal = cut.held.first().cloned().expect("the log's sync was held");
    let _fs = LazyFs::mount(&disk, &mnt).unwrap();
    assert_eq!(reopen_after_cut(&log, 20, &wal).await, Ok(20), "nothing unsynced may reach the disk");
    drop(_fs);

    // Torn tails: part of the unsynced batch reaches the disk. Each is repaired (cut back to
    // its last whole entry) or refused with the file named; a torn prefix is always repaired.
    let (mut repaired, mut refused) = (0, 0);
    for seed in 1..=6u64 {
        for tear in [Tear::Prefix, Tear::Sectors] {
            let dir = tempfile::tempdir().unwrap();
            let (disk, mnt) = (dir.path().join("disk"), dir.path().join("mnt"));
            let log = mnt.join("raft-log");
            let fs = LazyFs::mount(&disk, &mnt).unwrap();
            let mut store = LogStore::open(&log).unwrap();
            append_flushed(&mut store, (1..=20).map(entry)).await;
            fs.hold_syncs(|_| true);
            let (tx, _rx) = TypeConfig::oneshot();
            store.append((21..=40).map(entry).collect::<Vec<_>>(), IOFlushed::signal(tx)).await.unwrap();
            let wal = eventually(Duration::from_secs(5), "the batch written, its sync held", || async {
                fs.held().into_iter().find(|p| p.extension().is_some_and(|e| e == "wal"))
            })
            .await;
            let cut = fs.cut_torn(&wal, seed, tear);
            drop(store);
            let _fs = LazyFs::mount(&disk, &mnt).unwrap();
            let outcome = reopen_after_cut(&log, 20, &wal).await;
            eprintln!("torn {tear:?} seed {seed}: {:?} -> {outcome:?}", cut.torn);
            match outcome {
                Ok(_) => repaired += 1,
                Err(e) => {
                    assert_ne!(tear, Tear::Prefix, "a torn last entry must be cut off, not refused: {e}");
                    refused += 1;
                }
            }
        }
    }
    eprintln!("torn tails: {repaired} repaired, {refused} refused");
    assert!(refused > 0, "no torn cut damaged the log: the refusal path went untested");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_node_with_a_torn_log_repairs_it_or_refuses_to_start() {
    if !can_run() {
        return;
    }
    for (seed, tear) in [(1, Tear::Prefix), (2, Tear::Sectors), (3, Tear::Sectors)] {
        let mut c = Cluster::new(1, 0);
        let mut disks = Disks::mount(&c, [1]);
        c.start_voters(1).await;
        let writer = Writer::start(&c, "torn");
        writer.wait_for(10).await;

        disks.fs(1).hold_syncs(|_| true);
        let wal = eventually(Duration::from_secs(10), "a log write waiting for its sync", || async {
            let held = disks.fs(1).held();
            let unsynced = disks.fs(1).unsynced();
            held.into_iter()
                .find(|p| p.extension().is_some_and(|e| e == "wal") && unsynced.iter().any(|(u, n)| u == p && *n > 0))
        })
        .await;
        let seen = Seen::capture(&c).await;
        let cut = die_and_cut(&mut c, &mut disks, 1, Some((&wal, seed, tear)));
        let acks = writer.stop().await;
        eprintln!("torn {tear:?} seed {seed}: {:?}", cut.torn);
        disks.remount(1);
        c.node(1).start();

        // It serves, with everything it committed, or it exits naming the damaged file.
        let deadline = Instant::now() + Duration::from_secs(20);
        let outcome = loop {
            if let Some(status) = c.node(1).exited() {
                break Err(status);
            }
            if c.status(1).await.is_some_and(|s| s["ready"] == true) {
                break Ok(());
            }
            assert!(Instant::now() < deadline, "the node neither served nor exited within 20 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        match outcome {
            Ok(()) => {
                assert_durable(&c, 1, &seen, &acks).await;
                let journal = journal(&c, 1).await.unwrap();
                let last_epoch = journal.iter().rev().find_map(epoch_of).unwrap();
                assert_eq!(c.group(1).await.unwrap().1, last_epoch, "the state and the journal disagree");
                serves(&c, &[1]).await;
                eprintln!("torn {tear:?} seed {seed}: repaired, {} acknowledged writes kept", acks.len());
            }
            Err(status) => {
                assert!(!status.success(), "{status}");
                assert_ne!(tear, Tear::Prefix, "a torn last entry must be cut off, not refused");
                let log = std::fs::read_to_string(&c.nodes[0].log).unwrap();
                let chunk = wal.file_stem().unwrap().to_str().unwrap().trim_start_matches("r-");
                let dir = c.data_dir(1).join("raft-log");
                assert!(
                    log.lines().any(|l| l.contains(&dir.display().to_string()) && l.contains(chunk)),
                    "the refusal does not name the damaged file {}:\n{log}",
                    wal.display()
                );
                eprintln!("torn {tear:?} seed {seed}: refused to start ({status}), naming the file");
            }
        }
    }
}

//! `witness bench engine`: what the pure cores cost against the number of groups, in this
//! process and without I/O, so that nothing but the code's own work is timed. For each count
//! of groups (all on east, primary, and west, with agents and a webhook step, as in
//! `bench scale`): one `Leader::tick` in steady state (both sites up, both agents heartbeating),
//! one agent heartbeat carrying every group of its site (`Leader::heartbeat`), the tick that
//! decides east's failover for every group, applying that tick's proposals to the `State`,
//! and a snapshot of the state after it (encoded as a leader stores it, decoded and checked as
//! a follower installs it). All of it is the shipped code; only the verdicts and heartbeats
//! are made up here, as the runtime would hand them in.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::Samples;
use crate::cli::local::{Local, HOLD_DOWN, SITE};
use crate::clock::Stopwatch;
use crate::config::Config;
use crate::ids::NodeId;
use crate::leader::{Confirmed, Contact, Effect, Leader, LeaderConfig, Tick};
use crate::protocol::{GroupReport, Heartbeat, Role};
use crate::raft::state_machine::{self, Applied};
use crate::state::{Command, Epoch, Logged, State, Topology, Verdict, LOG_FORMAT};

/// Steady-state ticks timed per count of groups (their median is reported).
const TICKS: usize = 200;
/// Runs per count of groups, each in a world of its own: the deciding tick, the apply and the
/// snapshot happen once a run, and their median over the runs is reported.
const RUNS: usize = 5;

/// One count of groups, measured.
#[derive(Clone, Copy)]
struct Costs {
    steady_tick: Duration,
    heartbeat: Duration,
    deciding_tick: Duration,
    proposals: usize,
    entries: usize,
    apply: Duration,
    snapshot_bytes: usize,
    encode: Duration,
    decode: Duration,
}

pub fn bench(dir: &Path, counts: &[usize], samples: &mut Samples) -> anyhow::Result<()> {
    samples.set("groups", counts);
    println!(
        "the pure cores in this process, no I/O; median of {RUNS} runs (steady tick and heartbeat: of {TICKS} \
         in each)"
    );
    println!(
        "{:>6}  {:>12}  {:>10}  {:>12}  {:>9}  {:>11}  {:>9}  {:>16}",
        "groups", "steady tick", "heartbeat", "deciding tick", "proposals", "apply them", "snapshot", "encode / decode"
    );
    let mut rows = Vec::new();
    for &n in counts {
        let runs = (0..RUNS).map(|_| measure(dir, n)).collect::<anyhow::Result<Vec<Costs>>>()?;
        let c = Costs::median(runs);
        println!(
            "{n:>6}  {:>9.3} ms  {:>7.3} ms  {:>9.3} ms  {:>4} in {:>2}  {:>8.3} ms  {:>6} KB  {:>6.1} / {:.1} ms",
            ms(c.steady_tick),
            ms(c.heartbeat),
            ms(c.deciding_tick),
            c.proposals,
            c.entries,
            ms(c.apply),
            c.snapshot_bytes / 1024,
            ms(c.encode),
            ms(c.decode),
        );
        let label = format!("{n} groups");
        for (key, value) in [
            ("steady_tick_ms", ms(c.steady_tick)),
            ("heartbeat_ms", ms(c.heartbeat)),
            ("deciding_tick_ms", ms(c.deciding_tick)),
            ("apply_ms", ms(c.apply)),
            ("snapshot_encode_ms", ms(c.encode)),
            ("snapshot_decode_ms", ms(c.decode)),
        ] {
            samples.set_in(&label, key, value);
        }
        samples.set_in(&label, "proposals", c.proposals);
        samples.set_in(&label, "entries", c.entries);
        samples.set_in(&label, "snapshot_bytes", c.snapshot_bytes);
        rows.push((n, c));
    }
    // Growth: the cost per group at the largest count against the smallest. Linear growth
    // keeps it near 1; anything quadratic doubles it with every doubling of the groups.
    if let (Some((small, a)), Some((large, b))) = (rows.first(), rows.last()) {
        if large > small {
            let per = |d: Duration, n: usize| d.as_secs_f64() / n as f64;
            let growth = [
                ("steady tick", per(b.steady_tick, *large) / per(a.steady_tick, *small)),
                ("heartbeat", per(b.heartbeat, *large) / per(a.heartbeat, *small)),
                ("deciding tick", per(b.deciding_tick, *large) / per(a.deciding_tick, *small)),
                ("apply", per(b.apply, *large) / per(a.apply, *small)),
                ("snapshot encode", per(b.encode, *large) / per(a.encode, *small)),
            ];
            let shown: Vec<String> = growth.iter().map(|(what, r)| format!("{what} {r:.2}")).collect();
            println!("cost per group at {large} groups against {small} (1.00 = linear): {}", shown.join(", "));
            for (what, r) in growth {
                samples.set(&format!("growth_{}", what.replace(' ', "_")), r);
            }
        }
    }
    Ok(())
}

impl Costs {
    /// Each figure's median over `runs` (the counts are the same in every run).
    fn median(runs: Vec<Costs>) -> Costs {
        let of = |f: fn(&Costs) -> Duration| median(runs.iter().map(f).collect());
        Costs {
            steady_tick: of(|c| c.steady_tick),
            heartbeat: of(|c| c.heartbeat),
            deciding_tick: of(|c| c.deciding_tick),
            apply: of(|c| c.apply),
            encode: of(|c| c.encode),
            decode: of(|c| c.decode),
            ..runs[0]
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

/// `n` groups on east and west, as `bench scale` has them.
fn config(dir: &Path, n: usize) -> anyhow::Result<Config> {
    let mut text = String::new();
    for site in ["east", "west"] {
        text += &format!(
            "[[site]]\nname = \"{site}\"\n{SITE}[[site.probe]]\nkind = \"http\"\nurl = \"http://127.0.0.1:9/{site}\"\n"
        );
    }
    for i in 1..=n {
        text += &format!(
            "[[group]]\nname = \"g{i:04}\"\nprimary = \"east\"\nsecondary = \"west\"\nreplication = \"sync\"\n\
             rto = \"5m\"\nrpo = \"0s\"\nfailover = \"automatic\"\nhold_down = \"{HOLD_DOWN}\"\n\
             agents = true\nlease = \"1s\"\nlease_margin = \"100ms\"\n\
             [[group.step]]\nname = \"notify\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/hook\"\n"
        );
    }
    let local = Local::new(dir, false, &[]);
    let addrs: Vec<String> = (1..=3).map(|i| format!("127.0.0.{i}:7000")).collect();
    Ok(Config::from_toml(&local.node_config(1, &addrs, &text), Path::new("<bench engine>"))?)
}

/// The world the leader looks at, and the leader, as the runtime holds them.
struct World {
    state: State,
    contact: Contact,
    failing_since: BTreeMap<crate::ids::SiteId, Duration>,
    leader: Leader,
    now: Duration,
}

/// One tick, timed, and what it proposed.
struct Ticked {
    tick: Duration,
    apply: Duration,
    /// Log entries the proposals took, and the commands in them.
    entries: usize,
    proposals: usize,
}

impl World {
    fn new(config: &Config) -> World {
        let mut state = State::default();
        state.apply(Command::SyncTopology(Topology::from_config(config)));
        let others = [NodeId(2), NodeId(3)];
        let contact = Contact {
            voters: [NodeId(1), NodeId(2), NodeId(3)].into(),
            acked_ago: others.iter().map(|n| (*n, Duration::from_millis(10))).collect(),
            quorum_acked_ago: Some(Duration::from_millis(10)),
            formats: others.iter().map(|n| (*n, LOG_FORMAT)).collect(),
        };
        let leader = Leader::new(Arc::new(LeaderConfig::from_config(config)), 1, Duration::ZERO, 1);
        World { state, contact, failing_since: BTreeMap::new(), leader, now: Duration::ZERO }
    }

    fn see(&mut self, site: &str, verdict: Verdict) {
        for node in 1..=3 {
            let command = Command::ReportVerdict { node: NodeId(node), site: site.into(), verdict: Some(verdict) };
            self.commit(command);
        }
    }

    /// Applies `command` as the state machine does a committed entry.
    fn commit(&mut self, command: Command) {
        let at_ms = self.now.as_millis() as u64;
        self.state.apply_logged(Logged { at_ms, command, by: None });
    }

    /// One tick at `now`, timed; its proposals are committed (applied, timed apart) and its
    /// attempts reported ended at once, as if every step were done in no time.
    fn tick(&mut self, now: Duration) -> Ticked {
        self.now = now;
        let t =
            Tick { now, state: &self.state, contact: &self.contact, ready: true, failing_since: &self.failing_since };
        let ticked = Stopwatch::start();
        let effects = self.leader.tick(&t);
        let tick = ticked.elapsed();
        let applied = Stopwatch::start();
        let mut proposed = Vec::new();
        for effect in &effects {
            if let Effect::Propose(command) = effect {
                self.commit(command.clone());
                proposed.push(command);
            }
        }
        let apply = applied.elapsed();
        let (entries, proposals) = (proposed.len(), proposed.iter().map(|c| c.commands().len()).sum());
        for command in proposed {
            self.leader.proposal_settled(command, true);
        }
        for effect in &effects {
            if let Effect::Start { attempt, .. } = effect {
                self.leader.attempt_ended(attempt);
            }
        }
        Ticked { tick, apply, entries, proposals }
    }

    /// The heartbeats of the agents of `sites`, each reporting every group of its site; the
    /// time the first took.
    fn heartbeats(&mut self, sites: &[&str]) -> Duration {
        let mut took = None;
        for &site in sites {
            let groups = self
                .state
                .groups
                .iter()
                .map(|(g, group)| {
                    let role = if group.active.as_str() == site { Role::Active } else { Role::Standby };
                    let report = GroupReport {
                        epoch: Some(group.epoch),
                        role: Some(role),
                        in_sync: Some(true),
                        ..Default::default()
                    };
                    (g.clone(), report)
                })
                .collect();
            // Each agent reaches the other while both run.
            let heartbeat = Heartbeat { peer_reachable: sites.len() == 2, peer_problem: None, groups };
            let confirmed = Some(Confirmed { term: self.leader.term() });
            let sent = Stopwatch::start();
            let answer = self.leader.heartbeat(self.now, site, &heartbeat, &self.state, confirmed);
            took.get_or_insert(sent.elapsed());
            debug_assert!(answer.is_some());
        }
        took.unwrap_or_default()
    }
}

fn measure(dir: &Path, n: usize) -> anyhow::Result<Costs> {
    let config = config(dir, n)?;
    let mut w = World::new(&config);
    w.see("east", Verdict::Up);
    w.see("west", Verdict::Up);
    let step = Duration::from_millis(100);
    // Settle: the topology proposed and committed, the agents heard from, the first
    // assessments journaled.
    let mut now = Duration::ZERO;
    for _ in 0..50 {
        now += step;
        w.heartbeats(&["east", "west"]);
        w.tick(now);
    }
    let (mut ticks, mut heartbeats) = (Vec::with_capacity(TICKS), Vec::with_capacity(TICKS));
    for _ in 0..TICKS {
        now += step;
        heartbeats.push(w.heartbeats(&["east", "west"]));
        ticks.push(w.tick(now).tick);
    }

    // East dies, its agent too: every node's probes fail, the verdicts follow, the hold-down
    // runs out; west's agent goes on.
    w.see("east", Verdict::Down);
    w.failing_since.insert("east".into(), now);
    let hold_down = config.groups.first().map_or(Duration::ZERO, |g| g.hold_down);
    let mut deciding = None;
    let until = now + hold_down + Duration::from_secs(1);
    while now < until && deciding.is_none() {
        now += Duration::from_millis(10);
        w.heartbeats(&["west"]);
        let ticked = w.tick(now);
        let moved = w.state.groups.values().filter(|g| g.active.as_str() == "west").count();
        if moved > 0 {
            anyhow::ensure!(moved == n, "{moved} of {n} groups failed over in the deciding tick");
            deciding = Some(ticked);
        }
    }
    let deciding = deciding.ok_or_else(|| {
        let last: Vec<String> =
            w.state.journal.since(0, usize::MAX).iter().rev().take(5).map(|e| format!("{e:?}")).collect();
        anyhow::anyhow!("no failover within the hold-down; the journal ends {last:?}")
    })?;
    anyhow::ensure!(w.state.groups.values().all(|g| g.epoch > Epoch(1)), "a group kept its epoch");

    let applied = Applied { last_applied: None, membership: Default::default(), state: w.state.clone() };
    let encoding = Stopwatch::start();
    let (meta, bytes) = state_machine::encode(applied)?;
    let encode = encoding.elapsed();
    let decoding = Stopwatch::start();
    let back = state_machine::verify_received(&meta, &bytes)?;
    let decode = decoding.elapsed();
    anyhow::ensure!(back.state.groups.len() == n, "the snapshot decoded to {} groups", back.state.groups.len());
    Ok(Costs {
        steady_tick: median(ticks),
        heartbeat: median(heartbeats),
        deciding_tick: deciding.tick,
        proposals: deciding.proposals,
        entries: deciding.entries,
        apply: deciding.apply,
        snapshot_bytes: bytes.len(),
        encode,
        decode,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bench drives the shipped cores to a whole site's failover for every count (it
    /// refuses to report a deciding tick that moved only some groups).
    #[test]
    fn every_group_fails_over_in_the_deciding_tick_and_the_snapshot_holds_them_all() {
        let dir = tempfile::tempdir().unwrap();
        let mut samples = Samples::new("engine", None);
        bench(dir.path(), &[2, 30], &mut samples).unwrap();
        let c = measure(dir.path(), 30).unwrap();
        assert_eq!(c.proposals, 60, "a failover and its journal entry per group");
        assert_eq!(c.entries, 1, "in one batch");
    }
}

//! `witness demo` as a new user runs it: one process, nothing installed, a complete failover
//! whose summary checks every target; and `--interactive`, which keeps the world running for
//! the CLI (here: a failback through the demo's API) until SIGINT.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn witness() -> Command {
    Command::new(env!("CARGO_BIN_EXE_witness"))
}

#[test]
fn the_demo_fails_over_and_reports_what_it_achieved() {
    let started = Instant::now();
    let out = witness().args(["demo", "--kill-after", "1s"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{text}");
    for expected in [
        "PLAN READINESS",
        "storage  openstorage  ready     target holds east",
        "dns      rfc2136      ready     target holds east",
        "notify   webhook      ready     target not readable",
        "failover east -> west at epoch 2",
        "promoted",
        "SUMMARY (shaped as a drill report",
        "| failover | east -> west | 2 |",
        "| storage | openstorage | done | 1 |",
        "| dns | rfc2136 | done | 1 |",
        "| notify | webhook | done | 1 |",
        "achieved RTO",
        "achieved RPO                     0.000 s",
        "DNS app.demo.test. A  198.51.100.10",
        "storage dc-west active, dc-east inactive",
        "webhook deliveries: app:2:notify",
        "west writable: true",
    ] {
        assert!(text.contains(expected), "demo output lacks {expected:?}:\n{text}");
    }
    eprintln!("demo ran in {:?}", started.elapsed());
}

/// The University Schedule: time compressed for the RPO, a backup skipped and the risk
/// journaled and exported, a manual failover waiting for approval and approved through the
/// API, the restore command and DNS run, the achieved RPO within its objective.
#[test]
fn the_university_schedule_demo_waits_for_approval_and_reports_the_data_lost() {
    let started = Instant::now();
    let out = witness().args(["demo", "--scenario", "university-schedule"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{text}");
    for expected in [
        "TIME IS COMPRESSED for the RPO: 1 s stands for 2 h",
        "backup 1: restored at cloud-dr",
        "backup 3: SKIPPED (the job failed)",
        "AT RISK",
        "rpo_at_risk",
        "rpo_within",
        "witness_rpo_exposure_seconds{group=\"schedule\"",
        "---- main-campus killed ----",
        "needs_approval",
        "the witness waits for an operator",
        "approved: cloud-dr active at epoch 2",
        "| failover | main-campus -> cloud-dr | 2 |",
        "| restore | command | done | 1 |",
        "| dns | rfc2136 | done | 1 |",
        "achieved RPO",
        "against the objective of 3.5 s (7.0 h)",
        "DNS timetable.demo.test. A  198.51.100.20",
        "restore: restored the latest backup for epoch 2",
        "cloud-dr writable: true",
    ] {
        assert!(text.contains(expected), "demo output lacks {expected:?}:\n{text}");
    }
    eprintln!("the university schedule demo ran in {:?}", started.elapsed());
}

#[test]
fn the_interactive_demo_serves_the_cli_until_interrupted() {
    let mut child = Reaped(
        witness()
            .args(["demo", "--interactive", "--kill-after", "1s"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut env = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(rest) = line.trim().strip_prefix("export ") {
            let pairs: Vec<(String, String)> = rest
                .split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.into(), v.into()))
                .collect();
            env = Some(pairs);
        }
        if line.contains("Ctrl-C stops the demo") {
            break;
        }
        assert!(Instant::now() < deadline, "the interactive demo did not get ready in time");
    }
    let env = env.expect("the demo says how to reach it");
    assert!(
        env.iter().any(|(k, _)| k == "WITNESS_CA") && env.iter().any(|(k, _)| k == "WITNESS_TOKEN_FILE"),
        "{env:?}"
    );
    // The operator follows the printed instructions: acknowledge, then a planned switchover
    // back to east (which came back as standby), forced since west is healthy.
    let cli = |args: &[&str]| {
        let out = witness().args(args).envs(env.iter().map(|(k, v)| (k, v))).output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr))
    };
    let (ok, text) = cli(&["ack", "app"]);
    assert!(ok, "ack refused:\n{text}");
    let (ok, text) = cli(&["failback", "app", "--force", "--reason", "switchover"]);
    assert!(ok && text.contains("is active at epoch 3"), "failback refused:\n{text}");
    // SAFETY: plain kill(2) on our own child, not yet reaped.
    assert_eq!(unsafe { libc::kill(child.0.id() as libc::pid_t, libc::SIGINT) }, 0);
    let drain = std::thread::spawn(move || lines.count());
    let status = child.0.wait().unwrap();
    drain.join().unwrap();
    assert!(status.success(), "the demo should stop cleanly on SIGINT: {status}");
}

/// Kills the child if the test fails before it stops on its own.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

//! `witness bench plan`: the failover plan end to end. Three witness nodes in this process
//! probe two site stubs with the metro timings; group `demo` has a plan of a webhook (to a
//! receiver in this process), a command, and, with `--dns-server`, an RFC 2136 update of a
//! real nameserver (`scripts/bench-plan` starts a BIND for it). Each trial kills the active
//! site's stub and times, on this process's clock: the decision committed, each step seen
//! done, and, observed independently by querying the nameserver, the record answering the
//! survivor's address.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::clock::Stopwatch;

use super::failover::settle;
use super::{ms, summary, Samples};
use crate::cli::local::{acknowledge, leader, start_cluster, wait_for_leader, Local, Stub, HOLD_DOWN, SITE, TIMINGS};
use crate::config::Rfc2136Step;
use crate::state::plan::Phase;

/// The record's value per site.
const VALUES: [(&str, &str); 2] = [("east", "192.0.2.1"), ("west", "198.51.100.7")];

/// A nameserver the plan updates (its zone must hold `record` with east's value).
#[derive(Clone)]
pub struct Dns {
    pub server: String,
    pub key_file: PathBuf,
    pub zone: String,
    pub record: String,
}

impl Dns {
    /// The plan step `name` updating this record, as a group's config table.
    pub fn step_config(&self, name: &str) -> String {
        let values: Vec<String> = VALUES.iter().map(|(s, v)| format!("{s} = [\"{v}\"]")).collect();
        format!(
            "[[group.step]]\nname = \"{name}\"\nkind = \"rfc2136\"\nserver = \"{}\"\nzone = \"{}\"\nrecord = \"{}\"\n\
             key_file = \"{}\"\nvalues = {{ {} }}\n",
            self.server,
            self.zone,
            self.record,
            self.key_file.display(),
            values.join(", ")
        )
    }

    /// Whether the nameserver now answers the survivor's (west's) address for the record.
    pub async fn answers_survivor(&self) -> bool {
        crate::actions::rfc2136::query(&self.step()).await.is_ok_and(|now| now.contains(VALUES[1].1) && now.len() == 1)
    }

    fn step(&self) -> Rfc2136Step {
        Rfc2136Step {
            server: self.server.clone(),
            zone: self.zone.clone(),
            record: self.record.clone(),
            record_type: "A".into(),
            ttl: 60,
            key_file: self.key_file.clone(),
            values: VALUES.iter().map(|(s, v)| (s.to_string(), vec![v.to_string()])).collect(),
        }
    }
}

pub async fn bench(dir: &Path, trials: usize, dns: Option<Dns>, samples: &mut Samples) -> anyhow::Result<()> {
    samples.set("trials", trials);
    samples.set("timings", TIMINGS);
    samples.set("dns_server", dns.as_ref().map(|d| d.server.clone()));
    let receiver = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hook = format!("http://{}/hook", receiver.local_addr()?);
    let app = axum::Router::new().route("/hook", axum::routing::post(|| async { axum::http::StatusCode::NO_CONTENT }));
    let receiver = tokio::spawn(async move { axum::serve(receiver, app).await });

    let mut stubs = [Stub::start(0.0, 1).await?, Stub::start(0.0, 2).await?];
    let site = |name: &str, url: String| {
        format!("[[site]]\nname = \"{name}\"\n{SITE}[[site.probe]]\nkind = \"http\"\nurl = \"{url}\"\n")
    };
    let mut config = format!(
        "{}{}[[group]]\nname = \"demo\"\nprimary = \"east\"\nsecondary = \"west\"\nreplication = \"sync\"\n\
         rto = \"5m\"\nrpo = \"0s\"\nfailover = \"automatic\"\nhold_down = \"{HOLD_DOWN}\"\n\
         [[group.step]]\nname = \"notify\"\nkind = \"webhook\"\nurl = \"{hook}\"\n\
         [[group.step]]\nname = \"record\"\nkind = \"command\"\nprogram = \"true\"\n",
        site("east", stubs[0].url()),
        site("west", stubs[1].url()),
    );
    if let Some(dns) = &dns {
        config += &dns.step_config("dns");
        let now = crate::actions::rfc2136::query(&dns.step()).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        anyhow::ensure!(
            now.contains(VALUES[0].1),
            "{} must hold {} (east's value) at the start; it holds {now:?}",
            dns.record,
            VALUES[0].1
        );
    }
    let nodes = start_cluster(&Local::new(dir, true, &[]), &config).await?;
    wait_for_leader(&nodes, "demo").await?;
    println!(
        "3 witness nodes, 2 sites, {TIMINGS}; plan: webhook, command{}",
        if dns.is_some() { ", rfc2136 (real nameserver)" } else { " (no --dns-server: no DNS step)" }
    );
    let mut timings: BTreeMap<String, Vec<Duration>> = BTreeMap::new();
    for trial in 0..trials {
        settle(&nodes).await?;
        let state = leader(&nodes).await?.applied.read().expect("state lock").state.groups["demo"].clone();
        let (failing, survivor) = if state.active == "east" { (0, "west") } else { (1, "east") };
        let wanted = VALUES.iter().find(|(s, _)| *s == survivor).expect("two sites").1;
        stubs[failing].kill().await;
        let killed = Stopwatch::start();
        let watch_dns = dns.as_ref().map(|d| {
            let step = d.step();
            tokio::spawn(async move {
                loop {
                    if crate::actions::rfc2136::query(&step).await.is_ok_and(|v| v.contains(wanted) && v.len() == 1) {
                        return killed.elapsed();
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
        });
        let mut seen: BTreeMap<String, Duration> = BTreeMap::new();
        loop {
            anyhow::ensure!(killed.elapsed() < Duration::from_secs(60), "trial {trial}: plan not done within 60 s");
            let leader = leader(&nodes).await?;
            let g = leader.applied.read().expect("state lock").state.groups["demo"].clone();
            if g.epoch > state.epoch {
                seen.entry("failure -> decision committed".into()).or_insert_with(|| killed.elapsed());
            }
            if let Some(plan) = g.plan.as_ref().filter(|p| p.epoch > state.epoch) {
                for s in plan.steps.iter().filter(|s| s.status.finished()) {
                    seen.entry(format!("failure -> step {} done", s.spec.name)).or_insert_with(|| killed.elapsed());
                }
                if plan.phase() == Phase::Done {
                    break;
                }
                anyhow::ensure!(plan.phase() != Phase::Stuck, "trial {trial}: plan stuck: {plan:?}");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        if let Some(watch) = watch_dns {
            let took = tokio::time::timeout(Duration::from_secs(30), watch).await??;
            seen.insert("failure -> DNS answers the survivor (queried)".into(), took);
        }
        let decided = seen["failure -> decision committed"];
        let mut line: Vec<(&String, &Duration)> = seen.iter().collect();
        line.sort_by_key(|(_, took)| **took);
        let line: Vec<String> = line.iter().map(|(k, v)| format!("{} {:.0} ms", short(k), ms(**v))).collect();
        println!("trial {:>3}: {}", trial + 1, line.join(", "));
        for (label, took) in seen {
            if let Some(step) = label.strip_prefix("failure -> step ") {
                let label = format!("decision -> step {step}");
                samples.push(&label, took.saturating_sub(decided));
                timings.entry(label).or_default().push(took.saturating_sub(decided));
            }
            samples.push(&label, took);
            timings.entry(label).or_default().push(took);
        }
        stubs[failing].restart().await?;
        acknowledge(&nodes, "demo").await?;
    }
    println!("over {trials} trials:");
    for (label, values) in timings {
        println!("  {label}: {}", summary(&values));
    }
    for n in nodes {
        n.shutdown().await;
    }
    drop(stubs);
    receiver.abort();
    Ok(())
}

fn short(label: &str) -> &str {
    label.strip_prefix("failure -> ").unwrap_or(label)
}

//! `witness events [--since N] [--follow]`: the decision journal, one line per event.

use std::time::Duration;

use serde::Deserialize;

use super::client::{Client, Endpoint};
use super::Exit;
use crate::state::journal::Event;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    endpoint: Endpoint,
    /// Show events numbered above this.
    #[arg(long, default_value_t = 0)]
    since: u64,
    /// Keep printing new events as they commit (polls every 500 ms). A node that stops
    /// answering is waited for (or the next of several `--endpoint`s is used), and the journal
    /// continues after the last event printed.
    #[arg(long)]
    follow: bool,
    /// Print each event as a JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Deserialize)]
struct Page {
    events: Vec<Event>,
    last_seq: u64,
}

pub async fn run(args: Args) -> Exit {
    let client = match Client::new(&args.endpoint, Duration::from_secs(10)) {
        Ok(c) => c,
        Err(e) => return e.report(),
    };
    let mut since = args.since;
    let mut lost = false;
    loop {
        let page: Page = match client.get(&format!("/v1/events?since={since}")).await {
            Ok(p) => p,
            Err(e) if args.follow && e.exit == Exit::Unavailable => {
                if !lost {
                    eprintln!("waiting for the witness ({}); following again from event {since}", e.message);
                    lost = true;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(e) => return e.report(),
        };
        if std::mem::take(&mut lost) {
            eprintln!("the witness answers again");
        }
        for event in &page.events {
            if args.json {
                println!("{}", serde_json::to_string(event).expect("event serializes"));
            } else {
                println!("{}", line(event));
            }
        }
        since = page.last_seq;
        if page.events.is_empty() {
            if !args.follow {
                return Exit::Ok;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

fn line(e: &Event) -> String {
    let secs = (e.at_ms / 1000) as i64;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    let mut out = format!("#{:<6} {h:02}:{m:02}:{s:02}.{:03}Z  {:<16} ", e.seq, e.at_ms % 1000, e.kind);
    if let Some(g) = &e.group {
        out += &format!("[{g}] ");
    }
    out += &e.message;
    if let Some(by) = &e.by {
        out += &format!(" (by {by})");
    }
    for (k, v) in &e.evidence {
        out += &format!("\n          {k}: {v}");
    }
    out
}

//! `witness config check --config FILE`: validate (the file, the secret files it names, and its
//! TLS files as `serve` will use them) and print every problem, or a summary with each group's worst-case RTO budget (exit 1 when one
//! exceeds its objective).

use std::path::PathBuf;

use super::Exit;
use crate::config::Config;

#[derive(clap::Args)]
pub struct Args {
    /// Path to the node's TOML config file.
    #[arg(long)]
    config: PathBuf,
}

pub fn run(args: Args) -> Exit {
    match Config::load(&args.config) {
        Ok(c) => {
            let (mut errors, warnings) = crate::actions::audit(&c);
            // A `[dev]` cluster makes its certificates on first start: nothing to check before.
            let made_at_start = c.dev.as_ref().and_then(|d| d.tls_dir.as_ref()).is_some_and(|dir| !dir.exists());
            if !made_at_start {
                errors.extend(crate::node::credentials::audit(&c));
            }
            for w in &warnings {
                eprintln!("warning: {w}");
            }
            if !errors.is_empty() {
                for e in &errors {
                    eprintln!("error: {e}");
                }
                return Exit::Usage;
            }
            println!(
                "{}: OK (node {}, cluster {:?}, {} initial member(s), {} site(s), {} group(s))",
                args.config.display(),
                c.node.id,
                c.cluster.name,
                c.cluster.initial_members.len(),
                c.sites.len(),
                c.groups.len()
            );
            let mut exit = Exit::Ok;
            for group in &c.groups {
                let budget = crate::config::budget::rto_budget(&c, group);
                let verdict = if budget.within(group.rto) {
                    "within"
                } else {
                    exit = Exit::Failed;
                    "EXCEEDS"
                };
                println!(
                    "group {}: worst-case RTO {} {verdict} its objective {}",
                    group.name,
                    secs(budget.total),
                    crate::config::duration::format(group.rto)
                );
                for (stage, took, how) in &budget.stages {
                    let how = if how.is_empty() { String::new() } else { format!("  ({how})") };
                    println!("  {stage:<12} {:>9}{how}", secs(*took));
                }
                if group.failover == crate::config::FailoverMode::Manual {
                    println!("  (failover needs approval: the time an operator takes is not counted)");
                }
            }
            exit
        }
        Err(e) => {
            eprintln!("{e}");
            Exit::Usage
        }
    }
}

/// `3.5s`, `2m10s`, `1h05m`: to the tenth of a second under a minute, whole seconds above.
fn secs(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{:.1}s", d.as_secs_f64()),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m{:02}s", s / 3600, s / 60 % 60, s % 60),
    }
}

//! `witness agent`: run a site agent until SIGTERM or SIGINT, loading its certificate and
//! token again on SIGHUP; `witness agent status`: show an agent's roles, epochs and leases;
//! `witness agent check`: what would keep an agent from holding its leases, before it runs.

use std::os::fd::RawFd;
use std::path::PathBuf;
use std::time::Duration;

use super::client::{Client, Endpoint};
use super::Exit;
use crate::agent::AgentStatus;
use crate::config::agent::AgentConfig;

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Sub>,
    /// Path to the agent's TOML config file.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Serve on this already-bound, listening TCP socket instead of binding agent.listen.
    #[arg(long, value_name = "FD")]
    pub listen_fd: Option<RawFd>,
}

#[derive(clap::Subcommand)]
pub enum Sub {
    /// Show an agent's view: per group its role, epoch, writability and leases remaining.
    Status(StatusArgs),
    /// Check an agent's config before it runs: its files, its certificate, the other site's
    /// agent over the peer-lease link, and every witness node taking it for its site.
    Check(CheckArgs),
}

#[derive(clap::Args)]
pub struct CheckArgs {
    /// Path to the agent's TOML config file.
    #[arg(long)]
    config: PathBuf,
}

#[derive(clap::Args)]
pub struct StatusArgs {
    /// Base URL of the agent (http:// for an agent without a site certificate).
    #[arg(long, env = "WITNESS_AGENT", default_value = "https://127.0.0.1:7511")]
    agent: String,
    /// PEM file of the CA that signed the agent's site certificate.
    #[arg(long, env = "WITNESS_CA", value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Print the raw JSON document.
    #[arg(long)]
    json: bool,
}

pub fn run(config: Option<PathBuf>, listen_fd: Option<RawFd>) -> Exit {
    let Some(path) = config else {
        eprintln!("error: --config FILE is required to run an agent (or use `witness agent status`)");
        return Exit::Usage;
    };
    let config = match AgentConfig::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return Exit::Usage;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return Exit::Failed;
        }
    };
    runtime.block_on(async move {
        if config.plain_http {
            tracing::warn!("agent.plain_http = true: heartbeats and peer leases are unauthenticated; development only");
        }
        let listener = match super::serve::listener(listen_fd, config.listen, "agent.listen").await {
            Ok(l) => l,
            Err(msg) => {
                tracing::error!("{msg}");
                return Exit::Failed;
            }
        };
        let running = match crate::agent::start(config, listener).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("cannot start: {e:#}");
                return Exit::Failed;
            }
        };
        let signal = super::serve::shutdown_signal();
        tokio::pin!(signal);
        let mut hangup =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).expect("install SIGHUP handler");
        loop {
            tokio::select! {
                signal = &mut signal => {
                    tracing::info!(signal, "agent shutting down");
                    break;
                }
                _ = hangup.recv() => reload(&running.agent, &path),
            }
        }
        running.shutdown().await;
        Exit::Ok
    })
}

/// The credential files the config file names now; anything wrong leaves the agent as it was.
/// Other settings take effect only at the next start.
fn reload(agent: &crate::agent::Agent, path: &std::path::Path) {
    let result = AgentConfig::load(path).map_err(|e| anyhow::anyhow!("{e}")).and_then(|config| agent.reload(&config));
    match result {
        Ok(()) => tracing::info!(config = %path.display(), "SIGHUP: certificate and token reloaded"),
        Err(e) => tracing::error!(config = %path.display(), "SIGHUP: reload refused, nothing changed: {e:#}"),
    }
}

/// Exit 0 when the agent answered, 3 when it could not be reached.
pub async fn status(args: StatusArgs) -> Exit {
    let endpoint = Endpoint { endpoint: args.agent, ca: args.ca, token_file: None };
    let client = match Client::new(&endpoint, Duration::from_secs(5)) {
        Ok(c) => c,
        Err(e) => return e.report(),
    };
    let status: AgentStatus = match client.get("/v1/status").await {
        Ok(s) => s,
        Err(e) => return e.report(),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status).expect("status serializes"));
        return Exit::Ok;
    }
    let answered = status.witness_answered_ms_ago.map_or("never".into(), |ms| format!("{ms} ms ago"));
    println!(
        "site {}   peer {} ({})   witness {} (answered {answered})",
        status.site,
        status.peer,
        if status.peer_reachable { "reachable" } else { "UNREACHABLE" },
        status.witness
    );
    if let Some(why) = &status.peer_problem {
        println!("PEER LINK: {why}");
    }
    if let Some(why) = &status.witness_problem {
        println!("WITNESS UNREACHABLE: {why}");
    }
    println!("{:<20} {:<9} {:>6} {:<9} {:>10} {:>10}", "GROUP", "ROLE", "EPOCH", "WRITABLE", "WITNESS", "PEER");
    for (name, g) in &status.groups {
        let role = g.role.map_or("unknown".to_string(), |r| r.to_string());
        let epoch = g.epoch.map_or("-".to_string(), |e| e.to_string());
        println!(
            "{name:<20} {role:<9} {epoch:>6} {:<9} {:>8}ms {:>8}ms",
            if g.writable { "yes" } else { "no" },
            g.witness_lease_ms,
            g.peer_lease_ms
        );
    }
    Exit::Ok
}

/// Exit 0 when every check passes, 1 when one fails, 2 when the config does not load.
pub async fn check(args: CheckArgs) -> Exit {
    let config = match AgentConfig::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return Exit::Usage;
        }
    };
    let findings = crate::agent::check::check(&config).await;
    for f in &findings {
        match &f.problem {
            None => println!("ok       {}", f.what),
            Some(problem) => println!("PROBLEM  {}: {problem}", f.what),
        }
    }
    if config.listen.ip().is_unspecified() {
        println!(
            "note     agent.listen {} is every address: whether this site's certificate covers the address the \
             other site dials is what `witness agent check` there says",
            config.listen
        );
    }
    if findings.iter().any(|f| f.problem.is_some()) {
        Exit::Failed
    } else {
        Exit::Ok
    }
}

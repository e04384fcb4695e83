//! Command line: one file per subcommand. Exit codes are part of the interface:
//! 0 success; 1 the operation failed or was refused (or, for `status`, the node is not
//! ready); 2 bad usage or an invalid config; 3 the cluster could not be reached or has no
//! leader right now (retry later).

mod agent;
mod bench;
mod client;
mod config_check;
mod control;
mod demo;
mod drill;
mod events;
mod gen_certs;
mod local;
mod members;
mod plan;
mod serve;
mod status;
mod token;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::telemetry::LogFormat;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Ok = 0,
    Failed = 1,
    Usage = 2,
    Unavailable = 3,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e as u8)
    }
}

#[derive(Parser)]
#[command(name = "witness", version, about = "Quorum arbiter for two-site disaster recovery")]
struct Cli {
    /// Log output: `text` for terminals, `json` for log pipelines.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Log level (error, warn, info, debug, trace) or a tracing filter such as `info,witness=debug`.
    #[arg(long, global = true, env = "WITNESS_LOG", default_value = "info")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// A complete failover on this machine, nothing to install: 3 nodes, 2 sites with agents,
    /// storage, DNS and a webhook; the primary is killed and the summary shows RTO and RPO.
    Demo(demo::Args),
    /// Run a witness node.
    Serve(serve::Args),
    /// Run a site agent (`witness agent --config FILE`), or ask one for its view (`status`).
    Agent(agent::Args),
    /// Work with config files.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Show a node's view of the cluster: leader, members, sites, groups.
    Status(status::Args),
    /// The decision journal: every decision, near-decision and operator action.
    Events(events::Args),
    /// List, add or remove cluster members.
    Members(members::Args),
    /// A group's failover plan: show it, check it, or answer a stuck one (retry, skip).
    Plan(plan::Args),
    #[command(flatten)]
    Control(control::Control),
    /// A DR drill: switch GROUP to its other site while both are up, optionally back, and
    /// report every phase against the RTO budget; or `show` the last report.
    Drill(drill::Args),
    /// Benchmarks that print numbers.
    Bench {
        #[command(subcommand)]
        command: bench::Command,
    },
    /// Make a CA and certificates for the nodes and sites, or issue more with an existing CA.
    #[command(name = "gen-certs")]
    GenCerts(gen_certs::Args),
    /// API tokens: make one with its config block (`new`), or hash one for the config (`hash`).
    Token {
        #[command(subcommand)]
        command: token::Command,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a config file and report every problem in it.
    Check(config_check::Args),
}

pub fn main() -> ExitCode {
    crate::tls::init();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { Exit::Usage } else { Exit::Ok }.into();
        }
    };
    let long_running = matches!(cli.command, Command::Serve(_) | Command::Demo(_) | Command::Bench { .. })
        || matches!(&cli.command, Command::Agent(a) if a.command.is_none());
    if !long_running {
        // A reader that goes away (`witness events | head`) ends a client command quietly, as
        // it would any Unix filter; servers keep Rust's default of ignoring SIGPIPE.
        // SAFETY: restoring the default disposition of one signal, before any thread starts.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    let exit = match cli.command {
        Command::Config { command: ConfigCommand::Check(args) } => config_check::run(args),
        Command::Serve(args) => with_logs(&cli.log_format, &cli.log_level, || serve::run(args)),
        // Quiet by default: the demo's own timeline is the output.
        Command::Demo(args) => {
            let level = if cli.log_level == "info" { "error" } else { &cli.log_level };
            with_logs(&cli.log_format, level, || demo::run(args))
        }
        Command::Agent(args) => match args.command {
            Some(agent::Sub::Status(status)) => client::block_on(agent::status(status)),
            Some(agent::Sub::Check(check)) => client::block_on(agent::check(check)),
            None => with_logs(&cli.log_format, &cli.log_level, || agent::run(args.config, args.listen_fd)),
        },
        Command::Bench { command } => with_logs(&cli.log_format, &cli.log_level, || bench::run(command)),
        Command::Status(args) => client::block_on(status::run(args)),
        Command::Members(args) => client::block_on(members::run(args)),
        Command::Plan(args) => client::block_on(plan::run(args)),
        Command::Events(args) => client::block_on(events::run(args)),
        Command::Control(control) => client::block_on(control::run(control)),
        Command::Drill(args) => client::block_on(drill::run(args)),
        Command::GenCerts(args) => gen_certs::run(args),
        Command::Token { command } => token::run(command),
    };
    exit.into()
}

fn with_logs(format: &LogFormat, level: &str, run: impl FnOnce() -> Exit) -> Exit {
    if let Err(e) = crate::telemetry::init(*format, level) {
        eprintln!("error: {e}");
        return Exit::Usage;
    }
    run()
}

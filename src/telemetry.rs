//! Logging set-up: human-readable lines on a terminal, or one JSON object per line.
//!
//! Levels: `error` needs a human now (storage failure, cannot serve); `warn` is degraded but
//! working (no leader, peer unreachable, development-only settings); `info` is a state change
//! worth keeping (leader elected, member added, topology registered, start and stop);
//! `debug` is per-request detail; `trace` is everything.

use tracing_subscriber::EnvFilter;

/// A value as one line of JSON, for a log field: what operators and log pipelines read, where
/// Rust's debug form would print type names.
pub fn json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).unwrap_or_else(|e| format!("(not serializable: {e})"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// `level` is a level (`info`) or a full filter (`info,witness=debug`). openraft and the log
/// store (`raft_log`, `chunked_wal`) log their internals at info, so they are held at warn
/// unless the filter names openraft (or asks for less). openraft's warnings about each failed
/// request to a peer (several a second, in Rust's debug form) are held back to errors, since
/// `raft::links` logs a failing peer once, with its cause, and again once a minute.
pub fn init(format: LogFormat, level: &str) -> Result<(), String> {
    let quieter_than_warn = matches!(level, "error" | "off");
    let directives = if level.contains("openraft") || quieter_than_warn {
        level.to_string()
    } else {
        format!("{level},openraft=warn,openraft::core::heartbeat=error,openraft::replication=error,raft_log=warn,chunked_wal=warn")
    };
    let filter = EnvFilter::try_new(&directives).map_err(|e| format!("--log-level {level:?}: {e}"))?;
    // Colours only on a terminal: journald and log files get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    let result = match format {
        LogFormat::Text => builder.with_target(false).try_init(),
        LogFormat::Json => builder.json().with_current_span(false).try_init(),
    };
    result.map_err(|e| e.to_string())
}

//! Logging set-up: human-readable lines on a terminal, or one JSON object per line.
//!
//! Levels: `error` needs a human now (storage failure, cannot serve); `warn` is degraded but
//! working (no leader, peer unreachable, development-only settings); `info` is a state change
//! worth keeping (leader elected, member added, topology registered, start and stop);
//! `debug` is per-request detail; `trace` is everything.

use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// `level` is a level (`info`) or a full filter (`info,witness=debug`). openraft logs its
/// internals at info, so it is held at warn unless the filter names it (or asks for less).
pub fn init(format: LogFormat, level: &str) -> Result<(), String> {
    let quieter_than_warn = matches!(level, "error" | "off");
    let directives = if level.contains("openraft") || quieter_than_warn {
        level.to_string()
    } else {
        format!("{level},openraft=warn")
    };
    let filter = EnvFilter::try_new(&directives).map_err(|e| format!("--log-level {level:?}: {e}"))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.with_target(false).try_init(),
        LogFormat::Json => builder.json().with_current_span(false).try_init(),
    };
    result.map_err(|e| e.to_string())
}

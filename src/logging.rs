//! Log output: human text on a terminal; plain text without colours otherwise, and without
//! timestamps under journald (which adds its own); or JSON lines for log shippers.
//!
//! Logs go to stderr so that stdout stays machine-readable (`--json`, `emulate`'s first line).
//! `RUST_LOG` overrides the level chosen by `-v`/`-q`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// The log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Installs the global subscriber. `verbosity` 0 is `info`; each step up or down moves a level.
pub fn init(format: LogFormat, verbosity: i8) {
    let level = match verbosity {
        i8::MIN..=-2 => "error",
        -1 => "warn",
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("warn,purgeq={level}")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let terminal = std::io::stderr().is_terminal();
    // journald stamps every line itself and sets JOURNAL_STREAM for the services it captures.
    let journald = !terminal && std::env::var_os("JOURNAL_STREAM").is_some();
    // A failure means a subscriber is already installed (tests); keep that one.
    let _ = match (format, journald) {
        (LogFormat::Json, _) => builder.json().flatten_event(true).try_init(),
        (LogFormat::Text, true) => builder.with_ansi(false).without_time().try_init(),
        (LogFormat::Text, false) => builder.with_ansi(terminal).try_init(),
    };
}

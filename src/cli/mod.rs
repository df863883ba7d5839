//! The command line: global options, one module per subcommand, and exit codes.

mod cancel;
mod completions;
mod config_check;
mod defaults;
mod demo;
mod emulate;
mod enqueue;
mod man;
mod prioritize;
mod prune;
mod retry;
mod status;
mod table;
mod verb;
mod wait;
mod worker;

pub use defaults::parse_args;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::config;
use crate::logging::LogFormat;
use crate::settings::{self, Settings};
use crate::store::{Durability, Location, OpenOptions, Store};

/// Process exit codes. Scripts can rely on these; the README lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    /// Done.
    Success = 0,
    /// A runtime failure: database, I/O, configuration.
    Failure = 1,
    /// The command line is malformed (clap's own code).
    Usage = 2,
    /// Input was rejected; nothing was written.
    InvalidInput = 3,
    /// A job named on the command line does not exist, or an operator verb refused a job's
    /// state; nothing was changed.
    Refused = 4,
    /// `wait`: every job ended, and at least one failed or was cancelled.
    Unsuccessful = 5,
    /// `wait`: the timeout passed before every job ended.
    TimedOut = 6,
}

impl From<ExitCode> for std::process::ExitCode {
    fn from(code: ExitCode) -> Self {
        std::process::ExitCode::from(code as u8)
    }
}

/// purgeq: a durable CDN purge queue.
///
/// Producers enqueue purge jobs; a worker claims them in batches, collapses duplicates, calls the
/// provider within its quota and rate limits, and records every outcome; `status` audits it.
#[derive(Debug, Parser)]
#[command(name = "purgeq", version, max_term_width = 100)]
pub struct Cli {
    /// The queue database: a SQLite file path (created with its directory if missing), or a
    /// postgres:// URL. Default: $STATE_DIRECTORY/purgeq.db, else
    /// $XDG_STATE_HOME/purgeq/purgeq.db, else ~/.local/state/purgeq/purgeq.db.
    #[arg(long, global = true, env = "PURGEQ_DB", value_name = "PATH|URL")]
    db: Option<PathBuf>,

    /// How long to wait for another process's lock on a SQLite database before giving up
    /// (100ms to 10m).
    #[arg(long, global = true, env = "PURGEQ_BUSY_TIMEOUT", value_name = "DUR", default_value = "10s",
          value_parser = busy_timeout_arg, hide_env_values = true, allow_hyphen_values = true)]
    busy_timeout: Duration,

    /// The config file: accounts, the hosts each serves, and worker defaults. Default:
    /// $XDG_CONFIG_HOME/purgeq/purgeq.toml (or ~/.config/purgeq/purgeq.toml), else
    /// /etc/purgeq/purgeq.toml, whichever exists. Without one (or with no account in it), one
    /// account named `default` per provider comes from the environment.
    #[arg(long, global = true, env = "PURGEQ_CONFIG", value_name = "PATH")]
    config: Option<PathBuf>,

    /// Log line format (logs go to stderr).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    /// More log detail (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,

    /// Less log detail (-q warnings only, -qq errors only).
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "verbose")]
    quiet: u8,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Enqueue(enqueue::Args),
    Status(status::Args),
    Retry(retry::Args),
    Cancel(cancel::Args),
    Prioritize(prioritize::Args),
    Prune(prune::Args),
    Worker(worker::Args),
    Wait(wait::Args),
    Emulate(emulate::Args),
    Demo(demo::Args),
    Config(config_check::Args),
    Completions(completions::Args),
    Man(man::Args),
}

impl Cli {
    /// The log format chosen.
    pub fn log_format(&self) -> LogFormat {
        self.log_format
    }

    /// Whether the command is one short database operation (enqueue, status, an operator verb)
    /// that needs no worker threads: it runs on the calling thread, which starts faster.
    pub fn is_one_shot(&self) -> bool {
        !matches!(
            self.command,
            Command::Worker(_) | Command::Emulate(_) | Command::Demo(_)
        )
    }

    /// Net verbosity: `-v` count minus `-q` count.
    pub fn verbosity(&self) -> i8 {
        i8::try_from(self.verbose).unwrap_or(i8::MAX) - i8::try_from(self.quiet).unwrap_or(i8::MAX)
    }
}

/// What every subcommand may need: where the database is and how to open it.
#[derive(Debug, Clone)]
pub struct Context {
    db: Option<PathBuf>,
    busy_timeout: Duration,
    config: Option<PathBuf>,
}

impl Context {
    /// The database: `--db`/`PURGEQ_DB` (a path, `sqlite://` or `postgres://` URL), or the
    /// default SQLite file.
    pub fn location(&self) -> anyhow::Result<Location> {
        match &self.db {
            Some(p) => {
                let text = p
                    .to_str()
                    .with_context(|| format!("--db {} is not valid UTF-8", p.display()))?;
                Ok(Location::parse(text))
            }
            None => Ok(Location::Sqlite(config::default_db_path()?)),
        }
    }

    /// The config file, validated (no secret is read), or `None` when there is none.
    pub fn settings(&self) -> anyhow::Result<Option<Settings>> {
        match settings::locate(self.config.as_deref()) {
            Some(path) => Ok(Some(settings::load(&path)?)),
            None => Ok(None),
        }
    }

    /// How long a SQLite write waits for another process's lock.
    pub fn busy_timeout(&self) -> Duration {
        self.busy_timeout
    }

    /// Opens the store with the given durability.
    pub async fn open(&self, durability: Durability) -> anyhow::Result<Store> {
        self.open_with(durability, false).await
    }

    /// Opens the store over one connection, for a producer's single transaction.
    pub async fn open_one(&self, durability: Durability) -> anyhow::Result<Store> {
        let location = self.location()?;
        let options = OpenOptions {
            busy_timeout: self.busy_timeout,
            max_connections: 1,
            ..OpenOptions::new(durability)
        };
        Store::connect(&location, &options)
            .await
            .with_context(|| format!("opening the queue database {}", location.display()))
    }

    /// Opens the store read-only (for audits): nothing is created, migrated or written.
    pub async fn open_read_only(&self) -> anyhow::Result<Store> {
        self.open_with(Durability::Normal, true).await
    }

    async fn open_with(&self, durability: Durability, read_only: bool) -> anyhow::Result<Store> {
        let location = self.location()?;
        let options = OpenOptions {
            busy_timeout: self.busy_timeout,
            read_only,
            ..OpenOptions::new(durability)
        };
        Store::connect(&location, &options)
            .await
            .with_context(|| format!("opening the queue database {}", location.display()))
    }
}

/// Runs the command line and returns the process exit code. Errors are printed here, once.
pub async fn run(cli: Cli) -> ExitCode {
    let ctx = Context {
        db: cli.db,
        busy_timeout: cli.busy_timeout,
        config: cli.config,
    };
    let result = match cli.command {
        Command::Enqueue(args) => args.run(&ctx).await,
        Command::Status(args) => args.run(&ctx).await,
        Command::Retry(args) => args.run(&ctx).await,
        Command::Cancel(args) => args.run(&ctx).await,
        Command::Prioritize(args) => args.run(&ctx).await,
        Command::Prune(args) => args.run(&ctx).await,
        Command::Worker(args) => args.run(&ctx).await,
        Command::Wait(args) => args.run(&ctx).await,
        Command::Emulate(args) => args.run().await,
        Command::Demo(args) => args.run().await,
        Command::Config(args) => args.run(&ctx).await,
        Command::Completions(args) => args.run(),
        Command::Man(args) => args.run(),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::Failure
        }
    }
}

/// Parses a duration flag (`30s`, `5m`, `1h30m`, `7d`).
pub(crate) fn duration_arg(text: &str) -> Result<std::time::Duration, String> {
    if text.trim_start().starts_with('-') {
        return Err(format!(
            "{text:?} is negative: a duration must be 0 or more"
        ));
    }
    crate::clock::parse_duration(text)
}

/// Parses a duration flag that must lie within `min..=max` (named in the refusal).
pub(crate) fn bounded_duration(
    text: &str,
    min: Duration,
    max: Duration,
) -> Result<Duration, String> {
    let d = duration_arg(text)?;
    if d < min || d > max {
        return Err(format!(
            "{text:?} is out of range: it must be from {} to {}",
            show(min),
            show(max)
        ));
    }
    Ok(d)
}

fn show(d: Duration) -> String {
    if d.is_zero() {
        "0s".to_owned()
    } else if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        crate::clock::human(d)
    }
}

/// The longest `enqueue --delay`: jobs further out than this are surely a typo.
pub const MAX_DELAY: Duration = Duration::from_secs(30 * 86_400);

/// `--poll-interval`: 10ms to 1h (0 would spin an idle worker).
pub(crate) fn poll_interval_arg(text: &str) -> Result<Duration, String> {
    bounded_duration(text, Duration::from_millis(10), Duration::from_secs(3600))
}

/// `--lease`: 1s to 1d.
pub(crate) fn lease_arg(text: &str) -> Result<Duration, String> {
    bounded_duration(text, Duration::from_secs(1), Duration::from_secs(86_400))
}

/// `--request-timeout`: 1s to 10m (0 would time every call out and spend its attempts).
pub(crate) fn request_timeout_arg(text: &str) -> Result<Duration, String> {
    bounded_duration(text, Duration::from_secs(1), Duration::from_secs(600))
}

/// `--busy-timeout`: 100ms to 10m.
fn busy_timeout_arg(text: &str) -> Result<Duration, String> {
    bounded_duration(text, Duration::from_millis(100), Duration::from_secs(600))
}

/// `enqueue --delay`: 0 to [`MAX_DELAY`].
pub(crate) fn delay_arg(text: &str) -> Result<Duration, String> {
    bounded_duration(text, Duration::ZERO, MAX_DELAY)
}

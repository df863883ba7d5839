//! The config file's `[worker]` table as defaults for the worker's flags.
//!
//! Invariants:
//! - A key is a worker flag's long name with underscores (`poll_interval`); anything else is
//!   an error naming the file, the line and the key.
//! - The command line and the environment win: a key is used only for a flag whose value would
//!   otherwise be clap's default. It is then passed exactly as if typed, so the flag's own
//!   parser checks it, and a refusal names the key's place.

use std::ffi::OsString;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory as _, FromArgMatches as _};

use super::Cli;
use crate::settings::{self, Settings, WorkerKey};

/// Keys that are not worker settings.
const NOT_SETTINGS: &[&str] = &["help", "version", "config"];

/// Parses the command line; for `worker`, the config file's `[worker]` keys fill in the flags
/// not given. Exits like clap on a usage error, and with 1 on a config file error.
pub fn parse_args() -> Cli {
    let args: Vec<OsString> = std::env::args_os().collect();
    let matches = Cli::command().get_matches_from(&args);
    let extra = match worker_args(&matches) {
        Ok(extra) => extra,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(super::ExitCode::Failure as i32);
        }
    };
    let matches = if extra.is_empty() {
        matches
    } else {
        Cli::command().get_matches_from(args.into_iter().chain(extra))
    };
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// The `--flag=value` arguments the `[worker]` table adds (none for other commands).
fn worker_args(matches: &ArgMatches) -> anyhow::Result<Vec<OsString>> {
    let Some(("worker", sub)) = matches.subcommand() else {
        return Ok(Vec::new());
    };
    let explicit = sub.get_one::<std::path::PathBuf>("config");
    let Some(path) = settings::locate(explicit.map(|p| p.as_path())) else {
        return Ok(Vec::new());
    };
    worker_defaults(&settings::load(&path)?, Some(sub))
}

/// The `--flag=value` arguments `settings`' `[worker]` table gives, leaving out flags `given`
/// sets on the command line or in the environment. Every key is checked.
pub(super) fn worker_defaults(
    settings: &Settings,
    given: Option<&ArgMatches>,
) -> anyhow::Result<Vec<OsString>> {
    let mut command = Cli::command();
    command.build();
    let worker = command
        .find_subcommand("worker")
        .ok_or_else(|| anyhow::anyhow!("the worker command is missing"))?;
    let mut extra = Vec::new();
    for key in &settings.worker {
        let arg = worker
            .get_arguments()
            .find(|a| a.get_id() == key.key.as_str() && !NOT_SETTINGS.contains(&key.key.as_str()))
            .ok_or_else(|| unknown(key))?;
        if given.is_some_and(|m| {
            matches!(
                m.value_source(&key.key),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            )
        }) {
            continue;
        }
        let long = arg.get_long().ok_or_else(|| unknown(key))?;
        let flag = !arg.get_action().takes_values();
        let Some(given) = as_arg(key, long, flag)? else {
            continue;
        };
        // Parsed alone first, so a bad value is refused naming its place in the file.
        if let Err(e) = Cli::command().try_get_matches_from(["purgeq", "worker", given.as_str()]) {
            anyhow::bail!("{}: {}", key.place, first_line(&e.to_string()));
        }
        extra.push(OsString::from(given));
    }
    Ok(extra)
}

fn unknown(key: &WorkerKey) -> anyhow::Error {
    anyhow::anyhow!(
        "{}: unknown key `{}`: the [worker] table takes the worker's flags by their long names with underscores (see `purgeq worker --help`)",
        key.place,
        key.key
    )
}

/// The argument for one key: `--name=value`, `--name` for a true flag, nothing for a false one.
fn as_arg(key: &WorkerKey, long: &str, flag: bool) -> anyhow::Result<Option<String>> {
    let text = match (&key.value, flag) {
        (toml::Value::Boolean(true), true) => return Ok(Some(format!("--{long}"))),
        (toml::Value::Boolean(false), true) => return Ok(None),
        (toml::Value::String(s), false) => s.clone(),
        (toml::Value::Integer(i), false) => i.to_string(),
        (toml::Value::Float(f), false) => f.to_string(),
        (_, true) => anyhow::bail!("{}: must be true or false", key.place),
        (_, false) => anyhow::bail!("{}: must be a string or a number", key.place),
    };
    Ok(Some(format!("--{long}={text}")))
}

fn first_line(text: &str) -> &str {
    let line = text.lines().next().unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line)
}

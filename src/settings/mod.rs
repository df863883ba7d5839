//! The config file: several accounts per provider, each with its own keys, hosts and limits,
//! and defaults for the worker's flags.
//!
//! `--config PATH` or `PURGEQ_CONFIG` names it; otherwise `$XDG_CONFIG_HOME/purgeq/purgeq.toml`
//! (or `~/.config/purgeq/purgeq.toml`), then `/etc/purgeq/purgeq.toml`, whichever exists first.
//! A file with no `[[qiniu]]` or `[[pan123]]` table leaves the accounts to the environment
//! (one account named `default` per provider), as without a file.
//!
//! Invariants:
//! - A secret is referenced, never written: `secret_key` or `client_secret` in the file is
//!   refused naming its place, and its value is never read into memory (see `file.rs`).
//! - Parsing reads no environment variable and no secret file: `status` and `enqueue` learn
//!   account names and hosts without touching a credential. Secrets are read by
//!   [`SecretSource::resolve`], only by the worker and `config check`.
//! - Every error names the file, the line and the key.
//! - Host patterns are validated and every pattern belongs to one account ([`RoutingTable`]).

mod file;
pub mod routing;

use std::collections::BTreeSet;
use std::fmt;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use toml::Spanned;

pub use routing::{HostPattern, RoutingTable, Unroutable};

use crate::config::{self, ConfigError};
use crate::secret::Secret;

/// The system-wide config file.
pub const SYSTEM_PATH: &str = "/etc/purgeq/purgeq.toml";
/// The largest config file read.
const MAX_FILE_BYTES: u64 = 1 << 20;
/// The most URLs one Qiniu request may carry (its API's hard limit).
const MAX_BATCH: i64 = crate::provider::qiniu::HARD_MAX_URLS as i64;

/// Where something is in the config file: the file, the line and the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// The file.
    pub path: PathBuf,
    /// The line, from 1.
    pub line: usize,
    /// The key (or table) at that line.
    pub key: String,
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} line {}", self.path.display(), self.line)?;
        if !self.key.is_empty() {
            write!(f, ", {}", self.key)?;
        }
        Ok(())
    }
}

/// The config file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The file can't be read.
    #[error("cannot read the config file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is larger than any sane config file.
    #[error("the config file {path} is larger than {MAX_FILE_BYTES} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// Something in the file is wrong.
    #[error("{place}: {message}")]
    Invalid {
        /// Where.
        place: Box<Place>,
        /// What is wrong, without any secret.
        message: String,
    },
    /// A secret file named by the config file can't be used.
    #[error("{place}")]
    Secret {
        /// Where it is named.
        place: Box<Place>,
        /// Why it can't be used.
        #[source]
        source: Box<ConfigError>,
    },
}

/// Where an identifier (access key, client id) comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdSource {
    /// Written in the file (it identifies, it does not authenticate).
    Inline(String),
    /// An environment variable, named at `place`.
    Env {
        /// The variable.
        var: String,
        /// Where the file names it.
        place: Place,
    },
}

impl IdSource {
    /// The identifier; a variable that is unset is an error naming its place.
    pub fn resolve(&self) -> Result<String, SettingsError> {
        match self {
            IdSource::Inline(id) => Ok(id.clone()),
            IdSource::Env { var, place } => match config::var_from_env(var) {
                Ok(Some(v)) => Ok(v),
                Ok(None) => Err(invalid(place, format!("names {var}, which is not set"))),
                Err(source) => Err(secret_error(place, source)),
            },
        }
    }
}

impl fmt::Display for IdSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdSource::Inline(id) => f.write_str(id),
            IdSource::Env { var, .. } => write!(f, "${var}"),
        }
    }
}

/// Where a secret comes from: never the file itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// An environment variable.
    Env {
        /// The variable.
        var: String,
        /// Where the file names it.
        place: Place,
    },
    /// A file (a systemd credential, say), read with the bounds of [`config`].
    File {
        /// The file.
        path: PathBuf,
        /// Where the config file names it.
        place: Place,
    },
}

impl SecretSource {
    /// Reads the secret; an unset variable or an unusable file is an error naming its place.
    pub fn resolve(&self) -> Result<Secret, SettingsError> {
        match self {
            SecretSource::Env { var, place } => match config::var_from_env(var) {
                Ok(Some(v)) if !v.trim().is_empty() => Ok(Secret::new(v)),
                Ok(Some(_)) => Err(invalid(place, format!("{var} holds only whitespace"))),
                Ok(None) => Err(invalid(place, format!("names {var}, which is not set"))),
                Err(source) => Err(secret_error(place, source)),
            },
            SecretSource::File { path, place } => config::read_secret_file(&place.key, path)
                .map(Secret::new)
                .map_err(|source| secret_error(place, source)),
        }
    }
}

impl fmt::Display for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::Env { var, .. } => write!(f, "${var}"),
            SecretSource::File { path, .. } => write!(f, "file {}", path.display()),
        }
    }
}

/// One Qiniu account from a `[[qiniu]]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct QiniuEntry {
    /// Its name, as jobs and lanes carry it.
    pub name: String,
    /// Where its table starts.
    pub place: Place,
    /// The access key.
    pub access_key: IdSource,
    /// The secret key.
    pub secret_key: SecretSource,
    /// The hosts it serves.
    pub hosts: Vec<HostPattern>,
    /// Where each of `hosts` is written.
    pub host_places: Vec<Place>,
    /// Another API endpoint.
    pub endpoint: Option<String>,
    /// URLs per request.
    pub batch_urls: Option<usize>,
    /// Directories per request.
    pub batch_dirs: Option<usize>,
    /// Targets per second (0: unlimited).
    pub max_targets_per_sec: Option<f64>,
    /// Requests per second (0: unlimited).
    pub max_requests_per_sec: Option<f64>,
    /// Used by directory escalation: after this many URLs under one directory, refresh the
    /// directory instead (at least 2).
    pub escalate_dir_after: Option<u32>,
}

/// One 123pan account from a `[[pan123]]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct Pan123Entry {
    /// Its name, as jobs and lanes carry it.
    pub name: String,
    /// Where its table starts.
    pub place: Place,
    /// The client id.
    pub client_id: IdSource,
    /// The client secret.
    pub client_secret: SecretSource,
    /// Another API endpoint.
    pub endpoint: Option<String>,
    /// Requests per second (0: unlimited).
    pub max_requests_per_sec: Option<f64>,
}

/// One key of the `[worker]` table: a worker flag's default.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerKey {
    /// The flag's long name with underscores (`poll_interval`).
    pub key: String,
    /// Its value.
    pub value: toml::Value,
    /// Where.
    pub place: Place,
}

/// A validated config file.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The file it came from.
    pub path: PathBuf,
    /// Its Qiniu accounts, in file order.
    pub qiniu: Vec<QiniuEntry>,
    /// Its 123pan accounts, in file order.
    pub pan123: Vec<Pan123Entry>,
    /// Its `[worker]` keys, in file order.
    pub worker: Vec<WorkerKey>,
    /// Which Qiniu account serves which host.
    pub routing: RoutingTable,
}

impl Settings {
    /// Whether the file names any account (if not, the environment's accounts are used).
    pub fn has_accounts(&self) -> bool {
        !self.qiniu.is_empty() || !self.pan123.is_empty()
    }

    /// Reads every account's identifier and secret once, so a missing variable or file is
    /// reported (with its place) before anything starts. The values are dropped.
    pub fn check_secrets(&self) -> Result<(), SettingsError> {
        for q in &self.qiniu {
            q.access_key.resolve()?;
            q.secret_key.resolve()?;
        }
        for p in &self.pan123 {
            p.client_id.resolve()?;
            p.client_secret.resolve()?;
        }
        Ok(())
    }
}

/// The config file to read: `explicit` (`--config`/`PURGEQ_CONFIG`), else the user's, else the
/// system's, whichever exists; `None` when there is none.
pub fn locate(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(path) = explicit {
        return Some(path.to_owned());
    }
    let user = match config::var_from_env("XDG_CONFIG_HOME") {
        Ok(Some(dir)) => Some(PathBuf::from(dir)),
        _ => config::var_from_env("HOME")
            .ok()
            .flatten()
            .map(|home| Path::new(&home).join(".config")),
    }
    .map(|dir| dir.join("purgeq").join("purgeq.toml"));
    user.into_iter()
        .chain([PathBuf::from(SYSTEM_PATH)])
        .find(|p| p.exists())
}

/// Reads and validates the file at `path` (at most 1 MiB).
pub fn load(path: &Path) -> Result<Settings, SettingsError> {
    let io = |source| SettingsError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(SettingsError::TooLarge {
            path: path.to_owned(),
        });
    }
    let text = String::from_utf8(bytes).map_err(|_| {
        io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "it is not valid UTF-8",
        ))
    })?;
    parse(path, &text)
}

/// Validates `text`, the content of `path`.
pub fn parse(path: &Path, text: &str) -> Result<Settings, SettingsError> {
    let at = Locator { path, text };
    // N.B. toml's own Display quotes the offending source line, which could hold a secret:
    // only its message (key names and expectations, never a value) and its position are used.
    let doc: file::Document = toml::from_str(text).map_err(|e| {
        invalid(
            &at.place(e.span().map_or(0, |s| s.start), ""),
            e.message().trim_end().to_owned(),
        )
    })?;
    let mut names = BTreeSet::new();
    let qiniu = doc
        .qiniu
        .into_iter()
        .map(|t| {
            let entry = qiniu_entry(&at, t)?;
            unique(&mut names, "qiniu", &entry.name, &entry.place)?;
            Ok(entry)
        })
        .collect::<Result<Vec<_>, SettingsError>>()?;
    let pan123 = doc
        .pan123
        .into_iter()
        .map(|t| {
            let entry = pan123_entry(&at, t)?;
            unique(&mut names, "pan123", &entry.name, &entry.place)?;
            Ok(entry)
        })
        .collect::<Result<Vec<_>, SettingsError>>()?;
    let routing = routing_table(&at, &qiniu)?;
    let worker = match doc.worker {
        Some(table) => {
            let start = table.span().start;
            table
                .into_inner()
                .into_iter()
                .map(|(key, value)| WorkerKey {
                    place: at.place(at.key_offset(start, &key), &format!("worker.{key}")),
                    key,
                    value,
                })
                .collect()
        }
        None => Vec::new(),
    };
    Ok(Settings {
        path: path.to_owned(),
        qiniu,
        pan123,
        worker,
        routing,
    })
}

/// The route table of `qiniu`; a host claimed twice is an error at its second place.
fn routing_table(at: &Locator, qiniu: &[QiniuEntry]) -> Result<RoutingTable, SettingsError> {
    RoutingTable::new(qiniu.iter().map(|q| (q.name.as_str(), q.hosts.as_slice()))).map_err(|c| {
        let place = qiniu
            .iter()
            .filter(|q| q.name == c.second)
            .flat_map(|q| q.hosts.iter().zip(&q.host_places))
            .find(|(h, _)| **h == c.pattern)
            .map_or_else(|| at.place(0, "hosts"), |(_, p)| p.clone());
        invalid(
            &place,
            format!(
                "host {} is claimed by both account {:?} and account {:?}; a host belongs to one account",
                c.pattern, c.first, c.second
            ),
        )
    })
}

/// Turns byte offsets into places.
struct Locator<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Locator<'_> {
    fn place(&self, offset: usize, key: &str) -> Place {
        let before = self.text.get(..offset).unwrap_or(self.text);
        Place {
            path: self.path.to_owned(),
            line: before.matches('\n').count() + 1,
            key: key.to_owned(),
        }
    }

    fn at<T>(&self, spanned: &Spanned<T>, key: &str) -> Place {
        self.place(spanned.span().start, key)
    }

    /// Where `key` is first written after `start` (a table's own values carry no span).
    fn key_offset(&self, start: usize, key: &str) -> usize {
        let rest = self.text.get(start..).unwrap_or_default();
        rest.lines()
            .scan(start, |pos, line| {
                let here = *pos;
                *pos += line.len() + 1;
                Some((here, line))
            })
            .find(|(_, line)| {
                line.trim_start()
                    .strip_prefix(key)
                    .is_some_and(|r| r.trim_start().starts_with('='))
            })
            .map_or(start, |(here, _)| here)
    }
}

fn invalid(place: &Place, message: String) -> SettingsError {
    SettingsError::Invalid {
        place: Box::new(place.clone()),
        message,
    }
}

fn secret_error(place: &Place, source: ConfigError) -> SettingsError {
    SettingsError::Secret {
        place: Box::new(place.clone()),
        source: Box::new(source),
    }
}

fn unique(
    names: &mut BTreeSet<(&'static str, String)>,
    provider: &'static str,
    name: &str,
    place: &Place,
) -> Result<(), SettingsError> {
    if names.insert((provider, name.to_owned())) {
        Ok(())
    } else {
        Err(invalid(
            place,
            format!("a second [[{provider}]] account is named {name:?}; names must differ"),
        ))
    }
}

/// An account name: 1 to 64 letters, digits, `-`, `_` or `.`.
fn account_name(at: &Locator, name: &Spanned<String>) -> Result<String, SettingsError> {
    let n = name.get_ref();
    let ok = !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(n.clone())
    } else {
        Err(invalid(
            &at.at(name, "name"),
            format!(
                "{:?} is not an account name (1 to 64 letters, digits, '-', '_' or '.')",
                crate::text::display_safe(n, 80)
            ),
        ))
    }
}

/// The identifier: inline or from a variable, exactly one of them.
fn id_source(
    at: &Locator,
    table: &Place,
    (key, inline): (&str, Option<Spanned<String>>),
    env: Option<Spanned<String>>,
) -> Result<IdSource, SettingsError> {
    let env_key = format!("{key}_env");
    match (inline, env) {
        (Some(v), None) if !v.get_ref().trim().is_empty() => Ok(IdSource::Inline(v.into_inner())),
        (Some(v), None) => Err(invalid(&at.at(&v, key), "is empty".to_owned())),
        (None, Some(var)) => Ok(IdSource::Env {
            place: at.at(&var, &env_key),
            var: var_name(at, var, &env_key)?,
        }),
        (Some(_), Some(var)) => Err(invalid(
            &at.at(&var, &env_key),
            format!("give {key} or {env_key}, not both"),
        )),
        (None, None) => Err(invalid(table, format!("{key} (or {env_key}) is missing"))),
    }
}

fn var_name(at: &Locator, var: Spanned<String>, key: &str) -> Result<String, SettingsError> {
    let ok = !var.get_ref().is_empty()
        && var
            .get_ref()
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(var.into_inner())
    } else {
        Err(invalid(
            &at.at(&var, key),
            "is not an environment variable name (letters, digits and '_')".to_owned(),
        ))
    }
}

/// The secret: from a variable or a file, exactly one; inline is refused without its value.
fn secret_source(
    at: &Locator,
    table: &Place,
    key: &str,
    inline: Option<Spanned<serde::de::IgnoredAny>>,
    env: Option<Spanned<String>>,
    file: Option<Spanned<PathBuf>>,
) -> Result<SecretSource, SettingsError> {
    let (env_key, file_key) = (format!("{key}_env"), format!("{key}_file"));
    if let Some(written) = inline {
        return Err(invalid(
            &at.at(&written, key),
            format!(
                "a secret is never written in the config file (its value is not shown): name the variable that holds it with {env_key}, or a file with {file_key}"
            ),
        ));
    }
    match (env, file) {
        (Some(var), None) => Ok(SecretSource::Env {
            place: at.at(&var, &env_key),
            var: var_name(at, var, &env_key)?,
        }),
        (None, Some(path)) => Ok(SecretSource::File {
            place: at.at(&path, &file_key),
            path: path.into_inner(),
        }),
        (Some(_), Some(path)) => Err(invalid(
            &at.at(&path, &file_key),
            format!("give {env_key} or {file_key}, not both"),
        )),
        (None, None) => Err(invalid(
            table,
            format!("{env_key} or {file_key} is missing"),
        )),
    }
}

fn endpoint(at: &Locator, value: Option<Spanned<String>>) -> Result<Option<String>, SettingsError> {
    let Some(value) = value else {
        return Ok(None);
    };
    match url::Url::parse(value.get_ref()) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
            Ok(Some(value.get_ref().trim_end_matches('/').to_owned()))
        }
        _ => Err(invalid(
            &at.at(&value, "endpoint"),
            "is not an http:// or https:// URL".to_owned(),
        )),
    }
}

fn bounded(
    at: &Locator,
    key: &str,
    value: Option<Spanned<i64>>,
    min: i64,
    max: i64,
) -> Result<Option<i64>, SettingsError> {
    match value {
        Some(v) if !(min..=max).contains(v.get_ref()) => Err(invalid(
            &at.at(&v, key),
            format!(
                "{} is out of range: it must be from {min} to {max}",
                v.get_ref()
            ),
        )),
        other => Ok(other.map(Spanned::into_inner)),
    }
}

fn rate(
    at: &Locator,
    key: &str,
    value: Option<Spanned<f64>>,
) -> Result<Option<f64>, SettingsError> {
    match value {
        Some(v) if !(v.get_ref().is_finite() && *v.get_ref() >= 0.0) => Err(invalid(
            &at.at(&v, key),
            "must be a finite number, 0 or more (0: unlimited)".to_owned(),
        )),
        other => Ok(other.map(Spanned::into_inner)),
    }
}

fn qiniu_entry(
    at: &Locator,
    table: Spanned<file::QiniuTable>,
) -> Result<QiniuEntry, SettingsError> {
    let place = at.at(&table, "[[qiniu]]");
    let t = table.into_inner();
    let hosts = t
        .hosts
        .iter()
        .map(|h| HostPattern::parse(h.get_ref()).map_err(|why| invalid(&at.at(h, "hosts"), why)))
        .collect::<Result<Vec<_>, _>>()?;
    let as_usize = |v: Option<i64>| v.and_then(|n| usize::try_from(n).ok());
    Ok(QiniuEntry {
        name: account_name(at, &t.name)?,
        access_key: id_source(at, &place, ("access_key", t.access_key), t.access_key_env)?,
        secret_key: secret_source(
            at,
            &place,
            "secret_key",
            t.secret_key,
            t.secret_key_env,
            t.secret_key_file,
        )?,
        hosts,
        host_places: t.hosts.iter().map(|h| at.at(h, "hosts")).collect(),
        endpoint: endpoint(at, t.endpoint)?,
        batch_urls: as_usize(bounded(at, "batch_urls", t.batch_urls, 1, MAX_BATCH)?),
        batch_dirs: as_usize(bounded(at, "batch_dirs", t.batch_dirs, 1, MAX_BATCH)?),
        max_targets_per_sec: rate(at, "max_targets_per_sec", t.max_targets_per_sec)?,
        max_requests_per_sec: rate(at, "max_requests_per_sec", t.max_requests_per_sec)?,
        escalate_dir_after: bounded(
            at,
            "escalate_dir_after",
            t.escalate_dir_after,
            2,
            i64::from(u32::MAX),
        )?
        .and_then(|n| u32::try_from(n).ok()),
        place,
    })
}

fn pan123_entry(
    at: &Locator,
    table: Spanned<file::Pan123Table>,
) -> Result<Pan123Entry, SettingsError> {
    let place = at.at(&table, "[[pan123]]");
    let t = table.into_inner();
    Ok(Pan123Entry {
        name: account_name(at, &t.name)?,
        client_id: id_source(at, &place, ("client_id", t.client_id), t.client_id_env)?,
        client_secret: secret_source(
            at,
            &place,
            "client_secret",
            t.client_secret,
            t.client_secret_env,
            t.client_secret_file,
        )?,
        endpoint: endpoint(at, t.endpoint)?,
        max_requests_per_sec: rate(at, "max_requests_per_sec", t.max_requests_per_sec)?,
        place,
    })
}

#[cfg(test)]
mod tests;

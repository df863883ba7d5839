//! Configuration from the environment: the database path and provider credentials.
//!
//! Secrets come from the environment or from a file named by a `*_FILE` variable (systemd
//! `LoadCredential=`), never from arguments, and are wrapped in [`Secret`] as soon as they are read.
//! A secret file must be a regular file of at most [`MAX_SECRET_FILE_BYTES`] and is read with
//! that bound (a FIFO, `/dev/zero` or a directory is refused before any read); an empty or
//! whitespace-only secret is refused naming its variable.

use std::env;
use std::io::Read as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use crate::secret::Secret;

/// The largest secret file read; a credential is well under 1 KiB.
pub const MAX_SECRET_FILE_BYTES: u64 = 4096;

/// Reading configuration failed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A `*_FILE` variable names a file that can't be read.
    #[error("{var} names {path}, which can't be read")]
    SecretFile {
        /// The variable that named the file.
        var: String,
        /// The file.
        path: PathBuf,
        /// Why it can't be read.
        #[source]
        source: std::io::Error,
    },
    /// A `*_FILE` variable names something that is not a usable secret file.
    #[error("{var} names {path}, which is refused: {why}")]
    BadSecretFile {
        /// The variable that named the file.
        var: String,
        /// The file.
        path: PathBuf,
        /// Why it is refused.
        why: String,
    },
    /// A secret variable is set to whitespace only.
    #[error("{var} is set but holds only whitespace")]
    BlankSecret {
        /// The variable.
        var: String,
    },
    /// A variable is set but not valid UTF-8.
    #[error("{var} is not valid UTF-8")]
    NotUnicode {
        /// The variable.
        var: String,
    },
    /// A required credential is missing.
    #[error("{var} is not set (nor {var}_FILE); {why}")]
    Missing {
        /// The missing variable.
        var: &'static str,
        /// What needs it.
        why: String,
    },
    /// A variable holds a value it can't take.
    #[error("{var}={value:?} is refused: {why}")]
    Invalid {
        /// The variable.
        var: String,
        /// Its value.
        value: String,
        /// Why.
        why: &'static str,
    },
    /// No default database location can be found.
    #[error(
        "no database location: set --db or PURGEQ_DB (neither STATE_DIRECTORY, XDG_STATE_HOME nor HOME is set)"
    )]
    NoDefaultDb,
}

/// Reads a plain (non-secret) variable; unset or empty is `None`.
pub fn var_from_env(name: &str) -> Result<Option<String>, ConfigError> {
    match env::var(name) {
        Ok(v) if v.is_empty() => Ok(None),
        Ok(v) => Ok(Some(v)),
        Err(env::VarError::NotPresent) => Ok(None),
        Err(env::VarError::NotUnicode(_)) => Err(ConfigError::NotUnicode {
            var: name.to_owned(),
        }),
    }
}

/// Reads a count of at least 1 from variable `name`; unset or empty is `None`.
pub fn count_from_env(name: &str) -> Result<Option<u32>, ConfigError> {
    let Some(value) = var_from_env(name)? else {
        return Ok(None);
    };
    match value.trim().parse::<u32>() {
        Ok(n) if n >= 1 => Ok(Some(n)),
        _ => Err(ConfigError::Invalid {
            var: name.to_owned(),
            value,
            why: "it must be a whole number from 1 to 4294967295",
        }),
    }
}

/// Reads secret `name` from the environment, or from the file named by `{name}_FILE`
/// (one trailing newline trimmed). The variable itself wins when both are set.
pub fn secret_from_env(name: &str) -> Result<Option<Secret>, ConfigError> {
    if let Some(value) = var_from_env(name)? {
        if value.trim().is_empty() {
            return Err(ConfigError::BlankSecret {
                var: name.to_owned(),
            });
        }
        return Ok(Some(Secret::new(value)));
    }
    let file_var = format!("{name}_FILE");
    let Some(path) = var_from_env(&file_var)? else {
        return Ok(None);
    };
    let path = PathBuf::from(path);
    let value = read_secret_file(&file_var, &path)?;
    Ok(Some(Secret::new(value)))
}

/// Reads a secret file: a regular file (not a FIFO, a device or a directory, checked before
/// it is opened for reading) of at most [`MAX_SECRET_FILE_BYTES`], read with a bound; one
/// trailing newline is trimmed, and empty or whitespace-only content is refused.
pub(crate) fn read_secret_file(var: &str, path: &Path) -> Result<String, ConfigError> {
    let bad = |why: String| ConfigError::BadSecretFile {
        var: var.to_owned(),
        path: path.to_owned(),
        why,
    };
    let io = |source| ConfigError::SecretFile {
        var: var.to_owned(),
        path: path.to_owned(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_file() {
        return Err(bad("it is not a regular file".to_owned()));
    }
    if meta.len() > MAX_SECRET_FILE_BYTES {
        return Err(bad(format!(
            "it is larger than {MAX_SECRET_FILE_BYTES} bytes"
        )));
    }
    // Opened without blocking, so a file swapped for a FIFO after the check can't hang us.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(io)?;
    if !file.metadata().map_err(io)?.is_file() {
        return Err(bad("it is not a regular file".to_owned()));
    }
    let mut bytes = Vec::new();
    file.take(MAX_SECRET_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_SECRET_FILE_BYTES {
        return Err(bad(format!(
            "it is larger than {MAX_SECRET_FILE_BYTES} bytes"
        )));
    }
    let text = String::from_utf8(bytes).map_err(|_| bad("it is not valid UTF-8".to_owned()))?;
    let value = text.strip_suffix('\n').unwrap_or(&text);
    let value = value.strip_suffix('\r').unwrap_or(value);
    if value.trim().is_empty() {
        return Err(bad("it is empty (or holds only whitespace)".to_owned()));
    }
    Ok(value.to_owned())
}

/// The default database path: `$STATE_DIRECTORY/purgeq.db` under systemd, else
/// `$XDG_STATE_HOME/purgeq/purgeq.db`, else `~/.local/state/purgeq/purgeq.db`.
pub fn default_db_path() -> Result<PathBuf, ConfigError> {
    // systemd may pass several directories separated by ':'; the first is ours.
    if let Some(dirs) = var_from_env("STATE_DIRECTORY")?
        && let Some(first) = dirs.split(':').find(|d| !d.is_empty())
    {
        return Ok(Path::new(first).join("purgeq.db"));
    }
    if let Some(xdg) = var_from_env("XDG_STATE_HOME")? {
        return Ok(Path::new(&xdg).join("purgeq").join("purgeq.db"));
    }
    if let Some(home) = var_from_env("HOME")? {
        return Ok(Path::new(&home).join(".local/state/purgeq/purgeq.db"));
    }
    Err(ConfigError::NoDefaultDb)
}

/// Reads an id/secret credential pair (`QINIU_ACCESS_KEY` + `QINIU_SECRET_KEY`, say): both, or
/// `None` when neither is set. One without the other is an error naming the missing variable.
pub fn credential_pair(
    id_var: &'static str,
    secret_var: &'static str,
) -> Result<Option<(String, Secret)>, ConfigError> {
    match (var_from_env(id_var)?, secret_from_env(secret_var)?) {
        (Some(id), Some(secret)) => Ok(Some((id, secret))),
        (None, None) => Ok(None),
        (None, Some(_)) => Err(ConfigError::Missing {
            var: id_var,
            why: format!("{secret_var} is set without it"),
        }),
        (Some(_), None) => Err(ConfigError::Missing {
            var: secret_var,
            why: format!("{id_var} is set without it"),
        }),
    }
}

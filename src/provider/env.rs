//! Building provider accounts from the environment.
//!
//! Invariants:
//! - Credentials come only from the environment (or the files it names), never from arguments.
//! - A provider with queued jobs and no credentials is an error naming the missing variable; a
//!   provider without credentials and without jobs is skipped with a warning.
//! - The HTTP client follows no redirects: a purge API never redirects, and following one could
//!   send credentials elsewhere.

use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use super::Account;
use super::pan123::{self, Pan123Account, Pan123Client, Pan123Settings};
use super::qiniu::{self, QiniuAccount, QiniuClient, QiniuSettings};
use crate::config::{self, ConfigError};
use crate::model::Provider;
use crate::secret::Secret;
use crate::store::{Store, StoreError};

/// Building the provider accounts failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A variable is missing or unreadable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The store could not say whether a provider's jobs are waiting.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The HTTP client could not be built.
    #[error("building the HTTP client")]
    Http(#[source] reqwest::Error),
    /// The config file names an account it can't build.
    #[error(transparent)]
    Settings(#[from] Box<crate::settings::SettingsError>),
    /// No provider has credentials at all.
    #[error(
        "no provider has credentials: set QINIU_ACCESS_KEY and QINIU_SECRET_KEY, or PAN123_CLIENT_ID and PAN123_CLIENT_SECRET (or their *_FILE variants), or name accounts in the config file"
    )]
    NoCredentials,
}

/// The variables holding a provider's id/secret pair (the secret may also come from
/// `<secret_var>_FILE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CredentialVars {
    /// The id half (`QINIU_ACCESS_KEY`).
    pub id_var: &'static str,
    /// The secret half (`QINIU_SECRET_KEY`).
    pub secret_var: &'static str,
}

impl CredentialVars {
    /// Qiniu's access key and secret key.
    pub const QINIU: CredentialVars = CredentialVars {
        id_var: "QINIU_ACCESS_KEY",
        secret_var: "QINIU_SECRET_KEY",
    };
    /// 123pan's client id and client secret.
    pub const PAN123: CredentialVars = CredentialVars {
        id_var: "PAN123_CLIENT_ID",
        secret_var: "PAN123_CLIENT_SECRET",
    };

    /// Both halves, or `None` when neither is set; one without the other is an error.
    pub fn read(self) -> Result<Option<(String, Secret)>, ConfigError> {
        config::credential_pair(self.id_var, self.secret_var)
    }
}

/// What the environment does not say about the accounts.
#[derive(Debug, Clone)]
pub struct EnvSettings {
    /// Timeout of one provider call, connection included.
    pub request_timeout: Duration,
    /// How the Qiniu account is driven.
    pub qiniu: QiniuSettings,
    /// How the 123pan account is driven.
    pub pan123: Pan123Settings,
}

/// The HTTP client every provider call goes through: timeouts set, no redirects followed.
pub fn http_client(timeout: Duration) -> Result<reqwest::Client, BuildError> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("purgeq/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(BuildError::Http)
}

/// The variable setting the default Qiniu account's directory escalation threshold.
pub const ESCALATE_VAR: &str = "PURGEQ_QINIU_ESCALATE_DIR_AFTER";

/// Builds one account per provider with credentials in the environment (`QINIU_ENDPOINT` and
/// `PAN123_ENDPOINT` point at another endpoint).
pub async fn accounts_from_env(
    store: &Store,
    settings: EnvSettings,
) -> Result<Vec<Arc<dyn Account>>, BuildError> {
    let http = http_client(settings.request_timeout)?;
    let mut accounts: Vec<Arc<dyn Account>> = Vec::new();
    match CredentialVars::QINIU.read()? {
        Some((access_key, secret_key)) => {
            let endpoint = endpoint("QINIU_ENDPOINT", qiniu::DEFAULT_ENDPOINT)?;
            info!(endpoint, access_key = %access_key, "qiniu lanes enabled");
            let credentials = qiniu::Credentials {
                access_key,
                secret_key,
            };
            let client = QiniuClient::new(http.clone(), endpoint, credentials);
            let mut qiniu = settings.qiniu;
            if qiniu.escalate_dir_after.is_none() {
                qiniu.escalate_dir_after = config::count_from_env(ESCALATE_VAR)?;
            }
            accounts.push(Arc::new(QiniuAccount::new(client, qiniu)));
        }
        None => missing(store, Provider::Qiniu, CredentialVars::QINIU).await?,
    }
    match CredentialVars::PAN123.read()? {
        Some((client_id, client_secret)) => {
            let endpoint = endpoint("PAN123_ENDPOINT", pan123::DEFAULT_ENDPOINT)?;
            info!(endpoint, client_id = %client_id, "123pan lane enabled");
            let credentials = pan123::Credentials {
                client_id,
                client_secret,
            };
            let client = Pan123Client::new(http, endpoint, credentials);
            accounts.push(Arc::new(Pan123Account::new(client, settings.pan123)));
        }
        None => missing(store, Provider::Pan123, CredentialVars::PAN123).await?,
    }
    if accounts.is_empty() {
        return Err(BuildError::NoCredentials);
    }
    Ok(accounts)
}

fn endpoint(var: &str, default: &str) -> Result<String, ConfigError> {
    Ok(config::var_from_env(var)?.unwrap_or_else(|| default.to_owned()))
}

/// A provider without credentials: an error if its jobs are waiting, else a warning.
async fn missing(
    store: &Store,
    provider: Provider,
    vars: CredentialVars,
) -> Result<(), BuildError> {
    let CredentialVars { id_var, secret_var } = vars;
    if store.has_pending(provider).await? {
        return Err(ConfigError::Missing {
            var: id_var,
            why: format!("{provider} jobs are queued (or being confirmed) and the worker needs {id_var} and {secret_var} to send them"),
        }
        .into());
    }
    warn!("{id_var} and {secret_var} are not set: {provider} jobs will not be sent");
    Ok(())
}

//! Building provider accounts from the config file's `[[qiniu]]` and `[[pan123]]` tables.
//!
//! Invariants:
//! - Every account gets its own client, credentials, pacer and (123pan) token: one
//!   [`Account`] value per table, named as the table names it.
//! - Every secret is read now, so a missing variable or file stops the worker at start with
//!   the config file's place, before anything is claimed.
//! - An account's own keys (`batch_urls`, `max_targets_per_sec`, …) win over the worker's
//!   flags for that account; the flags are the defaults.
//! - Queued jobs of an account the file no longer names are left queued (and `status` says
//!   why): they are warned about here, never failed.

use std::sync::Arc;

use tracing::{info, warn};

use super::Account;
use super::env::{BuildError, EnvSettings, http_client};
use super::pan123::{self, Pan123Account, Pan123Client, Pan123Settings};
use super::qiniu::{self, QiniuAccount, QiniuClient, QiniuSettings};
use crate::settings::{Pan123Entry, QiniuEntry, Settings};
use crate::store::Store;

/// Builds one account per table of `settings`; `defaults` are the worker's flags.
pub async fn accounts_from_settings(
    store: &Store,
    settings: &Settings,
    defaults: EnvSettings,
) -> Result<Vec<Arc<dyn Account>>, BuildError> {
    let http = http_client(defaults.request_timeout)?;
    let mut accounts: Vec<Arc<dyn Account>> = Vec::new();
    for entry in &settings.qiniu {
        accounts.push(Arc::new(qiniu_account(&http, entry, &defaults.qiniu)?));
    }
    for entry in &settings.pan123 {
        accounts.push(Arc::new(pan123_account(&http, entry, &defaults.pan123)?));
    }
    for pending in store.pending_accounts().await? {
        if !accounts
            .iter()
            .any(|a| a.provider() == pending.provider && a.account() == pending.account)
        {
            warn!(
                provider = %pending.provider,
                account = pending.account,
                state = %pending.state,
                jobs = pending.count,
                config = %settings.path.display(),
                "jobs of an account the config file does not name stay queued"
            );
        }
    }
    Ok(accounts)
}

/// The Qiniu account of one `[[qiniu]]` table.
pub fn qiniu_account(
    http: &reqwest::Client,
    entry: &QiniuEntry,
    defaults: &QiniuSettings,
) -> Result<QiniuAccount, BuildError> {
    let credentials = qiniu::Credentials {
        access_key: entry.access_key.resolve().map_err(Box::new)?,
        secret_key: entry.secret_key.resolve().map_err(Box::new)?,
    };
    let endpoint = entry
        .endpoint
        .clone()
        .unwrap_or_else(|| qiniu::DEFAULT_ENDPOINT.to_owned());
    info!(account = entry.name, endpoint, access_key = %credentials.access_key, "qiniu account enabled");
    let settings = QiniuSettings {
        account: entry.name.clone(),
        batch_urls: entry.batch_urls.unwrap_or(defaults.batch_urls),
        batch_dirs: entry.batch_dirs.unwrap_or(defaults.batch_dirs),
        targets_per_sec: entry
            .max_targets_per_sec
            .unwrap_or(defaults.targets_per_sec),
        requests_per_sec: entry
            .max_requests_per_sec
            .unwrap_or(defaults.requests_per_sec),
        escalate_dir_after: entry.escalate_dir_after,
    };
    let client = QiniuClient::new(http.clone(), endpoint, credentials);
    Ok(QiniuAccount::new(client, settings))
}

/// The 123pan account of one `[[pan123]]` table.
fn pan123_account(
    http: &reqwest::Client,
    entry: &Pan123Entry,
    defaults: &Pan123Settings,
) -> Result<Pan123Account, BuildError> {
    let credentials = pan123::Credentials {
        client_id: entry.client_id.resolve().map_err(Box::new)?,
        client_secret: entry.client_secret.resolve().map_err(Box::new)?,
    };
    let endpoint = entry
        .endpoint
        .clone()
        .unwrap_or_else(|| pan123::DEFAULT_ENDPOINT.to_owned());
    info!(account = entry.name, endpoint, client_id = %credentials.client_id, "123pan account enabled");
    let settings = Pan123Settings {
        account: entry.name.clone(),
        requests_per_sec: entry
            .max_requests_per_sec
            .unwrap_or(defaults.requests_per_sec),
        coalesce: defaults.coalesce,
    };
    let client = Pan123Client::new(http.clone(), endpoint, credentials);
    Ok(Pan123Account::new(client, settings))
}

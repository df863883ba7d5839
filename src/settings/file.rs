//! The TOML shape of the config file, as serde reads it, before validation.
//!
//! Every table refuses unknown keys. An inline secret (`secret_key`, `client_secret`) is read
//! only as "present" ([`IgnoredAny`]): its value is never kept, so it can't be echoed.

use std::path::PathBuf;

use serde::Deserialize;
use serde::de::IgnoredAny;
use toml::Spanned;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Document {
    #[serde(default)]
    pub qiniu: Vec<Spanned<QiniuTable>>,
    #[serde(default)]
    pub pan123: Vec<Spanned<Pan123Table>>,
    #[serde(default)]
    pub worker: Option<Spanned<toml::Table>>,
}

/// One `[[qiniu]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct QiniuTable {
    pub name: Spanned<String>,
    pub access_key: Option<Spanned<String>>,
    pub access_key_env: Option<Spanned<String>>,
    pub secret_key: Option<Spanned<IgnoredAny>>,
    pub secret_key_env: Option<Spanned<String>>,
    pub secret_key_file: Option<Spanned<PathBuf>>,
    #[serde(default)]
    pub hosts: Vec<Spanned<String>>,
    pub endpoint: Option<Spanned<String>>,
    pub batch_urls: Option<Spanned<i64>>,
    pub batch_dirs: Option<Spanned<i64>>,
    pub max_targets_per_sec: Option<Spanned<f64>>,
    pub max_requests_per_sec: Option<Spanned<f64>>,
    pub escalate_dir_after: Option<Spanned<i64>>,
}

/// One `[[pan123]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Pan123Table {
    pub name: Spanned<String>,
    pub client_id: Option<Spanned<String>>,
    pub client_id_env: Option<Spanned<String>>,
    pub client_secret: Option<Spanned<IgnoredAny>>,
    pub client_secret_env: Option<Spanned<String>>,
    pub client_secret_file: Option<Spanned<PathBuf>>,
    pub endpoint: Option<Spanned<String>>,
    pub max_requests_per_sec: Option<Spanned<f64>>,
}

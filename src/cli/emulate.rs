//! `purgeq emulate`: serve a local fake of the providers' APIs until SIGINT or SIGTERM.
//!
//! The first stdout line is `listening on http://HOST:PORT`, flushed at once, so a script or a
//! test can start it with `--listen 127.0.0.1:0` and read the address back.

use std::io::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;

use super::ExitCode;
use crate::emulator::pan123::{
    DEFAULT_REFRESH_PER_SEC, DEFAULT_TOKEN_PER_SEC, DEMO_CLIENT_ID, DEMO_CLIENT_SECRET,
    Pan123Config,
};
use crate::emulator::qiniu::{DEMO_ACCESS_KEY, DEMO_SECRET_KEY, DailyQuotas, QiniuConfig};
use crate::emulator::{self, EmulatorConfig, FaultKind, FaultPlan, RandomFaults, ScriptedFaults};
use crate::provider::CredentialVars;
use crate::secret::Secret;

/// Run a local fake of the CDN providers' APIs (Qiniu fusion CDN and the 123pan open
/// platform) on one listener, for tests and demos.
///
/// Qiniu: POST /v2/tune/refresh and /v2/tune/prefetch, and their task lists
/// /v2/tune/refresh/list and /v2/tune/prefetch/list, signed with QINIU_ACCESS_KEY and
/// QINIU_SECRET_KEY (or QINIU_SECRET_KEY_FILE), else the demo pair purgeq-demo-ak /
/// purgeq-demo-sk. 123pan: POST /api/v1/access_token with PAN123_CLIENT_ID and
/// PAN123_CLIENT_SECRET (or PAN123_CLIENT_SECRET_FILE), else the demo pair purgeq-demo-client /
/// purgeq-demo-client-secret, then POST /api/v1/direct-link/cache/refresh with the token.
/// Operator endpoints: GET /_emulator/stats, POST /_emulator/reset-quota, POST /_emulator/faults
/// (a JSON fault plan; its "token_fail_next" makes 123pan token requests fail). Fault kinds:
/// http-503, server-error, quota, throttle, qps, slow, drop-before, drop-after, garbage, invalid.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The address to listen on; port 0 picks a free port.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    listen: SocketAddr,

    /// An accepted domain: it and its subdomains may be purged (repeatable). With none, every
    /// host is accepted.
    #[arg(long = "domain", value_name = "DOMAIN", conflicts_with = "accounts")]
    domains: Vec<String>,

    /// A Qiniu account to play, as NAME:ACCESS_KEY:SECRET_VAR:DOMAINS[:URL_QUOTA] (repeatable;
    /// the accounts replace the one from QINIU_ACCESS_KEY or the demo pair). The secret key is
    /// read from the variable SECRET_VAR (or the file named by SECRET_VAR_FILE), never given
    /// here. DOMAINS is a comma-separated list (empty: every host); URL_QUOTA defaults to
    /// --url-quota. A request is served by the account whose key signed it: a URL outside that
    /// account's domains is refused (400032). Example:
    /// --account main:ak-main:MAIN_SK:cdn.example.com,img.example.com:1000
    #[arg(long = "account", value_name = "SPEC")]
    accounts: Vec<String>,

    /// Qiniu URL refreshes allowed per day.
    #[arg(long, value_name = "N", default_value_t = DailyQuotas::default().url_refresh)]
    url_quota: u64,

    /// Qiniu directory refreshes allowed per day.
    #[arg(long, value_name = "N", default_value_t = DailyQuotas::default().dir_refresh)]
    dir_quota: u64,

    /// Qiniu prefetches allowed per day.
    #[arg(long, value_name = "N", default_value_t = DailyQuotas::default().prefetch)]
    prefetch_quota: u64,

    /// How long a 123pan access token lives; its answer's expiredAt says when it ends.
    #[arg(long, value_name = "DUR", default_value = "2h", value_parser = super::duration_arg)]
    pan123_token_ttl: Duration,

    /// 123pan cache refresh calls allowed per second; more are answered 429 (0: unlimited).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_REFRESH_PER_SEC)]
    pan123_refresh_per_sec: f64,

    /// 123pan token requests allowed per second; more are answered 429 (0: unlimited).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_TOKEN_PER_SEC)]
    pan123_token_per_sec: f64,

    /// Answer 123pan refusals (bad token, throttled, missing Platform header) with HTTP 200,
    /// the error only in the body code.
    #[arg(long)]
    pan123_body_only_errors: bool,

    /// Make the next N purge requests (Qiniu refresh and prefetch, 123pan cache refresh) fail
    /// with --fail-with.
    #[arg(long, value_name = "N", requires = "fail_with")]
    fail_next: Option<u32>,

    /// The fault for --fail-next.
    #[arg(long, value_name = "KIND", requires = "fail_next")]
    fail_with: Option<FaultKind>,

    /// Make each purge request (Qiniu or 123pan) fail with this probability (0 to 1), drawing the kind from
    /// --fault-kinds.
    #[arg(long, value_name = "F")]
    fault_rate: Option<f64>,

    /// The seed for --fault-rate: the same seed gives the same faults for the same requests.
    #[arg(long, value_name = "N", default_value_t = 0, requires = "fault_rate")]
    fault_seed: u64,

    /// The fault kinds --fault-rate draws from, comma-separated (default: all but slow).
    #[arg(
        long,
        value_name = "K1,K2",
        value_delimiter = ',',
        requires = "fault_rate"
    )]
    fault_kinds: Vec<FaultKind>,

    /// How long an accepted Qiniu refresh or prefetch task stays `processing` in the task lists
    /// (POST /v2/tune/refresh/list, /v2/tune/prefetch/list) before it ends.
    #[arg(long, value_name = "DUR", default_value = "3s", value_parser = super::duration_arg)]
    complete_after: Duration,

    /// The fraction of Qiniu tasks (0 to 1) that end in `failure` instead of `success`.
    #[arg(long, value_name = "F", default_value_t = 0.0)]
    fail_fraction: f64,

    /// The seed for --fail-fraction: the same seed fails the same tasks.
    #[arg(long, value_name = "N", default_value_t = 0)]
    fail_seed: u64,

    /// How long the slow fault waits before answering.
    #[arg(long, value_name = "DUR", default_value = "60s", value_parser = super::duration_arg)]
    slow: Duration,
}

impl Args {
    /// Serves until SIGINT or SIGTERM.
    pub async fn run(self) -> anyhow::Result<ExitCode> {
        let config = self.config()?;
        let emulator = emulator::start(self.listen, config)
            .await
            .with_context(|| format!("starting the emulator on {}", self.listen))?;
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "listening on {}", emulator.url()).context("writing to stdout")?;
        stdout.flush().context("writing to stdout")?;
        drop(stdout);
        crate::shutdown::on_signals()
            .context("listening for SIGTERM and SIGINT")?
            .cancelled()
            .await;
        tracing::info!("stopping the emulator");
        emulator.shutdown().await;
        Ok(ExitCode::Success)
    }

    fn config(&self) -> anyhow::Result<EmulatorConfig> {
        let (client_id, client_secret) = credentials(&PAN123_PAIR)?;
        for (flag, rate) in [
            ("--pan123-refresh-per-sec", self.pan123_refresh_per_sec),
            ("--pan123-token-per-sec", self.pan123_token_per_sec),
        ] {
            anyhow::ensure!(
                rate.is_finite() && rate >= 0.0,
                "{flag} {rate} is not a number of calls per second (0 or more)"
            );
        }
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.fail_fraction),
            "--fail-fraction {} is not between 0 and 1",
            self.fail_fraction
        );
        let rate = self.fault_rate;
        if let Some(rate) = rate {
            anyhow::ensure!(
                (0.0..=1.0).contains(&rate),
                "--fault-rate {rate} is not between 0 and 1"
            );
        }
        let faults = FaultPlan {
            fail_next: self
                .fail_next
                .zip(self.fail_with)
                .map(|(count, kind)| ScriptedFaults { count, kind }),
            random: rate.map(|rate| RandomFaults {
                rate,
                seed: self.fault_seed,
                kinds: self.fault_kinds.clone(),
            }),
            token_fail_next: None,
            list_fail_next: None,
            slow_delay_ms: u64::try_from(self.slow.as_millis()).unwrap_or(u64::MAX),
        };
        let (first, more) = self.qiniu_accounts()?;
        Ok(EmulatorConfig {
            qiniu: first,
            more_qiniu: more,
            pan123: Pan123Config {
                client_id,
                client_secret,
                token_ttl: self.pan123_token_ttl,
                refresh_per_sec: self.pan123_refresh_per_sec,
                token_per_sec: self.pan123_token_per_sec,
                body_only_errors: self.pan123_body_only_errors,
            },
            faults,
        })
    }

    /// The Qiniu accounts: every --account, else the one from the environment (or the demo
    /// pair) accepting --domain.
    fn qiniu_accounts(&self) -> anyhow::Result<(QiniuConfig, Vec<QiniuConfig>)> {
        let quotas = DailyQuotas {
            url_refresh: self.url_quota,
            dir_refresh: self.dir_quota,
            prefetch: self.prefetch_quota,
        };
        // Every account's tasks complete (or fail) as --complete-after and --fail-fraction say.
        let tasks = |config: QiniuConfig| QiniuConfig {
            complete_after: self.complete_after,
            fail_fraction: self.fail_fraction,
            fail_seed: self.fail_seed,
            ..config
        };
        let mut accounts = self
            .accounts
            .iter()
            .map(|spec| qiniu_account(spec, quotas).map(tasks))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let first = if accounts.is_empty() {
            let (access_key, secret_key) = credentials(&QINIU_PAIR)?;
            tasks(QiniuConfig {
                access_key,
                secret_key,
                domains: self.domains.clone(),
                quotas,
                ..QiniuConfig::default()
            })
        } else {
            accounts.remove(0)
        };
        Ok((first, accounts))
    }
}

/// A provider's credential pair: the variables the worker reads, and the demo pair.
struct Pair {
    vars: CredentialVars,
    demo_id: &'static str,
    demo_secret: &'static str,
    /// What the demo secret is called in the notice (the secret itself is never printed).
    secret_name: &'static str,
}

const QINIU_PAIR: Pair = Pair {
    vars: CredentialVars::QINIU,
    demo_id: DEMO_ACCESS_KEY,
    demo_secret: DEMO_SECRET_KEY,
    secret_name: "secret key",
};

const PAN123_PAIR: Pair = Pair {
    vars: CredentialVars::PAN123,
    demo_id: DEMO_CLIENT_ID,
    demo_secret: DEMO_CLIENT_SECRET,
    secret_name: "client secret",
};

/// A key pair from the environment, as the worker reads it, or the demo pair when neither
/// half is set.
fn credentials(pair: &Pair) -> anyhow::Result<(String, Secret)> {
    if let Some(found) = pair.vars.read()? {
        return Ok(found);
    }
    eprintln!(
        "purgeq emulate: {} and {} are not set; accepting the demo credentials ({} and its demo {})",
        pair.vars.id_var, pair.vars.secret_var, pair.demo_id, pair.secret_name
    );
    Ok((pair.demo_id.to_owned(), Secret::new(pair.demo_secret)))
}

/// One `--account NAME:ACCESS_KEY:SECRET_VAR:DOMAINS[:URL_QUOTA]`.
fn qiniu_account(spec: &str, quotas: DailyQuotas) -> anyhow::Result<QiniuConfig> {
    let fields: Vec<&str> = spec.split(':').collect();
    let [name, access_key, secret_var, domains, rest @ ..] = fields.as_slice() else {
        anyhow::bail!(
            "--account {spec:?}: write NAME:ACCESS_KEY:SECRET_VAR:DOMAINS[:URL_QUOTA] (DOMAINS may be empty)"
        );
    };
    let url_refresh = match rest {
        [] => quotas.url_refresh,
        [n] => n.parse().map_err(|_| {
            anyhow::anyhow!("--account {spec:?}: URL_QUOTA {n:?} is not a whole number")
        })?,
        _ => anyhow::bail!("--account {spec:?}: too many fields"),
    };
    anyhow::ensure!(
        !name.is_empty() && !access_key.is_empty(),
        "--account {spec:?}: NAME and ACCESS_KEY may not be empty"
    );
    let secret_key = crate::config::secret_from_env(secret_var)?.ok_or_else(|| {
        anyhow::anyhow!("--account {name}: {secret_var} (or {secret_var}_FILE) is not set")
    })?;
    Ok(QiniuConfig {
        name: (*name).to_owned(),
        access_key: (*access_key).to_owned(),
        secret_key,
        domains: domains
            .split(',')
            .filter(|d| !d.is_empty())
            .map(str::to_owned)
            .collect(),
        quotas: DailyQuotas {
            url_refresh,
            ..quotas
        },
        ..QiniuConfig::default()
    })
}

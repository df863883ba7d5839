//! `purgeq worker`: the daemon that drains the queue.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{Context, ExitCode, lease_arg, poll_interval_arg, request_timeout_arg};
use crate::config;
use crate::dashboard;
use crate::metrics::Metrics;
use crate::provider::pan123::Pan123Settings;
use crate::provider::qiniu::{self, QiniuSettings};
use crate::provider::{self, Coalesce, EnvSettings};
use crate::store::{Durability, Store, StoreError};
use crate::worker::{self, ConfirmSettings, Handles, Policies, Timeouts, WorkerConfig};

/// Drain the queue: claim jobs per lane, collapse duplicates, call the provider within its
/// limits, record every outcome, and confirm accepted Qiniu purges at the CDN.
///
/// The accounts come from the config file's [[qiniu]] and [[pan123]] tables (every route of
/// every account runs on its own; `purgeq config check` shows them), else from the environment
/// as the account `default`: QINIU_ACCESS_KEY and QINIU_SECRET_KEY (or QINIU_SECRET_KEY_FILE)
/// for Qiniu, PAN123_CLIENT_ID and PAN123_CLIENT_SECRET (or PAN123_CLIENT_SECRET_FILE) for
/// 123pan; QINIU_ENDPOINT and PAN123_ENDPOINT point at another endpoint (a proxy, or `purgeq
/// emulate`); PURGEQ_QINIU_ESCALATE_DIR_AFTER=N turns on directory escalation for the
/// environment's Qiniu account (`escalate_dir_after` in the config file). The config file's
/// [worker] table gives defaults for these flags; flags and the environment override it. A
/// changed config file takes effect on restart. On SIGTERM or SIGINT the worker stops claiming,
/// lets the call in flight finish, records it, returns unsent jobs to the queue and exits 0.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    purgeq worker\n  \
    purgeq worker --once            # drain what is ready now, then exit (cron)\n  \
    purgeq worker --http-listen 127.0.0.1:9464   # dashboard on /, Prometheus scrapes /metrics\n  \
    QINIU_ENDPOINT=http://127.0.0.1:8080 purgeq worker --max-targets-per-sec 0")]
pub struct Args {
    /// Drain what is ready now, wait for the CDN to confirm what was sent (at most
    /// --confirm-timeout; a purge the CDN failed is sent again), then exit (backoffs are not
    /// waited out).
    #[arg(long)]
    once: bool,

    /// URLs per Qiniu refresh or prefetch request (the API allows 60; at most 100).
    #[arg(long, value_name = "N", default_value_t = qiniu::MAX_REFRESH_URLS,
          value_parser = batch_size)]
    batch_size: usize,

    /// The longest an idle worker waits before looking again (10ms to 1h). A new or retried
    /// job wakes it at once (PostgreSQL LISTEN/NOTIFY, SQLite's data version); polling is the
    /// fallback.
    #[arg(long, value_name = "DUR", default_value = "1s", value_parser = poll_interval_arg, allow_hyphen_values = true)]
    poll_interval: Duration,

    /// How long a claim is valid before another worker may take the jobs over. Must be at
    /// least twice --request-timeout (1s to 1d).
    #[arg(long, value_name = "DUR", default_value = "2m", value_parser = lease_arg, allow_hyphen_values = true)]
    lease: Duration,

    /// Attempts (calls ending in a transient failure) before a job fails for good.
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1000))]
    max_attempts: u32,

    /// Multiply every backoff (transient retries, quota, rate-limit and auth pauses) by this:
    /// 0.01 turns minutes into seconds for a pipeline test against `purgeq emulate`.
    #[arg(
        long,
        value_name = "F",
        default_value_t = 1.0,
        allow_negative_numbers = true
    )]
    backoff_scale: f64,

    /// Confirm accepted purges at the CDN: the first query about a Qiniu request comes this long
    /// after Qiniu accepted it (multiplied by --backoff-scale), later ones at a growing interval;
    /// jobs stay `confirming` until the CDN says the purge is done (10ms to 1h).
    #[arg(long, value_name = "DUR", default_value = "1m", env = "PURGEQ_CONFIRM_INTERVAL",
          value_parser = confirm_interval_arg, allow_hyphen_values = true)]
    confirm_interval: Duration,

    /// A job the CDN has not confirmed this long after acceptance fails with an error starting
    /// `unconfirmed:` (`purgeq retry` sends it again), so `--once` ends once its jobs have (it
    /// waits at most twice this long) (1s to 7d).
    #[arg(long, value_name = "DUR", default_value = "1h", value_parser = confirm_timeout_arg,
          allow_hyphen_values = true)]
    confirm_timeout: Duration,

    /// Don't confirm: a job succeeds as soon as the provider accepts it (the behaviour before
    /// confirmation; 123pan jobs always do, as 123pan offers no way to confirm).
    #[arg(long)]
    no_confirm: bool,

    /// Timeout of one provider call, connection included (1s to 10m).
    #[arg(long, value_name = "DUR", default_value = "30s", value_parser = request_timeout_arg, allow_hyphen_values = true)]
    request_timeout: Duration,

    /// Targets per second sent to one Qiniu account (its limit is 240; 0: unlimited).
    #[arg(long, value_name = "N", default_value_t = f64::from(qiniu::RATE_TARGETS_PER_SEC),
          allow_negative_numbers = true)]
    max_targets_per_sec: f64,

    /// Requests per second sent to one Qiniu account (its limit is 5 to 10; 0: unlimited).
    #[arg(long, value_name = "N", default_value_t = f64::from(qiniu::RATE_REQUESTS_PER_SEC),
          allow_negative_numbers = true)]
    max_requests_per_sec: f64,

    /// Hold 123pan jobs until none has arrived for this long (0s to 10m), so a burst of
    /// uploads costs one account-wide refresh; longer saves calls, shorter purges sooner.
    #[arg(long, value_name = "DUR", default_value = "3s", value_parser = coalesce_arg, allow_hyphen_values = true)]
    pan123_settle: Duration,

    /// The longest a 123pan job is held while jobs keep arriving (0s to 10m): a steady trickle
    /// still gets a refresh at least this often.
    #[arg(long, value_name = "DUR", default_value = "30s", value_parser = coalesce_arg, allow_hyphen_values = true)]
    pan123_max_delay: Duration,

    /// Serve the dashboard (/), its read-only JSON API (/api/v1/...) and Prometheus metrics
    /// (/metrics) on ADDR (e.g. 127.0.0.1:9464; port 0 picks a free port, logged at start).
    /// Off by default. A non-loopback address needs --http-token-file.
    #[arg(long, value_name = "ADDR", visible_alias = "metrics-listen")]
    http_listen: Option<SocketAddr>,

    /// A file holding the bearer token every request to --http-listen must carry
    /// (`Authorization: Bearer TOKEN`).
    #[arg(long, value_name = "PATH", env = "PURGEQ_HTTP_TOKEN_FILE")]
    http_token_file: Option<std::path::PathBuf>,

    /// Serve /metrics without the token (for a Prometheus without credentials).
    #[arg(long, requires = "http_token_file")]
    metrics_without_token: bool,
}

/// `--pan123-settle`, `--pan123-max-delay`: 0s to 10m.
fn coalesce_arg(text: &str) -> Result<Duration, String> {
    super::bounded_duration(text, Duration::ZERO, Duration::from_secs(600))
}

fn confirm_interval_arg(text: &str) -> Result<Duration, String> {
    super::bounded_duration(text, Duration::from_millis(10), Duration::from_secs(3600))
}

fn confirm_timeout_arg(text: &str) -> Result<Duration, String> {
    super::bounded_duration(
        text,
        Duration::from_secs(1),
        Duration::from_secs(7 * 86_400),
    )
}

fn batch_size(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if (1..=qiniu::HARD_MAX_URLS).contains(&n) => Ok(n),
        _ => Err(format!(
            "must be a whole number from 1 to {}",
            qiniu::HARD_MAX_URLS
        )),
    }
}

/// Binds the HTTP listener (so a taken port or a missing token is a startup error) and serves
/// the dashboard, API and metrics in the background until `stop`.
async fn serve_http(
    args: &Args,
    addr: SocketAddr,
    store: &Store,
    metrics: &Arc<Metrics>,
    stop: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let token = match &args.http_token_file {
        Some(path) => Some(dashboard::read_token(path)?),
        None => None,
    };
    dashboard::check_bind(addr, token.is_some())?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for metrics and the dashboard"))?;
    let bound = listener.local_addr().unwrap_or(addr);
    info!(
        token = token.is_some(),
        "dashboard on http://{bound}/, metrics on http://{bound}/metrics"
    );
    let server = dashboard::Server {
        store: store.clone(),
        metrics: Arc::clone(metrics),
        token,
        metrics_open: args.metrics_without_token,
    };
    Ok(tokio::spawn(dashboard::serve(
        listener,
        Arc::new(server),
        stop,
    )))
}

/// Opens the store; while a PostgreSQL server cannot be reached, waits and tries again (a
/// worker started with its database down comes up when the database does). `None` if shutdown
/// came first.
async fn open_waiting(
    ctx: &Context,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<Store>> {
    let mut delay = Duration::from_millis(500);
    loop {
        match ctx.open(Durability::Normal).await {
            Ok(store) => return Ok(Some(store)),
            Err(e)
                if matches!(
                    e.downcast_ref::<StoreError>(),
                    Some(StoreError::Connect { .. })
                ) =>
            {
                warn!(error = %format!("{e:#}"), retry_in = ?delay, "the database is unreachable; waiting for it");
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(None),
                    () = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(30));
            }
            Err(e) => return Err(e),
        }
    }
}

impl Args {
    /// The worker's settings from the flags; the lease rules are checked here.
    fn config(&self, ctx: &Context) -> anyhow::Result<WorkerConfig> {
        anyhow::ensure!(
            self.max_targets_per_sec >= 0.0
                && self.max_requests_per_sec >= 0.0
                && self.max_targets_per_sec.is_finite()
                && self.max_requests_per_sec.is_finite(),
            "--max-targets-per-sec and --max-requests-per-sec must be finite and not negative (0: unlimited)"
        );
        anyhow::ensure!(
            self.backoff_scale > 0.0 && self.backoff_scale.is_finite(),
            "--backoff-scale must be a positive number"
        );
        let timeouts = Timeouts {
            request: self.request_timeout,
            busy: ctx.busy_timeout(),
        };
        let mut config = WorkerConfig::new(worker::worker_id(), self.lease, timeouts)
            .context("--lease is too short for --request-timeout and --busy-timeout")?;
        config.poll_interval = self.poll_interval;
        config.once = self.once;
        config.policies = Policies {
            max_attempts: self.max_attempts,
            ..Policies::default()
        }
        .scaled(self.backoff_scale);
        config.confirm = ConfirmSettings {
            enabled: !self.no_confirm,
            interval: self.confirm_interval.mul_f64(self.backoff_scale),
            timeout: self.confirm_timeout,
        };
        Ok(config)
    }

    fn env_settings(&self) -> EnvSettings {
        EnvSettings {
            request_timeout: self.request_timeout,
            qiniu: QiniuSettings {
                batch_urls: self.batch_size,
                targets_per_sec: self.max_targets_per_sec,
                requests_per_sec: self.max_requests_per_sec,
                ..QiniuSettings::default()
            },
            pan123: Pan123Settings {
                coalesce: Coalesce {
                    settle: self.pan123_settle,
                    max_delay: self.pan123_max_delay,
                },
                ..Pan123Settings::default()
            },
        }
    }

    pub async fn run(self, ctx: &Context) -> anyhow::Result<ExitCode> {
        let config = self.config(ctx)?;
        let shutdown = crate::shutdown::on_signals().context("listening for SIGTERM and SIGINT")?;
        let settings = ctx.settings()?.filter(|s| s.has_accounts());
        // Secrets are checked (bounded reads) now, before anything long-running starts.
        match &settings {
            Some(s) => s.check_secrets()?,
            None => {
                config::credential_pair("QINIU_ACCESS_KEY", "QINIU_SECRET_KEY")?;
                config::credential_pair("PAN123_CLIENT_ID", "PAN123_CLIENT_SECRET")?;
            }
        }
        let Some(store) = open_waiting(ctx, &shutdown).await? else {
            return Ok(ExitCode::Success);
        };
        let accounts = match &settings {
            Some(s) => provider::accounts_from_settings(&store, s, self.env_settings()).await?,
            None => provider::accounts_from_env(&store, self.env_settings()).await?,
        };
        let handles = Handles::from_env();
        let metrics_stop = shutdown.child_token();
        let metrics_server = match self.http_listen {
            Some(addr) => {
                Some(serve_http(&self, addr, &store, &handles.metrics, metrics_stop.clone()).await?)
            }
            None => None,
        };
        handles.notifier.ready();
        info!(worker = %config.id, db = %ctx.location()?.display(), once = config.once, "worker started");
        worker::run(store, accounts, config, handles, shutdown).await?;
        if let Some(server) = metrics_server {
            metrics_stop.cancel();
            let _ = server.await;
        }
        info!("worker stopped");
        Ok(ExitCode::Success)
    }
}

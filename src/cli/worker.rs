//! `purgeq worker`: the daemon that drains the queue.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{Context, ExitCode, duration_arg};
use crate::config::{self, ConfigError};
use crate::dashboard;
use crate::model::Provider;
use crate::provider::pan123::{self, Pan123Client};
use crate::provider::qiniu::{self, QiniuClient};
use crate::store::{Durability, Store, StoreError};
use crate::worker::{self, Policies, Providers, WorkerConfig};

/// Drain the queue: claim jobs per lane, collapse duplicates, call the provider within its
/// limits, record every outcome.
///
/// Credentials come from the environment: QINIU_ACCESS_KEY and QINIU_SECRET_KEY (or
/// QINIU_SECRET_KEY_FILE) for Qiniu, PAN123_CLIENT_ID and PAN123_CLIENT_SECRET (or
/// PAN123_CLIENT_SECRET_FILE) for 123pan; QINIU_ENDPOINT and PAN123_ENDPOINT point at another
/// endpoint (a proxy, or `purgeq emulate`). On SIGTERM or SIGINT the worker stops claiming, lets the call in flight finish,
/// records it, returns unsent jobs to the queue and exits 0.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    purgeq worker\n  \
    purgeq worker --once            # drain what is ready now, then exit (cron)\n  \
    purgeq worker --http-listen 127.0.0.1:9464   # dashboard on /, Prometheus scrapes /metrics\n  \
    QINIU_ENDPOINT=http://127.0.0.1:8080 purgeq worker --max-targets-per-sec 0")]
pub struct Args {
    /// Drain what is ready now, then exit (backoffs are not waited out).
    #[arg(long)]
    once: bool,

    /// URLs per Qiniu refresh or prefetch request (the API allows 60; at most 100).
    #[arg(long, value_name = "N", default_value_t = qiniu::MAX_REFRESH_URLS,
          value_parser = batch_size)]
    batch_size: usize,

    /// The longest an idle worker waits before looking for new jobs.
    #[arg(long, value_name = "DUR", default_value = "1s", value_parser = duration_arg)]
    poll_interval: Duration,

    /// How long a claim is valid before another worker may take the jobs over. Must be at
    /// least twice --request-timeout.
    #[arg(long, value_name = "DUR", default_value = "2m", value_parser = duration_arg)]
    lease: Duration,

    /// Attempts (calls ending in a transient failure) before a job fails for good.
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1000))]
    max_attempts: u32,

    /// Multiply every backoff (transient retries, quota, rate-limit and auth pauses) by this:
    /// 0.01 turns minutes into seconds for a pipeline test against `purgeq emulate`.
    #[arg(long, value_name = "F", default_value_t = 1.0)]
    backoff_scale: f64,

    /// Timeout of one provider call, connection included.
    #[arg(long, value_name = "DUR", default_value = "30s", value_parser = duration_arg)]
    request_timeout: Duration,

    /// Targets per second sent to one Qiniu account (its limit is 240; 0: unlimited).
    #[arg(long, value_name = "N", default_value_t = f64::from(qiniu::RATE_TARGETS_PER_SEC))]
    max_targets_per_sec: f64,

    /// Requests per second sent to one Qiniu account (its limit is 5 to 10; 0: unlimited).
    #[arg(long, value_name = "N", default_value_t = f64::from(qiniu::RATE_REQUESTS_PER_SEC))]
    max_requests_per_sec: f64,

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

fn batch_size(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if (1..=qiniu::HARD_MAX_URLS).contains(&n) => Ok(n),
        _ => Err(format!(
            "must be a whole number from 1 to {}",
            qiniu::HARD_MAX_URLS
        )),
    }
}

/// The HTTP client every provider call goes through: timeouts set, no redirects followed
/// (a purge API never redirects; following one could send credentials elsewhere).
pub(crate) fn http_client(timeout: Duration) -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("purgeq/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("building the HTTP client")
}

/// Builds the provider clients from the environment; a provider with queued jobs and no
/// credentials is a startup error naming the missing variable.
pub(crate) async fn providers_from_env(
    store: &Store,
    timeout: Duration,
) -> anyhow::Result<Providers> {
    let http = http_client(timeout)?;
    let qiniu = match config::credential_pair("QINIU_ACCESS_KEY", "QINIU_SECRET_KEY")? {
        Some((access_key, secret_key)) => {
            let endpoint = endpoint("QINIU_ENDPOINT", qiniu::DEFAULT_ENDPOINT)?;
            info!(endpoint, access_key = %access_key, "qiniu lanes enabled");
            Some(QiniuClient::new(
                http.clone(),
                endpoint,
                qiniu::Credentials {
                    access_key,
                    secret_key,
                },
            ))
        }
        None => {
            missing(
                store,
                Provider::Qiniu,
                "QINIU_ACCESS_KEY",
                "QINIU_SECRET_KEY",
            )
            .await?;
            None
        }
    };
    let pan123 = match config::credential_pair("PAN123_CLIENT_ID", "PAN123_CLIENT_SECRET")? {
        Some((client_id, client_secret)) => {
            let endpoint = endpoint("PAN123_ENDPOINT", pan123::DEFAULT_ENDPOINT)?;
            info!(endpoint, client_id = %client_id, "123pan lane enabled");
            Some(Pan123Client::new(
                http,
                endpoint,
                pan123::Credentials {
                    client_id,
                    client_secret,
                },
            ))
        }
        None => {
            missing(
                store,
                Provider::Pan123,
                "PAN123_CLIENT_ID",
                "PAN123_CLIENT_SECRET",
            )
            .await?;
            None
        }
    };
    anyhow::ensure!(
        qiniu.is_some() || pan123.is_some(),
        "no provider has credentials: set QINIU_ACCESS_KEY and QINIU_SECRET_KEY, or PAN123_CLIENT_ID and PAN123_CLIENT_SECRET (or their *_FILE variants)"
    );
    Ok(Providers { qiniu, pan123 })
}

fn endpoint(var: &str, default: &str) -> anyhow::Result<String> {
    Ok(config::var_from_env(var)?.unwrap_or_else(|| default.to_owned()))
}

/// A provider without credentials: fatal if its jobs are waiting, else a warning.
async fn missing(
    store: &Store,
    provider: Provider,
    id_var: &'static str,
    secret_var: &'static str,
) -> anyhow::Result<()> {
    if store.has_pending(provider).await? {
        return Err(ConfigError::Missing {
            var: id_var,
            why: format!("{provider} jobs are queued and the worker needs {id_var} and {secret_var} to send them"),
        }
        .into());
    }
    warn!("{id_var} and {secret_var} are not set: {provider} jobs will not be sent");
    Ok(())
}

/// Binds the HTTP listener (so a taken port or a missing token is a startup error) and serves
/// the dashboard, API and metrics in the background until `stop`.
async fn serve_http(
    args: &Args,
    addr: SocketAddr,
    store: &Store,
    config: &WorkerConfig,
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
        metrics: Arc::clone(&config.metrics),
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

/// A token cancelled on SIGTERM or SIGINT.
pub(crate) fn shutdown_on_signals() -> anyhow::Result<CancellationToken> {
    use tokio::signal::unix::{SignalKind, signal};
    let token = CancellationToken::new();
    let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    let cancel = token.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => info!("SIGTERM: shutting down"),
            _ = int.recv() => info!("SIGINT: shutting down"),
        }
        cancel.cancel();
    });
    Ok(token)
}

impl Args {
    pub async fn run(self, ctx: &Context) -> anyhow::Result<ExitCode> {
        anyhow::ensure!(
            self.lease >= self.request_timeout + ctx.busy_timeout(),
            "--lease ({:?}) must be at least --request-timeout ({:?}) plus --busy-timeout ({:?}), so a live worker can always record its call before its lease expires",
            self.lease,
            self.request_timeout,
            ctx.busy_timeout()
        );
        anyhow::ensure!(
            self.lease >= self.request_timeout * 2,
            "--lease ({:?}) must be at least twice --request-timeout ({:?}), so a live worker always records its call before its lease expires",
            self.lease,
            self.request_timeout
        );
        anyhow::ensure!(
            self.max_targets_per_sec >= 0.0 && self.max_requests_per_sec >= 0.0,
            "--max-targets-per-sec and --max-requests-per-sec must not be negative"
        );
        anyhow::ensure!(
            self.backoff_scale > 0.0 && self.backoff_scale.is_finite(),
            "--backoff-scale must be a positive number"
        );
        let shutdown = shutdown_on_signals()?;
        let Some(store) = open_waiting(ctx, &shutdown).await? else {
            return Ok(ExitCode::Success);
        };
        let providers = providers_from_env(&store, self.request_timeout).await?;
        let config = WorkerConfig {
            lease: self.lease,
            poll_interval: self.poll_interval,
            batch_urls: self.batch_size,
            once: self.once,
            policies: Policies {
                max_attempts: self.max_attempts,
                ..Policies::default()
            }
            .scaled(self.backoff_scale),
            qiniu_targets_per_sec: self.max_targets_per_sec,
            qiniu_requests_per_sec: self.max_requests_per_sec,
            ..WorkerConfig::default()
        };
        let metrics_stop = shutdown.child_token();
        let metrics_server = match self.http_listen {
            Some(addr) => {
                Some(serve_http(&self, addr, &store, &config, metrics_stop.clone()).await?)
            }
            None => None,
        };
        config.notifier.ready();
        info!(worker = %config.id, db = %ctx.location()?.display(), once = config.once, "worker started");
        worker::run(store, providers, config, shutdown).await?;
        if let Some(server) = metrics_server {
            metrics_stop.cancel();
            let _ = server.await;
        }
        info!("worker stopped");
        Ok(ExitCode::Success)
    }
}

//! `purgeq emulate`: serve a local fake of the providers' APIs until SIGINT or SIGTERM.
//!
//! The first stdout line is `listening on http://HOST:PORT`, flushed at once, so a script or a
//! test can start it with `--listen 127.0.0.1:0` and read the address back.

use std::io::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;

use super::ExitCode;
use crate::config;
use crate::emulator::qiniu::{DEMO_ACCESS_KEY, DEMO_SECRET_KEY, DailyQuotas, QiniuConfig};
use crate::emulator::{self, EmulatorConfig, FaultKind, FaultPlan, RandomFaults, ScriptedFaults};
use crate::secret::Secret;

/// Run a local fake of the CDN providers' APIs (Qiniu fusion CDN), for tests and demos.
///
/// It accepts the credentials of QINIU_ACCESS_KEY and QINIU_SECRET_KEY (or
/// QINIU_SECRET_KEY_FILE), else the demo pair purgeq-demo-ak / purgeq-demo-sk. Operator
/// endpoints: GET /_emulator/stats, POST /_emulator/reset-quota, POST /_emulator/faults.
/// Fault kinds: http-503, server-error, quota, throttle, qps, slow, drop-before, drop-after,
/// garbage, invalid.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The address to listen on; port 0 picks a free port.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    listen: SocketAddr,

    /// An accepted domain: it and its subdomains may be purged (repeatable). With none, every
    /// host is accepted.
    #[arg(long = "domain", value_name = "DOMAIN")]
    domains: Vec<String>,

    /// Qiniu URL refreshes allowed per day.
    #[arg(long, value_name = "N", default_value_t = DailyQuotas::default().url_refresh)]
    url_quota: u64,

    /// Qiniu directory refreshes allowed per day.
    #[arg(long, value_name = "N", default_value_t = DailyQuotas::default().dir_refresh)]
    dir_quota: u64,

    /// Qiniu prefetches allowed per day.
    #[arg(long, value_name = "N", default_value_t = DailyQuotas::default().prefetch)]
    prefetch_quota: u64,

    /// Make the next N purge requests fail with --fail-with.
    #[arg(long, value_name = "N", requires = "fail_with")]
    fail_next: Option<u32>,

    /// The fault for --fail-next.
    #[arg(long, value_name = "KIND", requires = "fail_next")]
    fail_with: Option<FaultKind>,

    /// Make each purge request fail with this probability (0 to 1), drawing the kind from
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
        wait_for_signal().await?;
        tracing::info!("stopping the emulator");
        emulator.shutdown().await;
        Ok(ExitCode::Success)
    }

    fn config(&self) -> anyhow::Result<EmulatorConfig> {
        let (access_key, secret_key) = credentials()?;
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
            slow_delay_ms: u64::try_from(self.slow.as_millis()).unwrap_or(u64::MAX),
        };
        Ok(EmulatorConfig {
            qiniu: QiniuConfig {
                access_key,
                secret_key,
                domains: self.domains.clone(),
                quotas: DailyQuotas {
                    url_refresh: self.url_quota,
                    dir_refresh: self.dir_quota,
                    prefetch: self.prefetch_quota,
                },
                ..QiniuConfig::default()
            },
            faults,
        })
    }
}

/// The Qiniu key pair from the environment, as the worker reads it, or the demo pair.
fn credentials() -> anyhow::Result<(String, Secret)> {
    let access_key = config::var_from_env("QINIU_ACCESS_KEY")?;
    let secret_key = config::secret_from_env("QINIU_SECRET_KEY")?;
    match (access_key, secret_key) {
        (Some(ak), Some(sk)) => Ok((ak, sk)),
        (None, None) => {
            eprintln!(
                "purgeq emulate: QINIU_ACCESS_KEY and QINIU_SECRET_KEY are not set; accepting the demo credentials ({DEMO_ACCESS_KEY} and its demo secret key)"
            );
            Ok((DEMO_ACCESS_KEY.to_owned(), Secret::new(DEMO_SECRET_KEY)))
        }
        (Some(_), None) => anyhow::bail!(
            "QINIU_ACCESS_KEY is set but QINIU_SECRET_KEY (nor QINIU_SECRET_KEY_FILE) is not"
        ),
        (None, Some(_)) => anyhow::bail!("QINIU_SECRET_KEY is set but QINIU_ACCESS_KEY is not"),
    }
}

/// Waits for SIGINT or (on Unix) SIGTERM.
async fn wait_for_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result.context("listening for SIGINT")?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c()
        .await
        .context("listening for SIGINT")?;
    Ok(())
}

//! In-process worker runs against the emulator on loopback.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use purgeq::emulator::{self, Emulator, EmulatorConfig};
use purgeq::model::{Action, DEFAULT_ACCOUNT, Provider};
use purgeq::planner::Batch;
use purgeq::policy::RetryPolicy;
use purgeq::provider::pan123::{Pan123Account, Pan123Client, Pan123Settings};
use purgeq::provider::qiniu::{Credentials, QiniuAccount, QiniuClient, QiniuSettings};
use purgeq::provider::{Account, AccountBase, CallFuture, CallReport, Coalesce, Credential, Route};
use purgeq::secret::Secret;
use purgeq::store::{NewJobs, Store};
use purgeq::worker::{DEFAULT_LEASE, Handles, Policies, Timeouts, WorkerConfig, worker_id};
use tokio_util::sync::CancellationToken;

pub const AK: &str = "test-ak";
pub const SK: &str = "test-sk-never-logged";
pub const CLIENT_ID: &str = "test-client";
pub const CLIENT_SECRET: &str = "test-client-secret-never-logged";

pub fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// An emulator account with the test credentials.
pub fn emulator_config() -> EmulatorConfig {
    let mut config = EmulatorConfig::default();
    config.qiniu.access_key = AK.to_owned();
    config.qiniu.secret_key = Secret::new(SK);
    config.pan123.client_id = CLIENT_ID.to_owned();
    config.pan123.client_secret = Secret::new(CLIENT_SECRET);
    // The worker's own pacing is off in tests; so is the emulator's.
    config.pan123.refresh_per_sec = 0.0;
    config
}

pub async fn emulator(config: EmulatorConfig) -> Emulator {
    emulator::start(loopback(), config)
        .await
        .expect("emulator starts")
}

/// The test accounts at the emulator, without pacing.
pub fn providers(emu: &Emulator) -> Vec<Arc<dyn Account>> {
    providers_with(emu, unpaced_qiniu())
}

/// Qiniu settings with the worker's own pacing off.
pub fn unpaced_qiniu() -> QiniuSettings {
    QiniuSettings {
        targets_per_sec: 0.0,
        requests_per_sec: 0.0,
        ..QiniuSettings::default()
    }
}

/// The test accounts at the emulator, Qiniu's driven as `qiniu` says.
pub fn providers_with(emu: &Emulator, qiniu: QiniuSettings) -> Vec<Arc<dyn Account>> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("http client");
    let qiniu_client = QiniuClient::new(
        http.clone(),
        emu.url(),
        Credentials {
            access_key: AK.to_owned(),
            secret_key: Secret::new(SK),
        },
    );
    // No coalescing window: tests of other behaviour send 123pan jobs at once.
    let at_once = Coalesce {
        settle: Duration::ZERO,
        max_delay: Duration::ZERO,
    };
    vec![
        Arc::new(QiniuAccount::new(qiniu_client, qiniu)),
        pan123_account(emu, at_once),
    ]
}

/// The test 123pan account at the emulator, unpaced, holding bursts as `coalesce` says.
pub fn pan123_account(emu: &Emulator, coalesce: Coalesce) -> Arc<dyn Account> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("http client");
    let client = Pan123Client::new(
        http,
        emu.url(),
        purgeq::provider::pan123::Credentials {
            client_id: CLIENT_ID.to_owned(),
            client_secret: Secret::new(CLIENT_SECRET),
        },
    );
    let settings = Pan123Settings {
        requests_per_sec: 0.0,
        coalesce,
        ..Pan123Settings::default()
    };
    Arc::new(Pan123Account::new(client, settings))
}

/// A test double around a real account whose daily quotas reset every `day`, so a test lives
/// through several quota days in a second.
#[derive(Debug)]
pub struct ShortDays {
    /// The account that does the work.
    pub inner: Arc<dyn Account>,
    /// The length of a quota day.
    pub day: Duration,
}

impl Account for ShortDays {
    fn provider(&self) -> Provider {
        self.inner.provider()
    }
    fn base(&self) -> &AccountBase {
        self.inner.base()
    }
    fn prepare<'a>(
        &'a self,
        store: &'a Store,
        renew: bool,
    ) -> CallFuture<'a, Result<Credential, CallReport>> {
        self.inner.prepare(store, renew)
    }
    fn send<'a>(
        &'a self,
        route: &'a Route,
        batch: &'a Batch,
        credential: &'a Credential,
    ) -> CallFuture<'a, CallReport> {
        self.inner.send(route, batch, credential)
    }
    fn quota_reset_at(&self, now: i64) -> Option<i64> {
        let day = i64::try_from(self.day.as_millis()).expect("a short day");
        Some((now / day + 1) * day)
    }
    fn escalate_dir_after(&self) -> Option<u32> {
        self.inner.escalate_dir_after()
    }
}

/// A worker config with millisecond backoffs, so tests never wait minutes.
pub fn fast_config() -> WorkerConfig {
    let ms = Duration::from_millis;
    let mut config = WorkerConfig::new(worker_id(), DEFAULT_LEASE, Timeouts::default())
        .expect("the default lease is valid");
    config.poll_interval = ms(50);
    // The emulator's tasks complete at once unless a test says otherwise: confirm promptly.
    config.confirm.interval = ms(20);
    config.policies = Policies {
        max_attempts: 8,
        transient: RetryPolicy::TRANSIENT.starting_at(ms(10)),
        quota: RetryPolicy::QUOTA.starting_at(ms(100)),
        rate_limit: RetryPolicy::RATE_LIMIT.starting_at(ms(50)),
        auth: RetryPolicy::AUTH.starting_at(ms(100)),
    };
    config
}

pub async fn enqueue(store: &Store, action: Action, targets: &[String]) -> Vec<i64> {
    let provider = if action == Action::RefreshAll {
        Provider::Pan123
    } else {
        Provider::Qiniu
    };
    let now = purgeq::clock::now_ms();
    store
        .enqueue(
            &NewJobs {
                provider,
                account: DEFAULT_ACCOUNT.to_owned(),
                action,
                tag: None,
                not_before: now,
                priority: purgeq::model::Priority::Normal,
                targets: targets.iter().cloned().map(Some).collect(),
            },
            now,
        )
        .await
        .expect("enqueue")
}

/// Runs the worker with `once`, to completion.
pub async fn drain_once(store: &Store, emu: &Emulator, mut config: WorkerConfig) {
    config.once = true;
    purgeq::worker::run(
        store.clone(),
        providers(emu),
        config,
        Handles::from_env(),
        CancellationToken::new(),
    )
    .await
    .expect("worker runs");
}

/// Runs the worker in the background until `done` holds (checked every 20 ms, for at most
/// 30 s), then shuts it down and waits for it.
pub async fn run_until<F, Fut>(store: &Store, emu: &Emulator, config: WorkerConfig, done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    run_until_with(store, providers(emu), config, done).await;
}

/// [`run_until`] over `accounts`.
pub async fn run_until_with<F, Fut>(
    store: &Store,
    accounts: Vec<Arc<dyn Account>>,
    config: WorkerConfig,
    mut done: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(purgeq::worker::run(
        store.clone(),
        accounts,
        config,
        Handles::from_env(),
        shutdown.clone(),
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !done().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not reached within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shutdown.cancel();
    task.await.expect("worker task").expect("worker ok");
}

pub fn urls(host: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("https://{host}/file/{i}.js"))
        .collect()
}

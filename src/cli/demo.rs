//! `purgeq demo`: the whole product end to end, on loopback, with nothing to set up.
//!
//! A temporary database, the provider emulator on 127.0.0.1, and the demo credentials. It
//! enqueues Qiniu jobs with duplicates and an invalid host, and a 123pan refresh, shows a rejected input, drains until the
//! emulator's small daily quota is spent to the last unit and the lane waits for the reset, waits
//! for the CDN to confirm what was accepted (a few tasks fail at the CDN and are queued to be
//! sent again), prints `status`, and shows `wait`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use super::{ExitCode, status};
use crate::clock;
use crate::emulator::pan123::{DEMO_CLIENT_ID, DEMO_CLIENT_SECRET};
use crate::emulator::qiniu::{DEMO_ACCESS_KEY, DEMO_SECRET_KEY};
use crate::emulator::{self, Emulator, EmulatorConfig};
use crate::model::{Action, DEFAULT_ACCOUNT, Provider};
use crate::provider::pan123::{self, Pan123Account, Pan123Client, Pan123Settings};
use crate::provider::qiniu::{self, QiniuAccount, QiniuClient, QiniuSettings};
use crate::provider::{self, Account};
use crate::secret::Secret;
use crate::store::{Durability, Location, NewJobs, OpenOptions, Store};
use crate::target::{self, Input};
use crate::worker::{self, DEFAULT_LEASE, Handles, Timeouts, WorkerConfig, worker_id};

/// The domain the demo's emulated account serves.
const DOMAIN: &str = "cdn.example.com";

/// The demo account's daily URL refresh quota: small, so the demo runs it out.
const DEMO_URL_QUOTA: u64 = 100;

/// How long the demo's CDN tasks take to reach the edge.
const DEMO_COMPLETE_AFTER: std::time::Duration = std::time::Duration::from_secs(2);

/// The fraction of the demo's CDN tasks that fail after they were accepted.
const DEMO_FAIL_FRACTION: f64 = 0.05;

/// Run purgeq end to end against the local emulator, with a temporary database.
///
/// Needs no credentials and no network beyond loopback. Keep the database with --keep-db to
/// look around afterwards with `purgeq --db PATH status`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Keep the demo database at this path instead of a temporary one.
    #[arg(long, value_name = "PATH")]
    keep_db: Option<PathBuf>,
}

fn step(text: &str) {
    println!("\n==> {text}");
    // Keep the narration in order with the worker's log lines on stderr.
    let _ = std::io::Write::flush(&mut std::io::stdout());
}

impl Args {
    pub async fn run(self) -> anyhow::Result<ExitCode> {
        let scratch = tempfile::tempdir().context("creating a temporary directory")?;
        let db = self
            .keep_db
            .clone()
            .unwrap_or_else(|| scratch.path().join("demo.db"));
        let store = Store::connect(
            &Location::Sqlite(db.clone()),
            &OpenOptions::new(Durability::Full),
        )
        .await?;
        let emu = start_emulator().await?;
        println!(
            "purgeq demo: database {}, Qiniu emulator at {}",
            db.display(),
            emu.url()
        );
        println!(
            "The emulated account serves {DOMAIN} and allows {DEMO_URL_QUOTA} URL refreshes a day."
        );

        show_rejected_batch();
        enqueue_jobs(&store).await?;

        step(
            "The worker drains the queue: duplicates share one request, invalid hosts fail alone, the Qiniu quota is spent to the last unit, and one 123pan call refreshes the whole account. Accepted Qiniu purges stay `confirming` until the CDN's tasks are done (2 s here, minutes in real life); the worker asks the task lists and waits for them.",
        );
        drain(&store, &emu.url()).await?;
        show_requests(&emu);
        show_resent(&store).await?;

        step("purgeq status: counts, the lane waiting for its quota, the forecast, recent jobs.");
        status::print_summary(&store, 8).await?;
        show_failed(&store).await?;
        show_wait(&store).await?;
        println!(
            "\nThe queued jobs wait for the quota to come back; a real worker keeps running and sends them then."
        );
        emu.shutdown().await;
        Ok(ExitCode::Success)
    }
}

/// The emulator as the demo needs it: one domain, a small quota, purges that take 2 s to
/// complete at the CDN and a few that fail there.
async fn start_emulator() -> anyhow::Result<Emulator> {
    let mut config = EmulatorConfig::default();
    config.qiniu.domains = vec![DOMAIN.to_owned()];
    config.qiniu.quotas.url_refresh = DEMO_URL_QUOTA;
    config.qiniu.complete_after = DEMO_COMPLETE_AFTER;
    config.qiniu.fail_fraction = DEMO_FAIL_FRACTION;
    emulator::start(SocketAddr::from(([127, 0, 0, 1], 0)), config)
        .await
        .context("starting the emulator")
}

/// A batch with bad lines, refused whole before anything is queued.
fn show_rejected_batch() {
    step("A producer enqueues a bad batch: one bad line rejects it all.");
    let bad = Input::from_lines(
        format!("https://{DOMAIN}/ok.js\nftp://{DOMAIN}/nope\nhttps://{DOMAIN}/a b\n").as_bytes(),
    );
    if let Err(rejected) = target::validate(&bad, Action::RefreshUrl) {
        for r in rejected {
            println!("    rejected {r}");
        }
    }
    println!("    nothing was queued (exit code 3)");
}

/// What the emulator received during the drain.
fn show_requests(emu: &Emulator) {
    let stats = emu.stats();
    let lists: u64 = ["refresh_list", "prefetch_list"]
        .iter()
        .filter_map(|op| stats.qiniu.requests.get(*op))
        .sum();
    println!(
        "    Qiniu: {} purge requests, {} distinct targets purged, {lists} task-list queries; 123pan: {} token request, {} refresh call",
        stats.qiniu.requests.values().sum::<u64>() - lists,
        stats.qiniu.purged.len(),
        stats.pan123.token_requests,
        stats.pan123.refresh_calls
    );
}

/// `purgeq status ID` of a job that failed for good, with the call that carried it.
async fn show_failed(store: &Store) -> anyhow::Result<()> {
    if let Some(failed) = store
        .list_jobs(&crate::store::JobFilter {
            state: Some(crate::model::JobState::Failed),
            limit: 1,
            ..Default::default()
        })
        .await?
        .first()
    {
        step(&format!(
            "purgeq status {}: a failed job and the provider call that carried it.",
            failed.id
        ));
        status::print_job(store, failed.id).await?;
    }
    Ok(())
}

/// `purgeq wait` on the demo's tag, with a short timeout: the quota-paused jobs keep it waiting.
async fn show_wait(store: &Store) -> anyhow::Result<()> {
    step(
        "purgeq wait --tag build-42 --timeout 2s: a pipeline blocks until its purges are done; here the quota-paused jobs have not ended, so it times out (exit 6).",
    );
    let selection = crate::store::WaitSelection {
        tag: Some("build-42".to_owned()),
        ..Default::default()
    };
    let code = super::wait::wait(
        store,
        &selection,
        Some(std::time::Duration::from_secs(2)),
        std::time::Duration::from_millis(500),
    )
    .await?;
    println!("    exit code {}", code as u8);
    Ok(())
}

/// Shows a job the CDN failed after accepting it, queued to be sent again.
async fn show_resent(store: &Store) -> anyhow::Result<()> {
    let jobs = store
        .list_jobs(&crate::store::JobFilter {
            limit: 1000,
            ..Default::default()
        })
        .await?;
    let confirmed = jobs.iter().filter(|j| j.confirmed_at.is_some()).count();
    let failed_at_cdn: Vec<_> = jobs
        .iter()
        .filter(|j| {
            j.last_error
                .as_deref()
                .is_some_and(|e| e.contains("the CDN failed"))
        })
        .collect();
    println!(
        "    {confirmed} jobs confirmed by the CDN; {} failed at the CDN after acceptance and were queued to be sent again (a re-send spends quota again)",
        failed_at_cdn.len()
    );
    if let Some(job) = failed_at_cdn.first() {
        step(&format!(
            "purgeq status {}: a purge the CDN failed: its timeline, the CDN's detail, and its send and task-list queries.",
            job.id
        ));
        status::print_job(store, job.id).await?;
    }
    Ok(())
}

/// Enqueues the demo's jobs: duplicates, foreign hosts, a directory, a prefetch, a 123pan refresh.
async fn enqueue_jobs(store: &Store) -> anyhow::Result<()> {
    step(
        "Producers enqueue 150 changed files, each of 40 of them twice, plus 2 URLs on a host the account does not serve, a directory, a prefetch, and a 123pan account refresh.",
    );
    let mut urls: Vec<String> = vec![
        "https://static.other-site.example/logo.png".to_owned(),
        "https://static.other-site.example/app.css".to_owned(),
    ];
    urls.extend((0..150).map(|i| format!("https://{DOMAIN}/build/42/file-{i}.js")));
    urls.extend((0..40).map(|i| format!("https://{DOMAIN}/build/42/file-{i}.js")));
    let jobs = [
        (Provider::Qiniu, Action::RefreshUrl, urls),
        (
            Provider::Qiniu,
            Action::RefreshDir,
            vec![format!("https://{DOMAIN}/build/41/")],
        ),
        (
            Provider::Qiniu,
            Action::PrefetchUrl,
            vec![format!("https://{DOMAIN}/index.html")],
        ),
        (
            Provider::Pan123,
            Action::RefreshAll,
            vec!["https://vip.123pan.cn/1815/build-42.zip".to_owned()],
        ),
    ];
    for (provider, action, targets) in jobs {
        let now = clock::now_ms();
        let ids = store
            .enqueue(
                &NewJobs {
                    provider,
                    account: DEFAULT_ACCOUNT.to_owned(),
                    action,
                    tag: Some("build-42".to_owned()),
                    not_before: now,
                    priority: crate::model::Priority::Normal,
                    targets: targets.into_iter().map(Some).collect(),
                },
                now,
            )
            .await?;
        println!("    queued {} {provider} {action} jobs", ids.len());
    }
    Ok(())
}

/// Runs a worker with `once` against the emulator at `url` with the demo credentials.
async fn drain(store: &Store, url: &str) -> anyhow::Result<()> {
    let http = provider::http_client(std::time::Duration::from_secs(10))?;
    let qiniu = QiniuClient::new(
        http.clone(),
        url,
        qiniu::Credentials {
            access_key: DEMO_ACCESS_KEY.to_owned(),
            secret_key: Secret::new(DEMO_SECRET_KEY),
        },
    );
    let pan123 = Pan123Client::new(
        http,
        url,
        pan123::Credentials {
            client_id: DEMO_CLIENT_ID.to_owned(),
            client_secret: Secret::new(DEMO_CLIENT_SECRET),
        },
    );
    let accounts: Vec<Arc<dyn Account>> = vec![
        Arc::new(QiniuAccount::new(qiniu, QiniuSettings::default())),
        Arc::new(Pan123Account::new(pan123, Pan123Settings::default())),
    ];
    let mut config = WorkerConfig::new(worker_id(), DEFAULT_LEASE, Timeouts::default())?;
    config.once = true;
    config.poll_interval = std::time::Duration::from_millis(200);
    config.confirm.interval = std::time::Duration::from_secs(1);
    let handles = Handles::from_env();
    worker::run(
        store.clone(),
        accounts,
        config,
        handles,
        CancellationToken::new(),
    )
    .await?;
    Ok(())
}

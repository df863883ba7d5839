//! The worker against the Qiniu emulator over loopback: dedupe, outcomes, backoff, audit.

mod common;

use std::collections::HashMap;

use common::worker::{
    AK, SK, ShortDays, drain_once, emulator, emulator_config, enqueue, fast_config, providers,
    run_until, run_until_with, urls,
};
use purgeq::emulator::{FaultKind, FaultPlan, RandomFaults, ScriptedFaults};
use purgeq::model::{Action, JobState, Lane, Provider};
use purgeq::provider::Account;
use purgeq::provider::qiniu::{Credentials, QiniuClient};
use purgeq::secret::Secret;
use purgeq::store::{Job, JobFilter, Store};
use std::sync::Arc;
use std::time::Duration;

async fn all_jobs(store: &Store) -> Vec<Job> {
    store
        .list_jobs(&JobFilter {
            limit: 1_000_000,
            ..JobFilter::default()
        })
        .await
        .unwrap()
}

async fn count_state(store: &Store, state: JobState) -> usize {
    all_jobs(store)
        .await
        .iter()
        .filter(|j| j.state == state)
        .count()
}

#[tokio::test]
async fn duplicates_ride_one_request_and_every_job_records_its_request_id() {
    let scratch = common::Scratch::new();
    let store = scratch.store().await;
    let emu = emulator(emulator_config()).await;
    let targets = urls("cdn.example.com", 250);
    for _ in 0..3 {
        enqueue(&store, Action::RefreshUrl, &targets).await;
    }
    // This test is about sends and their audit rows: without confirmation, so each job's call
    // history holds only the refresh that carried it (tests/confirm.rs covers the queries).
    let mut config = fast_config();
    config.confirm.enabled = false;
    drain_once(&store, &emu, config).await;

    let stats = emu.stats().qiniu;
    assert_eq!(
        stats.issued.len(),
        5,
        "250 distinct targets at 60 per request"
    );
    assert!(
        stats.purged.values().all(|n| *n == 1),
        "each target purged once"
    );
    assert_eq!(stats.purged.len(), 250);
    let request_of: HashMap<&str, &str> = stats
        .issued
        .iter()
        .flat_map(|r| {
            r.urls
                .iter()
                .map(move |u| (u.as_str(), r.request_id.as_str()))
        })
        .collect();
    let jobs = all_jobs(&store).await;
    assert_eq!(jobs.len(), 750);
    for job in &jobs {
        assert_eq!(job.state, JobState::Succeeded, "{job:?}");
        assert_eq!(job.attempts, 1);
        let target = job.target.as_deref().unwrap();
        assert_eq!(
            job.request_id.as_deref(),
            request_of.get(target).copied(),
            "{job:?}"
        );
    }
    // The audit trail: each job points at the call that carried it, with both ids.
    let calls = store.job_calls(jobs[0].id).await.unwrap();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].request_id, jobs[0].request_id);
    assert!(calls[0].trace_id.is_some(), "X-Reqid kept");
    assert_eq!(calls[0].outcome.as_deref(), Some("accepted"));
    assert_eq!(calls[0].http_status, Some(200));
}

#[tokio::test]
async fn a_target_with_more_duplicates_than_a_claim_reads_still_leaves_room_for_others() {
    // 700 copies of one URL come first: more than one claim statement reads (512 rows), so the
    // claim repeats for the other 59 targets and the first request is full.
    let scratch = common::Scratch::new();
    let store = scratch.store().await;
    let emu = emulator(emulator_config()).await;
    let hot = urls("hot.example.com", 1);
    for _ in 0..7 {
        enqueue(&store, Action::RefreshUrl, &vec![hot[0].clone(); 100]).await;
    }
    let rest = urls("cdn.example.com", 100);
    enqueue(&store, Action::RefreshUrl, &rest).await;
    let mut config = fast_config();
    config.confirm.enabled = false;
    drain_once(&store, &emu, config).await;

    let stats = emu.stats().qiniu;
    let sizes: Vec<usize> = stats.issued.iter().map(|r| r.urls.len()).collect();
    assert_eq!(
        sizes,
        [60, 41],
        "101 distinct targets in the fewest requests"
    );
    assert!(
        stats.issued[0].urls.contains(&hot[0]),
        "the oldest target goes first"
    );
    assert!(stats.purged.values().all(|n| *n == 1), "each target once");
    let jobs = all_jobs(&store).await;
    assert_eq!(jobs.len(), 800);
    let first = Some(stats.issued[0].request_id.as_str());
    for job in jobs
        .iter()
        .filter(|j| j.target.as_deref() == Some(&*hot[0]))
    {
        assert_eq!(job.state, JobState::Succeeded, "{job:?}");
        assert_eq!(job.request_id.as_deref(), first, "{job:?}");
    }
}

#[tokio::test]
async fn invalid_hosts_fail_alone_and_the_rest_succeed() {
    let scratch = common::Scratch::new();
    let store = scratch.store().await;
    let mut config = emulator_config();
    config.qiniu.domains = vec!["cdn.example.com".to_owned()];
    let emu = emulator(config).await;
    let mut targets = urls("cdn.example.com", 20);
    targets.extend(urls("elsewhere.example.org", 3));
    enqueue(&store, Action::RefreshUrl, &targets).await;
    drain_once(&store, &emu, fast_config()).await;

    for job in all_jobs(&store).await {
        let target = job.target.clone().unwrap();
        if target.contains("elsewhere") {
            assert_eq!(job.state, JobState::Failed, "{job:?}");
            assert_eq!(job.provider_code, Some(400032));
            assert!(
                job.last_error.as_deref().unwrap_or("").contains("400032"),
                "{job:?}"
            );
        } else {
            assert_eq!(job.state, JobState::Succeeded, "{job:?}");
            assert!(job.request_id.is_some());
        }
    }
    let stats = emu.stats().qiniu;
    assert!(stats.purged.keys().all(|t| !t.contains("elsewhere")));
    assert_eq!(stats.purged.len(), 20);
}

#[tokio::test]
async fn a_quota_that_runs_out_pauses_the_lane_without_spending_attempts_then_drains() {
    let scratch = common::Scratch::new();
    let store = scratch.store().await;
    let mut config = emulator_config();
    config.qiniu.quotas.url_refresh = 100;
    let emu = emulator(config).await;
    let targets = urls("cdn.example.com", 250);
    enqueue(&store, Action::RefreshUrl, &targets[..60]).await;
    drain_once(&store, &emu, fast_config()).await;
    // Another client of the account spends the 40 units the worker knows are left, so its
    // next request (40, never more than it knows is left) is refused whole all the same.
    let other = QiniuClient::new(
        reqwest::Client::new(),
        emu.url(),
        Credentials {
            access_key: AK.to_owned(),
            secret_key: Secret::new(SK),
        },
    );
    let theirs = urls("other.example.com", 40);
    assert_eq!(other.refresh(&theirs, &[]).await.code, Some(200));
    enqueue(&store, Action::RefreshUrl, &targets[60..]).await;
    drain_once(&store, &emu, fast_config()).await;

    assert_eq!(count_state(&store, JobState::Succeeded).await, 60);
    let queued: Vec<Job> = all_jobs(&store)
        .await
        .into_iter()
        .filter(|j| j.state == JobState::Queued)
        .collect();
    assert_eq!(queued.len(), 190);
    assert!(
        queued.iter().all(|j| j.attempts == 0),
        "no attempt spent on quota"
    );
    let gate = store
        .gate(&Lane::new(Provider::Qiniu, Action::RefreshUrl))
        .await
        .unwrap()
        .unwrap();
    assert!(gate.paused_until.unwrap() > purgeq::clock::now_ms() - 1000);
    assert!(
        gate.reason.as_deref().unwrap().contains("400034"),
        "{gate:?}"
    );
    assert_eq!(gate.strikes, 1);

    // Each day brings 100 more: quota days of 300 ms, the emulator refilled all the while.
    let accounts: Vec<Arc<dyn Account>> = providers(&emu)
        .into_iter()
        .map(|inner| {
            Arc::new(ShortDays {
                inner,
                day: Duration::from_millis(300),
            }) as Arc<dyn Account>
        })
        .collect();
    run_until_with(&store, accounts, fast_config(), || async {
        emu.reset_quota();
        count_state(&store, JobState::Succeeded).await == 250
    })
    .await;
    let gate = store
        .gate(&Lane::new(Provider::Qiniu, Action::RefreshUrl))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (gate.paused_until, gate.strikes),
        (None, 0),
        "lane open again"
    );
    assert!(all_jobs(&store).await.iter().all(|j| j.attempts == 1));
    assert_eq!(gate.quota_day, Some(100), "quota fields kept per lane");
    assert!(gate.surplus_day.is_some_and(|s| s < 100));
    let stats = emu.stats().qiniu;
    let sent: u64 = stats
        .purged
        .iter()
        .filter(|(t, _)| t.contains("cdn.example.com"))
        .map(|(_, n)| n)
        .sum();
    assert_eq!(sent, 250, "no target purged twice");
}

#[tokio::test]
async fn a_provider_that_fails_twice_then_succeeds_leaves_attempts_three() {
    let scratch = common::Scratch::new();
    let store = scratch.store().await;
    let emu = emulator(emulator_config()).await;
    emu.set_faults(FaultPlan {
        fail_next: Some(ScriptedFaults {
            count: 2,
            kind: FaultKind::Http503,
        }),
        ..FaultPlan::default()
    })
    .unwrap();
    enqueue(&store, Action::RefreshUrl, &urls("cdn.example.com", 10)).await;
    // About retried sends: without confirmation, so the call history counts only the sends.
    let mut config = fast_config();
    config.confirm.enabled = false;
    run_until(&store, &emu, config, || async {
        count_state(&store, JobState::Succeeded).await == 10
    })
    .await;
    for job in all_jobs(&store).await {
        assert_eq!(
            (job.state, job.attempts),
            (JobState::Succeeded, 3),
            "{job:?}"
        );
        assert_eq!(store.job_calls(job.id).await.unwrap().len(), 3);
    }
}

#[tokio::test]
async fn a_provider_that_always_fails_leaves_jobs_failed_with_the_last_error() {
    let scratch = common::Scratch::new();
    let store = scratch.store().await;
    let emu = emulator(emulator_config()).await;
    emu.set_faults(FaultPlan {
        random: Some(RandomFaults {
            rate: 1.0,
            seed: 7,
            kinds: vec![FaultKind::Garbage],
        }),
        ..FaultPlan::default()
    })
    .unwrap();
    enqueue(&store, Action::RefreshUrl, &urls("cdn.example.com", 5)).await;
    let mut config = fast_config();
    config.policies.max_attempts = 3;
    run_until(&store, &emu, config, || async {
        count_state(&store, JobState::Failed).await == 5
    })
    .await;
    for job in all_jobs(&store).await {
        assert_eq!(job.attempts, 3);
        let err = job.last_error.unwrap_or_default();
        assert!(
            err.contains("gave up after 3 attempts") && err.contains("unparseable"),
            "{err}"
        );
    }
    let stats = emu.stats();
    assert_eq!(
        stats.faults.get("garbage"),
        Some(&3),
        "jobs that fail together retry together"
    );
}

#[tokio::test]
async fn rate_limits_pause_the_lane_then_drain_without_spending_attempts() {
    let scratch = common::Scratch::new();
    let store = scratch.store().await;
    let emu = emulator(emulator_config()).await;
    emu.set_faults(FaultPlan {
        fail_next: Some(ScriptedFaults {
            count: 2,
            kind: FaultKind::Qps,
        }),
        ..FaultPlan::default()
    })
    .unwrap();
    enqueue(&store, Action::RefreshUrl, &urls("cdn.example.com", 10)).await;
    run_until(&store, &emu, fast_config(), || async {
        count_state(&store, JobState::Succeeded).await == 10
    })
    .await;
    assert!(all_jobs(&store).await.iter().all(|j| j.attempts == 1));
}

#[tokio::test]
async fn refused_credentials_pause_the_lane_and_keep_jobs_queued() {
    let scratch = common::Scratch::new();
    let store = scratch.store().await;
    let mut config = emulator_config();
    config.qiniu.secret_key = purgeq::secret::Secret::new("another-secret");
    let emu = emulator(config).await;
    enqueue(&store, Action::RefreshUrl, &urls("cdn.example.com", 3)).await;
    drain_once(&store, &emu, fast_config()).await;
    let jobs = all_jobs(&store).await;
    assert!(
        jobs.iter()
            .all(|j| j.state == JobState::Queued && j.attempts == 0),
        "{jobs:?}"
    );
    let gate = store
        .gate(&Lane::new(Provider::Qiniu, Action::RefreshUrl))
        .await
        .unwrap()
        .unwrap();
    assert!(
        gate.reason
            .as_deref()
            .unwrap()
            .contains("credentials refused"),
        "{gate:?}"
    );
    assert!(!gate.reason.unwrap().contains(common::worker::SK));
}

#[tokio::test]
async fn urls_and_dirs_share_one_refresh_request_and_prefetch_has_its_own() {
    let scratch = common::Scratch::new();
    let store = scratch.store().await;
    let emu = emulator(emulator_config()).await;
    enqueue(&store, Action::RefreshUrl, &urls("cdn.example.com", 3)).await;
    enqueue(
        &store,
        Action::RefreshDir,
        &["https://cdn.example.com/assets/".to_owned()],
    )
    .await;
    enqueue(&store, Action::PrefetchUrl, &urls("cdn.example.com", 2)).await;
    drain_once(&store, &emu, fast_config()).await;
    let stats = emu.stats().qiniu;
    let mut ops: Vec<(String, usize, usize)> = stats
        .issued
        .iter()
        .map(|r| (r.operation.clone(), r.urls.len(), r.dirs.len()))
        .collect();
    ops.sort();
    assert_eq!(
        ops,
        vec![("prefetch".to_owned(), 2, 0), ("refresh".to_owned(), 3, 1)]
    );
    assert_eq!(count_state(&store, JobState::Succeeded).await, 6);
}

#[tokio::test]
async fn shutdown_while_waiting_to_send_returns_claimed_jobs_untouched() {
    let scratch = common::Scratch::new();
    let store = scratch.store().await;
    let emu = emulator(emulator_config()).await;
    enqueue(&store, Action::RefreshUrl, &urls("cdn.example.com", 60)).await;
    // A burst of 20 targets per second: a 60-target request must wait two seconds to go out.
    let qiniu = purgeq::provider::qiniu::QiniuSettings {
        targets_per_sec: 20.0,
        ..common::worker::unpaced_qiniu()
    };
    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(purgeq::worker::run(
        store.clone(),
        common::worker::providers_with(&emu, qiniu),
        fast_config(),
        purgeq::worker::Handles::from_env(),
        shutdown.clone(),
    ));
    while count_state(&store, JobState::Running).await < 60 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    shutdown.cancel();
    task.await.unwrap().unwrap();
    let jobs = all_jobs(&store).await;
    assert!(
        jobs.iter()
            .all(|j| j.state == JobState::Queued && j.attempts == 0 && j.lease_owner.is_none())
    );
    assert!(emu.stats().qiniu.issued.is_empty(), "nothing was sent");
}

/// Holds SQLite's write lock on `db` for `duration` through a connection of its own.
async fn hold_write_lock(db: &std::path::Path, duration: Duration) {
    use sqlx::{ConnectOptions as _, Connection as _};
    let mut holder = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(db)
        .busy_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("a second connection");
    sqlx::raw_sql("BEGIN IMMEDIATE; UPDATE lanes SET strikes = strikes;")
        .execute(&mut holder)
        .await
        .expect("take the write lock");
    tokio::time::sleep(duration).await;
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut holder)
        .await
        .expect("release the lock");
    holder.close().await.expect("close");
}

/// A worker config with `lease`, `busy` and a 1 s request timeout, and `fast_config`'s polls
/// and backoffs; no confirmation.
fn config_with_lease(lease: Duration, busy: Duration) -> purgeq::worker::WorkerConfig {
    use purgeq::worker::{Timeouts, WorkerConfig, worker_id};
    let timeouts = Timeouts {
        request: Duration::from_secs(1),
        busy,
    };
    let mut config = WorkerConfig::new(worker_id(), lease, timeouts).expect("a valid lease");
    let fast = fast_config();
    config.poll_interval = fast.poll_interval;
    config.policies = fast.policies;
    config.confirm.enabled = false;
    config
}

/// A database locked from before a call's answer until past its lease: the worker keeps
/// trying to record the call, and completes its audit row once the lock is gone (with the
/// jobs' outcome, unless the reaper requeued them first), so only a killed worker leaves a
/// call unrecorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_locked_out_past_its_lease_still_completes_the_calls_audit_row() {
    use purgeq::store::{Durability, Location, OpenOptions};

    if common::skip_on_postgres("SQLite's write lock, held by a second connection") {
        return;
    }
    let scratch = common::Scratch::new();
    let mut options = OpenOptions::new(Durability::Normal);
    options.busy_timeout = Duration::from_millis(200);
    let store = Store::connect(&Location::Sqlite(scratch.db()), &options)
        .await
        .expect("store opens");
    let emu = emulator(emulator_config()).await;
    emu.set_faults(FaultPlan {
        fail_next: Some(ScriptedFaults {
            count: 1,
            kind: FaultKind::Slow,
        }),
        slow_delay_ms: 1_000,
        ..FaultPlan::default()
    })
    .unwrap();
    enqueue(&store, Action::RefreshUrl, &urls("cdn.example.com", 3)).await;
    let lease = Duration::from_secs(2);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let worker = tokio::spawn(purgeq::worker::run(
        store.clone(),
        providers(&emu),
        config_with_lease(lease, options.busy_timeout),
        purgeq::worker::Handles::from_env(),
        shutdown.clone(),
    ));
    common::wait_for("the slow call to arrive", Duration::from_secs(10), || {
        emu.stats().faults.get("slow").copied() == Some(1)
    })
    .await;
    // The answer comes a second later; the lock is held until past the lease, then released.
    hold_write_lock(
        &scratch.db(),
        Duration::from_secs(1) + lease + Duration::from_millis(500),
    )
    .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while count_state(&store, JobState::Succeeded).await < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "the jobs never succeeded"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shutdown.cancel();
    worker.await.expect("worker task").expect("worker ok");
    let job = &all_jobs(&store).await[0];
    let calls = store.job_calls(job.id).await.expect("calls");
    // N.B. Sent again only when the reaper requeued the jobs before the record landed.
    assert!((1..=2).contains(&calls.len()), "{calls:?}");
    let first = calls.iter().min_by_key(|c| c.id).expect("a call");
    assert!(first.finished_at.is_some(), "{first:?}");
    assert_eq!(first.outcome.as_deref(), Some("accepted"), "{first:?}");
}

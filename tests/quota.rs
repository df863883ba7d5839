//! Spending every quota unit on the purge that matters most (issue 14), against the emulator:
//! batches capped by the known surplus, priorities, the forecast, directory escalation and
//! 123pan coalescing.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::worker::{
    emulator, emulator_config, enqueue, fast_config, providers_with, unpaced_qiniu, urls,
};
use purgeq::emulator::Emulator;
use purgeq::emulator::qiniu::DayUsage;
use purgeq::model::{Action, DEFAULT_ACCOUNT, JobState, Priority, Provider};
use purgeq::provider::Account;
use purgeq::provider::qiniu::QiniuSettings;
use purgeq::store::{Job, JobFilter, NewJobs, Store};
use purgeq::worker::{Handles, WorkerConfig};
use tokio_util::sync::CancellationToken;

async fn all_jobs(store: &Store) -> Vec<Job> {
    store
        .list_jobs(&JobFilter {
            limit: 1_000_000,
            ..JobFilter::default()
        })
        .await
        .unwrap()
}

fn in_state(jobs: &[Job], state: JobState) -> Vec<&Job> {
    jobs.iter().filter(|j| j.state == state).collect()
}

/// The Qiniu side's usage, summed over the days the test saw.
fn usage(emu: &Emulator) -> DayUsage {
    emu.stats()
        .qiniu
        .days
        .values()
        .fold(DayUsage::default(), |sum, d| DayUsage {
            url_refresh: sum.url_refresh + d.url_refresh,
            dir_refresh: sum.dir_refresh + d.dir_refresh,
            prefetch: sum.prefetch + d.prefetch,
            quota_refused: sum.quota_refused + d.quota_refused,
        })
}

/// Runs the worker over `accounts` with `once`, to completion.
async fn drain_with(store: &Store, accounts: Vec<Arc<dyn Account>>) {
    let mut config = fast_config();
    config.once = true;
    run(store, accounts, config, CancellationToken::new()).await;
}

async fn run(
    store: &Store,
    accounts: Vec<Arc<dyn Account>>,
    config: WorkerConfig,
    stop: CancellationToken,
) {
    purgeq::worker::run(store.clone(), accounts, config, Handles::from_env(), stop)
        .await
        .expect("worker runs");
}

fn qiniu_with_quota(url_refresh: u64) -> purgeq::emulator::EmulatorConfig {
    let mut config = emulator_config();
    config.qiniu.quotas.url_refresh = url_refresh;
    config
}

async fn enqueue_at(store: &Store, priority: Priority, targets: &[String]) -> Vec<i64> {
    let now = purgeq::clock::now_ms();
    let jobs = NewJobs {
        provider: Provider::Qiniu,
        account: DEFAULT_ACCOUNT.to_owned(),
        action: Action::RefreshUrl,
        tag: None,
        not_before: now,
        priority,
        targets: targets.iter().cloned().map(Some).collect(),
    };
    store.enqueue(&jobs, now).await.unwrap()
}

#[tokio::test]
async fn a_day_never_asks_for_more_than_is_left_and_the_rest_waits_for_the_reset() {
    let scratch = common::Scratch::new();
    let store = scratch.store().await;
    let emu = emulator(qiniu_with_quota(500)).await;
    enqueue(&store, Action::RefreshUrl, &urls("cdn.example.com", 580)).await;
    drain_with(&store, providers_with(&emu, unpaced_qiniu())).await;

    let stats = emu.stats().qiniu;
    let sizes: Vec<usize> = stats.issued.iter().map(|r| r.urls.len()).collect();
    assert_eq!(sizes, [60, 60, 60, 60, 60, 60, 60, 60, 20]);
    assert_eq!(stats.requests["refresh"], 9, "no refused request is sent");
    let used = usage(&emu);
    assert_eq!((used.url_refresh, used.quota_refused), (500, 0));

    let jobs = all_jobs(&store).await;
    assert_eq!(in_state(&jobs, JobState::Succeeded).len(), 500);
    let waiting = in_state(&jobs, JobState::Queued);
    assert_eq!(waiting.len(), 80);
    assert!(waiting.iter().all(|j| j.attempts == 0), "no attempt spent");

    // Nothing more is sent today, and `status` says why and until when.
    drain_with(&store, providers_with(&emu, unpaced_qiniu())).await;
    assert_eq!(emu.stats().qiniu.requests["refresh"], 9);
    let text = common::stdout(&scratch.cmd(&["status"]).output().unwrap());
    let lane = text
        .lines()
        .find(|l| l.starts_with("qiniu/default/refresh_url"))
        .unwrap_or_default();
    assert!(
        lane.contains("waiting until") && lane.contains("16:00:00"),
        "{text}"
    );
    assert!(lane.contains("daily quota used up"), "{text}");
    assert!(
        text.contains("80 targets wait until 16:00 UTC (China midnight)"),
        "{text}"
    );
}

#[tokio::test]
async fn urgent_jobs_ride_the_first_request_and_a_duplicate_goes_once_at_its_highest() {
    let scratch = common::Scratch::new();
    let store = scratch.store().await;
    let emu = emulator(qiniu_with_quota(2_000)).await;
    let routine = urls("cdn.example.com", 1_000);
    enqueue_at(&store, Priority::Normal, &routine).await;
    let mut urgent = urls("urgent.example.com", 9);
    // Also queued, far behind, at normal priority.
    urgent.push(routine[900].clone());
    enqueue_at(&store, Priority::Urgent, &urgent).await;
    drain_with(&store, providers_with(&emu, unpaced_qiniu())).await;

    let stats = emu.stats().qiniu;
    let first = &stats.issued[0].urls;
    assert!(urgent.iter().all(|u| first.contains(u)), "{first:?}");
    assert!(stats.purged.values().all(|n| *n == 1), "each target once");
    assert_eq!(stats.purged.len(), 1_009);
}

#[test]
fn an_operator_changes_the_priority_of_queued_jobs_only() {
    let s = common::Scratch::new();
    let added = s.json(&[
        "enqueue",
        "https://a.example.com/1",
        "https://a.example.com/2",
    ]);
    let ids: Vec<String> = added["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.to_string())
        .collect();
    let out = s.json(&["prioritize", "--priority", "urgent", &ids[1]]);
    assert_eq!(out["changed"], 1);
    let jobs = s.jobs(&[]);
    let priorities: Vec<&str> = jobs
        .iter()
        .map(|j| j["priority"].as_str().unwrap())
        .collect();
    assert_eq!(priorities, ["normal", "urgent"]);

    let refused = s
        .cmd(&["prioritize", "--priority", "low", &ids[0], "999"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(4));
    assert!(common::stderr(&refused).contains("cannot prioritize job 999: no such job"));
    assert_eq!(s.jobs(&[])[0]["priority"], "normal", "nothing changed");
}

#[tokio::test]
async fn the_forecast_matches_a_hand_computation() {
    let scratch = common::Scratch::new();
    let store = scratch.store().await;
    let emu = emulator(qiniu_with_quota(100)).await;
    enqueue(&store, Action::RefreshUrl, &urls("a.example.com", 70)).await;
    drain_with(&store, providers_with(&emu, unpaced_qiniu())).await;
    // 100 a day, 70 used: 30 left. 50 distinct targets queued (55 jobs): 30 fit, 20 wait.
    let more = urls("b.example.com", 50);
    enqueue(&store, Action::RefreshUrl, &more).await;
    enqueue(&store, Action::RefreshUrl, &more[..5]).await;

    let status = scratch.status(&[]);
    let forecast = status["forecast"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["action"] == "refresh_url")
        .cloned()
        .unwrap();
    assert_eq!(forecast["used_today"], 70);
    assert_eq!(forecast["left"], 30);
    assert_eq!(forecast["queued_targets"], 50);
    assert_eq!(forecast["waiting"], 20);
    assert_eq!(forecast["fits"], false);
    assert_eq!(
        forecast["message"],
        "20 targets wait until 16:00 UTC (China midnight)"
    );
    let text = common::stdout(&scratch.cmd(&["status"]).output().unwrap());
    assert!(text.contains("Quota forecast:"), "{text}");
    assert!(
        text.contains("fits before the reset"),
        "the dir lane: {text}"
    );
}

/// One URL outside the directory, sent first so the worker has today's readings; then 200
/// URLs under one directory with 99 URL units left.
async fn two_hundred_under_one_dir(escalate_dir_after: Option<u32>) -> (Emulator, Vec<Job>) {
    let scratch = common::Scratch::new();
    let store = scratch.store().await;
    let emu = emulator(qiniu_with_quota(100)).await;
    let settings = QiniuSettings {
        escalate_dir_after,
        ..unpaced_qiniu()
    };
    enqueue(
        &store,
        Action::RefreshUrl,
        &["https://cdn.example.com/other/x.js".to_owned()],
    )
    .await;
    drain_with(&store, providers_with(&emu, settings.clone())).await;
    let under: Vec<String> = (0..200)
        .map(|i| format!("https://cdn.example.com/d/{i}.js"))
        .collect();
    enqueue(&store, Action::RefreshUrl, &under).await;
    drain_with(&store, providers_with(&emu, settings)).await;
    (emu, all_jobs(&store).await)
}

#[tokio::test]
async fn escalation_serves_200_urls_with_one_directory_refresh_when_configured() {
    let (emu, jobs) = two_hundred_under_one_dir(Some(50)).await;
    let stats = emu.stats().qiniu;
    let dirs: Vec<&Vec<String>> = stats.issued.iter().map(|r| &r.dirs).collect();
    assert_eq!(stats.issued.len(), 2, "the warm-up, then one refresh");
    assert_eq!(dirs[1], &["https://cdn.example.com/d/"]);
    assert!(stats.issued[1].urls.is_empty());
    let used = usage(&emu);
    assert_eq!(
        (used.url_refresh, used.dir_refresh, used.quota_refused),
        (1, 1, 0)
    );
    let served: Vec<&Job> = jobs
        .iter()
        .filter(|j| j.served_by_dir.as_deref() == Some("https://cdn.example.com/d/"))
        .collect();
    assert_eq!(served.len(), 200);
    assert!(served.iter().all(|j| j.state == JobState::Succeeded
        && j.request_id.as_deref() == stats.issued[1].request_id.as_str().into()));
}

#[tokio::test]
async fn escalation_never_happens_when_not_configured() {
    let (emu, jobs) = two_hundred_under_one_dir(None).await;
    let stats = emu.stats().qiniu;
    assert!(stats.issued.iter().all(|r| r.dirs.is_empty()));
    let used = usage(&emu);
    assert_eq!(
        (used.url_refresh, used.dir_refresh, used.quota_refused),
        (100, 0, 0)
    );
    assert_eq!(in_state(&jobs, JobState::Queued).len(), 101);
    assert!(jobs.iter().all(|j| j.served_by_dir.is_none()));
}

#[tokio::test]
async fn fifty_123pan_jobs_enqueued_over_two_seconds_cost_one_refresh() {
    let scratch = common::Scratch::new();
    let store = scratch.store().await;
    let emu = emulator(emulator_config()).await;
    let mut accounts = providers_with(&emu, unpaced_qiniu());
    accounts.pop();
    // The default window: 3 s of quiet, at most 30 s.
    let window = purgeq::provider::pan123::Pan123Settings::default().coalesce;
    accounts.push(common::worker::pan123_account(&emu, window));
    let stop = CancellationToken::new();
    let worker = {
        let (store, stop) = (store.clone(), stop.clone());
        tokio::spawn(async move { run(&store, accounts, fast_config(), stop).await })
    };
    let uploads = urls("pan.example.com", 50);
    for burst in uploads.chunks(5) {
        enqueue(&store, Action::RefreshAll, burst).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while in_state(&all_jobs(&store).await, JobState::Succeeded).len() < 50 {
        assert!(tokio::time::Instant::now() < deadline, "jobs not served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    worker.await.unwrap();
    assert_eq!(emu.stats().pan123.refresh_calls, 1);
}

/// The worker sleeps until its lane's next due job: the earliest over every priority (one
/// index seek per priority), not the urgent one's.
#[tokio::test]
async fn a_lanes_next_due_time_is_the_earliest_over_every_priority() {
    let scratch = common::Scratch::new();
    let store = scratch.store().await;
    let lane = purgeq::model::Lane::new(Provider::Qiniu, Action::RefreshUrl);
    assert_eq!(store.next_due(&lane).await.unwrap(), None, "nothing queued");
    let now = purgeq::clock::now_ms();
    for (priority, later) in [
        (Priority::Urgent, 30_000),
        (Priority::Low, 10_000),
        (Priority::Normal, 20_000),
    ] {
        let jobs = NewJobs {
            provider: Provider::Qiniu,
            account: DEFAULT_ACCOUNT.to_owned(),
            action: Action::RefreshUrl,
            tag: None,
            not_before: now + later,
            priority,
            targets: vec![Some(format!("https://cdn.example.com/in-{later}"))],
        };
        store.enqueue(&jobs, now).await.unwrap();
    }
    assert_eq!(store.next_due(&lane).await.unwrap(), Some(now + 10_000));
    let other = purgeq::model::Lane::new(Provider::Qiniu, Action::RefreshDir);
    assert_eq!(store.next_due(&other).await.unwrap(), None, "another lane");
}

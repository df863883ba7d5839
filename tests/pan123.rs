//! The 123pan lane against the emulator: one call for the whole account, the token lifecycle,
//! throttling, refused credentials, and independence from the Qiniu lanes.

mod common;

use common::worker::{
    CLIENT_SECRET, drain_once, emulator, emulator_config, enqueue, fast_config, run_until, urls,
};
use purgeq::emulator::{FaultKind, FaultPlan, ScriptedFaults};
use purgeq::model::{Action, JobState, Lane, Provider};
use purgeq::store::{Job, JobFilter, Store};

async fn jobs(store: &Store, provider: Provider) -> Vec<Job> {
    store
        .list_jobs(&JobFilter {
            provider: Some(provider),
            limit: 1_000_000,
            ..JobFilter::default()
        })
        .await
        .unwrap()
}

async fn succeeded(store: &Store, provider: Provider) -> usize {
    jobs(store, provider)
        .await
        .iter()
        .filter(|j| j.state == JobState::Succeeded)
        .count()
}

fn scripted(kind: FaultKind, count: u32) -> FaultPlan {
    FaultPlan {
        fail_next: Some(ScriptedFaults { count, kind }),
        ..FaultPlan::default()
    }
}

#[tokio::test]
async fn five_hundred_jobs_are_served_by_one_call_and_carry_its_trace_id() {
    let scratch = common::Scratch::new();
    let store = scratch.store().await;
    let emu = emulator(emulator_config()).await;
    enqueue(&store, Action::RefreshAll, &urls("pan.example.com", 499)).await;
    store
        .enqueue(
            &purgeq::store::NewJobs {
                provider: Provider::Pan123,
                account: "default".into(),
                action: Action::RefreshAll,
                tag: None,
                not_before: 0,
                priority: purgeq::model::Priority::Normal,
                targets: vec![None],
            },
            purgeq::clock::now_ms(),
        )
        .await
        .unwrap();
    drain_once(&store, &emu, fast_config()).await;
    let stats = emu.stats().pan123;
    assert_eq!(
        (stats.refresh_calls, stats.refreshes, stats.token_requests),
        (1, 1, 1)
    );
    let all = jobs(&store, Provider::Pan123).await;
    assert_eq!(all.len(), 500);
    for job in &all {
        assert_eq!(job.state, JobState::Succeeded);
        assert_eq!(job.request_id.as_deref(), Some(stats.issued[0].as_str()));
    }
    let calls = store.job_calls(all[0].id).await.unwrap();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].operation, "refresh_all");
    assert_eq!(calls[0].target_count, 1, "one account-wide target");
}

#[tokio::test]
async fn the_cached_token_is_reused_and_renewed_only_when_it_expires() {
    let scratch = common::Scratch::new();
    let store = scratch.store().await;
    let mut config = emulator_config();
    config.pan123.token_ttl = std::time::Duration::from_secs(2);
    let emu = emulator(config).await;
    for _ in 0..3 {
        enqueue(&store, Action::RefreshAll, &urls("pan.example.com", 1)).await;
        drain_once(&store, &emu, fast_config()).await;
    }
    let stats = emu.stats().pan123;
    assert_eq!(stats.refreshes, 3);
    assert_eq!(
        stats.token_requests, 1,
        "no second token request while the cached one is valid"
    );

    let cached = store
        .token(Provider::Pan123, "default")
        .await
        .unwrap()
        .unwrap();
    while purgeq::clock::now_ms() < cached.expires_at {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    enqueue(&store, Action::RefreshAll, &urls("pan.example.com", 1)).await;
    drain_once(&store, &emu, fast_config()).await;
    let stats = emu.stats().pan123;
    assert_eq!(
        (stats.token_requests, stats.refreshes, stats.rejected_tokens),
        (2, 4, 0),
        "renewed once, before use"
    );
    assert_eq!(succeeded(&store, Provider::Pan123).await, 4);
}

#[tokio::test]
async fn a_401_on_refresh_renews_once_and_retries_once() {
    let scratch = common::Scratch::new();
    let store = scratch.store().await;
    let emu = emulator(emulator_config()).await;
    enqueue(&store, Action::RefreshAll, &urls("pan.example.com", 3)).await;
    drain_once(&store, &emu, fast_config()).await;
    emu.expire_tokens();
    enqueue(&store, Action::RefreshAll, &urls("pan.example.com", 3)).await;
    drain_once(&store, &emu, fast_config()).await;
    let stats = emu.stats().pan123;
    assert_eq!(stats.token_requests, 2, "one renewal");
    assert_eq!(stats.refresh_calls, 3, "the refused call and one retry");
    assert_eq!(stats.rejected_tokens, 1);
    let all = jobs(&store, Provider::Pan123).await;
    assert!(
        all.iter()
            .all(|j| j.state == JobState::Succeeded && j.attempts == 1)
    );
    let retried = all
        .iter()
        .find(|j| j.created_at == all.iter().map(|j| j.created_at).max().unwrap())
        .unwrap();
    assert_eq!(
        retried.request_id.as_deref(),
        stats.issued.last().map(String::as_str)
    );
    let calls = store.job_calls(retried.id).await.unwrap();
    let outcomes: Vec<&str> = calls.iter().filter_map(|c| c.outcome.as_deref()).collect();
    assert_eq!(outcomes, ["auth", "accepted"]);
}

#[tokio::test]
async fn throttling_pauses_the_lane_then_drains_without_spending_attempts() {
    let scratch = common::Scratch::new();
    let store = scratch.store().await;
    let emu = emulator(emulator_config()).await;
    emu.set_faults(scripted(FaultKind::Qps, 2)).unwrap();
    enqueue(&store, Action::RefreshAll, &urls("pan.example.com", 5)).await;
    drain_once(&store, &emu, fast_config()).await;
    let gate = store
        .gate(&Lane::new(Provider::Pan123, Action::RefreshAll))
        .await
        .unwrap()
        .unwrap();
    assert!(
        gate.reason
            .as_deref()
            .unwrap_or("")
            .contains("rate limited"),
        "{gate:?}"
    );
    assert!(
        jobs(&store, Provider::Pan123)
            .await
            .iter()
            .all(|j| j.state == JobState::Queued && j.attempts == 0)
    );
    run_until(&store, &emu, fast_config(), || async {
        succeeded(&store, Provider::Pan123).await == 5
    })
    .await;
    assert!(
        jobs(&store, Provider::Pan123)
            .await
            .iter()
            .all(|j| j.attempts == 1)
    );
    assert_eq!(emu.stats().pan123.refreshes, 1);
}

#[tokio::test]
async fn a_wrong_secret_keeps_jobs_queued_and_pauses_the_lane_with_the_reason() {
    let scratch = common::Scratch::new();
    let store = scratch.store().await;
    let mut config = emulator_config();
    config.pan123.client_secret = purgeq::secret::Secret::new("the-real-secret");
    let emu = emulator(config).await;
    enqueue(&store, Action::RefreshAll, &urls("pan.example.com", 2)).await;
    drain_once(&store, &emu, fast_config()).await;
    assert!(
        jobs(&store, Provider::Pan123)
            .await
            .iter()
            .all(|j| j.state == JobState::Queued && j.attempts == 0)
    );
    let gate = store
        .gate(&Lane::new(Provider::Pan123, Action::RefreshAll))
        .await
        .unwrap()
        .unwrap();
    let reason = gate.reason.unwrap_or_default();
    assert!(
        reason.contains("no access token") && reason.contains("invalid client credentials"),
        "{reason}"
    );
    assert!(!reason.contains(CLIENT_SECRET));
    assert!(gate.paused_until.unwrap() > purgeq::clock::now_ms());
    assert_eq!(emu.stats().pan123.refresh_calls, 0);
}

#[tokio::test]
async fn a_paused_qiniu_lane_does_not_delay_123pan_and_the_reverse() {
    let scratch = common::Scratch::new();
    let store = scratch.store().await;
    let mut config = emulator_config();
    config.qiniu.quotas.url_refresh = 0;
    let emu = emulator(config).await;
    enqueue(&store, Action::RefreshUrl, &urls("cdn.example.com", 3)).await;
    enqueue(&store, Action::RefreshAll, &urls("pan.example.com", 3)).await;
    drain_once(&store, &emu, fast_config()).await;
    assert_eq!(succeeded(&store, Provider::Pan123).await, 3);
    assert_eq!(succeeded(&store, Provider::Qiniu).await, 0);
    assert!(
        store
            .gate(&Lane::new(Provider::Qiniu, Action::RefreshUrl))
            .await
            .unwrap()
            .unwrap()
            .paused_until
            .is_some()
    );

    // The reverse: 123pan refuses its token, Qiniu (now with quota) drains.
    let scratch = common::Scratch::new();
    let store = scratch.store().await;
    let mut config = emulator_config();
    config.pan123.client_secret = purgeq::secret::Secret::new("other");
    let emu = emulator(config).await;
    enqueue(&store, Action::RefreshUrl, &urls("cdn.example.com", 3)).await;
    enqueue(&store, Action::RefreshAll, &urls("pan.example.com", 3)).await;
    drain_once(&store, &emu, fast_config()).await;
    assert_eq!(succeeded(&store, Provider::Qiniu).await, 3);
    assert_eq!(succeeded(&store, Provider::Pan123).await, 0);
}

//! Confirmation at the CDN, against the Qiniu emulator's task lists over loopback: jobs end
//! `succeeded` only once the CDN's tasks are done; failures are sent again; a task that never
//! completes, or an unknown request, ends `unconfirmed`; 400037 is confirmed by URL; bad list
//! answers lose nothing; kills and restarts lose nothing; `enqueue --wait` and `wait` exit codes.

mod common;

use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::worker::{
    drain_once, emulator, emulator_config, enqueue, fast_config, run_until, urls,
};
use common::{Scratch, count, signal, stderr, wait_for};
use purgeq::emulator::{Emulator, FaultKind, FaultPlan, ScriptedFaults};
use purgeq::model::{Action, JobState};
use purgeq::store::{Job, JobFilter, Store};

const LIMIT: Duration = Duration::from_secs(30);

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

fn list_queries(emu: &Emulator) -> u64 {
    let requests = emu.stats().qiniu.requests;
    requests.get("refresh_list").copied().unwrap_or(0)
        + requests.get("prefetch_list").copied().unwrap_or(0)
}

fn tasks_complete_after(d: Duration) -> purgeq::emulator::EmulatorConfig {
    let mut config = emulator_config();
    config.qiniu.complete_after = d;
    config
}

#[tokio::test]
async fn jobs_succeed_only_once_the_cdn_is_done_with_one_query_per_request() {
    let scratch = Scratch::new();
    let store = scratch.store().await;
    // Tasks take 1 s; the first query comes 1.5 s after acceptance.
    let emu = emulator(tasks_complete_after(Duration::from_secs(1))).await;
    let targets = urls("cdn.example.com", 250);
    for _ in 0..3 {
        enqueue(&store, Action::RefreshUrl, &targets).await;
    }
    let mut config = fast_config();
    config.confirm.interval = Duration::from_millis(1500);
    let seen_confirming = Arc::new(AtomicBool::new(false));
    run_until(&store, &emu, config, || {
        let store = store.clone();
        let seen = Arc::clone(&seen_confirming);
        async move {
            let jobs = all_jobs(&store).await;
            let confirming = jobs
                .iter()
                .filter(|j| j.state == JobState::Confirming)
                .count();
            let succeeded = jobs
                .iter()
                .filter(|j| j.state == JobState::Succeeded)
                .count();
            if confirming == 750 {
                assert_eq!(succeeded, 0);
                seen.store(true, Ordering::SeqCst);
            }
            succeeded == 750
        }
    })
    .await;
    assert!(
        seen_confirming.load(Ordering::SeqCst),
        "every job was confirming before any succeeded"
    );
    let stats = emu.stats().qiniu;
    assert_eq!(
        stats.issued.len(),
        5,
        "250 distinct targets at 60 per request"
    );
    assert_eq!(list_queries(&emu), 5, "one list query per accepted request");
    for job in all_jobs(&store).await {
        assert_eq!(
            (job.state, job.attempts),
            (JobState::Succeeded, 1),
            "{job:?}"
        );
        let (accepted, confirmed) = (job.accepted_at.unwrap(), job.confirmed_at.unwrap());
        // The CDN's end time has whole seconds; it is after acceptance, to the second.
        assert!(confirmed / 1000 >= accepted / 1000, "{job:?}");
        let calls = store.job_calls(job.id).await.unwrap();
        let ops: Vec<&str> = calls.iter().map(|c| c.operation.as_str()).collect();
        assert_eq!(ops, ["refresh", "refresh_list"], "{job:?}");
        assert_eq!(calls[1].outcome.as_deref(), Some("listed"));
        assert_eq!(
            calls[1].request_id, job.request_id,
            "asked about its request"
        );
    }
}

#[tokio::test]
async fn a_task_the_cdn_fails_is_sent_again_and_then_succeeds() {
    let scratch = Scratch::new();
    let store = scratch.store().await;
    let mut config = emulator_config();
    config.qiniu.fail_fraction = 0.3;
    config.qiniu.fail_seed = 7;
    let emu = emulator(config).await;
    enqueue(&store, Action::RefreshUrl, &urls("cdn.example.com", 20)).await;
    run_until(&store, &emu, fast_config(), || async {
        count_state(&store, JobState::Succeeded).await == 20
    })
    .await;
    let jobs = all_jobs(&store).await;
    let resent: Vec<&Job> = jobs.iter().filter(|j| j.attempts == 2).collect();
    assert!(!resent.is_empty(), "seed 7 fails some first tasks");
    for job in resent {
        let calls = store.job_calls(job.id).await.unwrap();
        let sends: Vec<_> = calls.iter().filter(|c| c.operation == "refresh").collect();
        assert_eq!(sends.len(), 2, "{calls:?}");
        assert_ne!(sends[0].request_id, sends[1].request_id);
        assert_eq!(job.request_id, sends[1].request_id);
        let error = job.last_error.as_deref().unwrap();
        assert!(
            error.contains("the CDN failed the purge") && error.contains("spends quota again"),
            "{error}"
        );
        assert!(job.confirmed_at.is_some());
    }
    let purged = emu.stats().qiniu.purged;
    assert!(
        purged.values().any(|n| *n == 2),
        "failed tasks were purged again"
    );
}

#[tokio::test]
async fn a_task_that_never_completes_ends_unconfirmed() {
    let scratch = Scratch::new();
    let store = scratch.store().await;
    let emu = emulator(tasks_complete_after(Duration::from_secs(3600))).await;
    enqueue(&store, Action::PrefetchUrl, &urls("cdn.example.com", 3)).await;
    let mut config = fast_config();
    config.confirm.timeout = Duration::from_millis(500);
    drain_once(&store, &emu, config).await;
    for job in all_jobs(&store).await {
        assert_eq!(job.state, JobState::Failed, "{job:?}");
        let error = job.last_error.as_deref().unwrap();
        assert!(error.starts_with("unconfirmed: "), "{error}");
        assert!(error.contains("--confirm-timeout"), "{error}");
    }
    assert!(emu.stats().qiniu.requests["prefetch_list"] >= 1);
}

#[tokio::test]
async fn already_in_progress_is_confirmed_by_url() {
    let scratch = Scratch::new();
    let store = scratch.store().await;
    let emu = emulator(tasks_complete_after(Duration::from_secs(1))).await;
    let target = urls("cdn.example.com", 1);
    // The first purge is accepted without confirmation; its task is still processing when the
    // same URL is sent again, which Qiniu answers 400037.
    enqueue(&store, Action::RefreshUrl, &target).await;
    let mut no_confirm = fast_config();
    no_confirm.confirm.enabled = false;
    drain_once(&store, &emu, no_confirm).await;
    let again = enqueue(&store, Action::RefreshUrl, &target).await[0];
    drain_once(&store, &emu, fast_config()).await;

    let job = store.job(again).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Succeeded, "{job:?}");
    assert_eq!(job.provider_code, Some(400_037));
    let calls = store.job_calls(again).await.unwrap();
    let send = &calls[0];
    assert_eq!(
        (send.operation.as_str(), send.outcome.as_deref()),
        ("refresh", Some("in_progress"))
    );
    let queries: Vec<_> = calls
        .iter()
        .filter(|c| c.operation == "refresh_list")
        .collect();
    assert!(!queries.is_empty());
    assert!(
        queries.iter().all(|c| c.request_id.is_none()),
        "asked by URL"
    );
    assert_eq!(
        emu.stats().qiniu.purged[&target[0]],
        1,
        "sent to the CDN once"
    );
}

#[tokio::test]
async fn bad_list_answers_lose_no_job() {
    let scratch = Scratch::new();
    let store = scratch.store().await;
    let emu = emulator(emulator_config()).await;
    let mut outcomes = Vec::new();
    for kind in [
        FaultKind::Garbage,
        FaultKind::Http503,
        FaultKind::ServerError,
        FaultKind::Qps,
        FaultKind::Throttle,
        FaultKind::DropBefore,
    ] {
        emu.set_faults(FaultPlan {
            list_fail_next: Some(ScriptedFaults { count: 1, kind }),
            ..FaultPlan::default()
        })
        .unwrap();
        let ids = enqueue(
            &store,
            Action::RefreshUrl,
            &urls(&format!("{kind}.example.com"), 4),
        )
        .await;
        drain_once(&store, &emu, fast_config()).await;
        for id in ids {
            let job = store.job(id).await.unwrap().unwrap();
            assert_eq!(
                (job.state, job.attempts),
                (JobState::Succeeded, 1),
                "{kind}: {job:?}"
            );
            let calls = store.job_calls(id).await.unwrap();
            outcomes.extend(
                calls
                    .iter()
                    .filter(|c| c.operation == "refresh_list")
                    .map(|c| c.outcome.clone().unwrap_or_default()),
            );
        }
    }
    for expected in ["transient", "rate_limited", "listed"] {
        assert!(
            outcomes.iter().any(|o| o == expected),
            "{expected} in {outcomes:?}"
        );
    }
}

/// `purgeq worker` at the emulator, confirming every 100 ms, with short timeouts so a held
/// confirmation comes back soon after a kill.
fn worker(s: &Scratch, emu: &Emulator, extra: &[&str]) -> Child {
    common::worker_cmd(&s.db_arg(), emu)
        .args(["--max-requests-per-sec", "0", "--confirm-interval", "100ms"])
        .args([
            "--request-timeout",
            "1s",
            "--busy-timeout",
            "1s",
            "--lease",
            "3s",
        ])
        .args(extra)
        .spawn()
        .expect("worker starts")
}

fn states(s: &Scratch) -> (i64, i64) {
    let status = s.status(&[]);
    (
        count(&status, "qiniu", "confirming"),
        count(&status, "qiniu", "succeeded"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_and_sigterm_while_confirming_lose_nothing() {
    let s = Scratch::new();
    let emu = emulator(tasks_complete_after(Duration::from_secs(2))).await;
    s.enqueue_file("t.txt", &urls("cdn.example.com", 120));
    let mut expected = 120;
    for sig in ["-KILL", "-TERM"] {
        let mut child = worker(&s, &emu, &[]);
        wait_for("jobs being confirmed", LIMIT, || states(&s).0 > 0).await;
        signal(&child, sig);
        let status = child.wait().unwrap();
        if sig == "-TERM" {
            assert!(status.success(), "{status:?}");
        }
        let status = s.status(&[]);
        let kept: i64 = ["queued", "running", "confirming", "succeeded"]
            .iter()
            .map(|state| count(&status, "qiniu", state))
            .sum();
        assert_eq!(kept, expected, "{sig}: nothing lost, nothing failed");
        if sig == "-KILL" {
            s.enqueue_file("u.txt", &urls("img.example.com", 60));
            expected += 60;
        }
    }
    let out = worker(&s, &emu, &["--once"]).wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(states(&s), (0, 180), "a restart confirms every job");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_wait_exits_by_how_the_jobs_ended() {
    let s = Scratch::new();
    let mut config = tasks_complete_after(Duration::from_millis(300));
    config.qiniu.domains = vec!["cdn.example.com".to_owned()];
    let emu = emulator(config).await;
    let mut child = worker(&s, &emu, &[]);

    let ok = s
        .cmd(&["enqueue", "--tag", "ok", "--wait", "--timeout", "30s"])
        .args(urls("cdn.example.com", 3))
        .output()
        .unwrap();
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
    assert!(
        stderr(&ok).contains("all 3 jobs succeeded"),
        "{}",
        stderr(&ok)
    );
    let status = s.status(&["--tag", "ok"]);
    for job in status["jobs"].as_array().unwrap() {
        assert_eq!(job["state"], "succeeded");
        assert!(job["confirmed_at"].is_string(), "{job}");
    }

    // A host outside the account's domains fails for good.
    let bad = s
        .cmd(&["enqueue", "--wait", "https://elsewhere.example.org/x.js"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(5), "{}", stderr(&bad));
    assert!(stderr(&bad).contains("failed"), "{}", stderr(&bad));

    // `wait` on what is already done answers at once.
    let again = s.cmd(&["wait", "--tag", "ok"]).output().unwrap();
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    let missing = s.cmd(&["wait", "999999"]).output().unwrap();
    assert_eq!(missing.status.code(), Some(4), "{}", stderr(&missing));

    signal(&child, "-TERM");
    assert!(child.wait().unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_wait_times_out_when_the_cdn_never_completes() {
    let s = Scratch::new();
    let emu = emulator(tasks_complete_after(Duration::from_secs(3600))).await;
    let mut child = worker(&s, &emu, &[]);
    let out = s
        .cmd(&["enqueue", "--wait", "--timeout", "2s"])
        .args(urls("cdn.example.com", 2))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    assert!(stderr(&out).contains("timed out"), "{}", stderr(&out));
    assert_eq!(count(&s.status(&[]), "qiniu", "confirming"), 2);
    signal(&child, "-TERM");
    assert!(child.wait().unwrap().success());
}

/// POSTs `body` to a task-list path of the emulator, signed with `sk` as Qiniu signs.
async fn list(
    emu: &Emulator,
    path: &str,
    sk: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let token =
        purgeq::provider::qiniu::sign(common::worker::AK, &purgeq::secret::Secret::new(sk), path);
    let response = reqwest::Client::new()
        .post(format!("{}{path}", emu.url()))
        .header("Authorization", format!("QBox {token}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn the_emulators_task_lists_filter_page_and_check_signatures() {
    let scratch = Scratch::new();
    let store = scratch.store().await;
    let emu = emulator(emulator_config()).await;
    let targets = urls("cdn.example.com", 3);
    enqueue(&store, Action::RefreshUrl, &targets).await;
    let mut no_confirm = fast_config();
    no_confirm.confirm.enabled = false;
    drain_once(&store, &emu, no_confirm).await;
    let request_id = emu.stats().qiniu.issued[0].request_id.clone();
    let path = "/v2/tune/refresh/list";
    let sk = common::worker::SK;

    // Paging through `total`, with the SDKs' null fields and a page number as a string.
    let body = serde_json::json!({"requestId": request_id, "pageNo": "1", "pageSize": 2,
                                  "urls": null, "state": ""});
    let (status, page) = list(&emu, path, sk, body).await;
    assert_eq!((status, page["code"].as_i64()), (200, Some(200)), "{page}");
    assert_eq!(
        (page["total"].as_u64(), page["pageNo"].as_u64()),
        (Some(3), Some(1))
    );
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    for field in [
        "requestId",
        "url",
        "state",
        "stateDetail",
        "createAt",
        "beginAt",
        "endAt",
        "isDir",
    ] {
        assert!(items[0].get(field).is_some(), "{field} in {}", items[0]);
    }
    assert_eq!(items[0]["state"], "success");

    // Filters: by URL, by state, by kind.
    let by_url = serde_json::json!({"urls": [targets[1]]});
    let (_, page) = list(&emu, path, sk, by_url).await;
    assert_eq!(page["total"], 1);
    assert_eq!(page["items"][0]["url"], targets[1].as_str());
    let (_, page) = list(&emu, path, sk, serde_json::json!({"state": "processing"})).await;
    assert_eq!(page["total"], 0);
    let (_, page) = list(&emu, path, sk, serde_json::json!({"isDir": "yes"})).await;
    assert_eq!(page["total"], 0);
    let (_, page) = list(&emu, "/v2/tune/prefetch/list", sk, serde_json::json!({})).await;
    assert_eq!(page["total"], 0, "refresh tasks are not prefetch tasks");

    // An unknown request id, and a bad signature.
    let unknown = serde_json::json!({"requestId": "nope"});
    let (status, page) = list(&emu, path, sk, unknown).await;
    assert_eq!((status, page["code"].as_i64()), (400, Some(400_036)));
    let (status, page) = list(&emu, path, "wrong-sk", serde_json::json!({})).await;
    assert_eq!((status, page["code"].as_i64()), (401, Some(401_001)));
}

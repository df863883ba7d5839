//! The worker as a process: SIGKILL mid-request, SIGTERM mid-request, two workers at once,
//! and startup errors.

mod common;

use std::process::Child;
use std::time::{Duration, Instant};

use common::worker::{AK, SK, emulator, emulator_config, urls};
use common::{Scratch, count, signal, stderr, wait_for};
use purgeq::emulator::{Emulator, FaultKind, FaultPlan, ScriptedFaults};

/// How long a test waits for a condition before failing.
const LIMIT: Duration = Duration::from_secs(30);

fn worker(s: &Scratch, emu: &Emulator, args: &[&str]) -> Child {
    common::worker_cmd(&s.db_arg(), emu)
        .args(["--busy-timeout", "1s"])
        .args(if args.contains(&"--max-requests-per-sec") {
            &[][..]
        } else {
            &["--max-requests-per-sec", "0"][..]
        })
        .args(args)
        .env("RUST_LOG", "purgeq=info")
        .spawn()
        .expect("worker starts")
}

fn requests(emu: &Emulator) -> u64 {
    emu.stats().qiniu.requests.values().sum()
}

fn slow_once(emu: &Emulator, ms: u64) {
    emu.set_faults(FaultPlan {
        fail_next: Some(ScriptedFaults {
            count: 1,
            kind: FaultKind::Slow,
        }),
        slow_delay_ms: ms,
        ..FaultPlan::default()
    })
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_request_loses_nothing() {
    let s = Scratch::new();
    let emu = emulator(emulator_config()).await;
    s.enqueue_file("t.txt", &urls("cdn.example.com", 100));
    slow_once(&emu, 3_000);
    let mut first = worker(&s, &emu, &["--request-timeout", "1s", "--lease", "2s"]);
    wait_for("the first request to be in flight", LIMIT, || {
        requests(&emu) >= 1
    })
    .await;
    first.kill().unwrap();
    first.wait().unwrap();
    let status = s.status(&[]);
    // The batch in flight, and (pipelining) perhaps the rest claimed behind it, unsent.
    let leased = count(&status, "qiniu", "running");
    assert!(
        (60..=100).contains(&leased),
        "the killed worker's claims are still leased: {leased}\n{status}"
    );

    let mut second = worker(&s, &emu, &["--request-timeout", "1s", "--lease", "2s"]);
    wait_for("every job to succeed", LIMIT, || {
        count(&s.status(&[]), "qiniu", "succeeded") == 100
    })
    .await;
    signal(&second, "-TERM");
    assert!(second.wait().unwrap().success());
    let purged = emu.stats().qiniu.purged;
    assert_eq!(purged.len(), 100);
    assert!(
        purged.values().all(|n| *n <= 2),
        "at most the in-flight batch is sent twice"
    );
    assert!(purged.values().filter(|n| **n == 2).count() <= 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_request_records_the_call_and_exits_zero() {
    let s = Scratch::new();
    let emu = emulator(emulator_config()).await;
    s.enqueue_file("t.txt", &urls("cdn.example.com", 120));
    slow_once(&emu, 1_500);
    let mut child = worker(
        &s,
        &emu,
        &[
            "--request-timeout",
            "10s",
            "--lease",
            "30s",
            "--max-requests-per-sec",
            "0.2",
            // About the send in flight at SIGTERM; SIGTERM while confirming is in
            // tests/confirm.rs.
            "--no-confirm",
        ],
    );
    wait_for("the first request to be in flight", LIMIT, || {
        requests(&emu) >= 1
    })
    .await;
    let sent_at = Instant::now();
    signal(&child, "-TERM");
    let status = child.wait().unwrap();
    let took = sent_at.elapsed();
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(status.success(), "exit {status:?}: {err}");
    assert!(
        took < Duration::from_secs(10),
        "bounded shutdown, took {took:?}"
    );
    assert!(err.contains("SIGTERM"), "{err}");
    let summary = s.status(&[]);
    assert_eq!(
        count(&summary, "qiniu", "succeeded"),
        60,
        "the call in flight was recorded"
    );
    assert_eq!(
        count(&summary, "qiniu", "queued"),
        60,
        "the rest is back in the queue"
    );
    assert_eq!(count(&summary, "qiniu", "running"), 0);
    let job = &s.jobs(&["--state", "succeeded"])[0];
    let detail = s.json(&["status", &job["id"].to_string()]);
    assert_eq!(detail["calls"][0]["outcome"], "accepted");
    assert!(detail["calls"][0]["finished_at"].is_string());
}

/// Pipelining (PostgreSQL): while one request is in flight, the route's next batch is claimed
/// behind it, but not sent until the first is recorded. SQLite runs one loop per route
/// (`worker/pipeline.rs::slots`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_batch_is_claimed_while_a_request_is_in_flight_and_sent_after_it() {
    if common::skip_on_sqlite("a route runs one loop on SQLite") {
        return;
    }
    let s = Scratch::new();
    let emu = emulator(emulator_config()).await;
    s.enqueue_file("t.txt", &urls("cdn.example.com", 120));
    slow_once(&emu, 3_000);
    let mut child = worker(&s, &emu, &["--request-timeout", "10s", "--no-confirm"]);
    wait_for("the first request to be in flight", LIMIT, || {
        requests(&emu) >= 1
    })
    .await;
    wait_for("the second batch to be claimed behind it", LIMIT, || {
        count(&s.status(&[]), "qiniu", "running") == 120
    })
    .await;
    assert_eq!(
        requests(&emu),
        1,
        "the batch claimed behind waits for the request in flight"
    );
    wait_for("every job to succeed", LIMIT, || {
        count(&s.status(&[]), "qiniu", "succeeded") == 120
    })
    .await;
    signal(&child, "-TERM");
    assert!(child.wait().unwrap().success());
    assert_eq!(requests(&emu), 2);
    assert!(emu.stats().qiniu.purged.values().all(|n| *n == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_never_send_the_same_target_twice() {
    let s = Scratch::new();
    let mut config = emulator_config();
    config.qiniu.quotas.url_refresh = 100_000;
    let emu = emulator(config).await;
    let targets = urls("cdn.example.com", 600);
    s.enqueue_file("a.txt", &targets);
    s.enqueue_file("b.txt", &targets);
    let a = worker(&s, &emu, &["--once"]);
    let b = worker(&s, &emu, &["--once"]);
    for child in [a, b] {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
    assert_eq!(count(&s.status(&[]), "qiniu", "succeeded"), 1200);
    let purged = emu.stats().qiniu.purged;
    assert_eq!(purged.len(), 600);
    assert!(purged.values().all(|n| *n == 1), "a target was sent twice");
    assert_eq!(emu.stats().qiniu.issued.len(), 10);
}

#[test]
fn a_worker_without_credentials_names_the_missing_variable() {
    let s = Scratch::new();
    s.cmd(&["enqueue", "https://cdn.example.com/a"])
        .assert()
        .success();
    let out = s.cmd(&["worker", "--once"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("QINIU_ACCESS_KEY is not set"),
        "{}",
        stderr(&out)
    );
    let out = s
        .cmd(&["worker", "--once"])
        .env("QINIU_ACCESS_KEY", "ak")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("QINIU_SECRET_KEY is not set"),
        "{}",
        stderr(&out)
    );
    let out = s
        .cmd(&["worker", "--lease", "10s", "--request-timeout", "30s"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--lease"), "{}", stderr(&out));
}

#[test]
fn the_secret_file_variant_is_read_and_the_secret_never_logged() {
    let s = Scratch::new();
    let secret_file = s.path("sk");
    common::write(&secret_file, &format!("{SK}\n"));
    let out = s
        .cmd(&["-vv", "worker", "--once"])
        .env("QINIU_ACCESS_KEY", AK)
        .env("QINIU_SECRET_KEY_FILE", &secret_file)
        .env("QINIU_ENDPOINT", "http://127.0.0.1:9")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains(SK));
}

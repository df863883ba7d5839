//! `purgeq worker --metrics-listen`: a scrape after a drain reports what `status --json` and the
//! provider saw.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::Child;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::worker::{AK, SK, emulator, emulator_config, urls};
use common::{Scratch, count, signal, stderr, wait_for};
use purgeq::emulator::Emulator;
use purgeq::model::{JobState, Provider};
use serde_json::Value;

/// A worker process with its metrics address, read from its log.
struct Worker {
    child: Child,
    addr: String,
}

/// Starts `purgeq worker --metrics-listen 127.0.0.1:0` and waits for the address it logs.
fn start_worker(s: &Scratch, emu: &Emulator) -> Worker {
    let mut child = common::worker_cmd(&s.db_arg(), emu)
        .args([
            "--metrics-listen",
            "127.0.0.1:0",
            "--max-requests-per-sec",
            "0",
            // The request counts asserted here are the sends; confirmation queries and their
            // metrics are tested in tests/confirm.rs.
            "--no-confirm",
        ])
        .env("RUST_LOG", "purgeq=info")
        .spawn()
        .expect("worker starts");
    // N.B. A reader drains stderr for the worker's whole life, so a full pipe never blocks it.
    let (lines_tx, lines) = mpsc::channel();
    let stderr = child.stderr.take().expect("piped stderr");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let mut worker = Worker {
        child,
        addr: String::new(),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = String::new();
    while let Ok(line) = lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        if let Some(addr) = metrics_addr(&line) {
            worker.addr = addr;
            return worker;
        }
        seen.push_str(&line);
        seen.push('\n');
    }
    panic!("no metrics address logged; stderr so far:\n{seen}");
}

impl Drop for Worker {
    /// A failed test leaves no worker behind.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The `ADDR` of a `metrics on http://ADDR/metrics` log line.
fn metrics_addr(line: &str) -> Option<String> {
    let rest = &line[line.find("metrics on http://")? + "metrics on http://".len()..];
    Some(rest[..rest.find("/metrics")?].to_owned())
}

fn enqueue(s: &Scratch, name: &str, targets: &[String], extra: &[&str]) {
    let file = s.path(name);
    common::write(&file, &targets.join("\n"));
    s.cmd(&["enqueue", "--file"])
        .arg(&file)
        .args(extra)
        .assert()
        .success();
}

/// One sample line: metric name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

/// Parses the samples of an exposition (our label values hold no commas, quotes or braces).
fn samples(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("a sample has a value");
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => (name, labels.trim_end_matches('}')),
            None => (series, ""),
        };
        let labels = labels
            .split(',')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (k, v) = pair.split_once('=').expect("label=value");
                (k.to_owned(), v.trim_matches('"').to_owned())
            })
            .collect();
        let value = value.parse().expect("a numeric value");
        out.push((name.to_owned(), labels, value));
    }
    out
}

/// The sum of `name`'s samples whose labels include every pair of `with`.
fn total(samples: &[Sample], name: &str, with: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|(n, labels, _)| {
            n == name
                && with
                    .iter()
                    .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| v)
        .sum()
}

async fn scrape(addr: &str, path: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!("http://{addr}{path}"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("the metrics server answers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_after_a_drain_matches_status_and_the_provider() {
    let s = Scratch::new();
    let emu = emulator(emulator_config()).await;
    enqueue(&s, "refresh.txt", &urls("cdn.example.com", 130), &[]);
    enqueue(
        &s,
        "prefetch.txt",
        &urls("img.example.com", 20),
        &["--prefetch"],
    );
    enqueue(
        &s,
        "later.txt",
        &urls("late.example.com", 2),
        &["--delay", "1h"],
    );
    enqueue(
        &s,
        "drop.txt",
        &urls("drop.example.com", 5),
        &["--tag", "drop"],
    );
    s.cmd(&["cancel", "--all", "--tag", "drop"])
        .assert()
        .success();

    let mut worker = start_worker(&s, &emu);
    wait_for("the ready jobs to succeed", Duration::from_secs(30), || {
        let status = s.status(&[]);
        count(&status, "qiniu", "succeeded") == 150 && count(&status, "qiniu", "running") == 0
    })
    .await;
    let status = s.status(&[]);
    let response = scrape(&worker.addr, "/metrics").await;
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let text = response.text().await.unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    let metrics = samples(&text);

    for provider in Provider::ALL {
        for state in JobState::ALL {
            let (p, st) = (provider.as_str(), state.as_str());
            let scraped = total(&metrics, "purgeq_jobs", &[("provider", p), ("state", st)]);
            assert_eq!(scraped, count(&status, p, st) as f64, "{p}/{st}:\n{text}");
        }
    }
    assert_eq!(count(&status, "qiniu", "queued"), 2);
    assert_eq!(count(&status, "qiniu", "cancelled"), 5);

    let sent: u64 = emu.stats().qiniu.requests.values().sum();
    assert_eq!(sent, 4, "60 + 60 + 10 refreshed, 20 prefetched");
    let requests = "purgeq_provider_requests_total";
    assert_eq!(total(&metrics, requests, &[]), sent as f64, "{text}");
    assert_eq!(
        total(
            &metrics,
            requests,
            &[("operation", "refresh"), ("outcome", "accepted")]
        ),
        3.0
    );
    assert_eq!(
        total(
            &metrics,
            requests,
            &[("operation", "prefetch"), ("outcome", "accepted")]
        ),
        1.0
    );
    let calls = total(&metrics, "purgeq_provider_call_duration_seconds_count", &[]);
    assert_eq!(calls, sent as f64);
    assert!(total(&metrics, "purgeq_claim_duration_seconds_count", &[]) >= 2.0);

    let age = total(&metrics, "purgeq_oldest_queued_age_seconds", &[]);
    let status_age = status["oldest_queued_age_secs"].as_f64().unwrap();
    assert!(
        age >= status_age && age < status_age + 60.0,
        "{age} vs {status_age}"
    );
    assert_lanes_match(&metrics, &status);

    assert_eq!(scrape(&worker.addr, "/nope").await.status(), 404);
    // The same listener serves the dashboard (issue 16).
    assert_eq!(scrape(&worker.addr, "/").await.status(), 200);
    signal(&worker.child, "-TERM");
    let exit = worker.child.wait().unwrap();
    assert!(exit.success(), "{exit:?}");
}

/// Every lane `status` reports appears with the same pause flag and quotas.
fn assert_lanes_match(metrics: &[Sample], status: &Value) {
    let lanes = status["lanes"].as_array().expect("lanes");
    assert!(!lanes.is_empty(), "the drain recorded quota readings");
    for lane in lanes {
        let labels = [
            ("provider", lane["provider"].as_str().unwrap()),
            ("account", lane["account"].as_str().unwrap()),
            ("action", lane["action"].as_str().unwrap()),
        ];
        let paused = total(metrics, "purgeq_lane_paused", &labels);
        assert_eq!(paused, if lane["paused"] == true { 1.0 } else { 0.0 });
        for (metric, field) in [
            ("purgeq_lane_quota_surplus", "surplus_day"),
            ("purgeq_lane_quota_day", "quota_day"),
        ] {
            let expected = lane[field].as_f64().unwrap_or(0.0);
            assert_eq!(
                total(metrics, metric, &labels),
                expected,
                "{metric} {labels:?}"
            );
        }
    }
}

#[test]
fn a_taken_metrics_port_is_a_startup_error_naming_it() {
    let s = Scratch::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = s
        .cmd(&["worker", "--once", "--metrics-listen", &addr])
        .env("QINIU_ACCESS_KEY", AK)
        .env("QINIU_SECRET_KEY", SK)
        .env("QINIU_ENDPOINT", "http://127.0.0.1:9")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("cannot listen on {addr} for metrics")),
        "{}",
        stderr(&out)
    );
}

//! The Qiniu emulator, driven over loopback by purgeq's own client and by a plain HTTP client.

mod common;

use std::time::Duration;

use common::worker::loopback;
use purgeq::emulator::qiniu::{DailyQuotas, QiniuConfig};
use purgeq::emulator::{
    self, Emulator, EmulatorConfig, FaultKind, FaultPlan, RandomFaults, ScriptedFaults, Stats,
};
use purgeq::model::Action;
use purgeq::provider::qiniu::{Credentials, QiniuClient};
use purgeq::provider::{CallReport, Outcome, QuotaReading};
use purgeq::secret::Secret;

const AK: &str = "test-ak";
const SK: &str = "test-sk-do-not-print";

fn config() -> EmulatorConfig {
    EmulatorConfig {
        qiniu: QiniuConfig {
            access_key: AK.to_owned(),
            secret_key: Secret::new(SK),
            domains: vec!["example.com".to_owned()],
            ..QiniuConfig::default()
        },
        ..EmulatorConfig::default()
    }
}

async fn start(config: EmulatorConfig) -> Emulator {
    emulator::start(loopback(), config)
        .await
        .expect("emulator starts")
}

fn client_with(emu: &Emulator, secret: &str, timeout: Duration) -> QiniuClient {
    let http = reqwest::Client::builder().timeout(timeout).build().unwrap();
    let credentials = Credentials {
        access_key: AK.to_owned(),
        secret_key: Secret::new(secret),
    };
    QiniuClient::new(http, emu.url(), credentials)
}

fn client(emu: &Emulator) -> QiniuClient {
    client_with(emu, SK, Duration::from_secs(10))
}

fn urls(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn many(n: usize, dir: bool) -> Vec<String> {
    let slash = if dir { "/" } else { "" };
    (0..n)
        .map(|i| format!("http://cdn.example.com/{i}{slash}"))
        .collect()
}

fn assert_clean(report: &CallReport) {
    let text = format!("{report:?}");
    assert!(!text.contains(SK) && !text.contains("QBox"), "{text}");
}

#[tokio::test]
async fn refresh_success_returns_request_id_and_quota() {
    let emu = start(config()).await;
    let sent = urls(&["http://example.com/a.css", "https://img.example.com/b.png"]);
    let dirs = urls(&["http://example.com/static/"]);
    let report = client(&emu).refresh(&sent, &dirs).await;

    assert_eq!(
        report.outcome,
        Outcome::Accepted { rejected: vec![] },
        "{report:?}"
    );
    assert_eq!((report.http_status, report.code), (Some(200), Some(200)));
    let request_id = report.request_id.clone().expect("a request id");
    let trace_id = report.trace_id.clone().expect("an X-Reqid");
    assert_ne!(request_id, trace_id);
    assert!(
        request_id.chars().all(|c| c.is_ascii_hexdigit()),
        "{request_id}"
    );
    assert!(report.quotas.contains(&QuotaReading {
        action: Action::RefreshUrl,
        quota_day: 500,
        surplus_day: 498
    }));
    assert!(report.quotas.contains(&QuotaReading {
        action: Action::RefreshDir,
        quota_day: 10,
        surplus_day: 9
    }));

    let stats = emu.stats();
    assert_eq!(stats.qiniu.requests.get("refresh"), Some(&1));
    assert_eq!(
        stats.qiniu.purged.get("http://example.com/static/"),
        Some(&1)
    );
    assert_eq!(stats.qiniu.issued.len(), 1);
    assert_eq!(stats.qiniu.issued[0].request_id, request_id);
    assert_eq!(stats.qiniu.issued[0].urls, sent);
    assert_eq!(stats.qiniu.quota.url_refresh.surplus, 498);

    let again = client(&emu).refresh(&sent[..1], &[]).await;
    assert_ne!(again.request_id, Some(request_id));
    assert_eq!(
        emu.stats().qiniu.purged.get("http://example.com/a.css"),
        Some(&2)
    );
}

#[tokio::test]
async fn prefetch_success_reads_the_prefetch_quota() {
    let emu = start(config()).await;
    let report = client(&emu)
        .prefetch(&urls(&["http://example.com/big.bin"]))
        .await;
    assert_eq!(
        report.outcome,
        Outcome::Accepted { rejected: vec![] },
        "{report:?}"
    );
    assert_eq!(
        report.quotas,
        vec![QuotaReading {
            action: Action::PrefetchUrl,
            quota_day: 100,
            surplus_day: 99
        }]
    );
    assert_eq!(emu.stats().qiniu.requests.get("prefetch"), Some(&1));
}

#[tokio::test]
async fn a_wrong_secret_is_an_auth_failure_and_spends_nothing() {
    let emu = start(config()).await;
    let report = client_with(&emu, "wrong", Duration::from_secs(5))
        .refresh(&urls(&["http://example.com/a"]), &[])
        .await;
    assert_eq!(report.outcome, Outcome::Auth, "{report:?}");
    assert_eq!(
        (report.http_status, report.code),
        (Some(401), Some(401_001))
    );
    assert!(report.trace_id.is_some());
    assert_clean(&report);
    let stats = emu.stats();
    assert_eq!(stats.qiniu.unauthorized, 1);
    assert!(stats.qiniu.purged.is_empty());
    assert_eq!(stats.qiniu.quota.url_refresh.surplus, 500);
}

#[tokio::test]
async fn foreign_and_malformed_targets_are_named_and_nothing_is_processed() {
    let emu = start(config()).await;
    let sent = urls(&[
        "http://example.com/ok",
        "http://evil.net/x",
        "http://example.com.evil.net/y",
    ]);
    let report = client(&emu).refresh(&sent, &[]).await;
    let Outcome::InvalidTargets { rejected } = &report.outcome else {
        panic!("{report:?}")
    };
    let named: Vec<_> = rejected.iter().map(|r| r.target.as_str()).collect();
    assert_eq!(
        named,
        ["http://evil.net/x", "http://example.com.evil.net/y"]
    );
    assert!(rejected.iter().all(|r| r.code == 400_032));

    let report = client(&emu)
        .refresh(
            &urls(&["http://example.com/ok", "example.com/no-scheme"]),
            &urls(&["http://example.com/nodir"]),
        )
        .await;
    let Outcome::InvalidTargets { rejected } = &report.outcome else {
        panic!("{report:?}")
    };
    let named: Vec<_> = rejected.iter().map(|r| r.target.as_str()).collect();
    assert_eq!(named, ["example.com/no-scheme", "http://example.com/nodir"]);
    assert_eq!(report.code, Some(400_031));

    let stats = emu.stats();
    assert!(stats.qiniu.purged.is_empty() && stats.qiniu.issued.is_empty());
    assert_eq!(stats.qiniu.quota.url_refresh.surplus, 500);
}

#[tokio::test]
async fn quota_exhaustion_pauses_and_reset_refills() {
    let mut config = config();
    config.qiniu.quotas = DailyQuotas {
        url_refresh: 3,
        dir_refresh: 1,
        prefetch: 1,
    };
    let emu = start(config).await;
    let c = client(&emu);
    assert!(matches!(
        c.refresh(&many(2, false), &[]).await.outcome,
        Outcome::Accepted { .. }
    ));

    let report = c.refresh(&many(2, false), &[]).await;
    assert_eq!(
        report.outcome,
        Outcome::Quota {
            action: Action::RefreshUrl
        },
        "{report:?}"
    );
    assert!(report.quotas.contains(&QuotaReading {
        action: Action::RefreshUrl,
        quota_day: 3,
        surplus_day: 1
    }));
    assert_eq!(
        emu.stats().qiniu.quota.url_refresh.surplus,
        1,
        "a refused request spends nothing"
    );

    let report = c.refresh(&[], &many(2, true)).await;
    assert_eq!(
        report.outcome,
        Outcome::Quota {
            action: Action::RefreshDir
        }
    );
    let report = c.prefetch(&many(2, false)).await;
    assert_eq!(
        report.outcome,
        Outcome::Quota {
            action: Action::PrefetchUrl
        }
    );

    emu.reset_quota();
    assert!(matches!(
        c.refresh(&many(3, false), &[]).await.outcome,
        Outcome::Accepted { .. }
    ));
}

#[tokio::test]
async fn per_request_limits_are_enforced() {
    let emu = start(config()).await;
    let c = client(&emu);
    assert!(matches!(
        c.refresh(&many(60, false), &many(10, true)).await.outcome,
        Outcome::Accepted { .. }
    ));
    for report in [
        c.refresh(&many(61, false), &[]).await,
        c.refresh(&[], &many(11, true)).await,
        c.prefetch(&many(61, false)).await,
    ] {
        assert_eq!(report.outcome, Outcome::Transient, "{report:?}");
        assert_eq!(report.code, Some(400_000));
        assert!(
            report.message.contains("exceeds the limit"),
            "{}",
            report.message
        );
    }
    assert_eq!(emu.stats().qiniu.issued.len(), 1);
}

async fn one_fault(kind: FaultKind) -> (CallReport, Stats) {
    let mut config = config();
    config.faults = FaultPlan {
        fail_next: Some(ScriptedFaults { count: 1, kind }),
        slow_delay_ms: 2_000,
        ..FaultPlan::default()
    };
    let emu = start(config).await;
    let c = client_with(&emu, SK, Duration::from_millis(500));
    let report = c
        .refresh(
            &urls(&["http://example.com/a", "http://example.com/b"]),
            &[],
        )
        .await;
    assert_clean(&report);
    let stats = emu.stats();
    assert_eq!(stats.faults.get(kind.as_str()), Some(&1), "{kind}");
    let next = c.refresh(&urls(&["http://example.com/c"]), &[]).await;
    assert!(
        matches!(next.outcome, Outcome::Accepted { .. }),
        "only one request fails: {next:?}"
    );
    (report, stats)
}

#[tokio::test]
async fn each_fault_kind_has_its_outcome() {
    let (r, _) = one_fault(FaultKind::Http503).await;
    assert_eq!((r.outcome, r.http_status), (Outcome::Transient, Some(503)));

    let (r, _) = one_fault(FaultKind::ServerError).await;
    assert_eq!((r.outcome, r.code), (Outcome::Transient, Some(500_002)));

    let (r, s) = one_fault(FaultKind::Quota).await;
    assert_eq!(
        r.outcome,
        Outcome::Quota {
            action: Action::RefreshUrl
        }
    );
    assert_eq!(s.qiniu.quota.url_refresh.surplus, 500);

    let (r, _) = one_fault(FaultKind::Throttle).await;
    assert_eq!(
        (r.outcome, r.retry_after),
        (Outcome::RateLimited, Some(Duration::from_secs(1)))
    );

    let (r, _) = one_fault(FaultKind::Qps).await;
    assert_eq!((r.outcome, r.code), (Outcome::RateLimited, Some(403_024)));

    let (r, _) = one_fault(FaultKind::Garbage).await;
    assert_eq!(r.outcome, Outcome::Transient);
    assert!(r.message.contains("unparseable body"), "{}", r.message);

    let (r, _) = one_fault(FaultKind::Invalid).await;
    let Outcome::InvalidTargets { rejected } = &r.outcome else {
        panic!("{r:?}")
    };
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].target, "http://example.com/a");
}

#[tokio::test]
async fn transport_faults_are_transient_and_drop_after_still_processes() {
    let (r, s) = one_fault(FaultKind::DropBefore).await;
    assert_eq!((r.outcome, r.http_status), (Outcome::Transient, None));
    assert!(s.qiniu.issued.is_empty() && s.qiniu.purged.is_empty());
    assert_eq!(s.qiniu.requests.get("refresh"), Some(&1));

    let (r, s) = one_fault(FaultKind::DropAfter).await;
    assert_eq!((r.outcome, r.http_status), (Outcome::Transient, None));
    assert_eq!(s.qiniu.issued.len(), 1, "processed although never answered");
    assert_eq!(s.qiniu.purged.get("http://example.com/b"), Some(&1));
    assert_eq!(s.qiniu.quota.url_refresh.surplus, 498);

    let (r, _) = one_fault(FaultKind::Slow).await;
    assert_eq!(r.outcome, Outcome::Transient);
    assert!(r.message.contains("timed out"), "{}", r.message);
}

#[tokio::test]
async fn random_faults_repeat_with_the_same_seed() {
    let plan = FaultPlan {
        random: Some(RandomFaults {
            rate: 0.5,
            seed: 42,
            kinds: vec![FaultKind::Http503, FaultKind::Qps, FaultKind::Garbage],
        }),
        ..FaultPlan::default()
    };
    let mut runs = Vec::new();
    for _ in 0..2 {
        let emu = start(config()).await;
        emu.set_faults(plan.clone()).unwrap();
        let c = client(&emu);
        let mut labels = Vec::new();
        for i in 0..24 {
            let report = c.refresh(&[format!("http://example.com/{i}")], &[]).await;
            labels.push(report.outcome.label());
        }
        runs.push(labels);
    }
    assert_eq!(runs[0], runs[1]);
    assert!(
        runs[0].contains(&"accepted") && runs[0].contains(&"transient"),
        "{:?}",
        runs[0]
    );
    assert!(
        emulator::start(
            loopback(),
            EmulatorConfig {
                faults: FaultPlan {
                    random: Some(RandomFaults {
                        rate: 2.0,
                        seed: 0,
                        kinds: vec![]
                    }),
                    ..FaultPlan::default()
                },
                ..config()
            }
        )
        .await
        .is_err()
    );
}

/// A client that is not purgeq's: reqwest, a hand-made signature, the real wire format.
#[tokio::test]
async fn a_plain_http_client_with_a_hand_made_signature_works() {
    use base64::Engine as _;
    use hmac::{KeyInit, Mac};

    let emu = start(config()).await;
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(SK.as_bytes()).unwrap();
    mac.update(b"/v2/tune/refresh\n");
    let sign = base64::engine::general_purpose::URL_SAFE.encode(mac.finalize().into_bytes());
    let http = reqwest::Client::new();
    let response = http
        .post(format!("{}/v2/tune/refresh", emu.url()))
        .header("Authorization", format!("QBox {AK}:{sign}"))
        .header("Content-Type", "application/json")
        .body(r#"{"urls":["http://example.com/x.js"],"dirs":null}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert!(headers.contains_key("x-reqid") && headers.contains_key("x-log"));
    assert_eq!(headers["content-type"], "application/json");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], 200);
    assert_eq!(body["error"], "success");
    assert!(body["requestId"].as_str().is_some_and(|id| !id.is_empty()));
    assert!(body["taskIds"]["http://example.com/x.js"].is_string());
    assert_eq!(body["invalidUrls"], serde_json::json!([]));
    assert_eq!(body["urlSurplusDay"], 499);

    // The seed's legacy path is signed as itself.
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(SK.as_bytes()).unwrap();
    mac.update(b"/refresh\n");
    let sign = base64::engine::general_purpose::URL_SAFE.encode(mac.finalize().into_bytes());
    let legacy = http
        .post(format!("{}/refresh", emu.url()))
        .header("Authorization", format!("QBox {AK}:{sign}"))
        .json(&serde_json::json!({"urls": ["http://example.com/y.js"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(legacy.status(), 200);

    // No Authorization header at all.
    let bare = http
        .post(format!("{}/v2/tune/prefetch", emu.url()))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(bare.status(), 401);
    assert!(bare.headers().contains_key("x-reqid"));
    let body: serde_json::Value = bare.json().await.unwrap();
    assert_eq!(
        (body["code"].as_i64(), body["error"].as_str()),
        (Some(401_002), Some("bad token"))
    );
}

#[tokio::test]
async fn operator_endpoints_over_http() {
    let mut config = config();
    config.qiniu.quotas.url_refresh = 1;
    let emu = start(config).await;
    let http = reqwest::Client::new();
    let c = client(&emu);
    assert!(matches!(
        c.refresh(&many(1, false), &[]).await.outcome,
        Outcome::Accepted { .. }
    ));

    let response = http
        .get(format!("{}/_emulator/stats", emu.url()))
        .send()
        .await
        .unwrap();
    assert!(response.headers().contains_key("x-reqid"));
    let stats: Stats = response.json().await.unwrap();
    assert_eq!(stats, emu.stats());
    assert_eq!(stats.qiniu.quota.url_refresh.surplus, 0);

    let reset = http
        .post(format!("{}/_emulator/reset-quota", emu.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(reset.status(), 200);
    assert_eq!(emu.stats().qiniu.quota.url_refresh.surplus, 1);

    let plan = http
        .post(format!("{}/_emulator/faults", emu.url()))
        .json(&serde_json::json!({"fail_next": {"count": 1, "kind": "qps"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(plan.status(), 200);
    assert_eq!(
        c.refresh(&many(1, false), &[]).await.outcome,
        Outcome::RateLimited
    );

    let bad = http
        .post(format!("{}/_emulator/faults", emu.url()))
        .body("{\"fail_next\":7}")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}

#[tokio::test]
async fn a_stopped_emulator_refuses_connections() {
    let emu = start(config()).await;
    let c = client_with(&emu, SK, Duration::from_secs(2));
    emu.shutdown().await;
    let report = c.refresh(&urls(&["http://example.com/a"]), &[]).await;
    assert_eq!(
        (report.outcome.clone(), report.http_status),
        (Outcome::Transient, None)
    );
    assert!(
        report.message.starts_with("connect error"),
        "{}",
        report.message
    );
}

/// `purgeq emulate` as a separate process: the address on the first stdout line, the demo
/// credentials, flags for faults, and a clean exit on SIGTERM.
#[cfg(unix)]
#[tokio::test]
async fn the_emulate_command_serves_until_sigterm() {
    use std::io::BufRead as _;
    use std::process::{Command, Stdio};

    /// Kills the emulator if the test fails before it is stopped on purpose.
    struct Reap(Option<std::process::Child>);
    impl Drop for Reap {
        fn drop(&mut self) {
            if let Some(child) = &mut self.0 {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    let child = Command::new(env!("CARGO_BIN_EXE_purgeq"))
        .args([
            "emulate",
            "--listen",
            "127.0.0.1:0",
            "--domain",
            "example.com",
        ])
        .args([
            "--url-quota",
            "7",
            "--fail-next",
            "1",
            "--fail-with",
            "http-503",
        ])
        .env_remove("QINIU_ACCESS_KEY")
        .env_remove("QINIU_SECRET_KEY")
        .env_remove("QINIU_SECRET_KEY_FILE")
        .env_remove("PAN123_CLIENT_ID")
        .env_remove("PAN123_CLIENT_SECRET")
        .env_remove("PAN123_CLIENT_SECRET_FILE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("purgeq runs");
    let mut reap = Reap(Some(child));
    let child = reap.0.as_mut().unwrap();
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let url = first
        .trim()
        .strip_prefix("listening on ")
        .expect("the address first")
        .to_owned();
    assert!(
        url.starts_with("http://127.0.0.1:") && !url.ends_with(":0"),
        "{first:?}"
    );

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let credentials = Credentials {
        access_key: emulator::qiniu::DEMO_ACCESS_KEY.to_owned(),
        secret_key: Secret::new(emulator::qiniu::DEMO_SECRET_KEY),
    };
    let c = QiniuClient::new(http.clone(), &url, credentials);
    let target = urls(&["http://example.com/a"]);
    assert_eq!(c.refresh(&target, &[]).await.http_status, Some(503));
    let report = c.refresh(&target, &[]).await;
    assert!(report.quotas.contains(&QuotaReading {
        action: Action::RefreshUrl,
        quota_day: 7,
        surplus_day: 6
    }));
    let stats: Stats = http
        .get(format!("{url}/_emulator/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats.faults.get("http-503"), Some(&1));

    common::signal(child, "-TERM");
    let output = reap.0.take().unwrap().wait_with_output().unwrap();
    assert!(output.status.success(), "{:?}", output.status);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("demo credentials"), "{stderr}");
    assert!(
        !stderr.contains(emulator::qiniu::DEMO_SECRET_KEY),
        "{stderr}"
    );
}

//! The 123pan side of the emulator, driven over loopback by a plain HTTP client speaking the
//! real wire format: token, refresh, refusals, throttling, faults and stats.

mod common;

use std::time::Duration;

use common::worker::loopback;
use purgeq::emulator::pan123::{Pan123Config, REFRESH_PATH, TOKEN_PATH};
use purgeq::emulator::{
    self, Emulator, EmulatorConfig, FaultKind, FaultPlan, RandomFaults, ScriptedFaults, Stats,
};
use purgeq::secret::Secret;
use serde_json::{Value, json};

const ID: &str = "test-client";
const SECRET: &str = "test-client-secret-never-logged";

/// An account with the test credentials and no rate limits, so that only the tests about
/// throttling meet one.
fn config() -> EmulatorConfig {
    EmulatorConfig {
        pan123: Pan123Config {
            client_id: ID.to_owned(),
            client_secret: Secret::new(SECRET),
            refresh_per_sec: 0.0,
            token_per_sec: 0.0,
            ..Pan123Config::default()
        },
        ..EmulatorConfig::default()
    }
}

async fn start(config: EmulatorConfig) -> Emulator {
    emulator::start(loopback(), config)
        .await
        .expect("emulator starts")
}

/// What came back: status, `Retry-After`, and the body as JSON (`Null` when it is not JSON).
#[derive(Debug)]
struct Answer {
    status: u16,
    retry_after: Option<String>,
    json: Value,
    text: String,
}

impl Answer {
    fn code(&self) -> Option<i64> {
        self.json["code"].as_i64()
    }

    fn trace_id(&self) -> &str {
        self.json["x-traceID"].as_str().unwrap_or_default()
    }

    fn token(&self) -> String {
        self.json["data"]["accessToken"]
            .as_str()
            .unwrap_or_else(|| panic!("no token in {self:?}"))
            .to_owned()
    }
}

/// A plain client of the emulated 123pan.
struct Pan {
    http: reqwest::Client,
    url: String,
}

impl Pan {
    fn new(emu: &Emulator) -> Self {
        Pan::with_timeout(&emu.url(), Duration::from_secs(5))
    }

    fn with_timeout(url: &str, timeout: Duration) -> Self {
        let http = reqwest::Client::builder().timeout(timeout).build().unwrap();
        Pan {
            http,
            url: url.to_owned(),
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Answer, reqwest::Error> {
        let response = request.send().await?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        let text = response.text().await?;
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Answer {
            status,
            retry_after,
            json,
            text,
        })
    }

    async fn try_token_as(&self, id: &str, secret: &str) -> Result<Answer, reqwest::Error> {
        let request = self
            .http
            .post(format!("{}{TOKEN_PATH}", self.url))
            .header("Platform", "open_platform")
            .json(&json!({"clientID": id, "clientSecret": secret}));
        self.send(request).await
    }

    async fn token_as(&self, id: &str, secret: &str) -> Answer {
        self.try_token_as(id, secret).await.expect("an answer")
    }

    async fn token(&self) -> String {
        let answer = self.token_as(ID, SECRET).await;
        assert_eq!((answer.status, answer.code()), (200, Some(0)), "{answer:?}");
        answer.token()
    }

    async fn try_refresh(&self, token: &str) -> Result<Answer, reqwest::Error> {
        let request = self
            .http
            .post(format!("{}{REFRESH_PATH}", self.url))
            .header("Platform", "open_platform")
            .bearer_auth(token)
            .json(&json!({}));
        self.send(request).await
    }

    async fn refresh(&self, token: &str) -> Answer {
        self.try_refresh(token).await.expect("an answer")
    }
}

fn assert_refused(answer: &Answer, status: u16, code: i64) {
    assert_eq!(
        (answer.status, answer.code()),
        (status, Some(code)),
        "{answer:?}"
    );
    assert_eq!(answer.json["data"], Value::Null, "no data on an error");
    assert!(!answer.trace_id().is_empty(), "{answer:?}");
}

#[tokio::test]
async fn a_token_then_a_refresh_succeeds_with_a_trace_id() {
    let emu = start(config()).await;
    let pan = Pan::new(&emu);
    let before = jiff::Timestamp::now();
    let answer = pan.token_as(ID, SECRET).await;
    assert_eq!((answer.status, answer.code()), (200, Some(0)), "{answer:?}");
    assert_eq!(answer.json["message"], "ok");
    assert!(!answer.trace_id().is_empty());
    let token = answer.token();
    assert!(token.len() >= 32, "{token}");
    let expired_at = answer.json["data"]["expiredAt"].as_str().unwrap();
    assert!(expired_at.ends_with("+08:00"), "{expired_at}");
    let expiry: jiff::Timestamp = expired_at.parse().unwrap();
    let lifetime = expiry.duration_since(before);
    assert!(
        (jiff::SignedDuration::from_secs(7200)..=jiff::SignedDuration::from_secs(7202))
            .contains(&lifetime),
        "{lifetime:?}"
    );

    let first = pan.refresh(&token).await;
    assert_eq!((first.status, first.code()), (200, Some(0)), "{first:?}");
    assert_eq!(first.json["message"], "ok");
    assert_eq!(first.json["data"], json!({}));
    let second = pan.refresh(&token).await;
    assert_eq!(second.code(), Some(0));
    assert_ne!(first.trace_id(), second.trace_id());
    assert_ne!(first.trace_id(), answer.trace_id());

    let stats = emu.stats().pan123;
    assert_eq!((stats.token_requests, stats.tokens_issued), (1, 1));
    assert_eq!((stats.refresh_calls, stats.refreshes), (2, 2));
    assert_eq!(stats.issued, [first.trace_id(), second.trace_id()]);
    assert_eq!((stats.rejected_tokens, stats.throttled), (0, 0));
}

#[tokio::test]
async fn wrong_client_credentials_are_refused_in_the_body() {
    let emu = start(config()).await;
    let pan = Pan::new(&emu);
    for (id, secret) in [(ID, "wrong"), ("someone-else", SECRET), ("", "")] {
        let answer = pan.token_as(id, secret).await;
        assert_refused(&answer, 200, 401);
        assert!(!answer.text.contains(SECRET), "{}", answer.text);
    }
    let missing = pan
        .send(
            pan.http
                .post(format!("{}{TOKEN_PATH}", pan.url))
                .header("Platform", "open_platform")
                .body("{}"),
        )
        .await
        .unwrap();
    assert_refused(&missing, 200, 401);
    let garbled = pan
        .send(
            pan.http
                .post(format!("{}{TOKEN_PATH}", pan.url))
                .header("Platform", "open_platform")
                .body("clientID=x"),
        )
        .await
        .unwrap();
    assert_refused(&garbled, 400, 400);

    let stats = emu.stats().pan123;
    assert_eq!(stats.rejected_credentials, 4);
    assert_eq!((stats.token_requests, stats.tokens_issued), (5, 0));
}

#[tokio::test]
async fn the_platform_header_is_required_everywhere() {
    let emu = start(config()).await;
    let pan = Pan::new(&emu);
    let token = pan.token().await;
    let body = json!({"clientID": ID, "clientSecret": SECRET});
    for platform in [None, Some("web"), Some("OPEN_PLATFORM")] {
        let mut request = pan
            .http
            .post(format!("{}{TOKEN_PATH}", pan.url))
            .json(&body);
        if let Some(value) = platform {
            request = request.header("Platform", value);
        }
        assert_refused(&pan.send(request).await.unwrap(), 403, 403);
    }
    let bare = pan.http.post(format!("{}{REFRESH_PATH}", pan.url));
    let answer = pan
        .send(bare.bearer_auth(&token).json(&json!({})))
        .await
        .unwrap();
    assert_refused(&answer, 403, 403);
    let stats = emu.stats().pan123;
    assert_eq!((stats.tokens_issued, stats.refreshes), (1, 0));
}

#[tokio::test]
async fn unknown_missing_and_expired_tokens_are_401() {
    let mut config = config();
    config.pan123.token_ttl = Duration::from_secs(1);
    let emu = start(config).await;
    let pan = Pan::new(&emu);

    assert_refused(&pan.refresh("never-issued").await, 401, 401);
    let no_header = pan.http.post(format!("{}{REFRESH_PATH}", pan.url));
    let answer = pan
        .send(no_header.header("Platform", "open_platform").body("{}"))
        .await
        .unwrap();
    assert_refused(&answer, 401, 401);
    assert_eq!(answer.json["message"], "token invalid");

    let answer = pan.token_as(ID, SECRET).await;
    let token = answer.token();
    assert_eq!(pan.refresh(&token).await.code(), Some(0));
    // The token lives until the second `expiredAt` names, and not past it.
    let expiry: jiff::Timestamp = answer.json["data"]["expiredAt"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let left = expiry.duration_since(jiff::Timestamp::now());
    let left = Duration::try_from(left).unwrap_or_default();
    tokio::time::sleep(left + Duration::from_millis(20)).await;
    assert_refused(&pan.refresh(&token).await, 401, 401);

    let fresh = pan.token().await;
    assert_eq!(pan.refresh(&fresh).await.code(), Some(0));
    let stats = emu.stats().pan123;
    assert_eq!((stats.rejected_tokens, stats.refreshes), (3, 2));
}

#[tokio::test]
async fn expire_tokens_ends_every_token_at_once() {
    let emu = start(config()).await;
    let pan = Pan::new(&emu);
    let (a, b) = (pan.token().await, pan.token().await);
    assert_ne!(a, b);
    assert_eq!(
        pan.refresh(&a).await.code(),
        Some(0),
        "an older token stays valid"
    );
    emu.expire_tokens();
    assert_refused(&pan.refresh(&a).await, 401, 401);
    assert_refused(&pan.refresh(&b).await, 401, 401);
    let c = pan.token().await;
    assert_eq!(pan.refresh(&c).await.code(), Some(0));
    assert_eq!(emu.stats().pan123.rejected_tokens, 2);
}

#[tokio::test]
async fn refresh_and_token_calls_are_throttled() {
    let mut config = config();
    config.pan123.refresh_per_sec = 1.0;
    config.pan123.token_per_sec = 2.0;
    let emu = start(config).await;
    let pan = Pan::new(&emu);
    let token = pan.token().await;
    let _second = pan.token().await;
    let third = pan.token_as(ID, SECRET).await;
    assert_refused(&third, 429, 429);
    assert_eq!(third.retry_after, None);

    assert_eq!(pan.refresh(&token).await.code(), Some(0));
    let again = pan.refresh(&token).await;
    assert_refused(&again, 429, 429);
    // A refused call spends nothing, and a bad token is refused before the limit is consulted.
    assert_refused(&pan.refresh("bogus").await, 401, 401);

    let stats = emu.stats().pan123;
    assert_eq!((stats.throttled, stats.token_throttled), (1, 1));
    assert_eq!((stats.refresh_calls, stats.refreshes), (3, 1));
    assert_eq!(stats.tokens_issued, 2);
}

#[tokio::test]
async fn body_only_errors_answer_http_200() {
    let mut config = config();
    config.pan123.body_only_errors = true;
    config.pan123.refresh_per_sec = 1.0;
    let emu = start(config).await;
    let pan = Pan::new(&emu);
    assert_refused(&pan.refresh("bogus").await, 200, 401);
    let token = pan.token().await;
    assert_eq!(pan.refresh(&token).await.code(), Some(0));
    assert_refused(&pan.refresh(&token).await, 200, 429);
    let bare = pan.http.post(format!("{}{REFRESH_PATH}", pan.url));
    assert_refused(&pan.send(bare.body("{}")).await.unwrap(), 200, 403);
}

/// Sends one refresh under a scripted fault of `kind`, then checks the next call succeeds.
async fn one_fault(kind: FaultKind) -> (Result<Answer, reqwest::Error>, Stats) {
    let mut config = config();
    config.faults = FaultPlan {
        fail_next: Some(ScriptedFaults { count: 1, kind }),
        slow_delay_ms: 2_000,
        ..FaultPlan::default()
    };
    let emu = start(config).await;
    let token = Pan::new(&emu).token().await;
    let pan = Pan::with_timeout(&emu.url(), Duration::from_millis(500));
    let result = pan.try_refresh(&token).await;
    let stats = emu.stats();
    assert_eq!(stats.faults.get(kind.as_str()), Some(&1), "{kind}");
    assert!(
        stats.pan123.token_faults.is_empty(),
        "the token was not faulted"
    );
    let next = Pan::new(&emu).refresh(&token).await;
    assert_eq!(next.code(), Some(0), "only one request fails: {next:?}");
    (result, stats)
}

#[tokio::test]
async fn each_fault_kind_is_rendered_in_123pan_format() {
    let (r, _) = one_fault(FaultKind::Http503).await;
    let r = r.unwrap();
    assert_eq!((r.status, &r.json), (503, &Value::Null), "{r:?}");

    let (r, _) = one_fault(FaultKind::ServerError).await;
    let r = r.unwrap();
    assert_refused(&r, 200, 1);
    assert_eq!(r.json["message"], "internal error");

    for kind in [FaultKind::Quota, FaultKind::Qps, FaultKind::Throttle] {
        let (r, s) = one_fault(kind).await;
        let r = r.unwrap();
        assert_refused(&r, 429, 429);
        let retry = (kind == FaultKind::Throttle).then(|| "1".to_owned());
        assert_eq!(r.retry_after, retry, "{kind}");
        assert_eq!(s.pan123.throttled, 0, "a fault is not the rate limit");
    }

    let (r, _) = one_fault(FaultKind::Garbage).await;
    let r = r.unwrap();
    assert_eq!((r.status, &r.json), (200, &Value::Null), "{r:?}");
    assert!(!r.text.is_empty());

    let (r, s) = one_fault(FaultKind::Invalid).await;
    assert_refused(&r.unwrap(), 401, 401);
    assert_eq!(s.pan123.refreshes, 0);
}

#[tokio::test]
async fn transport_faults_and_drop_after_still_refreshes() {
    let (r, s) = one_fault(FaultKind::DropBefore).await;
    assert!(r.is_err(), "{r:?}");
    assert_eq!((s.pan123.refresh_calls, s.pan123.refreshes), (1, 0));

    let (r, s) = one_fault(FaultKind::DropAfter).await;
    assert!(r.is_err(), "{r:?}");
    assert_eq!((s.pan123.refresh_calls, s.pan123.refreshes), (1, 1));
    assert_eq!(
        s.pan123.issued.len(),
        1,
        "processed although never answered"
    );

    let (r, s) = one_fault(FaultKind::Slow).await;
    assert!(r.is_err_and(|e| e.is_timeout()));
    assert_eq!(
        s.pan123.refreshes, 0,
        "still sleeping when the client gave up"
    );
}

#[tokio::test]
async fn token_faults_make_renewal_fail_and_random_faults_spare_it() {
    let mut config = config();
    config.faults = FaultPlan {
        token_fail_next: Some(ScriptedFaults {
            count: 3,
            kind: FaultKind::Http503,
        }),
        random: Some(RandomFaults {
            rate: 1.0,
            seed: 5,
            kinds: vec![FaultKind::Qps],
        }),
        ..FaultPlan::default()
    };
    let emu = start(config).await;
    let pan = Pan::new(&emu);
    for _ in 0..3 {
        assert_eq!(pan.token_as(ID, SECRET).await.status, 503);
    }
    let token = pan.token().await;
    assert_refused(&pan.refresh(&token).await, 429, 429);
    let stats = emu.stats();
    assert_eq!(stats.pan123.token_faults.get("http-503"), Some(&3));
    assert_eq!(stats.faults.get("qps"), Some(&1));
    assert_eq!(stats.pan123.tokens_issued, 1);

    for (kind, status, code) in [
        (FaultKind::ServerError, 200, Some(1)),
        (FaultKind::Throttle, 429, Some(429)),
        (FaultKind::Invalid, 200, Some(401)),
        (FaultKind::Garbage, 200, None),
    ] {
        emu.set_faults(FaultPlan {
            token_fail_next: Some(ScriptedFaults { count: 1, kind }),
            ..FaultPlan::default()
        })
        .unwrap();
        let answer = pan.token_as(ID, SECRET).await;
        assert_eq!((answer.status, answer.code()), (status, code), "{kind}");
        assert!(answer.json["data"]["accessToken"].is_null(), "{kind}");
    }

    emu.set_faults(FaultPlan {
        token_fail_next: Some(ScriptedFaults {
            count: 1,
            kind: FaultKind::DropAfter,
        }),
        ..FaultPlan::default()
    })
    .unwrap();
    assert!(pan.try_token_as(ID, SECRET).await.is_err());
    assert_eq!(
        emu.stats().pan123.tokens_issued,
        2,
        "issued, never delivered"
    );
}

#[tokio::test]
async fn operator_endpoints_and_unknown_paths() {
    let emu = start(config()).await;
    let pan = Pan::new(&emu);
    let token = pan.token().await;
    pan.refresh(&token).await;

    let stats: Stats = pan
        .http
        .get(format!("{}/_emulator/stats", emu.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats, emu.stats());
    assert_eq!(stats.pan123.refreshes, 1);

    let plan = pan
        .http
        .post(format!("{}/_emulator/faults", emu.url()))
        .json(&json!({"token_fail_next": {"count": 1, "kind": "invalid"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(plan.status(), 200);
    assert_refused(&pan.token_as(ID, SECRET).await, 200, 401);
    assert_eq!(emu.stats().pan123.token_faults.get("invalid"), Some(&1));

    let get = pan
        .http
        .get(format!("{}{REFRESH_PATH}", emu.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 405);
    let unknown = pan
        .send(
            pan.http
                .post(format!("{}/api/v1/file/list", emu.url()))
                .header("Platform", "open_platform"),
        )
        .await
        .unwrap();
    assert_refused(&unknown, 404, 404);
}

/// `purgeq emulate` reads the 123pan pair from the environment (the secret from a file here),
/// takes the 123pan flags, and never prints the secret or a token, even at trace level.
#[cfg(unix)]
#[tokio::test]
async fn the_emulate_command_takes_pan123_credentials_from_the_environment() {
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

    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("pan123-secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let emulate = || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_purgeq"));
        command
            .args(["emulate", "--listen", "127.0.0.1:0"])
            .env_remove("QINIU_ACCESS_KEY")
            .env_remove("QINIU_SECRET_KEY")
            .env_remove("QINIU_SECRET_KEY_FILE")
            .env_remove("PAN123_CLIENT_ID")
            .env_remove("PAN123_CLIENT_SECRET")
            .env_remove("PAN123_CLIENT_SECRET_FILE")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    };

    let half = emulate().env("PAN123_CLIENT_ID", ID).output().unwrap();
    assert!(!half.status.success());
    let stderr = String::from_utf8_lossy(&half.stderr);
    assert!(stderr.contains("PAN123_CLIENT_SECRET"), "{stderr}");

    let child = emulate()
        .env("PAN123_CLIENT_ID", ID)
        .env("PAN123_CLIENT_SECRET_FILE", &secret_file)
        .env("RUST_LOG", "trace")
        .args(["--pan123-token-ttl", "90s", "--pan123-refresh-per-sec", "0"])
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

    let pan = Pan::with_timeout(&url, Duration::from_secs(5));
    let demo = emulator::pan123::DEMO_CLIENT_SECRET;
    assert_refused(
        &pan.token_as(emulator::pan123::DEMO_CLIENT_ID, demo).await,
        200,
        401,
    );
    let before = jiff::Timestamp::now();
    let answer = pan.token_as(ID, SECRET).await;
    let token = answer.token();
    let expiry: jiff::Timestamp = answer.json["data"]["expiredAt"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let lifetime = expiry.duration_since(before).as_secs();
    assert!((90..=92).contains(&lifetime), "{lifetime}");
    for _ in 0..3 {
        assert_eq!(pan.refresh(&token).await.code(), Some(0), "unthrottled");
    }

    common::signal(child, "-TERM");
    let output = reap.0.take().unwrap().wait_with_output().unwrap();
    assert!(output.status.success(), "{:?}", output.status);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("emulated 123pan request"),
        "trace logging is on: {stderr}"
    );
    assert!(
        stderr.contains("QINIU_ACCESS_KEY and QINIU_SECRET_KEY are not set"),
        "{stderr}"
    );
    assert!(!stderr.contains("PAN123_CLIENT_ID and"), "{stderr}");
    for needle in [SECRET, token.as_str(), demo] {
        assert!(!stderr.contains(needle), "{needle} leaked: {stderr}");
    }
}

//! `purgeq worker --http-listen`: the dashboard page and the read-only JSON API, driven through
//! the real binary against the emulator, on SQLite or PostgreSQL (`PURGEQ_TEST_BACKEND`).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use common::worker::{AK, SK, emulator, emulator_config, urls};
use common::{CLEARED, Scratch, count};
use purgeq::emulator::Emulator;
use serde_json::Value;

const XSS: &str = "<img src=x onerror=alert(1)>";
const TOKEN: &str = "dashboard-token-never-shown";

/// A worker process with its listener address and everything it logged.
struct Worker {
    child: Child,
    addr: String,
    log: Arc<Mutex<String>>,
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

fn worker_cmd(s: &Scratch, emu: &Emulator, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_purgeq"));
    cmd.arg("--db").arg(s.db_arg()).arg("worker");
    cmd.args(["--max-targets-per-sec", "0", "--max-requests-per-sec", "0"])
        .args(["--poll-interval", "100ms"])
        .args(extra);
    for var in CLEARED {
        cmd.env_remove(var);
    }
    cmd.env("QINIU_ACCESS_KEY", AK)
        .env("QINIU_SECRET_KEY", SK)
        .env("QINIU_ENDPOINT", emu.url())
        .env("RUST_LOG", "purgeq=info")
        // The emulator's tasks complete at once: confirm promptly.
        .env("PURGEQ_CONFIRM_INTERVAL", "20ms")
        .env_remove("NOTIFY_SOCKET");
    cmd
}

/// Starts the worker with `--http-listen 127.0.0.1:0` and waits for the address it logs.
fn start_worker(s: &Scratch, emu: &Emulator, extra: &[&str]) -> Worker {
    let mut child = worker_cmd(s, emu, &[&["--http-listen", "127.0.0.1:0"], extra].concat())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("worker starts");
    let (lines_tx, lines) = mpsc::channel();
    let stderr = child.stderr.take().expect("piped stderr");
    let log = Arc::new(Mutex::new(String::new()));
    let sink = Arc::clone(&log);
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().unwrap().push_str(&line);
            sink.lock().unwrap().push('\n');
            let _ = lines_tx.send(line);
        }
    });
    let mut worker = Worker {
        child,
        addr: String::new(),
        log,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Ok(line) = lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        if let Some(at) = line.find("dashboard on http://") {
            let rest = &line[at + "dashboard on http://".len()..];
            worker.addr = rest[..rest.find('/').expect("a path")].to_owned();
            return worker;
        }
    }
    panic!(
        "no dashboard address logged:\n{}",
        worker.log.lock().unwrap()
    );
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

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// GET `path` with an optional bearer token: status, headers, body.
async fn get(
    addr: &str,
    path: &str,
    token: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut req = reqwest::Client::new()
        .get(format!("http://{addr}{path}"))
        .timeout(Duration::from_secs(10));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let response = req.send().await.expect("the listener answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.text().await.expect("a body"))
}

async fn api(addr: &str, path: &str) -> Value {
    let (status, headers, body) = get(addr, path, None).await;
    assert_eq!(status, 200, "{path}: {body}");
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    assert!(headers.contains_key("content-security-policy"), "{path}");
    assert!(
        !body.contains(SK) && !body.contains(AK),
        "{path} shows a credential"
    );
    serde_json::from_str(&body).expect("JSON")
}

fn ids(jobs: &Value) -> Vec<i64> {
    jobs.as_array()
        .expect("a list of jobs")
        .iter()
        .map(|j| j["id"].as_i64().expect("an id"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_answers_in_the_shapes_of_status() {
    let s = Scratch::new();
    let emu = emulator(emulator_config()).await;
    enqueue(
        &s,
        "a.txt",
        &urls("cdn.example.com", 30),
        &["--tag", "build-1"],
    );
    enqueue(&s, "b.txt", &urls("img.example.com", 3), &["--tag", XSS]);
    enqueue(
        &s,
        "later.txt",
        &urls("late.example.com", 2),
        &["--delay", "1h"],
    );
    let worker = start_worker(
        &s,
        &emu,
        // The newest call asserted below is the send: without confirmation queries after it.
        &["--no-confirm"],
    );
    wait_for("the ready jobs to succeed", || {
        let status = s.status(&[]);
        count(&status, "qiniu", "succeeded") == 33 && count(&status, "qiniu", "running") == 0
    })
    .await;
    let status = s.status(&[]);
    let addr = &worker.addr;

    // The summary: status --json plus what the page draws.
    let summary = api(addr, "/api/v1/summary").await;
    assert_eq!(summary["counts"], status["counts"]);
    assert_eq!(summary["lanes"], status["lanes"]);
    assert_eq!(summary["oldest_queued_at"], status["oldest_queued_at"]);
    assert_eq!(ids(&summary["jobs"]), ids(&status["jobs"])[..20].to_vec());
    let hours = summary["hours"].as_array().unwrap();
    let sum = |k: &str| hours.iter().map(|h| h[k].as_i64().unwrap()).sum::<i64>();
    assert_eq!(
        (sum("enqueued"), sum("succeeded"), sum("failed")),
        (35, 33, 0)
    );
    assert_eq!(summary["finish_ms"]["count"], 33);
    assert!(summary["finish_ms"]["p50"].as_i64().unwrap() >= 0);
    assert!(!summary["calls"].as_array().unwrap().is_empty());
    assert_eq!(summary["calls"][0]["outcome"], "accepted");
    assert_eq!(summary["failed"], Value::Array(vec![]));

    let lanes = api(addr, "/api/v1/lanes").await;
    assert_eq!(lanes["lanes"], status["lanes"]);

    // Paging walks every job once, newest first, as status lists them.
    let mut walked = Vec::new();
    let mut path = "/api/v1/jobs?limit=7".to_owned();
    loop {
        let page = api(addr, &path).await;
        walked.extend(ids(&page["jobs"]));
        match page["next_before"].as_i64() {
            Some(before) => path = format!("/api/v1/jobs?limit=7&before={before}"),
            None => break,
        }
    }
    assert_eq!(walked, ids(&status["jobs"]));

    // The filters of status.
    let tagged = api(addr, "/api/v1/jobs?tag=build-1&state=succeeded").await;
    assert_eq!(
        ids(&tagged["jobs"]),
        ids(&s.status(&["--tag", "build-1"])["jobs"])
    );
    assert_eq!(tagged["jobs"].as_array().unwrap().len(), 30);
    let queued = api(addr, "/api/v1/jobs?state=queued&url=late.example").await;
    assert_eq!(queued["jobs"].as_array().unwrap().len(), 2);
    let recent = api(addr, "/api/v1/jobs?since=1h&provider=qiniu&limit=1000").await;
    assert_eq!(recent["jobs"].as_array().unwrap().len(), 35);

    // A tag of markup comes back escaped, and equal once decoded.
    let path = format!(
        "/api/v1/jobs?tag={}",
        url::form_urlencoded::byte_serialize(XSS.as_bytes()).collect::<String>()
    );
    let (_, _, raw) = get(addr, &path, None).await;
    assert!(
        raw.contains("\\u003cimg src=x onerror=alert(1)\\u003e"),
        "{raw}"
    );
    assert!(!raw.contains('<'), "{raw}");
    let marked: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(marked["jobs"].as_array().unwrap().len(), 3);
    assert_eq!(marked["jobs"][0]["tag"], XSS);

    // One job with its calls, as `status ID --json`.
    let id = walked[5];
    let one = api(addr, &format!("/api/v1/jobs/{id}")).await;
    assert_eq!(one, s.json(&["status", &id.to_string()]));
    assert!(!one["calls"].as_array().unwrap().is_empty());

    // Bad input names the input; unknown ids and paths are 404.
    let (code, _, body) = get(addr, "/api/v1/jobs?limit=0", None).await;
    assert_eq!(code, 400);
    assert!(body.contains("limit"), "{body}");
    let (code, _, body) = get(addr, "/api/v1/jobs?state=lost", None).await;
    assert_eq!(code, 400);
    assert!(body.contains("state"), "{body}");
    assert_eq!(get(addr, "/api/v1/jobs/999999", None).await.0, 404);
    assert_eq!(get(addr, "/api/v1/jobs/x", None).await.0, 400);
    assert_eq!(get(addr, "/nope", None).await.0, 404);
    let posted = reqwest::Client::new()
        .post(format!("http://{addr}/api/v1/summary"))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status().as_u16(), 405);

    // The page: no inline script, a strict CSP, assets from this host only.
    let (code, headers, page) = get(addr, "/", None).await;
    assert_eq!(code, 200);
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("default-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert!(page.contains("<script src=\"/app.js\""));
    assert!(!page.contains("<script>") && !page.contains("http://") && !page.contains("https://"));
    let (code, headers, js) = get(addr, "/app.js", None).await;
    assert_eq!(code, 200);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    assert!(!js.contains("innerHTML"));
    assert_eq!(get(addr, "/app.css", None).await.0, 200);
    assert_eq!(get(addr, "/metrics", None).await.0, 200);
    assert!(!worker.log.lock().unwrap().contains(SK));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_guards_every_path() {
    let s = Scratch::new();
    let emu = emulator(emulator_config()).await;
    let token_file = s.path("token");
    common::write(&token_file, &format!("{TOKEN}\n"));
    let worker = start_worker(
        &s,
        &emu,
        &["--http-token-file", token_file.to_str().unwrap()],
    );
    let addr = &worker.addr;
    for path in [
        "/",
        "/app.js",
        "/api/v1/summary",
        "/api/v1/jobs",
        "/metrics",
    ] {
        let (code, headers, body) = get(addr, path, None).await;
        assert_eq!(code, 401, "{path} without a token");
        assert_eq!(headers["www-authenticate"], "Bearer");
        assert!(headers.contains_key("content-security-policy"));
        assert!(!body.contains(TOKEN));
        assert_eq!(
            get(addr, path, Some("wrong")).await.0,
            401,
            "{path} with a wrong token"
        );
        assert_eq!(get(addr, path, Some(&format!("{TOKEN}x"))).await.0, 401);
        let (code, _, body) = get(addr, path, Some(TOKEN)).await;
        assert_eq!(code, 200, "{path} with the token");
        assert!(!body.contains(TOKEN), "{path} shows the token");
    }
    assert!(
        !worker.log.lock().unwrap().contains(TOKEN),
        "the token is logged"
    );
    drop(worker);

    // /metrics may be exempted, explicitly; the rest stays guarded.
    let worker = start_worker(
        &s,
        &emu,
        &[
            "--http-token-file",
            token_file.to_str().unwrap(),
            "--metrics-without-token",
        ],
    );
    assert_eq!(get(&worker.addr, "/metrics", None).await.0, 200);
    assert_eq!(get(&worker.addr, "/api/v1/summary", None).await.0, 401);
    assert_eq!(get(&worker.addr, "/", None).await.0, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_address_needs_a_token() {
    let s = Scratch::new();
    let emu = emulator(emulator_config()).await;
    let out = worker_cmd(&s, &emu, &["--http-listen", "0.0.0.0:0"])
        .output()
        .expect("worker runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("0.0.0.0:0") && err.contains("--http-token-file"),
        "{err}"
    );

    let empty = s.path("empty");
    common::write(&empty, "\n");
    let out = worker_cmd(
        &s,
        &emu,
        &[
            "--http-listen",
            "127.0.0.1:0",
            "--http-token-file",
            empty.to_str().unwrap(),
        ],
    )
    .output()
    .expect("worker runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("empty"), "{err}");

    // The token may come from the environment, naming a file.
    let token_file = s.path("token");
    common::write(&token_file, TOKEN);
    let mut worker_env = worker_cmd(&s, &emu, &["--http-listen", "127.0.0.1:0", "--once"]);
    worker_env.env("PURGEQ_HTTP_TOKEN_FILE", &token_file);
    let out = worker_env.output().expect("worker runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains(TOKEN));
}

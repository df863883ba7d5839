//! Secrets never reach a log line, at any level, in text or JSON, nor `status` output.

mod common;

use std::process::{Command, Stdio};

use common::Scratch;
use common::worker::{AK, CLIENT_ID, CLIENT_SECRET, SK, emulator, emulator_config, urls};
use purgeq::model::Provider;

async fn worker_logs(s: &Scratch, endpoint: &str, format: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_purgeq"))
        .arg("--db")
        .arg(s.db_arg())
        .args([
            "--log-format",
            format,
            "-vv",
            "worker",
            "--once",
            "--max-targets-per-sec",
            "0",
            "--max-requests-per-sec",
            "0",
        ])
        .env("RUST_LOG", "trace")
        // Confirm at once: the task-list queries are logged too, and must hold no secret.
        .env("PURGEQ_CONFIRM_INTERVAL", "20ms")
        .env("QINIU_ACCESS_KEY", AK)
        .env("QINIU_SECRET_KEY", SK)
        .env("QINIU_ENDPOINT", endpoint)
        .env("PAN123_CLIENT_ID", CLIENT_ID)
        .env("PAN123_CLIENT_SECRET", CLIENT_SECRET)
        .env("PAN123_ENDPOINT", endpoint)
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::stderr(&out));
    common::stderr(&out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_log_line_holds_a_secret_or_a_token_in_text_or_json() {
    for format in ["text", "json"] {
        let s = Scratch::new();
        let emu = emulator(emulator_config()).await;
        let file = s.path("t.txt");
        common::write(&file, &urls("cdn.example.com", 5).join("\n"));
        s.cmd(&["enqueue", "--provider", "123pan"])
            .assert()
            .success();
        s.cmd(&["enqueue", "--file"]).arg(&file).assert().success();
        let mut logs = worker_logs(&s, &emu.url(), format).await;
        // Then a refused token, so the renewal path logs too.
        emu.expire_tokens();
        s.cmd(&["enqueue", "--provider", "123pan"])
            .assert()
            .success();
        logs += &worker_logs(&s, &emu.url(), format).await;
        assert_eq!(emu.stats().pan123.token_requests, 2);
        assert!(
            logs.contains("provider call"),
            "the worker logged its calls:\n{logs}"
        );
        let store = s.store().await;
        let token = store
            .token(Provider::Pan123, "default")
            .await
            .unwrap()
            .expect("a cached token");
        for secret in [SK, CLIENT_SECRET, token.token.expose()] {
            assert!(!logs.contains(secret), "{format} logs leak a secret");
        }
        let status = common::stdout(&s.cmd(&["status", "--json"]).output().unwrap())
            + &common::stdout(&s.cmd(&["status"]).output().unwrap());
        for secret in [SK, CLIENT_SECRET, token.token.expose()] {
            assert!(!status.contains(secret), "status leaks a secret");
        }
        assert_eq!(common::count(&s.status(&[]), "qiniu", "succeeded"), 5);
        assert_eq!(common::count(&s.status(&[]), "123pan", "succeeded"), 2);
    }
}

//! The worker under systemd's notify protocol: a test-owned datagram socket plays systemd.

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::Scratch;
use common::worker::{AK, SK, emulator, emulator_config};

/// Every datagram line the worker sends, with when it arrived.
fn listen(socket: UnixDatagram) -> mpsc::Receiver<(Instant, String)> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 4096];
        while let Ok(n) = socket.recv(&mut buf) {
            for line in String::from_utf8_lossy(&buf[..n]).lines() {
                if tx.send((Instant::now(), line.to_owned())).is_err() {
                    return;
                }
            }
        }
    });
    rx
}

fn wait_for_message(
    rx: &mpsc::Receiver<(Instant, String)>,
    seen: &mut Vec<(Instant, String)>,
    pred: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (at, msg) = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no matching message; got {seen:?}"));
        seen.push((at, msg.clone()));
        if pred(&msg) {
            return msg;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_speaks_the_notify_protocol() {
    let s = Scratch::new();
    let emu = emulator(emulator_config()).await;
    let socket_path = s.path("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    let rx = listen(socket);
    let mut child = Command::new(env!("CARGO_BIN_EXE_purgeq"))
        .arg("--db")
        .arg(s.db_arg())
        .args(["worker", "--poll-interval", "100ms"])
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "1000000")
        .env("QINIU_ACCESS_KEY", AK)
        .env("QINIU_SECRET_KEY", SK)
        .env("QINIU_ENDPOINT", emu.url())
        .env_remove("PAN123_CLIENT_ID")
        .env_remove("PAN123_CLIENT_SECRET")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut seen = Vec::new();

    wait_for_message(&rx, &mut seen, |m| m == "READY=1");
    let count = "SELECT COUNT(*) FROM _sqlx_migrations";
    let applied: i64 = match s.db_arg().into_string().unwrap() {
        url if url.starts_with("postgres") => {
            let pool = sqlx::PgPool::connect(&url).await.unwrap();
            sqlx::query_scalar(count).fetch_one(&pool).await.unwrap()
        }
        path => {
            let pool = sqlx::SqlitePool::connect(&format!("sqlite://{path}?mode=ro"))
                .await
                .unwrap();
            sqlx::query_scalar(count).fetch_one(&pool).await.unwrap()
        }
    };
    assert!(applied >= 1, "READY=1 came before the migrations");

    let first = wait_for_message(&rx, &mut seen, |m| m.starts_with("STATUS="));
    assert_eq!(first, "STATUS=0 queued, 0 running");
    // 123pan has no credentials here, so its job stays queued and shows in the status line.
    s.cmd(&["enqueue", "--provider", "123pan"])
        .assert()
        .success();
    wait_for_message(&rx, &mut seen, |m| m == "STATUS=1 queued, 0 running");

    let start = Instant::now();
    let mut feeds = 0;
    while start.elapsed() < Duration::from_secs(1) {
        if let Ok((_, m)) = rx.recv_timeout(Duration::from_millis(50)) {
            feeds += usize::from(m == "WATCHDOG=1");
        }
    }
    assert!(
        feeds >= 2,
        "WATCHDOG=1 {feeds} times in the 1 s WATCHDOG_USEC interval"
    );

    common::signal(&child, "-TERM");
    wait_for_message(&rx, &mut seen, |m| m == "STOPPING=1");
    assert!(child.wait().unwrap().success());
}

#[test]
fn a_worker_with_no_credentials_at_all_refuses_to_start() {
    let s = Scratch::new();
    let out = s.cmd(&["worker", "--once"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        common::stderr(&out).contains("no provider has credentials"),
        "{}",
        common::stderr(&out)
    );
}

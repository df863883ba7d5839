//! Wake-ups and the enqueue fast path, on the backend the suite runs on.
//!
//! A worker polling once a minute still sends a new job within seconds: enqueue wakes it
//! (PostgreSQL `NOTIFY`, SQLite `PRAGMA data_version`). On PostgreSQL, a listener connection
//! that is killed is re-established and wake-ups resume. An enqueue into a database with an
//! older schema still migrates it.

mod common;

use std::process::Child;
use std::time::Duration;

use common::worker::{emulator, emulator_config};
use common::{Scratch, wait_for};
use purgeq::emulator::Emulator;

/// Far below the poll interval the workers here use (60 s): only a wake-up finds a job this soon.
const SOON: Duration = Duration::from_secs(10);

fn purged(emu: &Emulator, url: &str) -> bool {
    emu.stats().qiniu.purged.contains_key(url)
}

/// Enqueues `url` and waits until the emulator has purged it.
async fn sent_soon(s: &Scratch, emu: &Emulator, url: &str) {
    s.cmd(&["enqueue", url]).assert().success();
    wait_for(&format!("{url} to be purged"), SOON, || purged(emu, url)).await;
}

/// A worker polling once a minute, after its start-up poll found nothing.
async fn idle_worker(s: &Scratch, emu: &Emulator) -> Child {
    let child = common::worker_cmd_polling(&s.db_arg(), emu, "60s")
        .args(["--max-requests-per-sec", "0"])
        .spawn()
        .expect("worker starts");
    // The first job may be found by the worker's start-up poll; it also shows it is up.
    sent_soon(s, emu, "https://cdn.example.com/first").await;
    child
}

fn stop(child: &Child) {
    common::signal(child, "-TERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_polling_once_a_minute_sends_a_new_job_within_seconds() {
    let s = Scratch::new();
    let emu = emulator(emulator_config()).await;
    let mut child = idle_worker(&s, &emu).await;
    for n in 0..3 {
        sent_soon(&s, &emu, &format!("https://cdn.example.com/next-{n}")).await;
    }
    stop(&child);
    assert!(child.wait().unwrap().success());
    assert_eq!(emu.stats().qiniu.purged.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_job_wakes_an_idle_worker() {
    let s = Scratch::new();
    let emu = emulator(emulator_config()).await;
    s.cmd(&["enqueue", "https://cdn.example.com/cancelled"])
        .assert()
        .success();
    s.cmd(&["cancel", "1"]).assert().success();
    let mut child = idle_worker(&s, &emu).await;
    s.cmd(&["retry", "1"]).assert().success();
    wait_for("the retried job to be purged", SOON, || {
        purged(&emu, "https://cdn.example.com/cancelled")
    })
    .await;
    stop(&child);
    assert!(child.wait().unwrap().success());
}

/// The pid of the worker's `LISTEN` connection, if it has one.
async fn listener_pid(pool: &sqlx::PgPool) -> Option<i32> {
    sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() \
         AND query LIKE 'LISTEN %'",
    )
    .fetch_optional(pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_a_killed_listener_comes_back_and_wakes_the_worker_again() {
    if common::postgres_admin().is_none() {
        eprintln!("skipped: PostgreSQL only (PURGEQ_TEST_BACKEND=postgres)");
        return;
    }
    let s = Scratch::new();
    let emu = emulator(emulator_config()).await;
    let mut child = idle_worker(&s, &emu).await;
    let url = s.db_arg().into_string().unwrap();
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let old = listener_pid(&pool).await.expect("the worker listens");
    let killed: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(old)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(killed);
    let deadline = std::time::Instant::now() + SOON;
    loop {
        match listener_pid(&pool).await {
            Some(pid) if pid != old => break,
            _ => assert!(
                std::time::Instant::now() < deadline,
                "the listener never came back"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sent_soon(&s, &emu, "https://cdn.example.com/after-the-kill").await;
    pool.close().await;
    stop(&child);
    assert!(child.wait().unwrap().success());
}

/// The newest migration of the suite's backend, and a migrator holding only the oldest one.
async fn migrations() -> (i64, sqlx::migrate::Migrator, tempfile::TempDir) {
    let backend = if common::postgres_admin().is_some() {
        "postgres"
    } else {
        "sqlite"
    };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(backend);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let newest: i64 = files.last().unwrap().file_name().unwrap().to_str().unwrap()[..14]
        .parse()
        .unwrap();
    let old = tempfile::tempdir().unwrap();
    std::fs::copy(&files[0], old.path().join(files[0].file_name().unwrap())).unwrap();
    let migrator = sqlx::migrate::Migrator::new(old.path()).await.unwrap();
    (newest, migrator, old)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enqueue_into_an_older_schema_migrates_it() {
    let s = Scratch::new();
    let (newest, old, _dir) = migrations().await;
    let arg = s.db_arg().into_string().unwrap();
    let applied = "SELECT MAX(version) FROM _sqlx_migrations WHERE success";
    let version: i64 = if arg.starts_with("postgres") {
        let pool = sqlx::PgPool::connect(&arg).await.unwrap();
        old.run(&pool).await.unwrap();
        pool.close().await;
        s.cmd(&["enqueue", "https://cdn.example.com/a"])
            .assert()
            .success();
        let pool = sqlx::PgPool::connect(&arg).await.unwrap();
        sqlx::query_scalar(applied).fetch_one(&pool).await.unwrap()
    } else {
        let url = format!("sqlite://{arg}?mode=rwc");
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        old.run(&pool).await.unwrap();
        pool.close().await;
        s.cmd(&["enqueue", "https://cdn.example.com/a"])
            .assert()
            .success();
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        sqlx::query_scalar(applied).fetch_one(&pool).await.unwrap()
    };
    assert!(newest > 20261123000000);
    assert_eq!(version, newest);
    assert_eq!(common::count(&s.status(&[]), "qiniu", "queued"), 1);
}

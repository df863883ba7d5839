//! Helpers shared by the integration tests: a scratch database and the real binary.
#![allow(dead_code)]

pub mod soak;
pub mod worker;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::Command;
use purgeq::emulator::Emulator;
use purgeq::store::{Durability, Location, OpenOptions, Store};
use serde_json::Value;
use tempfile::TempDir;

/// The admin URL of the PostgreSQL server the suite runs on, when `PURGEQ_TEST_BACKEND=postgres`
/// (`scripts/test.sh` sets it up); `None` runs the suite on SQLite.
pub fn postgres_admin() -> Option<String> {
    (std::env::var("PURGEQ_TEST_BACKEND").as_deref() == Ok("postgres")).then(|| {
        std::env::var("PURGEQ_TEST_PG").expect("PURGEQ_TEST_BACKEND=postgres needs PURGEQ_TEST_PG")
    })
}

/// Says so and returns true when a SQLite-only test runs on PostgreSQL.
pub fn skip_on_postgres(why: &str) -> bool {
    skip_on("PostgreSQL", postgres_admin().is_some(), why)
}

/// Says so and returns true when a PostgreSQL-only test runs on SQLite.
pub fn skip_on_sqlite(why: &str) -> bool {
    skip_on("SQLite", postgres_admin().is_none(), why)
}

fn skip_on(backend: &str, on_it: bool, why: &str) -> bool {
    if on_it {
        eprintln!("skipped on {backend}: {why}");
    }
    on_it
}

pub fn psql(admin: &str, sql: &str) {
    let out = std::process::Command::new("psql")
        .args([admin, "-qtAc", sql])
        .output()
        .expect("psql runs");
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Environment variables of the developer's shell that must not reach the processes under test.
pub const CLEARED: [&str; 12] = [
    "PURGEQ_DB",
    "PURGEQ_HTTP_TOKEN_FILE",
    "QINIU_ACCESS_KEY",
    "QINIU_SECRET_KEY",
    "QINIU_SECRET_KEY_FILE",
    "QINIU_ENDPOINT",
    "PAN123_CLIENT_ID",
    "PAN123_CLIENT_SECRET",
    "PAN123_CLIENT_SECRET_FILE",
    "PAN123_ENDPOINT",
    "RUST_LOG",
    "PURGEQ_CONFIG",
];

/// A scratch directory and one queue database: a SQLite file in the directory, or a fresh
/// PostgreSQL database dropped when the scratch is.
pub struct Scratch {
    pub dir: TempDir,
    pg: Option<(String, String)>,
}

impl Scratch {
    pub fn new() -> Self {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let pg = postgres_admin().map(|admin| {
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let name = format!("purgeq_t{}_{n}_{}", std::process::id(), fastrand::u32(..));
            psql(&admin, &format!("CREATE DATABASE {name}"));
            let mut url = url::Url::parse(&admin).expect("admin URL");
            url.set_path(&name);
            (admin, url.to_string())
        });
        Scratch {
            dir: tempfile::tempdir().expect("temp dir"),
            pg,
        }
    }

    /// The SQLite file (meaningful on SQLite only).
    pub fn db(&self) -> PathBuf {
        self.dir.path().join("queue.db")
    }

    /// What `--db` gets: the SQLite path or the PostgreSQL URL.
    pub fn db_arg(&self) -> std::ffi::OsString {
        match &self.pg {
            Some((_, url)) => url.into(),
            None => self.db().into_os_string(),
        }
    }

    /// The store, opened in-process.
    pub async fn store(&self) -> Store {
        let location = match &self.pg {
            Some((_, url)) => Location::Postgres(url.clone()),
            None => Location::Sqlite(self.db()),
        };
        Store::connect(&location, &OpenOptions::new(Durability::Normal))
            .await
            .expect("store opens")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `purgeq --db <scratch> ARGS...` with a clean environment for credentials.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_purgeq"));
        cmd.arg("--db").arg(self.db_arg()).args(args);
        for var in CLEARED {
            cmd.env_remove(var);
        }
        // A worker confirms promptly: the in-process emulator's tasks complete at once.
        cmd.env("PURGEQ_CONFIRM_INTERVAL", "20ms");
        cmd
    }

    /// Runs `purgeq ARGS --json` (for commands that take --json) and parses stdout.
    pub fn json(&self, args: &[&str]) -> Value {
        let out = self.cmd(args).arg("--json").output().expect("run purgeq");
        assert!(
            out.status.success(),
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("JSON on stdout")
    }

    /// Writes `targets` to the scratch file `name` and enqueues them with `enqueue --file`.
    pub fn enqueue_file(&self, name: &str, targets: &[String]) {
        let file = self.path(name);
        write(&file, &targets.join("\n"));
        self.cmd(&["enqueue", "--file"])
            .arg(&file)
            .assert()
            .success();
    }

    /// `status --json` filtered by extra args.
    pub fn status(&self, args: &[&str]) -> Value {
        let mut all = vec!["status", "--limit", "100000"];
        all.extend_from_slice(args);
        self.json(&all)
    }

    /// The jobs `status` lists, oldest first.
    pub fn jobs(&self, args: &[&str]) -> Vec<Value> {
        let mut jobs = self.status(args)["jobs"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        jobs.reverse();
        jobs
    }
}

/// The count of jobs in `state` for `provider` in a `status --json` summary.
pub fn count(status: &Value, provider: &str, state: &str) -> i64 {
    status["counts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["provider"] == provider && c["state"] == state)
        .map(|c| c["count"].as_i64().unwrap_or(0))
        .sum()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write file");
}

/// Polls `cond` every 20 ms until it holds; fails naming `what` after `limit`.
pub async fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends `sig` (as `kill` spells it, e.g. `-TERM`) to `child`.
pub fn signal(child: &Child, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(ok.success());
}

/// `purgeq --db DB worker`, unpaced for targets, polling every 100 ms, with the test Qiniu
/// credentials pointed at `emu`, the developer's environment cleared, stdout discarded and
/// stderr piped. Callers add their flags.
pub fn worker_cmd(db: &OsStr, emu: &Emulator) -> std::process::Command {
    worker_cmd_polling(db, emu, "100ms")
}

/// [`worker_cmd`] polling every `poll` (e.g. `60s`, to show that wake-ups, not polls, find new
/// jobs).
pub fn worker_cmd_polling(db: &OsStr, emu: &Emulator, poll: &str) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_purgeq"));
    for var in CLEARED {
        cmd.env_remove(var);
    }
    cmd.env_remove("NOTIFY_SOCKET")
        .arg("--db")
        .arg(db)
        .arg("worker")
        .args(["--max-targets-per-sec", "0", "--poll-interval", poll])
        .env("PURGEQ_CONFIRM_INTERVAL", "20ms")
        .env("QINIU_ACCESS_KEY", worker::AK)
        .env("QINIU_SECRET_KEY", worker::SK)
        .env("QINIU_ENDPOINT", emu.url())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some((admin, url)) = &self.pg {
            let name = url.rsplit('/').next().unwrap_or_default();
            let _ = std::process::Command::new("psql")
                .args([
                    admin.as_str(),
                    "-qtAc",
                    &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                ])
                .output();
        }
    }
}

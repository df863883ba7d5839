//! Helpers shared by the integration tests: a scratch database and the real binary.
#![allow(dead_code)]

pub mod worker;

use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;
use serde_json::Value;
use tempfile::TempDir;

/// A scratch directory holding one queue database.
pub struct Scratch {
    pub dir: TempDir,
}

impl Scratch {
    pub fn new() -> Self {
        Scratch {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn db(&self) -> PathBuf {
        self.dir.path().join("queue.db")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `purgeq --db <scratch> ARGS...` with a clean environment for credentials.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_purgeq"));
        cmd.arg("--db").arg(self.db()).args(args);
        for var in [
            "PURGEQ_DB",
            "QINIU_ACCESS_KEY",
            "QINIU_SECRET_KEY",
            "QINIU_SECRET_KEY_FILE",
            "QINIU_ENDPOINT",
            "PAN123_CLIENT_ID",
            "PAN123_CLIENT_SECRET",
            "PAN123_CLIENT_SECRET_FILE",
            "PAN123_ENDPOINT",
            "RUST_LOG",
        ] {
            cmd.env_remove(var);
        }
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

//! `purgeq enqueue`: targets from arguments, stdin and files; all-or-nothing validation;
//! concurrent producers.

mod common;

use common::{Scratch, count, stderr, stdout, write};

#[test]
fn enqueues_from_arguments_and_normalizes_targets() {
    let s = Scratch::new();
    let out = s.json(&[
        "enqueue",
        "--tag",
        "build-1",
        "HTTP://CDN.Example.com:80/a.js",
        "https://cdn.example.com/b.css",
    ]);
    assert_eq!(out["queued"], 2);
    assert_eq!(out["ids"].as_array().map(Vec::len), Some(2));
    let jobs = s.jobs(&[]);
    let targets: Vec<&str> = jobs.iter().filter_map(|j| j["target"].as_str()).collect();
    assert_eq!(
        targets,
        [
            "http://cdn.example.com/a.js",
            "https://cdn.example.com/b.css"
        ]
    );
    assert!(
        jobs.iter().all(|j| j["state"] == "queued"
            && j["tag"] == "build-1"
            && j["action"] == "refresh_url")
    );
}

#[test]
fn enqueues_from_stdin_skipping_blanks_and_comments() {
    let s = Scratch::new();
    let input = "# changed files\nhttps://cdn.example.com/1\r\n\nhttps://cdn.example.com/2\nhttps://cdn.example.com/1\n";
    let out = s
        .cmd(&["enqueue", "-"])
        .write_stdin(input)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "queued 3 refresh_url jobs");
    assert_eq!(count(&s.status(&[]), "qiniu", "queued"), 3);
}

#[test]
fn enqueues_directories_and_prefetches_from_a_file() {
    let s = Scratch::new();
    let file = s.path("dirs.txt");
    write(
        &file,
        "https://cdn.example.com/assets/\nhttps://cdn.example.com/img/\n",
    );
    s.cmd(&["enqueue", "--dir", "--file"])
        .arg(&file)
        .assert()
        .success();
    s.cmd(&["enqueue", "--prefetch", "https://cdn.example.com/hot.js"])
        .assert()
        .success();
    let actions: Vec<String> = s
        .jobs(&[])
        .iter()
        .map(|j| j["action"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(actions, ["refresh_dir", "refresh_dir", "prefetch_url"]);
}

#[test]
fn one_bad_line_in_a_file_enqueues_nothing_and_names_every_bad_line() {
    let s = Scratch::new();
    s.cmd(&["enqueue", "https://cdn.example.com/existing"])
        .assert()
        .success();
    let file = s.path("targets.txt");
    write(
        &file,
        "https://cdn.example.com/1\nhttps://cdn.example.com/has space\nhttps://cdn.example.com/3\nftp://cdn.example.com/4\nhttps://cdn.example.com/5#frag\n",
    );
    let out = s.cmd(&["enqueue", "--file"]).arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = stderr(&out);
    assert!(
        err.contains("line 2:") && err.contains("whitespace"),
        "{err}"
    );
    assert!(
        err.contains("line 4:") && err.contains("scheme \"ftp\""),
        "{err}"
    );
    assert!(err.contains("line 5:") && err.contains("fragment"), "{err}");
    assert!(
        !err.contains("line 1:") && !err.contains("line 3:"),
        "{err}"
    );
    assert!(
        err.contains("3 of 5 targets rejected; nothing was queued"),
        "{err}"
    );
    assert_eq!(s.jobs(&[]).len(), 1, "only the earlier job is in the queue");
}

#[test]
fn directory_without_slash_and_wrong_action_for_provider_are_rejected() {
    let s = Scratch::new();
    let out = s
        .cmd(&["enqueue", "--dir", "https://cdn.example.com/assets"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains("argument 1") && stderr(&out).contains("must end with '/'"));
    let out = s
        .cmd(&[
            "enqueue",
            "--provider",
            "123pan",
            "--prefetch",
            "https://x.example/a",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains("123pan"), "{}", stderr(&out));
    let out = s.cmd(&["enqueue"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains("no targets"));
}

#[test]
fn a_123pan_refresh_needs_no_url() {
    let s = Scratch::new();
    s.cmd(&["enqueue", "--provider", "123pan"])
        .assert()
        .success();
    s.cmd(&[
        "enqueue",
        "--provider",
        "123pan",
        "https://x.123pan.cn/file.zip",
    ])
    .assert()
    .success();
    let jobs = s.jobs(&["--provider", "123pan"]);
    assert_eq!(jobs.len(), 2);
    assert!(jobs[0]["target"].is_null());
    assert_eq!(jobs[1]["target"], "https://x.123pan.cn/file.zip");
    assert!(jobs.iter().all(|j| j["action"] == "refresh_all"));
}

#[test]
fn delay_postpones_eligibility() {
    let s = Scratch::new();
    s.cmd(&["enqueue", "--delay", "10m", "https://cdn.example.com/later"])
        .assert()
        .success();
    let job = &s.jobs(&[])[0];
    let next = job["next_at"]
        .as_str()
        .unwrap()
        .parse::<jiff::Timestamp>()
        .unwrap();
    let created = job["created_at"]
        .as_str()
        .unwrap()
        .parse::<jiff::Timestamp>()
        .unwrap();
    assert_eq!(next.duration_since(created).as_secs(), 600);
    let out = s
        .cmd(&["enqueue", "--delay", "soon", "https://cdn.example.com/x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("soon"));
}

#[test]
fn the_database_directory_is_created() {
    if common::skip_on_postgres("SQLite database files") {
        return;
    }
    let s = Scratch::new();
    let nested = s.path("a/b/c/q.db");
    let mut cmd = assert_cmd::Command::new(env!("CARGO_BIN_EXE_purgeq"));
    cmd.env("PURGEQ_DB", &nested)
        .args(["enqueue", "https://cdn.example.com/x"])
        .assert()
        .success();
    assert!(nested.exists());
}

#[test]
fn the_default_database_follows_xdg_state_home_not_the_current_directory() {
    if common::skip_on_postgres("SQLite database files") {
        return;
    }
    let s = Scratch::new();
    let mut cmd = assert_cmd::Command::new(env!("CARGO_BIN_EXE_purgeq"));
    cmd.env_remove("PURGEQ_DB")
        .env_remove("STATE_DIRECTORY")
        .env("XDG_STATE_HOME", s.path("state"))
        .current_dir(s.dir.path())
        .args(["enqueue", "https://cdn.example.com/x"])
        .assert()
        .success();
    assert!(s.path("state/purgeq/purgeq.db").exists());
    let mut cmd = assert_cmd::Command::new(env!("CARGO_BIN_EXE_purgeq"));
    cmd.env_remove("PURGEQ_DB")
        .env("STATE_DIRECTORY", s.path("systemd"))
        .args(["enqueue", "https://cdn.example.com/x"])
        .assert()
        .success();
    assert!(s.path("systemd/purgeq.db").exists());
}

#[test]
fn eight_concurrent_producers_lose_nothing_and_never_see_a_locked_database() {
    let s = Scratch::new();
    let mut children = Vec::new();
    for p in 0..8 {
        let file = s.path(&format!("p{p}.txt"));
        let lines: String = (0..1000)
            .map(|i| format!("https://cdn.example.com/p{p}/{i}\n"))
            .collect();
        write(&file, &lines);
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_purgeq"));
        cmd.arg("--db")
            .arg(s.db_arg())
            .args(["enqueue", "--file"])
            .arg(&file);
        cmd.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        children.push(cmd.spawn().unwrap());
    }
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "producer failed: {}", stderr(&out));
        assert!(!stderr(&out).contains("locked"), "{}", stderr(&out));
    }
    assert_eq!(count(&s.status(&[]), "qiniu", "queued"), 8000);
}

#[test]
fn a_new_database_is_shared_with_the_group_and_nobody_else() {
    if common::skip_on_postgres("SQLite database files") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let s = Scratch::new();
    let db = s.path("state/purgeq/q.db");
    let mut cmd = assert_cmd::Command::new(env!("CARGO_BIN_EXE_purgeq"));
    cmd.arg("--db")
        .arg(&db)
        .args(["enqueue", "https://cdn.example.com/x"])
        .assert()
        .success();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(
        mode(db.parent().unwrap()),
        0o2770,
        "directory: owner and group, setgid"
    );
    assert_eq!(mode(&db), 0o660, "database: owner and group read-write");
    let wal = s.path("state/purgeq/q.db-wal");
    if wal.exists() {
        assert_eq!(mode(&wal), 0o660);
    }
}

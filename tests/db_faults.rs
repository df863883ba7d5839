//! Database faults seen through the real binary: a database that is read-only for its user, a
//! full disk, and a write lock held past the busy timeout. Each must end in a clear error and a
//! non-zero exit, and every job accepted before must still be there afterwards.
//!
//! Tests run as root here, and root ignores permission bits, so a read-only database is made by
//! running the binary as `nobody` (setpriv), else with `chattr +i`; a full disk and a read-only
//! file system need a tmpfs mount. Where the machine allows none of these, the test says
//! `skipped: <why>` on stderr (outside the captured output) and passes.

mod common;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::Scratch;
use serde_json::Value;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions as _, Connection as _};

/// The busy timeout the tests run the binary with, so that a lock test takes a second.
const BUSY_TIMEOUT: &str = "500ms";
/// The uid and gid of `nobody`, for running the binary without root's privileges.
const NOBODY: &str = "65534";

/// Reports a skipped test where `cargo test` shows it: libtest captures `eprintln!`, not this.
fn skip(test: &str, why: &str) {
    let _ = writeln!(std::io::stderr(), "{test}: skipped: {why}");
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Runs a helper program; `Err` holds why it failed.
fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// `purgeq --db DB ARGS` with a clean environment, run through `wrapper` (e.g. setpriv).
fn purgeq(wrapper: &[&str], db: &Path, args: &[&str]) -> Command {
    let bin = env!("CARGO_BIN_EXE_purgeq");
    let mut cmd = match wrapper.split_first() {
        Some((program, rest)) => {
            let mut cmd = Command::new(program);
            cmd.args(rest).arg(bin);
            cmd
        }
        None => Command::new(bin),
    };
    cmd.arg("--db").arg(db).args(args);
    for var in [
        "PURGEQ_DB",
        "RUST_LOG",
        "PAN123_CLIENT_ID",
        "PAN123_CLIENT_SECRET",
    ] {
        cmd.env_remove(var);
    }
    // A worker that got past the fault would call a port nobody listens on, never the Internet.
    cmd.env("PURGEQ_BUSY_TIMEOUT", BUSY_TIMEOUT)
        .env("QINIU_ACCESS_KEY", "ak")
        .env("QINIU_SECRET_KEY", "sk")
        .env("QINIU_ENDPOINT", "http://127.0.0.1:9")
        .stdin(Stdio::null());
    cmd
}

fn output(mut cmd: Command) -> Output {
    cmd.output().expect("run purgeq")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Enqueues `n` URLs named after `label` in one call, through stdin.
fn enqueue(wrapper: &[&str], db: &Path, label: &str, n: usize) -> Output {
    let mut cmd = purgeq(wrapper, db, &["enqueue", "-"]);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn purgeq");
    let lines: String = (0..n)
        .map(|i| format!("https://cdn.example.com/{label}/{i}.js\n"))
        .collect();
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || _ = stdin.write_all(lines.as_bytes()));
    let out = child.wait_with_output().expect("wait for purgeq");
    writer.join().expect("stdin writer");
    out
}

/// The sorted targets of every job in the database, read by root.
fn targets(db: &Path) -> Vec<String> {
    let out = output(purgeq(&[], db, &["status", "--limit", "100000", "--json"]));
    assert!(out.status.success(), "status: {}", text(&out.stderr));
    let status: Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    let mut targets: Vec<String> = status["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .map(|j| j["target"].as_str().unwrap_or_default().to_owned())
        .collect();
    targets.sort();
    targets
}

/// Asserts a refused command: the exit code, no panic, and `words` in its message.
fn assert_fails_with(out: &Output, words: &[&str], what: &str) {
    let err = text(&out.stderr);
    assert!(!err.contains("panicked"), "{what}: {err}");
    assert_eq!(out.status.code(), Some(1), "{what}: {err}");
    for word in words {
        assert!(err.contains(word), "{what}: no {word:?} in: {err}");
    }
}

/// Closes the database cleanly, so that the `-wal` and `-shm` files are gone.
async fn checkpoint(db: &Path) {
    let mut conn = SqliteConnectOptions::new()
        .filename(db)
        .connect()
        .await
        .expect("open the database");
    sqlx::raw_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&mut conn)
        .await
        .expect("checkpoint");
    conn.close().await.expect("close");
}

/// The database's files: the file itself and whichever of `-wal` and `-shm` exist.
fn db_files(db: &Path) -> Vec<PathBuf> {
    ["", "-wal", "-shm"]
        .iter()
        .map(|suffix| PathBuf::from(format!("{}{suffix}", db.display())))
        .filter(|p| p.exists())
        .collect()
}

/// A tmpfs mounted over a directory, unmounted (lazily, so never left behind) when dropped.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        if !is_root() {
            return Err("mounting a tmpfs needs root".to_owned());
        }
        let dir_text = dir.to_str().expect("UTF-8 temp dir");
        run(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "tmpfs",
                dir_text,
            ],
        )?;
        Ok(Tmpfs {
            dir: dir.to_owned(),
        })
    }

    fn remount(&self, options: &str) -> Result<(), String> {
        let dir = self.dir.to_str().expect("UTF-8 temp dir");
        run("mount", &["-o", &format!("remount,{options}"), dir])
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

// ---------------------------------------------------------------------------------------------
// A database that is read-only for its user.

/// Undoes [`make_read_only`] when dropped.
struct Writable {
    dir: PathBuf,
    files: Vec<PathBuf>,
    immutable: bool,
}

impl Drop for Writable {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt as _;
        if self.immutable {
            let mut args = vec!["-i".to_owned()];
            args.extend(self.files.iter().map(|f| f.display().to_string()));
            let _ = Command::new("chattr").args(&args).status();
        }
        let _ = std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700));
        for file in &self.files {
            let _ = std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o660));
        }
    }
}

/// Makes the database in `dir` read-only for the binary. Returns the guard that undoes it, the
/// wrapper to run the binary with, and how it was done; `Err` says why it can't be done here.
fn make_read_only(dir: &Path, db: &Path) -> Result<(Writable, Vec<&'static str>, String), String> {
    use std::os::unix::fs::PermissionsExt as _;
    let guard = Writable {
        dir: dir.to_owned(),
        files: db_files(db),
        immutable: false,
    };
    let chmod = |guard: &Writable| {
        for file in &guard.files {
            std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o444))
                .expect("chmod the database");
        }
        std::fs::set_permissions(&guard.dir, std::fs::Permissions::from_mode(0o555))
            .expect("chmod the directory");
    };
    if !is_root() {
        chmod(&guard);
        return Ok((
            guard,
            Vec::new(),
            "file mode 0444, directory 0555".to_owned(),
        ));
    }
    // Root writes whatever the mode says: run the binary as nobody instead.
    let setpriv = vec![
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
    ];
    let nobody_runs = Command::new(setpriv[0])
        .args(&setpriv[1..])
        .args([env!("CARGO_BIN_EXE_purgeq"), "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if nobody_runs {
        chmod(&guard);
        let how = format!("modes 0444/0555, binary run as uid {NOBODY} by setpriv");
        return Ok((guard, setpriv, how));
    }
    let mut guard = guard;
    // N.B. The files only: with the directory immutable too, SQLite cannot create the `-shm`
    // a WAL reader needs and fails with SQLITE_CANTOPEN, which is the read-only file system
    // case below.
    let mut args = vec!["+i".to_owned()];
    args.extend(guard.files.iter().map(|f| f.display().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    guard.immutable = true;
    match run("chattr", &args) {
        Ok(()) => Ok((guard, Vec::new(), "chattr +i".to_owned())),
        Err(chattr) => Err(format!(
            "running as root; setpriv cannot run the binary as nobody, and {chattr}"
        )),
    }
}

#[tokio::test]
async fn a_read_only_database_refuses_writes_and_loses_nothing() {
    if common::skip_on_postgres("faults of the SQLite database file") {
        return;
    }
    let test = "a_read_only_database_refuses_writes_and_loses_nothing";
    let s = Scratch::new();
    let db = s.db();
    assert!(enqueue(&[], &db, "before", 5).status.success());
    let before = targets(&db);
    // First as the last process left the files, then without `-wal` and `-shm`: a reader of a
    // WAL database must create the `-shm` file when it is missing.
    for state in ["as left by enqueue", "checkpointed"] {
        if state == "checkpointed" {
            checkpoint(&db).await;
        }
        let (guard, wrapper, how) = match make_read_only(s.dir.path(), &db) {
            Ok(made) => made,
            Err(why) => return skip(test, &why),
        };
        let what = |cmd: &str| format!("{cmd} ({state}; {how})");
        let out = enqueue(&wrapper, &db, "refused", 3);
        assert_fails_with(
            &out,
            &["read-only", "nothing was changed"],
            &what("enqueue"),
        );
        let out = output(purgeq(&wrapper, &db, &["worker", "--once"]));
        assert_fails_with(&out, &["read-only"], &what("worker --once"));
        let out = output(purgeq(&wrapper, &db, &["status", "--json"]));
        if out.status.success() {
            let status: Value = serde_json::from_slice(&out.stdout).expect("status JSON");
            assert_eq!(status["jobs"].as_array().map(Vec::len), Some(5), "{status}");
        } else {
            assert_fails_with(&out, &["read-only"], &what("status"));
        }
        drop(guard);
        assert_eq!(targets(&db), before, "{state}");
    }
    assert!(enqueue(&[], &db, "after", 2).status.success());
    assert_eq!(targets(&db).len(), 7);
}

/// A database on a tmpfs that is then remounted read-only. Returns the refused enqueue, after
/// checking that the earlier jobs survived; `None` when the machine can't mount.
async fn on_a_read_only_file_system(test: &str) -> Option<Output> {
    let s = Scratch::new();
    let mount = match Tmpfs::mount(s.dir.path(), "4m") {
        Ok(mount) => mount,
        Err(why) => {
            skip(test, &why);
            return None;
        }
    };
    let db = s.db();
    assert!(enqueue(&[], &db, "before", 5).status.success());
    let before = targets(&db);
    checkpoint(&db).await;
    mount.remount("ro").expect("remount read-only");
    let refused = enqueue(&[], &db, "refused", 3);
    let worker = output(purgeq(&[], &db, &["worker", "--once"]));
    assert_fails_with(&worker, &[], "worker --once on a read-only file system");
    mount.remount("rw").expect("remount read-write");
    assert_eq!(targets(&db), before);
    assert!(enqueue(&[], &db, "after", 2).status.success());
    drop(mount);
    Some(refused)
}

#[tokio::test]
async fn a_read_only_file_system_is_refused_and_loses_nothing() {
    if common::skip_on_postgres("faults of the SQLite database file") {
        return;
    }
    let test = "a_read_only_file_system_is_refused_and_loses_nothing";
    if let Some(out) = on_a_read_only_file_system(test).await {
        assert_fails_with(&out, &["database"], "enqueue on a read-only file system");
    }
}

#[tokio::test]
async fn a_read_only_file_system_is_named() {
    if common::skip_on_postgres("faults of the SQLite database file") {
        return;
    }
    if let Some(out) = on_a_read_only_file_system("a_read_only_file_system_is_named").await {
        assert_fails_with(&out, &["read-only", "nothing was changed"], "enqueue");
    }
}

// ---------------------------------------------------------------------------------------------
// A full disk.

/// Fills the file system holding `path` with a file of zeros, then gives `leave` bytes back.
fn fill_disk(path: &Path, leave: u64) {
    let mut file = std::fs::File::create(path).expect("create the filler");
    let chunk = vec![0u8; 64 * 1024];
    let mut written = 0u64;
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
            Err(e) => panic!("filling the disk: {e}"),
        }
    }
    let _ = file.sync_all();
    file.set_len(written.saturating_sub(leave))
        .expect("give space back");
}

/// A database on a small tmpfs that is filled up to `leave` free bytes before `batch` URLs are
/// enqueued. Returns that refused enqueue, after checking that the earlier jobs survived and a
/// retry works once there is room; `None` when the machine can't mount.
async fn on_a_full_disk(test: &str, leave: u64, batch: usize) -> Option<Output> {
    let s = Scratch::new();
    let mount = match Tmpfs::mount(s.dir.path(), "2m") {
        Ok(mount) => mount,
        Err(why) => {
            skip(test, &why);
            return None;
        }
    };
    let db = s.db();
    assert!(enqueue(&[], &db, "before", 5).status.success());
    let before = targets(&db);
    checkpoint(&db).await;
    let filler = s.path("filler");
    fill_disk(&filler, leave);
    let refused = enqueue(&[], &db, "refused", batch);
    std::fs::remove_file(&filler).expect("free the disk");
    assert_eq!(
        targets(&db),
        before,
        "{test}: earlier jobs after the refusal"
    );
    let retry = enqueue(&[], &db, "retry", 3);
    assert!(retry.status.success(), "{}", text(&retry.stderr));
    assert_eq!(targets(&db).len(), 8);
    drop(mount);
    Some(refused)
}

#[tokio::test]
async fn a_disk_that_fills_during_enqueue_is_named_and_loses_nothing() {
    if common::skip_on_postgres("faults of the SQLite database file") {
        return;
    }
    let test = "a_disk_that_fills_during_enqueue_is_named_and_loses_nothing";
    // Room to open the database, not to write 30,000 rows (about 2 MB with the index).
    if let Some(out) = on_a_full_disk(test, 256 * 1024, 30_000).await {
        let words = ["disk", "full", "nothing was changed"];
        assert_fails_with(&out, &words, "enqueue on a filling disk");
    }
}

#[tokio::test]
async fn a_full_disk_is_refused_and_loses_nothing() {
    if common::skip_on_postgres("faults of the SQLite database file") {
        return;
    }
    let test = "a_full_disk_is_refused_and_loses_nothing";
    if let Some(out) = on_a_full_disk(test, 0, 3).await {
        assert_fails_with(&out, &["database"], "enqueue on a full disk");
    }
}

#[tokio::test]
async fn a_full_disk_is_named() {
    if common::skip_on_postgres("faults of the SQLite database file") {
        return;
    }
    if let Some(out) = on_a_full_disk("a_full_disk_is_named", 0, 3).await {
        assert_fails_with(&out, &["disk", "full"], "enqueue on a full disk");
    }
}

// ---------------------------------------------------------------------------------------------
// A write lock held past the busy timeout.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_held_past_the_busy_timeout_is_named_and_loses_nothing() {
    let s = Scratch::new();
    let db = s.db();
    assert!(enqueue(&[], &db, "before", 3).status.success());
    let before = targets(&db);
    let mut holder = SqliteConnectOptions::new()
        .filename(&db)
        .connect()
        .await
        .expect("open a second connection");
    sqlx::raw_sql(
        "BEGIN IMMEDIATE;
         INSERT INTO jobs (provider, account, action, target, state, attempts, next_at,
                           created_at, updated_at)
         VALUES ('qiniu', 'default', 'refresh_url', 'https://cdn.example.com/uncommitted',
                 'queued', 0, 0, 0, 0);",
    )
    .execute(&mut holder)
    .await
    .expect("take the write lock");

    let started = Instant::now();
    let spawn = |args: &[&str]| {
        let mut cmd = purgeq(&[], &db, args);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.spawn().expect("spawn purgeq")
    };
    let enqueue_during = spawn(&["enqueue", "https://cdn.example.com/during"]);
    let worker = spawn(&["worker", "--once"]);
    // N.B. Under WAL a reader is never blocked by a writer: status answers at once, with the
    // committed jobs only.
    let status = output(purgeq(&[], &db, &["status", "--json"]));
    assert!(status.status.success(), "status: {}", text(&status.stderr));
    let status: Value = serde_json::from_slice(&status.stdout).expect("status JSON");
    assert_eq!(status["jobs"].as_array().map(Vec::len), Some(3), "{status}");

    let out = enqueue_during.wait_with_output().expect("enqueue");
    assert_fails_with(&out, &["locked", "nothing was changed"], "enqueue");
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "enqueue gave up after {:?}, before the busy timeout",
        started.elapsed()
    );
    let out = worker.wait_with_output().expect("worker");
    assert_fails_with(&out, &["locked"], "worker --once");

    sqlx::raw_sql("ROLLBACK")
        .execute(&mut holder)
        .await
        .expect("release the lock");
    holder.close().await.expect("close");
    assert_eq!(targets(&db), before);
    let retry = output(purgeq(
        &[],
        &db,
        &["enqueue", "https://cdn.example.com/during"],
    ));
    assert!(retry.status.success(), "{}", text(&retry.stderr));
    let mut want = before;
    want.push("https://cdn.example.com/during".to_owned());
    want.sort();
    assert_eq!(targets(&db), want);
}

// ---------------------------------------------------------------------------------------------
// Another program opening and closing the database while a worker runs.

/// An operator's `sqlite3` that opens and closes the database while a worker runs must leave
/// the worker seeing new jobs. SQLite (Debian's 3.40 `sqlite3` here; the newer library purgeq
/// bundles did not) deletes the `-wal` and `-shm` files on the close of what it takes for the
/// last connection: one that can lock the database file exclusively. A worker that ever closed
/// a descriptor of that file of its own (POSIX drops all of a process's `fcntl` locks on a file
/// when any descriptor of it closes) holds no lock, and would go on reading a deleted WAL:
/// blind to every new job. The worker here creates the database, so it migrates it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_program_closing_the_database_leaves_the_worker_seeing_new_jobs() {
    use common::worker::{emulator, emulator_config};
    const TEST: &str = "another_program_closing_the_database_leaves_the_worker_seeing_new_jobs";
    let s = Scratch::new();
    let db = s.db();
    let emu = emulator(emulator_config()).await;
    // A new database: the worker creates and migrates it (the path that locks for migrating).
    let mut child = common::worker_cmd_polling(db.as_os_str(), &emu, "60s")
        .stderr(Stdio::null())
        .spawn()
        .expect("worker starts");
    let purged = |url: &str| emu.stats().qiniu.purged.contains_key(url);
    let sent = |url: &'static str| {
        let out = output(purgeq(&[], &db, &["enqueue", url]));
        assert!(out.status.success(), "enqueue: {}", text(&out.stderr));
        common::wait_for(url, Duration::from_secs(10), move || purged(url))
    };
    common::wait_for(
        "the worker to create the database",
        Duration::from_secs(10),
        || db.exists(),
    )
    .await;
    sent("https://cdn.example.com/before").await;

    let read = Command::new("sqlite3")
        .arg(&db)
        .arg("SELECT count(*) FROM jobs")
        .output();
    let read = match read {
        Ok(out) => out,
        Err(e) => {
            skip(TEST, &format!("no sqlite3 program to run ({e})"));
            common::signal(&child, "-TERM");
            let _ = child.wait();
            return;
        }
    };
    assert!(read.status.success(), "sqlite3: {}", text(&read.stderr));
    assert_eq!(text(&read.stdout).trim(), "1");
    assert!(
        db_files(&db).len() == 3,
        "the other program's close deleted the WAL under the worker: {:?}",
        db_files(&db)
    );
    sent("https://cdn.example.com/after").await;
    common::signal(&child, "-TERM");
    assert!(child.wait().expect("worker exits").success());
}

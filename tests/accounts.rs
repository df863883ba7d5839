//! Several accounts per provider from one config file, driven through the real binary against
//! the emulator: routing by host, one account's spent quota leaving the other draining, refusals
//! at enqueue, config errors with their place, and a previous release's database without a
//! config file.

mod common;

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use common::worker::{AK, CLIENT_ID, CLIENT_SECRET, SK, emulator, emulator_config, urls};
use common::{Scratch, count, stderr, write};
use purgeq::emulator::Emulator;
use purgeq::emulator::qiniu::{DailyQuotas, QiniuConfig};
use purgeq::secret::Secret;
use serde_json::Value;

const MAIN_AK: &str = "ak-main";
const MAIN_SK: &str = "sk-main-never-shown";
const STAGING_AK: &str = "ak-staging";
const STAGING_SK: &str = "sk-staging-never-shown";

/// An emulator playing two Qiniu accounts with their own keys and domains; `main` may refresh
/// `main_quota` URLs a day.
async fn two_account_emulator(main_quota: u64) -> Emulator {
    let mut config = emulator_config();
    config.qiniu = QiniuConfig {
        name: "main".to_owned(),
        access_key: MAIN_AK.to_owned(),
        secret_key: Secret::new(MAIN_SK),
        domains: vec!["cdn.example.com".to_owned(), "img.example.com".to_owned()],
        quotas: DailyQuotas {
            url_refresh: main_quota,
            ..DailyQuotas::default()
        },
        ..QiniuConfig::default()
    };
    config.more_qiniu = vec![QiniuConfig {
        name: "staging".to_owned(),
        access_key: STAGING_AK.to_owned(),
        secret_key: Secret::new(STAGING_SK),
        domains: vec!["staging.example.org".to_owned()],
        ..QiniuConfig::default()
    }];
    emulator(config).await
}

/// The config file for the two accounts (the staging secret from a file), pointed at the
/// emulator at `url`.
fn two_account_config(s: &Scratch, url: &str) -> PathBuf {
    let secret = s.path("staging-sk");
    write(&secret, &format!("{STAGING_SK}\n"));
    let config = s.path("purgeq.toml");
    write(
        &config,
        &format!(
            r#"[[qiniu]]
name = "main"
access_key = "{MAIN_AK}"
secret_key_env = "TEST_MAIN_SK"
hosts = ["cdn.example.com", "*.img.example.com"]
endpoint = "{url}"

[[qiniu]]
name = "staging"
access_key_env = "TEST_STAGING_AK"
secret_key_file = "{secret}"
hosts = ["staging.example.org"]
endpoint = "{url}"

[worker]
max_targets_per_sec = 0
max_requests_per_sec = 0
poll_interval = "100ms"
batch_size = 20
"#,
            secret = secret.display()
        ),
    );
    config
}

/// `purgeq --config CONFIG ARGS` with the accounts' variables set.
fn run(s: &Scratch, config: &Path, args: &[&str]) -> Output {
    s.cmd(&[])
        .arg("--config")
        .arg(config)
        .args(args)
        .env("TEST_MAIN_SK", MAIN_SK)
        .env("TEST_STAGING_AK", STAGING_AK)
        .output()
        .expect("purgeq runs")
}

/// Runs a worker with `--once` and `flags` (the file's `[worker]` table gives the rest).
fn drain(s: &Scratch, config: &Path, flags: &[&str]) -> Output {
    let mut args = vec!["worker", "--once"];
    args.extend_from_slice(flags);
    let out = run(s, config, &args);
    assert!(out.status.success(), "worker: {}", stderr(&out));
    out
}

/// Jobs of `account` per state.
fn states(s: &Scratch, account: &str) -> std::collections::BTreeMap<String, usize> {
    let mut out = std::collections::BTreeMap::new();
    for job in s.jobs(&["--account", account]) {
        assert_eq!(job["account"], account);
        *out.entry(job["state"].as_str().unwrap_or_default().to_owned())
            .or_default() += 1;
    }
    out
}

/// 150 distinct URLs per account (both hosts of `main`), each enqueued three times.
fn enqueue_both(s: &Scratch, config: &Path) -> (Vec<String>, Vec<String>) {
    let mut main = urls("cdn.example.com", 75);
    main.extend(urls("a.img.example.com", 75));
    let staging = urls("staging.example.org", 150);
    let mut all: Vec<String> = main.iter().chain(&staging).cloned().collect();
    all = [all.clone(), all.clone(), all].concat();
    fastrand::shuffle(&mut all);
    let file = s.path("targets.txt");
    write(&file, &all.join("\n"));
    let out = run(
        s,
        config,
        &["enqueue", "--json", "--file", &file.to_string_lossy()],
    );
    assert!(out.status.success(), "enqueue: {}", stderr(&out));
    let queued: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(queued["accounts"]["main"], 450, "{queued}");
    assert_eq!(queued["accounts"]["staging"], 450, "{queued}");
    (main, staging)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_accounts_drain_each_signed_by_its_own_keys() {
    let s = Scratch::new();
    let emu = two_account_emulator(1000).await;
    let config = two_account_config(&s, &emu.url());
    let (main, staging) = enqueue_both(&s, &config);
    // The flag overrides the file's batch_size of 20.
    drain(&s, &config, &["--batch-size", "60"]);

    assert_eq!(states(&s, "main").get("succeeded"), Some(&450));
    assert_eq!(states(&s, "staging").get("succeeded"), Some(&450));
    let stats = emu.stats();
    let theirs = &stats.more_qiniu["staging"];
    assert_eq!(stats.qiniu.unauthorized + theirs.unauthorized, 0);
    // The fewest requests: 150 distinct URLs at 60 a request is 3 per account, each signed
    // by the account that serves its hosts (the emulator refuses a host outside them).
    assert_eq!(stats.qiniu.issued.len(), 3, "{:?}", stats.qiniu.issued);
    assert_eq!(theirs.issued.len(), 3, "{:?}", theirs.issued);
    assert!(stats.qiniu.issued.iter().all(|r| r.account == "main"));
    assert!(theirs.issued.iter().all(|r| r.account == "staging"));
    for url in &main {
        assert_eq!(stats.qiniu.purged.get(url), Some(&1), "{url}");
    }
    for url in &staging {
        assert_eq!(theirs.purged.get(url), Some(&1), "{url}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_accounts_spent_quota_leaves_the_other_draining() {
    let s = Scratch::new();
    let emu = two_account_emulator(60).await;
    let config = two_account_config(&s, &emu.url());
    enqueue_both(&s, &config);
    // The file's batch_size of 20 applies: no flag overrides it.
    drain(&s, &config, &[]);

    // main spent its 60 URLs and waits for the reset (it knows none is left, so it sends no
    // request to be refused); staging drained all of it in the fewest requests.
    let main = states(&s, "main");
    assert_eq!(main.get("succeeded"), Some(&180), "{main:?}");
    assert_eq!(main.get("queued"), Some(&270), "{main:?}");
    assert_eq!(states(&s, "staging").get("succeeded"), Some(&450));
    let stats = emu.stats();
    assert_eq!(stats.qiniu.issued.len(), 3, "60 URLs at 20 a request");
    assert_eq!(
        stats.more_qiniu["staging"].issued.len(),
        8,
        "150 URLs at 20 a request"
    );
    let refused: u64 = stats.qiniu.days.values().map(|d| d.quota_refused).sum();
    assert_eq!(refused, 0, "{:?}", stats.qiniu.days);
    let status = s.status(&[]);
    let forecast = status["forecast"].as_array().unwrap();
    let waiting: Vec<&Value> = forecast.iter().filter(|f| f["waiting"] != 0).collect();
    assert_eq!(waiting.len(), 1, "{forecast:?}");
    assert_eq!(waiting[0]["account"], "main", "{forecast:?}");
    assert_eq!(waiting[0]["action"], "refresh_url", "{forecast:?}");
    assert_eq!(waiting[0]["left"], 0, "{forecast:?}");
    assert_eq!(waiting[0]["waiting"], 90, "{forecast:?}");
    assert_eq!(status["accounts"][0]["account"], "main", "{status}");
    assert_eq!(status["accounts"][0]["queued"], 270, "{status}");

    // `wait --account` follows one account: staging's jobs all ended well (0), main's wait for
    // the reset (6 when the timeout passes), and an account with no jobs matches nothing (4).
    let code = |args: &[&str]| run(&s, &config, args).status.code();
    assert_eq!(
        code(&["wait", "--account", "staging", "--timeout", "5s"]),
        Some(0)
    );
    let waited = [
        "wait",
        "--account",
        "main",
        "--timeout",
        "200ms",
        "--poll-interval",
        "50ms",
    ];
    assert_eq!(code(&waited), Some(6));
    assert_eq!(
        code(&["wait", "--account", "nobody", "--timeout", "1s"]),
        Some(4)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unroutable_url_is_refused_and_nothing_is_queued() {
    let s = Scratch::new();
    let emu = two_account_emulator(1000).await;
    let config = two_account_config(&s, &emu.url());
    let out = run(
        &s,
        &config,
        &[
            "enqueue",
            "https://cdn.example.com/a.js",
            "https://elsewhere.net/b.js",
            "https://img.example.com/c.js",
        ],
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("target 2") && err.contains("no account serves host elsewhere.net"),
        "{err}"
    );
    // A wildcard serves subdomains only: img.example.com itself has no account.
    assert!(
        err.contains("target 3") && err.contains("img.example.com"),
        "{err}"
    );
    assert!(err.contains("nothing was queued"), "{err}");
    assert_eq!(count(&s.status(&[]), "qiniu", "queued"), 0);

    // --account overrides routing; an unknown name is refused.
    let out = run(
        &s,
        &config,
        &[
            "enqueue",
            "--account",
            "staging",
            "https://elsewhere.net/b.js",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(
        &s,
        &config,
        &["enqueue", "--account", "nope", "https://cdn.example.com/a"],
    );
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains("main, staging"), "{}", stderr(&out));
    assert_eq!(states(&s, "staging").get("queued"), Some(&1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_hosts_win_over_wildcards() {
    let s = Scratch::new();
    let config = s.path("purgeq.toml");
    write(
        &config,
        r#"
[[qiniu]]
name = "wide"
access_key = "a"
secret_key_env = "TEST_MAIN_SK"
hosts = ["*.example.com"]

[[qiniu]]
name = "img"
access_key = "b"
secret_key_env = "TEST_MAIN_SK"
hosts = ["*.img.example.com", "exact.example.com"]

[[qiniu]]
name = "rest"
access_key = "c"
secret_key_env = "TEST_MAIN_SK"
hosts = ["*"]
"#,
    );
    let routed = [
        ("https://www.example.com/1", "wide"),
        ("https://exact.example.com/2", "img"),
        ("https://x.img.example.com/3", "img"),
        ("https://img.example.com/4", "wide"),
        ("https://example.com/5", "rest"),
        ("https://other.org/6", "rest"),
    ];
    let mut args = vec!["enqueue"];
    args.extend(routed.iter().map(|(u, _)| *u));
    let out = run(&s, &config, &args);
    assert!(out.status.success(), "{}", stderr(&out));
    let jobs = s.jobs(&[]);
    for (url, account) in routed {
        let job = jobs.iter().find(|j| j["target"] == url).expect(url);
        assert_eq!(job["account"], account, "{url}");
    }
    // status, retry, cancel and prune take --account too.
    let out = run(
        &s,
        &config,
        &["cancel", "--all", "--account", "rest", "--json"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(states(&s, "rest").get("cancelled"), Some(&2));
    assert_eq!(states(&s, "img").get("queued"), Some(&2));
    for args in [
        &["cancel", "--all", "--account", "img"][..],
        &["retry", "--all", "--account", "rest"],
        &["cancel", "--all", "--account", "rest"],
        &["prune", "--older-than", "0s", "--account", "img"],
    ] {
        let out = run(&s, &config, args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }
    // prune deleted img's finished jobs only; retry and cancel touched rest only.
    assert!(states(&s, "img").is_empty());
    assert_eq!(states(&s, "rest").get("cancelled"), Some(&2));
    assert_eq!(states(&s, "wide").get("queued"), Some(&2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_emulator_refuses_a_host_outside_the_signing_account() {
    let s = Scratch::new();
    let mut emu = std::process::Command::new(env!("CARGO_BIN_EXE_purgeq"))
        .args(["emulate", "--listen", "127.0.0.1:0", "--account"])
        .arg(format!(
            "main:{MAIN_AK}:EMU_MAIN_SK:cdn.example.com,img.example.com"
        ))
        .arg("--account")
        .arg(format!(
            "staging:{STAGING_AK}:EMU_STAGING_SK:staging.example.org:5"
        ))
        .env("EMU_MAIN_SK", MAIN_SK)
        .env("EMU_STAGING_SK", STAGING_SK)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(emu.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_owned();
    let config = two_account_config(&s, &url);
    let mut targets = urls("staging.example.org", 10);
    targets.extend(urls("cdn.example.com", 3));
    let mut args = vec!["enqueue"];
    args.extend(targets.iter().map(String::as_str));
    assert!(run(&s, &config, &args).status.success());
    // Sent with staging's keys, a host only main serves is refused by the emulator.
    let wrong = "https://cdn.example.com/wrong-account.js";
    assert!(
        run(&s, &config, &["enqueue", "--account", "staging", wrong])
            .status
            .success()
    );
    drain(&s, &config, &["--batch-size", "60"]);

    let jobs = s.jobs(&[]);
    let job = jobs.iter().find(|j| j["target"] == wrong).unwrap();
    assert_eq!(
        (&job["state"], &job["provider_code"]),
        (&Value::from("failed"), &Value::from(400_032))
    );
    assert_eq!(states(&s, "main").get("succeeded"), Some(&3));
    // staging's own URLs exceed its quota of 5: they wait, main was not held up.
    assert_eq!(states(&s, "staging").get("queued"), Some(&10));
    let stats: Value = reqwest::get(format!("{url}/_emulator/stats"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let staging = &stats["more_qiniu"]["staging"];
    assert_eq!(
        staging["quota"]["url_refresh"],
        serde_json::json!({"quota": 5, "surplus": 5})
    );
    assert_eq!(
        stats["qiniu"]["issued"].as_array().unwrap().len(),
        1,
        "{stats}"
    );
    assert_eq!(staging["issued"].as_array().unwrap().len(), 0, "{stats}");
    emu.kill().unwrap();
    emu.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pan123_account_from_the_file_drains() {
    let s = Scratch::new();
    let emu = emulator(emulator_config()).await;
    let config = s.path("purgeq.toml");
    write(
        &config,
        &format!(
            "[[pan123]]\nname = \"files\"\nclient_id = \"{CLIENT_ID}\"\nclient_secret_env = \"TEST_FILES_SECRET\"\nendpoint = \"{}\"\n",
            emu.url()
        ),
    );
    let enqueue = |account: &[&str]| {
        s.cmd(&[])
            .arg("--config")
            .arg(&config)
            .args(["enqueue", "--provider", "123pan"])
            .args(account)
            .output()
            .unwrap()
    };
    // The only [[pan123]] account is used; a name the file does not have is refused.
    assert!(enqueue(&[]).status.success());
    assert_eq!(enqueue(&["--account", "other"]).status.code(), Some(3));
    let out = s
        .cmd(&[])
        .arg("--config")
        .arg(&config)
        .args(["worker", "--once"])
        .env("TEST_FILES_SECRET", CLIENT_SECRET)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains(CLIENT_SECRET));
    assert_eq!(states(&s, "files").get("succeeded"), Some(&1));
    assert_eq!(emu.stats().pan123.refreshes, 1);
}

/// `config check` on `text`: the exit code and stderr.
fn check(s: &Scratch, text: &str) -> (Option<i32>, String) {
    let config = s.path("bad.toml");
    write(&config, text);
    let out = run(s, &config, &["config", "check"]);
    (out.status.code(), stderr(&out))
}

#[test]
fn each_config_error_names_its_place() {
    let s = Scratch::new();
    let head = "[[qiniu]]\nname = \"main\"\naccess_key = \"k\"\n";
    let file = s.path("bad.toml").display().to_string();
    let cases = [
        (
            format!("{head}secret_key_env = \"TEST_MAIN_SK\"\nhostz = []\n"),
            "line 5",
            "hostz",
        ),
        (
            format!(
                "{head}secret_key_env = \"TEST_MAIN_SK\"\nhosts = [\"a.com\"]\n{}secret_key_env = \"TEST_MAIN_SK\"\nhosts = [\"A.com\"]\n",
                head.replace("main", "other")
            ),
            "line 10, hosts",
            "claimed by both",
        ),
        (
            format!("{head}secret_key_env = \"NOT_SET_ANYWHERE\"\n"),
            "line 4, secret_key_env",
            "NOT_SET_ANYWHERE, which is not set",
        ),
        (
            format!("{head}secret_key_file = \"/nonexistent/sk\"\n"),
            "line 4, secret_key_file",
            "/nonexistent/sk",
        ),
        (
            format!("{head}secret_key = \"hunter2-inline\"\n"),
            "line 4, secret_key",
            "never written",
        ),
        (
            format!("{head}secret_key_env = \"TEST_MAIN_SK\"\n[worker]\npoll_intervall = \"1s\"\n"),
            "line 6, worker.poll_intervall",
            "unknown key",
        ),
    ];
    for (text, place, why) in cases {
        let (code, err) = check(&s, &text);
        assert_eq!(code, Some(3), "{text}\n{err}");
        assert!(
            err.contains(&format!("{file} {place}")) && err.contains(why),
            "{text}\n{err}"
        );
        assert!(!err.contains("hunter2") && !err.contains(MAIN_SK), "{err}");
    }
    // A good file prints its accounts and routing, never a secret.
    let (code, err) = check(
        &s,
        &format!("{head}secret_key_env = \"TEST_MAIN_SK\"\nhosts = [\"*.a.com\"]\n"),
    );
    assert_eq!(code, Some(0), "{err}");
    let out = run(&s, &s.path("bad.toml"), &["config", "check"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("*.a.com") && text.contains("$TEST_MAIN_SK"),
        "{text}"
    );
    assert!(!text.contains(MAIN_SK), "{text}");
    // The worker refuses the same errors at start, naming the place.
    let bad = s.path("bad.toml");
    write(
        &bad,
        &format!("{head}secret_key_env = \"NOT_SET_ANYWHERE\"\n"),
    );
    let out = run(&s, &bad, &["worker", "--once"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!("{file} line 4, secret_key_env")),
        "{}",
        stderr(&out)
    );
}

/// Creates the schema exactly as the previous release did (its migrations, as recorded at
/// e9c4043), with queued jobs in it, as that release's `enqueue` left them.
async fn previous_release_db(s: &Scratch, targets: &[String]) {
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/previous-release/migrations");
    let db = s.db_arg().to_string_lossy().into_owned();
    if db.starts_with("postgres") {
        let pool = sqlx::PgPool::connect(&db).await.unwrap();
        let migrator = sqlx::migrate::Migrator::new(fixture.join("postgres"))
            .await
            .unwrap();
        migrator.run(&pool).await.unwrap();
        for (i, url) in targets.iter().enumerate() {
            sqlx::query(
                "INSERT INTO jobs (provider, account, action, target, state, attempts, next_at, created_at, updated_at)
                 VALUES ('qiniu', 'default', 'refresh_url', $1, 'queued', 0, $2, $2, $2)",
            )
            .bind(url)
            .bind(i as i64)
            .execute(&pool)
            .await
            .unwrap();
        }
    } else {
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&db)
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal);
        let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
        let migrator = sqlx::migrate::Migrator::new(fixture.join("sqlite"))
            .await
            .unwrap();
        migrator.run(&pool).await.unwrap();
        for (i, url) in targets.iter().enumerate() {
            sqlx::query(
                "INSERT INTO jobs (provider, account, action, target, state, attempts, next_at, created_at, updated_at)
                 VALUES ('qiniu', 'default', 'refresh_url', ?1, 'queued', 0, ?2, ?2, ?2)",
            )
            .bind(url)
            .bind(i as i64)
            .execute(&pool)
            .await
            .unwrap();
        }
        pool.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_previous_release_database_keeps_its_counts_when_migrated() {
    let s = Scratch::new();
    previous_release_db(&s, &urls("cdn.example.com", 90)).await;
    // The first enqueue migrates the schema (job counts now per account, rebuilt from the jobs).
    s.cmd(&["enqueue", "https://cdn.example.com/one-more"])
        .env("XDG_CONFIG_HOME", s.path("no-config"))
        .assert()
        .success();
    let status = s.status(&[]);
    assert_eq!(count(&status, "qiniu", "queued"), 91, "{status}");
    assert_eq!(status["accounts"][0]["account"], "default", "{status}");
    assert_eq!(status["accounts"][0]["queued"], 91, "{status}");
    assert_eq!(status["accounts"][0]["running"], 0, "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_previous_release_database_drains_without_a_config_file() {
    let s = Scratch::new();
    let emu = emulator(emulator_config()).await;
    let targets = urls("cdn.example.com", 90);
    previous_release_db(&s, &targets).await;
    let out = s
        .cmd(&[
            "worker",
            "--once",
            "--max-targets-per-sec",
            "0",
            "--max-requests-per-sec",
            "0",
        ])
        // No config file anywhere: the environment's account `default`, as before.
        .env("XDG_CONFIG_HOME", s.path("no-config"))
        .env("QINIU_ACCESS_KEY", AK)
        .env("QINIU_SECRET_KEY", SK)
        .env("QINIU_ENDPOINT", emu.url())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let status = s.status(&[]);
    assert_eq!(count(&status, "qiniu", "succeeded"), 90, "{}", stderr(&out));
    assert_eq!(
        status["accounts"],
        serde_json::json!([]),
        "nothing pending: {status}"
    );
    assert_eq!(emu.stats().qiniu.issued.len(), 2);
    for job in s.jobs(&[]) {
        assert_eq!(job["account"], "default");
    }
    // Enqueue keeps working without a file, into `default`; another account name is refused.
    let out = s
        .cmd(&["enqueue", "--account", "main", "https://cdn.example.com/x"])
        .env("XDG_CONFIG_HOME", s.path("no-config"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
}

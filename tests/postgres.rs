//! PostgreSQL-only properties: several workers on one database, and a database that goes away
//! and comes back. Skipped, with a printed reason, when the suite runs on SQLite.

mod common;

use std::net::SocketAddr;
use std::process::Child;
use std::time::Duration;

use common::worker::{emulator, emulator_config, urls};
use common::{Scratch, count, wait_for};
use purgeq::emulator::{Emulator, FaultKind, FaultPlan, ScriptedFaults};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

fn skip() -> bool {
    if common::postgres_admin().is_none() {
        eprintln!("skipped: PostgreSQL tests run in the PostgreSQL half of scripts/test.sh");
        return true;
    }
    false
}

fn worker(db: &str, emu: &Emulator, args: &[&str]) -> Child {
    common::worker_cmd(db.as_ref(), emu)
        .args(["--max-requests-per-sec", "0"])
        .args(args)
        .spawn()
        .expect("worker starts")
}

/// Enqueues `targets` from a file of a name of its own.
fn enqueue_file(s: &Scratch, targets: &[String]) {
    s.enqueue_file(&format!("t{}.txt", fastrand::u32(..)), targets);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_drain_thirty_thousand_jobs_sending_each_target_once() {
    if skip() {
        return;
    }
    let s = Scratch::new();
    let mut config = emulator_config();
    config.qiniu.quotas.url_refresh = 1_000_000;
    let emu = emulator(config).await;
    let targets = urls("cdn.example.com", 10_000);
    for _ in 0..3 {
        enqueue_file(&s, &targets);
    }
    let db = s.db_arg().into_string().unwrap();
    let workers: Vec<Child> = (0..3).map(|_| worker(&db, &emu, &["--once"])).collect();
    for w in workers {
        let out = w.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", common::stderr(&out));
    }
    assert_eq!(count(&s.status(&[]), "qiniu", "succeeded"), 30_000);
    let stats = emu.stats().qiniu;
    assert_eq!(stats.purged.len(), 10_000);
    assert!(
        stats.purged.values().all(|n| *n == 1),
        "a target was sent twice"
    );
    assert_eq!(
        stats.issued.len(),
        purgeq::planner::minimum_requests(10_000, 60)
    );
}

/// A loopback TCP proxy in front of the PostgreSQL server that can be cut and restored.
struct Proxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    tasks: Option<JoinSet<()>>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut proxy = Proxy {
            addr,
            upstream,
            tasks: None,
        };
        proxy.serve(listener);
        proxy
    }

    fn serve(&mut self, listener: TcpListener) {
        let upstream = self.upstream;
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            let mut conns = JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                conns.spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        self.tasks = Some(tasks);
    }

    /// Drops every connection and refuses new ones.
    async fn cut(&mut self) {
        if let Some(mut tasks) = self.tasks.take() {
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
        }
    }

    async fn restore(&mut self) {
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_goes_away_and_comes_back_loses_nothing() {
    if skip() {
        return;
    }
    let s = Scratch::new();
    let direct = url::Url::parse(&s.db_arg().into_string().unwrap()).unwrap();
    let upstream: SocketAddr = format!(
        "{}:{}",
        direct.host_str().unwrap(),
        direct.port().unwrap_or(5432)
    )
    .parse()
    .unwrap();
    let mut proxy = Proxy::start(upstream).await;
    let mut via_proxy = direct.clone();
    via_proxy.set_port(Some(proxy.addr.port())).unwrap();
    let emu = emulator(emulator_config()).await;
    enqueue_file(&s, &urls("cdn.example.com", 120));

    // The database is down when the worker starts: it waits instead of exiting.
    proxy.cut().await;
    let mut child = worker(
        via_proxy.as_str(),
        &emu,
        &["--lease", "20s", "--request-timeout", "5s"],
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "the worker exited while the database was down"
    );

    // Up again: the first request stalls in the provider, and the database goes away while
    // it is in flight, so the outcome must wait for the database to come back.
    emu.set_faults(FaultPlan {
        fail_next: Some(ScriptedFaults {
            count: 1,
            kind: FaultKind::Slow,
        }),
        slow_delay_ms: 1_500,
        ..FaultPlan::default()
    })
    .unwrap();
    proxy.restore().await;
    wait_for("the first request", Duration::from_secs(30), || {
        emu.stats().qiniu.requests.values().sum::<u64>() >= 1
    })
    .await;
    proxy.cut().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "the worker exited during the outage"
    );
    proxy.restore().await;

    wait_for("every job to succeed", Duration::from_secs(60), || {
        count(&s.status(&[]), "qiniu", "succeeded") == 120
    })
    .await;
    let stats = emu.stats().qiniu;
    assert!(
        stats.purged.values().all(|n| *n == 1),
        "the outcome was recorded once the database came back"
    );
    common::signal(&child, "-TERM");
    assert!(child.wait().unwrap().success());
}

/// A prepared statement's generic plan, made while the table was empty, is kept until the next
/// ANALYZE. Plans forced generic, autovacuum off, and the worker's statements first planned on a
/// one-job table: a backlog that arrives later still drains and is confirmed. (With the claims
/// and the confirmation take written as `id IN (subquery)`, such a plan ran the subquery again
/// for every row: one take over 6,000 jobs ran for 94 s and the worker looked hung.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_planned_on_an_empty_table_still_drain_a_later_backlog() {
    if skip() {
        return;
    }
    let s = Scratch::new();
    let db = s.db_arg().into_string().unwrap();
    drop(s.store().await);
    common::psql(&db, "ALTER TABLE jobs SET (autovacuum_enabled = false)");
    common::psql(
        &db,
        "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET plan_cache_mode = force_generic_plan',
                                    current_database()); END $$",
    );
    let mut config = emulator_config();
    config.qiniu.quotas.url_refresh = 1_000_000;
    let emu = emulator(config).await;
    let child = worker(&db, &emu, &[]);
    enqueue_file(&s, &urls("first.example.com", 1));
    wait_for(
        "the first job to be confirmed",
        Duration::from_secs(30),
        || count(&s.status(&[]), "qiniu", "succeeded") == 1,
    )
    .await;

    // One enqueue: every duplicate is queued before the first of them is claimed.
    let targets = urls("cdn.example.com", 2_000);
    let thrice: Vec<String> = (0..3).flat_map(|_| targets.iter().cloned()).collect();
    enqueue_file(&s, &thrice);
    wait_for(
        "6,000 more jobs to be sent and confirmed",
        Duration::from_secs(120),
        || count(&s.status(&[]), "qiniu", "succeeded") == 6_001,
    )
    .await;
    let stats = emu.stats().qiniu;
    assert_eq!(stats.purged.len(), 2_001);
    assert!(
        stats.purged.values().all(|n| *n == 1),
        "a target was sent twice"
    );
    common::signal(&child, "-TERM");
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", common::stderr(&out));
}

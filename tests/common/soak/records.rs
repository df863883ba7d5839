//! The queue database as the audit reads it: jobs, provider calls with the jobs they carried,
//! and what each call's row says happened.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use purgeq::emulator::qiniu::SERVER_ERROR_CODES;
use serde_json::Value;

use super::Probe;

/// A job as stored.
pub(super) struct Job {
    pub(super) action: String,
    pub(super) target: String,
    pub(super) state: String,
    pub(super) attempts: i64,
    pub(super) request_id: Option<String>,
    pub(super) provider_code: Option<i64>,
    pub(super) last_error: Option<String>,
    /// The CDN confirmed it (`confirmed_at` is set).
    pub(super) confirmed: bool,
}

/// A provider call's audit row, with the jobs it carried.
pub(super) struct Call {
    pub(super) id: i64,
    pub(super) operation: String,
    pub(super) worker: String,
    pub(super) target_count: i64,
    pub(super) finished: bool,
    pub(super) http_status: Option<i64>,
    pub(super) provider_code: Option<i64>,
    pub(super) request_id: Option<String>,
    pub(super) outcome: Option<String>,
    pub(super) message: String,
    pub(super) jobs: Vec<i64>,
}

impl Call {
    /// The distinct targets it carried.
    pub(super) fn targets<'a>(&self, jobs: &'a BTreeMap<i64, Job>) -> BTreeSet<&'a str> {
        self.jobs
            .iter()
            .filter_map(|id| jobs.get(id))
            .map(|j| j.target.as_str())
            .collect()
    }

    /// The pid in its worker id, `host:pid:random`.
    pub(super) fn pid(&self) -> Option<u32> {
        self.worker.rsplit(':').nth(1)?.parse().ok()
    }
}

pub(super) struct Db {
    pub(super) jobs: BTreeMap<i64, Job>,
    /// The sends, in id order, so a job's last call comes last.
    pub(super) calls: Vec<Call>,
    /// How many confirmation queries (task lists) have an audit row.
    pub(super) queries: usize,
}

pub(super) fn load(probe: &Probe) -> Result<Db, String> {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let maybe = |v: &Value| v.as_str().map(str::to_owned);
    let int = |v: &Value| v.as_i64().unwrap_or_default();
    let mut jobs = BTreeMap::new();
    probe.each(
        "id, action, target, state, attempts, request_id, provider_code, last_error,
         CASE WHEN confirmed_at IS NULL THEN 0 ELSE 1 END",
        "FROM jobs",
        |r| {
            let job = Job {
                action: text(&r[1]),
                target: text(&r[2]),
                state: text(&r[3]),
                attempts: int(&r[4]),
                request_id: maybe(&r[5]),
                provider_code: r[6].as_i64(),
                last_error: maybe(&r[7]),
                confirmed: int(&r[8]) == 1,
            };
            jobs.insert(int(&r[0]), job);
        },
    )?;
    let mut carried: HashMap<i64, Vec<i64>> = HashMap::new();
    probe.each("call_id, job_id", "FROM call_jobs", |r| {
        carried.entry(int(&r[0])).or_default().push(int(&r[1]));
    })?;
    let mut calls = Vec::new();
    probe.each(
        "id, operation, worker, target_count, CASE WHEN finished_at IS NULL THEN 0 ELSE 1 END,
         http_status, provider_code, request_id, outcome, coalesce(message, '')",
        "FROM calls",
        |r| {
            let id = int(&r[0]);
            calls.push(Call {
                id,
                operation: text(&r[1]),
                worker: text(&r[2]),
                target_count: int(&r[3]),
                finished: int(&r[4]) == 1,
                http_status: r[5].as_i64(),
                provider_code: r[6].as_i64(),
                request_id: maybe(&r[7]),
                outcome: maybe(&r[8]),
                message: text(&r[9]),
                jobs: carried.remove(&id).unwrap_or_default(),
            });
        },
    )?;
    calls.sort_by_key(|c| c.id);
    for call in &mut calls {
        call.jobs.sort_unstable();
    }
    // Confirmation queries carry no purge: the send checks read only the sends.
    let (queries, calls): (Vec<Call>, Vec<Call>) = calls
        .into_iter()
        .partition(|c| c.operation.ends_with("_list"));
    Ok(Db {
        jobs,
        calls,
        queries: queries.len(),
    })
}

/// The Qiniu operation that carries an action.
pub(super) fn operation(action: &str) -> &'static str {
    if action == "prefetch_url" {
        "prefetch"
    } else {
        "refresh"
    }
}

/// What a call's audit row says happened, named after the fault that gives that answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Seen {
    Accepted,
    Http503,
    ServerError,
    Quota,
    Throttle,
    Qps,
    TimedOut,
    Dropped,
    Garbage,
    Invalid,
    /// Begun and never recorded: its worker was killed.
    Unfinished,
    /// An answer the fake never gives.
    Unexplained,
}

impl Seen {
    /// The answers only a fault gives.
    pub(super) const FAULTS: [Seen; 9] = [
        Seen::Http503,
        Seen::ServerError,
        Seen::Quota,
        Seen::Throttle,
        Seen::Qps,
        Seen::TimedOut,
        Seen::Dropped,
        Seen::Garbage,
        Seen::Invalid,
    ];

    pub(super) fn of(call: &Call) -> Seen {
        if !call.finished {
            return Seen::Unfinished;
        }
        let outcome = call.outcome.as_deref().unwrap_or("");
        match (outcome, call.http_status, call.provider_code) {
            ("accepted", Some(200), Some(200)) => Seen::Accepted,
            ("transient", Some(503), Some(500_000)) => Seen::Http503,
            ("transient", Some(500), Some(c)) if SERVER_ERROR_CODES.contains(&c) => {
                Seen::ServerError
            }
            ("quota", Some(400), Some(400_033..=400_035)) => Seen::Quota,
            ("rate_limited", Some(429), None) => Seen::Throttle,
            ("rate_limited", Some(403), Some(403_024)) => Seen::Qps,
            ("transient", None, None) if call.message.contains("timed out") => Seen::TimedOut,
            ("transient", None, None) => Seen::Dropped,
            ("transient", Some(200), None) => Seen::Garbage,
            ("invalid_targets", Some(400), Some(400_031)) => Seen::Invalid,
            _ => Seen::Unexplained,
        }
    }

    pub(super) fn label(self) -> &'static str {
        match self {
            Seen::Accepted => "accepted",
            Seen::Http503 => "http-503",
            Seen::ServerError => "server-error",
            Seen::Quota => "quota",
            Seen::Throttle => "throttle",
            Seen::Qps => "qps",
            Seen::TimedOut => "timed-out",
            Seen::Dropped => "dropped",
            Seen::Garbage => "garbage",
            Seen::Invalid => "invalid",
            Seen::Unfinished => "unfinished",
            Seen::Unexplained => "unexplained",
        }
    }

    /// The fault kinds that give this answer.
    pub(super) fn causes(self) -> &'static [&'static str] {
        match self {
            Seen::Http503 => &["http-503"],
            Seen::ServerError => &["server-error"],
            Seen::Quota => &["quota"],
            Seen::Throttle => &["throttle"],
            Seen::Qps => &["qps"],
            Seen::TimedOut => &["slow"],
            Seen::Dropped => &["drop-before", "drop-after"],
            Seen::Garbage => &["garbage"],
            Seen::Invalid => &["invalid"],
            Seen::Accepted | Seen::Unfinished | Seen::Unexplained => &[],
        }
    }

    /// A failure that spends an attempt.
    pub(super) fn transient(self) -> bool {
        matches!(
            self,
            Seen::Http503 | Seen::ServerError | Seen::TimedOut | Seen::Dropped | Seen::Garbage
        )
    }

    /// The worker got no answer: the fake may have served the request anyway.
    pub(super) fn unanswered(self) -> bool {
        matches!(self, Seen::TimedOut | Seen::Dropped | Seen::Unfinished)
    }
}

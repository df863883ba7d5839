//! The audit after a run: the database (the `jobs`, `calls` and `call_jobs` tables, the same in
//! both backends' migrations) against what the producers were told, what the emulator saw and
//! what the crash loop killed. Each check adds a violation in words instead of panicking, so
//! one run reports all of them beside its figures.
//!
//! A request the fake served but whose answer never reached a job is "lost": the fake dropped
//! the connection after serving it (`drop-after`), or the worker was killed before recording
//! it. Only a lost request explains a target sent again for jobs already served; every other
//! served request is on the jobs it served.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use purgeq::emulator::Stats;

use super::records::{Call, Db, Job, Seen, load, operation};
use super::report::{Figures, Report, Violations};
use super::{Exercised, LEASE_MS, MAX_ATTEMPTS, PREFETCH_BATCH, Plan, Probe, REFRESH_BATCH};

/// What a run left behind.
pub(super) struct Evidence<'a> {
    pub plan: &'a Plan,
    pub db: &'a Probe,
    pub stats: &'a Stats,
    pub run: &'a Exercised,
}

/// A request the fake served.
struct Served<'a> {
    operation: &'a str,
    targets: BTreeSet<&'a str>,
}

/// Audits a finished run.
pub(super) fn audit(e: Evidence<'_>) -> Report {
    let db = load(e.db).expect("read the queue database");
    let mut v = Violations::default();
    for p in &e.run.problems {
        v.add("the run ends cleanly", p.clone());
    }
    for p in &e.run.produced.errors {
        v.add("every enqueue and cancel succeeds under load", p.clone());
    }
    let served: HashMap<&str, Served<'_>> = e
        .stats
        .qiniu
        .issued
        .iter()
        .map(|r| {
            let targets = r.urls.iter().chain(&r.dirs).map(String::as_str).collect();
            let operation = r.operation.as_str();
            (r.request_id.as_str(), Served { operation, targets })
        })
        .collect();
    let mut f = Figures {
        title: title(e.plan),
        timings: e.run.timings,
        ..Figures::default()
    };
    check_acceptance(&e, &db, &mut v, &mut f);
    let seen = check_calls(&e, &db, &served, &mut v, &mut f);
    check_faults(&e, &db, &seen, &mut v, &mut f);
    check_outcomes(&db, &served, &seen, &mut v, &mut f);
    let killed_after_serving = check_sends(&e, &db, &seen, &mut v, &mut f);
    check_kills(&e, &killed_after_serving, &mut v, &mut f);
    check_leases(&e, &mut v, &mut f);
    check_logs(&e, &mut v, &mut f);
    Report {
        figures: f,
        violations: v.into_list(),
        kept: None,
    }
}

fn title(plan: &Plan) -> String {
    let kinds: Vec<&str> = super::FAULT_KINDS.iter().map(|k| k.as_str()).collect();
    format!(
        "{} ({} size, seed {}): {} producers, {} workers, fault rate {} over {}",
        plan.name,
        plan.scale,
        plan.seed,
        plan.producers,
        plan.workers,
        plan.fault_rate,
        kinds.join(",")
    )
}

/// Every accepted job is stored as given and ended; nothing else is stored.
fn check_acceptance(e: &Evidence<'_>, db: &Db, v: &mut Violations, f: &mut Figures) {
    let produced = &e.run.produced;
    let accepted = check_stored_as_given(e, db, v);
    for (id, job) in &db.jobs {
        *f.states.entry(job.state.clone()).or_default() += 1;
        if !accepted.contains(id) {
            v.add(
                "only accepted jobs exist",
                format!("job {id} was never reported by enqueue"),
            );
        }
        match job.state.as_str() {
            "succeeded" | "failed" => {}
            "cancelled" if produced.cancelled.contains(id) => {}
            other => v.add(
                "every accepted job ended succeeded, failed or cancelled",
                format!(
                    "job {id} is {other} (reported cancelled: {})",
                    produced.cancelled.contains(id)
                ),
            ),
        }
        if job.state == "succeeded" && !job.confirmed {
            v.add(
                "a job succeeds only once the CDN confirms it",
                format!("job {id} succeeded without a confirmation"),
            );
        }
        if job.attempts > MAX_ATTEMPTS {
            v.add(
                "attempts stop at the maximum",
                format!("job {id} spent {} attempts", job.attempts),
            );
        }
    }
    for id in &produced.cancelled {
        if db.jobs.get(id).is_none_or(|j| j.state != "cancelled") {
            v.add(
                "a cancel sticks",
                format!("job {id} was reported cancelled but is not"),
            );
        }
    }
    f.enqueues = produced.batches.len();
    f.cancels = produced.cancels;
    f.jobs = accepted.len();
    f.distinct_targets = db
        .jobs
        .values()
        .map(|j| (operation(&j.action), j.target.as_str()))
        .collect::<BTreeSet<_>>()
        .len();
}

/// Each `enqueue`'s ids are stored with the action and targets it was given. Returns every
/// accepted id.
fn check_stored_as_given(e: &Evidence<'_>, db: &Db, v: &mut Violations) -> BTreeSet<i64> {
    let mut accepted = BTreeSet::new();
    for batch in &e.run.produced.batches {
        accepted.extend(batch.ids.iter().copied());
        let mut stored: Vec<(&str, &str)> = batch
            .ids
            .iter()
            .filter_map(|id| db.jobs.get(id))
            .map(|j| (j.action.as_str(), j.target.as_str()))
            .collect();
        let mut given: Vec<(&str, &str)> = batch
            .targets
            .iter()
            .map(|t| (batch.action, t.as_str()))
            .collect();
        stored.sort_unstable();
        given.sort_unstable();
        if stored != given {
            v.add(
                "an accepted job is stored as given",
                format!(
                    "enqueue reported ids {:?}.. for {} targets; {} of them are stored as given",
                    batch.ids.first(),
                    given.len(),
                    stored.len()
                ),
            );
        }
    }
    accepted
}

/// Every audit row is one batch with an answer the fake gives; an accepted call's request id
/// is one the fake issued for exactly its targets, and is on every job it carried; no job is
/// served twice; only a killed worker leaves a call unrecorded, one per route at most.
fn check_calls(
    e: &Evidence<'_>,
    db: &Db,
    served: &HashMap<&str, Served<'_>>,
    v: &mut Violations,
    f: &mut Figures,
) -> Vec<Seen> {
    let killed: BTreeSet<u32> = e.run.kills.iter().map(|k| k.pid).collect();
    let mut served_by: HashMap<i64, i64> = HashMap::new();
    let mut open: BTreeMap<(u32, &str), usize> = BTreeMap::new();
    let mut recorded: BTreeSet<&str> = BTreeSet::new();
    let seen: Vec<Seen> = db.calls.iter().map(Seen::of).collect();
    for (call, &kind) in db.calls.iter().zip(&seen) {
        *f.calls_seen.entry(kind.label()).or_default() += 1;
        let targets = call.targets(&db.jobs);
        let batch = match call.operation.as_str() {
            "prefetch" => PREFETCH_BATCH,
            _ => REFRESH_BATCH,
        };
        if usize::try_from(call.target_count) != Ok(targets.len()) || targets.len() > batch {
            v.add(
                "a call carries one batch of distinct targets",
                format!(
                    "call {} counts {} targets and carries {}",
                    call.id,
                    call.target_count,
                    targets.len()
                ),
            );
        }
        match kind {
            Seen::Accepted => {
                check_accepted_call(call, &targets, db, served, &mut served_by, &mut recorded, v);
            }
            Seen::Unfinished => match call.pid().filter(|pid| killed.contains(pid)) {
                Some(pid) => *open.entry((pid, call.operation.as_str())).or_default() += 1,
                None => v.add(
                    "only a killed worker leaves a call unrecorded",
                    format!(
                        "call {} of worker {} was never completed",
                        call.id, call.worker
                    ),
                ),
            },
            Seen::Unexplained => v.add(
                "every answer is one the fake gives",
                format!(
                    "call {}: HTTP {:?}, code {:?}, outcome {:?}: {}",
                    call.id, call.http_status, call.provider_code, call.outcome, call.message
                ),
            ),
            _ => {}
        }
    }
    for ((pid, operation), n) in open {
        if n > 1 {
            v.add(
                "a killed worker had at most one call in flight per route",
                format!("worker {pid} left {n} {operation} calls unrecorded"),
            );
        }
    }
    f.calls = db.calls.len();
    f.calls_unfinished = seen.iter().filter(|s| **s == Seen::Unfinished).count();
    seen
}

fn check_accepted_call<'a>(
    call: &'a Call,
    targets: &BTreeSet<&str>,
    db: &Db,
    served: &HashMap<&str, Served<'_>>,
    served_by: &mut HashMap<i64, i64>,
    recorded: &mut BTreeSet<&'a str>,
    v: &mut Violations,
) {
    let Some(rid) = call.request_id.as_deref() else {
        v.add(
            "an accepted call has a request id",
            format!("call {} has none", call.id),
        );
        return;
    };
    if !recorded.insert(rid) {
        v.add(
            "a request id is on one call",
            format!("request {rid} is on several calls"),
        );
    }
    match served.get(rid) {
        Some(s) if s.operation == call.operation && s.targets == *targets => {}
        Some(s) => v.add(
            "a call's jobs are the targets the fake served",
            format!(
                "call {} carried {} {} targets; request {rid} served {} {} targets",
                call.id,
                targets.len(),
                call.operation,
                s.targets.len(),
                s.operation
            ),
        ),
        None => v.add(
            "a recorded request id was issued by the fake",
            format!("call {} records request {rid}", call.id),
        ),
    }
    for id in &call.jobs {
        let job = db.jobs.get(id);
        if job.is_none_or(|j| j.state != "succeeded" || j.request_id.as_deref() != Some(rid)) {
            v.add(
                "every request id the fake issued is recorded on the jobs it served",
                format!(
                    "job {id}, served by call {} (request {rid}), is {:?} with request id {:?}",
                    call.id,
                    job.map(|j| j.state.as_str()),
                    job.and_then(|j| j.request_id.as_deref())
                ),
            );
        }
        if let Some(first) = served_by.insert(*id, call.id) {
            v.add(
                "no job is served twice",
                format!("job {id} was served by calls {first} and {}", call.id),
            );
        }
    }
}

/// Every failed call is a fault the fake injected, and every fault injected is on a call's
/// record or on a call a kill cut short; every request the fake received has an audit row.
fn check_faults(e: &Evidence<'_>, db: &Db, seen: &[Seen], v: &mut Violations, f: &mut Figures) {
    let faults = &e.stats.faults;
    f.faults = faults.clone();
    let count = |kind: Seen| seen.iter().filter(|s| **s == kind).count() as u64;
    let mut answered = 0;
    for kind in Seen::FAULTS {
        let recorded = count(kind);
        answered += recorded;
        let injected: u64 = kind
            .causes()
            .iter()
            .map(|k| faults.get(*k).copied().unwrap_or(0))
            .sum();
        if recorded > injected {
            v.add(
                "every failed call is a fault the fake injected",
                format!(
                    "{recorded} calls got a {} answer; the fake injected {injected} ({})",
                    kind.label(),
                    kind.causes().join(" + ")
                ),
            );
        }
    }
    let unfinished = count(Seen::Unfinished);
    let injected: u64 = faults.values().sum();
    if injected > answered + unfinished {
        v.add(
            "every injected fault is on record",
            format!("{injected} faults injected, {answered} on calls' records, {unfinished} calls cut short"),
        );
    }
    let received: u64 = e
        .stats
        .qiniu
        .requests
        .iter()
        .filter(|(op, _)| !op.ends_with("_list"))
        .map(|(_, n)| n)
        .sum();
    f.list_queries = db.queries;
    f.list_faults = e.stats.list_faults.values().sum();
    let rows = db.calls.len() as u64;
    f.requests_received = received;
    f.requests_served = e.stats.qiniu.issued.len();
    if received > rows || rows - received > unfinished {
        v.add(
            "every request has an audit row",
            format!(
                "the fake received {received} requests; {rows} audit rows, {unfinished} cut short"
            ),
        );
    }
}

/// A succeeded job names a request the fake served for its target; a failed job's reason is the
/// fault on its last call: `invalid`, or a transient fault on its last allowed attempt.
fn check_outcomes(
    db: &Db,
    served: &HashMap<&str, Served<'_>>,
    seen: &[Seen],
    v: &mut Violations,
    f: &mut Figures,
) {
    let mut last_call: HashMap<i64, usize> = HashMap::new();
    for (i, call) in db.calls.iter().enumerate().filter(|(_, c)| c.finished) {
        for id in &call.jobs {
            last_call.insert(*id, i);
        }
    }
    check_attempts(db, seen, &last_call, v);
    for (id, job) in &db.jobs {
        match job.state.as_str() {
            "succeeded" => {
                let ok = job
                    .request_id
                    .as_deref()
                    .and_then(|r| served.get(r))
                    .is_some_and(|s| {
                        s.operation == operation(&job.action)
                            && s.targets.contains(job.target.as_str())
                    });
                if !ok {
                    v.add(
                        "a succeeded job names a request the fake served for it",
                        format!("job {id} ({}) names {:?}", job.target, job.request_id),
                    );
                }
            }
            "failed" => {
                let last = last_call.get(id).map(|&i| (&db.calls[i], seen[i]));
                check_failed(*id, job, last, v, f);
            }
            _ => {}
        }
    }
}

/// A job's attempts are the calls that spent one: each transient failure, and the call that
/// settled it (accepted, or refused it as invalid). Rate limits and kills spend none.
fn check_attempts(db: &Db, seen: &[Seen], last_call: &HashMap<i64, usize>, v: &mut Violations) {
    let mut spent: HashMap<i64, i64> = HashMap::new();
    for (i, (call, kind)) in db.calls.iter().zip(seen).enumerate() {
        for id in &call.jobs {
            let settled_it = last_call.get(id) == Some(&i);
            let spends = match kind {
                Seen::Accepted => true,
                Seen::Invalid => settled_it && db.jobs.get(id).is_some_and(|j| j.state == "failed"),
                k => k.transient(),
            };
            *spent.entry(*id).or_default() += i64::from(spends);
        }
    }
    for (id, job) in &db.jobs {
        let calls = spent.get(id).copied().unwrap_or(0);
        if job.attempts != calls {
            v.add(
                "attempts count the calls that spent them",
                format!(
                    "job {id} ({}) records {} attempts; its calls spent {calls}",
                    job.state, job.attempts
                ),
            );
        }
    }
}

fn check_failed(
    id: i64,
    job: &Job,
    last: Option<(&Call, Seen)>,
    v: &mut Violations,
    f: &mut Figures,
) {
    let why = job.last_error.as_deref().unwrap_or("");
    let gave_up = format!("gave up after {MAX_ATTEMPTS} attempts");
    match last {
        Some((_, Seen::Invalid))
            if job.provider_code == Some(400_031) && why.contains("400031") =>
        {
            f.failed_invalid += 1;
        }
        Some((call, kind))
            if kind.transient()
                && job.attempts == MAX_ATTEMPTS
                && why.starts_with(&gave_up)
                && why.contains(call.message.as_str()) =>
        {
            f.failed_exhausted += 1;
        }
        _ => v.add(
            "a failed job's reason is a fault the fake caused",
            format!(
                "job {id} failed with {why:?} (code {:?}, {} attempts); its last call: {}",
                job.provider_code,
                job.attempts,
                last.map_or("none".to_owned(), |(c, s)| format!(
                    "{} ({})",
                    c.id,
                    s.label()
                ))
            ),
        ),
    }
}

/// `(operation, target)`: what the fake counts a send of.
type Key<'a> = (&'a str, &'a str);

/// The calls, tallied for [`check_sends`].
#[derive(Default)]
struct Tally<'a> {
    /// Per target, the accepted calls that carried it.
    recorded: HashMap<Key<'a>, usize>,
    /// Per target, the calls that got no answer or were cut short and carried it.
    explainable: HashMap<Key<'a>, usize>,
    /// Those calls by operation and target set, for matching the requests they lost.
    unanswered: HashMap<(&'a str, BTreeSet<&'a str>), Vec<usize>>,
    /// The request ids on accepted calls.
    recorded_ids: BTreeSet<&'a str>,
}

fn tally<'a>(db: &'a Db, seen: &[Seen]) -> Tally<'a> {
    let mut t = Tally::default();
    for (i, call) in db.calls.iter().enumerate() {
        let targets = call.targets(&db.jobs);
        let op = call.operation.as_str();
        let per_target = if seen[i] == Seen::Accepted {
            t.recorded_ids.extend(call.request_id.as_deref());
            &mut t.recorded
        } else if seen[i].unanswered() {
            t.unanswered
                .entry((op, targets.clone()))
                .or_default()
                .push(i);
            &mut t.explainable
        } else {
            continue;
        };
        for target in targets {
            *per_target.entry((op, target)).or_default() += 1;
        }
    }
    t
}

/// Every request the fake served is on the jobs it served, or is matched to one call that got
/// no answer (a fault) or was cut short (a kill) and carried the same targets; per target, the
/// sends beyond the recorded ones are no more than such calls carried it; per kill, at most one
/// batch per route. Returns the killed workers whose call the fake served.
fn check_sends(
    e: &Evidence<'_>,
    db: &Db,
    seen: &[Seen],
    v: &mut Violations,
    f: &mut Figures,
) -> BTreeSet<u32> {
    let mut t = tally(db, seen);
    let mut sends: HashMap<Key<'_>, usize> = HashMap::new();
    let mut per_kill: BTreeMap<u32, usize> = BTreeMap::new();
    for req in &e.stats.qiniu.issued {
        let op = req.operation.as_str();
        let targets: BTreeSet<&str> = req
            .urls
            .iter()
            .chain(&req.dirs)
            .map(String::as_str)
            .collect();
        for target in &targets {
            *sends.entry((op, target)).or_default() += 1;
        }
        if t.recorded_ids.contains(req.request_id.as_str()) {
            continue;
        }
        let n = targets.len();
        match t.unanswered.get_mut(&(op, targets)).and_then(Vec::pop) {
            Some(i) if seen[i] == Seen::Unfinished => {
                f.lost_to_kills += 1;
                *per_kill.entry(db.calls[i].pid().unwrap_or(0)).or_default() += n;
            }
            Some(_) => f.lost_to_faults += 1,
            None => v.add(
                "every request the fake served is on its jobs, or its answer was lost to a fault or a kill",
                format!("request {} ({op}, {n} targets) is on no job, and no unanswered call carried those targets", req.request_id),
            ),
        }
    }
    // N.B. `slow` serves only when the client is still waiting when its delay ends.
    let serving_faults: u64 = ["drop-after", "slow"]
        .iter()
        .map(|k| e.stats.faults.get(*k).copied().unwrap_or(0))
        .sum();
    if f.lost_to_faults as u64 > serving_faults {
        v.add(
            "only drop-after and slow lose a served answer",
            format!(
                "{} answers lost to faults; {serving_faults} drop-after and slow faults",
                f.lost_to_faults
            ),
        );
    }
    check_duplicates(&sends, &t, v, f);
    for (pid, &n) in &per_kill {
        f.max_duplicates_per_kill = f.max_duplicates_per_kill.max(n);
        if n > REFRESH_BATCH + PREFETCH_BATCH {
            v.add(
                "a kill costs at most one batch per route",
                format!("killing worker {pid} resent {n} targets"),
            );
        }
    }
    per_kill.into_keys().collect()
}

/// Per target: sends beyond the accepted calls that carried it are no more than the calls that
/// carried it and got no answer or were cut short.
fn check_duplicates(
    sends: &HashMap<Key<'_>, usize>,
    t: &Tally<'_>,
    v: &mut Violations,
    f: &mut Figures,
) {
    for (key, &n) in sends {
        let duplicates = n.saturating_sub(t.recorded.get(key).copied().unwrap_or(0));
        let cap = t.explainable.get(key).copied().unwrap_or(0);
        f.target_sends += n;
        f.duplicates += duplicates;
        if duplicates > cap {
            v.add(
                "no target is sent more often than faults and crashes explain",
                format!(
                    "{} {} sent {n} times: {} on record, {cap} unanswered calls carried it",
                    key.0,
                    key.1,
                    n - duplicates
                ),
            );
        }
    }
    f.explainable = t.explainable.values().sum();
}

/// Every kill happened, classified by what the victim was doing.
fn check_kills(e: &Evidence<'_>, served: &BTreeSet<u32>, v: &mut Violations, f: &mut Figures) {
    f.kills = e.run.kills.len();
    if f.kills != e.plan.kills {
        v.add(
            "the crash loop kills as planned",
            format!("{} of {} kills", f.kills, e.plan.kills),
        );
    }
    for kill in &e.run.kills {
        let phase = if kill.open_calls > 0 && served.contains(&kill.pid) {
            "after the fake served its call, before the record"
        } else if kill.open_calls > 0 {
            "with a call begun, not served"
        } else if kill.leased_jobs > 0 {
            "after a claim, before the call"
        } else {
            "holding nothing (idle, starting, or in a transaction)"
        };
        *f.kill_phases.entry(phase).or_default() += 1;
    }
}

/// No job stays `running` much past its lease: a live worker requeues a dead one's jobs.
fn check_leases(e: &Evidence<'_>, v: &mut Violations, f: &mut Figures) {
    let watch = e.run.leases;
    f.lease_samples = watch.samples;
    f.max_running = watch.max_running;
    f.max_lease_overdue_ms = watch.max_overdue_ms;
    f.max_wal_bytes = watch.max_wal_bytes;
    if watch.max_overdue_ms > LEASE_MS {
        v.add(
            "no job is stuck running past its lease",
            format!(
                "a job was still running {} ms after its lease expired",
                watch.max_overdue_ms
            ),
        );
    }
}

/// Counts the workers' warnings and errors; a live worker losing its jobs to another after its
/// lease expired means the lease did not cover a call.
fn check_logs(e: &Evidence<'_>, v: &mut Violations, f: &mut Figures) {
    for log in &e.run.logs {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        for line in text.lines() {
            let Ok(entry) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let level = entry["level"].as_str().unwrap_or("");
            if level != "WARN" && level != "ERROR" {
                continue;
            }
            let message = entry["message"].as_str().unwrap_or("").to_owned();
            if message.contains("taken over by another worker") {
                v.add(
                    "a live worker keeps its lease",
                    format!("{}: {line}", log.display()),
                );
            }
            let mut key = format!("{level} {message}");
            if let Some(error) = entry["error"].as_str() {
                key.extend([": ", error].into_iter().flat_map(|s| s.chars()).take(160));
            }
            *f.worker_warnings.entry(key).or_default() += 1;
        }
    }
}

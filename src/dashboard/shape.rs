//! The JSON shapes of `status --json`, shared by the CLI and the dashboard's API: times in
//! RFC 3339 UTC, every field of a row, nothing secret (rows hold no credentials).

use serde_json::{Value, json};

use crate::clock;
use crate::quota::Forecast;
use crate::store::{Call, Gate, Job, Summary};

/// An optional time (ms) as RFC 3339, or null.
pub fn opt_time(ms: Option<i64>) -> Value {
    ms.map_or(Value::Null, |m| Value::String(clock::rfc3339(m)))
}

/// A job, as `status --json` lists it.
pub fn job_json(job: &Job) -> Value {
    json!({
        "id": job.id,
        "provider": job.provider,
        "account": job.account,
        "action": job.action,
        "target": job.target,
        "tag": job.tag,
        "state": job.state,
        "attempts": job.attempts,
        "next_at": clock::rfc3339(job.next_at),
        "lease_owner": job.lease_owner,
        "lease_expires_at": opt_time(job.lease_expires_at),
        "request_id": job.request_id,
        "provider_code": job.provider_code,
        "last_error": job.last_error,
        "created_at": clock::rfc3339(job.created_at),
        "updated_at": clock::rfc3339(job.updated_at),
        "finished_at": opt_time(job.finished_at),
        "priority": job.priority,
        "served_by_dir": job.served_by_dir,
        "accepted_at": opt_time(job.accepted_at),
        "confirm_at": opt_time(job.confirm_at),
        "confirmed_at": opt_time(job.confirmed_at),
        "cdn_detail": job.cdn_detail,
    })
}

/// A lane's quota forecast: used today, left, distinct targets queued, and whether they fit
/// before the reset.
pub fn forecast_json(f: &Forecast) -> Value {
    json!({
        "provider": f.lane.provider,
        "account": f.lane.account,
        "action": f.lane.action,
        "quota_day": f.quota_day,
        "used_today": f.used_today,
        "left": f.left,
        "queued_targets": f.queued_targets,
        "fits": f.waiting == 0,
        "waiting": f.waiting,
        "reset_at": clock::rfc3339(f.reset_at),
        "message": f.message(),
    })
}

/// A provider call, as `status JOB --json` lists it.
pub fn call_json(call: &Call) -> Value {
    json!({
        "id": call.id,
        "provider": call.provider,
        "account": call.account,
        "operation": call.operation,
        "worker": call.worker,
        "target_count": call.target_count,
        "started_at": clock::rfc3339(call.started_at),
        "finished_at": opt_time(call.finished_at),
        "http_status": call.http_status,
        "provider_code": call.provider_code,
        "request_id": call.request_id,
        "trace_id": call.trace_id,
        "outcome": call.outcome,
        "message": call.message,
    })
}

/// A lane: its gate (paused, why, until) and last reported quota.
pub fn gate_json(gate: &Gate, now: i64) -> Value {
    json!({
        "provider": gate.lane.provider,
        "account": gate.lane.account,
        "action": gate.lane.action,
        "paused": gate.paused_until.is_some_and(|t| t > now),
        "paused_until": opt_time(gate.paused_until),
        "strikes": gate.strikes,
        "reason": gate.reason,
        "quota_day": gate.quota_day,
        "surplus_day": gate.surplus_day,
        "quota_at": opt_time(gate.quota_at),
    })
}

/// Counts, lanes and jobs, as `status --json` prints them.
pub fn summary_json(summary: &Summary, jobs: &[Job], now: i64) -> Value {
    json!({
        "counts": summary.counts,
        "lanes": summary.lanes.iter().map(|g| gate_json(g, now)).collect::<Vec<_>>(),
        "oldest_queued_at": opt_time(summary.oldest_queued_at),
        "oldest_queued_age_secs": summary.oldest_queued_at.map(|t| (now - t).max(0) / 1000),
        "jobs": jobs.iter().map(job_json).collect::<Vec<_>>(),
    })
}

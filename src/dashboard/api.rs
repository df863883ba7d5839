//! The read-only JSON API, in the shapes of `status --json` ([`super::shape`]):
//!
//! - `GET /api/v1/summary`: `status --json` (counts, lanes, oldest queued, the 20 newest jobs)
//!   plus what the page draws: `hours` (the 24 h rollup), `finish_ms` (enqueue-to-finish
//!   percentiles of jobs that succeeded in the last 24 h), `calls` (the 20 newest provider
//!   calls) and `failed` (the 20 newest failed jobs).
//! - `GET /api/v1/lanes`: `{"lanes": [...]}`.
//! - `GET /api/v1/jobs?state=&provider=&tag=&url=&since=&limit=&before=`: the filters of
//!   `status`, a page of at most `limit` (default 50, at most 1000) jobs newest first, and
//!   `next_before` to pass as `before` for the next page (null on the last).
//! - `GET /api/v1/jobs/{id}`: `{"job": ..., "calls": [...]}`, 404 if there is no such job.
//!
//! Invariants: every read is bounded (see `store::dashboard`); a bad parameter is a 400 naming
//! it and why; `<`, `>` and `&` in the output are written as `\u003c`, `\u003e`, `\u0026`, so
//! the JSON is also safe to embed in HTML.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};
use serde_json::{Value, json};

use super::shape::{call_json, forecast_json, job_json, summary_json};
use crate::clock;
use crate::store::{JobFilter, JobPage, Store, StoreError};

/// Page size of `/api/v1/jobs` when `limit` is not given.
pub const DEFAULT_LIMIT: i64 = 50;
/// The largest `limit` of `/api/v1/jobs`.
pub const MAX_LIMIT: i64 = 1000;
/// Rows of each table in the summary.
const TABLE_ROWS: i64 = 20;
/// At most this many finished jobs feed the percentiles.
const FINISH_SAMPLE: i64 = 5000;
const DAY_MS: i64 = 86_400_000;

/// Answers a path under `/api/`.
pub async fn answer(store: &Store, path: &str, query: Option<&str>) -> Response<Full<Bytes>> {
    let result = match path.strip_prefix("/api/v1/") {
        Some("summary") => summary(store).await,
        Some("lanes") => lanes(store).await,
        Some("jobs") => match page(query) {
            Ok(page) => jobs(store, &page).await,
            Err(message) => return error(StatusCode::BAD_REQUEST, &message),
        },
        Some(rest) if rest.starts_with("jobs/") => match rest["jobs/".len()..].parse::<i64>() {
            Ok(id) => match job(store, id).await {
                Ok(Some(value)) => Ok(value),
                Ok(None) => return error(StatusCode::NOT_FOUND, &format!("no job {id}")),
                Err(e) => Err(e),
            },
            Err(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "the job id in /api/v1/jobs/{id} must be a whole number",
                );
            }
        },
        _ => return error(StatusCode::NOT_FOUND, "no such API path; see the README"),
    };
    match result {
        Ok(value) => json_response(StatusCode::OK, &value),
        Err(e) => {
            tracing::warn!(error = %e, "dashboard: cannot read the queue");
            error(StatusCode::INTERNAL_SERVER_ERROR, "cannot read the queue")
        }
    }
}

async fn summary(store: &Store) -> Result<Value, StoreError> {
    let now = clock::now_ms();
    let summary = store.summary().await?;
    let recent = |state| JobPage {
        filter: JobFilter {
            state,
            limit: TABLE_ROWS,
            ..JobFilter::default()
        },
        before: None,
    };
    let jobs = store.job_page(&recent(None)).await?;
    let failed = store
        .job_page(&recent(Some(crate::model::JobState::Failed)))
        .await?;
    let calls = store.recent_calls(TABLE_ROWS).await?;
    let hours = store.hourly(now - DAY_MS).await?;
    let times = store.finish_times(now - DAY_MS, FINISH_SAMPLE).await?;
    let forecasts = crate::quota::forecasts(
        &summary.lanes,
        &store.queued_targets(&summary.lanes).await?,
        now,
    );
    let mut value = summary_json(&summary, &jobs, now);
    if let Value::Object(map) = &mut value {
        map.insert("now".into(), json!(clock::rfc3339(now)));
        map.insert(
            "forecast".into(),
            forecasts
                .iter()
                .map(forecast_json)
                .collect::<Vec<_>>()
                .into(),
        );
        map.insert("hours".into(), json!(hours));
        map.insert("finish_ms".into(), percentiles(&times));
        map.insert(
            "calls".into(),
            calls.iter().map(call_json).collect::<Vec<_>>().into(),
        );
        map.insert(
            "failed".into(),
            failed.iter().map(job_json).collect::<Vec<_>>().into(),
        );
    }
    Ok(value)
}

/// p50, p90, p99 and max of sorted `times`, with the sample size.
fn percentiles(times: &[i64]) -> Value {
    let at = |q: f64| -> Option<i64> {
        let last = times.len().checked_sub(1)?;
        // Nearest rank; the sample is at most FINISH_SAMPLE long, so the cast is exact.
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let i = ((q * last as f64).round() as usize).min(last);
        times.get(i).copied()
    };
    json!({ "count": times.len(), "p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "max": times.last() })
}

async fn lanes(store: &Store) -> Result<Value, StoreError> {
    let now = clock::now_ms();
    let gates = store.gates().await?;
    let forecasts = crate::quota::forecasts(&gates, &store.queued_targets(&gates).await?, now);
    Ok(json!({
        "lanes": gates.iter().map(|g| super::shape::gate_json(g, now)).collect::<Vec<_>>(),
        "forecast": forecasts.iter().map(forecast_json).collect::<Vec<_>>(),
    }))
}

async fn jobs(store: &Store, page: &JobPage) -> Result<Value, StoreError> {
    let jobs = store.job_page(page).await?;
    let full = i64::try_from(jobs.len()).unwrap_or(i64::MAX) >= page.filter.limit;
    let next = if full {
        jobs.last().map(|j| j.id)
    } else {
        None
    };
    Ok(json!({ "jobs": jobs.iter().map(job_json).collect::<Vec<_>>(), "next_before": next }))
}

async fn job(store: &Store, id: i64) -> Result<Option<Value>, StoreError> {
    let Some(job) = store.job(id).await? else {
        return Ok(None);
    };
    let calls = store.job_calls(id).await?;
    Ok(Some(
        json!({ "job": job_json(&job), "calls": calls.iter().map(call_json).collect::<Vec<_>>() }),
    ))
}

/// Parses the query of `/api/v1/jobs`; the message names the bad parameter.
pub fn page(query: Option<&str>) -> Result<JobPage, String> {
    let mut page = JobPage {
        filter: JobFilter {
            limit: DEFAULT_LIMIT,
            ..JobFilter::default()
        },
        before: None,
    };
    let bad =
        |name: &str, why: &dyn std::fmt::Display| format!("bad query parameter {name}: {why}");
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        if value.is_empty() {
            continue;
        }
        let f = &mut page.filter;
        match &*key {
            "state" => f.state = Some(value.parse().map_err(|e| bad("state", &e))?),
            "provider" => f.provider = Some(value.parse().map_err(|e| bad("provider", &e))?),
            "tag" => f.tag = Some(value.into_owned()),
            "url" => f.url_contains = Some(value.into_owned()),
            "since" => {
                let d = clock::parse_duration(&value).map_err(|e| bad("since", &e))?;
                let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
                f.updated_since = Some(clock::now_ms().saturating_sub(ms));
            }
            "limit" => {
                f.limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| {
                        bad(
                            "limit",
                            &format!("must be a whole number from 1 to {MAX_LIMIT}"),
                        )
                    })?;
            }
            "before" => {
                page.before = Some(
                    value
                        .parse()
                        .map_err(|_| bad("before", &"must be a job id"))?,
                );
            }
            other => {
                return Err(bad(
                    other,
                    &"unknown; use state, provider, tag, url, since, limit or before",
                ));
            }
        }
    }
    Ok(page)
}

/// `value` as JSON with `<`, `>` and `&` escaped (they only occur inside strings).
fn encode(value: &Value) -> String {
    value
        .to_string()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

fn json_response(status: StatusCode, value: &Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(encode(value))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    json_response(status, &json!({ "error": message }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_parsed_or_named() {
        let page = page(Some("state=failed&tag=a%20b&limit=5&before=10")).unwrap();
        assert_eq!(page.filter.tag.as_deref(), Some("a b"));
        assert_eq!(page.filter.limit, 5);
        assert_eq!(page.before, Some(10));
        assert!(super::page(Some("limit=0")).unwrap_err().contains("limit"));
        assert!(
            super::page(Some("state=nope"))
                .unwrap_err()
                .contains("state")
        );
        assert!(
            super::page(Some("colour=red"))
                .unwrap_err()
                .contains("colour")
        );
    }

    #[test]
    fn percentiles_of_a_sample() {
        let v = percentiles(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        assert_eq!(v["p50"], 6);
        assert_eq!(v["max"], 10);
        assert_eq!(percentiles(&[])["p50"], Value::Null);
    }

    #[test]
    fn markup_is_escaped_in_json() {
        let value = json!({"tag": "<img src=x onerror=alert(1)>&"});
        let text = encode(&value);
        assert_eq!(
            text,
            r#"{"tag":"\u003cimg src=x onerror=alert(1)\u003e\u0026"}"#
        );
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), value);
    }
}

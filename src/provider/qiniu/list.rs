//! Qiniu's task lists: `POST /v2/tune/refresh/list` and `/v2/tune/prefetch/list`, which say
//! whether an accepted refresh or prefetch has reached the edge.
//!
//! Signed like refresh (QBox over the path; the JSON body is not signed). purgeq asks by
//! `requestId`, or by `urls` for a request Qiniu answered 400037 (no request id), one page of
//! [`PAGE_SIZE`] at a time. The answer is classified once, by the pure [`classify_list`]:
//! unknown fields (`progress`, `taskId`, ...) and missing optional ones are tolerated; a body
//! that is not the documented shape is never taken for an answer.

use serde::Deserialize;

use super::{Answer, QiniuClient};
use crate::model::Action;
use crate::provider::wire::{excerpt, one_line};
use crate::provider::{
    CallReport, CdnTask, ConfirmBy, ConfirmQuery, ConfirmReport, Listing, Outcome, TaskState,
};

/// The path of the refresh task list under the endpoint.
pub const REFRESH_LIST_PATH: &str = "/v2/tune/refresh/list";
/// The path of the prefetch task list under the endpoint.
pub const PREFETCH_LIST_PATH: &str = "/v2/tune/prefetch/list";
/// Tasks per page asked for (Qiniu's default).
pub const PAGE_SIZE: u64 = 100;

impl QiniuClient {
    /// Asks one page of the task list `query` names, and classifies the answer.
    pub async fn list(&self, query: &ConfirmQuery) -> ConfirmReport {
        let path = match query.action {
            Action::PrefetchUrl => PREFETCH_LIST_PATH,
            _ => REFRESH_LIST_PATH,
        };
        let mut body = serde_json::Map::new();
        match &query.by {
            ConfirmBy::Request(id) => {
                body.insert("requestId".to_owned(), id.as_str().into());
            }
            ConfirmBy::Urls(urls) => {
                body.insert("urls".to_owned(), urls.as_slice().into());
            }
        }
        body.insert("pageNo".to_owned(), query.page.into());
        body.insert("pageSize".to_owned(), PAGE_SIZE.into());
        match self.post(path, &body).await {
            Ok(answer) => classify_list(&answer),
            Err(report) => ConfirmReport {
                listing: Listing::Unanswered,
                report,
            },
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct ListBody {
    code: Option<i64>,
    error: Option<String>,
    page_size: Option<u64>,
    total: Option<u64>,
    items: Option<Vec<Item>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct Item {
    url: Option<String>,
    state: Option<String>,
    state_detail: Option<String>,
    create_at: Option<String>,
    end_at: Option<String>,
}

/// Decides what a task-list answer means. Pure. HTTP 5xx is transient whatever the body says;
/// `200` under a 2xx status lists tasks (`success`, `failure`, anything else still processing);
/// `400036` is an unknown request id; `401001`/`401002` (or a bare 401/403) auth, `403022`/
/// `403024` (or a bare 429) rate limit; anything else, or a body that doesn't parse, transient.
pub fn classify_list(answer: &Answer) -> ConfirmReport {
    let status = answer.status;
    let parsed: Result<ListBody, String> = serde_json::from_slice(&answer.body)
        .map_err(|_| excerpt(&answer.body))
        .and_then(|v: serde_json::Value| {
            serde_json::from_value(v).map_err(|e| format!("{} ({e})", excerpt(&answer.body)))
        });
    let (listing, outcome, message) = match &parsed {
        Ok(body) => with_body(status, body),
        Err(shown) => {
            let outcome = bare_status(status);
            (
                Listing::Unanswered,
                outcome,
                format!("HTTP {status}: unparseable body: {shown}"),
            )
        }
    };
    let code = parsed.as_ref().ok().and_then(|b| b.code);
    ConfirmReport {
        listing,
        report: CallReport {
            outcome,
            http_status: Some(status),
            code,
            request_id: None,
            trace_id: answer.x_reqid.clone(),
            message,
            quotas: Vec::new(),
            retry_after: answer.retry_after,
        },
    }
}

fn bare_status(status: u16) -> Outcome {
    match status {
        429 => Outcome::RateLimited,
        401 | 403 => Outcome::Auth,
        _ => Outcome::Transient,
    }
}

fn with_body(status: u16, body: &ListBody) -> (Listing, Outcome, String) {
    let error = one_line(body.error.as_deref().unwrap_or(""));
    let said = |what: &str| match body.code {
        Some(code) => format!("HTTP {status}, code {code}: {what} {error}")
            .trim_end()
            .to_owned(),
        None => format!("HTTP {status}: {what}"),
    };
    if status >= 500 {
        return (
            Listing::Unanswered,
            Outcome::Transient,
            said("server error"),
        );
    }
    match body.code {
        Some(200) if (200..300).contains(&status) => {
            let tasks: Vec<CdnTask> = body.items.iter().flatten().filter_map(task).collect();
            let total = body.total.unwrap_or(tasks.len() as u64);
            let message = format!("{} task(s) of {total}", tasks.len());
            let listing = Listing::Tasks {
                tasks,
                total,
                page_size: body.page_size.filter(|n| *n > 0).unwrap_or(PAGE_SIZE),
            };
            (
                listing,
                Outcome::Accepted {
                    rejected: Vec::new(),
                },
                message,
            )
        }
        Some(400_036) => (
            Listing::UnknownRequest,
            Outcome::Transient,
            said("unknown request id"),
        ),
        Some(401_001 | 401_002) => (Listing::Unanswered, Outcome::Auth, said("auth")),
        Some(403_022 | 403_024) => (
            Listing::Unanswered,
            Outcome::RateLimited,
            said("rate limited"),
        ),
        Some(_) if status == 429 => (
            Listing::Unanswered,
            Outcome::RateLimited,
            said("rate limited"),
        ),
        Some(_) => (
            Listing::Unanswered,
            Outcome::Transient,
            said("unexpected code"),
        ),
        None => (
            Listing::Unanswered,
            bare_status(status),
            said("answer without a code"),
        ),
    }
}

/// One listed task; an item without a URL is no task of ours.
fn task(item: &Item) -> Option<CdnTask> {
    let url = item.url.clone().filter(|u| !u.is_empty())?;
    let state = match item.state.as_deref() {
        Some("success") => TaskState::Success,
        Some("failure") => TaskState::Failure,
        _ => TaskState::Processing,
    };
    Some(CdnTask {
        url,
        state,
        detail: one_line(item.state_detail.as_deref().unwrap_or("")),
        created_at: item.create_at.as_deref().and_then(parse_china_time),
        end_at: item.end_at.as_deref().and_then(parse_china_time),
    })
}

/// `2006-01-02 15:04:05` in China time (UTC+8), as ms since the epoch.
pub fn parse_china_time(text: &str) -> Option<i64> {
    let civil = jiff::civil::DateTime::strptime("%Y-%m-%d %H:%M:%S", text.trim()).ok()?;
    let zoned = civil
        .to_zoned(jiff::tz::TimeZone::fixed(jiff::tz::offset(8)))
        .ok()?;
    Some(zoned.timestamp().as_millisecond())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> Answer {
        Answer {
            status,
            x_reqid: Some("x".to_owned()),
            retry_after: None,
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn tasks_with_unknown_and_missing_fields() {
        let body = r#"{"code":200,"error":"","pageNo":0,"pageSize":100,"total":3,"items":[
            {"requestId":"r","url":"http://a/1","state":"success","stateDetail":"ok",
             "createAt":"2026-12-01 10:00:00","beginAt":"2026-12-01 10:00:01",
             "endAt":"2026-12-01 10:05:00","isDir":"no","progress":100,"taskId":"t1"},
            {"url":"http://a/2","state":"failure","stateDetail":"origin 502"},
            {"url":"http://a/3","state":"queued"},
            {"state":"success"}]}"#;
        let r = classify_list(&answer(200, body));
        let Listing::Tasks {
            tasks,
            total,
            page_size,
        } = r.listing
        else {
            panic!("{r:?}")
        };
        assert_eq!((total, page_size, tasks.len()), (3, 100, 3));
        assert_eq!(tasks[0].state, TaskState::Success);
        // 10:05 in China is 02:05 UTC.
        assert_eq!(tasks[0].end_at, Some(1_796_090_700_000));
        assert_eq!(
            (tasks[1].state, tasks[1].detail.as_str()),
            (TaskState::Failure, "origin 502")
        );
        assert_eq!(tasks[2].state, TaskState::Processing);
    }

    #[test]
    fn failures_are_unanswered_and_say_why() {
        for (status, body, outcome) in [
            (200, "{\"code\":200,\"ite", Outcome::Transient),
            (503, r#"{"code":200,"items":[]}"#, Outcome::Transient),
            (429, "slow down", Outcome::RateLimited),
            (
                403,
                r#"{"code":403024,"error":"qps"}"#,
                Outcome::RateLimited,
            ),
            (401, r#"{"code":401002,"error":"bad token"}"#, Outcome::Auth),
            (200, r#"{"code":500002}"#, Outcome::Transient),
            (200, r#"{"code":200,"items":"x"}"#, Outcome::Transient),
        ] {
            let r = classify_list(&answer(status, body));
            assert_eq!(r.listing, Listing::Unanswered, "{status} {body}");
            assert_eq!(r.report.outcome, outcome, "{status} {body}");
            assert!(
                r.report.message.contains(&status.to_string()),
                "{}",
                r.report.message
            );
        }
    }

    #[test]
    fn unknown_request_id() {
        let r = classify_list(&answer(
            400,
            r#"{"code":400036,"error":"invalid request id"}"#,
        ));
        assert_eq!(r.listing, Listing::UnknownRequest);
        assert!(r.report.message.contains("invalid request id"));
    }
}

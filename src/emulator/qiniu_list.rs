//! The Qiniu task lists: every accepted refresh or prefetch target becomes a task that stays
//! `processing` for the configured time, then ends `success`, or `failure` for a seeded fraction;
//! `POST /v2/tune/refresh/list` and `/v2/tune/prefetch/list` list them as Qiniu does.
//!
//! A list request is checked like a purge (the same QBox signature, the same fault injection,
//! with its own script `list_fail_next`), then filtered by `requestId` (an unknown one is
//! answered 400036), `urls`, `isDir`, `state`, `startTime`/`endTime` (China time, compared as
//! Qiniu formats them) and paged by `pageNo` (from 0) and `pageSize` (default 100, numbers or
//! strings of digits). Empty and `null` fields count as absent, as the SDKs send them. Items carry every documented field plus
//! `taskId` and `progress`, which some real answers carry too.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{Value, json};

use super::qiniu::{QiniuConfig, Reply};
use crate::provider::qiniu::Operation;

/// Tasks per page when the request names no page size.
const DEFAULT_PAGE_SIZE: u64 = 100;

/// One accepted target.
#[derive(Debug)]
struct Task {
    request_id: String,
    serial: u64,
    url: String,
    is_dir: bool,
    op: Operation,
    created: jiff::Timestamp,
    done: jiff::Timestamp,
    fails: bool,
}

impl Task {
    fn state(&self, now: jiff::Timestamp) -> &'static str {
        match (now >= self.done, self.fails) {
            (false, _) => "processing",
            (true, false) => "success",
            (true, true) => "failure",
        }
    }

    fn item(&self, now: jiff::Timestamp) -> Value {
        let state = self.state(now);
        let (detail, end, progress) = match state {
            "processing" => ("", String::new(), 50),
            "success" => ("", china_time(self.done), 100),
            _ => (
                "origin unreachable (emulated failure)",
                china_time(self.done),
                100,
            ),
        };
        json!({
            "requestId": self.request_id,
            "taskId": format!("{:x}", self.serial),
            "url": self.url,
            "state": state,
            "stateDetail": detail,
            "progress": progress,
            "createAt": china_time(self.created),
            "beginAt": china_time(self.created),
            "endAt": end,
            "isDir": if self.is_dir { "yes" } else { "no" },
        })
    }
}

/// `2006-01-02 15:04:05` in China time.
fn china_time(at: jiff::Timestamp) -> String {
    at.to_zoned(jiff::tz::TimeZone::fixed(jiff::tz::offset(8)))
        .strftime("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// Every task, indexed by request id and by URL.
#[derive(Debug)]
pub(crate) struct Tasks {
    items: Vec<Task>,
    by_request: HashMap<String, Vec<usize>>,
    by_url: HashMap<String, Vec<usize>>,
    rng: fastrand::Rng,
    serial: u64,
}

impl Tasks {
    pub(crate) fn new(config: &QiniuConfig) -> Self {
        Tasks {
            items: Vec::new(),
            by_request: HashMap::new(),
            by_url: HashMap::new(),
            rng: fastrand::Rng::with_seed(config.fail_seed),
            serial: 0,
        }
    }

    /// Whether one of `urls` has a task of `op` still processing (Qiniu answers 400037).
    pub(crate) fn busy(&self, op: Operation, urls: &[String]) -> bool {
        let now = jiff::Timestamp::now();
        urls.iter().any(|url| {
            self.by_url.get(url).into_iter().flatten().any(|&i| {
                let t = &self.items[i];
                t.op == op && t.state(now) == "processing"
            })
        })
    }

    /// Records the tasks of an accepted request; returns their task ids by target.
    pub(crate) fn issue(
        &mut self,
        config: &QiniuConfig,
        request_id: &str,
        op: Operation,
        urls: &[String],
        dirs: &[String],
    ) -> serde_json::Map<String, Value> {
        let created = jiff::Timestamp::now();
        let done = created
            .checked_add(config.complete_after)
            .unwrap_or(jiff::Timestamp::MAX);
        let mut task_ids = serde_json::Map::new();
        let targets = urls
            .iter()
            .map(|u| (u, false))
            .chain(dirs.iter().map(|d| (d, true)));
        for (target, is_dir) in targets {
            self.serial += 1;
            // N.B. Draw for every task, so a seed gives the same failures for the same tasks.
            let fails = self.rng.f64() < config.fail_fraction;
            let i = self.items.len();
            self.by_request
                .entry(request_id.to_owned())
                .or_default()
                .push(i);
            self.by_url.entry(target.clone()).or_default().push(i);
            self.items.push(Task {
                request_id: request_id.to_owned(),
                serial: self.serial,
                url: target.clone(),
                is_dir,
                op,
                created,
                done,
                fails,
            });
            task_ids.insert(target.clone(), Value::String(format!("{:x}", self.serial)));
        }
        task_ids
    }

    /// Answers a (signed, fault-free) list request for `op`'s tasks.
    pub(crate) fn list(&self, op: Operation, body: &[u8]) -> Reply {
        let query: ListRequest = match serde_json::from_slice(body) {
            Ok(q) => q,
            Err(e) => {
                return Reply::coded(400_000, &format!("invalid request body: {e}"), json!({}));
            }
        };
        let candidates: Vec<usize> = match (present(&query.request_id), &query.urls) {
            (Some(id), _) => match self.by_request.get(id) {
                Some(found) => found.clone(),
                None => return Reply::coded(400_036, "invalid request id", json!({})),
            },
            (None, Some(urls)) if !urls.is_empty() => urls
                .iter()
                .flat_map(|u| self.by_url.get(u).into_iter().flatten().copied())
                .collect(),
            _ => (0..self.items.len()).collect(),
        };
        let now = jiff::Timestamp::now();
        let mut matching: Vec<&Task> = candidates
            .into_iter()
            .map(|i| &self.items[i])
            .filter(|t| t.op == op && query.admits(t, now))
            .collect();
        // Newest first.
        matching.sort_by_key(|t| std::cmp::Reverse(t.serial));
        let page_no = number(&query.page_no).unwrap_or(0);
        let page_size = number(&query.page_size)
            .filter(|n| *n > 0)
            .unwrap_or(DEFAULT_PAGE_SIZE);
        let skip = usize::try_from(page_no.saturating_mul(page_size)).unwrap_or(usize::MAX);
        let take = usize::try_from(page_size).unwrap_or(usize::MAX);
        let items: Vec<Value> = matching
            .iter()
            .skip(skip)
            .take(take)
            .map(|t| t.item(now))
            .collect();
        Reply::coded(
            200,
            "success",
            json!({
                "pageNo": page_no,
                "pageSize": page_size,
                "total": matching.len(),
                "items": items,
            }),
        )
    }
}

/// A list request body; every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct ListRequest {
    request_id: Option<String>,
    is_dir: Option<String>,
    urls: Option<Vec<String>>,
    state: Option<String>,
    page_no: Option<Value>,
    page_size: Option<Value>,
    start_time: Option<String>,
    end_time: Option<String>,
}

/// A number sent as a JSON number or as a string of digits (some SDKs send either).
fn number(field: &Option<Value>) -> Option<u64> {
    match field.as_ref()? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A field that is set and not empty.
fn present(field: &Option<String>) -> Option<&str> {
    field.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

impl ListRequest {
    fn admits(&self, task: &Task, now: jiff::Timestamp) -> bool {
        let created = china_time(task.created);
        let is_dir = present(&self.is_dir).is_none_or(|d| (d == "yes") == task.is_dir);
        let state = present(&self.state).is_none_or(|s| s == task.state(now));
        let start = present(&self.start_time).is_none_or(|s| created.as_str() >= s);
        let end = present(&self.end_time).is_none_or(|e| {
            let e = if e.len() == 10 {
                format!("{e} 23:59:59")
            } else {
                e.to_owned()
            };
            created <= e
        });
        is_dir && state && start && end
    }
}

/// The operation a task-list path lists, if it is one.
pub(crate) fn list_operation_for(path: &str) -> Option<Operation> {
    match path {
        "/v2/tune/refresh/list" => Some(Operation::Refresh),
        "/v2/tune/prefetch/list" => Some(Operation::Prefetch),
        _ => None,
    }
}

/// The name a task-list endpoint is counted under in the stats.
pub(crate) fn list_name(op: Operation) -> &'static str {
    match op {
        Operation::Refresh => "refresh_list",
        Operation::Prefetch => "prefetch_list",
    }
}

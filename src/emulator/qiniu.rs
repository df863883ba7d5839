//! The Qiniu fusion CDN side of the emulator: `POST /v2/tune/refresh` and `/v2/tune/prefetch`
//! (and the seed document's legacy `/refresh` and `/prefetch`); the task lists that say when an
//! accepted purge is done are in `qiniu_list.rs`.
//!
//! A request is checked in the order the real API is understood to check it, and nothing is
//! spent unless every check passes:
//! 1. the QBox signature (401002 when the header is missing or malformed, 401001 when the key or
//!    the signature is wrong);
//! 2. the body (400000 when it is not `{"urls": [...], "dirs": [...]}`, or carries no target);
//! 3. the per-request limits (400000 "urls count exceeds the limit of 60": Qiniu publishes no code
//!    for this, so the emulator uses the family's generic one);
//! 4. every target's form (400031 `invalid url`, naming the malformed ones; a dir ends with `/`,
//!    or with `/*` as the API reference allows);
//! 5. every target's host against the accepted domains (400032 `invalid host`);
//! 6. a URL with a task of the same kind still processing (400037, nothing is processed);
//! 7. the daily quotas, per target (400034 URLs, 400035 dirs, 400033 prefetch).
//!
//! HTTP statuses follow Qiniu's convention that a body code's first three digits are the status
//! (400031 under 400, 401001 under 401, 500002 under 500). Every answer carries `X-Reqid` and
//! `X-Log`, which the official SDKs look for.

use std::collections::BTreeMap;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use hyper::http::request::Parts;
use hyper::{Response, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::qiniu_quota::spend_quota;
pub use super::qiniu_quota::{Allowance, QiniuState, QuotaStats};
use super::{FaultKind, Shared, State};
use crate::provider::qiniu::{
    MAX_PREFETCH_URLS, MAX_REFRESH_DIRS, MAX_REFRESH_URLS, Operation, hmac_sha1,
};
use crate::secret::Secret;

/// The access key `purgeq emulate` and `purgeq demo` accept when none is configured.
pub const DEMO_ACCESS_KEY: &str = "purgeq-demo-ak";
/// The secret key `purgeq emulate` and `purgeq demo` accept when none is configured.
pub const DEMO_SECRET_KEY: &str = "purgeq-demo-sk";

/// The code for a request the emulator can't take as a whole (bad JSON, too many targets).
/// Qiniu documents no code for these; this one is the emulator's choice.
pub const CODE_BAD_REQUEST: i64 = 400_000;
/// The server-error codes the [`FaultKind::ServerError`] fault answers with, in turn
/// (developer.qiniu.com/fusion/13361).
pub const SERVER_ERROR_CODES: [i64; 3] = [500_002, 500_005, 500_010];

/// An account the emulator plays.
#[derive(Debug, Clone)]
pub struct QiniuConfig {
    /// Its name, for the stats of a multi-account emulator.
    pub name: String,
    /// The access key requests must be signed with.
    pub access_key: String,
    /// The secret key requests must be signed with.
    pub secret_key: Secret,
    /// Accepted domains: `example.com` accepts `example.com` and every `*.example.com`.
    /// Empty accepts every host.
    pub domains: Vec<String>,
    /// Daily quotas.
    pub quotas: DailyQuotas,
    /// Per-request limits.
    pub limits: RequestLimits,
    /// How long an accepted task stays `processing` before it ends.
    pub complete_after: std::time::Duration,
    /// The fraction of tasks that end in `failure`, drawn per task.
    pub fail_fraction: f64,
    /// The seed of those draws: the same seed fails the same tasks.
    pub fail_seed: u64,
}

impl Default for QiniuConfig {
    fn default() -> Self {
        QiniuConfig {
            name: crate::model::DEFAULT_ACCOUNT.to_owned(),
            access_key: DEMO_ACCESS_KEY.to_owned(),
            secret_key: Secret::new(DEMO_SECRET_KEY),
            domains: Vec::new(),
            quotas: DailyQuotas::default(),
            limits: RequestLimits::default(),
            complete_after: std::time::Duration::ZERO,
            fail_fraction: 0.0,
            fail_seed: 0,
        }
    }
}

/// Daily allowances, counted per target; they refill at midnight China time (UTC+8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DailyQuotas {
    /// URL refreshes per day (Qiniu's default: 500).
    pub url_refresh: u64,
    /// Directory refreshes per day (Qiniu's default: 10).
    pub dir_refresh: u64,
    /// Prefetches per day (Qiniu's default: 100).
    pub prefetch: u64,
}

impl Default for DailyQuotas {
    fn default() -> Self {
        DailyQuotas {
            url_refresh: 500,
            dir_refresh: 10,
            prefetch: 100,
        }
    }
}

/// How many targets one request may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    /// URLs per refresh.
    pub refresh_urls: usize,
    /// Directories per refresh.
    pub refresh_dirs: usize,
    /// URLs per prefetch.
    pub prefetch_urls: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            refresh_urls: MAX_REFRESH_URLS,
            refresh_dirs: MAX_REFRESH_DIRS,
            prefetch_urls: MAX_PREFETCH_URLS,
        }
    }
}

/// What the Qiniu side has seen and done.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QiniuStats {
    /// Requests that reached each endpoint (`refresh`, `prefetch`, `refresh_list`,
    /// `prefetch_list`), faults included.
    pub requests: BTreeMap<String, u64>,
    /// Requests refused for their signature or `Authorization` header.
    pub unauthorized: u64,
    /// How many times each target was processed (refreshed or prefetched).
    pub purged: BTreeMap<String, u64>,
    /// Every request id issued, in order, with the targets it processed.
    pub issued: Vec<IssuedRequest>,
    /// The daily quotas and what is left of them.
    pub quota: QuotaStats,
    /// Quota units spent and requests refused for a used-up quota, per China-time day
    /// (`2026-12-01`), faults included.
    pub days: BTreeMap<String, DayUsage>,
}

/// One China-time day at the Qiniu side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayUsage {
    /// URL refresh units spent.
    pub url_refresh: u64,
    /// Directory refresh units spent.
    pub dir_refresh: u64,
    /// Prefetch units spent.
    pub prefetch: u64,
    /// Requests refused because a daily quota could not cover them (400033/400034/400035).
    pub quota_refused: u64,
}

/// A request that was processed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedRequest {
    /// The account that signed it.
    #[serde(default)]
    pub account: String,
    /// The `requestId` of the answer (also when the answer was never delivered).
    pub request_id: String,
    /// `refresh` or `prefetch`.
    pub operation: String,
    /// The URLs processed.
    pub urls: Vec<String>,
    /// The directories processed.
    pub dirs: Vec<String>,
}

/// The operation a request path asks for, if it is a Qiniu purge path.
pub(crate) fn operation_for(path: &str) -> Option<Operation> {
    match path {
        "/v2/tune/refresh" | "/refresh" => Some(Operation::Refresh),
        "/v2/tune/prefetch" | "/prefetch" => Some(Operation::Prefetch),
        _ => None,
    }
}

/// Counts a request to `op`'s endpoint, before any fault decides its fate.
pub(crate) fn count_request(shared: &Shared, op: Operation) {
    *shared
        .lock()
        .qiniu
        .stats
        .requests
        .entry(op.as_str().to_owned())
        .or_default() += 1;
}

/// What to answer, before the headers every answer gets.
pub(crate) struct Reply {
    status: StatusCode,
    /// The body code, for the log line.
    code: Option<i64>,
    body: Bytes,
    retry_after: Option<&'static str>,
}

impl Reply {
    /// A body-code answer under the status Qiniu pairs with that code.
    pub(crate) fn coded(code: i64, error: &str, extra: Value) -> Reply {
        let status = u16::try_from(code / 1000)
            .ok()
            .and_then(|s| StatusCode::from_u16(s).ok())
            .unwrap_or(StatusCode::OK);
        Reply::with_status(status, code, error, extra)
    }

    fn with_status(status: StatusCode, code: i64, error: &str, extra: Value) -> Reply {
        let mut body = json!({"code": code, "error": error});
        if let (Value::Object(body), Value::Object(extra)) = (&mut body, extra) {
            body.extend(extra);
        }
        Reply {
            status,
            code: Some(code),
            body: Bytes::from(serde_json::to_vec(&body).unwrap_or_default()),
            retry_after: None,
        }
    }
}

/// Handles one purge request to `op`, with the provider-level part of `fault` if any.
pub(crate) fn handle(
    shared: &Shared,
    op: Operation,
    parts: &Parts,
    body: &[u8],
    fault: Option<FaultKind>,
) -> Response<Full<Bytes>> {
    let (account, config) = signer(shared, parts);
    let mut state = shared.lock();
    state.qiniu_of(account).roll_day(config);
    let request = PurgeRequest::parse(body);
    let reply = match fault {
        Some(kind) => fault_reply(&mut state, config, op, kind, request.as_ref().ok()),
        None => process(&mut state, (account, config), op, parts, body, request),
    };
    let trace_id = state.trace_id();
    drop(state);
    tracing::debug!(
        op = op.as_str(),
        path = parts.uri.path(),
        status = reply.status.as_u16(),
        code = reply.code,
        fault = fault.map(FaultKind::as_str),
        x_reqid = %trace_id,
        "emulated qiniu request"
    );
    respond(reply, &trace_id)
}

/// The account whose access key signed the request (`None`: the first), and its config; the
/// first when none matches (then the signature check refuses it).
fn signer<'a>(shared: &'a Shared, parts: &Parts) -> (Option<usize>, &'a QiniuConfig) {
    let signer = signed_by(parts);
    let account = shared
        .config
        .more_qiniu
        .iter()
        .position(|a| Some(a.access_key.as_str()) == signer.as_deref());
    let config = account.map_or(&shared.config.qiniu, |i| &shared.config.more_qiniu[i]);
    (account, config)
}

/// Handles one task-list request for `op`'s tasks, with the provider-level part of `fault`.
pub(crate) fn handle_list(
    shared: &Shared,
    op: Operation,
    (parts, body): (&Parts, &[u8]),
    fault: Option<FaultKind>,
) -> Response<Full<Bytes>> {
    let (account, config) = signer(shared, parts);
    let mut state = shared.lock();
    let reply = match fault {
        Some(kind) => fault_reply(&mut state, config, op, kind, None),
        None => match check_signature(config, parts, body) {
            Err((code, error)) => {
                state.qiniu_of(account).stats.unauthorized += 1;
                Reply::coded(code, error, json!({}))
            }
            Ok(()) => state.qiniu_of(account).tasks.list(op, body),
        },
    };
    let trace_id = state.trace_id();
    drop(state);
    tracing::debug!(
        op = super::qiniu_list::list_name(op),
        status = reply.status.as_u16(),
        code = reply.code,
        fault = fault.map(FaultKind::as_str),
        "emulated qiniu list request"
    );
    respond(reply, &trace_id)
}

/// Counts a request to a task-list endpoint, before any fault decides its fate.
pub(crate) fn count_list_request(shared: &Shared, op: Operation) {
    *shared
        .lock()
        .qiniu
        .stats
        .requests
        .entry(super::qiniu_list::list_name(op).to_owned())
        .or_default() += 1;
}

/// The answer to an unknown path, in Qiniu's shape.
pub(crate) fn not_found(shared: &Shared) -> Response<Full<Bytes>> {
    let trace_id = shared.lock().trace_id();
    respond(Reply::coded(404_001, "no such API", json!({})), &trace_id)
}

fn respond(reply: Reply, trace_id: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(reply.body));
    *response.status_mut() = reply.status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Ok(value) = HeaderValue::from_str(trace_id) {
        headers.insert("x-reqid", value);
    }
    headers.insert("x-log", HeaderValue::from_static("FUSION;EMULATOR"));
    if let Some(seconds) = reply.retry_after {
        headers.insert(RETRY_AFTER, HeaderValue::from_static(seconds));
    }
    response
}

/// A purge request body. Missing and `null` lists (the Go SDK sends `"dirs": null`) are empty.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct PurgeRequest {
    urls: Option<Vec<String>>,
    dirs: Option<Vec<String>>,
}

impl PurgeRequest {
    fn parse(body: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(body).map_err(|e| e.to_string())
    }

    fn urls(&self) -> &[String] {
        self.urls.as_deref().unwrap_or_default()
    }

    fn dirs(&self) -> &[String] {
        self.dirs.as_deref().unwrap_or_default()
    }
}

fn fault_reply(
    state: &mut State,
    config: &QiniuConfig,
    op: Operation,
    kind: FaultKind,
    request: Option<&PurgeRequest>,
) -> Reply {
    match kind {
        FaultKind::Http503 => Reply::with_status(
            StatusCode::SERVICE_UNAVAILABLE,
            500_000,
            "service unavailable",
            json!({}),
        ),
        FaultKind::ServerError => {
            let code = state.injector().next_server_error(&SERVER_ERROR_CODES);
            Reply::coded(code, "internal server error", json!({}))
        }
        FaultKind::Quota => {
            let only_dirs = request.is_some_and(|r| r.urls().is_empty() && !r.dirs().is_empty());
            let (code, error) = match op {
                Operation::Prefetch => (400_033, "prefetch url limit error"),
                Operation::Refresh if only_dirs => (400_035, "refresh dir limit error"),
                Operation::Refresh => (400_034, "refresh url limit error"),
            };
            state.qiniu.today().quota_refused += 1;
            Reply::coded(code, error, state.qiniu.quota_fields(config, op))
        }
        FaultKind::Throttle => Reply {
            status: StatusCode::TOO_MANY_REQUESTS,
            code: None,
            body: Bytes::from_static(b"{\"error\":\"too many requests\"}"),
            retry_after: Some("1"),
        },
        FaultKind::Qps => Reply::coded(403_024, "single user QPS Rate limited", json!({})),
        FaultKind::Garbage => Reply {
            status: StatusCode::OK,
            code: None,
            body: Bytes::from_static(b"{\"code\":200,\"error\":\"succ"),
            retry_after: None,
        },
        FaultKind::Invalid => {
            let (urls, dirs) = match request {
                Some(r) if !r.urls().is_empty() => (vec![r.urls()[0].clone()], vec![]),
                Some(r) => (vec![], r.dirs().first().cloned().into_iter().collect()),
                None => (vec![], vec![]),
            };
            Reply::coded(
                400_031,
                "invalid url",
                json!({"invalidUrls": urls, "invalidDirs": dirs}),
            )
        }
        // Transport-level kinds are applied by the server and never reach a provider.
        FaultKind::Slow | FaultKind::DropBefore | FaultKind::DropAfter => process_unreachable(kind),
    }
}

fn process_unreachable(kind: FaultKind) -> Reply {
    Reply::with_status(
        StatusCode::INTERNAL_SERVER_ERROR,
        500_000,
        &format!("emulator bug: {kind} reached the provider"),
        json!({}),
    )
}

/// The access key of a request's `Authorization: QBox <AK>:<sign>` header.
fn signed_by(parts: &Parts) -> Option<String> {
    let header = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (access_key, _) = header.strip_prefix("QBox ")?.trim().split_once(':')?;
    Some(access_key.to_owned())
}

/// Checks and, if everything passes, carries out a request for `account` (an index into the
/// extra accounts; `None`: the first).
fn process(
    state: &mut State,
    (account, config): (Option<usize>, &QiniuConfig),
    op: Operation,
    parts: &Parts,
    body: &[u8],
    request: Result<PurgeRequest, String>,
) -> Reply {
    if let Err((code, error)) = check_signature(config, parts, body) {
        state.qiniu_of(account).stats.unauthorized += 1;
        return Reply::coded(code, error, json!({}));
    }
    let request = match request {
        Ok(r) => r,
        Err(e) => {
            return Reply::coded(
                CODE_BAD_REQUEST,
                &format!("invalid request body: {e}"),
                json!({}),
            );
        }
    };
    let (urls, dirs) = match op {
        Operation::Refresh => (request.urls(), request.dirs()),
        Operation::Prefetch => (request.urls(), &[][..]),
    };
    if let Err(error) = check_limits(&config.limits, op, urls, dirs) {
        return Reply::coded(CODE_BAD_REQUEST, &error, json!({}));
    }
    if let Some(reply) = check_targets(config, urls, dirs) {
        return reply;
    }
    if state.qiniu_of(account).tasks.busy(op, urls) {
        return Reply::coded(
            400_037,
            "url is already being refreshed or prefetched",
            json!({}),
        );
    }
    if let Some(reply) = spend_quota(state.qiniu_of(account), config, op, urls, dirs) {
        return reply;
    }
    let request_id = state.request_id();
    let qiniu = state.qiniu_of(account);
    let task_ids = qiniu.tasks.issue(config, &request_id, op, urls, dirs);
    for target in urls.iter().chain(dirs) {
        *qiniu.stats.purged.entry(target.clone()).or_default() += 1;
    }
    qiniu.stats.issued.push(IssuedRequest {
        account: config.name.clone(),
        request_id: request_id.clone(),
        operation: op.as_str().to_owned(),
        urls: urls.to_vec(),
        dirs: dirs.to_vec(),
    });
    let mut extra = json!({
        "requestId": request_id,
        "taskIds": task_ids,
        "invalidUrls": [],
    });
    if op == Operation::Refresh {
        extra["invalidDirs"] = json!([]);
    }
    merge(&mut extra, qiniu.quota_fields(config, op));
    Reply::coded(200, "success", extra)
}

/// Verifies `Authorization: QBox <AK>:<sign>`.
fn check_signature(
    config: &QiniuConfig,
    parts: &Parts,
    body: &[u8],
) -> Result<(), (i64, &'static str)> {
    const BAD_TOKEN: (i64, &str) = (401_002, "bad token");
    const MISMATCH: (i64, &str) = (401_001, "signature mismatch");
    let header = parts.headers.get(AUTHORIZATION).ok_or(BAD_TOKEN)?;
    let token = header
        .to_str()
        .ok()
        .and_then(|h| h.strip_prefix("QBox "))
        .ok_or(BAD_TOKEN)?;
    let (access_key, sign) = token.trim().split_once(':').ok_or(BAD_TOKEN)?;
    let given = base64::engine::general_purpose::URL_SAFE
        .decode(sign)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(sign))
        .map_err(|_| BAD_TOKEN)?;
    if access_key != config.access_key {
        return Err(MISMATCH);
    }
    let path_and_query = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    // Qiniu signs the body too, but only for form bodies.
    let form = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    let signed_body: &[u8] = if form { body } else { b"" };
    let expected = hmac_sha1(
        &config.secret_key,
        &[path_and_query.as_bytes(), b"\n", signed_body],
    );
    if crate::http::constant_time_eq(&expected, &given) {
        Ok(())
    } else {
        Err(MISMATCH)
    }
}

fn check_limits(
    limits: &RequestLimits,
    op: Operation,
    urls: &[String],
    dirs: &[String],
) -> Result<(), String> {
    let url_limit = match op {
        Operation::Refresh => limits.refresh_urls,
        Operation::Prefetch => limits.prefetch_urls,
    };
    if urls.is_empty() && dirs.is_empty() {
        return Err("no urls or dirs given".to_owned());
    }
    if urls.len() > url_limit {
        return Err(format!("urls count exceeds the limit of {url_limit}"));
    }
    if dirs.len() > limits.refresh_dirs {
        return Err(format!(
            "dirs count exceeds the limit of {}",
            limits.refresh_dirs
        ));
    }
    Ok(())
}

/// 400031 for malformed targets, else 400032 for hosts outside the accepted domains.
fn check_targets(config: &QiniuConfig, urls: &[String], dirs: &[String]) -> Option<Reply> {
    let malformed = |list: &[String], dir: bool| -> Vec<String> {
        list.iter()
            .filter(|t| host_of(t, dir).is_none())
            .cloned()
            .collect()
    };
    let (bad_urls, bad_dirs) = (malformed(urls, false), malformed(dirs, true));
    if !bad_urls.is_empty() || !bad_dirs.is_empty() {
        let extra = json!({"invalidUrls": bad_urls, "invalidDirs": bad_dirs});
        return Some(Reply::coded(400_031, "invalid url", extra));
    }
    let foreign = |list: &[String], dir: bool| -> Vec<String> {
        list.iter()
            .filter(|t| host_of(t, dir).is_some_and(|h| !domain_accepted(&config.domains, &h)))
            .cloned()
            .collect()
    };
    let (bad_urls, bad_dirs) = (foreign(urls, false), foreign(dirs, true));
    if !bad_urls.is_empty() || !bad_dirs.is_empty() {
        let extra = json!({"invalidUrls": bad_urls, "invalidDirs": bad_dirs});
        return Some(Reply::coded(400_032, "invalid host", extra));
    }
    None
}

/// The host of a well-formed target: an absolute http(s) URL with a host; a dir also ends with
/// `/` (or `/*`).
fn host_of(target: &str, dir: bool) -> Option<String> {
    if dir && !(target.ends_with('/') || target.ends_with("/*")) {
        return None;
    }
    let url = url::Url::parse(target).ok()?;
    if !matches!(url.scheme(), "http" | "https") {
        return None;
    }
    url.host_str().filter(|h| !h.is_empty()).map(str::to_owned)
}

/// Whether `host` is one of `domains` or under one; an empty list accepts every host.
pub(crate) fn domain_accepted(domains: &[String], host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    domains.is_empty()
        || domains.iter().any(|d| {
            let d = d
                .trim()
                .trim_start_matches("*.")
                .trim_start_matches('.')
                .trim_end_matches('.');
            let d = d.to_ascii_lowercase();
            host == d
                || host
                    .strip_suffix(&d)
                    .is_some_and(|rest| rest.ends_with('.'))
        })
}

fn merge(into: &mut Value, from: Value) {
    if let (Value::Object(into), Value::Object(from)) = (into, from) {
        into.extend(from);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_match_themselves_and_subdomains_only() {
        let domains = vec!["example.com".to_owned(), "*.cdn.test".to_owned()];
        assert!(domain_accepted(&domains, "example.com"));
        assert!(domain_accepted(&domains, "img.Example.com"));
        assert!(domain_accepted(&domains, "a.cdn.test"));
        assert!(!domain_accepted(&domains, "badexample.com"));
        assert!(!domain_accepted(&domains, "example.com.evil.net"));
        assert!(domain_accepted(&[], "anything.net"));
    }

    #[test]
    fn targets_need_scheme_host_and_dirs_a_slash() {
        assert_eq!(host_of("https://a.com/x", false).as_deref(), Some("a.com"));
        assert_eq!(host_of("ftp://a.com/x", false), None);
        assert_eq!(host_of("a.com/x", false), None);
        assert_eq!(host_of("http://a.com/d", true), None);
        assert_eq!(host_of("http://a.com/d/", true).as_deref(), Some("a.com"));
        assert_eq!(host_of("http://a.com/d/*", true).as_deref(), Some("a.com"));
    }

    #[test]
    fn codes_pick_their_status() {
        assert_eq!(
            Reply::coded(400_031, "x", json!({})).status,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            Reply::coded(401_001, "x", json!({})).status,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            Reply::coded(500_002, "x", json!({})).status,
            StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(Reply::coded(200, "x", json!({})).status, StatusCode::OK);
    }
}

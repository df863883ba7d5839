//! The Qiniu fusion CDN client: URL and directory refresh, and prefetch.
//!
//! One call is one HTTP request; it never panics and never returns an error. Whatever happens
//! (refused connection, timeout, a gateway's HTML page, a quota code) ends up as a
//! [`CallReport`] whose [`Outcome`] is decided once, by the pure [`classify`].
//!
//! Invariants:
//! - The secret key leaves this module only as an HMAC: it is never formatted, logged, or put in
//!   a report message, and neither is the `Authorization` header.
//! - The HTTP status is never ignored: a body code of `200` under a 5xx status is not a success,
//!   and a body that is not JSON is never taken for one.

mod account;
mod list;

use std::collections::HashSet;
use std::time::Duration;

use base64::Engine as _;
use hmac::{KeyInit, Mac};
use serde::Deserialize;

pub use super::wire::parse_retry_after;
use super::wire::{
    describe_transport_error, excerpt, header_text, one_line, provider_id, read_body, transient,
};
use super::{CallReport, Outcome, QuotaReading, Rejection};
use crate::model::Action;
use crate::secret::Secret;
pub use account::{QiniuAccount, QiniuSettings, next_china_midnight};
pub use list::{PREFETCH_LIST_PATH, REFRESH_LIST_PATH, classify_list, parse_china_time};

/// URLs per refresh call. Source: developer.qiniu.com/fusion/api/1229/cache-refresh.
pub const MAX_REFRESH_URLS: usize = 60;
/// Directories per refresh call. Source: developer.qiniu.com/fusion/api/1229/cache-refresh
/// (the official Go SDK `cdn.RefreshUrlsAndDirs` also rejects more than 10).
pub const MAX_REFRESH_DIRS: usize = 10;
/// URLs per prefetch call. Source: developer.qiniu.com/fusion/api/1229/cache-refresh.
pub const MAX_PREFETCH_URLS: usize = 60;
/// The most URLs any call may carry: the official Go SDK (`cdn/api.go`) rejects more than 100
/// before sending. `--batch-size` may raise the URL limits up to this, never past it.
pub const HARD_MAX_URLS: usize = 100;
/// The production API. Source: the official SDKs' `FusionHost` and the seed document.
pub const DEFAULT_ENDPOINT: &str = "https://fusion.qiniuapi.com";
/// URLs plus directories per second per account, across refresh and prefetch together.
/// Source: developer.qiniu.com/fusion/api/1229/cache-refresh (rate limits).
pub const RATE_TARGETS_PER_SEC: u32 = 240;
/// Requests per second per account. Qiniu publishes "5 to 10" (developer.qiniu.com/fusion/13361,
/// code 403024); we stay at the low end.
pub const RATE_REQUESTS_PER_SEC: u32 = 5;

/// The path of a refresh call under the endpoint.
pub const REFRESH_PATH: &str = "/v2/tune/refresh";
/// The path of a prefetch call under the endpoint.
pub const PREFETCH_PATH: &str = "/v2/tune/prefetch";

/// Success codes: `200` in the current API and SDKs, `200001` in the seed document.
const CODE_SUCCESS: [i64; 2] = [200, 200_001];

/// An account's key pair.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// The AccessKey, sent in the clear in every `Authorization` header.
    pub access_key: String,
    /// The SecretKey, used only to sign.
    pub secret_key: Secret,
}

/// Which API a call goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// `POST /v2/tune/refresh` with URLs and/or directories.
    Refresh,
    /// `POST /v2/tune/prefetch` with URLs.
    Prefetch,
}

impl Operation {
    /// The API path under the endpoint.
    pub const fn path(self) -> &'static str {
        match self {
            Operation::Refresh => REFRESH_PATH,
            Operation::Prefetch => PREFETCH_PATH,
        }
    }

    /// A short name for logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Operation::Refresh => "refresh",
            Operation::Prefetch => "prefetch",
        }
    }
}

/// The QBox management token for a request: `"<AK>:<sign>"`, where `sign` is the URL-safe base64
/// (with padding) of HMAC-SHA1 keyed by the secret key over `path[?query]` plus `"\n"`.
///
/// `path_and_query` is exactly what goes on the request line. For JSON bodies nothing else is
/// signed; Qiniu appends the body only for `application/x-www-form-urlencoded`, which purgeq
/// never sends. Send as `Authorization: QBox <token>`.
pub fn sign(access_key: &str, secret_key: &Secret, path_and_query: &str) -> String {
    let digest = hmac_sha1(secret_key, &[path_and_query.as_bytes(), b"\n"]);
    format!(
        "{access_key}:{}",
        base64::engine::general_purpose::URL_SAFE.encode(digest)
    )
}

/// HMAC-SHA1 of the concatenated `parts`, keyed by `key`.
pub(crate) fn hmac_sha1(key: &Secret, parts: &[&[u8]]) -> Vec<u8> {
    // N.B. HMAC takes keys of any length, so `new_from_slice` cannot fail.
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(key.expose().as_bytes())
        .expect("HMAC accepts keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

/// A client for one Qiniu account.
#[derive(Debug, Clone)]
pub struct QiniuClient {
    http: reqwest::Client,
    endpoint: String,
    credentials: Credentials,
}

impl QiniuClient {
    /// A client that sends through `http` (which carries the timeouts) to `endpoint`, for example
    /// [`DEFAULT_ENDPOINT`] or `http://127.0.0.1:PORT` for the emulator. A trailing `/` is ignored;
    /// a path prefix (a reverse proxy's) is kept and signed.
    pub fn new(
        http: reqwest::Client,
        endpoint: impl Into<String>,
        credentials: Credentials,
    ) -> Self {
        let endpoint = endpoint.into().trim_end_matches('/').to_owned();
        QiniuClient {
            http,
            endpoint,
            credentials,
        }
    }

    /// The endpoint calls go to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Refreshes `urls` and `dirs` (each dir ends with `/`) in one call.
    pub async fn refresh(&self, urls: &[String], dirs: &[String]) -> CallReport {
        self.call(Operation::Refresh, urls, dirs).await
    }

    /// Prefetches `urls` in one call.
    pub async fn prefetch(&self, urls: &[String]) -> CallReport {
        self.call(Operation::Prefetch, urls, &[]).await
    }

    #[tracing::instrument(
        name = "qiniu_call",
        skip_all,
        fields(op = op.as_str(), urls = urls.len(), dirs = dirs.len())
    )]
    async fn call(&self, op: Operation, urls: &[String], dirs: &[String]) -> CallReport {
        let report = match self.send(op, urls, dirs).await {
            Ok(answer) => classify(urls, dirs, &answer),
            Err(report) => report,
        };
        tracing::debug!(
            outcome = report.outcome.label(),
            http_status = report.http_status,
            code = report.code,
            request_id = report.request_id.as_deref(),
            trace_id = report.trace_id.as_deref(),
            message = %report.message,
            "qiniu answered"
        );
        report
    }

    /// Sends one request and reads the answer; a transport failure is returned as a finished
    /// (transient) report.
    async fn send(
        &self,
        op: Operation,
        urls: &[String],
        dirs: &[String],
    ) -> Result<Answer, CallReport> {
        let mut body = serde_json::Map::new();
        if !urls.is_empty() {
            body.insert("urls".to_owned(), urls.into());
        }
        if !dirs.is_empty() {
            body.insert("dirs".to_owned(), dirs.into());
        }
        self.post(op.path(), &body).await
    }

    /// POSTs `body` as JSON to `path` under the endpoint, signed, and reads the answer.
    async fn post(
        &self,
        path: &str,
        body: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Answer, CallReport> {
        let target = format!("{}{path}", self.endpoint);
        let url = url::Url::parse(&target)
            .map_err(|e| transient(None, format!("invalid endpoint {:?}: {e}", self.endpoint)))?;
        let path_and_query = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        };
        let token = sign(
            &self.credentials.access_key,
            &self.credentials.secret_key,
            &path_and_query,
        );
        let mut authorization = reqwest::header::HeaderValue::from_str(&format!("QBox {token}"))
            .map_err(|_| {
                transient(
                    None,
                    "the access key is not a valid header value".to_owned(),
                )
            })?;
        authorization.set_sensitive(true);

        let mut response = self
            .http
            .post(url)
            .header(reqwest::header::AUTHORIZATION, authorization)
            .json(body)
            .send()
            .await
            .map_err(|e| transient(None, describe_transport_error(&e)))?;

        let status = response.status().as_u16();
        let headers = response.headers();
        let x_reqid = header_text(headers, "x-reqid");
        let retry_after = header_text(headers, "retry-after").and_then(|v| parse_retry_after(&v));
        let body = read_body(&mut response).await.map_err(|e| {
            let mut report = transient(
                Some(status),
                format!("reading the response: {}", describe_transport_error(&e)),
            );
            report.trace_id = x_reqid.clone();
            report
        })?;
        Ok(Answer {
            status,
            x_reqid,
            retry_after,
            body,
        })
    }
}

/// A response as it arrived, before classification.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The `X-Reqid` header.
    pub x_reqid: Option<String>,
    /// The `Retry-After` header, when it held a number of seconds.
    pub retry_after: Option<Duration>,
    /// The body, possibly cut at 1 MiB.
    pub body: Vec<u8>,
}

/// The fields of a fusion answer purgeq reads; everything else (`taskIds`, …) is ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct Body {
    code: Option<i64>,
    error: Option<String>,
    request_id: Option<String>,
    invalid_urls: Option<Vec<String>>,
    invalid_dirs: Option<Vec<String>>,
    url_quota_day: Option<i64>,
    url_surplus_day: Option<i64>,
    dir_quota_day: Option<i64>,
    dir_surplus_day: Option<i64>,
    quota_day: Option<i64>,
    surplus_day: Option<i64>,
}

/// Decides what an answer to a call carrying `urls` and `dirs` means. Pure; the rules
/// follow developer.qiniu.com/fusion/13361:
///
/// - HTTP 5xx is transient whatever the body says.
/// - Without a body code (empty, not JSON, or JSON without `code`): HTTP 429 is a rate limit and
///   HTTP 401/403 is an auth failure (gateways answer those with HTML too); anything else is
///   transient, with an escaped excerpt of the body.
/// - `200`/`200001` under a 2xx status: accepted, `invalidUrls`/`invalidDirs` rejected for good.
/// - `400037` (already being refreshed or prefetched): in progress, confirmed by URL.
/// - `400031`/`400032`: the targets named in `invalidUrls`/`invalidDirs` are invalid; if none is
///   named, the one target sent is, and with several sent the answer is transient (we can't
///   tell which one to fail).
/// - `400033`/`400034`/`400035`: the prefetch, URL refresh or dir refresh quota is used up.
/// - `400038`: dir refresh is not enabled for the account.
/// - `401001`/`401002`: auth. `403022`/`403024`: rate limit. `5000xx`: transient.
/// - Any other code is transient, unless the status is 429 (rate limit).
pub fn classify(urls: &[String], dirs: &[String], answer: &Answer) -> CallReport {
    let status = answer.status;
    let parsed = parse_body(&answer.body);
    let body = match &parsed {
        Ok(body) => body,
        Err(_) => &Body::default(),
    };
    let (outcome, explanation) = match body.code {
        None => without_code(status, parsed.as_ref().err()),
        Some(code) => with_code(status, code, urls, dirs, body),
    };
    let error = one_line(body.error.as_deref().unwrap_or(""));
    let message = match (explanation, body.code) {
        (Some(explanation), _) => append_error(explanation, &error),
        (None, Some(code)) if error.is_empty() => format!("code {code}"),
        (None, _) => error,
    };
    CallReport {
        outcome,
        http_status: Some(status),
        code: body.code,
        request_id: body.request_id.as_deref().and_then(provider_id),
        trace_id: answer.x_reqid.clone(),
        message,
        quotas: quota_readings(body),
        retry_after: answer.retry_after,
    }
}

/// An answer without a body code: only the HTTP status can speak.
fn without_code(status: u16, unparseable: Option<&String>) -> (Outcome, Option<String>) {
    let (outcome, what) = match (status, unparseable) {
        (429, _) => (Outcome::RateLimited, "rate limited".to_owned()),
        (401 | 403, _) => (Outcome::Auth, "credentials refused".to_owned()),
        (_, Some(excerpt)) => (Outcome::Transient, format!("unparseable body: {excerpt}")),
        (_, None) => (Outcome::Transient, "answer without a code".to_owned()),
    };
    (outcome, Some(format!("HTTP {status}: {what}")))
}

/// An answer with a body code. The explanation is set when the code alone doesn't say why.
fn with_code(
    status: u16,
    code: i64,
    urls: &[String],
    dirs: &[String],
    body: &Body,
) -> (Outcome, Option<String>) {
    if status >= 500 {
        return (
            Outcome::Transient,
            Some(format!("HTTP {status}, code {code}")),
        );
    }
    let quota = |action| Outcome::Quota { action };
    let outcome = match code {
        c if CODE_SUCCESS.contains(&c) && (200..300).contains(&status) => Outcome::Accepted {
            rejected: named_rejections(code, urls, dirs, body),
        },
        400_037 => Outcome::InProgress,
        400_031 | 400_032 => invalid_targets(code, urls, dirs, body),
        400_033 => quota(Action::PrefetchUrl),
        400_034 => quota(Action::RefreshUrl),
        400_035 => quota(Action::RefreshDir),
        400_038 => Outcome::ActionRejected {
            action: Action::RefreshDir,
        },
        401_001 | 401_002 => Outcome::Auth,
        403_022 | 403_024 => Outcome::RateLimited,
        _ if status == 429 => Outcome::RateLimited,
        _ => Outcome::Transient,
    };
    let why = match &outcome {
        Outcome::Transient if matches!(code, 400_031 | 400_032) => Some("names no target"),
        Outcome::Transient if (500_000..600_000).contains(&code) => Some("server error"),
        Outcome::Transient if CODE_SUCCESS.contains(&code) => {
            Some("success code under a non-2xx status")
        }
        Outcome::Transient => Some("unknown code"),
        _ => None,
    };
    (
        outcome,
        why.map(|why| format!("HTTP {status}, code {code}: {why}")),
    )
}

/// 400031/400032: the named targets, else the only one sent; with several sent and none named,
/// we can't tell which to fail, so the whole request is transient.
fn invalid_targets(code: i64, urls: &[String], dirs: &[String], body: &Body) -> Outcome {
    let mut rejected = named_rejections(code, urls, dirs, body);
    if rejected.is_empty()
        && let [only] = sent(urls, dirs).collect::<Vec<_>>()[..]
    {
        rejected.push(rejection(code, only, body));
    }
    if rejected.is_empty() {
        Outcome::Transient
    } else {
        Outcome::InvalidTargets { rejected }
    }
}

/// Parses a body as a fusion answer; on failure, returns a short escaped excerpt.
fn parse_body(bytes: &[u8]) -> Result<Body, String> {
    match serde_json::from_slice::<serde_json::Value>(bytes) {
        Ok(value @ serde_json::Value::Object(_)) => serde_json::from_value(value).map_err(|e| {
            // A field of the wrong type: report it as unparseable rather than guessing.
            format!("{} ({e})", excerpt(bytes))
        }),
        Ok(_) => Err(format!("{} (not a JSON object)", excerpt(bytes))),
        Err(_) => Err(excerpt(bytes)),
    }
}

/// Every target sent, URLs first.
fn sent<'a>(urls: &'a [String], dirs: &'a [String]) -> impl Iterator<Item = &'a String> {
    urls.iter().chain(dirs)
}

/// The rejections an answer names, limited to targets that were actually sent.
fn named_rejections(code: i64, urls: &[String], dirs: &[String], body: &Body) -> Vec<Rejection> {
    let sent: HashSet<&str> = sent(urls, dirs).map(String::as_str).collect();
    let mut seen = HashSet::new();
    body.invalid_urls
        .iter()
        .chain(&body.invalid_dirs)
        .flatten()
        .filter(|t| sent.contains(t.as_str()) && seen.insert(t.as_str()))
        .map(|t| rejection(code, t, body))
        .collect()
}

fn rejection(code: i64, target: &str, body: &Body) -> Rejection {
    let reason = match body.error.as_deref().map(one_line) {
        Some(e) if !e.is_empty() => e,
        _ => match code {
            400_032 => "invalid host".to_owned(),
            _ => "invalid url".to_owned(),
        },
    };
    Rejection {
        target: target.to_owned(),
        code,
        reason,
    }
}

fn quota_readings(body: &Body) -> Vec<QuotaReading> {
    let pairs = [
        (Action::RefreshUrl, body.url_quota_day, body.url_surplus_day),
        (Action::RefreshDir, body.dir_quota_day, body.dir_surplus_day),
        (Action::PrefetchUrl, body.quota_day, body.surplus_day),
    ];
    pairs
        .into_iter()
        .filter_map(|(action, quota, surplus)| {
            Some(QuotaReading {
                action,
                quota_day: quota?,
                surplus_day: surplus?,
            })
        })
        .collect()
}

fn append_error(prefix: String, error: &str) -> String {
    if error.is_empty() {
        prefix
    } else {
        format!("{prefix}: {error}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: &[&str] = &["http://a.com/1"];

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    fn answer(status: u16, body: &str) -> Answer {
        let x_reqid = Some("reqid-1".to_owned());
        Answer {
            status,
            x_reqid,
            retry_after: None,
            body: body.as_bytes().to_vec(),
        }
    }

    fn classify_urls(urls: &[&str], status: u16, body: &str) -> CallReport {
        classify(&strings(urls), &[], &answer(status, body))
    }

    fn coded(code: i64, status: u16) -> CallReport {
        classify_urls(ONE, status, &format!(r#"{{"code":{code},"error":"said"}}"#))
    }

    fn reading(action: Action, quota_day: i64, surplus_day: i64) -> QuotaReading {
        QuotaReading {
            action,
            quota_day,
            surplus_day,
        }
    }

    fn named(report: &CallReport) -> Vec<&str> {
        match &report.outcome {
            Outcome::Accepted { rejected } | Outcome::InvalidTargets { rejected } => {
                rejected.iter().map(|r| r.target.as_str()).collect()
            }
            other => panic!("no rejections in {other:?}"),
        }
    }

    #[test]
    fn sign_matches_the_official_sdk_vectors() {
        let sk = Secret::new("secretkey");
        let refresh = "accesskey:BzYGMM82RkcpOKyNZzvdOi7bUU4=";
        assert_eq!(sign("accesskey", &sk, "/refresh"), refresh);
        let v2 = "accesskey:T6wIyE8uNaMO9NV-ROVmRQsW0-k=";
        assert_eq!(sign("accesskey", &sk, "/v2/tune/refresh"), v2);
    }

    #[test]
    fn success_records_ids_and_quotas_and_names_invalid_entries() {
        let body = r#"{"code":200,"error":"success","requestId":"abc123","taskIds":{"x":"1"},
            "invalidUrls":["http://b.example.com/2"],"invalidDirs":[],
            "urlQuotaDay":500,"urlSurplusDay":498,"dirQuotaDay":10,"dirSurplusDay":10}"#;
        let r = classify_urls(
            &["http://a.example.com/1", "http://b.example.com/2"],
            200,
            body,
        );
        assert!(matches!(r.outcome, Outcome::Accepted { .. }), "{r:?}");
        assert_eq!(named(&r), ["http://b.example.com/2"]);
        assert_eq!(r.request_id.as_deref(), Some("abc123"));
        assert_eq!(r.trace_id.as_deref(), Some("reqid-1"));
        assert_eq!((r.code, r.message.as_str()), (Some(200), "success"));
        let expected = [
            reading(Action::RefreshUrl, 500, 498),
            reading(Action::RefreshDir, 10, 10),
        ];
        assert_eq!(r.quotas, expected);
    }

    #[test]
    fn seed_success_code_and_prefetch_quota_fields() {
        let body =
            r#"{"code":200001,"error":"success","requestId":"r","quotaDay":100,"surplusDay":99}"#;
        let r = classify_urls(ONE, 200, body);
        assert_eq!(r.outcome, Outcome::Accepted { rejected: vec![] });
        assert_eq!(r.quotas, [reading(Action::PrefetchUrl, 100, 99)]);
    }

    #[test]
    fn already_being_prefetched_is_in_progress() {
        assert_eq!(coded(400_037, 400).outcome, Outcome::InProgress);
    }

    #[test]
    fn invalid_url_and_host_name_their_targets() {
        let urls = ["http://a.com/1", "http://evil.net/2", "http://a.com/3"];
        let body = r#"{"code":400032,"error":"invalid host","invalidUrls":["http://evil.net/2"]}"#;
        let r = classify_urls(&urls, 400, body);
        assert!(matches!(r.outcome, Outcome::InvalidTargets { .. }), "{r:?}");
        assert_eq!(named(&r), ["http://evil.net/2"]);
        let Outcome::InvalidTargets { rejected } = &r.outcome else {
            unreachable!()
        };
        assert_eq!(
            (rejected[0].code, rejected[0].reason.as_str()),
            (400_032, "invalid host")
        );

        let dirs = strings(&["http://a.com/d/", "bad/"]);
        let body = r#"{"code":400031,"error":"invalid url","invalidDirs":["bad/"]}"#;
        assert_eq!(named(&classify(&[], &dirs, &answer(400, body))), ["bad/"]);
    }

    #[test]
    fn invalid_without_names_fails_the_only_target_or_is_transient() {
        let body = r#"{"code":400031,"error":"invalid url"}"#;
        assert_eq!(named(&classify_urls(ONE, 400, body)), ONE);

        let r = classify_urls(&["http://a.com/1", "http://a.com/2"], 400, body);
        assert_eq!(r.outcome, Outcome::Transient);
        assert!(r.message.contains("400031"), "{}", r.message);

        // A name we never sent doesn't count as naming one of ours.
        let body = r#"{"code":400031,"error":"invalid url","invalidUrls":["http://other/"]}"#;
        let r = classify_urls(&["http://a.com/1", "http://a.com/2"], 400, body);
        assert_eq!(r.outcome, Outcome::Transient);
    }

    #[test]
    fn quota_codes_pause_the_right_action() {
        for (code, action) in [
            (400_033, Action::PrefetchUrl),
            (400_034, Action::RefreshUrl),
            (400_035, Action::RefreshDir),
        ] {
            let r = coded(code, 400);
            assert_eq!((r.outcome, r.code), (Outcome::Quota { action }, Some(code)));
        }
    }

    #[test]
    fn dir_refresh_not_enabled_rejects_the_action() {
        let dirs = strings(&["http://a.com/d/"]);
        let r = classify(&[], &dirs, &answer(400, r#"{"code":400038,"error":"no"}"#));
        assert_eq!(
            r.outcome,
            Outcome::ActionRejected {
                action: Action::RefreshDir
            }
        );
    }

    #[test]
    fn auth_codes_and_bare_401_403() {
        assert_eq!(coded(401_001, 401).outcome, Outcome::Auth);
        assert_eq!(coded(401_002, 401).outcome, Outcome::Auth);
        for (status, body) in [(401, ""), (403, "{}"), (403, "<html>Forbidden</html>")] {
            let r = classify_urls(ONE, status, body);
            assert_eq!(r.outcome, Outcome::Auth, "{status} {body}");
        }
    }

    #[test]
    fn rate_limits() {
        assert_eq!(coded(403_022, 403).outcome, Outcome::RateLimited);
        assert_eq!(coded(403_024, 403).outcome, Outcome::RateLimited);
        assert_eq!(coded(429_000, 429).outcome, Outcome::RateLimited);
        let mut a = answer(429, "Too Many Requests");
        a.retry_after = parse_retry_after(" 7 ");
        let r = classify(&strings(ONE), &[], &a);
        assert_eq!(r.outcome, Outcome::RateLimited);
        assert_eq!(r.retry_after, Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }

    #[test]
    fn server_errors_are_transient_even_with_a_success_body() {
        for (status, body) in [
            (503, r#"{"code":200,"error":"success","requestId":"r"}"#),
            (500, r#"{"code":500000,"error":"internal"}"#),
            (200, r#"{"code":500002,"error":"busy"}"#),
            (200, r#"{"code":500010,"error":"later"}"#),
            (502, "<html>bad gateway</html>"),
        ] {
            let r = classify_urls(ONE, status, body);
            assert_eq!(r.outcome, Outcome::Transient, "{status} {body}");
            assert!(r.message.contains(&status.to_string()), "{}", r.message);
        }
    }

    #[test]
    fn unparseable_bodies_are_transient_with_an_escaped_excerpt() {
        let r = classify_urls(ONE, 200, "{\"code\":200,\"err\n");
        assert_eq!(r.outcome, Outcome::Transient);
        assert!(
            r.message.starts_with("HTTP 200: unparseable body: "),
            "{}",
            r.message
        );
        assert!(
            r.message.contains("\\n") && !r.message.contains('\n'),
            "{}",
            r.message
        );
        let r = classify_urls(ONE, 200, &"x".repeat(5000));
        assert!(r.message.len() < 400, "{}", r.message.len());
        for body in ["", "[1,2]", r#"{"code":"200"}"#] {
            assert_eq!(
                classify_urls(ONE, 200, body).outcome,
                Outcome::Transient,
                "{body}"
            );
        }
    }

    #[test]
    fn unknown_codes_are_transient_and_say_so() {
        let r = classify_urls(ONE, 400, r#"{"code":400036,"error":"invalid request id"}"#);
        assert_eq!(r.outcome, Outcome::Transient);
        assert!(
            r.message.contains("400036") && r.message.contains("invalid request id"),
            "{}",
            r.message
        );
        assert_eq!(coded(200, 400).outcome, Outcome::Transient);
    }
}

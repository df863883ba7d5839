//! The 123pan open platform side of the emulator: `POST /api/v1/access_token` and
//! `POST /api/v1/direct-link/cache/refresh`.
//!
//! Every answer has 123pan's envelope, `{"code", "message", "data", "x-traceID"}`: code 0 is
//! success, `data` is `null` on an error, and `x-traceID` is unique per answer. 123pan's
//! developer notes ("开发须知", "授权须知") list the body codes 1 (internal error), 401 (access
//! token invalid) and 429 (too many requests); the emulator adds 400 (unreadable body), 403
//! (missing `Platform` header) and 404 (unknown path), which 123pan does not document.
//!
//! The token endpoint checks, in order:
//! 1. `Platform: open_platform` (else HTTP 403, code 403);
//! 2. its own rate limit, [`Pan123Config::token_per_sec`] (else HTTP 429, code 429);
//! 3. the body (else HTTP 400, code 400 when it is not a JSON object);
//! 4. `clientID` and `clientSecret` (else HTTP **200**, code 401 "invalid client credentials":
//!    a refused login is an application-level answer, so only the body says so);
//!
//! then issues a random token that expires after [`Pan123Config::token_ttl`], rounded up to the
//! whole second that `expiredAt` names (RFC 3339, `+08:00`): `expiredAt` is the truth. A new token
//! does not revoke the older ones, so several workers of one account do not evict each other.
//!
//! The refresh endpoint checks, in order:
//! 1. `Platform: open_platform` (else HTTP 403, code 403);
//! 2. `Authorization: Bearer <token>`, a token issued here and not expired (else HTTP 401,
//!    code 401 "token invalid"; a missing or malformed header is answered the same way);
//! 3. its rate limit, [`Pan123Config::refresh_per_sec`], per account, which is why it comes
//!    after the token (else HTTP 429, code 429);
//! 4. the body, which must be empty or JSON (`{}` is what 123pan documents; else HTTP 400);
//!
//! then succeeds with `"data": {}`.
//!
//! With [`Pan123Config::body_only_errors`] every refusal above answers HTTP 200 and says what
//! went wrong only in the body code, as 123pan's documentation (which lists body codes only)
//! suggests the real service may do. A client must handle both.
//!
//! The rate limits run on the real monotonic clock, not Tokio's: a test that pauses Tokio time
//! should set them to 0 (unlimited). Token expiry runs on the wall clock, as `expiredAt` does.
//!
//! Neither the client secret nor a token is ever logged, at any level.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use hyper::http::request::Parts;
use hyper::{Response, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{FaultKind, Shared, State};
use crate::secret::Secret;

/// The client id `purgeq emulate` and `purgeq demo` accept when none is configured.
pub const DEMO_CLIENT_ID: &str = "purgeq-demo-client";
/// The client secret `purgeq emulate` and `purgeq demo` accept when none is configured.
pub const DEMO_CLIENT_SECRET: &str = "purgeq-demo-client-secret";

/// The token path (123pan "获取access_token").
pub const TOKEN_PATH: &str = "/api/v1/access_token";
/// The refresh path (seed document "直链缓存刷新").
pub const REFRESH_PATH: &str = "/api/v1/direct-link/cache/refresh";
/// The value every request's `Platform` header must carry (123pan "获取access_token").
pub const PLATFORM: &str = "open_platform";

/// How long an access token lives by default. 123pan publishes no fixed lifetime (its answer's
/// `expiredAt` is the truth); its OAuth2 tokens live 7200 s, so the emulator uses that.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(2 * 60 * 60);
/// Refresh calls per second per account by default. 123pan publishes no QPS for this endpoint;
/// the emulator enforces the one call per second purgeq itself keeps to
/// ([`crate::provider::pan123::REQUESTS_PER_SEC`]).
pub const DEFAULT_REFRESH_PER_SEC: f64 = 1.0;
/// Token requests per second by default: 123pan's "授权须知" lists 8 QPS for
/// `api/v1/access_token` ("开发须知" says 10; the emulator takes the stricter).
pub const DEFAULT_TOKEN_PER_SEC: f64 = 8.0;

/// Success.
pub const CODE_OK: i64 = 0;
/// Internal error, transient (123pan "授权须知").
pub const CODE_INTERNAL: i64 = 1;
/// An unreadable request body. 123pan documents no code for this; the emulator's choice.
pub const CODE_BAD_REQUEST: i64 = 400;
/// Access token invalid (123pan "开发须知"); the emulator also uses it for bad client credentials.
pub const CODE_TOKEN_INVALID: i64 = 401;
/// A missing or wrong `Platform` header. 123pan documents no code for this; the emulator's choice.
pub const CODE_PLATFORM: i64 = 403;
/// An unknown path. 123pan documents no code for this; the emulator's choice.
pub const CODE_NOT_FOUND: i64 = 404;
/// Too many requests (123pan "开发须知").
pub const CODE_THROTTLED: i64 = 429;

/// How much earlier than the rate allows a call may come and still pass: a client paced at
/// exactly the limit must not get a 429 from loopback scheduling jitter.
const RATE_GRACE: Duration = Duration::from_millis(10);

/// The account the emulator plays.
#[derive(Debug, Clone)]
pub struct Pan123Config {
    /// The `clientID` the token endpoint accepts.
    pub client_id: String,
    /// The `clientSecret` the token endpoint accepts.
    pub client_secret: Secret,
    /// How long an issued token lives.
    pub token_ttl: Duration,
    /// Refresh calls allowed per second (a token bucket holding one second's worth, at least
    /// one call); 0 means unlimited.
    pub refresh_per_sec: f64,
    /// Token requests allowed per second, the same way; 0 means unlimited.
    pub token_per_sec: f64,
    /// Answer every refusal (400, 401, 403, 429) with HTTP 200, the code only in the body.
    pub body_only_errors: bool,
}

impl Default for Pan123Config {
    fn default() -> Self {
        Pan123Config {
            client_id: DEMO_CLIENT_ID.to_owned(),
            client_secret: Secret::new(DEMO_CLIENT_SECRET),
            token_ttl: DEFAULT_TOKEN_TTL,
            refresh_per_sec: DEFAULT_REFRESH_PER_SEC,
            token_per_sec: DEFAULT_TOKEN_PER_SEC,
            body_only_errors: false,
        }
    }
}

/// What the 123pan side has seen and done.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Pan123Stats {
    /// Requests to the token endpoint, faults included.
    pub token_requests: u64,
    /// Tokens issued (also when a drop-after fault kept the answer from the client).
    pub tokens_issued: u64,
    /// Token requests refused for their client id or secret.
    pub rejected_credentials: u64,
    /// Token requests refused by the token endpoint's rate limit.
    pub token_throttled: u64,
    /// Faults injected on the token endpoint ([`super::FaultPlan::token_fail_next`]), by kind.
    pub token_faults: BTreeMap<String, u64>,
    /// Refresh calls received, faults included.
    pub refresh_calls: u64,
    /// Refresh calls that succeeded (also when a drop-after fault kept the answer from the
    /// client).
    pub refreshes: u64,
    /// Refresh calls refused for their token: missing, unknown or expired.
    pub rejected_tokens: u64,
    /// Refresh calls refused by the rate limit (injected faults are counted in
    /// [`super::Stats::faults`] instead).
    pub throttled: u64,
    /// The `x-traceID` of every successful refresh, in order.
    pub issued: Vec<String>,
}

/// A token bucket holding one second's worth of calls (at least one).
#[derive(Debug)]
struct RateLimit {
    per_sec: f64,
    available: f64,
    last: Option<Instant>,
}

impl RateLimit {
    fn new(per_sec: f64) -> Self {
        RateLimit {
            per_sec,
            available: per_sec.max(1.0),
            last: None,
        }
    }

    /// Takes one call's worth, or says no (taking nothing).
    fn try_take(&mut self, now: Instant) -> bool {
        if self.per_sec <= 0.0 || !self.per_sec.is_finite() {
            return true;
        }
        let capacity = self.per_sec.max(1.0);
        if let Some(last) = self.last {
            let elapsed = now.saturating_duration_since(last).as_secs_f64();
            self.available = (self.available + elapsed * self.per_sec).min(capacity);
        }
        self.last = Some(now);
        let grace = RATE_GRACE.as_secs_f64() * self.per_sec;
        if self.available + grace >= 1.0 {
            self.available = (self.available - 1.0).max(0.0);
            true
        } else {
            false
        }
    }
}

/// The 123pan side's mutable state. Its `Debug` counts the tokens instead of showing them.
pub(crate) struct Pan123State {
    /// Every live token and when it expires.
    tokens: HashMap<String, jiff::Timestamp>,
    refresh_limit: RateLimit,
    token_limit: RateLimit,
    stats: Pan123Stats,
}

impl std::fmt::Debug for Pan123State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pan123State")
            .field("tokens", &self.tokens.len())
            .field("refresh_limit", &self.refresh_limit)
            .field("token_limit", &self.token_limit)
            .field("stats", &self.stats)
            .finish()
    }
}

impl Pan123State {
    pub(crate) fn new(config: &Pan123Config) -> Self {
        Pan123State {
            tokens: HashMap::new(),
            refresh_limit: RateLimit::new(config.refresh_per_sec),
            token_limit: RateLimit::new(config.token_per_sec),
            stats: Pan123Stats::default(),
        }
    }

    pub(crate) fn stats(&self) -> Pan123Stats {
        self.stats.clone()
    }

    /// Makes every token issued so far expired as of now.
    pub(crate) fn expire_tokens(&mut self) {
        let now = jiff::Timestamp::now();
        for expiry in self.tokens.values_mut() {
            *expiry = (*expiry).min(now);
        }
    }

    /// Counts a token-endpoint fault.
    pub(crate) fn count_token_fault(&mut self, kind: FaultKind) {
        *self
            .stats
            .token_faults
            .entry(kind.as_str().to_owned())
            .or_default() += 1;
    }
}

/// The two endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// `POST /api/v1/access_token`.
    Token,
    /// `POST /api/v1/direct-link/cache/refresh`.
    Refresh,
}

impl Endpoint {
    fn as_str(self) -> &'static str {
        match self {
            Endpoint::Token => "access_token",
            Endpoint::Refresh => "refresh",
        }
    }
}

/// The endpoint a request path names, if it is one of 123pan's.
pub(crate) fn endpoint_for(path: &str) -> Option<Endpoint> {
    match path {
        TOKEN_PATH => Some(Endpoint::Token),
        REFRESH_PATH => Some(Endpoint::Refresh),
        _ => None,
    }
}

/// Whether an unknown path looks like a 123pan one, to be answered in 123pan's shape.
pub(crate) fn claims_path(path: &str) -> bool {
    path.starts_with("/api/") || path.starts_with("/upload/")
}

/// Counts a request to `endpoint`, before any fault decides its fate.
pub(crate) fn count_request(shared: &Shared, endpoint: Endpoint) {
    let stats = &mut shared.lock().pan123.stats;
    match endpoint {
        Endpoint::Token => stats.token_requests += 1,
        Endpoint::Refresh => stats.refresh_calls += 1,
    }
}

/// What to answer, before the envelope's trace id.
struct Reply {
    status: StatusCode,
    code: i64,
    message: &'static str,
    data: Value,
    retry_after: Option<&'static str>,
    /// A body sent as is instead of the envelope (the garbage and HTTP 503 faults).
    raw: Option<(&'static str, &'static [u8])>,
}

impl Reply {
    fn ok(data: Value) -> Reply {
        Reply {
            data,
            ..Reply::error(StatusCode::OK, CODE_OK, "ok")
        }
    }

    /// A refusal: `data` is `null`, as 123pan sends on an error.
    fn error(status: StatusCode, code: i64, message: &'static str) -> Reply {
        Reply {
            status,
            code,
            message,
            data: Value::Null,
            retry_after: None,
            raw: None,
        }
    }

    fn platform() -> Reply {
        Reply::error(
            StatusCode::FORBIDDEN,
            CODE_PLATFORM,
            "Platform header must be open_platform",
        )
    }

    fn throttled() -> Reply {
        Reply::error(
            StatusCode::TOO_MANY_REQUESTS,
            CODE_THROTTLED,
            "too many requests",
        )
    }

    fn token_invalid() -> Reply {
        Reply::error(
            StatusCode::UNAUTHORIZED,
            CODE_TOKEN_INVALID,
            "token invalid",
        )
    }

    fn bad_credentials() -> Reply {
        Reply::error(
            StatusCode::OK,
            CODE_TOKEN_INVALID,
            "invalid client credentials",
        )
    }

    fn bad_body() -> Reply {
        Reply::error(
            StatusCode::BAD_REQUEST,
            CODE_BAD_REQUEST,
            "invalid request body",
        )
    }
}

/// Handles one request to `endpoint`, with the provider-level part of `fault` if any.
pub(crate) fn handle(
    shared: &Shared,
    endpoint: Endpoint,
    parts: &Parts,
    body: &[u8],
    fault: Option<FaultKind>,
) -> Response<Full<Bytes>> {
    let config = &shared.config.pan123;
    let mut state = shared.lock();
    let trace_id = state.request_id();
    let reply = match (fault, endpoint) {
        (Some(kind), _) => fault_reply(endpoint, kind),
        (None, Endpoint::Token) => issue_token(&mut state, config, parts, body),
        (None, Endpoint::Refresh) => refresh(&mut state, parts, body, &trace_id),
    };
    drop(state);
    // N.B. never the headers or the body: they carry the secret and the token.
    tracing::debug!(
        endpoint = endpoint.as_str(),
        status = reply.status.as_u16(),
        code = reply.code,
        fault = fault.map(FaultKind::as_str),
        x_trace_id = %trace_id,
        "emulated 123pan request"
    );
    respond(reply, &trace_id, config.body_only_errors)
}

/// The answer to an unknown path under `/api/`, in 123pan's shape.
pub(crate) fn not_found(shared: &Shared) -> Response<Full<Bytes>> {
    let trace_id = shared.lock().request_id();
    let reply = Reply::error(StatusCode::NOT_FOUND, CODE_NOT_FOUND, "no such API");
    respond(reply, &trace_id, false)
}

fn respond(reply: Reply, trace_id: &str, body_only_errors: bool) -> Response<Full<Bytes>> {
    let refusal = matches!(reply.status.as_u16(), 400 | 401 | 403 | 429);
    let status = if body_only_errors && refusal && reply.raw.is_none() {
        StatusCode::OK
    } else {
        reply.status
    };
    let (content_type, body) = match reply.raw {
        Some((content_type, raw)) => (content_type, Bytes::from_static(raw)),
        None => {
            let envelope = json!({
                "code": reply.code,
                "message": reply.message,
                "data": reply.data,
                "x-traceID": trace_id,
            });
            let body = serde_json::to_vec(&envelope).unwrap_or_default();
            ("application/json", Bytes::from(body))
        }
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Some(seconds) = reply.retry_after {
        headers.insert(RETRY_AFTER, HeaderValue::from_static(seconds));
    }
    response
}

/// A fault in 123pan's format.
fn fault_reply(endpoint: Endpoint, kind: FaultKind) -> Reply {
    match kind {
        FaultKind::Http503 => Reply {
            raw: Some((
                "text/html",
                b"<html><body><h1>503 Service Temporarily Unavailable</h1></body></html>\n",
            )),
            ..Reply::error(StatusCode::SERVICE_UNAVAILABLE, 503, "service unavailable")
        },
        FaultKind::ServerError => Reply::error(StatusCode::OK, CODE_INTERNAL, "internal error"),
        FaultKind::Quota | FaultKind::Qps => Reply::throttled(),
        FaultKind::Throttle => Reply {
            retry_after: Some("1"),
            ..Reply::throttled()
        },
        FaultKind::Garbage => Reply {
            raw: Some(("application/json", b"{\"code\":0,\"message\":\"o")),
            ..Reply::ok(Value::Null)
        },
        FaultKind::Invalid => match endpoint {
            Endpoint::Token => Reply::bad_credentials(),
            Endpoint::Refresh => Reply::token_invalid(),
        },
        // Transport-level kinds are applied by the server and never reach a provider.
        FaultKind::Slow | FaultKind::DropBefore | FaultKind::DropAfter => Reply::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            CODE_INTERNAL,
            "emulator bug: a transport fault reached the provider",
        ),
    }
}

fn platform_ok(parts: &Parts) -> bool {
    parts
        .headers
        .get("platform")
        .is_some_and(|v| v.as_bytes() == PLATFORM.as_bytes())
}

/// A token request's body. Missing fields are empty, and so refused as wrong credentials.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct TokenRequest {
    #[serde(rename = "clientID")]
    client_id: String,
    #[serde(rename = "clientSecret")]
    client_secret: String,
}

fn issue_token(state: &mut State, config: &Pan123Config, parts: &Parts, body: &[u8]) -> Reply {
    if !platform_ok(parts) {
        return Reply::platform();
    }
    if !state.pan123.token_limit.try_take(Instant::now()) {
        state.pan123.stats.token_throttled += 1;
        return Reply::throttled();
    }
    let Ok(request) = serde_json::from_slice::<TokenRequest>(body) else {
        return Reply::bad_body();
    };
    let id_ok =
        crate::http::constant_time_eq(request.client_id.as_bytes(), config.client_id.as_bytes());
    let secret_ok = crate::http::constant_time_eq(
        request.client_secret.as_bytes(),
        config.client_secret.expose().as_bytes(),
    );
    if !(id_ok && secret_ok) {
        state.pan123.stats.rejected_credentials += 1;
        return Reply::bad_credentials();
    }
    let now = jiff::Timestamp::now();
    let expiry = expiry_after(now, config.token_ttl);
    let token = state.random_text(48);
    let pan123 = &mut state.pan123;
    // Forget expired tokens, so a long-running emulator does not grow without bound.
    pan123.tokens.retain(|_, at| *at > now);
    pan123.tokens.insert(token.clone(), expiry);
    pan123.stats.tokens_issued += 1;
    Reply::ok(json!({
        "accessToken": token,
        "expiredAt": china_rfc3339(expiry),
    }))
}

/// Carries out a refresh; `trace_id` is its answer's, recorded when it succeeds.
fn refresh(state: &mut State, parts: &Parts, body: &[u8], trace_id: &str) -> Reply {
    if !platform_ok(parts) {
        return Reply::platform();
    }
    let now = jiff::Timestamp::now();
    let live = bearer(parts)
        .and_then(|token| state.pan123.tokens.get(token))
        .is_some_and(|expiry| *expiry > now);
    if !live {
        state.pan123.stats.rejected_tokens += 1;
        return Reply::token_invalid();
    }
    if !state.pan123.refresh_limit.try_take(Instant::now()) {
        state.pan123.stats.throttled += 1;
        return Reply::throttled();
    }
    let blank = body.iter().all(u8::is_ascii_whitespace);
    if !blank && serde_json::from_slice::<Value>(body).is_err() {
        return Reply::bad_body();
    }
    let stats = &mut state.pan123.stats;
    stats.refreshes += 1;
    stats.issued.push(trace_id.to_owned());
    Reply::ok(json!({}))
}

/// The token of `Authorization: Bearer <token>`.
fn bearer(parts: &Parts) -> Option<&str> {
    let header = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// When a token issued at `now` expires: `ttl` later, rounded up to the whole second, since
/// `expiredAt` names whole seconds and must be the truth.
fn expiry_after(now: jiff::Timestamp, ttl: Duration) -> jiff::Timestamp {
    let later = jiff::SignedDuration::try_from(ttl)
        .ok()
        .and_then(|d| now.checked_add(d).ok())
        .unwrap_or(jiff::Timestamp::MAX);
    if later.subsec_nanosecond() == 0 {
        return later;
    }
    jiff::Timestamp::from_second(later.as_second() + 1).unwrap_or(later)
}

/// `2025-03-23T15:48:37+08:00`, as 123pan writes `expiredAt`.
fn china_rfc3339(at: jiff::Timestamp) -> String {
    at.to_zoned(jiff::tz::TimeZone::fixed(jiff::tz::offset(8)))
        .strftime("%Y-%m-%dT%H:%M:%S%:z")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_rounds_up_to_the_second_and_prints_in_china_time() {
        let now: jiff::Timestamp = "2025-03-23T05:48:35.2Z".parse().unwrap();
        let expiry = expiry_after(now, Duration::from_secs(2));
        assert_eq!(china_rfc3339(expiry), "2025-03-23T13:48:38+08:00");
        let whole: jiff::Timestamp = "2025-03-23T05:48:35Z".parse().unwrap();
        assert_eq!(
            expiry_after(whole, Duration::from_secs(2)),
            "2025-03-23T05:48:37Z".parse::<jiff::Timestamp>().unwrap()
        );
        let parsed: jiff::Timestamp = china_rfc3339(expiry).parse().unwrap();
        assert_eq!(parsed, expiry);
        assert!(expiry_after(now, Duration::MAX) > now);
    }

    #[test]
    fn debug_output_never_shows_a_token() {
        let mut state = Pan123State::new(&Pan123Config::default());
        state
            .tokens
            .insert("tok-secret".to_owned(), jiff::Timestamp::now());
        let text = format!("{state:?}");
        assert!(
            !text.contains("tok-secret") && text.contains("tokens: 1"),
            "{text}"
        );
    }

    #[test]
    fn the_bucket_holds_a_second_and_refills_at_the_rate() {
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let mut one = RateLimit::new(1.0);
        assert!(one.try_take(at(0)));
        assert!(!one.try_take(at(500)));
        assert!(one.try_take(at(995)), "jitter within the grace passes");
        assert!(!one.try_take(at(1500)));
        assert!(one.try_take(at(2000)));

        let mut three = RateLimit::new(3.0);
        assert!((0..3).all(|_| three.try_take(at(0))));
        assert!(!three.try_take(at(0)));
        assert!(three.try_take(at(334)));

        let mut unlimited = RateLimit::new(0.0);
        assert!((0..1000).all(|_| unlimited.try_take(at(0))));
    }

    #[test]
    fn bearer_needs_the_scheme_and_a_token() {
        let parts = |value: &str| {
            let (parts, ()) = hyper::Request::builder()
                .header(AUTHORIZATION, value)
                .body(())
                .unwrap()
                .into_parts();
            parts
        };
        assert_eq!(bearer(&parts("Bearer abc")), Some("abc"));
        assert_eq!(bearer(&parts("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(&parts("Basic abc")), None);
        assert_eq!(bearer(&parts("Bearer ")), None);
        assert_eq!(bearer(&parts("abc")), None);
    }
}

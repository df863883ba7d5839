//! The 123pan open platform: an account-wide direct-link cache refresh behind a bearer token.
//!
//! `POST /api/v1/direct-link/cache/refresh` has no per-URL parameter: one call refreshes the
//! whole account, so one call serves every queued job of the account. Its bearer token comes
//! from `POST /api/v1/access_token` and expires at the time the answer names; the worker caches
//! it in the store and renews it shortly before that, or once after a 401. Every request carries
//! `Platform: open_platform`. Neither the client secret nor a token ever reaches a log line or a
//! report message.

mod account;

use std::time::Duration;

use serde::Deserialize;

use super::wire::{
    describe_transport_error, excerpt, header_text, one_line, provider_id, read_body, transient,
};
use super::{CallReport, Outcome};
use crate::secret::Secret;
pub use account::{DEFAULT_MAX_DELAY, DEFAULT_SETTLE, Pan123Account, Pan123Settings};

/// The production endpoint.
pub const DEFAULT_ENDPOINT: &str = "https://open-api.123pan.com";
/// The token path (seed document "直链缓存刷新", access token section).
pub const TOKEN_PATH: &str = "/api/v1/access_token";
/// The refresh path (seed document "直链缓存刷新").
pub const REFRESH_PATH: &str = "/api/v1/direct-link/cache/refresh";
/// Requests per second per account. 123pan publishes no limit for this endpoint, so purgeq
/// chooses one call per second (the project's design notes); one call serves every queued job
/// anyway.
pub const REQUESTS_PER_SEC: f64 = 1.0;
/// The longest margin before expiry at which a cached token is renewed.
pub const RENEW_BEFORE: Duration = Duration::from_secs(300);

/// An account's client credentials.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// `clientID`.
    pub client_id: String,
    /// `clientSecret`.
    pub client_secret: Secret,
}

/// An access token and when it expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessToken {
    /// The bearer token.
    pub token: Secret,
    /// Expiry, in milliseconds since the epoch.
    pub expires_at: i64,
}

/// A client for one 123pan account.
#[derive(Debug, Clone)]
pub struct Pan123Client {
    http: reqwest::Client,
    endpoint: String,
    credentials: Credentials,
}

/// What a 123pan answer looks like; `data` differs per endpoint.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Body {
    code: Option<i64>,
    message: Option<String>,
    #[serde(rename = "x-traceID")]
    trace_id: Option<String>,
    data: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TokenData {
    access_token: String,
    expired_at: String,
}

/// A response as it arrived.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// `Retry-After`, in seconds form.
    pub retry_after: Option<Duration>,
    /// The body, cut at 1 MiB.
    pub body: Vec<u8>,
}

impl Pan123Client {
    /// The client secret, from which the token's sealing key is derived ([`crate::seal`]).
    pub fn client_secret(&self) -> &Secret {
        &self.credentials.client_secret
    }

    /// A client sending through `http` (which carries the timeouts) to `endpoint`.
    pub fn new(
        http: reqwest::Client,
        endpoint: impl Into<String>,
        credentials: Credentials,
    ) -> Self {
        Pan123Client {
            http,
            endpoint: endpoint.into().trim_end_matches('/').to_owned(),
            credentials,
        }
    }

    /// Asks for a new access token.
    pub async fn access_token(&self) -> Result<AccessToken, Box<CallReport>> {
        let body = serde_json::json!({
            "clientID": self.credentials.client_id,
            "clientSecret": self.credentials.client_secret.expose(),
        });
        let answer = self.post(TOKEN_PATH, None, &body).await.map_err(Box::new)?;
        let result = classify_token(&answer);
        match &result {
            Ok(token) => tracing::debug!(
                expires_at = token.expires_at,
                "123pan issued an access token"
            ),
            Err(report) => {
                tracing::debug!(outcome = report.outcome.label(), message = %report.message, "123pan refused an access token")
            }
        }
        result
    }

    /// Refreshes the account's whole direct-link cache.
    pub async fn refresh(&self, token: &Secret) -> CallReport {
        match self
            .post(REFRESH_PATH, Some(token), &serde_json::json!({}))
            .await
        {
            Ok(answer) => classify_refresh(&answer),
            Err(report) => report,
        }
    }

    async fn post(
        &self,
        path: &str,
        token: Option<&Secret>,
        body: &serde_json::Value,
    ) -> Result<Answer, CallReport> {
        let mut request = self
            .http
            .post(format!("{}{path}", self.endpoint))
            .header("Platform", "open_platform")
            .json(body);
        if let Some(token) = token {
            let mut value =
                reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.expose()))
                    .map_err(|_| {
                        transient(
                            None,
                            "the access token is not a valid header value".to_owned(),
                        )
                    })?;
            value.set_sensitive(true);
            request = request.header(reqwest::header::AUTHORIZATION, value);
        }
        let mut response = request
            .send()
            .await
            .map_err(|e| transient(None, describe_transport_error(&e)))?;
        let status = response.status().as_u16();
        let retry_after = header_text(response.headers(), "retry-after")
            .and_then(|v| super::wire::parse_retry_after(&v));
        let body = read_body(&mut response).await.map_err(|e| {
            transient(
                Some(status),
                format!("reading the response: {}", describe_transport_error(&e)),
            )
        })?;
        Ok(Answer {
            status,
            retry_after,
            body,
        })
    }
}

fn report(answer: &Answer, outcome: Outcome, body: &Body, message: String) -> CallReport {
    CallReport {
        outcome,
        http_status: Some(answer.status),
        code: body.code,
        request_id: body.trace_id.as_deref().and_then(provider_id),
        trace_id: None,
        message: one_line(&message),
        quotas: Vec::new(),
        retry_after: answer.retry_after,
    }
}

/// The outcome of an answer that is not a success. Shared by both endpoints.
fn failure(answer: &Answer, body: &Body) -> Outcome {
    let status = answer.status;
    match (status, body.code) {
        (500..=599, _) => Outcome::Transient,
        (429, _) | (_, Some(429)) => Outcome::RateLimited,
        (401, _) | (_, Some(401)) => Outcome::Auth,
        _ => Outcome::Transient,
    }
}

fn parse(answer: &Answer) -> Result<Body, Box<CallReport>> {
    // An object, not any JSON: serde would read an array into `Body` by position.
    let object = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&answer.body);
    object
        .and_then(|map| serde_json::from_value::<Body>(serde_json::Value::Object(map)))
        .map_err(|e| {
            let outcome = match answer.status {
                401 => Outcome::Auth,
                429 => Outcome::RateLimited,
                _ => Outcome::Transient,
            };
            let mut r = transient(
                Some(answer.status),
                format!("unparseable body ({e}): {}", excerpt(&answer.body)),
            );
            r.outcome = outcome;
            r.retry_after = answer.retry_after;
            Box::new(r)
        })
}

fn message_of(body: &Body, answer: &Answer) -> String {
    match (&body.message, body.code) {
        (Some(m), _) if !m.is_empty() => m.clone(),
        (_, Some(code)) => format!("code {code}"),
        _ => format!("HTTP {}", answer.status),
    }
}

/// What an answer to the refresh call means. Pure. Code 0 under a 2xx status is success, with
/// `x-traceID` as the request id; 401 (status or code) is auth; 429 is a rate limit; 5xx, code 1,
/// unknown codes and bodies that don't parse are transient.
pub fn classify_refresh(answer: &Answer) -> CallReport {
    let body = match parse(answer) {
        Ok(body) => body,
        Err(report) => return *report,
    };
    let ok = (200..300).contains(&answer.status) && body.code == Some(0);
    let outcome = if ok {
        Outcome::Accepted {
            rejected: Vec::new(),
        }
    } else {
        failure(answer, &body)
    };
    report(answer, outcome, &body, message_of(&body, answer))
}

/// What an answer to the token call means: the token, or a report saying why not. Pure.
pub fn classify_token(answer: &Answer) -> Result<AccessToken, Box<CallReport>> {
    let body = parse(answer)?;
    let ok = (200..300).contains(&answer.status) && body.code == Some(0);
    if !ok {
        let outcome = failure(answer, &body);
        let message = format!("access token refused: {}", message_of(&body, answer));
        return Err(Box::new(report(answer, outcome, &body, message)));
    }
    let data = body
        .data
        .clone()
        .and_then(|d| serde_json::from_value::<TokenData>(d).ok())
        .ok_or_else(|| {
            Box::new(report(
                answer,
                Outcome::Transient,
                &body,
                "access token answer without data.accessToken/expiredAt".to_owned(),
            ))
        })?;
    let expires_at = data
        .expired_at
        .parse::<jiff::Timestamp>()
        .map_err(|e| {
            Box::new(report(
                answer,
                Outcome::Transient,
                &body,
                format!("access token answer with an unreadable expiredAt ({e})"),
            ))
        })?
        .as_millisecond();
    Ok(AccessToken {
        token: Secret::new(data.access_token),
        expires_at,
    })
}

/// Whether a token cached at `obtained_at` and expiring at `expires_at` (ms) should be renewed
/// at `now`: within [`RENEW_BEFORE`] of expiry, or within the last tenth of its life when it
/// lives shorter than that.
pub fn needs_renewal(obtained_at: i64, expires_at: i64, now: i64) -> bool {
    let life = (expires_at - obtained_at).max(0);
    let margin = i64::try_from(RENEW_BEFORE.as_millis())
        .unwrap_or(i64::MAX)
        .min(life / 10);
    now >= expires_at - margin
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> Answer {
        Answer {
            status,
            retry_after: None,
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn refresh_success_records_the_trace_id() {
        let r = classify_refresh(&answer(
            200,
            r#"{"code":0,"message":"ok","data":{},"x-traceID":"t-1"}"#,
        ));
        assert_eq!(r.outcome, Outcome::Accepted { rejected: vec![] });
        assert_eq!(r.request_id.as_deref(), Some("t-1"));
        assert_eq!(r.code, Some(0));
    }

    #[test]
    fn refresh_failures_are_classified() {
        let cases = [
            (
                200,
                r#"{"code":401,"message":"token invalid"}"#,
                Outcome::Auth,
            ),
            (
                401,
                r#"{"code":401,"message":"token invalid"}"#,
                Outcome::Auth,
            ),
            (401, "<html>", Outcome::Auth),
            (
                429,
                r#"{"code":429,"message":"too many"}"#,
                Outcome::RateLimited,
            ),
            (
                200,
                r#"{"code":429,"message":"too many"}"#,
                Outcome::RateLimited,
            ),
            (
                200,
                r#"{"code":1,"message":"internal error"}"#,
                Outcome::Transient,
            ),
            (200, r#"{"code":5113,"message":"odd"}"#, Outcome::Transient),
            (503, r#"{"code":0}"#, Outcome::Transient),
            (200, "not json", Outcome::Transient),
        ];
        for (status, body, want) in cases {
            assert_eq!(
                classify_refresh(&answer(status, body)).outcome,
                want,
                "{status} {body}"
            );
        }
        let garbage = classify_refresh(&answer(200, "{\"code\":0,"));
        assert!(
            garbage.message.contains("unparseable"),
            "{}",
            garbage.message
        );
    }

    #[test]
    fn token_answers_parse_with_their_offset() {
        let t = classify_token(&answer(
            200,
            r#"{"code":0,"message":"ok","data":{"accessToken":"abc","expiredAt":"2025-03-23T15:48:37+08:00"}}"#,
        ))
        .unwrap();
        assert_eq!(t.token.expose(), "abc");
        assert_eq!(
            t.expires_at,
            "2025-03-23T07:48:37Z"
                .parse::<jiff::Timestamp>()
                .unwrap()
                .as_millisecond()
        );
    }

    #[test]
    fn refused_tokens_say_why_without_the_secret() {
        let err = classify_token(&answer(
            200,
            r#"{"code":401,"message":"invalid client secret"}"#,
        ))
        .unwrap_err();
        assert_eq!(err.outcome, Outcome::Auth);
        assert!(err.message.contains("invalid client secret"));
        let err = classify_token(&answer(
            200,
            r#"{"code":0,"data":{"accessToken":"abc","expiredAt":"soon"}}"#,
        ))
        .unwrap_err();
        assert_eq!(err.outcome, Outcome::Transient);
        assert!(!err.message.contains("abc"));
    }

    #[test]
    fn renewal_margin_scales_with_short_lives() {
        let h = 3_600_000;
        assert!(!needs_renewal(0, 2 * h, h));
        assert!(needs_renewal(0, 2 * h, 2 * h - 299_000));
        // A 2-second token is renewed in its last 200 ms only.
        assert!(!needs_renewal(0, 2_000, 1_700));
        assert!(needs_renewal(0, 2_000, 1_850));
    }
}

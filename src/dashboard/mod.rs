//! The worker's HTTP listener: the dashboard page (`/`, `/app.js`, `/app.css`), the read-only
//! JSON API (`/api/v1/...`, see [`api`]) and Prometheus `/metrics`.
//!
//! Invariants:
//! - Read-only: only GET and HEAD are answered; no handler writes to the store.
//! - With a token configured, every path (but `/metrics` when explicitly exempted) needs
//!   `Authorization: Bearer TOKEN`, compared in constant time; the token never appears in an
//!   answer or a log line. [`check_bind`] refuses a non-loopback address without a token.
//! - Every answer carries a strict Content-Security-Policy (`default-src 'self'`, no inline
//!   script or style), `X-Content-Type-Options: nosniff` and `Cache-Control: no-store`. The page
//!   puts database text into the DOM with `textContent` only, and the JSON encoder escapes `<`,
//!   `>` and `&`, so stored text is never markup.
//! - Every asset is embedded in the binary; nothing is loaded from another host.

pub mod api;
pub mod shape;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{
    AUTHORIZATION, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, HeaderValue,
    WWW_AUTHENTICATE,
};
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::{self, Metrics};
use crate::secret::Secret;
use crate::store::Store;

/// The Content-Security-Policy of every answer.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// Why the listener will not start.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// A non-loopback address without a token.
    #[error(
        "refusing to serve the dashboard on {addr} without a token: it is not a loopback address; set --http-token-file PATH (or PURGEQ_HTTP_TOKEN_FILE), or listen on 127.0.0.1"
    )]
    NeedsToken {
        /// The address.
        addr: SocketAddr,
    },
    /// The token file can't be read.
    #[error("--http-token-file {}: cannot read it", path.display())]
    TokenFile {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The token file is empty.
    #[error("--http-token-file {}: the file is empty; put the token in it", path.display())]
    EmptyToken {
        /// The file.
        path: std::path::PathBuf,
    },
}

/// Reads the bearer token from `path` (one trailing newline trimmed); an empty file is refused.
pub fn read_token(path: &std::path::Path) -> Result<Secret, ListenError> {
    let text = std::fs::read_to_string(path).map_err(|source| ListenError::TokenFile {
        path: path.to_owned(),
        source,
    })?;
    let token = text.trim_end_matches(['\n', '\r']);
    if token.is_empty() {
        return Err(ListenError::EmptyToken {
            path: path.to_owned(),
        });
    }
    Ok(Secret::new(token))
}

/// Refuses to bind a non-loopback address unless a token guards it.
pub fn check_bind(addr: SocketAddr, has_token: bool) -> Result<(), ListenError> {
    if addr.ip().is_loopback() || has_token {
        Ok(())
    } else {
        Err(ListenError::NeedsToken { addr })
    }
}

/// What the listener serves from.
#[derive(Debug)]
pub struct Server {
    /// The queue.
    pub store: Store,
    /// The worker's metrics.
    pub metrics: Arc<Metrics>,
    /// The bearer token every request must carry, if set.
    pub token: Option<Secret>,
    /// Serve `/metrics` without the token.
    pub metrics_open: bool,
}

/// Serves the listener until `stop`.
pub async fn serve(listener: TcpListener, server: Arc<Server>, stop: CancellationToken) {
    crate::http::serve(listener, "http", stop, move |req| {
        let server = Arc::clone(&server);
        async move { Ok(server.answer(&req).await) }
    })
    .await;
}

impl Server {
    /// Answers one request, with the common headers.
    pub async fn answer(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        let mut response = self.route(req).await;
        let headers = response.headers_mut();
        headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
        headers.insert(
            "x-content-type-options",
            HeaderValue::from_static("nosniff"),
        );
        headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }

    async fn route(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path();
        let exempt = self.metrics_open && path == metrics::PATH;
        if !exempt && !self.authorized(req) {
            let mut r = text(StatusCode::UNAUTHORIZED, "a bearer token is required\n");
            r.headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "read-only: use GET\n");
        }
        match path {
            "/" | "/index.html" => asset("text/html; charset=utf-8", INDEX_HTML),
            "/app.js" => asset("text/javascript; charset=utf-8", APP_JS),
            "/app.css" => asset("text/css; charset=utf-8", APP_CSS),
            p if p == metrics::PATH => metrics::answer(&self.metrics, &self.store, req).await,
            p if p.starts_with("/api/") => api::answer(&self.store, p, req.uri().query()).await,
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }

    fn authorized(&self, req: &Request<Incoming>) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let given = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
            .unwrap_or_default();
        crate::http::constant_time_eq(given, token.expose().as_bytes())
    }
}

fn asset(content_type: &'static str, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// A plain-text answer.
pub(crate) fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = asset("text/plain; charset=utf-8", body);
    *r.status_mut() = status;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_loopback_needs_a_token() {
        let public: SocketAddr = "0.0.0.0:80".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:80".parse().unwrap();
        assert!(check_bind(public, false).is_err());
        assert!(check_bind(public, true).is_ok());
        assert!(check_bind(local, false).is_ok());
        let message = check_bind(public, false).unwrap_err().to_string();
        assert!(message.contains("--http-token-file"), "{message}");
    }
}

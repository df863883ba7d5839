//! The one HTTP/1 server loop shared by the worker's listener (dashboard, API, metrics) and
//! `purgeq emulate`, and the constant-time comparison every secret check uses.
//!
//! Invariants:
//! - One task per connection; an accept error (out of descriptors and the like) pauses the
//!   loop briefly instead of spinning.
//! - Cancelling the stop token ends the accept loop and closes every open connection.
//! - A handler returning `Err` makes hyper drop the connection without an answer (the emulator
//!   uses this to fake a dropped connection).

use std::future::Future;
use std::io;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use subtle::ConstantTimeEq as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What a handler answers: `Err` drops the connection without an answer.
pub type Answer = Result<Response<Full<Bytes>>, io::Error>;

/// Accepts connections on `listener` until `stop`, answering each request with `handler`.
/// `name` only labels log lines.
pub async fn serve<H, F>(
    listener: TcpListener,
    name: &'static str,
    stop: CancellationToken,
    handler: H,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Answer> + Send + 'static,
{
    loop {
        let (stream, peer) = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "{name} accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let handler = handler.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(handler);
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                () = stop.cancelled() => {}
                result = connection => {
                    if let Err(e) = result {
                        tracing::debug!(%peer, error = %e, "{name} connection ended");
                    }
                }
            }
        });
    }
}

/// Whether two byte strings are equal, in time independent of where they differ (the length
/// may leak; secrets compared here are fixed-length digests or tokens).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn equal_only_when_every_byte_matches() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(constant_time_eq(b"", b""));
    }
}

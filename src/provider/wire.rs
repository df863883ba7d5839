//! Wire helpers shared by the provider clients: bounded body reads, one-line messages, and
//! transport errors described without secrets (request headers are never part of them).

use std::time::Duration;

use super::{CallReport, Outcome};

/// Response bodies larger than this are cut: a real answer is a few kilobytes.
const MAX_BODY_BYTES: usize = 1 << 20;
/// How much of an unexpected body goes into a report message.
const EXCERPT_CHARS: usize = 120;
use crate::text::MAX_MESSAGE_CHARS;

/// The response body, cut at [`MAX_BODY_BYTES`].
pub(crate) async fn read_body(response: &mut reqwest::Response) -> Result<Vec<u8>, reqwest::Error> {
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = MAX_BODY_BYTES.saturating_sub(bytes.len());
        bytes.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if bytes.len() >= MAX_BODY_BYTES {
            break;
        }
    }
    Ok(bytes)
}

pub(crate) fn transient(http_status: Option<u16>, message: String) -> CallReport {
    CallReport {
        outcome: Outcome::Transient,
        http_status,
        code: None,
        request_id: None,
        trace_id: None,
        message: one_line(&message),
        quotas: Vec::new(),
        retry_after: None,
    }
}

/// A one-line account of a transport failure, without the request URL's noise.
pub(crate) fn describe_transport_error(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connect error"
    } else if e.is_body() {
        "body error"
    } else if e.is_request() {
        "request error"
    } else {
        "transport error"
    };
    let mut causes = Vec::new();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !causes.contains(&text) {
            causes.push(text);
        }
        source = cause.source();
    }
    if causes.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}: {}", causes.join(": "))
    }
}

pub(crate) fn header_text(headers: &reqwest::header::HeaderMap, name: &str) -> Option<String> {
    provider_id(headers.get(name)?.to_str().ok()?)
}

/// `Retry-After` in delay-seconds form; the HTTP-date form is not used by Qiniu and is ignored.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// The start of a body, escaped so that it stays on one line and shows what arrived.
pub(crate) fn excerpt(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "(empty)".to_owned();
    }
    let text = String::from_utf8_lossy(bytes);
    let mut out: String = text
        .chars()
        .take(EXCERPT_CHARS)
        .flat_map(char::escape_debug)
        .collect();
    if text.chars().count() > EXCERPT_CHARS {
        out.push('…');
    }
    format!("\"{out}\"")
}

/// `text` on one line, control characters escaped, cut to a readable length.
pub(crate) fn one_line(text: &str) -> String {
    crate::text::display_safe(text.trim(), MAX_MESSAGE_CHARS)
}

/// A request id or trace id from a provider, cut to [`crate::text::MAX_ID_CHARS`] before it
/// is stored; empty is none.
pub(crate) fn provider_id(text: &str) -> Option<String> {
    let text = text.trim();
    (!text.is_empty()).then(|| crate::text::cap(text, crate::text::MAX_ID_CHARS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_escapes_what_could_break_or_reorder_a_line() {
        assert_eq!(
            one_line("a\u{202e}b\u{2028}c\nd \"q\""),
            "a\\u{202e}b\\u{2028}c\\nd \"q\""
        );
        assert_eq!(one_line("  plain 中文 text "), "plain 中文 text");
    }
}

//! Purge target validation: what `enqueue` accepts, before anything is written.
//!
//! A target is an absolute `http`/`https` URL with a host, at most [`MAX_TARGET_LEN`] bytes, with
//! no whitespace, control characters, credentials or fragment. A directory target ends with `/`.
//! Accepted targets are stored in the URL standard's serialization (scheme and host lower-cased,
//! IDNA hosts in punycode, default ports dropped), so that spellings of one URL dedupe to one
//! quota unit. The path and query are case-sensitive and kept; a query is part of the CDN's cache
//! key. A `#fragment` never reaches a server and so cannot name a cached copy: it is rejected
//! rather than silently dropped, because the producer probably meant something else.

use std::fmt;

use url::Url;

use crate::model::{Action, Provider};

/// The longest target accepted, in bytes. Browsers and CDNs commonly cap URLs near 2 KiB, and
/// Qiniu's API reference recommends keeping refresh URLs short; a longer line is almost
/// certainly a corrupt input.
pub const MAX_TARGET_LEN: usize = 2048;

/// Why a target was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// Empty target.
    #[error("empty target")]
    Empty,
    /// Longer than [`MAX_TARGET_LEN`].
    #[error("{len} bytes long; the limit is {MAX_TARGET_LEN}")]
    TooLong {
        /// The length in bytes.
        len: usize,
    },
    /// Not valid UTF-8.
    #[error("not valid UTF-8")]
    NotUtf8,
    /// Holds a space, tab or other whitespace.
    #[error("contains whitespace at byte {at}; percent-encode it as %20")]
    Whitespace {
        /// Byte offset.
        at: usize,
    },
    /// Holds a control character.
    #[error("contains a control character at byte {at}")]
    Control {
        /// Byte offset.
        at: usize,
    },
    /// Does not parse as an absolute URL.
    #[error("not an absolute URL ({0}); write it as http://host/path")]
    NotUrl(url::ParseError),
    /// A scheme other than http or https.
    #[error("scheme {0:?} is not http or https")]
    Scheme(String),
    /// No host.
    #[error("has no host")]
    NoHost,
    /// Credentials in the URL would end up in logs and audit rows.
    #[error("contains a user name or password; CDN purge URLs never carry credentials")]
    Credentials,
    /// A `#fragment`.
    #[error("has a #fragment, which is never sent to a server; remove it")]
    Fragment,
    /// A directory target that does not end with `/`.
    #[error("a directory must end with '/' and carry no query")]
    DirWithoutSlash,
}

/// Validates one target for `action` and returns its stored form.
pub fn parse_target(raw: &str, action: Action) -> Result<String, TargetError> {
    if raw.is_empty() {
        return Err(TargetError::Empty);
    }
    if raw.len() > MAX_TARGET_LEN {
        return Err(TargetError::TooLong { len: raw.len() });
    }
    for (at, c) in raw.char_indices() {
        if c.is_whitespace() {
            return Err(TargetError::Whitespace { at });
        }
        if c.is_control() {
            return Err(TargetError::Control { at });
        }
    }
    let url = Url::parse(raw).map_err(TargetError::NotUrl)?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(TargetError::Scheme(url.scheme().to_owned()));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(TargetError::NoHost);
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(TargetError::Credentials);
    }
    if url.fragment().is_some() {
        return Err(TargetError::Fragment);
    }
    if action == Action::RefreshDir && (!url.path().ends_with('/') || url.query().is_some()) {
        return Err(TargetError::DirWithoutSlash);
    }
    let stored = String::from(url);
    if stored.len() > MAX_TARGET_LEN {
        return Err(TargetError::TooLong { len: stored.len() });
    }
    Ok(stored)
}

/// One rejected input line, for the error report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// Where it came from: `argument 2`, `line 14` or `stdin line 3`.
    pub origin: String,
    /// The offending input, escaped and shortened for display.
    pub shown: String,
    /// Why.
    pub error: TargetError,
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.origin, self.shown, self.error)
    }
}

/// Escapes control characters and shortens long input so an error line stays one short line.
pub fn show(raw: &[u8]) -> String {
    const SHOWN: usize = 96;
    let text = String::from_utf8_lossy(raw);
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == SHOWN {
            out.push_str(&format!("... ({} bytes)", raw.len()));
            break;
        }
        out.extend(c.escape_debug());
    }
    format!("\"{out}\"")
}

/// The targets of one `enqueue` call, read from arguments, stdin or a file.
#[derive(Debug)]
pub struct Input {
    /// `argument`, `line`: what an origin is called in error messages.
    pub origin_kind: &'static str,
    /// Each raw target with its 1-based position. Blank lines and `#` comments are already gone.
    pub items: Vec<(usize, Vec<u8>)>,
}

impl Input {
    /// Targets given as command-line arguments.
    pub fn from_args(args: &[String]) -> Self {
        Input {
            origin_kind: "argument",
            items: args
                .iter()
                .enumerate()
                .map(|(i, a)| (i + 1, a.as_bytes().to_vec()))
                .collect(),
        }
    }

    /// Targets one per line; blank lines and lines starting with `#` are skipped, surrounding
    /// whitespace (including a CRLF's `\r`) is trimmed.
    pub fn from_lines(bytes: &[u8]) -> Self {
        let items = bytes
            .split(|b| *b == b'\n')
            .enumerate()
            .filter_map(|(i, line)| {
                let line = line.trim_ascii();
                (!line.is_empty() && !line.starts_with(b"#")).then(|| (i + 1, line.to_vec()))
            })
            .collect();
        Input {
            origin_kind: "line",
            items,
        }
    }
}

/// Checks that `action` makes sense for `provider`.
pub fn check_action(provider: Provider, action: Action) -> Result<(), String> {
    match (provider, action) {
        (Provider::Qiniu, Action::RefreshUrl | Action::RefreshDir | Action::PrefetchUrl) => Ok(()),
        (Provider::Pan123, Action::RefreshAll) => Ok(()),
        (Provider::Pan123, _) => Err(
            "123pan refreshes a whole account's direct-link cache: --dir and --prefetch do not apply".to_owned(),
        ),
        (Provider::Qiniu, Action::RefreshAll) => Err("qiniu has no account-wide refresh".to_owned()),
    }
}

/// Validates every item; returns the stored targets, or every rejection.
pub fn validate(input: &Input, action: Action) -> Result<Vec<String>, Vec<Rejected>> {
    let mut good = Vec::with_capacity(input.items.len());
    let mut bad = Vec::new();
    for (pos, raw) in &input.items {
        let parsed = std::str::from_utf8(raw)
            .map_err(|_| TargetError::NotUtf8)
            .and_then(|s| parse_target(s, action));
        match parsed {
            Ok(t) => good.push(t),
            Err(error) => bad.push(Rejected {
                origin: format!("{} {pos}", input.origin_kind),
                shown: show(raw),
                error,
            }),
        }
    }
    if bad.is_empty() { Ok(good) } else { Err(bad) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Result<String, TargetError> {
        parse_target(s, Action::RefreshUrl)
    }

    #[test]
    fn accepts_and_normalizes_urls() {
        assert_eq!(
            url("http://Example.COM:80/a/B?x=1").as_deref(),
            Ok("http://example.com/a/B?x=1")
        );
        assert_eq!(
            url("https://bücher.example/x").as_deref(),
            Ok("https://xn--bcher-kva.example/x")
        );
        assert_eq!(
            url("https://cdn.example.com").as_deref(),
            Ok("https://cdn.example.com/")
        );
    }

    #[test]
    fn rejects_what_cannot_be_a_cdn_url() {
        assert_eq!(url(""), Err(TargetError::Empty));
        assert_eq!(url("ftp://x.com/a"), Err(TargetError::Scheme("ftp".into())));
        assert!(matches!(url("/just/a/path"), Err(TargetError::NotUrl(_))));
        assert!(matches!(url("http://"), Err(TargetError::NotUrl(_))));
        assert_eq!(
            url("http://a.com/x y"),
            Err(TargetError::Whitespace { at: 14 })
        );
        assert_eq!(
            url("http://a.com/x\u{7}"),
            Err(TargetError::Control { at: 14 })
        );
        assert_eq!(url("http://u:p@a.com/x"), Err(TargetError::Credentials));
        assert_eq!(url("http://a.com/x#top"), Err(TargetError::Fragment));
        let long = format!("http://a.com/{}", "x".repeat(MAX_TARGET_LEN));
        assert!(matches!(url(&long), Err(TargetError::TooLong { .. })));
    }

    #[test]
    fn directories_end_with_a_slash() {
        assert_eq!(
            parse_target("http://a.com/d/", Action::RefreshDir).as_deref(),
            Ok("http://a.com/d/")
        );
        assert_eq!(
            parse_target("http://a.com/d", Action::RefreshDir),
            Err(TargetError::DirWithoutSlash)
        );
        assert_eq!(
            parse_target("http://a.com/d/?q", Action::RefreshDir),
            Err(TargetError::DirWithoutSlash)
        );
    }

    #[test]
    fn lines_skip_blanks_and_comments_and_keep_numbers() {
        let input = Input::from_lines(b"# header\nhttp://a.com/1\r\n\n  http://a.com/2  \n");
        let positions: Vec<usize> = input.items.iter().map(|(p, _)| *p).collect();
        assert_eq!(positions, vec![2, 4]);
        assert_eq!(validate(&input, Action::RefreshUrl).map(|v| v.len()), Ok(2));
    }

    #[test]
    fn every_bad_line_is_reported() {
        let input = Input::from_lines(b"http://a.com/1\nnope\nhttp://a.com/2\n\xff\xfe\n");
        let bad = validate(&input, Action::RefreshUrl).unwrap_err();
        let lines: Vec<String> = bad.iter().map(|r| r.origin.clone()).collect();
        assert_eq!(lines, vec!["line 2", "line 4"]);
        assert_eq!(bad[1].error, TargetError::NotUtf8);
    }

    #[test]
    fn shown_input_is_escaped_and_bounded() {
        assert_eq!(show(b"a\tb"), "\"a\\tb\"");
        assert!(show(&[b'x'; 5000]).contains("(5000 bytes)"));
    }

    #[test]
    fn actions_must_fit_the_provider() {
        assert!(check_action(Provider::Qiniu, Action::RefreshDir).is_ok());
        assert!(check_action(Provider::Pan123, Action::RefreshAll).is_ok());
        assert!(check_action(Provider::Pan123, Action::PrefetchUrl).is_err());
    }
}

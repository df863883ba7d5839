//! Purge target validation: what `enqueue` accepts, before anything is written.
//!
//! A target is an absolute `http`/`https` URL written as `scheme://host...`, at most
//! [`MAX_TARGET_LEN`] bytes, with no whitespace, control characters, backslashes, credentials or
//! fragment. The host is a DNS name (labels of 1 to 63 letters, digits, `-` and `_`, not starting
//! or ending with `-`, 253 bytes at most), an IPv4 address written as four decimal numbers, or a
//! bracketed IPv6 address; the port is not 0. The URL standard's parser is lenient where a typo is
//! likely (`http:/x`, `http:///x`, `\` for `/`, `http://0x7f.1/`, `http://a..b/`); those spellings
//! are rejected rather than "repaired" into a URL the producer may not have meant. A directory
//! target ends with `/`.
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
    #[error("{}", describe_parse_error(*.0))]
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
    /// Not written as `http://host` or `https://host` (for example `http:/x` or `http:///x`).
    #[error("must start with http:// or https:// followed by the host")]
    NoAuthority,
    /// A backslash, which the URL standard reads as `/` in some places and keeps in others.
    #[error("contains a backslash at byte {at}; URLs use '/' (write a literal backslash as %5C)")]
    Backslash {
        /// Byte offset.
        at: usize,
    },
    /// A host that is neither a DNS name nor a plainly written IP address.
    #[error("host {host:?} {why}")]
    BadHost {
        /// The host as the URL standard parsed it, cut after 80 characters.
        host: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// Port 0, which no server listens on.
    #[error("has port 0, which no server listens on")]
    PortZero,
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
        if c == '\\' {
            return Err(TargetError::Backslash { at });
        }
    }
    let url = Url::parse(raw).map_err(TargetError::NotUrl)?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(TargetError::Scheme(url.scheme().to_owned()));
    }
    let authority = written_authority(raw).ok_or(TargetError::NoAuthority)?;
    if !url.username().is_empty() || url.password().is_some() || authority.contains('@') {
        return Err(TargetError::Credentials);
    }
    check_host(&url, authority)?;
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

/// Why the URL parser refused a target, in words that suggest the fix.
fn describe_parse_error(e: url::ParseError) -> String {
    match e {
        url::ParseError::RelativeUrlWithoutBase => {
            "not an absolute URL; write it as http://host/path".to_owned()
        }
        other => format!("not a valid URL: {other}"),
    }
}

/// The authority exactly as written: what follows `scheme://` up to the path, query or fragment.
/// `None` when the input does not have the `scheme://host` shape.
fn written_authority(raw: &str) -> Option<&str> {
    let (_scheme, rest) = raw.split_once(':')?;
    let rest = rest.strip_prefix("//")?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    Some(&rest[..end]).filter(|a| !a.is_empty())
}

/// Checks the parsed host and port against what a CDN can serve. `authority` is the raw text,
/// for the IPv4 spelling check.
fn check_host(url: &Url, authority: &str) -> Result<(), TargetError> {
    let bad = |why| {
        // A long host is cut so that the message stays one short line.
        let host = url.host_str().unwrap_or_default();
        let host = match host.char_indices().nth(80) {
            Some((at, _)) => format!("{}...", &host[..at]),
            None => host.to_owned(),
        };
        TargetError::BadHost { host, why }
    };
    match url.host() {
        None => return Err(TargetError::NoHost),
        Some(url::Host::Domain(name)) => check_dns_name(name).map_err(bad)?,
        Some(url::Host::Ipv4(ip)) => {
            // N.B. The URL standard reads `0x7f.1`, `127.1` and `010.0.0.1` (octal) as IPv4
            // addresses; only the spelling that means the same to every tool is accepted.
            let written = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
            if written != ip.to_string() {
                return Err(bad(
                    "is an IPv4 address written another way; write four decimal numbers",
                ));
            }
        }
        Some(url::Host::Ipv6(_)) => {}
    }
    if url.port() == Some(0) {
        return Err(TargetError::PortZero);
    }
    Ok(())
}

/// The longest DNS name, in bytes, without its trailing dot (RFC 1035 section 2.3.4).
const MAX_DNS_NAME: usize = 253;
/// The longest DNS label, in bytes (RFC 1035 section 2.3.4).
const MAX_DNS_LABEL: usize = 63;

/// Checks an ASCII (punycoded) host name: LDH labels plus `_`, which some CDN hosts carry.
fn check_dns_name(name: &str) -> Result<(), &'static str> {
    // A single trailing dot names the same host, fully qualified.
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.len() > MAX_DNS_NAME {
        return Err("is longer than 253 bytes");
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("has an empty label (a leading dot or two dots in a row)");
        }
        if label.len() > MAX_DNS_LABEL {
            return Err("has a label longer than 63 bytes");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("has a label that starts or ends with '-'");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err("may hold only letters, digits, '-', '_' and dots");
        }
    }
    Ok(())
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
    fn rejects_spellings_the_url_standard_would_repair() {
        assert_eq!(url("http:///x"), Err(TargetError::NoAuthority));
        assert_eq!(url("http:/a.com/x"), Err(TargetError::NoAuthority));
        assert_eq!(url("http:a.com/x"), Err(TargetError::NoAuthority));
        assert_eq!(
            url("http:\\\\a.com\\x"),
            Err(TargetError::Backslash { at: 5 })
        );
        assert_eq!(url("http://@a.com/"), Err(TargetError::Credentials));
        assert_eq!(url("http://a.com:0/"), Err(TargetError::PortZero));
        for (host, why) in [
            ("a..b", "empty label"),
            (".com", "empty label"),
            (".", "empty label"),
            ("-bad-.com", "starts or ends with '-'"),
            ("a*b.com", "only letters"),
            ("0x7f.1", "four decimal numbers"),
            ("127.1", "four decimal numbers"),
            ("010.0.0.1", "four decimal numbers"),
            ("xn--", "not a valid URL: invalid international domain name"),
        ] {
            let err = url(&format!("http://{host}/")).unwrap_err();
            assert!(err.to_string().contains(why), "{host}: {err}");
        }
        let long_label = format!("http://{}.com/", "a".repeat(64));
        assert!(
            url(&long_label)
                .unwrap_err()
                .to_string()
                .contains("63 bytes")
        );
        let long_name = format!("http://{}com/", "abcdefghi.".repeat(26));
        assert!(
            url(&long_name)
                .unwrap_err()
                .to_string()
                .contains("253 bytes")
        );
    }

    #[test]
    fn accepts_dns_names_ip_addresses_and_idna() {
        for (raw, stored) in [
            ("http://a_b.example.com./x", "http://a_b.example.com./x"),
            ("http://10.0.0.1:8080/x", "http://10.0.0.1:8080/x"),
            ("http://[::1]/x", "http://[::1]/x"),
            ("http://xn--80ak6aa92e.com/", "http://xn--80ak6aa92e.com/"),
            ("http://example\u{3002}com/", "http://example.com/"),
            (&format!("http://{}.com/", "a".repeat(63)), ""),
        ] {
            let got = url(raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
            assert!(stored.is_empty() || got == stored, "{raw} -> {got}");
        }
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

//! Which Qiniu account serves a URL: its host against every account's `hosts`.
//!
//! Invariants:
//! - An exact host beats any wildcard; among wildcards (`*.img.example.com`) the longest suffix
//!   wins; the catch-all `*` loses to everything. A wildcard matches subdomains only, not the
//!   name it is written over (`*.example.com` does not serve `example.com`).
//! - A host pattern belongs to one account: two accounts claiming the same pattern is an error
//!   when the table is built, never a choice made at enqueue.
//! - Hosts compare in lower case without a trailing dot, as targets are stored.

use std::collections::BTreeMap;

/// A host pattern: an exact name, `*.suffix`, or `*` (every host).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum HostPattern {
    /// Exactly this host.
    Exact(String),
    /// Any subdomain of this suffix (written `*.suffix`).
    Wildcard(String),
    /// Every host (written `*`).
    Any,
}

impl HostPattern {
    /// Parses a `hosts` entry; the reason when it is not a host name, `*.name` or `*`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let lower = text.trim_end_matches('.').to_ascii_lowercase();
        if lower == "*" {
            return Ok(HostPattern::Any);
        }
        let (wild, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lower.as_str()),
        };
        check_name(name).map_err(|why| format!("{text:?} {why}"))?;
        if wild && !name.contains('.') {
            return Err(format!(
                "{text:?} is too broad: a wildcard needs at least two labels after `*.`"
            ));
        }
        Ok(if wild {
            HostPattern::Wildcard(name.to_owned())
        } else {
            HostPattern::Exact(name.to_owned())
        })
    }

    /// Whether `host` (lower case, no trailing dot) is served by this pattern.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(name) => host == name,
            HostPattern::Wildcard(suffix) => host
                .strip_suffix(suffix.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
            HostPattern::Any => true,
        }
    }

    /// How specific a match is: an exact host, then longer wildcards, then `*`.
    fn rank(&self) -> (u8, usize) {
        match self {
            HostPattern::Exact(_) => (2, 0),
            HostPattern::Wildcard(suffix) => (1, suffix.len()),
            HostPattern::Any => (0, 0),
        }
    }
}

impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostPattern::Exact(name) => f.write_str(name),
            HostPattern::Wildcard(suffix) => write!(f, "*.{suffix}"),
            HostPattern::Any => f.write_str("*"),
        }
    }
}

/// A host name's shape: labels of letters, digits, `-` and `_`, 1 to 63 bytes each.
fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 253 {
        return Err("is not a host name (1 to 253 characters)");
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if name.split('.').all(label_ok) {
        Ok(())
    } else {
        Err("is not a host name: write `cdn.example.com`, `*.example.com` or `*`")
    }
}

/// Two accounts claim one host pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The pattern.
    pub pattern: HostPattern,
    /// The account listed first.
    pub first: String,
    /// The account that claims it again.
    pub second: String,
}

/// Every host pattern and the account that serves it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutingTable {
    routes: BTreeMap<HostPattern, String>,
}

/// Why a URL has no account.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unroutable {
    /// The target has no host.
    #[error("it has no host")]
    NoHost,
    /// No account lists the host.
    #[error(
        "no account serves host {0}: add it to the hosts of one [[qiniu]] account, or pass --account"
    )]
    NoAccount(String),
}

impl RoutingTable {
    /// Builds the table from each account's patterns, in order; a pattern claimed by two
    /// accounts is a [`Conflict`].
    pub fn new<'a>(
        accounts: impl IntoIterator<Item = (&'a str, &'a [HostPattern])>,
    ) -> Result<Self, Conflict> {
        let mut routes: BTreeMap<HostPattern, String> = BTreeMap::new();
        for (account, patterns) in accounts {
            for pattern in patterns {
                match routes.get(pattern) {
                    Some(first) if first != account => {
                        return Err(Conflict {
                            pattern: pattern.clone(),
                            first: first.clone(),
                            second: account.to_owned(),
                        });
                    }
                    _ => {
                        routes.insert(pattern.clone(), account.to_owned());
                    }
                }
            }
        }
        Ok(RoutingTable { routes })
    }

    /// The account serving `host`.
    pub fn account_for_host(&self, host: &str) -> Option<&str> {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.routes
            .iter()
            .filter(|(pattern, _)| pattern.matches(&host))
            .max_by_key(|(pattern, _)| pattern.rank())
            .map(|(_, account)| account.as_str())
    }

    /// The account serving a target URL.
    pub fn account_for(&self, target: &str) -> Result<&str, Unroutable> {
        let url = url::Url::parse(target).map_err(|_| Unroutable::NoHost)?;
        let host = url.host_str().ok_or(Unroutable::NoHost)?;
        self.account_for_host(host)
            .ok_or_else(|| Unroutable::NoAccount(host.to_owned()))
    }

    /// Every pattern and its account, most specific first (for `config check`).
    pub fn entries(&self) -> Vec<(&HostPattern, &str)> {
        let mut out: Vec<_> = self.routes.iter().map(|(p, a)| (p, a.as_str())).collect();
        out.sort_by(|a, b| b.0.rank().cmp(&a.0.rank()).then(a.0.cmp(b.0)));
        out
    }

    /// Whether no account lists a host.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pats(list: &[&str]) -> Vec<HostPattern> {
        list.iter()
            .map(|p| HostPattern::parse(p).unwrap())
            .collect()
    }

    fn table(accounts: &[(&str, &[&str])]) -> Result<RoutingTable, Conflict> {
        let owned: Vec<(String, Vec<HostPattern>)> = accounts
            .iter()
            .map(|(a, p)| ((*a).to_owned(), pats(p)))
            .collect();
        RoutingTable::new(owned.iter().map(|(a, p)| (a.as_str(), p.as_slice())))
    }

    #[test]
    fn exact_beats_wildcard_and_longer_wildcard_beats_shorter() {
        let t = table(&[
            ("main", &["*.example.com", "*"]),
            ("img", &["*.img.example.com"]),
            ("edge", &["a.img.example.com"]),
        ])
        .unwrap();
        assert_eq!(t.account_for_host("a.img.example.com"), Some("edge"));
        assert_eq!(t.account_for_host("b.img.example.com"), Some("img"));
        assert_eq!(t.account_for_host("img.example.com"), Some("main"));
        assert_eq!(t.account_for_host("elsewhere.org"), Some("main"));
        assert_eq!(
            t.account_for("https://B.IMG.example.com./x").ok(),
            Some("img")
        );
    }

    #[test]
    fn a_wildcard_does_not_serve_its_own_name() {
        let t = table(&[("main", &["*.example.com"])]).unwrap();
        assert_eq!(t.account_for_host("example.com"), None);
        assert_eq!(t.account_for_host("badexample.com"), None);
        assert_eq!(
            t.account_for("https://example.com/a"),
            Err(Unroutable::NoAccount("example.com".to_owned()))
        );
    }

    #[test]
    fn two_accounts_claiming_one_host_conflict() {
        let err = table(&[("a", &["cdn.example.com"]), ("b", &["CDN.example.com."])]).unwrap_err();
        assert_eq!((err.first.as_str(), err.second.as_str()), ("a", "b"));
        assert_eq!(err.pattern.to_string(), "cdn.example.com");
    }

    #[test]
    fn bad_patterns_are_refused() {
        for bad in ["", "*.com", "a..b", "-a.com", "a b.com", "*.*.a.com", "a/b"] {
            assert!(HostPattern::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            HostPattern::parse("*.Img.Example.com").unwrap(),
            HostPattern::Wildcard("img.example.com".to_owned())
        );
    }
}

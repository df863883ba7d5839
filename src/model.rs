//! The queue's vocabulary: providers, actions, job states and lanes.
//!
//! Each word has one meaning throughout the code:
//! - **provider**: a CDN API purgeq calls ([`Provider`]).
//! - **account**: one set of credentials at a provider, with its own quota and rate limit.
//! - **action**: what a job asks for ([`Action`]); each has its own quota at the provider.
//! - **lane**: provider × account × action ([`Lane`]). Claims, quotas and pauses are per lane.
//! - **gate**: a lane's stored pause and quota reading (the `lanes` table, `store::Gate`).
//! - **route**: one kind of provider request and the lanes it drains (Qiniu's refresh request
//!   carries two lanes, URLs and directories); the worker runs one loop per route.
//!
//! Every enum here is stored in the database by its `as_str` name, so renaming a variant's
//! string is a schema change and needs a migration.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Parsing a stored or typed name failed.
#[derive(Debug, thiserror::Error)]
#[error("unknown {kind} {value:?} (expected one of: {expected})")]
pub struct UnknownName {
    kind: &'static str,
    value: String,
    expected: &'static str,
}

macro_rules! named_enum {
    ($(#[$meta:meta])* $name:ident, $kind:literal, { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The name stored in the database and shown to operators.
            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownName;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownName {
                        kind: $kind,
                        value: s.to_owned(),
                        expected: concat!($($text, " "),+),
                    }),
                }
            }
        }

        impl clap::ValueEnum for $name {
            fn value_variants<'a>() -> &'a [Self] {
                Self::ALL
            }
            fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
                Some(clap::builder::PossibleValue::new(self.as_str()))
            }
        }
    };
}

named_enum!(
    /// A CDN provider purgeq can call.
    Provider, "provider", {
        /// Qiniu fusion CDN: per-URL and per-directory refresh, and prefetch.
        Qiniu => "qiniu",
        /// 123pan open platform: one account-wide direct-link cache refresh.
        Pan123 => "123pan",
    }
);

named_enum!(
    /// What a job asks the provider to do with its target.
    Action, "action", {
        /// Drop the cached copy of one URL.
        RefreshUrl => "refresh_url",
        /// Drop every cached copy under a directory (the target ends with `/`).
        RefreshDir => "refresh_dir",
        /// Fetch one URL into the CDN cache ahead of demand.
        PrefetchUrl => "prefetch_url",
        /// Refresh a whole account's cache (123pan has no per-URL refresh).
        RefreshAll => "refresh_all",
    }
);

named_enum!(
    /// Where a job is in its life: `queued` -> `running` -> [`confirming` ->] `succeeded` |
    /// `failed` | `cancelled`.
    JobState, "state", {
        /// Waiting for a worker; eligible once `next_at` has passed.
        Queued => "queued",
        /// Claimed by a worker under a lease; back to `queued` if the lease expires.
        Running => "running",
        /// Accepted by the provider, not yet confirmed done by the CDN; the worker asks the
        /// provider's task list from `confirm_at` on. Holds no lease.
        Confirming => "confirming",
        /// Done: confirmed by the CDN, or accepted by a provider that offers no confirmation
        /// (or with `--no-confirm`).
        Succeeded => "succeeded",
        /// Permanently rejected, or out of attempts; `last_error` says why.
        Failed => "failed",
        /// Withdrawn by an operator before a worker sent it.
        Cancelled => "cancelled",
    }
);

named_enum!(
    /// How soon a job should go out. Claims take higher priority first, then the oldest; a
    /// target queued at several priorities rides one request at its highest.
    Priority, "priority", {
        /// Before everything else.
        Urgent => "urgent",
        /// Before routine purges.
        High => "high",
        /// The default.
        Normal => "normal",
        /// After everything else.
        Low => "low",
    }
);

impl Priority {
    /// The number stored in `jobs.priority`: 0 (urgent) to 3 (low); lower goes first.
    pub const fn rank(self) -> i64 {
        match self {
            Priority::Urgent => 0,
            Priority::High => 1,
            Priority::Normal => 2,
            Priority::Low => 3,
        }
    }

    /// The priority stored as `rank`, if it is one.
    pub fn from_rank(rank: i64) -> Option<Priority> {
        Priority::ALL.iter().copied().find(|p| p.rank() == rank)
    }
}

impl Provider {
    /// Whether the provider can say when an accepted purge is done at the edge (Qiniu's task
    /// lists); 123pan cannot, so its jobs end `succeeded` at acceptance.
    pub const fn offers_confirmation(self) -> bool {
        matches!(self, Provider::Qiniu)
    }
}

impl JobState {
    /// Whether the job has reached an end state and will never change again on its own.
    pub const fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }
}

/// The account name jobs and lanes use until purgeq learns several accounts per provider.
pub const DEFAULT_ACCOUNT: &str = "default";

/// A lane: one provider account and one action. Quota, rate limits and pauses apply per lane.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Lane {
    /// The provider called.
    pub provider: Provider,
    /// The provider account whose credentials and quota are used.
    pub account: String,
    /// The action, which has its own quota at the provider.
    pub action: Action,
}

impl Lane {
    /// The lane of `action` for `provider`'s default account.
    pub fn new(provider: Provider, action: Action) -> Self {
        Lane {
            provider,
            account: DEFAULT_ACCOUNT.to_owned(),
            action,
        }
    }
}

/// A job a worker claimed: what the planner needs to build a request.
///
/// It lives here, not in the store, so the planner depends only on the vocabulary and the store
/// may use the planner without a cycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedJob {
    /// Job id.
    pub id: i64,
    /// Action.
    pub action: Action,
    /// Target.
    pub target: Option<String>,
    /// Attempts spent before this claim.
    pub attempts: i64,
}

impl fmt::Display for Lane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.provider, self.account, self.action)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for p in Provider::ALL {
            assert_eq!(p.as_str().parse::<Provider>().ok(), Some(*p));
        }
        for a in Action::ALL {
            assert_eq!(a.as_str().parse::<Action>().ok(), Some(*a));
        }
        for s in JobState::ALL {
            assert_eq!(s.as_str().parse::<JobState>().ok(), Some(*s));
        }
        for p in Priority::ALL {
            assert_eq!(Priority::from_rank(p.rank()), Some(*p));
        }
    }

    #[test]
    fn unknown_name_lists_the_choices() {
        let err = "akamai".parse::<Provider>().unwrap_err().to_string();
        assert!(
            err.contains("akamai") && err.contains("qiniu") && err.contains("123pan"),
            "{err}"
        );
    }
}

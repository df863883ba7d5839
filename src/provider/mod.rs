//! Providers: one interface, [`Account`], and one folder per provider behind it.
//!
//! Invariants:
//! - Everything that differs per provider lives in its folder and is reached only through
//!   [`Account`]: the kinds of request it serves and the lanes each drains ([`Route`]), pacing,
//!   credentials and tokens, sending, classification and the quota reset time. The worker holds
//!   `Arc<dyn Account>` and never matches on a provider.
//! - One `Account` value is one provider account: its own name, credentials, pacer and token.
//!   Several accounts of one provider are several values.
//! - A provider call returns a [`CallReport`]: the wire facts for the audit row (HTTP status,
//!   body code, request ids, message, quota readings) and one [`Outcome`]. The worker maps an
//!   `Outcome` to job states and lane gates; nothing else inspects provider codes or error
//!   strings.
//! - A provider that can tell when a purge is done at the edge offers a [`Confirmer`]; its
//!   answers are classified once into a [`Listing`]. One without ([`Account::confirmer`] is
//!   `None`) has its jobs end `succeeded` at acceptance.

mod configured;
mod env;
pub mod pan123;
pub mod qiniu;
mod wire;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde::Serialize;

pub use configured::accounts_from_settings;
pub use env::{
    BuildError, CredentialVars, ESCALATE_VAR, EnvSettings, accounts_from_env, http_client,
};

use crate::model::{Action, Provider};
use crate::pacer::Pacer;
use crate::planner::Batch;
use crate::secret::Secret;
use crate::store::Store;

/// A future an [`Account`] returns; boxed so the worker can hold accounts as `dyn Account`.
pub type CallFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One provider account: what the worker needs to drain its lanes.
pub trait Account: std::fmt::Debug + Send + Sync {
    /// The provider this account belongs to.
    fn provider(&self) -> Provider;

    /// What every account has: its name, routes and pacer.
    fn base(&self) -> &AccountBase;

    /// The account's name, as jobs and lanes carry it.
    fn account(&self) -> &str {
        &self.base().account
    }

    /// The kinds of request this account serves, each with the lanes it drains.
    fn routes(&self) -> &[Route] {
        &self.base().routes
    }

    /// The client-side pacer shared by every route of this account.
    fn pacer(&self) -> &Pacer {
        &self.base().pacer
    }

    /// What the next call needs besides the account's keys: nothing, or an access token (from
    /// the store's cache while it is fresh, else, or when `renew`, a new one). A failure to get
    /// one is reported like a call.
    fn prepare<'a>(
        &'a self,
        store: &'a Store,
        renew: bool,
    ) -> CallFuture<'a, Result<Credential, CallReport>>;

    /// Sends one request of `route` carrying `batch`, and classifies the answer.
    fn send<'a>(
        &'a self,
        route: &'a Route,
        batch: &'a Batch,
        credential: &'a Credential,
    ) -> CallFuture<'a, CallReport>;

    /// When this account's daily quotas next reset after `now` (ms); `None` if it has none.
    fn quota_reset_at(&self, now: i64) -> Option<i64>;

    /// Directory escalation, opt-in: when at least this many distinct queued URLs share a
    /// directory and the URL quota cannot cover today's queue while the directory quota can,
    /// one refresh of that directory serves them all. `None` (the default): never.
    fn escalate_dir_after(&self) -> Option<u32> {
        None
    }

    /// How to ask the provider whether accepted purges are done; `None` when it offers no way.
    fn confirmer(&self) -> Option<&dyn Confirmer> {
        None
    }
}

/// When a provider's daily quotas next reset after `now` (ms), and what that moment is called;
/// `None` for a provider without daily quotas. For readers that hold no [`Account`] (`status`).
pub fn daily_reset(provider: Provider, now: i64) -> Option<(i64, &'static str)> {
    match provider {
        Provider::Qiniu => Some((qiniu::next_china_midnight(now), "China midnight")),
        Provider::Pan123 => None,
    }
}

/// Asks a provider how the tasks of accepted purges are going.
pub trait Confirmer: std::fmt::Debug + Send + Sync {
    /// The operation recorded in the audit row of a query about jobs of `action`
    /// (`refresh_list`).
    fn operation(&self, action: Action) -> &'static str;

    /// Sends one query (one page) and classifies the answer.
    fn query<'a>(&'a self, query: &'a ConfirmQuery) -> CallFuture<'a, ConfirmReport>;
}

/// What a confirmation query asks about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfirmQuery {
    /// The action of the jobs asked about (refresh or prefetch tasks).
    pub action: Action,
    /// Which tasks.
    pub by: ConfirmBy,
    /// The page, from 0.
    pub page: u32,
}

/// Which tasks a confirmation query asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfirmBy {
    /// Every task of one accepted request.
    Request(String),
    /// The tasks of these URLs, when the provider gave no request id (Qiniu 400037).
    Urls(Vec<String>),
}

/// How a CDN task stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    /// Still on its way to the edge (also any state the provider names that we don't know).
    Processing,
    /// Done at the edge.
    Success,
    /// The CDN gave up on it.
    Failure,
}

/// One task the provider reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CdnTask {
    /// The URL or directory.
    pub url: String,
    /// Its state.
    pub state: TaskState,
    /// The provider's detail (Qiniu `stateDetail`), possibly empty.
    pub detail: String,
    /// When the task was created (ms), if said.
    pub created_at: Option<i64>,
    /// When the task ended (ms), if said.
    pub end_at: Option<i64>,
}

/// What a confirmation query's answer means. Classified once, in the provider module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listing {
    /// One page of tasks, with the total the query matches.
    Tasks {
        /// The tasks on this page.
        tasks: Vec<CdnTask>,
        /// How many tasks the query matches in all.
        total: u64,
        /// The page size the provider used.
        page_size: u64,
    },
    /// The provider does not know the request id (Qiniu 400036).
    UnknownRequest,
    /// No usable answer (network, 5xx, garbage, rate limit, auth): ask again later; the
    /// report's outcome says which.
    Unanswered,
}

impl Listing {
    /// A short stable name for the audit row.
    pub fn label(&self, report: &CallReport) -> &'static str {
        match self {
            Listing::Tasks { .. } => "listed",
            Listing::UnknownRequest => "unknown_request",
            Listing::Unanswered => report.outcome.label(),
        }
    }
}

/// A confirmation query's classified answer and the facts for the audit row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfirmReport {
    /// What the answer means.
    pub listing: Listing,
    /// The wire facts (its outcome is only meaningful for [`Listing::Unanswered`]).
    pub report: CallReport,
}

/// What every [`Account`] has, whatever its provider.
#[derive(Debug)]
pub struct AccountBase {
    /// The account's name, as jobs and lanes carry it.
    pub account: String,
    /// The kinds of request it serves.
    pub routes: Vec<Route>,
    /// The pacer shared by all its routes (requests and targets per second).
    pub pacer: Pacer,
}

/// A kind of request an account sends, with the lanes whose jobs it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// A name for logs and the watchdog (`qiniu/refresh`).
    pub name: &'static str,
    /// The operation recorded in the audit row (`refresh`).
    pub operation: &'static str,
    /// The lanes it drains, each with its per-request limit of distinct targets (`None`: every
    /// ready job).
    pub lanes: Vec<(Action, Option<usize>)>,
    /// One call acts on the whole account, whatever the jobs' targets (123pan's refresh).
    pub account_wide: bool,
    /// Hold ready jobs until they stop arriving, so a burst costs one call; `None`: send at
    /// once.
    pub coalesce: Option<Coalesce>,
}

/// A coalescing window: jobs are sent once none has arrived for `settle`, or once the oldest
/// has waited `max_delay`, whichever comes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Coalesce {
    /// Quiet time after the newest arrival before sending.
    pub settle: Duration,
    /// The longest the oldest ready job is held.
    pub max_delay: Duration,
}

impl Coalesce {
    /// How long to hold ready jobs enqueued between `oldest` and `newest` (ms) at `now`;
    /// `None` to send now.
    pub fn hold(&self, oldest: i64, newest: i64, now: i64) -> Option<Duration> {
        let send_at =
            crate::clock::add(newest, self.settle).min(crate::clock::add(oldest, self.max_delay));
        u64::try_from(send_at - now)
            .ok()
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis)
    }
}

impl Route {
    /// Targets one request carries: one for an account-wide call, else the batch's targets.
    pub fn targets_sent(&self, batch: &Batch) -> usize {
        if self.account_wide {
            1
        } else {
            batch.target_count()
        }
    }
}

/// What a call needs besides the account's own keys.
#[derive(Debug, Clone)]
pub enum Credential {
    /// Nothing: every request is signed with the account's keys (Qiniu).
    Keys,
    /// A bearer token (123pan), renewed once when the provider refuses it.
    Token(Secret),
}

/// A target the provider refused for good (for example an invalid URL or a host outside the
/// account's domains). Only the named target fails; the rest of its request is unaffected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejection {
    /// The target exactly as it was sent.
    pub target: String,
    /// The provider's code for the rejection.
    pub code: i64,
    /// Why, in the provider's words where it gave any.
    pub reason: String,
}

/// What a provider call means for the jobs it carried. Classified once, in the provider module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The provider accepted the request. Every target not in `rejected` is purged.
    Accepted {
        /// Targets refused for good although the request as a whole was accepted.
        rejected: Vec<Rejection>,
    },
    /// The request was refused because of the named targets; nothing was purged. The named
    /// targets fail for good and the others must be sent again.
    InvalidTargets {
        /// The targets that caused the refusal.
        rejected: Vec<Rejection>,
    },
    /// The provider refuses this action for the account for good (Qiniu 400038: directory
    /// refresh not enabled). Jobs of that action fail; others in the request are sent again.
    ActionRejected {
        /// The refused action.
        action: Action,
    },
    /// A daily quota is used up. Nothing was purged; jobs go back to the queue without spending
    /// an attempt and `action`'s lane pauses.
    Quota {
        /// The action whose quota ran out.
        action: Action,
    },
    /// The provider is already working on the targets (Qiniu 400037) and gave no request id:
    /// like `Accepted`, but confirmed by URL.
    InProgress,
    /// The provider asked us to slow down. Jobs go back untouched; the lane pauses briefly.
    RateLimited,
    /// The credentials were refused. Jobs go back untouched; the lane pauses until fixed.
    Auth,
    /// Anything that may work if sent again: network errors, timeouts, 5xx, provider server
    /// codes, bodies that don't parse. Spends an attempt.
    Transient,
}

impl Outcome {
    /// A short stable name for the audit row and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Accepted { .. } => "accepted",
            Outcome::InvalidTargets { .. } => "invalid_targets",
            Outcome::ActionRejected { .. } => "action_rejected",
            Outcome::InProgress => "in_progress",
            Outcome::Quota { .. } => "quota",
            Outcome::RateLimited => "rate_limited",
            Outcome::Auth => "auth",
            Outcome::Transient => "transient",
        }
    }
}

/// A daily quota reading from a provider response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct QuotaReading {
    /// The action the quota applies to.
    pub action: Action,
    /// The daily allowance.
    pub quota_day: i64,
    /// What is left of it today.
    pub surplus_day: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_held_until_it_settles_but_never_past_the_max_delay() {
        let window = Coalesce {
            settle: Duration::from_secs(3),
            max_delay: Duration::from_secs(30),
        };
        // Last arrival 1 s ago: 2 s more.
        assert_eq!(window.hold(0, 9_000, 10_000), Some(Duration::from_secs(2)));
        // Quiet for 3 s: send.
        assert_eq!(window.hold(0, 7_000, 10_000), None);
        // Still arriving, but the oldest waited 29 s: 1 s more, then send whatever came.
        assert_eq!(window.hold(0, 29_000, 29_000), Some(Duration::from_secs(1)));
        assert_eq!(window.hold(0, 30_000, 30_000), None);
    }
}

impl CallReport {
    /// A failure before any answer arrived.
    pub fn transient(message: impl Into<String>) -> Self {
        CallReport {
            outcome: Outcome::Transient,
            http_status: None,
            code: None,
            request_id: None,
            trace_id: None,
            message: message.into(),
            quotas: Vec::new(),
            retry_after: None,
        }
    }
}

/// Everything one provider call produced: the outcome and the facts for the audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallReport {
    /// What the call means for its jobs.
    pub outcome: Outcome,
    /// The HTTP status, when a response arrived.
    pub http_status: Option<u16>,
    /// The provider's body code, when the body carried one.
    pub code: Option<i64>,
    /// The provider's request id for this call (Qiniu `requestId`, 123pan `x-traceID`).
    pub request_id: Option<String>,
    /// A transport-level trace id (Qiniu's `X-Reqid` header), for support tickets.
    pub trace_id: Option<String>,
    /// A one-line human explanation: the provider's message, or the transport error.
    pub message: String,
    /// Daily quota readings the response carried.
    pub quotas: Vec<QuotaReading>,
    /// How long the provider asked us to wait (`Retry-After`), if it said.
    pub retry_after: Option<Duration>,
}

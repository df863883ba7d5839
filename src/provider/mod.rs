//! Provider clients and the one place their answers are classified.
//!
//! A provider call returns a [`CallReport`]: the wire facts for the audit row (HTTP status, body
//! code, request ids, message, quota readings) and one [`Outcome`]. The worker maps an `Outcome`
//! to job states and lane gates; nothing else inspects provider codes or error strings.

pub mod pan123;
pub mod qiniu;
mod wire;

use std::time::Duration;

use serde::Serialize;

use crate::model::Action;

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

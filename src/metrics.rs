//! Prometheus metrics: what the worker did (counters and histograms it records as it goes) and
//! what the queue holds (gauges read from the store at each scrape).
//!
//! Answered by [`answer`] on `GET /metrics` in the OpenMetrics text format, which Prometheus
//! reads natively, on the listener of `purgeq worker --http-listen ADDR` (see `dashboard`).
//!
//! Invariants:
//! - The queue gauges come from one [`Store::summary`] per scrape, the same read `status`
//!   makes, so a scrape and `status --json` taken at the same moment agree. Nothing about the
//!   queue is cached in the process: every worker sharing a database reports the whole queue.
//! - The counters and histograms are this process's own, from its start: Prometheus sums them
//!   across workers and handles restarts with `rate()`.
//! - A scrape never writes to the store and holds no lock across an `.await`.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::clock;
use crate::model::{JobState, Provider};
use crate::store::{Store, Summary};

/// The content type of [`Metrics::render`]'s output: the OpenMetrics text format.
pub const CONTENT_TYPE_OPENMETRICS: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The path metrics are served on.
pub const PATH: &str = "/metrics";

/// Labels of a provider request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    provider: &'static str,
    account: String,
    operation: String,
    outcome: String,
}

/// Labels of a timing per route.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    provider: &'static str,
    account: String,
    operation: String,
}

/// Labels of a job count.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    provider: &'static str,
    state: &'static str,
}

/// Labels of a lane.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LaneLabels {
    provider: &'static str,
    account: String,
    action: &'static str,
}

type Timings = Family<RouteLabels, Histogram, fn() -> Histogram>;

/// Provider call latency buckets: 5 ms to about 41 s, which covers the longest request timeout
/// anyone should set.
fn call_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

/// Claim latency buckets: 0.5 ms (an idle SQLite claim) to about 4 s (a claim waiting on
/// another process's write lock).
fn claim_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 14))
}

/// Enqueue-to-confirmed buckets: 1 s to about 4.5 h (Qiniu documents 5 to 10 minutes).
fn confirmed_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 15))
}

/// Labels of a confirmation result.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConfirmLabels {
    provider: &'static str,
    result: &'static str,
}

/// Labels of a per-provider timing.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabels {
    provider: &'static str,
}

/// The worker's own metrics, shared by its lanes and the metrics server.
pub struct Metrics {
    registry: Registry,
    requests: Family<CallLabels, Counter>,
    call_seconds: Timings,
    claim_seconds: Timings,
    confirmations: Family<ConfirmLabels, Counter>,
    confirmed_seconds: Family<ProviderLabels, Histogram, fn() -> Histogram>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Empty metrics, registered under their `purgeq_` names.
    pub fn new() -> Self {
        let requests = Family::<CallLabels, Counter>::default();
        let call_seconds = Timings::new_with_constructor(call_histogram);
        let claim_seconds = Timings::new_with_constructor(claim_histogram);
        let mut registry = Registry::default();
        registry.register(
            "purgeq_provider_requests",
            "Provider requests sent by this worker, by outcome",
            requests.clone(),
        );
        registry.register_with_unit(
            "purgeq_provider_call_duration",
            "Time from sending a provider request to classifying its answer",
            Unit::Seconds,
            call_seconds.clone(),
        );
        registry.register_with_unit(
            "purgeq_claim_duration",
            "Time taken by one claim of ready jobs from the store",
            Unit::Seconds,
            claim_seconds.clone(),
        );
        let confirmations = Family::<ConfirmLabels, Counter>::default();
        registry.register(
            "purgeq_confirmations",
            "Jobs judged by a confirmation query, by result (success, failure, processing, unconfirmed)",
            confirmations.clone(),
        );
        let confirmed_seconds: Family<ProviderLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(confirmed_histogram);
        registry.register_with_unit(
            "purgeq_enqueue_to_confirmed",
            "Time from enqueueing a job to the CDN confirming its purge",
            Unit::Seconds,
            confirmed_seconds.clone(),
        );
        Metrics {
            registry,
            requests,
            call_seconds,
            claim_seconds,
            confirmations,
            confirmed_seconds,
        }
    }

    /// Counts one provider request and its latency. `outcome` is [`crate::provider::Outcome::label`].
    pub fn observe_call(
        &self,
        provider: Provider,
        account: &str,
        operation: &str,
        outcome: &str,
        elapsed: Duration,
    ) {
        self.requests
            .get_or_create(&CallLabels {
                provider: provider.as_str(),
                account: account.to_owned(),
                operation: operation.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
        self.call_seconds
            .get_or_create(&route_labels(provider, account, operation))
            .observe(elapsed.as_secs_f64());
    }

    /// Counts one job judged by a confirmation query.
    pub fn observe_confirmation(&self, provider: Provider, result: &'static str) {
        self.confirmations
            .get_or_create(&ConfirmLabels {
                provider: provider.as_str(),
                result,
            })
            .inc();
    }

    /// Records the time from enqueue to the CDN's confirmation of one job.
    pub fn observe_confirmed(&self, provider: Provider, waited: Duration) {
        self.confirmed_seconds
            .get_or_create(&ProviderLabels {
                provider: provider.as_str(),
            })
            .observe(waited.as_secs_f64());
    }

    /// Records the latency of one claim, whether or not it found jobs.
    pub fn observe_claim(
        &self,
        provider: Provider,
        account: &str,
        operation: &str,
        elapsed: Duration,
    ) {
        self.claim_seconds
            .get_or_create(&route_labels(provider, account, operation))
            .observe(elapsed.as_secs_f64());
    }

    /// The full exposition: this worker's metrics, then the queue's as `summary` reports it at
    /// `now` (ms).
    pub fn render(&self, summary: &Summary, now: i64) -> String {
        let mut out = String::new();
        // N.B. Writing to a String cannot fail, and every name and label here is valid.
        let _ = encode_registry(&mut out, &self.registry);
        let _ = encode_registry(&mut out, &queue_registry(summary, now));
        let _ = encode_eof(&mut out);
        out
    }
}

fn route_labels(provider: Provider, account: &str, operation: &str) -> RouteLabels {
    RouteLabels {
        provider: provider.as_str(),
        account: account.to_owned(),
        operation: operation.to_owned(),
    }
}

/// The queue gauges for one scrape.
/// What is left of each lane's daily quota now (lanes never read are left out).
fn quota_left(summary: &Summary, now: i64) -> Family<LaneLabels, Gauge> {
    let left = Family::<LaneLabels, Gauge>::default();
    for f in crate::quota::forecasts(&summary.lanes, &[], now) {
        let labels = LaneLabels {
            provider: f.lane.provider.as_str(),
            account: f.lane.account.clone(),
            action: f.lane.action.as_str(),
        };
        left.get_or_create(&labels).set(f.left);
    }
    left
}

/// Jobs per provider and state: every pair, so a state that empties reads 0 rather than
/// vanishing.
fn job_gauges(summary: &Summary) -> Family<JobLabels, Gauge> {
    let jobs = Family::<JobLabels, Gauge>::default();
    for provider in Provider::ALL {
        for state in JobState::ALL {
            let count = summary
                .counts
                .iter()
                .filter(|c| c.provider == *provider && c.state == *state)
                .map(|c| c.count)
                .sum();
            jobs.get_or_create(&JobLabels {
                provider: provider.as_str(),
                state: state.as_str(),
            })
            .set(count);
        }
    }
    jobs
}

/// Per lane: paused or not, and the quota and surplus the provider last reported.
struct LaneGauges {
    paused: Family<LaneLabels, Gauge>,
    surplus: Family<LaneLabels, Gauge>,
    quota: Family<LaneLabels, Gauge>,
}

fn lane_gauges(summary: &Summary, now: i64) -> LaneGauges {
    let gauges = LaneGauges {
        paused: Family::default(),
        surplus: Family::default(),
        quota: Family::default(),
    };
    for gate in &summary.lanes {
        let labels = LaneLabels {
            provider: gate.lane.provider.as_str(),
            account: gate.lane.account.clone(),
            action: gate.lane.action.as_str(),
        };
        let is_paused = gate.paused_until.is_some_and(|until| until > now);
        gauges
            .paused
            .get_or_create(&labels)
            .set(i64::from(is_paused));
        if let Some(left) = gate.surplus_day {
            gauges.surplus.get_or_create(&labels).set(left);
        }
        if let Some(day) = gate.quota_day {
            gauges.quota.get_or_create(&labels).set(day);
        }
    }
    gauges
}

fn queue_registry(summary: &Summary, now: i64) -> Registry {
    let LaneGauges {
        paused,
        surplus,
        quota,
    } = lane_gauges(summary, now);
    let oldest = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
    if let Some(at) = summary.oldest_queued_at {
        // Milliseconds to seconds; an enqueue time ahead of this clock reads as 0.
        oldest.set((now - at).max(0) as f64 / 1000.0);
    }
    let mut registry = Registry::default();
    registry.register(
        "purgeq_jobs",
        "Jobs in the queue database, by provider and state",
        job_gauges(summary),
    );
    registry.register(
        "purgeq_lane_paused",
        "1 while a lane is paused (quota, rate limit, auth or repeated failures), else 0",
        paused,
    );
    registry.register(
        "purgeq_lane_quota_surplus",
        "Daily quota left on a lane, as the provider last reported it",
        surplus,
    );
    registry.register(
        "purgeq_lane_quota_day",
        "Daily quota of a lane, as the provider last reported it",
        quota,
    );
    registry.register(
        "purgeq_lane_quota_left",
        "Daily quota left on a lane now: the last reading, or the whole quota once a reset has passed since it",
        quota_left(summary, now),
    );
    registry.register_with_unit(
        "purgeq_oldest_queued_age",
        "Age of the oldest queued job (0 when none is queued)",
        Unit::Seconds,
        oldest,
    );
    registry
}

/// Answers `GET /metrics` (and `HEAD`) with the OpenMetrics text.
pub async fn answer(
    metrics: &Metrics,
    store: &Store,
    req: &Request<Incoming>,
) -> Response<Full<Bytes>> {
    if req.uri().path() != PATH {
        return response(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found; try /metrics\n".into(),
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return response(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "use GET\n".into(),
        );
    }
    match store.summary().await {
        Ok(summary) => response(
            StatusCode::OK,
            CONTENT_TYPE_OPENMETRICS,
            metrics.render(&summary, clock::now_ms()),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "metrics: cannot read the queue");
            response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain; charset=utf-8",
                format!("cannot read the queue: {e}\n"),
            )
        }
    }
}

fn response(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Action, Lane};
    use crate::store::{Gate, StateCount};

    fn summary() -> Summary {
        Summary {
            counts: vec![
                StateCount {
                    provider: Provider::Qiniu,
                    state: JobState::Succeeded,
                    count: 42,
                },
                StateCount {
                    provider: Provider::Qiniu,
                    state: JobState::Queued,
                    count: 3,
                },
            ],
            lanes: vec![
                Gate {
                    lane: Lane::new(Provider::Qiniu, Action::RefreshUrl),
                    paused_until: Some(2_000),
                    strikes: 1,
                    reason: Some("quota".to_owned()),
                    quota_day: Some(500),
                    surplus_day: Some(0),
                    quota_at: Some(900),
                },
                Gate {
                    lane: Lane::new(Provider::Qiniu, Action::PrefetchUrl),
                    paused_until: Some(500),
                    strikes: 0,
                    reason: None,
                    quota_day: None,
                    surplus_day: None,
                    quota_at: None,
                },
            ],
            oldest_queued_at: Some(-1_500),
        }
    }

    fn lines(text: &str) -> Vec<&str> {
        text.lines().collect()
    }

    #[test]
    fn queue_gauges_carry_every_provider_and_state() {
        let text = Metrics::new().render(&summary(), 1_000);
        let lines = lines(&text);
        for line in [
            r#"purgeq_jobs{provider="qiniu",state="succeeded"} 42"#,
            r#"purgeq_jobs{provider="qiniu",state="queued"} 3"#,
            r#"purgeq_jobs{provider="qiniu",state="failed"} 0"#,
            r#"purgeq_jobs{provider="123pan",state="running"} 0"#,
            "purgeq_oldest_queued_age_seconds 2.5",
        ] {
            assert!(lines.contains(&line), "{line} missing from:\n{text}");
        }
        let jobs = lines
            .iter()
            .filter(|l| l.starts_with("purgeq_jobs{"))
            .count();
        assert_eq!(jobs, Provider::ALL.len() * JobState::ALL.len());
        assert_eq!(lines.last(), Some(&"# EOF"));
    }

    #[test]
    fn the_quota_left_is_whole_again_after_the_reset() {
        let after_reset = crate::provider::qiniu::next_china_midnight(900);
        let text = Metrics::new().render(&summary(), after_reset);
        let line = r#"purgeq_lane_quota_left{provider="qiniu",account="default",action="refresh_url"} 500"#;
        assert!(lines(&text).contains(&line), "{line} missing from:\n{text}");
    }

    #[test]
    fn lanes_report_pauses_and_known_quotas() {
        let text = Metrics::new().render(&summary(), 1_000);
        let lines = lines(&text);
        for line in [
            r#"purgeq_lane_paused{provider="qiniu",account="default",action="refresh_url"} 1"#,
            r#"purgeq_lane_paused{provider="qiniu",account="default",action="prefetch_url"} 0"#,
            r#"purgeq_lane_quota_surplus{provider="qiniu",account="default",action="refresh_url"} 0"#,
            r#"purgeq_lane_quota_day{provider="qiniu",account="default",action="refresh_url"} 500"#,
            r#"purgeq_lane_quota_left{provider="qiniu",account="default",action="refresh_url"} 0"#,
        ] {
            assert!(lines.contains(&line), "{line} missing from:\n{text}");
        }
        assert!(!text.contains(
            r#"purgeq_lane_quota_day{provider="qiniu",account="default",action="prefetch_url"}"#
        ));
    }

    #[test]
    fn an_empty_queue_reads_zero_age() {
        let empty = Summary {
            counts: Vec::new(),
            lanes: Vec::new(),
            oldest_queued_at: None,
        };
        let text = Metrics::new().render(&empty, 1_000);
        assert!(
            lines(&text).contains(&"purgeq_oldest_queued_age_seconds 0.0"),
            "{text}"
        );
    }

    #[test]
    fn calls_and_claims_are_counted_by_route_and_outcome() {
        let metrics = Metrics::new();
        let ms = Duration::from_millis;
        metrics.observe_call(Provider::Qiniu, "default", "refresh", "accepted", ms(20));
        metrics.observe_call(Provider::Qiniu, "default", "refresh", "accepted", ms(30));
        metrics.observe_call(Provider::Qiniu, "default", "prefetch", "quota", ms(10));
        metrics.observe_claim(Provider::Qiniu, "default", "refresh", ms(1));
        let text = metrics.render(&summary(), 1_000);
        let lines = lines(&text);
        for line in [
            "# TYPE purgeq_provider_requests counter",
            r#"purgeq_provider_requests_total{provider="qiniu",account="default",operation="refresh",outcome="accepted"} 2"#,
            r#"purgeq_provider_requests_total{provider="qiniu",account="default",operation="prefetch",outcome="quota"} 1"#,
            "# TYPE purgeq_provider_call_duration_seconds histogram",
            r#"purgeq_provider_call_duration_seconds_count{provider="qiniu",account="default",operation="refresh"} 2"#,
            r#"purgeq_provider_call_duration_seconds_bucket{le="0.04",provider="qiniu",account="default",operation="refresh"} 2"#,
            r#"purgeq_claim_duration_seconds_count{provider="qiniu",account="default",operation="refresh"} 1"#,
        ] {
            assert!(lines.contains(&line), "{line} missing from:\n{text}");
        }
    }
}

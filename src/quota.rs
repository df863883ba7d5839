//! Daily quotas: what is left of a lane's quota now, how much one request may ask for, and
//! whether today's queue fits before the reset. Pure, no I/O.
//!
//! Invariants:
//! - A provider's last reading counts only until the reset that follows it: a reading taken
//!   before the latest reset says nothing about today, and the lane has its whole daily quota.
//! - A request never asks for more than what is known to be left: with N units left and a
//!   batch of more than N, it carries N targets; with none left, nothing is sent until the
//!   reset. Without a reading (a lane never called yet) the batch is the route's full size, and
//!   a refusal is handled as any quota refusal (the lane pauses, no attempt is spent).

use serde::Serialize;

use crate::model::Lane;
use crate::provider::daily_reset;
use crate::store::{Gate, LaneTargets};

/// A lane's last quota reading, as the provider reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    /// The daily allowance.
    pub quota_day: i64,
    /// What was left when the reading was taken.
    pub surplus_day: i64,
    /// When it was taken (ms).
    pub at: i64,
}

impl Reading {
    /// The gate's reading, if the provider ever reported one.
    pub fn of(gate: &Gate) -> Option<Reading> {
        Some(Reading {
            quota_day: gate.quota_day?,
            surplus_day: gate.surplus_day?,
            at: gate.quota_at?,
        })
    }

    /// What is left now: the reading's surplus if no reset came since it was taken
    /// (`reset_after_reading` is the first reset after [`Reading::at`]), else the whole quota.
    pub fn left(&self, now: i64, reset_after_reading: i64) -> i64 {
        if now < reset_after_reading {
            self.surplus_day.max(0)
        } else {
            self.quota_day.max(0)
        }
    }
}

/// How many distinct targets the next request of a lane may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allowance {
    /// Up to this many (`None`: every ready job).
    Send(Option<usize>),
    /// Nothing is left today: wait for the reset without sending.
    Exhausted,
}

/// A lane's per-request `limit` capped by what is known to be `left` of its quota.
pub fn allowance(limit: Option<usize>, left: Option<i64>) -> Allowance {
    match left {
        None => Allowance::Send(limit),
        Some(left) if left <= 0 => Allowance::Exhausted,
        Some(left) => {
            let left = usize::try_from(left).unwrap_or(usize::MAX);
            Allowance::Send(Some(limit.map_or(left, |l| l.min(left))))
        }
    }
}

/// Whether a lane's queue fits what is left of today's quota.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Forecast {
    /// The lane.
    pub lane: Lane,
    /// The daily quota.
    pub quota_day: i64,
    /// Units used today.
    pub used_today: i64,
    /// Units left today.
    pub left: i64,
    /// Distinct targets queued.
    pub queued_targets: i64,
    /// Distinct targets that must wait for the reset (0: the queue fits).
    pub waiting: i64,
    /// The next reset (ms).
    pub reset_at: i64,
    /// What the reset is, for people (`China midnight`).
    pub reset_name: &'static str,
}

impl Forecast {
    /// `fits before the reset`, or `80 targets wait until 16:00 UTC (China midnight)`.
    pub fn message(&self) -> String {
        if self.waiting == 0 {
            return "fits before the reset".to_owned();
        }
        let at = jiff::Timestamp::from_millisecond(self.reset_at).map_or_else(
            |_| self.reset_at.to_string(),
            |t| t.strftime("%H:%M").to_string(),
        );
        let s = if self.waiting == 1 { "" } else { "s" };
        format!(
            "{} target{s} wait until {at} UTC ({})",
            self.waiting, self.reset_name
        )
    }
}

/// When a provider's daily quotas reset, as [`forecast`] needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resets {
    /// The first reset after the reading was taken (ms).
    pub after_reading: i64,
    /// The next reset after now (ms).
    pub next: i64,
    /// What the reset is, for people.
    pub name: &'static str,
}

/// The forecast of `lane` from its last `reading` and its `queued_targets` distinct queued
/// targets.
pub fn forecast(
    lane: Lane,
    reading: Reading,
    queued_targets: i64,
    now: i64,
    resets: Resets,
) -> Forecast {
    let left = reading.left(now, resets.after_reading);
    Forecast {
        lane,
        quota_day: reading.quota_day,
        used_today: (reading.quota_day - left).max(0),
        left,
        queued_targets,
        waiting: (queued_targets - left).max(0),
        reset_at: resets.next,
        reset_name: resets.name,
    }
}

/// The forecast of every lane with a quota reading, from the lanes' gates and their distinct
/// queued targets.
pub fn forecasts(gates: &[Gate], queued: &[LaneTargets], now: i64) -> Vec<Forecast> {
    gates
        .iter()
        .filter_map(|gate| {
            let reading = Reading::of(gate)?;
            let (after_reading, _) = daily_reset(gate.lane.provider, reading.at)?;
            let (next, name) = daily_reset(gate.lane.provider, now)?;
            let targets = queued
                .iter()
                .find(|q| q.lane == gate.lane)
                .map_or(0, |q| q.targets);
            let resets = Resets {
                after_reading,
                next,
                name,
            };
            Some(forecast(gate.lane.clone(), reading, targets, now, resets))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Action, Provider};

    /// 2026-11-23T10:00:00Z, 18:00 in China; the reset is 2026-11-23T16:00:00Z.
    const TEN_UTC: i64 = 1_795_428_000_000;
    const RESET: i64 = 1_795_449_600_000;
    const HOUR: i64 = 3_600_000;

    fn reading(surplus_day: i64, at: i64) -> Reading {
        Reading {
            quota_day: 500,
            surplus_day,
            at,
        }
    }

    #[test]
    fn a_reading_counts_until_the_next_reset() {
        let r = reading(20, TEN_UTC);
        assert_eq!(r.left(TEN_UTC + HOUR, RESET), 20);
        assert_eq!(r.left(RESET - 1, RESET), 20);
        assert_eq!(r.left(RESET, RESET), 500);
        assert_eq!(reading(-3, TEN_UTC).left(TEN_UTC, RESET), 0);
    }

    #[test]
    fn a_request_never_asks_for_more_than_is_left() {
        assert_eq!(allowance(Some(60), None), Allowance::Send(Some(60)));
        assert_eq!(allowance(Some(60), Some(500)), Allowance::Send(Some(60)));
        assert_eq!(allowance(Some(60), Some(20)), Allowance::Send(Some(20)));
        assert_eq!(allowance(None, Some(20)), Allowance::Send(Some(20)));
        assert_eq!(allowance(None, None), Allowance::Send(None));
        assert_eq!(allowance(Some(60), Some(0)), Allowance::Exhausted);
    }

    #[test]
    fn the_forecast_matches_a_hand_computation() {
        // 500 a day; 380 used by 10:00 UTC (120 left); 200 distinct targets queued:
        // 120 go out today and 200 - 120 = 80 wait for 16:00 UTC, China midnight.
        let lane = Lane::new(Provider::Qiniu, Action::RefreshUrl);
        let resets = Resets {
            after_reading: RESET,
            next: RESET,
            name: "China midnight",
        };
        let f = forecast(
            lane.clone(),
            reading(120, TEN_UTC),
            200,
            TEN_UTC + HOUR,
            resets,
        );
        assert_eq!(
            (f.used_today, f.left, f.queued_targets, f.waiting),
            (380, 120, 200, 80)
        );
        assert_eq!(
            f.message(),
            "80 targets wait until 16:00 UTC (China midnight)"
        );
        let f = forecast(lane.clone(), reading(120, TEN_UTC), 120, TEN_UTC, resets);
        assert_eq!(f.message(), "fits before the reset");
        // Yesterday's reading: the whole quota is left today.
        let resets = Resets {
            after_reading: RESET - 24 * HOUR,
            ..resets
        };
        let f = forecast(lane, reading(0, TEN_UTC - 24 * HOUR), 200, TEN_UTC, resets);
        assert_eq!((f.used_today, f.left, f.waiting), (0, 500, 0));
    }
}

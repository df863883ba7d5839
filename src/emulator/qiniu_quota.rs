//! The Qiniu emulator's daily quotas: what is left today (China time), what each day spent and
//! refused, and the spending of one request (all or nothing).

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::qiniu::{DailyQuotas, DayUsage, QiniuConfig, QiniuStats, Reply};
use crate::provider::qiniu::Operation;

/// Every daily quota.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaStats {
    /// URL refreshes.
    pub url_refresh: Allowance,
    /// Directory refreshes.
    pub dir_refresh: Allowance,
    /// Prefetches.
    pub prefetch: Allowance,
}

/// One daily quota.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allowance {
    /// The daily allowance.
    pub quota: u64,
    /// What is left today.
    pub surplus: u64,
}

/// The Qiniu side's mutable state.
#[derive(Debug)]
pub struct QiniuState {
    /// The China-time day the surpluses belong to.
    day: jiff::civil::Date,
    /// What is left of each daily quota.
    surplus: DailyQuotas,
    /// What the emulator saw.
    pub(super) stats: QiniuStats,
    /// The CDN tasks of accepted requests.
    pub(super) tasks: super::qiniu_list::Tasks,
}

impl QiniuState {
    pub(crate) fn new(config: &QiniuConfig) -> Self {
        QiniuState {
            day: china_today(),
            surplus: config.quotas,
            stats: QiniuStats::default(),
            tasks: super::qiniu_list::Tasks::new(config),
        }
    }

    pub(crate) fn reset_quota(&mut self, config: &QiniuConfig) {
        self.day = china_today();
        self.surplus = config.quotas;
    }

    /// Today's usage counters.
    pub(super) fn today(&mut self) -> &mut DayUsage {
        self.stats.days.entry(self.day.to_string()).or_default()
    }

    /// Refills the quotas when the China-time day has turned since the last request.
    pub(super) fn roll_day(&mut self, config: &QiniuConfig) {
        if china_today() != self.day {
            self.reset_quota(config);
        }
    }

    pub(crate) fn stats(&mut self, config: &QiniuConfig) -> QiniuStats {
        self.roll_day(config);
        let allowance = |quota, surplus| Allowance { quota, surplus };
        QiniuStats {
            quota: QuotaStats {
                url_refresh: allowance(config.quotas.url_refresh, self.surplus.url_refresh),
                dir_refresh: allowance(config.quotas.dir_refresh, self.surplus.dir_refresh),
                prefetch: allowance(config.quotas.prefetch, self.surplus.prefetch),
            },
            ..self.stats.clone()
        }
    }

    /// The answer's quota fields for `op`.
    pub(super) fn quota_fields(&self, config: &QiniuConfig, op: Operation) -> Value {
        match op {
            Operation::Refresh => json!({
                "urlQuotaDay": config.quotas.url_refresh,
                "urlSurplusDay": self.surplus.url_refresh,
                "dirQuotaDay": config.quotas.dir_refresh,
                "dirSurplusDay": self.surplus.dir_refresh,
            }),
            Operation::Prefetch => json!({
                "quotaDay": config.quotas.prefetch,
                "surplusDay": self.surplus.prefetch,
            }),
        }
    }
}

/// Today's date in China (UTC+8), when Qiniu's daily quotas turn over.
fn china_today() -> jiff::civil::Date {
    china_date(jiff::Timestamp::now())
}

fn china_date(at: jiff::Timestamp) -> jiff::civil::Date {
    at.to_zoned(jiff::tz::TimeZone::fixed(jiff::tz::offset(8)))
        .date()
}

/// Spends the quota for a request, or says which quota is short (spending nothing).
pub(super) fn spend_quota(
    qiniu: &mut QiniuState,
    config: &QiniuConfig,
    op: Operation,
    urls: &[String],
    dirs: &[String],
) -> Option<Reply> {
    let n = |list: &[String]| u64::try_from(list.len()).unwrap_or(u64::MAX);
    let short = match op {
        Operation::Prefetch if n(urls) > qiniu.surplus.prefetch => {
            Some((400_033, "prefetch url limit error"))
        }
        Operation::Refresh if n(urls) > qiniu.surplus.url_refresh => {
            Some((400_034, "refresh url limit error"))
        }
        Operation::Refresh if n(dirs) > qiniu.surplus.dir_refresh => {
            Some((400_035, "refresh dir limit error"))
        }
        _ => None,
    };
    if let Some((code, error)) = short {
        qiniu.today().quota_refused += 1;
        return Some(Reply::coded(code, error, qiniu.quota_fields(config, op)));
    }
    match op {
        Operation::Prefetch => {
            qiniu.surplus.prefetch -= n(urls);
            qiniu.today().prefetch += n(urls);
        }
        Operation::Refresh => {
            qiniu.surplus.url_refresh -= n(urls);
            qiniu.surplus.dir_refresh -= n(dirs);
            let today = qiniu.today();
            today.url_refresh += n(urls);
            today.dir_refresh += n(dirs);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_refill_when_the_china_day_turns() {
        let at: jiff::Timestamp = "2024-01-01T15:59:59Z".parse().unwrap();
        assert_eq!(
            china_date(at),
            jiff::civil::date(2023, 12, 31).tomorrow().unwrap()
        );
        let at: jiff::Timestamp = "2024-01-01T16:00:00Z".parse().unwrap();
        assert_eq!(china_date(at), jiff::civil::date(2024, 1, 2));

        let config = QiniuConfig::default();
        let mut state = QiniuState::new(&config);
        state.surplus.url_refresh = 0;
        state.day = state.day.yesterday().unwrap();
        state.roll_day(&config);
        assert_eq!(state.surplus.url_refresh, config.quotas.url_refresh);
    }
}

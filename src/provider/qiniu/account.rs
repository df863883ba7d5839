//! One Qiniu account behind [`Account`]: its two routes (refresh, prefetch), its pacer and the
//! daily quota reset at China midnight.
//!
//! Qiniu signs every request with the account's keys, so a call needs no token. Accepted
//! purges are confirmed through the task lists (`list.rs`).

use super::{MAX_REFRESH_DIRS, MAX_REFRESH_URLS, Operation, QiniuClient};
use crate::model::{Action, DEFAULT_ACCOUNT, Provider};
use crate::pacer::Pacer;
use crate::planner::Batch;
use crate::provider::{
    Account, AccountBase, CallFuture, CallReport, ConfirmQuery, ConfirmReport, Confirmer,
    Credential, Route,
};
use crate::store::Store;

/// How one Qiniu account is driven: its name, request sizes and pacing.
#[derive(Debug, Clone, PartialEq)]
pub struct QiniuSettings {
    /// The account's name, as jobs carry it.
    pub account: String,
    /// URLs per refresh or prefetch request.
    pub batch_urls: usize,
    /// Directories per refresh request.
    pub batch_dirs: usize,
    /// Targets per second (0: unlimited).
    pub targets_per_sec: f64,
    /// Requests per second (0: unlimited).
    pub requests_per_sec: f64,
    /// Directory escalation: at least this many distinct queued URLs under one directory are
    /// served by one refresh of it when the URL quota cannot cover today's queue and the
    /// directory quota can (`escalate_dir_after` in the config file,
    /// `PURGEQ_QINIU_ESCALATE_DIR_AFTER` for the default account). `None`: never.
    pub escalate_dir_after: Option<u32>,
}

impl Default for QiniuSettings {
    /// The default account at the documented limits.
    fn default() -> Self {
        QiniuSettings {
            account: DEFAULT_ACCOUNT.to_owned(),
            batch_urls: MAX_REFRESH_URLS,
            batch_dirs: MAX_REFRESH_DIRS,
            targets_per_sec: f64::from(super::RATE_TARGETS_PER_SEC),
            requests_per_sec: f64::from(super::RATE_REQUESTS_PER_SEC),
            escalate_dir_after: None,
        }
    }
}

/// A Qiniu account: a client, its routes and its pacer.
#[derive(Debug)]
pub struct QiniuAccount {
    client: QiniuClient,
    base: AccountBase,
    escalate_dir_after: Option<u32>,
}

impl QiniuAccount {
    /// An account sending through `client` as `settings` say.
    pub fn new(client: QiniuClient, settings: QiniuSettings) -> Self {
        let urls = Some(settings.batch_urls);
        QiniuAccount {
            client,
            base: AccountBase {
                routes: vec![
                    Route {
                        name: "qiniu/refresh",
                        operation: Operation::Refresh.as_str(),
                        lanes: vec![
                            (Action::RefreshUrl, urls),
                            (Action::RefreshDir, Some(settings.batch_dirs)),
                        ],
                        account_wide: false,
                        coalesce: None,
                    },
                    Route {
                        name: "qiniu/prefetch",
                        operation: Operation::Prefetch.as_str(),
                        lanes: vec![(Action::PrefetchUrl, urls)],
                        account_wide: false,
                        coalesce: None,
                    },
                ],
                pacer: Pacer::new(settings.targets_per_sec, settings.requests_per_sec),
                account: settings.account,
            },
            escalate_dir_after: settings.escalate_dir_after,
        }
    }
}

impl Account for QiniuAccount {
    fn provider(&self) -> Provider {
        Provider::Qiniu
    }

    fn base(&self) -> &AccountBase {
        &self.base
    }

    fn prepare<'a>(
        &'a self,
        _store: &'a Store,
        _renew: bool,
    ) -> CallFuture<'a, Result<Credential, CallReport>> {
        Box::pin(async { Ok(Credential::Keys) })
    }

    fn send<'a>(
        &'a self,
        route: &'a Route,
        batch: &'a Batch,
        _credential: &'a Credential,
    ) -> CallFuture<'a, CallReport> {
        Box::pin(async move {
            if route.operation == Operation::Prefetch.as_str() {
                self.client
                    .prefetch(&batch.targets_of(Action::PrefetchUrl))
                    .await
            } else {
                self.client
                    .refresh(
                        &batch.targets_of(Action::RefreshUrl),
                        &batch.targets_of(Action::RefreshDir),
                    )
                    .await
            }
        })
    }

    fn quota_reset_at(&self, now: i64) -> Option<i64> {
        Some(next_china_midnight(now))
    }

    fn escalate_dir_after(&self) -> Option<u32> {
        self.escalate_dir_after
    }

    fn confirmer(&self) -> Option<&dyn Confirmer> {
        Some(self)
    }
}

impl Confirmer for QiniuAccount {
    fn operation(&self, action: Action) -> &'static str {
        match action {
            Action::PrefetchUrl => "prefetch_list",
            _ => "refresh_list",
        }
    }

    fn query<'a>(&'a self, query: &'a ConfirmQuery) -> CallFuture<'a, ConfirmReport> {
        Box::pin(self.client.list(query))
    }
}

/// The next midnight in China (UTC+8) after `now` (ms), when Qiniu's daily quotas reset.
pub fn next_china_midnight(now: i64) -> i64 {
    const DAY: i64 = 86_400_000;
    const OFFSET: i64 = 8 * 3_600_000;
    ((now + OFFSET).div_euclid(DAY) + 1) * DAY - OFFSET
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn china_midnight() {
        // 2026-11-23T05:00:00Z is 13:00 in China; the reset is 2026-11-23T16:00:00Z.
        let now = 1_795_410_000_000;
        assert_eq!(next_china_midnight(now), 1_795_449_600_000);
        assert_eq!(
            next_china_midnight(1_795_449_600_000),
            1_795_449_600_000 + 86_400_000
        );
    }
}

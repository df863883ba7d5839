//! One 123pan account behind [`Account`]: its one account-wide route, its pacer, and its access
//! token, cached in the store for every process that shares it.
//!
//! Invariants:
//! - A cached token is used while it is fresh ([`needs_renewal`]); a new one is cached before it
//!   is used, so processes sharing a store do not each ask for one.
//! - A failure to cache a token is not a failure to send: the token serves this call only.

use std::time::Duration;

use tracing::{info, warn};

use super::{Pan123Client, REQUESTS_PER_SEC, needs_renewal};
use crate::clock;
use crate::model::{Action, DEFAULT_ACCOUNT, Provider};
use crate::pacer::Pacer;
use crate::planner::Batch;
use crate::provider::{Account, AccountBase, CallFuture, CallReport, Coalesce, Credential, Route};
use crate::seal;
use crate::store::{CachedToken, Store};

/// How one 123pan account is driven: its name and pacing.
#[derive(Debug, Clone, PartialEq)]
pub struct Pan123Settings {
    /// The account's name, as jobs carry it.
    pub account: String,
    /// Requests per second (0: unlimited).
    pub requests_per_sec: f64,
    /// Every call refreshes the whole account, so a burst of jobs is held until it settles
    /// and then costs one call (`--pan123-settle`, `--pan123-max-delay`).
    pub coalesce: Coalesce,
}

/// How long a burst of 123pan jobs may keep arriving before one refresh serves it.
pub const DEFAULT_SETTLE: Duration = Duration::from_secs(3);
/// The longest the first job of a burst is held, however long the burst lasts.
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(30);

impl Default for Pan123Settings {
    /// The default account at the documented limit.
    fn default() -> Self {
        Pan123Settings {
            account: DEFAULT_ACCOUNT.to_owned(),
            requests_per_sec: REQUESTS_PER_SEC,
            coalesce: Coalesce {
                settle: DEFAULT_SETTLE,
                max_delay: DEFAULT_MAX_DELAY,
            },
        }
    }
}

/// A 123pan account: a client, its route and its pacer.
#[derive(Debug)]
pub struct Pan123Account {
    client: Pan123Client,
    base: AccountBase,
}

impl Pan123Account {
    /// An account sending through `client` as `settings` say.
    pub fn new(client: Pan123Client, settings: Pan123Settings) -> Self {
        Pan123Account {
            client,
            base: AccountBase {
                routes: vec![Route {
                    name: "123pan/refresh_all",
                    operation: "refresh_all",
                    // One call refreshes the whole account: it serves every ready job.
                    lanes: vec![(Action::RefreshAll, None)],
                    account_wide: true,
                    coalesce: Some(settings.coalesce),
                }],
                pacer: Pacer::new(0.0, settings.requests_per_sec),
                account: settings.account,
            },
        }
    }

    async fn token(&self, store: &Store, renew: bool) -> Result<Credential, CallReport> {
        let now = clock::now_ms();
        let secret = self.client.client_secret();
        let cached = match store.token(Provider::Pan123, self.account()).await {
            // Stored sealed; a value that does not open (an old plain token) is renewed.
            Ok(cached) => cached.and_then(|c| {
                Some(CachedToken {
                    token: seal::open(secret, &c.token)?,
                    ..c
                })
            }),
            Err(e) => {
                warn!(error = %e, "could not read the cached access token");
                None
            }
        };
        if let Some(cached) = cached
            && !renew
            && !needs_renewal(cached.obtained_at, cached.expires_at, now)
        {
            return Ok(Credential::Token(cached.token));
        }
        let fresh = self.client.access_token().await.map_err(|report| *report)?;
        info!(expires_at = %clock::rfc3339(fresh.expires_at), "obtained a new 123pan access token");
        let cached = CachedToken {
            token: fresh.token,
            expires_at: fresh.expires_at,
            obtained_at: now,
        };
        let saved = match seal::seal(secret, &cached.token) {
            Some(token) => {
                let sealed = CachedToken {
                    token,
                    expires_at: cached.expires_at,
                    obtained_at: cached.obtained_at,
                };
                store
                    .save_token(Provider::Pan123, self.account(), &sealed)
                    .await
                    .map_err(|e| e.to_string())
            }
            None => Err("no random nonce to seal it".to_owned()),
        };
        if let Err(e) = saved {
            warn!(error = %e, "could not cache the access token; it is used for this call only");
        }
        Ok(Credential::Token(cached.token))
    }
}

impl Account for Pan123Account {
    fn provider(&self) -> Provider {
        Provider::Pan123
    }

    fn base(&self) -> &AccountBase {
        &self.base
    }

    fn prepare<'a>(
        &'a self,
        store: &'a Store,
        renew: bool,
    ) -> CallFuture<'a, Result<Credential, CallReport>> {
        Box::pin(self.token(store, renew))
    }

    fn send<'a>(
        &'a self,
        _route: &'a Route,
        _batch: &'a Batch,
        credential: &'a Credential,
    ) -> CallFuture<'a, CallReport> {
        Box::pin(async move {
            match credential {
                Credential::Token(token) => self.client.refresh(token).await,
                Credential::Keys => CallReport::transient("123pan calls need an access token"),
            }
        })
    }

    fn quota_reset_at(&self, _now: i64) -> Option<i64> {
        // 123pan has no daily quota; its lanes never pause for one.
        None
    }
}

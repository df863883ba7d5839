//! Injected faults: what can go wrong between a client and a CDN API, on demand.
//!
//! A [`FaultPlan`] says which requests fail and how: the next N purge requests (scripted), and/or
//! each purge request with a probability drawn from a seeded generator (random, reproducible).
//! Purge requests are Qiniu's refresh and prefetch calls and 123pan's cache refresh calls; they
//! share one script and one generator. 123pan's token endpoint has a script of its own
//! ([`FaultPlan::token_fail_next`]) and never draws random faults, so a random plan leaves the
//! token renewal alone. The emulator's own `/_emulator/*` endpoints never fail.
//!
//! Each provider renders a kind in its own format: the variant docs say how, Qiniu first, then
//! 123pan.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The default delay of the [`FaultKind::Slow`] fault: longer than any sane client timeout.
pub const DEFAULT_SLOW_DELAY: Duration = Duration::from_secs(60);

/// How a request fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// HTTP 503: an overloaded or failing front end. Qiniu: a JSON body with code 500000.
    /// 123pan: an HTML body, as a front end in front of the API would send.
    #[serde(rename = "http-503")]
    Http503,
    /// A provider server error code. Qiniu: 500002, 500005 or 500010, drawn in turn, under
    /// HTTP 500. 123pan: HTTP 200 with code 1, "internal error".
    ServerError,
    /// Qiniu: the daily quota of the request's endpoint is reported used up (400033/400034/
    /// 400035). 123pan, which has no quota: HTTP 429 with code 429.
    Quota,
    /// HTTP 429 with `Retry-After: 1`: a gateway's rate limit. Qiniu: no body code. 123pan:
    /// code 429.
    Throttle,
    /// A per-user QPS limit. Qiniu: HTTP 403 with code 403024. 123pan: HTTP 429 with code 429.
    Qps,
    /// The answer comes only after the slow delay (default 60 s): beyond a client timeout.
    Slow,
    /// The connection is dropped before the request is looked at: nothing happens.
    DropBefore,
    /// The request is processed (quota spent, targets purged, request id issued), then the
    /// connection is dropped without an answer: the client can't know it worked.
    DropAfter,
    /// HTTP 200 with a body that is not JSON (a truncated answer).
    Garbage,
    /// Qiniu: the first target is refused as invalid (400031); nothing is processed. 123pan,
    /// which has no targets: the refresh is refused with HTTP 401 and code 401 "token invalid"
    /// (the token stays valid: a renewal and a retry succeed), and a token request with HTTP 200
    /// and code 401 "invalid client credentials".
    Invalid,
}

impl FaultKind {
    /// Every kind, in declaration order.
    pub const ALL: &'static [FaultKind] = &[
        FaultKind::Http503,
        FaultKind::ServerError,
        FaultKind::Quota,
        FaultKind::Throttle,
        FaultKind::Qps,
        FaultKind::Slow,
        FaultKind::DropBefore,
        FaultKind::DropAfter,
        FaultKind::Garbage,
        FaultKind::Invalid,
    ];

    /// The name used on the command line, in JSON and in stats.
    pub const fn as_str(self) -> &'static str {
        match self {
            FaultKind::Http503 => "http-503",
            FaultKind::ServerError => "server-error",
            FaultKind::Quota => "quota",
            FaultKind::Throttle => "throttle",
            FaultKind::Qps => "qps",
            FaultKind::Slow => "slow",
            FaultKind::DropBefore => "drop-before",
            FaultKind::DropAfter => "drop-after",
            FaultKind::Garbage => "garbage",
            FaultKind::Invalid => "invalid",
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl clap::ValueEnum for FaultKind {
    fn value_variants<'a>() -> &'a [Self] {
        FaultKind::ALL
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.as_str()))
    }
}

/// A fault name that is not one of [`FaultKind::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown fault kind {0:?} (expected one of: http-503, server-error, quota, throttle, qps, slow, drop-before, drop-after, garbage, invalid)"
)]
pub struct UnknownFaultKind(pub String);

impl FromStr for FaultKind {
    type Err = UnknownFaultKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FaultKind::ALL
            .iter()
            .copied()
            .find(|k| k.as_str() == s.trim())
            .ok_or_else(|| UnknownFaultKind(s.to_owned()))
    }
}

/// "The next `count` purge requests fail with `kind`."
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScriptedFaults {
    /// How many requests still fail.
    pub count: u32,
    /// How they fail.
    pub kind: FaultKind,
}

/// "Each purge request fails with probability `rate`, with a kind drawn uniformly from `kinds`."
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RandomFaults {
    /// The probability, in `[0, 1]`, that a request fails.
    pub rate: f64,
    /// The generator's seed: the same seed and the same requests give the same faults.
    pub seed: u64,
    /// The kinds to draw from; empty means every kind but `slow`.
    #[serde(default)]
    pub kinds: Vec<FaultKind>,
}

/// Which requests fail and how. The default injects nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FaultPlan {
    /// Scripted faults; they are used up before any random fault is drawn.
    pub fail_next: Option<ScriptedFaults>,
    /// Random faults.
    pub random: Option<RandomFaults>,
    /// Scripted faults for 123pan's token endpoint (`POST /api/v1/access_token`) only: renewal
    /// failures. Every kind applies; `drop-after` issues a token that never reaches the client.
    pub token_fail_next: Option<ScriptedFaults>,
    /// Scripted faults for Qiniu's task lists (`/v2/tune/refresh/list`, `/prefetch/list`)
    /// only; the random faults apply to them as to every purge request.
    pub list_fail_next: Option<ScriptedFaults>,
    /// How long the [`FaultKind::Slow`] fault waits before answering, in milliseconds.
    pub slow_delay_ms: u64,
}

impl Default for FaultPlan {
    fn default() -> Self {
        FaultPlan {
            fail_next: None,
            random: None,
            token_fail_next: None,
            list_fail_next: None,
            slow_delay_ms: u64::try_from(DEFAULT_SLOW_DELAY.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

impl FaultPlan {
    /// Checks that the rate is a probability.
    pub fn validate(&self) -> Result<(), String> {
        match &self.random {
            Some(r) if !(0.0..=1.0).contains(&r.rate) => {
                Err(format!("fault rate {} is not within [0, 1]", r.rate))
            }
            _ => Ok(()),
        }
    }

    /// The slow fault's delay.
    pub fn slow_delay(&self) -> Duration {
        Duration::from_millis(self.slow_delay_ms)
    }
}

/// A plan in force: what is left of the script, and the random generator's state.
#[derive(Debug)]
pub(crate) struct Injector {
    plan: FaultPlan,
    rng: fastrand::Rng,
    /// Turns for [`FaultKind::ServerError`]'s code, so every code shows up.
    server_error_turn: usize,
}

impl Injector {
    pub(crate) fn new(plan: FaultPlan) -> Self {
        let seed = plan.random.as_ref().map_or(0, |r| r.seed);
        Injector {
            plan,
            rng: fastrand::Rng::with_seed(seed),
            server_error_turn: 0,
        }
    }

    pub(crate) fn plan(&self) -> &FaultPlan {
        &self.plan
    }

    /// Draws the fault, if any, for the next purge request.
    pub(crate) fn draw(&mut self) -> Option<FaultKind> {
        if let Some(script) = &mut self.plan.fail_next
            && script.count > 0
        {
            script.count -= 1;
            return Some(script.kind);
        }
        self.draw_random()
    }

    /// Draws the fault, if any, for the next task-list request: its own script, then the
    /// random faults.
    pub(crate) fn draw_list(&mut self) -> Option<FaultKind> {
        if let Some(script) = &mut self.plan.list_fail_next
            && script.count > 0
        {
            script.count -= 1;
            return Some(script.kind);
        }
        self.draw_random()
    }

    fn draw_random(&mut self) -> Option<FaultKind> {
        let random = self.plan.random.as_ref()?;
        // N.B. draw the probability even when the rate is 0 or 1, so a seed gives the same
        // sequence whatever the rate.
        let hit = self.rng.f64() < random.rate;
        let kinds: &[FaultKind] = if random.kinds.is_empty() {
            FaultKind::ALL
        } else {
            &random.kinds
        };
        let pick = self.rng.usize(..kinds.len());
        let kind = kinds[pick];
        // `slow` is opt-in: a minute-long stall in a default mix would surprise.
        (hit && !(random.kinds.is_empty() && kind == FaultKind::Slow)).then_some(kind)
    }

    /// Draws the fault, if any, for the next 123pan token request: scripted only.
    pub(crate) fn draw_token(&mut self) -> Option<FaultKind> {
        let script = self.plan.token_fail_next.as_mut()?;
        if script.count == 0 {
            return None;
        }
        script.count -= 1;
        Some(script.kind)
    }

    /// The next provider server-error code, in turn.
    pub(crate) fn next_server_error(&mut self, codes: &[i64]) -> i64 {
        let code = codes[self.server_error_turn % codes.len()];
        self.server_error_turn += 1;
        code
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for k in FaultKind::ALL {
            assert_eq!(k.as_str().parse::<FaultKind>(), Ok(*k));
            let json = serde_json::to_string(k).unwrap();
            assert_eq!(json, format!("\"{}\"", k.as_str()));
        }
        assert!(
            "nope"
                .parse::<FaultKind>()
                .unwrap_err()
                .to_string()
                .contains("drop-after")
        );
    }

    #[test]
    fn scripted_faults_come_first_and_run_out() {
        let mut inj = Injector::new(FaultPlan {
            fail_next: Some(ScriptedFaults {
                count: 2,
                kind: FaultKind::Garbage,
            }),
            ..FaultPlan::default()
        });
        assert_eq!(inj.draw(), Some(FaultKind::Garbage));
        assert_eq!(inj.draw(), Some(FaultKind::Garbage));
        assert_eq!(inj.draw(), None);
    }

    #[test]
    fn token_faults_have_their_own_script() {
        let mut inj = Injector::new(FaultPlan {
            fail_next: Some(ScriptedFaults {
                count: 1,
                kind: FaultKind::Garbage,
            }),
            random: Some(RandomFaults {
                rate: 1.0,
                seed: 1,
                kinds: vec![FaultKind::Qps],
            }),
            token_fail_next: Some(ScriptedFaults {
                count: 1,
                kind: FaultKind::Http503,
            }),
            ..FaultPlan::default()
        });
        assert_eq!(inj.draw_token(), Some(FaultKind::Http503));
        assert_eq!(
            inj.draw_token(),
            None,
            "random faults never reach the token endpoint"
        );
        assert_eq!(inj.draw(), Some(FaultKind::Garbage));
        assert_eq!(inj.draw(), Some(FaultKind::Qps));
    }

    #[test]
    fn random_faults_are_reproducible() {
        let plan = FaultPlan {
            random: Some(RandomFaults {
                rate: 0.5,
                seed: 7,
                kinds: vec![FaultKind::Http503, FaultKind::Quota],
            }),
            ..FaultPlan::default()
        };
        let run = |plan: &FaultPlan| {
            let mut inj = Injector::new(plan.clone());
            (0..200).map(|_| inj.draw()).collect::<Vec<_>>()
        };
        let first = run(&plan);
        assert_eq!(first, run(&plan));
        let hits = first.iter().flatten().count();
        assert!((60..140).contains(&hits), "{hits}");
        assert!(
            first.contains(&Some(FaultKind::Http503)) && first.contains(&Some(FaultKind::Quota))
        );
    }

    #[test]
    fn plan_json_shape() {
        let plan: FaultPlan = serde_json::from_str(
            r#"{"fail_next":{"count":1,"kind":"drop-after"},"random":{"rate":0.1,"seed":3,"kinds":["slow"]},"slow_delay_ms":50}"#,
        )
        .unwrap();
        assert_eq!(
            plan.fail_next,
            Some(ScriptedFaults {
                count: 1,
                kind: FaultKind::DropAfter
            })
        );
        assert_eq!(plan.slow_delay(), Duration::from_millis(50));
        assert_eq!(plan.token_fail_next, None);
        let token: FaultPlan =
            serde_json::from_str(r#"{"token_fail_next":{"count":2,"kind":"http-503"}}"#).unwrap();
        assert_eq!(
            token.token_fail_next,
            Some(ScriptedFaults {
                count: 2,
                kind: FaultKind::Http503
            })
        );
        let empty: FaultPlan = serde_json::from_str("{}").unwrap();
        assert_eq!(empty, FaultPlan::default());
        assert!(
            FaultPlan {
                random: Some(RandomFaults {
                    rate: 1.5,
                    seed: 0,
                    kinds: vec![]
                }),
                ..empty
            }
            .validate()
            .is_err()
        );
    }
}

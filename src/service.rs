//! The systemd notify protocol (`Type=notify`): readiness, status lines, the watchdog, stopping.
//!
//! Every message is a no-op outside systemd (no `NOTIFY_SOCKET`). The watchdog is fed from the
//! worker's own loops, never from a timer of its own: each route loop reports a heartbeat, and
//! `WATCHDOG=1` goes out only while every loop has beaten within the watchdog interval, so one
//! wedged loop is enough for systemd to restart the service.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sd_notify::NotifyState;

/// Talks to the service manager.
#[derive(Debug)]
pub struct Notifier {
    watchdog: Option<Duration>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    status: String,
    beats: HashMap<String, Instant>,
    fed: Option<Instant>,
}

fn send(state: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::debug!(error = %e, "could not notify the service manager");
    }
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET` and `WATCHDOG_USEC` from the environment.
    pub fn from_env() -> Self {
        Notifier {
            watchdog: sd_notify::watchdog_enabled(),
            state: Mutex::new(State::default()),
        }
    }

    /// How often loops must beat: half the watchdog interval, if systemd asked for one.
    pub fn heartbeat_every(&self) -> Option<Duration> {
        self.watchdog.map(|w| w / 2)
    }

    /// `READY=1`: the database is open and migrated.
    pub fn ready(&self) {
        send(&[NotifyState::Ready]);
    }

    /// `STOPPING=1`.
    pub fn stopping(&self) {
        send(&[NotifyState::Stopping]);
    }

    /// `STATUS=...`, sent only when it changed.
    pub fn status(&self, text: &str) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        if state.status != text {
            state.status = text.to_owned();
            send(&[NotifyState::Status(text)]);
        }
    }

    /// Registers a loop that must keep beating; call before the loop starts.
    pub fn register(&self, name: &str) {
        if let Ok(mut state) = self.state.lock() {
            state.beats.insert(name.to_owned(), Instant::now());
        }
    }

    /// A loop says it is alive. Feeds the watchdog when every registered loop beat recently.
    pub fn beat(&self, name: &str) {
        let Some(interval) = self.watchdog else {
            return;
        };
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let now = Instant::now();
        match state.beats.get_mut(name) {
            Some(beat) => *beat = now,
            None => {
                state.beats.insert(name.to_owned(), now);
            }
        }
        let all_alive = state
            .beats
            .values()
            .all(|t| now.duration_since(*t) < interval);
        let due = state
            .fed
            .is_none_or(|t| now.duration_since(t) >= interval / 4);
        if all_alive && due {
            state.fed = Some(now);
            send(&[NotifyState::Watchdog]);
        }
    }
}

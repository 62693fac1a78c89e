//! systemd integration: READY once ports are up, STOPPING on the way out, and WATCHDOG pings
//! only while every critical task is alive.
//!
//! A ping from a timer alone would prove nothing but that the timer runs. Instead each critical
//! task (radio ports, channel router, line drivers) owns a [`Heartbeat`] it beats from its own
//! select loop at least every [`BEAT_PERIOD`]. The pinger sends `WATCHDOG=1` only when every
//! heartbeat is fresh; a wedged task stops the pings and systemd restarts the service, whose
//! `ExecStopPost=roipd safe-off` then unkeys the radios.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

use super::clock;

/// How often tasks beat. The staleness limit is a few of these.
pub const BEAT_PERIOD: Duration = Duration::from_millis(500);
const STALE_AFTER: Duration = Duration::from_secs(3);

/// Tells the watchdog that one task's loop is still turning.
#[derive(Clone)]
pub struct Heartbeat {
    base: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Heartbeat {
    pub fn beat(&self) {
        let ms = clock::now().saturating_duration_since(self.base).as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn age(&self, now: Instant) -> Duration {
        let now_ms = now.saturating_duration_since(self.base).as_millis() as u64;
        Duration::from_millis(now_ms.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// The set of critical tasks the watchdog vouches for.
#[derive(Clone)]
pub struct Watchdog {
    base: Instant,
    beats: Arc<Mutex<Vec<(String, Heartbeat)>>>,
}

impl Default for Watchdog {
    fn default() -> Self {
        Self { base: clock::now(), beats: Default::default() }
    }
}

impl Watchdog {
    /// A heartbeat for the task `name`, fresh from now on.
    pub fn register(&self, name: &str) -> Heartbeat {
        let hb = Heartbeat { base: self.base, last_ms: Arc::new(AtomicU64::new(0)) };
        hb.beat();
        self.beats.lock().unwrap_or_else(|p| p.into_inner()).push((name.to_string(), hb.clone()));
        hb
    }

    /// Names of tasks whose heartbeat is older than the staleness limit.
    pub fn stale(&self) -> Vec<String> {
        let now = clock::now();
        let beats = self.beats.lock().unwrap_or_else(|p| p.into_inner());
        beats.iter().filter(|(_, hb)| hb.age(now) > STALE_AFTER).map(|(n, _)| n.clone()).collect()
    }

    /// Ping systemd at half its watchdog interval while every task is alive, from a thread of
    /// its own so that a wedged async runtime cannot hide behind a still-running pinger.
    /// Without a watchdog configured (not under systemd, no WatchdogSec) no thread is started.
    pub fn spawn(self, cancel: CancellationToken) -> Option<std::thread::JoinHandle<()>> {
        let interval = sd_notify::watchdog_enabled()?;
        let period = (interval / 2).max(Duration::from_millis(100));
        let thread = std::thread::Builder::new().name("watchdog".into()).spawn(move || {
            let mut withholding = false;
            while !cancel.is_cancelled() {
                let stale = self.stale();
                if stale.is_empty() {
                    if withholding {
                        warn!("all tasks alive again; watchdog pings resume");
                        withholding = false;
                    }
                    notify(&[NotifyState::Watchdog]);
                } else if !withholding {
                    error!(tasks = ?stale, "task loop stuck; withholding watchdog pings so systemd restarts roipd");
                    withholding = true;
                }
                std::thread::sleep(period);
            }
        });
        thread.ok()
    }
}

/// Send a state to systemd if NOTIFY_SOCKET is set; failures are logged, never fatal.
pub fn notify(state: &[NotifyState]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(state) {
        debug!(error = %e, "sd_notify failed");
    }
}

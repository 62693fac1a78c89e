//! The reconnect policy the uplinks share (roipd hub, Janus, the floor client over MQTT): after
//! a lost or failed session, back off exponentially with jitter, report `Down` once per loss (not
//! once per failed retry), and start over from the shortest delay once a session has come up.

use std::time::Duration;

use tracing::{debug, warn};

use crate::fleet::backoff::Backoff;

pub(crate) struct Reconnect {
    /// Names the link in the log: "uplink", "Janus uplink", "floor client".
    what: &'static str,
    backoff: Backoff,
    down_reported: bool,
}

impl Reconnect {
    pub(crate) fn new(what: &'static str, min: Duration, max: Duration) -> Self {
        Self { what, backoff: Backoff::new(min, max), down_reported: false }
    }

    /// A session attempt ended with `reason` (`was_up`: it had come up first). Returns whether
    /// to report `Down` now and how long to wait before the next attempt; `jitter` in 0..1.
    pub(crate) fn lost(&mut self, was_up: bool, reason: &str, jitter: f64) -> (bool, Duration) {
        if was_up {
            self.backoff.reset();
            self.down_reported = false;
        }
        let delay = self.backoff.next_delay(jitter);
        let retry_in_ms = delay.as_millis() as u64;
        let report = self.down();
        if report {
            warn!(%reason, retry_in_ms, "{} down", self.what);
        } else {
            debug!(%reason, retry_in_ms, "{} still down", self.what);
        }
        (report, delay)
    }

    /// The link went down while its session goes on (the floor hub left the broker, or
    /// refused us): whether to report `Down` now, once per loss like [`Reconnect::lost`].
    pub(crate) fn down(&mut self) -> bool {
        !std::mem::replace(&mut self.down_reported, true)
    }

    /// The link is up (again) within its session: its next loss is reported.
    pub(crate) fn up(&mut self) {
        self.down_reported = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_down_per_loss_and_backoff_restarts_after_up() {
        let (min, max) = (Duration::from_millis(500), Duration::from_secs(5));
        let mut r = Reconnect::new("uplink", min, max);
        // Never up: the first failure reports, the retries do not, the delay grows to the cap.
        let mut delays = Vec::new();
        for i in 0..8 {
            let (report, delay) = r.lost(false, "refused", 1.0);
            assert_eq!(report, i == 0);
            delays.push(delay);
        }
        assert!(delays.windows(2).all(|w| w[0] <= w[1]), "{delays:?}");
        assert_eq!(*delays.last().unwrap(), max);
        // Up, then lost: reported again, from the shortest delay.
        let (report, delay) = r.lost(true, "socket closed", 1.0);
        assert!(report);
        assert_eq!(delay, delays[0]);
        assert!(delay <= min * 2);
    }

    #[test]
    fn a_loss_within_a_session_is_reported_once_and_counts_for_the_next_retry() {
        let (min, max) = (Duration::from_millis(500), Duration::from_secs(5));
        let mut r = Reconnect::new("floor client", min, max);
        r.up();
        assert!(r.down(), "the far end left: reported");
        assert!(!r.down(), "and only once");
        // The session ends too, without having come up again: no second Down.
        let (report, _) = r.lost(false, "broker gone", 1.0);
        assert!(!report);
        // Up again within the session: the next loss is reported.
        r.up();
        let (report, _) = r.lost(false, "broker gone", 1.0);
        assert!(report);
    }
}

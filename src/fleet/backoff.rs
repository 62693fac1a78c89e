//! Reconnect delays: exponential with "equal jitter", sans-IO (the random draw comes in).
//!
//! The base doubles from `min` to `max`; each delay is uniform in `[base/2, base]`, so a fleet
//! that lost its broker at the same moment does not reconnect in lockstep, yet no box waits
//! longer than `max`.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    base: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Self { min, max, base: min }
    }

    /// The next delay; `unit` is a random draw in `[0, 1]`.
    pub fn next_delay(&mut self, unit: f64) -> Duration {
        let unit = if unit.is_finite() { unit.clamp(0.0, 1.0) } else { 1.0 };
        let half = self.base / 2;
        let delay = half + half.mul_f64(unit);
        self.base = (self.base * 2).min(self.max);
        delay
    }

    /// After a connection that stayed up: start again from `min`.
    pub fn reset(&mut self) {
        self.base = self.min;
    }
}

impl Default for Backoff {
    /// 0.5 s doubling to 30 s.
    fn default() -> Self {
        Self::new(Duration::from_millis(500), Duration::from_secs(30))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_with_jitter_in_the_upper_half() {
        let mut b = Backoff::default();
        let highs: Vec<_> = (0..10).map(|_| b.next_delay(1.0).as_millis()).collect();
        assert_eq!(highs, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000]);
        b.reset();
        let lows: Vec<_> = (0..8).map(|_| b.next_delay(0.0).as_millis()).collect();
        assert_eq!(lows, [250, 500, 1000, 2000, 4000, 8000, 15000, 15000]);
        b.reset();
        assert_eq!(b.next_delay(0.5), Duration::from_millis(375));
    }

    #[test]
    fn odd_draws_are_clamped() {
        let mut b = Backoff::default();
        assert_eq!(b.next_delay(f64::NAN), Duration::from_millis(500));
        assert_eq!(b.next_delay(-3.0), Duration::from_millis(500));
        assert_eq!(b.next_delay(7.0), Duration::from_millis(2000));
    }
}

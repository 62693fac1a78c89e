//! A small fixed table of named deadlines; the next wake-up is the earliest one.
//! Shared by every sans-IO core (keying, floor, ...), in the manner of quinn-proto's timers.

use std::time::Instant;

/// Timers of a core are an enum `T` with `T::COUNT` variants mapped to indices.
pub trait TimerId: Copy + Eq + std::fmt::Debug + 'static {
    const ALL: &'static [Self];
    fn index(self) -> usize;
}

#[derive(Debug, Clone)]
pub struct Timers<T: TimerId, const N: usize> {
    deadlines: [Option<Instant>; N],
    _t: std::marker::PhantomData<T>,
}

impl<T: TimerId, const N: usize> Default for Timers<T, N> {
    fn default() -> Self {
        Self { deadlines: [None; N], _t: std::marker::PhantomData }
    }
}

impl<T: TimerId, const N: usize> Timers<T, N> {
    pub fn set(&mut self, t: T, at: Instant) {
        self.deadlines[t.index()] = Some(at);
    }
    pub fn stop(&mut self, t: T) {
        self.deadlines[t.index()] = None;
    }
    pub fn get(&self, t: T) -> Option<Instant> {
        self.deadlines[t.index()]
    }
    pub fn is_set(&self, t: T) -> bool {
        self.deadlines[t.index()].is_some()
    }
    pub fn stop_all(&mut self) {
        self.deadlines = [None; N];
    }
    /// The earliest deadline of all running timers.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.iter().flatten().min().copied()
    }
    /// The earliest timer that has expired at `now` (ties go to the first in `T::ALL`),
    /// stopped and returned, so callers can loop until `None`.
    pub fn pop_expired(&mut self, now: Instant) -> Option<(T, Instant)> {
        let (t, at) = T::ALL
            .iter()
            .filter_map(|t| self.get(*t).map(|at| (*t, at)))
            .filter(|(_, at)| *at <= now)
            .min_by_key(|(_, at)| *at)?;
        self.stop(t);
        Some((t, at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum T {
        A,
        B,
    }
    impl TimerId for T {
        const ALL: &'static [T] = &[T::A, T::B];
        fn index(self) -> usize {
            self as usize
        }
    }

    #[test]
    fn earliest_deadline_pops_first() {
        let t0 = Instant::now();
        let mut timers: Timers<T, 2> = Timers::default();
        assert_eq!(timers.next_deadline(), None);
        timers.set(T::A, t0 + Duration::from_millis(30));
        timers.set(T::B, t0 + Duration::from_millis(10));
        assert_eq!(timers.next_deadline(), Some(t0 + Duration::from_millis(10)));
        assert_eq!(timers.pop_expired(t0 + Duration::from_millis(5)), None);
        let now = t0 + Duration::from_millis(40);
        assert_eq!(timers.pop_expired(now).map(|x| x.0), Some(T::B));
        assert_eq!(timers.pop_expired(now).map(|x| x.0), Some(T::A));
        assert_eq!(timers.pop_expired(now), None);
    }
}

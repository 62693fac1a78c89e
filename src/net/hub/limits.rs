//! What clients that have not proven anything yet may hold: HTTP connections (before a request
//! completes or a WebSocket upgrade) and WebSockets before their hello passes. Each is counted
//! in total and per address, so one busy or hostile address cannot take what everyone else
//! needs, and every count stays below the file descriptors the process has, with room left
//! for the daemon's own files.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// File descriptors kept for the daemon itself (ALSA, GPIO, serial lines, MQTT, the media
/// socket, logs, config and secret files), never handed to clients.
pub(crate) const FD_RESERVE: u64 = 128;

/// A count with a total and a per-address limit.
#[derive(Debug)]
pub(crate) struct Limiter {
    total: usize,
    per_addr: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    used: usize,
    by_addr: HashMap<IpAddr, usize>,
}

/// One unit of a [`Limiter`], given back on drop.
#[derive(Debug)]
pub(crate) struct Slot {
    limiter: Arc<Limiter>,
    addr: IpAddr,
}

impl Limiter {
    pub fn new(total: usize, per_addr: usize) -> Arc<Self> {
        Arc::new(Self { total: total.max(1), per_addr: per_addr.max(1), state: Mutex::default() })
    }

    /// A slot for `ip`, or None when the total or that address's share is used up.
    pub fn try_take(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let addr = addr_key(ip);
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mine = s.by_addr.get(&addr).copied().unwrap_or(0);
        if s.used >= self.total || mine >= self.per_addr {
            return None;
        }
        s.used += 1;
        s.by_addr.insert(addr, mine + 1);
        Some(Slot { limiter: self.clone(), addr })
    }

    #[cfg(test)]
    fn used(&self) -> usize {
        self.state.lock().unwrap().used
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut s = self.limiter.state.lock().unwrap_or_else(|e| e.into_inner());
        s.used = s.used.saturating_sub(1);
        if let Some(n) = s.by_addr.get_mut(&self.addr) {
            *n -= 1;
            if *n == 0 {
                s.by_addr.remove(&self.addr);
            }
        }
    }
}

/// Failed token attempts (a recordings API request or a hello with an unknown token), per
/// address (an IPv6 /64 as one): each failure fills the address's bucket by one, which drains
/// by one every `drain`; once it holds `burst`, the address is refused without its token being
/// looked at (HTTP 429 with `Retry-After`) until it has drained below again. A good token does
/// not empty the bucket (it would let a holder of one token guess others at full speed), so
/// an address that failed `burst` times waits like everyone else there. At most `max_addrs`
/// addresses are remembered: when full, the emptiest bucket is forgotten first. Time is an
/// input ([`Instant`]); the hub's handlers pass the clock.
#[derive(Debug)]
pub(crate) struct AuthFailures {
    burst: u32,
    drain: Duration,
    max_addrs: usize,
    by_addr: Mutex<HashMap<IpAddr, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    level: u32,
    /// When `level` was last brought up to date.
    at: Instant,
}

impl Bucket {
    fn drained(self, now: Instant, drain: Duration) -> Self {
        let steps = now.saturating_duration_since(self.at).as_nanos() / drain.as_nanos().max(1);
        let steps = steps.min(u32::MAX as u128) as u32;
        if steps >= self.level {
            return Bucket { level: 0, at: now };
        }
        // Keep the fraction of a step already served.
        Bucket { level: self.level - steps, at: self.at + drain * steps }
    }
}

/// Failed attempts an address may make at once, and how fast it may go on.
pub(crate) const AUTH_BURST: u32 = 10;
pub(crate) const AUTH_DRAIN: Duration = Duration::from_secs(1);
const AUTH_MAX_ADDRS: usize = 4096;

impl AuthFailures {
    pub fn new(burst: u32, drain: Duration) -> Self {
        Self::with_capacity(burst, drain, AUTH_MAX_ADDRS)
    }

    fn with_capacity(burst: u32, drain: Duration, max_addrs: usize) -> Self {
        Self { burst: burst.max(1), drain, max_addrs: max_addrs.max(1), by_addr: Mutex::default() }
    }

    /// `Err(wait)` when `ip` has failed too often: refuse it without checking its token.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let map = self.by_addr.lock().unwrap_or_else(|e| e.into_inner());
        let Some(b) = map.get(&addr_key(ip)) else { return Ok(()) };
        let b = b.drained(now, self.drain);
        if b.level < self.burst {
            return Ok(());
        }
        // Below the burst after one more step drains.
        Err((b.at + self.drain * (b.level - self.burst + 1)).saturating_duration_since(now))
    }

    /// `ip` presented a token nobody has.
    pub fn failed(&self, ip: IpAddr, now: Instant) {
        let addr = addr_key(ip);
        let mut map = self.by_addr.lock().unwrap_or_else(|e| e.into_inner());
        if !map.contains_key(&addr) && map.len() >= self.max_addrs {
            let drain = self.drain;
            map.retain(|_, b| b.drained(now, drain).level > 0);
            if map.len() >= self.max_addrs {
                let emptiest = map.iter().min_by_key(|(_, b)| b.drained(now, drain).level).map(|(a, _)| *a);
                if let Some(a) = emptiest {
                    map.remove(&a);
                }
            }
        }
        let b = map.get(&addr).map_or(Bucket { level: 0, at: now }, |b| b.drained(now, self.drain));
        // Past the burst it keeps filling (capped), so hammering on keeps an address out longer.
        map.insert(addr, Bucket { level: (b.level + 1).min(self.burst * 2), at: b.at });
    }

    #[cfg(test)]
    fn addrs(&self) -> usize {
        self.by_addr.lock().unwrap().len()
    }
}

/// IPv4 addresses count alone; an IPv6 host usually holds a whole /64, so it counts as one.
fn addr_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// The hub's connection limits, checked against the file descriptor limit at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Budget {
    pub connections: usize,
    pub pending: usize,
    pub sessions: usize,
}

impl Budget {
    fn sum(&self) -> u64 {
        (self.connections + self.pending + self.sessions) as u64
    }

    /// Shrink to fit `nofile` descriptors with [`FD_RESERVE`] kept back: HTTP connections
    /// first, then unauthenticated sockets, sessions last. Every limit stays at least 1.
    pub fn fit(mut self, nofile: u64) -> Self {
        let room = nofile.saturating_sub(FD_RESERVE).max(3);
        let over = |b: &Self| b.sum().saturating_sub(room) as usize;
        for field in [0, 1, 2] {
            let excess = over(&self);
            let limit = match field {
                0 => &mut self.connections,
                1 => &mut self.pending,
                _ => &mut self.sessions,
            };
            *limit = limit.saturating_sub(excess).max(1);
        }
        self
    }
}

/// The soft limit on open files after raising it as far as the hard limit allows (a daemon
/// started by hand inherits the shell's 1024; under systemd `LimitNOFILE=` sets both).
#[allow(clippy::unnecessary_cast)] // rlim_t is u32 on armv7
pub(crate) fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    lim.rlim_cur as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_and_addresses_are_limited_and_given_back() {
        let l = Limiter::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = l.try_take(a).unwrap();
        let a2 = l.try_take(a).unwrap();
        assert!(l.try_take(a).is_none(), "per address");
        let b1 = l.try_take(b).unwrap();
        assert!(l.try_take("10.0.0.3".parse().unwrap()).is_none(), "total");
        drop(a1);
        assert!(l.try_take(a).is_some());
        drop((a2, b1));
        assert_eq!(l.used(), 0);
        assert!(l.state.lock().unwrap().by_addr.is_empty(), "no entry left behind");
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_v4_as_v4() {
        let l = Limiter::new(10, 1);
        let _x = l.try_take("2001:db8::1".parse().unwrap()).unwrap();
        assert!(l.try_take("2001:db8::2".parse().unwrap()).is_none());
        assert!(l.try_take("2001:db8:0:1::2".parse().unwrap()).is_some());
        let _y = l.try_take("192.0.2.1".parse().unwrap()).unwrap();
        assert!(l.try_take("::ffff:192.0.2.1".parse().unwrap()).is_none());
    }

    #[test]
    fn budget_keeps_the_reserve() {
        let b = Budget { connections: 256, pending: 64, sessions: 256 };
        assert_eq!(b.fit(65536), b);
        let small = b.fit(1024);
        assert_eq!(small, Budget { connections: 256, pending: 64, sessions: 256 }, "576 fit in 1024 - 128");
        let tiny = b.fit(512);
        assert_eq!(tiny.sum(), 512 - FD_RESERVE);
        assert_eq!((tiny.pending, tiny.sessions), (64, 256), "HTTP connections shrink first");
        let none = b.fit(100);
        assert!(none.connections >= 1 && none.pending >= 1 && none.sessions >= 1);
    }

    #[test]
    fn auth_failures_throttle_an_address_and_drain() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let f = AuthFailures::new(3, Duration::from_secs(1));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for i in 0..3 {
            assert_eq!(f.check(a, ms(i)), Ok(()), "failure {i} still allowed");
            f.failed(a, ms(i));
        }
        assert_eq!(f.check(a, ms(10)), Err(Duration::from_millis(990)), "one step drains at 1 s");
        assert_eq!(f.check(b, ms(10)), Ok(()), "another address is not affected");
        assert_eq!(f.check(a, ms(999)), Err(Duration::from_millis(1)));
        assert_eq!(f.check(a, ms(1000)), Ok(()), "one more try after a step");
        f.failed(a, ms(1000));
        assert!(f.check(a, ms(1500)).is_err());
        // Hammering on while refused would not be counted (refused before), but failures
        // beyond the burst (a race) fill it further, up to twice the burst.
        for _ in 0..10 {
            f.failed(a, ms(1500));
        }
        assert_eq!(f.check(a, ms(1500)), Err(Duration::from_millis(3500)), "6 - 3 + 1 steps from 1 s");
        assert_eq!(f.check(a, ms(6000)), Ok(()));
        assert!(f.check("::ffff:10.0.0.1".parse().unwrap(), ms(1500)).is_err(), "mapped v4 is v4");
    }

    #[test]
    fn auth_failures_remember_a_bounded_number_of_addresses() {
        let t0 = Instant::now();
        let f = AuthFailures::with_capacity(2, Duration::from_secs(1), 4);
        let ip = |i: u8| IpAddr::from([10, 0, 0, i]);
        f.failed(ip(1), t0);
        f.failed(ip(1), t0);
        for i in 2..=4 {
            f.failed(ip(i), t0);
        }
        assert_eq!(f.addrs(), 4);
        f.failed(ip(5), t0);
        assert_eq!(f.addrs(), 4, "the emptiest one went");
        assert!(f.check(ip(1), t0).is_err(), "the fullest is kept");
        f.failed(ip(6), t0 + Duration::from_secs(5));
        assert_eq!(f.addrs(), 1, "drained buckets are dropped when room is needed");
    }
}

//! What clients that have not proven anything yet may hold: HTTP connections (before a request
//! completes or a WebSocket upgrade) and WebSockets before their hello passes. Each is counted
//! in total and per address, so one busy or hostile address cannot take what everyone else
//! needs, and every count stays below the file descriptors the process has, with room left
//! for the daemon's own files.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

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
}

//! Local addresses for ICE host candidates. str0m gathers nothing itself (sans-IO), so the hub
//! advertises its listen address, or every interface address when it listens on a wildcard,
//! and the uplink advertises the address its kernel routes towards the hub.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};

/// Addresses of the interfaces that are up, of `ipv6`'s family; link-local ones are left out
/// (they need a scope id that SDP candidates cannot carry).
pub fn interface_addrs(ipv6: bool) -> Vec<IpAddr> {
    let mut out = Vec::new();
    #[cfg(unix)]
    // SAFETY: getifaddrs hands back a linked list we only read and then free exactly once;
    // every pointer is checked for null and sockaddrs are read by their declared family.
    unsafe {
        let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
        if libc::getifaddrs(&mut head) != 0 {
            return out;
        }
        let mut cur = head;
        while !cur.is_null() {
            let ifa = &*cur;
            cur = ifa.ifa_next;
            if ifa.ifa_addr.is_null() || ifa.ifa_flags & libc::IFF_UP as u32 == 0 {
                continue;
            }
            let ip = match i32::from((*ifa.ifa_addr).sa_family) {
                libc::AF_INET if !ipv6 => {
                    let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                    IpAddr::V4(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)))
                }
                libc::AF_INET6 if ipv6 => {
                    let sin6 = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                    IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr))
                }
                _ => continue,
            };
            if usable(ip) && !out.contains(&ip) {
                out.push(ip);
            }
        }
        libc::freeifaddrs(head);
    }
    out
}

fn usable(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !v4.is_unspecified() && !v4.is_link_local() && !v4.is_broadcast(),
        IpAddr::V6(v6) => !v6.is_unspecified() && (v6.segments()[0] & 0xffc0) != 0xfe80,
    }
}

/// The source address the kernel would use to reach `remote` (no packet is sent: connecting
/// a UDP socket only consults the routing table).
pub fn route_source(remote: SocketAddr) -> Option<IpAddr> {
    let bind: SocketAddr = match remote {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(bind).ok()?;
    socket.connect(remote).ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(ip)
}

/// Which of `candidates` a datagram from `source` most likely arrived on, for a socket bound
/// to a wildcard address (which does not report the destination): loopback for loopback
/// peers, otherwise the first non-loopback address of the same family.
pub fn pick_destination(candidates: &[IpAddr], source: IpAddr) -> Option<IpAddr> {
    let same_family = |ip: &&IpAddr| ip.is_ipv4() == source.is_ipv4();
    let loopback = source.is_loopback();
    candidates
        .iter()
        .filter(same_family)
        .find(|ip| ip.is_loopback() == loopback)
        .or_else(|| candidates.iter().find(same_family))
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_listed_and_routable() {
        let v4 = interface_addrs(false);
        assert!(v4.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)), "{v4:?}");
        assert!(v4.iter().all(|ip| ip.is_ipv4()));
        assert_eq!(route_source("127.0.0.1:9".parse().unwrap()), Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    }

    #[test]
    fn destination_guess() {
        let lan: IpAddr = "192.168.1.5".parse().unwrap();
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        let c = [lan, lo, v6];
        assert_eq!(pick_destination(&c, "127.0.0.1".parse().unwrap()), Some(lo));
        assert_eq!(pick_destination(&c, "192.168.1.9".parse().unwrap()), Some(lan));
        assert_eq!(pick_destination(&c, "2001:db8::9".parse().unwrap()), Some(v6));
        assert_eq!(pick_destination(&[lo], "10.0.0.1".parse().unwrap()), Some(lo));
        assert_eq!(pick_destination(&[lo], "::1".parse().unwrap()), None);
    }
}

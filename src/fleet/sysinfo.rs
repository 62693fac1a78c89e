//! System numbers for the metrics topic: process CPU and RSS from `/proc/self`, the SoC
//! temperature from the first thermal zone, and the box's IP addresses for the status topic.
//! Parsing is pure and unit-tested; the readers return `None` where a file is absent (a
//! container has no thermal zone), and such fields are left out of the JSON.

use std::net::IpAddr;
use std::time::Instant;

const PROC_STAT: &str = "/proc/self/stat";
const PROC_STATUS: &str = "/proc/self/status";
const THERMAL_ZONE0: &str = "/sys/class/thermal/thermal_zone0/temp";

/// utime + stime in clock ticks from the text of `/proc/<pid>/stat`.
/// The command name (field 2) may contain spaces and parentheses, so fields are counted
/// from the last `)`.
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // After the comm come fields 3.. (state is field 3); utime is 14 and stime 15.
    let utime: u64 = fields.get(14 - 3)?.parse().ok()?;
    let stime: u64 = fields.get(15 - 3)?.parse().ok()?;
    Some(utime + stime)
}

/// Resident set size in MiB from the `VmRSS:  12345 kB` line of `/proc/<pid>/status`.
pub fn parse_vmrss_mb(status: &str) -> Option<f64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut parts = line["VmRSS:".len()..].split_whitespace();
    let kb: u64 = parts.next()?.parse().ok()?;
    (parts.next()? == "kB").then(|| round1(kb as f64 / 1024.0))
}

/// Degrees Celsius from a thermal zone's `temp` file (millidegrees).
pub fn parse_thermal_c(text: &str) -> Option<f64> {
    let milli: i64 = text.trim().parse().ok()?;
    Some(round1(milli as f64 / 1000.0))
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// CPU use between two samples of the tick counter, in % of one core.
#[derive(Debug, Default)]
pub struct CpuSampler {
    last: Option<(u64, Instant)>,
}

impl CpuSampler {
    /// Feed a sample; returns the use since the previous one (None for the first).
    pub fn sample(&mut self, ticks: u64, at: Instant, ticks_per_s: u64) -> Option<f64> {
        let prev = self.last.replace((ticks, at));
        let (prev_ticks, prev_at) = prev?;
        let wall = at.saturating_duration_since(prev_at).as_secs_f64();
        if wall <= 0.0 || ticks_per_s == 0 {
            return None;
        }
        let cpu = ticks.saturating_sub(prev_ticks) as f64 / ticks_per_s as f64;
        Some(round1(cpu / wall * 100.0))
    }
}

/// What one metrics tick reads from the system.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SystemSample {
    pub cpu_pct: Option<f64>,
    pub mem_rss_mb: Option<f64>,
    pub soc_temp_c: Option<f64>,
}

/// Reads the files; keeps the previous CPU sample between calls.
#[derive(Debug, Default)]
pub struct SystemReader {
    cpu: CpuSampler,
}

impl SystemReader {
    pub fn read(&mut self, now: Instant) -> SystemSample {
        let ticks = read(PROC_STAT).as_deref().and_then(parse_stat_cpu_ticks);
        SystemSample {
            cpu_pct: ticks.and_then(|t| self.cpu.sample(t, now, clock_ticks_per_s())),
            mem_rss_mb: read(PROC_STATUS).as_deref().and_then(parse_vmrss_mb),
            soc_temp_c: read(THERMAL_ZONE0).as_deref().and_then(parse_thermal_c),
        }
    }
}

/// Whether the board reports a SoC temperature (Home Assistant gets a sensor only then).
pub fn has_temperature() -> bool {
    read(THERMAL_ZONE0).as_deref().and_then(parse_thermal_c).is_some()
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

fn clock_ticks_per_s() -> u64 {
    // SAFETY: sysconf has no preconditions; it returns -1 for an unknown name.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// The box's IP addresses, without loopback and IPv6 link-local ones, sorted.
pub fn local_addresses() -> Vec<String> {
    let mut out: Vec<IpAddr> = Vec::new();
    let mut ifap: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills a list we only read and then free exactly once; each ifa_addr is
    // checked for null and cast according to its sa_family.
    unsafe {
        if libc::getifaddrs(&mut ifap) != 0 {
            return Vec::new();
        }
        let mut cur = ifap;
        while !cur.is_null() {
            let ifa = &*cur;
            if !ifa.ifa_addr.is_null() {
                match i32::from((*ifa.ifa_addr).sa_family) {
                    libc::AF_INET => {
                        let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                        out.push(IpAddr::from(u32::from_be(sin.sin_addr.s_addr).to_be_bytes()));
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                        out.push(IpAddr::from(sin6.sin6_addr.s6_addr));
                    }
                    _ => {}
                }
            }
            cur = ifa.ifa_next;
        }
        libc::freeifaddrs(ifap);
    }
    filter_addresses(out)
}

fn filter_addresses(mut addrs: Vec<IpAddr>) -> Vec<String> {
    addrs.retain(|a| match a {
        IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_unspecified(),
        IpAddr::V6(v6) => !v6.is_loopback() && !v6.is_unspecified() && (v6.segments()[0] & 0xffc0) != 0xfe80,
    });
    addrs.sort();
    addrs.dedup();
    addrs.iter().map(IpAddr::to_string).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn stat_ticks_survive_odd_command_names() {
        let stat = "4242 (roipd) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 75 0 0 20 0 9 0 12345 1000 300 \
                    18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(325));
        let odd = "7 (a) b (c) S 1 7 7 0 -1 0 0 0 0 0 10 5 0 0 20 0 1 0 1 1 1";
        assert_eq!(parse_stat_cpu_ticks(odd), Some(15));
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
        assert_eq!(parse_stat_cpu_ticks("1 (x) S 1 2"), None);
    }

    #[test]
    fn vmrss() {
        let status = "Name:\troipd\nVmPeak:\t  9000 kB\nVmRSS:\t   12800 kB\nThreads:\t3\n";
        assert_eq!(parse_vmrss_mb(status), Some(12.5));
        assert_eq!(parse_vmrss_mb("Name: x\n"), None);
        assert_eq!(parse_vmrss_mb("VmRSS: lots\n"), None);
    }

    #[test]
    fn thermal() {
        assert_eq!(parse_thermal_c("48312\n"), Some(48.3));
        assert_eq!(parse_thermal_c("-5000"), Some(-5.0));
        assert_eq!(parse_thermal_c(""), None);
    }

    #[test]
    fn cpu_percent_between_samples() {
        let t0 = Instant::now();
        let mut s = CpuSampler::default();
        assert_eq!(s.sample(1000, t0, 100), None);
        // 50 ticks at 100 Hz over 2 s: 0.5 s of CPU in 2 s = 25 %.
        assert_eq!(s.sample(1050, t0 + Duration::from_secs(2), 100), Some(25.0));
        assert_eq!(s.sample(1050, t0 + Duration::from_secs(2), 100), None, "no wall time elapsed");
    }

    #[test]
    fn real_files_read_on_linux() {
        let sample = SystemReader::default().read(Instant::now());
        assert!(sample.mem_rss_mb.is_some_and(|m| m > 0.0), "{sample:?}");
        assert!(read(PROC_STAT).as_deref().and_then(parse_stat_cpu_ticks).is_some());
    }

    #[test]
    fn address_filter() {
        let addrs = ["127.0.0.1", "192.0.2.7", "::1", "fe80::1", "2001:db8::5", "192.0.2.7", "0.0.0.0"];
        let got = filter_addresses(addrs.iter().map(|a| a.parse().unwrap()).collect());
        assert_eq!(got, ["192.0.2.7", "2001:db8::5"]);
        let _ = local_addresses(); // must not crash whatever the machine has
    }
}

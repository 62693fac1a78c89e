//! Real-time scheduling for the audio device threads.
//!
//! A device thread that is late by more than what the device buffers is an audible gap, and on
//! a loaded 2-core box an ordinary (`SCHED_OTHER`) thread can wait tens of milliseconds for a
//! core. So each device thread asks for `SCHED_FIFO` at [`AUDIO_PRIORITY`] when it starts. That
//! works when the process has `CAP_SYS_NICE` (root) or an `RLIMIT_RTPRIO` at least that high
//! (the systemd unit sets `LimitRTPRIO=`), and the kernel still throttles real-time threads to
//! `sched_rt_runtime_us` (95 % by default), so a runaway cannot lock the box up. When it is not
//! allowed the thread stays `SCHED_OTHER`, and the log says why.

use std::fmt;

/// `SCHED_FIFO` priority of audio device threads: above ordinary threads, below the kernel's
/// own threaded IRQ handlers (50), like PipeWire's and JACK's defaults.
pub const AUDIO_PRIORITY: i32 = 20;

/// Nice level of the daemon's other threads: the async workers that carry audio between the
/// device threads (receive DSP and encode, channel routing, network). At the default nice 0 a
/// busy box's other processes delayed their packets by up to ~10 ms under `stress-ng --cpu 6`
/// on 2 cores, enough for the radio's jitter buffer to conceal a frame; at -10 they get a core
/// within ~3 ms. Like PulseAudio's default (-11), and still below any real-time thread.
pub const DAEMON_NICE: i32 = -10;

/// What a device thread got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RtPolicy {
    /// `SCHED_FIFO` at this priority.
    Fifo(i32),
    /// An ordinary thread; the reason it is not real-time.
    Normal(String),
}

impl fmt::Display for RtPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RtPolicy::Fifo(p) => write!(f, "SCHED_FIFO {p}"),
            RtPolicy::Normal(why) => write!(f, "SCHED_OTHER ({why})"),
        }
    }
}

/// Move the calling thread to `SCHED_FIFO` at `priority` if the system allows it.
pub fn promote_current_thread(priority: i32) -> RtPolicy {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: priority };
        // SAFETY: pthread_self() is the calling thread; param is a valid sched_param.
        let rc = unsafe { libc::pthread_setschedparam(libc::pthread_self(), libc::SCHED_FIFO, &param) };
        if rc == 0 {
            return RtPolicy::Fifo(priority);
        }
        let why = match rc {
            libc::EPERM => match rtprio_limit() {
                Some(0) => {
                    "not permitted: RLIMIT_RTPRIO is 0 and no CAP_SYS_NICE (systemd: LimitRTPRIO=, RestrictRealtime=no)"
                        .to_string()
                }
                Some(n) => format!("not permitted: RLIMIT_RTPRIO is {n}, below {priority}"),
                None => "not permitted (RestrictRealtime=yes or a seccomp filter?)".to_string(),
            },
            e => std::io::Error::from_raw_os_error(e).to_string(),
        };
        RtPolicy::Normal(why)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = priority;
        RtPolicy::Normal("real-time scheduling is only used on Linux".into())
    }
}

/// What [`favour_current_thread`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NiceLevel {
    /// The thread was already at this nice level or better (e.g. systemd's `Nice=`).
    Kept(i32),
    /// Raised from the first nice level to the second.
    Raised(i32, i32),
    /// Left at this nice level; why.
    Denied(i32, String),
}

impl fmt::Display for NiceLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NiceLevel::Kept(n) => write!(f, "nice {n}"),
            NiceLevel::Raised(from, to) => write!(f, "nice {to} (from {from})"),
            NiceLevel::Denied(n, why) => write!(f, "nice {n} ({why})"),
        }
    }
}

/// Lower the calling thread's nice level to `nice` if it is higher and the system allows it.
/// On Linux the nice level is per thread and inherited by threads it creates later, so call it
/// on the main thread before the async runtime starts its workers.
pub fn favour_current_thread(nice: i32) -> NiceLevel {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: plain syscalls on the calling thread (PRIO_PROCESS with who = 0 is the
        // calling thread on Linux). getpriority can return -1 legitimately: errno tells.
        unsafe {
            *libc::__errno_location() = 0;
            let current = libc::getpriority(libc::PRIO_PROCESS, 0);
            if current == -1 && *libc::__errno_location() != 0 {
                return NiceLevel::Denied(0, std::io::Error::last_os_error().to_string());
            }
            if current <= nice {
                return NiceLevel::Kept(current);
            }
            if libc::setpriority(libc::PRIO_PROCESS, 0, nice) == 0 {
                return NiceLevel::Raised(current, nice);
            }
            let e = std::io::Error::last_os_error();
            let why = if e.raw_os_error() == Some(libc::EACCES) || e.raw_os_error() == Some(libc::EPERM) {
                format!("not permitted: no CAP_SYS_NICE and RLIMIT_NICE below {} (systemd: Nice={nice})", 20 - nice)
            } else {
                e.to_string()
            };
            NiceLevel::Denied(current, why)
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        NiceLevel::Denied(0, "only changed on Linux".into())
    }
}

/// The soft `RLIMIT_RTPRIO` of this process (None: unknown).
#[allow(clippy::unnecessary_cast)] // rlim_t is u32 on armv7
pub fn rtprio_limit() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: lim is a valid rlimit to write into.
        if unsafe { libc::getrlimit(libc::RLIMIT_RTPRIO, &mut lim) } == 0 {
            return Some(lim.rlim_cur as u64);
        }
        None
    }
    #[cfg(not(target_os = "linux"))]
    None
}

/// Whether this process holds `CAP_SYS_NICE` (root normally does), from /proc/self/status.
fn has_cap_sys_nice() -> bool {
    const CAP_SYS_NICE: u32 = 23;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("CapEff:"))?;
            u64::from_str_radix(line["CapEff:".len()..].trim(), 16).ok()
        })
        .is_some_and(|caps| caps & (1 << CAP_SYS_NICE) != 0)
}

/// One line for `roipd devices` / `roipd check`: can audio threads get real-time priority here?
/// (For this process, so run it as the service's user or inside the unit to see the unit's view.)
pub fn availability() -> String {
    let limit = rtprio_limit();
    if has_cap_sys_nice() {
        return format!("available (CAP_SYS_NICE): audio threads run SCHED_FIFO {AUDIO_PRIORITY}");
    }
    match limit {
        Some(n) if n >= AUDIO_PRIORITY as u64 => {
            format!("available (RLIMIT_RTPRIO {n}): audio threads run SCHED_FIFO {AUDIO_PRIORITY}")
        }
        Some(n) => format!(
            "NOT available (RLIMIT_RTPRIO {n}, need {AUDIO_PRIORITY}): audio threads run SCHED_OTHER and may drop out \
             under CPU load; the packaged systemd unit sets LimitRTPRIO={AUDIO_PRIORITY} (or run as root, or raise \
             rtprio in /etc/security/limits.d)"
        ),
        None => "unknown (cannot read RLIMIT_RTPRIO)".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn promotion_reports_what_the_thread_got() {
        // Either outcome is legitimate depending on the machine; what matters is that the
        // report matches what the kernel says about the thread.
        let got = std::thread::spawn(|| {
            let got = promote_current_thread(AUDIO_PRIORITY);
            let mut policy = 0;
            let mut param = libc::sched_param { sched_priority: 0 };
            // SAFETY: querying the calling thread's own policy into valid locals.
            unsafe { libc::pthread_getschedparam(libc::pthread_self(), &mut policy, &mut param) };
            (got, policy)
        })
        .join()
        .unwrap();
        match got {
            (RtPolicy::Fifo(p), policy) => {
                assert!(p == AUDIO_PRIORITY && policy == libc::SCHED_FIFO)
            }
            (RtPolicy::Normal(why), policy) => {
                assert!(!why.is_empty() && policy == libc::SCHED_OTHER)
            }
        }
        assert!(!availability().is_empty());
    }

    #[test]
    fn favouring_reports_the_nice_level_the_thread_has() {
        let (got, now) = std::thread::spawn(|| {
            let got = favour_current_thread(DAEMON_NICE);
            // SAFETY: reading the calling thread's own nice level.
            (got, unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) })
        })
        .join()
        .unwrap();
        match got {
            NiceLevel::Kept(n) => assert!(n <= DAEMON_NICE && now == n),
            NiceLevel::Raised(from, to) => assert!(from > DAEMON_NICE && to == DAEMON_NICE && now == DAEMON_NICE),
            NiceLevel::Denied(n, why) => assert!(n > DAEMON_NICE && now == n && !why.is_empty()),
        }
    }
}

//! systemd integration of `roipd run`: READY=1 once ports are up, WATCHDOG=1 pings while every
//! task loop turns, no pings once a task is wedged, STOPPING=1 on the way out.

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::config::{Config, Radio};
use common::Daemon;

fn config() -> String {
    Config::new("notify-test")
        .channel("ops")
        .add(Radio::sim("radio-a", "ops", "a"))
        .add(Radio::sim("radio-b", "ops", "b"))
        .toml()
}

struct NotifySocket {
    sock: UnixDatagram,
    _dir: tempfile::TempDir,
    path: String,
}

impl NotifySocket {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        NotifySocket { sock, path: path.to_str().unwrap().to_string(), _dir: dir }
    }

    /// Every message received within `window`, one string per datagram.
    fn collect(&self, window: Duration) -> Vec<String> {
        let start = Instant::now();
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while start.elapsed() < window {
            if let Ok(n) = self.sock.recv(&mut buf) {
                out.push(String::from_utf8_lossy(&buf[..n]).to_string());
            }
        }
        out
    }
}

fn count(msgs: &[String], what: &str) -> usize {
    msgs.iter().filter(|m| m.lines().any(|l| l == what)).count()
}

#[test]
fn ready_then_watchdog_pings_then_stopping() {
    let notify = NotifySocket::new();
    // A 1 s watchdog: roipd pings every 0.5 s.
    let mut d = Daemon::start_with_env(&config(), &[("NOTIFY_SOCKET", &notify.path), ("WATCHDOG_USEC", "1000000")]);
    let msgs = notify.collect(Duration::from_millis(2500));
    let ready = msgs.iter().position(|m| m.lines().any(|l| l == "READY=1"));
    assert!(ready.is_some(), "no READY=1 in {msgs:?}\n{}", d.stderr());
    assert!(count(&msgs[ready.unwrap()..], "WATCHDOG=1") >= 3, "expected periodic WATCHDOG=1 after READY=1: {msgs:?}");
    // PTT lines are open (unkeyed) by the time READY is sent.
    assert_eq!(d.line("a-ptt"), Some(false));
    d.signal(libc::SIGTERM);
    let status = d.wait_exit(Duration::from_secs(10));
    assert!(status.success());
    let tail = notify.collect(Duration::from_millis(200));
    assert!(count(&tail, "STOPPING=1") == 1, "STOPPING=1 at shutdown: {tail:?}");
}

#[test]
fn wedged_task_loop_stops_watchdog_pings() {
    let notify = NotifySocket::new();
    let d = Daemon::start_with_env(&config(), &[("NOTIFY_SOCKET", &notify.path), ("WATCHDOG_USEC", "1000000")]);
    let before = notify.collect(Duration::from_millis(1500));
    assert!(count(&before, "WATCHDOG=1") >= 2, "pings before the hang: {before:?}\n{}", d.stderr());
    d.inject_fault("hang");
    // The stale limit is 3 s; allow it to pass, then there must be silence.
    let _grace = notify.collect(Duration::from_millis(4000));
    let after = notify.collect(Duration::from_millis(2500));
    assert_eq!(count(&after, "WATCHDOG=1"), 0, "pings continued with a wedged task: {after:?}\n{}", d.stderr());
    assert!(d.stderr().contains("withholding watchdog pings"), "{}", d.stderr());
    // Drop kills the wedged process; systemd would do the same and then run safe-off.
}

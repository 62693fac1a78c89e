//! The radio is never left keyed: `roipd run` on simulated lines unkeys PTT before it exits,
//! whether it is stopped by SIGTERM/SIGINT or a driver task panics.

mod common;

use std::time::Duration;

use common::Daemon;

/// Radio A's COR keys radio B (same channel). B's PTT is active-low, so keyed = line low.
pub const TWO_RADIOS: &str = r#"
device_id = "ptt-test"

[gpio.sim]
dir = "{lines}"

[channel.ops]

[port.radio-a]
kind = "radio"
channel = "ops"
cor = { line = "sim:a-cor" }
ptt = { line = "sim:a-ptt" }

[port.radio-b]
kind = "radio"
channel = "ops"
cor = { line = "sim:b-cor" }
ptt = { line = "sim:b-ptt", active_low = true }

[port.radio-b.keying]
tx_delay_ms = 100
tx_hang_ms = 30000
"#;

const WAIT: Duration = Duration::from_secs(10);

/// Start the daemon and key radio B through radio A's COR.
fn keyed_daemon() -> Daemon {
    let mut d = Daemon::start(TWO_RADIOS);
    d.wait_for("PTT lines opened unkeyed", WAIT, |d| d.line("b-ptt") == Some(true) && d.line("a-ptt") == Some(false));
    d.wait_for("COR input ready", WAIT, |d| d.line("a-cor") == Some(false));
    d.drive("a-cor", true);
    d.wait_for("radio B keyed", WAIT, |d| d.line("b-ptt") == Some(false));
    d
}

fn assert_released_by_process(d: &Daemon) {
    // The daemon is the only writer of these files, and it has exited: if they say unkeyed,
    // it unkeyed them before it ended.
    assert_eq!(d.line("b-ptt"), Some(true), "radio B must rest unkeyed (high, active-low)");
    assert_eq!(d.line("a-ptt"), Some(false), "radio A was never keyed");
    let log = d.line_log("b-ptt");
    assert_eq!(log.first(), Some(&true), "B's PTT opened unkeyed: {log:?}");
    assert!(log.contains(&false), "B was keyed at some point: {log:?}");
    assert_eq!(log.last(), Some(&true), "B's last level is unkeyed: {log:?}");
}

#[test]
fn sigterm_while_keyed_releases_ptt_before_exit() {
    let mut d = keyed_daemon();
    d.signal(libc::SIGTERM);
    let status = d.wait_exit(WAIT);
    assert!(status.success(), "clean exit after SIGTERM: {status}\n{}", d.stderr());
    assert_released_by_process(&d);
    assert!(d.stderr().contains("SIGTERM"), "{}", d.stderr());
}

#[test]
fn sigint_while_keyed_releases_ptt_before_exit() {
    let mut d = keyed_daemon();
    d.signal(libc::SIGINT);
    let status = d.wait_exit(WAIT);
    assert!(status.success(), "clean exit after SIGINT: {status}\n{}", d.stderr());
    assert_released_by_process(&d);
}

#[test]
fn driver_panic_while_keyed_releases_ptt_and_exits_nonzero() {
    let mut d = keyed_daemon();
    d.inject_fault("panic");
    let status = d.wait_exit(WAIT);
    assert!(!status.success(), "a panic must not look like a clean stop: {status}");
    assert_released_by_process(&d);
    let log = d.stderr();
    assert!(log.contains("simulated driver fault"), "{log}");
    assert!(log.contains("PTT outputs released"), "{log}");
}

#[test]
fn cor_close_unkeys_after_hang_time() {
    let mut d = Daemon::start(&TWO_RADIOS.replace("tx_hang_ms = 30000", "tx_hang_ms = 200"));
    d.wait_for("COR input ready", WAIT, |d| d.line("a-cor") == Some(false));
    d.drive("a-cor", true);
    d.wait_for("radio B keyed", WAIT, |d| d.line("b-ptt") == Some(false));
    d.drive("a-cor", false);
    d.wait_for("radio B unkeyed after squelch hang + tx hang", WAIT, |d| d.line("b-ptt") == Some(true));
    assert!(d.line_log("a-ptt").iter().all(|l| !l), "radio A never keyed by its own COR");
}

/// `roipd safe-off` after a crash that left radio B keyed (its mirror file says low = keyed).
fn safe_off_releases(config: &str) {
    let dir = tempfile::tempdir().unwrap();
    let lines = dir.path().join("lines");
    std::fs::create_dir_all(&lines).unwrap();
    std::fs::write(lines.join("b-ptt"), "0\n").unwrap();
    std::fs::write(lines.join("a-ptt"), "1\n").unwrap();
    let cfg = dir.path().join("roipd.toml");
    std::fs::write(&cfg, config.replace("{lines}", lines.to_str().unwrap())).unwrap();
    let out = std::process::Command::new(common::BIN).args(["safe-off", cfg.to_str().unwrap()]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "safe-off failed: {stderr}");
    assert_eq!(common::read_level(&lines.join("b-ptt")), Some(true), "B unkeyed (active-low rests high)\n{stderr}");
    assert_eq!(common::read_level(&lines.join("a-ptt")), Some(false), "A unkeyed\n{stderr}");
}

#[test]
fn safe_off_unkeys_every_configured_ptt() {
    safe_off_releases(TWO_RADIOS);
}

#[test]
fn safe_off_still_unkeys_when_the_config_has_errors() {
    // A typo elsewhere must not stop the last line of defence.
    safe_off_releases(&TWO_RADIOS.replace("[channel.ops]", "[channel.ops]\nlabl = \"typo\"\n"));
}

#[test]
fn time_out_timer_unkeys_while_the_channel_still_talks() {
    let config = TWO_RADIOS.replace("tx_hang_ms = 30000", "tx_hang_ms = 30000\ntot_ms = 1000");
    let mut d = Daemon::start(&config);
    d.wait_for("COR input ready", WAIT, |d| d.line("a-cor") == Some(false));
    d.drive("a-cor", true);
    d.wait_for("radio B keyed", WAIT, |d| d.line("b-ptt") == Some(false));
    let keyed_at = std::time::Instant::now();
    d.wait_for("radio B unkeyed by its time-out timer", WAIT, |d| d.line("b-ptt") == Some(true));
    assert!(keyed_at.elapsed() < Duration::from_secs(3), "TOT of 1 s took {:?}", keyed_at.elapsed());
    // Locked out: stays unkeyed while A's COR is still open.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(d.line("b-ptt"), Some(true), "no re-key while locked out");
    assert!(d.stderr().contains("time-out timer fired"), "{}", d.stderr());
}

//! The radio is never left keyed: `roipd run` on simulated lines unkeys PTT before it exits,
//! whether it is stopped by SIGTERM/SIGINT or a driver task panics.

mod common;

use std::time::Duration;

use common::config::{Audio, Config, Radio};
use common::Daemon;

/// Radio A's COR keys radio B (same channel). B's PTT is active-low, so keyed = line low.
/// B holds PTT `tx_hang_ms` after the channel goes idle; `tot_ms`: its time-out timer.
fn two_radios(tx_hang_ms: u64, tot_ms: Option<u64>) -> String {
    let mut b = Radio::sim("radio-b", "ops", "b")
        .ptt_active_low()
        .keying("tx_delay_ms", 100)
        .keying("tx_hang_ms", tx_hang_ms)
        .keying("no_audio_ms", 60000);
    if let Some(tot) = tot_ms {
        b = b.keying("tot_ms", tot);
    }
    Config::new("ptt-test").channel("ops").add(Radio::sim("radio-a", "ops", "a")).add(b).toml()
}

const WAIT: Duration = Duration::from_secs(10);

/// Start the daemon and key radio B through radio A's COR.
fn keyed_daemon() -> Daemon {
    let mut d = Daemon::start(&two_radios(30000, None));
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
    let mut d = Daemon::start(&two_radios(200, None));
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
    let out = std::process::Command::new(common::BIN)
        .args(["safe-off", cfg.to_str().unwrap()])
        .env("RUNTIME_DIRECTORY", dir.path().join("run"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "safe-off failed: {stderr}");
    assert_eq!(common::read_level(&lines.join("b-ptt")), Some(true), "B unkeyed (active-low rests high)\n{stderr}");
    assert_eq!(common::read_level(&lines.join("a-ptt")), Some(false), "A unkeyed\n{stderr}");
}

#[test]
fn safe_off_unkeys_every_configured_ptt() {
    safe_off_releases(&two_radios(30000, None));
}

#[test]
fn safe_off_still_unkeys_when_the_config_has_errors() {
    // A typo elsewhere must not stop the last line of defence.
    safe_off_releases(&two_radios(30000, None).replace("[channel.ops]", "[channel.ops]\nlabl = \"typo\"\n"));
}

/// Ways the config on disk can be broken while the daemon that used it died keyed.
#[derive(Clone, Copy, Debug)]
enum Broken {
    DuplicateKey,
    Latin1Label,
    CrOnlyLineEnds,
    FloatOverflow,
    Truncated,
    Deleted,
}

fn break_config(path: &std::path::Path, how: Broken) {
    let text = std::fs::read_to_string(path).unwrap();
    let bytes: Vec<u8> = match how {
        Broken::DuplicateKey => text.replace("tx_delay_ms = 100", "tx_delay_ms = 100, tx_delay_ms = 200").into_bytes(),
        Broken::Latin1Label => {
            // "Opérations" saved as Latin-1: 0xE9 is not UTF-8.
            let mut b = text.replace("[channel.ops]", "[channel.ops]\nlabel = \"Op@rations\"").into_bytes();
            let at = b.iter().position(|&c| c == b'@').unwrap();
            b[at] = 0xE9;
            b
        }
        Broken::CrOnlyLineEnds => text.replace('\n', "\r").into_bytes(),
        Broken::FloatOverflow => text.replace("tx_delay_ms = 100", "tx_delay_ms = 1e999").into_bytes(),
        // Cut in the middle of radio B's PTT: only the daemon's own record still names it.
        Broken::Truncated => text.as_bytes()[..text.find("sim:b-ptt").unwrap() + 6].to_vec(),
        Broken::Deleted => {
            std::fs::remove_file(path).unwrap();
            return;
        }
    };
    std::fs::write(path, bytes).unwrap();
}

/// Radio B keyed, `kill -9` (nothing runs in the daemon), the config broken on disk, then
/// `roipd safe-off` as systemd runs it after every stop.
fn kill9_keyed_then_safe_off(how: Broken) {
    let mut d = keyed_daemon();
    let state: Vec<_> = std::fs::read_dir(d.runtime_dir()).unwrap().filter_map(Result::ok).map(|e| e.path()).collect();
    assert_eq!(state.len(), 1, "one PTT state file in the runtime dir: {state:?}");
    let recorded = std::fs::read_to_string(&state[0]).unwrap();
    assert!(recorded.contains("b-ptt") && recorded.contains("a-ptt"), "{recorded}");
    d.signal(libc::SIGKILL);
    d.wait_exit(WAIT);
    assert_eq!(d.line("b-ptt"), Some(false), "still keyed after kill -9");
    break_config(&d.config_path(), how);
    let out = d.safe_off();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{how:?}: safe-off failed: {}\n{stderr}", out.status);
    assert_eq!(d.line("b-ptt"), Some(true), "{how:?}: B unkeyed (active-low rests high)\n{stderr}");
    assert_eq!(d.line("a-ptt"), Some(false), "{how:?}: A unkeyed\n{stderr}");
    assert!(stderr.contains("state file"), "{how:?}: says where the lines came from\n{stderr}");

    if matches!(how, Broken::Truncated | Broken::Deleted) {
        return;
    }
    // Without the state file, the config text alone must still be enough.
    std::fs::remove_dir_all(d.runtime_dir()).unwrap();
    std::fs::write(d.line_path("b-ptt"), "0\n").unwrap();
    let out = d.safe_off();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{how:?}, no state file: safe-off failed: {}\n{stderr}", out.status);
    assert_eq!(d.line("b-ptt"), Some(true), "{how:?}, no state file: B unkeyed from the config text\n{stderr}");
}

#[test]
fn kill9_keyed_then_duplicate_key_in_config_safe_off_unkeys() {
    kill9_keyed_then_safe_off(Broken::DuplicateKey);
}

#[test]
fn kill9_keyed_then_latin1_byte_in_config_safe_off_unkeys() {
    kill9_keyed_then_safe_off(Broken::Latin1Label);
}

#[test]
fn kill9_keyed_then_cr_only_line_ends_in_config_safe_off_unkeys() {
    kill9_keyed_then_safe_off(Broken::CrOnlyLineEnds);
}

#[test]
fn kill9_keyed_then_float_overflow_in_config_safe_off_unkeys() {
    kill9_keyed_then_safe_off(Broken::FloatOverflow);
}

#[test]
fn kill9_keyed_then_truncated_config_safe_off_unkeys() {
    kill9_keyed_then_safe_off(Broken::Truncated);
}

#[test]
fn kill9_keyed_then_config_deleted_safe_off_unkeys() {
    kill9_keyed_then_safe_off(Broken::Deleted);
}

#[test]
fn safe_off_with_nothing_to_go_on_fails_loudly() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(common::BIN)
        .args(["safe-off", dir.path().join("missing.toml").to_str().unwrap()])
        .env("RUNTIME_DIRECTORY", dir.path().join("run"))
        .output()
        .unwrap();
    assert!(!out.status.success(), "no state file and no config: nothing was released");
}

#[test]
fn time_out_timer_unkeys_while_the_channel_still_talks() {
    let mut d = Daemon::start(&two_radios(30000, Some(1000)));
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

/// Radio B sends a CW ID ("E E" at 5 WPM: 2.16 s of Morse) every 10 s while in use. Radio A
/// has no audio, so B's transmit audio (a WAV file) carries nothing but the ID.
fn cw_id() -> String {
    let b = Radio::sim("radio-b", "ops", "b")
        .ptt_active_low()
        .inhibit("sim:b-inhibit")
        .keying("tx_delay_ms", 100)
        .keying("tx_hang_ms", 200)
        .playback("sim:wav-out:{dir}/b.wav")
        .audio("cw_id", r#"{ callsign = "E E", wpm = 5, interval_s = 10, tone_hz = 800 }"#);
    Config::new("id-test").channel("ops").add(Radio::sim("radio-a", "ops", "a")).add(b).toml()
}

/// 10 ms blocks of B's transmit audio louder than -40 dBFS (the ID is at -18 dBFS peak).
fn loud_blocks(d: &Daemon) -> usize {
    common::wav_blocks_dbfs(&d.dir.path().join("b.wav")).iter().filter(|&&db| db > -40.0).count()
}

/// A 3 s over (the first ID rides on it, so the next is owed 10 s after that one), then B
/// sits idle until the ID is due.
fn cw_id_daemon() -> Daemon {
    let mut d = Daemon::start(&cw_id());
    d.wait_for("lines ready", WAIT, |d| d.line("a-cor") == Some(false) && d.line("b-ptt") == Some(true));
    d.drive("a-cor", true);
    d.wait_for("radio B keyed", WAIT, |d| d.line("b-ptt") == Some(false));
    std::thread::sleep(Duration::from_secs(3));
    d.drive("a-cor", false);
    d.wait_for("radio B unkeyed after the over", WAIT, |d| d.line("b-ptt") == Some(true));
    assert!(d.stderr().contains("station ID on air"), "the first ID rode on the over\n{}", d.stderr());
    d
}

#[test]
fn cw_id_keys_an_idle_radio_just_for_the_id_then_unkeys() {
    let mut d = cw_id_daemon();
    let after_over = loud_blocks(&d);
    assert!(after_over >= 30, "the ID mixed into the over is on air: {after_over} loud blocks");
    d.wait_for("radio B keyed for the ID", Duration::from_secs(15), |d| d.line("b-ptt") == Some(false));
    let keyed_at = std::time::Instant::now();
    d.wait_for("radio B unkeyed after the ID", WAIT, |d| d.line("b-ptt") == Some(true));
    let keyed_for = keyed_at.elapsed();
    println!("measured: ID-only key-up lasted {keyed_for:?} (TX delay 100 ms + 2.16 s of Morse + 200 ms tail)");
    assert!(keyed_for >= Duration::from_millis(2000) && keyed_for < Duration::from_secs(5), "{keyed_for:?}");
    std::thread::sleep(Duration::from_millis(500));
    let total = loud_blocks(&d);
    // Two dits of 240 ms each: about 48 blocks per ID.
    assert!(total >= after_over + 30, "the ID is on air during its own key-up: {after_over} -> {total} loud blocks");
    let mut levels = d.line_log("b-ptt");
    levels.dedup(); // the line is written unkeyed both when opened and when registered
    assert_eq!(levels, [true, false, true, false, true], "keyed twice: the over, then the ID alone");
    assert!(d.stderr().contains("reason=IdDone"), "{}", d.stderr());
    // Nothing owed without new traffic: no third key-up.
    std::thread::sleep(Duration::from_secs(11));
    let mut after = d.line_log("b-ptt");
    after.dedup();
    assert_eq!(after.len(), 5, "no key-up without traffic to identify: {after:?}");
}

#[test]
fn cw_id_waits_while_inhibited_and_shutdown_mid_id_releases_ptt() {
    let mut d = cw_id_daemon();
    d.drive("b-inhibit", true);
    // The ID falls due about 10 s after the over's ID: B stays unkeyed while inhibited.
    std::thread::sleep(Duration::from_secs(11));
    assert_eq!(d.line("b-ptt"), Some(true), "no key-up for the ID while inhibited");
    d.drive("b-inhibit", false);
    d.wait_for("radio B keyed for the owed ID once the inhibit is off", WAIT, |d| d.line("b-ptt") == Some(false));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(d.line("b-ptt"), Some(false), "mid-ID");
    d.signal(libc::SIGTERM);
    let status = d.wait_exit(WAIT);
    assert!(status.success(), "{status}\n{}", d.stderr());
    assert_eq!(d.line("b-ptt"), Some(true), "released on shutdown mid-ID");
    assert_eq!(d.line_log("b-ptt").last(), Some(&true));
}

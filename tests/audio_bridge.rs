//! Audio through the running daemon: radio A's receiver (a simulated 1 kHz tone source) is
//! heard on radio B's transmitter (a WAV sink) while A's COR is open, B keyed meanwhile.

mod common;

use std::time::Duration;

use common::Daemon;

const CONFIG: &str = include_str!("configs/radio-a-to-b.toml");

#[test]
fn tone_on_radio_a_is_transmitted_by_radio_b() {
    let mut d = Daemon::start(CONFIG);
    d.wait_for("COR input ready", Duration::from_secs(10), |d| d.line("a-cor") == Some(false));
    std::thread::sleep(Duration::from_millis(300));
    d.drive("a-cor", true);
    d.wait_for("radio B keyed", Duration::from_secs(5), |d| d.line("b-ptt") == Some(true));
    std::thread::sleep(Duration::from_millis(1500));
    d.drive("a-cor", false);
    d.wait_for("radio B unkeyed after the hang", Duration::from_secs(5), |d| d.line("b-ptt") == Some(false));
    std::thread::sleep(Duration::from_millis(200));
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(10)).success(), "{}", d.stderr());

    let wav = d.dir.path().join("b-tx.wav");
    assert_eq!(hound::WavReader::open(&wav).expect("B's transmit WAV").spec().sample_rate, 48_000);
    let blocks = common::wav_blocks_dbfs(&wav);
    let loud: Vec<usize> = (0..blocks.len()).filter(|&i| blocks[i] > -30.0).collect();
    assert!(!loud.is_empty(), "no tone reached radio B\n{}", d.stderr());
    let span_ms = (loud.last().unwrap() - loud.first().unwrap() + 1) * 10;
    // ~1.5 s of COR, less nothing: the TX delay holds audio back rather than cutting it.
    assert!((1200..=2000).contains(&span_ms), "tone lasted {span_ms} ms on B");
    let quiet_before = loud[0] >= 20;
    assert!(quiet_before, "B was silent before A's COR opened");
    // Level: AGC to about -18 dBFS RMS, limiter at -6 dBFS peak.
    if let Err(e) = common::blocks_within(&blocks, loud[0] + 20, loud[0] + 100, -24.0..-12.0) {
        panic!("radio B's transmit level: {e}\n{}", d.stderr());
    }
}

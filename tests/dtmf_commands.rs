//! DTMF commands end to end on sim devices, with a real mosquitto: radio-a's receiver plays
//! `1234*102` (its PIN, then "select channel 02"): the port moves from `ops` to `fire` (its
//! retained port state says so), a `dtmf` event says `accepted` with the PIN masked, and the
//! radio is keyed for the acknowledgement beep, which is on its transmit audio, and unkeyed
//! after it. radio-b plays `4321*102` (a wrong PIN): it stays on `ems`, a `dtmf` event says
//! `wrong_pin`, and it hears the error beeps (400 Hz), PTT released after them. A third test:
//! `*9` raises an emergency on the port's channel, the same action as its emergency line.

mod common;
#[allow(dead_code)]
mod fleet;

use std::path::Path;
use std::time::Duration;

use common::config::{Audio, Config, Mqtt, Radio};
use common::Daemon;
use fleet::broker::Broker;
use fleet::probe::{Msg, Probe};

const WAIT: Duration = Duration::from_secs(15);
const RATE: u32 = 48_000;

/// 1 s of silence, `digits` (80 ms tones, 80 ms apart, each tone at -16 dBFS peak), then 30 s
/// of silence (the sim source loops; the test is over long before).
fn dtmf_wav(path: &Path, digits: &str) {
    let spec =
        hound::WavSpec { channels: 1, sample_rate: RATE, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    let silence = |w: &mut hound::WavWriter<_>, ms: u32| {
        for _ in 0..ms * RATE / 1000 {
            w.write_sample(0i16).unwrap();
        }
    };
    silence(&mut w, 1000);
    for d in digits.chars() {
        let (fl, fh) = roipd::dsp::dtmf::dtmf_freqs(d).unwrap();
        let a = 10f64.powf(-16.0 / 20.0);
        for i in 0..80 * RATE / 1000 {
            let t = i as f64 / RATE as f64;
            let x = a * ((std::f64::consts::TAU * fl * t).sin() + (std::f64::consts::TAU * fh * t).sin());
            w.write_sample((x * 32767.0) as i16).unwrap();
        }
        silence(&mut w, 80);
    }
    silence(&mut w, 30_000);
    w.finalize().unwrap();
}

fn config(port: u16, wavs: &Path) -> String {
    let radio = |name: &str, x: &str, channel: &str| {
        Radio::sim(name, channel, x)
            .capture(&format!("sim:wav:{}/{x}.wav", wavs.display()))
            .playback(&format!("sim:wav-out:{{dir}}/{x}-tx.wav"))
            .keying("tx_delay_ms", 100)
            .set("dtmf", r#"{ pin = "1234", channels = ["ops", "fire"], timeout_ms = 2000 }"#)
    };
    Config::new("dtmf-box")
        .channel("ops")
        .channel("fire")
        .channel("ems")
        .add(radio("radio-a", "a", "ops"))
        .add(radio("radio-b", "b", "ems"))
        .add(Mqtt::new(port))
        .toml()
}

fn is_state(port: &'static str) -> impl Fn(&Msg) -> bool {
    move |m| m.topic == format!("roipd/dtmf-box/state/{port}")
}

fn is_dtmf_event(port: &'static str, reason: &'static str) -> impl Fn(&Msg) -> bool {
    move |m| {
        let j = m.json();
        m.topic == "roipd/dtmf-box/event" && j["kind"] == "dtmf" && j["port"] == port && j["reason"] == reason
    }
}

/// Samples of a `sim:wav-out` file.
fn samples(path: &Path) -> Vec<f32> {
    let Ok(mut r) = hound::WavReader::open(path) else { return Vec::new() };
    r.samples::<i16>().filter_map(Result::ok).map(|s| s as f32 / 32768.0).collect()
}

/// Power of `freq` in `x` relative to the total (0..1), by a plain DFT bin.
fn share_of(x: &[f32], freq: f64) -> f64 {
    let w = std::f64::consts::TAU * freq / RATE as f64;
    let (mut re, mut im) = (0.0, 0.0);
    for (i, &s) in x.iter().enumerate() {
        re += s as f64 * (w * i as f64).cos();
        im -= s as f64 * (w * i as f64).sin();
    }
    let total: f64 = x.iter().map(|&s| (s as f64).powi(2)).sum();
    2.0 * (re * re + im * im) / x.len() as f64 / total.max(1e-12)
}

/// The loud part of a transmit recording (samples above -40 dBFS, with what lies between).
fn loud_part(x: &[f32]) -> &[f32] {
    let loud = |s: &f32| s.abs() > 0.01;
    match (x.iter().position(loud), x.iter().rposition(loud)) {
        (Some(a), Some(b)) => &x[a..=b],
        _ => &[],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dtmf_command_moves_the_port_a_wrong_pin_does_not_and_both_get_their_reply() {
    let wavs = tempfile::tempdir().unwrap();
    dtmf_wav(&wavs.path().join("a.wav"), "1234*102");
    dtmf_wav(&wavs.path().join("b.wav"), "4321*102");
    let broker = Broker::start();
    let probe = Probe::connect(broker.anon, &["roipd/dtmf-box/#"]).await;
    let mut d = Daemon::start(&config(broker.anon, wavs.path()));

    let moved =
        probe.wait("radio-a on channel fire", WAIT, |m| is_state("radio-a")(m) && m.json()["channel"] == "fire").await;
    println!("radio-a: {}", moved.json());
    let ok = probe.wait("radio-a's dtmf event", WAIT, is_dtmf_event("radio-a", "accepted")).await.json();
    assert_eq!(ok["digits"], "xxxx*102", "{ok}");
    assert_eq!(ok["channel"], "fire", "{ok}");
    let bad = probe.wait("radio-b's wrong PIN", WAIT, is_dtmf_event("radio-b", "wrong_pin")).await.json();
    assert_eq!(bad["digits"], "xxxx", "the PIN never reaches MQTT: {bad}");

    // Both replies keyed and released.
    for x in ["a", "b"] {
        d.wait_for(&format!("{x}: PTT keyed for the reply and released"), WAIT, |d| {
            let log = d.line_log(&format!("{x}-ptt"));
            log.iter().any(|&l| l) && d.line(&format!("{x}-ptt")) == Some(false)
        });
    }
    // The recordings are flushed about once a second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let a = samples(&d.dir.path().join("a-tx.wav"));
    let reply = loud_part(&a);
    let ms = reply.len() as f64 / 48.0;
    println!("radio-a transmitted {ms:.0} ms of reply");
    assert!((250.0..=330.0).contains(&ms), "the acknowledgement (100 + 40 + 150 ms) on radio-a's air: {ms:.0} ms");
    let (lo, hi) = (share_of(&reply[..4800], 1000.0), share_of(&reply[reply.len() - 7200..], 1500.0));
    assert!(lo > 0.8 && hi > 0.8, "1000 Hz then 1500 Hz: {lo:.2} {hi:.2}");
    let b = samples(&d.dir.path().join("b-tx.wav"));
    let error = loud_part(&b);
    assert!(!error.is_empty(), "radio-b hears the error beeps");
    assert!(share_of(&error[..4800], 400.0) > 0.8, "400 Hz");

    tokio::time::sleep(Duration::from_secs(1)).await;
    let b_channels: Vec<_> =
        probe.all().into_iter().filter(|m| is_state("radio-b")(m)).map(|m| m.json()["channel"].clone()).collect();
    assert!(!b_channels.is_empty() && b_channels.iter().all(|c| c == "ems"), "radio-b moved: {b_channels:?}");
    assert_eq!(d.line("a-ptt"), Some(false));
    assert_eq!(d.line("b-ptt"), Some(false));
    drop(d);
}

/// Issue 18: the DTMF command `emergency` (`1234*9`) raises an emergency on the radio's channel
/// with the radio its caller, as its emergency line does: the `emergency` event (reason `dtmf`)
/// and the retained state on MQTT, a `dtmf` event `accepted`, the acknowledgement beep keyed
/// and released; a shutdown leaves the radio unkeyed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dtmf_emergency_command_raises_the_emergency_on_the_radios_channel() {
    let wavs = tempfile::tempdir().unwrap();
    dtmf_wav(&wavs.path().join("a.wav"), "1234*9");
    dtmf_wav(&wavs.path().join("b.wav"), "");
    let broker = Broker::start();
    let probe = Probe::connect(broker.anon, &["roipd/dtmf-box/#"]).await;
    let config = config(broker.anon, wavs.path()).replace(
        r#"timeout_ms = 2000 }"#,
        r###"timeout_ms = 2000, commands = { "*9" = "emergency", "##" = "cancel" } }"###,
    );
    assert!(config.contains(r#""*9" = "emergency""#), "{config}");
    let mut d = Daemon::start(&config);
    let raised = probe
        .wait("the emergency event", WAIT, |m| m.topic == "roipd/dtmf-box/event" && m.json()["kind"] == "emergency")
        .await
        .json();
    assert_eq!(raised["channel"], "ops", "{raised}");
    assert_eq!(raised["reason"], "dtmf", "{raised}");
    let state = probe.wait("the retained emergency state", WAIT, |m| m.topic == "roipd/dtmf-box/emergency/ops").await;
    assert_eq!(state.json()["active"], true, "{}", state.json());
    assert_eq!(state.json()["source_kind"], "dtmf", "{}", state.json());
    let ok = probe.wait("radio-a's dtmf event", WAIT, is_dtmf_event("radio-a", "accepted")).await.json();
    assert_eq!(ok["digits"], "xxxx*9", "{ok}");
    assert_eq!(ok["detail"], "emergency raised", "{ok}");
    d.wait_for("a: PTT keyed for the reply and released", WAIT, |d| {
        d.line_log("a-ptt").iter().any(|&l| l) && d.line("a-ptt") == Some(false)
    });
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(WAIT).success(), "{}", d.stderr());
    assert_eq!(d.line("a-ptt"), Some(false));
    assert_eq!(d.line("b-ptt"), Some(false));
}

//! A fleet of roipd processes on Janus: edges with sim radios publish into one VideoRoom per
//! channel, a roipd floor host (`hub-1`) decides who talks (over Mosquitto), and audio from one
//! radio comes out of another. Real `janus`, `mosquitto` and `roipd run` processes in a private
//! network namespace (tests/common/fleet_ns.rs); figures are printed, never asserted tightly.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::fleet_ns::{in_namespace, inside, roipd, tone_quality, wav_samples, Janus, Mosquitto};
use common::Daemon;

const OUTER_LIMIT: Duration = Duration::from_secs(240);
const MOSQUITTO: (&str, &str) = ("mosquitto", "mosquitto");
const UP_WAIT: Duration = Duration::from_secs(30);
const TONE_A: f32 = 1000.0;

/// The harness itself: Janus and Mosquitto start in the namespace and a roipd process there
/// reaches the broker.
#[test]
fn fleet_namespace_runs_janus_mosquitto_and_roipd() {
    in_namespace("inner_fleet_namespace_runs_janus_mosquitto_and_roipd", &[MOSQUITTO], OUTER_LIMIT);
}

#[test]
#[ignore = "runs inside the namespace its outer test makes"]
fn inner_fleet_namespace_runs_janus_mosquitto_and_roipd() {
    if !inside() {
        return;
    }
    let _janus = Janus::start();
    let broker = Mosquitto::start();
    let mut box_a = roipd(
        "device_id = \"edge-a\"\n[gpio.sim]\ndir = \"{lines}\"\n[channel.ops]\n\
         [port.radio1]\nkind = \"radio\"\nchannel = \"ops\"\ncor = { line = \"sim:cor\" }\nptt = { line = \"sim:ptt\" }\n\
         [mqtt]\nurl = \"{mqtt_url}\"\n",
    );
    box_a.wait_for("roipd running", Duration::from_secs(20), |d| d.stderr().contains("roipd running"));
    let started = Instant::now();
    while !broker.log().contains("edge-a") {
        assert!(started.elapsed() < Duration::from_secs(10), "edge-a never reached the broker:\n{}", broker.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------------------
// The fleet

const JANUS_UPLINK: &str = "[uplink]\nkind = \"janus\"\nurl = \"{janus_url}\"\nadmin_key_file = \"{admin_key_file}\"\n";
const MQTT: &str = "[mqtt]\nurl = \"{mqtt_url}\"\n";

/// `[channel.NAME]` with its room, for each (name, room).
fn channels(list: &[(String, u64)]) -> String {
    list.iter()
        .map(|(name, room)| {
            format!("[channel.{name}]\n[channel.{name}.janus]\nroom = {room}\nsecret_file = \"{{room_secret_file}}\"\npublishers = 30\n")
        })
        .collect()
}

fn ops() -> Vec<(String, u64)> {
    vec![("ops".to_string(), 1234)]
}

/// The floor host: arbiters for `list`, served over MQTT, enforced in Janus with `moderate`.
fn floor_host(list: &[(String, u64)]) -> Daemon {
    roipd(&format!("device_id = \"hub-1\"\n{}{JANUS_UPLINK}{MQTT}", channels(list)))
}

/// A field box with one sim radio on `ops`: it hears a `hz` tone while its COR (`cor`) is open
/// and records what it transmits to `tx.wav` (PTT: `ptt`).
fn radio_edge(device: &str, hz: f32) -> Daemon {
    roipd(&format!(
        "device_id = \"{device}\"\n[gpio.sim]\ndir = \"{{lines}}\"\n{}\
         [port.radio1]\nkind = \"radio\"\nchannel = \"ops\"\ncor = {{ line = \"sim:cor\" }}\nptt = {{ line = \"sim:ptt\" }}\n\
         audio = {{ capture = \"sim:tone:{hz}\", playback = \"sim:wav-out:{{dir}}/tx.wav\" }}\n\
         keying = {{ tx_delay_ms = 100 }}\n\
         {JANUS_UPLINK}floor_hub = \"hub-1\"\n{MQTT}",
        channels(&ops())
    ))
}

/// Wait until the daemon has logged its `n`th uplink Up (Janus published and floor joined).
fn wait_up(d: &mut Daemon, n: usize) {
    d.wait_for(&format!("uplink up #{n}"), UP_WAIT, |d| d.stderr().matches("uplink up").count() >= n);
}

fn tx_wav(d: &Daemon) -> PathBuf {
    d.dir.path().join("tx.wav")
}

/// Wait for a sim line to reach `level`; how long it took.
fn wait_line(d: &mut Daemon, line: &str, level: bool, limit: Duration) -> Duration {
    let started = Instant::now();
    d.wait_for(&format!("{line} = {level}"), limit, |d| d.line(line) == Some(level));
    started.elapsed()
}

/// Janus, the broker, the floor host, and edges A (talks a 1 kHz tone) and B (listens), both up.
struct TwoEdges {
    _janus: Janus,
    _broker: Mosquitto,
    _host: Daemon,
    a: Daemon,
    b: Daemon,
}

fn two_edges() -> TwoEdges {
    let janus = Janus::start();
    let broker = Mosquitto::start();
    let host = floor_host(&ops());
    let started = Instant::now();
    let mut a = radio_edge("edge-a", TONE_A);
    let mut b = radio_edge("edge-b", 1500.0);
    wait_up(&mut a, 1);
    wait_up(&mut b, 1);
    println!("both edges up {} ms after start", started.elapsed().as_millis());
    TwoEdges { _janus: janus, _broker: broker, _host: host, a, b }
}

// ---------------------------------------------------------------------------------------------
// (a) radio A to radio B

#[test]
fn janus_fleet_audio_from_radio_a_comes_out_of_radio_b() {
    in_namespace("inner_janus_fleet_audio_from_radio_a_comes_out_of_radio_b", &[MOSQUITTO], OUTER_LIMIT);
}

#[test]
#[ignore = "runs inside the namespace its outer test makes"]
fn inner_janus_fleet_audio_from_radio_a_comes_out_of_radio_b() {
    if !inside() {
        return;
    }
    let mut fleet = two_edges();
    let (a, b) = (&mut fleet.a, &mut fleet.b);
    a.drive("cor", true);
    let keyed = wait_line(b, "ptt", true, Duration::from_secs(10));
    println!("A's COR to B's PTT: {} ms", keyed.as_millis());
    std::thread::sleep(Duration::from_secs(4));
    a.drive("cor", false);
    let unkeyed = wait_line(b, "ptt", false, Duration::from_secs(10));
    println!("A's COR closed to B's PTT released: {} ms", unkeyed.as_millis());
    std::thread::sleep(Duration::from_millis(1200));

    let q = tone_quality(&wav_samples(&tx_wav(b)), TONE_A);
    println!("B transmitted {} audible 20 ms frames, {:.1} % carrying A's tone, SNR {:.1} dB", q.audible_frames, 100.0 * q.tone_share(), q.snr_db);
    assert!(q.audible_frames >= 150, "B transmitted {} frames of audio (4 s talked): {q:?}", q.audible_frames);
    assert!(q.tone_share() > 0.9, "{q:?}");
    assert!(!a.line_log("ptt").contains(&true), "A's own radio keyed by its own talk");
    assert_eq!(b.line_log("ptt").iter().filter(|&&on| on).count(), 1, "B keyed exactly once: {:?}", b.line_log("ptt"));
}

/// The quality figure the loss test prints: a clean tone scores every frame, a damaged one not.
#[test]
fn tone_quality_of_a_pure_and_a_damaged_tone() {
    let tone: Vec<f32> =
        (0..48_000).map(|i| 0.3 * (2.0 * std::f32::consts::PI * 1000.0 * i as f32 / 48_000.0).sin()).collect();
    let q = tone_quality(&tone, 1000.0);
    assert_eq!((q.audible_frames, q.tone_frames), (50, 50));
    assert!(q.snr_db > 30.0, "{q:?}");
    // Every other frame replaced by a 3 kHz tone: half the frames carry it, SNR about 0 dB.
    let mut damaged = tone.clone();
    for (f, frame) in damaged.chunks_exact_mut(960).enumerate().filter(|(f, _)| f % 2 == 1) {
        for (i, s) in frame.iter_mut().enumerate() {
            *s = 0.3 * (2.0 * std::f32::consts::PI * 3000.0 * (f * 960 + i) as f32 / 48_000.0).sin();
        }
    }
    let q = tone_quality(&damaged, 1000.0);
    assert_eq!((q.audible_frames, q.tone_frames), (50, 25));
    assert!(q.snr_db.abs() < 1.0, "{q:?}");
}

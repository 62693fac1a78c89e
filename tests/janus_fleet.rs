//! A fleet of roipd processes on Janus: edges with sim radios publish into one VideoRoom per
//! channel, a roipd floor host decides who talks (over Mosquitto), and audio from one radio
//! comes out of another. Real `janus`, `mosquitto` and `roipd run` processes in a private
//! network namespace (tests/common/fleet_ns.rs).

mod common;

use std::time::Duration;

use common::fleet_ns::{in_namespace, inside, roipd, tone_quality, Janus, Mosquitto};

const OUTER_LIMIT: Duration = Duration::from_secs(240);
const MOSQUITTO: (&str, &str) = ("mosquitto", "mosquitto");

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
    let started = std::time::Instant::now();
    while !broker.log().contains("edge-a") {
        assert!(started.elapsed() < Duration::from_secs(10), "edge-a never reached the broker:\n{}", broker.log());
        std::thread::sleep(Duration::from_millis(50));
    }
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

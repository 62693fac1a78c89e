//! A simulated dispatch desk on a box running the embedded hub: sim GPIO buttons are driven and
//! LEDs read through the sim line files, field radios talk with `sim:tone` captures, the desk's
//! speaker is a `sim:wav-out` WAV analysed with a Goertzel filter per tone.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{free_port, Daemon};

const SR: f32 = 48_000.0;

fn samples(path: &Path) -> Vec<f32> {
    let mut reader = hound::WavReader::open(path).expect("desk WAV");
    assert_eq!(reader.spec().sample_rate, 48_000);
    reader.samples::<i16>().map(|s| s.unwrap() as f32 / 32768.0).collect()
}

/// Amplitude of the `hz` component of `x` (a full-scale sine of that frequency gives 1.0).
fn goertzel(x: &[f32], hz: f32) -> f32 {
    let w = 2.0 * std::f32::consts::PI * hz / SR;
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f32, 0.0f32);
    for &v in x {
        let s = v + coeff * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    2.0 * power.max(0.0).sqrt() / x.len() as f32
}

fn db(amplitude: f32) -> f32 {
    20.0 * amplitude.max(1e-9).log10()
}

/// RMS dBFS of a tone of this amplitude.
fn rms_db(amplitude: f32) -> f32 {
    db(amplitude / std::f32::consts::SQRT_2)
}

/// The first 10 ms block from `from` on whose RMS is above `dbfs`.
fn first_loud(x: &[f32], from: usize, dbfs: f32) -> Option<usize> {
    (from..x.len() / 480).find(|&b| {
        let blk = &x[b * 480..(b + 1) * 480];
        10.0 * (blk.iter().map(|s| s * s).sum::<f32>() / 480.0).max(1e-12).log10() > dbfs
    })
}

fn hub(port: u16) -> String {
    format!("[hub]\nlisten = \"127.0.0.1:{port}\"\n")
}

/// Ten channels, three field radios talking on c0, c3 and c7 with different tones, the desk
/// monitoring all ten at 0, -6 and -12 dB on those three.
fn ten_channel_config() -> String {
    let mut c = String::from("device_id = \"desk-mix\"\n[gpio.sim]\ndir = \"{lines}\"\n");
    c += &hub(free_port());
    for i in 0..10 {
        c += &format!("[channel.c{i}]\n");
    }
    for (name, channel, hz) in [("r0", 0, 500), ("r3", 3, 1100), ("r7", 7, 1700)] {
        c += &format!(
            "[port.{name}]\nkind = \"radio\"\nchannel = \"c{channel}\"\ncor = {{ line = \"sim:{name}-cor\" }}\n\
             ptt = {{ line = \"sim:{name}-ptt\" }}\naudio = {{ capture = \"sim:tone:{hz}:-12\" }}\n"
        );
    }
    c += "[port.desk]\nkind = \"desk\"\n";
    c += &format!("channels = [{}]\n", (0..10).map(|i| format!("\"c{i}\"")).collect::<Vec<_>>().join(", "));
    // No ducking: each tone must come out at exactly its set gain.
    c += "duck_db = 0\nptt = { line = \"sim:desk-ptt\" }\n";
    c += "audio = { capture = \"sim:tone:2500:-12\", playback = \"sim:wav-out:{dir}/desk.wav\" }\n";
    c += "[port.desk.buttons]\n\"listen.c3\" = { line = \"sim:listen-c3\" }\n";
    c += "[port.desk.leds]\nrx = { line = \"sim:led-rx\" }\n\"rx.c0\" = { line = \"sim:led-rx-c0\" }\n\
          \"rx.c3\" = { line = \"sim:led-rx-c3\" }\n\"rx.c5\" = { line = \"sim:led-rx-c5\" }\n";
    c += "[port.desk.monitor.c3]\nvolume_db = -6\n[port.desk.monitor.c7]\nvolume_db = -12\n";
    c
}

#[test]
fn three_talkers_on_ten_channels_are_mixed_at_their_gains_without_clipping_and_mute_is_immediate() {
    let mut d = Daemon::start(&ten_channel_config());
    d.wait_for("desk LEDs ready", Duration::from_secs(10), |d| d.line("led-rx") == Some(false));
    std::thread::sleep(Duration::from_millis(300));
    for r in ["r0", "r3", "r7"] {
        d.drive(&format!("{r}-cor"), true);
    }
    d.wait_for("RX LEDs lit for c0 and c3", Duration::from_secs(5), |d| {
        d.line("led-rx-c0") == Some(true) && d.line("led-rx-c3") == Some(true)
    });
    assert_eq!(d.line("led-rx-c5"), Some(false), "an idle channel's LED stays dark");
    std::thread::sleep(Duration::from_millis(2000));
    // Mute c3 with its listen button (a press toggles), then unmute it.
    d.drive("listen-c3", true);
    std::thread::sleep(Duration::from_millis(100));
    d.drive("listen-c3", false);
    std::thread::sleep(Duration::from_millis(1000));
    d.drive("listen-c3", true);
    std::thread::sleep(Duration::from_millis(100));
    d.drive("listen-c3", false);
    std::thread::sleep(Duration::from_millis(1000));
    for r in ["r0", "r3", "r7"] {
        d.drive(&format!("{r}-cor"), false);
    }
    d.wait_for("RX LEDs dark again", Duration::from_secs(5), |d| d.line("led-rx") == Some(false));
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(10)).success(), "{}", d.stderr());

    let x = samples(&d.dir.path().join("desk.wav"));
    let start = first_loud(&x, 0, -40.0).expect("the talkers reached the desk") * 480;
    // One second well inside the three-talker stretch (AGC settled).
    let mid = &x[start + 48_000..start + 96_000];
    let (a0, a3, a7) = (goertzel(mid, 500.0), goertzel(mid, 1100.0), goertzel(mid, 1700.0));
    let (l0, l3, l7) = (rms_db(a0), rms_db(a3), rms_db(a7));
    eprintln!("tone levels: c0 {l0:.1} dBFS, c3 {l3:.1} dBFS, c7 {l7:.1} dBFS");
    // The radios' receive AGC brings each tone to about -18 dBFS RMS; the desk adds its gain.
    assert!((-21.0..=-15.0).contains(&l0), "c0 at {l0:.1} dBFS");
    assert!(((l0 - l3) - 6.0).abs() <= 1.0, "c3 not 6 dB under c0: {l0:.1} / {l3:.1}");
    assert!(((l0 - l7) - 12.0).abs() <= 1.5, "c7 not 12 dB under c0: {l0:.1} / {l7:.1}");
    assert!(goertzel(mid, 2500.0) < a7 / 30.0, "the desk's own microphone is not in its speaker");
    // Never clips: the limiter's ceiling (-6 dBFS) holds over the whole file.
    let peak = x.iter().fold(0.0f32, |m, s| m.max(s.abs()));
    assert!(db(peak) <= -5.9, "peak {:.2} dBFS", db(peak));

    // Mute and unmute: c3's tone is gone / back within one 10 ms frame of the change.
    let window = 240; // 5 ms
    let c3_db: Vec<f32> = x[start..].chunks(window).map(|w| rms_db(goertzel(w, 1100.0))).collect();
    let on = l3 - 3.0;
    let muted_at = (200..c3_db.len()).find(|&i| c3_db[i] < on - 30.0).expect("c3 muted");
    let back_at = (muted_at..c3_db.len()).find(|&i| c3_db[i] > on).expect("c3 unmuted");
    let fall = muted_at - (0..muted_at).rev().find(|&i| c3_db[i] > on).unwrap();
    let rise = back_at - (muted_at..back_at).rev().find(|&i| c3_db[i] < on - 30.0).unwrap();
    assert!(fall <= 2 && rise <= 2, "mute took {} ms, unmute {} ms", fall * 5, rise * 5);
    let muted_ms = (back_at - muted_at) * 5;
    assert!((800..=1300).contains(&muted_ms), "muted for {muted_ms} ms");
    // c0 played on undisturbed meanwhile.
    let during_mute = &x[start + (muted_at + 20) * window..start + (back_at - 20) * window];
    assert!((rms_db(goertzel(during_mute, 500.0)) - l0).abs() < 1.5);
}

/// One channel `ops`: field radio A (COR, 1 kHz receive), radio B carrying the channel to the
/// air (its transmit audio a WAV), and the desk with a PTT button and LEDs.
fn preempt_config(extra: &str) -> String {
    format!(
        r#"device_id = "desk-preempt"
[gpio.sim]
dir = "{{lines}}"
{hub}
[channel.ops]
{extra}
[port.radio-a]
kind = "radio"
channel = "ops"
cor = {{ line = "sim:a-cor" }}
ptt = {{ line = "sim:a-ptt" }}
audio = {{ capture = "sim:tone:1000:-12" }}

[port.radio-b]
kind = "radio"
channel = "ops"
cor = {{ line = "sim:b-cor" }}
ptt = {{ line = "sim:b-ptt" }}
audio = {{ playback = "sim:wav-out:{{dir}}/b-tx.wav" }}
keying = {{ tx_delay_ms = 100, tx_hang_ms = 200, tot_ms = 4000 }}

[port.desk]
kind = "desk"
channels = ["ops"]
ptt = {{ line = "sim:desk-ptt" }}
audio = {{ capture = "sim:tone:2500:-12", playback = "sim:wav-out:{{dir}}/desk.wav" }}
leds = {{ "tx.ops" = {{ line = "sim:led-tx" }}, "busy.ops" = {{ line = "sim:led-busy" }}, "rx.ops" = {{ line = "sim:led-rx" }} }}
"#,
        hub = hub(free_port())
    )
}

#[test]
fn desk_ptt_preempts_a_field_talker_and_the_radio_carries_the_desk() {
    let mut d = Daemon::start(&preempt_config(""));
    d.wait_for("desk ready", Duration::from_secs(10), |d| d.line("led-busy") == Some(false));
    std::thread::sleep(Duration::from_millis(300));
    d.drive("a-cor", true);
    d.wait_for("B keyed for A", Duration::from_secs(5), |d| d.line("b-ptt") == Some(true));
    d.wait_for("busy and RX LEDs", Duration::from_secs(5), |d| d.line("led-busy") == Some(true) && d.line("led-rx") == Some(true));
    assert_eq!(d.line("led-tx"), Some(false));
    std::thread::sleep(Duration::from_millis(1000));
    d.drive("desk-ptt", true);
    d.wait_for("desk holds the floor", Duration::from_secs(5), |d| d.line("led-tx") == Some(true));
    d.wait_for("busy LED off", Duration::from_secs(2), |d| d.line("led-busy") == Some(false));
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(d.line("b-ptt"), Some(true), "B stays keyed, now for the desk");
    assert!(d.stderr().contains("floor revoked"), "A was not revoked\n{}", d.stderr());
    d.drive("desk-ptt", false);
    d.wait_for("TX LED off", Duration::from_secs(2), |d| d.line("led-tx") == Some(false));
    d.drive("a-cor", false);
    d.wait_for("B unkeyed", Duration::from_secs(5), |d| d.line("b-ptt") == Some(false));
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(10)).success(), "{}", d.stderr());

    // B's transmitter: A's 1 kHz first, then the desk's 2.5 kHz microphone, not A's any more.
    let x = samples(&d.dir.path().join("b-tx.wav"));
    let start = first_loud(&x, 0, -40.0).expect("B transmitted") * 480;
    let blocks: Vec<(f32, f32)> =
        x[start..].chunks(4800).map(|w| (goertzel(w, 1000.0), goertzel(w, 2500.0))).collect();
    let desk_from = blocks.iter().position(|&(_, desk)| desk > 0.02).expect("the desk's voice went out on B");
    assert!(blocks[..desk_from].iter().any(|&(a, _)| a > 0.02), "A was heard before");
    let after = &blocks[desk_from + 1..(desk_from + 10).min(blocks.len())];
    assert!(after.iter().all(|&(a, desk)| desk > 0.02 && a < desk / 30.0), "A still heard with the desk: {after:?}");
}

#[test]
fn desk_held_ptt_unkeys_at_the_radio_tot_and_on_shutdown() {
    let mut d = Daemon::start(&preempt_config(""));
    d.wait_for("desk ready", Duration::from_secs(10), |d| d.line("led-tx") == Some(false));
    std::thread::sleep(Duration::from_millis(300));
    // A stuck desk PTT: radio B's time-out timer (4 s here) unkeys it anyway.
    d.drive("desk-ptt", true);
    d.wait_for("B keyed for the desk", Duration::from_secs(5), |d| d.line("b-ptt") == Some(true));
    let keyed = std::time::Instant::now();
    d.wait_for("B unkeyed by its TOT", Duration::from_secs(8), |d| d.line("b-ptt") == Some(false));
    assert!(keyed.elapsed() >= Duration::from_millis(3500), "unkeyed early: {:?}", keyed.elapsed());
    assert!(d.stderr().contains("time-out timer fired"), "{}", d.stderr());
    d.drive("desk-ptt", false);
    std::thread::sleep(Duration::from_millis(500));
    // Pressed again and held through a shutdown: every PTT is released on the way out.
    d.drive("desk-ptt", true);
    d.wait_for("B keyed again", Duration::from_secs(5), |d| d.line("b-ptt") == Some(true));
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(10)).success(), "{}", d.stderr());
    assert_eq!(d.line("b-ptt"), Some(false), "B left keyed after shutdown");
    assert_eq!(d.line("led-tx"), Some(false));
}

#[test]
fn desk_loses_a_floor_it_holds_past_the_channel_max_talk_time() {
    let mut d = Daemon::start(&preempt_config("max_talk_ms = 2000\n"));
    d.wait_for("desk ready", Duration::from_secs(10), |d| d.line("led-tx") == Some(false));
    std::thread::sleep(Duration::from_millis(300));
    d.drive("desk-ptt", true);
    d.wait_for("desk holds the floor", Duration::from_secs(5), |d| d.line("led-tx") == Some(true));
    d.wait_for("desk revoked at max talk", Duration::from_secs(5), |d| d.line("led-tx") == Some(false));
    d.wait_for("B unkeyed", Duration::from_secs(3), |d| d.line("b-ptt") == Some(false));
    assert!(d.stderr().contains("floor revoked"), "{}", d.stderr());
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(10)).success(), "{}", d.stderr());
}

//! A simulated dispatch desk on a box running the embedded hub: sim GPIO buttons are driven and
//! LEDs read through the sim line files, field radios talk with `sim:tone` captures, the desk's
//! speaker is a `sim:wav-out` WAV analysed with a Goertzel filter per tone.

mod common;
#[allow(dead_code)]
mod fleet;

use std::path::Path;
use std::time::Duration;

use common::config::{sign, Audio, Config, Desk, Hub, Mqtt, Radio, Record, Uplink};
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

/// Ten channels, three field radios talking on c0, c3 and c7 with different tones, the desk
/// monitoring all ten at 0, -6 and -12 dB on those three.
fn ten_channel_config() -> String {
    let names: Vec<String> = (0..10).map(|i| format!("c{i}")).collect();
    let mut c = Config::new("desk-mix").add(Hub::new(free_port()));
    for name in &names {
        c = c.channel(name);
    }
    for (name, channel, hz) in [("r0", "c0", 500), ("r3", "c3", 1100), ("r7", "c7", 1700)] {
        c = c.add(Radio::sim(name, channel, name).capture(&format!("sim:tone:{hz}:-12")));
    }
    let channels: Vec<&str> = names.iter().map(String::as_str).collect();
    let desk = Desk::new("desk", &channels)
        // No ducking: each tone must come out at exactly its set gain.
        .set("duck_db", 0)
        .ptt("sim:desk-ptt")
        .capture("sim:tone:2500:-12")
        .playback("sim:wav-out:{dir}/desk.wav")
        .button("listen.c3", "sim:listen-c3")
        .led("rx", "sim:led-rx")
        .led("rx.c0", "sim:led-rx-c0")
        .led("rx.c3", "sim:led-rx-c3")
        .led("rx.c5", "sim:led-rx-c5")
        .monitor("c3", "volume_db", -6)
        .monitor("c7", "volume_db", -12);
    c.add(desk).toml()
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

    // Mute and unmute: c3's tone is gone / back within one 10 ms frame of the change. Windows
    // are device frames (the WAV is written frame by frame), each holding whole cycles of every
    // tone, so the others do not leak into c3's measure.
    let window = 480;
    let c3_db: Vec<f32> = x.chunks_exact(window).map(|w| rms_db(goertzel(w, 1100.0))).collect();
    let c0_db: Vec<f32> = x.chunks_exact(window).map(|w| rms_db(goertzel(w, 500.0))).collect();
    let c7_db: Vec<f32> = x.chunks_exact(window).map(|w| rms_db(goertzel(w, 1700.0))).collect();
    let (on, off) = (l3 - 3.0, l3 - 24.0);
    // Each frame: c3 on, off or in between. A frame where c0 or c7 is off its steady level by
    // more than 3 dB is disturbed (a late packet concealed, a playback gap: a loaded machine); its
    // glitch spreads into c3's bin (seen: c0 5 dB low, c3 at -54 dBFS in the middle of the mute),
    // so it says nothing about c3 and is skipped.
    #[derive(Clone, Copy, PartialEq, Debug)]
    enum F {
        On,
        Off,
        Ramp,
        Gap,
    }
    let class: Vec<F> = (0..c3_db.len())
        .map(|i| match c3_db[i] {
            _ if (c0_db[i] - l0).abs() > 3.0 || (c7_db[i] - l7).abs() > 3.0 => F::Gap,
            v if v > on => F::On,
            v if v < off => F::Off,
            _ => F::Ramp,
        })
        .collect();
    // The mute is the longest stretch of c3-silent frames (gaps allowed) while c0 talks.
    let first = start / window + 100;
    let mut best = (0, 0);
    let mut i = first;
    while i < class.len() {
        if class[i] == F::Off {
            let j = (i..class.len()).find(|&j| !matches!(class[j], F::Off | F::Gap)).unwrap_or(class.len());
            if j - i > best.1 - best.0 {
                best = (i, j);
            }
            i = j;
        } else {
            i += 1;
        }
    }
    let (muted_at, back_at) = best;
    assert!(back_at > muted_at, "c3 was never muted: {class:?}");
    // Frames between full level and silence, on either side (one ramp frame is the mixer's).
    let ramp_before =
        class[first..muted_at].iter().rev().filter(|&&f| f != F::Gap).take_while(|&&f| f == F::Ramp).count();
    let ramp_after = class[back_at..].iter().filter(|&&f| f != F::Gap).take_while(|&&f| f == F::Ramp).count();
    let (fall, rise) = (ramp_before + 1, ramp_after + 1);
    assert!(
        fall <= 2 && rise <= 2,
        "mute took {fall} frames, unmute {rise}; c3 around the unmute (10 ms frames, dB): {:?}",
        &c3_db[back_at.saturating_sub(2)..(back_at + 4).min(c3_db.len())]
    );
    let muted_ms = (back_at - muted_at) * 10;
    for line in
        d.stderr().lines().filter(|l| l.contains("desk button") || l.contains("audio thread") || l.contains("xrun"))
    {
        eprintln!("daemon: {line}");
    }
    eprintln!("mute took {fall} frame(s), unmute {rise}; muted {muted_ms} ms; peak {:.2} dBFS", db(peak));
    let around = |i: usize| {
        (i.saturating_sub(3)..(i + 4).min(class.len()))
            .map(|k| format!("{k}:{:?} c0 {:.0} c3 {:.0}", class[k], c0_db[k], c3_db[k]))
            .collect::<Vec<_>>()
    };
    assert!(
        (800..=1300).contains(&muted_ms),
        "muted for {muted_ms} ms: {:?} .. {:?}",
        around(muted_at),
        around(back_at)
    );
    let (muted_at, back_at) = (muted_at * window - start, back_at * window - start);
    // c0 played on undisturbed meanwhile.
    let during_mute = &x[start + muted_at + 4800..start + back_at - 4800];
    assert!((rms_db(goertzel(during_mute, 500.0)) - l0).abs() < 1.5);
}

/// A desk on `ops`: PTT button, 2.5 kHz microphone, its speaker a WAV, TX, busy and RX LEDs.
fn ops_desk() -> Desk {
    Desk::new("desk", &["ops"])
        .ptt("sim:desk-ptt")
        .capture("sim:tone:2500:-12")
        .playback("sim:wav-out:{dir}/desk.wav")
        .led("tx.ops", "sim:led-tx")
        .led("busy.ops", "sim:led-busy")
        .led("rx.ops", "sim:led-rx")
}

/// One channel `ops`: field radio A (COR, 1 kHz receive), radio B carrying the channel to the
/// air (its transmit audio a WAV), and the desk with a PTT button and LEDs.
/// `max_talk_ms`: the channel's maximum talk time.
fn preempt_config(max_talk_ms: Option<u64>) -> Config {
    let max_talk = max_talk_ms.map(|ms| ms.to_string());
    let ops: Vec<(&str, &str)> = max_talk.iter().map(|ms| ("max_talk_ms", ms.as_str())).collect();
    let b = Radio::sim("radio-b", "ops", "b")
        .playback("sim:wav-out:{dir}/b-tx.wav")
        .keying("tx_delay_ms", 100)
        .keying("tx_hang_ms", 200)
        .keying("tot_ms", 4000);
    Config::new("desk-preempt")
        .add(Hub::new(free_port()))
        .channel_with("ops", &ops)
        .add(Radio::sim("radio-a", "ops", "a").capture("sim:tone:1000:-12"))
        .add(b)
        .add(ops_desk())
}

#[test]
fn desk_ptt_preempts_a_field_talker_and_the_radio_carries_the_desk() {
    let mut d = Daemon::start(&preempt_config(None).toml());
    d.wait_for("desk ready", Duration::from_secs(10), |d| d.line("led-busy") == Some(false));
    std::thread::sleep(Duration::from_millis(300));
    d.drive("a-cor", true);
    d.wait_for("B keyed for A", Duration::from_secs(5), |d| d.line("b-ptt") == Some(true));
    d.wait_for("busy and RX LEDs", Duration::from_secs(5), |d| {
        d.line("led-busy") == Some(true) && d.line("led-rx") == Some(true)
    });
    assert_eq!(d.line("led-tx"), Some(false));
    std::thread::sleep(Duration::from_millis(1000));
    d.drive("desk-ptt", true);
    d.wait_for("desk holds the floor", Duration::from_secs(5), |d| d.line("led-tx") == Some(true));
    d.wait_for("busy LED off", Duration::from_secs(2), |d| d.line("led-busy") == Some(false));
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(d.line("b-ptt"), Some(true), "B stays keyed, now for the desk");
    d.wait_for("A revoked", Duration::from_secs(2), |d| d.stderr().contains("floor revoked"));
    d.drive("desk-ptt", false);
    d.wait_for("TX LED off", Duration::from_secs(2), |d| d.line("led-tx") == Some(false));
    d.drive("a-cor", false);
    d.wait_for("B unkeyed", Duration::from_secs(5), |d| d.line("b-ptt") == Some(false));
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(10)).success(), "{}", d.stderr());

    // B's transmitter: A's 1 kHz first, then the desk's 2.5 kHz microphone, not A's any more.
    let x = samples(&d.dir.path().join("b-tx.wav"));
    let start = first_loud(&x, 0, -40.0).expect("B transmitted") * 480;
    let blocks: Vec<(f32, f32)> = x[start..].chunks(4800).map(|w| (goertzel(w, 1000.0), goertzel(w, 2500.0))).collect();
    let desk_from = blocks.iter().position(|&(_, desk)| desk > 0.02).expect("the desk's voice went out on B");
    assert!(blocks[..desk_from].iter().any(|&(a, _)| a > 0.02), "A was heard before");
    let after = &blocks[desk_from + 1..(desk_from + 10).min(blocks.len())];
    assert!(after.iter().all(|&(a, desk)| desk > 0.02 && a < desk / 30.0), "A still heard with the desk: {after:?}");
}

#[test]
fn desk_held_ptt_unkeys_at_the_radio_tot_and_on_shutdown() {
    let mut d = Daemon::start(&preempt_config(None).toml());
    d.wait_for("desk ready", Duration::from_secs(10), |d| d.line("led-tx") == Some(false));
    std::thread::sleep(Duration::from_millis(300));
    // A stuck desk PTT: radio B's time-out timer (4 s here) unkeys it anyway.
    d.drive("desk-ptt", true);
    d.wait_for("B keyed for the desk", Duration::from_secs(5), |d| d.line("b-ptt") == Some(true));
    let keyed = std::time::Instant::now();
    d.wait_for("B unkeyed by its TOT", Duration::from_secs(8), |d| d.line("b-ptt") == Some(false));
    assert!(keyed.elapsed() >= Duration::from_millis(3500), "unkeyed early: {:?}", keyed.elapsed());
    // The log is written asynchronously: wait for the line rather than expect it at once.
    d.wait_for("the TOT logged", Duration::from_secs(2), |d| d.stderr().contains("time-out timer fired"));
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
    let mut d = Daemon::start(&preempt_config(Some(2000)).toml());
    d.wait_for("desk ready", Duration::from_secs(10), |d| d.line("led-tx") == Some(false));
    std::thread::sleep(Duration::from_millis(300));
    d.drive("desk-ptt", true);
    d.wait_for("desk holds the floor", Duration::from_secs(5), |d| d.line("led-tx") == Some(true));
    d.wait_for("desk revoked at max talk", Duration::from_secs(5), |d| d.line("led-tx") == Some(false));
    d.wait_for("B unkeyed", Duration::from_secs(3), |d| d.line("b-ptt") == Some(false));
    d.wait_for("revocation logged", Duration::from_secs(2), |d| d.stderr().contains("floor revoked"));
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(10)).success(), "{}", d.stderr());
}

/// Two channels: radio A on ops (1 kHz), radios B (transmit WAV) and E (priority
/// `e_priority`, 1.5 kHz) on fire; the desk on both with an all-call button, a hub with a
/// console token.
fn two_channel_config(hub_port: u16, e_priority: u8) -> String {
    let keyed = |r: Radio| r.keying("tx_delay_ms", 50).keying("tx_hang_ms", 100);
    let desk = Desk::new("desk", &["ops", "fire"])
        .ptt("sim:desk-ptt")
        .button("all_call", "sim:all-call")
        .button("select.fire", "sim:select-fire")
        .capture("sim:tone:2500:-12")
        .playback("sim:wav-out:{dir}/desk.wav")
        .led("tx.ops", "sim:tx-ops")
        .led("tx.fire", "sim:tx-fire")
        .led("busy.fire", "sim:busy-fire")
        .led("select.fire", "sim:sel-fire");
    Config::new("desk-two")
        .add(Hub::new(hub_port).token("console", "token", &["*"]))
        .channel("ops")
        .channel("fire")
        .add(keyed(Radio::sim("radio-a", "ops", "a").capture("sim:tone:1000:-12")))
        .add(keyed(Radio::sim("radio-b", "fire", "b").playback("sim:wav-out:{dir}/b-tx.wav")))
        .add(keyed(Radio::sim("radio-e", "fire", "e").priority(e_priority.into()).capture("sim:tone:1500:-12")))
        .add(desk)
        .toml()
}

fn start_two(hub_port: u16, e_priority: u8) -> Daemon {
    let mut d = Daemon::start_with(&two_channel_config(hub_port, e_priority), &[], &[("token", "s3cret-console\n")]);
    d.wait_for("desk ready", Duration::from_secs(10), |d| d.line("busy-fire") == Some(false));
    std::thread::sleep(Duration::from_millis(300));
    d
}

#[test]
fn all_call_talks_on_every_channel_it_may_and_is_denied_where_an_emergency_talks() {
    let mut d = start_two(free_port(), 200);
    // Free channels: the all-call button takes both; both radios carry the desk.
    d.drive("all-call", true);
    d.wait_for("desk on both channels", Duration::from_secs(5), |d| {
        d.line("tx-ops") == Some(true) && d.line("tx-fire") == Some(true)
    });
    d.wait_for("A and B keyed", Duration::from_secs(5), |d| {
        d.line("a-ptt") == Some(true) && d.line("b-ptt") == Some(true)
    });
    assert_eq!(d.line("e-ptt"), Some(true), "E carries the desk too");
    d.drive("all-call", false);
    d.wait_for("all unkeyed", Duration::from_secs(5), |d| {
        d.line("a-ptt") == Some(false) && d.line("b-ptt") == Some(false) && d.line("tx-ops") == Some(false)
    });

    // An emergency talks on fire: all-call gets ops, fire denies it (its busy LED blinks),
    // and B keeps carrying the emergency.
    d.drive("e-cor", true);
    d.wait_for("B keyed for E, fire busy", Duration::from_secs(5), |d| {
        d.line("b-ptt") == Some(true) && d.line("busy-fire") == Some(true)
    });
    let busy_edges = d.line_log("busy-fire").len();
    d.drive("all-call", true);
    d.wait_for("desk on ops", Duration::from_secs(5), |d| d.line("tx-ops") == Some(true));
    d.wait_for("A keyed for the desk", Duration::from_secs(5), |d| d.line("a-ptt") == Some(true));
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(d.line("tx-fire"), Some(false), "the desk never got fire");
    let blinks = d.line_log("busy-fire").len() - busy_edges;
    assert!(blinks >= 3, "busy LED did not blink on the denial ({blinks} changes)");
    d.wait_for("denial logged", Duration::from_secs(2), |d| d.stderr().contains("floor busy, request denied"));
    assert_eq!(d.line("b-ptt"), Some(true));
    d.drive("all-call", false);
    d.drive("e-cor", false);
    d.wait_for("all unkeyed", Duration::from_secs(5), |d| {
        d.line("a-ptt") == Some(false) && d.line("b-ptt") == Some(false)
    });
    // Once the emergency is over, busy stays dark.
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(d.line("busy-fire"), Some(false));
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(10)).success(), "{}", d.stderr());
}

mod console {
    //! A console on the desk box's hub: hello, then `desk` commands.
    use futures_util::{SinkExt, StreamExt};
    use serde_json::{json, Value};
    use tokio_tungstenite::tungstenite::Message;

    pub struct Console {
        rt: tokio::runtime::Runtime,
        ws: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    }

    impl Console {
        pub fn join(port: u16, token: &str) -> Console {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let ws = rt.block_on(async {
                let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/ws")).await.unwrap();
                let hello = json!({"type": "hello", "token": token, "name": "desk-test", "members": []});
                ws.send(Message::Text(hello.to_string().into())).await.unwrap();
                ws
            });
            let mut c = Console { rt, ws };
            let welcome = c.next(|m| m["type"] != "ports");
            assert_eq!(welcome["type"], "welcome", "{welcome}");
            c
        }

        /// The next message `want` accepts (others, like `ports` updates, are skipped).
        pub fn next(&mut self, want: impl Fn(&Value) -> bool) -> Value {
            let ws = &mut self.ws;
            self.rt.block_on(async {
                loop {
                    let m = tokio::time::timeout(std::time::Duration::from_secs(5), ws.next()).await;
                    match m.expect("a console message in time") {
                        Some(Ok(Message::Text(t))) => {
                            let v: Value = serde_json::from_str(t.as_str()).unwrap();
                            if want(&v) {
                                return v;
                            }
                        }
                        Some(Ok(_)) => continue,
                        other => panic!("console socket ended: {other:?}"),
                    }
                }
            })
        }

        /// Send a `desk` command for port `desk`; Ok when done, Err(message) when refused.
        pub fn desk(&mut self, action: Value) -> Result<(), String> {
            let msg = json!({"type": "desk", "port": "desk", "action": action});
            let ws = &mut self.ws;
            self.rt.block_on(ws.send(Message::Text(msg.to_string().into()))).unwrap();
            let reply = self.next(|m| m["type"] == "desk" || m["type"] == "error");
            match reply["type"].as_str() {
                Some("desk") => Ok(()),
                _ => Err(reply["message"].as_str().unwrap_or_default().to_string()),
            }
        }
    }
}

#[test]
fn patch_from_the_console_carries_a_talker_across_and_follows_the_floor_rules() {
    let port = free_port();
    let mut d = start_two(port, 0);
    let mut console = console::Console::join(port, "s3cret-console");
    // The desk box tells its consoles about its desk.
    let state = console.next(|m| m["type"] == "desk_state");
    assert_eq!(state["port"], "desk");
    assert_eq!(state["selected"], "ops");
    let names: Vec<_> = state["channels"].as_array().unwrap().iter().map(|c| c["name"].clone()).collect();
    assert_eq!(names, ["ops", "fire"]);
    // Malformed or impossible commands are refused and change nothing.
    for bad in [
        serde_json::json!({"action": "patch", "channels": ["ops", "nope"], "on": true}),
        serde_json::json!({"action": "patch", "channels": ["ops"], "on": true}),
        serde_json::json!({"action": "volume", "channel": "ops", "db": 99}),
        serde_json::json!({"action": "fly"}),
        serde_json::json!({"action": "patch", "channels": ["ops", "fire"], "on": false}),
    ] {
        assert!(console.desk(bad.clone()).is_err(), "{bad} accepted");
    }
    // The console selects fire: the select LED follows.
    console.desk(serde_json::json!({"action": "select", "channel": "fire"})).unwrap();
    d.wait_for("fire selected", Duration::from_secs(2), |d| d.line("sel-fire") == Some(true));
    // The console hears it, and the desk's port state (what MQTT's state/<port> carries)
    // follows the selection too, in either order.
    let (mut shown, mut reported) = (false, false);
    while !(shown && reported) {
        let m = console.next(|_| true);
        shown |= m["type"] == "desk_state" && m["selected"] == "fire";
        reported |= m["type"] == "ports"
            && m["ports"].as_array().is_some_and(|ps| ps.iter().any(|p| p["name"] == "desk" && p["channel"] == "fire"));
    }
    // Denied: E talks on fire and A on ops when the patch is made; each side is busy with a
    // talker of the same priority, so the patch carries neither across.
    d.drive("e-cor", true);
    d.wait_for("B keyed for E", Duration::from_secs(5), |d| d.line("b-ptt") == Some(true));
    d.drive("a-cor", true);
    std::thread::sleep(Duration::from_millis(300));
    console.desk(serde_json::json!({"action": "patch", "channels": ["ops", "fire"], "on": true})).unwrap();
    d.wait_for("patch denied", Duration::from_secs(5), |d| d.stderr().contains("patch could not take the floor"));
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(d.line("a-ptt"), Some(false), "E was carried onto ops over A");
    // E stops; A still talks, but a denied patch does not come back by itself.
    d.drive("e-cor", false);
    d.wait_for("B unkeyed", Duration::from_secs(5), |d| d.line("b-ptt") == Some(false));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(d.line("b-ptt"), Some(false), "the patch retried");
    d.drive("a-cor", false);
    std::thread::sleep(Duration::from_millis(500));

    // A talks again: the patch takes fire for it, B transmits A.
    d.drive("a-cor", true);
    d.wait_for("B keyed for A through the patch", Duration::from_secs(5), |d| d.line("b-ptt") == Some(true));
    std::thread::sleep(Duration::from_millis(1200));
    d.drive("a-cor", false);
    d.wait_for("B unkeyed with A", Duration::from_secs(5), |d| d.line("b-ptt") == Some(false));
    console.desk(serde_json::json!({"action": "patch", "channels": ["fire", "ops"], "on": false})).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    d.drive("a-cor", true);
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(d.line("b-ptt"), Some(false), "unpatched: A stays on ops");
    d.drive("a-cor", false);
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(10)).success(), "{}", d.stderr());

    // On B's transmitter: E's 1.5 kHz, later A's 1 kHz; never A while E talked.
    let x = samples(&d.dir.path().join("b-tx.wav"));
    let blocks: Vec<(f32, f32)> = x.chunks(4800).map(|w| (goertzel(w, 1500.0), goertzel(w, 1000.0))).collect();
    let e_blocks: Vec<usize> = (0..blocks.len()).filter(|&i| blocks[i].0 > 0.02).collect();
    let a_blocks: Vec<usize> = (0..blocks.len()).filter(|&i| blocks[i].1 > 0.02).collect();
    assert!(!e_blocks.is_empty() && !a_blocks.is_empty(), "E {e_blocks:?} A {a_blocks:?}");
    assert!(a_blocks[0] > *e_blocks.last().unwrap(), "A was carried while E talked: E {e_blocks:?} A {a_blocks:?}");
    assert!(a_blocks.len() >= 8, "A carried for {} x 100 ms", a_blocks.len());
}

/// The CM4 board's layout: the desk on an edge box whose channels live on a central hub.
fn central_hub(port: u16) -> String {
    let c = Radio::sim("radio-c", "ops", "c")
        .playback("sim:wav-out:{dir}/c-tx.wav")
        .keying("tx_delay_ms", 100)
        .keying("tx_hang_ms", 200);
    Config::new("central")
        .channel("ops")
        .add(Radio::sim("radio-b", "ops", "b").capture("sim:tone:700:-12"))
        .add(c)
        .add(Hub::new(port).token("desks", "token", &["ops"]))
        .toml()
}

fn desk_edge(port: u16) -> String {
    Config::new("desk-edge").channel("ops").add(ops_desk()).add(Uplink::hub(port)).toml()
}

#[test]
fn a_desk_on_an_edge_box_hears_the_hub_channel_and_preempts_its_field_talker() {
    let wait = Duration::from_secs(10);
    let port = free_port();
    let mut hub = Daemon::start_with(&central_hub(port), &[], &[("token", "desk-secret\n")]);
    hub.wait_for("hub listening", wait, |d| d.stderr().contains("roipd running"));
    let mut desk = Daemon::start_with(&desk_edge(port), &[], &[("token", "desk-secret\n")]);
    desk.wait_for("uplink up", wait, |d| d.stderr().contains("uplink up"));
    hub.wait_for("desk joined", wait, |d| d.stderr().contains("peer joined"));

    // A field talker on the hub's radio B: C carries it, the desk hears it, RX and busy light.
    hub.drive("b-cor", true);
    hub.wait_for("C keyed for B", wait, |d| d.line("c-ptt") == Some(true));
    desk.wait_for("desk RX and busy", wait, |d| d.line("led-rx") == Some(true) && d.line("led-busy") == Some(true));
    std::thread::sleep(Duration::from_millis(1000));
    // Dispatch priority travels over the uplink: the desk takes the channel at the hub, B is
    // revoked, and C now transmits the desk.
    desk.drive("desk-ptt", true);
    desk.wait_for("desk holds the floor", wait, |d| d.line("led-tx") == Some(true));
    hub.wait_for("B revoked", Duration::from_secs(2), |d| d.stderr().contains("floor revoked"));
    assert_eq!(hub.line("c-ptt"), Some(true));
    std::thread::sleep(Duration::from_millis(1500));
    desk.drive("desk-ptt", false);
    hub.drive("b-cor", false);
    hub.wait_for("C unkeyed", wait, |d| d.line("c-ptt") == Some(false));
    desk.wait_for("desk LEDs dark", wait, |d| d.line("led-tx") == Some(false) && d.line("led-busy") == Some(false));
    for d in [&mut desk, &mut hub] {
        d.signal(libc::SIGTERM);
        assert!(d.wait_exit(Duration::from_secs(10)).success(), "{}", d.stderr());
    }
    let heard = samples(&desk.dir.path().join("desk.wav"));
    let b_heard = heard.chunks(4800).filter(|w| goertzel(w, 700.0) > 0.02).count();
    assert!(b_heard >= 8, "the desk heard B for {b_heard} x 100 ms");
    let sent = samples(&hub.dir.path().join("c-tx.wav"));
    let desk_sent = sent.chunks(4800).filter(|w| goertzel(w, 2500.0) > 0.02).count();
    assert!(desk_sent >= 10, "C transmitted the desk for {desk_sent} x 100 ms");
}

fn mqtt_desk(port: u16) -> String {
    Config::new("mqtt-desk")
        .channel("ops")
        .add(Radio::sim("radio-a", "ops", "a").capture("sim:tone:1000:-12"))
        .add(Desk::new("desk", &["ops"]).playback("sim:wav-out:{dir}/desk.wav"))
        .add(Mqtt::new(port))
        .toml()
}

/// Fleet `listen`/`volume` on a desk box act on the desk's speaker, through the desk's action
/// path; a malformed command is answered with an error and changes nothing. The desk's state
/// is published like a radio port's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_listen_and_volume_reach_the_desk_speaker() {
    use fleet::broker::Broker;
    use fleet::probe::Probe;
    let wait = Duration::from_secs(10);
    let broker = Broker::start();
    let probe = Probe::connect(broker.anon, &["roipd/mqtt-desk/#"]).await;
    let mut d = Daemon::start(&mqtt_desk(broker.anon));
    let state = probe.wait("desk port state", wait, |m| m.topic == "roipd/mqtt-desk/state/desk").await;
    assert_eq!(state.json()["channel"], "ops", "{}", state.json());
    d.drive("a-cor", true);
    probe
        .wait("desk hears ops", wait, |m| m.topic == "roipd/mqtt-desk/state/desk" && m.json()["rx_active"] == true)
        .await;
    let reply = |id: &'static str| {
        move |m: &fleet::probe::Msg| m.topic == "roipd/mqtt-desk/reply" && m.json()["request_id"] == id
    };
    std::thread::sleep(Duration::from_millis(800));
    let mark = probe.mark();
    probe
        .publish(
            "roipd/mqtt-desk/cmd/listen",
            sign("roipd/mqtt-desk/cmd/listen", r#"{"request_id":"m1","channel":"ops","on":false}"#),
        )
        .await;
    assert_eq!(probe.wait_after(mark, "mute reply", wait, reply("m1")).await.json()["ok"], true);
    // Mute for ~2.4 s of wall time: a loaded box may write the sim speaker a little behind real
    // time, so the check below asks for 1.4 s of silence with margin to spare.
    std::thread::sleep(Duration::from_millis(1200));
    // Malformed: no `on`. An error, and the desk stays muted.
    probe
        .publish(
            "roipd/mqtt-desk/cmd/listen",
            sign("roipd/mqtt-desk/cmd/listen", r#"{"request_id":"m2","channel":"ops"}"#),
        )
        .await;
    assert_eq!(probe.wait_after(mark, "error reply", wait, reply("m2")).await.json()["ok"], false);
    std::thread::sleep(Duration::from_millis(1200));
    probe
        .publish(
            "roipd/mqtt-desk/cmd/listen",
            sign("roipd/mqtt-desk/cmd/listen", r#"{"request_id":"m3","channel":"ops","on":true}"#),
        )
        .await;
    assert_eq!(probe.wait_after(mark, "unmute reply", wait, reply("m3")).await.json()["ok"], true);
    probe
        .publish(
            "roipd/mqtt-desk/cmd/volume",
            sign("roipd/mqtt-desk/cmd/volume", r#"{"request_id":"m4","channel":"ops","db":-12}"#),
        )
        .await;
    assert_eq!(probe.wait_after(mark, "volume reply", wait, reply("m4")).await.json()["ok"], true);
    std::thread::sleep(Duration::from_millis(800));
    d.drive("a-cor", false);
    std::thread::sleep(Duration::from_millis(300));
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(10)).success(), "{}", d.stderr());

    // The desk's speaker: loud, silent for the mute (the malformed command in the middle changed
    // nothing), then back 12 dB lower.
    let x = samples(&d.dir.path().join("desk.wav"));
    let levels: Vec<f32> = x.chunks_exact(4800).map(|w| rms_db(goertzel(w, 1000.0))).collect();
    let loud: Vec<usize> = (0..levels.len()).filter(|&i| levels[i] > -24.0).collect();
    let first = *loud.first().expect("the desk heard A");
    let silent: Vec<usize> = (first..levels.len()).filter(|&i| levels[i] < -60.0).collect();
    let muted = silent.iter().zip(silent.iter().skip(1)).take_while(|(a, b)| **b == **a + 1).count() + 1;
    assert!(muted >= 14, "muted for {muted} x 100 ms: {levels:?}");
    let after = silent[0] + muted;
    let quieter: Vec<f32> = levels[after + 3..].iter().copied().filter(|&l| l > -60.0).collect();
    let full = levels[first + 2];
    assert!(!quieter.is_empty() && quieter.iter().all(|&l| (full - l - 12.0).abs() < 2.0), "{full} then {quieter:?}");
}

#[test]
fn a_stereo_split_puts_each_channel_where_its_pan_says() {
    let mut config = Config::new("desk-stereo").channel("left").channel("right").channel("middle");
    for (name, x, hz) in [("left", "l", 500), ("right", "r", 1100), ("middle", "m", 1700)] {
        config = config.add(Radio::sim(&format!("r-{name}"), name, x).capture(&format!("sim:tone:{hz}:-12")));
    }
    let desk = Desk::new("desk", &["left", "right", "middle"])
        .set("duck_db", 0)
        .playback("sim:wav-out:{dir}/left.wav")
        .set("playback_right", "\"sim:wav-out:{dir}/right.wav\"")
        .monitor("left", "pan", -1)
        .monitor("right", "pan", 1);
    let config = config.add(desk).toml();
    let mut d = Daemon::start(&config);
    d.wait_for("radios ready", Duration::from_secs(10), |d| d.line("m-ptt") == Some(false));
    std::thread::sleep(Duration::from_millis(300));
    for r in ["l", "r", "m"] {
        d.drive(&format!("{r}-cor"), true);
    }
    std::thread::sleep(Duration::from_millis(2500));
    for r in ["l", "r", "m"] {
        d.drive(&format!("{r}-cor"), false);
    }
    std::thread::sleep(Duration::from_millis(300));
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(10)).success(), "{}", d.stderr());
    let (l, r) = (samples(&d.dir.path().join("left.wav")), samples(&d.dir.path().join("right.wav")));
    let start = first_loud(&l, 0, -40.0).expect("the left side played") * 480;
    let (l, r) = (&l[start + 48_000..start + 96_000], &r[start + 48_000..start + 96_000]);
    // The median over 100 ms blocks (each holds whole cycles of the three tones): a block with a
    // concealed late packet (a loaded machine: one pulled a 1 s average 2 dB low) does not count.
    let level = |x: &[f32], hz| {
        let mut blocks: Vec<f32> = x.chunks_exact(4800).map(|b| rms_db(goertzel(b, hz))).collect();
        blocks.sort_by(f32::total_cmp);
        blocks[blocks.len() / 2]
    };
    eprintln!(
        "left: 500 Hz {:.1}, 1100 Hz {:.1}, 1700 Hz {:.1}; right: {:.1}, {:.1}, {:.1} dBFS",
        level(l, 500.0),
        level(l, 1100.0),
        level(l, 1700.0),
        level(r, 500.0),
        level(r, 1100.0),
        level(r, 1700.0)
    );
    // Hard left and hard right: only on their own side. Centre: on both, 3 dB down each.
    assert!(level(l, 500.0) > -21.0 && level(r, 500.0) < -60.0);
    assert!(level(r, 1100.0) > -21.0 && level(l, 1100.0) < -60.0);
    assert!((level(l, 1700.0) - level(r, 1700.0)).abs() < 0.5);
    assert!(((level(l, 500.0) - level(l, 1700.0)) - 3.0).abs() < 1.5, "centre not 3 dB down");
}

/// Fleet `desk` command: the console's action path over MQTT. Malformed actions, actions on
/// channels the desk lacks and ports that are not desks get an error reply and key nothing; a
/// fleet desk PTT keys the field radio, whose TOT unkeys it, `on: false` releases it, and a PTT
/// held through a shutdown is released on the way out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_desk_command_acts_through_the_desk_and_refuses_malformed_actions() {
    use fleet::broker::Broker;
    use fleet::probe::Probe;
    let wait = Duration::from_secs(10);
    let broker = Broker::start();
    let probe = Probe::connect(broker.anon, &["roipd/desk-preempt/#", "test/desk-replies"]).await;
    let mut d = Daemon::start(&preempt_config(None).add(Mqtt::new(broker.anon)).toml());
    probe.wait("online", wait, |m| m.topic == "roipd/desk-preempt/status" && m.json()["online"] == true).await;
    d.wait_for("desk ready", wait, |d| d.line("led-tx") == Some(false));
    std::thread::sleep(Duration::from_millis(300));
    let cmd = "roipd/desk-preempt/cmd/desk";
    let send = |id: &str, payload: &str| {
        let mut v: serde_json::Value = serde_json::from_str(payload).unwrap();
        v["request_id"] = id.into();
        sign(cmd, &v.to_string())
    };
    let reply = |id: &'static str| {
        move |m: &fleet::probe::Msg| m.topic == "roipd/desk-preempt/reply" && m.json()["request_id"] == id
    };

    for (id, payload, code) in [
        ("e1", r#"{"port":"desk","action":{"action":"ptt"}}"#, "invalid_args"),
        ("e2", r#"{"port":"desk","action":{"action":"ptt","channel":"fire","on":true}}"#, "invalid_args"),
        ("e3", r#"{"port":"desk","action":{"action":"transmit","on":true}}"#, "invalid_args"),
        ("e4", r#"{"port":"desk","action":{"action":"ptt","on":true,"hold":true}}"#, "invalid_args"),
        ("e5", r#"{"port":"desk","action":{"action":"ptt","on":"yes"}}"#, "invalid_args"),
        ("e6", r#"{"port":"desk","action":"ptt"}"#, "invalid_args"),
        ("e7", r#"{"port":"desk","action":{"action":"ptt","on":true},"on":true}"#, "unknown_field"),
        ("e8", r#"{"port":"radio-b","action":{"action":"ptt","on":true}}"#, "not_found"),
        ("e9", r#"{"port":"nodesk","action":{"action":"ptt","on":true}}"#, "not_found"),
    ] {
        let mark = probe.mark();
        probe.publish(cmd, send(id, payload)).await;
        let r = probe.wait_after(mark, id, wait, reply(id)).await.json();
        assert_eq!((r["ok"].clone(), r["error"]["code"].clone()), (false.into(), code.into()), "{payload}: {r}");
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(d.line_log("b-ptt").iter().all(|&k| !k), "B keyed by a refused command: {:?}", d.line_log("b-ptt"));
    assert!(d.line_log("led-tx").iter().all(|&k| !k), "the desk talked on a refused command");

    // Select, then PTT over MQTT 5 request/response: the desk takes the floor and B keys.
    let mark = probe.mark();
    probe.publish(cmd, send("s1", r#"{"port":"desk","action":{"action":"select","channel":"ops"}}"#)).await;
    let r = probe.wait_after(mark, "select reply", wait, reply("s1")).await.json();
    assert_eq!(
        (r["ok"].clone(), r["command"].clone(), r["result"]["port"].clone()),
        (true.into(), "desk".into(), "desk".into()),
        "{r}"
    );
    let mark = probe.mark();
    probe
        .request(
            cmd,
            &sign(cmd, r#"{"port":"desk","action":{"action":"ptt","on":true}}"#),
            "test/desk-replies",
            b"ptt-1",
        )
        .await;
    let r = probe.wait_after(mark, "ptt reply", wait, |m| m.topic == "test/desk-replies").await;
    assert_eq!(r.correlation.as_deref(), Some(&b"ptt-1"[..]));
    assert_eq!(r.json()["ok"], true, "{}", r.json());
    d.wait_for("desk holds the floor", Duration::from_secs(5), |d| d.line("led-tx") == Some(true));
    d.wait_for("B keyed for the desk", Duration::from_secs(5), |d| d.line("b-ptt") == Some(true));
    // Never released by the fleet: B's time-out timer (4 s) unkeys it anyway.
    let keyed = std::time::Instant::now();
    d.wait_for("B unkeyed by its TOT", Duration::from_secs(8), |d| d.line("b-ptt") == Some(false));
    assert!(keyed.elapsed() >= Duration::from_millis(3500), "unkeyed early: {:?}", keyed.elapsed());
    d.wait_for("the TOT logged", Duration::from_secs(2), |d| d.stderr().contains("time-out timer fired"));
    let mark = probe.mark();
    probe.publish(cmd, send("p2", r#"{"port":"desk","action":{"action":"ptt","on":false}}"#)).await;
    assert_eq!(probe.wait_after(mark, "release reply", wait, reply("p2")).await.json()["ok"], true);
    d.wait_for("TX LED off", Duration::from_secs(2), |d| d.line("led-tx") == Some(false));
    std::thread::sleep(Duration::from_millis(500));

    // Pressed again and held through a shutdown: B is released on the way out.
    let mark = probe.mark();
    probe.publish(cmd, send("p3", r#"{"port":"desk","action":{"action":"ptt","on":true}}"#)).await;
    assert_eq!(probe.wait_after(mark, "press reply", wait, reply("p3")).await.json()["ok"], true);
    d.wait_for("B keyed again", Duration::from_secs(5), |d| d.line("b-ptt") == Some(true));
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(10)).success(), "{}", d.stderr());
    assert_eq!(d.line("b-ptt"), Some(false), "B left keyed after shutdown");
    assert_eq!(d.line("led-tx"), Some(false));
}

/// Issue 18: an emergency on a desk's channel sounds the alert tone (960/1440 Hz) on the desk's
/// speaker until the desk's `ack_emergency` button acknowledges it; the desk's `emergency`
/// button raises one on its selected channel.
#[test]
fn an_emergency_sounds_the_desk_alert_until_its_ack_button_and_its_emergency_button_raises_one() {
    let a = Radio::sim("radio-a", "ops", "a").set("emergency", "{ line = \"sim:a-emg\" }");
    let desk = ops_desk().button("emergency", "sim:desk-emg").button("ack_emergency", "sim:desk-ack");
    let config = Config::new("desk-emergency").add(Hub::new(free_port())).channel("ops").add(a).add(desk);
    let mut d = Daemon::start(&config.toml());
    d.wait_for("desk ready", Duration::from_secs(10), |d| d.line("led-busy") == Some(false));
    std::thread::sleep(Duration::from_millis(500));
    d.drive("a-emg", true);
    d.wait_for("the desk alerted", Duration::from_secs(5), |d| d.stderr().contains("desk: emergency alert"));
    std::thread::sleep(Duration::from_millis(2000));
    d.drive("desk-ack", true);
    d.wait_for("acknowledged by the desk", Duration::from_secs(5), |d| {
        d.stderr().contains("emergency acknowledged channel=ops by=desk")
    });
    d.drive("desk-ack", false);
    d.drive("a-emg", false);
    std::thread::sleep(Duration::from_millis(1500));
    // The desk's own emergency button: raised on its selected channel, the desk its caller.
    d.drive("desk-emg", true);
    d.wait_for("raised by the desk", Duration::from_secs(5), |d| {
        d.stderr().contains("EMERGENCY raised channel=ops source=desk kind=\"desk\"")
    });
    d.drive("desk-emg", false);
    std::thread::sleep(Duration::from_millis(700)); // its alert sounds again before the stop
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(10)).success(), "{}", d.stderr());

    let x = samples(&d.dir.path().join("desk.wav"));
    let alert: Vec<bool> =
        x.chunks(4800).map(|w| db(goertzel(w, 960.0)) > -30.0 || db(goertzel(w, 1440.0)) > -30.0).collect();
    let first = alert.iter().position(|&a| a).expect("the alert sounded on the desk speaker");
    let last = alert.iter().rposition(|&a| a).unwrap();
    let sounding = alert.iter().filter(|&&a| a).count();
    // ~2 s of alert before the ack: half of it tone, in 100 ms blocks.
    assert!(sounding >= 6, "{sounding} blocks of alert tone: {alert:?}");
    // It stopped at the ack: a silent stretch (>= 1 s) follows the first alert before the
    // desk's own raise sounds it again.
    let gap = alert[first..].windows(10).position(|w| w.iter().all(|&a| !a));
    assert!(gap.is_some_and(|g| first + g < last), "no silence after the ack: {alert:?}");
}

/// A radio on `ops` keyed and unkeyed without delays.
fn quick(radio: Radio) -> Radio {
    radio.keying("cor_debounce_ms", 0).keying("min_keyup_ms", 0).keying("squelch_hang_ms", 0).keying("tx_delay_ms", 0)
}

/// `replay_last` (issue 17): radio A (1 kHz) talks, and is recorded; the desk's replay button
/// plays it again on the desk's speaker with radio B's PTT line (a radio on the same channel)
/// never raised; the MQTT command does the same, answers with an error while nothing is
/// recorded, and a replay is cut as soon as radio C (1.5 kHz) talks live on the channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_last_plays_on_the_desk_speaker_keys_nothing_and_live_traffic_cuts_it() {
    use fleet::broker::Broker;
    use fleet::probe::Probe;
    let wait = Duration::from_secs(10);
    let broker = Broker::start();
    let rec = tempfile::tempdir().unwrap();
    let config = Config::new("replay")
        .channel("ops")
        .add(quick(Radio::sim("radio-a", "ops", "a").capture("sim:tone:1000:-12")))
        .add(quick(Radio::sim("radio-b", "ops", "b").playback("sim:wav-out:{dir}/b-tx.wav")))
        .add(quick(Radio::sim("radio-c", "ops", "c").capture("sim:tone:1500:-12")))
        .add(Desk::new("desk", &["ops"]).playback("sim:wav-out:{dir}/desk.wav").button("replay_last", "sim:replay"))
        .add(Record::new(rec.path().to_str().unwrap()).set("min_length_ms", 300))
        .add(Mqtt::new(broker.anon))
        .toml();
    let probe = Probe::connect(broker.anon, &["roipd/replay/#"]).await;
    let mut d = Daemon::start(&config);
    probe.wait("the desk's state", wait, |m| m.topic == "roipd/replay/state/desk").await;
    let reply =
        |id: &'static str| move |m: &fleet::probe::Msg| m.topic == "roipd/replay/reply" && m.json()["request_id"] == id;
    let command = |id: &str| {
        let topic = "roipd/replay/cmd/replay_last";
        (topic, sign(topic, &format!(r#"{{"request_id":"{id}","port":"desk"}}"#)))
    };

    // Nothing recorded yet: an error reply.
    let mark = probe.mark();
    let (topic, payload) = command("r0");
    probe.publish(topic, payload).await;
    let r0 = probe.wait_after(mark, "the error reply", wait, reply("r0")).await.json();
    assert_eq!(r0["ok"], false, "{r0}");
    assert!(r0.to_string().contains("nothing recorded on ops"), "{r0}");

    // A talks 1.5 s: B carries it live (B's PTT rises and falls), and it is recorded.
    d.drive("a-cor", true);
    std::thread::sleep(Duration::from_millis(1500));
    d.drive("a-cor", false);
    let json_files = |dir: &Path| {
        std::fs::read_dir(dir).unwrap().flatten().filter(|e| e.path().extension().is_some_and(|x| x == "json")).count()
    };
    d.wait_for("the recording", wait, |_| json_files(rec.path()) == 1);
    d.wait_for("B unkeyed after A", wait, |d| d.line("b-ptt") == Some(false));
    let keyed_before = d.line_log("b-ptt").iter().filter(|&&l| l).count();
    assert!(keyed_before >= 1, "B carried A live");

    // The desk's button: a press replays A on the desk speaker.
    std::thread::sleep(Duration::from_millis(500));
    d.drive("replay", true);
    std::thread::sleep(Duration::from_millis(100));
    d.drive("replay", false);
    d.wait_for("the replay", wait, |d| d.stderr().contains("replaying the last transmission"));
    std::thread::sleep(Duration::from_millis(2000));
    assert_eq!(d.line_log("b-ptt").iter().filter(|&&l| l).count(), keyed_before, "the replay keyed B");
    assert_eq!(d.line("b-ptt"), Some(false));

    // The MQTT command, then C talks live 600 ms into the replay: the replay stops.
    let mark = probe.mark();
    let sent = std::time::Instant::now();
    let (topic, payload) = command("r1");
    probe.publish(topic, payload).await;
    let r1 = probe.wait_after(mark, "the replay reply", wait, reply("r1")).await.json();
    let replied = sent.elapsed();
    assert_eq!(r1["ok"], true, "{r1}");
    std::thread::sleep(Duration::from_millis(600).saturating_sub(replied));
    d.drive("c-cor", true);
    std::thread::sleep(Duration::from_millis(1200));
    d.drive("c-cor", false);
    std::thread::sleep(Duration::from_millis(500));
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(wait).success(), "{}", d.stderr());

    // The speaker, in 50 ms windows: live A, the button's replay, the command's replay cut by
    // C. Both replays are 1 kHz; C is 1.5 kHz.
    let x = samples(&d.dir.path().join("desk.wav"));
    let win = 2400;
    let level = |hz: f32| -> Vec<f32> { x.chunks_exact(win).map(|w| rms_db(goertzel(w, hz))).collect() };
    let (k1, c15) = (level(1000.0), level(1500.0));
    // Stretches of a tone, joining gaps of up to 150 ms (the tone source's own onsets and
    // the speech-band AGC dip a window or two, live and so in the recording too).
    let runs = |v: &[f32]| {
        let mut runs: Vec<(usize, usize)> = Vec::new();
        for (i, &l) in v.iter().enumerate() {
            if l > -45.0 {
                match runs.last_mut() {
                    Some(r) if i - r.1 <= 3 => r.1 = i + 1,
                    _ => runs.push((i, i + 1)),
                }
            }
        }
        runs
    };
    let ones = runs(&k1);
    assert_eq!(ones.len(), 3, "live A, replay, cut replay: {ones:?}\n{k1:?}");
    let len = |r: (usize, usize)| (r.1 - r.0) as f32 * 0.05;
    assert!(
        (len(ones[1]) - len(ones[0])).abs() <= 0.25,
        "the replay as long as A: {:.2} vs {:.2} s",
        len(ones[1]),
        len(ones[0])
    );
    let c = runs(&c15);
    assert_eq!(c.len(), 1, "C once: {c:?}\n{c15:?}");
    // Live wins: 1 kHz ends where C begins (within a 50 ms window either way).
    assert!(ones[2].1.abs_diff(c[0].0) <= 1, "replay ends at window {}, C starts at {}", ones[2].1, c[0].0);
    assert!(k1[c[0].0 + 1..c[0].1].iter().all(|&l| l < -50.0), "no replay under C: {:?}", &k1[c[0].0..c[0].1]);
    let ready: Vec<String> =
        d.stderr().lines().filter(|l| l.contains("replaying the last")).map(str::to_string).collect();
    println!("replay: command to reply {replied:?}; {}", ready.join(" | "));
}

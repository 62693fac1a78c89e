//! roipd's ALSA driver moving audio through alsa-lib itself, on a machine without a sound card.
//!
//! - alsa-lib's `file`/`null` plugins (unclocked, so [`Pacing::Fast`] makes them exact): a tone
//!   played into a `type file` PCM lands in its WAV file; a raw file behind a capture PCM comes
//!   back as frames; mono, stereo (a `type multi` slave forces two channels) and float
//!   (`type lfloat` forces FLOAT_LE) devices; a PCM that does not exist goes to Retrying and still stops at once.
//! - PulseAudio null sinks reached through ALSA's pulse plugin, for a real clock: a tone played
//!   into `txsink` arrives on `txsink.monitor` (recorded by `parec` and by roipd's own capture) at
//!   real-time rate; a starved stream's underrun is recovered in place and counted; killing the
//!   server looks like a USB unplug and the devices recover when it comes back.
//! - The steady state (ALSA capture and playback, sim clock) makes no heap allocation at all.
//! - `roipd bench`'s real-device figures (`roipd::bench::alsa_port`): a daemon on PulseAudio
//!   devices costs less idle than busy; without PulseAudio the bench says "not measured".
//!
//! `ALSA_CONFIG_PATH` replaces alsa-lib's whole configuration and is read once per process, so
//! each scenario runs in a child process: this test binary again, running only [`child_scenario`]
//! with the scenario named in `ROIPD_ALSA_SCENARIO`. The asound.conf written here is
//! self-contained (plugins built into alsa-lib, plus the pulse plugin from libasound2-plugins).
//!
//! Missing tools make the tests fail with the Debian package to install; they never skip.

use std::alloc::{GlobalAlloc, Layout, System};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use roipd::audio::{
    self, AudioOptions, CaptureHandle, DeviceEvent, DeviceEventKind, DeviceState, Feed, Pacing, PlaybackHandle, Tap,
};
use roipd::bench::rig::{self, PulseServer};

const SCENARIO_ENV: &str = "ROIPD_ALSA_SCENARIO";
const DIR_ENV: &str = "ROIPD_ALSA_DIR";
const T: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Parent side: one #[test] per scenario.

#[test]
fn file_plugin_playback_writes_the_tone() {
    let dir = tempfile::tempdir().unwrap();
    run_scenario("file-playback", dir.path());
}

#[test]
fn file_plugin_capture_reads_the_tone_back() {
    let dir = tempfile::tempdir().unwrap();
    run_scenario("file-capture", dir.path());
}

#[test]
fn steady_state_does_not_allocate() {
    let dir = tempfile::tempdir().unwrap();
    run_scenario("no-alloc", dir.path());
}

#[test]
fn unopenable_pcm_retries_and_stops_promptly() {
    let dir = tempfile::tempdir().unwrap();
    run_scenario("missing", dir.path());
}

#[test]
fn pulse_null_sink_plays_in_real_time() {
    require_pulse_tools();
    let dir = tempfile::tempdir().unwrap();
    let pulse = Pulse::start(dir.path());
    let rec_path = dir.path().join("parec.raw");
    let mut parec = ChildGuard(
        Command::new("parec")
            .args([
                "-d",
                "txsink.monitor",
                "--raw",
                "--format=s16le",
                "--rate=48000",
                "--channels=1",
                "--latency-msec=20",
            ])
            .env("PULSE_SERVER", pulse.server())
            .stdout(fs::File::create(&rec_path).unwrap())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start parec"),
    );
    std::thread::sleep(Duration::from_millis(300));

    let out = run_scenario("pulse-play", dir.path());

    std::thread::sleep(Duration::from_millis(300));
    parec.terminate();
    drop(pulse);
    let rec: Vec<f32> = fs::read(&rec_path)
        .unwrap()
        .chunks_exact(2)
        .map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0)
        .collect();
    // How long did the child play, by its own clock? It prints `played_secs=<s>`.
    let played: f64 = out
        .lines()
        .find_map(|l| l.split_once("played_secs=").map(|(_, v)| v))
        .and_then(|s| s.trim().parse().ok())
        .expect("child reports played_secs");
    let toned = rec.chunks(480).filter(|f| rms(f) > 0.1).count() as f64 * 0.01;
    eprintln!(
        "parec recorded {:.2} s of audio; the tone fills {toned:.2} s of it, played for {played:.2} s of wall clock",
        rec.len() as f64 / 48_000.0
    );
    assert!(
        (toned - played).abs() < 0.15 * played,
        "the tone should last as long as it was played in real time: {toned:.2} s vs {played:.2} s"
    );
    let toned_samples: Vec<f32> = rec.chunks(480).filter(|f| rms(f) > 0.1).flatten().copied().collect();
    let hz = zero_crossing_hz(&toned_samples[4800..], 48_000.0);
    assert!((hz - 1000.0).abs() < 5.0, "parec heard {hz} Hz");
}

#[test]
fn pulse_fed_playback_sleeps_while_idle_and_plays_again_when_woken() {
    require_pulse_tools();
    let dir = tempfile::tempdir().unwrap();
    let _pulse = Pulse::start(dir.path());
    run_scenario("pulse-idle", dir.path());
}

#[test]
fn pulse_fed_playback_keeps_only_its_lead_queued() {
    require_pulse_tools();
    let dir = tempfile::tempdir().unwrap();
    let _pulse = Pulse::start(dir.path());
    run_scenario("pulse-lead", dir.path());
}

#[test]
fn pulse_underrun_is_recovered_and_counted() {
    require_pulse_tools();
    let dir = tempfile::tempdir().unwrap();
    let _pulse = Pulse::start(dir.path());
    run_scenario("pulse-xrun", dir.path());
}

#[test]
fn pulse_server_loss_is_retried_and_recovered() {
    require_pulse_tools();
    let dir = tempfile::tempdir().unwrap();
    // The child starts, kills and restarts the server itself.
    run_scenario("pulse-unplug", dir.path());
}

#[test]
fn pulse_desk_speaker_sleeps_while_idle_and_plays_channel_audio_promptly() {
    require_pulse_tools();
    let dir = tempfile::tempdir().unwrap();
    let _pulse = Pulse::start(dir.path());
    run_scenario("pulse-desk", dir.path());
}

/// `roipd bench`'s figures on real ALSA devices: a daemon on PulseAudio null sinks, idle and
/// busy (`roipd::bench::alsa_port`). Busy is a working path (the bench checks radio B keyed);
/// idle costs less than busy in CPU and in wakeups.
#[test]
fn bench_measures_an_idle_and_a_busy_port_on_pulse_devices() {
    require_pulse_tools();
    let roipd = Path::new(env!("CARGO_BIN_EXE_roipd"));
    let f = roipd::bench::alsa_port::measure(roipd, Duration::from_secs(3)).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("measured: {f:?}");
    assert!(f.busy.cpu_pct > f.idle.cpu_pct, "{f:?}");
    assert!(f.busy.wakeups_per_s > f.idle.wakeups_per_s, "{f:?}");
    assert!(f.idle.cpu_pct > 0.0 && f.idle.wakeups_per_s > 0.0 && f.busy.rss_mb > 1.0, "{f:?}");
    assert!(f.busy.anon_rss_mb > 0.0 && f.busy.anon_rss_mb < f.busy.rss_mb, "{f:?}");
}

/// Without PulseAudio the bench says so and gives no figure.
#[test]
fn bench_says_not_measured_without_pulseaudio() {
    let dir = tempfile::tempdir().unwrap();
    // An empty PATH: no pulseaudio, no pacat.
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_scenario", "--nocapture", "--test-threads=1"])
        .env(SCENARIO_ENV, "bench-no-pulse")
        .env(DIR_ENV, dir.path())
        .env("PATH", dir.path())
        .output()
        .expect("run child");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
}

/// Not a test of its own: the entry point of the child processes above. Does nothing unless
/// `ROIPD_ALSA_SCENARIO` is set.
#[test]
fn child_scenario() {
    let Ok(scenario) = std::env::var(SCENARIO_ENV) else { return };
    let dir = PathBuf::from(std::env::var(DIR_ENV).expect("scenario dir"));
    match scenario.as_str() {
        "file-playback" => child_file_playback(&dir),
        "file-capture" => child_file_capture(&dir),
        "missing" => child_missing(),
        "no-alloc" => child_no_alloc(&dir),
        "pulse-play" => child_pulse_play(),
        "pulse-unplug" => child_pulse_unplug(&dir),
        "pulse-xrun" => child_pulse_xrun(),
        "pulse-idle" => child_pulse_idle(),
        "pulse-lead" => child_pulse_lead(),
        "bench-no-pulse" => child_bench_no_pulse(),
        "pulse-desk" => child_pulse_desk(&dir),
        other => panic!("unknown scenario {other}"),
    }
}

/// Write the asound.conf for `dir` and run `scenario` in a child process. Returns its output.
/// A PulseAudio for the scenario, if any, listens on `<dir>/native`.
fn run_scenario(scenario: &str, dir: &Path) -> String {
    let conf = write_asound_conf(dir, &dir.join("native"));
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_scenario", "--nocapture", "--test-threads=1"])
        .env("ALSA_CONFIG_PATH", &conf)
        .env(SCENARIO_ENV, scenario)
        .env(DIR_ENV, dir)
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("run child");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "scenario {scenario} failed ({}):\n{text}", out.status);
    // Let `cargo test -- --nocapture` show what the child measured.
    // (libtest prints the child's first line right after its "test child_scenario ... ".)
    for line in text.lines().filter_map(|l| l.find("measured:").map(|i| &l[i..])) {
        eprintln!("{scenario}: {line}");
    }
    text
}

fn write_asound_conf(dir: &Path, pulse_socket: &Path) -> PathBuf {
    let d = dir.display();
    let sock = pulse_socket.display();
    let conf = format!(
        r#"# Written by tests/audio_alsa.rs. Replaces the global configuration (ALSA_CONFIG_PATH).
pcm.nullpcm {{ type null }}
# A null sink that takes exactly two channels (`multi` allows only as many as it binds). The
# file plugin does its file I/O itself, so putting it in front of this forces stereo files.
pcm.null2 {{
    type multi
    slaves.a {{ pcm "nullpcm" channels 2 }}
    bindings.0 {{ slave a channel 0 }}
    bindings.1 {{ slave a channel 1 }}
}}

# Playback into WAV files: mono S16 (what roipd asks for), forced stereo, forced float.
pcm.tofile {{ type file slave.pcm "nullpcm" file "{d}/out.wav" format "wav" }}
pcm.tofile_st {{ type file slave.pcm "null2" file "{d}/out_st.wav" format "wav" }}
pcm.tofile_fl_raw {{ type file slave.pcm "nullpcm" file "{d}/out_fl.wav" format "wav" }}
pcm.tofile_fl {{ type lfloat slave {{ pcm "tofile_fl_raw" format S16_LE }} }}

# Capture from raw S16_LE files.
pcm.fromfile {{ type file slave.pcm "nullpcm" file "/dev/null" infile "{d}/in.raw" format "raw" }}
pcm.fromfile_st {{ type file slave.pcm "null2" file "/dev/null" infile "{d}/in_st.raw" format "raw" }}
pcm.fromfile_fl {{ type lfloat slave {{ pcm "fromfile" format S16_LE }} }}

# PulseAudio null sinks (see pulse.pa): the radio's TX and RX audio, and TX's monitor.
pcm.radio_tx {{ type pulse server "unix:{sock}" device "txsink" }}
pcm.radio_rx {{ type pulse server "unix:{sock}" device "rxsink.monitor" }}
pcm.radio_txmon {{ type pulse server "unix:{sock}" device "txsink.monitor" }}
# The same TX sink, but a starved stream reports an underrun (EPIPE) as hardware would.
pcm.radio_tx_xrun {{ type pulse server "unix:{sock}" device "txsink" handle_underrun true }}
"#
    );
    let path = dir.join("asound.conf");
    fs::write(&path, conf).unwrap();
    path
}

// ---------------------------------------------------------------------------------------------
// Child scenarios (run with ALSA_CONFIG_PATH set).

fn fast() -> AudioOptions {
    AudioOptions { pacing: Pacing::Fast, ..AudioOptions::default() }
}

fn tone(hz: f32, amp: f32, n: usize) -> Vec<f32> {
    (0..n).map(|i| amp * (2.0 * std::f32::consts::PI * hz * i as f32 / 48_000.0).sin()).collect()
}

fn child_file_playback(dir: &Path) {
    let src = tone(1000.0, 0.5, 100 * 480);
    for (pcm, file, channels) in
        [("tofile", "out.wav", 1), ("tofile_st", "out_st.wav", 2), ("tofile_fl", "out_fl.wav", 1)]
    {
        let (cb, events) = event_log();
        let play = audio::open_playback(pcm, &AudioOptions { events: Some(cb), ..fast() }).unwrap();
        for f in src.chunks(480) {
            play.push(f).unwrap();
        }
        wait_for(&format!("{pcm}: 100 frames played"), || play.stats().frames >= 100);
        let stats = play.stats();
        play.close();
        println!("{pcm}: {stats:?}; events {:?}", events.lock().unwrap());
        assert_eq!(stats.state, DeviceState::Running);
        assert_eq!((stats.xruns, stats.dropped, stats.frames), (0, 0, 100), "{pcm}");
        let opened = events.lock().unwrap().iter().find_map(|e| match e {
            DeviceEventKind::Opened { config, .. } => Some(config.clone()),
            _ => None,
        });
        let config = opened.expect("an Opened event");
        assert!(config.contains(&format!("{channels}ch 48000 Hz")), "{pcm}: {config}");
        if pcm == "tofile_fl" {
            assert!(config.starts_with("FLOAT_LE"), "lfloat only takes float: {config}");
        }

        let mut reader = hound::WavReader::open(dir.join(file)).unwrap();
        let spec = reader.spec();
        assert_eq!((spec.sample_rate, spec.channels, spec.bits_per_sample), (48_000, channels, 16), "{file}");
        let samples: Vec<i16> = reader.samples::<i16>().map(Result::unwrap).collect();
        assert_eq!(samples.len(), src.len() * usize::from(channels), "{file}: every sample, nothing else");
        for (i, frame) in samples.chunks(usize::from(channels)).enumerate() {
            let want = (src[i] * 32767.0).round() as i16;
            for &got in frame {
                // lfloat rounds on its own; allow it one step.
                assert!((i32::from(got) - i32::from(want)).abs() <= 1, "{file} sample {i}: {got} vs {want}");
            }
        }
    }
}

fn child_file_capture(dir: &Path) {
    // One second of tone. Stereo: left the tone, right minus half of it; downmixed: a quarter.
    let src = tone(1000.0, 0.5, 48_000);
    let pcm16: Vec<i16> = src.iter().map(|s| (s * 32767.0).round() as i16).collect();
    let mono: Vec<u8> = pcm16.iter().flat_map(|s| s.to_le_bytes()).collect();
    let stereo: Vec<u8> = pcm16.iter().flat_map(|&s| [s.to_le_bytes(), (-s / 2).to_le_bytes()].concat()).collect();
    fs::write(dir.join("in.raw"), mono).unwrap();
    fs::write(dir.join("in_st.raw"), stereo).unwrap();

    let frames = 90;
    // (lfloat's own int-to-float conversion is off by a few steps of 16-bit.)
    for (pcm, want_ch, tolerance, expect) in [
        ("fromfile", 1, 1e-6, Box::new(|s: i16| f32::from(s) / 32768.0) as Box<dyn Fn(i16) -> f32>),
        ("fromfile_st", 2, 1e-6, Box::new(|s: i16| (f32::from(s) + f32::from(-s / 2)) / 2.0 / 32768.0)),
        ("fromfile_fl", 1, 1e-3, Box::new(|s: i16| f32::from(s) / 32768.0)),
    ] {
        let (cb, events) = event_log();
        let cap = audio::open_capture(pcm, &AudioOptions { events: Some(cb), ..fast() }).unwrap();
        let got = recv_n(&cap, frames);
        let stats = cap.stats();
        cap.stop();
        println!("{pcm}: {stats:?}; events {:?}", events.lock().unwrap());
        assert_eq!((stats.xruns, stats.dropped), (0, 0), "{pcm}");
        let config = events.lock().unwrap().iter().find_map(|e| match e {
            DeviceEventKind::Opened { config, .. } => Some(config.clone()),
            _ => None,
        });
        assert!(config.unwrap().contains(&format!("{want_ch}ch 48000 Hz")), "{pcm}");
        for (i, (&g, &s)) in got.iter().zip(&pcm16).enumerate() {
            let want = expect(s);
            assert!((g - want).abs() <= tolerance, "{pcm} sample {i}: {g} vs {want}");
        }
        assert!((zero_crossing_hz(&got, 48_000.0) - 1000.0).abs() < 0.5);
    }
}

fn child_no_alloc(dir: &Path) {
    // ALSA capture from a file and playback into one, with a real-time sim tone as the clock,
    // everything moved by this thread as the daemon would.
    let pcm16: Vec<u8> = tone(1000.0, 0.5, 48_000).iter().flat_map(|s| ((s * 32767.0) as i16).to_le_bytes()).collect();
    fs::write(dir.join("in.raw"), pcm16).unwrap();
    let clock = audio::open_capture("sim:tone:1000", &AudioOptions::default()).unwrap();
    let rx = audio::open_capture("fromfile", &fast()).unwrap();
    let tx = audio::open_playback("tofile", &fast()).unwrap();
    let mut frame = vec![0.0; clock.frame_len()];
    let mut run = |d: Duration| {
        let t0 = Instant::now();
        while t0.elapsed() < d {
            clock.recv_timeout(&mut frame, T).unwrap();
            tx.push(&frame).unwrap();
            rx.recv_timeout(&mut frame, T).unwrap();
        }
    };
    run(Duration::from_millis(300));
    let probe = ALLOCATIONS.load(Ordering::Relaxed);
    drop(std::hint::black_box(vec![0u8; 16]));
    assert!(ALLOCATIONS.load(Ordering::Relaxed) > probe, "the counting allocator is in place");
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    run(Duration::from_secs(1));
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
    println!("measured: {allocations} heap allocations in 1 s of steady state (3 device threads, 100 frames each)");
    assert_eq!(allocations, 0);
}

fn child_missing() {
    let (cb, events) = event_log();
    let opts = AudioOptions { retry_initial: Duration::from_millis(100), events: Some(cb), ..AudioOptions::default() };
    let cap = audio::open_capture("no_such_pcm", &opts).unwrap();
    let play = audio::open_playback("no_such_pcm", &opts).unwrap();
    std::thread::sleep(Duration::from_millis(450));
    for stats in [cap.stats(), play.stats()] {
        println!("{stats:?}");
        assert!(matches!(stats.state, DeviceState::Retrying | DeviceState::Opening | DeviceState::Lost), "{stats:?}");
        let err = stats.last_error.unwrap_or_default();
        assert!(err.contains("open") && err.contains("No such file"), "{err}");
        assert_eq!(stats.frames, 0);
    }
    let t0 = Instant::now();
    cap.stop();
    play.stop();
    let took = t0.elapsed();
    println!("measured: stop of two retrying devices took {took:?}");
    assert!(took < Duration::from_millis(250), "stop took {took:?}");
    let delays: Vec<u128> = events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            DeviceEventKind::Retrying { delay, .. } => Some(delay.as_millis()),
            _ => None,
        })
        .collect();
    // Two devices, each 100 then 200 ms (then 400, cut short by the stop).
    assert_eq!(delays.iter().filter(|&&d| d == 100).count(), 2, "{delays:?}");
    assert_eq!(delays.iter().filter(|&&d| d == 200).count(), 2, "{delays:?}");
}

fn child_pulse_play() {
    let (cb, events) = event_log();
    let opts = AudioOptions { events: Some(cb), ..AudioOptions::default() };
    let play = audio::open_playback("radio_tx", &opts).unwrap();
    let mon = audio::open_capture("radio_txmon", &opts).unwrap();
    // The monitor is read on its own thread, as the daemon would; it counts frames as they come.
    let heard = Arc::new(Mutex::new(Vec::<f32>::new()));
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (heard, done) = (heard.clone(), done.clone());
        std::thread::spawn(move || {
            let mut buf = vec![0.0; mon.frame_len()];
            while !done.load(Ordering::Relaxed) {
                if mon.recv_timeout(&mut buf, Duration::from_millis(50)).is_ok() {
                    heard.lock().unwrap().extend_from_slice(&buf);
                }
            }
            mon.stats()
        })
    };
    let heard_frames = || heard.lock().unwrap().len() / 480;

    // The producer: a real-time sim clock, pushing frame by frame. Silence first, until audio
    // flows both ways at full rate: a fresh pulse stream takes a moment (up to seconds on a busy
    // machine) to start moving.
    let tone = audio::open_capture("sim:tone:1000:-6", &opts).unwrap();
    let mut frame = vec![0.0; tone.frame_len()];
    let silence = vec![0.0; tone.frame_len()];
    let t_warm = Instant::now();
    let mut mark = (Instant::now(), play.stats().frames, heard_frames());
    loop {
        tone.recv_timeout(&mut frame, T).unwrap();
        play.push(&silence).unwrap();
        if mark.0.elapsed() >= Duration::from_millis(500) {
            let (p, h) = (play.stats().frames - mark.1, heard_frames() - mark.2);
            if p >= 40 && h >= 40 {
                break;
            }
            assert!(t_warm.elapsed() < Duration::from_secs(20), "pulse never got going: {p} and {h} frames in 0.5 s");
            mark = (Instant::now(), play.stats().frames, heard_frames());
        }
    }
    println!("measured: pulse streams flowing after {:?}", t_warm.elapsed());

    // Three seconds of tone by the wall clock.
    let (f0, h0) = (play.stats().frames, heard_frames());
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(3) {
        tone.recv_timeout(&mut frame, T).unwrap();
        play.push(&frame).unwrap();
    }
    let played = t0.elapsed().as_secs_f64();
    let play_rate = (play.stats().frames - f0) as f64 / played;
    let mon_rate = (heard_frames() - h0) as f64 / played;
    // Then silence again, so the tone has a clean end in the recordings.
    let t1 = Instant::now();
    while t1.elapsed() < Duration::from_millis(500) {
        tone.recv_timeout(&mut frame, T).unwrap();
        play.push(&silence).unwrap();
    }
    done.store(true, Ordering::Relaxed);
    let mon_stats = reader.join().unwrap();
    let play_stats = play.stats();
    play.close();

    println!("played_secs={played:.3}");
    println!("measured: pulse playback {play_rate:.1} frames/s, monitor capture {mon_rate:.1} frames/s (100 expected)");
    println!("playback {play_stats:?}\nmonitor {mon_stats:?}\nevents {:?}", events.lock().unwrap());
    assert!((85.0..=115.0).contains(&play_rate), "playback ran at {play_rate} frames/s");
    assert!((85.0..=115.0).contains(&mon_rate), "monitor captured {mon_rate} frames/s");

    let heard = heard.lock().unwrap();
    let toned: Vec<f32> = heard.chunks(480).filter(|f| rms(f) > 0.1).flatten().copied().collect();
    let secs = toned.len() as f64 / 48_000.0;
    println!("measured: roipd's monitor capture heard {secs:.2} s of tone");
    assert!((secs - played).abs() < 0.15 * played, "{secs} s of tone for {played} s played");
    let steady = &toned[9600..toned.len() - 9600];
    let hz = zero_crossing_hz(steady, 48_000.0);
    let level_db = 20.0 * (rms(steady) * 2f32.sqrt()).log10();
    println!("measured: monitor tone {hz:.1} Hz at {level_db:.2} dBFS peak");
    assert!((hz - 1000.0).abs() < 2.0, "{hz} Hz");
    assert!((level_db + 6.0).abs() < 1.0, "{level_db} dBFS");
}

/// Plays a 1 kHz tone while `on`; idle (nothing to play) otherwise.
struct SwitchedFeed {
    on: Arc<AtomicBool>,
    fills: Arc<AtomicU64>,
    phase: f32,
}

impl Feed for SwitchedFeed {
    fn fill(&mut self, _at: Instant, frame: &mut [f32]) {
        self.fills.fetch_add(1, Ordering::Relaxed);
        if !self.on.load(Ordering::Relaxed) {
            frame.fill(0.0);
            return;
        }
        for s in frame.iter_mut() {
            *s = 0.5 * (std::f32::consts::TAU * self.phase).sin();
            self.phase = (self.phase + 1000.0 / 48_000.0) % 1.0;
        }
    }

    fn idle(&mut self) -> bool {
        !self.on.load(Ordering::Relaxed)
    }
}

/// Keeps when each captured frame arrived and whether it carried the tone.
struct ToneTap(Arc<Mutex<Vec<(Instant, bool)>>>);

impl Tap for ToneTap {
    fn frame(&mut self, at: Instant, frame: &[f32]) {
        self.0.lock().unwrap().push((at, rms(frame) > 0.1));
    }
}

/// Context switches of this process's threads named `name`.
fn thread_switches(name: &str) -> u64 {
    let threads = fs::read_dir("/proc/self/task").unwrap().flatten();
    let named = threads.filter(|t| fs::read_to_string(t.path().join("comm")).unwrap_or_default().trim() == name);
    named.map(|t| rig::switches(&t.path().join("status"))).sum()
}

/// A fed playback device whose feed goes idle stops (no fills, its thread mostly asleep, the
/// monitor hears silence) and plays again at once when woken, or on its own when the feed has
/// something again without a wake-up. The monitor is a tapped capture: frames reach the tap on
/// the device thread, nothing is queued.
fn child_pulse_idle() {
    let (on, fills) = (Arc::new(AtomicBool::new(true)), Arc::new(AtomicU64::new(0)));
    let feed = SwitchedFeed { on: on.clone(), fills: fills.clone(), phase: 0.0 };
    let opts = AudioOptions::default();
    let play = PlaybackHandle::open_fed("radio_tx", &opts, Box::new(feed)).unwrap();
    let waker = play.waker();
    let heard = Arc::new(Mutex::new(Vec::new()));
    let mon = CaptureHandle::open_tapped("radio_txmon", &opts, Box::new(ToneTap(heard.clone()))).unwrap();
    let tone_since = |t: Instant| heard.lock().unwrap().iter().any(|&(at, tone)| at >= t && tone);
    let start = Instant::now();
    let until = start + Duration::from_secs(20);
    while !tone_since(start) {
        assert!(Instant::now() < until, "pulse never got going");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(mon.queued(), 0, "a tapped capture queues nothing");

    for wake in [true, false] {
        on.store(false, Ordering::Relaxed);
        std::thread::sleep(Duration::from_secs(1));
        let (f0, s0, quiet_from) = (fills.load(Ordering::Relaxed), thread_switches("audio-play"), Instant::now());
        std::thread::sleep(Duration::from_secs(1));
        let (paused_fills, switches) =
            (fills.load(Ordering::Relaxed) - f0, thread_switches("audio-play").saturating_sub(s0));
        println!("measured: idle second: {paused_fills} fills, {switches} playback thread wakeups (running: ~100)");
        assert_eq!(paused_fills, 0, "an idle feed is not filled");
        assert!(switches < 40, "a paused playback thread sleeps: {switches} wakeups in a second");
        assert!(!tone_since(quiet_from), "silence on the monitor while idle");

        let resumed = Instant::now();
        on.store(true, Ordering::Relaxed);
        if wake {
            waker.wake();
        }
        let until = resumed + T;
        while !tone_since(resumed) {
            assert!(Instant::now() < until, "no tone after the feed had sound again (woken: {wake})");
            std::thread::sleep(Duration::from_millis(2));
        }
        let first = heard.lock().unwrap().iter().find(|&&(at, tone)| at >= resumed && tone).unwrap().0;
        println!("measured: tone on the monitor {:?} after it was due (woken: {wake})", first - resumed);
    }
    let stats = play.stats();
    println!("playback {stats:?}\nmonitor {:?}", mon.stats());
    assert_eq!(stats.state, DeviceState::Running);
    mon.stop();
    play.stop();
}

/// Plays silence (never idle, so the device keeps running) and, when asked, a tone; keeps the
/// wall-clock time of the fill that started it.
struct BurstFeed {
    start: Arc<AtomicBool>,
    tone_from: Arc<Mutex<Option<Instant>>>,
    left: usize,
    phase: f32,
}

impl Feed for BurstFeed {
    fn fill(&mut self, _at: Instant, frame: &mut [f32]) {
        if self.start.swap(false, Ordering::Relaxed) {
            self.left = 30;
            *self.tone_from.lock().unwrap() = Some(Instant::now());
        }
        if self.left == 0 {
            frame.fill(0.0);
            return;
        }
        self.left -= 1;
        for s in frame.iter_mut() {
            *s = 0.5 * (std::f32::consts::TAU * self.phase).sin();
            self.phase = (self.phase + 1000.0 / 48_000.0) % 1.0;
        }
    }

    fn idle(&mut self) -> bool {
        false
    }
}

/// A running fed playback device queues its lead (two 10 ms periods), not its whole 4-period
/// buffer: a tone's first frame reaches the monitor (a tapped capture) 11-20 ms after it was
/// filled (13 ms median on the 2-core reference box), where the full buffer took 40 ms.
fn child_pulse_lead() {
    let (start, tone_from) = (Arc::new(AtomicBool::new(false)), Arc::new(Mutex::new(None)));
    let feed = BurstFeed { start: start.clone(), tone_from: tone_from.clone(), left: 0, phase: 0.0 };
    let opts = AudioOptions::default();
    let play = PlaybackHandle::open_fed("radio_tx", &opts, Box::new(feed)).unwrap();
    let heard = Arc::new(Mutex::new(Vec::new()));
    let mon = CaptureHandle::open_tapped("radio_txmon", &opts, Box::new(ToneTap(heard.clone()))).unwrap();
    let tone_since = |t: Instant| heard.lock().unwrap().iter().find(|&&(at, tone)| at >= t && tone).map(|&(at, _)| at);
    // Until both streams flow (a fresh pulse stream can take a moment), then a second more.
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        start.store(true, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(500));
        if tone_since(Instant::now() - Duration::from_millis(500)).is_some() {
            break;
        }
        assert!(Instant::now() < until, "pulse never got going");
    }
    std::thread::sleep(Duration::from_secs(1));
    let mut lat = Vec::new();
    for _ in 0..7 {
        *tone_from.lock().unwrap() = None;
        start.store(true, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(600));
        let filled = tone_from.lock().unwrap().expect("the feed started the tone");
        let at = tone_since(filled).expect("the monitor heard the tone");
        lat.push((at - filled).as_secs_f64() * 1e3);
    }
    let stats = play.stats();
    mon.stop();
    play.stop();
    lat.sort_by(f64::total_cmp);
    let median = lat[lat.len() / 2];
    println!("measured: fill to monitor {median:.1} ms median ({lat:.1?}); playback {stats:?}");
    assert!(median < 30.0, "a frame waits behind more than the lead: {median:.1} ms ({lat:.1?})");
}

/// Context switches of a process's threads whose names start with one of `prefixes`.
fn process_switches(pid: u32, prefixes: &[&str]) -> u64 {
    let threads = fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten();
    let named = threads.filter(|t| {
        let comm = fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        prefixes.iter().any(|p| comm.starts_with(p))
    });
    named.map(|t| rig::switches(&t.path().join("status"))).sum()
}

/// A daemon with a desk whose speaker is a PulseAudio device, and a radio (a `sim:tone`
/// receiver, COR on a sim line) on its channel. While the channel is idle the speaker's device
/// thread sleeps, and no thread polls the mixer (a thread that did, every 2 ms, made ~500
/// wakeups a second); when the radio's COR opens, the tone reaches the
/// speaker's monitor promptly; afterwards it sleeps again.
fn child_pulse_desk(dir: &Path) {
    let lines = dir.join("lines");
    let config = format!(
        "device_id = \"desk-box\"\n[gpio.sim]\ndir = \"{}\"\n[channel.ops]\n\
         [port.r1]\nkind = \"radio\"\nchannel = \"ops\"\ncor = {{ line = \"sim:r1-cor\" }}\n\
         ptt = {{ line = \"sim:r1-ptt\" }}\n[port.r1.audio]\ncapture = \"sim:tone:1000:-6\"\n\
         [port.desk]\nkind = \"desk\"\nchannels = [\"ops\"]\n[port.desk.audio]\nplayback = \"radio_tx\"\n",
        lines.display()
    );
    fs::write(dir.join("desk.toml"), config).unwrap();
    let log = dir.join("daemon.log");
    let daemon = ChildGuard(
        Command::new(env!("CARGO_BIN_EXE_roipd"))
            .arg("run")
            .arg(dir.join("desk.toml"))
            .env("RUNTIME_DIRECTORY", dir.join("run"))
            .env("RUST_LOG", "info")
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let pid = daemon.0.id();
    wait_for("the desk's speaker open", || {
        let text = fs::read_to_string(&log).unwrap_or_default();
        text.lines().any(|l| l.contains("audio device open") && l.contains("radio_tx"))
    });
    let heard = Arc::new(Mutex::new(Vec::new()));
    let mon =
        CaptureHandle::open_tapped("radio_txmon", &AudioOptions::default(), Box::new(ToneTap(heard.clone()))).unwrap();
    let tone_since = |t: Instant| heard.lock().unwrap().iter().find(|&&(at, tone)| at >= t && tone).map(|&(at, _)| at);
    // The speaker's threads: its device's, and any named for the desk (a mixing thread).
    let speaker = ["audio-play", "desk"];
    // A second with few wakeups of the speaker's threads and no tone, within 5 s (a fresh pulse
    // stream takes a moment to start, and the device plays out its buffer before it pauses).
    let idle_second = |when: &str| {
        let mut seen = Vec::new();
        loop {
            let (s0, t0) = (process_switches(pid, &speaker), Instant::now());
            std::thread::sleep(Duration::from_secs(1));
            let switches = process_switches(pid, &speaker).saturating_sub(s0);
            seen.push(switches);
            if switches < 40 {
                println!(
                    "measured: {when}: {seen:?} speaker thread wakeups in successive seconds (a running device: ~100)"
                );
                assert!(tone_since(t0).is_none(), "{when}: silence on the monitor");
                return;
            }
            assert!(seen.len() < 5, "{when}: an idle desk speaker sleeps: {seen:?} wakeups in successive seconds");
        }
    };
    let cor = |high: bool| {
        let tmp = lines.join(".r1-cor");
        fs::write(&tmp, if high { "1\n" } else { "0\n" }).unwrap();
        fs::rename(&tmp, lines.join("r1-cor")).unwrap();
    };
    idle_second("idle after start");
    for over in 0..2 {
        let opened = Instant::now();
        cor(true);
        let until = opened + T;
        let at = loop {
            if let Some(at) = tone_since(opened) {
                break at;
            }
            assert!(Instant::now() < until, "over {over}: the desk never played the radio's audio");
            std::thread::sleep(Duration::from_millis(5));
        };
        let latency = at - opened;
        println!("measured: over {over}: COR to tone on the desk speaker's monitor {latency:?}");
        assert!(latency < Duration::from_millis(400), "over {over}: the speaker was slow to start: {latency:?}");
        std::thread::sleep(Duration::from_millis(500));
        cor(false);
        idle_second("idle after an over");
    }
    mon.stop();
    drop(daemon);
}

fn child_bench_no_pulse() {
    let roipd = Path::new(env!("CARGO_BIN_EXE_roipd"));
    let why = roipd::bench::alsa_port::measure(roipd, Duration::from_secs(1)).expect_err("nothing to measure on");
    println!("measured: {why}");
    assert!(why.starts_with("not measured: no PulseAudio (`pulseaudio` is missing"), "{why}");
}

fn child_pulse_xrun() {
    let (cb, events) = event_log();
    // Fast: the device thread waits for frames instead of playing silence, so a producer that
    // stalls starves the device itself.
    let play = audio::open_playback("radio_tx_xrun", &AudioOptions { events: Some(cb), ..fast() }).unwrap();
    let clock = audio::open_capture("sim:tone:1000:-6", &AudioOptions::default()).unwrap();
    let mut frame = vec![0.0; clock.frame_len()];
    let mut feed = |frames: usize| {
        for _ in 0..frames {
            clock.recv_timeout(&mut frame, T).unwrap();
            play.push(&frame).unwrap();
        }
    };
    // Until the stream is flowing (see child_pulse_play), then a stall of the producer.
    feed(100);
    wait_for("pulse stream running", || play.stats().frames >= 50);
    feed(100);
    let before = play.stats();
    std::thread::sleep(Duration::from_millis(500));
    feed(100);
    let after = play.stats();
    let stopped_at = Instant::now();
    play.stop();
    println!("before the stall {before:?}\nafter {after:?}");
    println!("events {:?}", events.lock().unwrap());
    println!("measured: {} xrun(s) from a 500 ms producer stall", after.xruns - before.xruns);
    assert!(after.xruns > before.xruns, "the stall was noticed as an xrun");
    assert_eq!(after.state, DeviceState::Running, "recovered in place, not lost");
    assert_eq!(after.reopens, 0);
    assert!(events.lock().unwrap().iter().any(|e| matches!(e, DeviceEventKind::Xrun { suspend: false, .. })));
    assert!(stopped_at.elapsed() < Duration::from_millis(500));
}

fn child_pulse_unplug(dir: &Path) {
    let (cb, events) = event_log();
    let opts = AudioOptions {
        retry_initial: Duration::from_millis(200),
        retry_max: Duration::from_millis(800),
        events: Some(cb),
        ..AudioOptions::default()
    };
    let pulse = Pulse::start(dir);
    let cap = audio::open_capture("radio_rx", &opts).unwrap();
    let play = audio::open_playback("radio_tx", &opts).unwrap();
    let mut buf = vec![0.0; cap.frame_len()];
    wait_for("both running", || {
        let _ = cap.try_recv(&mut buf);
        cap.stats().frames > 10 && play.stats().frames > 10
    });

    // Abrupt loss, as when a USB interface is pulled.
    let t_lost = Instant::now();
    drop(pulse);
    let gone = |s: &audio::AudioStats| matches!(s.state, DeviceState::Lost | DeviceState::Retrying);
    wait_for("capture lost", || gone(&cap.stats()));
    println!("measured: capture noticed the loss after {:?}: {:?}", t_lost.elapsed(), cap.stats().last_error);
    wait_for("playback lost", || gone(&play.stats()));
    println!("measured: playback noticed the loss after {:?}: {:?}", t_lost.elapsed(), play.stats().last_error);
    std::thread::sleep(Duration::from_millis(600));
    let before = cap.stats().frames;

    let t_back = Instant::now();
    let _pulse = Pulse::start(dir);
    wait_for("both recovered", || {
        while cap.try_recv(&mut buf).is_ok() {}
        cap.stats().state == DeviceState::Running && play.stats().state == DeviceState::Running
    });
    println!("measured: recovered {:?} after the server came back", t_back.elapsed());
    wait_for("capture flowing again", || {
        while cap.try_recv(&mut buf).is_ok() {}
        cap.stats().frames > before + 10
    });
    let (cs, ps) = (cap.stats(), play.stats());
    println!("capture {cs:?}\nplayback {ps:?}");
    assert_eq!((cs.reopens, ps.reopens), (1, 1));
    let t0 = Instant::now();
    drop(cap);
    drop(play);
    assert!(t0.elapsed() < Duration::from_millis(500), "stop took {:?}", t0.elapsed());

    let events = events.lock().unwrap();
    println!("events: {events:?}");
    assert!(events.iter().any(|e| matches!(e, DeviceEventKind::Lost { .. })));
    assert!(events.iter().any(|e| matches!(e, DeviceEventKind::Retrying { .. })));
    assert_eq!(events.iter().filter(|e| matches!(e, DeviceEventKind::Opened { recovered: true, .. })).count(), 2);
}

// ---------------------------------------------------------------------------------------------
// Helpers.

/// Counts heap allocations in this process (all threads), for the steady-state check.
struct CountingAllocator;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: defers everything to the system allocator; only counts.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

fn event_log() -> (audio::EventCallback, Arc<Mutex<Vec<DeviceEventKind>>>) {
    let log = Arc::new(Mutex::new(vec![]));
    let cb: audio::EventCallback = {
        let log = log.clone();
        Arc::new(move |e: &DeviceEvent| log.lock().unwrap().push(e.kind.clone()))
    };
    (cb, log)
}

fn recv_n(cap: &CaptureHandle, frames: usize) -> Vec<f32> {
    let mut out = vec![];
    let mut buf = vec![0.0; cap.frame_len()];
    for _ in 0..frames {
        cap.recv_timeout(&mut buf, T).expect("frame");
        out.extend_from_slice(&buf);
    }
    out
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let until = Instant::now() + T;
    while !cond() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn rms(x: &[f32]) -> f32 {
    (x.iter().map(|s| s * s).sum::<f32>() / x.len().max(1) as f32).sqrt()
}

fn zero_crossing_hz(x: &[f32], rate: f32) -> f32 {
    let rising: Vec<f32> = x
        .windows(2)
        .enumerate()
        .filter(|(_, w)| w[0] < 0.0 && w[1] >= 0.0)
        .map(|(i, w)| i as f32 + w[0] / (w[0] - w[1]))
        .collect();
    assert!(rising.len() >= 2, "no tone");
    (rising.len() - 1) as f32 * rate / (rising[rising.len() - 1] - rising[0])
}

fn require_pulse_tools() {
    if let Some(why) = rig::missing_pulse_tools() {
        panic!("{why}");
    }
}

/// A private PulseAudio with the two null sinks, on `<dir>/native`. Killed on drop.
struct Pulse;

impl Pulse {
    fn start(dir: &Path) -> PulseServer {
        PulseServer::start(dir, &[rig::null_sink("txsink"), rig::null_sink("rxsink")]).unwrap_or_else(|e| panic!("{e}"))
    }
}

/// A child process killed and reaped on drop.
struct ChildGuard(Child);

impl ChildGuard {
    /// SIGTERM (so parec flushes what it recorded), then reap.
    fn terminate(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            // SAFETY: kill(2) on our own child, which has not been reaped yet.
            unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        }
        let _ = self.0.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

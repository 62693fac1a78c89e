//! Behaviour of the device harness through the public API, on sim devices.
//! Timing checks are deliberately loose: CI machines are slow and shared.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::test_util::{goertzel_power, peak, rms, zero_crossing_hz};
use super::*;

const T: Duration = Duration::from_secs(5);

fn fast() -> AudioOptions {
    AudioOptions { pacing: Pacing::Fast, ..AudioOptions::default() }
}

fn recv_n(cap: &CaptureHandle, frames: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(frames * cap.frame_len());
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
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn tone(hz: f32, amp: f32, n: usize, rate: u32) -> Vec<f32> {
    (0..n).map(|i| amp * (2.0 * std::f32::consts::PI * hz * i as f32 / rate as f32).sin()).collect()
}

fn events() -> (EventCallback, Arc<Mutex<Vec<DeviceEventKind>>>) {
    let log = Arc::new(Mutex::new(vec![]));
    let cb: EventCallback = {
        let log = log.clone();
        Arc::new(move |e: &DeviceEvent| log.lock().unwrap().push(e.kind.clone()))
    };
    (cb, log)
}

#[test]
fn names_parse() {
    assert_eq!(DeviceSpec::parse("sim:tone:1000").unwrap(), DeviceSpec::Tone { hz: 1000.0, dbfs: DEFAULT_TONE_DBFS });
    assert_eq!(DeviceSpec::parse("sim:tone:440.5:-20").unwrap(), DeviceSpec::Tone { hz: 440.5, dbfs: -20.0 });
    assert_eq!(DeviceSpec::parse("sim:wav:/a:b.wav").unwrap(), DeviceSpec::Wav("/a:b.wav".into()));
    assert_eq!(DeviceSpec::parse("sim:wav-out:x.wav").unwrap(), DeviceSpec::WavOut("x.wav".into()));
    assert_eq!(DeviceSpec::parse("sim:null").unwrap(), DeviceSpec::Null);
    assert_eq!(DeviceSpec::parse("sim:silence").unwrap(), DeviceSpec::Silence);
    assert_eq!(
        DeviceSpec::parse("plughw:CARD=Device,DEV=0").unwrap(),
        DeviceSpec::Alsa("plughw:CARD=Device,DEV=0".into())
    );
    for bad in ["sim:tone", "sim:tone:0", "sim:tone:30000", "sim:tone:1000:+3", "sim:tone:x", "sim:wav:", "sim:foo", ""]
    {
        assert!(matches!(DeviceSpec::parse(bad), Err(AudioError::BadName(..))), "{bad:?} should be refused");
    }
    assert!(matches!(open_capture("sim:null", &fast()), Err(AudioError::WrongDirection(..))));
    assert!(matches!(open_playback("sim:tone:1000", &fast()), Err(AudioError::WrongDirection(..))));
    let opts = AudioOptions { period_ms: 0, ..fast() };
    assert!(matches!(open_capture("sim:silence", &opts), Err(AudioError::Options(_))));
}

#[test]
fn tone_has_its_frequency_and_level() {
    let cap = open_capture("sim:tone:1000:-6", &fast()).unwrap();
    assert_eq!(cap.frame_len(), 480);
    let x = recv_n(&cap, 100);
    let hz = zero_crossing_hz(&x, 48_000.0);
    assert!((hz - 1000.0).abs() < 0.5, "frequency {hz}");
    let want = 10f32.powf(-6.0 / 20.0);
    assert!((peak(&x) - want).abs() < 0.005, "peak {} want {want}", peak(&x));
    assert!((rms(&x) - want / 2f32.sqrt()).abs() < 0.005);

    // Default level, and a 20 ms frame size.
    let opts = AudioOptions { period_ms: 20, ..fast() };
    let cap = open_capture("sim:tone:440", &opts).unwrap();
    assert_eq!(cap.frame_len(), 960);
    let x = recv_n(&cap, 50);
    assert!((peak(&x) - 10f32.powf(DEFAULT_TONE_DBFS as f32 / 20.0)).abs() < 0.005);
    assert!((zero_crossing_hz(&x, 48_000.0) - 440.0).abs() < 0.5);
}

#[test]
fn silence_is_silent() {
    let cap = open_capture("sim:silence", &fast()).unwrap();
    assert_eq!(peak(&recv_n(&cap, 10)), 0.0);
}

#[test]
fn wav_out_then_wav_in_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rt.wav");
    let frames = 250;
    let src = tone(700.0, 0.5, frames * 480, 48_000);

    let play = open_playback(&format!("sim:wav-out:{}", path.display()), &fast()).unwrap();
    for f in src.chunks(480) {
        play.push(f).unwrap();
    }
    play.close();

    let reader = hound::WavReader::open(&path).unwrap();
    assert_eq!(reader.spec(), sim::wav_out_spec());
    assert_eq!(reader.duration() as usize, frames * 480, "Fast playback loses nothing; close plays it all");

    let cap = open_capture(&format!("sim:wav:{}", path.display()), &fast()).unwrap();
    let back = recv_n(&cap, frames + 3);
    for (i, (a, b)) in src.iter().zip(&back).enumerate() {
        assert!((a - b).abs() <= 1.0 / 32767.0, "sample {i}: {a} vs {b}");
    }
    // It loops: after the end comes the start again.
    assert_eq!(&back[frames * 480..], &back[..3 * 480]);
}

#[test]
fn wav_in_converts_rate_channels_and_format() {
    let dir = tempfile::tempdir().unwrap();
    // 44.1 kHz stereo 16-bit, and 16 kHz mono float.
    let cases = [
        (
            hound::WavSpec {
                channels: 2,
                sample_rate: 44_100,
                bits_per_sample: 16,
                sample_format: hound::SampleFormat::Int,
            },
            "a.wav",
        ),
        (
            hound::WavSpec {
                channels: 1,
                sample_rate: 16_000,
                bits_per_sample: 32,
                sample_format: hound::SampleFormat::Float,
            },
            "b.wav",
        ),
        (
            hound::WavSpec {
                channels: 1,
                sample_rate: 8_000,
                bits_per_sample: 8,
                sample_format: hound::SampleFormat::Int,
            },
            "c.wav",
        ),
    ];
    for (spec, file) in cases {
        let path = dir.path().join(file);
        let mut w = hound::WavWriter::create(&path, spec).unwrap();
        for s in tone(1000.0, 0.5, spec.sample_rate as usize * 2, spec.sample_rate) {
            for _ in 0..spec.channels {
                match (spec.sample_format, spec.bits_per_sample) {
                    (hound::SampleFormat::Float, _) => w.write_sample(s).unwrap(),
                    (_, 8) => w.write_sample((s * 127.0).round() as i8).unwrap(),
                    _ => w.write_sample((s * 32767.0).round() as i16).unwrap(),
                }
            }
        }
        w.finalize().unwrap();

        let cap = open_capture(&format!("sim:wav:{}", path.display()), &fast()).unwrap();
        let x = recv_n(&cap, 150);
        let steady = &x[9600..];
        let hz = zero_crossing_hz(steady, 48_000.0);
        assert!((hz - 1000.0).abs() < 1.0, "{file}: frequency {hz}");
        assert!((rms(steady) - 0.5 / 2f32.sqrt()).abs() < 0.02, "{file}: rms {}", rms(steady));
        assert!(goertzel_power(steady, 48_000.0, 1000.0) > 50.0 * goertzel_power(steady, 48_000.0, 1500.0));
    }
}

#[test]
fn wav_out_is_valid_while_still_recording() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("live.wav");
    let play = open_playback(&format!("sim:wav-out:{}", path.display()), &fast()).unwrap();
    let f = tone(1000.0, 0.3, 480, 48_000);
    for _ in 0..150 {
        play.push(&f).unwrap();
    }
    wait_for("150 frames written", || play.stats().frames >= 150);
    // The header was rewritten after the first second (100 frames) although nothing closed it.
    let reader = hound::WavReader::open(&path).unwrap();
    assert!(reader.duration() >= 100 * 480, "header says {} samples", reader.duration());
    drop(play);
    assert_eq!(hound::WavReader::open(&path).unwrap().duration(), 150 * 480, "finalized on drop");
}

#[test]
fn realtime_capture_runs_at_real_time() {
    let cap = open_capture("sim:tone:1000", &AudioOptions::default()).unwrap();
    let mut buf = vec![0.0; cap.frame_len()];
    cap.recv_timeout(&mut buf, T).unwrap();
    let t0 = Instant::now();
    let mut n = 0;
    while t0.elapsed() < Duration::from_millis(1000) {
        if cap.recv_timeout(&mut buf, Duration::from_millis(50)).is_ok() {
            n += 1;
        }
    }
    let rate = n as f64 / t0.elapsed().as_secs_f64();
    eprintln!("sim capture, real-time pacing: {rate:.1} frames/s (100 expected)");
    assert!((80.0..=120.0).contains(&rate), "{rate} frames/s");
    assert_eq!(cap.stats().dropped, 0);
}

#[test]
fn realtime_playback_runs_at_real_time() {
    let play = open_playback("sim:null", &AudioOptions::default()).unwrap();
    wait_for("running", || play.stats().state == DeviceState::Running);
    let f0 = play.stats().frames;
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_millis(1000));
    let rate = (play.stats().frames - f0) as f64 / t0.elapsed().as_secs_f64();
    eprintln!("sim playback, real-time pacing: {rate:.1} frames/s (100 expected)");
    assert!((80.0..=120.0).contains(&rate), "{rate} frames/s");
}

#[test]
fn fast_pacing_is_much_faster_than_real_time() {
    let cap = open_capture("sim:tone:1000", &fast()).unwrap();
    let t0 = Instant::now();
    recv_n(&cap, 1000); // 10 s of audio
    assert!(t0.elapsed() < Duration::from_secs(3), "took {:?}", t0.elapsed());
    assert_eq!(cap.stats().dropped, 0, "Fast never drops");
}

#[test]
fn slow_reader_loses_oldest_frames_not_latency() {
    let opts = AudioOptions { queue_frames: 4, ..AudioOptions::default() };
    let cap = open_capture("sim:tone:1000", &opts).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let s = cap.stats();
    assert_eq!(cap.queued(), 4, "the queue never holds more than its depth");
    assert!(s.dropped >= 15 && s.dropped + 4 <= s.frames + 1, "{s:?}");
    // The newest frames are what is left: reading them all empties the queue at once (besides
    // frames made while reading: a 10 ms tick can fall between two reads), and the next frame
    // arrives within about a period (no backlog).
    let mut buf = vec![0.0; 480];
    let made_before = cap.stats().frames;
    let mut drained = 0;
    while cap.try_recv(&mut buf).is_ok() {
        drained += 1;
        assert!(drained <= 100, "the queue never empties");
    }
    let made_meanwhile = cap.stats().frames - made_before;
    assert!(drained >= 4 && drained <= 4 + made_meanwhile, "drained {drained}, {made_meanwhile} made meanwhile");
    let t0 = Instant::now();
    cap.recv_timeout(&mut buf, T).unwrap();
    assert!(t0.elapsed() < Duration::from_millis(100));
}

#[test]
fn playback_counts_underruns_and_silence() {
    let play = open_playback("sim:null", &AudioOptions::default()).unwrap();
    let f = vec![0.25; 480];
    for _ in 0..5 {
        play.push(&f).unwrap();
    }
    std::thread::sleep(Duration::from_millis(250));
    let s = play.stats();
    // The burst's end starves the device once; a loaded machine that descheduled this thread
    // between two pushes adds a starvation per pause (never more than one per frame pushed).
    assert!((1..=5).contains(&s.underruns), "one burst of audio, at least one starvation: {s:?}");
    assert!(s.silence_frames >= 10, "{s:?}");
    assert!(s.frames >= s.silence_frames + 5, "{s:?}");
    assert_eq!(s.dropped, 0);
    assert_eq!(play.queued(), 0);
}

#[test]
fn fast_writer_drops_oldest_playback_frames() {
    let opts = AudioOptions { queue_frames: 4, ..AudioOptions::default() };
    let play = open_playback("sim:null", &opts).unwrap();
    let f = vec![0.0; 480];
    for _ in 0..20 {
        play.push(&f).unwrap();
    }
    assert!(play.queued() <= 4);
    // The device thread may take one frame meanwhile; the rest beyond the depth are dropped.
    let dropped = play.stats().dropped;
    assert!((10..=16).contains(&dropped), "dropped {dropped}");
    assert_eq!(play.push(&[0.0; 10]), Err(PushError::WrongLength { expected: 480, got: 10 }));
}

#[test]
fn realtime_close_plays_out_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("close.wav");
    let play = open_playback(&format!("sim:wav-out:{}", path.display()), &AudioOptions::default()).unwrap();
    let f = vec![0.5; 480];
    for _ in 0..8 {
        play.push(&f).unwrap();
    }
    let t0 = Instant::now();
    play.close();
    assert!(t0.elapsed() < Duration::from_millis(500), "close took {:?}", t0.elapsed());
    let samples: Vec<i16> = hound::WavReader::open(&path).unwrap().samples::<i16>().map(Result::unwrap).collect();
    let loud = samples.iter().filter(|&&s| s != 0).count();
    assert_eq!(loud, 8 * 480, "every queued frame was played before the file closed");
}

#[test]
fn stop_joins_promptly() {
    for name in ["sim:tone:1000", "sim:silence"] {
        let cap = open_capture(name, &AudioOptions::default()).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let t0 = Instant::now();
        cap.stop();
        assert!(t0.elapsed() < Duration::from_millis(250), "{name}: stop took {:?}", t0.elapsed());
    }
    // Fast capture blocked on a full queue, and Fast playback blocked on an empty one.
    let cap = open_capture("sim:tone:1000", &fast()).unwrap();
    wait_for("queue full", || cap.queued() == 8);
    let t0 = Instant::now();
    drop(cap);
    assert!(t0.elapsed() < Duration::from_millis(250));
    let play = open_playback("sim:null", &fast()).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let t0 = Instant::now();
    play.stop();
    assert!(t0.elapsed() < Duration::from_millis(250));
}

#[test]
fn missing_device_retries_and_still_stops_promptly() {
    let dir = tempfile::tempdir().unwrap();
    let (cb, log) = events();
    let opts = AudioOptions { retry_initial: Duration::from_secs(10), events: Some(cb), ..AudioOptions::default() };
    let cap = open_capture(&format!("sim:wav:{}", dir.path().join("nope.wav").display()), &opts).unwrap();
    wait_for("retrying", || cap.stats().state == DeviceState::Retrying);
    let s = cap.stats();
    assert!(s.last_error.as_deref().unwrap_or("").contains("nope.wav"), "{s:?}");
    let t0 = Instant::now();
    cap.stop();
    assert!(t0.elapsed() < Duration::from_millis(250), "stop while retrying took {:?}", t0.elapsed());
    let log = log.lock().unwrap();
    assert!(matches!(log[0], DeviceEventKind::Lost { .. }), "{log:?}");
    assert!(matches!(log[1], DeviceEventKind::Retrying { attempt: 1, delay } if delay == Duration::from_secs(10)));
    assert_eq!(log.last(), Some(&DeviceEventKind::Stopped));
}

#[test]
fn device_appearing_later_is_picked_up_with_backoff() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("later");
    let (cb, log) = events();
    let opts = AudioOptions {
        retry_initial: Duration::from_millis(20),
        retry_max: Duration::from_millis(80),
        events: Some(cb),
        ..fast()
    };
    let play = open_playback(&format!("sim:wav-out:{}", sub.join("o.wav").display()), &opts).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_ne!(play.stats().state, DeviceState::Running);
    std::fs::create_dir(&sub).unwrap();
    wait_for("running", || play.stats().state == DeviceState::Running);
    play.push(&[0.1; 480]).unwrap();
    play.close();
    assert_eq!(hound::WavReader::open(sub.join("o.wav")).unwrap().duration(), 480);

    let log = log.lock().unwrap();
    let delays: Vec<_> = log
        .iter()
        .filter_map(|e| match e {
            DeviceEventKind::Retrying { delay, .. } => Some(delay.as_millis()),
            _ => None,
        })
        .collect();
    assert!(delays.starts_with(&[20, 40, 80, 80]), "doubling, capped: {delays:?}");
    assert!(log.iter().any(|e| matches!(e, DeviceEventKind::Opened { recovered: false, .. })));
}

#[tokio::test]
async fn async_recv_wakes_on_frames() {
    let cap = open_capture("sim:tone:1000", &AudioOptions::default()).unwrap();
    let mut buf = vec![0.0; 480];
    let t0 = Instant::now();
    for _ in 0..10 {
        tokio::time::timeout(T, cap.recv(&mut buf)).await.expect("in time").unwrap();
    }
    // Ten frames in real time take about 100 ms.
    assert!(t0.elapsed() >= Duration::from_millis(70), "{:?}", t0.elapsed());
    assert!(peak(&buf) > 0.1);
    assert_eq!(cap.recv(&mut [0.0; 3]).await, Err(RecvError::WrongLength { expected: 480, got: 3 }));
}

#[test]
fn reads_after_stop_drain_then_report_stopped() {
    let cap = open_capture("sim:tone:1000", &fast()).unwrap();
    wait_for("queue full", || cap.queued() == 8);
    let shared = cap.shared.clone();
    cap.stop();
    let after = CaptureHandle { shared, thread: None };
    let mut buf = vec![0.0; 480];
    for _ in 0..8 {
        after.try_recv(&mut buf).unwrap();
    }
    assert_eq!(after.try_recv(&mut buf), Err(RecvError::Stopped));
    assert_eq!(after.stats().state, DeviceState::Stopped);
}

/// A feed that writes a running sample counter and records the times it was asked at.
struct CountingFeed {
    next: f32,
    ats: Arc<Mutex<Vec<Instant>>>,
    ticks: Arc<Mutex<u64>>,
}

impl Feed for CountingFeed {
    fn fill(&mut self, at: Instant, frame: &mut [f32]) {
        self.ats.lock().unwrap().push(at);
        frame.fill(self.next);
        self.next = (self.next + 0.001) % 0.5;
    }

    fn tick(&mut self) {
        *self.ticks.lock().unwrap() += 1;
    }
}

#[test]
fn fed_playback_is_filled_on_the_device_thread_at_steady_times() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fed.wav");
    let ats = Arc::new(Mutex::new(vec![]));
    let ticks = Arc::new(Mutex::new(0));
    let feed = CountingFeed { next: 0.0, ats: ats.clone(), ticks: ticks.clone() };
    let opts = AudioOptions::default();
    let play = PlaybackHandle::open_fed(&format!("sim:wav-out:{}", path.display()), &opts, Box::new(feed)).unwrap();
    wait_for("30 fed frames", || ats.lock().unwrap().len() >= 30);
    // Pushes are not played by a fed device (nothing breaks either).
    play.push(&vec![0.9; play.frame_len()]).unwrap();
    play.stop();
    let ats = ats.lock().unwrap().clone();
    assert!(*ticks.lock().unwrap() >= ats.len() as u64, "ticked on every turn");
    // Even spacing: one period per frame, whatever the wake-up jitter (within the slow pull).
    for w in ats.windows(2) {
        let gap = w[1].saturating_duration_since(w[0]);
        assert!(gap >= Duration::from_millis(5) && gap <= Duration::from_millis(15), "{gap:?}");
    }
    let wav: Vec<i16> = hound::WavReader::open(&path).unwrap().samples::<i16>().map(Result::unwrap).collect();
    assert_eq!(wav.len() % opts.frame_len(), 0);
    assert!(wav.len() / opts.frame_len() >= 30, "every fed frame was written");
    assert!(wav.iter().all(|&s| f32::from(s) < 0.8 * 32768.0), "the pushed frame was not played");
    // Frames come out in feed order, each a constant block.
    let firsts: Vec<i16> = wav.chunks(opts.frame_len()).map(|f| f[0]).collect();
    assert!(firsts.windows(2).take(20).all(|w| w[1] > w[0]), "{firsts:?}");
}

#[test]
fn feed_clock_keeps_even_spacing_through_a_late_wakeup_and_restarts_after_a_jump() {
    let period = Duration::from_millis(10);
    let mut c = super::device::FeedClock::new(period);
    let t0 = Instant::now();
    let ms = |n: u64| Duration::from_millis(n);
    assert_eq!(c.next(t0), t0);
    assert_eq!(c.next(t0 + ms(10)), t0 + ms(10));
    // 30 ms late, then three frames in a burst at the same instant: spacing stays near 10 ms.
    let burst: Vec<Instant> = (0..4).map(|_| c.next(t0 + ms(50))).collect();
    for w in burst.windows(2) {
        let gap = w[1] - w[0];
        assert!(gap >= ms(5) && gap <= ms(13), "{gap:?}");
    }
    // A second's jump (xrun, reopen): it starts over on the wall clock.
    assert_eq!(c.next(t0 + ms(1000)), t0 + ms(1000));
}

/// Collects what reaches a capture tap, and how often it was ticked.
struct CollectingTap {
    frames: Arc<Mutex<Vec<f32>>>,
    ticks: Arc<Mutex<u64>>,
}

impl Tap for CollectingTap {
    fn frame(&mut self, _at: Instant, frame: &[f32]) {
        self.frames.lock().unwrap().extend_from_slice(frame);
    }

    fn tick(&mut self) {
        *self.ticks.lock().unwrap() += 1;
    }
}

#[test]
fn a_tapped_capture_hands_every_frame_to_its_tap_and_queues_none() {
    let frames = Arc::new(Mutex::new(vec![]));
    let ticks = Arc::new(Mutex::new(0));
    let tap = CollectingTap { frames: frames.clone(), ticks: ticks.clone() };
    let cap = CaptureHandle::open_tapped("sim:tone:1000:-6", &fast(), Box::new(tap)).unwrap();
    wait_for("a second of audio", || frames.lock().unwrap().len() >= 48_000);
    assert_eq!(cap.queued(), 0);
    let mut buf = vec![0.0; cap.frame_len()];
    assert_eq!(cap.try_recv(&mut buf), Err(RecvError::Empty), "nothing to read: the tap took it");
    cap.stop();
    let got = frames.lock().unwrap().clone();
    assert_eq!(got.len() % 480, 0, "whole frames");
    assert!((zero_crossing_hz(&got, 48_000.0) - 1000.0).abs() < 1.0);
    assert!(*ticks.lock().unwrap() > 0, "ticked while running");
}

/// A feed that is idle from the start: a sim device cannot pause, so it keeps filling (the
/// playback clock of a sim sink is the test's timeline).
#[test]
fn a_sim_playback_keeps_filling_an_idle_feed() {
    struct IdleFeed(Arc<Mutex<u64>>);
    impl Feed for IdleFeed {
        fn fill(&mut self, _at: Instant, frame: &mut [f32]) {
            *self.0.lock().unwrap() += 1;
            frame.fill(0.0);
        }
        fn idle(&mut self) -> bool {
            true
        }
    }
    let fills = Arc::new(Mutex::new(0));
    let play =
        PlaybackHandle::open_fed("sim:null", &AudioOptions::default(), Box::new(IdleFeed(fills.clone()))).unwrap();
    wait_for("20 fills", || *fills.lock().unwrap() >= 20);
    play.stop();
}

#[test]
fn device_period_must_be_a_multiple_of_the_frame() {
    let opts = AudioOptions { device_period_ms: 15, ..AudioOptions::default() };
    let e = CaptureHandle::open("sim:silence", &opts).unwrap_err();
    assert!(e.to_string().contains("device_period_ms 15 is not a multiple of period_ms 10"), "{e}");
    let opts = AudioOptions { device_period_ms: 20, ..AudioOptions::default() };
    assert_eq!(opts.device_period_ms(), 20);
    assert_eq!(AudioOptions::default().device_period_ms(), 10);
    CaptureHandle::open("sim:silence", &opts).unwrap().stop();
}

/// Plays a constant while `on`, idle otherwise; counts fills.
struct OnOffFeed {
    on: Arc<std::sync::atomic::AtomicBool>,
    fills: Arc<std::sync::atomic::AtomicU64>,
}

impl Feed for OnOffFeed {
    fn fill(&mut self, _at: Instant, frame: &mut [f32]) {
        self.fills.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let on = self.on.load(std::sync::atomic::Ordering::Relaxed);
        frame.fill(if on { 0.25 } else { 0.0 });
    }

    fn idle(&mut self) -> bool {
        !self.on.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// `sim:wav-rec` records only what was played: while the feed is idle the device pauses and
/// the file does not grow; a wake-up starts it again at once.
#[test]
fn a_wav_recorder_pauses_while_its_feed_is_idle() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rec.wav");
    let (on, fills) = (Arc::new(AtomicBool::new(true)), Arc::new(AtomicU64::new(0)));
    let feed = OnOffFeed { on: on.clone(), fills: fills.clone() };
    let play =
        PlaybackHandle::open_fed(&format!("sim:wav-rec:{}", path.display()), &AudioOptions::default(), Box::new(feed))
            .unwrap();
    wait_for("30 frames of sound", || fills.load(Ordering::Relaxed) >= 30);
    on.store(false, Ordering::Relaxed);
    // It pauses after playing out a few idle frames; then nothing is filled or written.
    let mut last = fills.load(Ordering::Relaxed);
    wait_for("the pause", || {
        std::thread::sleep(Duration::from_millis(200));
        let now = fills.load(Ordering::Relaxed);
        std::mem::replace(&mut last, now) == now
    });
    let paused_at = fills.load(Ordering::Relaxed);
    let size = std::fs::metadata(&path).unwrap().len();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(fills.load(Ordering::Relaxed), paused_at, "no fills while paused");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), size, "the recording does not grow while idle");
    on.store(true, Ordering::Relaxed);
    play.waker().wake();
    wait_for("20 more frames", || fills.load(Ordering::Relaxed) >= paused_at + 20);
    play.stop();
    let wav: Vec<i16> = hound::WavReader::open(&path).unwrap().samples::<i16>().map(Result::unwrap).collect();
    let frames = wav.len() / 480;
    let loud = wav.chunks(480).filter(|f| f[0] > 4000).count();
    assert!(loud >= 50, "both stretches of sound were recorded: {loud} loud frames");
    assert!(frames as u64 <= fills.load(Ordering::Relaxed), "only filled frames: {frames}");
    assert!(frames - loud <= 12, "little silence: {} quiet frames of {frames}", frames - loud);
}

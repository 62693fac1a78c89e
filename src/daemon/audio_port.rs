//! Audio drivers of one radio port: the capture device's own thread runs the receive path on
//! every frame; the playback device's own thread fills each frame from the transmit path when
//! the device can take it (so no second clock drifts against it, and nothing polls), and stops
//! the device while there is nothing to play.
//!
//! Between them and the port's keying task sit small atomics ([`AudioFlags`], a module of its
//! own so that the radio port needs nothing from this one): whether the port talks on its
//! channel (floor granted and RX open), where the transmitter is, and a request to start the
//! CW station ID. Back to the keying task go levels (about once a
//! second) and the playback device's health (an ID-only key-up needs audio). Device events
//! (lost, found, xrun) go to the [`Reporter`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::audio_flags::AudioFlags;
use super::radio_port::{PortInput, SpurtStats};
use super::report::Reporter;
use super::watchdog::Heartbeat;
use super::{ChannelMsg, PortId};
use crate::audio::{
    CaptureHandle, DeviceEvent, DeviceEventKind, Direction, EventCallback, Feed, PlaybackHandle, PlaybackWaker, Tap,
};
use crate::core::jitter::JitterStats;
use crate::core::keying::{Keying, StationIdConfig, VoxConfig};
use crate::fleet::EventKind;
use crate::net::peer_queue::{self, Delivered, PeerTx};
use crate::pipeline::{RxPath, TxGate, TxPath};

/// How often levels go to the port task (and at most how often they change its state).
const LEVEL_PERIOD: Duration = Duration::from_secs(1);

/// Added to the CW ID's length for an ID-only key-up: the ID starts with the next device frame
/// and passes the device buffer before it is on air.
const ID_TAIL: Duration = Duration::from_millis(200);

/// Frame RMS levels averaged (by power) over [`LEVEL_PERIOD`].
#[derive(Default)]
struct LevelWindow {
    power: f64,
    frames: u32,
    since: Option<Instant>,
}

impl LevelWindow {
    /// Add one frame; the window's level in dBFS when it is complete.
    fn add(&mut self, now: Instant, rms_dbfs: f32) -> Option<f32> {
        let since = *self.since.get_or_insert(now);
        self.power += 10f64.powf(f64::from(rms_dbfs) / 10.0);
        self.frames += 1;
        if now.saturating_duration_since(since) < LEVEL_PERIOD {
            return None;
        }
        let dbfs = 10.0 * (self.power / f64::from(self.frames)).max(1e-12).log10();
        *self = LevelWindow::default();
        Some(dbfs as f32)
    }
}

/// Capture → receive path → channel, on the capture device's own thread as frames arrive (see
/// [`crate::audio::Tap`]): no async task wakes per frame. VOX goes to the keying task only when
/// it changes side of the thresholds (the keying core's hysteresis needs nothing else), the
/// receive level about once a second; packets go to the channel only while the port talks.
struct RxTap {
    port: PortId,
    rx: RxPath,
    flags: Arc<AudioFlags>,
    /// The port's VOX thresholds (None: COR is a line).
    vox: Option<VoxConfig>,
    /// The VOX level last sent (None: nothing sent yet).
    vox_sent: Option<bool>,
    /// The CTCSS open state and heard tone last sent.
    ctcss_sent: Option<(bool, Option<f32>)>,
    to_port: PeerTx<PortInput>,
    /// The router's media inbox.
    to_channel: mpsc::Sender<ChannelMsg>,
    /// Packets dropped because that inbox was full.
    dropped: u64,
    heartbeat: Heartbeat,
    level: LevelWindow,
    frame: Vec<f32>,
}

impl Tap for RxTap {
    // `at` is the device thread's reading of the clock: the keying core's VOX timing needs no
    // second one.
    fn frame(&mut self, at: Instant, frame: &[f32]) {
        self.frame.clear();
        self.frame.extend_from_slice(frame);
        let out = self.rx.process(&mut self.frame, self.flags.talking());
        if let (Some(vox), Some(dbfs)) = (&self.vox, out.vox_dbfs) {
            let level = vox.level(dbfs);
            if level.is_some() && level != self.vox_sent {
                self.vox_sent = level;
                let _ = self.to_port.send(PortInput::Vox { at, dbfs });
            }
        }
        if let Some(c) = out.ctcss {
            if self.ctcss_sent != Some((c.open, c.heard_hz)) {
                self.ctcss_sent = Some((c.open, c.heard_hz));
                let _ =
                    self.to_port.send(PortInput::Ctcss { at, open: c.open, heard_hz: c.heard_hz, snr_db: c.snr_db });
            }
        }
        if let Some(digit) = out.dtmf {
            let _ = self.to_port.send(PortInput::Dtmf { at, digit });
        }
        if let Some(dbfs) = self.level.add(at, out.meter.rms_dbfs) {
            let _ = self.to_port.send(PortInput::RxLevel(dbfs));
        }
        if let Some(packet) = out.packet {
            // Never waits: this is the capture thread.
            let media = ChannelMsg::Media { port: self.port, packet };
            if let Ok(Delivered::Dropped) = peer_queue::try_deliver(&self.to_channel, media) {
                self.dropped += 1;
                if self.dropped.is_power_of_two() {
                    warn!(port = self.port, dropped = self.dropped, "channel router behind: capture packets dropped");
                }
            }
        }
    }

    fn tick(&mut self) {
        self.heartbeat.beat();
    }
}

/// Start a port's capture device with its receive path on the device thread (radio receive
/// audio, or a desk's microphone).
#[allow(clippy::too_many_arguments)]
pub fn start_capture(
    port: PortId,
    device: &str,
    rx: RxPath,
    flags: &Arc<AudioFlags>,
    vox: Option<VoxConfig>,
    (to_port, to_channel): (PeerTx<PortInput>, mpsc::Sender<ChannelMsg>),
    heartbeat: Heartbeat,
    opts: crate::audio::AudioOptions,
    cancel: &CancellationToken,
    tasks: &mut tokio::task::JoinSet<()>,
) -> Result<(), String> {
    // The device wakes once per Opus frame when that is a whole number of 20 ms periods:
    // capture frames are only used a whole packet at a time anyway.
    let codec_ms = (rx.codec_frame() as u32 * 1000 / crate::audio::SAMPLE_RATE).max(1);
    let device_period_ms = if codec_ms % 20 == 0 { 20 } else { 0 };
    let mut rx = rx;
    if let Some(v) = &vox {
        rx.set_vox_close(v.close_dbfs);
    }
    let tap = RxTap {
        port,
        rx,
        flags: flags.clone(),
        vox,
        vox_sent: None,
        ctcss_sent: None,
        to_port,
        to_channel,
        dropped: 0,
        heartbeat,
        level: LevelWindow::default(),
        frame: Vec::new(),
    };
    let opts = crate::audio::AudioOptions { device_period_ms, ..opts };
    let handle =
        CaptureHandle::open_tapped(device, &opts, Box::new(tap)).map_err(|e| format!("capture `{device}`: {e}"))?;
    stop_on_cancel(move || handle.stop(), cancel.clone(), tasks);
    Ok(())
}

/// Stop a device when `cancel` fires. Joining its thread takes up to ~100 ms: not on an async
/// worker.
pub(super) fn stop_on_cancel(
    stop: impl FnOnce() + Send + 'static,
    cancel: CancellationToken,
    tasks: &mut tokio::task::JoinSet<()>,
) {
    tasks.spawn(async move {
        cancel.cancelled().await;
        let _ = tokio::task::spawn_blocking(stop).await;
    });
}

/// Transmit path → playback, filled on the playback device's own thread whenever the device
/// can take a frame (see [`crate::audio::Feed`]): no thread of its own, no queue, no polling, so
/// an idle port wakes once per device period and a late wake-up has the whole device buffer to
/// catch up in. The device thread runs at real-time priority where allowed. The transmit level
/// goes to the port's state about once a second while keyed.
struct TxFeed {
    tx: Arc<Mutex<TxPath>>,
    flags: Arc<AudioFlags>,
    to_port: PeerTx<PortInput>,
    heartbeat: Heartbeat,
    level: LevelWindow,
    /// The jitter buffer's counters when the current talk-spurt began (None: no spurt).
    spurt: Option<JitterStats>,
}

impl Feed for TxFeed {
    fn fill(&mut self, at: Instant, frame: &mut [f32]) {
        let gate = self.flags.gate();
        let (out, spurt_ended) = {
            let mut tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
            if self.flags.take_id_start() {
                tx.start_id();
            }
            if self.flags.take_reply_start() {
                tx.start_reply();
            }
            let out = tx.fill(at, gate, frame);
            // The jitter buffer's counters at a spurt's first and last frame: only then.
            let ended = match (out.channel_active, self.spurt) {
                (true, None) => {
                    self.spurt = Some(tx.jitter_stats());
                    None
                }
                (false, Some(start)) => {
                    self.spurt = None;
                    Some(SpurtStats::between(&start, &tx.jitter_stats()))
                }
                _ => None,
            };
            (out, ended)
        };
        if let Some(s) = spurt_ended {
            let _ = self.to_port.send(PortInput::TxSpurt(s));
        }
        if gate == TxGate::Closed {
            self.level = LevelWindow::default();
        } else if let Some(dbfs) = self.level.add(at, out.meter.rms_dbfs) {
            let _ = self.to_port.send(PortInput::TxLevel(dbfs));
        }
    }

    fn tick(&mut self) {
        self.heartbeat.beat();
    }

    fn idle(&mut self) -> bool {
        self.flags.gate() == TxGate::Closed
            && !self.flags.id_pending()
            && !self.flags.reply_pending()
            && self.tx.lock().unwrap_or_else(|p| p.into_inner()).idle()
    }
}

/// Open the playback device fed from the transmit path; it stops when `cancel` fires.
fn run_playback(
    device: &str,
    opts: &crate::audio::AudioOptions,
    feed: TxFeed,
    cancel: CancellationToken,
    tasks: &mut tokio::task::JoinSet<()>,
) -> Result<PlaybackWaker, String> {
    let handle =
        PlaybackHandle::open_fed(device, opts, Box::new(feed)).map_err(|e| format!("playback `{device}`: {e}"))?;
    let waker = handle.waker();
    stop_on_cancel(move || handle.stop(), cancel, tasks);
    Ok(waker)
}

/// A port's audio as the rest of the daemon sees it.
pub struct PortAudio {
    pub flags: Arc<AudioFlags>,
    /// Where the channel router pushes the channel's packets for this radio.
    pub tx: Option<Arc<Mutex<TxPath>>>,
    /// Whether receive audio exists (else an open COR stands in for media on the floor).
    pub has_capture: bool,
    /// When and for how long the keying core keys for the CW ID (None: no ID configured).
    pub station_id: Option<StationIdConfig>,
}

/// The keying core of a radio port, with its station ID when one is configured.
pub fn keying(radio: &crate::config::RadioPortConfig, audio: Option<&PortAudio>) -> Keying {
    let keying = Keying::new(radio.keying_config());
    match audio.and_then(|a| a.station_id.clone()) {
        Some(id) => keying.with_station_id(id),
        None => keying,
    }
}

/// Device events of one device to the fleet: `device_lost` once per loss (a missing device
/// fails every retry the same way), `device_found` when it opens again, every xrun. The
/// playback device's health also goes to the keying core.
fn device_events(port: &str, reporter: &Reporter, to_port: &PeerTx<PortInput>) -> EventCallback {
    let (port, reporter, to_port) = (port.to_string(), reporter.clone(), to_port.clone());
    let lost = AtomicBool::new(false);
    Arc::new(move |e: &DeviceEvent| {
        let device = format!("{} {}", e.direction, e.device);
        let playback = e.direction == Direction::Playback;
        match &e.kind {
            DeviceEventKind::Lost { error } if !lost.swap(true, Ordering::Relaxed) => {
                reporter.device_event(&port, EventKind::DeviceLost, format!("{device}: {error}"));
                if playback {
                    let _ = to_port.send(PortInput::AudioFault(true));
                }
            }
            DeviceEventKind::Opened { config, .. } if lost.swap(false, Ordering::Relaxed) => {
                reporter.device_event(&port, EventKind::DeviceFound, format!("{device}: {config}"));
                if playback {
                    let _ = to_port.send(PortInput::AudioFault(false));
                }
            }
            DeviceEventKind::Xrun { total, suspend } => {
                let what = if *suspend { "suspend" } else { "xrun" };
                reporter.device_event(&port, EventKind::Xrun, format!("{device}: {what}, {total} so far"));
            }
            _ => {}
        }
    })
}

/// Open a radio port's audio devices and start their tasks. `Ok(None)` when the port has no
/// audio configured. A device that is missing is not an error here: its thread retries.
#[allow(clippy::too_many_arguments)]
pub fn start(
    port: PortId,
    name: &str,
    radio: &crate::config::RadioPortConfig,
    to_port: &PeerTx<PortInput>,
    to_channel: &super::ToChannel,
    reporter: &Reporter,
    watchdog: &super::watchdog::Watchdog,
    cancel: &CancellationToken,
    tasks: &mut tokio::task::JoinSet<()>,
) -> Result<Option<PortAudio>, String> {
    use crate::audio::AudioOptions;

    let (capture, playback) = (&radio.audio.capture, &radio.audio.playback);
    if capture.is_none() && playback.is_none() {
        return Ok(None);
    }
    let flags = Arc::new(AudioFlags::default());
    let opts = || AudioOptions { events: Some(device_events(name, reporter, to_port)), ..AudioOptions::default() };
    if let Some(device) = capture {
        let mut rx = RxPath::new(&radio.audio.rx_config(), &radio.audio.encoder_config(), radio.vox.is_some())
            .map_err(|e| format!("encoder: {e}"))?;
        if let Some(tone) = radio.cor.as_ref().and_then(|c| c.ctcss) {
            rx = rx.with_ctcss(tone);
        }
        if let Some(dtmf) = &radio.dtmf {
            rx = rx.with_dtmf(dtmf.mute);
        }
        let heartbeat = watchdog.register(&format!("port {name} capture"));
        let to = (to_port.clone(), to_channel.media.clone());
        start_capture(port, device, rx, &flags, radio.keying_config().vox, to, heartbeat, opts(), cancel, tasks)?;
    }
    let mut tx = None;
    let mut station_id = None;
    if let Some(device) = playback {
        let path = TxPath::new(
            &radio.audio.tx_config(),
            radio.audio.jitter_config(),
            &radio.audio.courtesy_tone_config(),
            radio.keying_config().tx_delay,
        )
        .map_err(|e| format!("decoder: {e}"))?;
        let cw_id = radio.audio.cw_id_config();
        let mut path = path.with_cw_id(cw_id.as_ref());
        if let Some(hz) = radio.tx_ctcss {
            path = path.with_ctcss(hz, radio.audio.tx.limiter_dbfs + radio.tx_ctcss_db);
        }
        if let Some(cw) = cw_id.filter(|_| !path.cw_id_length().is_zero()) {
            let length = path.cw_id_length() + ID_TAIL;
            info!(port = name, text = %cw.text, interval = ?cw.interval, ?length, "CW station ID on");
            station_id = Some(StationIdConfig { interval: cw.interval, early: cw.early, length });
        }
        let path = Arc::new(Mutex::new(path));
        let heartbeat = watchdog.register(&format!("port {name} playback"));
        let feed = TxFeed {
            tx: path.clone(),
            flags: flags.clone(),
            to_port: to_port.clone(),
            heartbeat,
            level: LevelWindow::default(),
            spurt: None,
        };
        let waker = run_playback(device, &opts(), feed, cancel.clone(), tasks)?;
        let _ = flags.playback.set(waker);
        tx = Some(path);
    }
    Ok(Some(PortAudio { flags, tx, has_capture: capture.is_some(), station_id }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(direction: Direction, kind: DeviceEventKind) -> DeviceEvent {
        DeviceEvent { device: "plughw:CARD=Radio".into(), direction, kind }
    }

    #[test]
    fn device_events_report_each_loss_once_and_tell_keying_about_playback() {
        let reporter = Reporter::new(None);
        let (to_port, mut inputs) = super::super::radio_port::inputs();
        let playback = device_events("r1", &reporter, &to_port);
        let lost = || event(Direction::Playback, DeviceEventKind::Lost { error: "gone".into() });
        let opened =
            || event(Direction::Playback, DeviceEventKind::Opened { config: "S16_LE".into(), recovered: true });
        // A missing device fails every retry: one fault, one recovery.
        let mut got = Vec::new();
        for e in [lost(), lost(), lost(), opened(), opened()] {
            playback(&e);
            // As the port task would: the queue keeps only the newest fault level.
            got.extend(std::iter::from_fn(|| inputs.try_recv()?.ok()).map(|i| format!("{i:?}")));
        }
        assert_eq!(got, ["AudioFault(true)", "AudioFault(false)"]);

        let capture = device_events("r1", &reporter, &to_port);
        capture(&event(Direction::Capture, DeviceEventKind::Lost { error: "gone".into() }));
        capture(&event(Direction::Capture, DeviceEventKind::Xrun { total: 1, suspend: false }));
        capture(&event(Direction::Capture, DeviceEventKind::Xrun { total: 2, suspend: true }));
        assert!(inputs.try_recv().is_none(), "capture health does not concern keying");
        assert_eq!(reporter.xruns(), 2, "xruns counted for the metrics");
    }

    /// A talk-spurt with one packet missing in the middle: when it ends, the radio port hears
    /// of one gap (the fade after the last packet is not one), and nothing while idle.
    #[test]
    fn the_end_of_a_spurt_reports_its_gaps_to_the_port() {
        use crate::codec::EncoderConfig;
        use crate::dsp::{CourtesyToneConfig, RxConfig, Sine, TxConfig};
        let mut rx = RxPath::new(&RxConfig::default(), &EncoderConfig::default(), false).unwrap();
        let tx = TxPath::new(&TxConfig::default(), Default::default(), &CourtesyToneConfig::default(), Duration::ZERO)
            .unwrap();
        let (to_port, mut inputs) = super::super::radio_port::inputs();
        let flags = Arc::new(AudioFlags::default());
        flags.set_gate(TxGate::Open);
        let watchdog = super::super::watchdog::Watchdog::default();
        let mut feed = TxFeed {
            tx: Arc::new(Mutex::new(tx)),
            flags,
            to_port,
            heartbeat: watchdog.register("test"),
            level: LevelWindow::default(),
            spurt: None,
        };
        let (t0, mut tone, mut packets) = (Instant::now(), Sine::new(48_000, 1000.0, -12.0), 0);
        for i in 0..200u64 {
            let now = t0 + Duration::from_millis(10 * i);
            let mut frame = [0.0f32; 480];
            tone.render(&mut frame);
            if let Some(p) = rx.process(&mut frame, (10..100).contains(&i)).packet {
                packets += 1;
                if packets != 20 {
                    feed.tx.lock().unwrap().push(now, &p);
                }
            }
            let mut out = [0.0f32; 480];
            feed.fill(now, &mut out);
        }
        let spurts: Vec<SpurtStats> = std::iter::from_fn(|| inputs.try_recv()?.ok())
            .filter_map(|i| match i {
                PortInput::TxSpurt(s) => Some(s),
                _ => None,
            })
            .collect();
        assert_eq!(spurts.len(), 1, "{spurts:?}");
        assert_eq!(spurts[0].gaps, 1, "{spurts:?}");
        assert!((40..=46).contains(&spurts[0].played), "{spurts:?}");
    }

    /// The capture thread wakes the port task only when VOX changes side of its thresholds,
    /// not for every frame; packets go to the channel only while the port talks.
    #[test]
    fn the_capture_tap_sends_vox_changes_only_and_packets_while_talking() {
        use crate::codec::EncoderConfig;
        use crate::dsp::{RxConfig, Sine};
        let rx = RxPath::new(&RxConfig::default(), &EncoderConfig::default(), true).unwrap();
        let (to_port, mut inputs) = super::super::radio_port::inputs();
        let (to_channel, mut media) = mpsc::channel(100);
        let flags = Arc::new(AudioFlags::default());
        let watchdog = super::super::watchdog::Watchdog::default();
        let mut tap = RxTap {
            port: 3,
            rx,
            flags: flags.clone(),
            vox: Some(VoxConfig::default()),
            vox_sent: None,
            ctcss_sent: None,
            to_port,
            to_channel,
            dropped: 0,
            heartbeat: watchdog.register("test"),
            level: LevelWindow::default(),
            frame: Vec::new(),
        };
        let (t0, mut tone, mut vox) = (Instant::now(), Sine::new(48_000, 1000.0, -10.0), Vec::new());
        for i in 0..150u64 {
            let mut frame = [0.0f32; 480];
            if (50..100).contains(&i) {
                tone.render(&mut frame);
            }
            flags.set_talking((60..100).contains(&i));
            tap.frame(t0 + Duration::from_millis(10 * i), &frame);
            // As the port task would: the queue keeps only the newest VOX level.
            vox.extend(std::iter::from_fn(|| inputs.try_recv()?.ok()).filter_map(|i| match i {
                PortInput::Vox { dbfs, .. } => Some(dbfs),
                _ => None,
            }));
        }
        let sides: Vec<_> = vox.iter().map(|&d| VoxConfig::default().level(d)).collect();
        assert_eq!(sides, [Some(false), Some(true), Some(false)], "{vox:?}");
        let packets = std::iter::from_fn(|| media.try_recv().ok()).count();
        assert_eq!(packets, 20, "40 talking frames of 10 ms: 20 packets of 20 ms");
    }

    #[test]
    fn level_window_averages_power_over_a_second() {
        let t0 = Instant::now();
        let mut w = LevelWindow::default();
        // Half the frames at -10 dBFS, half silent: the mean power is 3 dB under.
        let mut out = None;
        for i in 0..=100u64 {
            let db = if i % 2 == 0 { -10.0 } else { -120.0 };
            out = out.or(w.add(t0 + Duration::from_millis(10 * i), db));
        }
        let db = out.expect("a level after one second");
        assert!((db - -13.0).abs() < 0.1, "{db}");
        assert!(w.add(t0 + Duration::from_millis(1020), -10.0).is_none(), "a new window starts");
    }
}

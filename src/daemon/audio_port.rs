//! Audio drivers of one radio port: the capture task runs the receive path on every device
//! frame, the playback task keeps the device fed from the transmit path, paced by the
//! device's own consumption (so no second clock drifts against it).
//!
//! Between them and the port's keying task sit two small atomics ([`AudioFlags`]): whether the
//! port talks on its channel (floor granted and RX open) and where the transmitter is.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::radio_port::PortInput;
use super::watchdog::{Heartbeat, BEAT_PERIOD};
use super::{clock, ChannelMsg, PortId};
use crate::audio::{CaptureHandle, PlaybackHandle, RecvError};
use crate::pipeline::{RxPath, TxGate, TxPath, PLAYBACK_LEAD_FRAMES};

const PLAYBACK_POLL: Duration = Duration::from_millis(2);

/// State shared between a port's keying task, its audio tasks and the channel router.
#[derive(Default)]
pub struct AudioFlags {
    talking: AtomicBool,
    gate: AtomicU8,
}

impl AudioFlags {
    pub fn set_talking(&self, on: bool) {
        self.talking.store(on, Ordering::Relaxed);
    }

    pub fn talking(&self) -> bool {
        self.talking.load(Ordering::Relaxed)
    }

    pub fn set_gate(&self, gate: TxGate) {
        let v = match gate {
            TxGate::Closed => 0,
            TxGate::Hold => 1,
            TxGate::Open => 2,
        };
        self.gate.store(v, Ordering::Relaxed);
    }

    pub fn gate(&self) -> TxGate {
        match self.gate.load(Ordering::Relaxed) {
            1 => TxGate::Hold,
            2 => TxGate::Open,
            _ => TxGate::Closed,
        }
    }
}

/// Capture → receive path → channel. VOX levels go to the keying task.
pub async fn run_capture(
    port: PortId,
    capture: CaptureHandle,
    mut rx: RxPath,
    flags: Arc<AudioFlags>,
    to_port: mpsc::UnboundedSender<PortInput>,
    to_channel: mpsc::UnboundedSender<ChannelMsg>,
    heartbeat: Heartbeat,
    cancel: CancellationToken,
) {
    let mut frame = vec![0.0f32; capture.frame_len()];
    let mut beat = tokio::time::interval(BEAT_PERIOD);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = beat.tick() => heartbeat.beat(),
            got = capture.recv(&mut frame) => match got {
                Ok(()) => {
                    let out = rx.process(&mut frame, flags.talking());
                    if let Some(dbfs) = out.vox_dbfs {
                        let _ = to_port.send(PortInput::Vox { at: clock::now(), dbfs });
                    }
                    if let Some(packet) = out.packet {
                        let _ = to_channel.send(ChannelMsg::Media { port, packet });
                    }
                }
                Err(RecvError::Stopped) => break,
                Err(e) => {
                    warn!(device = capture.name(), error = ?e, "capture read failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    capture.stop();
    info!(device = "capture", "audio capture stopped");
}

/// Transmit path → playback, refilled whenever the device has consumed a frame. A thread of
/// its own, not an async task: a refill late by more than the playback lead is an audible gap,
/// and the async workers also carry signaling, routing and MQTT.
pub fn run_playback(
    playback: PlaybackHandle,
    tx: Arc<Mutex<TxPath>>,
    flags: Arc<AudioFlags>,
    heartbeat: Heartbeat,
    cancel: CancellationToken,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name(format!("tx {}", playback.name())).spawn(move || {
        let mut frame = vec![0.0f32; playback.frame_len()];
        while !cancel.is_cancelled() {
            heartbeat.beat();
            while playback.queued() < PLAYBACK_LEAD_FRAMES {
                let gate = flags.gate();
                tx.lock().unwrap_or_else(|p| p.into_inner()).fill(clock::now(), gate, &mut frame);
                if playback.push(&frame).is_err() {
                    break;
                }
            }
            std::thread::sleep(PLAYBACK_POLL);
        }
        playback.stop();
    })
}

/// A port's audio as the rest of the daemon sees it.
pub struct PortAudio {
    pub flags: Arc<AudioFlags>,
    /// Where the channel router pushes the channel's packets for this radio.
    pub tx: Option<Arc<Mutex<TxPath>>>,
    /// Whether receive audio exists (else an open COR stands in for media on the floor).
    pub has_capture: bool,
}

/// Open a radio port's audio devices and start their tasks. `Ok(None)` when the port has no
/// audio configured. A device that is missing is not an error here: its thread retries.
#[allow(clippy::too_many_arguments)]
pub fn start(
    port: PortId,
    name: &str,
    radio: &crate::config::RadioPortConfig,
    to_port: &mpsc::UnboundedSender<PortInput>,
    to_channel: &mpsc::UnboundedSender<ChannelMsg>,
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
    let opts = AudioOptions::default();
    if let Some(device) = capture {
        let handle = CaptureHandle::open(device, &opts).map_err(|e| format!("capture `{device}`: {e}"))?;
        let rx = RxPath::new(&radio.audio.rx_config(), &radio.audio.encoder_config(), radio.vox.is_some())
            .map_err(|e| format!("encoder: {e}"))?;
        tasks.spawn(run_capture(
            port,
            handle,
            rx,
            flags.clone(),
            to_port.clone(),
            to_channel.clone(),
            watchdog.register(&format!("port {name} capture")),
            cancel.clone(),
        ));
    }
    let mut tx = None;
    if let Some(device) = playback {
        let handle = PlaybackHandle::open(device, &opts).map_err(|e| format!("playback `{device}`: {e}"))?;
        let path = TxPath::new(
            &radio.audio.tx_config(),
            radio.audio.jitter_config(),
            &radio.audio.courtesy_tone_config(),
            radio.keying_config().tx_delay,
        )
        .map_err(|e| format!("decoder: {e}"))?;
        let path = Arc::new(Mutex::new(path));
        let heartbeat = watchdog.register(&format!("port {name} playback"));
        run_playback(handle, path.clone(), flags.clone(), heartbeat, cancel.clone())
            .map_err(|e| format!("playback thread: {e}"))?;
        tx = Some(path);
    }
    Ok(Some(PortAudio { flags, tx, has_capture: capture.is_some() }))
}

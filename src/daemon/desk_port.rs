//! Driver for a dispatch desk port: microphone → receive path → the channels the desk holds;
//! the router's packets for the desk → [`Mixer`] → speaker/headset on a playback thread of its
//! own; buttons (debounced), LEDs, and every control source through one action path.
//!
//! Every decision (buttons, selection, listen, all-call, patches, LEDs) is the sans-IO
//! [`DeskCore`] (`src/core/desk.rs`); the async task around it ([`DeskPort::run`]) only moves
//! messages, reads the clock, carries out the core's [`DeskEffect`]s and drives lines.
//!
//! A desk keys no transmitter of its own: its PTT asks for channel floors. When the desk stops
//! (shutdown, error), it releases every floor it asked for.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::audio_flags::AudioFlags;
use super::watchdog::{Heartbeat, BEAT_PERIOD};
use super::{clock, ChannelMsg, PortId};
use crate::audio::queue::{FrameQueue, Overflow, Popped, Wait};
use crate::audio::{AudioOptions, Feed, PlaybackHandle, PlaybackWaker};
use crate::config::{DeskButton, DeskLed, DeskPortConfig};
use crate::core::desk::{DeskAction, DeskCore, DeskEffect};
use crate::core::routing::ChannelId;
use crate::gpio::LogicalOutput;
use crate::net::peer_queue::{self, deliver, Limits, PeerRx, PeerTx, Policy, Queued};
use crate::pipeline::{MixChannelConfig, Mixer, MixerConfig, RxPath};

/// How often LEDs that follow audio (RX) are refreshed.
const LED_REFRESH: Duration = Duration::from_millis(10);

/// Requests (console and fleet `desk` actions) that may wait for one desk; the router refuses
/// more (see [`DeskLink::requests`]).
pub const DESK_REQUESTS: usize = 16;

/// Inputs of a desk's task.
#[derive(Debug)]
pub enum DeskInput {
    /// A raw button edge, stamped where it was seen.
    Button { button: DeskButton, at: Instant, level: bool },
    /// An action from the console or a fleet command; answered with a reason when refused.
    Action { action: DeskAction, reply: Option<oneshot::Sender<Result<(), String>>> },
    /// The router: the desk may (on) or may no longer talk on its channel `channel`.
    Talk { channel: usize, on: bool },
    /// The router: someone else holds (true) or nobody / the desk holds (false) `channel`.
    Busy { channel: usize, busy: bool },
    /// The router: a floor request was refused.
    Denied { channel: usize },
    /// The router: an emergency is active (or no longer) on desk channel `channel`: the alert
    /// tone sounds on the speaker while any is.
    Emergency { channel: usize, active: bool },
}

/// Everything but a request that waits for its answer is a level or a setting: a newer one
/// replaces the older one still queued, so the desk's queue never grows with a flood. A button
/// edge replaces only an older edge of that button to the same level: a press shorter than
/// the desk's lag still arrives as a press, at most two edges per button.
impl Queued for DeskInput {
    fn policy(&self) -> Policy {
        match self {
            DeskInput::Action { reply: Some(_), .. } => Policy::Keep,
            _ => Policy::Coalesce,
        }
    }

    fn supersedes(&self, older: &Self) -> bool {
        use DeskAction::{Listen, Pan, Volume};
        use DeskInput::{Action, Busy, Button, Denied, Talk};
        match (self, older) {
            (Button { button: a, level: x, .. }, Button { button: b, level: y, .. }) => a == b && x == y,
            (Talk { channel: a, .. }, Talk { channel: b, .. })
            | (Busy { channel: a, .. }, Busy { channel: b, .. })
            | (Denied { channel: a }, Denied { channel: b }) => a == b,
            (DeskInput::Emergency { channel: a, .. }, DeskInput::Emergency { channel: b, .. }) => a == b,
            (Action { action, reply: None }, Action { action: was, reply: None }) => match (action, was) {
                (Listen { channel: a, .. }, Listen { channel: b, .. })
                | (Volume { channel: a, .. }, Volume { channel: b, .. })
                | (Pan { channel: a, .. }, Pan { channel: b, .. }) => a == b,
                _ => false,
            },
            _ => false,
        }
    }
}

/// A desk's input queue. Sending never waits (button edge callbacks, the router). It holds at
/// most two edges per button line, one level per kind and channel and [`DESK_REQUESTS`]
/// requests, so `reliable` is never reached.
pub fn inputs(desk: &DeskPortConfig) -> (PeerTx<DeskInput>, PeerRx<DeskInput>) {
    let lines = usize::from(desk.ptt.is_some()) + desk.buttons.len();
    // Talk, Busy, Denied, Emergency and the listen, volume and pan settings: six per channel.
    let reliable = DESK_REQUESTS + 2 * lines + 6 * desk.channels.len();
    peer_queue::channel(Limits { reliable, lossy: 1 })
}

/// What the channel router tells the desk task, and where it pushes the desk's packets.
pub struct DeskLink {
    pub to_desk: PeerTx<DeskInput>,
    /// One permit per request waiting for the desk ([`DESK_REQUESTS`]); a request that finds
    /// none is refused, so a flood of them cannot grow the desk's queue.
    pub requests: Arc<Semaphore>,
    /// The desk's channels in the router's numbering (desk channel `i` is `channels[i]`).
    pub channels: Vec<ChannelId>,
    pub mixer: Option<Arc<Mutex<Mixer>>>,
    pub flags: Arc<AudioFlags>,
}

impl DeskLink {
    pub fn index(&self, channel: ChannelId) -> Option<usize> {
        self.channels.iter().position(|&c| c == channel)
    }
}

/// Requests of a desk task to the channel router.
#[derive(Debug)]
pub enum DeskToRouter {
    Floor {
        port: PortId,
        channel: ChannelId,
        on: bool,
    },
    /// The desk's state changed (for consoles).
    State {
        port: PortId,
        state: crate::net::protocol::DeskState,
    },
    Patch {
        a: ChannelId,
        b: ChannelId,
        on: bool,
        reply: oneshot::Sender<Result<(), String>>,
    },
}

pub struct DeskPort {
    pub id: PortId,
    pub name: String,
    pub core: DeskCore,
    pub link_channels: Vec<ChannelId>,
    pub channel_names: Vec<String>,
    pub inputs: PeerRx<DeskInput>,
    pub to_channel: mpsc::Sender<ChannelMsg>,
    pub mixer: Option<Arc<Mutex<Mixer>>>,
    /// The mixer's active set, written by the playback thread.
    pub rx_active: Arc<AtomicU64>,
    pub leds: Vec<(DeskLed, LogicalOutput)>,
    pub heartbeat: Heartbeat,
    /// The port's state for MQTT and consoles: selected channel, audio playing, talking.
    pub reporter: super::report::Reporter,
    /// Desk channels with an active emergency (the alert tone sounds while any is).
    pub emergencies: Vec<bool>,
    /// `[record]`: where `replay_last` finds the last transmission of a channel.
    pub recordings: Option<crate::record::RecordingsApi>,
    /// Wakes the speaker (an idle speaker sleeps) when the alert starts or for a replay.
    pub flags: Arc<AudioFlags>,
}

impl DeskPort {
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut beat = tokio::time::interval(BEAT_PERIOD);
        let mut refresh = tokio::time::interval(LED_REFRESH);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut lit: Vec<Option<bool>> = vec![None; self.leds.len()];
        let mut shown = None;
        let _ = self.apply_effects().await;
        loop {
            let now = clock::now();
            let sleep = crate::wait::until(self.core.poll_timeout(now));
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                input = self.inputs.recv() => match input {
                    // Answered once carried out, so a patch the router refuses is reported.
                    Ok(DeskInput::Action { action, reply }) => {
                        let result = match self.core.apply(action) {
                            Ok(()) => self.apply_effects().await,
                            Err(e) => Err(e),
                        };
                        if let Err(e) = &result {
                            warn!(port = %self.name, error = %e, "desk action refused");
                        }
                        if let Some(reply) = reply {
                            let _ = reply.send(result);
                        }
                    }
                    Ok(input) => self.input(input),
                    Err(_) => break,
                },
                _ = sleep => self.debounced(clock::now()),
                _ = refresh.tick() => self.core.set_rx(self.rx_active.load(Ordering::Relaxed)),
                _ = beat.tick() => self.heartbeat.beat(),
            }
            let _ = self.apply_effects().await;
            let now = clock::now();
            for (i, (led, line)) in self.leds.iter().enumerate() {
                let on = self.core.led(*led, now);
                if lit[i] != Some(on) {
                    if let Err(e) = line.set(on) {
                        warn!(port = %self.name, led = line.name(), error = %e, "LED write failed");
                    }
                    lit[i] = Some(on);
                }
            }
            let state = self.core.state(&self.name, &self.channel_names);
            if shown.as_ref() != Some(&state) {
                let summary = |s: &crate::net::protocol::DeskState| {
                    (s.selected.clone(), s.channels.iter().any(|c| c.rx), s.channels.iter().any(|c| c.tx))
                };
                if shown.as_ref().map(summary) != Some(summary(&state)) {
                    let (channel, rx_active, tx_keyed) = summary(&state);
                    let port = crate::fleet::PortState { channel, rx_active, tx_keyed, ..Default::default() };
                    self.reporter.port_state(&self.name, port);
                }
                shown = Some(state.clone());
                let _ = deliver(&self.to_channel, ChannelMsg::Desk(DeskToRouter::State { port: self.id, state })).await;
            }
        }
        // Whatever stopped the desk, its floors go back: the radios carrying it unkey.
        self.core.release_all();
        let _ = self.apply_effects().await;
        for (_, line) in &self.leds {
            let _ = line.set(false);
        }
        info!(port = %self.name, "desk port stopped, floors released");
    }

    fn input(&mut self, input: DeskInput) {
        let now = clock::now();
        match input {
            DeskInput::Button { button, at, level } => {
                self.core.button(at, button, level);
                self.debounced(now);
            }
            // Applied in `run`, which awaits the router's answer to a patch before replying.
            DeskInput::Action { .. } => {}
            DeskInput::Talk { channel, on } => self.core.set_tx(channel, on),
            DeskInput::Busy { channel, busy } => self.core.set_busy(channel, busy),
            DeskInput::Denied { channel } => self.core.denied(now, channel),
            DeskInput::Emergency { channel, active } => {
                if let Some(slot) = self.emergencies.get_mut(channel) {
                    *slot = active;
                }
                let alert = self.emergencies.iter().any(|&e| e);
                warn!(port = %self.name, channel = %self.channel_names.get(channel).map_or("?", String::as_str), active, "desk: emergency alert");
                if let Some(m) = &self.mixer {
                    m.lock().unwrap_or_else(|p| p.into_inner()).set_alert(alert);
                }
                self.flags.wake_playback();
            }
        }
    }

    /// Buttons whose debounce time is over have become actions: log them.
    fn debounced(&mut self, now: Instant) {
        for (action, result) in self.core.handle_timeout(now) {
            info!(port = %self.name, ?action, "desk button");
            if let Err(e) = result {
                warn!(port = %self.name, error = %e, "desk button refused");
            }
        }
    }

    /// Carry out what the core asked for. Err: the router refused a patch (the core has
    /// forgotten it again).
    async fn apply_effects(&mut self) -> Result<(), String> {
        let mut result = Ok(());
        while let Some(effect) = self.core.poll_effect() {
            let global = |c: usize| self.link_channels[c];
            let mixer = |f: &mut dyn FnMut(&mut Mixer) -> Result<(), crate::pipeline::MixerError>| {
                if let Some(m) = &self.mixer {
                    if let Err(e) = f(&mut m.lock().unwrap_or_else(|p| p.into_inner())) {
                        error!(port = %self.name, error = %e, "mixer setting refused");
                    }
                }
            };
            match effect {
                DeskEffect::Floor { channel, on } => {
                    info!(port = %self.name, channel, on, "desk floor request");
                    let msg = DeskToRouter::Floor { port: self.id, channel: global(channel), on };
                    let _ = deliver(&self.to_channel, ChannelMsg::Desk(msg)).await;
                }
                DeskEffect::Listen { channel, on } => mixer(&mut |m| m.set_listen(channel, on)),
                DeskEffect::Volume { channel, db } => mixer(&mut |m| m.set_volume(channel, db)),
                DeskEffect::Pan { channel, pan } => mixer(&mut |m| m.set_pan(channel, pan)),
                DeskEffect::Select { channel } => mixer(&mut |m| m.select(Some(channel))),
                DeskEffect::Emergency { channel } => {
                    let target = super::EmergencyTarget::PortOn {
                        port: self.name.clone(),
                        channel: self.channel_names[channel].clone(),
                    };
                    let action = super::EmergencyAction::Raise {
                        target,
                        source: crate::core::emergency::SourceKind::Desk,
                        by: self.name.clone(),
                    };
                    let _ = deliver(&self.to_channel, ChannelMsg::Emergency { action, reply: None }).await;
                }
                DeskEffect::AckEmergency => {
                    for (c, _) in self.emergencies.iter().enumerate().filter(|(_, &e)| e) {
                        let channel = self.channel_names[c].clone();
                        let action = super::EmergencyAction::Ack { channel, by: self.name.clone() };
                        let _ = deliver(&self.to_channel, ChannelMsg::Emergency { action, reply: None }).await;
                    }
                }
                DeskEffect::Replay { channel } => {
                    if let Err(e) = self.replay(channel).await {
                        result = Err(e);
                    }
                }
                DeskEffect::Patch { a, b, on } => {
                    let (reply, answer) = oneshot::channel();
                    let msg = DeskToRouter::Patch { a: global(a), b: global(b), on, reply };
                    if deliver(&self.to_channel, ChannelMsg::Desk(msg)).await.is_err() {
                        continue;
                    }
                    if let Ok(Err(reason)) = answer.await {
                        warn!(port = %self.name, %reason, "patch refused by the router");
                        if on {
                            self.core.patch_refused(a, b);
                        }
                        result = Err(reason);
                    }
                }
            }
        }
        result
    }
}

impl DeskPort {
    /// `replay_last`: the last recording of desk channel `channel`, decoded off this task and
    /// handed to the speaker's mixer, which plays it until live traffic on a channel the desk
    /// hears cuts it ([`Mixer::replay`]). Nothing is keyed and no floor is asked for.
    async fn replay(&mut self, channel: usize) -> Result<(), String> {
        let asked = clock::now();
        let name = self.channel_names.get(channel).cloned().unwrap_or_default();
        let api = self.recordings.as_ref().ok_or("this box records nothing ([record] is not configured)")?;
        let mixer = self.mixer.clone().ok_or("this desk has no speaker")?;
        let meta = {
            let index = api.index.lock().unwrap_or_else(|p| p.into_inner());
            index.entries.values().rev().find(|m| m.channel == name).cloned()
        };
        let meta = meta.ok_or_else(|| format!("nothing recorded on {name}"))?;
        let path = api.dir.join(&meta.file);
        let pcm = tokio::task::spawn_blocking(move || {
            let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            crate::record::replay::decode_ogg_opus(&bytes)
        })
        .await
        .map_err(|e| format!("decoding the recording: {e}"))??;
        let seconds = pcm.len() as f32 / 48_000.0;
        mixer.lock().unwrap_or_else(|p| p.into_inner()).replay(pcm);
        self.flags.wake_playback();
        let ready_ms = clock::now().saturating_duration_since(asked).as_secs_f32() * 1000.0;
        info!(port = %self.name, channel = %name, id = %meta.id, seconds, ready_ms, "replaying the last transmission");
        Ok(())
    }
}

/// The desk's mixer, as configured.
pub fn desk_mixer(config: &DeskPortConfig) -> Result<Mixer, String> {
    let channels = (0..config.channels.len())
        .map(|i| {
            let m = config.monitor_of(i);
            MixChannelConfig {
                listen: m.listen,
                volume_db: m.volume_db,
                pan: m.pan,
                priority: config.priority_channel_index() == Some(i),
            }
        })
        .collect();
    let mixer = MixerConfig {
        channels,
        // Devices are mono: a stereo split plays the left side on `audio.playback` and the right
        // on `playback_right`.
        stereo: config.playback_right.is_some(),
        duck_db: config.duck_db,
        limiter_dbfs: config.limiter_dbfs,
        jitter: config.audio.jitter_config(),
        ..Default::default()
    };
    let mut mixer = Mixer::new(mixer).map_err(|e| e.to_string())?;
    mixer.select(Some(config.selected_index())).map_err(|e| e.to_string())?;
    Ok(mixer)
}

/// What a desk's speaker devices share: the mixer and, with a stereo split, each side's
/// frames mixed while the other device asked.
struct DeskMix {
    mixer: Arc<Mutex<Mixer>>,
    rx_active: Arc<AtomicU64>,
    /// Per device: frames mixed for it by the other one (a stereo split only).
    pending: Vec<FrameQueue>,
    /// Per device: starts it when it stopped for having nothing to play.
    wakers: Vec<OnceLock<PlaybackWaker>>,
}

/// Frames one side of a stereo split may hold for its device, mixed by the other (the two
/// devices' clocks differ a little: the oldest go).
const SPLIT_FRAMES: usize = 4;

/// Mixer → speaker, mixed on the playback device's own thread whenever the device can take a
/// frame (see [`crate::audio::Feed`]), as radio playback: no thread of its own, no polling. While
/// the mixer is idle the device stops, until the router pushes channel audio and wakes it
/// ([`AudioFlags::wake_playback`]). With a stereo split (two devices: left, right) the device that
/// asks first mixes a stereo frame and keeps the other side for the other device, which it wakes.
struct DeskFeed {
    mix: Arc<DeskMix>,
    /// This device's side (0 left or mono, 1 right).
    side: usize,
    /// One mixed stereo frame, interleaved (a split only; mono mixes into the device's frame).
    frame: Vec<f32>,
    heartbeat: Heartbeat,
}

impl Feed for DeskFeed {
    fn fill(&mut self, at: Instant, out: &mut [f32]) {
        let sides = self.mix.pending.len().max(1);
        if sides > 1 && self.mix.pending[self.side].pop_into(out, Wait::No) == Popped::Frame {
            return;
        }
        let active = {
            let mut m = self.mix.mixer.lock().unwrap_or_else(|p| p.into_inner());
            if sides > 1 && m.idle() {
                // Idle: mixing would only give silence and move nothing on, so each side makes
                // its own. Handing silent frames across would keep the other device from
                // pausing whenever its pending frame is not yet taken when it checks.
                drop(m);
                out.fill(0.0);
                self.mix.rx_active.store(0, Ordering::Relaxed);
                return;
            }
            m.mix(at, if sides == 1 { &mut *out } else { &mut self.frame }).active
        };
        self.mix.rx_active.store(active, Ordering::Relaxed);
        if sides == 1 {
            return;
        }
        out.iter_mut().zip(self.frame.iter().skip(self.side).step_by(sides)).for_each(|(o, &s)| *o = s);
        let other = 1 - self.side;
        // In place: sample k of the other side sits at 2k + other, at or after k.
        let n = out.len();
        for k in 0..n {
            self.frame[k] = self.frame[2 * k + other];
        }
        let _ = self.mix.pending[other].push(&self.frame[..n], Overflow::DropOldest);
        if let Some(w) = self.mix.wakers[other].get() {
            w.wake();
        }
    }

    fn tick(&mut self) {
        self.heartbeat.beat();
    }

    fn idle(&mut self) -> bool {
        self.mix.pending.get(self.side).is_none_or(|q| q.len() == 0)
            && self.mix.mixer.lock().unwrap_or_else(|p| p.into_inner()).idle()
    }
}

/// Open the desk's speaker devices (`devices`: the mono one, or left and right), fed from the
/// mixer; they stop when `cancel` fires. The left (or only) device's waker goes into `flags`.
pub fn open_speaker(
    devices: &[&str],
    mixer: Arc<Mutex<Mixer>>,
    rx_active: Arc<AtomicU64>,
    flags: &AudioFlags,
    heartbeats: Vec<Heartbeat>,
    opts: &AudioOptions,
) -> Result<Vec<PlaybackHandle>, String> {
    let sides = devices.len();
    let split =
        if sides > 1 { (0..sides).map(|_| FrameQueue::new(opts.frame_len(), SPLIT_FRAMES)).collect() } else { vec![] };
    let mix =
        Arc::new(DeskMix { mixer, rx_active, pending: split, wakers: (0..sides).map(|_| OnceLock::new()).collect() });
    let mut handles = Vec::new();
    for (side, (device, heartbeat)) in devices.iter().zip(heartbeats).enumerate() {
        let frame = if sides > 1 { vec![0.0; opts.frame_len() * sides] } else { Vec::new() };
        let feed = DeskFeed { mix: mix.clone(), side, frame, heartbeat };
        let handle =
            PlaybackHandle::open_fed(device, opts, Box::new(feed)).map_err(|e| format!("playback `{device}`: {e}"))?;
        let _ = mix.wakers[side].set(handle.waker());
        handles.push(handle);
    }
    if let Some(first) = handles.first() {
        let _ = flags.playback.set(first.waker());
    }
    Ok(handles)
}

/// A desk's audio: the microphone's capture task and the mixer's speaker devices.
pub struct DeskAudio {
    pub flags: Arc<AudioFlags>,
    pub mixer: Option<Arc<Mutex<Mixer>>>,
    pub rx_active: Arc<AtomicU64>,
}

/// Open a desk's audio devices and start their tasks.
pub fn start_audio(
    port: PortId,
    name: &str,
    desk: &DeskPortConfig,
    media: &mpsc::Sender<ChannelMsg>,
    watchdog: &super::watchdog::Watchdog,
    cancel: &CancellationToken,
    tasks: &mut tokio::task::JoinSet<()>,
) -> Result<DeskAudio, String> {
    let flags = Arc::new(AudioFlags::default());
    let rx_active = Arc::new(AtomicU64::new(0));
    let opts = AudioOptions::default();
    if let Some(device) = &desk.audio.capture {
        let rx = RxPath::new(&desk.audio.rx_config(), &desk.audio.encoder_config(), false)
            .map_err(|e| format!("encoder: {e}"))?;
        // The microphone has no VOX; its levels go nowhere.
        let (no_vox, _) = super::radio_port::inputs();
        let heartbeat = watchdog.register(&format!("port {name} microphone"));
        let to = (no_vox, media.clone());
        super::audio_port::start_capture(port, device, rx, &flags, None, to, heartbeat, opts.clone(), cancel, tasks)?;
    }
    let mut mixer = None;
    if let Some(device) = &desk.audio.playback {
        let devices: Vec<&str> = std::iter::once(device.as_str()).chain(desk.playback_right.as_deref()).collect();
        let m = Arc::new(Mutex::new(desk_mixer(desk)?));
        let mut heartbeats = vec![watchdog.register(&format!("port {name} speaker"))];
        if devices.len() > 1 {
            heartbeats.push(watchdog.register(&format!("port {name} speaker right")));
        }
        let handles = open_speaker(&devices, m.clone(), rx_active.clone(), &flags, heartbeats, &opts)?;
        super::audio_port::stop_on_cancel(
            move || handles.into_iter().for_each(PlaybackHandle::stop),
            cancel.clone(),
            tasks,
        );
        mixer = Some(m);
    }
    Ok(DeskAudio { flags, mixer, rx_active })
}

/// Start a desk port: buttons (their current level first), LEDs (off), audio, and its task.
/// Returns what the channel router needs of it, and the inputs to hold open.
#[allow(clippy::too_many_arguments)]
pub fn start(
    id: PortId,
    name: &str,
    desk: &DeskPortConfig,
    channel_ids: Vec<ChannelId>,
    recordings: Option<crate::record::RecordingsApi>,
    gpio: &mut crate::gpio::Gpio,
    to_channel: &super::ToChannel,
    reporter: &super::report::Reporter,
    watchdog: &super::watchdog::Watchdog,
    cancel: &CancellationToken,
    tasks: &mut tokio::task::JoinSet<()>,
) -> Result<(DeskLink, Vec<crate::gpio::LogicalInput>), String> {
    let (to_desk, inputs) = inputs(desk);
    let mut core = DeskCore::new(desk);
    let mut held = Vec::new();
    let lines = desk.ptt.iter().map(|l| ("ptt".to_string(), DeskButton::Ptt, l));
    let named = desk.buttons.iter().map(|(n, l)| Ok::<_, String>((format!("buttons.{n}"), desk.button(n)?, l)));
    let all: Vec<_> = lines.map(Ok).chain(named).collect::<Result<_, _>>()?;
    for (key, button, line) in all {
        let tx = to_desk.clone();
        let mut input = gpio
            .open_input(line, move |at, level| {
                let _ = tx.send(DeskInput::Button { button, at, level });
            })
            .map_err(|e| format!("{key}: {e}"))?;
        let level = input.is_asserted().map_err(|e| format!("{key}: {e}"))?;
        if level && matches!(button, DeskButton::Ptt | DeskButton::ChannelPtt(_) | DeskButton::AllCall) {
            warn!(port = %name, %key, "talk button held at start-up: ignored until released");
        }
        core.add_button(button, level);
        held.push(input);
    }
    let mut leds = Vec::new();
    for (n, line) in &desk.leds {
        let led = desk.led(n)?;
        leds.push((led, gpio.open_output(line).map_err(|e| format!("leds.{n}: {e}"))?));
    }
    let audio = start_audio(id, name, desk, &to_channel.media, watchdog, cancel, tasks)?;
    let port = DeskPort {
        id,
        name: name.to_string(),
        core,
        link_channels: channel_ids.clone(),
        channel_names: desk.channels.clone(),
        inputs,
        to_channel: to_channel.control.clone(),
        mixer: audio.mixer.clone(),
        rx_active: audio.rx_active,
        leds,
        heartbeat: watchdog.register(&format!("port {name}")),
        reporter: reporter.clone(),
        emergencies: vec![false; desk.channels.len()],
        recordings,
        flags: audio.flags.clone(),
    };
    tasks.spawn(port.run(cancel.clone()));
    info!(port = %name, channels = channel_ids.len(), "desk port running");
    let requests = Arc::new(Semaphore::new(DESK_REQUESTS));
    Ok((DeskLink { to_desk, requests, channels: channel_ids, mixer: audio.mixer, flags: audio.flags }, held))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Encoder, EncoderConfig, MAX_PACKET_BYTES};
    use crate::config::PortConfig;
    use crate::dsp::{Meter, Sine};
    use crate::pipeline::MediaPacket;

    const CONFIG: &str = r#"
device_id = "t"
[channel.ops]
[channel.fire]
[port.desk]
kind = "desk"
channels = ["ops", "fire"]
ptt = { line = "sim:d-ptt" }
buttons = { "select.fire" = { line = "sim:d-select-fire" } }
"#;

    fn desk_config() -> DeskPortConfig {
        let config = crate::config::parse_str(CONFIG, "t.toml").unwrap();
        match &config.port["desk"] {
            PortConfig::Desk(desk) => desk.clone(),
            _ => panic!("not a desk"),
        }
    }

    fn short(input: &DeskInput) -> String {
        match input {
            DeskInput::Button { button, level, .. } => format!("{button:?} {level}"),
            DeskInput::Action { action, reply } => format!("{action:?} reply={}", reply.is_some()),
            other => format!("{other:?}"),
        }
    }

    /// A bouncing PTT contact, a select button's tap, and the router's levels flooded: the
    /// newest edge of each level per button (a tap stays a tap), one level per kind and
    /// channel, every request that waits for its answer, and never an overflow.
    #[test]
    fn a_flood_of_desk_inputs_keeps_the_newest_state_in_bounded_memory() {
        let desk = desk_config();
        let (tx, mut rx) = inputs(&desk);
        let at = Instant::now();
        tx.send(DeskInput::Button { button: DeskButton::Select(1), at, level: true }).unwrap();
        tx.send(DeskInput::Button { button: DeskButton::Select(1), at, level: false }).unwrap();
        let (done, _answer) = oneshot::channel();
        tx.send(DeskInput::Action { action: DeskAction::Select { channel: 0 }, reply: Some(done) }).unwrap();
        for i in 0..100_000 {
            let on = i % 2 == 0;
            tx.send(DeskInput::Button { button: DeskButton::Ptt, at, level: on }).unwrap();
            for channel in 0..2 {
                tx.send(DeskInput::Talk { channel, on }).unwrap();
                tx.send(DeskInput::Busy { channel, busy: on }).unwrap();
                tx.send(DeskInput::Denied { channel }).unwrap();
                let listen = DeskAction::Listen { channel, on };
                tx.send(DeskInput::Action { action: listen, reply: None }).unwrap();
            }
            assert!(tx.len() <= 5 + 2 + 8, "{} queued", tx.len());
        }
        assert_eq!(tx.end(), None);
        let got: Vec<_> = std::iter::from_fn(|| rx.try_recv()?.ok()).map(|i| short(&i)).collect();
        assert_eq!(
            got,
            [
                "Select(1) true",
                "Select(1) false",
                "Select { channel: 0 } reply=true",
                "Ptt true",
                "Ptt false",
                "Talk { channel: 0, on: false }",
                "Busy { channel: 0, busy: false }",
                "Denied { channel: 0 }",
                "Listen { channel: 0, on: false } reply=false",
                "Talk { channel: 1, on: false }",
                "Busy { channel: 1, busy: false }",
                "Denied { channel: 1 }",
                "Listen { channel: 1, on: false } reply=false",
            ]
        );
    }

    /// A bouncing desk PTT (100,000 edges from the line's callback while the desk task cannot
    /// run) that ends released: the desk asks for the floor back, and goes on working.
    #[tokio::test]
    async fn a_desk_ptt_released_after_a_flood_releases_the_floor() {
        let desk = desk_config();
        let mut gpio = crate::gpio::Gpio::new(&Default::default());
        let (control, mut router) = mpsc::channel(64);
        let (media, _media) = mpsc::channel(8);
        let to_channel = super::super::ToChannel { control, media };
        let (watchdog, cancel) = (super::super::watchdog::Watchdog::default(), CancellationToken::new());
        let (reporter, mut tasks) = (super::super::report::Reporter::new(None), tokio::task::JoinSet::new());
        let channels = vec![0, 1];
        let (link, held) =
            start(0, "desk", &desk, channels, None, &mut gpio, &to_channel, &reporter, &watchdog, &cancel, &mut tasks)
                .unwrap();
        let mut floor = async |want: bool| {
            let wait = async {
                while let Some(msg) = router.recv().await {
                    if let ChannelMsg::Desk(DeskToRouter::Floor { channel: 0, on, .. }) = msg {
                        if on == want {
                            return;
                        }
                    }
                }
            };
            tokio::time::timeout(Duration::from_secs(2), wait).await.is_ok()
        };
        let sim = gpio.sim.clone();
        sim.drive_input("d-ptt", true, clock::now());
        assert!(floor(true).await, "the PTT asks for the floor");
        for i in 0..100_000 {
            sim.drive_input("d-ptt", i % 2 == 0, clock::now());
        }
        assert!(link.to_desk.len() <= 2, "{} inputs queued", link.to_desk.len());
        assert!(floor(false).await, "the release gives the floor back");
        sim.drive_input("d-ptt", true, clock::now());
        assert!(floor(true).await, "the desk still works");
        cancel.cancel();
        while tasks.join_next().await.is_some() {}
        drop(held);
    }

    fn frames_played(h: &PlaybackHandle) -> u64 {
        h.stats().frames
    }

    /// Waits until neither device has been fed for 300 ms (both paused), at most 5 s.
    fn wait_paused(handles: &[PlaybackHandle]) -> Vec<u64> {
        let until = Instant::now() + Duration::from_secs(5);
        let mut last: Vec<u64> = handles.iter().map(frames_played).collect();
        loop {
            std::thread::sleep(Duration::from_millis(300));
            let now: Vec<u64> = handles.iter().map(frames_played).collect();
            if now == last {
                return now;
            }
            assert!(Instant::now() < until, "the speaker never paused: {now:?}");
            last = now;
        }
    }

    /// A stereo split desk speaker (two devices that pause while idle: `sim:wav-rec`) sleeps
    /// while the mixer is idle, and a second of channel audio (panned left), pushed and woken
    /// as the router does, plays on the left device with silence on the right, both devices
    /// running, and both pause again afterwards.
    #[test]
    fn an_idle_desk_speaker_pauses_and_plays_channel_audio_when_woken() {
        let dir = tempfile::tempdir().unwrap();
        let wav = |side: &str| dir.path().join(format!("{side}.wav"));
        let devices =
            [format!("sim:wav-rec:{}", wav("left").display()), format!("sim:wav-rec:{}", wav("right").display())];
        let channels = vec![MixChannelConfig { pan: -1.0, ..Default::default() }];
        let mixer =
            Arc::new(Mutex::new(Mixer::new(MixerConfig { channels, stereo: true, ..Default::default() }).unwrap()));
        let flags = AudioFlags::default();
        let watchdog = super::super::watchdog::Watchdog::default();
        let heartbeats = vec![watchdog.register("left"), watchdog.register("right")];
        let names: Vec<&str> = devices.iter().map(String::as_str).collect();
        let rx_active = Arc::new(AtomicU64::new(0));
        let handles =
            open_speaker(&names, mixer.clone(), rx_active.clone(), &flags, heartbeats, &AudioOptions::default())
                .unwrap();
        let idle = wait_paused(&handles);
        // A device pauses after 8 idle frames; the two sides of a split hand frames to each
        // other, so on a loaded machine one may run a little longer first (30 seen in CI). A
        // speaker that plays on while idle never passes wait_paused.
        assert!(idle.iter().all(|&f| f <= 50), "idle from the start: {idle:?} frames (at most 50)");

        let mut enc = Encoder::new(EncoderConfig::default()).unwrap();
        let (mut tone, mut pcm, mut buf) = (Sine::new(48_000, 1000.0, -12.0), [0.0f32; 960], [0u8; MAX_PACKET_BYTES]);
        let mut saw_active = false;
        let t0 = Instant::now();
        for k in 0..50u16 {
            std::thread::sleep(
                (t0 + Duration::from_millis(20 * u64::from(k))).saturating_duration_since(Instant::now()),
            );
            tone.render(&mut pcm);
            let n = enc.encode(&pcm, &mut buf).unwrap();
            let p = MediaPacket { seq: k, timestamp: u32::from(k) * 960, marker: k == 0, payload: buf[..n].to_vec() };
            mixer.lock().unwrap().push(clock::now(), 0, &p).unwrap();
            flags.wake_playback();
            saw_active |= rx_active.load(Ordering::Relaxed) == 1;
        }
        assert!(saw_active, "the speaker reported the channel active");
        // A slow machine (qemu, load) takes longer than 1 s to push the second: the device
        // runs as long as the pushing does, then drains its jitter buffer and pauses.
        let pushing = t0.elapsed();
        let after = wait_paused(&handles);
        assert_eq!(rx_active.load(Ordering::Relaxed), 0);
        for handle in handles {
            handle.stop();
        }
        let read = |side: &str| -> Vec<f32> {
            let r = hound::WavReader::open(wav(side)).unwrap();
            r.into_samples::<i16>().map(|s| f32::from(s.unwrap()) / 32768.0).collect()
        };
        let (left, right) = (read("left"), read("right"));
        let loud = left.chunks(480).filter(|f| Meter::measure(f).rms_dbfs > -30.0).count();
        let right_peak = right.iter().fold(0.0f32, |m, s| m.max(s.abs()));
        println!("played {idle:?} -> {after:?} frames; left {loud} loud frames, right peak {right_peak}");
        assert!(loud >= 90, "a second of tone on the left: {loud} loud frames");
        assert!(right_peak < 1e-3, "nothing on the right: peak {right_peak}");
        let (l, r) = (after[0] - idle[0], after[1] - idle[1]);
        let most = pushing.as_millis() as u64 / 10 + 50;
        assert!(
            l.abs_diff(r) <= 5 && l < most,
            "both sides ran for the spurt only: {l} and {r} frames (at most {most})"
        );
    }
}

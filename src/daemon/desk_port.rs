//! Driver for a dispatch desk port: microphone → receive path → the channels the desk holds;
//! the router's packets for the desk → [`Mixer`] → speaker/headset on a playback thread of its
//! own; buttons (debounced), LEDs, and every control source through one action path.
//!
//! Every control (GPIO buttons, the hub console, fleet commands) becomes a [`DeskAction`],
//! applied by [`DeskCore::apply`] and nothing else. The core is sans-IO: it turns actions into
//! [`DeskEffect`]s (floor presses for the channel router, mixer settings, patches) and keeps what
//! the LEDs show; the async task around it ([`DeskPort::run`]) only moves messages and drives
//! lines.
//!
//! A desk keys no transmitter of its own: its PTT asks for channel floors, and the radios that
//! carry it are keyed by their own ports under their own keying rules (TX delay, TOT). When the
//! desk stops (shutdown, error), it releases every floor it asked for.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::audio_port::AudioFlags;
use super::watchdog::{Heartbeat, BEAT_PERIOD};
use super::{clock, ChannelMsg, PortId};
use crate::audio::PlaybackHandle;
use crate::config::{DeskButton, DeskLed, DeskLedKind};
use crate::config::DeskPortConfig;
use crate::core::routing::ChannelId;
use crate::gpio::LogicalOutput;
use crate::pipeline::{MixChannelConfig, Mixer, MixerConfig, RxPath, PLAYBACK_LEAD_FRAMES};

/// How long a busy LED blinks after a denied PTT, and its blink period.
const DENY_BLINK_FOR: Duration = Duration::from_secs(1);
const DENY_BLINK_PERIOD: Duration = Duration::from_millis(250);
/// How often LEDs that follow audio (RX) are refreshed.
const LED_REFRESH: Duration = Duration::from_millis(10);
const PLAYBACK_POLL: Duration = Duration::from_millis(2);

/// Everything a dispatcher can do at the desk. Channels are indices into the desk's channel
/// list (`[port.NAME] channels`).
#[derive(Debug, Clone, PartialEq)]
pub enum DeskAction {
    /// Choose the channel the main PTT talks on.
    Select { channel: usize },
    /// Main PTT / foot switch: talk on the selected channel.
    Ptt { on: bool },
    /// Talk on one channel, whatever is selected.
    ChannelPtt { channel: usize, on: bool },
    /// Talk on every monitored channel at once.
    AllCall { on: bool },
    Listen { channel: usize, on: bool },
    ToggleListen { channel: usize },
    /// -60..=+20 dB.
    Volume { channel: usize, db: f32 },
    /// -1 (left) ..= +1 (right).
    Pan { channel: usize, pan: f32 },
    /// Cross-connect two of the desk's channels (on), or undo it.
    Patch { a: usize, b: usize, on: bool },
}

impl DeskAction {
    /// Parse an action given by name, as the console and fleet commands send it:
    /// `{"action": "select", "channel": "ops"}`, `{"action": "ptt", "on": true}` (optional
    /// `"channel"`), `{"action": "all_call", "on": true}`, `{"action": "listen", "channel": "ops",
    /// "on": false}`, `{"action": "volume", "channel": "ops", "db": -6}`,
    /// `{"action": "pan", "channel": "ops", "pan": -1}`, `{"action": "patch", "channels": ["ops",
    /// "fire"], "on": true}`. Every field is checked; unknown fields are refused.
    pub fn from_json(value: &serde_json::Value, channels: &[String]) -> Result<DeskAction, String> {
        use serde_json::Value;
        let Value::Object(map) = value else { return Err("a desk action is a JSON object".into()) };
        let action = map.get("action").and_then(Value::as_str).ok_or("missing string field `action`")?;
        let allowed: &[&str] = match action {
            "select" => &["channel"],
            "ptt" => &["on", "channel"],
            "all_call" => &["on"],
            "listen" => &["channel", "on"],
            "volume" => &["channel", "db"],
            "pan" => &["channel", "pan"],
            "patch" => &["channels", "on"],
            other => {
                return Err(format!("unknown desk action `{other}`; known: select, ptt, all_call, listen, volume, pan, patch"))
            }
        };
        if let Some(extra) = map.keys().find(|k| *k != "action" && !allowed.contains(&k.as_str())) {
            return Err(format!("unknown field `{extra}` for desk action `{action}`"));
        }
        let channel_named = |v: &Value| -> Result<usize, String> {
            let name = v.as_str().ok_or("a channel is named by a string")?;
            channels.iter().position(|c| c == name).ok_or_else(|| format!("`{name}` is not one of this desk's channels"))
        };
        let channel = || channel_named(map.get("channel").ok_or("missing field `channel`")?);
        let on = || map.get("on").and_then(Value::as_bool).ok_or_else(|| "missing boolean field `on`".to_string());
        let number = |key: &str, lo: f64, hi: f64| -> Result<f32, String> {
            let v = map.get(key).and_then(Value::as_f64).ok_or_else(|| format!("missing number field `{key}`"))?;
            if (lo..=hi).contains(&v) {
                Ok(v as f32)
            } else {
                Err(format!("`{key}` is {v}, allowed {lo}..={hi}"))
            }
        };
        Ok(match action {
            "select" => DeskAction::Select { channel: channel()? },
            "ptt" if map.contains_key("channel") => DeskAction::ChannelPtt { channel: channel()?, on: on()? },
            "ptt" => DeskAction::Ptt { on: on()? },
            "all_call" => DeskAction::AllCall { on: on()? },
            "listen" => DeskAction::Listen { channel: channel()?, on: on()? },
            "volume" => DeskAction::Volume { channel: channel()?, db: number("db", -60.0, 20.0)? },
            "pan" => DeskAction::Pan { channel: channel()?, pan: number("pan", -1.0, 1.0)? },
            _ => {
                let pair = map.get("channels").and_then(Value::as_array).filter(|a| a.len() == 2);
                let pair = pair.ok_or("`channels` must name exactly two channels")?;
                let (a, b) = (channel_named(&pair[0])?, channel_named(&pair[1])?);
                if a == b {
                    return Err("a patch joins two different channels".into());
                }
                DeskAction::Patch { a, b, on: on()? }
            }
        })
    }
}

/// What applying actions asks of the outside world.
#[derive(Debug, Clone, PartialEq)]
pub enum DeskEffect {
    /// Ask for (on) or release the floor of a channel.
    Floor { channel: usize, on: bool },
    Listen { channel: usize, on: bool },
    Volume { channel: usize, db: f32 },
    Pan { channel: usize, pan: f32 },
    /// The mixer's selected channel (ducking follows it).
    Select { channel: usize },
    Patch { a: usize, b: usize, on: bool },
}

/// A button's level after debouncing: an edge counts once the line has stayed at its new level
/// for the debounce time; bounces inside that window restart it.
#[derive(Debug, Clone)]
pub struct Debounce {
    hold: Duration,
    stable: bool,
    /// The raw level and when it last changed, while it differs from `stable`.
    pending: Option<(bool, Instant)>,
}

impl Debounce {
    /// A button whose line is at `level` now: that level is where it starts, not an edge (a
    /// PTT held or stuck at start-up does not talk until it has been released once).
    pub fn new(hold: Duration, level: bool) -> Self {
        Self { hold, stable: level, pending: None }
    }

    /// A raw edge (or the current level) seen at `at`.
    pub fn edge(&mut self, at: Instant, level: bool) {
        self.pending = (level != self.stable).then_some((level, at));
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.pending.map(|(_, at)| at + self.hold)
    }

    /// The new stable level, if the pending one has held long enough by `now`.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<bool> {
        let (level, at) = self.pending?;
        if now < at + self.hold {
            return None;
        }
        self.pending = None;
        self.stable = level;
        Some(level)
    }

    #[cfg(test)]
    pub fn level(&self) -> bool {
        self.stable
    }
}

/// The desk's state, sans-IO: presses, selection, monitor settings and what the LEDs show.
#[derive(Debug)]
pub struct DeskCore {
    channels: usize,
    selected: usize,
    main_ptt: bool,
    channel_ptt: Vec<bool>,
    all_call: bool,
    /// The floor presses last asked for, per channel.
    pressed: Vec<bool>,
    listen: Vec<bool>,
    volume: Vec<f32>,
    patches: Vec<(usize, usize)>,
    /// This desk holds the channel's floor.
    tx: Vec<bool>,
    /// Someone else holds the channel's floor.
    busy: Vec<bool>,
    /// A request was denied: the busy LED blinks until then.
    denied_until: Vec<Option<Instant>>,
    /// A talk-spurt is playing on the channel (from the mixer).
    rx: u64,
    effects: Vec<DeskEffect>,
}

impl DeskCore {
    pub fn new(config: &DeskPortConfig) -> Self {
        let n = config.channels.len();
        let mut core = Self {
            channels: n,
            selected: config.selected_index(),
            main_ptt: false,
            channel_ptt: vec![false; n],
            all_call: false,
            pressed: vec![false; n],
            listen: (0..n).map(|i| config.monitor_of(i).listen).collect(),
            volume: (0..n).map(|i| config.monitor_of(i).volume_db).collect(),
            patches: Vec::new(),
            tx: vec![false; n],
            busy: vec![false; n],
            denied_until: vec![None; n],
            rx: 0,
            effects: Vec::new(),
        };
        core.effects.push(DeskEffect::Select { channel: core.selected });
        core
    }

    fn check(&self, channel: usize) -> Result<(), String> {
        if channel < self.channels {
            Ok(())
        } else {
            Err(format!("no desk channel {channel}"))
        }
    }

    /// Apply one action from any source. A refused action changes nothing.
    pub fn apply(&mut self, action: DeskAction) -> Result<(), String> {
        match action {
            DeskAction::Select { channel } => {
                self.check(channel)?;
                self.selected = channel;
                self.effects.push(DeskEffect::Select { channel });
            }
            DeskAction::Ptt { on } => self.main_ptt = on,
            DeskAction::ChannelPtt { channel, on } => {
                self.check(channel)?;
                self.channel_ptt[channel] = on;
            }
            DeskAction::AllCall { on } => self.all_call = on,
            DeskAction::Listen { channel, on } => {
                self.check(channel)?;
                self.listen[channel] = on;
                self.effects.push(DeskEffect::Listen { channel, on });
            }
            DeskAction::ToggleListen { channel } => {
                self.check(channel)?;
                return self.apply(DeskAction::Listen { channel, on: !self.listen[channel] });
            }
            DeskAction::Volume { channel, db } => {
                self.check(channel)?;
                if !(-60.0..=20.0).contains(&db) {
                    return Err(format!("volume {db} dB is out of range -60..=20"));
                }
                self.volume[channel] = db;
                self.effects.push(DeskEffect::Volume { channel, db });
            }
            DeskAction::Pan { channel, pan } => {
                self.check(channel)?;
                if !(-1.0..=1.0).contains(&pan) {
                    return Err(format!("pan {pan} is out of range -1..=1"));
                }
                self.effects.push(DeskEffect::Pan { channel, pan });
            }
            DeskAction::Patch { a, b, on } => {
                self.check(a)?;
                self.check(b)?;
                if a == b {
                    return Err("a patch joins two different channels".into());
                }
                let pair = (a.min(b), a.max(b));
                let exists = self.patches.contains(&pair);
                match (on, exists) {
                    (true, true) => return Err("these channels are already patched".into()),
                    (false, false) => return Err("these channels are not patched".into()),
                    (true, false) => self.patches.push(pair),
                    (false, true) => self.patches.retain(|p| *p != pair),
                }
                self.effects.push(DeskEffect::Patch { a, b, on });
            }
        }
        self.update_presses();
        Ok(())
    }

    /// A patch the router refused after all (e.g. a channel hosted on the uplink).
    pub fn patch_refused(&mut self, a: usize, b: usize) {
        self.patches.retain(|p| *p != (a.min(b), a.max(b)));
    }

    fn update_presses(&mut self) {
        for channel in 0..self.channels {
            let want =
                self.all_call || self.channel_ptt[channel] || (self.main_ptt && channel == self.selected);
            if want != self.pressed[channel] {
                self.pressed[channel] = want;
                self.effects.push(DeskEffect::Floor { channel, on: want });
            }
        }
    }

    /// Release every press (shutdown, error): the channels stop carrying the desk.
    pub fn release_all(&mut self) {
        (self.main_ptt, self.all_call) = (false, false);
        self.channel_ptt.iter_mut().for_each(|p| *p = false);
        self.update_presses();
    }

    pub fn poll_effect(&mut self) -> Option<DeskEffect> {
        (!self.effects.is_empty()).then(|| self.effects.remove(0))
    }

    #[cfg(test)]
    pub fn selected(&self) -> usize {
        self.selected
    }

    #[cfg(test)]
    pub fn listening(&self, channel: usize) -> bool {
        self.listen.get(channel).copied().unwrap_or(false)
    }

    #[cfg(test)]
    pub fn pressed(&self, channel: usize) -> bool {
        self.pressed.get(channel).copied().unwrap_or(false)
    }

    // ---- channel state for the LEDs ----

    /// The desk holds (on) or no longer holds the floor of `channel`.
    pub fn set_tx(&mut self, channel: usize, on: bool) {
        if let Some(t) = self.tx.get_mut(channel) {
            *t = on;
        }
    }

    /// Someone other than this desk holds `channel`'s floor (or nobody does).
    pub fn set_busy(&mut self, channel: usize, busy: bool) {
        if let Some(b) = self.busy.get_mut(channel) {
            *b = busy;
        }
    }

    /// A floor request on `channel` was denied at `now`.
    pub fn denied(&mut self, now: Instant, channel: usize) {
        if let Some(d) = self.denied_until.get_mut(channel) {
            *d = Some(now + DENY_BLINK_FOR);
        }
    }

    /// Bit `i`: channel `i` is playing a talk-spurt (the mixer's active set).
    pub fn set_rx(&mut self, active: u64) {
        self.rx = active;
    }

    /// The desk as consoles show it; `names`: its channels' names.
    pub fn state(&self, port: &str, names: &[String]) -> crate::net::protocol::DeskState {
        use crate::net::protocol::{DeskChannelState, DeskState};
        DeskState {
            port: port.to_string(),
            selected: names.get(self.selected).cloned().unwrap_or_default(),
            channels: (0..self.channels.min(names.len()))
                .map(|c| DeskChannelState {
                    name: names[c].clone(),
                    listen: self.listen[c],
                    volume_db: self.volume[c],
                    rx: self.rx & (1 << c) != 0,
                    tx: self.tx[c],
                    busy: self.busy[c],
                })
                .collect(),
            patches: self.patches.iter().filter_map(|&(a, b)| Some([names.get(a)?.clone(), names.get(b)?.clone()])).collect(),
        }
    }

    /// Whether an LED is lit at `now`.
    pub fn led(&self, led: DeskLed, now: Instant) -> bool {
        let one = |c: usize| match led.kind {
            DeskLedKind::Rx => self.rx & (1 << c) != 0,
            DeskLedKind::Tx => self.tx[c],
            DeskLedKind::Select => c == self.selected,
            DeskLedKind::Busy => match self.denied_until[c] {
                // Blink: lit in the first half of each period since the denial.
                Some(until) if now < until => {
                    let since = (now + DENY_BLINK_FOR).saturating_duration_since(until);
                    since.as_millis() % DENY_BLINK_PERIOD.as_millis() < DENY_BLINK_PERIOD.as_millis() / 2
                }
                _ => self.busy[c],
            },
        };
        match led.channel {
            Some(c) if c < self.channels => one(c),
            Some(_) => false,
            None => (0..self.channels).any(one),
        }
    }

    /// When a blinking LED next changes (None: nothing blinks).
    pub fn poll_timeout(&self, now: Instant) -> Option<Instant> {
        let half = DENY_BLINK_PERIOD / 2;
        self.denied_until.iter().flatten().filter(|&&u| u > now).map(|&u| (now + half).min(u)).min()
    }
}

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
}

/// What the channel router tells the desk task, and where it pushes the desk's packets.
pub struct DeskLink {
    pub to_desk: mpsc::UnboundedSender<DeskInput>,
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
    Floor { port: PortId, channel: ChannelId, on: bool },
    /// The desk's state changed (for consoles).
    State { port: PortId, state: crate::net::protocol::DeskState },
    Patch { a: ChannelId, b: ChannelId, on: bool, reply: oneshot::Sender<Result<(), String>> },
}

pub struct DeskPort {
    pub id: PortId,
    pub name: String,
    pub core: DeskCore,
    pub link_channels: Vec<ChannelId>,
    pub channel_names: Vec<String>,
    pub inputs: mpsc::UnboundedReceiver<DeskInput>,
    pub to_channel: mpsc::UnboundedSender<ChannelMsg>,
    pub mixer: Option<Arc<Mutex<Mixer>>>,
    /// The mixer's active set, written by the playback thread.
    pub rx_active: Arc<AtomicU64>,
    pub buttons: BTreeMap<DeskButton, Debounce>,
    pub leds: Vec<(DeskLed, LogicalOutput)>,
    pub heartbeat: Heartbeat,
    /// The port's state for MQTT and consoles: selected channel, audio playing, talking.
    pub reporter: super::report::Reporter,
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
            let deadline =
                self.buttons.values().filter_map(Debounce::poll_timeout).chain(self.core.poll_timeout(now)).min();
            let sleep = crate::wait::until(deadline);
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                input = self.inputs.recv() => match input {
                    // Answered once carried out, so a patch the router refuses is reported.
                    Some(DeskInput::Action { action, reply }) => {
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
                    Some(input) => self.input(input),
                    None => break,
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
                let _ = self.to_channel.send(ChannelMsg::Desk(DeskToRouter::State { port: self.id, state }));
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
                if let Some(d) = self.buttons.get_mut(&button) {
                    d.edge(at, level);
                }
                self.debounced(now);
            }
            // Applied in `run`, which awaits the router's answer to a patch before replying.
            DeskInput::Action { .. } => {}
            DeskInput::Talk { channel, on } => self.core.set_tx(channel, on),
            DeskInput::Busy { channel, busy } => self.core.set_busy(channel, busy),
            DeskInput::Denied { channel } => self.core.denied(now, channel),
        }
    }

    /// Buttons whose debounce time is over become actions.
    fn debounced(&mut self, now: Instant) {
        let mut actions = Vec::new();
        for (button, d) in &mut self.buttons {
            let Some(level) = d.handle_timeout(now) else { continue };
            let action = match (*button, level) {
                (DeskButton::Ptt, on) => Some(DeskAction::Ptt { on }),
                (DeskButton::ChannelPtt(channel), on) => Some(DeskAction::ChannelPtt { channel, on }),
                (DeskButton::AllCall, on) => Some(DeskAction::AllCall { on }),
                // Select and listen act when pressed, not when let go.
                (DeskButton::Select(channel), true) => Some(DeskAction::Select { channel }),
                (DeskButton::Listen(channel), true) => Some(DeskAction::ToggleListen { channel }),
                _ => None,
            };
            actions.extend(action);
        }
        for action in actions {
            info!(port = %self.name, ?action, "desk button");
            if let Err(e) = self.core.apply(action) {
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
                    let _ = self.to_channel.send(ChannelMsg::Desk(msg));
                }
                DeskEffect::Listen { channel, on } => mixer(&mut |m| m.set_listen(channel, on)),
                DeskEffect::Volume { channel, db } => mixer(&mut |m| m.set_volume(channel, db)),
                DeskEffect::Pan { channel, pan } => mixer(&mut |m| m.set_pan(channel, pan)),
                DeskEffect::Select { channel } => mixer(&mut |m| m.select(Some(channel))),
                DeskEffect::Patch { a, b, on } => {
                    let (reply, answer) = oneshot::channel();
                    let msg = DeskToRouter::Patch { a: global(a), b: global(b), on, reply };
                    if self.to_channel.send(ChannelMsg::Desk(msg)).is_err() {
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

/// Mixer → playback, refilled whenever the device has consumed a frame, on a thread of its own
/// (as radio playback: a late refill is an audible gap). Publishes the mixer's active set.
/// With two devices (a stereo split: left, right) the mixer's interleaved stereo frame is
/// split between them; both are refilled together, paced by the one that needs it first.
pub fn run_playback(
    devices: Vec<PlaybackHandle>,
    mixer: Arc<Mutex<Mixer>>,
    rx_active: Arc<AtomicU64>,
    heartbeat: Heartbeat,
    cancel: CancellationToken,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let name = devices.first().map(|d| d.name().to_string()).unwrap_or_default();
    std::thread::Builder::new().name(format!("desk {name}")).spawn(move || {
        let sides = devices.len().max(1);
        let n = devices.first().map_or(0, PlaybackHandle::frame_len);
        let mut frame = vec![0.0f32; n * sides];
        let mut side = vec![0.0f32; n];
        while !cancel.is_cancelled() {
            heartbeat.beat();
            'refill: while devices.iter().any(|d| d.queued() < PLAYBACK_LEAD_FRAMES) {
                let active = {
                    let mut m = mixer.lock().unwrap_or_else(|p| p.into_inner());
                    m.mix(clock::now(), &mut frame).active
                };
                rx_active.store(active, Ordering::Relaxed);
                for (k, device) in devices.iter().enumerate() {
                    let out = if sides == 1 {
                        &frame[..]
                    } else {
                        side.iter_mut().zip(frame.iter().skip(k).step_by(sides)).for_each(|(o, &s)| *o = s);
                        &side[..]
                    };
                    if device.push(out).is_err() {
                        break 'refill;
                    }
                }
            }
            std::thread::sleep(PLAYBACK_POLL);
        }
        for device in devices {
            device.stop();
        }
    })
}

/// A desk's audio: the microphone's capture task and the mixer's playback thread.
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
    to_channel: &mpsc::UnboundedSender<ChannelMsg>,
    watchdog: &super::watchdog::Watchdog,
    cancel: &CancellationToken,
    tasks: &mut tokio::task::JoinSet<()>,
) -> Result<DeskAudio, String> {
    use crate::audio::AudioOptions;
    let flags = Arc::new(AudioFlags::default());
    let rx_active = Arc::new(AtomicU64::new(0));
    let opts = AudioOptions::default();
    if let Some(device) = &desk.audio.capture {
        let rx = RxPath::new(&desk.audio.rx_config(), &desk.audio.encoder_config(), false)
            .map_err(|e| format!("encoder: {e}"))?;
        // The microphone has no VOX; its levels go nowhere.
        let (no_vox, _) = mpsc::unbounded_channel();
        let heartbeat = watchdog.register(&format!("port {name} microphone"));
        let to = (no_vox, to_channel.clone());
        super::audio_port::start_capture(port, device, rx, &flags, None, to, heartbeat, opts.clone(), cancel, tasks)?;
    }
    let mut mixer = None;
    if let Some(device) = &desk.audio.playback {
        let mut devices = vec![PlaybackHandle::open(device, &opts).map_err(|e| format!("playback `{device}`: {e}"))?];
        if let Some(right) = &desk.playback_right {
            devices.push(PlaybackHandle::open(right, &opts).map_err(|e| format!("playback_right `{right}`: {e}"))?);
        }
        let m = Arc::new(Mutex::new(desk_mixer(desk)?));
        let heartbeat = watchdog.register(&format!("port {name} speaker"));
        run_playback(devices, m.clone(), rx_active.clone(), heartbeat, cancel.clone())
            .map_err(|e| format!("playback thread: {e}"))?;
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
    gpio: &mut crate::gpio::Gpio,
    to_channel: &mpsc::UnboundedSender<ChannelMsg>,
    reporter: &super::report::Reporter,
    watchdog: &super::watchdog::Watchdog,
    cancel: &CancellationToken,
    tasks: &mut tokio::task::JoinSet<()>,
) -> Result<(DeskLink, Vec<crate::gpio::LogicalInput>), String> {
    let (to_desk, inputs) = mpsc::unbounded_channel();
    let hold = Duration::from_millis(desk.debounce_ms);
    let mut buttons = BTreeMap::new();
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
        buttons.insert(button, Debounce::new(hold, level));
        held.push(input);
    }
    let mut leds = Vec::new();
    for (n, line) in &desk.leds {
        let led = desk.led(n)?;
        leds.push((led, gpio.open_output(line).map_err(|e| format!("leds.{n}: {e}"))?));
    }
    let audio = start_audio(id, name, desk, to_channel, watchdog, cancel, tasks)?;
    let port = DeskPort {
        id,
        name: name.to_string(),
        core: DeskCore::new(desk),
        link_channels: channel_ids.clone(),
        channel_names: desk.channels.clone(),
        inputs,
        to_channel: to_channel.clone(),
        mixer: audio.mixer.clone(),
        rx_active: audio.rx_active,
        buttons,
        leds,
        heartbeat: watchdog.register(&format!("port {name}")),
        reporter: reporter.clone(),
    };
    tasks.spawn(port.run(cancel.clone()));
    info!(port = %name, channels = channel_ids.len(), "desk port running");
    Ok((DeskLink { to_desk, channels: channel_ids, mixer: audio.mixer, flags: audio.flags }, held))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desk(channels: &[&str]) -> DeskPortConfig {
        let text = format!(
            "device_id = \"d\"\n{}[port.desk]\nkind = \"desk\"\nchannels = [{}]\n",
            channels.iter().map(|c| format!("[channel.{c}]\n")).collect::<String>(),
            channels.iter().map(|c| format!("\"{c}\"")).collect::<Vec<_>>().join(", ")
        );
        match crate::config::parse_str(&text, "t.toml").unwrap().port.remove("desk").unwrap() {
            crate::config::PortConfig::Desk(d) => d,
            _ => unreachable!(),
        }
    }

    fn effects(core: &mut DeskCore) -> Vec<DeskEffect> {
        std::iter::from_fn(|| core.poll_effect()).collect()
    }

    #[test]
    fn debounce_takes_an_edge_once_it_has_held_and_ignores_bounces() {
        let t = Instant::now();
        let ms = |n| t + Duration::from_millis(n);
        let mut d = Debounce::new(Duration::from_millis(20), false);
        d.edge(ms(0), true);
        d.edge(ms(3), false); // contact bounce
        d.edge(ms(5), true);
        assert_eq!(d.poll_timeout(), Some(ms(25)));
        assert_eq!(d.handle_timeout(ms(24)), None);
        assert_eq!(d.handle_timeout(ms(25)), Some(true));
        assert!(d.level());
        // A glitch shorter than the hold time is no release.
        d.edge(ms(100), false);
        d.edge(ms(110), true);
        assert_eq!(d.poll_timeout(), None);
        assert_eq!(d.handle_timeout(ms(200)), None);
        assert!(d.level());
        d.edge(ms(300), false);
        assert_eq!(d.handle_timeout(ms(320)), Some(false));
        // Held at start-up: no press until it has been let go.
        let mut held = Debounce::new(Duration::from_millis(20), true);
        assert_eq!(held.poll_timeout(), None);
        held.edge(ms(0), false);
        assert_eq!(held.handle_timeout(ms(20)), Some(false));
        held.edge(ms(50), true);
        assert_eq!(held.handle_timeout(ms(70)), Some(true));
    }

    #[test]
    fn presses_follow_ptt_selection_channel_ptt_and_all_call() {
        let mut core = DeskCore::new(&desk(&["a", "b", "c"]));
        assert_eq!(effects(&mut core), vec![DeskEffect::Select { channel: 0 }]);
        core.apply(DeskAction::Ptt { on: true }).unwrap();
        assert_eq!(effects(&mut core), vec![DeskEffect::Floor { channel: 0, on: true }]);
        // Selecting another channel while talking moves the talk there.
        core.apply(DeskAction::Select { channel: 2 }).unwrap();
        assert_eq!(
            effects(&mut core),
            vec![
                DeskEffect::Select { channel: 2 },
                DeskEffect::Floor { channel: 0, on: false },
                DeskEffect::Floor { channel: 2, on: true }
            ]
        );
        core.apply(DeskAction::ChannelPtt { channel: 1, on: true }).unwrap();
        assert_eq!(effects(&mut core), vec![DeskEffect::Floor { channel: 1, on: true }]);
        core.apply(DeskAction::AllCall { on: true }).unwrap();
        assert_eq!(effects(&mut core), vec![DeskEffect::Floor { channel: 0, on: true }]);
        core.apply(DeskAction::AllCall { on: false }).unwrap();
        core.apply(DeskAction::Ptt { on: false }).unwrap();
        assert_eq!(
            effects(&mut core),
            vec![DeskEffect::Floor { channel: 0, on: false }, DeskEffect::Floor { channel: 2, on: false }]
        );
        core.release_all();
        assert_eq!(effects(&mut core), vec![DeskEffect::Floor { channel: 1, on: false }]);
        assert!((0..3).all(|c| !core.pressed(c)));
    }

    #[test]
    fn refused_actions_change_nothing() {
        let mut core = DeskCore::new(&desk(&["a", "b"]));
        effects(&mut core);
        assert!(core.apply(DeskAction::Select { channel: 5 }).is_err());
        assert!(core.apply(DeskAction::Volume { channel: 0, db: 40.0 }).is_err());
        assert!(core.apply(DeskAction::Pan { channel: 0, pan: f32::NAN }).is_err());
        assert!(core.apply(DeskAction::Patch { a: 1, b: 1, on: true }).is_err());
        assert!(core.apply(DeskAction::Patch { a: 0, b: 1, on: false }).is_err());
        assert_eq!(effects(&mut core), vec![]);
        assert_eq!(core.selected(), 0);
        core.apply(DeskAction::Patch { a: 1, b: 0, on: true }).unwrap();
        assert!(core.apply(DeskAction::Patch { a: 0, b: 1, on: true }).is_err(), "already patched");
        core.apply(DeskAction::ToggleListen { channel: 1 }).unwrap();
        assert_eq!(
            effects(&mut core),
            vec![DeskEffect::Patch { a: 1, b: 0, on: true }, DeskEffect::Listen { channel: 1, on: false }]
        );
        assert!(!core.listening(1));
    }

    #[test]
    fn actions_parse_from_json_and_malformed_ones_are_refused() {
        use serde_json::json;
        let ch = ["ops".to_string(), "fire".to_string()];
        let ok = [
            (json!({"action": "select", "channel": "fire"}), DeskAction::Select { channel: 1 }),
            (json!({"action": "ptt", "on": true}), DeskAction::Ptt { on: true }),
            (json!({"action": "ptt", "channel": "ops", "on": false}), DeskAction::ChannelPtt { channel: 0, on: false }),
            (json!({"action": "all_call", "on": true}), DeskAction::AllCall { on: true }),
            (json!({"action": "listen", "channel": "ops", "on": false}), DeskAction::Listen { channel: 0, on: false }),
            (json!({"action": "volume", "channel": "ops", "db": -6}), DeskAction::Volume { channel: 0, db: -6.0 }),
            (json!({"action": "pan", "channel": "fire", "pan": 1}), DeskAction::Pan { channel: 1, pan: 1.0 }),
            (json!({"action": "patch", "channels": ["ops", "fire"], "on": true}), DeskAction::Patch { a: 0, b: 1, on: true }),
        ];
        for (v, want) in ok {
            assert_eq!(DeskAction::from_json(&v, &ch), Ok(want), "{v}");
        }
        let bad = [
            json!([1]),
            json!({"channel": "ops"}),
            json!({"action": "explode"}),
            json!({"action": "select", "channel": "nope"}),
            json!({"action": "select", "channel": 3}),
            json!({"action": "ptt"}),
            json!({"action": "ptt", "on": "yes"}),
            json!({"action": "volume", "channel": "ops", "db": 1e9}),
            json!({"action": "pan", "channel": "ops", "pan": -1.5}),
            json!({"action": "patch", "channels": ["ops"], "on": true}),
            json!({"action": "patch", "channels": ["ops", "ops"], "on": true}),
            json!({"action": "listen", "channel": "ops", "on": true, "extra": 1}),
        ];
        for v in bad {
            assert!(DeskAction::from_json(&v, &ch).is_err(), "{v} accepted");
        }
    }

    #[test]
    fn leds_follow_rx_tx_busy_selection_and_blink_on_deny() {
        let t = Instant::now();
        let ms = |n| t + Duration::from_millis(n);
        let mut core = DeskCore::new(&desk(&["a", "b"]));
        let led = |kind, channel| DeskLed { kind, channel };
        assert!(core.led(led(DeskLedKind::Select, Some(0)), t));
        assert!(!core.led(led(DeskLedKind::Rx, None), t));
        core.set_rx(0b10);
        assert!(core.led(led(DeskLedKind::Rx, Some(1)), t) && !core.led(led(DeskLedKind::Rx, Some(0)), t));
        assert!(core.led(led(DeskLedKind::Rx, None), t));
        core.set_tx(0, true);
        assert!(core.led(led(DeskLedKind::Tx, Some(0)), t) && core.led(led(DeskLedKind::Tx, None), t));
        core.set_busy(1, true);
        assert!(core.led(led(DeskLedKind::Busy, Some(1)), t));
        core.set_busy(1, false);
        core.denied(ms(0), 1);
        let busy = |n| core.led(led(DeskLedKind::Busy, Some(1)), ms(n));
        let blink: Vec<bool> = [0, 50, 125, 200, 250, 300, 400].into_iter().map(busy).collect();
        assert_eq!(blink, [true, true, false, false, true, true, false]);
        assert!(!busy(1000), "the blink ends after a second");
        assert_eq!(core.poll_timeout(ms(0)), Some(ms(125)));
        assert_eq!(core.poll_timeout(ms(1000)), None);
    }
}

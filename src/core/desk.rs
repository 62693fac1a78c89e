//! A dispatch desk's decisions, sans-IO: buttons (debounced), selection, listen, all-call,
//! patches, and what the LEDs show.
//!
//! Every control (GPIO buttons, the hub console, fleet commands) becomes a [`DeskAction`],
//! applied by [`DeskCore::apply`] and nothing else; it turns actions into [`DeskEffect`]s (floor
//! presses for the channel router, mixer settings, patches) for the driver to carry out
//! (`src/daemon/desk_port.rs`). Raw button edges come in with the `Instant` they were seen at;
//! the driver sleeps until [`DeskCore::poll_timeout`] and calls [`DeskCore::handle_timeout`].
//!
//! A desk keys no transmitter of its own: its PTT asks for channel floors, and the radios that
//! carry it are keyed by their own ports under their own keying rules (TX delay, TOT).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::config::{DeskButton, DeskLed, DeskLedKind, DeskPortConfig};

/// How long a busy LED blinks after a denied PTT, and its blink period.
const DENY_BLINK_FOR: Duration = Duration::from_secs(1);
const DENY_BLINK_PERIOD: Duration = Duration::from_millis(250);

/// Everything a dispatcher can do at the desk. Channels are indices into the desk's channel
/// list (`[port.NAME] channels`).
#[derive(Debug, Clone, PartialEq)]
pub enum DeskAction {
    /// Choose the channel the main PTT talks on.
    Select {
        channel: usize,
    },
    /// Main PTT / foot switch: talk on the selected channel.
    Ptt {
        on: bool,
    },
    /// Talk on one channel, whatever is selected.
    ChannelPtt {
        channel: usize,
        on: bool,
    },
    /// Talk on every monitored channel at once.
    AllCall {
        on: bool,
    },
    Listen {
        channel: usize,
        on: bool,
    },
    ToggleListen {
        channel: usize,
    },
    /// -60..=+20 dB.
    Volume {
        channel: usize,
        db: f32,
    },
    /// -1 (left) ..= +1 (right).
    Pan {
        channel: usize,
        pan: f32,
    },
    /// Cross-connect two of the desk's channels (on), or undo it.
    Patch {
        a: usize,
        b: usize,
        on: bool,
    },
    /// Raise an emergency on the selected channel, the desk its caller.
    Emergency,
    /// Acknowledge every emergency on the desk's channels.
    AckEmergency,
    /// Play the last recorded transmission of a channel (None: the selected one) on the desk's
    /// speaker. Keys nothing and asks for no floor.
    ReplayLast {
        channel: Option<usize>,
    },
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
            "emergency" | "ack_emergency" => &[],
            "replay_last" => &["channel"],
            other => {
                return Err(format!(
                "unknown desk action `{other}`; known: select, ptt, all_call, listen, volume, pan, patch, emergency, \
                     ack_emergency, replay_last"
            ))
            }
        };
        if let Some(extra) = map.keys().find(|k| *k != "action" && !allowed.contains(&k.as_str())) {
            return Err(format!("unknown field `{extra}` for desk action `{action}`"));
        }
        let channel_named = |v: &Value| -> Result<usize, String> {
            let name = v.as_str().ok_or("a channel is named by a string")?;
            channels
                .iter()
                .position(|c| c == name)
                .ok_or_else(|| format!("`{name}` is not one of this desk's channels"))
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
            "emergency" => DeskAction::Emergency,
            "ack_emergency" => DeskAction::AckEmergency,
            "replay_last" => DeskAction::ReplayLast { channel: map.contains_key("channel").then(channel).transpose()? },
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
    Floor {
        channel: usize,
        on: bool,
    },
    Listen {
        channel: usize,
        on: bool,
    },
    Volume {
        channel: usize,
        db: f32,
    },
    Pan {
        channel: usize,
        pan: f32,
    },
    /// The mixer's selected channel (ducking follows it).
    Select {
        channel: usize,
    },
    Patch {
        a: usize,
        b: usize,
        on: bool,
    },
    /// Raise an emergency on this desk channel, the desk its caller.
    Emergency {
        channel: usize,
    },
    /// Acknowledge the emergencies on the desk's channels.
    AckEmergency,
    /// Play the last recording of `channel` on the speaker (nothing keyed, no floor).
    Replay {
        channel: usize,
    },
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

/// The desk's state: buttons, presses, selection, monitor settings and what the LEDs show.
#[derive(Debug)]
pub struct DeskCore {
    channels: usize,
    /// How long a button's new level must hold before it counts.
    hold: Duration,
    buttons: BTreeMap<DeskButton, Debounce>,
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
            hold: Duration::from_millis(config.debounce_ms),
            buttons: BTreeMap::new(),
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

    /// A button wired to the desk, its line at `level` now (see [`Debounce::new`]: a talk
    /// button held at start-up does not talk until it has been released once).
    pub fn add_button(&mut self, button: DeskButton, level: bool) {
        self.buttons.insert(button, Debounce::new(self.hold, level));
    }

    /// A raw edge (or the current level) of `button`, seen at `at`. It counts once it has held
    /// for the debounce time: see [`DeskCore::handle_timeout`].
    pub fn button(&mut self, at: Instant, button: DeskButton, level: bool) {
        if let Some(d) = self.buttons.get_mut(&button) {
            d.edge(at, level);
        }
    }

    /// Buttons whose debounce time is over by `now` become actions, applied at once. Returns
    /// them with their outcome, for the driver to log.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<(DeskAction, Result<(), String>)> {
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
                (DeskButton::Emergency, true) => Some(DeskAction::Emergency),
                (DeskButton::AckEmergency, true) => Some(DeskAction::AckEmergency),
                (DeskButton::ReplayLast, true) => Some(DeskAction::ReplayLast { channel: None }),
                _ => None,
            };
            actions.extend(action);
        }
        actions
            .into_iter()
            .map(|action| {
                let result = self.apply(action.clone());
                (action, result)
            })
            .collect()
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
            DeskAction::Emergency => self.effects.push(DeskEffect::Emergency { channel: self.selected }),
            DeskAction::AckEmergency => self.effects.push(DeskEffect::AckEmergency),
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
            DeskAction::ReplayLast { channel } => {
                let channel = channel.unwrap_or(self.selected);
                self.check(channel)?;
                self.effects.push(DeskEffect::Replay { channel });
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
            let want = self.all_call || self.channel_ptt[channel] || (self.main_ptt && channel == self.selected);
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
            patches: self
                .patches
                .iter()
                .filter_map(|&(a, b)| Some([names.get(a)?.clone(), names.get(b)?.clone()]))
                .collect(),
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

    /// The next deadline: a button's debounce ends, or a blinking LED changes.
    pub fn poll_timeout(&self, now: Instant) -> Option<Instant> {
        let half = DENY_BLINK_PERIOD / 2;
        let blink = self.denied_until.iter().flatten().filter(|&&u| u > now).map(|&u| (now + half).min(u));
        self.buttons.values().filter_map(Debounce::poll_timeout).chain(blink).min()
    }
}

#[cfg(test)]
mod tests;

//! `[port.NAME]` with `kind = "desk"`: a dispatcher's desk box.
//!
//! Buttons and LEDs are maps from a role to a line; the role names say what they do:
//!
//! | key                      | what                                                         |
//! |--------------------------|--------------------------------------------------------------|
//! | `ptt` (port key)         | main PTT: talks on the selected channel                      |
//! | `buttons.foot`           | foot switch: the same as the main PTT                        |
//! | `buttons."ptt.<ch>"`     | PTT for one channel (talks there, whatever is selected)      |
//! | `buttons."select.<ch>"`  | makes `<ch>` the selected channel                            |
//! | `buttons."listen.<ch>"`  | toggles listening to (muting) `<ch>`                         |
//! | `buttons.all_call`       | PTT on every monitored channel at once                       |
//! | `buttons.emergency`      | raises an emergency on the selected channel (desk = caller)  |
//! | `buttons.ack_emergency`  | acknowledges the emergencies on the desk's channels          |
//! | `buttons.replay_last`    | plays the selected channel's last recording on the speaker   |
//! | `leds."rx.<ch>"`         | `<ch>` carries audio (a talk-spurt is in progress)           |
//! | `leds."tx.<ch>"`         | this desk holds `<ch>`'s floor                               |
//! | `leds."busy.<ch>"`       | someone else holds `<ch>`'s floor; blinks after a denied PTT |
//! | `leds."select.<ch>"`     | `<ch>` is the selected channel                               |
//! | `leds.rx`/`tx`/`busy`    | the same, for any channel                                    |
//!
//! Per-channel keys are quoted in TOML (`"ptt.ops" = { line = "..." }`): the dot is part of
//! the name.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use super::spans::Report;
use super::validate::check_channel;
use super::{AudioConfig, LineConfig};
use crate::core::floor::Priority;

/// A dispatch desk: PTT/select buttons, LEDs, speaker and microphone, many channels.
/// In the file: `[port.NAME]` with `kind = "desk"`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DeskPortConfig {
    pub channels: Vec<String>,
    /// Main PTT (handset, gooseneck button): talks on the selected channel.
    pub ptt: Option<LineConfig>,
    #[serde(default)]
    pub leds: BTreeMap<String, LineConfig>,
    #[serde(default)]
    pub buttons: BTreeMap<String, LineConfig>,
    #[serde(default)]
    pub audio: AudioConfig,
    /// Floor priority of the dispatcher (0-254, 255 counts as 254: 255 is an emergency caller's). Default 100: dispatch preempts field radios.
    #[serde(default = "default_desk_priority")]
    pub priority: u8,
    /// The channel the main PTT talks on at start (default: the first of `channels`).
    pub selected: Option<String>,
    /// An emergency channel: always heard (its mute is ignored) and never ducked.
    pub priority_channel: Option<String>,
    /// Per monitored channel: listen, volume, pan (`[port.NAME.monitor.CHANNEL]`).
    #[serde(default)]
    pub monitor: BTreeMap<String, MonitorConfig>,
    /// Button debounce, ms (0-200): an edge counts once the line has been stable this long.
    #[serde(default = "default_debounce_ms")]
    pub debounce_ms: u64,
    /// Gain of unselected channels while the selected one is heard, dB (-60..=0; 0 = off).
    #[serde(default = "default_duck_db")]
    pub duck_db: f32,
    /// Ceiling of the limiter on the mix, dBFS (-30..=0).
    #[serde(default = "default_limiter_dbfs")]
    pub limiter_dbfs: f32,
    /// Stereo split: the right side of the mix goes to this playback device, the left to
    /// `audio.playback`, and each channel's `pan` places it between them.
    pub playback_right: Option<String>,
}

/// How one monitored channel is heard.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MonitorConfig {
    #[serde(default = "yes")]
    pub listen: bool,
    /// -60..=+20 dB.
    #[serde(default)]
    pub volume_db: f32,
    /// -1 (left) ..= +1 (right). Used by a stereo output; mono outputs ignore it.
    #[serde(default)]
    pub pan: f32,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        Self { listen: true, volume_db: 0.0, pan: 0.0 }
    }
}

fn yes() -> bool {
    true
}

fn default_desk_priority() -> u8 {
    Priority::DISPATCH.0
}

fn default_debounce_ms() -> u64 {
    20
}

fn default_duck_db() -> f32 {
    -12.0
}

fn default_limiter_dbfs() -> f32 {
    -6.0
}

/// What a desk button does; channels are indices into the desk's `channels`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeskButton {
    /// The main PTT (`ptt`) or the foot switch: talks on the selected channel.
    Ptt,
    /// Talks on this channel.
    ChannelPtt(usize),
    Select(usize),
    /// Toggles listening.
    Listen(usize),
    /// Talks on every monitored channel.
    AllCall,
    /// Raises an emergency on the selected channel (the desk its caller).
    Emergency,
    /// Acknowledges the emergencies on the desk's channels (alert tone and banners off).
    AckEmergency,
    /// Plays the selected channel's last recorded transmission on the speaker (`[record]`).
    ReplayLast,
}

/// What a desk LED shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeskLedKind {
    Rx,
    Tx,
    Busy,
    Select,
}

/// An LED role: one channel's, or any channel's (`channel: None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeskLed {
    pub kind: DeskLedKind,
    pub channel: Option<usize>,
}

fn channel_part<'a>(name: &'a str, prefix: &str) -> Option<&'a str> {
    name.strip_prefix(prefix).and_then(|rest| rest.strip_prefix('.'))
}

impl DeskPortConfig {
    fn channel_index(&self, name: &str) -> Result<usize, String> {
        self.channels
            .iter()
            .position(|c| c == name)
            .ok_or_else(|| format!("`{name}` is not one of this desk's channels ({})", self.channels.join(", ")))
    }

    /// The role of `buttons.<name>`.
    pub fn button(&self, name: &str) -> Result<DeskButton, String> {
        match name {
            "foot" => return Ok(DeskButton::Ptt),
            "all_call" => return Ok(DeskButton::AllCall),
            "emergency" => return Ok(DeskButton::Emergency),
            "ack_emergency" => return Ok(DeskButton::AckEmergency),
            "replay_last" => return Ok(DeskButton::ReplayLast),
            _ => {}
        }
        type MakeButton = fn(usize) -> DeskButton;
        let per_channel: [(&str, MakeButton); 3] =
            [("ptt", DeskButton::ChannelPtt), ("select", DeskButton::Select), ("listen", DeskButton::Listen)];
        for (prefix, make) in per_channel {
            if let Some(channel) = channel_part(name, prefix) {
                return self.channel_index(channel).map(make);
            }
        }
        Err(format!(
            "unknown button `{name}`: use \"ptt.<channel>\", \"select.<channel>\", \"listen.<channel>\", foot, all_call, emergency, ack_emergency or replay_last"
        ))
    }

    /// The role of `leds.<name>`.
    pub fn led(&self, name: &str) -> Result<DeskLed, String> {
        let kinds = [
            ("rx", DeskLedKind::Rx),
            ("tx", DeskLedKind::Tx),
            ("busy", DeskLedKind::Busy),
            ("select", DeskLedKind::Select),
        ];
        for (prefix, kind) in kinds {
            if name == prefix && kind != DeskLedKind::Select {
                return Ok(DeskLed { kind, channel: None });
            }
            if let Some(channel) = channel_part(name, prefix) {
                return self.channel_index(channel).map(|c| DeskLed { kind, channel: Some(c) });
            }
        }
        Err(format!("unknown LED `{name}`: use rx, tx, busy, or \"rx.<channel>\", \"tx.<channel>\", \"busy.<channel>\", \"select.<channel>\""))
    }

    /// Index of the channel selected at start.
    pub fn selected_index(&self) -> usize {
        self.selected.as_deref().and_then(|s| self.channel_index(s).ok()).unwrap_or(0)
    }

    pub fn priority_channel_index(&self) -> Option<usize> {
        self.priority_channel.as_deref().and_then(|s| self.channel_index(s).ok())
    }

    /// How channel `i` is heard at start.
    pub fn monitor_of(&self, i: usize) -> MonitorConfig {
        self.channels.get(i).and_then(|c| self.monitor.get(c)).cloned().unwrap_or_default()
    }
}

pub(super) fn validate<'c>(
    path: &str,
    desk: &'c DeskPortConfig,
    channels: &Option<BTreeSet<String>>,
    lines: &mut Vec<(String, &'c LineConfig)>,
    r: &mut Report,
) {
    super::audio::validate(path, &desk.audio, r);
    let chans = format!("{path}.channels");
    if desk.channels.is_empty() {
        r.key(&chans, "a desk port needs at least one channel");
    }
    if desk.channels.len() > crate::pipeline::MAX_CHANNELS {
        r.key(
            &chans,
            format!("{} channels: a desk mixes at most {}", desk.channels.len(), crate::pipeline::MAX_CHANNELS),
        );
    }
    let mut seen = BTreeSet::new();
    for (i, chan) in desk.channels.iter().enumerate() {
        check_channel(&chans, Some(i), chan, channels, r);
        if !seen.insert(chan) {
            r.element(&chans, i, format!("channel `{chan}` is listed twice"));
        }
    }
    for (key, name) in [("selected", &desk.selected), ("priority_channel", &desk.priority_channel)] {
        if let Some(Err(e)) = name.as_deref().map(|n| desk.channel_index(n)) {
            r.key(&format!("{path}.{key}"), e);
        }
    }
    for (chan, m) in &desk.monitor {
        let key = format!("{path}.monitor.{chan}");
        if let Err(e) = desk.channel_index(chan) {
            r.key(&key, e);
        }
        if !(-60.0..=20.0).contains(&m.volume_db) {
            r.key(&format!("{key}.volume_db"), format!("{} dB is out of range -60..=20", m.volume_db));
        }
        if !(-1.0..=1.0).contains(&m.pan) {
            r.key(&format!("{key}.pan"), format!("{} is out of range -1 (left)..=1 (right)", m.pan));
        }
    }
    if let Some(right) = &desk.playback_right {
        use crate::audio::{DeviceSpec, Direction};
        let key = format!("{path}.playback_right");
        match DeviceSpec::parse(right) {
            Ok(spec) if !spec.supports(Direction::Playback) => {
                r.key(&key, format!("`{right}` cannot be used for playback"))
            }
            Ok(_) if desk.audio.playback.is_none() => {
                r.key(&key, "a stereo split needs `audio.playback` for the left side")
            }
            Ok(_) => {}
            Err(e) => r.key(&key, e.to_string()),
        }
    }
    if desk.debounce_ms > 200 {
        r.key(&format!("{path}.debounce_ms"), format!("{} ms is out of range 0..=200", desk.debounce_ms));
    }
    if !(-60.0..=0.0).contains(&desk.duck_db) {
        r.key(&format!("{path}.duck_db"), format!("{} dB is out of range -60..=0 (0 turns ducking off)", desk.duck_db));
    }
    if !(-30.0..=0.0).contains(&desk.limiter_dbfs) {
        r.key(&format!("{path}.limiter_dbfs"), format!("{} dBFS is out of range -30..=0", desk.limiter_dbfs));
    }
    for name in desk.buttons.keys() {
        if let Err(e) = desk.button(name) {
            r.key(&format!("{path}.buttons.{name}"), e);
        }
    }
    for name in desk.leds.keys() {
        if let Err(e) = desk.led(name) {
            r.key(&format!("{path}.leds.{name}"), e);
        }
    }
    lines.extend(desk.ptt.iter().map(|l| (format!("{path}.ptt"), l)));
    lines.extend(desk.leds.iter().map(|(n, l)| (format!("{path}.leds.{n}"), l)));
    lines.extend(desk.buttons.iter().map(|(n, l)| (format!("{path}.buttons.{n}"), l)));
}

#[cfg(test)]
mod tests {
    use crate::config::parse_str;

    fn errors(desk: &str) -> Vec<String> {
        let text = format!("device_id = \"d\"\n[channel.ops]\n[channel.fire]\n[port.desk]\nkind = \"desk\"\n{desk}");
        match parse_str(&text, "t.toml") {
            Ok(_) => Vec::new(),
            Err(e) => e.to_string().lines().map(|l| l.strip_prefix("t.toml:").unwrap_or(l).to_string()).collect(),
        }
    }

    #[test]
    fn button_and_led_names_say_what_they_do() {
        let ok = "channels = [\"ops\", \"fire\"]\nptt = { line = \"sim:p\" }\n\
                  [port.desk.buttons]\nfoot = { line = \"sim:f\" }\nall_call = { line = \"sim:a\" }\n\
                  \"ptt.fire\" = { line = \"sim:pf\" }\n\"select.ops\" = { line = \"sim:so\" }\n\"listen.ops\" = { line = \"sim:lo\" }\n\
                  [port.desk.leds]\nrx = { line = \"sim:r\" }\n\"tx.ops\" = { line = \"sim:t\" }\n\"busy.fire\" = { line = \"sim:b\" }\n\
                  \"select.fire\" = { line = \"sim:s\" }\n";
        assert_eq!(errors(ok), Vec::<String>::new());
        let bad = "channels = [\"ops\"]\n[port.desk.buttons]\n\"ptt.fire\" = { line = \"sim:a\" }\nsel = { line = \"sim:b\" }\n\
                   [port.desk.leds]\n\"rx.nope\" = { line = \"sim:c\" }\nblink = { line = \"sim:d\" }\n";
        let e = errors(bad);
        assert_eq!(e.len(), 4, "{e:?}");
        assert!(
            e[0].starts_with("8:14: port.desk.buttons.ptt.fire: `fire` is not one of this desk's channels (ops)"),
            "{e:?}"
        );
        assert!(e[1].starts_with("9:7: port.desk.buttons.sel: unknown button `sel`"), "{e:?}");
        assert!(e[2].starts_with("11:13: port.desk.leds.rx.nope: `nope` is not one"), "{e:?}");
        assert!(e[3].starts_with("12:9: port.desk.leds.blink: unknown LED"), "{e:?}");
    }

    #[test]
    fn a_stereo_split_needs_a_left_side_and_a_playback_device() {
        let e = errors("channels = [\"ops\"]\nplayback_right = \"sim:tone:100\"\n");
        assert!(
            e[0].starts_with("7:18: port.desk.playback_right: `sim:tone:100` cannot be used for playback"),
            "{e:?}"
        );
        let e = errors("channels = [\"ops\"]\nplayback_right = \"sim:null\"\n");
        assert!(e[0].contains("needs `audio.playback` for the left side"), "{e:?}");
        let ok = "channels = [\"ops\"]\nplayback_right = \"sim:null\"\naudio = { playback = \"sim:null\" }\n";
        assert_eq!(errors(ok), Vec::<String>::new());
    }

    #[test]
    fn mix_settings_are_checked() {
        let bad =
            "channels = [\"ops\", \"ops\"]\nselected = \"fire\"\ndebounce_ms = 900\nduck_db = 3\nlimiter_dbfs = -40\n\
                   [port.desk.monitor.ops]\nvolume_db = 30\npan = -2\n[port.desk.monitor.fire]\n";
        let keys: Vec<_> = errors(bad).iter().map(|e| e.split(' ').take(2).collect::<Vec<_>>().join(" ")).collect();
        assert_eq!(
            keys,
            [
                "6:20: port.desk.channels:",
                "7:12: port.desk.selected:",
                "8:15: port.desk.debounce_ms:",
                "9:11: port.desk.duck_db:",
                "10:16: port.desk.limiter_dbfs:",
                "12:13: port.desk.monitor.ops.volume_db:",
                "13:7: port.desk.monitor.ops.pan:",
                "14:1: port.desk.monitor.fire:",
            ],
            "{bad}"
        );
    }
}

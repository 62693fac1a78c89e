//! `[port.NAME]` with `kind = "desk"`: a dispatcher's desk box.

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
    pub ptt: Option<LineConfig>,
    #[serde(default)]
    pub leds: BTreeMap<String, LineConfig>,
    #[serde(default)]
    pub buttons: BTreeMap<String, LineConfig>,
    #[serde(default)]
    pub audio: AudioConfig,
    /// Floor priority of the dispatcher (0-255). Default 100: dispatch preempts field radios.
    #[serde(default = "default_desk_priority")]
    pub priority: u8,
}

fn default_desk_priority() -> u8 {
    Priority::DISPATCH.0
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
    for (i, chan) in desk.channels.iter().enumerate() {
        check_channel(&chans, Some(i), chan, channels, r);
    }
    lines.extend(desk.ptt.iter().map(|l| (format!("{path}.ptt"), l)));
    lines.extend(desk.leds.iter().map(|(n, l)| (format!("{path}.leds.{n}"), l)));
    lines.extend(desk.buttons.iter().map(|(n, l)| (format!("{path}.buttons.{n}"), l)));
}

//! `[port.NAME.audio]`: the devices a port's audio uses.

use serde::Deserialize;

use super::spans::Report;

/// ALSA PCM names (`plughw:CARD=Device,DEV=0`) or simulated devices (`sim:tone:1000`,
/// `sim:wav:/path/in.wav`, `sim:null`, `sim:wav-out:/path/out.wav`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AudioConfig {
    pub capture: Option<String>,
    pub playback: Option<String>,
}

/// Audio device names parse, and each is used in a direction it supports.
pub(super) fn validate(path: &str, audio: &AudioConfig, r: &mut Report) {
    use crate::audio::{DeviceSpec, Direction};
    for (field, name, dir) in [("capture", &audio.capture, Direction::Capture), ("playback", &audio.playback, Direction::Playback)] {
        let Some(name) = name else { continue };
        let key = format!("{path}.audio.{field}");
        match DeviceSpec::parse(name) {
            Ok(spec) if !spec.supports(dir) => r.key(&key, format!("`{name}` cannot be used for {dir}")),
            Ok(_) => {}
            Err(e) => r.key(&key, e.to_string()),
        }
    }
}

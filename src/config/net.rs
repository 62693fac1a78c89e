//! `[hub]` and `[uplink]`: where this box's channels live.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use serde::Deserialize;

use super::spans::Report;
use super::validate::{check_channel, check_url};
use super::Config;

/// The embedded hub: hosts channels, serves signaling and the web console.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HubConfig {
    /// HTTP/WebSocket listen address, e.g. "127.0.0.1:8080".
    pub listen: String,
    /// UDP port for all WebRTC media (one socket for every peer). Default: the same port
    /// number as `listen`.
    #[serde(default)]
    pub media_port: Option<u16>,
    /// Access tokens. Each names the channels it may join (`["*"]` for all).
    #[serde(default)]
    pub token: BTreeMap<String, TokenConfig>,
    /// Authenticated sessions (consoles and edges) at once, 1-4096; a join beyond gets
    /// `unavailable`.
    #[serde(default = "default_max_sessions")]
    pub max_sessions: usize,
}

/// Upper bound of `[hub] max_sessions`: each session holds a socket, a task and its queues.
pub const MAX_HUB_SESSIONS: usize = 4096;

fn default_max_sessions() -> usize {
    crate::net::DEFAULT_MAX_SESSIONS
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// File holding the secret token (never inline in the config).
    pub secret_file: String,
    pub channels: Vec<String>,
    /// Highest floor priority a holder of this token may claim (e.g. 0 for field laptops,
    /// 100 for dispatch). None: whatever the peer asks.
    #[serde(default)]
    pub max_priority: Option<u8>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum UplinkKind {
    /// Another roipd hub.
    Hub,
    /// A Janus VideoRoom SFU.
    Janus,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UplinkConfig {
    pub kind: UplinkKind,
    /// `kind = "hub"`: the hub's `ws(s)://` or `http(s)://` address; `kind = "janus"`: Janus's
    /// WebSocket API, `ws://host:8188`.
    pub url: String,
    /// `kind = "hub"`: the file holding this box's access token.
    pub token_file: Option<String>,
    /// `kind = "janus"`: the file holding Janus's `api_secret`, if it has one.
    pub api_secret_file: Option<String>,
    /// `kind = "janus"`: the file holding the VideoRoom `admin_key`, if creating rooms needs it.
    pub admin_key_file: Option<String>,
    /// `kind = "janus"`: device id of the roipd box that hosts the floor arbiters of this
    /// box's channels, reached over `[mqtt]`. Absent: this box is that floor host.
    pub floor_hub: Option<String>,
}

/// `[channel.NAME.janus]`: the channel's VideoRoom on the Janus uplink.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ChannelJanusConfig {
    /// VideoRoom id (1 or more), one room per channel.
    pub room: u64,
    /// On the floor host: create the room when it does not exist (it is not saved in Janus's
    /// config, so it is created again after a Janus restart). An edge never creates rooms: it
    /// waits until the floor host has.
    #[serde(default = "default_create")]
    pub create: bool,
    /// File holding the room's PIN (needed to join).
    pub pin_file: Option<String>,
    /// File holding the room's secret (needed to `moderate`; the floor host must have it).
    pub secret_file: Option<String>,
    /// Publishers at once (1-1000): every box on the channel publishes. Default 16.
    #[serde(default = "default_publishers")]
    pub publishers: u32,
}

fn default_create() -> bool {
    true
}

pub(crate) const DEFAULT_PUBLISHERS: u32 = 16;

fn default_publishers() -> u32 {
    DEFAULT_PUBLISHERS
}

/// The hub's listen address and token channels; the uplink's URL and what its kind needs.
pub(super) fn validate(config: &Config, channels: &Option<BTreeSet<String>>, r: &mut Report) {
    if let Some(hub) = &config.hub {
        if hub.listen.parse::<SocketAddr>().is_err() {
            r.key(
                "hub.listen",
                format!(
                    "`{}` is not an IP address with a port, e.g. \"127.0.0.1:8080\" or \"0.0.0.0:8080\"",
                    hub.listen
                ),
            );
        }
        if !(1..=MAX_HUB_SESSIONS).contains(&hub.max_sessions) {
            r.key("hub.max_sessions", format!("must be 1-{MAX_HUB_SESSIONS}, not {}", hub.max_sessions));
        }
        for (name, token) in &hub.token {
            let path = format!("hub.token.{name}.channels");
            for (i, chan) in token.channels.iter().enumerate() {
                if chan != "*" {
                    check_channel(&path, Some(i), chan, channels, r);
                }
            }
        }
    }
    if let Some(uplink) = &config.uplink {
        if uplink.kind == UplinkKind::Hub && config.hub.is_some() {
            r.key("uplink.kind", "a box either hosts its channels (`[hub]`) or joins another roipd hub (`[uplink] kind = \"hub\"`), not both");
        }
        if uplink.kind == UplinkKind::Hub && uplink.token_file.is_none() {
            r.key(
                "uplink.token_file",
                "an uplink to a roipd hub needs `token_file`, the file holding its access token",
            );
        }
        let schemes: &[&str] = match uplink.kind {
            UplinkKind::Hub => &["ws", "wss", "http", "https"],
            UplinkKind::Janus => &["ws", "wss"],
        };
        check_url("uplink.url", &uplink.url, schemes, r);
        if uplink.kind == UplinkKind::Janus {
            janus(config, uplink, r);
        } else {
            for (key, value) in [
                ("api_secret_file", &uplink.api_secret_file),
                ("admin_key_file", &uplink.admin_key_file),
                ("floor_hub", &uplink.floor_hub),
            ] {
                if value.is_some() {
                    r.key(&format!("uplink.{key}"), "only used with `kind = \"janus\"`");
                }
            }
        }
    }
    let janus_uplink = config.uplink.as_ref().is_some_and(|u| u.kind == UplinkKind::Janus);
    if !janus_uplink {
        for (name, _) in config.channel.iter().filter(|(_, c)| c.janus.is_some()) {
            r.key(&format!("channel.{name}.janus"), "a VideoRoom is only used with `[uplink] kind = \"janus\"`");
        }
    }
}

/// A Janus uplink: floor over MQTT, one distinct room per channel.
fn janus(config: &Config, uplink: &UplinkConfig, r: &mut Report) {
    if config.mqtt.is_none() {
        r.key("uplink.kind", "a Janus uplink needs `[mqtt]`: floor control travels over MQTT");
    }
    if uplink.token_file.is_some() {
        r.key("uplink.token_file", "only used with `kind = \"hub\"` (Janus takes `api_secret_file`)");
    }
    if let Some(hub) = &uplink.floor_hub {
        if !super::validate::valid_device_id(hub) {
            r.key("uplink.floor_hub", format!("`{hub}` is not a valid device id"));
        } else if *hub == config.device_id {
            r.key("uplink.floor_hub", "names this box: leave `floor_hub` out to host the floor here");
        }
        if config.hub.is_some() {
            r.key("uplink.floor_hub", "a box with `[hub]` hosts its channels' floor; leave `floor_hub` out");
        }
    }
    let mut rooms: BTreeMap<u64, &str> = BTreeMap::new();
    for (name, channel) in &config.channel {
        let path = format!("channel.{name}.janus");
        let Some(j) = &channel.janus else {
            if !r.has_error(&path) && r.index.get(&path).is_none() {
                r.key(&format!("channel.{name}"), format!("a Janus uplink needs `[{path}]` with the channel's `room`"));
            }
            continue;
        };
        if j.room == 0 {
            r.key(&format!("{path}.room"), "room ids start at 1");
        } else if let Some(first) = rooms.insert(j.room, name) {
            rooms.insert(j.room, first);
            r.key(&format!("{path}.room"), format!("room {} is already channel `{first}`'s", j.room));
        }
        if !(1..=1000).contains(&j.publishers) {
            r.key(&format!("{path}.publishers"), format!("{} is out of range 1-1000", j.publishers));
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::parse_str;

    const BASE: &str = "device_id = \"edge-a\"\n[channel.ops]\n[channel.fire]\n";

    /// `line:key` of every error.
    fn errors(extra: &str) -> Vec<String> {
        match parse_str(&format!("{BASE}{extra}"), "t.toml") {
            Ok(_) => Vec::new(),
            Err(e) => e.0.iter().map(|e| format!("{}:{}", e.line, e.key)).collect(),
        }
    }

    const JANUS: &str = "[uplink]\nkind = \"janus\"\nurl = \"ws://127.0.0.2:8188\"\n";
    const MQTT: &str = "[mqtt]\nurl = \"mqtt://127.0.0.1\"\nfleet_key_file = \"/k\"\n";
    const ROOMS: &str = "[channel.ops.janus]\nroom = 1\n[channel.fire.janus]\nroom = 2\n";

    #[test]
    fn janus_edge_and_floor_host_are_valid() {
        assert_eq!(
            errors(&format!("{JANUS}floor_hub = \"hub-1\"\napi_secret_file = \"/s\"\n{MQTT}{ROOMS}")),
            Vec::<String>::new()
        );
        // The floor host: no floor_hub, may also serve consoles with `[hub]`.
        assert_eq!(errors(&format!("{JANUS}{MQTT}{ROOMS}[hub]\nlisten = \"127.0.0.1:8080\"\n")), Vec::<String>::new());
    }

    #[test]
    fn hub_max_sessions_is_bounded() {
        let hub = |n: &str| errors(&format!("[hub]\nlisten = \"127.0.0.1:8080\"\n{n}"));
        assert_eq!(hub(""), Vec::<String>::new(), "default 256");
        assert_eq!(hub("max_sessions = 4096\n"), Vec::<String>::new());
        assert_eq!(hub("max_sessions = 0\n").len(), 1);
        assert_eq!(hub("max_sessions = 4097\n").len(), 1);
    }

    #[test]
    fn janus_needs_mqtt_and_a_room_per_channel() {
        let text = format!("{JANUS}floor_hub = \"hub-1\"\n[channel.ops.janus]\nroom = 1\n");
        // The missing room is reported at the channel, the missing broker at the uplink.
        assert_eq!(errors(&text), ["3:channel.fire", "5:uplink.kind"]);
    }

    #[test]
    fn janus_keys_and_rooms_are_checked() {
        let text = format!(
            "{JANUS}floor_hub = \"edge-a\"\ntoken_file = \"/t\"\n{MQTT}\
             [channel.ops.janus]\nroom = 7\npublishers = 0\n[channel.fire.janus]\nroom = 7\n[hub]\nlisten = \"127.0.0.1:1\"\n"
        );
        assert_eq!(
            errors(&text),
            [
                "7:uplink.floor_hub",
                "7:uplink.floor_hub",
                "8:uplink.token_file",
                "13:channel.ops.janus.room",
                "14:channel.ops.janus.publishers"
            ]
        );
        let zero = format!(
            "{JANUS}floor_hub = \"Hub 1\"\n{MQTT}[channel.ops.janus]\nroom = 0\n[channel.fire.janus]\nroom = 1\n"
        );
        assert_eq!(errors(&zero), ["7:uplink.floor_hub", "12:channel.ops.janus.room"]);
    }

    #[test]
    fn janus_settings_without_a_janus_uplink_are_errors() {
        let text = "[uplink]\nkind = \"hub\"\nurl = \"ws://h\"\ntoken_file = \"/t\"\nfloor_hub = \"h\"\n[channel.ops.janus]\nroom = 1\n";
        assert_eq!(errors(text), ["8:uplink.floor_hub", "9:channel.ops.janus"]);
        assert_eq!(errors("[channel.fire.janus]\nroom = 1\n"), ["4:channel.fire.janus"]);
    }
}

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
    pub url: String,
    pub token_file: Option<String>,
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
            r.key("uplink.token_file", "an uplink to a roipd hub needs `token_file`, the file holding its access token");
        }
        let schemes: &[&str] = match uplink.kind {
            UplinkKind::Hub => &["ws", "wss", "http", "https"],
            UplinkKind::Janus => &["ws", "wss"],
        };
        check_url("uplink.url", &uplink.url, schemes, r);
    }
}

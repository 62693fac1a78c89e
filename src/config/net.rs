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
    /// HTTPS and WSS instead of HTTP and WS. Default: on when `tls_cert_file` is given. On
    /// without certificate files: a self-signed certificate made on first start and kept in
    /// `state_dir`.
    #[serde(default)]
    pub tls: Option<bool>,
    /// PEM certificate chain (leaf first) for HTTPS/WSS; goes with `tls_key_file`.
    #[serde(default)]
    pub tls_cert_file: Option<String>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `tls_cert_file`.
    #[serde(default)]
    pub tls_key_file: Option<String>,
    /// Where the self-signed certificate is kept. Default: `$STATE_DIRECTORY` (systemd's
    /// `StateDirectory=`), else /var/lib/roipd.
    #[serde(default)]
    pub state_dir: Option<String>,
    /// With TLS: a plain-HTTP listener (e.g. "0.0.0.0:80") that answers every request with a
    /// redirect to the HTTPS address.
    #[serde(default)]
    pub redirect_listen: Option<String>,
    /// Addresses a NAT in front of the hub forwards to it (port forwarding), announced as ICE
    /// candidates beside the interface ones (host candidates: the hub is ICE-lite): `"203.0.113.7"` (the same port
    /// numbers as the media port and `ice_tcp_listen`) or `"203.0.113.7:40000"` (UDP only,
    /// forwarded to the media port).
    #[serde(default)]
    pub public_addresses: Vec<String>,
    /// ICE-TCP: a TCP address (e.g. "0.0.0.0:8444") where the hub takes RFC 6544 passive TCP
    /// candidates' connections (RFC 4571 framing), for clients whose UDP is blocked.
    #[serde(default)]
    pub ice_tcp_listen: Option<String>,
    /// STUN/TURN servers given to consoles in `welcome`.
    #[serde(default)]
    pub ice_servers: Vec<IceServerConfig>,
}

/// One STUN or TURN server for consoles (`[[hub.ice_servers]]`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IceServerConfig {
    /// `stun:host:port`, `turn:host:port?transport=udp|tcp`, `turns:host:port`.
    pub urls: Vec<String>,
    /// TURN REST shared secret (coturn `static-auth-secret`): a file holding it. Each console
    /// gets a username `<expiry>:<token name>` and password base64(HMAC-SHA1(secret, username)).
    #[serde(default)]
    pub secret_file: Option<String>,
    /// Lifetime of those credentials, 60-604800 s (default 86400).
    #[serde(default = "default_turn_ttl")]
    pub ttl_s: u64,
}

fn default_turn_ttl() -> u64 {
    86_400
}

/// A `public_addresses` entry: the address and whether its port was given (UDP only then).
pub fn parse_public_address(s: &str) -> Option<(std::net::IpAddr, Option<u16>)> {
    if let Ok(ip) = s.parse::<std::net::IpAddr>() {
        return Some((ip, None));
    }
    s.parse::<SocketAddr>().ok().filter(|a| a.port() != 0).map(|a| (a.ip(), Some(a.port())))
}

impl HubConfig {
    /// Whether the hub serves HTTPS/WSS.
    pub fn tls_on(&self) -> bool {
        self.tls.unwrap_or(self.tls_cert_file.is_some())
    }

    /// The state directory (`state_dir`, `$STATE_DIRECTORY`, /var/lib/roipd).
    pub fn state_dir(&self) -> std::path::PathBuf {
        if let Some(d) = &self.state_dir {
            return d.into();
        }
        match std::env::var_os("STATE_DIRECTORY") {
            // systemd may list several, separated by ':'; ours is the first.
            Some(v) if !v.is_empty() => v.to_string_lossy().split(':').next().unwrap_or("/var/lib/roipd").into(),
            _ => "/var/lib/roipd".into(),
        }
    }

    /// Where the hub's certificate comes from; None without TLS.
    pub fn cert_source(&self) -> Option<crate::net::tls::CertSource> {
        if !self.tls_on() {
            return None;
        }
        Some(match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(cert), Some(key)) => crate::net::tls::CertSource::Files { cert: cert.into(), key: key.into() },
            _ => crate::net::tls::CertSource::SelfSigned {
                dir: self.state_dir(),
                names: self_signed_names(&self.listen),
            },
        })
    }
}

/// Names in a self-signed certificate: localhost, this host's name, and the listen address
/// when it is not a wildcard. Clients pin the fingerprint anyway; the names only make the
/// certificate readable.
fn self_signed_names(listen: &str) -> Vec<String> {
    let mut names = vec!["localhost".to_string()];
    if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let h = h.trim();
        if !h.is_empty() && h != "localhost" && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.') {
            names.push(h.to_string());
        }
    }
    if let Ok(addr) = listen.parse::<SocketAddr>() {
        if !addr.ip().is_unspecified() {
            names.push(addr.ip().to_string());
        }
    }
    names
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
    /// `kind = "hub"` over `wss://`: PEM file of the CA the hub's certificate must chain to
    /// (default: the system bundle).
    #[serde(default)]
    pub ca_file: Option<String>,
    /// `kind = "hub"` over `wss://`: the hub certificate's SHA-256 fingerprint ("AB:CD:…", as
    /// the hub logs it and `roipd check` shows it); instead of `ca_file`, for a self-signed hub.
    #[serde(default)]
    pub fingerprint: Option<String>,
    /// `kind = "janus"`: the file holding Janus's `api_secret`, if it has one.
    pub api_secret_file: Option<String>,
    /// `kind = "janus"`: the file holding the VideoRoom `admin_key`, if creating rooms needs it.
    pub admin_key_file: Option<String>,
    /// `kind = "janus"`: device id of the roipd box that hosts the floor arbiters of this
    /// box's channels, reached over `[mqtt]`. Absent: this box is that floor host.
    pub floor_hub: Option<String>,
}

impl UplinkConfig {
    /// How to trust a `wss://`/`https://` hub: the pinned fingerprint, else `ca_file`, else the
    /// system bundle. None for a plain URL, another kind, or an unparsable pin (a config error).
    pub fn hub_trust(&self) -> Option<crate::net::tls::HubTrust> {
        use crate::net::tls::{parse_fingerprint, HubTrust, SYSTEM_CA_BUNDLE};
        let url = self.url.trim_start();
        if self.kind != UplinkKind::Hub || !(url.starts_with("wss://") || url.starts_with("https://")) {
            return None;
        }
        match (&self.fingerprint, &self.ca_file) {
            (Some(fp), _) => parse_fingerprint(fp).ok().map(HubTrust::Pin),
            (None, Some(ca)) => Some(HubTrust::Ca(ca.into())),
            (None, None) => Some(HubTrust::Ca(SYSTEM_CA_BUNDLE.into())),
        }
    }
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
        match (&hub.tls_cert_file, &hub.tls_key_file) {
            (Some(_), None) => r.key("hub.tls_cert_file", "goes with `tls_key_file`, the certificate's private key"),
            (None, Some(_)) => r.key("hub.tls_key_file", "goes with `tls_cert_file`, the certificate it belongs to"),
            _ => {}
        }
        if hub.tls == Some(false) && hub.tls_cert_file.is_some() {
            r.key("hub.tls", "is false, yet `tls_cert_file` is set: remove one of them");
        }
        if let Some(redirect) = &hub.redirect_listen {
            if !hub.tls_on() {
                r.key("hub.redirect_listen", "redirects to HTTPS: needs `tls = true` or `tls_cert_file`");
            } else if redirect.parse::<SocketAddr>().is_err() {
                r.key(
                    "hub.redirect_listen",
                    format!("`{redirect}` is not an IP address with a port, e.g. \"0.0.0.0:80\""),
                );
            } else if *redirect == hub.listen {
                r.key("hub.redirect_listen", "is the same address as `listen`");
            }
        }
        for (i, a) in hub.public_addresses.iter().enumerate() {
            match parse_public_address(a) {
                Some((ip, _)) if ip.is_unspecified() || ip.is_multicast() => {
                    r.element("hub.public_addresses", i, format!("`{a}` cannot be announced to clients"))
                }
                Some(_) => {}
                None => r.element(
                    "hub.public_addresses",
                    i,
                    format!("`{a}` is not an IP address, with or without a port, e.g. \"203.0.113.7\" or \"203.0.113.7:40000\""),
                ),
            }
        }
        if let Some(tcp) = &hub.ice_tcp_listen {
            match (tcp.parse::<SocketAddr>(), hub.listen.parse::<SocketAddr>()) {
                (Err(_), _) => r.key(
                    "hub.ice_tcp_listen",
                    format!("`{tcp}` is not an IP address with a port, e.g. \"0.0.0.0:8444\""),
                ),
                (Ok(t), Ok(l)) if t.port() == l.port() && t.port() != 0 => {
                    r.key("hub.ice_tcp_listen", "uses the same TCP port as `listen`: pick another port")
                }
                _ => {}
            }
        }
        for (i, s) in hub.ice_servers.iter().enumerate() {
            let mut err =
                |k: &str, m: String| r.element_key("hub.ice_servers", i, &format!("hub.ice_servers[{i}].{k}"), m);
            if s.urls.is_empty() {
                err("urls", "needs at least one `stun:`, `turn:` or `turns:` URL".into());
            }
            for u in &s.urls {
                let scheme = u.split(':').next().unwrap_or("");
                if !["stun", "stuns", "turn", "turns"].contains(&scheme) || u.len() <= scheme.len() + 1 || u.len() > 256
                {
                    err("urls", format!("`{u}` is not a stun:, stuns:, turn: or turns: URL"));
                }
            }
            let turn = s.urls.iter().any(|u| u.starts_with("turn"));
            if turn && s.secret_file.is_none() {
                err("secret_file", "a TURN server needs the shared secret (coturn `static-auth-secret`)".into());
            }
            if !(60..=604_800).contains(&s.ttl_s) {
                err("ttl_s", format!("must be 60-604800, not {}", s.ttl_s));
            }
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
        let tls_url = uplink.url.trim_start().starts_with("wss://") || uplink.url.trim_start().starts_with("https://");
        for (key, value) in [("ca_file", uplink.ca_file.is_some()), ("fingerprint", uplink.fingerprint.is_some())] {
            if value && uplink.kind != UplinkKind::Hub {
                r.key(&format!("uplink.{key}"), "only used with `kind = \"hub\"`");
            } else if value && !tls_url {
                r.key(&format!("uplink.{key}"), "only used with a `wss://` or `https://` url");
            }
        }
        if uplink.ca_file.is_some() && uplink.fingerprint.is_some() {
            r.key("uplink.fingerprint", "either `ca_file` or `fingerprint`, not both");
        }
        if let Some(fp) = &uplink.fingerprint {
            if let Err(e) = crate::net::tls::parse_fingerprint(fp) {
                r.key("uplink.fingerprint", e);
            }
        }
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

//! A typed builder for the daemon configs integration tests run: radios, desks, hub, uplink
//! and MQTT pieces, written out as TOML that `roipd::config` accepts.
//!
//! Lines are sim lines and paths may use `{lines}` and `{dir}`, which [`super::Daemon`]
//! replaces with the daemon's own directories:
//!
//! ```ignore
//! let config = Config::new("edge")
//!     .channel("ops")
//!     .add(Radio::sim("radio-a", "ops", "a").capture("sim:tone:1000:-12").keying("tx_delay_ms", 0))
//!     .add(Uplink::hub(port))
//!     .add(Mqtt::new(broker_port).metrics_interval_s(1));
//! let d = Daemon::start_with(&config.toml(), &[], &[("token", "secret\n")]);
//! ```

use std::fmt::{Display, Write};

/// A whole config file.
#[derive(Debug, Clone)]
pub struct Config {
    device_id: String,
    status_led: Option<String>,
    /// Channels, ports and sections, each a table of its own (their order does not matter).
    parts: Vec<String>,
}

/// A port or a section of the config: [`Radio`], [`Desk`], [`Hub`], [`Uplink`], [`Mqtt`].
pub trait Part {
    fn toml(&self) -> String;
}

impl Config {
    /// A config with sim GPIO (`{lines}`) and nothing else yet.
    pub fn new(device_id: &str) -> Self {
        Self { device_id: device_id.into(), status_led: None, parts: vec![] }
    }

    pub fn status_led(mut self, line: &str) -> Self {
        self.status_led = Some(line.into());
        self
    }

    /// `[channel.NAME]` with its defaults.
    pub fn channel(self, name: &str) -> Self {
        self.channel_with(name, &[])
    }

    /// `[channel.NAME]` with settings (`("floor", "\"mqtt\"")`: values are TOML).
    pub fn channel_with(mut self, name: &str, settings: &[(&str, &str)]) -> Self {
        let mut s = format!("[channel.{name}]\n");
        for (k, v) in settings {
            writeln!(s, "{k} = {v}").unwrap();
        }
        self.parts.push(s);
        self
    }

    /// A port or a section.
    pub fn add(mut self, part: impl Part) -> Self {
        self.parts.push(part.toml());
        self
    }

    /// The TOML text. Panics with the checker's errors if `roipd` would refuse it: a test that
    /// means to start a daemon must not fail later for a typo here.
    pub fn toml(&self) -> String {
        let mut s = format!("device_id = \"{}\"\n\n[gpio.sim]\ndir = \"{{lines}}\"\n", self.device_id);
        if let Some(led) = &self.status_led {
            write!(s, "\n[gpio]\nstatus_led = {{ line = \"{led}\" }}\n").unwrap();
        }
        for part in &self.parts {
            write!(s, "\n{part}").unwrap();
        }
        let concrete = s.replace("{lines}", "/tmp/lines").replace("{dir}", "/tmp/dir");
        if let Err(e) = roipd::config::parse_str(&concrete, "builder.toml") {
            panic!("the test config builder wrote a config roipd refuses:\n{e}\n---\n{s}");
        }
        s
    }
}

/// `key = value` pairs as a TOML inline table.
fn inline(pairs: &[(String, String)]) -> String {
    let body: Vec<String> = pairs.iter().map(|(k, v)| format!("{k} = {v}")).collect();
    format!("{{ {} }}", body.join(", "))
}

fn quoted(s: &str) -> String {
    format!("\"{s}\"")
}

/// The `audio` table of a radio or a desk.
pub trait Audio: Sized {
    /// An `audio` setting (value in TOML).
    fn audio(self, key: &str, value: impl Display) -> Self;

    /// `audio.capture`: e.g. `sim:tone:1000:-12`.
    fn capture(self, device: &str) -> Self {
        self.audio("capture", quoted(device))
    }

    /// `audio.playback`: e.g. `sim:wav-out:{dir}/b-tx.wav`.
    fn playback(self, device: &str) -> Self {
        self.audio("playback", quoted(device))
    }
}

/// `[port.NAME] kind = "radio"`.
#[derive(Debug, Clone)]
pub struct Radio {
    name: String,
    channel: String,
    cor: Option<String>,
    ptt: Vec<(String, String)>,
    audio: Vec<(String, String)>,
    keying: Vec<(String, String)>,
    settings: Vec<(String, String)>,
}

impl Radio {
    /// A radio on `channel` with no lines yet.
    pub fn new(name: &str, channel: &str) -> Self {
        Self {
            name: name.into(),
            channel: channel.into(),
            cor: None,
            ptt: vec![],
            audio: vec![],
            keying: vec![],
            settings: vec![],
        }
    }

    /// The usual test radio: COR on `sim:<x>-cor`, PTT on `sim:<x>-ptt`.
    pub fn sim(name: &str, channel: &str, x: &str) -> Self {
        Self::new(name, channel).cor(&format!("sim:{x}-cor")).ptt(&format!("sim:{x}-ptt"))
    }

    pub fn cor(mut self, line: &str) -> Self {
        self.cor = Some(line.into());
        self
    }

    pub fn ptt(mut self, line: &str) -> Self {
        self.ptt = vec![("line".into(), quoted(line))];
        self
    }

    /// The hardware TX-inhibit switch.
    pub fn inhibit(self, line: &str) -> Self {
        self.set("inhibit", format!("{{ line = \"{line}\" }}"))
    }

    /// The PTT line is keyed low.
    pub fn ptt_active_low(mut self) -> Self {
        self.ptt.push(("active_low".into(), "true".into()));
        self
    }

    /// A `keying` setting in milliseconds or a count: `keying("tx_delay_ms", 0)`.
    pub fn keying(mut self, key: &str, value: impl Display) -> Self {
        self.keying.push((key.into(), value.to_string()));
        self
    }

    pub fn priority(self, priority: u32) -> Self {
        self.set("priority", priority)
    }

    pub fn duplex(self) -> Self {
        self.set("duplex", true)
    }

    /// Any other port setting (value in TOML).
    pub fn set(mut self, key: &str, value: impl Display) -> Self {
        self.settings.push((key.into(), value.to_string()));
        self
    }
}

impl Audio for Radio {
    fn audio(mut self, key: &str, value: impl Display) -> Self {
        self.audio.push((key.into(), value.to_string()));
        self
    }
}

impl Part for Radio {
    fn toml(&self) -> String {
        let mut s = format!("[port.{}]\nkind = \"radio\"\nchannel = \"{}\"\n", self.name, self.channel);
        for (k, v) in &self.settings {
            writeln!(s, "{k} = {v}").unwrap();
        }
        if let Some(cor) = &self.cor {
            writeln!(s, "cor = {{ line = \"{cor}\" }}").unwrap();
        }
        for (key, pairs) in [("ptt", &self.ptt), ("audio", &self.audio), ("keying", &self.keying)] {
            if !pairs.is_empty() {
                writeln!(s, "{key} = {}", inline(pairs)).unwrap();
            }
        }
        s
    }
}

/// `[port.NAME] kind = "desk"`.
#[derive(Debug, Clone)]
pub struct Desk {
    name: String,
    channels: Vec<String>,
    ptt: Option<String>,
    audio: Vec<(String, String)>,
    leds: Vec<(String, String)>,
    buttons: Vec<(String, String)>,
    /// Per channel: how it is heard at start.
    monitor: Vec<(String, Vec<(String, String)>)>,
    settings: Vec<(String, String)>,
}

impl Desk {
    pub fn new(name: &str, channels: &[&str]) -> Self {
        Self {
            name: name.into(),
            channels: channels.iter().map(|c| c.to_string()).collect(),
            ptt: None,
            audio: vec![],
            leds: vec![],
            buttons: vec![],
            monitor: vec![],
            settings: vec![],
        }
    }

    pub fn ptt(mut self, line: &str) -> Self {
        self.ptt = Some(line.into());
        self
    }

    /// An LED role (`"tx.ops"`, `"rx"`) on a line.
    pub fn led(mut self, role: &str, line: &str) -> Self {
        self.leds.push((quoted(role), format!("{{ line = \"{line}\" }}")));
        self
    }

    /// A button role (`"select.fire"`, `"foot"`) on a line.
    pub fn button(mut self, role: &str, line: &str) -> Self {
        self.buttons.push((quoted(role), format!("{{ line = \"{line}\" }}")));
        self
    }

    /// How `channel` is heard at start: `monitor("c3", "volume_db", -6)`, `("pan", -1)`.
    pub fn monitor(mut self, channel: &str, key: &str, value: impl Display) -> Self {
        let pair = (key.to_string(), value.to_string());
        match self.monitor.iter_mut().find(|(c, _)| c == channel) {
            Some((_, pairs)) => pairs.push(pair),
            None => self.monitor.push((channel.into(), vec![pair])),
        }
        self
    }

    /// Any other port setting (value in TOML).
    pub fn set(mut self, key: &str, value: impl Display) -> Self {
        self.settings.push((key.into(), value.to_string()));
        self
    }
}

impl Audio for Desk {
    fn audio(mut self, key: &str, value: impl Display) -> Self {
        self.audio.push((key.into(), value.to_string()));
        self
    }
}

impl Part for Desk {
    fn toml(&self) -> String {
        let channels: Vec<String> = self.channels.iter().map(|c| quoted(c)).collect();
        let mut s = format!("[port.{}]\nkind = \"desk\"\nchannels = [{}]\n", self.name, channels.join(", "));
        for (k, v) in &self.settings {
            writeln!(s, "{k} = {v}").unwrap();
        }
        if let Some(ptt) = &self.ptt {
            writeln!(s, "ptt = {{ line = \"{ptt}\" }}").unwrap();
        }
        let monitor: Vec<(String, String)> = self.monitor.iter().map(|(c, pairs)| (quoted(c), inline(pairs))).collect();
        for (key, pairs) in
            [("audio", &self.audio), ("leds", &self.leds), ("buttons", &self.buttons), ("monitor", &monitor)]
        {
            if !pairs.is_empty() {
                writeln!(s, "{key} = {}", inline(pairs)).unwrap();
            }
        }
        s
    }
}

/// `[hub]` listening on 127.0.0.1:`port`, with access tokens.
#[derive(Debug, Clone)]
pub struct Hub {
    port: u16,
    tokens: Vec<(String, String, Vec<String>)>,
    settings: Vec<(String, String)>,
}

impl Hub {
    pub fn new(port: u16) -> Self {
        Self { port, tokens: vec![], settings: vec![] }
    }

    /// `[hub.token.NAME]`: its secret in `{dir}/<file>`, for `channels` (`"*"`: all).
    pub fn token(mut self, name: &str, file: &str, channels: &[&str]) -> Self {
        self.tokens.push((name.into(), file.into(), channels.iter().map(|c| c.to_string()).collect()));
        self
    }

    /// Any other `[hub]` setting (value in TOML).
    pub fn set(mut self, key: &str, value: impl Display) -> Self {
        self.settings.push((key.into(), value.to_string()));
        self
    }
}

impl Part for Hub {
    fn toml(&self) -> String {
        let mut s = format!("[hub]\nlisten = \"127.0.0.1:{}\"\n", self.port);
        for (k, v) in &self.settings {
            writeln!(s, "{k} = {v}").unwrap();
        }
        for (name, file, channels) in &self.tokens {
            let channels: Vec<String> = channels.iter().map(|c| quoted(c)).collect();
            write!(s, "[hub.token.{name}]\nsecret_file = \"{{dir}}/{file}\"\nchannels = [{}]\n", channels.join(", "))
                .unwrap();
        }
        s
    }
}

/// `[uplink]`: a roipd hub or a Janus VideoRoom.
#[derive(Debug, Clone)]
pub struct Uplink {
    settings: Vec<(String, String)>,
}

impl Uplink {
    /// A roipd hub on 127.0.0.1:`port`, its token in `{dir}/token`.
    pub fn hub(port: u16) -> Self {
        let url = format!("ws://127.0.0.1:{port}/ws");
        Self { settings: vec![] }
            .set("kind", quoted("hub"))
            .set("url", quoted(&url))
            .set("token_file", quoted("{dir}/token"))
    }

    /// A roipd hub serving TLS on 127.0.0.1:`port` (`wss://`), trusted by its certificate's
    /// pinned SHA-256 `fingerprint`; its token in `{dir}/token`.
    pub fn hub_tls(port: u16, fingerprint: &str) -> Self {
        let url = format!("wss://127.0.0.1:{port}/ws");
        Self { settings: vec![] }
            .set("kind", quoted("hub"))
            .set("url", quoted(&url))
            .set("token_file", quoted("{dir}/token"))
            .set("fingerprint", quoted(fingerprint))
    }

    /// Janus at `url`, its admin key in `{dir}/<admin_key_file>`.
    pub fn janus(url: &str, admin_key_file: &str) -> Self {
        let key = format!("{{dir}}/{admin_key_file}");
        Self { settings: vec![] }
            .set("kind", quoted("janus"))
            .set("url", quoted(url))
            .set("admin_key_file", quoted(&key))
    }

    /// Any other `[uplink]` setting (value in TOML).
    pub fn set(mut self, key: &str, value: impl Display) -> Self {
        self.settings.push((key.into(), value.to_string()));
        self
    }
}

impl Part for Uplink {
    fn toml(&self) -> String {
        let mut s = String::from("[uplink]\n");
        for (k, v) in &self.settings {
            writeln!(s, "{k} = {v}").unwrap();
        }
        s
    }
}

/// The fleet key every test box gets by default (`{dir}/fleet.key`, written mode 0600 by
/// [`super::Daemon`]); tests sign the commands that act with [`sign`].
pub const FLEET_KEY: &str = "7465737420666c656574206b65793a206e6f7420666f722070726f64756374696f6e21";
/// Its file name in the daemon's directory.
pub const FLEET_KEY_FILE: &str = "fleet.key";

/// A file holding [`FLEET_KEY`] (mode 0600), one for the whole test process: for floor hosts and
/// edges a test starts in-process, with the key the test's daemons have.
pub fn fleet_key_file() -> String {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    let dir = DIR.get_or_init(|| {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FLEET_KEY_FILE);
        std::fs::write(&path, format!("{FLEET_KEY}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        dir
    });
    dir.path().join(FLEET_KEY_FILE).display().to_string()
}

/// `json` as a signed command for `topic` (`roipd/<device>/cmd/<name>`) with [`FLEET_KEY`], fresh
/// (now) and with a nonce of its own, as `roipd sign-command` makes it.
pub fn sign(topic: &str, json: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let nonce = format!("t{}-{}-{}", std::process::id(), now, COUNT.fetch_add(1, Ordering::Relaxed));
    let key = roipd::fleet::auth::FleetKey::new(FLEET_KEY.as_bytes()).unwrap();
    roipd::fleet::auth::sign_command(&key, topic, now, &nonce, json)
}

/// `[mqtt]`: a broker and how to talk to it. Signed by default: `fleet_key_file` is
/// `{dir}/fleet.key` ([`FLEET_KEY`]), as every real box has; [`Mqtt::insecure_unsigned`] is
/// the lab opt-out, for a test that means to exercise the unsigned path.
#[derive(Debug, Clone)]
pub struct Mqtt {
    url: String,
    auth: MqttAuth,
    settings: Vec<(String, String)>,
}

/// How a test box authenticates fleet commands and floor messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MqttAuth {
    /// `fleet_key_file` = [`FLEET_KEY`] (the default).
    FleetKey,
    /// Neither a key nor the opt-out.
    None,
    /// `insecure_unsigned = true`.
    InsecureUnsigned,
}

impl Mqtt {
    /// A plain broker on 127.0.0.1:`port`.
    pub fn new(port: u16) -> Self {
        Self::url(&format!("mqtt://127.0.0.1:{port}"))
    }

    pub fn url(url: &str) -> Self {
        Self { url: url.into(), auth: MqttAuth::FleetKey, settings: vec![] }
    }

    /// No fleet key and `insecure_unsigned = true`: commands and floor messages run unsigned,
    /// from anyone (the old behaviour, now a loudly named opt-out).
    pub fn insecure_unsigned(mut self) -> Self {
        self.auth = MqttAuth::InsecureUnsigned;
        self
    }

    /// No fleet key and no opt-out: what a box with `[mqtt]` and nothing else has.
    pub fn without_key(mut self) -> Self {
        self.auth = MqttAuth::None;
        self
    }

    pub fn metrics_interval_s(self, s: u64) -> Self {
        self.set("metrics_interval_s", s)
    }

    pub fn keepalive_s(self, s: u64) -> Self {
        self.set("keepalive_s", s)
    }

    /// Any other `[mqtt]` setting (value in TOML).
    pub fn set(mut self, key: &str, value: impl Display) -> Self {
        self.settings.push((key.into(), value.to_string()));
        self
    }
}

impl Part for Mqtt {
    fn toml(&self) -> String {
        let mut s = format!("[mqtt]\nurl = \"{}\"\n", self.url);
        match self.auth {
            MqttAuth::FleetKey => writeln!(s, "fleet_key_file = \"{{dir}}/{FLEET_KEY_FILE}\"").unwrap(),
            MqttAuth::None => {}
            MqttAuth::InsecureUnsigned => s.push_str("insecure_unsigned = true\n"),
        }
        for (k, v) in &self.settings {
            writeln!(s, "{k} = {v}").unwrap();
        }
        s
    }
}

/// `[record]`: recordings in `dir` (a path; `{dir}` is the daemon's directory).
#[derive(Debug, Clone)]
pub struct Record {
    dir: String,
    settings: Vec<(String, String)>,
}

impl Record {
    pub fn new(dir: &str) -> Self {
        Self { dir: dir.into(), settings: vec![] }
    }

    /// Any other `[record]` setting (value in TOML).
    pub fn set(mut self, key: &str, value: impl Display) -> Self {
        self.settings.push((key.into(), value.to_string()));
        self
    }
}

impl Part for Record {
    fn toml(&self) -> String {
        let mut s = format!("[record]\ndir = \"{}\"\n", self.dir);
        for (k, v) in &self.settings {
            writeln!(s, "{k} = {v}").unwrap();
        }
        s
    }
}

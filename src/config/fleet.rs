//! `[mqtt]`: the fleet broker.

use serde::Deserialize;

use super::spans::Report;
use super::Config;

/// Home Assistant's own default discovery prefix.
pub const DEFAULT_DISCOVERY_PREFIX: &str = "homeassistant";

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// `mqtt://host:1883` or `mqtts://host:8883`.
    pub url: String,
    pub username: Option<String>,
    pub password_file: Option<String>,
    pub ca_file: Option<String>,
    pub client_cert_file: Option<String>,
    pub client_key_file: Option<String>,
    /// The per-fleet key (at least 32 bytes, e.g. `openssl rand -hex 32`; mode 0600 or
    /// stricter): every floor message and every command that acts is signed with it
    /// (docs/mqtt.md, "Authentication"). Every box of a fleet has the same.
    #[serde(default)]
    pub fleet_key_file: Option<String>,
    /// Labs only: run without a fleet key as before it existed, so that floor messages and
    /// commands that key a radio are accepted unsigned from whoever can publish to the broker.
    /// Without it a box with no fleet key refuses those commands, and a Janus fleet (floor over
    /// MQTT) does not start (docs/mqtt.md, "Authentication").
    #[serde(default)]
    pub insecure_unsigned: bool,
    /// Periodic metrics interval in seconds (1-3600).
    #[serde(default = "default_metrics_interval")]
    pub metrics_interval_s: u64,
    /// MQTT keepalive in seconds (5-3600): a box that dies without closing its connection
    /// (power cut, frozen) is declared offline by the broker (last will) after 1.5 times this.
    #[serde(default = "default_keepalive")]
    pub keepalive_s: u64,
    /// Publish Home Assistant MQTT discovery, so the box shows up as a device. Default: on when
    /// `home_assistant_prefix` is set, off otherwise.
    #[serde(default)]
    pub home_assistant: Option<bool>,
    /// Home Assistant's discovery prefix (default `homeassistant`).
    #[serde(default)]
    pub home_assistant_prefix: Option<String>,
}

fn default_metrics_interval() -> u64 {
    30
}

fn default_keepalive() -> u64 {
    30
}

impl MqttConfig {
    /// A config for `url` with every other setting at its default.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            username: None,
            password_file: None,
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            fleet_key_file: None,
            insecure_unsigned: false,
            metrics_interval_s: default_metrics_interval(),
            keepalive_s: default_keepalive(),
            home_assistant: None,
            home_assistant_prefix: None,
        }
    }

    /// Where Home Assistant discovery goes, if it is enabled.
    pub fn discovery_prefix(&self) -> Option<&str> {
        let prefix = self.home_assistant_prefix.as_deref();
        match self.home_assistant.unwrap_or(prefix.is_some()) {
            true => Some(prefix.unwrap_or(DEFAULT_DISCOVERY_PREFIX)),
            false => None,
        }
    }
}

pub(super) fn validate(config: &Config, r: &mut Report) {
    if let Some(mqtt) = &config.mqtt {
        // The fleet client's own rules (URL, TLS files only with mqtts://): what it would refuse
        // at start-up is refused here.
        if let Err(e) = crate::fleet::client::check_settings(mqtt) {
            let (key, message) = e.config_key();
            r.key(&key, message);
        }
        fleet_key(config, mqtt, r);
        if !(1..=3600).contains(&mqtt.metrics_interval_s) {
            r.key("mqtt.metrics_interval_s", format!("{} s is out of range 1-3600 s", mqtt.metrics_interval_s));
        }
        if !(5..=3600).contains(&mqtt.keepalive_s) {
            r.key("mqtt.keepalive_s", format!("{} s is out of range 5-3600 s", mqtt.keepalive_s));
        }
        if let Some(prefix) = &mqtt.home_assistant_prefix {
            if let Err(why) = check_topic_prefix(prefix) {
                r.key("mqtt.home_assistant_prefix", format!("`{prefix}` {why}"));
            } else if mqtt.home_assistant == Some(false) {
                r.key("mqtt.home_assistant_prefix", "is set but `home_assistant = false`: remove one of them");
            }
        }
    }
}

/// How to make a fleet key, for the messages that ask for one.
pub const MAKE_FLEET_KEY: &str =
    "make one with `openssl rand -hex 32 > /etc/roipd/fleet.key && chmod 600 /etc/roipd/fleet.key`, copy the same \
     file to every box of the fleet and set `fleet_key_file = \"/etc/roipd/fleet.key\"`";

/// A box whose floor travels over MQTT (a Janus uplink: floor host or edge) needs the fleet key,
/// unless the lab opt-out says otherwise; both together contradict each other.
fn fleet_key(config: &Config, mqtt: &MqttConfig, r: &mut Report) {
    let floor_over_mqtt = config.uplink.as_ref().is_some_and(|u| u.kind == super::UplinkKind::Janus);
    match (&mqtt.fleet_key_file, mqtt.insecure_unsigned) {
        (Some(_), true) => r.key(
            "mqtt.insecure_unsigned",
            "is set together with `fleet_key_file`: the box signs and checks with the key; remove `insecure_unsigned`",
        ),
        (None, false) if floor_over_mqtt => r.key(
            "mqtt",
            format!(
                "a Janus fleet (floor over MQTT) needs `fleet_key_file`: without it whoever can publish to the broker \
                 can key this box's radios and take the floor; {MAKE_FLEET_KEY} (or, in a lab only, \
                 `insecure_unsigned = true`)"
            ),
        ),
        _ => {}
    }
}

/// A topic prefix we publish under: no wildcards, no empty levels, no control characters.
fn check_topic_prefix(prefix: &str) -> Result<(), &'static str> {
    if prefix.is_empty() || prefix.len() > 128 {
        return Err("must be 1-128 bytes");
    }
    if prefix.contains(['+', '#']) {
        return Err("must not contain MQTT wildcards (`+`, `#`)");
    }
    if prefix.split('/').any(str::is_empty) {
        return Err("must not start or end with `/` or contain `//`");
    }
    if prefix.chars().any(char::is_control) {
        return Err("must not contain control characters");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_prefix_follows_the_switch_and_the_prefix() {
        let mut m = MqttConfig::new("mqtt://b");
        assert_eq!(m.discovery_prefix(), None);
        m.home_assistant = Some(true);
        assert_eq!(m.discovery_prefix(), Some("homeassistant"));
        m.home_assistant_prefix = Some("ha/site1".into());
        assert_eq!(m.discovery_prefix(), Some("ha/site1"));
        m.home_assistant = None;
        assert_eq!(m.discovery_prefix(), Some("ha/site1"), "a prefix alone turns it on");
        m.home_assistant = Some(false);
        assert_eq!(m.discovery_prefix(), None);
    }

    #[test]
    fn topic_prefixes() {
        for good in ["homeassistant", "ha/site-1", "a b"] {
            assert!(check_topic_prefix(good).is_ok(), "{good}");
        }
        for bad in ["", "ha/#", "+/x", "/ha", "ha/", "a//b", "a\u{0}b"] {
            assert!(check_topic_prefix(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn config_errors_name_the_key_and_line() {
        let text = "device_id = \"gw\"\n[channel.ops]\n[mqtt]\nurl = \"mqtt://b\"\nkeepalive_s = 2\n\
                    home_assistant = false\nhome_assistant_prefix = \"ha/#\"\n";
        let errors = crate::config::parse_str(text, "gw.toml").unwrap_err().to_string();
        assert!(errors.contains("gw.toml:5:") && errors.contains("mqtt.keepalive_s"), "{errors}");
        assert!(errors.contains("gw.toml:7:") && errors.contains("mqtt.home_assistant_prefix"), "{errors}");
        let text = "device_id = \"gw\"\n[channel.ops]\n[mqtt]\nurl = \"mqtt://b\"\nhome_assistant = true\n";
        let config = crate::config::parse_str(text, "gw.toml").unwrap();
        assert_eq!(config.mqtt.unwrap().discovery_prefix(), Some("homeassistant"));
    }

    #[test]
    fn a_janus_fleet_needs_a_fleet_key_or_the_lab_opt_out() {
        let fleet = |mqtt: &str| {
            format!(
                "device_id = \"edge-a\"\n[channel.ops]\n[channel.ops.janus]\nroom = 7\n[uplink]\nkind = \"janus\"\n\
                 url = \"ws://j:8188\"\nfloor_hub = \"hub-1\"\n[mqtt]\nurl = \"mqtts://b\"\n{mqtt}"
            )
        };
        let errors = crate::config::parse_str(&fleet(""), "e.toml").unwrap_err().to_string();
        assert!(
            errors.starts_with("e.toml:9:1: mqtt: a Janus fleet (floor over MQTT) needs `fleet_key_file`"),
            "{errors}"
        );
        assert!(errors.contains("openssl rand -hex 32") && errors.contains("chmod 600"), "{errors}");
        assert!(errors.contains("insecure_unsigned = true"), "{errors}");
        crate::config::parse_str(&fleet("fleet_key_file = \"/k\"\n"), "e.toml").unwrap();
        let lab = crate::config::parse_str(&fleet("insecure_unsigned = true\n"), "e.toml").unwrap();
        assert!(lab.mqtt.unwrap().insecure_unsigned);
        let both = fleet("fleet_key_file = \"/k\"\ninsecure_unsigned = true\n");
        let errors = crate::config::parse_str(&both, "e.toml").unwrap_err().to_string();
        assert!(errors.starts_with("e.toml:12:21: mqtt.insecure_unsigned: is set together with"), "{errors}");
        // A box that only reports to a broker (no floor over MQTT) is valid without either.
        crate::config::parse_str("device_id = \"gw\"\n[channel.ops]\n[mqtt]\nurl = \"mqtts://b\"\n", "g.toml").unwrap();
    }
}

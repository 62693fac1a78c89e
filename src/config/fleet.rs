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
}

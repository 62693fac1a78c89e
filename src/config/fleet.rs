//! `[mqtt]`: the fleet broker.

use serde::Deserialize;

use super::spans::Report;
use super::validate::check_url;
use super::Config;

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
    /// Periodic metrics interval in seconds (1-3600).
    #[serde(default = "default_metrics_interval")]
    pub metrics_interval_s: u64,
}

fn default_metrics_interval() -> u64 {
    30
}

pub(super) fn validate(config: &Config, r: &mut Report) {
    if let Some(mqtt) = &config.mqtt {
        check_url("mqtt.url", &mqtt.url, &["mqtt", "mqtts"], r);
        if !(1..=3600).contains(&mqtt.metrics_interval_s) {
            r.key("mqtt.metrics_interval_s", format!("{} s is out of range 1-3600 s", mqtt.metrics_interval_s));
        }
    }
}

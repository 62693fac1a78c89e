//! Home Assistant MQTT discovery, sans-IO: the retained `config` messages that make a box show
//! up in Home Assistant as one device with per-port entities and system sensors. They only
//! point at roipd's own topics (state, metrics, status, cmd); nothing new is published.
//!
//! Entities per port: RX, TX, locked-out and inhibited as binary sensors, the channel as a
//! sensor, and a TX-inhibit switch (it sends the `tx_inhibit` command). Per box: CPU,
//! memory, SoC temperature and uptime sensors, and an identify button. Availability follows the
//! status topic's `online` field, so the last will marks every entity unavailable.

use serde_json::{json, Value};

use super::protocol::Topics;

/// One discovery message: retained `payload` on `topic`.
#[derive(Debug, Clone, PartialEq)]
pub struct Discovery {
    pub topic: String,
    pub payload: Value,
}

pub struct Hass<'a> {
    /// Usually `homeassistant`.
    pub prefix: &'a str,
    pub device: &'a str,
    pub version: &'a str,
    pub topics: &'a Topics,
}

impl Hass<'_> {
    fn node(&self) -> String {
        // Discovery ids allow `[a-zA-Z0-9_-]`; device ids are already in that set.
        format!("roipd_{}", self.device)
    }

    fn base(&self, name: &str, object: &str) -> Value {
        json!({
            "name": name,
            "unique_id": format!("{}_{object}", self.node()),
            "object_id": format!("{}_{object}", self.node()),
            "availability": [{
                "topic": self.topics.status(),
                "value_template": "{{ 'online' if value_json.online else 'offline' }}",
            }],
            "device": {
                "identifiers": [self.node()],
                "name": format!("roipd {}", self.device),
                "manufacturer": "roipd",
                "model": "radio-over-IP gateway",
                "sw_version": self.version,
            },
        })
    }

    fn entity(&self, component: &str, object: &str, name: &str, extra: Value) -> Discovery {
        let mut payload = self.base(name, object);
        if let (Some(p), Value::Object(extra)) = (payload.as_object_mut(), extra) {
            p.extend(extra);
        }
        Discovery { topic: format!("{}/{component}/{}/{object}/config", self.prefix, self.node()), payload }
    }

    /// The box-level entities. The temperature sensor only where the board has a thermal zone.
    pub fn device_entities(&self, has_temperature: bool) -> Vec<Discovery> {
        let metrics = self.topics.metrics();
        let sensor = |object: &str, name: &str, field: &str, unit: &str, class: Option<&str>| {
            let mut extra = json!({
                "state_topic": metrics,
                // Keep the last value when a sample lacks the field (the first has no CPU figure).
                "value_template": format!("{{{{ value_json.{field} if value_json.{field} is defined else this.state }}}}"),
                "unit_of_measurement": unit,
                "state_class": "measurement",
                "entity_category": "diagnostic",
            });
            if let Some(class) = class {
                extra["device_class"] = json!(class);
            }
            self.entity("sensor", object, name, extra)
        };
        let mut all = vec![
            sensor("cpu", "CPU", "cpu_pct", "%", None),
            sensor("memory", "Memory", "mem_rss_mb", "MiB", None),
            sensor("uptime", "Uptime", "uptime_s", "s", Some("duration")),
            self.entity(
                "button",
                "identify",
                "Identify",
                json!({"command_topic": format!("{}/cmd/identify", self.base_topic()),
                       "payload_press": json!({"seconds": 30}).to_string()}),
            ),
        ];
        if has_temperature {
            all.push(sensor("soc_temp", "SoC temperature", "soc_temp_c", "°C", Some("temperature")));
        }
        all
    }

    /// The entities of one port (`port` must be a valid name, see `protocol::valid_name`).
    pub fn port_entities(&self, port: &str) -> Vec<Discovery> {
        let state = self.topics.state(port);
        let object = |what: &str| format!("{}_{what}", sanitize(port));
        let flag = |what: &str, name: &str, field: &str, class: Option<&str>| {
            let mut extra = json!({
                "state_topic": state,
                "value_template": format!("{{{{ 'ON' if value_json.{field} else 'OFF' }}}}"),
            });
            if let Some(class) = class {
                extra["device_class"] = json!(class);
            }
            self.entity("binary_sensor", &object(what), &format!("{port} {name}"), extra)
        };
        let inhibit = |on: bool| json!({"port": port, "on": on}).to_string();
        vec![
            flag("rx", "RX", "rx_active", Some("sound")),
            flag("tx", "TX", "tx_keyed", None),
            flag("locked_out", "locked out", "locked_out", Some("problem")),
            self.entity(
                "sensor",
                &object("channel"),
                &format!("{port} channel"),
                json!({"state_topic": state, "value_template": "{{ value_json.channel }}"}),
            ),
            self.entity(
                "switch",
                &object("tx_inhibit"),
                &format!("{port} TX inhibit"),
                json!({
                    "state_topic": state,
                    "value_template": "{{ 'ON' if value_json.inhibited else 'OFF' }}",
                    "command_topic": format!("{}/cmd/tx_inhibit", self.base_topic()),
                    "payload_on": inhibit(true),
                    "payload_off": inhibit(false),
                    "state_on": "ON",
                    "state_off": "OFF",
                }),
            ),
        ]
    }

    fn base_topic(&self) -> String {
        format!("roipd/{}", self.device)
    }
}

/// Port names may hold `.` or other characters discovery ids do not allow.
fn sanitize(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hass(topics: &Topics) -> Hass<'_> {
        Hass { prefix: "homeassistant", device: "gw1", version: "0.1.0", topics }
    }

    #[test]
    fn port_entities_point_at_the_state_topic_and_commands() {
        let topics = Topics::new("gw1");
        let all = hass(&topics).port_entities("radio.1");
        let topics_: Vec<&str> = all.iter().map(|d| d.topic.as_str()).collect();
        assert_eq!(
            topics_,
            [
                "homeassistant/binary_sensor/roipd_gw1/radio_1_rx/config",
                "homeassistant/binary_sensor/roipd_gw1/radio_1_tx/config",
                "homeassistant/binary_sensor/roipd_gw1/radio_1_locked_out/config",
                "homeassistant/sensor/roipd_gw1/radio_1_channel/config",
                "homeassistant/switch/roipd_gw1/radio_1_tx_inhibit/config",
            ]
        );
        let rx = &all[0].payload;
        assert_eq!(rx["state_topic"], "roipd/gw1/state/radio.1");
        assert_eq!(rx["unique_id"], "roipd_gw1_radio_1_rx");
        assert_eq!(rx["availability"][0]["topic"], "roipd/gw1/status");
        assert_eq!(rx["device"]["identifiers"][0], "roipd_gw1");
        let switch = &all[4].payload;
        assert_eq!(switch["command_topic"], "roipd/gw1/cmd/tx_inhibit");
        // What the switch sends is a valid command.
        for payload in [&switch["payload_on"], &switch["payload_off"]] {
            let p = payload.as_str().unwrap();
            assert!(crate::fleet::protocol::parse_request("tx_inhibit", p.as_bytes(), false).is_ok(), "{p}");
        }
    }

    #[test]
    fn device_entities() {
        let topics = Topics::new("gw1");
        assert_eq!(hass(&topics).device_entities(false).len(), 4);
        let all = hass(&topics).device_entities(true);
        assert_eq!(all.len(), 5);
        assert!(all.iter().all(|d| d.topic.starts_with("homeassistant/") && d.topic.ends_with("/config")));
        let temp = all.iter().find(|d| d.topic.contains("soc_temp")).unwrap();
        assert_eq!(temp.payload["state_topic"], "roipd/gw1/metrics");
        assert_eq!(
            temp.payload["value_template"],
            "{{ value_json.soc_temp_c if value_json.soc_temp_c is defined else this.state }}"
        );
        let button = all.iter().find(|d| d.topic.contains("/button/")).unwrap();
        let press = button.payload["payload_press"].as_str().unwrap();
        assert!(crate::fleet::protocol::parse_request("identify", press.as_bytes(), false).is_ok());
    }
}

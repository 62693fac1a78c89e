//! Fleet management over MQTT: status, per-port state, events and metrics out; validated
//! commands in, each answered exactly once. `docs/mqtt.md` documents every topic and payload.
//!
//! Split like the rest of roipd:
//! - [`protocol`], [`outbox`] and [`backoff`] are sans-IO: topics, JSON documents, command
//!   parsing and validation, the bounded outbound queue, reconnect delays. No MQTT client, no
//!   clock reads (time comes in), fully unit-tested.
//! - [`client`] is the thin I/O driver around rumqttc (MQTT 5, rustls), and [`sysinfo`] reads
//!   CPU, memory and temperature for the metrics.
//! - [`hass`] builds optional Home Assistant discovery messages (pure).
//!
//! Starting it from the daemon:
//! ```no_run
//! # async fn example(config: roipd::config::Config) -> Result<(), roipd::fleet::FleetError> {
//! use roipd::fleet::{Fleet, FleetOptions, PortState};
//! let mqtt = config.mqtt.clone().expect("[mqtt] configured");
//! let mut fleet = Fleet::start(FleetOptions::new(&config.device_id, mqtt))?;
//! fleet.handle.set_port_state("radio1", PortState { channel: "ops".into(), ..Default::default() });
//! while let Some((command, replier)) = fleet.commands.recv().await {
//!     // act on `command`, then:
//!     replier.reply(Ok(serde_json::json!({})));
//! }
//! fleet.driver.shutdown(std::time::Duration::from_secs(2)).await;
//! # Ok(()) }
//! ```

pub mod acl;
pub mod auth;
pub mod backoff;
pub mod client;
pub mod hass;
pub mod outbox;
pub mod protocol;
pub mod sysinfo;

pub use client::{
    CommandReceiver, Fleet, FleetDriver, FleetError, FleetHandle, FleetOptions, MetricsProvider, Replier,
};
pub use outbox::Limits;
pub use protocol::{
    config_hash, redact, Command, CommandError, DaemonMetrics, EmergencyState, EmergencyTarget, ErrorCode, Event,
    EventKind, FloorHostStatus, PortState, PttAction, Status, StreamMetrics, UplinkState,
};

#[cfg(test)]
mod tests {
    /// The pure parts stay pure: no MQTT client, runtime, clock or I/O outside test code.
    #[test]
    fn sans_io_modules_do_no_io() {
        const FORBIDDEN: &[&str] = &[
            "rumqttc",
            "tokio",
            "rustls",
            "Instant::now",
            "SystemTime",
            "std::fs",
            "std::net",
            "std::thread",
            "std::process",
            "std::env",
        ];
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/fleet");
        for file in ["protocol.rs", "outbox.rs", "backoff.rs", "hass.rs", "auth.rs", "acl.rs"] {
            let text = std::fs::read_to_string(dir.join(file)).unwrap();
            let production = text.split("#[cfg(test)]").next().unwrap();
            for (n, line) in production.lines().enumerate() {
                let code = line.split("//").next().unwrap();
                for word in FORBIDDEN {
                    assert!(!code.contains(word), "{file}:{}: `{word}` in a sans-IO module: {}", n + 1, line.trim());
                }
            }
        }
    }
}

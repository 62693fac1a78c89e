//! Fixtures for tests/fleet_mqtt.rs: a real Mosquitto, a probe client, and the fleet agent
//! that runs in a child process.
pub mod agent;
pub mod broker;
pub mod probe;

//! Floor control across a fleet over MQTT (`[uplink] kind = "janus"`): media goes through
//! Janus, the floor of each channel is decided by one roipd box, the *floor host*, and the
//! other boxes, the *edges*, reach its arbiters over MQTT (`docs/mqtt.md`, "Floor over MQTT").
//!
//! - [`protocol`]: topics and payloads (pure);
//! - [`edge`]: an edge's client ([`start_edge`]): joins the host, turns its answers into
//!   [`crate::net::UplinkEvent`]s for the edge's router, like the roipd-hub uplink does;
//! - [`host`]: the host ([`start_host`]): every edge is a hub peer of the host's channel router
//!   (so the same arbiters decide), and decisions are enforced in Janus with `moderate`.
//!
//! Each side has its own MQTT connection (client id `<device>-floor`, QoS 1) with a last will
//! on its presence topic, rebuilt for every connection attempt so the will names the
//! connection it belongs to.

pub mod edge;
pub mod host;
pub mod protocol;

pub use edge::{start_edge, FloorEdgeHandle, FloorEdgeOptions};
pub use host::{start_host, FloorHostOptions};

use std::sync::Arc;
use std::time::Duration;

use rumqttc::v5::mqttbytes::v5::{LastWill, Packet};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event as MqttEvent, MqttOptions};
use rumqttc::{NetworkOptions, Outgoing, TlsConfiguration, Transport};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::config::MqttConfig;
use crate::fleet::client::{credentials, parse_broker_url, tls_config};

/// A dead peer is noticed (and its last will sent) within ~1.5x this: the floor of an edge that
/// vanished is freed that soon, and an edge notices a vanished host as fast.
const KEEPALIVE: Duration = Duration::from_secs(5);
/// rumqttc's request queue. Floor traffic is a few messages per talk-spurt; a full queue means
/// the broker stopped reading, which is handled as a lost connection.
const REQUEST_QUEUE: usize = 1024;
const MAX_INCOMING_PACKET: u32 = 64 * 1024;
/// Reconnect delays (exponential with jitter, [`crate::fleet::backoff::Backoff`]).
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long a clean stop waits for the offline presence to be written.
const GOODBYE: Duration = Duration::from_secs(1);

/// The MQTT client id of a box's floor connection (its fleet connection is `roipd-<device>`).
pub fn client_id(device: &str) -> String {
    format!("{device}-floor")
}

/// Broker address, credentials and TLS exactly as the fleet client reads them from `[mqtt]`.
fn mqtt_options(mqtt: &MqttConfig, device: &str, will: LastWill) -> Result<MqttOptions, String> {
    let broker = parse_broker_url(&mqtt.url).map_err(|e| format!("mqtt.url: {e}"))?;
    let mut options = MqttOptions::new(client_id(device), broker.host.clone(), broker.port);
    options
        .set_keep_alive(KEEPALIVE)
        .set_clean_start(true)
        .set_max_packet_size(Some(MAX_INCOMING_PACKET))
        .set_request_channel_capacity(REQUEST_QUEUE)
        .set_last_will(will);
    let mut network = NetworkOptions::new();
    network.set_tcp_nodelay(true);
    network.set_connection_timeout(5);
    options.set_network_options(network);
    if let Some((user, password)) = credentials(mqtt).map_err(|e| e.to_string())? {
        options.set_credentials(user, password);
    }
    if broker.tls {
        let tls = tls_config(mqtt).map_err(|e| e.to_string())?;
        options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(Arc::new(tls))));
    } else if mqtt.ca_file.is_some() || mqtt.client_cert_file.is_some() {
        return Err("mqtt: ca_file/client_cert_file are set but the url is mqtt:// (no TLS); use mqtts://".into());
    }
    Ok(options)
}

/// A floor message that failed authentication was dropped: counted, logged and reported as
/// an `auth_failed` event, at most once per [`crate::fleet::client::AUTH_REPORT_EVERY`].
fn report_rejected(
    counter: &mut crate::fleet::auth::RejectCounter,
    report: Option<&crate::fleet::FleetHandle>,
    topic: &str,
    error: &protocol::AuthError,
) {
    debug!(%topic, %error, "floor: message failed authentication; dropped");
    let Some(n) = counter.reject(std::time::Instant::now(), crate::fleet::client::AUTH_REPORT_EVERY) else { return };
    // Debug formatting escapes whatever control characters a stranger put in a topic.
    warn!(topic = ?topic, %error, dropped = n, total = counter.total, "floor: dropped messages that failed authentication");
    if let Some(fleet) = report {
        let detail = format!("{topic:?}: {error} ({n} dropped since the last report, {} in all)", counter.total);
        fleet.publish_event(
            crate::fleet::Event::new(crate::fleet::EventKind::AuthFailed).reason("floor").detail(detail),
        );
    }
}

/// A fresh random token for sessions and epochs.
fn random_token() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// What one MQTT connection attempt reports.
#[derive(Debug)]
enum Net {
    Connected,
    Message {
        topic: String,
        payload: Vec<u8>,
    },
    /// The attempt is over (connect failed, connection lost, or our DISCONNECT went out).
    Lost(String),
}

/// One connection attempt: rumqttc's event loop polled on a task of its own (so nothing else
/// ever cancels a poll), its events forwarded; ends at the first error.
struct Link {
    client: AsyncClient,
    events: mpsc::Receiver<Net>,
    poller: tokio::task::JoinHandle<()>,
}

impl Link {
    fn connect(options: MqttOptions) -> Link {
        let (client, mut eventloop) = AsyncClient::new(options, REQUEST_QUEUE);
        let (tx, events) = mpsc::channel(256);
        let poller = tokio::spawn(async move {
            loop {
                let net = match eventloop.poll().await {
                    Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => Net::Connected,
                    Ok(MqttEvent::Incoming(Packet::Publish(p))) => Net::Message {
                        topic: String::from_utf8_lossy(&p.topic).into_owned(),
                        payload: p.payload.to_vec(),
                    },
                    Ok(MqttEvent::Incoming(Packet::SubAck(ack))) => {
                        if ack
                            .return_codes
                            .iter()
                            .any(|c| !matches!(c, rumqttc::v5::mqttbytes::v5::SubscribeReasonCode::Success(_)))
                        {
                            warn!(codes = ?ack.return_codes, "floor: the broker refused a subscription (ACL?)");
                        }
                        continue;
                    }
                    Ok(MqttEvent::Outgoing(Outgoing::Disconnect)) => Net::Lost("disconnected".into()),
                    Ok(_) => continue,
                    Err(e) => Net::Lost(format!("MQTT: {e}")),
                };
                let end = matches!(net, Net::Lost(_));
                if tx.send(net).await.is_err() || end {
                    return;
                }
            }
        });
        Link { client, events, poller }
    }

    async fn next(&mut self) -> Net {
        self.events.recv().await.unwrap_or_else(|| Net::Lost("MQTT event loop ended".into()))
    }

    fn subscribe(&self, filter: &str) -> Result<(), String> {
        self.client.try_subscribe(filter, QoS::AtLeastOnce).map_err(|e| format!("MQTT subscribe: {e}"))
    }

    /// Queue a QoS 1 publish; never waits. Err when rumqttc's queue is full (handled as a loss).
    fn publish(&self, topic: &str, payload: String, retain: bool) -> Result<(), String> {
        self.client.try_publish(topic, QoS::AtLeastOnce, retain, payload).map_err(|e| format!("MQTT publish: {e}"))
    }

    /// Publish `goodbye` (if any) and disconnect cleanly, so the broker does not send the will;
    /// bounded by [`GOODBYE`].
    async fn close(mut self, goodbye: Option<(String, String)>) {
        if let Some((topic, payload)) = goodbye {
            let _ = self.publish(&topic, payload, true);
        }
        let _ = self.client.try_disconnect();
        let _ = tokio::time::timeout(GOODBYE, async { while !matches!(self.next().await, Net::Lost(_)) {} }).await;
        self.poller.abort();
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.poller.abort();
    }
}

fn will(topic: String, payload: String) -> LastWill {
    LastWill::new(topic, payload, QoS::AtLeastOnce, true, None)
}

//! The test's own MQTT 5 client (a second rumqttc): records everything under the filters it
//! subscribes to, resubscribes after a broker restart, and publishes commands with or without
//! a response topic and correlation data.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use serde_json::Value;

#[derive(Debug, Clone)]
pub struct Msg {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
    pub correlation: Option<Vec<u8>>,
}

impl Msg {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.payload).unwrap_or(Value::Null)
    }
}

pub struct Probe {
    client: AsyncClient,
    msgs: Arc<Mutex<Vec<Msg>>>,
    task: tokio::task::JoinHandle<()>,
}

static NEXT_ID: AtomicUsize = AtomicUsize::new(0);

impl Probe {
    pub async fn connect(port: u16, filters: &[&str]) -> Probe {
        let id = format!("probe-{}-{}", std::process::id(), NEXT_ID.fetch_add(1, Ordering::Relaxed));
        let mut opts = MqttOptions::new(id, "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(5)).set_max_packet_size(Some(1 << 20));
        let (client, mut eventloop) = AsyncClient::new(opts, 256);
        let msgs = Arc::new(Mutex::new(Vec::new()));
        let subacks = Arc::new(AtomicUsize::new(0));
        let filters: Vec<String> = filters.iter().map(|f| f.to_string()).collect();
        let task = {
            let (client, msgs, subacks, filters) = (client.clone(), msgs.clone(), subacks.clone(), filters.clone());
            tokio::spawn(async move {
                loop {
                    match eventloop.poll().await {
                        Ok(Event::Incoming(Packet::ConnAck(_))) => {
                            for f in &filters {
                                client.subscribe(f.clone(), QoS::AtLeastOnce).await.unwrap();
                            }
                        }
                        Ok(Event::Incoming(Packet::SubAck(_))) => {
                            subacks.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(Event::Incoming(Packet::Publish(p))) => msgs.lock().unwrap().push(Msg {
                            topic: String::from_utf8_lossy(&p.topic).into_owned(),
                            payload: p.payload.to_vec(),
                            retain: p.retain,
                            correlation: p.properties.and_then(|p| p.correlation_data).map(|c| c.to_vec()),
                        }),
                        Ok(_) => {}
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
            })
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while subacks.load(Ordering::SeqCst) < filters.len() {
            assert!(Instant::now() < deadline, "probe could not subscribe on port {port}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Probe { client, msgs, task }
    }

    pub async fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        let payload: Vec<u8> = payload.into();
        self.client.publish(topic, QoS::AtLeastOnce, false, payload).await.unwrap();
    }

    pub async fn publish_retained(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        let payload: Vec<u8> = payload.into();
        self.client.publish(topic, QoS::AtLeastOnce, true, payload).await.unwrap();
    }

    /// MQTT 5 request/response: the reply should come on `response_topic` with `correlation`.
    pub async fn request(&self, topic: &str, payload: &str, response_topic: &str, correlation: &[u8]) {
        let props = PublishProperties {
            response_topic: Some(response_topic.into()),
            correlation_data: Some(correlation.to_vec().into()),
            ..Default::default()
        };
        self.client
            .publish_with_properties(topic, QoS::AtLeastOnce, false, payload.as_bytes().to_vec(), props)
            .await
            .unwrap();
    }

    /// How many messages so far: a mark for [`wait_after`](Self::wait_after).
    pub fn mark(&self) -> usize {
        self.msgs.lock().unwrap().len()
    }

    pub fn all(&self) -> Vec<Msg> {
        self.msgs.lock().unwrap().clone()
    }

    pub fn since(&self, mark: usize) -> Vec<Msg> {
        self.msgs.lock().unwrap()[mark..].to_vec()
    }

    /// The first message (after `mark`) matching `pred`, waiting up to `timeout`.
    pub async fn wait_after(&self, mark: usize, what: &str, timeout: Duration, pred: impl Fn(&Msg) -> bool) -> Msg {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(m) = self.msgs.lock().unwrap()[mark..].iter().find(|m| pred(m)) {
                return m.clone();
            }
            if Instant::now() > deadline {
                let seen: Vec<String> = self
                    .since(mark)
                    .iter()
                    .rev()
                    .take(20)
                    .map(|m| format!("{} {}", m.topic, String::from_utf8_lossy(&m.payload)))
                    .collect();
                panic!("timed out waiting for {what}; last messages:\n{}", seen.join("\n"));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn wait(&self, what: &str, timeout: Duration, pred: impl Fn(&Msg) -> bool) -> Msg {
        self.wait_after(0, what, timeout, pred).await
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.task.abort();
    }
}

//! What someone outside the fleet sees and does, for the fleet tests in a namespace
//! (tests/common/fleet_ns.rs): a bare Janus API client (a stranger who reaches Janus, or an
//! operator with its admin key), and a listener on the fleet broker's status and event topics.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message, WebSocket};

use super::fleet_ns::{janus_url, require, JANUS_IP, JANUS_WS_PORT, MQTT_PORT};

/// One Janus session with one VideoRoom handle, spoken to directly (blocking).
pub struct JanusApi {
    ws: WebSocket<TcpStream>,
    session: u64,
    handle: u64,
    next: u64,
}

impl JanusApi {
    /// A session and a VideoRoom handle on the test's Janus.
    pub fn connect() -> JanusApi {
        let tcp = TcpStream::connect((JANUS_IP, JANUS_WS_PORT)).expect("connect to Janus");
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut request = janus_url().into_client_request().unwrap();
        request.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static("janus-protocol"));
        let (ws, _) = tungstenite::client(request, tcp).expect("Janus WebSocket handshake");
        let mut api = JanusApi { ws, session: 0, handle: 0, next: 0 };
        api.session = api.call(json!({"janus": "create"}))["data"]["id"].as_u64().expect("session id");
        let attach = json!({"janus": "attach", "session_id": api.session, "plugin": "janus.plugin.videoroom"});
        api.handle = api.call(attach)["data"]["id"].as_u64().expect("handle id");
        api
    }

    /// A request with a fresh transaction; its final reply (acks skipped).
    fn call(&mut self, mut msg: Value) -> Value {
        self.next += 1;
        let tx = format!("outsider-{}", self.next);
        msg["transaction"] = tx.clone().into();
        self.ws.send(Message::Text(msg.to_string().into())).expect("send to Janus");
        loop {
            let text = match self.ws.read().expect("read from Janus") {
                Message::Text(t) => t.to_string(),
                _ => continue,
            };
            let v: Value = serde_json::from_str(&text).unwrap();
            if v["transaction"] == tx.as_str() && v["janus"] != "ack" {
                return v;
            }
        }
    }

    /// A VideoRoom request on our handle: the plugin's reply (`error_code` on refusal).
    pub fn videoroom(&mut self, body: Value) -> Value {
        let msg = json!({"janus": "message", "session_id": self.session, "handle_id": self.handle, "body": body});
        let reply = self.call(msg);
        if reply["janus"] == "error" {
            return json!({"error_code": reply["error"]["code"], "error": reply["error"]["reason"]});
        }
        reply["plugindata"]["data"].clone()
    }

    pub fn exists(&mut self, room: u64) -> bool {
        self.videoroom(json!({"request": "exists", "room": room}))["exists"] == true
    }
}

impl Drop for JanusApi {
    fn drop(&mut self) {
        let _ = self.ws.send(Message::Text(
            json!({"janus": "destroy", "session_id": self.session, "transaction": "bye"}).to_string().into(),
        ));
        let _ = self.ws.close(None);
    }
}

/// `mosquitto_sub` on the test broker, recording every (topic, JSON payload) it sees.
pub struct MqttWatch {
    child: Child,
    seen: Arc<Mutex<Vec<(String, Value)>>>,
}

impl MqttWatch {
    /// Subscribe to `filters` (retained messages included) and wait until connected.
    pub fn start(filters: &[&str]) -> MqttWatch {
        let sub: PathBuf = require("mosquitto_sub", "mosquitto-clients");
        let mut cmd = Command::new(sub);
        cmd.args(["-h", "127.0.0.1", "-p", &MQTT_PORT.to_string(), "-v", "-q", "1"]);
        for f in filters {
            cmd.args(["-t", f]);
        }
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("run mosquitto_sub");
        let out = child.stdout.take().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let (topic, payload) = line.split_once(' ').unwrap_or((line.as_str(), ""));
                let json = serde_json::from_str(payload).unwrap_or(Value::Null);
                sink.lock().unwrap().push((topic.to_owned(), json));
            }
        });
        // No ready signal from mosquitto_sub: give it time to subscribe.
        std::thread::sleep(Duration::from_millis(300));
        MqttWatch { child, seen }
    }

    pub fn all(&self) -> Vec<(String, Value)> {
        self.seen.lock().unwrap().clone()
    }

    /// The first message on `topic` that `pred` accepts, waiting up to `limit`.
    pub fn wait(&self, topic: &str, what: &str, limit: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let started = Instant::now();
        loop {
            if let Some((_, v)) = self.all().into_iter().find(|(t, v)| t == topic && pred(v)) {
                return v;
            }
            if started.elapsed() > limit {
                let seen: Vec<String> = self.all().iter().map(|(t, v)| format!("{t} {v}")).collect();
                panic!("no {what} on {topic} within {} s; seen:\n{}", limit.as_secs(), seen.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The latest message on `topic`, if any.
    pub fn latest(&self, topic: &str) -> Option<Value> {
        self.all().into_iter().rev().find(|(t, _)| t == topic).map(|(_, v)| v)
    }
}

impl Drop for MqttWatch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

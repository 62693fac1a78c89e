//! Rosters from a real `roipd run` hub: a console gets each channel's whole roster once when it
//! joins, then only `roster_delta`s (who joined, changed or left), so a burst of n consoles
//! costs O(n) signaling per console, not O(n²) (issue 14 item 5).

mod common;

use std::time::Duration;

use common::config::{Config, Hub, Radio};
use common::{free_port, Daemon};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn hub_config(port: u16) -> String {
    let radio = Radio::new("radio1", "ops").cor("sim:cor").ptt("sim:ptt");
    Config::new("hub").channel("ops").add(radio).add(Hub::new(port).token("consoles", "token", &["ops"])).toml()
}

async fn join(port: u16, key: &str) -> (Ws, u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let (mut ws, _) = loop {
        match tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/ws")).await {
            Ok(c) => break c,
            Err(e) if tokio::time::Instant::now() > deadline => panic!("hub not up: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    let hello = json!({"type":"hello","token":"console-secret","name":key,"members":[{"key":key,"channel":"ops"}]});
    ws.send(Message::text(hello.to_string())).await.unwrap();
    let welcome = next(&mut ws, |m| m["type"] == "welcome").await;
    (ws, welcome["members"][0]["id"].as_u64().unwrap())
}

/// The next message `want` accepts; others are skipped.
async fn next(ws: &mut Ws, want: impl Fn(&Value) -> bool) -> Value {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), ws.next()).await.expect("a hub message in time");
        match m {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                if want(&v) {
                    return v;
                }
            }
            Some(Ok(_)) => {}
            other => panic!("socket ended: {other:?}"),
        }
    }
}

fn is_roster(m: &Value) -> bool {
    m["type"] == "roster" || m["type"] == "roster_delta"
}

fn ids(entries: &Value) -> Vec<u64> {
    entries.as_array().map(|a| a.iter().map(|e| e["id"].as_u64().unwrap()).collect()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consoles_get_the_whole_roster_once_then_only_changes() {
    let port = free_port();
    let _hub = Daemon::start_with(&hub_config(port), &[], &[("token", "console-secret\n")]);

    // The first console: the radio is on the channel already, so the whole roster comes (the
    // radio), then the delta that adds the console itself.
    let (mut a, a_id) = join(port, "a").await;
    let first = next(&mut a, is_roster).await;
    assert_eq!(first["type"], "roster", "the initial state is a whole roster: {first}");
    assert_eq!(first["members"].as_array().unwrap().len(), 1, "{first}");
    let own = next(&mut a, is_roster).await;
    assert_eq!(own["type"], "roster_delta", "{own}");
    assert_eq!(ids(&own["add"]), [a_id]);

    // Others joining: one delta each, carrying only the newcomer.
    let mut others = Vec::new();
    for i in 0..20 {
        let (ws, id) = join(port, &format!("b{i}")).await;
        let d = next(&mut a, is_roster).await;
        assert_eq!(d["type"], "roster_delta", "not the whole roster again: {d}");
        assert_eq!(ids(&d["add"]), [id], "{d}");
        assert!(d.get("remove").is_none(), "{d}");
        others.push((ws, id));
    }

    // A late joiner gets everyone in one whole roster, then its own delta.
    let (mut late, late_id) = join(port, "late").await;
    let whole = next(&mut late, is_roster).await;
    assert_eq!(whole["type"], "roster", "{whole}");
    assert_eq!(whole["members"].as_array().unwrap().len(), 22, "radio, a and 20 others: {whole}");
    let d = next(&mut late, is_roster).await;
    assert_eq!((d["type"].as_str(), ids(&d["add"])), (Some("roster_delta"), vec![late_id]));
    let d = next(&mut a, is_roster).await;
    assert_eq!(ids(&d["add"]), [late_id]);

    // Leaving: a delta that removes the id.
    let (mut gone, gone_id) = others.pop().unwrap();
    gone.close(None).await.unwrap();
    let d = next(&mut a, is_roster).await;
    assert_eq!(d["type"], "roster_delta", "{d}");
    assert_eq!(d["remove"], json!([gone_id]), "{d}");
    assert!(d.get("add").is_none(), "{d}");
}

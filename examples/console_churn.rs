//! Consoles that come and go, for soak runs against a hub (`scripts/soak-demo`):
//! `cargo run --example console_churn -- ws://127.0.0.1:8080/ws TOKEN SECONDS [CONSOLES]`.
//! Each console loops: connect, hello with a member on `ops`, send a browser-style offer (the
//! hub builds a WebRTC session for it), request and release the floor, ping, then close or
//! just drop the socket (both ways a real console leaves). Prints one line of totals at the end.

mod common;

use std::time::{Duration, Instant};

use common::{recv_type, send, OFFER};
use futures_util::StreamExt;
use serde_json::json;

#[derive(Default, Debug, Clone, Copy)]
struct Counts {
    sessions: u64,
    answers: u64,
    granted: u64,
    errors: u64,
}

async fn one_session(url: &str, token: &str, n: u64, c: &mut Counts) -> Result<(), String> {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.map_err(|e| e.to_string())?;
    c.sessions += 1;
    let key = format!("c{}", n % 1000);
    send(
        &mut ws,
        json!({"type":"hello","token":token,"name":format!("churn {n}"),"members":[{"key":key,"channel":"ops"}]}),
    )
    .await?;
    let welcome = recv_type(&mut ws, "welcome").await?;
    let id = welcome["members"][0]["id"].clone();
    send(&mut ws, json!({"type":"offer","sdp":OFFER,"mids":{"0":"ops"}})).await?;
    recv_type(&mut ws, "answer").await?;
    c.answers += 1;
    send(&mut ws, json!({"type":"floor","id":id,"action":"request"})).await?;
    // Granted, queued or denied busy (the demo radio talks now and then): any answer will do.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(v) = tokio::time::timeout(left, recv_type(&mut ws, "floor")).await else { break };
        let v = v?;
        if v["event"] == "granted" {
            c.granted += 1;
            break;
        }
        if v["event"] == "denied" || Instant::now() > deadline {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(200 + n % 500)).await;
    send(&mut ws, json!({"type":"floor","id":id,"action":"release"})).await?;
    send(&mut ws, json!({"type":"ping"})).await?;
    recv_type(&mut ws, "pong").await?;
    if n % 2 == 0 {
        let _ = ws.close(None).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), async { while ws.next().await.is_some() {} }).await;
    } // else: dropped without a close frame, like a console whose laptop lid shuts.
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: console_churn WS_URL TOKEN SECONDS [CONSOLES]");
        std::process::exit(2);
    }
    let (url, token) = (args[1].clone(), args[2].clone());
    let seconds: u64 = args[3].parse().expect("SECONDS");
    let consoles: u64 = args.get(4).map_or(8, |s| s.parse().expect("CONSOLES"));
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for i in 0..consoles {
        let (url, token) = (url.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = Counts::default();
            let mut n = i;
            while Instant::now() < end {
                if let Err(e) = one_session(&url, &token, n, &mut c).await {
                    c.errors += 1;
                    if c.errors <= 3 {
                        eprintln!("console {i}: {e}");
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                n += consoles;
            }
            c
        }));
    }
    let mut total = Counts::default();
    for t in tasks {
        let c = t.await.unwrap();
        total.sessions += c.sessions;
        total.answers += c.answers;
        total.granted += c.granted;
        total.errors += c.errors;
    }
    println!(
        "console_churn: {} sessions, {} answers, {} floor grants, {} errors in {seconds} s",
        total.sessions, total.answers, total.granted, total.errors
    );
}

//! Consoles that come and go, for soak runs against a hub (`scripts/soak-demo`):
//! `cargo run --example console_churn -- ws://127.0.0.1:8080/ws TOKEN SECONDS [CONSOLES]`.
//! Each console loops: connect, hello with a member on `ops`, send a browser-style offer (the
//! hub builds a WebRTC session for it), request and release the floor, ping, then close or
//! just drop the socket (both ways a real console leaves). Prints one line of totals at the end.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

#[derive(Default, Debug, Clone, Copy)]
struct Counts {
    sessions: u64,
    answers: u64,
    granted: u64,
    errors: u64,
}

async fn recv_type(ws: &mut Ws, want: &str) -> Result<Value, String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, ws.next()).await {
            Err(_) => return Err(format!("no {want} in 5 s")),
            Ok(Some(Ok(Message::Text(t)))) => {
                let v: Value = serde_json::from_str(&t).map_err(|e| e.to_string())?;
                if v["type"] == want {
                    return Ok(v);
                }
                if v["type"] == "error" {
                    return Err(format!("error while waiting for {want}: {v}"));
                }
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => return Err(e.to_string()),
            Ok(None) => return Err("closed".into()),
        }
    }
}

async fn send(ws: &mut Ws, v: Value) -> Result<(), String> {
    ws.send(Message::text(v.to_string())).await.map_err(|e| e.to_string())
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

const OFFER: &str = "v=0\r\n\
o=- 4611731400430051336 2 IN IP4 127.0.0.1\r\n\
s=-\r\n\
t=0 0\r\n\
a=group:BUNDLE 0\r\n\
a=extmap-allow-mixed\r\n\
a=msid-semantic: WMS\r\n\
m=audio 50000 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126\r\n\
c=IN IP4 127.0.0.1\r\n\
a=rtcp:9 IN IP4 0.0.0.0\r\n\
a=candidate:1467250027 1 udp 2122260223 127.0.0.1 50000 typ host generation 0 network-id 1\r\n\
a=ice-ufrag:Kq3v\r\n\
a=ice-pwd:d1OeSZfkbqdMg7WMaIG2Gbkj\r\n\
a=ice-options:trickle\r\n\
a=fingerprint:sha-256 7B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08\r\n\
a=setup:actpass\r\n\
a=mid:0\r\n\
a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n\
a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r\n\
a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n\
a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\n\
a=sendrecv\r\n\
a=msid:- 6a4c9c1f-3b8e-4d8e-9d1e-2a9b1c0d0e01\r\n\
a=rtcp-mux\r\n\
a=rtcp-rsize\r\n\
a=rtpmap:111 opus/48000/2\r\n\
a=rtcp-fb:111 transport-cc\r\n\
a=fmtp:111 minptime=10;useinbandfec=1\r\n\
a=rtpmap:63 red/48000/2\r\n\
a=fmtp:63 111/111\r\n\
a=rtpmap:9 G722/8000\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:13 CN/8000\r\n\
a=rtpmap:110 telephone-event/48000\r\n\
a=rtpmap:126 telephone-event/8000\r\n\
a=ssrc:3170586210 cname:8b1Kq3vFoo\r\n\
a=ssrc:3170586210 msid:- 6a4c9c1f-3b8e-4d8e-9d1e-2a9b1c0d0e01\r\n\
";

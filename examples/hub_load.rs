//! The hub's memory under a burst of consoles (issue 14 item 5):
//! `cargo run --release --example hub_load -- [--consoles 256] [--offer] [--hold 10] [--after 30]
//! [--rounds 1] [--pid PID --url ws://127.0.0.1:8080/ws --token demo]`.
//!
//! Without `--pid` it starts its own `roipd demo` (`ROIPD_BIN`, default `target/release/roipd`)
//! on a free port of 127.0.0.1 with its own folder. Then, each round: N authenticated consoles
//! join `ops` (at most 8 handshakes at a time, the hub's pre-auth limit per address), each with
//! a browser-style offer if `--offer`, read everything the hub sends while they hold, then
//! leave. The hub's RSS (`VmRSS` in /proc/PID/status) is sampled every 50 ms. Prints the
//! baseline before the burst, the peak while it lasts, RSS right after the last console left
//! and `--after` seconds later (with its anonymous and file-backed parts: file pages are code
//! touched for the first time, ~1.6 MB in a release build and ~10 MB in a debug one, not memory
//! the hub holds), and the signaling bytes the consoles received.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{recv_type, send, OFFER};
use futures_util::StreamExt;
use serde_json::json;
use tokio::sync::{Barrier, Semaphore};
use tokio_tungstenite::tungstenite::Message;

struct Args {
    consoles: usize,
    offer: bool,
    hold: u64,
    after: u64,
    rounds: usize,
    pid: Option<u32>,
    url: String,
    token: String,
}

fn args() -> Args {
    let mut a = Args {
        consoles: 256,
        offer: false,
        hold: 10,
        after: 30,
        rounds: 1,
        pid: None,
        url: String::new(),
        token: "demo".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--consoles" => a.consoles = val().parse().expect("--consoles N"),
            "--offer" => a.offer = true,
            "--hold" => a.hold = val().parse().expect("--hold SECONDS"),
            "--after" => a.after = val().parse().expect("--after SECONDS"),
            "--rounds" => a.rounds = val().parse().expect("--rounds N"),
            "--pid" => a.pid = Some(val().parse().expect("--pid PID")),
            "--url" => a.url = val(),
            "--token" => a.token = val(),
            _ => {
                eprintln!("usage: hub_load [--consoles N] [--offer] [--hold S] [--after S] [--rounds N] [--pid PID --url WS_URL --token T]");
                std::process::exit(2);
            }
        }
    }
    a
}

/// VmRSS in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS:")
}

/// A KiB figure of /proc/PID/status (`VmRSS:`, `RssAnon:`, `RssFile:`).
fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn mib(kib: u64) -> String {
    format!("{:.1} MB", kib as f64 / 1024.0)
}

/// The demo this tool started; killed when dropped.
struct Demo(Child, PathBuf);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

fn start_demo() -> (Demo, u32, String) {
    let bin = std::env::var_os("ROIPD_BIN").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("target/release/roipd"));
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = std::env::temp_dir().join(format!("hub_load-{}", std::process::id()));
    let child = Command::new(&bin)
        .args(["demo", "--listen", &format!("127.0.0.1:{port}"), "--traffic-every", "0", "--dir"])
        .arg(&dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e} (build it, or set ROIPD_BIN)", bin.display()));
    let pid = child.id();
    let demo = Demo(child, dir);
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "roipd demo did not listen within 20 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    (demo, pid, format!("ws://127.0.0.1:{port}/ws"))
}

/// One console: join (and offer), then read until told to leave. Returns bytes received.
#[allow(clippy::too_many_arguments)] // one task per console; the handles it shares are its arguments
async fn console(
    url: String,
    token: String,
    n: usize,
    offer: bool,
    handshakes: Arc<Semaphore>,
    joined: Arc<Barrier>,
    leave: Arc<tokio::sync::Notify>,
    errors: Arc<AtomicU64>,
) -> u64 {
    let permit = handshakes.acquire_owned().await.unwrap();
    let hello = json!({"type":"hello","token":token,"name":format!("load {n}"),"members":[{"key":format!("c{n}"),"channel":"ops"}]});
    let result: Result<common::Ws, String> = async {
        let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str()).await.map_err(|e| e.to_string())?;
        send(&mut ws, hello).await?;
        recv_type(&mut ws, "welcome").await?;
        if offer {
            send(&mut ws, json!({"type":"offer","sdp":OFFER,"mids":{"0":"ops"}})).await?;
            recv_type(&mut ws, "answer").await?;
        }
        Ok(ws)
    }
    .await;
    drop(permit);
    let mut bytes = 0;
    let ws = match result {
        Ok(ws) => Some(ws),
        Err(e) => {
            if errors.fetch_add(1, Ordering::Relaxed) < 3 {
                eprintln!("console {n}: {e}");
            }
            None
        }
    };
    joined.wait().await;
    let Some(mut ws) = ws else { return 0 };
    let left = leave.notified();
    tokio::pin!(left);
    let mut last_ping = Instant::now();
    loop {
        tokio::select! {
            _ = &mut left => break,
            m = ws.next() => match m {
                Some(Ok(Message::Text(t))) => bytes += t.len() as u64,
                Some(Ok(_)) => {}
                _ => {
                    errors.fetch_add(1, Ordering::Relaxed);
                    return bytes;
                }
            },
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        if last_ping.elapsed() > Duration::from_secs(10) {
            last_ping = Instant::now();
            let _ = send(&mut ws, json!({"type":"ping"})).await;
        }
    }
    let _ = ws.close(None).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), async { while ws.next().await.is_some() {} }).await;
    bytes
}

#[tokio::main]
async fn main() {
    let a = args();
    let (_demo, pid, url) = match a.pid {
        Some(pid) => {
            assert!(!a.url.is_empty(), "--pid needs --url");
            (None, pid, a.url.clone())
        }
        None => {
            let (demo, pid, url) = start_demo();
            (Some(demo), pid, url)
        }
    };
    // Let the hub settle before the baseline.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                if let Some(r) = rss_kib(pid) {
                    peak.fetch_max(r, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let baseline = rss_kib(pid).expect("the hub's /proc/PID/status");
    let anon_file = || {
        let kib = |key| status_kib(pid, key).unwrap_or(0);
        format!("anon {}, file {}", mib(kib("RssAnon:")), mib(kib("RssFile:")))
    };
    println!(
        "hub_load: pid {pid}, {} consoles, offers: {}, baseline {} ({})",
        a.consoles,
        a.offer,
        mib(baseline),
        anon_file()
    );
    for round in 1..=a.rounds {
        peak.store(0, Ordering::Relaxed);
        let errors = Arc::new(AtomicU64::new(0));
        let handshakes = Arc::new(Semaphore::new(8));
        let joined = Arc::new(Barrier::new(a.consoles + 1));
        let leave = Arc::new(tokio::sync::Notify::new());
        let started = Instant::now();
        let tasks: Vec<_> = (0..a.consoles)
            .map(|n| {
                tokio::spawn(console(
                    a.url_or(&url),
                    a.token.clone(),
                    n,
                    a.offer,
                    handshakes.clone(),
                    joined.clone(),
                    leave.clone(),
                    errors.clone(),
                ))
            })
            .collect();
        joined.wait().await;
        let join_s = started.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_secs(a.hold)).await;
        leave.notify_waiters();
        let mut bytes = 0;
        for t in tasks {
            bytes += t.await.unwrap_or(0);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let burst_peak = peak.load(Ordering::Relaxed);
        let left = rss_kib(pid).unwrap_or(0);
        tokio::time::sleep(Duration::from_secs(a.after)).await;
        let later = rss_kib(pid).unwrap_or(0);
        println!(
            "round {round}: joined in {join_s:.1} s, {} errors, signaling received {:.1} MB; peak {}, 1 s after leaving {}, +{} s {} ({}; baseline +{})",
            errors.load(Ordering::Relaxed),
            bytes as f64 / 1e6,
            mib(burst_peak),
            mib(left),
            a.after,
            mib(later),
            anon_file(),
            mib(later.saturating_sub(baseline)),
        );
    }
    sampler.abort();
}

impl Args {
    fn url_or(&self, spawned: &str) -> String {
        if self.url.is_empty() {
            spawned.to_owned()
        } else {
            self.url.clone()
        }
    }
}

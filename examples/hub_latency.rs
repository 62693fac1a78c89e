//! Measures, with real roipd processes on loopback (`cargo run --release --example hub_latency`):
//! - radio-to-radio latency through a hub: tone bursts captured by an edge's radio, heard from
//!   the hub's radio (onsets matched by wall-clock, from both devices' open times);
//! - COR edge to the first packet on the wire, at the edge;
//! - `roipd demo` start to signaling ready (`/healthz` answering).
//!
//! Uses `target/release/roipd` (or `ROIPD_BIN`). Prints one JSON object.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn bin() -> PathBuf {
    std::env::var_os("ROIPD_BIN").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("target/release/roipd"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Seconds since UTC midnight, from a tracing timestamp like `2026-11-21T03:34:21.684779Z`.
fn log_time(line: &str) -> Option<f64> {
    let t = line.split_whitespace().next()?.split('T').nth(1)?.trim_end_matches('Z');
    let mut parts = t.split(':');
    let (h, m, s): (f64, f64, f64) =
        (parts.next()?.parse().ok()?, parts.next()?.parse().ok()?, parts.next()?.parse().ok()?);
    Some(h * 3600.0 + m * 60.0 + s)
}

fn now_of_day() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64() % 86_400.0
}

fn first_log(log: &str, what: &str) -> Option<f64> {
    log.lines().find(|l| l.contains(what)).and_then(log_time)
}

struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn start(dir: &Path, name: &str, args: &[&str]) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(bin())
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("roipd binary (build with --release, or set ROIPD_BIN)");
        Proc { child, log }
    }
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    fn wait_log(&self, what: &str) {
        let start = Instant::now();
        while !self.log().contains(what) {
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "no `{what}` in {}:\n{}",
                self.log.display(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    fn stop(mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

fn write_bursts(path: &Path) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 48_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for i in 0..48_000 {
        let v = if i >= 24_000 { 0.25 * (std::f32::consts::TAU * 1000.0 * i as f32 / 48_000.0).sin() } else { 0.0 };
        w.write_sample((v * 32767.0) as i16).unwrap();
    }
    w.finalize().unwrap();
}

fn onsets(samples: &[f32]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut last: Option<usize> = None;
    for (i, s) in samples.iter().enumerate() {
        if s.abs() > 0.05 {
            if last.is_none_or(|l| i - l > 4_800) {
                out.push(i);
            }
            last = Some(i);
        }
    }
    out
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = free_port();
    write_bursts(&d.join("bursts.wav"));
    std::fs::write(d.join("token"), "measure\n").unwrap();
    let hub_cfg = format!(
        "device_id = \"hub\"\n[gpio.sim]\ndir = \"{d}/hub-lines\"\n[channel.ops]\n[port.radio-b]\nkind = \"radio\"\nchannel = \"ops\"\n\
         cor = {{ line = \"sim:b-cor\" }}\nptt = {{ line = \"sim:b-ptt\" }}\naudio = {{ playback = \"sim:wav-out:{d}/b-tx.wav\" }}\n\
         keying = {{ tx_delay_ms = 0 }}\n[hub]\nlisten = \"127.0.0.1:{port}\"\n[hub.token.t]\nsecret_file = \"{d}/token\"\nchannels = [\"*\"]\n",
        d = d.display()
    );
    let edge_cfg = format!(
        "device_id = \"edge\"\n[gpio.sim]\ndir = \"{d}/edge-lines\"\n[channel.ops]\n[port.radio-a]\nkind = \"radio\"\nchannel = \"ops\"\n\
         cor = {{ line = \"sim:a-cor\" }}\nptt = {{ line = \"sim:a-ptt\" }}\naudio = {{ capture = \"sim:wav:{d}/bursts.wav\" }}\n\
         [uplink]\nkind = \"hub\"\nurl = \"ws://127.0.0.1:{port}/ws\"\ntoken_file = \"{d}/token\"\n",
        d = d.display()
    );
    std::fs::write(d.join("hub.toml"), hub_cfg).unwrap();
    std::fs::write(d.join("edge.toml"), edge_cfg).unwrap();
    let hub = Proc::start(d, "hub", &["run", d.join("hub.toml").to_str().unwrap()]);
    hub.wait_log("roipd running");
    let edge = Proc::start(d, "edge", &["run", d.join("edge.toml").to_str().unwrap()]);
    edge.wait_log("uplink up");
    std::thread::sleep(Duration::from_millis(500));

    // COR on: write the line's file and note when.
    let cor_at = now_of_day();
    std::fs::write(d.join("edge-lines/a-cor"), "1\n").unwrap();
    std::thread::sleep(Duration::from_secs(6));
    std::fs::write(d.join("edge-lines/a-cor"), "0\n").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let (hub_log, edge_log) = (hub.log(), edge.log());
    edge.stop();
    hub.stop();

    let first_packet = first_log(&edge_log, "talk-spurt: first packet sent").expect("edge sent a talk-spurt");
    let capture_open = first_log(&edge_log, "audio device open device=sim:wav").expect("edge capture");
    let playback_open = first_log(&hub_log, "audio device open device=sim:wav-out").expect("hub playback");
    let mut reader = hound::WavReader::open(d.join("b-tx.wav")).unwrap();
    let out: Vec<f32> = reader.samples::<i16>().filter_map(Result::ok).map(|s| f32::from(s) / 32768.0).collect();
    let mut latencies = Vec::new();
    for o in onsets(&out) {
        let heard = playback_open + o as f64 / 48_000.0;
        // The latest burst onset at the edge's capture before it was heard.
        let since_capture = heard - capture_open;
        let burst = ((since_capture - 0.5) / 1.0).floor();
        if burst < 0.0 {
            continue;
        }
        let onset_in = capture_open + burst * 1.0 + 0.5;
        if onset_in >= cor_at + 0.1 {
            latencies.push((heard - onset_in) * 1e3);
        }
    }

    let demo_port = free_port();
    let demo_dir = d.join("demo");
    let started = Instant::now();
    let demo = Proc::start(
        d,
        "demo",
        &[
            "demo",
            "--listen",
            &format!("127.0.0.1:{demo_port}"),
            "--dir",
            demo_dir.to_str().unwrap(),
            "--traffic-every",
            "0",
        ],
    );
    let ready = loop {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", demo_port)) {
            let _ = s.write_all(b"GET /healthz HTTP/1.0\r\n\r\n");
            let mut body = String::new();
            let _ = s.read_to_string(&mut body);
            if body.contains("200") {
                break started.elapsed();
            }
        }
        assert!(started.elapsed() < Duration::from_secs(10), "demo never became ready");
        std::thread::sleep(Duration::from_millis(2));
    };
    demo.stop();

    println!(
        "{{\"radio_to_radio_p50_ms\":{:.1},\"radio_to_radio_samples\":{},\"cor_to_first_packet_ms\":{:.1},\"demo_ready_ms\":{:.0}}}",
        median(latencies.clone()),
        latencies.len(),
        (first_packet - cor_at) * 1e3,
        ready.as_secs_f64() * 1e3
    );
}

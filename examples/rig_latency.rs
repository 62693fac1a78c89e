//! Radio-to-radio latency through real ALSA devices (PulseAudio null sinks through ALSA's pulse
//! plugin), with real roipd processes: `scripts/rig-latency` runs it.
//!
//! Rig: a stereo null sink `rec`; a remap sink `ain` onto its left channel is radio A's receive
//! audio (A captures `ain.monitor`), a remap sink `bout` onto its right channel is radio B's
//! transmit audio. `parec` on `rec.monitor` records input (left) and output (right) in the same
//! render cycle, so their offset is exact. COR is a sim GPIO line written before each burst.
//!
//! Scenarios: `floor` (arecord | aplay, the rig's own latency), `single` (one roipd, radios A and
//! B on one channel), `hub` (edge with A → hub → edge with B, three processes on 127.0.0.1);
//! not by default, `cost` (CPU %, wakeups/s and RSS of PulseAudio alone, then of a hub and two
//! edges with VOX radios on PulseAudio devices, idle and while A talks to B; `RIG_COST_S` per
//! measurement, default 20).
//! Each burst is a 1 kHz tone (onset at 10 % of its level) or a 300–3000 Hz chirp (lag of the
//! cross-correlation peak). Prints one JSON object per scenario.
//!
//! Env: `ROIPD_BIN` (default target/release/roipd), `RIG_SCENARIOS` (default `floor,single,hub`),
//! `RIG_BURSTS` (default 12), `RIG_FRAME_MS` (codec frame, default 20), `RIG_COR_LEAD_MS` (COR
//! before the burst, default 100; 0 = COR with the audio), `RIG_FLOOR_PERIOD_US` (arecord/aplay
//! period, 4 periods a buffer, default 5000; 10000 is roipd's ALSA setting).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use roipd::bench::rig::{self, PulseServer};

const RATE: usize = 48_000;
const BURST_GAP_S: f64 = 1.5;
const TONE_S: f64 = 0.4;

fn bin() -> PathBuf {
    std::env::var_os("ROIPD_BIN").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("target/release/roipd"))
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(3) {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The rig's PulseAudio, and its asound.conf in `dir`.
fn pulse(dir: &Path) -> PulseServer {
    let remap = |name: &str, side: &str| {
        format!(
            "load-module module-remap-sink sink_name={name} master=rec channels=1 channel_map=mono \
             master_channel_map={side} remix=no"
        )
    };
    let modules = [
        "load-module module-null-sink sink_name=rec rate=48000 channels=2 format=s16le channel_map=front-left,front-right"
            .to_string(),
        remap("ain", "front-left"),
        remap("bout", "front-right"),
        rig::null_sink("aout"),
        rig::null_sink("bin"),
    ];
    let pulse = PulseServer::start(dir, &modules).unwrap_or_else(|e| panic!("{e}"));
    let conf = [("a_rx", "ain.monitor"), ("b_tx", "bout"), ("a_tx", "aout"), ("b_rx", "bin.monitor")]
        .map(|(pcm, device)| pulse.pcm(pcm, device))
        .concat();
    fs::write(dir.join("asound.conf"), conf).unwrap();
    pulse
}

/// The burst file: silence, then per burst a tone or a chirp (even bursts tone, odd chirp).
fn bursts(n: usize) -> (Vec<i16>, Vec<f32>) {
    let lead = RATE / 2;
    let total = lead + (n as f64 * BURST_GAP_S * RATE as f64) as usize + RATE;
    let mut s = vec![0.0f32; total];
    let chirp: Vec<f32> = (0..(0.2 * RATE as f64) as usize)
        .map(|i| {
            let t = i as f64 / RATE as f64;
            let (f0, f1, d) = (300.0, 3000.0, 0.2);
            (0.3 * (std::f64::consts::TAU * (f0 * t + (f1 - f0) * t * t / (2.0 * d))).sin()) as f32
        })
        .collect();
    for b in 0..n {
        let at = lead + (b as f64 * BURST_GAP_S * RATE as f64) as usize;
        if b % 2 == 0 {
            for i in 0..(TONE_S * RATE as f64) as usize {
                s[at + i] = 0.3 * (std::f32::consts::TAU * 1000.0 * i as f32 / RATE as f32).sin();
            }
        } else {
            s[at..at + chirp.len()].copy_from_slice(&chirp);
        }
    }
    (s.iter().map(|v| (v * 32767.0) as i16).collect(), chirp)
}

fn burst_starts(n: usize) -> Vec<f64> {
    (0..n).map(|b| 0.5 + b as f64 * BURST_GAP_S).collect()
}

fn roipd(dir: &Path, name: &str, cfg: &str, asound: &Path) -> Guard {
    let path = dir.join(format!("{name}.toml"));
    fs::write(&path, cfg).unwrap();
    let child = Command::new(bin())
        .args(["run", path.to_str().unwrap()])
        .env("RUST_LOG", std::env::var("RIG_LOG").unwrap_or_else(|_| "info".into()))
        .env("ALSA_CONFIG_PATH", asound)
        .env("RUNTIME_DIRECTORY", dir.join(format!("{name}-run")))
        .stdout(Stdio::null())
        .stderr(fs::File::create(dir.join(format!("{name}.log"))).unwrap())
        .spawn()
        .expect("roipd binary (cargo build --release, or set ROIPD_BIN)");
    Guard(child)
}

fn wait_log(dir: &Path, name: &str, what: &str) {
    let start = Instant::now();
    loop {
        let log = fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
        if log.contains(what) {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "no `{what}` in {name}.log:\n{log}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn drive(lines: &Path, name: &str, high: bool) {
    let tmp = lines.join(format!(".{name}.drive"));
    fs::write(&tmp, if high { "1\n" } else { "0\n" }).unwrap();
    fs::rename(&tmp, lines.join(name)).unwrap();
}

fn radio(name: &str, audio: &str, frame_ms: u32) -> String {
    format!(
        "[port.{name}]\nkind = \"radio\"\nchannel = \"ops\"\ncor = {{ line = \"sim:{name}-cor\" }}\nptt = {{ line = \"sim:{name}-ptt\" }}\n\
         keying = {{ tx_delay_ms = 0, tx_hang_ms = 0 }}\n[port.{name}.audio]\n{audio}\n[port.{name}.audio.codec]\nframe_ms = {frame_ms}\n"
    )
}

/// A hub config on a free port with token `rig` in `d`, and the `[uplink]` section of an edge
/// that joins it.
fn hub_and_uplink(d: &Path) -> (String, String) {
    let port = free_port();
    fs::write(d.join("token"), "rig\n").unwrap();
    let hub = format!(
        "device_id = \"hub\"\n[gpio.sim]\ndir = \"{d}/hub-lines\"\n[channel.ops]\n[hub]\nlisten = \"127.0.0.1:{port}\"\n\
         [hub.token.t]\nsecret_file = \"{d}/token\"\nchannels = [\"*\"]\n",
        d = d.display()
    );
    let uplink = format!(
        "[uplink]\nkind = \"hub\"\nurl = \"ws://127.0.0.1:{port}/ws\"\ntoken_file = \"{}/token\"\n",
        d.display()
    );
    (hub, uplink)
}

/// Plays the burst file into `ain`, drives COR of radio A in `lines` around each burst (unless
/// `lines` is None), records `rec.monitor` and returns (left, right).
fn run_bursts(dir: &Path, pulse: &PulseServer, n: usize, lines: Option<&Path>) -> (Vec<f32>, Vec<f32>) {
    let (pcm, _) = bursts(n);
    let raw: Vec<u8> = pcm.iter().flat_map(|s| s.to_le_bytes()).collect();
    let rec_path = dir.join("rec.raw");
    let parec = Command::new("parec")
        .args(["-d", "rec.monitor", "--raw", "--format=s16le", "--rate=48000", "--channels=2", "--latency-msec=5"])
        .env("PULSE_SERVER", pulse.server())
        .stdout(fs::File::create(&rec_path).unwrap())
        .spawn()
        .expect("parec");
    let _parec = Guard(parec);
    std::thread::sleep(Duration::from_millis(300));
    let (mut pacat, writer) = pulse.play_raw("ain", raw, 10).unwrap();
    let started = Instant::now();
    let lead = env_or("RIG_COR_LEAD_MS", 100.0) / 1e3;
    if let Some(lines) = lines {
        for t in burst_starts(n) {
            let up = started + Duration::from_secs_f64((t - lead).max(0.0));
            std::thread::sleep(up.saturating_duration_since(Instant::now()));
            drive(lines, "a-cor", true);
            let down = started + Duration::from_secs_f64(t + TONE_S + 0.25);
            std::thread::sleep(down.saturating_duration_since(Instant::now()));
            drive(lines, "a-cor", false);
        }
    }
    writer.join().unwrap();
    let _ = pacat.wait();
    std::thread::sleep(Duration::from_millis(500));
    drop(_parec);
    let bytes = fs::read(&rec_path).unwrap();
    let mut l = Vec::new();
    let mut r = Vec::new();
    for f in bytes.chunks_exact(4) {
        l.push(f32::from(i16::from_le_bytes([f[0], f[1]])) / 32768.0);
        r.push(f32::from(i16::from_le_bytes([f[2], f[3]])) / 32768.0);
    }
    (l, r)
}

/// Onsets of bursts in `x`: first sample above `thr` after ≥ 0.5 s below it.
fn onsets(x: &[f32], thr: f32) -> Vec<usize> {
    let mut out = Vec::new();
    let mut last: Option<usize> = None;
    for (i, s) in x.iter().enumerate() {
        if s.abs() > thr {
            if last.is_none_or(|l| i - l > RATE / 2) {
                out.push(i);
            }
            last = Some(i);
        }
    }
    out
}

/// Lag (samples, 0..max_lag) at which `y[at+lag..]` best matches `chirp`, and the normalised peak.
fn xcorr_lag(chirp: &[f32], y: &[f32], at: usize, max_lag: usize) -> Option<(usize, f32)> {
    let ec: f32 = chirp.iter().map(|v| v * v).sum();
    let mut best = (0, 0.0f32);
    for lag in (0..max_lag).step_by(1) {
        let w = y.get(at + lag..at + lag + chirp.len())?;
        let dot: f32 = chirp.iter().zip(w).map(|(a, b)| a * b).sum();
        let ey: f32 = w.iter().map(|v| v * v).sum();
        let c = dot / (ec * ey).sqrt().max(1e-9);
        if c > best.1 {
            best = (lag, c);
        }
    }
    Some(best)
}

fn stats(v: &[f64]) -> String {
    if v.is_empty() {
        return "{\"n\":0}".into();
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let (min, max) = (s[0], s[s.len() - 1]);
    format!(
        "{{\"n\":{},\"median\":{:.1},\"min\":{:.1},\"max\":{:.1},\"spread\":{:.1},\"each\":[{}]}}",
        s.len(),
        s[s.len() / 2],
        min,
        max,
        max - min,
        v.iter().map(|x| format!("{x:.1}")).collect::<Vec<_>>().join(",")
    )
}

fn analyse(name: &str, n: usize, l: &[f32], r: &[f32], extra: &str) {
    let (_, chirp) = bursts(n);
    let ins = onsets(l, 0.03);
    let peak = r.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let mut tone = Vec::new();
    let mut xc = Vec::new();
    let mut corr = Vec::new();
    for (b, &i) in ins.iter().enumerate() {
        // The output's onset: first sample above 10 % of the output's peak within 400 ms.
        let window = &r[i.min(r.len())..(i + RATE * 4 / 10).min(r.len())];
        if b % 2 == 0 {
            if let Some(o) = window.iter().position(|v| v.abs() > 0.1 * peak) {
                tone.push(o as f64 * 1e3 / RATE as f64);
            }
        } else if let Some((lag, c)) = xcorr_lag(&chirp, r, i, RATE * 3 / 10) {
            xc.push(lag as f64 * 1e3 / RATE as f64);
            corr.push(c as f64);
        }
    }
    println!(
        "{{\"scenario\":\"{name}\",\"bursts_in\":{},\"tone_onset_ms\":{},\"chirp_xcorr_ms\":{},\"chirp_corr_peak\":{}{extra}}}",
        ins.len(),
        stats(&tone),
        stats(&xc),
        stats(&corr.iter().map(|c| c * 100.0).collect::<Vec<_>>()).replace("\"median\"", "\"median_pct\"")
    );
}

/// `"name":{"cpu_pct":..,"wakeups_per_s":..,"rss_mb":..}` for each process over `secs`.
fn measure(procs: &[(&str, u32)], secs: f64) -> String {
    let pids: Vec<u32> = procs.iter().map(|&(_, pid)| pid).collect();
    let rates = rig::measure(&pids, Duration::from_secs_f64(secs));
    let parts: Vec<String> = procs
        .iter()
        .zip(rates)
        .map(|((name, _), r)| {
            format!(
                "\"{name}\":{{\"cpu_pct\":{:.2},\"wakeups_per_s\":{:.0},\"rss_mb\":{:.1}}}",
                r.cpu_pct, r.wakeups_per_s, r.rss_mb
            )
        })
        .collect();
    parts.join(",")
}

/// What idle and talking ports cost on the rig: PulseAudio alone, then a hub and two edges
/// whose radios (VOX as COR) capture and play on PulseAudio devices; idle, then edge A
/// receiving a tone from its radio that edge B plays to its own.
fn cost(d: &Path, pulse: &PulseServer, asound: &Path, frame_ms: u32) {
    let secs: f64 = env_or("RIG_COST_S", 20.0);
    let pulse_pid = pulse.pid();
    std::thread::sleep(Duration::from_secs(2));
    let alone = measure(&[("pulseaudio", pulse_pid)], secs);
    let (hub_cfg, uplink) = hub_and_uplink(d);
    let edge = |name: &str, radio: &str, capture: &str, playback: &str| {
        format!(
            "device_id = \"{name}\"\n[gpio.sim]\ndir = \"{d}/{name}-lines\"\n[channel.ops]\n\
             [port.{radio}]\nkind = \"radio\"\nchannel = \"ops\"\nptt = {{ line = \"sim:{radio}-ptt\" }}\n\
             [port.{radio}.vox]\n[port.{radio}.audio]\ncapture = \"{capture}\"\nplayback = \"{playback}\"\n\
             [port.{radio}.audio.codec]\nframe_ms = {frame_ms}\n{uplink}",
            d = d.display()
        )
    };
    let hub = roipd(d, "hub", &hub_cfg, asound);
    wait_log(d, "hub", "roipd running");
    let ea = roipd(d, "edge-a", &edge("edge-a", "a", "a_rx", "a_tx"), asound);
    let eb = roipd(d, "edge-b", &edge("edge-b", "b", "b_rx", "b_tx"), asound);
    wait_log(d, "edge-a", "uplink up");
    wait_log(d, "edge-b", "uplink up");
    std::thread::sleep(Duration::from_secs(3));
    let procs = [("edge_a", ea.0.id()), ("edge_b", eb.0.id()), ("hub", hub.0.id()), ("pulseaudio", pulse_pid)];
    let idle = measure(&procs, secs);
    // A steady tone into radio A's receive audio for the whole talking measurement.
    let (mut pacat, writer) = pulse.play_raw("ain", rig::tone_raw(secs + 4.0), 20).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    // Radio B keyed for A's call: the measurement is of a working path.
    let keyed = fs::read_to_string(d.join("edge-b-lines").join("b-ptt")).unwrap_or_default();
    let talking = measure(&procs, secs);
    writer.join().unwrap();
    let _ = pacat.wait();
    println!(
        "{{\"scenario\":\"cost\",\"seconds\":{secs},\"frame_ms\":{frame_ms},\"pulse_alone\":{{{alone}}},\
         \"idle\":{{{idle}}},\"talking\":{{{talking}}},\"b_ptt_while_talking\":\"{}\"}}",
        keyed.trim()
    );
}

fn main() {
    let n: usize = env_or("RIG_BURSTS", 12);
    let frame_ms: u32 = env_or("RIG_FRAME_MS", 20);
    let scenarios = std::env::var("RIG_SCENARIOS").unwrap_or_else(|_| "floor,single,hub".into());
    let extra = format!(",\"frame_ms\":{frame_ms},\"cor_lead_ms\":{}", env_or("RIG_COR_LEAD_MS", 100.0));
    for sc in scenarios.split(',') {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        let pulse = pulse(d);
        let asound = d.join("asound.conf");
        match sc {
            "floor" => {
                let period_us: u32 = env_or("RIG_FLOOR_PERIOD_US", 5000);
                let mut rec = Command::new("arecord")
                    .args(["-q", "-D", "a_rx", "-f", "S16_LE", "-r", "48000", "-c", "1", "-t", "raw"])
                    .args([format!("--period-time={period_us}"), format!("--buffer-time={}", 4 * period_us)])
                    .env("ALSA_CONFIG_PATH", &asound)
                    .stdout(Stdio::piped())
                    .spawn()
                    .expect("arecord (alsa-utils)");
                let rec_out = rec.stdout.take().unwrap();
                let _r = Guard(rec);
                let play = Command::new("aplay")
                    .args(["-q", "-D", "b_tx", "-f", "S16_LE", "-r", "48000", "-c", "1", "-t", "raw"])
                    .args([format!("--period-time={period_us}"), format!("--buffer-time={}", 4 * period_us)])
                    .env("ALSA_CONFIG_PATH", &asound)
                    .stdin(rec_out)
                    .spawn()
                    .expect("aplay");
                let _p = Guard(play);
                std::thread::sleep(Duration::from_millis(500));
                let (l, r) = run_bursts(d, &pulse, n, None);
                analyse(sc, n, &l, &r, &extra);
            }
            "single" => {
                let lines = d.join("lines");
                let cfg = format!(
                    "device_id = \"box\"\n[gpio.sim]\ndir = \"{}\"\n[channel.ops]\n{}{}",
                    lines.display(),
                    radio("a", "capture = \"a_rx\"", frame_ms),
                    radio("b", "playback = \"b_tx\"", frame_ms)
                );
                let _box = roipd(d, "box", &cfg, &asound);
                wait_log(d, "box", "roipd running");
                std::thread::sleep(Duration::from_millis(1000));
                let (l, r) = run_bursts(d, &pulse, n, Some(&lines));
                analyse(sc, n, &l, &r, &extra);
            }
            "hub" => {
                let (hub_cfg, uplink) = hub_and_uplink(d);
                let (la, lb) = (d.join("a-lines"), d.join("b-lines"));
                let ea = format!(
                    "device_id = \"edge-a\"\n[gpio.sim]\ndir = \"{}\"\n[channel.ops]\n{}{uplink}",
                    la.display(),
                    radio("a", "capture = \"a_rx\"", frame_ms)
                );
                let eb = format!(
                    "device_id = \"edge-b\"\n[gpio.sim]\ndir = \"{}\"\n[channel.ops]\n{}{uplink}",
                    lb.display(),
                    radio("b", "playback = \"b_tx\"", frame_ms)
                );
                let _hub = roipd(d, "hub", &hub_cfg, &asound);
                wait_log(d, "hub", "roipd running");
                let _ea = roipd(d, "edge-a", &ea, &asound);
                let _eb = roipd(d, "edge-b", &eb, &asound);
                wait_log(d, "edge-a", "uplink up");
                wait_log(d, "edge-b", "uplink up");
                std::thread::sleep(Duration::from_millis(1000));
                let (l, r) = run_bursts(d, &pulse, n, Some(&la));
                analyse(sc, n, &l, &r, &extra);
            }
            "cost" => cost(d, &pulse, &asound, frame_ms),
            other => panic!("unknown scenario {other}"),
        }
        if std::env::var_os("RIG_KEEP").is_some() {
            let kept = tmp.keep();
            eprintln!("{sc}: kept {}", kept.display());
        }
    }
}

//! Radio A → radio B through a running daemon, one long over, and what B transmitted
//! (issue 13, "no dropouts under load"): `cargo run --example radio_gaps -- [--seconds 60]`,
//! under load with `scripts/stress-audio-bridge`.
//!
//! Starts `roipd run` (`ROIPD_BIN`, default `target/debug/roipd`) in a scratch folder with two
//! radios on one channel: A hears a 1 kHz tone (`sim:tone`), B transmits into a WAV file. Opens
//! A's COR for `--seconds`, then reads B's WAV in 10 ms blocks, from 200 ms after the tone's
//! onset to 50 ms before its end, and prints one JSON object: silent blocks (below -60 dBFS,
//! a gap), dips (below -30 dBFS: a concealed frame's fade, the tone is at about -18 dBFS), the
//! runs of consecutive dips, the first few dips' times after the onset, and the frames B's
//! jitter buffer concealed inside the over (the daemon's "had gaps" warnings) as a share of the
//! over's 20 ms frames. Exits 1 if B transmitted nothing.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CONFIG: &str = include_str!("../tests/configs/radio-a-to-b.toml");

fn level(dir: &Path, line: &str) -> Option<bool> {
    match std::fs::read_to_string(dir.join("lines").join(line)).ok()?.trim() {
        "1" => Some(true),
        "0" => Some(false),
        _ => None,
    }
}

fn drive(dir: &Path, line: &str, high: bool) {
    let tmp = dir.join("lines").join(format!(".{line}.drive"));
    std::fs::write(&tmp, if high { "1\n" } else { "0\n" }).expect("write a sim line");
    std::fs::rename(&tmp, dir.join("lines").join(line)).expect("drive a sim line");
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while !done() {
        if Instant::now() > end {
            eprintln!("radio_gaps: timed out waiting for {what}");
            std::process::exit(1);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn main() {
    let mut seconds = 60u64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--seconds" => seconds = args.next().and_then(|v| v.parse().ok()).expect("--seconds takes a number"),
            other => {
                eprintln!("unknown option {other}");
                std::process::exit(2);
            }
        }
    }
    let bin = std::env::var_os("ROIPD_BIN").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("target/debug/roipd"));
    let scratch = tempfile::tempdir().expect("a scratch folder");
    let dir = scratch.path();
    std::fs::create_dir_all(dir.join("lines")).expect("the sim lines folder");
    let config = dir.join("roipd.toml");
    std::fs::write(&config, CONFIG.replace("{dir}", dir.to_str().expect("a UTF-8 temp path"))).expect("config");
    let log = std::fs::File::create(dir.join("stderr.log")).expect("log file");
    let mut child = Command::new(&bin)
        .arg("run")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e} (build it, or set ROIPD_BIN)", bin.display()));

    wait_for("A's COR input", Duration::from_secs(10), || level(dir, "a-cor") == Some(false));
    std::thread::sleep(Duration::from_millis(300));
    drive(dir, "a-cor", true);
    wait_for("radio B keyed", Duration::from_secs(5), || level(dir, "b-ptt") == Some(true));
    std::thread::sleep(Duration::from_secs(seconds));
    drive(dir, "a-cor", false);
    wait_for("radio B unkeyed", Duration::from_secs(5), || level(dir, "b-ptt") == Some(false));
    // SAFETY: signalling our own child by its pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();

    let mut reader = hound::WavReader::open(dir.join("b-tx.wav")).expect("B's transmit WAV");
    let samples: Vec<f32> = reader.samples::<i16>().filter_map(Result::ok).map(|s| f32::from(s) / 32768.0).collect();
    let blocks: Vec<f32> = samples
        .chunks(480)
        .map(|b| 10.0 * (b.iter().map(|s| s * s).sum::<f32>() / b.len() as f32).max(1e-12).log10())
        .collect();
    let loud: Vec<usize> = (0..blocks.len()).filter(|&i| blocks[i] > -30.0).collect();
    let (Some(&first), Some(&last)) = (loud.first(), loud.last()) else {
        eprintln!("radio_gaps: radio B transmitted no tone");
        std::process::exit(1);
    };
    let (from, to) = (first + 20, last.saturating_sub(5).max(first + 20));
    let dips: Vec<usize> = (from..to).filter(|&i| blocks[i] < -30.0).collect();
    let silent = (from..to).filter(|&i| blocks[i] < -60.0).count();
    let runs = dips.iter().enumerate().filter(|&(k, &i)| k == 0 || dips[k - 1] + 1 != i).count();
    let first_dips: Vec<usize> = dips.iter().take(10).map(|i| (i - first) * 10).collect();
    let log = std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default();
    let concealed: u64 = log
        .lines()
        .filter(|l| l.contains("channel audio to the radio had gaps"))
        .filter_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("gaps=")?.parse::<u64>().ok()))
        .sum();
    let concealed_pct = 100.0 * concealed as f64 / (seconds as f64 * 50.0);
    println!(
        "{{\"over_s\":{seconds},\"blocks\":{},\"silent_blocks\":{silent},\"dip_blocks\":{},\"dip_runs\":{runs},\
         \"first_dips_ms_after_onset\":{first_dips:?},\"concealed_frames\":{concealed},\"concealed_pct\":{concealed_pct:.2}}}",
        to - from,
        dips.len()
    );
}

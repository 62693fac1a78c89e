//! `roipd bench`: what the audio pipeline costs and adds, measured on this machine with the
//! real pipeline code ([`crate::pipeline`]) and simulated devices.
//!
//! - per-frame cost of the receive path (capture, DSP, encode) and transmit path (decode,
//!   DSP, playback), in microseconds per 10 ms device frame, devices unpaced;
//! - gateway-added latency per direction, from tone-burst onsets, with real-time devices;
//! - jitter-buffer behaviour under seeded 10% loss and 40 ms jitter, in virtual time;
//! - peak RSS, and, where valgrind is installed, instructions per audio-second under callgrind
//!   for a busy port, a bare Opus encode+decode of the same signal, and an idle port;
//! - the CTCSS and DTMF decoders: false tones and talk-off digits in 10 minutes of speech,
//!   CTCSS open times, and their instructions per audio-second under callgrind;
//! - a 60 s over radio A → radio B under `stress-ng --cpu 6` (started by the bench when
//!   installed): silent blocks in B's transmit audio and concealed frames;
//! - on real ALSA devices (a private PulseAudio's null sinks, when PulseAudio is installed): CPU,
//!   wakeups and PulseAudio's extra load of a daemon with an idle and a busy port
//!   ([`alsa_port`]).

pub mod alsa_port;
mod desk;
mod jitter;
mod kernels;
mod latency;
mod load;
pub mod rig;
pub mod signal;
mod signalling;

use std::process::ExitCode;
use std::time::Instant;

use serde::Serialize;

pub use kernels::{run_kernel, write_wav, Kernel};

/// Every figure `roipd bench --json` prints.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub rx_frame_us: f64,
    pub tx_frame_us: f64,
    pub rx_added_latency_ms: f64,
    pub tx_added_latency_ms: f64,
    pub jitter_on_time_pct: f64,
    pub jitter_added_latency_p95_ms: f64,
    pub jitter_lost_pct: f64,
    pub peak_rss_mb: f64,
    /// Desk: the mixer's own latency between the jitter buffer and the output.
    pub mixer_added_latency_ms: f64,
    /// Silent runs (each ≥ 10 ms) in radio B's transmit audio during a 60 s over from radio A,
    /// with the CPU loaded as `tx_load` says.
    pub tx_gaps_under_load: u64,
    /// Frames B's jitter buffer concealed in that over, % of frames played.
    pub tx_concealed_under_load_pct: f64,
    pub tx_load: String,
    /// Radio A -> radio B in virtual time (`pipeline::fidelity`, default port settings):
    /// steady SNR of a 1 kHz tone, dB (from 1 s after the onset), and its worst 100 ms block
    /// before that; worst 5 ms block off its steady level from 10 ms after the onset, dB; peak
    /// normalised correlation of a 300-3000 Hz chirp. Worse of two overs.
    pub fidelity_tone_snr_db: f64,
    pub fidelity_tone_settling_snr_db: f64,
    pub fidelity_onset_error_db: f64,
    pub fidelity_chirp_correlation: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub busy_port_minstr_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bare_codec_minstr_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_port_minstr_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pipeline_overhead_pct: Option<f64>,
    /// Desk: 50 monitored channels, 5 talking, the desk talking on one (M instr per second).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub desk_minstr_per_s: Option<f64>,
    /// The recorder of one busy channel, its disk writes aside (M instr per audio-second).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record_minstr_per_s: Option<f64>,
    /// CTCSS and DTMF decoders of one port together on receive audio (M instr per audio-second).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signalling_minstr_per_s: Option<f64>,
    /// Why the instruction counts are missing, when they are.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valgrind: Option<String>,
    /// A daemon on real ALSA devices (PulseAudio null sinks) with one receive path (VOX) and
    /// one transmit path ([`alsa_port`]): idle, and busy (A receives a tone, B transmits it).
    /// CPU % of one core and wakeups per second over all its threads; PulseAudio's CPU % above
    /// what it used alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alsa_idle_port_cpu_pct: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alsa_idle_port_wakeups_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alsa_idle_pulse_extra_cpu_pct: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alsa_busy_port_cpu_pct: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alsa_busy_port_wakeups_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alsa_busy_pulse_extra_cpu_pct: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alsa_port_rss_mb: Option<f64>,
    /// The anonymous part of `alsa_port_rss_mb` (RssAnon): heap, stacks, relocated data. The
    /// rest is file pages (code, read-only data) the kernel can drop and read back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alsa_port_anon_rss_mb: Option<f64>,
    /// Why the `alsa_*` figures are missing ("not measured: no PulseAudio ..."), when they are.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alsa: Option<String>,
    /// Signalling decoders over 10 minutes of varied speech-like audio: CTCSS tones heard and
    /// DTMF digits reported (both should be 0); CTCSS open time over 50 tones x 4 speech
    /// signals, under speech at -10 dBFS and noise 10 dB under the -20 dBFS tone.
    pub ctcss_false_tones_10min: u64,
    pub dtmf_talk_off_digits_10min: u64,
    pub ctcss_open_median_ms: f64,
    pub ctcss_open_p95_ms: f64,
    pub ctcss_open_max_ms: f64,
}

pub fn main(json: bool, seconds: u32) -> ExitCode {
    let started = Instant::now();
    let mut r = Report::default();
    match run(&mut r, seconds) {
        Ok(()) => {}
        Err(e) => {
            eprintln!("roipd bench: {e}");
            return ExitCode::FAILURE;
        }
    }
    if json {
        println!("{}", serde_json::to_string(&r).unwrap_or_default());
    } else {
        print_human(&r);
        println!("(bench took {:.1} s)", started.elapsed().as_secs_f64());
    }
    ExitCode::SUCCESS
}

fn run(r: &mut Report, seconds: u32) -> Result<(), String> {
    let cost = kernels::frame_costs(seconds)?;
    (r.rx_frame_us, r.tx_frame_us) = (cost.rx_us, cost.tx_us);
    r.rx_added_latency_ms = latency::rx_added_ms()?;
    r.tx_added_latency_ms = latency::tx_added_ms()?;
    let j = jitter::lossy_network(0x5eed, 60.0);
    (r.jitter_on_time_pct, r.jitter_added_latency_p95_ms, r.jitter_lost_pct) =
        (j.on_time_pct, j.added_p95_ms, j.lost_pct);
    r.mixer_added_latency_ms = desk::mixer_added_latency_ms()?;
    let s = signalling::figures(10.0);
    (r.ctcss_false_tones_10min, r.dtmf_talk_off_digits_10min) = (s.ctcss_false_tones, s.dtmf_talk_off_digits);
    (r.ctcss_open_median_ms, r.ctcss_open_p95_ms, r.ctcss_open_max_ms) =
        (s.ctcss_open_median_ms, s.ctcss_open_p95_ms, s.ctcss_open_max_ms);
    let l = load::tx_gaps_under_load(std::time::Duration::from_secs(60))?;
    (r.tx_gaps_under_load, r.tx_concealed_under_load_pct, r.tx_load) = (l.gaps, l.concealed_pct, l.load);
    let f = crate::pipeline::fidelity::measure(&crate::pipeline::fidelity::PathConfig::default())?;
    (
        r.fidelity_tone_snr_db,
        r.fidelity_tone_settling_snr_db,
        r.fidelity_onset_error_db,
        r.fidelity_chirp_correlation,
    ) = (f.tone_snr_db, f.tone_settling_snr_db, f.onset_error_db, f.chirp_correlation);
    r.peak_rss_mb = peak_rss_mb().unwrap_or(0.0);
    let roipd = alsa_port::roipd_binary().ok_or("cannot find this binary")?;
    match alsa_port::measure(&roipd, alsa_port::SPAN) {
        Ok(a) => {
            r.alsa_idle_port_cpu_pct = Some(a.idle.cpu_pct);
            r.alsa_idle_port_wakeups_per_s = Some(a.idle.wakeups_per_s);
            r.alsa_idle_pulse_extra_cpu_pct = Some(a.idle.pulse_extra_cpu_pct);
            r.alsa_busy_port_cpu_pct = Some(a.busy.cpu_pct);
            r.alsa_busy_port_wakeups_per_s = Some(a.busy.wakeups_per_s);
            r.alsa_busy_pulse_extra_cpu_pct = Some(a.busy.pulse_extra_cpu_pct);
            r.alsa_port_rss_mb = Some(a.busy.rss_mb);
            r.alsa_port_anon_rss_mb = Some(a.busy.anon_rss_mb);
        }
        Err(why) => r.alsa = Some(why),
    }
    match kernels::callgrind_figures() {
        Ok(c) => {
            r.busy_port_minstr_per_s = Some(c.busy);
            r.bare_codec_minstr_per_s = Some(c.codec);
            r.idle_port_minstr_per_s = Some(c.idle);
            r.pipeline_overhead_pct = Some(100.0 * (c.busy / c.codec - 1.0));
            r.desk_minstr_per_s = Some(c.desk);
            r.record_minstr_per_s = Some(c.record);
            r.signalling_minstr_per_s = Some(c.signalling);
        }
        Err(why) => r.valgrind = Some(why),
    }
    Ok(())
}

fn print_human(r: &Report) {
    let c = crate::codec::EncoderConfig::default();
    println!(
        "roipd bench (48 kHz mono, 10 ms device frames, Opus {} ms / {:?} / {} kb/s / complexity {}, FEC {})",
        c.frame.millis(),
        c.bandwidth,
        c.bitrate_bps / 1000,
        c.complexity,
        if c.fec { "on" } else { "off" }
    );
    println!("  receive path   (capture, DSP, encode):  {:8.1} us per 10 ms frame", r.rx_frame_us);
    println!("  transmit path  (decode, DSP, playback): {:8.1} us per 10 ms frame", r.tx_frame_us);
    println!("  added latency, radio -> network:        {:8.1} ms", r.rx_added_latency_ms);
    println!("  added latency, network -> radio:        {:8.1} ms", r.tx_added_latency_ms);
    println!(
        "  jitter buffer, 10% loss + 40 ms jitter: {:8.2} % on time, p95 added {:.1} ms",
        r.jitter_on_time_pct, r.jitter_added_latency_p95_ms
    );
    println!("  desk mixer added latency:               {:8.1} ms", r.mixer_added_latency_ms);
    println!(
        "  60 s over A -> B under load:            {:8} silent gaps >= 10 ms, {:.2} % concealed ({})",
        r.tx_gaps_under_load, r.tx_concealed_under_load_pct, r.tx_load
    );
    println!(
        "  fidelity A -> B (tone, chirp):          {:8.1} dB SNR ({:.1} while settling), onset {:.2} dB off, chirp correlation {:.3}",
        r.fidelity_tone_snr_db, r.fidelity_tone_settling_snr_db, r.fidelity_onset_error_db, r.fidelity_chirp_correlation
    );
    println!("  peak RSS:                               {:8.1} MB", r.peak_rss_mb);
    let alsa = [r.alsa_idle_port_cpu_pct, r.alsa_idle_port_wakeups_per_s, r.alsa_idle_pulse_extra_cpu_pct];
    let busy = [r.alsa_busy_port_cpu_pct, r.alsa_busy_port_wakeups_per_s, r.alsa_busy_pulse_extra_cpu_pct];
    match (alsa, busy) {
        ([Some(c), Some(w), Some(p)], [Some(bc), Some(bw), Some(bp)]) => {
            println!("  ALSA (PulseAudio null sinks), idle:     {c:8.2} % CPU, {w:.0} wakeups/s, PulseAudio +{p:.2} %");
            println!(
                "  ALSA (PulseAudio null sinks), busy:     {bc:8.2} % CPU, {bw:.0} wakeups/s, PulseAudio +{bp:.2} %"
            );
            if let (Some(rss), Some(anon)) = (r.alsa_port_rss_mb, r.alsa_port_anon_rss_mb) {
                println!("  ALSA port daemon RSS (busy):            {rss:8.1} MB, {anon:.1} MB of it anonymous");
            }
        }
        _ => println!("  ALSA ports: {}", r.alsa.as_deref().unwrap_or("not measured")),
    }
    println!(
        "  signalling, 10 min of speech:           {} false CTCSS tones, {} DTMF digits (talk-off)",
        r.ctcss_false_tones_10min, r.dtmf_talk_off_digits_10min
    );
    println!(
        "  CTCSS open time (50 tones x 4):         median {:.0} ms, p95 {:.0} ms, max {:.0} ms",
        r.ctcss_open_median_ms, r.ctcss_open_p95_ms, r.ctcss_open_max_ms
    );
    match (r.busy_port_minstr_per_s, r.bare_codec_minstr_per_s, r.idle_port_minstr_per_s) {
        (Some(b), Some(c), Some(i)) => {
            println!("  callgrind, busy port:                   {b:8.1} M instr per audio-second");
            println!(
                "  callgrind, bare Opus encode+decode:     {c:8.1} M (pipeline overhead {:.1} %)",
                100.0 * (b / c - 1.0)
            );
            println!("  callgrind, idle port:                   {i:8.2} M instr per second");
            if let Some(d) = r.desk_minstr_per_s {
                println!("  callgrind, desk (50 ch, 5 talking, TX): {d:8.1} M instr per second");
            }
            if let Some(rec) = r.record_minstr_per_s {
                println!("  callgrind, recording one busy channel:  {rec:8.3} M instr per audio-second");
            }
            if let Some(s) = r.signalling_minstr_per_s {
                println!("  callgrind, CTCSS + DTMF decoders:       {s:8.2} M instr per audio-second");
            }
        }
        _ => println!("  callgrind: skipped ({})", r.valgrind.as_deref().unwrap_or("?")),
    }
}

/// Peak resident set (VmHWM) of this process in MB.
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 =
        status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb / 1024.0)
}

//! `alsa_*` figures: what a daemon's ports cost on real ALSA devices (PulseAudio null sinks
//! through ALSA's pulse plugin, [`super::rig`]), idle and busy, with PulseAudio's extra load.
//!
//! The daemon (`roipd run`, this binary) has one channel with radio A (VOX as COR, capturing
//! `ain.monitor`) and radio B (playing into `bout`): one receive path and one transmit path, the
//! work of one port as the simulated `idle`/`busy` kernels count it. Idle: nothing on A's
//! receive audio (A runs levels only, B's playback is paused). Busy: a 1 kHz tone into `ain`
//! (`pacat`), so A's VOX opens, A encodes, B keys, decodes and plays. CPU % of one core and
//! wakeups per second are summed over all the daemon's threads from /proc; PulseAudio's extra
//! load is its CPU % minus what it used alone before the daemon started.
//!
//! Without PulseAudio (or its ALSA plugin, or pacat) nothing is measured, and the reason starts
//! with "not measured: no PulseAudio".

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::rig::{self, null_sink, PulseServer, Rates};

/// How long each state is measured by `roipd bench`.
pub const SPAN: Duration = Duration::from_secs(10);

/// One state of the daemon on the rig.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PortCost {
    pub cpu_pct: f64,
    pub wakeups_per_s: f64,
    /// PulseAudio's CPU % above what it used with no client.
    pub pulse_extra_cpu_pct: f64,
    pub rss_mb: f64,
    /// Of which anonymous (heap, stacks, relocated data); the rest is code and read-only data.
    pub anon_rss_mb: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AlsaFigures {
    pub idle: PortCost,
    pub busy: PortCost,
    /// PulseAudio alone, CPU %.
    pub pulse_alone_cpu_pct: f64,
}

/// The daemon as a child: SIGTERM on drop (so it releases its PTTs), SIGKILL after 5 s.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child, not reaped yet.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Wait until the log has a line with all of each group's words.
fn wait_log(daemon: &mut Daemon, log: &Path, what: &[&[&str]], within: Duration) -> Result<(), String> {
    let until = Instant::now() + within;
    loop {
        let text = fs::read_to_string(log).unwrap_or_default();
        if what.iter().all(|words| text.lines().any(|l| words.iter().all(|w| l.contains(w)))) {
            return Ok(());
        }
        if let Ok(Some(status)) = daemon.0.try_wait() {
            return Err(format!("the daemon exited ({status}):\n{text}"));
        }
        if Instant::now() > until {
            let tail: Vec<&str> = text.lines().rev().take(20).collect();
            return Err(format!("no {what:?} in the daemon's log within {within:?}; its end:\n{}", tail.join("\n")));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn config(d: &Path) -> String {
    format!(
        "device_id = \"bench\"\n[gpio.sim]\ndir = \"{d}/lines\"\n[channel.ops]\n\
         [port.a]\nkind = \"radio\"\nchannel = \"ops\"\nptt = {{ line = \"sim:a-ptt\" }}\n[port.a.vox]\n\
         [port.a.audio]\ncapture = \"a_rx\"\n\
         [port.b]\nkind = \"radio\"\nchannel = \"ops\"\nptt = {{ line = \"sim:b-ptt\" }}\n\
         cor = {{ line = \"sim:b-cor\" }}\n\
         [port.b.audio]\nplayback = \"b_tx\"\n",
        d = d.display()
    )
}

/// Measure with the roipd binary `roipd`, `span` per state. Err: why nothing was measured,
/// starting with "not measured:".
pub fn measure(roipd: &Path, span: Duration) -> Result<AlsaFigures, String> {
    if let Some(why) = rig::missing_pulse_tools() {
        return Err(format!("not measured: no PulseAudio ({why})"));
    }
    run(roipd, span).map_err(|e| format!("not measured: {e}"))
}

fn run(roipd: &Path, span: Duration) -> Result<AlsaFigures, String> {
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let d = tmp.path();
    let pulse = PulseServer::start(d, &[null_sink("ain"), null_sink("bout")])
        .map_err(|e| format!("PulseAudio did not start: {e}"))?;
    let asound = d.join("asound.conf");
    fs::write(&asound, pulse.pcm("a_rx", "ain.monitor") + &pulse.pcm("b_tx", "bout")).map_err(|e| e.to_string())?;
    fs::write(d.join("bench.toml"), config(d)).map_err(|e| e.to_string())?;
    std::thread::sleep(Duration::from_secs(1));
    let alone = rig::measure(&[pulse.pid()], span)[0];

    let log = d.join("daemon.log");
    let mut cmd = Command::new(roipd);
    cmd.arg("run")
        .arg(d.join("bench.toml"))
        .env("ALSA_CONFIG_PATH", &asound)
        .env("RUNTIME_DIRECTORY", d.join("run"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).map_err(|e| e.to_string())?);
    let mut daemon = Daemon(cmd.spawn().map_err(|e| format!("cannot start {}: {e}", roipd.display()))?);
    let opened: [&[&str]; 3] =
        [&["roipd running"], &["audio device open", "dir=capture"], &["audio device open", "dir=playback"]];
    wait_log(&mut daemon, &log, &opened, Duration::from_secs(20))?;
    // The playback pauses once it has played out its first idle frames; let it settle.
    std::thread::sleep(Duration::from_secs(3));
    let pids = [daemon.0.id(), pulse.pid()];
    let cost = |r: &[Rates]| PortCost {
        cpu_pct: r[0].cpu_pct,
        wakeups_per_s: r[0].wakeups_per_s,
        pulse_extra_cpu_pct: r[1].cpu_pct - alone.cpu_pct,
        rss_mb: r[0].rss_mb,
        anon_rss_mb: r[0].anon_rss_mb,
    };
    let idle = cost(&rig::measure(&pids, span));

    let (mut pacat, writer) = pulse.play_raw("ain", rig::tone_raw(span.as_secs_f64() + 4.0), 20)?;
    std::thread::sleep(Duration::from_secs(2));
    let ptt = d.join("lines").join("b-ptt");
    let keyed = |when: &str| match fs::read_to_string(&ptt) {
        Ok(v) if v.trim() == "1" => Ok(()),
        other => Err(format!("radio B was not keyed {when} the tone (b-ptt: {other:?}); see the log")),
    };
    let busy = keyed("at the start of").map(|()| cost(&rig::measure(&pids, span)));
    let busy = busy.and_then(|b| keyed("at the end of").map(|()| b));
    let _ = pacat.kill();
    let _ = writer.join();
    let _ = pacat.wait();
    drop(daemon);
    let busy = busy.map_err(|e| format!("{e}\n{}", fs::read_to_string(&log).unwrap_or_default()))?;
    Ok(AlsaFigures { idle, busy, pulse_alone_cpu_pct: alone.cpu_pct })
}

/// This binary, when it is roipd (`roipd bench`); a test passes the binary itself.
pub fn roipd_binary() -> Option<PathBuf> {
    std::env::current_exe().ok()
}

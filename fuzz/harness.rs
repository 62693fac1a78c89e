//! Fuzz harness for every parser that takes outside input (issue 14 item 9), on stable Rust.
//!
//! A seeded mutation driver: each target starts from real seed inputs kept in
//! `fuzz/corpus/<target>/`, applies stacked byte, dictionary, splice and (for JSON) structure
//! mutations, and keeps a mutant in its pool when it produces an outcome (an accepted message
//! or an error text) not seen before: a cheap stand-in for coverage feedback that steers the
//! run deeper than the first error. Every input is checked for:
//! - panics (`catch_unwind`; the fuzz profile and test builds unwind),
//! - hangs: a watchdog thread aborts the run when one input takes longer than `hang`, and the
//!   slowest input is reported,
//! - unbounded allocation: a counting global allocator (declared by the binary including this
//!   module) tracks the live bytes of the fuzzing thread; an input whose peak exceeds
//!   `max_alloc` fails.
//!
//! A run is reproducible from (target, seed, count). Failing inputs are written to
//! `fuzz/crashes/`; once fixed they go into the corpus and a regression test.
//!
//! Included with `#[path]` by `fuzz/main.rs` (the long run, `scripts/fuzz-long`) and
//! `tests/fuzz.rs` (the short run in `cargo test`).

#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use roipd::core::jitter::{JitterBuffer, JitterConfig, Packet};
use roipd::core::restamp::Restamper;
use roipd::pipeline::MediaPacket;

// ---------------------------------------------------------------------------------------------
// Allocation metering
// ---------------------------------------------------------------------------------------------

/// Forwards to the system allocator; on a thread that armed it, tracks live bytes and their peak.
pub struct Counting;

thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn note(delta: isize) {
    // `try_with`: never panic inside the allocator, even during thread teardown.
    let _ = ARMED.try_with(|armed| {
        if armed.get() {
            let _ = LIVE.try_with(|l| {
                let v = l.get() + delta;
                l.set(v);
                let _ = PEAK.try_with(|p| p.set(p.get().max(v)));
            });
        }
    });
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; the
// bookkeeping touches only const-initialised thread-locals, never the heap.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size() as isize);
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size() as isize);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size as isize - layout.size() as isize);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note(-(layout.size() as isize));
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Runs `f`, returning its result and the peak of bytes it had allocated and not yet freed.
pub fn metered<R>(f: impl FnOnce() -> R) -> (R, usize) {
    LIVE.with(|l| l.set(0));
    PEAK.with(|p| p.set(0));
    ARMED.with(|a| a.set(true));
    let r = f();
    ARMED.with(|a| a.set(false));
    (r, PEAK.with(|p| p.get()).max(0) as usize)
}

// ---------------------------------------------------------------------------------------------
// Random numbers (seeded, reproducible)
// ---------------------------------------------------------------------------------------------

/// SplitMix64: tiny, fast, and fully determined by its seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    pub fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

// ---------------------------------------------------------------------------------------------
// Targets
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Text (TOML, SDP): byte and dictionary mutations.
    Text,
    /// JSON, possibly after a first line (a topic or command name): also structure mutations.
    Json,
    /// Binary records (RTP packets): byte and integer mutations.
    Binary,
}

pub struct Target {
    pub name: &'static str,
    pub shape: Shape,
    /// Largest input generated: a little above the parser's own size limit where it has one.
    pub max_len: usize,
    /// Runs one input. `Ok`: a short signature of the outcome (for the pool's novelty test);
    /// `Err`: an invariant was broken (a bug, as a panic is).
    pub run: fn(&[u8]) -> Result<String, String>,
}

pub const TARGETS: &[Target] = &[
    Target { name: "config", shape: Shape::Text, max_len: 16 * 1024, run: run_config },
    Target { name: "signaling_client", shape: Shape::Json, max_len: 80 * 1024, run: run_signaling_client },
    Target { name: "signaling_server", shape: Shape::Json, max_len: 80 * 1024, run: run_signaling_server },
    Target { name: "sdp", shape: Shape::Text, max_len: 16 * 1024, run: run_sdp },
    Target { name: "mqtt_command", shape: Shape::Json, max_len: 20 * 1024, run: run_mqtt_command },
    Target { name: "floor_mqtt", shape: Shape::Json, max_len: 20 * 1024, run: run_floor_mqtt },
    Target { name: "janus", shape: Shape::Json, max_len: 80 * 1024, run: run_janus },
    Target { name: "jitter", shape: Shape::Binary, max_len: 8 * 1024, run: run_jitter },
    Target { name: "restamper", shape: Shape::Binary, max_len: 8 * 1024, run: run_restamper },
];

/// The corpus directory each target reads (`rtp` seeds feed both packet targets).
pub fn corpus_dir(root: &Path, target: &str) -> PathBuf {
    let dir = match target {
        "jitter" | "restamper" => "rtp",
        other => other,
    };
    root.join("fuzz/corpus").join(dir)
}

/// The outcome's signature: its text with digits folded, so `at line 3` and `at line 4` count
/// as one outcome and the pool grows with kinds of behaviour, not with numbers.
fn signature(s: impl AsRef<str>) -> String {
    s.as_ref().chars().take(120).map(|c| if c.is_ascii_digit() { '#' } else { c }).collect()
}

/// The text of a text input: WebSocket text frames and the config loader only ever hand the
/// parsers valid UTF-8, so invalid bytes become U+FFFD rather than a wasted input.
fn text(data: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(data)
}

/// Splits `name\npayload` (the command or topic kind, then what came on it).
fn first_line(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

/// The one validation path of `roipd check` and `roipd run` (`config::load` minus the file
/// read), and the error rendering with its line/column spans.
fn run_config(data: &[u8]) -> Result<String, String> {
    let text = &*text(data);
    match roipd::config::load::parse_str(text, "fuzz.toml") {
        Ok(config) => {
            // What the daemon derives right after loading.
            for c in config.channel.values() {
                let _ = c.arbiter_config();
            }
            for p in config.port.values() {
                let _ = (p.channels(), p.priority());
            }
            Ok("ok".into())
        }
        Err(errors) => {
            let rendered = errors.to_string();
            if errors.0.is_empty() {
                return Err("an Err without any error".into());
            }
            for e in &errors.0 {
                if e.line > text.matches('\n').count() + 1 {
                    return Err(format!("error line {} beyond the text: {rendered}", e.line));
                }
            }
            Ok(signature(&errors.0[0].message))
        }
    }
}

/// The hub's side of a session: parse, then the offer checks a session makes (fingerprints,
/// mids against the SDP) and str0m's SDP parser, as the hub's media task runs them.
fn run_signaling_client(data: &[u8]) -> Result<String, String> {
    use roipd::net::protocol::{parse_client, validate_offer, ClientMessage};
    let text = &*text(data);
    match parse_client(text) {
        Ok(ClientMessage::Offer(o)) => {
            let r = validate_offer(&o, &["ops", "fire"]);
            let parsed = str0m::change::SdpOffer::from_sdp_string(&o.sdp).is_ok();
            Ok(format!("offer {} {parsed}", r.map(|_| "ok".to_owned()).unwrap_or_else(|e| signature(e.to_string()))))
        }
        Ok(m) => Ok(signature(format!("{m:?}").split(['(', ' ', '{']).next().unwrap_or_default())),
        Err(e) => Ok(signature(e.to_string())),
    }
}

/// The uplink's side: hub messages, and floor events back into the router's form.
fn run_signaling_server(data: &[u8]) -> Result<String, String> {
    use roipd::net::protocol::{parse_server, ServerMessage};
    let text = &*text(data);
    match parse_server(text) {
        Ok(ServerMessage::Floor(f)) => Ok(match f.to_router() {
            Ok(_) => "floor ok".into(),
            Err(e) => signature(e.to_string()),
        }),
        Ok(ServerMessage::Answer(a)) => {
            let parsed = str0m::change::SdpAnswer::from_sdp_string(&a.sdp).is_ok();
            Ok(format!("answer {parsed}"))
        }
        Ok(m) => Ok(signature(format!("{m:?}").split(['(', ' ', '{']).next().unwrap_or_default())),
        Err(e) => Ok(signature(e.to_string())),
    }
}

/// SDP text through every helper the hub and the Janus edge apply to offers and answers.
fn run_sdp(data: &[u8]) -> Result<String, String> {
    use roipd::net::protocol::{add_end_of_candidates, check_fingerprints, sdp_audio_mids, sdp_fingerprint};
    let sdp = &*text(data);
    let fp = check_fingerprints(sdp).map(|_| "fp".to_owned()).unwrap_or_else(|e| signature(e.to_string()));
    let mids = sdp_audio_mids(sdp).len().min(3);
    let _ = sdp_fingerprint(sdp);
    let _ = roipd::net::janus::protocol::sdp_has_candidate(sdp);
    let with_eoc = add_end_of_candidates(sdp);
    // Linear: at most an `a=end-of-candidates` and a CR per line.
    let lines = sdp.matches('\n').count() + 1;
    if with_eoc.len() > sdp.len() + lines * ("a=end-of-candidates\r\n".len() + 2) {
        return Err(format!("add_end_of_candidates grew {} bytes to {}", sdp.len(), with_eoc.len()));
    }
    let parsed = match str0m::change::SdpOffer::from_sdp_string(sdp) {
        Ok(offer) => {
            let _ = offer.to_sdp_string();
            "parsed".to_owned()
        }
        Err(_) => "unparsed".to_owned(),
    };
    Ok(format!("{fp} {mids} {parsed}"))
}

/// `roipd/<device>/cmd/<name>`: the name on the first line, then the payload. A leading `!`
/// on the name line marks the message retained.
fn run_mqtt_command(data: &[u8]) -> Result<String, String> {
    use roipd::fleet::protocol::{parse_request, Topics};
    let (name, payload) = first_line(data);
    let (retained, name) = match name.strip_prefix(b"!") {
        Some(n) => (true, n),
        None => (false, name),
    };
    let name = String::from_utf8_lossy(name);
    let topics = Topics::new("tower3");
    let topic = format!("roipd/tower3/cmd/{name}");
    let Some(name) = topics.command_name(&topic) else { return Ok("topic".into()) };
    let _ = topics.reply_topic(Some(name));
    match parse_request(name, payload, retained) {
        Ok(req) => {
            if retained {
                return Err("a retained command was accepted".into());
            }
            Ok(signature(format!("{:?}", req.command).split(['(', ' ', '{']).next().unwrap_or_default()))
        }
        Err(rej) => Ok(signature(&rej.error.message)),
    }
}

/// Floor over MQTT: which message kind on the first line (else a topic to parse), then the payload.
fn run_floor_mqtt(data: &[u8]) -> Result<String, String> {
    use roipd::net::floor_mqtt::protocol as p;
    let (kind, payload) = first_line(data);
    let r = match kind {
        b"host_presence" => p::parse_host_presence(payload).map(|_| ()),
        b"edge_presence" => p::parse_edge_presence(payload).map(|_| ()),
        b"to_host" => p::parse_to_host(payload).map(|_| ()),
        b"to_edge" => p::parse_to_edge(payload).map(|_| ()),
        b"holder" => p::parse_holder(payload).map(|_| ()),
        topic => {
            let topics = p::Topics::new("hub-1").ok_or("hub name")?;
            let topic = String::from_utf8_lossy(topic);
            return Ok(format!("topic {:?}", topics.parse(&topic).is_some()));
        }
    };
    Ok(match r {
        Ok(()) => format!("{} ok", String::from_utf8_lossy(kind)),
        Err(e) => signature(e.to_string()),
    })
}

/// Everything the Janus client reads from Janus's WebSocket.
fn run_janus(data: &[u8]) -> Result<String, String> {
    let text = &*text(data);
    Ok(match roipd::net::janus::protocol::parse(text) {
        Ok(m) => signature(format!("{:?}", m.kind).split(['(', ' ', '{']).next().unwrap_or_default()),
        Err(e) => signature(e.0),
    })
}

/// One packet record of the binary targets: `dt seq:u16 ts:u32 marker len payload[len]`
/// (big-endian). `dt` below 200 is milliseconds since the previous packet, above it seconds
/// (`dt - 199`): long pauses and stalls as well as bursts.
struct Record<'a> {
    dt: Duration,
    seq: u16,
    ts: u32,
    marker: bool,
    payload: &'a [u8],
}

fn records(mut data: &[u8]) -> impl Iterator<Item = Record<'_>> {
    std::iter::from_fn(move || {
        if data.len() < 9 {
            return None;
        }
        let dt = data[0];
        let seq = u16::from_be_bytes([data[1], data[2]]);
        let ts = u32::from_be_bytes([data[3], data[4], data[5], data[6]]);
        let marker = data[7] & 1 == 1;
        let len = usize::from(data[8]).min(data.len() - 9);
        let payload = &data[9..9 + len];
        data = &data[9 + len..];
        let dt = if dt < 200 { Duration::from_millis(dt.into()) } else { Duration::from_secs(u64::from(dt - 199)) };
        Some(Record { dt, seq, ts, marker, payload })
    })
}

/// Buffer settings the first byte picks: the default, and the extremes config allows.
fn jitter_config(sel: u8) -> JitterConfig {
    let ms = Duration::from_millis;
    let d = JitterConfig::default();
    match sel % 5 {
        0 => d,
        1 => JitterConfig { frame: ms(10), min_depth: ms(10), max_depth: ms(60), ..d },
        2 => JitterConfig { max_depth: ms(5000), window: 10_000, ..d },
        3 => JitterConfig { frame: ms(60), max_depth: ms(120), max_conceal: ms(0), max_payload: 64, ..d },
        _ => JitterConfig { min_depth: ms(0), max_depth: ms(0), jitter_percentile: 2.0, window: 0, ..d },
    }
}

/// RTP into the jitter buffer with a playout clock popping once per frame; the depth may
/// never exceed `max_depth` (the buffer's documented bound).
fn run_jitter(data: &[u8]) -> Result<String, String> {
    let Some((&sel, rest)) = data.split_first() else { return Ok("empty".into()) };
    let mut jb = JitterBuffer::new(jitter_config(sel));
    let max_ms = jb.config().max_depth.as_secs_f64() * 1000.0;
    let start = Instant::now();
    let mut now = start;
    let mut next_pop = start;
    let mut outcomes = 0u32;
    let check = |jb: &JitterBuffer, what: &str| -> Result<(), String> {
        let depth = jb.stats().depth_ms;
        if depth > max_ms + 1e-6 {
            return Err(format!("depth {depth} ms above max_depth {max_ms} ms after {what}"));
        }
        Ok(())
    };
    for r in records(rest) {
        now += r.dt;
        // Pops due before this arrival (at most 10 s worth: a long stall resets below).
        let mut pops = 0;
        while next_pop <= now && pops < 500 {
            outcomes |= 1 << (playout_kind(&jb.pop(next_pop)) as u32);
            check(&jb, "pop")?;
            next_pop += jb.frame_duration().max(Duration::from_millis(2));
            pops += 1;
        }
        if next_pop < now {
            next_pop = now;
        }
        jb.push(now, Packet { seq: r.seq, timestamp: r.ts, marker: r.marker, payload: r.payload });
        check(&jb, "push")?;
    }
    for _ in 0..20 {
        outcomes |= 1 << (playout_kind(&jb.pop(next_pop)) as u32);
        check(&jb, "pop")?;
        next_pop += jb.frame_duration();
    }
    Ok(format!("{sel} {outcomes:b}"))
}

fn playout_kind(p: &roipd::core::jitter::Playout<'_>) -> u8 {
    use roipd::core::jitter::Playout;
    match p {
        Playout::Packet(_) => 0,
        Playout::Fec(_) => 1,
        Playout::Conceal => 2,
        Playout::Silence => 3,
        _ => 4,
    }
}

/// RTP from any number of talkers into the outgoing stream's restamper.
fn run_restamper(data: &[u8]) -> Result<String, String> {
    let Some((&sel, rest)) = data.split_first() else { return Ok("empty".into()) };
    let mut rs = Restamper::new(u16::from(sel) * 257, u32::from(sel).wrapping_mul(0x0101_0101));
    let mut now = Instant::now();
    let (mut dups, mut markers) = (0u32, 0u32);
    for r in records(rest) {
        now += r.dt;
        let packet = MediaPacket { seq: r.seq, timestamp: r.ts, marker: r.marker, payload: r.payload.to_vec() };
        match rs.stamp(now, &packet) {
            None => dups += 1,
            Some(s) => {
                if s.seq == 0 {
                    return Err("stamped sequence number 0".into());
                }
                markers += u32::from(s.marker);
            }
        }
    }
    Ok(format!("{} {}", dups.min(3), markers.min(3)))
}

// ---------------------------------------------------------------------------------------------
// Mutation
// ---------------------------------------------------------------------------------------------

const INTERESTING: &[&str] = &[
    "0",
    "-1",
    "1",
    "255",
    "256",
    "65535",
    "65536",
    "-2147483649",
    "4294967296",
    "9223372036854775807",
    "-9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "1e999",
    "-1e999",
    "1e-400",
    "0.5",
    "NaN",
    "inf",
    "-inf",
    "nan",
    "1.7976931348623157e308",
    "null",
    "true",
    "false",
    "\"\"",
    "[]",
    "{}",
    "\\u0000",
    "\\ud800",
    "\\\"",
    "é",
    "\u{1F642}",
    "\u{202E}",
    "\t",
    "\r",
    "\r\n",
    "\n",
    "\0",
    "/",
    "#",
    "+",
    "..",
    "%",
];

const JSON_TOKENS: &[&str] = &["{", "}", "[", "]", ",", ":", "\"", "\\", "{\"type\":", ",\"on\":true", "\"on\":false,"];
const TOML_TOKENS: &[&str] =
    &["[", "]", "[[", "]]", "=", "\"\"\"", "'''", ".", "\\", "'", "#", " = [", "{", "}", "1979-05-27T07:32:00Z", "0x"];
const SDP_TOKENS: &[&str] = &[
    "\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n",
    "\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n",
    "\r\na=mid:",
    "\r\na=fingerprint:sha-256 ",
    "\r\na=fingerprint:md5 ",
    "\r\na=rtpmap:111 opus/48000/2",
    "\r\na=candidate:1 1 udp 1 127.0.0.1 9 typ host",
    "\r\na=ssrc:1 cname:x",
    "\r\na=setup:",
    "\r\na=end-of-candidates",
    ":",
    " ",
];

/// Words of the seed inputs (keys, names, values): the target's own vocabulary.
fn auto_dictionary(corpus: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut words = HashSet::new();
    for input in corpus {
        for w in input.split(|b| !(b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-' || *b == b'.')) {
            if (2..=40).contains(&w.len()) {
                words.insert(w.to_vec());
            }
        }
    }
    let mut v: Vec<_> = words.into_iter().collect();
    v.sort();
    v
}

pub struct Mutator {
    dict: Vec<Vec<u8>>,
    max_len: usize,
    shape: Shape,
}

impl Mutator {
    pub fn new(target: &Target, corpus: &[Vec<u8>]) -> Self {
        let mut dict = auto_dictionary(corpus);
        let tokens: &[&str] = match (target.shape, target.name) {
            (_, "config") => TOML_TOKENS,
            (_, "sdp") => SDP_TOKENS,
            (Shape::Json, _) => JSON_TOKENS,
            _ => &[],
        };
        dict.extend(INTERESTING.iter().chain(tokens).map(|s| s.as_bytes().to_vec()));
        Self { dict, max_len: target.max_len, shape: target.shape }
    }

    /// A mutant of `base` (1-6 stacked mutations), possibly spliced with `other`.
    pub fn mutate(&self, rng: &mut Rng, base: &[u8], other: &[u8]) -> Vec<u8> {
        let mut out = base.to_vec();
        if self.shape == Shape::Json && rng.chance(3) {
            if let Some(m) = json_mutation(rng, &out, &self.dict) {
                out = m;
            }
        }
        let most = if rng.chance(4) { 6 } else { 2 };
        for _ in 0..1 + rng.below(most) {
            self.byte_mutation(rng, &mut out, other);
        }
        out.truncate(self.max_len);
        out
    }

    fn byte_mutation(&self, rng: &mut Rng, v: &mut Vec<u8>, other: &[u8]) {
        let pos = |rng: &mut Rng, v: &Vec<u8>| rng.below(v.len() + 1);
        match rng.below(12) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = *rng.pick(b"\0\x01\x7f\x80\xff\"\\{}[],:=\n\r .#-09aZ\xc3\xa9\xed\xa0");
            }
            2 => {
                let at = pos(rng, v);
                let n = 1 + rng.below(8);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                v.splice(at..at, bytes);
            }
            3 if !v.is_empty() => {
                let a = rng.below(v.len());
                let most = if rng.chance(4) { 4096 } else { 16 };
                let n = 1 + rng.below((v.len() - a).min(most));
                v.drain(a..a + n);
            }
            4 if !v.is_empty() => {
                // Copy a chunk elsewhere.
                let a = rng.below(v.len());
                let n = 1 + rng.below((v.len() - a).min(64));
                let chunk = v[a..a + n].to_vec();
                let at = pos(rng, v);
                v.splice(at..at, chunk);
            }
            5 | 6 => {
                let word = rng.pick(&self.dict).clone();
                let at = pos(rng, v);
                if rng.chance(2) || v.is_empty() {
                    v.splice(at..at, word);
                } else {
                    let end = (at + word.len()).min(v.len());
                    v.splice(at..end, word);
                }
            }
            7 if !other.is_empty() => {
                // Splice: a prefix of this input and a suffix of another.
                let cut = pos(rng, v).min(v.len());
                let from = rng.below(other.len());
                v.truncate(cut);
                v.extend_from_slice(&other[from..]);
            }
            8 if !v.is_empty() => {
                // Replace a run of digits with an interesting number.
                let start = rng.below(v.len());
                if let Some(i) = v[start..].iter().position(u8::is_ascii_digit) {
                    let a = start + i;
                    let b = a + v[a..].iter().take_while(|c| c.is_ascii_digit()).count();
                    v.splice(a..b, rng.pick(INTERESTING).bytes());
                }
            }
            9 if !v.is_empty() => {
                // Repeat a chunk many times: size and nesting stress.
                let a = rng.below(v.len());
                let n = 1 + rng.below((v.len() - a).min(32));
                let chunk = v[a..a + n].to_vec();
                let most = if rng.chance(8) { 2000 } else { 50 };
                let times = 1 + rng.below(most);
                let at = pos(rng, v);
                let rep: Vec<u8> = chunk.iter().copied().cycle().take(n * times).collect();
                v.splice(at..at, rep);
            }
            10 if v.len() >= 4 => {
                // An interesting integer, binary, at a random place (packet headers).
                let i = rng.below(v.len() - 3);
                let x: u32 = *rng.pick(&[0, 1, 0x7fff, 0x8000, 0xffff, 0x7fff_ffff, 0x8000_0000, 0xffff_ffff]);
                let bytes = if rng.chance(2) { x.to_be_bytes() } else { (rng.next() as u32).to_be_bytes() };
                let n = if rng.chance(2) { 2 } else { 4 };
                v[i..i + n].copy_from_slice(&bytes[4 - n..]);
            }
            11 if !v.is_empty() => {
                let n = rng.below(v.len());
                v.truncate(n);
            }
            _ => {
                let at = pos(rng, v);
                v.insert(at, rng.next() as u8);
            }
        }
    }
}

/// Structure-aware JSON mutation: parse (after an optional first line), change one node, write.
fn json_mutation(rng: &mut Rng, input: &[u8], dict: &[Vec<u8>]) -> Option<Vec<u8>> {
    use serde_json::Value;
    let (head, body) = match input.first() {
        Some(b'{') | Some(b'[') => (&input[..0], input),
        _ => {
            let i = input.iter().position(|&b| b == b'\n')?;
            (&input[..=i], &input[i + 1..])
        }
    };
    let mut value: Value = serde_json::from_slice(body).ok()?;
    // Pick a random node: walk down as a JSON pointer, then borrow it mutably.
    let mut pointer = String::new();
    let mut at = &value;
    for _ in 0..rng.below(6) {
        let next = match at {
            Value::Object(m) if !m.is_empty() => {
                let (k, v) = m.iter().nth(rng.below(m.len()))?;
                pointer.push('/');
                pointer.push_str(&k.replace('~', "~0").replace('/', "~1"));
                v
            }
            Value::Array(a) if !a.is_empty() => {
                let i = rng.below(a.len());
                pointer.push_str(&format!("/{i}"));
                &a[i]
            }
            _ => break,
        };
        at = next;
    }
    let node = value.pointer_mut(&pointer)?;
    let mut rng2 = Rng::new(rng.next());
    let word = String::from_utf8_lossy(rng2.pick(dict).as_slice()).into_owned();
    match rng.below(9) {
        0 => *node = Value::Null,
        1 => *node = serde_json::json!(rng2.next() as i64),
        2 => {
            let n = *rng2.pick(&["-1", "0", "1e308", "18446744073709551615", "-0.5", "4294967296"]);
            *node = serde_json::from_str(n).ok()?
        }
        3 => *node = Value::String(word),
        4 => *node = Value::String("x".repeat(rng2.below(70_000))),
        5 => *node = serde_json::json!([node.clone(), node.clone()]),
        6 => {
            if let Value::Object(m) = node {
                if let Some(k) = m.keys().nth(rng2.below(m.len().max(1))).cloned() {
                    m.remove(&k);
                }
            }
        }
        7 => {
            if let Value::Object(m) = node {
                let v = m.values().nth(rng2.below(m.len().max(1))).cloned().unwrap_or(Value::Bool(true));
                m.insert(String::from_utf8_lossy(rng2.pick(dict).as_slice()).into_owned(), v);
            }
        }
        _ => {
            // Deep nesting.
            let depth = 1 + rng2.below(300);
            let mut v = node.clone();
            for _ in 0..depth {
                v = serde_json::json!([v]);
            }
            *node = v;
        }
    }
    let mut out = head.to_vec();
    out.extend(serde_json::to_vec(&value).ok()?);
    Some(out)
}

// ---------------------------------------------------------------------------------------------
// Driver
// ---------------------------------------------------------------------------------------------

pub struct Limits {
    /// One input running longer than this is a hang: the watchdog reports it and aborts.
    pub hang: Duration,
    /// Peak live heap bytes one input may reach.
    pub max_alloc: usize,
}

#[derive(Debug, Default)]
pub struct Report {
    pub execs: u64,
    pub elapsed: Duration,
    pub slowest: Duration,
    pub slowest_len: usize,
    pub slowest_input: Vec<u8>,
    pub peak_alloc: usize,
    pub peak_alloc_len: usize,
    pub peak_alloc_input: Vec<u8>,
    pub pool: usize,
    pub outcomes: usize,
}

#[derive(Debug)]
pub struct Failure {
    pub what: String,
    pub input: Vec<u8>,
    pub saved: Option<PathBuf>,
}

pub fn load_corpus(dir: &Path) -> Vec<Vec<u8>> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("fuzz corpus {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let corpus: Vec<_> = files.iter().map(|p| std::fs::read(p).expect("corpus file")).collect();
    assert!(!corpus.is_empty(), "fuzz corpus {} is empty", dir.display());
    corpus
}

/// Runs `execs` inputs of `target`: first every corpus file as is, then mutants.
/// `crash_dir`: where a failing input is written.
pub fn fuzz(
    target: &Target,
    corpus: &[Vec<u8>],
    seed: u64,
    execs: u64,
    limits: &Limits,
    crash_dir: Option<&Path>,
) -> Result<Report, Failure> {
    let mut rng = Rng::new(seed);
    let mutator = Mutator::new(target, corpus);
    let mut pool: Vec<Vec<u8>> = corpus.to_vec();
    let mut seen = HashSet::new();
    let mut report = Report::default();
    const MAX_POOL: usize = 4096;

    // Watchdog: the current input and when it started (µs since `t0`, 0 = idle).
    let t0 = Instant::now();
    let current = Arc::new(Mutex::new(Vec::new()));
    let started = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let (current, started, done) = (current.clone(), started.clone(), done.clone());
        let (hang, name, crash_dir) = (limits.hang, target.name, crash_dir.map(Path::to_path_buf));
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
                let s = started.load(Ordering::Relaxed);
                if s != 0 && t0.elapsed().as_micros() as u64 > s + hang.as_micros() as u64 {
                    let input = current.lock().map(|c| c.clone()).unwrap_or_default();
                    let saved = crash_dir.and_then(|d| save(&d, name, "hang", &input));
                    eprintln!("fuzz {name}: one input ran longer than {hang:?} (a hang), saved as {saved:?}; aborting");
                    std::process::abort();
                }
            }
        })
    };

    let run_start = Instant::now();
    let mut result = Ok(());
    for i in 0..execs {
        let input = if (i as usize) < corpus.len() {
            corpus[i as usize].clone()
        } else {
            let base = &pool[rng.below(pool.len())];
            let other = &pool[rng.below(pool.len())];
            mutator.mutate(&mut rng, base, other)
        };
        if let Ok(mut c) = current.lock() {
            c.clear();
            c.extend_from_slice(&input);
        }
        let t = Instant::now();
        started.store(t.duration_since(t0).as_micros().max(1) as u64, Ordering::Relaxed);
        let (outcome, peak) = metered(|| catch_unwind(AssertUnwindSafe(|| (target.run)(&input))));
        let took = t.elapsed();
        started.store(0, Ordering::Relaxed);
        report.execs += 1;
        if took > report.slowest {
            report.slowest = took;
            report.slowest_len = input.len();
            report.slowest_input = input.clone();
        }
        if peak > report.peak_alloc {
            report.peak_alloc = peak;
            report.peak_alloc_len = input.len();
            report.peak_alloc_input = input.clone();
        }
        let failure = match outcome {
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                Some(format!("panic: {msg}"))
            }
            Ok(Err(broken)) => Some(format!("invariant: {broken}")),
            Ok(Ok(sig)) => {
                if peak > limits.max_alloc {
                    Some(format!("allocated {peak} bytes for a {}-byte input", input.len()))
                } else {
                    let mut h = DefaultHasher::new();
                    sig.hash(&mut h);
                    if seen.insert(h.finish()) && (i as usize) >= corpus.len() {
                        if pool.len() < MAX_POOL {
                            pool.push(input.clone());
                        } else {
                            let j = rng.below(MAX_POOL - corpus.len()) + corpus.len();
                            pool[j] = input.clone();
                        }
                    }
                    None
                }
            }
        };
        if let Some(what) = failure {
            let saved = crash_dir.and_then(|d| save(d, target.name, "crash", &input));
            result = Err(Failure { what, input, saved });
            break;
        }
    }
    done.store(true, Ordering::Relaxed);
    let _ = watchdog.join();
    report.elapsed = run_start.elapsed();
    report.pool = pool.len();
    report.outcomes = seen.len();
    result.map(|()| report)
}

fn save(dir: &Path, target: &str, kind: &str, input: &[u8]) -> Option<PathBuf> {
    let mut h = DefaultHasher::new();
    input.hash(&mut h);
    let path = dir.join(format!("{target}-{kind}-{:016x}", h.finish()));
    std::fs::create_dir_all(dir).ok()?;
    std::fs::write(&path, input).ok()?;
    Some(path)
}

/// Silences the default panic message while fuzzing (a panic is reported as a failure with
/// its message); `fuzz` restores nothing, so call this once per process.
pub fn quiet_panics() {
    std::panic::set_hook(Box::new(|_| {}));
}

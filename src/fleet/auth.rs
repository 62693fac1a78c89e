//! The fleet key (`[mqtt] fleet_key_file`): an HMAC-SHA256 over every floor message
//! (`crate::net::floor_mqtt::protocol`) and over fleet commands, so that a client that can
//! merely publish to the broker cannot key a radio, take a floor, say a host is offline or
//! run a command. Threat model and formats: `docs/mqtt.md`, "Authentication".
//!
//! Pure: time comes in as an argument, the key as bytes (read by [`crate::config::secret`]).
//!
//! Signed commands are an envelope around the command's own JSON, so the MAC covers the exact
//! bytes the sender wrote (no JSON canonicalisation):
//! `{"ts": <unix ms>, "nonce": "<token>", "cmd": "<the command's JSON as a string>", "mac": "<hex>"}`.
//! A box runs a signed command once, only within [`COMMAND_WINDOW_MS`] of its own clock.

use std::collections::{HashSet, VecDeque};
use std::fmt;

use ring::hmac;
use serde::{Deserialize, Serialize};

/// Shortest key accepted: 32 bytes, the output size of SHA-256 (`openssl rand -hex 32` gives 64).
pub const MIN_KEY_BYTES: usize = 32;
/// A signed command is run only when its `ts` is within this of the box's clock (both ways).
pub const COMMAND_WINDOW_MS: u64 = 30_000;
/// Signed commands remembered within the window; more than this many in 30 s are refused.
pub const MAX_REMEMBERED_COMMANDS: usize = 4096;
/// Nonces: 8-64 of `[A-Za-z0-9_-]`.
const NONCE_LEN: std::ops::RangeInclusive<usize> = 8..=64;

/// The per-fleet key. Its bytes never appear in `Debug` output or logs.
#[derive(Clone)]
pub struct FleetKey(hmac::Key);

impl fmt::Debug for FleetKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FleetKey(***)")
    }
}

impl FleetKey {
    /// The key file's bytes, without the line end an editor leaves; at least [`MIN_KEY_BYTES`].
    pub fn new(secret: &[u8]) -> Result<Self, String> {
        let mut end = secret.len();
        while end > 0 && matches!(secret[end - 1], b'\n' | b'\r') {
            end -= 1;
        }
        let secret = &secret[..end];
        if secret.len() < MIN_KEY_BYTES {
            return Err(format!(
                "the key is {} bytes; at least {MIN_KEY_BYTES} are needed (e.g. `openssl rand -hex 32`)",
                secret.len()
            ));
        }
        Ok(Self(hmac::Key::new(hmac::HMAC_SHA256, secret)))
    }

    /// HMAC-SHA256 over `parts`, each length-prefixed (so no two lists of parts sign alike), hex.
    pub fn mac(&self, parts: &[&[u8]]) -> String {
        hex(hmac::sign(&self.0, &framed(parts)).as_ref())
    }

    /// Constant-time check of a hex MAC made by [`FleetKey::mac`].
    pub fn verify(&self, parts: &[&[u8]], mac_hex: &str) -> bool {
        match unhex(mac_hex) {
            Some(tag) => hmac::verify(&self.0, &framed(parts), &tag).is_ok(),
            None => false,
        }
    }
}

fn framed(parts: &[&[u8]]) -> Vec<u8> {
    let mut data = Vec::with_capacity(parts.iter().map(|p| p.len() + 8).sum());
    for p in parts {
        data.extend_from_slice(&(p.len() as u64).to_be_bytes());
        data.extend_from_slice(p);
    }
    data
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Lower-case hex of exactly 32 bytes (a SHA-256 tag), else None.
fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() != 64 {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    s.as_bytes().chunks(2).map(|p| Some(digit(p[0])? << 4 | digit(p[1])?)).collect()
}

// ---------------------------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------------------------

/// A signed command as it travels on `roipd/<device>/cmd/<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedCommand {
    pub ts: u64,
    pub nonce: String,
    pub cmd: String,
    pub mac: String,
}

/// Commands a box runs without a signature even when it has a fleet key: they change nothing
/// (`get_config` shows the config with secrets redacted; `identify` blinks a LED).
pub const UNSIGNED_COMMANDS: &[&str] = &["get_config", "identify"];

/// Commands a box without a fleet key (and without `insecure_unsigned`) still runs unsigned:
/// none of them can key a radio or lock anyone out (`listen` and `volume` only change what this
/// box's own speaker plays, as `replay_last` does; `reload_config` re-reads the operator's file). Everything else
/// (`remote_ptt`, `tx_inhibit`, `set_channel`, `desk`, `restart`, and any command added later)
/// is refused until the box has a fleet key.
pub const KEYLESS_COMMANDS: &[&str] = &["get_config", "identify", "listen", "volume", "reload_config", "replay_last"];

/// Why a command's signature was not accepted (the reply's message; nothing runs).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandAuthError {
    #[error("this box has a fleet key: `{0}` must be signed (see `roipd sign-command`)")]
    Unsigned(String),
    #[error("a signed command, but this box has no fleet key (`[mqtt] fleet_key_file`)")]
    NoKey,
    #[error(
        "this box has no fleet key (`[mqtt] fleet_key_file`), so `{0}`, which could key a radio or lock others \
         out, is refused from anyone: give the box a fleet key and sign the command (`roipd sign-command`; \
         docs/mqtt.md, \"Authentication\")"
    )]
    NoKeyRefused(String),
    #[error("not a signed command envelope: {0}")]
    BadEnvelope(String),
    #[error("bad signature")]
    BadMac,
    #[error("its time is {0} ms away from this box's clock (at most {COMMAND_WINDOW_MS}); check both clocks")]
    Stale(i64),
    #[error("replayed: this signed command already ran")]
    Replayed,
    #[error("more than {MAX_REMEMBERED_COMMANDS} signed commands in {COMMAND_WINDOW_MS} ms")]
    Flood,
}

fn command_parts<'a>(topic: &'a str, ts: &'a str, nonce: &'a str, cmd: &'a str) -> [&'a [u8]; 5] {
    [b"roipd-cmd-v1", topic.as_bytes(), ts.as_bytes(), nonce.as_bytes(), cmd.as_bytes()]
}

/// The payload to publish on `topic` (`roipd/<device>/cmd/<name>`) for the command JSON `cmd`.
pub fn sign_command(key: &FleetKey, topic: &str, now_ms: u64, nonce: &str, cmd: &str) -> String {
    let mac = key.mac(&command_parts(topic, &now_ms.to_string(), nonce, cmd));
    let signed = SignedCommand { ts: now_ms, nonce: nonce.to_owned(), cmd: cmd.to_owned(), mac };
    serde_json::to_string(&signed).unwrap_or_default()
}

/// Is this payload a signed command envelope (a JSON object with `mac` and `cmd`)? Cheap
/// enough to ask of every command; a plain command never has both.
pub fn looks_signed(payload: &[u8]) -> bool {
    // A map only: a struct would also deserialize from a JSON array (`[1, 2]`).
    serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(payload)
        .is_ok_and(|m| m.contains_key("mac") && m.contains_key("cmd"))
}

/// The box's memory of the signed commands it accepted in the last window: each runs once.
#[derive(Debug, Default)]
pub struct CommandGuard {
    seen: HashSet<(u64, String)>,
    order: VecDeque<(u64, String)>,
}

impl CommandGuard {
    /// Checks a payload from `topic` at `now_ms` (the box's clock, unix ms): the command's own
    /// JSON when the signature is good, fresh and not seen before.
    pub fn open(
        &mut self,
        key: &FleetKey,
        topic: &str,
        payload: &[u8],
        now_ms: u64,
    ) -> Result<String, CommandAuthError> {
        let env: SignedCommand =
            serde_json::from_slice(payload).map_err(|e| CommandAuthError::BadEnvelope(cut(&e.to_string())))?;
        if !NONCE_LEN.contains(&env.nonce.len())
            || !env.nonce.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
        {
            return Err(CommandAuthError::BadEnvelope("nonce must be 8-64 of [A-Za-z0-9_-]".into()));
        }
        if !key.verify(&command_parts(topic, &env.ts.to_string(), &env.nonce, &env.cmd), &env.mac) {
            return Err(CommandAuthError::BadMac);
        }
        let skew = env.ts as i128 - now_ms as i128;
        if skew.unsigned_abs() > COMMAND_WINDOW_MS as u128 {
            return Err(CommandAuthError::Stale(skew.clamp(i64::MIN as i128, i64::MAX as i128) as i64));
        }
        self.expire(now_ms);
        let id = (env.ts, env.nonce);
        if self.seen.contains(&id) {
            return Err(CommandAuthError::Replayed);
        }
        if self.order.len() >= MAX_REMEMBERED_COMMANDS {
            return Err(CommandAuthError::Flood);
        }
        self.seen.insert(id.clone());
        self.order.push_back(id);
        Ok(env.cmd)
    }

    /// Forget what is outside the window: it would be refused as stale anyway. Entries are
    /// expired by their `ts`, which may arrive out of order, so scan while the front is old.
    fn expire(&mut self, now_ms: u64) {
        let oldest = now_ms.saturating_sub(COMMAND_WINDOW_MS);
        self.order.retain(|id| {
            let keep = id.0 >= oldest;
            if !keep {
                self.seen.remove(id);
            }
            keep
        });
    }
}

/// Counts rejected floor messages or commands and says when to report them: the first at once, then at most
/// one report per `every` with the number dropped since (a flood of forgeries is not a flood of
/// events). Time comes in.
#[derive(Debug, Clone, Default)]
pub struct RejectCounter {
    pub total: u64,
    unreported: u64,
    last_report: Option<std::time::Instant>,
}

impl RejectCounter {
    /// One more rejected message at `now`: Some(n) when a report of `n` rejections is due.
    pub fn reject(&mut self, now: std::time::Instant, every: std::time::Duration) -> Option<u64> {
        self.total += 1;
        self.unreported += 1;
        if self.last_report.is_some_and(|t| now.saturating_duration_since(t) < every) {
            return None;
        }
        self.last_report = Some(now);
        Some(std::mem::take(&mut self.unreported))
    }
}

fn cut(s: &str) -> String {
    s.chars().take(120).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> FleetKey {
        FleetKey::new(b"0123456789abcdef0123456789abcdef\n").unwrap()
    }

    #[test]
    fn keys_are_long_enough_and_never_shown() {
        assert!(FleetKey::new(b"short\n").unwrap_err().contains("at least 32"));
        assert!(FleetKey::new(&[b'\n'; 40]).is_err());
        assert_eq!(format!("{:?}", key()), "FleetKey(***)");
    }

    #[test]
    fn macs_bind_every_part_and_its_boundaries() {
        let k = key();
        let mac = k.mac(&[b"ab", b"c"]);
        assert_eq!(mac.len(), 64);
        assert!(k.verify(&[b"ab", b"c"], &mac));
        assert!(!k.verify(&[b"a", b"bc"], &mac), "moving a boundary changes the MAC");
        assert!(!k.verify(&[b"ab", b"d"], &mac));
        assert!(!k.verify(&[b"ab", b"c"], &mac.to_uppercase()));
        assert!(!k.verify(&[b"ab", b"c"], &mac[..62]));
        assert!(!k.verify(&[b"ab", b"c"], "zz"));
        let other = FleetKey::new(b"0123456789abcdef0123456789abcdeX").unwrap();
        assert!(!other.verify(&[b"ab", b"c"], &mac));
    }

    #[test]
    fn a_signed_command_runs_once_within_the_window() {
        let (k, topic, t0) = (key(), "roipd/gw/cmd/remote_ptt", 1_800_000_000_000);
        let cmd = r#"{"port":"radio1","on":true,"max_duration_s":5}"#;
        let payload = sign_command(&k, topic, t0, "nonce-0001", cmd);
        assert!(looks_signed(payload.as_bytes()));
        assert!(!looks_signed(cmd.as_bytes()));
        assert!(!looks_signed(b"[1, 2]"), "an array is not an envelope");
        let mut g = CommandGuard::default();
        assert_eq!(g.open(&k, topic, payload.as_bytes(), t0 + 100).unwrap(), cmd);
        assert_eq!(g.open(&k, topic, payload.as_bytes(), t0 + 200), Err(CommandAuthError::Replayed));
        // Another topic (box or command), a changed field, an old or future time: refused.
        assert_eq!(g.open(&k, "roipd/gw2/cmd/remote_ptt", payload.as_bytes(), t0), Err(CommandAuthError::BadMac));
        let tampered = payload.replace("max_duration_s\\\":5", "max_duration_s\\\":300");
        assert_ne!(tampered, payload);
        assert_eq!(g.open(&k, topic, tampered.as_bytes(), t0), Err(CommandAuthError::BadMac));
        let late = sign_command(&k, topic, t0, "nonce-0002", cmd);
        assert!(matches!(
            g.open(&k, topic, late.as_bytes(), t0 + COMMAND_WINDOW_MS + 1),
            Err(CommandAuthError::Stale(_))
        ));
        assert!(matches!(
            g.open(&k, topic, late.as_bytes(), t0 - COMMAND_WINDOW_MS - 1),
            Err(CommandAuthError::Stale(_))
        ));
        // Past the window the memory is let go; the command itself is stale by then.
        g.open(&k, topic, late.as_bytes(), t0).unwrap();
        assert_eq!(g.order.len(), 2);
        let fresh = sign_command(&k, topic, t0 + 2 * COMMAND_WINDOW_MS, "nonce-0003", cmd);
        g.open(&k, topic, fresh.as_bytes(), t0 + 2 * COMMAND_WINDOW_MS).unwrap();
        assert_eq!(g.order.len(), 1);
    }

    #[test]
    fn malformed_envelopes_are_errors() {
        let (k, topic) = (key(), "roipd/gw/cmd/restart");
        let mut g = CommandGuard::default();
        let mac = "0".repeat(64);
        for p in [
            "".to_string(),
            "{}".into(),
            "[1]".into(),
            format!(r#"{{"ts":-1,"nonce":"abcdefgh","cmd":"{{}}","mac":"{mac}"}}"#),
            format!(r#"{{"ts":1,"nonce":"short","cmd":"{{}}","mac":"{mac}"}}"#),
            format!(r#"{{"ts":1,"nonce":"abc defgh","cmd":"{{}}","mac":"{mac}"}}"#),
            format!(r#"{{"ts":1,"nonce":"abcdefgh","cmd":"{{}}","mac":"{mac}","x":1}}"#),
            format!(r#"{{"ts":1,"nonce":"abcdefgh","cmd":"{{}}","mac":"{mac}"}}"#),
        ] {
            assert!(g.open(&k, topic, p.as_bytes(), 1).is_err(), "{p}");
        }
    }

    #[test]
    fn rejections_are_reported_at_most_once_per_period() {
        let mut c = RejectCounter::default();
        let t0 = std::time::Instant::now();
        let every = std::time::Duration::from_secs(10);
        assert_eq!(c.reject(t0, every), Some(1));
        for i in 1..100 {
            assert_eq!(c.reject(t0 + std::time::Duration::from_millis(i), every), None);
        }
        assert_eq!(c.reject(t0 + every, every), Some(100));
        assert_eq!(c.total, 101);
    }
}

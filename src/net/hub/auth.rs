//! Who may join what: token lookup in constant time and the channel check of a hello. Pure.

use subtle::{ConditionallySelectable, ConstantTimeEq};

use super::{HubChannel, HubToken};
use crate::core::floor::Priority;
use crate::net::protocol::{is_valid_name, ErrorCode, Hello, MAX_TOKEN_LEN};
use crate::net::MemberRequest;

struct Secret {
    name: String,
    /// Zero-padded, so every comparison touches the same number of bytes.
    padded: [u8; MAX_TOKEN_LEN],
    len: u32,
    all_channels: bool,
    channels: Vec<String>,
    max_priority: Option<u8>,
}

/// A hello that passed: its members (priorities capped) and the channels the token may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Admitted {
    pub token: String,
    pub members: Vec<MemberRequest>,
    /// Indexes into the hub's channel list, in hub order.
    pub visible: Vec<usize>,
}

pub(crate) struct Auth {
    secrets: Vec<Secret>,
    channels: Vec<HubChannel>,
}

fn pad(s: &str) -> [u8; MAX_TOKEN_LEN] {
    let mut out = [0u8; MAX_TOKEN_LEN];
    let n = s.len().min(MAX_TOKEN_LEN);
    out[..n].copy_from_slice(&s.as_bytes()[..n]);
    out
}

impl Auth {
    pub fn new(tokens: &[HubToken], channels: &[HubChannel]) -> Result<Self, String> {
        let mut names = std::collections::HashSet::new();
        for c in channels {
            if !is_valid_name(&c.name) {
                return Err(format!("channel name {:?} must match [a-z0-9][a-z0-9_-]*", c.name));
            }
            if !names.insert(c.name.as_str()) {
                return Err(format!("channel {} listed twice", c.name));
            }
        }
        let mut secrets = Vec::new();
        for t in tokens {
            // Secret files usually end with a newline; nobody means it as part of the token.
            let secret = t.secret.trim();
            if secret.is_empty() || secret.len() > MAX_TOKEN_LEN {
                return Err(format!("token {}: the secret must be 1-{MAX_TOKEN_LEN} bytes", t.name));
            }
            if secrets.iter().any(|s: &Secret| s.padded == pad(secret) && s.len as usize == secret.len()) {
                return Err(format!("token {}: the same secret as another token", t.name));
            }
            for c in &t.channels {
                if c != "*" && !is_valid_name(c) {
                    return Err(format!("token {}: channel {c:?} is not a valid name", t.name));
                }
            }
            secrets.push(Secret {
                name: t.name.clone(),
                padded: pad(secret),
                len: secret.len() as u32,
                all_channels: t.channels.iter().any(|c| c == "*"),
                channels: t.channels.clone(),
                max_priority: t.max_priority,
            });
        }
        Ok(Self { secrets, channels: channels.to_vec() })
    }

    pub fn channels(&self) -> &[HubChannel] {
        &self.channels
    }

    /// The token's index. Every configured secret is compared in full whatever matches, so
    /// the time taken says nothing about which one (or how much of one) was right.
    fn find(&self, token: &str) -> Option<usize> {
        if token.len() > MAX_TOKEN_LEN {
            return None;
        }
        let presented = pad(token);
        let len = token.len() as u32;
        let mut found = subtle::Choice::from(0);
        let mut index = 0u32;
        for (i, s) in self.secrets.iter().enumerate() {
            let hit = presented.ct_eq(&s.padded) & len.ct_eq(&s.len);
            index.conditional_assign(&(i as u32), hit);
            found |= hit;
        }
        bool::from(found).then_some(index as usize)
    }

    fn allows(s: &Secret, channel: &str) -> bool {
        s.all_channels || s.channels.iter().any(|c| c == channel)
    }

    /// The hub's channels `token` may join (None: no such token).
    pub fn visible_channels(&self, token: &str) -> Option<Vec<String>> {
        let s = &self.secrets[self.find(token.trim())?];
        Some(self.channels.iter().filter(|c| Self::allows(s, &c.name)).map(|c| c.name.clone()).collect())
    }

    pub fn admit(&self, hello: &Hello) -> Result<Admitted, (ErrorCode, String)> {
        let Some(i) = self.find(&hello.token) else {
            return Err((ErrorCode::Unauthorized, "unknown token".into()));
        };
        let s = &self.secrets[i];
        let mut members = Vec::with_capacity(hello.members.len());
        for m in &hello.members {
            if !Self::allows(s, &m.channel) {
                return Err((ErrorCode::Forbidden, format!("channel {} is not allowed for this token", m.channel)));
            }
            if !self.channels.iter().any(|c| c.name == m.channel) {
                return Err((ErrorCode::BadRequest, format!("channel {} is not hosted here", m.channel)));
            }
            let priority = s.max_priority.map_or(m.priority, |max| m.priority.min(max));
            members.push(MemberRequest {
                key: m.key.clone(),
                channel: m.channel.clone(),
                // 255 is the emergency caller's (it comes with an emergency, never from hello).
                priority: Priority::configured(priority),
            });
        }
        let visible = (0..self.channels.len()).filter(|&c| Self::allows(s, &self.channels[c].name)).collect();
        Ok(Admitted { token: s.name.clone(), members, visible })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::protocol::MemberSpec;

    fn auth() -> Auth {
        let tokens = [
            HubToken { name: "all".into(), secret: "s3cret\n".into(), channels: vec!["*".into()], max_priority: None },
            HubToken {
                name: "ops".into(),
                secret: "opsonly".into(),
                channels: vec!["ops".into()],
                max_priority: Some(0),
            },
        ];
        let channels = [
            HubChannel { name: "ops".into(), label: "Operations".into() },
            HubChannel { name: "fire".into(), label: "Fire".into() },
        ];
        Auth::new(&tokens, &channels).unwrap()
    }

    fn hello(token: &str, members: &[(&str, &str, u8)]) -> Hello {
        Hello {
            token: token.into(),
            name: "edge".into(),
            members: members
                .iter()
                .map(|(k, c, p)| MemberSpec { key: k.to_string(), channel: c.to_string(), priority: *p })
                .collect(),
        }
    }

    #[test]
    fn tokens_match_exactly() {
        let a = auth();
        assert_eq!(a.find("s3cret"), Some(0), "trailing newline of the file trimmed");
        assert_eq!(a.find("opsonly"), Some(1));
        for wrong in ["", "s3cre", "s3cret ", "s3cret\n", "S3CRET", "opsonly\0", "x"] {
            assert_eq!(a.find(wrong), None, "{wrong:?}");
        }
        assert_eq!(a.find(&"s".repeat(MAX_TOKEN_LEN + 1)), None);
    }

    #[test]
    fn admission() {
        let a = auth();
        let ok = a.admit(&hello("s3cret", &[("radio1", "ops", 100), ("radio1", "fire", 0)])).unwrap();
        assert_eq!(ok.token, "all");
        assert_eq!(ok.members[0].priority, Priority(100));
        assert_eq!(ok.visible, [0, 1]);

        let capped = a.admit(&hello("opsonly", &[("console", "ops", 200)])).unwrap();
        assert_eq!(capped.members[0].priority, Priority(0), "capped at max_priority");
        assert_eq!(capped.visible, [0]);
        assert!(a.admit(&hello("opsonly", &[])).unwrap().members.is_empty());

        let (code, msg) = a.admit(&hello("nope", &[("r", "ops", 0)])).unwrap_err();
        assert_eq!(code, ErrorCode::Unauthorized);
        assert!(!msg.contains("nope"));
        let (code, msg) = a.admit(&hello("opsonly", &[("r", "ops", 0), ("r", "fire", 0)])).unwrap_err();
        assert_eq!((code, msg.contains("fire")), (ErrorCode::Forbidden, true));
        let (code, _) = a.admit(&hello("opsonly", &[("r", "admin", 0)])).unwrap_err();
        assert_eq!(code, ErrorCode::Forbidden, "a limited token cannot probe which channels exist");
        let (code, _) = a.admit(&hello("s3cret", &[("r", "admin", 0)])).unwrap_err();
        assert_eq!(code, ErrorCode::BadRequest);
    }

    #[test]
    fn bad_configuration_is_refused() {
        let ch = [HubChannel { name: "ops".into(), label: "".into() }];
        let t = |secret: &str, channels: &[&str]| HubToken {
            name: "t".into(),
            secret: secret.into(),
            channels: channels.iter().map(|c| c.to_string()).collect(),
            max_priority: None,
        };
        assert!(Auth::new(&[t(" \n", &["*"])], &ch).is_err());
        assert!(Auth::new(&[t(&"x".repeat(MAX_TOKEN_LEN + 1), &["*"])], &ch).is_err());
        assert!(Auth::new(&[t("a", &["Ops"])], &ch).is_err());
        assert!(Auth::new(&[t("a", &["*"]), t("a", &["ops"])], &ch).is_err());
        assert!(Auth::new(&[], &[ch[0].clone(), ch[0].clone()]).is_err());
        assert!(Auth::new(&[], &[HubChannel { name: "A".into(), label: "".into() }]).is_err());
    }
}

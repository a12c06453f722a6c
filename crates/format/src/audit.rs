//! The audit log (format.md §12.3): records of what was done to a repository, in segments
//! that each writer appends to its own chain. A segment names the one before it by the
//! BLAKE3 hash of its plaintext, so changing, removing, inserting or reordering a segment
//! breaks the chain after it; snapshots carry an [`Anchor`] (the chain's head when they were
//! written), so cutting the tail off is seen too.

use serde::{Deserialize, Serialize};

use crate::magic::AUDIT_VERSION;
use crate::Error;

/// The largest segment plaintext a reader accepts (a writer flushes long before).
pub const MAX_SEGMENT: usize = 16 << 20;

/// Who did it: the OS user and host for the CLI and the daemon, plus the API token's name
/// and the client's address for the HTTP API.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Actor {
    pub user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    pub host: String,
    /// `cli`, `daemon` or `api`.
    pub via: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

/// What it was done to.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct Target {
    /// The repository's location as the actor named it.
    pub repository: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snapshots: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
}

/// One action and its outcome.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// RFC 3339, when the action ended.
    pub time: String,
    pub actor: Actor,
    /// `backup`, `restore`, `dump`, `forget`, `prune`, `rewrite`, `copy`, `drill`, `key_add`, ...
    pub action: String,
    pub target: Target,
    /// `ok`, `partial` or `failed`.
    pub outcome: String,
    /// Why, when the actor said (a manual backup's reason, a job's trigger).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What happened, in one line (an error's text, counts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// For `audit_expire`: where each chain of the repository now begins (every chain's,
    /// not only those this expiry shortened, so the newest such record explains them all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expired: Vec<Expiry>,
}

/// A chain whose segments below `below` were removed by retention; `hash` is segment
/// `below`'s, where the chain now starts.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Expiry {
    pub repository: String,
    pub chain: String,
    pub below: u64,
    pub hash: String,
}

/// Records a writer appended at once, and their place in its chain.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    pub version: u32,
    /// The id (config `id`) of the repository the chain was written in: a copy carries
    /// the chain unchanged, and the verifier knows whose it is.
    pub repository: String,
    pub chain: String,
    /// 0 for a chain's first segment, then +1.
    pub seq: u64,
    /// The number of `records[0]` in the chain: the previous segment's `first` plus its
    /// record count (0 for the first segment).
    pub first: u64,
    /// Hex BLAKE3 of the previous segment's plaintext; absent exactly when `seq` is 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev: Option<String>,
    pub records: Vec<Record>,
}

/// A chain's head at some moment: what a snapshot remembers of the audit log.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Anchor {
    pub repository: String,
    pub chain: String,
    pub seq: u64,
    /// Hex BLAKE3 of that segment's plaintext.
    pub hash: String,
}

/// A chain name: 1 to 64 bytes of `[A-Za-z0-9._-]`, not starting with a dot.
pub fn is_chain_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && !s.starts_with('.')
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The chain a host writes: its name with every other byte as `_`, at most 64 bytes.
pub fn chain_for_host(host: &str) -> String {
    let mut s: String = host
        .bytes()
        .take(64)
        .map(|b| if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') { b as char } else { '_' })
        .collect();
    if s.starts_with('.') {
        s.replace_range(0..1, "_");
    }
    if s.is_empty() {
        s.push_str("unknown");
    }
    s
}

fn is_hex_hash(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl Segment {
    pub fn encode(&self) -> Vec<u8> {
        // Plain structs of strings and integers cannot fail to serialize.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Decodes and checks what the segment says of itself (not its place in the chain).
    pub fn decode(buf: &[u8]) -> Result<Self, Error> {
        if buf.len() > MAX_SEGMENT {
            return Err(Error::malformed("audit segment", format!("{} bytes, over the limit", buf.len())));
        }
        let s: Segment = serde_json::from_slice(buf).map_err(|source| Error::Json { what: "audit segment", source })?;
        if s.version != AUDIT_VERSION {
            return Err(Error::Version { what: "audit segment", version: s.version.into() });
        }
        let bad = |d: &str| Err(Error::malformed("audit segment", d.to_string()));
        if !is_chain_name(&s.chain) {
            return bad("chain name");
        }
        if !is_hex_hash(&s.repository) {
            return bad("repository id");
        }
        match (&s.prev, s.seq) {
            (None, 0) => {}
            (Some(p), n) if n > 0 && is_hex_hash(p) => {}
            _ => return bad("prev must name the previous segment exactly when seq > 0"),
        }
        if s.seq == 0 && s.first != 0 {
            return bad("a chain's first segment starts at record 0");
        }
        if s.records.is_empty() {
            return bad("no records");
        }
        if s.first.checked_add(s.records.len() as u64).is_none() {
            return bad("record numbers overflow");
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec() -> Record {
        Record {
            time: "2026-12-02T10:00:00Z".into(),
            actor: Actor {
                user: "root".into(),
                uid: Some(0),
                host: "h".into(),
                via: "cli".into(),
                token: None,
                address: None,
            },
            action: "backup".into(),
            target: Target { repository: "/r".into(), ..Target::default() },
            outcome: "ok".into(),
            reason: None,
            message: None,
            expired: Vec::new(),
        }
    }

    #[test]
    fn round_trip_and_self_checks() {
        let h = "ab".repeat(32);
        let s = Segment {
            version: 1,
            repository: h.clone(),
            chain: "h".into(),
            seq: 0,
            first: 0,
            prev: None,
            records: vec![rec()],
        };
        assert_eq!(Segment::decode(&s.encode()).unwrap(), s);
        for bad in [
            Segment { seq: 1, ..s.clone() },
            Segment { prev: Some(h.clone()), ..s.clone() },
            Segment { first: 3, ..s.clone() },
            Segment { chain: "../x".into(), ..s.clone() },
            Segment { records: vec![], ..s.clone() },
            Segment { seq: 2, prev: Some("zz".into()), ..s.clone() },
            Segment { seq: 2, prev: Some(h.clone()), first: u64::MAX, ..s.clone() },
        ] {
            assert!(Segment::decode(&bad.encode()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn host_names_become_chain_names() {
        assert_eq!(chain_for_host("db-1.example.net"), "db-1.example.net");
        assert_eq!(chain_for_host("a/b\nc"), "a_b_c");
        assert_eq!(chain_for_host(".."), "_.");
        assert_eq!(chain_for_host(""), "unknown");
        assert!(is_chain_name(&chain_for_host(&"x".repeat(300))));
    }
}

//! The two kinds of coordination documents of the lock-free prune protocol (see
//! `docs/format.md`, "Concurrency and prune"):
//!
//! - a [`WriterLease`] (`writers/<random id>`, overwritten while its writer runs) says that a
//!   process that may reference existing blobs (backup, rewrite, prune) is running, until
//!   `expires`. A killed writer's lease simply expires.
//! - a [`PruneDoc`] (`prune/<hash>`, create-only) is either a [`Marker`] naming packs that
//!   prune took out of the index and means to delete, or an [`Armed`] record naming the
//!   writers that were running once the index no longer named those packs. Deletion waits
//!   for those writers, then re-checks every snapshot.
//!
//! Times are Unix seconds (UTC), written by the writer's own clock.

use serde::{Deserialize, Serialize};

use crate::magic::{LEASE_VERSION, PRUNE_DOC_VERSION};
use crate::{Error, MarkerId, PackId, WriterId};

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct WriterLease {
    pub version: u32,
    /// What the writer is doing: `backup`, `rewrite`, `prune`...
    pub command: String,
    pub hostname: String,
    pub pid: u32,
    pub started: i64,
    /// The writer stops writing index files and snapshots before this time unless it has
    /// renewed the lease by then; others treat the lease as gone after it.
    pub expires: i64,
    /// Seconds each renewal extends the lease by; a fifth of it is the clock skew allowed.
    pub ttl: i64,
}

impl WriterLease {
    /// Whether others must still honour the lease at `now`.
    pub fn is_live(&self, now: i64) -> bool {
        now < self.expires.saturating_add(self.ttl.max(0) / 5)
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum PruneBody {
    Marker(Marker),
    Armed(Armed),
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct PruneDoc {
    pub version: u32,
    #[serde(flatten)]
    pub body: PruneBody,
}

/// Packs to delete once it is safe. Written before the index stops naming them, so a writer
/// that no longer finds them in the index also knows not to adopt them as unindexed packs.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Marker {
    pub created: i64,
    pub hostname: String,
    pub packs: Vec<PackId>,
}

/// Written after the index files naming the marker's packs were deleted: the writers whose
/// leases were live then. Only they can still reference those packs.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Armed {
    pub marker: MarkerId,
    pub at: i64,
    pub writers: Vec<WriterId>,
}

impl WriterLease {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
    pub fn decode(buf: &[u8]) -> Result<Self, Error> {
        let l: WriterLease =
            serde_json::from_slice(buf).map_err(|source| Error::Json { what: "writer lease", source })?;
        if l.version != LEASE_VERSION {
            return Err(Error::Version { what: "writer lease", version: l.version.into() });
        }
        Ok(l)
    }
}

impl PruneDoc {
    pub fn new(body: PruneBody) -> Self {
        PruneDoc { version: PRUNE_DOC_VERSION, body }
    }
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
    pub fn decode(buf: &[u8]) -> Result<Self, Error> {
        let d: PruneDoc =
            serde_json::from_slice(buf).map_err(|source| Error::Json { what: "prune document", source })?;
        if d.version != PRUNE_DOC_VERSION {
            return Err(Error::Version { what: "prune document", version: d.version.into() });
        }
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Id;

    #[test]
    fn prune_docs_round_trip_and_refuse_other_versions() {
        let m = PruneDoc::new(PruneBody::Marker(Marker {
            created: 1_700_000_000,
            hostname: "h".into(),
            packs: vec![PackId(Id([7; 32]))],
        }));
        assert_eq!(PruneDoc::decode(&m.encode()).unwrap(), m);
        let a = PruneDoc::new(PruneBody::Armed(Armed {
            marker: MarkerId(Id([1; 32])),
            at: 5,
            writers: vec![WriterId(Id([2; 32]))],
        }));
        assert_eq!(PruneDoc::decode(&a.encode()).unwrap(), a);
        let text = String::from_utf8(a.encode()).unwrap().replace("\"version\":1", "\"version\":2");
        assert!(PruneDoc::decode(text.as_bytes()).is_err());
        assert!(PruneDoc::decode(b"{\"version\":1}").is_err());
        let l = WriterLease {
            version: 1,
            command: "backup".into(),
            hostname: "h".into(),
            pid: 1,
            started: 1,
            expires: 2,
            ttl: 300,
        };
        assert_eq!(WriterLease::decode(&l.encode()).unwrap(), l);
    }
}

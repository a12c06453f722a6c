//! Snapshot documents (JSON, then sealed).

use serde::{Deserialize, Serialize};

use crate::magic::SNAPSHOT_VERSION;
use crate::{Error, SnapshotId, TreeId};

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct Summary {
    pub files_new: u64,
    pub files_changed: u64,
    pub files_unmodified: u64,
    pub dirs: u64,
    /// Symlinks, FIFOs, devices, sockets (absent in snapshots written before it existed).
    #[serde(default)]
    pub others: u64,
    pub bytes_read: u64,
    /// Logical bytes of all files in the snapshot.
    pub total_bytes: u64,
    /// Plaintext bytes of blobs this backup added (after dedup).
    pub data_added: u64,
    /// Bytes this backup added to the repository (after dedup, compression, encryption).
    pub bytes_added: u64,
    pub blobs_added: u64,
    pub duration_secs: f64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Snapshot {
    pub version: u32,
    /// RFC 3339.
    pub time: String,
    pub hostname: String,
    pub username: String,
    pub uid: u32,
    pub gid: u32,
    pub paths: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    pub tree: TreeId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<SnapshotId>,
    /// `files`, `stdin`, `postgres`...
    pub kind: String,
    /// True when some source files could not be read.
    #[serde(default)]
    pub partial: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original: Option<SnapshotId>,
    #[serde(default)]
    pub summary: Summary,
    pub program_version: String,
    /// For `kind = "postgres"`: what a point-in-time restore needs besides the files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PgBackup>,
    /// The policy source (`[source.NAME]`) whose job made it: how `status` finds a
    /// source's newest recoverable point and a lost catalog is rebuilt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The catalog job that made it (`<host>/<number>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// The writer's audit chain head when the snapshot was written (§12.3): a chain whose
    /// tail was cut off no longer holds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<crate::audit::Anchor>,
}

/// A PostgreSQL base backup's facts, recorded by `cairn pg backup`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct PgBackup {
    /// `SHOW server_version_num`, e.g. 150018.
    pub server_version: u32,
    /// `pg_control_system().system_identifier`, as a decimal string.
    pub system_identifier: String,
    /// The data directory backed up (the snapshot's path).
    pub data_dir: String,
    pub timeline: u32,
    /// Write-ahead log positions as PostgreSQL prints them (`0/2000028`).
    pub start_lsn: String,
    pub stop_lsn: String,
    /// WAL file names holding the start and stop positions.
    pub start_wal: String,
    pub stop_wal: String,
    /// Server clock at `pg_backup_start()` and `pg_backup_stop()`, RFC 3339.
    pub start_time: String,
    pub stop_time: String,
    pub wal_segment_size: u64,
    /// The `backup_label` content that `pg_backup_stop()` returned, written into the data
    /// directory on restore.
    pub backup_label: String,
    /// The `tablespace_map` content (empty: no tablespaces).
    #[serde(default)]
    pub tablespace_map: String,
}

impl Snapshot {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
    pub fn decode(buf: &[u8]) -> Result<Self, Error> {
        let s: Snapshot = serde_json::from_slice(buf).map_err(|source| Error::Json { what: "snapshot", source })?;
        if s.version != SNAPSHOT_VERSION {
            return Err(Error::Version { what: "snapshot", version: s.version.into() });
        }
        Ok(s)
    }
}

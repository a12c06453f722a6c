//! PostgreSQL: continuous WAL archiving and point-in-time recovery into a cairn repository.
//!
//! - [`wal`]: WAL file names, LSNs, and the WAL archive in the repository
//!   (`wal/<timeline>/<file>`, sealed named objects: one per segment, history file or
//!   backup history file; `.partial` for the segment being streamed).
//! - [`session`]: one SQL session through `psql` (libpq's connection strings, `.pgpass`,
//!   SSL and authentication exactly as the operator's other tools see them), kept open
//!   between `pg_backup_start()` and `pg_backup_stop()` as non-exclusive backups require.
//! - [`backup`]: a base backup, whole (the operation the CLI and the daemon call).
//! - [`base`]: what a base backup leaves out and how it reads a live data directory.
//! - [`recovery`]: choosing the base backup for a target and writing the recovery settings.
//! - [`restore`]: restoring a base backup's data directory and fetching the WAL it replays.
//! - [`receive`]: streaming WAL by supervising `pg_receivewal`.
//! - [`prefetch`]: fetching the next WAL segments ahead of recovery, in parallel, into a
//!   spool `archive-get` hands them over from (replay no longer waits for each fetch); and
//!   the same for a drill's sandbox server, fed by the drill process.
//!
//! Key decision: base backups go through the ordinary file engine (so an unchanged relation
//! file is neither read nor stored again: successive base backups deduplicate like
//! incrementals); WAL goes beside the packs as one sealed object per file, because every
//! `archive_command` call must be fast and WAL hardly deduplicates.

pub mod backup;
pub mod base;
pub mod coverage;
pub mod prefetch;
pub mod receive;
pub mod recovery;
pub mod restore;
pub mod session;
pub mod wal;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Repo(#[from] cairn_repo::Error),
    #[error(transparent)]
    Engine(cairn_engine::Error),
    #[error("{0}")]
    Sql(String),
    /// The request cannot be done as asked (a recovery target no base backup reaches, a
    /// snapshot that is not a base backup).
    #[error("{0}")]
    Invalid(String),
    /// A base backup's recorded facts disagree with its content (a data directory the
    /// snapshot does not hold, a WAL name that is none): damaged or hostile.
    #[error("{0}")]
    Damaged(String),
    /// The cluster or its settings do not allow the operation (wrong data directory,
    /// wal_level, archiving not reaching the repository...): the message says what to change.
    #[error("{0}")]
    Setup(String),
    #[error("WAL file {name} is already archived with different content: refusing to overwrite it (is a second cluster archiving into this repository?)")]
    WalConflict { name: String },
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
}

impl Error {
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io { what: what.into(), source }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

//! The application layer and the policy daemon: the operations the CLI, the daemon and the
//! HTTP API share ([`backup`], [`repos`]), the job runner ([`jobs`]), the pure scheduling
//! decisions ([`plan`]), the job [`catalog`], per-source [`lock`]s, [`status`] and the
//! daemon loop ([`daemon`]).
//!
//! Key decisions:
//! - Scheduling is a pure function of (policy, catalog state, `now`) in [`plan`]; the loop
//!   only feeds it the clock and starts what it says.
//! - A source's lock is an `flock` on a file in the state directory: the kernel drops it
//!   when its holder dies, so a killed daemon or `cairn run` never leaves a lock a human
//!   must remove, and a job row still `running` whose lock is free was interrupted.
//! - The catalog is a cache: snapshots carry their source and job, so `status` reads data
//!   age from the repositories and a lost catalog is rebuilt from them.

pub mod alerts;
pub mod audit;
pub mod backup;
pub mod browse;
pub mod catalog;
pub mod control;
pub mod daemon;
pub mod drill;
pub mod jobs;
pub mod lock;
pub mod maintenance;
pub mod metrics;
pub mod plan;
pub mod process;
pub mod report;
pub mod repos;
pub mod restore;
pub mod smtp;
pub mod status;
pub mod tokens;

/// Errors of the application layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Repo(#[from] cairn_repo::Error),
    #[error(transparent)]
    Engine(#[from] cairn_engine::Error),
    #[error(transparent)]
    Policy(#[from] cairn_policy::file::PolicyError),
    #[error(transparent)]
    Pg(#[from] cairn_pg::Error),
    #[error(transparent)]
    Audit(#[from] cairn_audit::Error),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("{0}")]
    Location(String),
    #[error("{0}")]
    Password(String),
    /// A source that cannot be read at all (a missing path, a bad exclude pattern...).
    #[error("{0}")]
    Source(String),
    #[error("command {command:?} failed ({status}); no snapshot saved")]
    CommandFailed { command: String, status: String },
    #[error("hook {hook} ({command:?}) {why}")]
    Hook { hook: &'static str, command: String, why: String },
    #[error("catalog {path}: {source}")]
    Catalog { path: String, source: rusqlite::Error },
    #[error("catalog {path}: {why}")]
    CatalogVersion { path: String, why: String },
    /// What was asked for does not exist (a snapshot, a path in one, a token).
    #[error("{0}")]
    NotFound(String),
    /// Already exists (a token name).
    #[error("{0}")]
    Exists(String),
    /// Refused by a rule of the policy (a restore target outside `restore_dirs`...).
    #[error("{0}")]
    Refused(String),
    #[error("source {0:?} is not in the policy")]
    UnknownSource(String),
    #[error("source {source_name:?} is busy: job {job} of it is running (pid {pid})")]
    Busy { source_name: String, job: String, pid: u32 },
    #[error("the job ran longer than its max_duration of {0} and was stopped")]
    TimedOut(String),
    #[error("{what}: {source}")]
    Context { what: String, source: Box<Error> },
}

impl Error {
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io { what: what.into(), source }
    }

    pub fn context(self, what: impl Into<String>) -> Self {
        Error::Context { what: what.into(), source: Box::new(self) }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// An error as one line (messages from commands and stores may hold newlines).
pub fn one_line(e: &dyn std::fmt::Display) -> String {
    e.to_string().split_whitespace().collect::<Vec<_>>().join(" ")
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Repo(#[from] cairn_repo::Error),
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    /// The caller's request cannot be done as asked (a path not in the snapshot, a
    /// directory in the way of a file, nothing to back up).
    #[error("{0}")]
    Invalid(String),
    /// The snapshot's content is damaged or hostile: trees deeper or larger than their
    /// summary allows, a directory without its subtree, sizes that disagree with the
    /// content, a pack missing or shorter than indexed, restored bytes that do not hash
    /// to their blob ids. The message names where.
    #[error("{0}")]
    Damaged(String),
    /// A worker thread of this process failed (a bug, or the system refused a thread).
    #[error("internal error: {0}")]
    Internal(String),
    #[error("unsafe entry in snapshot: {0}")]
    Unsafe(String),
    /// [`crate::Progress::stop`] was set: nothing was saved (what was uploaded stays, for
    /// the next backup to reuse).
    #[error("the backup was stopped before it finished; no snapshot saved")]
    Stopped,
}

impl Error {
    /// Whether the repository's content is at fault rather than the request, this
    /// process or the store's availability.
    pub fn is_damage(&self) -> bool {
        match self {
            Error::Damaged(_) => true,
            Error::Repo(r) => r.is_damage(),
            _ => false,
        }
    }

    pub fn io(path: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

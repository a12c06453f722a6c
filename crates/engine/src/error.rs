#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Repo(#[from] cairn_repo::Error),
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{0}")]
    Invalid(String),
    #[error("unsafe entry in snapshot: {0}")]
    Unsafe(String),
    /// [`crate::Progress::stop`] was set: nothing was saved (what was uploaded stays, for
    /// the next backup to reuse).
    #[error("the backup was stopped before it finished; no snapshot saved")]
    Stopped,
}

impl Error {
    pub fn io(path: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

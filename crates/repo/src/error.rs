use cairn_format::{BlobId, PackId};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("no repository at {location}")]
    NoRepository { location: String },
    #[error("a repository already exists at {location}")]
    AlreadyExists { location: String },
    #[error("wrong password: no key of the repository at {location} opens with it")]
    WrongPassword { location: String },
    #[error("snapshot {0} not found")]
    SnapshotNotFound(String),
    #[error("snapshot prefix {0} is ambiguous")]
    AmbiguousSnapshot(String),
    #[error("blob {0} is not in the index")]
    BlobNotIndexed(BlobId),
    #[error("{what} {id} is damaged: {detail}")]
    Damaged { what: &'static str, id: String, detail: String },
    #[error("pack {pack}: {detail}")]
    BadPack { pack: PackId, detail: String },
    #[error("this process's writer lease lapsed (was it suspended, or the repository unreachable, for longer than the lease?); a prune may have removed data it relies on, so it writes nothing more: run it again (what it uploaded is reused)")]
    LeaseLost,
    /// The caller asked for something the repository refuses (removing the last key...).
    #[error("{0}")]
    Invalid(String),
    /// A worker thread or task of this process failed: a bug or an exhausted resource,
    /// never the repository's content.
    #[error("internal error: {0}")]
    Internal(String),
    #[error(transparent)]
    Store(#[from] cairn_store::Error),
    #[error(transparent)]
    Format(#[from] cairn_format::Error),
    #[error(transparent)]
    Crypto(#[from] cairn_crypto::Error),
}

impl Error {
    /// Whether the repository's content is at fault (damaged or missing data), as opposed
    /// to the caller, this process or the store's availability.
    pub fn is_damage(&self) -> bool {
        matches!(self, Error::Damaged { .. } | Error::BadPack { .. } | Error::BlobNotIndexed(_) | Error::Format(_))
    }

    pub fn store_kind(&self) -> Option<cairn_store::ErrorKind> {
        match self {
            Error::Store(e) => Some(e.kind()),
            _ => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

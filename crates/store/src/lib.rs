//! The storage boundary: [`Store`], a minimal object-store-shaped trait (put with a
//! create-only mode, ranged get, head, list, delete), its local-disk and in-memory
//! implementations, the dry-run decorator, and the [`conformance`] suite every store passes.
//!
//! Key decision: the trait is async (object stores are) and dyn-compatible through boxed
//! futures, with no sync twin. Paths are `/`-separated keys relative to the repository
//! root; the repository layout (which key holds what) belongs to the `repo` crate, not here.
//! Behaviour such as dry-run, retry or fault injection is added by wrapping a store.
//!
//! Atomicity: a reader never sees half an object. The local store writes a temporary file,
//! fsyncs it and links it into place; an object store uploads whole.

use std::future::Future;
use std::ops::Range;
use std::pin::Pin;

mod cache;
pub mod conformance;
mod dryrun;
mod fault;
mod limit;
mod local;
mod memory;
mod retry;

pub use cache::CacheStore;
pub use dryrun::DryRunStore;
pub use fault::FaultStore;
pub use limit::LimitStore;
pub use local::LocalStore;
pub use memory::MemoryStore;
pub use retry::RetryStore;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("{path}: not found")]
    NotFound { path: String },
    #[error("{path}: already exists")]
    AlreadyExists { path: String },
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    /// The credentials (or file permissions) do not allow this operation.
    #[error("{path}: permission denied: {message}")]
    Denied { path: String, message: String },
    /// A failure that a retry of the same request may not meet: a dropped connection, a
    /// timeout, a server that is restarting (the retry decorator retries these).
    #[error("{path}: {message}")]
    Transient { path: String, message: String },
    #[error("{path}: {message}")]
    Other { path: String, message: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    NotFound,
    AlreadyExists,
    NoSpace,
    PermissionDenied,
    Other,
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::AlreadyExists { .. } => ErrorKind::AlreadyExists,
            Error::Io { source, .. } => match source.raw_os_error() {
                Some(libc_enospc) if libc_enospc == 28 || libc_enospc == 122 => ErrorKind::NoSpace,
                _ if source.kind() == std::io::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
                _ => ErrorKind::Other,
            },
            Error::Denied { .. } => ErrorKind::PermissionDenied,
            Error::Transient { .. } | Error::Other { .. } => ErrorKind::Other,
        }
    }
    pub fn is_not_found(&self) -> bool {
        self.kind() == ErrorKind::NotFound
    }
    /// Whether retrying the same request may succeed: interruptions, timeouts and
    /// dropped connections (a remote store reconnects on the next request).
    pub fn is_transient(&self) -> bool {
        use std::io::ErrorKind as K;
        matches!(self, Error::Transient { .. })
            || matches!(self, Error::Io { source, .. } if matches!(source.kind(),
            K::Interrupted | K::TimedOut | K::WouldBlock | K::ConnectionAborted | K::ConnectionReset | K::BrokenPipe | K::UnexpectedEof))
    }
    pub(crate) fn io(path: &str, source: std::io::Error) -> Self {
        match source.kind() {
            std::io::ErrorKind::NotFound => Error::NotFound { path: path.to_string() },
            std::io::ErrorKind::AlreadyExists => Error::AlreadyExists { path: path.to_string() },
            _ => Error::Io { path: path.to_string(), source },
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutMode {
    /// Fail with [`Error::AlreadyExists`] if the key exists (all content-addressed objects).
    Create,
    /// Replace an existing object atomically.
    Overwrite,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub path: String,
    pub size: u64,
    /// Last modification (Unix seconds), when the store knows it: object-lock periods run
    /// from it.
    pub modified: Option<i64>,
}

/// What a store can do, so callers can explain rather than fail obscurely.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// Create-only puts are atomic (no race can overwrite an existing object).
    pub atomic_create: bool,
    pub delete: bool,
}

/// An object store. Every method is required; conveniences live in callers.
pub trait Store: Send + Sync + std::fmt::Debug {
    /// A human-readable location, e.g. the directory or URL.
    fn location(&self) -> String;
    fn capabilities(&self) -> Capabilities;
    /// Writes `data` under `path` atomically: readers see all or nothing.
    fn put<'a>(&'a self, path: &'a str, data: Vec<u8>, mode: PutMode) -> BoxFuture<'a, Result<()>>;
    /// Reads the whole object, or `range` of it (the range must lie within the object).
    fn get<'a>(&'a self, path: &'a str, range: Option<Range<u64>>) -> BoxFuture<'a, Result<Vec<u8>>>;
    fn head<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<ObjectMeta>>;
    /// Every object whose key starts with `prefix/` (recursively), in no particular order.
    /// A missing prefix lists as empty.
    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<ObjectMeta>>>;
    /// Removes the object. Idempotent: deleting a missing object succeeds, as on object
    /// stores (S3 cannot tell), which also makes a retried delete safe.
    fn delete<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<()>>;
}

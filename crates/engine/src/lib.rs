//! Backup and restore pipelines over the [`Source`] and [`Destination`] traits.
//!
//! Principal types: [`Archiver`] (backup: walk, change detection, read + chunk + hash,
//! dedup, compress + encrypt + pack, trees, summary), [`Restorer`] (plan, then restore by
//! pack: every pack is read once and its blobs written to every file that needs them),
//! and the tree [`browse`] helpers (ls, find, diff, dump).
//!
//! Key decision: threads and bounded channels, not async. The pipeline is CPU-bound
//! (chunking, hashing, zstd, AES); it runs on plain threads sized to the machine, and only
//! the store below is async. The bounded channels between stages are the back-pressure
//! that keeps memory flat: at most a few chunks per thread and a few packs are in flight.
//!
//! | stage    | threads        | does                                          |
//! |----------|----------------|-----------------------------------------------|
//! | walker   | caller + 5     | lists directories, compares with the parent, asks for small files to be read ahead |
//! | readers  | `cores`        | read, chunk, hash, drop known blobs           |
//! | small    | 6              | the same for files of one chunk (disk-bound)  |
//! | packers  | `cores`        | compress, encrypt, append to their own pack   |
//! | uploader | 1 (+ runtime)  | puts packs, writes index files                |
//!
//! Reads are asked for ahead of the readers (`Source::prefetch` for small files, the
//! filesystem source's own read-ahead for large ones): on a cold cache the disk then works
//! while the packers compress, instead of the two taking turns.

pub mod backup;
pub mod browse;
pub mod copy;
mod error;
pub mod restore;
pub mod rewrite;
mod source;

pub use backup::{Archiver, BackupOptions, BackupOutcome, Maker, Progress, Provenance};
pub use error::{Error, Result};
pub use restore::{Destination, Existing, Overwrite, RestoreOptions, RestorePlan, RestoreSummary, Restorer};
pub use source::{Source, StreamSource};

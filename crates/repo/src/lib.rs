//! A cairn repository: layout, init/open/unlock, keys, blob encoding, packs, the index,
//! trees, snapshots and `check`.
//!
//! Principal types: [`Repository`] (an unlocked repository over a [`Store`]), [`Index`]
//! (blob id -> pack location, the dedup table), [`BlobSaver`] (concurrent dedup + pack +
//! upload for backup workers), [`Packer`] (builds one pack).
//!
//! Key decision: the repository is append-only and content-addressed; nothing here ever
//! takes a lock. A backup writes packs, then index files naming them, then its snapshot,
//! so a reader that sees a snapshot sees every blob it needs, and a killed writer leaves
//! only packs that are not referenced yet ([`Repository::recover_unindexed`] adopts them).
//!
//! The API is synchronous and blocking: it drives the async [`Store`] through a tokio
//! runtime handle, so it must be called from plain threads, never from a runtime worker,
//! and the handle must belong to a multi-thread runtime (it spawns concurrent reads and
//! blocks on them; a current-thread runtime would never run them).
//!
//! | who             | writes                         | may run beside        |
//! |-----------------|--------------------------------|-----------------------|
//! | backup          | packs, index, snapshot (create)| anything              |
//! | check, restore  | nothing                        | anything              |
//! | key add/remove  | key files                      | anything              |
//! | forget          | deletes snapshots              | anything              |
//! | prune           | packs, index; deletes marked   | anything (see prune)  |

pub mod blob;
pub mod check;
mod error;
mod index;
mod keys;
pub mod layout;
pub mod lease;
mod meter;
mod packer;
pub mod prune;
mod repository;
mod saver;
mod trees;

pub use blob::BlobCodec;
pub use error::{Error, Result};
pub use index::{Index, IndexBuilder, Location};
pub use keys::KeyMeta;
pub use lease::Lease;
pub use meter::Meter;
pub use packer::{FinishedPack, Packer};
pub use prune::{prune, prune_metered, PruneOptions, PruneReport};
pub use repository::{InitOptions, Repository, SnapshotList, Zstd};
pub use saver::{BlobSaver, SaverStats, WorkerSaver};
pub use trees::TreeReader;

pub use cairn_format as format;
pub use cairn_store::Store;

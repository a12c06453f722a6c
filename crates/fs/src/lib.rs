//! The local filesystem as a backup [`Source`](cairn_engine::Source) ([`FsSource`]) and a
//! restore [`Destination`](cairn_engine::Destination) ([`FsDestination`]): metadata,
//! owners, xattrs, symlinks, hardlinks, sparse files, FIFOs and devices; and the
//! [`Warmer`], which reads a tree's inodes ahead of a backup's walk. File contents are
//! asked for ahead of the backup's readers too (`posix_fadvise` WILLNEED): a small file
//! when the walk hands it over, a large one 32 MiB ahead of its reader.
//!
//! Key decision: restore safety lives here, at the only place that touches paths. Every
//! entry name was validated by the planner; in addition every open and create here uses
//! `O_NOFOLLOW`/`lstat`, directories are created parents-first and checked to be real
//! directories, and symlinks are created only after all files and directories, so no
//! write ever goes through a symlink the restore created.

mod meta;
mod source;
mod target;
mod warm;

pub use meta::{current_user, hostname, local_time_zone, user_name, IdNames};
pub use source::{FsSource, FsSourceOptions};
pub use target::FsDestination;
pub use warm::Warmer;

mod patterns;
pub mod sqlite;
pub use patterns::{gitignore_literal, PathMatcher};

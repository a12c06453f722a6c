//! The filesystem as a restore destination (see the crate docs for the safety rules).

use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use cairn_engine::restore::RelPath;
use cairn_engine::{Destination, Existing};
use cairn_format::tree::{Node, NodeKind};

use crate::meta::{is_root, mknod, set_times, set_times_fd, write_xattrs};

pub struct FsDestination {
    root: PathBuf,
    root_user: bool,
}

impl FsDestination {
    /// Creates the target directory if needed.
    pub fn new(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into();
        fs::create_dir_all(&root)?;
        Ok(FsDestination { root, root_user: is_root() })
    }

    fn path(&self, rel: &RelPath) -> PathBuf {
        if rel.is_empty() {
            return self.root.clone();
        }
        self.root.join(std::ffi::OsStr::from_bytes(rel))
    }

    /// Removes a non-directory at `p`, so that what replaces it is created fresh (never
    /// written through, if it was a symlink).
    fn clear(&self, p: &Path) -> io::Result<()> {
        match fs::symlink_metadata(p) {
            Ok(m) if m.is_dir() => Err(io::Error::new(io::ErrorKind::AlreadyExists, "a directory is in the way")),
            Ok(_) => fs::remove_file(p),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }
}

impl Destination for FsDestination {
    fn existing(&self, rel: &RelPath) -> io::Result<Existing> {
        match fs::symlink_metadata(self.path(rel)) {
            Ok(m) if m.is_dir() => Ok(Existing::Dir),
            Ok(m) if m.is_file() => {
                Ok(Existing::File { size: m.len(), mtime: crate::meta::ns(m.mtime(), m.mtime_nsec()) })
            }
            Ok(_) => Ok(Existing::Other),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Existing::Nothing),
            Err(e) => Err(e),
        }
    }

    fn fresh(&self, rel: &RelPath) -> io::Result<bool> {
        let p = self.path(rel);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => Ok(fs::read_dir(&p)?.next().is_none()),
            Ok(_) => Ok(false),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
            Err(e) => Err(e),
        }
    }

    fn create_dir(&self, rel: &RelPath) -> io::Result<()> {
        let p = self.path(rel);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(io::Error::new(io::ErrorKind::AlreadyExists, "exists and is not a directory")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => fs::create_dir(&p),
            Err(e) => Err(e),
        }
    }

    fn create_file(&self, rel: &RelPath, size: u64) -> io::Result<()> {
        let p = self.path(rel);
        let create =
            || fs::OpenOptions::new().write(true).create_new(true).mode(0o600).custom_flags(libc::O_NOFOLLOW).open(&p);
        // Created new, never opened through what is there: whatever is in the way (a
        // file, a symlink planted meanwhile) is removed first. Tried first without that
        // lookup, which a restore into a new directory never needs.
        let f = match create() {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                self.clear(&p)?;
                create()?
            }
            r => r?,
        };
        if size > 0 {
            f.set_len(size)?;
        }
        Ok(())
    }

    fn write_at(&self, rel: &RelPath, offset: u64, data: &[u8]) -> io::Result<()> {
        let f = fs::OpenOptions::new().write(true).custom_flags(libc::O_NOFOLLOW).open(self.path(rel))?;
        f.write_all_at(data, offset)
    }

    fn create_special(&self, rel: &RelPath, node: &Node) -> io::Result<()> {
        let p = self.path(rel);
        self.clear(&p)?;
        match node.kind {
            NodeKind::Symlink => {
                let t = node.link_target.as_ref().ok_or_else(|| io::Error::other("symlink without target"))?;
                std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(&t.0), &p)
            }
            NodeKind::Chardev | NodeKind::Blockdev if !self.root_user => {
                Err(io::Error::new(io::ErrorKind::PermissionDenied, "creating a device needs root"))
            }
            k => mknod(&p, k, node.mode, node.rdev),
        }
    }

    fn hardlink(&self, existing: &RelPath, new: &RelPath) -> io::Result<()> {
        let p = self.path(new);
        self.clear(&p)?;
        fs::hard_link(self.path(existing), p)
    }

    fn set_metadata(&self, rel: &RelPath, node: &Node) -> io::Result<()> {
        let p = self.path(rel);
        let mode = fs::Permissions::from_mode(node.mode & 0o7777);
        if matches!(node.kind, NodeKind::File | NodeKind::Dir) {
            // Through a descriptor opened without following links: a symlink swapped in
            // after creation cannot redirect the chown, chmod or times. One lookup of the
            // path instead of three.
            match fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(&p) {
                Ok(f) => {
                    if self.root_user {
                        std::os::unix::fs::fchown(&f, Some(node.uid), Some(node.gid))?;
                    }
                    f.set_permissions(mode)?;
                    write_xattrs(&p, &node.xattrs)?;
                    return set_times_fd(&f, node.atime, node.mtime);
                }
                // A file restored without read permission for us (non-root, mode 0o200):
                // fall back to the path, which we just created ourselves.
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {}
                Err(e) => return Err(e),
            }
        }
        if self.root_user {
            std::os::unix::fs::lchown(&p, Some(node.uid), Some(node.gid))?;
        }
        if node.kind != NodeKind::Symlink {
            fs::set_permissions(&p, mode)?;
        }
        write_xattrs(&p, &node.xattrs)?;
        set_times(&p, node.atime, node.mtime)
    }

    fn open_read(&self, rel: &RelPath) -> io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(self.path(rel))?))
    }
}

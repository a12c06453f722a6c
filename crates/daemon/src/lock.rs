//! Per-source (and per-repository) locks: `flock` on a file in the state directory. The
//! kernel releases an flock when the process holding it dies, however it dies, so no lock
//! outlives its job and none ever needs removing by hand. The file holds the holder's pid
//! and job id, for the message of whoever finds it taken.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// A held lock; released on drop (or by the kernel when the process dies).
#[derive(Debug)]
pub struct Lock {
    file: File,
    path: PathBuf,
}

impl Lock {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records who holds it (the job id once it is known).
    pub fn describe(&mut self, job: &str) -> Result<()> {
        let text = format!("{} {job}\n", std::process::id());
        let io = |e| Error::io(format!("writing {}", self.path.display()), e);
        self.file.set_len(0).map_err(io)?;
        self.file.rewind().map_err(io)?;
        self.file.write_all(text.as_bytes()).map_err(io)
    }
}

/// Who holds a lock, as its file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    pub job: String,
}

fn open(path: &Path) -> Result<File> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(|e| Error::io(format!("creating {}", d.display()), e))?;
    }
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))
}

fn flock(f: &File, op: libc::c_int) -> std::io::Result<()> {
    loop {
        // SAFETY: flock on a descriptor we own; no memory is passed.
        let rc = unsafe { libc::flock(f.as_raw_fd(), op) };
        if rc == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Takes the lock if it is free; `Ok(Err(holder))` if another process (or another lock
/// in this one) holds it.
pub fn try_lock(path: &Path) -> Result<std::result::Result<Lock, Holder>> {
    let file = open(path)?;
    match flock(&file, libc::LOCK_EX | libc::LOCK_NB) {
        Ok(()) => Ok(Ok(Lock { file, path: path.to_path_buf() })),
        Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => Ok(Err(holder(path))),
        Err(e) => Err(Error::io(format!("locking {}", path.display()), e)),
    }
}

/// Waits for the lock.
pub fn lock(path: &Path) -> Result<Lock> {
    let file = open(path)?;
    flock(&file, libc::LOCK_EX).map_err(|e| Error::io(format!("locking {}", path.display()), e))?;
    Ok(Lock { file, path: path.to_path_buf() })
}

/// Whether nobody holds the lock right now (taken and released at once).
pub fn is_free(path: &Path) -> Result<bool> {
    if !path.exists() {
        return Ok(true);
    }
    Ok(try_lock(path)?.is_ok())
}

fn holder(path: &Path) -> Holder {
    let mut s = String::new();
    let _ = File::open(path).and_then(|mut f| f.read_to_string(&mut s));
    let mut it = s.split_whitespace();
    let pid = it.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    Holder { pid, job: it.next().unwrap_or("?").to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_is_refused_and_freed_on_drop() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("locks/s.lock");
        let mut l = try_lock(&p).expect("io").expect("free");
        l.describe("host/7").expect("describe");
        let h = try_lock(&p).expect("io").expect_err("held");
        assert_eq!(h, Holder { pid: std::process::id(), job: "host/7".into() });
        assert!(!is_free(&p).expect("io"));
        drop(l);
        assert!(is_free(&p).expect("io"));
    }
}

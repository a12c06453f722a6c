//! The filesystem as a backup source.

use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use cairn_engine::Source;
use cairn_format::tree::{Node, Tree};
use ignore::gitignore::{Gitignore, GitignoreBuilder};

use crate::meta::{node_from, IdNames, Stat};

#[derive(Debug, Clone, Default)]
pub struct FsSourceOptions {
    /// gitignore-syntax patterns; a pattern with a `/` is anchored at the filesystem root.
    pub excludes: Vec<String>,
    /// Do not descend into directories on another filesystem than their backup root.
    pub one_file_system: bool,
    /// The backup roots (for `one_file_system`).
    pub roots: Vec<PathBuf>,
    /// Keep access times. Off (the default), a node's `atime` is its `mtime`: reading a
    /// file or listing a directory moves its atime (relatime: once a day), and storing it
    /// would make every directory a backup looked into a new tree the next time.
    pub atime: bool,
}

pub struct FsSource {
    excludes: Gitignore,
    root_devs: Vec<(PathBuf, u64)>,
    one_file_system: bool,
    atime: bool,
    names: IdNames,
}

impl FsSource {
    pub fn new(opts: FsSourceOptions) -> Result<Self, String> {
        let mut b = GitignoreBuilder::new("/");
        for p in &opts.excludes {
            b.add_line(None, p).map_err(|e| format!("bad exclude pattern {p:?}: {e}"))?;
        }
        let excludes = b.build().map_err(|e| format!("bad exclude patterns: {e}"))?;
        let root_devs =
            opts.roots.iter().filter_map(|r| fs::symlink_metadata(r).ok().map(|m| (r.clone(), m.dev()))).collect();
        Ok(FsSource {
            excludes,
            root_devs,
            one_file_system: opts.one_file_system,
            atime: opts.atime,
            names: IdNames::default(),
        })
    }

    /// The device the entries of directory `dir` must be on to be walked into: its
    /// root's under `--one-file-system`, else any (`None`).
    pub(crate) fn walk_dev(&self, dir: &Path) -> Option<u64> {
        if self.one_file_system {
            self.root_dev(dir)
        } else {
            None
        }
    }

    /// Whether the walk leaves out an entry (`path` builds its full path, `dev` from
    /// [`Self::walk_dev`]): excluded, or a directory on another file system. The backup's
    /// walk and the [`Warmer`](crate::Warmer) decide by this one rule.
    pub(crate) fn leaves_out(&self, path: impl FnOnce() -> PathBuf, m: &Stat, dev: Option<u64>) -> bool {
        (!self.excludes.is_empty() && self.is_excluded(&path(), m.is_dir()))
            || (m.is_dir() && dev.is_some_and(|d| m.dev != d))
    }

    fn root_dev(&self, path: &Path) -> Option<u64> {
        self.root_devs
            .iter()
            .filter(|(r, _)| path.starts_with(r))
            .max_by_key(|(r, _)| r.as_os_str().len())
            .map(|(_, d)| *d)
    }
}

/// Entries from which a directory's lookups are shared out between threads.
const BIG_DIR: usize = 2048;

impl Source for FsSource {
    fn node(&self, path: &Path, name: &[u8]) -> io::Result<Node> {
        let m = fs::symlink_metadata(path)?;
        node_from(&|| path.to_path_buf(), name, &Stat::of(&m), &self.names, self.atime, None)
    }

    fn read_dir(&self, path: &Path, before: Option<&Tree>) -> io::Result<Vec<(Vec<u8>, io::Result<Node>)>> {
        // Entries are looked up by name in the open directory: a stat by full path walks
        // every component of it again (a fifth of an unchanged backup's CPU).
        // O_DIRECTORY | O_NOFOLLOW | O_NONBLOCK: a directory replaced since it was listed
        // (by a FIFO, or a symlink to one) fails here instead of blocking the walk.
        let dir = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)?;
        let mut names = crate::meta::dir_names(&dir)?;
        names.sort_unstable();
        let dev = self.walk_dev(path);
        // The entry's full path, only when needed (an exclude to match, a link or xattrs
        // to read): most entries of a re-backup need none.
        let full = |name: &[u8]| path.join(std::ffi::OsStr::from_bytes(name));
        let stat = |names: &[Vec<u8>]| {
            let mut out = Vec::with_capacity(names.len());
            for name in names {
                let m = match Stat::at(&dir, name) {
                    Ok(m) => m,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue, // removed meanwhile
                    Err(e) => {
                        out.push((name.clone(), Err(e)));
                        continue;
                    }
                };
                if self.leaves_out(|| full(name), &m, dev) {
                    continue;
                }
                let n = node_from(&|| full(name), name, &m, &self.names, self.atime, before.and_then(|t| t.find(name)));
                out.push((name.clone(), n));
            }
            out
        };
        if names.len() < BIG_DIR {
            return Ok(stat(&names));
        }
        // The walk shares out directories, not the entries of one: a directory of 18,000
        // man pages kept one thread busy a quarter of a second alone at the end of an
        // unchanged re-backup (cold, 2 cores). Its entries are looked up in parts, on
        // threads of their own, and put back in name order.
        let parts = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 8) * 2;
        let per = names.len().div_ceil(parts);
        std::thread::scope(|s| {
            let stat = &stat;
            let running: Vec<_> = names
                .chunks(per)
                .map(|part| {
                    let t = std::thread::Builder::new().name("stat".into()).spawn_scoped(s, move || stat(part));
                    // No thread to be had: this one does the part.
                    t.map_err(|_| stat(part))
                })
                .collect();
            let mut out = Vec::with_capacity(names.len());
            for part in running {
                match part {
                    Ok(t) => {
                        out.extend(t.join().map_err(|_| io::Error::other("a thread looking up entries panicked"))?)
                    }
                    Err(done) => out.extend(done),
                }
            }
            Ok(out)
        })
    }

    fn open(&self, path: &Path, walked: &Node, offset: u64) -> io::Result<Box<dyn Read + Send>> {
        // O_NOATIME keeps backups from touching access times; only the owner (or root)
        // may use it, so fall back without it. O_NONBLOCK: if the file was replaced by a
        // FIFO since the walk, opening it must not hang the backup.
        let flags = libc::O_NOFOLLOW | libc::O_NONBLOCK;
        let f = fs::OpenOptions::new().read(true).custom_flags(flags | libc::O_NOATIME).open(path);
        let f = match f {
            Ok(f) => f,
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                fs::OpenOptions::new().read(true).custom_flags(flags).open(path)?
            }
            Err(e) => return Err(e),
        };
        let m = f.metadata()?;
        if !m.is_file() {
            return Err(io::Error::other("no longer a regular file"));
        }
        if walked.inode != 0 && (m.dev(), m.ino()) != (walked.device, walked.inode) {
            return Err(io::Error::other("replaced by another file since it was listed"));
        }
        // Back to blocking reads.
        use std::os::fd::AsRawFd;
        // SAFETY: fcntl on a descriptor we own.
        unsafe {
            let fl = libc::fcntl(f.as_raw_fd(), libc::F_GETFL);
            if fl >= 0 {
                libc::fcntl(f.as_raw_fd(), libc::F_SETFL, fl & !libc::O_NONBLOCK);
            }
        }
        let mut f = f;
        if offset > 0 {
            use std::io::Seek;
            f.seek(io::SeekFrom::Start(offset))?;
        }
        if walked.size <= AHEAD {
            return Ok(Box::new(f));
        }
        Ok(Box::new(ReadAhead { f, pos: offset, asked: offset }))
    }

    fn prefetch(&self, path: &Path, walked: &Node) {
        // The same flags as `open`: no access time, no symlink, no blocking on a FIFO
        // swapped in since the walk. Opening a file does not move its access time; only
        // reading does, and WILLNEED reads into the page cache without touching it.
        let flags = libc::O_NOFOLLOW | libc::O_NONBLOCK;
        let f = fs::OpenOptions::new().read(true).custom_flags(flags | libc::O_NOATIME).open(path);
        let f = match f {
            Ok(f) => f,
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                match fs::OpenOptions::new().read(true).custom_flags(flags).open(path) {
                    Ok(f) => f,
                    Err(_) => return,
                }
            }
            Err(_) => return,
        };
        use std::os::fd::AsRawFd;
        let len = libc::off_t::try_from(walked.size).unwrap_or(0);
        // SAFETY: fadvise on a descriptor we own; it only starts reads into the page cache.
        unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, len, libc::POSIX_FADV_WILLNEED) };
    }

    fn changed_since(&self, path: &Path, before: &Node) -> bool {
        match fs::symlink_metadata(path) {
            Ok(m) => {
                m.len() != before.size
                    || crate::meta::ns(m.mtime(), m.mtime_nsec()) != before.mtime
                    || crate::meta::ns(m.ctime(), m.ctime_nsec()) != before.ctime
            }
            Err(_) => true,
        }
    }

    fn is_excluded(&self, path: &Path, is_dir: bool) -> bool {
        self.excludes.matched(path, is_dir).is_ignore()
    }
}

/// How far ahead of a large file's reader its next bytes are asked for.
const AHEAD: u64 = 32 << 20;

/// A large file read with its next [`AHEAD`] bytes asked for ahead of the reader
/// (`posix_fadvise` WILLNEED, which starts the reads and returns). The kernel's own
/// readahead keeps one window in flight and waits for it when the reader catches up.
struct ReadAhead {
    f: fs::File,
    pos: u64,
    /// Bytes up to here have been asked for.
    asked: u64,
}

impl Read for ReadAhead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.asked < self.pos + AHEAD / 2 + buf.len() as u64 {
            use std::os::fd::AsRawFd;
            let from = self.asked.max(self.pos);
            if let (Ok(at), Ok(len)) = (libc::off_t::try_from(from), libc::off_t::try_from(AHEAD)) {
                // SAFETY: fadvise on a descriptor we own; it only starts reads into the
                // page cache.
                unsafe { libc::posix_fadvise(self.f.as_raw_fd(), at, len, libc::POSIX_FADV_WILLNEED) };
                self.asked = from + AHEAD;
            }
        }
        let n = self.f.read(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reading ahead is a hint: it moves no access time, returns at once on a FIFO put
    /// where the walk saw a file (a blocking open would hang the walk), follows no
    /// symlink and shrugs off a file that is gone.
    #[test]
    fn prefetch_moves_no_access_time_and_never_blocks_or_follows() {
        let tmp = std::env::temp_dir().join(format!("cairn-prefetch-{}", std::process::id()));
        std::fs::create_dir_all(&tmp).unwrap();
        let file = tmp.join("small");
        std::fs::write(&file, b"a small file's bytes").unwrap();
        let c = std::ffi::CString::new(file.as_os_str().as_bytes()).unwrap();
        // Older than the mtime: relatime would move it on any read.
        let t = [
            libc::timespec { tv_sec: 1_000_000_000, tv_nsec: 0 },
            libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_OMIT },
        ];
        assert_eq!(unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), t.as_ptr(), 0) }, 0);
        let src = FsSource::new(FsSourceOptions { roots: vec![tmp.clone()], ..Default::default() }).unwrap();
        let node = src.node(&file, b"small").unwrap();
        src.prefetch(&file, &node);
        let fifo = tmp.join("fifo");
        let cf = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(cf.as_ptr(), 0o600) }, 0);
        std::os::unix::fs::symlink(&fifo, tmp.join("link")).unwrap();
        for p in [fifo.clone(), tmp.join("link"), tmp.join("gone")] {
            src.prefetch(&p, &node);
        }
        let atime = std::fs::metadata(&file).unwrap().atime();
        std::fs::remove_dir_all(&tmp).unwrap();
        assert_eq!(atime, 1_000_000_000);
    }

    /// A file larger than the read-ahead window reads back whole, from its start and
    /// from an offset, through reads of every size.
    #[test]
    fn a_large_file_reads_back_whole_with_its_bytes_asked_for_ahead() {
        let tmp = std::env::temp_dir().join(format!("cairn-ahead-{}", std::process::id()));
        std::fs::create_dir_all(&tmp).unwrap();
        let file = tmp.join("large");
        let len = AHEAD as usize + AHEAD as usize / 3 + 7;
        let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
        std::fs::write(&file, &data).unwrap();
        let src = FsSource::new(FsSourceOptions { roots: vec![tmp.clone()], ..Default::default() }).unwrap();
        let node = src.node(&file, b"large").unwrap();
        for (offset, step) in [(0usize, 1 << 20), (5 << 20, 4096 + 3), (len - 10, 64)] {
            let mut r = src.open(&file, &node, offset as u64).unwrap();
            let mut got = Vec::new();
            let mut buf = vec![0u8; step];
            loop {
                let n = r.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            assert!(got == data[offset..], "from {offset} in reads of {step}: {} bytes", got.len());
        }
        std::fs::remove_dir_all(&tmp).unwrap();
    }

    /// A directory big enough to be looked up in parts comes back as a small one does:
    /// every entry once, in name order, excludes applied, each with its own metadata.
    #[test]
    fn a_big_directory_is_listed_whole_in_name_order() {
        let tmp = std::env::temp_dir().join(format!("cairn-bigdir-{}", std::process::id()));
        let dir = tmp.join("big");
        std::fs::create_dir_all(&dir).unwrap();
        let n = BIG_DIR * 2 + 7;
        for i in 0..n {
            // Sizes tell the entries apart: a part put back in the wrong place shows.
            std::fs::write(dir.join(format!("f{i:05}")), vec![b'x'; i % 97]).unwrap();
        }
        for i in 0..5 {
            std::fs::write(dir.join(format!("skip{i}.tmp")), b"").unwrap();
        }
        std::fs::create_dir(dir.join("sub")).unwrap();
        let opts = FsSourceOptions { excludes: vec!["*.tmp".into()], roots: vec![tmp.clone()], ..Default::default() };
        let got = FsSource::new(opts).unwrap().read_dir(&dir, None);
        std::fs::remove_dir_all(&tmp).unwrap();
        let got = got.unwrap();
        let mut want: Vec<Vec<u8>> = (0..n).map(|i| format!("f{i:05}").into_bytes()).collect();
        want.push(b"sub".to_vec());
        assert_eq!(got.iter().map(|(name, _)| name.clone()).collect::<Vec<_>>(), want);
        for (i, (_, node)) in got.iter().take(n).enumerate() {
            assert_eq!(node.as_ref().unwrap().size, (i % 97) as u64);
        }
        assert!(matches!(got[n].1.as_ref().unwrap().kind, cairn_format::tree::NodeKind::Dir));
    }
}

//! Consistent backups of live SQLite databases.
//!
//! Copying a database file while another process writes to it can capture a torn state
//! (pages from before and after a transaction, or a missing `-wal`). SQLite's online backup
//! API copies a consistent snapshot: [`SqliteSource`] makes such a copy into a private
//! temporary file, in one step under one read transaction (a copy in small steps restarts
//! whenever another process writes, and may never finish under a busy writer), then offers
//! the database's path to the engine with the copy's content and the original's metadata.
//! It restores as an ordinary, self-contained database file.

use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cairn_engine::Source;
use cairn_format::tree::{Node, Tree};
use rusqlite::{backup::Backup, Connection, OpenFlags};

use crate::{FsSource, FsSourceOptions};

pub struct SqliteSource {
    fs: FsSource,
    db: PathBuf,
    copy: PathBuf,
}

fn err(db: &Path, e: impl std::fmt::Display) -> String {
    format!("{}: {e}", db.display())
}

/// Copies `db` consistently into `dest` through the online backup API, retrying while the
/// database is locked, for at most `timeout`.
pub fn consistent_copy(db: &Path, dest: &Path, timeout: Duration) -> Result<(), String> {
    if !db.is_file() {
        return Err(err(db, "not a file"));
    }
    let src = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(|e| err(db, e))?;
    src.busy_timeout(Duration::from_secs(5)).map_err(|e| err(db, e))?;
    // Fails with "file is not a database" for anything else.
    src.query_row("PRAGMA schema_version", [], |r| r.get::<_, i64>(0)).map_err(|e| err(db, e))?;
    let mut dst = Connection::open(dest).map_err(|e| err(dest, e))?;
    let deadline = Instant::now() + timeout;
    loop {
        let b = Backup::new(&src, &mut dst).map_err(|e| err(db, e))?;
        match b.step(-1) {
            Ok(rusqlite::backup::StepResult::Done) => break,
            Ok(rusqlite::backup::StepResult::Busy | rusqlite::backup::StepResult::Locked)
            | Ok(rusqlite::backup::StepResult::More) => {}
            Ok(_) => {}
            Err(e) => return Err(err(db, e)),
        }
        drop(b);
        if Instant::now() >= deadline {
            return Err(err(db, format!("still locked by another process after {} s", timeout.as_secs())));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    dst.close().map_err(|(_, e)| err(dest, e))?;
    Ok(())
}

impl SqliteSource {
    /// Makes the consistent copy of `db` (an absolute path) in `tmp_dir`.
    pub fn new(db: &Path, tmp_dir: &Path) -> Result<SqliteSource, String> {
        let name = format!(
            ".cairn-sqlite-{}-{}",
            std::process::id(),
            db.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()
        );
        let copy = tmp_dir.join(name);
        {
            // Private from the start: it holds the whole database.
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&copy)
                .map_err(|e| err(&copy, e))?;
        }
        let s = SqliteSource {
            fs: FsSource::new(FsSourceOptions {
                excludes: Vec::new(),
                one_file_system: false,
                roots: vec![db.to_path_buf()],
                atime: false,
            })?,
            db: db.to_path_buf(),
            copy,
        };
        consistent_copy(db, &s.copy, Duration::from_secs(300))?;
        Ok(s)
    }
}

impl Drop for SqliteSource {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.copy);
    }
}

impl Source for SqliteSource {
    fn node(&self, path: &Path, name: &[u8]) -> io::Result<Node> {
        let mut n = self.fs.node(path, name)?;
        if path == self.db {
            n.size = std::fs::metadata(&self.copy)?.len();
        }
        Ok(n)
    }

    fn read_dir(&self, path: &Path, before: Option<&Tree>) -> io::Result<Vec<(Vec<u8>, io::Result<Node>)>> {
        self.fs.read_dir(path, before)
    }

    fn open(&self, path: &Path, walked: &Node, offset: u64) -> io::Result<Box<dyn Read + Send>> {
        if path != self.db {
            return self.fs.open(path, walked, offset);
        }
        let mut f = std::fs::File::open(&self.copy)?;
        f.seek(SeekFrom::Start(offset))?;
        Ok(Box::new(f))
    }

    fn changed_since(&self, path: &Path, before: &Node) -> bool {
        path != self.db && self.fs.changed_since(path, before)
    }
}

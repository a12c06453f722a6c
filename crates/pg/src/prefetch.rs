//! WAL prefetch for recovery: PostgreSQL calls `restore_command` once per segment and
//! waits for each, so replay is bound by one fetch-and-decrypt at a time. The prefetcher
//! fetches the next segments of the timeline recovery is on, several at once, into a
//! spool that `archive-get` serves from (pgBackRest's asynchronous archive-get queue is
//! the model).
//!
//! Key decisions:
//! - The spool is `pg_wal/cairn-prefetch/` of the cluster in recovery (`archive-get`'s
//!   `%p` is relative to the data directory): on the same file system as `pg_wal`, so a
//!   spooled segment is handed over by a rename, never copied.
//! - Only complete segments are spooled (never a `.partial`: it may still grow), each
//!   written under a temporary name and renamed, so `archive-get` never hands over half a
//!   file; a segment not in the spool is fetched directly as before, and a segment the
//!   archive lacks still answers "missing" at once.
//! - One prefetcher per spool (an `flock` on `spool/lock`), started by `archive-get` and
//!   following what it was last asked for (`spool/wanted`). It stops, removing the spool,
//!   when no request came for [`IDLE`] (recovery ended or the server stopped) or when the
//!   spool directory is gone (a drill's sandbox removed).
//! - Bounded: at most `depth` segments ahead (16 MiB each by default), `parallel` fetches
//!   at once; segments behind the last request are removed.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_repo::Repository;

use crate::wal::{self, Kind, WalName};
use crate::{Error, Result};

/// How long the prefetcher waits for a request before it ends.
pub const IDLE: Duration = Duration::from_secs(60);
/// Segments fetched ahead of the last request.
pub const DEPTH: u64 = 8;
/// Fetches at once.
pub const PARALLEL: usize = 4;

/// The spool of the cluster whose `restore_command` writes to `dest` (`%p`).
pub fn spool_for(dest: &Path) -> PathBuf {
    dest.parent().map(|d| d.join("cairn-prefetch")).unwrap_or_else(|| PathBuf::from("cairn-prefetch"))
}

/// Hands over a spooled `name` to `dest` (a rename); `false` when it is not spooled.
pub fn take(spool: &Path, name: &str, dest: &Path) -> bool {
    WalName::parse(name).is_some_and(|w| w.kind == Kind::Segment) && std::fs::rename(spool.join(name), dest).is_ok()
}

/// Records that recovery asked for `name` (a segment of `size` bytes): the prefetcher
/// works ahead of it.
pub fn want(spool: &Path, name: &str, size: u64) -> Result<()> {
    std::fs::create_dir_all(spool).map_err(|e| Error::io(format!("creating {}", spool.display()), e))?;
    let tmp = spool.join("wanted.tmp");
    std::fs::write(&tmp, format!("{name} {size}\n")).map_err(|e| Error::io(tmp.display().to_string(), e))?;
    std::fs::rename(&tmp, spool.join("wanted")).map_err(|e| Error::io(spool.display().to_string(), e))
}

fn read_wanted(spool: &Path) -> Option<(WalName, u64, std::time::SystemTime)> {
    let p = spool.join("wanted");
    let at = std::fs::metadata(&p).ok()?.modified().ok()?;
    let text = std::fs::read_to_string(&p).ok()?;
    let (name, size) = text.trim().split_once(' ')?;
    let w = WalName::parse(name).filter(|w| w.kind == Kind::Segment)?;
    let size: u64 = size.parse().ok().filter(|s: &u64| s.is_power_of_two() && *s >= 1 << 20)?;
    Some((w, size, at))
}

/// Whether a prefetcher holds the spool now.
pub fn running(spool: &Path) -> bool {
    match open_lock(spool) {
        Some(f) => !try_flock(&f),
        None => false,
    }
}

fn open_lock(spool: &Path) -> Option<std::fs::File> {
    std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(spool.join("lock")).ok()
}

fn try_flock(f: &std::fs::File) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a file descriptor we own.
    unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

/// Runs the prefetcher for `spool` until it is idle for `idle` (see the module notes).
/// Returns at once when another one runs.
pub fn run(repo: &Repository, spool: &Path, depth: u64, parallel: usize, idle: Duration) -> Result<()> {
    let Some(lock) = open_lock(spool) else { return Ok(()) };
    if !try_flock(&lock) {
        return Ok(());
    }
    let mut last_request = Instant::now();
    let mut last_seen: Option<std::time::SystemTime> = None;
    loop {
        if !spool.is_dir() {
            return Ok(());
        }
        let Some((w, size, at)) = read_wanted(spool) else {
            if last_request.elapsed() > idle {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        if last_seen != Some(at) {
            last_seen = Some(at);
            last_request = Instant::now();
        } else if last_request.elapsed() > idle {
            break;
        }
        let Some(cur) = w.segno(size) else { break };
        // Behind the last request: consumed or skipped.
        if let Ok(rd) = std::fs::read_dir(spool) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if let Some(old) = WalName::parse(&n).filter(|o| o.kind == Kind::Segment) {
                    if old.timeline != w.timeline || old.segno(size).is_some_and(|s| s <= cur) {
                        let _ = std::fs::remove_file(e.path());
                    }
                }
            }
        }
        let todo: Vec<String> = (cur + 1..=cur + depth)
            .map(|s| wal::segment_name(w.timeline, s, size))
            .filter(|n| !spool.join(n).exists())
            .collect();
        if todo.is_empty() {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        if fetch_all(repo, spool, &todo, parallel)?.is_some() {
            // The archive ends there, for now (archiving may still be filling it): look
            // again shortly, not in a busy loop.
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    let _ = std::fs::remove_dir_all(spool);
    Ok(())
}

/// Fetches `names` into the spool, `parallel` at once; the first name (in order) the
/// archive lacks, if any.
fn fetch_all(repo: &Repository, spool: &Path, names: &[String], parallel: usize) -> Result<Option<String>> {
    let next = Mutex::new(0usize);
    let missing: Mutex<Option<usize>> = Mutex::new(None);
    let failed: Mutex<Option<Error>> = Mutex::new(None);
    let stop = Arc::new(AtomicBool::new(false));
    std::thread::scope(|s| {
        for _ in 0..parallel.max(1).min(names.len()) {
            s.spawn(|| loop {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let i = {
                    let Ok(mut n) = next.lock() else { return };
                    let i = *n;
                    *n += 1;
                    i
                };
                let Some(name) = names.get(i) else { return };
                if missing.lock().ok().and_then(|m| *m).is_some_and(|m| m < i) {
                    return;
                }
                let Some(w) = WalName::parse(name) else { return };
                let tmp = spool.join(format!("{name}.tmp"));
                let r = std::fs::File::create(&tmp)
                    .map_err(|e| Error::io(tmp.display().to_string(), e))
                    .and_then(|mut f| wal::get_exact_to(repo, &w, &mut f));
                match r {
                    Ok(Some(_)) => {
                        let _ = std::fs::rename(&tmp, spool.join(name));
                    }
                    Ok(None) => {
                        let _ = std::fs::remove_file(&tmp);
                        if let Ok(mut m) = missing.lock() {
                            *m = Some(m.map_or(i, |x| x.min(i)));
                        }
                    }
                    Err(e) => {
                        let _ = std::fs::remove_file(&tmp);
                        stop.store(true, Ordering::Relaxed);
                        if let Ok(mut f) = failed.lock() {
                            f.get_or_insert(e);
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = failed.into_inner().ok().flatten() {
        return Err(e);
    }
    Ok(missing.into_inner().ok().flatten().map(|i| names[i].clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spool_hands_over_only_complete_segments_by_rename() {
        let dir = tempfile::tempdir().expect("tmp");
        let spool = spool_for(&dir.path().join("pg_wal/RECOVERYXLOG"));
        assert!(spool.ends_with("pg_wal/cairn-prefetch"));
        std::fs::create_dir_all(&spool).expect("mkdir");
        let seg = "000000010000000000000003";
        std::fs::write(spool.join(seg), b"wal").expect("write");
        std::fs::write(spool.join(format!("{seg}.tmp")), b"half").expect("write");
        let dest = dir.path().join("got");
        assert!(!take(&spool, "000000010000000000000004", &dest), "not spooled");
        assert!(!take(&spool, "00000002.history", &dest), "history files are never spooled");
        assert!(take(&spool, seg, &dest));
        assert_eq!(std::fs::read(&dest).expect("read"), b"wal");
        want(&spool, seg, 16 << 20).expect("want");
        let (w, size, _) = read_wanted(&spool).expect("wanted");
        assert_eq!((w.name.as_str(), size), (seg, 16 << 20));
        assert!(!running(&spool));
    }
}

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
        let todo: Vec<(WalName, String)> =
            todo.into_iter().filter_map(|n| WalName::parse(&n).map(|w| (w, n))).collect();
        if fetch_all(repo, spool, &todo, parallel, None)?.0.is_some() {
            // The archive ends there, for now (archiving may still be filling it): look
            // again shortly, not in a busy loop.
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    let _ = std::fs::remove_dir_all(spool);
    Ok(())
}

/// Fetches each `(object, file)` of `names` into the spool as `file`, `parallel` at once
/// (each written under a temporary name, owned by `owner` when given, then renamed); the
/// first file (in order) the archive lacks, if any, and the bytes fetched.
fn fetch_all(
    repo: &Repository,
    spool: &Path,
    names: &[(WalName, String)],
    parallel: usize,
    owner: Option<(u32, u32)>,
) -> Result<(Option<String>, u64)> {
    let next = Mutex::new(0usize);
    let bytes = std::sync::atomic::AtomicU64::new(0);
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
                let Some((object, name)) = names.get(i) else { return };
                if missing.lock().ok().and_then(|m| *m).is_some_and(|m| m < i) {
                    return;
                }
                let tmp = spool.join(format!("{name}.tmp"));
                let r = std::fs::File::create(&tmp).map_err(|e| Error::io(tmp.display().to_string(), e)).and_then(
                    |mut f| {
                        let got = wal::get_exact_to(repo, object, &mut f)?;
                        if let (Some(_), Some((uid, gid))) = (got, owner) {
                            std::os::unix::fs::fchown(&f, Some(uid), Some(gid))
                                .map_err(|e| Error::io(format!("chown {}", tmp.display()), e))?;
                        }
                        Ok(got)
                    },
                );
                match r {
                    Ok(Some(_)) => {
                        let len = std::fs::metadata(&tmp).map(|m| m.len()).unwrap_or(0);
                        bytes.fetch_add(len, Ordering::Relaxed);
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
    Ok((missing.into_inner().ok().flatten().map(|i| names[i].1.clone()), bytes.into_inner()))
}

// ---- a drill's feed ----
//
// A drill's sandbox server never holds the repository's password, so it cannot run
// `archive-get`. The drill process fetches instead, while the server replays: its
// `restore_command` is a small shell script that hands over what the drill put in the
// spool (a rename, as above) and waits for what is not there yet. The protocol, all in
// the spool directory:
// - `list`: every file the recovery may ask for ([`crate::restore::wal_plan`]); a name
//   not in it answers "missing" at once (the end of the archive, a history file of a
//   timeline that does not exist);
// - `wanted`: the script's last request (`name pid`, new content on every request), which
//   the feeder works ahead of; a file asked for again after it was handed over is fetched
//   again (PostgreSQL may re-read a segment);
// - `<name>`: a complete file, renamed into `pg_wal` by the script.
// The script never answers "missing" for a listed file it has not got (recovery would end
// early and the drill would validate less than it should): it waits, and the drill, which
// watches the feed, stops the server when the feed fails. It ends when the spool is gone.

/// The script the sandbox server's `restore_command` runs (`sh <script> %f %p`).
fn handover_script(spool: &Path) -> String {
    let s = spool.display().to_string().replace('\'', "'\\''");
    format!(
        "# cairn drill: hands PostgreSQL a WAL file the drill fetches into this spool\n\
         s='{s}'\n\
         f=$1\n\
         grep -qxF -e \"$f\" \"$s/list\" || exit 1\n\
         echo \"$f $$\" >\"$s/wanted.$$\" && mv -f \"$s/wanted.$$\" \"$s/wanted\" || exit 2\n\
         while [ ! -e \"$s/$f\" ]; do [ -d \"$s\" ] || exit 2; sleep 0.01; done\n\
         exec mv -f \"$s/$f\" \"$2\"\n"
    )
}

/// Sets up a drill's spool (the directory exists, owned by `owner` when given): writes
/// the list and the script, fetches the history files (small, read first). Returns the
/// `restore_command`.
pub fn prepare_feed(
    repo: &Repository,
    plan: &[crate::restore::PlannedWal],
    spool: &Path,
    owner: Option<(u32, u32)>,
) -> Result<String> {
    let write = |name: &str, text: &str| -> Result<()> {
        let p = spool.join(name);
        std::fs::write(&p, text).map_err(|e| Error::io(p.display().to_string(), e))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&p, Some(uid), Some(gid))
                .map_err(|e| Error::io(format!("chown {}", p.display()), e))?;
        }
        Ok(())
    };
    let list: String = plan.iter().map(|p| format!("{}\n", p.file)).collect();
    write("list", &list)?;
    write("handover", &handover_script(spool))?;
    let history: Vec<(WalName, String)> =
        plan.iter().filter(|p| p.object.kind == Kind::History).map(|p| (p.object.clone(), p.file.clone())).collect();
    if let (Some(gone), _) = fetch_all(repo, spool, &history, PARALLEL, owner)? {
        return Err(Error::Damaged(format!("WAL file {gone} was listed but is gone from the repository")));
    }
    let script = spool.join("handover").display().to_string().replace('\'', "'\\''");
    Ok(format!("sh '{script}' %f %p"))
}

/// What a feed fetched.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Fed {
    pub files: u64,
    pub bytes: u64,
}

/// Feeds the spool of [`prepare_feed`] until `stop` is set: at most `depth` segments ahead
/// of the last request, `parallel` fetches at once. An error (a segment gone from the
/// repository, a damaged object) ends the feed: the script then waits, and the drill,
/// which watches the feed, fails with it.
pub fn feed(
    repo: &Repository,
    plan: &[crate::restore::PlannedWal],
    spool: &Path,
    owner: Option<(u32, u32)>,
    depth: usize,
    parallel: usize,
    stop: &AtomicBool,
) -> Result<Fed> {
    #[derive(Clone, Copy, PartialEq)]
    enum State {
        Todo,
        Spooled,
        Gone,
    }
    let segs: Vec<&crate::restore::PlannedWal> = plan.iter().filter(|p| p.object.kind != Kind::History).collect();
    let mut state = vec![State::Todo; segs.len()];
    let mut fed = Fed::default();
    let mut last = String::new();
    let mut at = 0usize;
    while !stop.load(Ordering::Relaxed) {
        // Handed over (or removed) since the last look.
        for (i, s) in state.iter_mut().enumerate() {
            if *s == State::Spooled && !spool.join(&segs[i].file).exists() {
                *s = State::Gone;
            }
        }
        let wanted = std::fs::read_to_string(spool.join("wanted")).unwrap_or_default();
        if wanted != last {
            last = wanted;
            let name = last.split_whitespace().next().unwrap_or("");
            if let Some(i) = segs.iter().position(|p| p.file == name) {
                if state[i] == State::Gone {
                    state[i] = State::Todo;
                }
                // What recovery skipped will not be asked for: out of the spool.
                for (j, s) in state.iter_mut().enumerate().take(i) {
                    if *s == State::Spooled {
                        let _ = std::fs::remove_file(spool.join(&segs[j].file));
                        *s = State::Gone;
                    }
                }
                at = i;
            }
        }
        let end = (at + depth.max(1)).min(segs.len());
        let todo: Vec<usize> = (at..end).filter(|&i| state[i] == State::Todo).collect();
        if todo.is_empty() {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        let names: Vec<(WalName, String)> =
            todo.iter().map(|&i| (segs[i].object.clone(), segs[i].file.clone())).collect();
        let (gone, bytes) = fetch_all(repo, spool, &names, parallel, owner)?;
        if let Some(gone) = gone {
            return Err(Error::Damaged(format!("WAL file {gone} was listed but is gone from the repository")));
        }
        for &i in &todo {
            state[i] = State::Spooled;
        }
        fed.files += todo.len() as u64;
        fed.bytes += bytes;
    }
    Ok(fed)
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

    /// A drill's feed: the handover script gets each segment (by rename), a name not in
    /// the list answers "missing" at once, a segment asked for again after it was handed
    /// over is fetched again, and one recovery skips is dropped from the spool.
    #[test]
    fn a_drill_feed_hands_over_refetches_and_says_missing() {
        let dir = tempfile::tempdir().expect("tmp");
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("rt");
        let store = std::sync::Arc::new(cairn_store::LocalStore::new(dir.path().join("repo")));
        let opts = cairn_repo::InitOptions {
            kdf: cairn_crypto::KdfParams { memory_kib: 1024, iterations: 1, parallelism: 1 },
            ..Default::default()
        };
        let meta = cairn_repo::KeyMeta { hostname: "h".into(), username: "u".into(), created: "now".into() };
        let repo = Repository::init(store, rt.handle().clone(), b"pw", &meta, opts).expect("init");
        let names: Vec<String> = (1..=4).map(|i| format!("0000000100000000000000{i:02X}")).collect();
        let content = |i: usize| format!("segment {i} ").repeat(1000 + i).into_bytes();
        let mut plan = Vec::new();
        for (i, n) in names.iter().enumerate() {
            let w = WalName::parse(n).expect("name");
            wal::push(&repo, &w, &content(i)).expect("push");
            plan.push(crate::restore::PlannedWal { object: w, file: n.clone() });
        }
        let spool = dir.path().join("spool");
        std::fs::create_dir(&spool).expect("mkdir");
        let rc = prepare_feed(&repo, &plan, &spool, None).expect("prepare");
        let stop = AtomicBool::new(false);
        let dest = dir.path().join("RECOVERYXLOG");
        let get = |name: &str| {
            let cmd = rc.replace("%f", name).replace("%p", &dest.display().to_string());
            let _ = std::fs::remove_file(&dest);
            // A handover that never comes fails the test instead of hanging it.
            let ok = std::process::Command::new("timeout")
                .args(["10", "sh", "-c"])
                .arg(&cmd)
                .status()
                .expect("sh")
                .success();
            (ok, std::fs::read(&dest).ok())
        };
        let fed = std::thread::scope(|s| {
            let feeder = s.spawn(|| feed(&repo, &plan, &spool, None, 2, 2, &stop));
            assert_eq!(get(&names[0]), (true, Some(content(0))));
            let t = Instant::now();
            assert_eq!(get("000000010000000000000009"), (false, None), "not archived: missing");
            assert_eq!(get("00000002.history"), (false, None), "no such timeline: missing");
            assert!(t.elapsed() < Duration::from_secs(2), "missing answers at once");
            assert_eq!(get(&names[0]), (true, Some(content(0))), "asked again: fetched again");
            assert_eq!(get(&names[2]), (true, Some(content(2))), "skipping one");
            let t = Instant::now();
            while spool.join(&names[1]).exists() {
                assert!(t.elapsed() < Duration::from_secs(5), "the skipped segment stays in the spool");
                std::thread::sleep(Duration::from_millis(10));
            }
            assert_eq!(get(&names[3]), (true, Some(content(3))));
            stop.store(true, Ordering::Relaxed);
            feeder.join().expect("join").expect("feed")
        });
        assert!(fed.files >= 4, "{fed:?}");
    }
}

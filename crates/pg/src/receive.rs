//! Streaming WAL into the repository by supervising `pg_receivewal`.
//!
//! `pg_receivewal` speaks the replication protocol (through a replication slot, so the
//! server keeps WAL the streamer has not received) and writes segments into a spool
//! directory: the one being filled as `<segment>.partial`, renamed when complete. We ship
//! each completed file to the repository (then delete it from the spool) and, whenever the
//! partial segment changed, store it as `<segment>.partial` (overwriting the previous one):
//! the RPO is the polling interval plus one upload, not `archive_timeout`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cairn_repo::Repository;

use crate::wal::{self, Kind, WalName};
use crate::{Error, Result};

#[derive(Debug, Clone)]
pub struct StreamOptions {
    /// libpq connection string (replication privileges needed).
    pub conn: String,
    pub spool: PathBuf,
    pub slot: String,
    /// How often the spool is looked at.
    pub poll: Duration,
    /// The `pg_receivewal` binary.
    pub receivewal: String,
}

/// What a shipping pass did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Shipped {
    pub files: usize,
    pub partials: usize,
}

/// Ships what the spool holds: completed files (then removed) and a changed partial.
pub fn ship(repo: &Repository, spool: &Path, seen: &mut HashMap<String, (u64, i128)>) -> Result<Shipped> {
    let mut out = Shipped::default();
    let mut names: Vec<String> = std::fs::read_dir(spool)
        .map_err(|e| Error::io(spool.display().to_string(), e))?
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    for n in names {
        let Some(w) = WalName::parse(&n) else { continue };
        let p = spool.join(&n);
        match w.kind {
            Kind::Segment | Kind::History => {
                let data = std::fs::read(&p).map_err(|e| Error::io(p.display().to_string(), e))?;
                wal::push(repo, &w, &data)?;
                // The complete segment supersedes the partial we stored while it grew.
                if let Some(partial) = WalName::parse(&format!("{n}.partial")) {
                    let _ = wal::delete(repo, &partial);
                }
                std::fs::remove_file(&p).map_err(|e| Error::io(p.display().to_string(), e))?;
                seen.remove(&format!("{n}.partial"));
                out.files += 1;
            }
            Kind::Partial => {
                let Ok(m) = std::fs::metadata(&p) else { continue };
                use std::os::unix::fs::MetadataExt;
                let stamp = (m.len(), m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128);
                if seen.get(&n) == Some(&stamp) {
                    continue;
                }
                let data = match std::fs::read(&p) {
                    Ok(d) => d,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue, // completed meanwhile
                    Err(e) => return Err(Error::io(p.display().to_string(), e)),
                };
                wal::push(repo, &w, &data)?;
                seen.insert(n, stamp);
                out.partials += 1;
            }
            Kind::BackupHistory => {}
        }
    }
    Ok(out)
}

/// The file in a spool that says which slot on which server the spool's streamer holds.
const SLOT_RECORD: &str = "slot";

/// Writes the slot record into the spool (created if needed), so that a later process can
/// drop the slot when the source no longer streams, even one whose policy no longer names
/// the source or its connection. Mode 0600: the connection string may hold a password.
pub fn remember_slot(opts: &StreamOptions) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if opts.conn.contains('\n') || opts.slot.contains('\n') {
        return Err(Error::Invalid("a connection string or slot name holds a line break".into()));
    }
    std::fs::create_dir_all(&opts.spool).map_err(|e| Error::io(opts.spool.display().to_string(), e))?;
    let path = opts.spool.join(SLOT_RECORD);
    let tmp = opts.spool.join(format!("{SLOT_RECORD}.tmp"));
    let io = |e| Error::io(path.display().to_string(), e);
    let mut f =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).map_err(io)?;
    f.write_all(format!("slot={}\nconn={}\n", opts.slot, opts.conn).as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)
}

/// What [`drop_slot`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct Dropped {
    pub slot: String,
    /// WAL files still in the spool (the repository never got them): the spool and these
    /// stay, only the slot record goes.
    pub kept: Vec<String>,
}

/// Drops the replication slot a spool's record names (a slot the server no longer has
/// counts as dropped), then removes the spool, unless it still holds WAL that never
/// reached the repository: then only the record goes and the files stay for an operator
/// (`cairn pg archive-push`). `Ok(None)`: the directory holds no record (nothing is done).
/// A slot nobody reads makes the server keep every WAL segment from then on, until its
/// disk fills: a source that stops streaming must not leave one.
pub fn drop_slot(spool: &Path, receivewal_bin: &str) -> Result<Option<Dropped>> {
    let path = spool.join(SLOT_RECORD);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(path.display().to_string(), e)),
    };
    let field = |k: &str| text.lines().find_map(|l| l.strip_prefix(k)).map(str::to_string);
    let (Some(slot), Some(conn)) = (field("slot="), field("conn=")) else {
        return Err(Error::Invalid(format!("{}: not a slot record", path.display())));
    };
    let opts = StreamOptions {
        conn,
        spool: spool.to_path_buf(),
        slot: slot.clone(),
        poll: Duration::ZERO,
        receivewal: receivewal_bin.to_string(),
    };
    let out = receivewal(&opts)
        .args(["--drop-slot", "--slot", &slot])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::Invalid(format!("cannot run {receivewal_bin}: {e}")))?;
    let err = String::from_utf8_lossy(&out.stderr).trim().replace('\n', " ");
    // Only the slot's own absence counts as dropped (not, say, a role that does not exist).
    let gone = err.contains("replication slot") && err.contains("does not exist");
    if !out.status.success() && !gone {
        return Err(Error::Invalid(format!("dropping replication slot {slot}: {err}")));
    }
    let kept: Vec<String> = std::fs::read_dir(spool)
        .map_err(|e| Error::io(spool.display().to_string(), e))?
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        // Shipping stores and removes complete files; the segment in progress (`.partial`)
        // is stored as it grows and stays behind by design.
        .filter(|n| WalName::parse(n).is_some_and(|w| w.kind != Kind::Partial))
        .collect();
    if kept.is_empty() {
        std::fs::remove_dir_all(spool).map_err(|e| Error::io(spool.display().to_string(), e))?;
    } else {
        std::fs::remove_file(&path).map_err(|e| Error::io(path.display().to_string(), e))?;
    }
    Ok(Some(Dropped { slot, kept }))
}

fn receivewal(opts: &StreamOptions) -> Command {
    let mut c = Command::new(&opts.receivewal);
    c.arg("-d").arg(&opts.conn).arg("--no-password");
    c
}

/// Runs until `stop` is set: keeps `pg_receivewal` running (restarting it with a back-off
/// when it exits) and ships the spool every `poll`. `log` receives one line per event.
pub fn run(repo: &Repository, opts: &StreamOptions, stop: &AtomicBool, log: &dyn Fn(&str)) -> Result<()> {
    std::fs::create_dir_all(&opts.spool).map_err(|e| Error::io(opts.spool.display().to_string(), e))?;
    let out = receivewal(opts)
        .args(["--create-slot", "--if-not-exists", "--slot", &opts.slot])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            Error::Invalid(format!("cannot run {}: {e} (is the PostgreSQL client installed?)", opts.receivewal))
        })?;
    if !out.status.success() {
        return Err(Error::Invalid(format!(
            "creating replication slot {}: {}",
            opts.slot,
            String::from_utf8_lossy(&out.stderr).trim().replace('\n', " ")
        )));
    }
    let mut child: Option<Child> = None;
    let mut backoff = Duration::from_secs(1);
    let mut next_start = Instant::now();
    let mut seen = HashMap::new();
    let result = (|| -> Result<()> {
        while !stop.load(Ordering::Relaxed) {
            if let Some(c) = child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    log(&format!("pg_receivewal exited ({status}); restarting in {} s", backoff.as_secs()));
                    child = None;
                    next_start = Instant::now() + backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
            if child.is_none() && Instant::now() >= next_start {
                let c = receivewal(opts)
                    .arg("-D")
                    .arg(&opts.spool)
                    .args(["--slot", &opts.slot, "--synchronous", "--no-loop"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::inherit())
                    .spawn()
                    .map_err(|e| Error::Invalid(format!("cannot run {}: {e}", opts.receivewal)))?;
                child = Some(c);
            }
            let s = ship(repo, &opts.spool, &mut seen)?;
            if s.files > 0 {
                log(&format!("stored {} WAL file(s)", s.files));
                backoff = Duration::from_secs(1);
            }
            std::thread::sleep(opts.poll);
        }
        Ok(())
    })();
    if let Some(mut c) = child {
        // SIGTERM lets pg_receivewal flush what it received.
        unsafe_terminate(&c);
        let _ = c.wait();
    }
    // Whatever arrived last still goes to the repository.
    let last = ship(repo, &opts.spool, &mut seen);
    result.and(last.map(|_| ()))
}

fn unsafe_terminate(c: &Child) {
    // SAFETY: kill(2) on a child we spawned and have not reaped yet (its pid is ours).
    unsafe {
        libc::kill(c.id() as libc::pid_t, libc::SIGTERM);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spool_with(files: &[&str]) -> (tempfile::TempDir, StreamOptions) {
        let d = tempfile::tempdir().unwrap();
        let opts = StreamOptions {
            conn: "host=/nowhere user=x".into(),
            spool: d.path().join("spool"),
            slot: "cairn_db".into(),
            poll: Duration::ZERO,
            receivewal: "true".into(),
        };
        remember_slot(&opts).unwrap();
        for f in files {
            std::fs::write(opts.spool.join(f), b"wal").unwrap();
        }
        (d, opts)
    }

    #[test]
    fn a_dropped_slot_keeps_wal_that_never_reached_the_repository() {
        // Only the segment in progress (stored as it grew): the spool goes.
        let (_d, o) = spool_with(&["000000010000000000000004.partial"]);
        let r = drop_slot(&o.spool, "true").unwrap().unwrap();
        assert_eq!((r.slot.as_str(), r.kept.len()), ("cairn_db", 0));
        assert!(!o.spool.exists());
        // A complete segment shipping never stored: it stays, only the record goes.
        let (_d, o) = spool_with(&["000000010000000000000003", "000000010000000000000004.partial"]);
        let r = drop_slot(&o.spool, "true").unwrap().unwrap();
        assert_eq!(r.kept, vec!["000000010000000000000003".to_string()]);
        assert!(o.spool.join("000000010000000000000003").exists() && !o.spool.join(SLOT_RECORD).exists());
        assert_eq!(drop_slot(&o.spool, "true").unwrap(), None, "nothing left to drop");
        // A failure that is not the slot's absence keeps everything, record included.
        let (_d, o) = spool_with(&[]);
        let fake = o.spool.parent().unwrap().join("fake-receivewal");
        std::fs::write(&fake, "#!/bin/sh\necho 'FATAL: role \"x\" does not exist' >&2\nexit 1\n").unwrap();
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        assert!(drop_slot(&o.spool, fake.to_str().unwrap()).is_err());
        assert!(o.spool.join(SLOT_RECORD).exists());
        // The slot already gone counts as dropped.
        std::fs::write(&fake, "#!/bin/sh\necho 'error: replication slot \"cairn_db\" does not exist' >&2\nexit 1\n")
            .unwrap();
        assert!(drop_slot(&o.spool, fake.to_str().unwrap()).unwrap().is_some());
        assert!(!o.spool.exists());
    }
}

//! Back up one thing into a repository: files, a stream (standard input or a command's
//! output) or an SQLite database -> a saved snapshot. The operation `cairn backup` and the
//! daemon's backup jobs both call; the edges only build the [`BackupRequest`] and render
//! the [`BackupReport`].

use std::io::Read;
use std::path::{Path, PathBuf};

use cairn_engine::{Archiver, BackupOptions, Progress, Provenance, Source, StreamSource};
use cairn_format::snapshot::Snapshot;
use cairn_format::tree::{Node, NodeKind};
use cairn_format::SnapshotId;
use cairn_fs::{FsSource, FsSourceOptions};
use cairn_repo::Repository;

use crate::{Error, Result};

/// Where a stream comes from.
#[derive(Debug, Clone)]
pub enum Input {
    Stdin,
    /// `sh -c COMMAND`; its failure fails the backup (no snapshot is saved).
    Command(String),
}

#[derive(Debug, Clone)]
pub enum What {
    Files {
        paths: Vec<PathBuf>,
        excludes: Vec<String>,
        one_file_system: bool,
        /// Keep access times (see `cairn_fs::FsSourceOptions::atime`).
        atime: bool,
    },
    /// Stored as the one file `name`.
    Stream {
        name: String,
        input: Input,
    },
    Sqlite {
        path: PathBuf,
    },
}

#[derive(Debug, Clone)]
pub enum ParentChoice {
    /// The newest readable snapshot of the same host and paths.
    Auto,
    /// A snapshot id or prefix.
    Given(String),
}

#[derive(Debug, Clone)]
pub struct BackupRequest {
    pub what: What,
    /// Host, time, tags, label, source, job and audit head, as the snapshot records them.
    pub provenance: Provenance,
    pub parent: ParentChoice,
    /// Read every file even when its metadata says unchanged.
    pub force: bool,
    pub threads: usize,
    /// Packs in flight.
    pub uploads: usize,
    /// zstd level for new data (0: none); `None`: the repository's `compression_level`.
    pub compression: Option<i32>,
    /// The repository's own directory when it is local: never backed up into itself.
    pub repo_dir: Option<PathBuf>,
}

#[derive(Debug)]
pub struct BackupReport {
    pub id: SnapshotId,
    pub snapshot: Snapshot,
    /// Files that changed while read, attributes that could not be read...
    pub warnings: Vec<String>,
    /// Files that could not be read (the snapshot is then partial).
    pub errors: Vec<String>,
}

/// Canonical absolute path of `p`: the parent resolved (so `.`, `..` and symlinked parents
/// are canonical) but not the last component, since backing up a symlink stores the link.
pub fn absolute(p: &Path) -> Result<PathBuf> {
    let io = |e| Error::io(p.display().to_string(), e);
    std::fs::symlink_metadata(p).map_err(io)?;
    let abs = std::path::absolute(p).map_err(io)?;
    match (abs.parent(), abs.file_name()) {
        (Some(parent), Some(name)) => Ok(std::fs::canonicalize(parent).map_err(io)?.join(name)),
        _ => std::fs::canonicalize(&abs).map_err(io),
    }
}

fn path_strings(paths: &[PathBuf]) -> Vec<String> {
    let mut v: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    v.sort();
    v
}

/// The time now, RFC 3339 in the machine's offset.
pub fn now_rfc3339() -> String {
    let now = jiff::Timestamp::now();
    now.display_with_offset(cairn_fs::local_time_zone().to_offset(now)).to_string()
}

/// The file source's options: the excludes plus the repository's own directory, which is
/// never backed up into itself (`cairn backup ~` with the default repository).
fn fs_options(
    paths: &[PathBuf],
    excludes: &[String],
    one_file_system: bool,
    atime: bool,
    repo_dir: Option<&Path>,
) -> FsSourceOptions {
    let mut excludes = excludes.to_vec();
    if let Some(repo_dir) = repo_dir.and_then(|d| std::fs::canonicalize(d).ok()) {
        if paths.iter().any(|p| repo_dir.starts_with(p)) {
            excludes.push(cairn_fs::gitignore_literal(&repo_dir));
        }
    }
    FsSourceOptions { excludes, one_file_system, roots: paths.to_vec(), atime }
}

/// Starts reading the metadata of the files `what` names ahead of the backup (see
/// [`cairn_fs::Warmer`]): the CLI calls it before it opens the repository (it overlaps the
/// key derivation), a daemon job before the backup (more reads in flight than the walk's).
/// Stops when dropped. `None` for streams and databases.
pub fn warm(what: &What, repo_dir: Option<&Path>) -> Option<cairn_fs::Warmer> {
    let What::Files { paths, excludes, one_file_system, atime } = what else { return None };
    cairn_fs::Warmer::start(fs_options(paths, excludes, *one_file_system, *atime, repo_dir))
}

fn find_parent(
    repo: &Repository,
    choice: &ParentChoice,
    host: &str,
    paths: &[String],
) -> Result<Option<(SnapshotId, Snapshot)>> {
    if let ParentChoice::Given(p) = choice {
        return Ok(Some(repo.resolve_snapshot(p)?));
    }
    // A damaged snapshot cannot be a parent; the others still can.
    let mut snaps = repo.list_snapshots_lenient()?.snapshots;
    snaps.retain(|(_, s)| s.hostname == host && s.paths == paths);
    Ok(snaps.pop())
}

/// Runs the backup and saves its snapshot. `progress` is updated as it goes (an edge may
/// show it). `warm`, the metadata read ahead for this backup ([`warm`]), is stopped when it
/// can no longer help and dropped at the end.
pub fn backup(
    repo: &Repository,
    req: &BackupRequest,
    progress: &Progress,
    warm: Option<cairn_fs::Warmer>,
) -> Result<BackupReport> {
    // Taken before the index is read: prune waits for this lease before deleting anything
    // this backup could have seen.
    let _lease = repo.lease("backup", &req.provenance.host)?;
    let (uid, gid, user) = cairn_fs::current_user();
    let mut child = None;
    let mut stderr_tail = None;
    let (source, paths, kind): (Box<dyn Source>, Vec<String>, &str) = match &req.what {
        What::Stream { name, input } => {
            let reader: Box<dyn Read + Send> = match input {
                Input::Command(cmd) => {
                    let mut c = std::process::Command::new("sh");
                    c.arg("-c")
                        .arg(cmd)
                        .stdin(std::process::Stdio::null())
                        .stdout(std::process::Stdio::piped())
                        .stderr(std::process::Stdio::piped());
                    // Its own process group: a stopped backup kills what the command started.
                    crate::process::own_group(&mut c);
                    let mut c = c.spawn().map_err(|e| Error::io(format!("starting command {cmd:?}"), e))?;
                    let out = c.stdout.take().ok_or_else(|| Error::Source("no stdout from command".into()))?;
                    stderr_tail = c.stderr.take().map(relay_stderr);
                    child = Some((c, cmd.clone()));
                    Box::new(out)
                }
                Input::Stdin => Box::new(std::io::stdin()),
            };
            let mut tmpl = Node::new(Vec::new(), NodeKind::File);
            tmpl.mode = 0o600;
            tmpl.uid = uid;
            tmpl.gid = gid;
            tmpl.user = Some(user.clone());
            let now = jiff::Timestamp::now().as_nanosecond() as i64;
            tmpl.mtime = now;
            tmpl.atime = now;
            tmpl.ctime = now;
            let s = StreamSource::new(name, tmpl, reader);
            let p = s.path();
            (Box::new(s), vec![p], "stdin")
        }
        What::Sqlite { path } => {
            let src = cairn_fs::sqlite::SqliteSource::new(path, &std::env::temp_dir()).map_err(Error::Source)?;
            (Box::new(src), path_strings(std::slice::from_ref(path)), "sqlite")
        }
        What::Files { paths, excludes, one_file_system, atime } => {
            let opts = fs_options(paths, excludes, *one_file_system, *atime, req.repo_dir.as_deref());
            let src = FsSource::new(opts).map_err(Error::Source)?;
            (Box::new(src), path_strings(paths), "files")
        }
    };
    let stream = matches!(req.what, What::Stream { .. });
    let parent = if stream { None } else { find_parent(repo, &req.parent, &req.provenance.host, &paths)? };
    // With no parent to compare with (or `force`), every file is read: the walk runs far
    // ahead of the readers, and the warmer's stats are CPU the packers need. Cold initial
    // backup of a 48k-file tree, 3 alternating runs: 10.0-10.1 -> 9.8 s, 0.5 CPU-s less.
    let _warm = warm.filter(|_| parent.is_some() && !req.force);
    let opts = BackupOptions {
        paths: match &req.what {
            What::Files { paths, .. } => paths.clone(),
            What::Sqlite { path } => vec![path.clone()],
            What::Stream { .. } => vec![PathBuf::from(&paths[0])],
        },
        parent: parent.as_ref().map(|(_, s)| s.tree),
        // A database's main file can be unchanged while its -wal holds new commits.
        force: req.force || matches!(req.what, What::Sqlite { .. }),
        threads: req.threads,
        uploads: req.uploads,
        compression: req.compression,
    };
    let group = child.as_ref().map(|(c, _)| c.id() as libc::pid_t);
    let finished = std::sync::atomic::AtomicBool::new(false);
    let outcome = std::thread::scope(|s| {
        if let Some(pgid) = group {
            // A command that outputs nothing blocks the reader: on a stop, kill it.
            let finished = &finished;
            s.spawn(move || {
                while !finished.load(std::sync::atomic::Ordering::Relaxed) {
                    if progress.stop.load(std::sync::atomic::Ordering::Relaxed) {
                        // SAFETY: a signal to the process group the command leads.
                        unsafe { libc::kill(-pgid, libc::SIGKILL) };
                        return;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
            });
        }
        let r = Archiver::new(repo, source.as_ref(), opts, progress).run();
        finished.store(true, std::sync::atomic::Ordering::Relaxed);
        r
    });
    if let Some((mut c, cmd)) = child {
        if outcome.is_err() {
            let _ = c.kill();
        }
        let status = c.wait().map_err(|e| Error::io("waiting for the command", e))?;
        if outcome.is_ok() && !status.success() {
            // What the command said last (tar's "Cannot stat", mongodump's auth error) is
            // what the job's error needs; a child it left behind holding stderr open
            // cannot make the job wait more than a second for it.
            let last = stderr_tail
                .and_then(|rx: std::sync::mpsc::Receiver<String>| {
                    rx.recv_timeout(std::time::Duration::from_secs(1)).ok()
                })
                .filter(|l| !l.is_empty());
            let status = match last {
                Some(l) => format!("{status}: {l}"),
                None => status.to_string(),
            };
            return Err(Error::CommandFailed { command: cmd, status });
        }
    }
    let outcome = outcome?;
    let snapshot = outcome.snapshot(&req.provenance, (uid, gid, user), kind, paths, parent.map(|(id, _)| id));
    let id = repo.save_snapshot(&snapshot)?;
    Ok(BackupReport { id, snapshot, warnings: outcome.warnings, errors: outcome.errors })
}

/// Passes a command's standard error on to ours as it comes (a terminal or the daemon's
/// log still shows all of it) and sends its last non-empty line, at most 300 characters,
/// once the command closes it. Memory stays bounded whatever the command writes.
fn relay_stderr(mut err: std::process::ChildStderr) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        // The current line and the last complete non-empty one, each cut at 1 KiB.
        let (mut line, mut last) = (Vec::new(), Vec::new());
        let mut buf = [0u8; 8192];
        loop {
            let n = match err.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let _ = std::io::stderr().write_all(&buf[..n]);
            for &b in &buf[..n] {
                if b == b'\n' {
                    if line.iter().any(|c: &u8| !c.is_ascii_whitespace()) {
                        last = std::mem::take(&mut line);
                    }
                    line.clear();
                } else if line.len() < 1024 {
                    line.push(b);
                }
            }
        }
        if line.iter().any(|c: &u8| !c.is_ascii_whitespace()) {
            last = line;
        }
        let text = String::from_utf8_lossy(&last);
        let _ = tx.send(text.trim().chars().filter(|c| !c.is_control()).take(300).collect());
    });
    rx
}

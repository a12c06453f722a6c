//! `cairn pg ...`: PostgreSQL base backups, WAL archiving and streaming, point-in-time
//! restore. The PostgreSQL protocol pieces live in the `pg` crate; this is orchestration
//! and output.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use cairn_format::snapshot::Snapshot;
use cairn_format::SnapshotId;
use cairn_pg::coverage::{self, Archiving, DEFAULT_SEGMENT};
use cairn_pg::recovery::{self, Target};
use cairn_pg::wal::{self, WalName};
use cairn_repo::Repository;

use crate::args::{PgAction, PgArgs, PgBackupArgs, PgCheckArgs, PgRestoreArgs, PgStreamArgs};
use crate::context::{now_rfc3339, Context};
use crate::{output, Exit};
use cairn_pg::prefetch;

pub fn run(ctx: &Context, a: PgArgs) -> Result<()> {
    match a.action {
        PgAction::Backup(b) => backup(ctx, &b),
        PgAction::ArchivePush { path } => archive_push(ctx, &path),
        PgAction::ArchiveGet { name, path } => archive_get(ctx, &name, &path),
        PgAction::ArchivePrefetch { spool } => {
            let repo = ctx.open_fast()?;
            Ok(cairn_pg::prefetch::run(&repo, &spool, prefetch::DEPTH, prefetch::PARALLEL, prefetch::IDLE)?)
        }
        PgAction::WalStream(s) => wal_stream(ctx, &s),
        PgAction::Restore(r) => restore(ctx, &r),
        PgAction::WalList => wal_list(ctx),
        PgAction::Check(c) => check(ctx, &c),
    }
}

fn postgres_snapshots(repo: &Repository) -> Result<Vec<(SnapshotId, Snapshot)>> {
    Ok(cairn_pg::backup::postgres_snapshots(repo)?)
}

// ---- archive-push / archive-get ----

fn archive_push(ctx: &Context, path: &Path) -> Result<()> {
    let file = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let name = WalName::parse(file).ok_or_else(|| anyhow!("{}: not a WAL file name", path.display()))?;
    let file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let repo = ctx.open_fast()?;
    match Mapped::new(&file) {
        Some(m) => wal::push(&repo, &name, m.bytes())?,
        None => {
            let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            wal::push(&repo, &name, &data)?
        }
    };
    Ok(())
}

/// A file mapped read-only with its pages populated up front: reading a 16 MiB segment
/// into a fresh buffer costs 4096 page faults, which on a virtual machine is a third of an
/// archive-push.
struct Mapped {
    ptr: *mut libc::c_void,
    len: usize,
}

impl Mapped {
    fn new(f: &std::fs::File) -> Option<Mapped> {
        use std::os::fd::AsRawFd;
        let len = usize::try_from(f.metadata().ok()?.len()).ok().filter(|&l| l > 0)?;
        // SAFETY: a private read-only mapping of a file we hold open; unmapped in Drop. The
        // server does not modify a segment it hands to archive_command.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_POPULATE,
                f.as_raw_fd(),
                0,
            )
        };
        (ptr != libc::MAP_FAILED).then_some(Mapped { ptr, len })
    }
    fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` readable bytes for the lifetime of `self`.
        unsafe { std::slice::from_raw_parts(self.ptr as *const u8, self.len) }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `new` mapped.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}

fn archive_get(ctx: &Context, name: &str, path: &Path) -> Result<()> {
    let w = WalName::parse(name).ok_or_else(|| anyhow!("{name:?}: not a WAL file name"))?;
    let spool = prefetch::spool_for(path);
    // Fetched ahead by the prefetcher: handed over by a rename, no repository opened.
    if prefetch::take(&spool, name, path) {
        follow(&spool, name, path);
        return Ok(());
    }
    let repo = ctx.open_fast()?;
    // Written under a temporary name and renamed, so PostgreSQL never reads half a file.
    let tmp = path.with_extension("cairn-tmp");
    let mut f = std::fs::File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
    let found = wal::get_to(&repo, &w, &mut f);
    drop(f);
    match found {
        Ok(Some(_)) => {
            std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
            if w.kind == wal::Kind::Segment {
                follow(&spool, name, path);
            }
            Ok(())
        }
        Ok(None) => {
            let _ = std::fs::remove_file(&tmp);
            // Not an error for PostgreSQL: the end of the archive.
            Err(Exit(1).into())
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e.into())
        }
    }
}

/// Tells the prefetcher what recovery just got, starting one if none runs. Best effort:
/// without a prefetcher each segment is fetched when asked for, as before.
fn follow(spool: &Path, name: &str, got: &Path) {
    let size = std::fs::metadata(got).map(|m| m.len()).unwrap_or(DEFAULT_SEGMENT);
    if prefetch::want(spool, name, size).is_err() || prefetch::running(spool) {
        return;
    }
    let Ok(exe) = std::env::current_exe() else { return };
    let mut c = std::process::Command::new(exe);
    c.args(["pg", "archive-prefetch"])
        .arg(std::path::absolute(spool).unwrap_or_else(|_| spool.to_path_buf()))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    use std::os::unix::process::CommandExt;
    // SAFETY: setsid in the child between fork and exec only detaches it from the
    // server's process group (a fast shutdown's signal to it must not kill a fetch midway;
    // the prefetcher ends on its own once recovery stops asking).
    unsafe {
        c.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let _ = c.spawn();
}

// ---- base backup ----

fn backup(ctx: &Context, a: &PgBackupArgs) -> Result<()> {
    let repo = ctx.open()?;
    crate::audit::recorded(ctx, &repo, "pg_backup", |note| {
        note.target.paths = vec![a.data_dir.display().to_string()];
        let r = base_backup(ctx, a, &repo);
        if let Ok(id) = &r {
            note.target.snapshots = vec![id.clone()];
        }
        r.map(|_| ())
    })
}

fn base_backup(ctx: &Context, a: &PgBackupArgs, repo: &Repository) -> Result<String> {
    let req = cairn_pg::backup::BaseBackupRequest {
        data_dir: a.data_dir.clone(),
        connection: a.connection.clone(),
        provenance: cairn_engine::Provenance {
            host: cairn_fs::hostname(),
            time: now_rfc3339(),
            tags: a.tags.clone(),
            label: None,
            source: None,
            job: None,
            audit: crate::audit::anchor(repo),
        },
        fast_checkpoint: !a.spread_checkpoint,
        wal_timeout: Duration::from_secs(a.wal_timeout),
        threads: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
        uploads: ctx.connections(),
        compression: a.compression.level(),
    };
    let (id, snap) = crate::backup::with_progress(ctx, |p| cairn_pg::backup::base_backup(repo, &req, p))?;
    let pg = snap.postgres.clone().unwrap_or_default();
    let s = &snap.summary;
    if ctx.g.json {
        println!(
            "{}",
            serde_json::json!({
                "snapshot_id": id.to_hex(), "short_id": id.short(), "start_lsn": pg.start_lsn, "stop_lsn": pg.stop_lsn,
                "start_wal": pg.start_wal, "stop_wal": pg.stop_wal, "timeline": pg.timeline, "stop_time": pg.stop_time,
                "files_new": s.files_new, "files_changed": s.files_changed, "files_unmodified": s.files_unmodified,
                "bytes_read": s.bytes_read, "total_bytes": s.total_bytes, "bytes_added": s.bytes_added,
                "data_added": s.data_added, "duration_secs": s.duration_secs,
            })
        );
    } else if !ctx.g.quiet {
        println!("files:   {} new, {} changed, {} unmodified", s.files_new, s.files_changed, s.files_unmodified);
        println!("read:    {} of {}", output::bytes(s.bytes_read), output::bytes(s.total_bytes));
        println!("added:   {} stored", output::bytes(s.bytes_added));
        println!(
            "WAL:     {} ({}) .. {} ({}), timeline {}",
            pg.start_wal, pg.start_lsn, pg.stop_wal, pg.stop_lsn, pg.timeline
        );
        println!("base backup {} saved; consistent from {}", id.short(), pg.stop_time);
    }
    Ok(id.to_hex())
}

// ---- restore ----

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The `restore_command` the restored cluster runs: this binary, this repository, and a
/// password source that works without a terminal.
fn restore_command(ctx: &Context) -> Result<String> {
    let exe = std::env::current_exe().context("locating the cairn binary")?;
    let mut env = vec![format!("CAIRN_REPO={}", shell_quote(&ctx.repo_spec()?))];
    if let Some(f) = &ctx.g.password_file {
        env.push(format!("CAIRN_PASSWORD_FILE={}", shell_quote(&std::path::absolute(f)?.display().to_string())));
    } else if let Ok(c) = std::env::var("CAIRN_PASSWORD_COMMAND") {
        env.push(format!("CAIRN_PASSWORD_COMMAND={}", shell_quote(&c)));
    } else {
        bail!("PostgreSQL's restore_command must open the repository without a prompt: give the password with --password-file (or CAIRN_PASSWORD_FILE / CAIRN_PASSWORD_COMMAND), readable by the user that runs PostgreSQL");
    }
    Ok(format!("{} {} pg archive-get %f %p", env.join(" "), shell_quote(&exe.display().to_string())))
}

fn restore(ctx: &Context, a: &PgRestoreArgs) -> Result<()> {
    let target = recovery::parse_target(a.time.as_deref(), a.lsn.as_deref(), a.xid.as_deref(), a.name.as_deref())?;
    if a.latest && target != Target::Latest {
        bail!("--latest excludes --time, --lsn, --xid and --name");
    }
    if a.target_dir.exists() && std::fs::read_dir(&a.target_dir).map(|mut d| d.next().is_some()).unwrap_or(true) {
        bail!("{} exists and is not empty: restore into a new or empty directory", a.target_dir.display());
    }
    let rc = restore_command(ctx)?;
    let repo = ctx.open()?;
    crate::audit::recorded(ctx, &repo, "pg_restore", |note| {
        note.target.paths = vec![a.target_dir.display().to_string()];
        let snaps = postgres_snapshots(&repo)?;
        let (sid, snap) = match &a.snapshot {
            Some(spec) => {
                let (id, s) = repo.resolve_snapshot(spec)?;
                if s.postgres.is_none() {
                    bail!("snapshot {} is not a PostgreSQL base backup", id.short());
                }
                (id, s)
            }
            None => recovery::choose(&snaps, &target)?.clone(),
        };
        note.target.snapshots = vec![sid.to_hex()];
        let index = crate::browse::readable_index(&repo)?;
        let target_dir = std::path::absolute(&a.target_dir)?;
        let threads = cairn_engine::restore::default_threads(ctx.connections());
        let progress = cairn_pg::restore::Progress::default();
        let start = Instant::now();
        let restored = crate::restore::with_progress(ctx, &progress.bytes_done, &progress.bytes_total, || {
            cairn_pg::restore::data_dir(&repo, &index, &sid, &snap, &target_dir, threads, &progress)
        })?;
        let (sum, pg) = (restored.summary, restored.pg);
        // The data directory's owner, when we can give it (root): PostgreSQL refuses others.
        let owner = (unsafe { libc::geteuid() } == 0).then_some(restored.owner);
        recovery::prepare(&target_dir, &pg, &recovery::settings(&target, &rc), owner)?;
        let what = match &target {
            Target::Latest => "the end of the archived WAL".to_string(),
            Target::Time(_) => format!("time {}", a.time.as_deref().unwrap_or("")),
            Target::Lsn(_) => format!("LSN {}", a.lsn.as_deref().unwrap_or("")),
            Target::Xid(x) => format!("transaction {x}"),
            Target::Name(n) => format!("restore point {n:?}"),
        };
        if ctx.g.json {
            println!(
                "{}",
                serde_json::json!({"snapshot_id": sid.to_hex(), "target_dir": target_dir, "base_backup_stop_time": pg.stop_time,
                    "files": sum.files, "bytes_written": sum.bytes_written, "duration_secs": start.elapsed().as_secs_f64()})
            );
        } else if !ctx.g.quiet {
            println!(
                "restored base backup {} (consistent from {}) to {}: {} files, {} in {:.2} s",
                sid.short(),
                pg.stop_time,
                target_dir.display(),
                sum.files,
                output::bytes(sum.bytes_written),
                start.elapsed().as_secs_f64()
            );
            println!("recovery to {what} is set up: start PostgreSQL on {} (pg_ctl -D {} start); it replays WAL from the repository, then promotes", target_dir.display(), target_dir.display());
        }
        Ok(())
    })
}

// ---- streaming ----

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, std::sync::atomic::Ordering::Relaxed);
}

fn wal_stream(ctx: &Context, a: &PgStreamArgs) -> Result<()> {
    let repo = ctx.open_fast()?;
    let spool = match &a.spool {
        Some(s) => s.clone(),
        None => {
            let base = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
                .ok_or_else(|| anyhow!("no --spool and no HOME for a default one"))?;
            base.join("cairn/wal-stream")
                .join(cairn_format::id::to_hex(&cairn_crypto::content_hash(ctx.location().as_bytes())[..8]))
        }
    };
    // SAFETY: installing a handler that only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
    }
    let opts = cairn_pg::receive::StreamOptions {
        conn: a.connection.clone(),
        spool,
        slot: a.slot.clone(),
        poll: Duration::from_millis(a.poll_ms.max(50)),
        receivewal: std::env::var("CAIRN_PG_RECEIVEWAL").unwrap_or_else(|_| "pg_receivewal".into()),
    };
    let quiet = ctx.g.quiet;
    cairn_pg::receive::run(&repo, &opts, &STOP, &|l| {
        if !quiet {
            eprintln!("cairn: {l}");
        }
    })?;
    Ok(())
}

// ---- wal-list / check ----

fn ms_time(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map(|t| t.to_string()).unwrap_or_default()
}

fn wal_list(ctx: &Context) -> Result<()> {
    let repo = ctx.open()?;
    let c = coverage::coverage(&repo)?;
    let runs = &c.runs;
    if ctx.g.json {
        let tls: Vec<serde_json::Value> = runs
            .by_timeline
            .iter()
            .map(|(tl, rs)| {
                serde_json::json!({"timeline": tl,
                    "ranges": rs.iter().map(|(a, b)| serde_json::json!([c.name(*tl, *a), c.name(*tl, *b)])).collect::<Vec<_>>(),
                    "partial": runs.partial.get(tl).map(|v| v.iter().map(|n| c.name(*tl, *n)).collect::<Vec<_>>()).unwrap_or_default()})
            })
            .collect();
        let bs: Vec<serde_json::Value> = c
            .windows
            .iter()
            .map(|w| {
                serde_json::json!({"snapshot_id": w.id.to_hex(), "short_id": w.id.short(), "timeline": w.pg.timeline,
                    "start_wal": w.pg.start_wal, "stop_wal": w.pg.stop_wal, "complete": w.complete,
                    "recoverable_from": w.pg.stop_time, "wal_through": w.through,
                    "wal_stored_at": w.stored_at.map(ms_time)})
            })
            .collect();
        println!("{}", serde_json::json!({"timelines": tls, "history_files": c.histories, "base_backups": bs}));
        return Ok(());
    }
    if runs.by_timeline.is_empty() {
        println!("no WAL in the repository");
    }
    for (tl, rs) in &runs.by_timeline {
        let n: u64 = rs.iter().map(|(a, b)| b - a + 1).sum();
        println!("timeline {tl}: {n} segments in {} range(s)", rs.len());
        for (i, (a, b)) in rs.iter().enumerate() {
            println!("  {} .. {}", c.name(*tl, *a), c.name(*tl, *b));
            if let Some((next, _)) = rs.get(i + 1) {
                println!("  gap: {} .. {} missing", c.name(*tl, b + 1), c.name(*tl, next - 1));
            }
        }
        if let Some(p) = runs.partial.get(tl) {
            for n in p {
                println!("  {} is partial (streaming)", c.name(*tl, *n));
            }
        }
    }
    if !c.histories.is_empty() {
        println!("history files: {}", c.histories.join(", "));
    }
    for w in &c.windows {
        if w.complete {
            println!(
                "base backup {} (timeline {}): recoverable from {} to about {} (WAL through {})",
                w.id.short(),
                w.pg.timeline,
                w.pg.stop_time,
                w.stored_at.map(ms_time).unwrap_or_else(|| "?".into()),
                w.through.as_deref().unwrap_or("?")
            );
        } else {
            println!(
                "base backup {} (timeline {}): NOT recoverable: WAL {} .. {} is incomplete",
                w.id.short(),
                w.pg.timeline,
                w.pg.start_wal,
                w.pg.stop_wal
            );
        }
    }
    Ok(())
}

fn check(ctx: &Context, a: &PgCheckArgs) -> Result<()> {
    let repo = ctx.open_fast()?;
    let c = coverage::coverage(&repo)?;
    let mut bad = 0;
    for w in &c.windows {
        if w.complete {
            if !ctx.g.quiet {
                println!(
                    "base backup {}: WAL complete ({} .. {}), recoverable to WAL {}",
                    w.id.short(),
                    w.pg.start_wal,
                    w.pg.stop_wal,
                    w.through.as_deref().unwrap_or("?")
                );
            }
        } else {
            bad += 1;
            eprintln!(
                "cairn: error: base backup {}: WAL {} .. {} is incomplete: it cannot be restored",
                w.id.short(),
                w.pg.start_wal,
                w.pg.stop_wal
            );
        }
    }
    if c.windows.is_empty() && !ctx.g.quiet {
        println!("no PostgreSQL base backup in the repository");
    }
    if let Some(conn) = &a.connection {
        match coverage::check_archiving(&repo, conn, Duration::from_secs(a.timeout))? {
            Archiving::Works { segment, after } => {
                if !ctx.g.quiet {
                    println!(
                        "archiving works: {segment} reached the repository {:.1} s after the switch",
                        after.as_secs_f64()
                    );
                }
            }
            Archiving::NotArriving { segment, timeout } => {
                bad += 1;
                eprintln!(
                    "cairn: error: WAL {segment} did not reach the repository within {} s: archiving is not working",
                    timeout.as_secs()
                );
            }
        }
    }
    if bad > 0 {
        return Err(Exit(1).into());
    }
    Ok(())
}

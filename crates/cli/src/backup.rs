//! `cairn backup`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{anyhow, bail, Context as _, Result};
use cairn_engine::{Archiver, BackupOptions, Progress, Source, StreamSource};
use cairn_format::magic::SNAPSHOT_VERSION;
use cairn_format::snapshot::Snapshot;
use cairn_format::tree::{Node, NodeKind};
use cairn_format::SnapshotId;
use cairn_fs::{FsSource, FsSourceOptions};
use cairn_repo::Repository;

use crate::args::BackupArgs;
use crate::context::{now_rfc3339, Context};
use crate::output;
use crate::Exit;

/// Validated backup options.
struct Plan {
    paths: Vec<PathBuf>,
    host: String,
    time: String,
    excludes: Vec<String>,
}

pub fn absolute(p: &Path) -> Result<PathBuf> {
    // Resolve the parent (so `.` and `..` and symlinked parents are canonical) but not the
    // last component: backing up a symlink stores the symlink.
    std::fs::symlink_metadata(p).with_context(|| format!("{}", p.display()))?;
    let abs = std::path::absolute(p).with_context(|| format!("{}", p.display()))?;
    match (abs.parent(), abs.file_name()) {
        (Some(parent), Some(name)) => {
            Ok(std::fs::canonicalize(parent).with_context(|| format!("{}", parent.display()))?.join(name))
        }
        _ => std::fs::canonicalize(&abs).with_context(|| format!("{}", p.display())),
    }
}

fn validate(a: &BackupArgs) -> Result<Plan> {
    let stream = a.stdin || a.command.is_some();
    if a.stdin && a.command.is_some() {
        bail!("--stdin and --command exclude each other");
    }
    if stream && !a.paths.is_empty() {
        bail!("--stdin/--command take no paths");
    }
    if a.sqlite.is_some() && (stream || !a.paths.is_empty()) {
        bail!("--sqlite takes no other paths and excludes --stdin/--command");
    }
    if !stream && a.paths.is_empty() && a.sqlite.is_none() {
        bail!("nothing to back up: give at least one path (or --stdin / --command)");
    }
    if stream && (a.stdin_name.is_empty() || a.stdin_name.contains('/') || a.stdin_name == "." || a.stdin_name == "..")
    {
        bail!("--stdin-name must be a plain file name");
    }
    let mut paths = Vec::new();
    for p in a.paths.iter().chain(a.sqlite.iter()) {
        paths.push(absolute(p)?);
    }
    let time = match &a.time {
        Some(t) => {
            t.parse::<jiff::Timestamp>().map_err(|e| anyhow!("--time {t:?} is not an RFC 3339 time: {e}"))?;
            t.clone()
        }
        None => now_rfc3339(),
    };
    let excludes = crate::context::patterns(&a.excludes, &a.exclude_files)?;
    Ok(Plan { paths, host: a.host.clone().unwrap_or_else(cairn_fs::hostname), time, excludes })
}

fn path_strings(paths: &[PathBuf]) -> Vec<String> {
    let mut v: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    v.sort();
    v
}

fn find_parent(
    repo: &Repository,
    a: &BackupArgs,
    host: &str,
    paths: &[String],
) -> Result<Option<(SnapshotId, Snapshot)>> {
    if let Some(p) = &a.parent {
        return Ok(Some(repo.resolve_snapshot(p)?));
    }
    // A damaged snapshot cannot be a parent; the others still can.
    let mut snaps = repo.list_snapshots_lenient()?.snapshots;
    snaps.retain(|(_, s)| s.hostname == host && s.paths == paths);
    Ok(snaps.pop())
}

pub fn run(ctx: &Context, a: &BackupArgs) -> Result<()> {
    let plan = validate(a)?;
    let repo = ctx.open_or_create_default(a.dry_run)?;
    // Taken before the index is read: prune waits for this lease before deleting anything
    // this backup could have seen.
    let _lease = repo.lease("backup", &cairn_fs::hostname())?;
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let (uid, gid, user) = cairn_fs::current_user();

    let mut child = None;
    let (source, paths): (Box<dyn Source>, Vec<String>) = if a.stdin || a.command.is_some() {
        let reader: Box<dyn Read + Send> = if let Some(cmd) = &a.command {
            let mut c = std::process::Command::new("sh")
                .arg("-c")
                .arg(cmd)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .with_context(|| format!("starting command {cmd:?}"))?;
            let out = c.stdout.take().ok_or_else(|| anyhow!("no stdout from command"))?;
            child = Some(c);
            Box::new(out)
        } else {
            Box::new(std::io::stdin())
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
        let s = StreamSource::new(&a.stdin_name, tmpl, reader);
        let p = s.path();
        (Box::new(s), vec![p])
    } else if a.sqlite.is_some() {
        let db = &plan.paths[0];
        let src = cairn_fs::sqlite::SqliteSource::new(db, &std::env::temp_dir()).map_err(|e| anyhow!(e))?;
        (Box::new(src), path_strings(&plan.paths))
    } else {
        let mut excludes = plan.excludes.clone();
        // Never back up the repository into itself (`cairn backup ~` with the default one).
        if let Some(repo_dir) = ctx.remote.is_none().then(|| std::fs::canonicalize(&ctx.repo_path).ok()).flatten() {
            if plan.paths.iter().any(|p| repo_dir.starts_with(p)) {
                excludes.push(gitignore_literal(&repo_dir));
            }
        }
        let src =
            FsSource::new(FsSourceOptions { excludes, one_file_system: a.one_file_system, roots: plan.paths.clone() })
                .map_err(|e| anyhow!(e))?;
        (Box::new(src), path_strings(&plan.paths))
    };
    let stream = child.is_some() || a.stdin;
    let parent = find_parent(&repo, a, &plan.host, &paths)?;
    let opts = BackupOptions {
        paths: if stream { vec![PathBuf::from(&paths[0])] } else { plan.paths.clone() },
        parent: if stream { None } else { parent.as_ref().map(|(_, s)| s.tree) },
        // A database's main file can be unchanged while its -wal holds new commits.
        force: a.force || a.sqlite.is_some(),
        threads,
        // Locally two packs in flight let one fsync overlap the next write (1.7 GB file:
        // 3.7 s -> 3.3 s) and more gained nothing; remote stores want more (`--connections`).
        // Each costs a pack (8 MiB) of memory.
        uploads: ctx.connections(),
    };
    let outcome = archive(ctx, &repo, source.as_ref(), opts);
    if let Some(mut c) = child {
        let status = match &outcome {
            Ok(_) => c.wait().context("waiting for the command")?,
            Err(_) => {
                let _ = c.kill();
                c.wait().context("waiting for the command")?
            }
        };
        if outcome.is_ok() && !status.success() {
            bail!("command {:?} failed ({status}); no snapshot saved", a.command.as_deref().unwrap_or(""));
        }
    }
    let outcome = outcome.map_err(|e| anyhow!(e))?;
    let snap = Snapshot {
        version: SNAPSHOT_VERSION,
        time: plan.time.clone(),
        hostname: plan.host.clone(),
        username: user,
        uid,
        gid,
        paths: paths.clone(),
        tags: a.tags.clone(),
        label: a.label.clone(),
        tree: outcome.tree,
        parent: parent.map(|(id, _)| id),
        kind: if stream {
            "stdin".into()
        } else if a.sqlite.is_some() {
            "sqlite".into()
        } else {
            "files".into()
        },
        partial: !outcome.errors.is_empty(),
        original: None,
        summary: outcome.summary.clone(),
        program_version: format!("cairn {}", env!("CARGO_PKG_VERSION")),
        postgres: None,
    };
    let id = repo.save_snapshot(&snap)?;
    let s = &snap.summary;
    if ctx.g.json {
        let v = serde_json::json!({
            "snapshot_id": if a.dry_run { serde_json::Value::Null } else { id.to_hex().into() },
            "short_id": id.short(),
            "dry_run": a.dry_run,
            "files_new": s.files_new, "files_changed": s.files_changed, "files_unmodified": s.files_unmodified,
            "dirs": s.dirs, "bytes_read": s.bytes_read, "total_bytes": s.total_bytes,
            "data_added": s.data_added, "bytes_added": s.bytes_added, "blobs_added": s.blobs_added,
            "duration_secs": s.duration_secs, "partial": snap.partial, "errors": outcome.errors, "warnings": outcome.warnings,
        });
        println!("{v}");
    } else {
        if !ctx.g.quiet {
            for w in &outcome.warnings {
                eprintln!("cairn: warning: {}", output::sanitize(w));
            }
        }
        for e in &outcome.errors {
            eprintln!("cairn: error: {}", output::sanitize(e));
        }
        if !ctx.g.quiet {
            println!("files:   {} new, {} changed, {} unmodified", s.files_new, s.files_changed, s.files_unmodified);
            println!("read:    {} of {} in {} dirs", output::bytes(s.bytes_read), output::bytes(s.total_bytes), s.dirs);
            println!("added:   {} stored ({} of new data)", output::bytes(s.bytes_added), output::bytes(s.data_added));
            println!("time:    {:.2} s", s.duration_secs);
            if a.dry_run {
                println!("dry run: nothing was written");
            } else {
                println!(
                    "snapshot {} saved{}",
                    id.short(),
                    if snap.partial { " (partial: some files could not be read)" } else { "" }
                );
            }
        }
    }
    if snap.partial {
        return Err(Exit(3).into());
    }
    Ok(())
}

/// Runs the archiver, with a progress line on a terminal.
pub fn archive(
    ctx: &Context,
    repo: &Repository,
    source: &dyn Source,
    opts: BackupOptions,
) -> cairn_engine::Result<cairn_engine::BackupOutcome> {
    let progress = Progress::default();
    let stop = AtomicBool::new(false);
    let show = output::stderr_is_tty() && !ctx.g.quiet && !ctx.g.json;
    std::thread::scope(|s| {
        let _stop = output::StopOnDrop(&stop);
        if show {
            s.spawn(|| output::progress_loop(&stop, &|el| progress_line(&progress, el)));
        }
        Archiver::new(repo, source, opts, &progress).run()
    })
}

/// An absolute path as a gitignore pattern matching exactly it.
pub fn gitignore_literal(p: &Path) -> String {
    let mut out = String::new();
    for c in p.to_string_lossy().chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\' | '!' | '#' | ' ') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn progress_line(p: &Progress, el: std::time::Duration) -> String {
    let done = p.bytes_done.load(Ordering::Relaxed);
    let total = p.bytes_total.load(Ordering::Relaxed);
    let files = p.files_done.load(Ordering::Relaxed);
    let secs = el.as_secs_f64().max(0.001);
    let rate = done as f64 / secs;
    let eta = if p.walk_done.load(Ordering::Relaxed) && rate > 0.0 && total > done {
        format!(" ETA {}", output::duration(std::time::Duration::from_secs_f64((total - done) as f64 / rate)))
    } else {
        String::new()
    };
    format!(
        "[{}] {files} files, {} / {}, {}/s{eta}",
        output::duration(el),
        output::bytes(done),
        output::bytes(total),
        output::bytes(rate as u64)
    )
}

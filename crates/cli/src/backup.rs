//! `cairn backup`.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use anyhow::{anyhow, bail, Result};
use cairn_daemon::backup::{BackupRequest, Input, ParentChoice, What};
use cairn_engine::{Progress, Provenance};

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
    Ok(cairn_daemon::backup::absolute(p)?)
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

pub fn run(ctx: &Context, a: &BackupArgs) -> Result<()> {
    let plan = validate(a)?;
    let what = what(a, &plan);
    // The files' metadata is read ahead while the key is derived (cairn_fs::Warmer).
    let warm = cairn_daemon::backup::warm(&what, repo_dir(ctx).as_deref());
    let repo = ctx.open_or_create_default(a.dry_run)?;
    let mut saved = None;
    let r = backup(ctx, a, &plan, what, &repo, &mut saved, warm);
    if !a.dry_run {
        let mut target = crate::audit::target(ctx);
        target.paths = plan.paths.iter().map(|p| p.display().to_string()).collect();
        if a.stdin || a.command.is_some() {
            target.paths = vec![a.stdin_name.clone()];
        }
        let message = saved.as_ref().map(|(_, m): &(String, String)| m.clone());
        target.snapshots = saved.map(|(id, _)| id).into_iter().collect();
        crate::audit::note(&repo, "backup", target, &r, message);
    }
    r
}

/// The backup itself; `saved` gets the snapshot's id and a one-line summary.
fn backup(
    ctx: &Context,
    a: &BackupArgs,
    plan: &Plan,
    what: What,
    repo: &cairn_repo::Repository,
    saved: &mut Option<(String, String)>,
    warm: Option<cairn_fs::Warmer>,
) -> Result<()> {
    let req = BackupRequest {
        what,
        provenance: Provenance {
            host: plan.host.clone(),
            time: plan.time.clone(),
            tags: a.tags.clone(),
            label: a.label.clone(),
            source: None,
            job: None,
            audit: if a.dry_run { None } else { crate::audit::anchor(repo) },
        },
        parent: match &a.parent {
            Some(p) => ParentChoice::Given(p.clone()),
            None => ParentChoice::Auto,
        },
        force: a.force,
        threads: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
        // Locally two packs in flight let one fsync overlap the next write (1.7 GB file:
        // 3.7 s -> 3.3 s) and more gained nothing; remote stores want more (`--connections`).
        // Each costs a pack (8 MiB) of memory.
        uploads: ctx.connections(),
        compression: a.compression.level(),
        repo_dir: repo_dir(ctx),
    };
    let report = with_progress(ctx, |progress| cairn_daemon::backup::backup(repo, &req, progress, warm))?;
    let (id, snap) = (report.id, &report.snapshot);
    let s = &snap.summary;
    *saved = Some((
        id.to_hex(),
        format!(
            "{} files new, {} changed, {} unmodified, {} added",
            s.files_new,
            s.files_changed,
            s.files_unmodified,
            output::bytes(s.bytes_added)
        ),
    ));
    if ctx.g.json {
        let v = serde_json::json!({
            "snapshot_id": if a.dry_run { serde_json::Value::Null } else { id.to_hex().into() },
            "short_id": id.short(),
            "dry_run": a.dry_run,
            "files_new": s.files_new, "files_changed": s.files_changed, "files_unmodified": s.files_unmodified,
            "dirs": s.dirs, "bytes_read": s.bytes_read, "total_bytes": s.total_bytes,
            "data_added": s.data_added, "bytes_added": s.bytes_added, "blobs_added": s.blobs_added,
            "duration_secs": s.duration_secs, "partial": snap.partial, "errors": report.errors, "warnings": report.warnings,
        });
        println!("{v}");
    } else {
        if !ctx.g.quiet {
            for w in &report.warnings {
                eprintln!("cairn: warning: {}", output::sanitize(w));
            }
        }
        for e in &report.errors {
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

/// Runs `f` with progress shown as the flags say (see [`output::with_meter`]).
pub fn with_progress<T: Send>(ctx: &Context, f: impl FnOnce(&Progress) -> T + Send) -> T {
    let progress = Progress::default();
    let read = || output::Reading {
        unit: "files",
        files_done: Some(progress.files_done.load(Ordering::Relaxed)),
        files_total: Some(progress.files_total.load(Ordering::Relaxed)),
        bytes_done: progress.bytes_done.load(Ordering::Relaxed),
        bytes_total: progress.bytes_total.load(Ordering::Relaxed),
        total_known: progress.walk_done.load(Ordering::Relaxed),
        slow_file: progress.slow_file(std::time::Duration::from_secs(2)).map(|p| p.display().to_string()),
    };
    output::with_meter(output::show(&ctx.g), "backup", &read, || f(&progress))
}

/// What the arguments name: files, a stream or an SQLite database.
fn what(a: &BackupArgs, plan: &Plan) -> What {
    if a.stdin || a.command.is_some() {
        let input = match &a.command {
            Some(c) => Input::Command(c.clone()),
            None => Input::Stdin,
        };
        What::Stream { name: a.stdin_name.clone(), input }
    } else if a.sqlite.is_some() {
        What::Sqlite { path: plan.paths[0].clone() }
    } else {
        What::Files {
            paths: plan.paths.clone(),
            excludes: plan.excludes.clone(),
            one_file_system: a.one_file_system,
            atime: a.atime,
        }
    }
}

/// The repository's own directory when it is local (never backed up into itself).
fn repo_dir(ctx: &Context) -> Option<PathBuf> {
    ctx.remote.is_none().then(|| ctx.repo_path.clone())
}

//! `cairn restore`.

use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{anyhow, Result};
use cairn_engine::{browse, Overwrite, RestoreOptions, Restorer};
use cairn_fs::{FsDestination, PathMatcher};

use crate::args::{OverwriteArg, RestoreArgs};
use crate::context::Context;
use crate::output;

/// Runs `f` with progress (bytes `done` of `total`) shown as the flags say.
pub fn with_progress<T: Send>(ctx: &Context, done: &AtomicU64, total: &AtomicU64, f: impl FnOnce() -> T + Send) -> T {
    let read = || output::Reading {
        unit: "files",
        files_done: None,
        files_total: None,
        bytes_done: done.load(Ordering::Relaxed),
        bytes_total: total.load(Ordering::Relaxed),
        total_known: true,
        slow_file: None,
    };
    output::with_meter(output::show(&ctx.g), "restore", &read, f)
}

/// Executes a restore plan, with a progress line on a terminal.
pub fn execute(
    ctx: &Context,
    restorer: &Restorer<'_>,
    plan: cairn_engine::RestorePlan,
    dest: &FsDestination,
    opts: &RestoreOptions<'_>,
) -> Result<cairn_engine::RestoreSummary> {
    let total = AtomicU64::new(plan.bytes_total);
    let done = AtomicU64::new(0);
    Ok(with_progress(ctx, &done, &total, || restorer.execute(plan, dest, opts, &done))?)
}

pub fn run(ctx: &Context, a: &RestoreArgs) -> Result<()> {
    let (spec, sub) = match a.snapshot.split_once(':') {
        Some((s, p)) => (s, Some(p)),
        None => (a.snapshot.as_str(), None),
    };
    let includes = PathMatcher::new(&a.includes).map_err(|e| anyhow!(e))?;
    let excludes = PathMatcher::new(&a.excludes).map_err(|e| anyhow!(e))?;
    let repo = ctx.open()?;
    crate::audit::recorded(ctx, &repo, "restore", |note| restore(ctx, a, &repo, spec, sub, &includes, &excludes, note))
}

#[allow(clippy::too_many_arguments)]
fn restore(
    ctx: &Context,
    a: &RestoreArgs,
    repo: &cairn_repo::Repository,
    spec: &str,
    sub: Option<&str>,
    includes: &PathMatcher,
    excludes: &PathMatcher,
    note: &mut crate::audit::Note,
) -> Result<()> {
    note.target.paths = vec![a.target.display().to_string()];
    let (sid, snap) = repo.resolve_snapshot(spec)?;
    note.target.snapshots = vec![sid.to_hex()];
    if let Some(p) = sub {
        note.message = Some(format!("only /{}", p.trim_matches('/')));
    }
    let index = crate::browse::readable_index(repo)?;
    let prefix = sub.map(|p| format!("/{}", p.trim_matches('/'))).unwrap_or_default();
    let root = match sub {
        Some(p) => browse::subtree(repo, &index, snap.tree, p)?,
        None => snap.tree,
    };
    let filter = |path: &str, is_dir: bool| -> bool {
        if excludes.matches(path, is_dir) {
            return false;
        }
        includes.is_empty() || is_dir || includes.matches(path, is_dir)
    };
    let opts = RestoreOptions {
        overwrite: match a.overwrite {
            OverwriteArg::Always => Overwrite::Always,
            OverwriteArg::IfChanged => Overwrite::IfChanged,
            OverwriteArg::Never => Overwrite::Never,
        },
        verify: a.verify,
        threads: cairn_engine::restore::default_threads(ctx.connections()),
        filter: &filter,
        // A restore to / puts a system back as it was; anywhere else it is a copy, and
        // what grants privilege stays out unless asked for.
        privileged: a.privileged || std::fs::canonicalize(&a.target).is_ok_and(|t| t == std::path::Path::new("/")),
    };
    let dest = FsDestination::new(&a.target).map_err(|e| anyhow!("{}: {e}", a.target.display()))?;
    let restorer = Restorer::new(repo, &index);
    let plan =
        restorer.plan(root, &prefix, &dest, &opts, &mut cairn_engine::browse::Budget::for_snapshot(&snap.summary))?;
    if a.dry_run {
        note.skip = true;
        print_warnings(&plan.warnings);
        if ctx.g.json {
            println!(
                "{}",
                serde_json::json!({"snapshot_id": sid.to_hex(), "dry_run": true, "files": plan.files_total, "bytes": plan.bytes_total, "files_skipped": plan.files_skipped})
            );
        } else if !ctx.g.quiet {
            println!(
                "would restore {} files ({}), skipping {} already present, from snapshot {} to {}",
                plan.files_total - plan.files_skipped,
                output::bytes(plan.bytes_total),
                plan.files_skipped,
                sid.short(),
                a.target.display()
            );
        }
        return Ok(());
    }
    let start = std::time::Instant::now();
    let sum = execute(ctx, &restorer, plan, &dest, &opts)?;
    let secs = start.elapsed().as_secs_f64();
    print_warnings(&sum.warnings);
    if ctx.g.json {
        println!(
            "{}",
            serde_json::json!({"snapshot_id": sid.to_hex(), "files": sum.files, "dirs": sum.dirs, "specials": sum.specials,
                "bytes_written": sum.bytes_written, "files_skipped": sum.files_skipped, "verified": sum.verified,
                "warnings": sum.warnings.lines, "more_warnings": sum.warnings.more, "duration_secs": secs})
        );
    } else if !ctx.g.quiet {
        println!(
            "restored snapshot {} to {}: {} files, {} dirs, {} other, {} written, {} skipped{} in {:.2} s",
            sid.short(),
            a.target.display(),
            sum.files,
            sum.dirs,
            sum.specials,
            output::bytes(sum.bytes_written),
            sum.files_skipped,
            if a.verify { format!(", {} verified", sum.verified) } else { String::new() },
            secs
        );
    }
    Ok(())
}

fn print_warnings(w: &cairn_engine::restore::Warnings) {
    for l in &w.lines {
        eprintln!("cairn: warning: {}", output::sanitize(l));
    }
    if w.more > 0 {
        eprintln!("cairn: warning: and {} more like these", w.more);
    }
}

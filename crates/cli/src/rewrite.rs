//! `cairn rewrite`: new snapshots without the excluded paths, keeping time, host, tags and
//! label, noting the original; `--forget` removes the originals afterwards.

use anyhow::{anyhow, bail, Result};
use cairn_engine::rewrite::rewrite_trees;
use cairn_fs::PathMatcher;

use crate::args::RewriteArgs;
use crate::context::Context;

pub fn run(ctx: &Context, a: &RewriteArgs) -> Result<()> {
    let patterns = crate::context::patterns(&a.excludes, &a.exclude_files)?;
    if patterns.is_empty() {
        bail!("nothing to remove: give --exclude or --exclude-file");
    }
    let matcher = PathMatcher::new(&patterns).map_err(|e| anyhow!(e))?;
    let repo = ctx.open_with(a.dry_run)?;
    crate::audit::recorded(ctx, &repo, "rewrite", |note| {
        let _lease = repo.lease("rewrite", &cairn_fs::hostname())?;
        let mut snaps = Vec::new();
        for spec in &a.snapshots {
            let (id, s) = repo.resolve_snapshot(spec)?;
            if !snaps.iter().any(|(i, _)| *i == id) {
                snaps.push((id, s));
            }
        }
        note.skip = a.dry_run;
        note.target.snapshots = snaps.iter().map(|(id, _)| id.to_hex()).collect();
        note.target.paths = patterns.clone();
        note.message = Some(
            if a.forget { "excluded paths removed, originals forgotten" } else { "excluded paths removed" }.into(),
        );
        let roots: Vec<_> = snaps.iter().map(|(_, s)| s.tree).collect();
        let exclude = |p: &str, is_dir: bool| matcher.matches(p, is_dir);
        let rewritten = rewrite_trees(&repo, &roots, &exclude)?;
        let mut json = Vec::new();
        for ((old_id, old), (tree, removed)) in snaps.iter().zip(rewritten) {
            if removed == 0 {
                if !ctx.g.quiet && !ctx.g.json {
                    println!("{}: nothing to remove", old_id.short());
                }
                json.push(serde_json::json!({"original": old_id.to_hex(), "removed": 0, "new": null}));
                continue;
            }
            let mut new = old.clone();
            new.tree = tree;
            new.original = Some(old.original.unwrap_or(*old_id));
            let new_id = repo.save_snapshot(&new)?;
            if a.forget && !a.dry_run {
                match repo.object_locked_until(&cairn_repo::layout::snapshot(old_id), cairn_repo::lease::unix_now()) {
                    None => repo
                        .delete_snapshot(*old_id)
                        .map_err(|e| crate::context::delete_rights("rewrite --forget", e))?,
                    Some(_) => {
                        eprintln!("cairn: snapshot {} is in its object-lock period: not forgotten yet", old_id.short())
                    }
                }
            }
            if !ctx.g.quiet && !ctx.g.json {
                println!(
                    "{} -> {}: {removed} entries removed{}{}",
                    old_id.short(),
                    new_id.short(),
                    if a.forget { ", original forgotten" } else { "" },
                    if a.dry_run { " (dry run: nothing written)" } else { "" }
                );
            }
            json.push(serde_json::json!({"original": old_id.to_hex(), "removed": removed, "new": if a.dry_run { serde_json::Value::Null } else { new_id.to_hex().into() }}));
        }
        if ctx.g.json {
            println!("{}", serde_json::json!({"dry_run": a.dry_run, "snapshots": json}));
        } else if !ctx.g.quiet && !a.dry_run {
            println!("the removed files' data stays in the repository until a prune");
        }
        Ok(())
    })
}

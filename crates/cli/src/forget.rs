//! `cairn forget`: keep-rules (the `policy` crate) applied per group, or explicit ids.
//! Plan, then execute: `--dry-run` prints the plan and stops. Forgetting deletes snapshot
//! documents only; the data they alone referenced is freed by a later prune.

use anyhow::{anyhow, bail, Result};
use cairn_policy::{forget_plan, Candidate, Duration, GroupBy, GroupPlan, KeepPolicy};

use crate::args::ForgetArgs;
use crate::context::Context;
use crate::output;

fn within(s: &Option<String>) -> Result<Duration> {
    match s {
        Some(s) => Duration::parse(s).map_err(|e| anyhow!("{e}")),
        None => Ok(Duration::default()),
    }
}

fn policy(a: &ForgetArgs) -> Result<KeepPolicy> {
    for (name, v) in [
        ("last", a.keep_last),
        ("hourly", a.keep_hourly),
        ("daily", a.keep_daily),
        ("weekly", a.keep_weekly),
        ("monthly", a.keep_monthly),
        ("yearly", a.keep_yearly),
    ] {
        if v.is_some_and(|n| n < -1) {
            bail!("--keep-{name} must be a count, or -1 for unlimited");
        }
    }
    Ok(KeepPolicy {
        last: a.keep_last,
        hourly: a.keep_hourly,
        daily: a.keep_daily,
        weekly: a.keep_weekly,
        monthly: a.keep_monthly,
        yearly: a.keep_yearly,
        within: within(&a.keep_within)?,
        within_hourly: within(&a.keep_within_hourly)?,
        within_daily: within(&a.keep_within_daily)?,
        within_weekly: within(&a.keep_within_weekly)?,
        within_monthly: within(&a.keep_within_monthly)?,
        within_yearly: within(&a.keep_within_yearly)?,
        tags: a
            .keep_tags
            .iter()
            .map(|t| t.split(',').map(|x| x.trim().to_string()).filter(|x| !x.is_empty()).collect())
            .collect(),
    })
}

pub fn run(ctx: &Context, a: &ForgetArgs) -> Result<()> {
    let p = policy(a)?;
    let by = GroupBy::parse(&a.group_by).map_err(|e| anyhow!(e))?;
    if p.is_empty() && a.snapshots.is_empty() {
        bail!("no keep-rule and no snapshot given: refusing to forget every snapshot");
    }
    let repo = ctx.open_with(a.dry_run)?;
    crate::audit::recorded(ctx, &repo, "forget", |note| {
        let mut removals = Vec::new();
        let mut json_groups = Vec::new();
        // Explicit ids.
        for spec in &a.snapshots {
            let (id, s) = repo.resolve_snapshot(spec)?;
            removals.push((id, s.time.clone()));
        }
        if !p.is_empty() {
            let mut snaps = repo.list_snapshots()?;
            snaps.retain(|(_, s)| {
                a.host.as_ref().is_none_or(|h| &s.hostname == h) && a.tags.iter().all(|t| s.tags.contains(t))
            });
            let candidates: Vec<Candidate> = snaps
                .iter()
                .map(|(_, s)| Candidate {
                    host: s.hostname.clone(),
                    paths: s.paths.clone(),
                    tags: s.tags.clone(),
                    time: s.time.clone(),
                })
                .collect();
            let plan =
                forget_plan(&candidates, &p, by).map_err(|(i, e)| anyhow!("snapshot {}: {e}", snaps[i].0.short()))?;
            for GroupPlan { key, members } in plan {
                let mut keep_j = Vec::new();
                let mut remove_j = Vec::new();
                if !ctx.g.json && !ctx.g.quiet {
                    let mut label = Vec::new();
                    if let Some(h) = &key.host {
                        label.push(format!("host {h}"));
                    }
                    if let Some(ps) = &key.paths {
                        label.push(format!("paths {}", ps.join(" ")));
                    }
                    if let Some(ts) = &key.tags {
                        label.push(format!("tags [{}]", ts.join(",")));
                    }
                    let label = if label.is_empty() { "all snapshots".into() } else { label.join(", ") };
                    println!("group: {}", crate::output::sanitize(&label));
                }
                for (i, d) in &members {
                    let (id, s) = &snaps[*i];
                    let reasons: Vec<&str> = d.reasons.iter().map(|r| r.describe()).collect();
                    if d.keep() {
                        keep_j.push(serde_json::json!({"id": id.to_hex(), "short_id": id.short(), "time": s.time, "reasons": reasons}));
                        if !ctx.g.json && !ctx.g.quiet {
                            println!(
                                "  keep    {}  {}  {}",
                                id.short(),
                                output::local_time(&s.time),
                                reasons.join(", ")
                            );
                        }
                    } else {
                        remove_j.push(serde_json::json!({"id": id.to_hex(), "short_id": id.short(), "time": s.time}));
                        if !ctx.g.json && !ctx.g.quiet {
                            println!("  remove  {}  {}", id.short(), output::local_time(&s.time));
                        }
                        removals.push((*id, s.time.clone()));
                    }
                }
                json_groups.push(serde_json::json!({
                    "host": key.host, "paths": key.paths, "tags": key.tags, "keep": keep_j, "remove": remove_j,
                }));
            }
        }
        removals.sort_by_key(|(id, _)| *id);
        removals.dedup_by_key(|(id, _)| *id);
        // Snapshots under the repository's object-lock period stay; a later forget removes them.
        let now = cairn_repo::lease::unix_now();
        let mut locked = Vec::new();
        removals.retain(|(id, _)| match repo.object_locked_until(&cairn_repo::layout::snapshot(id), now) {
            Some(until) => {
                locked.push((*id, until));
                false
            }
            None => true,
        });
        for (id, until) in &locked {
            eprintln!(
                "cairn: snapshot {} is in its object-lock period until {}: kept for now",
                id.short(),
                jiff::Timestamp::from_second(*until).map(|t| t.to_string()).unwrap_or_default()
            );
        }
        note.skip = a.dry_run;
        note.target.snapshots = removals.iter().map(|(id, _)| id.to_hex()).collect();
        note.message =
            Some(format!("{} snapshots removed{}", removals.len(), if a.prune { ", then pruned" } else { "" }));
        if !a.dry_run {
            for (id, _) in &removals {
                repo.delete_snapshot(*id).map_err(|e| crate::context::delete_rights("forget", e))?;
            }
        }
        let pruned = if a.prune { Some(crate::prune::execute(ctx, &repo, &a.prune_opts, a.dry_run)?) } else { None };
        if ctx.g.json {
            let ids: Vec<String> = removals.iter().map(|(id, _)| id.to_hex()).collect();
            println!(
                "{}",
                serde_json::json!({"dry_run": a.dry_run, "groups": json_groups, "removed": ids, "prune": pruned})
            );
        } else if !ctx.g.quiet {
            println!(
                "{} {} snapshots{}",
                if a.dry_run { "would remove" } else { "removed" },
                removals.len(),
                if a.dry_run {
                    " (dry run: nothing changed)"
                } else if a.prune {
                    ""
                } else {
                    "; their data stays in the repository until a prune"
                }
            );
            if let Some(r) = &pruned {
                crate::prune::print(ctx, r);
            }
        }
        Ok(())
    })
}

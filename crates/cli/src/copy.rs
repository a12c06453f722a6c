//! `cairn copy --to REPO`: the snapshots the destination lacks, with only the blobs it
//! lacks, sealed under the destination's keys (the engine's `copy` module does the work
//! and holds the rules). The destination keeps its own retention: a copied snapshot is an
//! ordinary snapshot there.

use anyhow::{anyhow, Context as _, Result};
use cairn_engine::copy::{copy_snapshots_metered, missing};
use cairn_repo::Repository;

use crate::args::CopyArgs;
use crate::context::{prompt_or, read_password_file, store_for, Context};
use crate::output;

/// The context of an error of the destination's own (its lease, its listing): the edge
/// then names the destination, not the source.
#[derive(Debug)]
pub struct Destination(pub String);

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the destination repository {}", self.0)
    }
}

pub fn run(ctx: &Context, a: &CopyArgs) -> Result<()> {
    let src = ctx.open()?;
    crate::audit::recorded(ctx, &src, "copy", |note| {
        let pw = match (&a.to_password_file, std::env::var("CAIRN_TO_PASSWORD")) {
            (Some(f), _) => read_password_file(f)?,
            (None, Ok(p)) => p.into_bytes(),
            (None, Err(_)) => prompt_or(
                &format!("enter the password of the destination {}: ", a.to),
                false,
                &format!(
                    "no password for the destination repository {}: give --to-password-file FILE or set CAIRN_TO_PASSWORD",
                    a.to
                ),
            )?,
        };
        note.target.paths = vec![a.to.clone()];
        let dst = Repository::open(store_for(&a.to)?, ctx.rt.clone(), &pw)
            .with_context(|| format!("opening the destination {}", a.to))?;
        if dst.config().id == src.config().id {
            return Err(anyhow!("{} is this same repository", a.to));
        }
        let dest = || Destination(a.to.clone());
        let _lease = dst.lease("copy", &cairn_fs::hostname()).with_context(dest)?;
        let mut damaged = Vec::new();
        let mut snaps = if a.snapshots.is_empty() {
            // The readable ones travel; the damaged ones are named at the end (exit 1).
            let list = src.list_snapshots_lenient()?;
            damaged = list.damaged;
            list.snapshots
        } else {
            a.snapshots.iter().map(|s| src.resolve_snapshot(s)).collect::<std::result::Result<Vec<_>, _>>()?
        };
        snaps.retain(|(_, s)| {
            a.host.as_ref().is_none_or(|h| &s.hostname == h) && a.tags.iter().all(|t| s.tags.contains(t))
        });
        let todo = missing(snaps, &dst.list_snapshots_lenient().with_context(dest)?.snapshots);
        let start = std::time::Instant::now();
        // The audit log travels with the snapshots (format.md §12.3), first, so that every
        // segment a copied snapshot anchors is there; one that cannot be read here stays
        // behind, for `audit verify` to report.
        let (segments, unreadable) = cairn_audit::copy(&src, &dst).context("copying the audit log")?;
        for p in &unreadable {
            eprintln!("cairn: warning: audit segment {p} could not be read and was not copied");
        }
        let meter = cairn_repo::Meter::default();
        let read = || crate::output::Reading::of_meter(&meter, "snapshots");
        let out = crate::output::with_meter(crate::output::show(&ctx.g), "copy", &read, || {
            copy_snapshots_metered(&src, &dst, &todo, ctx.connections(), &meter)
        })
        .map_err(|e| anyhow::Error::new(e).context(format!("copying to {}", a.to)))?;
        let stats = out.stats;
        note.target.snapshots = out.copied.iter().map(|(s, _)| s.to_hex()).collect();
        note.message = Some(format!("{} snapshots and {segments} audit segments copied to {}", out.copied.len(), a.to));
        if ctx.g.json {
            let v: Vec<serde_json::Value> =
                out.copied.iter().map(|(s, d)| serde_json::json!({"source": s.to_hex(), "copy": d.to_hex()})).collect();
            println!(
                "{}",
                serde_json::json!({"copied": v, "blobs_copied": stats.blobs_copied, "bytes_copied": stats.bytes_copied,
                    "blobs_skipped": stats.blobs_skipped, "duration_secs": start.elapsed().as_secs_f64()})
            );
        } else if !ctx.g.quiet {
            for (s, d) in &out.copied {
                println!("snapshot {} copied as {}", s.short(), d.short());
            }
            println!(
                "{} snapshots copied to {}: {} blobs ({}) sent, {} already there, in {:.2} s",
                out.copied.len(),
                a.to,
                stats.blobs_copied,
                output::bytes(stats.bytes_copied),
                stats.blobs_skipped,
                start.elapsed().as_secs_f64()
            );
        }
        if let Some((id, why)) = damaged.first() {
            return Err(anyhow!(
                "{} source snapshots are damaged and were not copied (first: {}: {})",
                damaged.len(),
                id.short(),
                output::sanitize(why)
            ));
        }
        Ok(())
    })
}

//! `cairn copy --to REPO`: the snapshots the destination lacks, with only the blobs it
//! lacks, sealed under the destination's keys (the engine's `copy` module). The
//! destination keeps its own retention: a copied snapshot is an ordinary snapshot there.

use anyhow::{anyhow, Context as _, Result};
use cairn_engine::copy::Copier;
use cairn_format::snapshot::Snapshot;
use cairn_format::SnapshotId;
use cairn_repo::{BlobSaver, Repository};

use crate::args::CopyArgs;
use crate::context::{prompt, read_password_file, store_for, Context};
use crate::output;

/// The identity a snapshot keeps across copies: the id it was first saved under (its
/// `original` once copied or rewritten) and its time.
fn identity(id: SnapshotId, s: &Snapshot) -> (SnapshotId, String) {
    (s.original.unwrap_or(id), s.time.clone())
}

pub fn run(ctx: &Context, a: &CopyArgs) -> Result<()> {
    let src = ctx.open()?;
    let pw = match (&a.to_password_file, std::env::var("CAIRN_TO_PASSWORD")) {
        (Some(f), _) => read_password_file(f)?,
        (None, Ok(p)) => p.into_bytes(),
        (None, Err(_)) => prompt(&format!("enter the password of {}: ", a.to), false)?,
    };
    let dst = Repository::open(store_for(&a.to)?, ctx.rt.clone(), &pw).with_context(|| format!("opening {}", a.to))?;
    if dst.config().id == src.config().id {
        return Err(anyhow!("{} is this same repository", a.to));
    }
    let _lease = dst.lease("copy", &cairn_fs::hostname())?;
    let mut snaps = if a.snapshots.is_empty() {
        src.list_snapshots()?
    } else {
        a.snapshots.iter().map(|s| src.resolve_snapshot(s)).collect::<std::result::Result<Vec<_>, _>>()?
    };
    snaps
        .retain(|(_, s)| a.host.as_ref().is_none_or(|h| &s.hostname == h) && a.tags.iter().all(|t| s.tags.contains(t)));
    let have: std::collections::HashSet<(SnapshotId, String)> =
        dst.list_snapshots()?.iter().map(|(id, s)| identity(*id, s)).collect();
    let todo: Vec<(SnapshotId, Snapshot)> =
        snaps.into_iter().filter(|(id, s)| !have.contains(&identity(*id, s))).collect();
    let start = std::time::Instant::now();
    let mut copied = Vec::new();
    let mut stats = Default::default();
    if !todo.is_empty() {
        let src_index = src.load_index()?;
        let mut dst_index = dst.load_index()?;
        let recovered = dst.recover_unindexed(&mut dst_index)?;
        let saver = BlobSaver::new(&dst, dst_index, recovered, ctx.connections());
        let trees = std::thread::scope(|s| -> Result<Vec<_>> {
            let _close = saver.close_on_drop();
            s.spawn(|| saver.run_uploader());
            let mut w = saver.worker()?;
            let mut c = Copier::new(&src, &src_index, &saver);
            let mut out = Vec::new();
            for (id, snap) in &todo {
                let t = c.tree(&mut w, snap.tree, 0).with_context(|| format!("copying snapshot {}", id.short()))?;
                out.push(t);
            }
            w.flush()?;
            stats = c.stats;
            Ok(out)
        })?;
        // Every blob is uploaded and indexed before any snapshot names it.
        saver.finish()?;
        for ((id, snap), tree) in todo.iter().zip(trees) {
            let mut n = snap.clone();
            n.tree = tree;
            n.parent = None;
            n.original = Some(snap.original.unwrap_or(*id));
            let new_id = dst.save_snapshot(&n)?;
            copied.push((*id, new_id));
        }
    }
    if ctx.g.json {
        let v: Vec<serde_json::Value> =
            copied.iter().map(|(s, d)| serde_json::json!({"source": s.to_hex(), "copy": d.to_hex()})).collect();
        println!(
            "{}",
            serde_json::json!({"copied": v, "blobs_copied": stats.blobs_copied, "bytes_copied": stats.bytes_copied,
                "blobs_skipped": stats.blobs_skipped, "duration_secs": start.elapsed().as_secs_f64()})
        );
    } else if !ctx.g.quiet {
        for (s, d) in &copied {
            println!("snapshot {} copied as {}", s.short(), d.short());
        }
        println!(
            "{} snapshots copied to {}: {} blobs ({}) sent, {} already there, in {:.2} s",
            copied.len(),
            a.to,
            stats.blobs_copied,
            output::bytes(stats.bytes_copied),
            stats.blobs_skipped,
            start.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

//! `cairn check`.

use anyhow::{bail, Result};
use cairn_repo::check::{check, ReadData};

use crate::args::CheckArgs;
use crate::context::Context;
use crate::Exit;

fn parse_subset(s: &str) -> Result<ReadData> {
    if let Some(p) = s.strip_suffix('%') {
        let f: f64 = p.trim().parse().map_err(|_| anyhow::anyhow!("--read-data-subset {s:?}: not a percentage"))?;
        if !(f > 0.0 && f <= 100.0) {
            bail!("--read-data-subset {s:?}: must be in (0, 100]%");
        }
        return Ok(ReadData::Percent(f / 100.0));
    }
    if let Some((k, m)) = s.split_once('/') {
        let (k, m): (u32, u32) = (k.trim().parse()?, m.trim().parse()?);
        if k == 0 || m == 0 || k > m {
            bail!("--read-data-subset {s:?}: need 1 <= K <= M");
        }
        return Ok(ReadData::Subset { k, m });
    }
    bail!("--read-data-subset {s:?}: use N% or K/M")
}

pub fn run(ctx: &Context, a: &CheckArgs) -> Result<()> {
    let mode = match (&a.read_data_subset, a.read_data) {
        (Some(s), _) => parse_subset(s)?,
        (None, true) => ReadData::All,
        (None, false) => ReadData::None,
    };
    let repo = ctx.open()?;
    let mut r = check(&repo, mode)?;
    retention(ctx, &repo, &mut r)?;
    if ctx.g.json {
        let v = serde_json::json!({
            "clean": r.is_clean(), "snapshots": r.snapshots, "packs": r.packs, "packs_read": r.packs_read, "blobs": r.blobs,
            "errors": r.errors, "warnings": r.warnings,
            "damaged_packs": r.damaged_packs.iter().map(|p| p.to_hex()).collect::<Vec<_>>(),
            "damaged_blobs": r.damaged_blobs.keys().map(|b| b.to_hex()).collect::<Vec<_>>(),
            "affected": r.affected,
        });
        println!("{v}");
    } else {
        for w in &r.warnings {
            if !ctx.g.quiet {
                eprintln!("cairn: warning: {}", crate::output::sanitize(w));
            }
        }
        for e in &r.errors {
            eprintln!("cairn: error: {}", crate::output::sanitize(e));
        }
        for p in &r.damaged_packs {
            eprintln!("damaged pack: {}", p.to_hex());
        }
        for (b, why) in &r.damaged_blobs {
            eprintln!("damaged blob: {} ({})", b.to_hex(), crate::output::sanitize(why));
        }
        for f in &r.affected {
            eprintln!("affected: {}", crate::output::sanitize(f));
        }
        if !ctx.g.quiet {
            println!(
                "checked {} snapshots, {} packs, {} blobs{}: {}",
                r.snapshots,
                r.packs,
                r.blobs,
                if r.packs_read > 0 { format!(", read {} packs", r.packs_read) } else { String::new() },
                if r.is_clean() { "no errors".to_string() } else { format!("{} errors", r.errors.len()) }
            );
        }
    }
    if !r.is_clean() {
        return Err(Exit(1).into());
    }
    Ok(())
}

/// For an s3:// repository with object lock: every object must carry a retention at least
/// as long as configured from its write time (an object without one could be deleted by
/// anyone holding the credentials).
fn retention(ctx: &Context, repo: &cairn_repo::Repository, r: &mut cairn_repo::check::CheckReport) -> Result<()> {
    let days = repo.config().object_lock_days;
    let Some(url) = ctx.remote.as_ref().filter(|u| u.starts_with("s3://") && days > 0) else { return Ok(()) };
    let s3 = cairn_store_s3::open(url).map_err(|e| anyhow::anyhow!(e))?;
    let mut objects = vec![cairn_store::ObjectMeta { path: "config".into(), size: 0, modified: None }];
    for prefix in ["keys", "snapshots", "index", "data"] {
        objects.extend(repo.block_on(cairn_store::Store::list(&s3, prefix))?);
    }
    // One HEAD per object (two without a listed time): 32 in flight, as a remote
    // repository has many thousands of objects.
    let s3 = std::sync::Arc::new(s3);
    let mut checked = repo.block_on(async {
        let mut out = Vec::with_capacity(objects.len());
        for chunk in objects.chunks(32) {
            let mut set = tokio::task::JoinSet::new();
            for o in chunk.iter().cloned() {
                let s3 = s3.clone();
                set.spawn(async move {
                    let modified = match o.modified {
                        Some(m) => Ok(m),
                        None => cairn_store::Store::head(&*s3, &o.path).await.map(|m| m.modified.unwrap_or(0)),
                    };
                    let retention = s3.retention(&o.path).await;
                    (o.path, modified, retention)
                });
            }
            while let Some(done) = set.join_next().await {
                out.push(done.map_err(|e| anyhow::anyhow!("retention check: {e}"))?);
            }
        }
        anyhow::Ok(out)
    })?;
    checked.sort_by(|a, b| a.0.cmp(&b.0));
    let (mut missing, mut short) = (0, 0);
    for (path, modified, retention) in checked {
        let modified = modified?;
        match retention? {
            None => {
                missing += 1;
                r.errors.push(format!("{path} has no object lock"));
            }
            // An hour of slack for clock differences between cairn and the store.
            Some((_, until)) if until + 3600 < modified + days as i64 * 86400 => {
                short += 1;
                r.errors.push(format!("{path} is locked only until {until} (Unix time), less than {days} days"));
            }
            Some(_) => {}
        }
    }
    if missing + short == 0 {
        r.warnings.push(format!("object lock: all {} objects are locked for at least {days} days", objects.len()));
    }
    Ok(())
}

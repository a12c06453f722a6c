//! `cairn check`.

use anyhow::{bail, Result};
use cairn_repo::check::{check_metered, ReadData};

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
    // A bar only while pack data is read: the structural check is quick.
    let meter = cairn_repo::Meter::default();
    let read = || crate::output::Reading::of_meter(&meter, "packs");
    let show = if mode == ReadData::None { crate::output::Show::Nothing } else { crate::output::show(&ctx.g) };
    let mut r = crate::output::with_meter(show, "check", &read, || check_metered(&repo, mode, &meter))?;
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

/// Object-lock verification (s3:// repositories with object lock), shared with the
/// daemon's verify jobs.
fn retention(ctx: &Context, repo: &cairn_repo::Repository, r: &mut cairn_repo::check::CheckReport) -> Result<()> {
    Ok(cairn_daemon::maintenance::verify_object_lock(repo, &ctx.location(), r)?)
}

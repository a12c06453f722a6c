//! `cairn prune` (and `forget --prune`): options -> [`cairn_repo::prune`], then the report.
//! The protocol lives in the repo crate; this is parsing and printing.

use anyhow::{anyhow, bail, Result};
use cairn_repo::{PruneOptions, PruneReport, Repository};

use crate::args::{PruneArgs, PruneOpts};
use crate::context::Context;
use crate::output::bytes;

pub fn run(ctx: &Context, a: &PruneArgs) -> Result<()> {
    let repo = ctx.open_with(a.dry_run)?;
    crate::audit::recorded(ctx, &repo, "prune", |note| {
        note.skip = a.dry_run;
        let r = execute(ctx, &repo, &a.opts, a.dry_run)?;
        if ctx.g.json {
            println!("{}", serde_json::to_string(&r)?);
        } else {
            print(ctx, &r);
        }
        Ok(())
    })
}

/// Runs prune on an open repository; also removes what killed writers left in a local
/// repository's temporary files.
pub fn execute(ctx: &Context, repo: &Repository, o: &PruneOpts, dry_run: bool) -> Result<PruneReport> {
    let opts = PruneOptions {
        max_unused: parse_percent(&o.max_unused)?,
        max_repack_bytes: o.max_repack_size.as_deref().map(|v| parse_size("--max-repack-size", v)).transpose()?,
        grace_secs: parse_secs(&o.grace)?,
        delete_now: o.delete_now,
        dry_run,
        hostname: cairn_fs::hostname(),
    };
    // A bar counting the packs repacked (what reads and writes data); until the plan is
    // made it shows the time spent.
    let meter = cairn_repo::Meter::default();
    let read = || crate::output::Reading::of_meter(&meter, "packs");
    let r = crate::output::with_meter(crate::output::show(&ctx.g), "prune", &read, || {
        cairn_daemon::maintenance::prune_repository(repo, &ctx.location(), &opts, &meter)
    })
    .map_err(|e| match e {
        cairn_daemon::Error::Repo(e) => crate::context::delete_rights("prune", e),
        cairn_daemon::Error::Pg(cairn_pg::Error::Repo(e)) => crate::context::delete_rights("prune", e),
        e => e.into(),
    })?;
    Ok(r)
}

pub fn print(ctx: &Context, r: &PruneReport) {
    if ctx.g.quiet {
        return;
    }
    let would = if r.dry_run { "would be " } else { "" };
    println!(
        "{} snapshots, {} packs, {} blobs ({} referenced): {} used, {} unused",
        r.snapshots,
        r.packs,
        r.blobs,
        r.blobs_used,
        bytes(r.bytes_used),
        bytes(r.bytes_unused)
    );
    if r.packs_repacked > 0 {
        println!(
            "repack: {} packs {}repacked ({} blobs{})",
            r.packs_repacked,
            would,
            r.blobs_repacked,
            if r.dry_run { String::new() } else { format!(", {} written", bytes(r.bytes_repack_written)) }
        );
    }
    if r.packs_marked > 0 {
        println!(
            "mark: {} unreferenced packs ({}) {}marked for deletion",
            r.packs_marked,
            bytes(r.bytes_marked),
            would
        );
    }
    if r.packs_resurrected > 0 {
        println!("{} marked packs {}indexed again: a backup that ran meanwhile uses them", r.packs_resurrected, would);
    }
    println!("deleted: {} packs, {} {}freed", r.packs_deleted, bytes(r.bytes_deleted), would);
    if r.packs_locked > 0 || r.index_files_locked > 0 {
        println!(
            "locked: {} packs ({}) and {} index files are still in their object-lock period; a prune after {} deletes them",
            r.packs_locked,
            bytes(r.bytes_locked),
            r.index_files_locked,
            jiff::Timestamp::from_second(r.locked_until).map(|t| t.to_string()).unwrap_or_default()
        );
    }
    if r.wal_files_deleted > 0 {
        println!(
            "WAL: {} files ({}) older than the oldest PostgreSQL base backup {}deleted",
            r.wal_files_deleted,
            bytes(r.wal_bytes_deleted),
            would
        );
    }
    if r.packs_pending > 0 {
        println!("pending: {} packs ({}) to be freed later:", r.packs_pending, bytes(r.bytes_pending));
        for why in &r.pending_reasons {
            println!("  {why}");
        }
    }
    for w in &r.warnings {
        eprintln!("warning: {w}");
    }
    if r.dry_run {
        println!("dry run: nothing changed");
    }
}

/// "5%", "5" or "0.5%": a fraction.
fn parse_percent(s: &str) -> Result<f64> {
    let v: f64 = s
        .trim()
        .trim_end_matches('%')
        .trim()
        .parse()
        .map_err(|_| anyhow!("--max-unused: expected a percentage like 5%, got {s:?}"))?;
    if !(0.0..=100.0).contains(&v) {
        bail!("--max-unused: {s} is not between 0% and 100%");
    }
    Ok(v / 100.0)
}

/// "500M", "10G", "4096", "1.5T" (binary units).
pub fn parse_size(flag: &str, s: &str) -> Result<u64> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => {
            let unit = t[i..].to_ascii_uppercase();
            let m: u64 = match unit.trim_end_matches("IB").trim_end_matches('B') {
                "" => 1,
                "K" => 1 << 10,
                "M" => 1 << 20,
                "G" => 1 << 30,
                "T" => 1 << 40,
                _ => bail!("{flag}: unknown unit in {s:?} (use K, M, G or T)"),
            };
            (&t[..i], m)
        }
        None => (t, 1),
    };
    let v: f64 = num.trim().parse().map_err(|_| anyhow!("{flag}: expected a size like 500M, got {s:?}"))?;
    if v.is_nan() || v < 0.0 {
        bail!("{flag}: {s} is negative");
    }
    Ok((v * mult as f64) as u64)
}

/// "90s", "15m" (minutes), "1h", "2d", or plain seconds.
fn parse_secs(s: &str) -> Result<i64> {
    let t = s.trim();
    let (num, mult) = match t.chars().last() {
        Some('s') => (&t[..t.len() - 1], 1),
        Some('m') => (&t[..t.len() - 1], 60),
        Some('h') => (&t[..t.len() - 1], 3600),
        Some('d') => (&t[..t.len() - 1], 86400),
        _ => (t, 1),
    };
    let v: i64 = num.parse().map_err(|_| anyhow!("--grace: expected a duration like 1h, 30m or 2d, got {s:?}"))?;
    if v < 0 {
        bail!("--grace: {s} is negative");
    }
    Ok(v.saturating_mul(mult))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_repo::prune::human_secs;

    #[test]
    fn option_parsers() {
        assert_eq!(parse_percent("5%").unwrap(), 0.05);
        assert_eq!(parse_percent("0").unwrap(), 0.0);
        assert!(parse_percent("150%").is_err());
        assert!(parse_percent("x").is_err());
        assert_eq!(parse_size("x", "500M").unwrap(), 500 << 20);
        assert_eq!(parse_size("x", "2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("x", "4096").unwrap(), 4096);
        assert!(parse_size("x", "5Q").is_err());
        assert_eq!(parse_secs("1h").unwrap(), 3600);
        assert_eq!(parse_secs("15m").unwrap(), 900);
        assert_eq!(parse_secs("0").unwrap(), 0);
        assert!(parse_secs("-1h").is_err());
        assert_eq!(human_secs(3600), "1h");
    }
}

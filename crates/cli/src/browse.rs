//! `cairn snapshots|ls|find|diff|dump|stats`.

use std::io::Write;

use anyhow::{anyhow, bail, Result};
use cairn_engine::browse;
use cairn_format::snapshot::Snapshot;
use cairn_format::tree::{Node, NodeKind};
use cairn_format::SnapshotId;

use crate::args::{DiffArgs, DumpArgs, FindArgs, LsArgs, SnapshotsArgs, StatsArgs};
use crate::context::Context;
use crate::output;

fn snapshot_json(id: &SnapshotId, s: &Snapshot) -> serde_json::Value {
    let mut v = serde_json::to_value(s).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert("id".into(), id.to_hex().into());
        o.insert("short_id".into(), id.short().into());
        o.entry("label").or_insert(serde_json::Value::Null);
        o.entry("parent").or_insert(serde_json::Value::Null);
    }
    v
}

/// The index; each damaged index file is a warning on stderr (its packs are read from
/// their own headers instead, so nothing is missing).
pub fn readable_index(repo: &cairn_repo::Repository) -> Result<cairn_repo::Index> {
    let (index, damaged) = repo.load_index_reporting()?;
    for (id, why) in &damaged {
        eprintln!(
            "cairn: warning: index file {id} is damaged and left out (the packs it named are read from their headers): {}",
            output::sanitize(why)
        );
    }
    Ok(index)
}

/// The readable snapshots; each damaged one is a warning on stderr (the rest still work).
pub fn readable_snapshots(
    repo: &cairn_repo::Repository,
) -> Result<Vec<(cairn_format::SnapshotId, cairn_format::snapshot::Snapshot)>> {
    let list = repo.list_snapshots_lenient()?;
    for (id, why) in &list.damaged {
        eprintln!("cairn: warning: snapshot {} is damaged and left out: {}", id.short(), output::sanitize(why));
    }
    Ok(list.snapshots)
}

pub fn snapshots(ctx: &Context, a: &SnapshotsArgs) -> Result<()> {
    let repo = ctx.open()?;
    let mut snaps = readable_snapshots(&repo)?;
    snaps.retain(|(_, s)| {
        a.host.as_ref().is_none_or(|h| &s.hostname == h)
            && a.tags.iter().all(|t| s.tags.contains(t))
            && a.paths.iter().all(|p| s.paths.iter().any(|sp| sp == p.trim_end_matches('/') || sp == p))
    });
    if ctx.g.json {
        let v: Vec<_> = snaps.iter().map(|(id, s)| snapshot_json(id, s)).collect();
        println!("{}", serde_json::Value::Array(v));
        return Ok(());
    }
    println!("{:<9} {:<19} {:<16} {:<6} {:<16} {:>10}  paths", "ID", "time", "host", "kind", "tags", "size");
    for (id, s) in &snaps {
        println!(
            "{:<9} {:<19} {:<16} {:<6} {:<16} {:>10}  {}{}{}",
            id.short(),
            output::local_time(&s.time),
            output::sanitize(&s.hostname),
            output::sanitize(&s.kind),
            output::sanitize(&s.tags.join(",")),
            output::bytes(s.summary.total_bytes),
            output::sanitize(&s.paths.join(" ")),
            s.label.as_ref().map(|l| format!("  [{}]", output::sanitize(l))).unwrap_or_default(),
            if s.partial { "  (partial)" } else { "" }
        );
    }
    if !ctx.g.quiet {
        println!("{} snapshots", snaps.len());
    }
    Ok(())
}

fn node_json(path: &str, n: &Node) -> serde_json::Value {
    serde_json::json!({
        "path": path, "name": n.name.lossy(), "type": n.kind, "mode": n.mode, "uid": n.uid, "gid": n.gid,
        "user": n.user, "group": n.group, "size": n.size, "mtime": n.mtime,
        "link_target": n.link_target.as_ref().map(|t| t.lossy().into_owned()),
    })
}

/// One `ls -l`-style line. Every string from the snapshot goes through
/// [`output::sanitize`]: a name with a newline or an escape sequence must not forge lines.
fn long_line(path: &str, n: &Node) -> String {
    let owner = n.user.as_deref().map(|u| output::sanitize(u).into_owned()).unwrap_or_else(|| n.uid.to_string());
    let group = n.group.as_deref().map(|g| output::sanitize(g).into_owned()).unwrap_or_else(|| n.gid.to_string());
    let link = n.link_target.as_ref().map(|t| format!(" -> {}", output::sanitize(&t.lossy()))).unwrap_or_default();
    format!(
        "{} {:<8} {:<8} {:>12} {} {}{link}",
        output::mode_string(n.kind, n.mode),
        owner,
        group,
        n.size,
        output::ns_time(n.mtime),
        output::sanitize(path)
    )
}

pub fn ls(ctx: &Context, a: &LsArgs) -> Result<()> {
    let repo = ctx.open()?;
    let (_, snap) = repo.resolve_snapshot(&a.snapshot)?;
    let index = readable_index(&repo)?;
    let base = a.path.clone().unwrap_or_else(|| "/".into());
    let mut out = std::io::stdout().lock();
    let mut json = Vec::new();
    let mut emit = |p: &str, n: &Node, out: &mut dyn Write| -> std::io::Result<()> {
        if ctx.g.json {
            json.push(node_json(p, n));
            Ok(())
        } else if a.long {
            writeln!(out, "{}", long_line(p, n))
        } else {
            writeln!(out, "{}", output::sanitize(p))
        }
    };
    let mut io_err = None;
    match browse::lookup(&repo, &index, snap.tree, &base)? {
        Some(n) if n.kind != NodeKind::Dir => {
            if let Err(e) = emit(base.trim_end_matches('/'), &n, &mut out) {
                io_err = Some(e);
            }
        }
        found => {
            let tree = match found {
                Some(n) => n.subtree.ok_or_else(|| anyhow!("{base}: directory without subtree"))?,
                None => snap.tree,
            };
            let mut budget = browse::Budget::for_snapshot(&snap.summary);
            browse::walk(&repo, &index, tree, &base, &mut budget, &mut |p, n| match emit(p, n, &mut out) {
                Ok(()) => true,
                Err(e) => {
                    io_err.get_or_insert(e);
                    false
                }
            })?;
        }
    }
    drop(out);
    if let Some(e) = io_err {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            return Err(crate::Exit(crate::CLOSED_OUTPUT).into());
        }
        return Err(e.into());
    }
    if ctx.g.json {
        println!("{}", serde_json::Value::Array(json));
    }
    Ok(())
}

pub fn find(ctx: &Context, a: &FindArgs) -> Result<()> {
    let glob = globset::GlobBuilder::new(&a.pattern)
        .literal_separator(false)
        .build()
        .map_err(|e| anyhow!("bad pattern {:?}: {e}", a.pattern))?
        .compile_matcher();
    let whole_path = a.pattern.contains('/');
    let repo = ctx.open()?;
    // Snapshots before the index: a snapshot is written after the index files it needs.
    let mut snaps = readable_snapshots(&repo)?;
    let index = readable_index(&repo)?;
    if let Some(h) = &a.host {
        snaps.retain(|(_, s)| &s.hostname == h);
    }
    let mut json = Vec::new();
    let mut total = 0;
    for (id, s) in &snaps {
        let mut hits = Vec::new();
        let mut budget = browse::Budget::for_snapshot(&s.summary);
        browse::walk(&repo, &index, s.tree, "/", &mut budget, &mut |p, n| {
            let m = if whole_path { glob.is_match(p) } else { glob.is_match(n.name.lossy().as_ref()) };
            if m {
                hits.push((p.to_string(), n.clone()));
            }
            true
        })?;
        total += hits.len();
        if ctx.g.json {
            for (p, n) in &hits {
                let mut v = node_json(p, n);
                v["snapshot"] = id.to_hex().into();
                v["time"] = s.time.clone().into();
                json.push(v);
            }
        } else if !hits.is_empty() {
            println!("snapshot {} of {}:", id.short(), output::local_time(&s.time));
            for (p, n) in &hits {
                println!("  {}", long_line(p, n));
            }
        }
    }
    if ctx.g.json {
        println!("{}", serde_json::Value::Array(json));
    } else if !ctx.g.quiet {
        println!("{total} matches in {} snapshots", snaps.len());
    }
    Ok(())
}

pub fn diff(ctx: &Context, a: &DiffArgs) -> Result<()> {
    let repo = ctx.open()?;
    let (id1, s1) = repo.resolve_snapshot(&a.snapshot1)?;
    let (id2, s2) = repo.resolve_snapshot(&a.snapshot2)?;
    let index = readable_index(&repo)?;
    let mut changes = Vec::new();
    let (b1, b2) = (browse::Budget::for_snapshot(&s1.summary), browse::Budget::for_snapshot(&s2.summary));
    let mut budget = browse::Budget::new(b1.limit().saturating_add(b2.limit()));
    browse::diff(&repo, &index, Some(s1.tree), Some(s2.tree), "", &mut budget, &mut changes)?;
    if ctx.g.json {
        let v: Vec<_> =
            changes.iter().map(|(c, p)| serde_json::json!({"change": c.symbol().to_string(), "path": p})).collect();
        println!("{}", serde_json::json!({"from": id1.to_hex(), "to": id2.to_hex(), "changes": v}));
    } else {
        for (c, p) in &changes {
            println!("{}    {}", c.symbol(), output::sanitize(p));
        }
        if !ctx.g.quiet {
            let count = |k: browse::Change| changes.iter().filter(|(c, _)| *c == k).count();
            println!(
                "{} -> {}: {} added, {} removed, {} modified, {} metadata only",
                id1.short(),
                id2.short(),
                count(browse::Change::Added),
                count(browse::Change::Removed),
                count(browse::Change::Modified),
                count(browse::Change::Metadata)
            );
        }
    }
    Ok(())
}

pub fn dump(ctx: &Context, a: &DumpArgs) -> Result<()> {
    let repo = ctx.open()?;
    crate::audit::recorded(ctx, &repo, "dump", |note| {
        note.target.paths = a.path.iter().cloned().collect();
        dump_in(a, &repo, note)
    })
}

fn dump_in(a: &DumpArgs, repo: &cairn_repo::Repository, note: &mut crate::audit::Note) -> Result<()> {
    let (sid, snap) = repo.resolve_snapshot(&a.snapshot)?;
    note.target.snapshots = vec![sid.to_hex()];
    let index = readable_index(repo)?;
    let node = match &a.path {
        Some(p) => browse::lookup(repo, &index, snap.tree, p)?
            .ok_or_else(|| anyhow!("{p}: is the snapshot root, not a file"))?,
        None => {
            let t = repo.load_tree(&index, snap.tree)?;
            match t.nodes.as_slice() {
                [one] if one.kind == NodeKind::File => one.clone(),
                _ => bail!("give the PATH of the file to dump (the snapshot holds more than one file)"),
            }
        }
    };
    let mut out = std::io::stdout().lock();
    let written = browse::dump(repo, &index, &node, &mut out)
        .and_then(|_| out.flush().map_err(|e| cairn_engine::Error::io("stdout", e)));
    match written {
        Err(cairn_engine::Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::BrokenPipe => {
            Err(crate::Exit(crate::CLOSED_OUTPUT).into())
        }
        r => Ok(r.map(drop)?),
    }
}

pub fn stats(ctx: &Context, _a: &StatsArgs) -> Result<()> {
    let repo = ctx.open()?;
    let snaps = readable_snapshots(&repo)?;
    let index = readable_index(&repo)?;
    let logical: u64 = snaps.iter().map(|(_, s)| s.summary.total_bytes).sum();
    let (mut raw, mut enc, mut blobs) = (0u64, 0u64, 0u64);
    for (_, loc) in index.iter().filter(|(_, l)| l.kind == cairn_format::BlobType::Data) {
        raw += loc.raw_length as u64;
        enc += loc.length as u64;
        blobs += 1;
    }
    let listed = repo.block_on(repo.store().list(cairn_repo::layout::DATA))?;
    let stored: u64 = listed.iter().map(|m| m.size).sum();
    let meta: u64 = [cairn_repo::layout::INDEX, cairn_repo::layout::SNAPSHOTS, cairn_repo::layout::KEYS]
        .iter()
        .map(|p| repo.block_on(repo.store().list(p)).map(|l| l.iter().map(|m| m.size).sum::<u64>()).unwrap_or(0))
        .sum();
    let dedup = if raw > 0 { logical as f64 / raw as f64 } else { 0.0 };
    let comp = if enc > 0 { raw as f64 / enc as f64 } else { 0.0 };
    if ctx.g.json {
        println!(
            "{}",
            serde_json::json!({"snapshots": snaps.len(), "logical_size": logical, "unique_data": raw, "stored_size": stored + meta,
                "pack_bytes": stored, "packs": listed.len(), "blobs": blobs, "dedup_ratio": dedup, "compression_ratio": comp})
        );
    } else {
        println!("snapshots:          {}", snaps.len());
        println!("logical size:       {} (all files of all snapshots)", output::bytes(logical));
        println!("unique data:        {} in {} blobs", output::bytes(raw), blobs);
        println!("stored size:        {} ({} packs)", output::bytes(stored + meta), listed.len());
        println!("dedup ratio:        {dedup:.2}x");
        println!("compression ratio:  {comp:.2}x");
    }
    Ok(())
}

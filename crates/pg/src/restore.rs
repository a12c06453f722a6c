//! Restoring a base backup's data directory, and fetching the WAL a recovery from it
//! replays: what `cairn pg restore` and a PostgreSQL drill both do.

use std::path::Path;

use cairn_engine::{browse, Overwrite, RestoreOptions, RestoreSummary, Restorer};
use cairn_format::snapshot::{PgBackup, Snapshot};
use cairn_format::SnapshotId;
use cairn_fs::FsDestination;
use cairn_repo::{Index, Repository};

use crate::wal::{self, Kind, WalName};
use crate::{Error, Result};

/// A restored data directory.
pub struct Restored {
    pub summary: RestoreSummary,
    /// The owner the data directory had on the source (PostgreSQL refuses others).
    pub owner: (u32, u32),
    pub pg: PgBackup,
}

/// Bytes restored so far (`bytes_done`), and the total once the plan is made.
pub type Progress = cairn_repo::Meter;

/// Restores the data directory of base backup `sid` into the empty directory `target`
/// (created if absent). Nothing that grants privilege is restored: a data directory holds
/// no device nodes or setuid files.
pub fn data_dir(
    repo: &Repository,
    index: &Index,
    sid: &SnapshotId,
    snap: &Snapshot,
    target: &Path,
    threads: usize,
    progress: &Progress,
) -> Result<Restored> {
    let pg = snap
        .postgres
        .clone()
        .ok_or_else(|| Error::Invalid(format!("snapshot {} is not a PostgreSQL base backup", sid.short())))?;
    let root = browse::subtree(repo, index, snap.tree, &pg.data_dir).map_err(engine)?;
    let top = browse::lookup(repo, index, snap.tree, &pg.data_dir)
        .map_err(engine)?
        .ok_or_else(|| Error::Damaged(format!("snapshot {} does not hold {}", sid.short(), pg.data_dir)))?;
    std::fs::create_dir_all(target).map_err(|e| Error::io(format!("creating {}", target.display()), e))?;
    let dest = FsDestination::new(target).map_err(|e| Error::io(target.display().to_string(), e))?;
    let all = |_: &str, _: bool| true;
    let opts = RestoreOptions { overwrite: Overwrite::Always, verify: false, threads, filter: &all, privileged: false };
    let restorer = Restorer::new(repo, index);
    let prefix = format!("/{}", pg.data_dir.trim_matches('/'));
    let plan =
        restorer.plan(root, &prefix, &dest, &opts, &mut browse::Budget::for_snapshot(&snap.summary)).map_err(engine)?;
    progress.plan(1, plan.bytes_total);
    let summary = restorer.execute(plan, &dest, &opts, &progress.bytes_done).map_err(engine)?;
    progress.done(1, 0);
    Ok(Restored { summary, owner: (top.uid, top.gid), pg })
}

fn engine(e: cairn_engine::Error) -> Error {
    match e {
        cairn_engine::Error::Repo(r) => Error::Repo(r),
        e => Error::Engine(e),
    }
}

/// One WAL file a recovery may ask for: the archived object and the name
/// `restore_command` is asked for (a streamed `.partial` stands for its segment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedWal {
    pub object: WalName,
    pub file: String,
}

/// Every archived WAL file a recovery from `pg` may replay, in the order it asks for them:
/// all timeline history files, then the segments of its timeline from its start segment
/// on and those of every later timeline.
pub fn wal_plan(repo: &Repository, pg: &PgBackup) -> Result<Vec<PlannedWal>> {
    let start = WalName::parse(&pg.start_wal)
        .ok_or_else(|| Error::Damaged(format!("base backup start WAL {:?} is not a WAL file name", pg.start_wal)))?;
    let listed = wal::list(repo)?;
    let complete: std::collections::HashSet<&str> =
        listed.iter().filter(|(n, _)| n.kind == Kind::Segment).map(|(n, _)| n.name.as_str()).collect();
    let later = |n: &WalName, base: &str| {
        n.timeline > start.timeline || (n.timeline == start.timeline && base >= start.name.as_str())
    };
    let mut out: Vec<PlannedWal> = Vec::new();
    for (name, _) in &listed {
        // A streamed `.partial` segment (full-sized, as pg_receivewal writes it) stands
        // for its segment until the complete one is archived: it holds the newest WAL.
        let file = match name.kind {
            Kind::History => name.name.as_str(),
            Kind::Segment if later(name, &name.name) => name.name.as_str(),
            Kind::Partial => match name.name.strip_suffix(".partial") {
                Some(base) if later(name, base) && !complete.contains(base) => base,
                _ => continue,
            },
            _ => continue,
        };
        out.push(PlannedWal { object: name.clone(), file: file.to_string() });
    }
    // History files first (recovery reads them before any segment), then by timeline and
    // position: the listing sorts `X.partial` beside `X`, which is its place.
    out.sort_by(|a, b| {
        let key = |p: &PlannedWal| (p.object.kind != Kind::History, p.object.timeline, p.file.clone());
        key(a).cmp(&key(b))
    });
    Ok(out)
}

//! Prune: delete what no snapshot references, without ever stopping a backup.
//!
//! Two phases (the protocol and its safety argument are in `docs/format.md`, "Concurrency
//! and prune"):
//!
//! 1. **Mark.** Find packs with no referenced blob, and packs worth repacking (their used
//!    blobs are copied to new packs). Write a *marker* naming them, then a consolidated
//!    index that no longer names them and supersedes every index file read, delete those
//!    files, and write an *arming* record listing the writer leases live at that moment.
//! 2. **Sweep** (a later run, or the same one with `--delete-now`): once every writer of the
//!    arming record is gone and the grace period has passed, re-read the index and every
//!    snapshot; delete each marked pack unless the current index names it (a writer adopted
//!    it) or it holds a blob that some snapshot references and no indexed pack holds (a
//!    writer that started before the marking used it): such packs are indexed again.
//!
//! Memory grows with the number of blobs: per blob one pack-header record (48 bytes), a
//! home entry in a hash map (~56 bytes) and, when referenced, an entry in the used set
//! (~40 bytes): about 150 bytes per blob, independent of the data size.
//!
//! The pieces: `docs` (the markers and arming records), `state` (what the repository holds:
//! packs, their blobs' homes, the referenced set), `plan` (what to delete or repack, the
//! repacking and the consolidated index); this file runs the protocol.

mod docs;
mod plan;
mod state;

pub use docs::{MarkerState, PruneDocs};

use std::collections::HashSet;

use cairn_format::index::{IndexFile, IndexedPack};
use cairn_format::lease::{Armed, Marker, PruneBody, WriterLease};
use cairn_format::{PackId, WriterId};

use crate::lease::unix_now;
use crate::{layout, Error, Repository, Result};

use plan::{consolidate, plan, repack};
use state::{load_state, Source, State, Used};

#[derive(Debug, Clone)]
pub struct PruneOptions {
    /// Unused bytes tolerated in kept packs, as a fraction of the used bytes; packs with
    /// the most unused space are repacked until the rest is within it.
    pub max_unused: f64,
    /// At most this many bytes of packs are repacked per run.
    pub max_repack_bytes: Option<u64>,
    /// Seconds an armed marker waits before its packs may go, on top of its writers ending.
    pub grace_secs: i64,
    /// Sweep what this run marks at once (refused while another writer runs).
    pub delete_now: bool,
    pub dry_run: bool,
    pub hostname: String,
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct PruneReport {
    pub snapshots: usize,
    pub packs: usize,
    pub blobs: usize,
    pub blobs_used: usize,
    /// Stored bytes of referenced blobs, and of unreferenced ones still in packs.
    pub bytes_used: u64,
    pub bytes_unused: u64,
    /// Packs this run marked for deletion (no referenced blob) and their size.
    pub packs_marked: usize,
    pub bytes_marked: u64,
    /// Packs repacked: their referenced blobs copied to new packs, the old ones marked.
    pub packs_repacked: usize,
    pub blobs_repacked: usize,
    pub bytes_repack_written: u64,
    /// Packs actually deleted by this run and the bytes freed.
    pub packs_deleted: usize,
    pub bytes_deleted: u64,
    /// Marked packs a later snapshot turned out to need: indexed again.
    pub packs_resurrected: usize,
    /// Marked packs still waiting (grace period or running writers), and their size.
    pub packs_pending: usize,
    pub bytes_pending: u64,
    /// Why pending packs wait.
    pub pending_reasons: Vec<String>,
    pub index_files_written: usize,
    pub index_files_deleted: usize,
    /// Packs that would go but are still under the repository's object-lock period, and
    /// the latest time one of them unlocks (Unix seconds; 0: none).
    pub packs_locked: usize,
    pub bytes_locked: u64,
    pub locked_until: i64,
    pub index_files_locked: usize,
    /// PostgreSQL WAL files no remaining base backup needs (set by the caller).
    pub wal_files_deleted: usize,
    pub wal_bytes_deleted: u64,
    pub warnings: Vec<String>,
    pub dry_run: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("another cairn process is writing to this repository ({}); --delete-now needs it to finish first (or run prune without --delete-now: deletion then waits for it by itself)", .0.join("; "))]
pub struct Busy(pub Vec<String>);

/// Runs prune (see the module docs). With `dry_run`, writes nothing and reports the plan.
pub fn prune(repo: &Repository, opts: &PruneOptions) -> Result<PruneReport> {
    prune_metered(repo, opts, &crate::Meter::default())
}

/// [`prune`], counting on `meter` the packs it repacks (and their bytes): the part of a
/// prune that reads and writes data.
pub fn prune_metered(repo: &Repository, opts: &PruneOptions, meter: &crate::Meter) -> Result<PruneReport> {
    let mut r = PruneReport { dry_run: opts.dry_run, ..Default::default() };
    let _lease = if opts.dry_run { None } else { Some(repo.lease("prune", &opts.hostname)?) };
    let own = repo.lease_id();
    let others = |now: i64| -> Result<Vec<(WriterId, WriterLease)>> {
        Ok(repo.live_leases(now)?.into_iter().filter(|(id, _)| Some(*id) != own).collect())
    };
    if opts.delete_now {
        let busy = others(unix_now())?;
        if !busy.is_empty() {
            return Err(Error::Invalid(Busy(busy.iter().map(|(_, l)| describe(l)).collect()).to_string()));
        }
    }

    // Which earlier markers may be swept: decided before the state is read, so the state
    // includes every snapshot of the writers they waited for.
    let docs = repo.load_prune_docs()?;
    for (id, e) in &docs.unreadable {
        r.warnings
            .push(format!("prune document {} cannot be read ({e}); its packs are treated as unmarked", id.short()));
    }
    let live: HashSet<WriterId> = others(unix_now())?.into_iter().map(|(id, _)| id).collect();
    let now = unix_now();
    let (ready, waiting): (Vec<MarkerState>, Vec<MarkerState>) =
        docs.markers.iter().cloned().partition(|m| sweepable(m, &live, now, opts).is_ok());

    // Snapshots are listed before the index and the packs: a snapshot is written after
    // everything it references, so whatever a listed snapshot needs is in the later listings.
    let snaps = repo.list_snapshots()?;
    let mut st = load_state(repo, &docs, &mut r.warnings)?;
    let mut used = Used::default();
    st.snapshots = used.walk(repo, &snaps, &mut st.catalog, &st.sizes, &mut r.warnings)?;
    r.snapshots = st.snapshots;

    // Sweep the ready markers.
    let swept = sweep(repo, &ready, &mut st, &used, opts.dry_run, &mut r)?;

    // Mark.
    let plan = plan(&st, &used, opts);
    r.packs = st.sizes.len();
    r.blobs = st.catalog.home.len();
    r.blobs_used = used.blobs.len();
    r.bytes_used = plan.bytes_used;
    r.bytes_unused = plan.bytes_unused;
    r.packs_marked = plan.delete.len();
    r.bytes_marked = plan.delete.iter().map(|&i| st.catalog.packs[i].size).sum();
    r.packs_repacked = plan.repack.len();
    let repack_bytes = plan.repack.iter().map(|&i| st.catalog.packs[i].size).sum();
    meter.plan(if opts.dry_run { 0 } else { plan.repack.len() as u64 }, if opts.dry_run { 0 } else { repack_bytes });
    r.blobs_repacked = plan.repack_blobs;
    let unarmed: Vec<&MarkerState> = waiting.iter().filter(|m| m.arms.is_empty()).collect();
    for m in &waiting {
        if let Err(why) = sweepable(m, &live, now, opts) {
            add_pending(&mut r, m.marker.packs.iter(), &st, why);
        }
    }
    let adopted = st.catalog.packs.iter().any(|p| p.source == Source::Adopted);
    let changes = !plan.delete.is_empty() || !plan.repack.is_empty() || adopted || st.index_ids.len() > 16;
    if opts.dry_run {
        if opts.delete_now {
            r.packs_deleted += plan.delete.len() + plan.repack.len();
            r.bytes_deleted += plan.delete.iter().chain(&plan.repack).map(|&i| st.catalog.packs[i].size).sum::<u64>();
        } else {
            let grace =
                format!("marked now; deleted by a prune at least {} after this one", human_secs(opts.grace_secs));
            add_pending(&mut r, plan.delete.iter().chain(&plan.repack).map(|&i| &st.catalog.packs[i].id), &st, grace);
        }
        return Ok(r);
    }
    let mut new_marker = None;
    if changes {
        let new_packs = repack(repo, &st, &used, &plan, &mut r, meter)?;
        let marked: Vec<PackId> = plan.delete.iter().chain(&plan.repack).map(|&i| st.catalog.packs[i].id).collect();
        if !marked.is_empty() {
            let id = repo.save_prune_doc(PruneBody::Marker(Marker {
                created: unix_now(),
                hostname: opts.hostname.clone(),
                packs: marked.clone(),
            }))?;
            new_marker = Some(MarkerState {
                id,
                marker: Marker { created: unix_now(), hostname: opts.hostname.clone(), packs: marked },
                arms: Vec::new(),
            });
        }
        consolidate(repo, &st, &plan, new_packs, &swept, &mut r)?;
    }
    // Arm the new marker and any left unarmed by a killed prune: the index no longer names
    // their packs, so only writers live now can still reference them.
    let mut to_arm: Vec<MarkerState> = unarmed.into_iter().cloned().collect();
    to_arm.extend(new_marker.clone());
    let live_now: Vec<WriterId> = others(unix_now())?.into_iter().map(|(id, _)| id).collect();
    let mut armed = Vec::new();
    for mut m in to_arm {
        let a = Armed { marker: m.id, at: unix_now(), writers: live_now.clone() };
        let aid = repo.save_prune_doc(PruneBody::Armed(a.clone()))?;
        m.arms.push((aid, a));
        armed.push(m);
    }
    for m in &docs.unreadable {
        let _ = repo.block_on(repo.store().delete(&layout::prune_doc(&m.0)));
    }
    for a in &docs.orphan_arms {
        let _ = repo.block_on(repo.store().delete(&layout::prune_doc(a)));
    }

    if opts.delete_now {
        // Sweep at once what could be: only if no writer started meanwhile.
        let now = unix_now();
        let live: HashSet<WriterId> = others(now)?.into_iter().map(|(id, _)| id).collect();
        let (ready, waiting): (Vec<MarkerState>, Vec<MarkerState>) =
            armed.into_iter().partition(|m| sweepable(m, &live, now, opts).is_ok());
        if !ready.is_empty() {
            let docs = repo.load_prune_docs()?;
            let snaps = repo.list_snapshots()?;
            let mut st2 = load_state(repo, &docs, &mut r.warnings)?;
            used.walk(repo, &snaps, &mut st2.catalog, &st2.sizes, &mut r.warnings)?;
            sweep(repo, &ready, &mut st2, &used, false, &mut r)?;
        }
        for m in &waiting {
            if let Err(why) = sweepable(m, &live, now, opts) {
                add_pending(&mut r, m.marker.packs.iter(), &st, why);
            }
        }
    } else {
        let live: HashSet<WriterId> = live_now.iter().copied().collect();
        for m in &armed {
            let why = match sweepable(m, &live, unix_now(), opts) {
                Err(why) => why,
                Ok(()) => "marked now; the next prune deletes them".to_string(),
            };
            add_pending(&mut r, m.marker.packs.iter(), &st, why);
        }
    }
    Ok(r)
}

fn add_pending<'a>(r: &mut PruneReport, packs: impl Iterator<Item = &'a PackId>, st: &State, why: String) {
    let mut n = 0;
    for p in packs {
        if let Some(&s) = st.sizes.get(p) {
            r.packs_pending += 1;
            r.bytes_pending += s;
            n += 1;
        }
    }
    if n > 0 && !r.pending_reasons.contains(&why) {
        r.pending_reasons.push(why);
    }
}

fn describe(l: &WriterLease) -> String {
    format!("{} on {} pid {}, lease until {}", l.command, l.hostname, l.pid, fmt_time(l.expires))
}

fn fmt_time(unix: i64) -> String {
    jiff::Timestamp::from_second(unix).map(|t| t.to_string()).unwrap_or_else(|_| unix.to_string())
}

pub fn human_secs(s: i64) -> String {
    match s {
        s if s % 86400 == 0 && s > 0 => format!("{}d", s / 86400),
        s if s % 3600 == 0 && s > 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 && s > 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Ok when some arming record of `m` has no live writer and its grace period has passed
/// (or `--delete-now`); else why not.
fn sweepable(
    m: &MarkerState,
    live: &HashSet<WriterId>,
    now: i64,
    opts: &PruneOptions,
) -> std::result::Result<(), String> {
    if m.arms.is_empty() {
        return Err("marked by a prune that was interrupted; armed now, deleted by a later prune".into());
    }
    let mut why = String::new();
    for (_, a) in &m.arms {
        let busy = a.writers.iter().filter(|w| live.contains(w)).count();
        let wait = a.at + opts.grace_secs - now;
        if busy == 0 && (opts.delete_now || wait <= 0) {
            return Ok(());
        }
        why = if busy > 0 {
            format!("waiting for {busy} writer(s) that were running when the packs were marked")
        } else {
            format!("grace period: deletable by a prune after {}", fmt_time(a.at + opts.grace_secs))
        };
    }
    Err(why)
}

/// Deletes the packs of `ready` markers that nothing needs, indexes again those that a
/// snapshot needs, then removes the markers. `st` must have been read after the markers
/// were found sweepable.
fn sweep(
    repo: &Repository,
    ready: &[MarkerState],
    st: &mut State,
    used: &Used,
    dry_run: bool,
    r: &mut PruneReport,
) -> Result<HashSet<PackId>> {
    let mut deleted = HashSet::new();
    if ready.is_empty() {
        return Ok(deleted);
    }
    st.catalog.read_marked(repo, &st.sizes, &mut r.warnings);
    let mut resurrect = Vec::new();
    let mut delete = Vec::new();
    let mut seen = HashSet::new();
    for m in ready {
        for p in &m.marker.packs {
            if !seen.insert(*p) {
                continue;
            }
            let Some(&i) = st.catalog.pos.get(p) else { continue }; // gone already, or unreadable
            let rec = &st.catalog.packs[i];
            if rec.source != Source::Marked {
                continue; // indexed again by a writer: it stays (a later prune may mark it anew)
            }
            let needed =
                rec.blobs.iter().enumerate().any(|(j, b)| {
                    used.blobs.contains(&b.id) && st.catalog.home.get(&b.id) == Some(&(i as u32, j as u32))
                });
            if needed {
                resurrect.push(i);
            } else {
                delete.push(i);
            }
        }
    }
    if dry_run {
        r.packs_deleted += delete.len();
        r.bytes_deleted += delete.iter().map(|&i| st.catalog.packs[i].size).sum::<u64>();
        r.packs_resurrected += resurrect.len();
        return Ok(deleted);
    }
    if !resurrect.is_empty() {
        let packs = resurrect
            .iter()
            .map(|&i| {
                let p = &st.catalog.packs[i];
                IndexedPack { id: p.id, salt: p.salt, blobs: p.blobs.clone() }
            })
            .collect();
        repo.save_index(&IndexFile { supersedes: Vec::new(), packs })?;
        r.index_files_written += 1;
        for &i in &resurrect {
            st.catalog.packs[i].source = Source::Indexed;
        }
        r.packs_resurrected += resurrect.len();
    }
    let now = unix_now();
    let mut locked = HashSet::new();
    for &i in &delete {
        let p = &st.catalog.packs[i];
        // Under an object-lock period: left for a later prune (its marker stays).
        if let Some(until) = repo.locked_until(st.modified.get(&p.id).copied().flatten(), now) {
            r.packs_locked += 1;
            r.bytes_locked += p.size;
            r.locked_until = r.locked_until.max(until);
            locked.insert(p.id);
            continue;
        }
        repo.block_on(repo.store().delete(&layout::pack(&p.id)))?;
        r.packs_deleted += 1;
        r.bytes_deleted += p.size;
        deleted.insert(p.id);
    }
    for m in ready {
        if m.marker.packs.iter().any(|p| locked.contains(p)) {
            continue;
        }
        for id in m.arms.iter().map(|(a, _)| *a).chain([m.id]) {
            let path = layout::prune_doc(&id);
            if repo.object_locked_until(&path, now).is_none() {
                repo.block_on(repo.store().delete(&path))?;
            }
        }
    }
    let delete: Vec<usize> = delete.into_iter().filter(|&i| !locked.contains(&st.catalog.packs[i].id)).collect();
    // Deleted packs are gone from the catalog's point of view.
    for &i in &delete {
        let id = st.catalog.packs[i].id;
        st.sizes.remove(&id);
    }
    Ok(deleted)
}

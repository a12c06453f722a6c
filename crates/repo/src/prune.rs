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

use std::collections::{HashMap, HashSet};

use cairn_format::index::{IndexFile, IndexedPack};
use cairn_format::lease::{Armed, Marker, PruneBody, PruneDoc, WriterLease};
use cairn_format::pack::BlobEntry;
use cairn_format::tree::{NodeKind, Tree};
use cairn_format::{BlobId, BlobType, Id, IndexId, MarkerId, PackId, TreeId, WriterId};
use cairn_store::PutMode;

use crate::lease::unix_now;
use crate::repository::KIND_PRUNE;
use crate::{layout, Error, Packer, Repository, Result};

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

/// A marker and the arming records that refer to it.
#[derive(Debug, Clone)]
pub struct MarkerState {
    pub id: MarkerId,
    pub marker: Marker,
    pub arms: Vec<(MarkerId, Armed)>,
}

/// Every prune document: markers (with their arms), arms whose marker is gone, and
/// documents that could not be read.
#[derive(Debug, Default)]
pub struct PruneDocs {
    pub markers: Vec<MarkerState>,
    pub orphan_arms: Vec<MarkerId>,
    pub unreadable: Vec<(MarkerId, String)>,
}

impl PruneDocs {
    pub fn marked_packs(&self) -> HashSet<PackId> {
        self.markers.iter().flat_map(|m| m.marker.packs.iter().copied()).collect()
    }
}

impl Repository {
    pub fn load_prune_docs(&self) -> Result<PruneDocs> {
        let mut docs = PruneDocs::default();
        let mut arms = Vec::new();
        for m in self.block_on(self.store().list(layout::PRUNE))? {
            let Some(id) = layout::id_of(&m.path).map(MarkerId) else { continue };
            let bytes = match self.load_sealed(KIND_PRUNE, &m.path, "prune document") {
                Ok(b) => b,
                Err(Error::Store(e)) if e.is_not_found() => continue, // swept meanwhile
                Err(e) => {
                    docs.unreadable.push((id, e.to_string()));
                    continue;
                }
            };
            match PruneDoc::decode(&bytes) {
                Ok(PruneDoc { body: PruneBody::Marker(marker), .. }) => {
                    docs.markers.push(MarkerState { id, marker, arms: Vec::new() })
                }
                Ok(PruneDoc { body: PruneBody::Armed(a), .. }) => arms.push((id, a)),
                Err(e) => docs.unreadable.push((id, e.to_string())),
            }
        }
        for (id, a) in arms {
            match docs.markers.iter_mut().find(|m| m.id == a.marker) {
                Some(m) => m.arms.push((id, a)),
                None => docs.orphan_arms.push(id),
            }
        }
        docs.markers.sort_by_key(|m| m.marker.created);
        Ok(docs)
    }

    /// Packs named by some readable prune marker: writers must not adopt them.
    pub fn marked_packs(&self) -> Result<HashSet<PackId>> {
        Ok(self.load_prune_docs()?.marked_packs())
    }

    fn save_prune_doc(&self, body: PruneBody) -> Result<MarkerId> {
        self.save_sealed(KIND_PRUNE, |id| layout::prune_doc(&MarkerId(id)), &PruneDoc::new(body).encode()).map(MarkerId)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// Named by an index file that this run read.
    Indexed,
    /// Not indexed and not marked: adopted from its header (left by a killed writer, or
    /// being written by a running one).
    Adopted,
    /// Named by a marker and by no index file.
    Marked,
}

struct PackRec {
    id: PackId,
    salt: [u8; 32],
    size: u64,
    blobs: Vec<BlobEntry>,
    source: Source,
}

/// Every pack prune knows about and, per blob, the one pack that is its home.
#[derive(Default)]
struct Catalog {
    packs: Vec<PackRec>,
    pos: HashMap<PackId, usize>,
    home: HashMap<BlobId, (u32, u32)>,
    /// Marked packs not yet read (their headers are read only when needed).
    marked_unread: Vec<PackId>,
}

impl Catalog {
    fn add(&mut self, rec: PackRec) {
        if self.pos.contains_key(&rec.id) {
            return;
        }
        let p = self.packs.len() as u32;
        for (i, b) in rec.blobs.iter().enumerate() {
            self.home.entry(b.id).or_insert((p, i as u32));
        }
        self.pos.insert(rec.id, p as usize);
        self.packs.push(rec);
    }

    fn locate(&self, id: &BlobId) -> Option<(&PackRec, &BlobEntry)> {
        let &(p, i) = self.home.get(id)?;
        let rec = &self.packs[p as usize];
        Some((rec, &rec.blobs[i as usize]))
    }

    /// Reads the headers of the marked packs, so that their blobs have a home when nothing
    /// else holds them.
    fn read_marked(&mut self, repo: &Repository, sizes: &HashMap<PackId, u64>, warnings: &mut Vec<String>) {
        for p in std::mem::take(&mut self.marked_unread) {
            match repo.read_pack_header(p) {
                Ok((salt, blobs)) => self.add(PackRec {
                    id: p,
                    salt,
                    size: sizes.get(&p).copied().unwrap_or(0),
                    blobs,
                    source: Source::Marked,
                }),
                // Deleted meanwhile by another prune's sweep of the same marker.
                Err(Error::Store(e)) if e.is_not_found() => {}
                Err(e) => warnings.push(format!("marked pack {}: {e}", p.short())),
            }
        }
    }
}

/// What the repository holds right now: index files, packs, snapshots, referenced blobs.
struct State {
    /// Every index file listed (superseded ones included): a consolidation supersedes all.
    index_ids: Vec<IndexId>,
    /// When each index file was written (object-lock periods run from it).
    index_modified: HashMap<IndexId, Option<i64>>,
    sizes: HashMap<PackId, u64>,
    modified: HashMap<PackId, Option<i64>>,
    catalog: Catalog,
    snapshots: usize,
}

/// The blobs reachable from snapshots. Grows only: walking again after new snapshots
/// appeared costs only their new trees.
#[derive(Default)]
struct Used {
    trees: HashSet<TreeId>,
    blobs: HashSet<BlobId>,
}

impl Used {
    fn walk(
        &mut self,
        repo: &Repository,
        snaps: &[(cairn_format::SnapshotId, cairn_format::snapshot::Snapshot)],
        cat: &mut Catalog,
        sizes: &HashMap<PackId, u64>,
        warnings: &mut Vec<String>,
    ) -> Result<usize> {
        // Level by level, each level's trees fetched concurrently: on an object store every
        // tree is a request, and one at a time would make prune wait on latency.
        let mut level: Vec<TreeId> = snaps.iter().map(|(_, s)| s.tree).collect();
        let mut missing_data = 0usize;
        while !level.is_empty() {
            let mut wanted = Vec::new();
            for t in std::mem::take(&mut level) {
                if !self.trees.insert(t) {
                    continue;
                }
                self.blobs.insert(t.blob());
                if cat.locate(&t.blob()).is_none() {
                    cat.read_marked(repo, sizes, warnings);
                }
                let Some((rec, e)) = cat.locate(&t.blob()) else {
                    return Err(Error::Invalid(format!(
                        "tree {} of a snapshot is in no pack; prune cannot tell what it references and stops (run 'cairn check')",
                        t.short()
                    )));
                };
                wanted.push((t.blob(), rec.id, rec.salt, location(e)));
            }
            for chunk in wanted.chunks(16) {
                for ((id, ..), data) in chunk.iter().zip(repo.read_blobs_at(chunk)?) {
                    let tree = Tree::decode(&data).map_err(|err| Error::Damaged {
                        what: "tree",
                        id: id.to_hex(),
                        detail: err.to_string(),
                    })?;
                    for n in &tree.nodes {
                        match n.kind {
                            NodeKind::Dir => level.extend(n.subtree),
                            NodeKind::File => {
                                for b in &n.content {
                                    if self.blobs.insert(*b) && cat.locate(b).is_none() {
                                        missing_data += 1;
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
        if missing_data > 0 {
            warnings.push(format!("{missing_data} referenced data blobs are in no pack (run 'cairn check')"));
        }
        Ok(snaps.len())
    }
}

fn location(e: &BlobEntry) -> crate::Location {
    crate::Location { pack: 0, offset: e.offset, length: e.length, raw_length: e.raw_length, kind: e.kind }
}

fn load_state(repo: &Repository, docs: &PruneDocs, warnings: &mut Vec<String>) -> Result<State> {
    let index_metas = repo.block_on(repo.store().list(layout::INDEX))?;
    let index_ids: Vec<IndexId> = index_metas.iter().filter_map(|m| layout::id_of(&m.path).map(IndexId)).collect();
    let index_modified =
        index_metas.iter().filter_map(|m| layout::id_of(&m.path).map(|i| (IndexId(i), m.modified))).collect();
    let files = repo.load_index_files()?;
    let packs = repo.block_on(repo.store().list(layout::DATA))?;
    let sizes: HashMap<PackId, u64> =
        packs.iter().filter_map(|m| layout::id_of(&m.path).map(|i| (PackId(i), m.size))).collect();
    let modified: HashMap<PackId, Option<i64>> =
        packs.iter().filter_map(|m| layout::id_of(&m.path).map(|i| (PackId(i), m.modified))).collect();
    let mut cat = Catalog::default();
    for (_, f) in files {
        for p in f.packs {
            let Some(&size) = sizes.get(&p.id) else {
                warnings.push(format!("pack {} is indexed but missing (run 'cairn check')", p.id.short()));
                continue;
            };
            cat.add(PackRec { id: p.id, salt: p.salt, size, blobs: p.blobs, source: Source::Indexed });
        }
    }
    let marked = docs.marked_packs();
    let mut unindexed: Vec<PackId> = sizes.keys().filter(|p| !cat.pos.contains_key(p)).copied().collect();
    unindexed.sort();
    for p in unindexed {
        if marked.contains(&p) {
            cat.marked_unread.push(p);
            continue;
        }
        match repo.read_pack_header(p) {
            Ok((salt, blobs)) => cat.add(PackRec { id: p, salt, size: sizes[&p], blobs, source: Source::Adopted }),
            // Being written is impossible (uploads are atomic); damaged: left for check.
            Err(e) => warnings.push(format!("unindexed pack {} left alone: {e}", p.short())),
        }
    }
    Ok(State { index_ids, index_modified, sizes, modified, catalog: cat, snapshots: 0 })
}

/// Runs prune (see the module docs). With `dry_run`, writes nothing and reports the plan.
pub fn prune(repo: &Repository, opts: &PruneOptions) -> Result<PruneReport> {
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
        let new_packs = repack(repo, &st, &used, &plan, &mut r)?;
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

struct Plan {
    /// Catalog positions of packs with no referenced blob.
    delete: Vec<usize>,
    /// Catalog positions of packs to repack.
    repack: Vec<usize>,
    repack_blobs: usize,
    bytes_used: u64,
    bytes_unused: u64,
}

/// Classifies the indexed and adopted packs.
fn plan(st: &State, used: &Used, opts: &PruneOptions) -> Plan {
    let cat = &st.catalog;
    let mut delete = Vec::new();
    let mut partial = Vec::new(); // (position, used bytes, unused bytes)
    let (mut bytes_used, mut bytes_unused) = (0u64, 0u64);
    for (i, p) in cat.packs.iter().enumerate() {
        if p.source == Source::Marked || !st.sizes.contains_key(&p.id) {
            continue;
        }
        // Stored bytes of the blobs this pack is the home of, and of the others.
        let (mut u, mut unused) = (0u64, 0u64);
        for (j, b) in p.blobs.iter().enumerate() {
            if used.blobs.contains(&b.id) && cat.home.get(&b.id) == Some(&(i as u32, j as u32)) {
                u += b.length as u64;
            } else {
                unused += b.length as u64;
            }
        }
        if u == 0 {
            delete.push(i);
            bytes_unused += unused;
        } else {
            bytes_used += u;
            bytes_unused += unused;
            if unused > 0 {
                partial.push((i, u, unused));
            }
        }
    }
    // Repack the packs with the largest share of unused bytes first, until what stays
    // unused in kept packs is within the tolerance.
    partial.sort_by(|a, b| {
        let fa = a.2 as f64 / (a.1 + a.2) as f64;
        let fb = b.2 as f64 / (b.1 + b.2) as f64;
        fb.total_cmp(&fa).then(a.0.cmp(&b.0))
    });
    let mut remaining_unused: u64 = partial.iter().map(|p| p.2).sum();
    let allowed = (opts.max_unused.max(0.0) * bytes_used as f64) as u64;
    let mut repack = Vec::new();
    let mut repack_bytes = 0u64;
    let mut repack_blobs = 0usize;
    for (i, u, unused) in partial {
        if remaining_unused <= allowed {
            break;
        }
        if opts.max_repack_bytes.is_some_and(|m| repack_bytes + u > m) {
            continue;
        }
        repack_bytes += u;
        remaining_unused -= unused;
        repack_blobs += cat.packs[i]
            .blobs
            .iter()
            .enumerate()
            .filter(|(j, b)| used.blobs.contains(&b.id) && cat.home.get(&b.id) == Some(&(i as u32, *j as u32)))
            .count();
        repack.push(i);
    }
    Plan { delete, repack, repack_blobs, bytes_used, bytes_unused }
}

/// Copies the referenced blobs of the packs to repack into new packs (decrypted and
/// sealed again under a new pack key; never decompressed), uploads them, and returns them.
fn repack(repo: &Repository, st: &State, used: &Used, plan: &Plan, r: &mut PruneReport) -> Result<Vec<IndexedPack>> {
    let cat = &st.catalog;
    let target = repo.config().pack_size as usize;
    let mut out = Vec::new();
    let mut packers: [Option<Packer>; 2] = [None, None];
    let flush = |p: Packer, out: &mut Vec<IndexedPack>, r: &mut PruneReport| -> Result<()> {
        let f = p.finish()?;
        r.bytes_repack_written += f.data.len() as u64;
        match repo.block_on(repo.store().put(&layout::pack(&f.id), f.data, PutMode::Create)) {
            Err(e) if e.kind() == cairn_store::ErrorKind::AlreadyExists => {}
            res => res?,
        }
        out.push(IndexedPack { id: f.id, salt: f.salt, blobs: f.entries });
        Ok(())
    };
    for &i in &plan.repack {
        let p = &cat.packs[i];
        let data = repo.read_pack(p.id)?;
        if Id(cairn_crypto::content_hash(&data)) != p.id.0 {
            return Err(Error::BadPack {
                pack: p.id,
                detail: "content does not match its name; not repacking it (run 'cairn check --read-data')".into(),
            });
        }
        let key = repo.master().object_key(&p.salt);
        for (j, b) in p.blobs.iter().enumerate() {
            if cat.home.get(&b.id) != Some(&(i as u32, j as u32)) {
                continue;
            }
            // Unreferenced blobs are dropped here; referenced ones move.
            if !used.blobs.contains(&b.id) {
                continue;
            }
            let (s, e) = (b.offset as usize, b.offset as usize + b.length as usize);
            let mut ct = data
                .get(s..e)
                .ok_or_else(|| Error::BadPack { pack: p.id, detail: "blob beyond the end".into() })?
                .to_vec();
            let n = key
                .open_in_place(cairn_crypto::offset_nonce(b.offset as u64), &mut ct)
                .map_err(|err| Error::Damaged { what: "blob", id: b.id.to_hex(), detail: err.to_string() })?;
            ct.truncate(n);
            let slot = &mut packers[if b.kind == BlobType::Tree { 1 } else { 0 }];
            if slot.as_ref().is_some_and(|k| !k.is_empty() && k.len() + ct.len() + 16 > target) {
                if let Some(k) = slot.take() {
                    flush(k, &mut out, r)?;
                }
            }
            if slot.is_none() {
                *slot = Some(Packer::new(repo.master(), b.kind, target)?);
            }
            if let Some(k) = slot.as_mut() {
                k.add_with(b.id, b.raw_length, |buf| buf.extend_from_slice(&ct))?;
            }
        }
    }
    for k in packers.into_iter().flatten() {
        if !k.is_empty() {
            flush(k, &mut out, r)?;
        }
    }
    Ok(out)
}

/// Writes one index for every kept pack (indexed, adopted, and the new repacked ones),
/// superseding every index file read, then deletes those files. Files are written so that
/// the one carrying `supersedes` comes last: a reader never sees a kept pack unindexed.
fn consolidate(
    repo: &Repository,
    st: &State,
    plan: &Plan,
    new_packs: Vec<IndexedPack>,
    swept: &HashSet<PackId>,
    r: &mut PruneReport,
) -> Result<()> {
    const BLOBS_PER_FILE: usize = 200_000;
    let gone: HashSet<usize> = plan.delete.iter().chain(&plan.repack).copied().collect();
    let mut packs: Vec<IndexedPack> = st
        .catalog
        .packs
        .iter()
        .enumerate()
        .filter(|(i, p)| {
            p.source != Source::Marked && !gone.contains(i) && !swept.contains(&p.id) && st.sizes.contains_key(&p.id)
        })
        .map(|(_, p)| IndexedPack { id: p.id, salt: p.salt, blobs: p.blobs.clone() })
        .collect();
    packs.extend(new_packs);
    let mut files: Vec<IndexFile> = Vec::new();
    let mut cur = IndexFile::default();
    let mut n = 0;
    for p in packs {
        n += p.blobs.len();
        cur.packs.push(p);
        if n >= BLOBS_PER_FILE {
            files.push(std::mem::take(&mut cur));
            n = 0;
        }
    }
    files.push(cur);
    let last = files.pop().unwrap_or_default();
    let mut written = HashSet::new();
    for f in &files {
        written.insert(repo.save_index(f)?);
        r.index_files_written += 1;
    }
    // A file written now can have the content, hence the name, of one read before: it must
    // be neither superseded nor deleted.
    let old: Vec<IndexId> = st.index_ids.iter().filter(|id| !written.contains(id)).copied().collect();
    written.insert(repo.save_index(&IndexFile { supersedes: old.clone(), packs: last.packs })?);
    r.index_files_written += 1;
    let now = unix_now();
    for id in old.iter().filter(|id| !written.contains(id)) {
        // A superseded file is ignored by readers; a locked one is deleted by a later prune.
        if repo.locked_until(st.index_modified.get(id).copied().flatten(), now).is_some() {
            r.index_files_locked += 1;
            continue;
        }
        repo.block_on(repo.store().delete(&layout::index(id)))?;
        r.index_files_deleted += 1;
    }
    Ok(())
}

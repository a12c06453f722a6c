//! `check`: is every snapshot restorable? Structure first (index vs packs, pack headers,
//! trees reachable and every referenced blob indexed), then optionally the data of all or
//! a subset of packs. Findings name the damaged pack or blob and what depends on it.

use std::collections::{BTreeMap, HashMap, HashSet};

use cairn_format::pack::BlobEntry;
use cairn_format::tree::NodeKind;
use cairn_format::{BlobId, PackId, SnapshotId, TreeId};

use crate::{layout, Index, Repository, Result};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ReadData {
    None,
    All,
    /// Packs whose position in id order `i` satisfies `i % m == k - 1`.
    Subset {
        k: u32,
        m: u32,
    },
    /// A random fraction (0..=1] of packs, chosen by pack id order from a random start.
    Percent(f64),
}

#[derive(Debug, Default)]
pub struct CheckReport {
    pub snapshots: usize,
    pub packs: usize,
    pub packs_read: usize,
    pub blobs: usize,
    /// Problems that make data unrestorable or the repository inconsistent.
    pub errors: Vec<String>,
    /// Harmless findings (unreferenced packs awaiting prune).
    pub warnings: Vec<String>,
    /// Damaged blobs and where they were found.
    pub damaged_blobs: BTreeMap<BlobId, String>,
    pub damaged_packs: Vec<PackId>,
    /// "snapshot id: path" entries that depend on damaged or missing blobs.
    pub affected: Vec<String>,
}

impl CheckReport {
    pub fn is_clean(&self) -> bool {
        self.errors.is_empty()
    }
}

pub fn check(repo: &Repository, read_data: ReadData) -> Result<CheckReport> {
    check_metered(repo, read_data, &crate::Meter::default())
}

/// [`check`], counting the packs whose data it reads (and their bytes) on `meter`.
pub fn check_metered(repo: &Repository, read_data: ReadData, meter: &crate::Meter) -> Result<CheckReport> {
    let mut r = CheckReport::default();
    // Snapshots first: each is written after the index files and packs it needs, so a
    // backup finishing during the check cannot make its blobs look missing.
    // A damaged snapshot is an error; the others are still checked.
    let snaps = match repo.list_snapshots_lenient() {
        Ok(list) => {
            for (id, why) in &list.damaged {
                r.errors.push(format!("snapshot {} is damaged: {why}", id.short()));
            }
            list.snapshots
        }
        Err(e) => {
            r.errors.push(format!("snapshots: {e}"));
            Vec::new()
        }
    };
    let mut files = Vec::new();
    for attempt in 0..5 {
        files.clear();
        r.errors.retain(|e| !e.starts_with("index file "));
        let mut gone = false;
        for id in repo.list_index_ids()? {
            match repo.load_index_file(id) {
                Ok(f) => files.push((id, f)),
                // Replaced by a prune's consolidated index meanwhile: list again.
                Err(crate::Error::Store(e)) if e.is_not_found() && attempt < 4 => gone = true,
                Err(e) => r.errors.push(format!("index file {}: {e}", id.short())),
            }
        }
        if !gone {
            break;
        }
    }
    // Superseded files may name packs that prune has taken out of the index: skip them.
    let superseded: HashSet<cairn_format::IndexId> =
        files.iter().flat_map(|(_, f)| f.supersedes.iter().copied()).collect();
    let mut index = Index::from_files(files.iter().filter(|(id, _)| !superseded.contains(id)).map(|(_, f)| f));
    r.blobs = index.blob_count();
    // Packs on the store vs packs in the index.
    let listed: HashMap<PackId, u64> = repo
        .block_on(repo.store().list(layout::DATA))?
        .into_iter()
        .filter_map(|m| layout::id_of(&m.path).map(|i| (PackId(i), m.size)))
        .collect();
    r.packs = listed.len();
    let mut expected: HashMap<PackId, Vec<(BlobId, crate::Location)>> = HashMap::new();
    for (id, loc) in index.iter() {
        expected.entry(index.pack(loc.pack).0).or_default().push((*id, *loc));
    }
    let mut missing_blobs: HashSet<BlobId> = HashSet::new();
    for (pack, blobs) in &expected {
        if !listed.contains_key(pack) {
            r.errors.push(format!("pack {} is in the index but missing from the repository", pack.short()));
            r.damaged_packs.push(*pack);
            for (b, _) in blobs {
                missing_blobs.insert(*b);
                r.damaged_blobs.insert(*b, format!("in missing pack {}", pack.short()));
            }
        }
    }
    let marked = repo.marked_packs().unwrap_or_default();
    let mut awaiting = 0;
    for p in listed.keys() {
        if marked.contains(p) && !index.has_pack(p) {
            awaiting += 1;
        } else if !index.has_pack(p) {
            r.warnings.push(format!("pack {} is not indexed (left by an interrupted backup; the next backup adopts it, prune removes it if unused)", p.short()));
        }
    }
    if awaiting > 0 {
        r.warnings.push(format!("{awaiting} packs are marked for deletion by prune and wait for their grace period"));
        // A snapshot saved while that prune ran may use blobs only these packs hold; the
        // sweep indexes such packs again instead of deleting them (format.md §13.2), so
        // they count as present. Their headers and data are checked like indexed packs.
        for p in listed.keys().filter(|p| marked.contains(p) && !index.has_pack(p)).copied().collect::<Vec<_>>() {
            match repo.read_pack_header(p) {
                Ok((salt, entries)) => {
                    for e in &entries {
                        let loc = crate::Location {
                            pack: 0,
                            offset: e.offset,
                            length: e.length,
                            raw_length: e.raw_length,
                            kind: e.kind,
                        };
                        expected.entry(p).or_default().push((e.id, loc));
                    }
                    index.add_pack(p, salt, &entries);
                }
                Err(e) => r.warnings.push(format!("pack {} (marked for deletion): {e}", p.short())),
            }
        }
    }
    let salts: HashMap<PackId, [u8; 32]> = index.packs().copied().collect();
    // Headers of every indexed pack (cheap: two ranged reads each) agree with the index.
    // Every pack an index file names, also one whose blobs all have their home copy in
    // another pack: its header and data are checked too, or damage there would go unseen.
    let mut sorted: Vec<PackId> = salts.keys().filter(|p| listed.contains_key(p)).copied().collect();
    sorted.sort();
    let mut headers: HashMap<PackId, Vec<(BlobId, crate::Location)>> = HashMap::new();
    let no_blobs = Vec::new();
    for p in &sorted {
        match repo.read_pack_header(*p) {
            Ok((salt, entries)) => {
                let all = entries
                    .iter()
                    .map(|e| {
                        let loc = crate::Location {
                            pack: 0,
                            offset: e.offset,
                            length: e.length,
                            raw_length: e.raw_length,
                            kind: e.kind,
                        };
                        (e.id, loc)
                    })
                    .collect();
                headers.insert(*p, all);
                if salts.get(p) != Some(&salt) {
                    r.errors
                        .push(format!("pack {}: the index records another key salt than the pack holds", p.short()));
                    r.damaged_packs.push(*p);
                }
                let hdr: HashMap<BlobId, BlobEntry> = entries.into_iter().map(|e| (e.id, e)).collect();
                for (b, loc) in expected.get(p).unwrap_or(&no_blobs) {
                    match hdr.get(b) {
                        Some(e)
                            if e.offset == loc.offset
                                && e.length == loc.length
                                && e.kind == loc.kind
                                && e.raw_length == loc.raw_length => {}
                        _ => {
                            r.errors.push(format!(
                                "pack {}: header disagrees with the index for blob {}",
                                p.short(),
                                b.0.to_hex()
                            ));
                            r.damaged_blobs.insert(*b, format!("index/header mismatch in pack {}", p.short()));
                        }
                    }
                }
            }
            Err(e) => {
                r.errors.push(format!("pack {}: {e}", p.short()));
                r.damaged_packs.push(*p);
                for (b, _) in expected.get(p).unwrap_or(&no_blobs) {
                    r.damaged_blobs.insert(*b, format!("pack {} header unreadable", p.short()));
                }
            }
        }
    }
    // Data.
    let chosen: Vec<PackId> = match read_data {
        ReadData::None => Vec::new(),
        ReadData::All => sorted.clone(),
        ReadData::Subset { k, m } => {
            sorted.iter().enumerate().filter(|(i, _)| (*i as u32) % m == k - 1).map(|(_, p)| *p).collect()
        }
        ReadData::Percent(f) => {
            let n = ((sorted.len() as f64) * f).ceil() as usize;
            let start =
                u64::from_le_bytes(cairn_crypto::random_array().unwrap_or([0; 8])) as usize % sorted.len().max(1);
            (0..n.min(sorted.len())).map(|i| sorted[(start + i) % sorted.len()]).collect()
        }
    };
    meter.plan(chosen.len() as u64, chosen.iter().map(|p| listed.get(p).copied().unwrap_or(0)).sum());
    // The snapshots' trees are walked while the packs are read: on 2 cores the walk alone
    // took a quarter of a clean check's time (3,000 trees, 0.45 s of 1.9) after the data,
    // with one core idle. It knows the damage found so far (missing packs, headers); if
    // the data turns up more, it is walked again below, so that every path the new
    // damage reaches is named. A clean repository, the common case, walks once.
    // The packs are read on one thread more than the cores (up to 8, never fewer than the
    // cores): one reads from the disk or the network while the others decrypt, decompress
    // and hash (on 2 cores, cold: 3 workers 1.2 s / 1.7 s for a 48k-file tree / a 2 GiB
    // file, against 1.3 / 1.9 with 2). The walk's thread is one of them: it reads packs
    // once the trees are walked, so the walk and the packs together hold no more memory
    // than the packs did alone (each worker holds a pack; a fourth: +25 MiB).
    let known_bad: HashSet<BlobId> = missing_blobs.iter().chain(r.damaged_blobs.keys()).copied().collect();
    let queue = std::sync::Mutex::new(chosen.iter());
    let results = std::sync::Mutex::new(Vec::new());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let threads = cores.max((cores + 1).min(8)).max(2);
    let read_packs = || loop {
        let next = queue.lock().unwrap_or_else(|p| p.into_inner()).next().copied();
        let Some(p) = next else { break };
        // Every blob the header lists (the index's home copies are among them, checked
        // against the header above); the index's view if the header is unreadable.
        let blobs = headers.get(&p).or_else(|| expected.get(&p)).unwrap_or(&no_blobs);
        let out = read_pack_data(repo, p, blobs, salts.get(&p));
        meter.done(1, listed.get(&p).copied().unwrap_or(0));
        results.lock().unwrap_or_else(|p| p.into_inner()).push((p, out));
    };
    let walked = std::thread::scope(|s| {
        let walker = spawn_walk(s, repo, &index, &snaps, &known_bad, &read_packs);
        for _ in 1..threads {
            s.spawn(read_packs);
        }
        walker.and_then(join_walk)
    });
    let mut results = results.into_inner().unwrap_or_else(|p| p.into_inner());
    results.sort_by_key(|(p, _)| *p);
    for (p, (errors, blobs)) in results {
        r.packs_read += 1;
        if !errors.is_empty() {
            r.damaged_packs.push(p);
        }
        r.errors.extend(errors);
        // A damaged second copy is the pack's damage (reported above); the blob itself
        // is damaged only where its home copy is, which is the one restores read.
        for b in blobs.into_iter().filter(|b| index.get(b).map(|l| index.pack(l.pack).0) == Some(p)) {
            r.damaged_blobs.insert(b, format!("damaged in pack {}", p.short()));
        }
    }
    r.damaged_packs.sort();
    r.damaged_packs.dedup();
    // Snapshots: every tree loads, every referenced blob is indexed and not damaged.
    r.snapshots = snaps.len();
    let bad: HashSet<BlobId> = missing_blobs.iter().chain(r.damaged_blobs.keys()).copied().collect();
    let walked = if bad == known_bad {
        walked?
    } else {
        std::thread::scope(|s| spawn_walk(s, repo, &index, &snaps, &bad, &|| {}).and_then(join_walk))?
    };
    r.errors.extend(walked.errors);
    r.affected.extend(walked.affected);
    Ok(r)
}

/// What the walk of the snapshots' trees found.
#[derive(Default)]
struct Walked {
    errors: Vec<String>,
    affected: Vec<String>,
}

/// Walks every snapshot's trees on a thread of its own (the walk recurses up to
/// [`MAX_DEPTH`] levels and needs a stack with room for that), which then does `then`.
fn spawn_walk<'scope, 'env>(
    s: &'scope std::thread::Scope<'scope, 'env>,
    repo: &'env Repository,
    index: &'env Index,
    snaps: &'env [(SnapshotId, cairn_format::snapshot::Snapshot)],
    bad: &'env HashSet<BlobId>,
    then: &'env (dyn Fn() + Sync),
) -> Result<std::thread::ScopedJoinHandle<'scope, Walked>> {
    std::thread::Builder::new()
        .name("check-walk".into())
        .stack_size(WALK_STACK)
        .spawn_scoped(s, move || {
            let mut out = Walked::default();
            let mut seen_trees: HashMap<TreeId, bool> = HashMap::new();
            for (sid, snap) in snaps {
                let mut walked = HashSet::new();
                let mut seen = Seen { all: &mut seen_trees, this_snapshot: &mut walked };
                walk(repo, index, &mut out, &mut seen, *sid, snap.tree, String::new(), bad, 0);
            }
            then();
            out
        })
        .map_err(|e| crate::Error::Internal(format!("starting the check's tree walk: {e}")))
}

fn join_walk(h: std::thread::ScopedJoinHandle<'_, Walked>) -> Result<Walked> {
    h.join().map_err(|_| crate::Error::Internal("the check's tree walk panicked".into()))
}

/// Reads one pack whole and authenticates every indexed blob in it: the errors, and the
/// blobs that are damaged.
fn read_pack_data(
    repo: &Repository,
    p: PackId,
    blobs: &[(BlobId, crate::Location)],
    salt: Option<&[u8; 32]>,
) -> (Vec<String>, Vec<BlobId>) {
    let mut errors = Vec::new();
    let mut damaged = Vec::new();
    let mut data = match repo.read_pack(p) {
        Ok(d) => d,
        Err(e) => {
            errors.push(format!("pack {}: {e}", p.short()));
            return (errors, blobs.iter().map(|(b, _)| *b).collect());
        }
    };
    if cairn_crypto::content_hash(&data) != p.0 .0 {
        errors.push(format!("pack {}: content does not match its name", p.short()));
    }
    let salt = salt.copied().unwrap_or([0; 32]);
    for (b, loc) in blobs {
        let (s, e) = (loc.offset as usize, loc.offset as usize + loc.length as usize);
        let res = match data.get_mut(s..e) {
            Some(ct) => repo.open_blob_in(b, &salt, loc.offset, loc.raw_length, ct).map(drop),
            None => Err(crate::Error::Invalid("beyond the end of the pack".into())),
        };
        if let Err(err) = res {
            errors.push(format!("pack {}: blob {} is damaged: {}", p.short(), b.0.to_hex(), short_err(&err)));
            damaged.push(*b);
        }
    }
    (errors, damaged)
}

fn short_err(e: &crate::Error) -> String {
    match e {
        crate::Error::Damaged { detail, .. } => detail.clone(),
        e => e.to_string(),
    }
}

/// Deeper trees than this are refused rather than overflowing the stack (hostile trees).
pub const MAX_DEPTH: usize = 4096;

/// Stack for walks that recurse up to [`MAX_DEPTH`] levels (reserved, not committed:
/// only what a deep tree really uses is touched).
pub const WALK_STACK: usize = 256 << 20;

/// Trees already walked: across snapshots with their result (a clean one is clean in
/// every snapshot; one with damage below is walked again once per snapshot, so that each
/// snapshot's affected paths are named), and within this snapshot (never twice: shared
/// subtrees would otherwise make a hostile DAG cost exponential time).
struct Seen<'a> {
    all: &'a mut HashMap<TreeId, bool>,
    this_snapshot: &'a mut HashSet<TreeId>,
}

#[allow(clippy::too_many_arguments)]
fn walk(
    repo: &Repository,
    index: &Index,
    r: &mut Walked,
    seen: &mut Seen<'_>,
    sid: SnapshotId,
    tree: TreeId,
    path: String,
    damaged: &HashSet<BlobId>,
    depth: usize,
) -> bool {
    let bad = |b: &BlobId| !index.contains(b) || damaged.contains(b);
    if bad(&tree.blob()) {
        r.errors.push(format!(
            "snapshot {}: tree {} at {} is missing or damaged",
            sid.short(),
            tree.short(),
            if path.is_empty() { "/" } else { &path }
        ));
        r.affected.push(format!("{}:{}/", sid.short(), path));
        return false;
    }
    if seen.all.get(&tree) == Some(&true) {
        return true;
    }
    if !seen.this_snapshot.insert(tree) {
        // Damaged below, and already reported for this snapshot (at its first path).
        return seen.all.get(&tree).copied().unwrap_or(false);
    }
    if depth > MAX_DEPTH {
        r.errors.push(format!("snapshot {}: trees nested deeper than {MAX_DEPTH} at {path}", sid.short()));
        return false;
    }
    let t = match repo.load_tree_uncached(index, tree) {
        Ok(t) => t,
        Err(e) => {
            r.errors.push(format!(
                "snapshot {}: tree at {}: {e}",
                sid.short(),
                if path.is_empty() { "/" } else { &path }
            ));
            return false;
        }
    };
    let mut clean = true;
    for n in &t.nodes {
        let p = format!("{path}/{}", n.name.lossy());
        match n.kind {
            NodeKind::Dir => match n.subtree {
                Some(st) => clean &= walk(repo, index, r, seen, sid, st, p, damaged, depth + 1),
                None => {
                    clean = false;
                    r.errors.push(format!("snapshot {}: directory {p} has no subtree", sid.short()))
                }
            },
            NodeKind::File => {
                let broken: Vec<&BlobId> = n.content.iter().filter(|b| bad(b)).collect();
                if broken.is_empty() {
                    // Restore refuses a file whose blobs do not add up to its size.
                    let held: u64 = n.content.iter().filter_map(|b| index.get(b)).map(|l| l.raw_length as u64).sum();
                    if held != n.size {
                        r.errors.push(format!(
                            "snapshot {}: {p}: the tree says {} bytes but its content holds {held}",
                            sid.short(),
                            n.size
                        ));
                        r.affected.push(format!("{}:{p}", sid.short()));
                        clean = false;
                    }
                }
                if !broken.is_empty() {
                    for b in &broken {
                        if !index.contains(b) {
                            r.errors.push(format!(
                                "snapshot {}: {p}: blob {} is not indexed",
                                sid.short(),
                                b.0.to_hex()
                            ));
                        }
                    }
                    r.affected.push(format!("{}:{p}", sid.short()));
                    clean = false;
                }
            }
            _ => {}
        }
    }
    seen.all.insert(tree, clean);
    clean
}

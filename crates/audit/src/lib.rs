//! The audit log kept in the repository (format.md §12.3): who did what to it, when, with
//! what outcome, in a form that shows tampering.
//!
//! Design notes:
//! - Each writer appends to its own chain (one per host): segments at
//!   `audit/<repository id>/<chain>/<seq>`, sealed as named objects (the path is associated
//!   data, so a segment moved to another name, or copied in from another repository, does
//!   not open) and stored create-only, under object lock where the repository has one.
//! - A segment names the previous one by the BLAKE3 hash of its plaintext, and numbers its
//!   records on from it: a changed, removed, inserted or reordered segment breaks the chain
//!   at the next one, even for someone who holds the key and re-seals.
//! - Cutting a chain's tail leaves nothing broken in the chain itself; what catches it is an
//!   anchor: every snapshot records its writer's head when written, and each host keeps its
//!   own last head in its cache. A cut below an anchor is reported.
//! - Appending is a create-only put at `head + 1`: two processes of one host (a daemon and
//!   a CLI command) race for the name, the loser rereads the head and tries the next. The
//!   head comes from the local cache when it is current, so an append costs one put.
//! - Records go to the repository that was acted on, so the log is off the host and as
//!   immutable as the backups; `cairn copy` carries every chain to the copy unchanged.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cairn_format::audit::{Actor, Anchor, Record, Segment};
use cairn_format::id::to_hex;
use cairn_repo::Repository;
use cairn_store::{ErrorKind, PutMode};

pub use cairn_format::audit::{chain_for_host, Target};

/// Where segments live.
pub const PREFIX: &str = "audit";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Repo(#[from] cairn_repo::Error),
    #[error("audit chain {chain}: its head ({path}) cannot be read ({detail}); `cairn audit verify` says more")]
    Head { chain: String, path: String, detail: String },
    #[error("audit chain {chain}: other writers took every place tried ({tries} tries)")]
    Contended { chain: String, tries: u32 },
}

pub type Result<T> = std::result::Result<T, Error>;

/// The object that holds segment `seq` of `chain`, written in repository `repo_id`.
pub fn segment_path(repo_id: &str, chain: &str, seq: u64) -> String {
    format!("{PREFIX}/{repo_id}/{chain}/{seq:020}")
}

/// `(repository id, chain, seq)` of a segment's path; `None` for anything else.
pub fn parse_path(path: &str) -> Option<(String, String, u64)> {
    let mut it = path.split('/');
    let (p, r, c, s) = (it.next()?, it.next()?, it.next()?, it.next()?);
    if it.next().is_some() || p != PREFIX || cairn_format::Id::from_hex(r).is_none() {
        return None;
    }
    if !cairn_format::audit::is_chain_name(c) || s.len() != 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((r.to_string(), c.to_string(), s.parse().ok()?))
}

/// The actor for an action of this process (`via`: `cli` or `daemon`).
pub fn local_actor(via: &str) -> Actor {
    let (uid, _, user) = cairn_fs::current_user();
    Actor { user, uid: Some(uid), host: cairn_fs::hostname(), via: via.into(), token: None, address: None }
}

/// A record of `action` on `target` that ended now.
pub fn record(actor: &Actor, action: &str, target: Target, outcome: &str, message: Option<String>) -> Record {
    Record {
        time: jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
        actor: actor.clone(),
        action: action.into(),
        target,
        outcome: outcome.into(),
        reason: None,
        message,
        expired: Vec::new(),
    }
}

/// A chain's last segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub seq: u64,
    pub hash: [u8; 32],
    /// The number the next record gets.
    pub next: u64,
}

/// Appends to one chain of one repository.
pub struct Writer {
    chain: String,
    /// Where this host remembers its heads (`<cache>/<repository id>/<chain>`).
    cache: Option<PathBuf>,
}

impl Writer {
    /// The chain named after `host`; heads remembered below `cache` when given.
    pub fn new(host: &str, cache: Option<PathBuf>) -> Writer {
        Writer { chain: chain_for_host(host), cache }
    }

    pub fn chain(&self) -> &str {
        &self.chain
    }

    fn cache_file(&self, repo: &Repository) -> Option<PathBuf> {
        Some(self.cache.as_ref()?.join(&repo.config().id).join(&self.chain))
    }

    /// The head this host last wrote or saw, from its cache (not checked against the
    /// repository: that is what `verify` compares it with).
    pub fn remembered(&self, repo: &Repository) -> Option<Head> {
        let text = std::fs::read_to_string(self.cache_file(repo)?).ok()?;
        let mut it = text.split_whitespace();
        let seq = it.next()?.parse().ok()?;
        let hash = cairn_format::Id::from_hex(it.next()?)?.0;
        let next = it.next()?.parse().ok()?;
        Some(Head { seq, hash, next })
    }

    fn remember(&self, repo: &Repository, h: &Head) {
        // Best effort: without it the next append lists the chain, and verify has one
        // anchor less. Only forward: two writers of one host finish in any order, and the
        // newest head is the stronger anchor.
        if self.remembered(repo).is_some_and(|old| old.seq >= h.seq) {
            return;
        }
        if let Some(f) = self.cache_file(repo) {
            if let Some(dir) = f.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            // A name of this writer's own: threads and processes of a host write at once.
            static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            // Starting with a dot, it is never taken for a chain (see `remembered_anchors`).
            let tmp = f.with_file_name(format!(".{}.tmp-{}-{n}", self.chain, std::process::id()));
            if std::fs::write(&tmp, format!("{} {} {}\n", h.seq, to_hex(&h.hash), h.next)).is_ok() {
                let _ = std::fs::rename(&tmp, &f);
            }
        }
    }

    /// The chain's head as the repository has it (lists the chain, reads its last segment).
    pub fn head(&self, repo: &Repository) -> Result<Option<Head>> {
        let id = &repo.config().id;
        let dir = format!("{PREFIX}/{id}/{}", self.chain);
        let listed = repo.block_on(repo.store().list(&dir)).map_err(cairn_repo::Error::from)?;
        let Some(seq) = listed.iter().filter_map(|m| parse_path(&m.path)).map(|(_, _, s)| s).max() else {
            return Ok(None);
        };
        let path = segment_path(id, &self.chain, seq);
        let bad = |detail: String| Error::Head { chain: self.chain.clone(), path: path.clone(), detail };
        let plain = repo.get_named(&path, cairn_format::audit::MAX_SEGMENT).map_err(|e| bad(e.to_string()))?;
        let seg = Segment::decode(&plain).map_err(|e| bad(e.to_string()))?;
        let h = Head { seq, hash: cairn_crypto::content_hash(&plain), next: seg.first + seg.records.len() as u64 };
        self.remember(repo, &h);
        Ok(Some(h))
    }

    /// The anchor a snapshot written now records: the chain's current head, or `None`
    /// for a chain not started yet.
    pub fn anchor(&self, repo: &Repository) -> Result<Option<Anchor>> {
        // The remembered head is current if it is still there and nothing follows it: two
        // HEAD requests instead of listing a chain that grows by one segment per job.
        if let Some(h) = self.remembered(repo) {
            let id = &repo.config().id;
            let exists = |seq: u64| repo.block_on(repo.store().head(&segment_path(id, &self.chain, seq)));
            if exists(h.seq).is_ok() && exists(h.seq.saturating_add(1)).is_err_and(|e| e.kind() == ErrorKind::NotFound)
            {
                return Ok(Some(self.anchor_of(repo, &h)));
            }
        }
        Ok(self.head(repo)?.map(|h| self.anchor_of(repo, &h)))
    }

    fn anchor_of(&self, repo: &Repository, h: &Head) -> Anchor {
        Anchor { repository: repo.config().id.clone(), chain: self.chain.clone(), seq: h.seq, hash: to_hex(&h.hash) }
    }

    /// Appends `records` as one segment; returns the new head.
    pub fn append(&self, repo: &Repository, records: Vec<Record>) -> Result<Anchor> {
        let id = repo.config().id.clone();
        let mut head = match self.remembered(repo) {
            // Current unless another process of this host wrote since (then the put below
            // finds the name taken and the chain is listed).
            Some(h) => Some(h),
            None => self.head(repo)?,
        };
        const TRIES: u32 = 20;
        for _ in 0..TRIES {
            let seg = Segment {
                version: cairn_format::magic::AUDIT_VERSION,
                repository: id.clone(),
                chain: self.chain.clone(),
                seq: head.as_ref().map_or(0, |h| h.seq + 1),
                first: head.as_ref().map_or(0, |h| h.next),
                prev: head.as_ref().map(|h| to_hex(&h.hash)),
                records: records.clone(),
            };
            let bytes = seg.encode();
            match repo.put_named(&segment_path(&id, &self.chain, seg.seq), &[&bytes], 3, PutMode::Create) {
                Ok(()) => {
                    let h = Head {
                        seq: seg.seq,
                        hash: cairn_crypto::content_hash(&bytes),
                        next: seg.first + records.len() as u64,
                    };
                    self.remember(repo, &h);
                    return Ok(self.anchor_of(repo, &h));
                }
                Err(e) if e.store_kind() == Some(ErrorKind::AlreadyExists) => head = self.head(repo)?,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Contended { chain: self.chain.clone(), tries: TRIES })
    }
}

/// One object under `audit/` as read.
#[derive(Debug)]
pub struct Loaded {
    pub path: String,
    /// The segment and the hash of its plaintext, or why it could not be read. Without
    /// its records when loaded for verification only (see [`load`]).
    pub segment: std::result::Result<(Segment, [u8; 32]), String>,
    /// How many records the segment holds.
    pub count: u64,
    /// The retention records' word on where chains begin (kept when records are dropped).
    pub expiries: Vec<cairn_format::audit::Expiry>,
}

/// Every object under `audit/`, read and decoded (in parallel), in path order. With
/// `records` false each segment's records are dropped once counted, so verifying a log of
/// millions of records holds only one small entry per segment.
pub fn load(repo: &Repository, records: bool) -> Result<Vec<Loaded>> {
    let mut listed: Vec<String> = repo
        .block_on(repo.store().list(PREFIX))
        .map_err(cairn_repo::Error::from)?
        .into_iter()
        .map(|m| m.path)
        .collect();
    listed.sort();
    let read = |path: &String| -> std::result::Result<(Segment, [u8; 32]), String> {
        if parse_path(path).is_none() {
            return Err("not the name of an audit segment".into());
        }
        let plain = repo.get_named(path, cairn_format::audit::MAX_SEGMENT).map_err(|e| match e {
            cairn_repo::Error::Damaged { .. } => {
                "does not open under this name and key: changed, moved from another name, or copied from another repository".to_string()
            }
            e => e.to_string(),
        })?;
        let seg = Segment::decode(&plain).map_err(|e| format!("opens, but is not a valid segment: {e}"))?;
        Ok((seg, cairn_crypto::content_hash(&plain)))
    };
    let threads = 8.min(listed.len().max(1));
    let chunk = listed.len().div_ceil(threads).max(1);
    let mut out: Vec<Loaded> = Vec::with_capacity(listed.len());
    std::thread::scope(|s| {
        let handles: Vec<_> = listed
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(|p| {
                            let mut segment = read(p);
                            let count = segment.as_ref().map_or(0, |(s, _)| s.records.len() as u64);
                            let expiries = segment
                                .as_ref()
                                .map(|(s, _)| s.records.iter().flat_map(|r| r.expired.iter().cloned()).collect())
                                .unwrap_or_default();
                            if let (false, Ok((s, _))) = (records, &mut segment) {
                                s.records = Vec::new();
                            }
                            Loaded { path: p.clone(), segment, count, expiries }
                        })
                        .collect()
                })
            })
            .collect();
        for h in handles {
            let part: Vec<Loaded> = h.join().unwrap_or_default();
            out.extend(part);
        }
    });
    Ok(out)
}

/// A record with its place: which chain and number.
#[derive(Debug, Clone)]
pub struct Placed {
    pub repository: String,
    pub chain: String,
    pub n: u64,
    pub record: Record,
}

/// The records of every readable segment, oldest first.
pub fn records(loaded: &[Loaded]) -> Vec<Placed> {
    let mut out = Vec::new();
    for l in loaded {
        if let Ok((seg, _)) = &l.segment {
            for (i, r) in seg.records.iter().enumerate() {
                out.push(Placed {
                    repository: seg.repository.clone(),
                    chain: seg.chain.clone(),
                    n: seg.first + i as u64,
                    record: r.clone(),
                });
            }
        }
    }
    out.sort_by(|a, b| a.record.time.cmp(&b.record.time).then(a.n.cmp(&b.n)));
    out
}

/// Where an anchor comes from, for the message that names a cut.
#[derive(Debug, Clone)]
pub struct Witness {
    /// e.g. `snapshot 1a2b3c4d` or `this host's cache`.
    pub by: String,
    pub anchor: Anchor,
}

/// What `verify` found.
#[derive(Debug, Default)]
pub struct Report {
    pub chains: usize,
    pub segments: usize,
    pub records: u64,
    /// One line each, naming the segment (and records) concerned.
    pub findings: Vec<String>,
}

/// `(repository id, chain)`.
type ChainKey = (String, String);
/// A readable segment: its path, the segment, the hash of its plaintext, its record count.
type Found<'a> = (&'a str, &'a Segment, [u8; 32], u64);

/// Checks every chain: each segment opens at its name, says what its name says, follows
/// the one before (hash and record numbers) with none missing from 0 on, and every anchor
/// `witnesses` hold is still in its chain with the hash it recorded.
pub fn verify(loaded: &[Loaded], witnesses: &[Witness]) -> Report {
    let mut r = Report::default();
    // (repository, chain) -> seq -> (path, segment, hash)
    let mut chains: BTreeMap<ChainKey, BTreeMap<u64, Found<'_>>> = BTreeMap::new();
    // Segments present but unreadable (reported once, not again as missing).
    let mut unreadable: BTreeMap<ChainKey, std::collections::BTreeSet<u64>> = BTreeMap::new();
    for l in loaded {
        let Some((rid, chain, seq)) = parse_path(&l.path) else {
            r.findings.push(format!("{}: not an audit segment (an object that does not belong here)", l.path));
            continue;
        };
        match &l.segment {
            Err(e) => {
                r.findings.push(format!("{}: segment {seq} of chain {chain} {e}", l.path));
                unreadable.entry((rid, chain)).or_default().insert(seq);
            }
            Ok((seg, hash)) => {
                if seg.repository != rid || seg.chain != chain || seg.seq != seq {
                    r.findings.push(format!(
                        "{}: holds segment {} of chain {} of repository {}: moved here",
                        l.path,
                        seg.seq,
                        seg.chain,
                        short(&seg.repository)
                    ));
                    continue;
                }
                r.segments += 1;
                r.records += l.count;
                chains.entry((rid, chain)).or_default().insert(seq, (l.path.as_str(), seg, *hash, l.count));
            }
        }
    }
    r.chains = chains.len();
    // Where retention says each chain now begins (the furthest any record says).
    let mut bases: BTreeMap<ChainKey, (u64, &str)> = BTreeMap::new();
    for e in loaded.iter().flat_map(|l| l.expiries.iter()) {
        let b = bases.entry((e.repository.clone(), e.chain.clone())).or_insert((0, ""));
        if e.below >= b.0 {
            *b = (e.below, e.hash.as_str());
        }
    }
    for ((rid, chain), segs) in &chains {
        let (base, base_hash) = bases.get(&(rid.clone(), chain.clone())).copied().unwrap_or((0, ""));
        if let Some((path, _, hash, _)) = segs.get(&base) {
            if base > 0 && to_hex(hash) != base_hash {
                r.findings.push(format!(
                    "{path}: differs from the segment the retention record says chain {chain} begins with (replaced)"
                ));
            }
        }
        let name = format!("chain {chain} (repository {})", short(rid));
        // (seq, segment, hash, record count) of the previous readable segment.
        let mut prev: Option<(u64, &Segment, [u8; 32], u64)> = None;
        let bad = unreadable.remove(&(rid.clone(), chain.clone())).unwrap_or_default();
        for (&seq, &(path, seg, hash, count)) in segs {
            // Below the retention base, segments are gone by design.
            let expect = prev.map_or(0, |(s, ..)| s.saturating_add(1)).max(if prev.is_none() { base } else { 0 });
            if seq > expect {
                // The missing ones are the gap less those present but unreadable (already
                // named); never enumerated, a hostile name may leave a gap of 2^63.
                let (mut a, mut b) = (expect, seq - 1);
                while a <= b && bad.contains(&a) {
                    a += 1;
                }
                while b > a && bad.contains(&b) {
                    b -= 1;
                }
                if a <= b && !bad.contains(&a) {
                    r.findings.push(format!(
                        "{name}: segment{} missing (deleted), before {path}",
                        if a == b { format!(" {a}") } else { format!("s {a}..{b}") },
                    ));
                }
            } else if let Some((_, p, ph, pcount)) = prev {
                let end = p.first.saturating_add(pcount);
                if seg.prev.as_deref() != Some(to_hex(&ph).as_str()) {
                    r.findings.push(format!(
                        "{path}: does not follow segment {} (that segment, or this one, was changed, replaced or put out of order)",
                        seq - 1
                    ));
                } else if seg.first != end {
                    r.findings.push(format!(
                        "{path}: its records are numbered from {}, the previous segment ends at {end} (records inserted or removed)",
                        seg.first
                    ));
                }
            }
            prev = Some((seq, seg, hash, count));
        }
    }
    for w in witnesses {
        let a = &w.anchor;
        let Some(segs) = chains.get(&(a.repository.clone(), a.chain.clone())) else {
            if !loaded
                .iter()
                .any(|l| parse_path(&l.path).is_some_and(|(rid, c, _)| rid == a.repository && c == a.chain))
            {
                r.findings.push(format!(
                    "chain {} (repository {}): gone, but {} recorded its segment {}: the log was deleted",
                    a.chain,
                    short(&a.repository),
                    w.by,
                    a.seq
                ));
            }
            continue;
        };
        let last = segs.keys().next_back().copied().unwrap_or(0);
        match segs.get(&a.seq) {
            Some((path, _, hash, _)) if to_hex(hash) != a.hash => {
                r.findings.push(format!("{path}: differs from the segment {} recorded (replaced)", w.by))
            }
            Some(_) => {}
            None if a.seq > last => r.findings.push(format!(
                "chain {} (repository {}): ends at segment {last}, but {} recorded segment {}: its tail was cut off",
                a.chain,
                short(&a.repository),
                w.by,
                a.seq
            )),
            // A gap, already reported above.
            None => {}
        }
    }
    r
}

/// The anchors of this host's cache, for every repository and chain it remembers.
pub fn remembered_anchors(cache: &Path, repo_id: &str) -> Vec<Witness> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir(cache.join(repo_id)) else { return out };
    for e in dir.flatten() {
        let chain = e.file_name().to_string_lossy().into_owned();
        if !cairn_format::audit::is_chain_name(&chain) {
            continue;
        }
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        let mut it = text.split_whitespace();
        let (Some(seq), Some(hash)) = (it.next().and_then(|s| s.parse().ok()), it.next()) else { continue };
        out.push(Witness {
            by: "this host's own record of its last write".into(),
            anchor: Anchor { repository: repo_id.to_string(), chain, seq, hash: hash.to_string() },
        });
    }
    out
}

fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// Carries every segment `src` holds and `dst` lacks, unchanged (re-sealed for `dst`):
/// chains keep their hashes, so the copy verifies on its own. Returns how many were copied
/// and the paths of those that could not be read (left for `audit verify` to report).
pub fn copy(src: &Repository, dst: &Repository) -> Result<(usize, Vec<String>)> {
    let have: std::collections::HashSet<String> =
        dst.block_on(dst.store().list(PREFIX)).map_err(cairn_repo::Error::from)?.into_iter().map(|m| m.path).collect();
    let mut listed: Vec<String> =
        src.block_on(src.store().list(PREFIX)).map_err(cairn_repo::Error::from)?.into_iter().map(|m| m.path).collect();
    listed.sort();
    let (mut n, mut unreadable) = (0, Vec::new());
    for path in listed {
        if have.contains(&path) || parse_path(&path).is_none() {
            continue;
        }
        let Ok(plain) = src.get_named(&path, cairn_format::audit::MAX_SEGMENT) else {
            unreadable.push(path);
            continue;
        };
        match dst.put_named(&path, &[&plain], 3, PutMode::Create) {
            Ok(()) => n += 1,
            Err(e) if e.store_kind() == Some(ErrorKind::AlreadyExists) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok((n, unreadable))
}

/// What one retention run removed (or, dry, would) from one chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    pub repository: String,
    pub chain: String,
    /// Segments `from..below` removed.
    pub from: u64,
    pub below: u64,
    pub records: u64,
}

/// Audit retention: removes, from every chain of `repo`, the segments whose records all
/// ended before `before`, from the chain's start up to (never including) its newest
/// segment, and never past a segment that is missing or unreadable (that is evidence for
/// `verify`, not for retention). First it appends, through `writer`, an `audit_expire`
/// record saying where every chain now begins (segment number and hash), which is what
/// lets `verify` tell retention from deletion. Segments under an object lock stay (the
/// store refuses; the run stops there and says so).
pub fn expire(
    repo: &Repository,
    writer: &Writer,
    actor: &Actor,
    before: jiff::Timestamp,
    dry_run: bool,
) -> Result<Vec<Expired>> {
    let loaded = load(repo, true)?;
    // Per chain, each segment by number: readable (with its hash) or not.
    type Segs<'a> = BTreeMap<u64, Option<(&'a Segment, [u8; 32])>>;
    let mut chains: BTreeMap<ChainKey, Segs<'_>> = BTreeMap::new();
    for l in &loaded {
        let Some((rid, chain, seq)) = parse_path(&l.path) else { continue };
        let seg = l.segment.as_ref().ok().filter(|(s, _)| s.repository == rid && s.chain == chain && s.seq == seq);
        chains.entry((rid, chain)).or_default().insert(seq, seg.map(|(s, h)| (s, *h)));
    }
    let mut bases: BTreeMap<ChainKey, cairn_format::audit::Expiry> = BTreeMap::new();
    for e in loaded.iter().flat_map(|l| l.expiries.iter()) {
        let k = (e.repository.clone(), e.chain.clone());
        if bases.get(&k).is_none_or(|b| e.below >= b.below) {
            bases.insert(k, e.clone());
        }
    }
    let old = |s: &Segment| s.records.iter().all(|r| r.time.parse::<jiff::Timestamp>().is_ok_and(|t| t < before));
    let mut out = Vec::new();
    for ((rid, chain), segs) in &chains {
        let Some(&newest) = segs.keys().next_back() else { continue };
        let Some(&first) = segs.keys().next() else { continue };
        let base = bases.get(&(rid.clone(), chain.clone())).map_or(0, |b| b.below);
        // A chain must start at 0 or at its recorded base to be cut further.
        if first != 0 && first > base {
            continue;
        }
        let (mut below, mut records) = (first, 0);
        let mut next = first;
        for (&seq, seg) in segs.range(first..newest) {
            match seg {
                Some((s, _)) if seq == next && old(s) => {
                    below = seq + 1;
                    records += s.records.len() as u64;
                    next = seq + 1;
                }
                _ => break,
            }
        }
        if below <= base.max(first) || !matches!(segs.get(&below), Some(Some(_))) {
            continue;
        }
        if let Some(Some((_, h))) = segs.get(&below) {
            bases.insert(
                (rid.clone(), chain.clone()),
                cairn_format::audit::Expiry { repository: rid.clone(), chain: chain.clone(), below, hash: to_hex(h) },
            );
        }
        out.push(Expired { repository: rid.clone(), chain: chain.clone(), from: first, below, records });
    }
    if dry_run || out.is_empty() {
        return Ok(out);
    }
    let removed: u64 = out.iter().map(|e| e.below - e.from).sum();
    let mut rec = record(
        actor,
        "audit_expire",
        Target { repository: repo.store().location(), ..Target::default() },
        "ok",
        Some(format!(
            "{removed} segments ({} records) ended before {before} removed from {} chains",
            out.iter().map(|e| e.records).sum::<u64>(),
            out.len()
        )),
    );
    rec.expired = bases.into_values().collect();
    writer.append(repo, vec![rec])?;
    for e in &out {
        for seq in e.from..e.below {
            repo.block_on(repo.store().delete(&segment_path(&e.repository, &e.chain, seq)))
                .map_err(cairn_repo::Error::from)?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_format::audit::Actor;

    const R: &str = "1111111111111111111111111111111111111111111111111111111111111111";

    /// A chain of `n` segments of one record each, as `load` returns it.
    fn chain(n: u64) -> Vec<Loaded> {
        let actor =
            Actor { user: "u".into(), uid: None, host: "h".into(), via: "cli".into(), token: None, address: None };
        let mut out = Vec::new();
        let mut prev: Option<[u8; 32]> = None;
        for seq in 0..n {
            let seg = Segment {
                version: 1,
                repository: R.into(),
                chain: "h".into(),
                seq,
                first: seq,
                prev: prev.map(|p| to_hex(&p)),
                records: vec![record(&actor, "backup", Target::default(), "ok", None)],
            };
            let hash = cairn_crypto::content_hash(&seg.encode());
            prev = Some(hash);
            out.push(Loaded {
                path: segment_path(R, "h", seq),
                segment: Ok((seg, hash)),
                count: 1,
                expiries: Vec::new(),
            });
        }
        out
    }

    #[test]
    fn an_intact_chain_verifies_and_each_break_is_named_once() {
        assert!(verify(&chain(5), &[]).findings.is_empty());
        // Unreadable segment 2: named as such, not again as missing.
        let mut c = chain(5);
        c[2].segment = Err("does not open".into());
        let f = verify(&c, &[]).findings;
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(f[0].contains("00000000000000000002") && f[0].contains("does not open"), "{f:?}");
        // Segment 3 gone: missing, once.
        let mut c = chain(5);
        c.remove(3);
        let f = verify(&c, &[]).findings;
        assert_eq!(
            f,
            vec![format!(
                "chain h (repository 11111111): segment 3 missing (deleted), before {}",
                segment_path(R, "h", 4)
            )]
        );
    }

    #[test]
    fn a_hostile_gap_is_not_enumerated() {
        let mut c = chain(2);
        let (seg, hash) = c.pop().and_then(|l| l.segment.ok()).unwrap();
        let seq = u64::MAX - 1;
        let seg = Segment { seq, ..seg };
        c.push(Loaded { path: segment_path(R, "h", seq), segment: Ok((seg, hash)), count: 1, expiries: Vec::new() });
        let f = verify(&c, &[]).findings;
        assert!(f.iter().any(|f| f.contains(&format!("segments 1..{}", seq - 1))), "{f:?}");
    }
}

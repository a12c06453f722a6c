//! Browsing a policy repository for the API and the console: its snapshots, one directory
//! of one snapshot, search by name or path glob across snapshots, the versions of one
//! file, and a file's content.
//!
//! Key decisions:
//! - A [`View`] is an opened repository with its index, kept by the caller (the API keeps
//!   one per repository for a short time): opening runs the key derivation and loading the
//!   index reads every index file, neither of which a click should pay.
//! - Search walks each snapshot's tree, but a subtree seen before (same id: unchanged
//!   between backups) is answered from what it held the first time, so 100 daily
//!   snapshots of one tree cost about one walk plus what changed.
//! - Every walk is bounded by a [`Budget`] (hostile trees can be exponential) and results
//!   by a limit the caller gives; a truncated answer says so.

use std::collections::HashMap;
use std::sync::Arc;

use cairn_engine::browse::Budget;
use cairn_format::snapshot::Snapshot;
use cairn_format::tree::{Node, NodeKind};
use cairn_format::{SnapshotId, TreeId};
use cairn_repo::{Index, Repository};

use crate::{Error, Result};

/// An opened repository and its index.
pub struct View {
    pub name: String,
    pub repo: Repository,
    pub index: Index,
    pub snapshots: Vec<(SnapshotId, Snapshot)>,
}

impl View {
    pub fn open(env: &crate::jobs::Env, repository: &str) -> Result<View> {
        let repo = env.open_repository(repository)?;
        let (index, _damaged) = repo.load_index_reporting()?;
        let snapshots = repo.list_snapshots_lenient()?.snapshots;
        Ok(View { name: repository.to_string(), repo, index, snapshots })
    }

    /// A snapshot by full id or unique prefix (at least 8 hex digits).
    pub fn snapshot(&self, id: &str) -> Result<&(SnapshotId, Snapshot)> {
        if id.len() < 8 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::NotFound(format!("snapshot {id:?}: give at least 8 hex digits of its id")));
        }
        let id = id.to_ascii_lowercase();
        let mut hits = self.snapshots.iter().filter(|(s, _)| s.to_hex().starts_with(&id));
        match (hits.next(), hits.next()) {
            (Some(s), None) => Ok(s),
            (Some(_), Some(_)) => Err(Error::NotFound(format!("snapshot {id:?} is ambiguous: give more digits"))),
            (None, _) => Err(Error::NotFound(format!("no snapshot {id:?} in repository {}", self.name))),
        }
    }

    /// Snapshots of `source` (all of them with `None`), oldest first.
    pub fn of_source<'a>(
        &'a self,
        source: Option<&'a str>,
    ) -> impl DoubleEndedIterator<Item = &'a (SnapshotId, Snapshot)> + 'a {
        self.snapshots.iter().filter(move |(_, s)| source.is_none_or(|src| s.source.as_deref() == Some(src)))
    }
}

/// One entry of a directory listing or a search hit.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Entry {
    pub name: String,
    /// Absolute, as in the snapshot.
    pub path: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub size: u64,
    pub mode: u32,
    pub mtime: String,
    pub user: Option<String>,
    pub group: Option<String>,
    pub link_target: Option<String>,
}

pub fn kind_name(k: NodeKind) -> &'static str {
    match k {
        NodeKind::File => "file",
        NodeKind::Dir => "dir",
        NodeKind::Symlink => "symlink",
        NodeKind::Fifo => "fifo",
        NodeKind::Chardev => "chardev",
        NodeKind::Blockdev => "blockdev",
        NodeKind::Socket => "socket",
    }
}

fn time_text(secs_ns: i64) -> String {
    jiff::Timestamp::from_nanosecond(secs_ns as i128).map(|t| t.to_string()).unwrap_or_default()
}

fn entry(path: &str, n: &Node) -> Entry {
    Entry {
        name: n.name.lossy().into_owned(),
        path: path.to_string(),
        kind: kind_name(n.kind),
        size: n.size,
        mode: n.mode,
        mtime: time_text(n.mtime),
        user: n.user.clone(),
        group: n.group.clone(),
        link_target: n.link_target.as_ref().map(|l| l.lossy().into_owned()),
    }
}

/// `/a//b/` -> `/a/b`; refuses `..`, `.` and NUL (a path is looked up by name, never
/// resolved, but a path that cannot name an entry is a mistake to say so).
pub fn clean_path(path: &str) -> Result<String> {
    let mut out = String::new();
    for c in path.split('/').filter(|c| !c.is_empty()) {
        if c == ".." || c == "." || c.contains('\0') {
            // No entry of a snapshot has such a name: nothing is there.
            return Err(Error::NotFound(format!("path {path:?}: no entry is named '.', '..' or holds NUL")));
        }
        out.push('/');
        out.push_str(c);
    }
    Ok(if out.is_empty() { "/".into() } else { out })
}

/// The entries of the directory at `path` of a snapshot, in name order, at most `limit`
/// (`truncated` says whether more exist).
pub fn list_dir(v: &View, snap: &Snapshot, path: &str, limit: usize) -> Result<(Vec<Entry>, bool)> {
    let path = clean_path(path)?;
    let tree = if path == "/" { snap.tree } else { subtree(v, snap.tree, &path)? };
    let t = v.repo.load_tree(&v.index, tree)?;
    let base = path.trim_end_matches('/');
    let out: Vec<Entry> = t.nodes.iter().take(limit).map(|n| entry(&format!("{base}/{}", n.name.lossy()), n)).collect();
    Ok((out, t.nodes.len() > limit))
}

fn subtree(v: &View, root: TreeId, path: &str) -> Result<TreeId> {
    cairn_engine::browse::subtree(&v.repo, &v.index, root, path).map_err(|e| match e {
        cairn_engine::Error::Invalid(m) => Error::NotFound(m),
        e => e.into(),
    })
}

/// The node at `path` of a snapshot (a file, directory or other).
pub fn node(v: &View, snap: &Snapshot, path: &str) -> Result<Node> {
    let path = clean_path(path)?;
    match cairn_engine::browse::lookup(&v.repo, &v.index, snap.tree, &path) {
        Ok(Some(n)) => Ok(n),
        Ok(None) => Err(Error::NotFound(format!("{path}: the snapshot's root is not a file"))),
        Err(cairn_engine::Error::Invalid(m)) => Err(Error::NotFound(m)),
        Err(e) => Err(e.into()),
    }
}

/// A search hit: the entry and the snapshot it is in.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Hit {
    pub snapshot: String,
    pub time: String,
    pub source: Option<String>,
    #[serde(flatten)]
    pub entry: Entry,
}

/// Entries whose path matches `pattern` (gitignore syntax, as restore's `--include`:
/// `*.pdf` matches a name at any depth, `/srv/*/report.txt` a path) in the snapshots
/// given, newest first, at most `limit` hits.
///
/// Memory is bounded whatever the pattern (`*` matches everything): a walk collects at
/// most the hits still wanted, and the memo keeps at most [`MEMO_ENTRIES`] entries.
pub fn search(v: &View, snaps: &[&(SnapshotId, Snapshot)], pattern: &str, limit: usize) -> Result<(Vec<Hit>, bool)> {
    let m = cairn_fs::PathMatcher::new(&[pattern.to_string()]).map_err(Error::Source)?;
    let mut w = Search { v, m, memo: HashMap::new(), memo_room: MEMO_ENTRIES };
    let mut hits = Vec::new();
    let mut truncated = false;
    for (id, s) in snaps.iter().rev().map(|p| (&p.0, &p.1)) {
        let want = limit - hits.len();
        if want == 0 {
            truncated = true;
            break;
        }
        let mut budget = Budget::for_snapshot(&s.summary);
        let (found, complete) = w.below(s.tree, "", want + 1, &mut budget, 0)?;
        for (path, n) in found.iter().take(want) {
            hits.push(Hit {
                snapshot: id.to_hex(),
                time: s.time.clone(),
                source: s.source.clone(),
                entry: entry(path, n),
            });
        }
        if !complete || found.len() > want {
            truncated = true;
            break;
        }
    }
    Ok((hits, truncated))
}

/// Entries the search memo holds at most (each a path and a node, a few hundred bytes).
pub const MEMO_ENTRIES: usize = 100_000;

type Matches = Arc<Vec<(String, Node)>>;

struct Search<'a> {
    v: &'a View,
    m: cairn_fs::PathMatcher,
    /// (tree id, its path) -> the (path, node) of its matching entries at any depth. Keyed
    /// by path too: an anchored pattern matches a tree at one place and not at another.
    memo: HashMap<(TreeId, String), Matches>,
    memo_room: usize,
}

impl Search<'_> {
    /// The matches below `tree` (whose path is `prefix`), at most `want`; `false` when it
    /// stopped there (such a partial answer is not memoized).
    fn below(
        &mut self,
        tree: TreeId,
        prefix: &str,
        want: usize,
        budget: &mut Budget,
        depth: usize,
    ) -> Result<(Matches, bool)> {
        if depth > cairn_repo::check::MAX_DEPTH {
            return Err(Error::Source(format!("{prefix}: trees nested too deep: damaged or hostile snapshot")));
        }
        if let Some(hit) = self.memo.get(&(tree, prefix.to_string())) {
            return Ok((hit.clone(), true));
        }
        let t = self.v.repo.load_tree(&self.v.index, tree)?;
        budget.spend(t.nodes.len()).map_err(Error::from)?;
        let mut out = Vec::new();
        for n in &t.nodes {
            if out.len() >= want {
                return Ok((Arc::new(out), false));
            }
            let p = format!("{prefix}/{}", n.name.lossy());
            let is_dir = n.kind == NodeKind::Dir;
            if self.m.matches_self(&p, is_dir) {
                out.push((p.clone(), n.clone()));
            }
            if let (true, Some(st)) = (is_dir, n.subtree) {
                let (below, complete) = self.below(st, &p, want - out.len().min(want), budget, depth + 1)?;
                out.extend(below.iter().cloned());
                if !complete {
                    return Ok((Arc::new(out), false));
                }
            }
        }
        let out = Arc::new(out);
        if out.len() <= self.memo_room {
            self.memo_room -= out.len();
            self.memo.insert((tree, prefix.to_string()), out.clone());
        }
        Ok((out, true))
    }
}

/// One version of a file: where it first appeared and what it was.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Version {
    /// The oldest snapshot holding this content at the path.
    pub snapshot: String,
    pub time: String,
    /// Snapshots holding it (this one and the ones after it, until it changed).
    pub snapshots: usize,
    pub size: u64,
    pub mtime: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
}

/// The distinct versions of `path` across the snapshots given (oldest first), newest first.
pub fn versions(v: &View, snaps: &[&(SnapshotId, Snapshot)], path: &str) -> Result<Vec<Version>> {
    let path = clean_path(path)?;
    let mut out: Vec<(Vec<u8>, Version)> = Vec::new();
    for (id, s) in snaps.iter().map(|p| (&p.0, &p.1)) {
        let n = match cairn_engine::browse::lookup(&v.repo, &v.index, s.tree, &path) {
            Ok(Some(n)) => n,
            Ok(None) | Err(cairn_engine::Error::Invalid(_)) => continue,
            Err(e) => return Err(e.into()),
        };
        // Same content blobs, same kind and size: the same version (a touched mtime
        // alone is not a new version of what the file holds).
        let mut key = vec![n.kind as u8];
        key.extend(n.size.to_le_bytes());
        for b in &n.content {
            key.extend(b.0 .0);
        }
        if let Some(t) = &n.link_target {
            key.extend(&t.0);
        }
        match out.last_mut() {
            Some((k, ver)) if *k == key => ver.snapshots += 1,
            _ => out.push((
                key,
                Version {
                    snapshot: id.to_hex(),
                    time: s.time.clone(),
                    snapshots: 1,
                    size: n.size,
                    mtime: time_text(n.mtime),
                    kind: kind_name(n.kind),
                },
            )),
        }
    }
    Ok(out.into_iter().rev().map(|(_, v)| v).collect())
}

/// Writes the content of the regular file `n` to `out`.
pub fn read_file(v: &View, n: &Node, out: &mut dyn std::io::Write) -> Result<u64> {
    if n.kind != NodeKind::File {
        return Err(Error::Source(format!("{}: not a regular file", n.name.lossy())));
    }
    Ok(cairn_engine::browse::dump(&v.repo, &v.index, n, out)?)
}

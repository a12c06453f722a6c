//! Reading snapshots without restoring them: walk (ls, find), diff, dump, subpath lookup.

use std::io::Write;

use cairn_format::tree::{Node, NodeKind, Tree};
use cairn_format::TreeId;
use cairn_repo::{Index, Repository};

use crate::{Error, Result};

/// How many entries a walk of a snapshot may visit. Trees may share subtrees, which is
/// legitimate, so a small hostile snapshot (41 trees) can stand for 2^40 paths; walks that
/// must visit every path (restore, ls, find, diff) stop once they pass what the snapshot's
/// own summary says it holds, with generous slack, and never past [`MAX_WALK`].
#[derive(Debug, Clone)]
pub struct Budget {
    left: u64,
    limit: u64,
}

/// The most entries any walk visits, whatever a summary claims.
pub const MAX_WALK: u64 = 50_000_000;

impl Budget {
    /// Twice the entries the summary counts, plus 100,000 (summaries written before
    /// `others` existed do not count symlinks and specials; foreign ones may be empty).
    pub fn for_snapshot(summary: &cairn_format::snapshot::Summary) -> Budget {
        let counted =
            [summary.files_new, summary.files_changed, summary.files_unmodified, summary.dirs, summary.others]
                .iter()
                .fold(0u64, |a, b| a.saturating_add(*b));
        Budget::new(counted.saturating_mul(2).saturating_add(100_000))
    }
    pub fn new(limit: u64) -> Budget {
        let limit = limit.min(MAX_WALK);
        Budget { left: limit, limit }
    }
    pub fn limit(&self) -> u64 {
        self.limit
    }
    /// Takes `n` entries from the budget; an error once it is spent.
    pub fn spend(&mut self, n: usize) -> Result<()> {
        match self.left.checked_sub(n as u64) {
            Some(l) => {
                self.left = l;
                Ok(())
            }
            None => Err(Error::Damaged(format!(
                "the snapshot expands to more than {} entries, far more than its summary records: damaged or hostile trees (shared subtrees repeated), refusing to go on",
                self.limit
            ))),
        }
    }
}

/// Visits every node below `tree` depth-first in name order; `visit(path, node)` returns
/// whether to descend into a directory. Stops with an error once `budget` is spent.
pub fn walk(
    repo: &Repository,
    index: &Index,
    tree: TreeId,
    prefix: &str,
    budget: &mut Budget,
    visit: &mut dyn FnMut(&str, &Node) -> bool,
) -> Result<()> {
    walk_at(repo, index, tree, prefix, budget, visit, 0)
}

fn too_deep(depth: usize, path: &str) -> Result<()> {
    if depth > cairn_repo::check::MAX_DEPTH {
        return Err(Error::Damaged(format!("{path}: trees nested deeper than {}", cairn_repo::check::MAX_DEPTH)));
    }
    Ok(())
}

fn walk_at(
    repo: &Repository,
    index: &Index,
    tree: TreeId,
    prefix: &str,
    budget: &mut Budget,
    visit: &mut dyn FnMut(&str, &Node) -> bool,
    depth: usize,
) -> Result<()> {
    too_deep(depth, prefix)?;
    let t = repo.load_tree(index, tree)?;
    budget.spend(t.nodes.len())?;
    for n in &t.nodes {
        let p = format!("{}/{}", prefix.trim_end_matches('/'), n.name.lossy());
        if visit(&p, n) && n.kind == NodeKind::Dir {
            if let Some(st) = n.subtree {
                walk_at(repo, index, st, &p, budget, visit, depth + 1)?;
            }
        }
    }
    Ok(())
}

/// The node at `path` ("/" or "/a/b") below `root`; `None` for the root itself.
pub fn lookup(repo: &Repository, index: &Index, root: TreeId, path: &str) -> Result<Option<Node>> {
    let mut tree: Tree = repo.load_tree(index, root)?;
    let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let mut found = None;
    for (i, c) in comps.iter().enumerate() {
        let n = tree
            .find(c.as_bytes())
            .cloned()
            .ok_or_else(|| Error::Invalid(format!("{path}: no such file or directory in the snapshot")))?;
        if i + 1 < comps.len() {
            let st = match (n.kind, n.subtree) {
                (NodeKind::Dir, Some(st)) => st,
                _ => return Err(Error::Invalid(format!("{path}: not a directory in the snapshot"))),
            };
            tree = repo.load_tree(index, st)?;
        }
        found = Some(n);
    }
    Ok(found)
}

/// The tree at `path`, which must be a directory.
pub fn subtree(repo: &Repository, index: &Index, root: TreeId, path: &str) -> Result<TreeId> {
    match lookup(repo, index, root, path)? {
        None => Ok(root),
        Some(n) if n.kind == NodeKind::Dir => {
            n.subtree.ok_or_else(|| Error::Damaged(format!("{path}: directory without subtree")))
        }
        Some(_) => Err(Error::Invalid(format!("{path}: not a directory in the snapshot"))),
    }
}

/// Writes a file's content.
pub fn dump(repo: &Repository, index: &Index, node: &Node, out: &mut dyn Write) -> Result<u64> {
    if node.kind != NodeKind::File {
        return Err(Error::Invalid(format!("{}: not a regular file", node.name.lossy())));
    }
    let mut n = 0;
    for b in &node.content {
        let data = repo.read_blob(index, b)?;
        out.write_all(&data).map_err(|e| Error::io("stdout", e))?;
        n += data.len() as u64;
    }
    Ok(n)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Added,
    Removed,
    Modified,
    /// Same content, other metadata.
    Metadata,
}

impl Change {
    pub fn symbol(self) -> char {
        match self {
            Change::Added => '+',
            Change::Removed => '-',
            Change::Modified => 'M',
            Change::Metadata => 'U',
        }
    }
}

/// Differences between two trees, as `(change, path)` in path order, within `budget`
/// (both snapshots' budgets together).
pub fn diff(
    repo: &Repository,
    index: &Index,
    a: Option<TreeId>,
    b: Option<TreeId>,
    prefix: &str,
    budget: &mut Budget,
    out: &mut Vec<(Change, String)>,
) -> Result<()> {
    too_deep(prefix.matches('/').count(), prefix)?;
    if a == b {
        return Ok(());
    }
    let ta = match a {
        Some(t) => repo.load_tree(index, t)?,
        None => Tree::default(),
    };
    let tb = match b {
        Some(t) => repo.load_tree(index, t)?,
        None => Tree::default(),
    };
    budget.spend(ta.nodes.len() + tb.nodes.len())?;
    let (mut i, mut j) = (0, 0);
    while i < ta.nodes.len() || j < tb.nodes.len() {
        let na = ta.nodes.get(i);
        let nb = tb.nodes.get(j);
        let ord = match (na, nb) {
            (Some(x), Some(y)) => x.name.cmp(&y.name),
            (Some(_), None) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        match ord {
            std::cmp::Ordering::Less => {
                let x = &ta.nodes[i];
                let p = format!("{prefix}/{}", x.name.lossy());
                out.push((Change::Removed, dir_suffix(&p, x)));
                if x.kind == NodeKind::Dir {
                    diff(repo, index, x.subtree, None, &p, budget, out)?;
                }
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                let y = &tb.nodes[j];
                let p = format!("{prefix}/{}", y.name.lossy());
                out.push((Change::Added, dir_suffix(&p, y)));
                if y.kind == NodeKind::Dir {
                    diff(repo, index, None, y.subtree, &p, budget, out)?;
                }
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                let (x, y) = (&ta.nodes[i], &tb.nodes[j]);
                let p = format!("{prefix}/{}", x.name.lossy());
                if x.kind != y.kind {
                    out.push((Change::Removed, dir_suffix(&p, x)));
                    out.push((Change::Added, dir_suffix(&p, y)));
                } else if x.kind == NodeKind::Dir {
                    diff(repo, index, x.subtree, y.subtree, &p, budget, out)?;
                } else if x.content != y.content || x.link_target != y.link_target {
                    out.push((Change::Modified, p));
                } else if x.mode != y.mode
                    || x.uid != y.uid
                    || x.gid != y.gid
                    || x.mtime != y.mtime
                    || x.xattrs != y.xattrs
                {
                    out.push((Change::Metadata, p));
                }
                i += 1;
                j += 1;
            }
        }
    }
    Ok(())
}

fn dir_suffix(p: &str, n: &Node) -> String {
    if n.kind == NodeKind::Dir {
        format!("{p}/")
    } else {
        p.to_string()
    }
}

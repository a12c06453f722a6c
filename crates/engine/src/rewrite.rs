//! Rewriting snapshots without some paths (erasure requests, mistakes in excludes).
//!
//! Trees are rebuilt bottom-up without the excluded entries; a subtree with nothing
//! excluded keeps its id and is not written again, so a rewrite costs only the trees on
//! the paths to what was removed. The data blobs of removed files stay in the repository
//! until a prune deletes what no snapshot references any more.

use cairn_format::tree::{NodeKind, Tree};
use cairn_format::{BlobType, TreeId};
use cairn_repo::{BlobSaver, Index, Repository, WorkerSaver};

use crate::{Error, Result};

/// Rewrites every tree in `roots`, dropping entries for which `exclude(path, is_dir)` is
/// true. Returns, per root, the new root and the number of entries removed (0: unchanged,
/// the same id). All new trees are stored and indexed before this returns.
pub fn rewrite_trees(
    repo: &Repository,
    roots: &[TreeId],
    exclude: &(dyn Fn(&str, bool) -> bool + Sync),
) -> Result<Vec<(TreeId, u64)>> {
    let index = repo.load_index()?;
    let saver = BlobSaver::new(repo, Index::default(), Vec::new(), 1);
    let out = std::thread::scope(|s| -> Result<Vec<(TreeId, u64)>> {
        let _close = saver.close_on_drop();
        s.spawn(|| saver.run_uploader());
        let mut w = saver.worker()?;
        let mut out = Vec::new();
        for root in roots {
            let mut removed = 0;
            let new = rewrite(repo, &index, &mut w, *root, "", exclude, &mut removed, 0)?;
            out.push((new, removed));
        }
        w.flush()?;
        Ok(out)
    })?;
    saver.finish()?;
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn rewrite(
    repo: &Repository,
    index: &Index,
    w: &mut WorkerSaver<'_, '_>,
    tree: TreeId,
    prefix: &str,
    exclude: &(dyn Fn(&str, bool) -> bool + Sync),
    removed: &mut u64,
    depth: usize,
) -> Result<TreeId> {
    if depth > cairn_repo::check::MAX_DEPTH {
        return Err(Error::Damaged(format!("{prefix}: trees nested deeper than {}", cairn_repo::check::MAX_DEPTH)));
    }
    let t = repo.load_tree(index, tree)?;
    let before = *removed;
    let mut nodes = Vec::with_capacity(t.nodes.len());
    for mut n in t.nodes {
        let path = format!("{prefix}/{}", n.name.lossy());
        let is_dir = n.kind == NodeKind::Dir;
        if exclude(&path, is_dir) {
            *removed += 1;
            continue;
        }
        if let (true, Some(st)) = (is_dir, n.subtree) {
            n.subtree = Some(rewrite(repo, index, w, st, &path, exclude, removed, depth + 1)?);
        }
        nodes.push(n);
    }
    if *removed == before {
        return Ok(tree);
    }
    let new = Tree::new(nodes);
    let bytes = new.encode();
    let id = repo.blob_id(&bytes);
    // The saver's own index is empty: it dedups only within this rewrite, so a tree that
    // exists already is simply stored once more (harmless, and rare: only trees on the
    // paths to removed entries are new).
    if !index.contains(&id) {
        w.save(BlobType::Tree, id, &bytes)?;
    }
    Ok(id.tree())
}

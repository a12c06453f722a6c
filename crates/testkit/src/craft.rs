//! Crafting hostile repository content: objects sealed with a repository's own keys that
//! no real writer would produce, written around every check a backup makes. This is what
//! whoever holds the password (or a leaked key) can store; the hostile-repository tests
//! use it to check that cairn refuses or bounds each case.

use std::path::Path;
use std::sync::Arc;

use cairn_format::magic::SNAPSHOT_VERSION;
use cairn_format::snapshot::{Snapshot, Summary};
use cairn_format::tree::{Node, NodeKind, Tree};
use cairn_format::{BlobId, BlobType, SnapshotId, TreeId};
use cairn_repo::{BlobSaver, Repository};

/// A multi-thread runtime (the repository API blocks on spawned reads) and the local
/// repository at `path` opened with `password`.
pub fn open(path: &Path, password: &str) -> (tokio::runtime::Runtime, Repository) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).build().unwrap();
    let repo = Repository::open(Arc::new(cairn_store::LocalStore::new(path)), rt.handle().clone(), password.as_bytes())
        .unwrap();
    (rt, repo)
}

/// A tree's JSON as given: not `Tree::new`, so no sorting and no validation.
pub fn raw_tree(nodes: Vec<Node>) -> Vec<u8> {
    serde_json::to_vec(&Tree { version: 1, nodes }).unwrap()
}

pub fn file(name: &[u8], content: Vec<BlobId>, size: u64) -> Node {
    let mut n = Node::new(name.to_vec(), NodeKind::File);
    n.mode = 0o644;
    n.content = content;
    n.size = size;
    n
}

pub fn dir(name: &[u8], subtree: TreeId) -> Node {
    let mut n = Node::new(name.to_vec(), NodeKind::Dir);
    n.mode = 0o755;
    n.subtree = Some(subtree);
    n
}

/// Stores `blobs` (children before parents) through the normal saver, then a snapshot
/// of `root` that claims nothing in its summary.
pub fn plant(repo_path: &Path, password: &str, blobs: &[(BlobType, Vec<u8>)], root: TreeId) -> SnapshotId {
    let (_rt, repo) = open(repo_path, password);
    let _lease = repo.lease("test", "evil").unwrap();
    let index = repo.load_index().unwrap();
    let saver = BlobSaver::new(&repo, index, Vec::new(), 1);
    std::thread::scope(|s| {
        s.spawn(|| saver.run_uploader());
        let mut w = saver.worker().unwrap();
        for (k, b) in blobs {
            w.save(*k, repo.blob_id(b), b).unwrap();
        }
        w.flush().unwrap();
        saver.close();
    });
    saver.finish().unwrap();
    repo.save_snapshot(&snapshot_of(root)).unwrap()
}

/// A snapshot document of `root` from host `evil`.
pub fn snapshot_of(root: TreeId) -> Snapshot {
    Snapshot {
        version: SNAPSHOT_VERSION,
        time: "2026-01-01T00:00:00Z".into(),
        hostname: "evil".into(),
        username: "evil".into(),
        uid: 0,
        gid: 0,
        paths: vec!["/".into()],
        tags: vec![],
        label: None,
        tree: root,
        parent: None,
        kind: "files".into(),
        partial: false,
        original: None,
        summary: Summary::default(),
        program_version: "evil".into(),
        postgres: None,
        source: None,
        job: None,
        audit: None,
    }
}

/// Stores `blobs` as `(id, claimed raw length, blob plaintext)` in one pack of `kind`
/// that an index file names, with whatever lengths and encodings they claim. The caller
/// holds a writer lease.
pub fn plant_pack(repo: &Repository, kind: BlobType, blobs: Vec<(BlobId, u32, Vec<u8>)>) {
    let mut p = cairn_repo::Packer::new(repo.master(), kind, 1 << 20).unwrap();
    for (id, raw, plain) in blobs {
        p.add_with(id, raw, |buf| buf.extend_from_slice(&plain)).unwrap();
    }
    let f = p.finish().unwrap();
    repo.block_on(repo.store().put(&cairn_repo::layout::pack(&f.id), f.data, cairn_store::PutMode::Create)).unwrap();
    let packs = vec![cairn_format::index::IndexedPack { id: f.id, salt: f.salt, blobs: f.entries }];
    repo.save_index(&cairn_format::index::IndexFile { supersedes: Vec::new(), packs }).unwrap();
}

//! The tree writer: writes each directory's tree once its files are read and its
//! subdirectories written, bottom-up, so memory holds the directories in progress.

use std::collections::HashMap;

use cairn_format::tree::{Node, Tree};
use cairn_format::{BlobType, TreeId};
use cairn_repo::{BlobSaver, Repository, WorkerSaver};
use crossbeam_channel::Receiver;

use super::{DirId, Entry, Event, FileDone, ROOT};
use crate::{Error, Result};

/// (slot, segment, segments, outcome) of one reader job.
pub(super) type JobResult = (usize, u32, u32, std::result::Result<FileDone, String>);

/// One file's content from its segments, in order; the first error wins.
fn join_segments(parts: Vec<Option<std::result::Result<FileDone, String>>>) -> std::result::Result<FileDone, String> {
    let mut done = FileDone { content: Vec::new(), size: 0 };
    for p in parts {
        let p = p.ok_or_else(|| "a segment was not read".to_string())??;
        done.content.extend(p.content);
        done.size += p.size;
    }
    Ok(done)
}

/// What the tree writer leaves: the root tree once every directory is written, the
/// files that could not be read, and the sizes of the files read as listed and as read.
pub(super) struct Written {
    pub(super) root: Option<TreeId>,
    pub(super) errors: Vec<String>,
    pub(super) size_listed: u64,
    pub(super) size_read: u64,
}

/// A directory listed but not yet written: its nodes (`None` for a file that could not be
/// read) and how many of them still wait for a file's content or a subtree.
struct Pending {
    nodes: Vec<Option<Node>>,
    waiting: usize,
    /// The directory's tree in the parent snapshot: if the nodes come out the same, that
    /// tree is the directory's tree, with no encoding, hashing or saving.
    parent: Option<(TreeId, Tree)>,
}

/// Writes trees bottom-up as directories complete. The walker's directories and the
/// readers' results arrive in any order: whichever of a file's node and its content (or a
/// directory's node and its subtree) comes second completes it.
pub(super) struct TreeWriter<'a, 'r> {
    repo: &'a Repository,
    w: WorkerSaver<'a, 'r>,
    pending: HashMap<DirId, Pending>,
    /// File slot -> the (directory, position) of its names that wait for its content.
    slot_waiters: HashMap<usize, Vec<(DirId, usize)>>,
    /// Content read before its directory was listed; kept for good when the file has
    /// other names (hard links) that may come later.
    results: HashMap<usize, std::result::Result<FileDone, String>>,
    /// Segments of large files read so far.
    partial: HashMap<usize, Vec<Option<std::result::Result<FileDone, String>>>>,
    /// Directory -> (its parent, its position there), once the parent is listed.
    dir_waiters: HashMap<DirId, (DirId, usize)>,
    /// Trees written before their parent directory was listed.
    finished: HashMap<DirId, TreeId>,
    out: Written,
    /// Errors already reported (a file's other names share its error).
    reported: std::collections::HashSet<String>,
}

impl<'a, 'r> TreeWriter<'a, 'r> {
    pub(super) fn new(repo: &'a Repository, saver: &'a BlobSaver<'r>) -> Result<Self> {
        Ok(TreeWriter {
            repo,
            w: saver.worker()?,
            pending: HashMap::new(),
            slot_waiters: HashMap::new(),
            results: HashMap::new(),
            partial: HashMap::new(),
            dir_waiters: HashMap::new(),
            finished: HashMap::new(),
            out: Written { root: None, errors: Vec::new(), size_listed: 0, size_read: 0 },
            reported: std::collections::HashSet::new(),
        })
    }

    pub(super) fn run(mut self, events: Receiver<Event>) -> Result<Written> {
        for e in events.iter() {
            match e {
                Event::Dir(dir, entries, parent) => self.listed(dir, entries, parent)?,
                Event::File((slot, segment, segments, r)) => {
                    let r = if segments <= 1 {
                        r
                    } else {
                        let parts = self.partial.entry(slot).or_insert_with(|| vec![None; segments as usize]);
                        if let Some(p) = parts.get_mut(segment as usize) {
                            *p = Some(r);
                        }
                        if !parts.iter().all(Option::is_some) {
                            continue;
                        }
                        join_segments(self.partial.remove(&slot).unwrap_or_default())
                    };
                    self.read(slot, r)?;
                }
            }
        }
        self.w.flush()?;
        Ok(self.out)
    }

    fn listed(&mut self, dir: DirId, entries: Vec<Entry>, parent: Option<(TreeId, Tree)>) -> Result<()> {
        let mut p = Pending { nodes: Vec::with_capacity(entries.len()), waiting: 0, parent };
        for (pos, e) in entries.into_iter().enumerate() {
            match e {
                Entry::Leaf(node) => p.nodes.push(Some(node)),
                Entry::Dir { mut node, dir: sub } => {
                    match self.finished.remove(&sub) {
                        Some(t) => node.subtree = Some(t),
                        None => {
                            self.dir_waiters.insert(sub, (dir, pos));
                            p.waiting += 1;
                        }
                    }
                    p.nodes.push(Some(node));
                }
                Entry::File { node, slot } => {
                    let linked = node.links > 1;
                    p.nodes.push(Some(node));
                    let r = if linked { self.results.get(&slot).cloned() } else { self.results.remove(&slot) };
                    match r {
                        Some(r) => self.fill(&mut p, pos, r),
                        None => {
                            self.slot_waiters.entry(slot).or_default().push((dir, pos));
                            p.waiting += 1;
                        }
                    }
                }
            }
        }
        if p.waiting == 0 {
            self.write(dir, p)
        } else {
            self.pending.insert(dir, p);
            Ok(())
        }
    }

    /// A file's whole content (or its error) has been read.
    fn read(&mut self, slot: usize, r: std::result::Result<FileDone, String>) -> Result<()> {
        let waiters = self.slot_waiters.remove(&slot).unwrap_or_default();
        let mut keep = waiters.is_empty();
        for (dir, pos) in waiters {
            let Some(mut p) = self.pending.remove(&dir) else { continue };
            keep |= p.nodes.get(pos).and_then(Option::as_ref).is_some_and(|n| n.links > 1);
            self.fill(&mut p, pos, r.clone());
            p.waiting -= 1;
            if p.waiting == 0 {
                self.write(dir, p)?;
            } else {
                self.pending.insert(dir, p);
            }
        }
        if keep {
            self.results.insert(slot, r);
        }
        Ok(())
    }

    fn fill(&mut self, p: &mut Pending, pos: usize, r: std::result::Result<FileDone, String>) {
        let Some(slot) = p.nodes.get_mut(pos) else { return };
        match (slot.as_mut(), r) {
            (Some(node), Ok(done)) => {
                self.out.size_listed += node.size;
                self.out.size_read += done.size;
                node.content = done.content;
                node.size = done.size;
            }
            (_, Err(e)) => {
                *slot = None;
                if self.reported.insert(e.clone()) {
                    self.out.errors.push(e);
                }
            }
            (None, Ok(_)) => {}
        }
    }

    /// Writes a complete directory's tree, then those of its ancestors it completes.
    fn write(&mut self, mut dir: DirId, mut p: Pending) -> Result<()> {
        loop {
            let tree = Tree::new(p.nodes.into_iter().flatten().collect());
            let tree = match p.parent {
                Some((id, before)) if before.nodes == tree.nodes => id,
                _ => {
                    let bytes = tree.encode();
                    let id = self.repo.blob_id(&bytes);
                    self.w.save(BlobType::Tree, id, &bytes)?;
                    id.tree()
                }
            };
            if dir == ROOT {
                self.out.root = Some(tree);
                return Ok(());
            }
            let Some((parent, pos)) = self.dir_waiters.remove(&dir) else {
                self.finished.insert(dir, tree);
                return Ok(());
            };
            let Some(mut pp) = self.pending.remove(&parent) else {
                return Err(Error::Internal(format!("directory {dir} has no pending parent")));
            };
            if let Some(Some(n)) = pp.nodes.get_mut(pos) {
                n.subtree = Some(tree);
            }
            pp.waiting -= 1;
            if pp.waiting > 0 {
                self.pending.insert(parent, pp);
                return Ok(());
            }
            (dir, p) = (parent, pp);
        }
    }
}

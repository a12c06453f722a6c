//! The walk: lists each directory on a few threads, compares its entries with the
//! parent snapshot's tree, sends the files to read to the readers and each directory's
//! entries to the tree writer.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use cairn_format::snapshot::Summary;
use cairn_format::tree::{Node, NodeKind, Tree};
use cairn_format::TreeId;
use cairn_repo::BlobSaver;
use crossbeam_channel::{bounded, Receiver, Sender};

use super::{DirId, Entry, Event, FileJob, Progress, SEGMENT};
use crate::{Error, Result, Source};

pub(super) enum Top {
    Walk(PathBuf),
    Inner(BTreeMap<Vec<u8>, Top>),
}

/// The walk runs on up to this many threads: sibling directories are walked in parallel,
/// which matters most on a cold cache, where every `lstat` may wait for the disk.
const WALKERS: usize = 6;

pub(super) struct Walker<'s, 'r, S: Source + ?Sized> {
    pub(super) source: &'s S,
    pub(super) saver: &'s BlobSaver<'r>,
    /// To the tree writer: each directory's entries once listed.
    pub(super) trees: Sender<Event>,
    pub(super) dir_ids: AtomicUsize,
    pub(super) jobs: Sender<FileJob>,
    /// Jobs of single-chunk files (see [`super::SMALL_READERS`]).
    pub(super) small_jobs: Sender<FileJob>,
    /// Files up to this size go to `small_jobs`: the chunker's minimum chunk size.
    pub(super) small: u64,
    pub(super) force: bool,
    pub(super) slots: AtomicUsize,
    pub(super) hardlinks: Mutex<HashMap<(u64, u64), usize>>,
    pub(super) summary: Mutex<Summary>,
    pub(super) errors: Mutex<Vec<String>>,
    pub(super) progress: &'s Progress,
}

/// Paths as a trie from the filesystem root; a path inside another one is dropped.
pub(super) fn build_top(paths: &[PathBuf]) -> Result<Top> {
    let mut paths: Vec<PathBuf> = paths.to_vec();
    paths.sort();
    paths.dedup();
    if paths.is_empty() {
        return Err(Error::Invalid("nothing to back up".into()));
    }
    let mut kept: Vec<PathBuf> = Vec::new();
    for p in paths {
        if !p.is_absolute() {
            return Err(Error::Invalid(format!("{}: not an absolute path", p.display())));
        }
        if !kept.iter().any(|k| p.starts_with(k)) {
            kept.push(p);
        }
    }
    if kept.iter().any(|p| p == Path::new("/")) {
        return Ok(Top::Walk(PathBuf::from("/")));
    }
    let mut root = BTreeMap::new();
    for p in kept {
        let comps: Vec<Vec<u8>> = p.components().skip(1).map(|c| c.as_os_str().as_bytes().to_vec()).collect();
        let mut map = &mut root;
        for (i, c) in comps.iter().enumerate() {
            if i + 1 == comps.len() {
                map.insert(c.clone(), Top::Walk(p.clone()));
                break;
            }
            let e = map.entry(c.clone()).or_insert_with(|| Top::Inner(BTreeMap::new()));
            match e {
                Top::Inner(m) => map = m,
                Top::Walk(_) => break,
            }
        }
    }
    Ok(Top::Inner(root))
}

/// A walk of one subdirectory, handed to an idle walker thread.
type Job<'a> = Box<dyn FnOnce() + Send + 'a>;

/// Hands jobs to idle walker threads. A rendezvous channel: a job is taken only by a
/// thread waiting for one, never queued, so a walker waiting for its subdirectories'
/// results never waits for a job no thread will run. (A thread per subdirectory cost a
/// stack mapping, a start and an exit each: 5% of an unchanged re-backup's CPU.)
type Idle<'a> = Sender<Job<'a>>;

impl<'s, 'r, S: Source + ?Sized> Walker<'s, 'r, S> {
    /// Walks `top` on [`WALKERS`] threads; the root's entries.
    pub(super) fn walk(&self, top: &Top, parent: Option<&Tree>) -> Result<Vec<Entry>> {
        std::thread::scope(|ws| {
            let (idle, jobs) = bounded::<Job<'_>>(0);
            for _ in 1..WALKERS {
                let jobs = jobs.clone();
                // A job that panics drops its result's sender: the directory's walker
                // gets an error for it. The thread goes on (unjoined, a panic would make
                // the scope panic instead of the backup failing).
                // The walk recurses once per directory level: the deep stack the CLI's and
                // the daemon's job threads have (reserved, not committed).
                let spawned =
                    std::thread::Builder::new().stack_size(cairn_repo::check::WALK_STACK).spawn_scoped(ws, move || {
                        jobs.iter().for_each(|job| {
                            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                        })
                    });
                if spawned.is_err() {
                    // Fewer walker threads: the walk goes on with those there are.
                    break;
                }
            }
            drop(jobs);
            // The walker threads end when `idle` (and every job's copy) is dropped.
            self.walk_top(&idle, top, Path::new("/"), parent)
        })
    }

    fn error(&self, e: String) {
        self.errors.lock().unwrap_or_else(|p| p.into_inner()).push(e);
    }

    fn count(&self, f: impl FnOnce(&mut Summary)) {
        f(&mut self.summary.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// The root's children.
    fn walk_top<'a>(&'a self, idle: &Idle<'a>, top: &Top, path: &Path, parent: Option<&Tree>) -> Result<Vec<Entry>> {
        match top {
            Top::Walk(p) => {
                let n = self.source.node(p, b"").map_err(|e| Error::io(p.display().to_string(), e))?;
                if n.kind != NodeKind::Dir {
                    return Err(Error::Invalid(format!("{}: the root must be a directory", p.display())));
                }
                self.walk_children(idle, p, parent)
            }
            Top::Inner(map) => {
                let mut out = Vec::new();
                for (name, sub) in map {
                    let p = path.join(OsStr::from_bytes(name));
                    let node = self.source.node(&p, name).map_err(|e| Error::io(p.display().to_string(), e))?;
                    let pnode = parent.and_then(|t| t.find(name));
                    match sub {
                        Top::Walk(_) => {
                            if let Some(e) = self.walk_entry(idle, &|| p.clone(), node, pnode)? {
                                out.push(e);
                            }
                        }
                        Top::Inner(_) => {
                            if node.kind != NodeKind::Dir {
                                return Err(Error::Invalid(format!("{}: not a directory", p.display())));
                            }
                            let ptree = self.parent_subtree(pnode);
                            let children = self.walk_top(idle, sub, &p, ptree.as_ref().map(|(_, t)| t))?;
                            self.count(|s| s.dirs += 1);
                            let dir = self.hand_over(self.dir_ids.fetch_add(1, Ordering::Relaxed), children, ptree)?;
                            out.push(Entry::Dir { node, dir });
                        }
                    }
                }
                Ok(out)
            }
        }
    }

    /// Gives a listed directory's entries to the tree writer, which writes its tree once
    /// its files are read; returns the directory's number.
    pub(super) fn hand_over(&self, dir: DirId, entries: Vec<Entry>, parent: Option<(TreeId, Tree)>) -> Result<DirId> {
        self.trees
            .send(Event::Dir(dir, entries, parent))
            .map_err(|_| Error::Internal("the tree writer stopped".into()))?;
        Ok(dir)
    }

    fn parent_subtree(&self, pnode: Option<&Node>) -> Option<(TreeId, Tree)> {
        let p = pnode?;
        if p.kind != NodeKind::Dir {
            return None;
        }
        let id = p.subtree?;
        self.saver.load_tree(id).ok().map(|t| (id, t))
    }

    fn walk_children<'a>(&'a self, idle: &Idle<'a>, path: &Path, parent: Option<&Tree>) -> Result<Vec<Entry>> {
        if self.progress.stop.load(Ordering::Relaxed) {
            return Err(Error::Stopped);
        }
        // Under --force nothing is taken from the parent, metadata included.
        let entries = match self.source.read_dir(path, parent.filter(|_| !self.force)) {
            Ok(e) => e,
            Err(e) => {
                self.error(format!("{}: {e}", path.display()));
                return Ok(Vec::new());
            }
        };
        // Short-lived, one per entry of one directory: boxing would cost an allocation each.
        #[allow(clippy::large_enum_variant)]
        enum Slot {
            Done(Entry),
            Running(Receiver<Result<Option<Entry>>>),
        }
        let mut out = Vec::with_capacity(entries.len());
        // An entry's full path is built only when needed (a directory to walk, a file to
        // read): an unchanged file needs none.
        let full = |name: &[u8]| path.join(OsStr::from_bytes(name));
        for (name, node) in entries {
            match node {
                Ok(node) => {
                    let pnode = parent.and_then(|t| t.find(&name));
                    // A subdirectory goes to an idle walker thread if there is one.
                    if node.kind == NodeKind::Dir {
                        let (done, result) = bounded(1);
                        let (p, pnode, next) = (full(&name), pnode.cloned(), idle.clone());
                        let job: Job<'a> = Box::new(move || {
                            let _ = done.send(self.walk_entry(&next, &|| p.clone(), node, pnode.as_ref()));
                        });
                        match idle.try_send(job) {
                            Ok(()) => out.push(Slot::Running(result)),
                            Err(e) => {
                                // None idle: walked here.
                                (e.into_inner())();
                                match result.try_recv() {
                                    Ok(r) => out.extend(r?.map(Slot::Done)),
                                    Err(_) => return Err(Error::Internal("a walk job gave no result".into())),
                                }
                            }
                        }
                        continue;
                    }
                    if let Some(e) = self.walk_entry(idle, &|| full(&name), node, pnode)? {
                        out.push(Slot::Done(e));
                    }
                }
                Err(e) => self.error(format!("{}: {e}", full(&name).display())),
            }
        }
        let mut done = Vec::with_capacity(out.len());
        for s in out {
            match s {
                Slot::Done(e) => done.push(e),
                Slot::Running(result) => {
                    // No result: the job panicked on its walker thread.
                    let r = result.recv().map_err(|_| Error::Internal("a walker thread panicked".into()))?;
                    if let Some(e) = r? {
                        done.push(e);
                    }
                }
            }
        }
        Ok(done)
    }

    fn walk_entry<'a>(
        &'a self,
        idle: &Idle<'a>,
        path: &dyn Fn() -> PathBuf,
        mut node: Node,
        pnode: Option<&Node>,
    ) -> Result<Option<Entry>> {
        match node.kind {
            NodeKind::Dir => {
                self.count(|s| s.dirs += 1);
                let ptree = self.parent_subtree(pnode);
                let children = self.walk_children(idle, &path(), ptree.as_ref().map(|(_, t)| t))?;
                let dir = self.hand_over(self.dir_ids.fetch_add(1, Ordering::Relaxed), children, ptree)?;
                Ok(Some(Entry::Dir { node, dir }))
            }
            NodeKind::File => {
                self.progress.files_total.fetch_add(1, Ordering::Relaxed);
                self.count(|s| s.total_bytes = s.total_bytes.saturating_add(node.size));
                // Held from the lookup to the claim of a slot: two names of one inode
                // walked at the same moment by two threads are read once.
                let mut links = (node.links > 1).then(|| self.hardlinks.lock().unwrap_or_else(|p| p.into_inner()));
                if let Some(l) = &links {
                    if let Some(&slot) = l.get(&(node.device, node.inode)) {
                        drop(links);
                        // Another name of an inode already being read: never read twice.
                        match pnode {
                            Some(p) if unchanged(&node, p) => self.count(|s| s.files_unmodified += 1),
                            Some(_) => self.count(|s| s.files_changed += 1),
                            None => self.count(|s| s.files_new += 1),
                        }
                        self.progress.files_done.fetch_add(1, Ordering::Relaxed);
                        return Ok(Some(Entry::File { node, slot }));
                    }
                }
                if let Some(p) = pnode {
                    if !self.force && unchanged(&node, p) && p.content.iter().all(|b| self.saver.is_known(b)) {
                        node.content = p.content.clone();
                        self.count(|s| s.files_unmodified += 1);
                        self.progress.files_done.fetch_add(1, Ordering::Relaxed);
                        return Ok(Some(Entry::Leaf(node)));
                    }
                    self.count(|s| s.files_changed += 1);
                } else {
                    self.count(|s| s.files_new += 1);
                }
                self.count(|s| s.bytes_read = s.bytes_read.saturating_add(node.size));
                self.progress.bytes_total.fetch_add(node.size, Ordering::Relaxed);
                let slot = self.slots.fetch_add(1, Ordering::Relaxed);
                if let Some(mut l) = links.take() {
                    l.insert((node.device, node.inode), slot);
                }
                if self.saver.failed() {
                    // The repository write failed: stop feeding the readers.
                    return Ok(None);
                }
                let segments = node.size.div_ceil(SEGMENT).clamp(1, u32::MAX as u64) as u32;
                let path = path();
                let queue = if node.size <= self.small {
                    // A small file is one read that waits for the disk, and a reader
                    // that has read it then waits for a packer: while large files keep
                    // the packers busy the small-file readers stand still, and once the
                    // large files are done the packers wait for small reads that come in
                    // six at a time. Asked for now, the reads are under way by the time a
                    // reader gets to the file, with as many in flight as the queue holds.
                    if node.size > 0 {
                        self.source.prefetch(&path, &node);
                    }
                    &self.small_jobs
                } else {
                    &self.jobs
                };
                for segment in 0..segments {
                    let job = FileJob { slot, segment, segments, path: path.clone(), before: node.clone() };
                    if queue.send(job).is_err() {
                        self.error(format!("{}: readers stopped", path.display()));
                        break;
                    }
                }
                Ok(Some(Entry::File { node, slot }))
            }
            _ => {
                self.count(|s| s.others += 1);
                Ok(Some(Entry::Leaf(node)))
            }
        }
    }
}

fn unchanged(n: &Node, p: &Node) -> bool {
    p.kind == NodeKind::File && n.size == p.size && n.mtime == p.mtime && n.ctime == p.ctime && n.inode == p.inode
}

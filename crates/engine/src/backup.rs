//! The backup pipeline (see the crate docs for the stages).
//!
//! Plan: the walker lists each directory, compares it with the parent snapshot's tree and
//! hands the files to read to the readers, then the directory's entries to the tree
//! writer. The tree writer (one thread) writes a directory's tree as soon as its files are
//! read and its subdirectories written, so memory holds the directories in progress, not
//! the whole tree: a backup of a million files needs no more memory than one of a
//! thousand (bench/SCALE.md). Unchanged files (same size, mtime, ctime and inode as in the
//! parent snapshot, and every content blob still indexed) are not opened at all.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use cairn_chunker::Chunker;
use cairn_format::magic::SNAPSHOT_VERSION;
use cairn_format::snapshot::{Snapshot, Summary};
use cairn_format::tree::{Node, NodeKind, Tree};
use cairn_format::{BlobId, BlobType, SnapshotId, TreeId};
use cairn_repo::{BlobSaver, Repository, SaverStats, WorkerSaver};
use crossbeam_channel::{bounded, unbounded, Receiver, Sender};

use crate::{Error, Result, Source};

/// Live counters for a progress display. All relaxed atomics: approximate by design.
#[derive(Debug, Default)]
pub struct Progress {
    pub files_total: AtomicU64,
    pub bytes_total: AtomicU64,
    pub files_done: AtomicU64,
    pub bytes_done: AtomicU64,
    pub walk_done: AtomicBool,
    /// Set by another thread to stop the backup (a job past its time limit): readers and
    /// the walk stop at their next step and `run` returns [`Error::Stopped`].
    pub stop: AtomicBool,
    /// The files being read now and since when (a display shows one that is slow).
    pub reading: Mutex<HashMap<u64, (PathBuf, Instant)>>,
}

impl Progress {
    /// The file that has been read the longest, if that is longer than `slow`: what a
    /// display names while a large or slow file holds the backup up.
    pub fn slow_file(&self, slow: std::time::Duration) -> Option<PathBuf> {
        let r = self.reading.lock().unwrap_or_else(|p| p.into_inner());
        r.values().min_by_key(|(_, t)| *t).filter(|(_, t)| t.elapsed() >= slow).map(|(p, _)| p.clone())
    }
}

#[derive(Debug, Clone)]
pub struct BackupOptions {
    /// Absolute paths to back up.
    pub paths: Vec<PathBuf>,
    /// Root tree of the parent snapshot, for change detection.
    pub parent: Option<TreeId>,
    /// Read every file even when the parent says it is unchanged.
    pub force: bool,
    /// Reader and packer threads each (default: the number of cores).
    pub threads: usize,
    /// Concurrent uploads.
    pub uploads: usize,
    /// zstd level for new data (0: none); `None`: the repository's `compression_level`.
    pub compression: Option<i32>,
}

#[derive(Debug)]
pub struct BackupOutcome {
    pub tree: TreeId,
    pub summary: Summary,
    pub stats: SaverStats,
    /// Files and directories that could not be read (the snapshot is partial).
    pub errors: Vec<String>,
    /// Files that changed while being read (stored as read).
    pub warnings: Vec<String>,
}

/// What a snapshot says of where it came from, besides its content: the same fields for
/// every kind of backup (files, streams, SQLite, PostgreSQL base backups), filled by the
/// edge that asks for the backup and written by [`BackupOutcome::snapshot`] only.
#[derive(Debug, Clone, Default)]
pub struct Provenance {
    pub host: String,
    /// RFC 3339 with offset.
    pub time: String,
    pub tags: Vec<String>,
    pub label: Option<String>,
    /// The policy source (`[source.NAME]`) and catalog job that made it.
    pub source: Option<String>,
    pub job: Option<String>,
    /// The writer's audit chain head (format.md §12.3).
    pub audit: Option<cairn_format::audit::Anchor>,
}

/// The OS user a snapshot records as its maker: uid, gid and name.
pub type Maker = (u32, u32, String);

impl BackupOutcome {
    /// The snapshot document of this backup: `kind` (`files`, `stdin`, `sqlite`,
    /// `postgres`), the sorted `paths` it covers and its `parent`. Partial when some files
    /// could not be read. The caller adds kind-specific facts (a base backup's
    /// `postgres`) before saving it.
    pub fn snapshot(
        &self,
        p: &Provenance,
        maker: Maker,
        kind: &str,
        paths: Vec<String>,
        parent: Option<SnapshotId>,
    ) -> Snapshot {
        let (uid, gid, username) = maker;
        Snapshot {
            version: SNAPSHOT_VERSION,
            time: p.time.clone(),
            hostname: p.host.clone(),
            username,
            uid,
            gid,
            paths,
            tags: p.tags.clone(),
            label: p.label.clone(),
            tree: self.tree,
            parent,
            kind: kind.into(),
            partial: !self.errors.is_empty(),
            original: None,
            summary: self.summary.clone(),
            program_version: format!("cairn {}", env!("CARGO_PKG_VERSION")),
            postgres: None,
            source: p.source.clone(),
            job: p.job.clone(),
            audit: p.audit.clone(),
        }
    }
}

/// Files larger than this are read as several segments, each chunked on its own (a chunk
/// never spans a segment boundary), so that two readers share one large file. Dedup loses
/// at most a chunk per segment when content shifts; unchanged files chunk identically.
pub const SEGMENT: u64 = 256 * 1024 * 1024;

struct FileJob {
    slot: usize,
    /// This job reads `[segment * SEGMENT, ..)`, up to `SEGMENT` bytes, or to the end
    /// of the file for the last segment.
    segment: u32,
    segments: u32,
    path: PathBuf,
    before: Node,
}

#[derive(Clone)]
struct FileDone {
    content: Vec<BlobId>,
    size: u64,
}

/// A directory handed to the tree writer, numbered by the walker.
type DirId = usize;
/// The snapshot's root directory (the paths' common parent).
const ROOT: DirId = 0;

enum Entry {
    /// A subdirectory, handed to the tree writer as `dir`: its subtree comes from there.
    Dir {
        node: Node,
        dir: DirId,
    },
    /// A file being read as `slot`: its content comes from the readers.
    File {
        node: Node,
        slot: usize,
    },
    Leaf(Node),
}

/// What the tree writer receives: a directory's entries (from the walker) or a reader's
/// outcome for one segment of one file.
enum Event {
    /// A directory's entries, with its tree in the parent snapshot if it had one.
    Dir(DirId, Vec<Entry>, Option<(TreeId, Tree)>),
    File(JobResult),
}

enum Top {
    Walk(PathBuf),
    Inner(BTreeMap<Vec<u8>, Top>),
}

pub struct Archiver<'a, S: Source + ?Sized> {
    repo: &'a Repository,
    source: &'a S,
    opts: BackupOptions,
    progress: &'a Progress,
}

/// The walk runs on up to this many threads: sibling directories are walked in parallel,
/// which matters most on a cold cache, where every `lstat` may wait for the disk.
const WALKERS: usize = 6;

/// Readers of files no larger than one chunk's minimum size, besides the `threads` readers
/// of larger ones. On a cold cache a small file costs an `open` and one read that each
/// wait for the disk, not CPU: with two readers, a tree of /usr (48,000 files) backed up
/// at 5.4 s where eight took 3.8 s. A small-file reader holds at most one such file
/// (256 KiB by default), so these threads cost little memory; a large-file reader holds the
/// chunker's 8 MiB window, which is why those stay at one per core. (A stream, whose size
/// is unknown, also lands on a small-file reader and grows that reader's window like a
/// large file's: one per backup.)
const SMALL_READERS: usize = 6;

struct Walker<'s, 'r, S: Source + ?Sized> {
    source: &'s S,
    saver: &'s BlobSaver<'r>,
    /// To the tree writer: each directory's entries once listed.
    trees: Sender<Event>,
    dir_ids: AtomicUsize,
    jobs: Sender<FileJob>,
    /// Jobs of single-chunk files (see [`SMALL_READERS`]).
    small_jobs: Sender<FileJob>,
    /// Files up to this size go to `small_jobs`: the chunker's minimum chunk size.
    small: u64,
    force: bool,
    slots: AtomicUsize,
    hardlinks: Mutex<HashMap<(u64, u64), usize>>,
    summary: Mutex<Summary>,
    errors: Mutex<Vec<String>>,
    progress: &'s Progress,
}

impl<'a, S: Source + ?Sized> Archiver<'a, S> {
    pub fn new(repo: &'a Repository, source: &'a S, opts: BackupOptions, progress: &'a Progress) -> Self {
        Archiver { repo, source, opts, progress }
    }

    pub fn run(self) -> Result<BackupOutcome> {
        let start = Instant::now();
        let repo = self.repo;
        let mut index = repo.load_index_for_writing()?;
        let recovered = repo.recover_unindexed(&mut index)?;
        let threads = self.opts.threads.max(1);
        let saver =
            BlobSaver::new(repo, index, recovered, self.opts.uploads.max(1)).with_compression(self.opts.compression);
        let top = build_top(&self.opts.paths)?;
        let worker_errors: Mutex<Vec<String>> = Mutex::new(Vec::new());
        let warnings: Mutex<Vec<String>> = Mutex::new(Vec::new());

        let walked = std::thread::scope(|s| -> Result<(TreeId, Summary, Vec<String>)> {
            let (job_tx, job_rx) = bounded::<FileJob>(1024);
            let (small_tx, small_rx) = bounded::<FileJob>(1024);
            let (chunk_tx, chunk_rx) = bounded::<(BlobId, Vec<u8>)>(threads * 2);
            // Unbounded: the tree writer never blocks a reader or the walker, and it keeps
            // up (a tree per directory); what waits in it is results, not data.
            let (res_tx, res_rx) = unbounded::<Event>();
            let _close = saver.close_on_drop();
            s.spawn(|| saver.run_uploader());
            let writer = {
                let saver = &saver;
                s.spawn(move || TreeWriter::new(repo, saver)?.run(res_rx))
            };
            let started = (|| -> Result<()> {
                for _ in 0..threads {
                    let w = saver.worker()?;
                    let rx = chunk_rx.clone();
                    let errs = &worker_errors;
                    let saver = &saver;
                    s.spawn(move || pack_loop(w, rx, errs, saver));
                }
                let readers =
                    std::iter::repeat_n(&job_rx, threads).chain(std::iter::repeat_n(&small_rx, SMALL_READERS));
                for rx in readers {
                    let (jobs, chunks, results) = (rx.clone(), chunk_tx.clone(), res_tx.clone());
                    let (saver, source, progress, warnings) = (&saver, self.source, self.progress, &warnings);
                    let params = repo.chunker_params();
                    s.spawn(move || {
                        read_loop(repo, saver, source, progress, Chunker::new(params), jobs, chunks, results, warnings)
                    });
                }
                Ok(())
            })();
            drop((chunk_tx, chunk_rx, job_rx, small_rx));
            let walked = started.and_then(|_| {
                let w = Walker {
                    source: self.source,
                    saver: &saver,
                    trees: res_tx,
                    dir_ids: AtomicUsize::new(ROOT + 1),
                    jobs: job_tx,
                    small_jobs: small_tx,
                    small: u64::from(repo.chunker_params().min_size),
                    force: self.opts.force,
                    slots: AtomicUsize::new(0),
                    hardlinks: Mutex::new(HashMap::new()),
                    summary: Mutex::new(Summary::default()),
                    errors: Mutex::new(Vec::new()),
                    progress: self.progress,
                };
                let parent_root = self.opts.parent.and_then(|t| saver.load_tree(t).ok().map(|tree| (t, tree)));
                let root = std::thread::scope(|ws| {
                    let (idle, jobs) = bounded::<Job<'_>>(0);
                    for _ in 1..WALKERS {
                        let jobs = jobs.clone();
                        ws.spawn(move || jobs.iter().for_each(|job| job()));
                    }
                    drop(jobs);
                    // The walker threads end when `idle` (and every job's copy) is dropped.
                    w.walk_top(&idle, &top, Path::new("/"), parent_root.as_ref().map(|(_, t)| t))
                })
                .and_then(|entries| w.hand_over(ROOT, entries, parent_root));
                self.progress.walk_done.store(true, Ordering::Relaxed);
                let Walker { jobs, small_jobs, trees, summary, errors, .. } = w;
                // The tree writer ends once the walker and every reader are done with it.
                drop((jobs, small_jobs, trees));
                root.map(|_| (summary.into_inner().unwrap_or_default(), errors.into_inner().unwrap_or_default()))
            });
            let written = writer.join().map_err(|_| Error::Internal("the tree writer panicked".into()));
            // `_close` drops here: the uploader finishes, then the scope joins.
            // A failed tree write stops the walk too: its own error is the one to report.
            match (walked, written) {
                (_, Err(e)) | (_, Ok(Err(e))) | (Err(e), _) => Err(e),
                (Ok(_), Ok(Ok(Written { root: None, .. }))) => {
                    Err(Error::Internal("the backup ended with directories whose files were not all read".into()))
                }
                (Ok((mut summary, mut errors)), Ok(Ok(w @ Written { root: Some(tree), .. }))) => {
                    // Sizes as read, not as listed (a file may grow or shrink meanwhile).
                    summary.total_bytes = summary.total_bytes.saturating_sub(w.size_listed).saturating_add(w.size_read);
                    errors.extend(w.errors);
                    Ok((tree, summary, errors))
                }
            }
        });
        if self.progress.stop.load(Ordering::Relaxed) {
            return Err(Error::Stopped);
        }
        let (tree, mut summary, errors) = walked?;
        let worker_errors = worker_errors.into_inner().unwrap_or_default();
        if let Some(e) = worker_errors.first() {
            return Err(Error::Invalid(e.clone()));
        }
        let (stats, _) = saver.finish()?;
        summary.data_added = stats.data_added;
        summary.bytes_added = stats.bytes_added;
        summary.blobs_added = stats.blobs_added;
        summary.duration_secs = start.elapsed().as_secs_f64();
        // What the readers actually read (a stream's size is unknown until its end).
        summary.bytes_read = self.progress.bytes_done.load(Ordering::Relaxed);
        summary.errors = errors.clone();
        Ok(BackupOutcome { tree, summary, stats, errors, warnings: warnings.into_inner().unwrap_or_default() })
    }
}

fn pack_loop(
    mut w: WorkerSaver<'_, '_>,
    rx: Receiver<(BlobId, Vec<u8>)>,
    errs: &Mutex<Vec<String>>,
    saver: &BlobSaver<'_>,
) {
    let mut failed = false;
    for (id, data) in rx.iter() {
        if failed || saver.failed() {
            continue; // keep draining so readers never block
        }
        if let Err(e) = w.save(BlobType::Data, id, &data) {
            errs.lock().unwrap_or_else(|p| p.into_inner()).push(e.to_string());
            saver.fail(e);
            failed = true;
        }
    }
    if !failed {
        if let Err(e) = w.flush() {
            errs.lock().unwrap_or_else(|p| p.into_inner()).push(e.to_string());
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn read_loop<S: Source + ?Sized>(
    repo: &Repository,
    saver: &BlobSaver<'_>,
    source: &S,
    progress: &Progress,
    mut chunker: Chunker,
    jobs: Receiver<FileJob>,
    chunks: Sender<(BlobId, Vec<u8>)>,
    results: Sender<Event>,
    warnings: &Mutex<Vec<String>>,
) {
    for job in jobs.iter() {
        let key = (job.slot as u64) << 20 | job.segment as u64;
        progress.reading.lock().unwrap_or_else(|p| p.into_inner()).insert(key, (job.path.clone(), Instant::now()));
        let r = (|| -> std::io::Result<FileDone> {
            let offset = job.segment as u64 * SEGMENT;
            let f = source.open(&job.path, &job.before, offset)?;
            let last = job.segment + 1 >= job.segments;
            let mut f: Box<dyn std::io::Read + Send> = if last { f } else { Box::new(std::io::Read::take(f, SEGMENT)) };
            let min = chunker.params().min_size as usize;
            if job.segments == 1 && job.before.size <= min as u64 {
                if saver.failed() {
                    return Err(std::io::Error::other("backup aborted: the repository write failed"));
                }
                if progress.stop.load(Ordering::Relaxed) {
                    return Err(std::io::Error::other("backup stopped"));
                }
                // One chunk at most (the chunker cuts nothing at or under its minimum):
                // read whole into a buffer of its size, which then goes to the packer as is.
                let mut head = Vec::with_capacity(job.before.size as usize + 1);
                std::io::Read::read_to_end(&mut std::io::Read::take(&mut f, min as u64 + 1), &mut head)?;
                if head.len() <= min {
                    let size = head.len() as u64;
                    progress.bytes_done.fetch_add(size, Ordering::Relaxed);
                    if head.is_empty() {
                        return Ok(FileDone { content: Vec::new(), size });
                    }
                    let id = repo.blob_id(&head);
                    if !saver.is_known(&id) && chunks.send((id, head)).is_err() {
                        return Err(std::io::Error::other("backup aborted"));
                    }
                    return Ok(FileDone { content: vec![id], size });
                }
                // It grew since it was listed: chunk it as any other file.
                f = Box::new(std::io::Read::chain(std::io::Cursor::new(head), f));
            }
            chunker.start();
            // Sized from st_size, which a sparse file can make absurd: capped.
            let mut content = Vec::with_capacity(((job.before.size >> 20) as usize).min(4096) + 1);
            let mut size = 0u64;
            while let Some(chunk) = chunker.next_chunk(&mut f)? {
                if saver.failed() {
                    return Err(std::io::Error::other("backup aborted: the repository write failed"));
                }
                if progress.stop.load(Ordering::Relaxed) {
                    return Err(std::io::Error::other("backup stopped"));
                }
                let id = repo.blob_id(chunk);
                size += chunk.len() as u64;
                progress.bytes_done.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                if !saver.is_known(&id) && chunks.send((id, chunk.to_vec())).is_err() {
                    return Err(std::io::Error::other("backup aborted"));
                }
                content.push(id);
            }
            Ok(FileDone { content, size })
        })();
        progress.reading.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
        let last = job.segment + 1 >= job.segments;
        if last {
            progress.files_done.fetch_add(1, Ordering::Relaxed);
        }
        if last && r.is_ok() && source.changed_since(&job.path, &job.before) {
            warnings
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(format!("{}: changed while being read", job.path.display()));
        }
        let r = r.map_err(|e| format!("{}: {e}", job.path.display()));
        if results.send(Event::File((job.slot, job.segment, job.segments, r))).is_err() {
            return;
        }
    }
}

/// Paths as a trie from the filesystem root; a path inside another one is dropped.
fn build_top(paths: &[PathBuf]) -> Result<Top> {
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
    fn hand_over(&self, dir: DirId, entries: Vec<Entry>, parent: Option<(TreeId, Tree)>) -> Result<DirId> {
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
                    // No result: the walker thread panicked (the scope reports it).
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
                if node.links > 1 {
                    let seen = self
                        .hardlinks
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get(&(node.device, node.inode))
                        .copied();
                    if let Some(slot) = seen {
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
                if node.links > 1 {
                    self.hardlinks.lock().unwrap_or_else(|p| p.into_inner()).insert((node.device, node.inode), slot);
                }
                if self.saver.failed() {
                    // The repository write failed: stop feeding the readers.
                    return Ok(None);
                }
                let segments = node.size.div_ceil(SEGMENT).clamp(1, u32::MAX as u64) as u32;
                let path = path();
                let queue = if node.size <= self.small { &self.small_jobs } else { &self.jobs };
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

/// (slot, segment, segments, outcome) of one reader job.
type JobResult = (usize, u32, u32, std::result::Result<FileDone, String>);

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
struct Written {
    root: Option<TreeId>,
    errors: Vec<String>,
    size_listed: u64,
    size_read: u64,
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
struct TreeWriter<'a, 'r> {
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
    fn new(repo: &'a Repository, saver: &'a BlobSaver<'r>) -> Result<Self> {
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

    fn run(mut self, events: Receiver<Event>) -> Result<Written> {
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

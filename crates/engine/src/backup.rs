//! The backup pipeline (see the crate docs for the stages).
//!
//! Plan: the walker lists each directory, compares it with the parent snapshot's tree and
//! hands the files to read to the readers, then the directory's entries to the tree
//! writer. The tree writer (one thread) writes a directory's tree as soon as its files are
//! read and its subdirectories written, so memory holds the directories in progress, not
//! the whole tree: a backup of a million files needs no more memory than one of a
//! thousand (bench/SCALE.md). Unchanged files (same size, mtime, ctime and inode as in the
//! parent snapshot, and every content blob still indexed) are not opened at all.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use cairn_chunker::Chunker;
use cairn_format::magic::SNAPSHOT_VERSION;
use cairn_format::snapshot::{Snapshot, Summary};
use cairn_format::tree::{Node, Tree};
use cairn_format::{BlobId, BlobType, SnapshotId, TreeId};
use cairn_repo::{BlobSaver, Repository, SaverStats, WorkerSaver};
use crossbeam_channel::{bounded, unbounded, Receiver, Sender};

use crate::{Error, Result, Source};

mod trees;
mod walk;

use trees::{JobResult, TreeWriter, Written};
use walk::{build_top, Walker};

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

pub struct Archiver<'a, S: Source + ?Sized> {
    repo: &'a Repository,
    source: &'a S,
    opts: BackupOptions,
    progress: &'a Progress,
}

/// Readers of files no larger than one chunk's minimum size, besides the `threads` readers
/// of larger ones. On a cold cache a small file costs an `open` and one read that each
/// wait for the disk, not CPU: with two readers, a tree of /usr (48,000 files) backed up
/// at 5.4 s where eight took 3.8 s. A small-file reader holds at most one such file
/// (256 KiB by default), so these threads cost little memory; a large-file reader holds the
/// chunker's 8 MiB window, which is why those stay at one per core. (A stream, whose size
/// is unknown, also lands on a small-file reader and grows that reader's window like a
/// large file's: one per backup.)
const SMALL_READERS: usize = 6;

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
            // A chunk waiting per packer is enough to keep the packers busy; each one
            // waiting is up to 4 MiB held. With two per packer, the 2 GiB file's backup
            // peaked at 103-115 MiB (restic: 116); with one, 99-107 MiB, time within noise.
            let (chunk_tx, chunk_rx) = bounded::<(BlobId, Vec<u8>)>(threads);
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
                let root = w
                    .walk(&top, parent_root.as_ref().map(|(_, t)| t))
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

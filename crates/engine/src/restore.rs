//! Restore: plan, then execute.
//!
//! [`Restorer::plan`] walks the snapshot tree (validating every name: a hostile tree with
//! `..`, `/` or NUL in a name is refused before anything is written), applies the filter
//! and the overwrite policy, and groups the needed blobs by pack (the snapshot's trees are
//! read through a [`cairn_repo::TreeReader`]: their packs whole, once). Execution creates
//! the directories, then one thread creates and pre-sizes every file (so zero chunks
//! become holes) in the order the packs need them, while `threads` workers read each pack
//! once, with one ranged read spanning the blobs it needs, and write each blob at its
//! offsets in every file that holds it, once that file exists. Metadata comes last: file
//! attributes, hardlinks, symlinks and specials, then directory attributes deepest first,
//! so writing into a directory does not change its restored mtime.

use std::collections::HashMap;
use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use cairn_format::tree::{is_safe_name, Node, NodeKind};
use cairn_format::{BlobId, PackId, TreeId};
use cairn_repo::{Index, Repository};

use crate::{Error, Result};

/// A path below the restore target: validated names joined by `/` (no name contains `/`,
/// `..` or NUL, so this is unambiguous). One allocation per entry, not one per component.
pub type RelPath = Vec<u8>;

pub fn display(rel: &RelPath) -> String {
    format!("/{}", String::from_utf8_lossy(rel))
}

/// What is at a path of the target already.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Existing {
    Nothing,
    File { size: u64, mtime: i64 },
    Dir,
    Other,
}

/// Where a restore writes. Implementations must never follow a symlink inside the
/// target when creating or opening an entry.
pub trait Destination: Sync {
    fn existing(&self, rel: &RelPath) -> io::Result<Existing>;
    /// Whether nothing is at or below `rel` (absent, or an empty directory): then the plan
    /// need not ask [`Destination::existing`] for anything below it.
    fn fresh(&self, rel: &RelPath) -> io::Result<bool> {
        Ok(self.existing(rel)? == Existing::Nothing)
    }
    /// Creates a directory (and refuses a non-directory in the way).
    fn create_dir(&self, rel: &RelPath) -> io::Result<()>;
    /// Creates or truncates a regular file to `size` bytes (replacing what is there).
    fn create_file(&self, rel: &RelPath, size: u64) -> io::Result<()>;
    fn write_at(&self, rel: &RelPath, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Symlinks, FIFOs, devices, sockets.
    fn create_special(&self, rel: &RelPath, node: &Node) -> io::Result<()>;
    fn hardlink(&self, existing: &RelPath, new: &RelPath) -> io::Result<()>;
    /// Owner, mode, xattrs, times.
    fn set_metadata(&self, rel: &RelPath, node: &Node) -> io::Result<()>;
    fn open_read(&self, rel: &RelPath) -> io::Result<Box<dyn Read + Send>>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overwrite {
    Always,
    /// Skip files whose size and mtime already match (an interrupted restore resumes).
    IfChanged,
    Never,
}

/// Data workers for a restore: twice the cores (one reads a pack from the disk while the
/// other decodes and writes: a 2 GiB file restored cold on 2 cores, 2.2-2.5 s with 2
/// workers, 1.8-1.9 s with 4, at +30 MiB), the doubling only up to 8 (each holds a pack's
/// span), never fewer than the cores, nor than `connections` (the requests a remote store
/// keeps in flight).
pub fn default_threads(connections: usize) -> usize {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    cores.max((2 * cores).min(8)).max(connections).max(2)
}

pub struct RestoreOptions<'f> {
    pub overwrite: Overwrite,
    pub verify: bool,
    pub threads: usize,
    /// `(path as in the snapshot, is_dir) -> keep`.
    pub filter: &'f (dyn Fn(&str, bool) -> bool + Sync),
    /// Restore what grants privilege: device nodes, setuid/setgid bits on non-directories
    /// and file capabilities (`security.capability`). Off, they are left out with a
    /// warning: a snapshot is untrusted input, and a root restore "as a copy" of a device
    /// node or a setuid-root file would hand every local user root. Edges turn it on only
    /// when asked, or for a restore to `/`.
    pub privileged: bool,
}

/// Warnings listed one by one before they are only counted.
const MAX_WARNINGS: usize = 100;

/// Takes out of `n` what grants privilege (see [`RestoreOptions::privileged`]); false when
/// the whole node is left out.
fn strip_privilege(n: &mut Node, path: &str, warnings: &mut Warnings) -> bool {
    if matches!(n.kind, NodeKind::Chardev | NodeKind::Blockdev) {
        warnings.push(format!("{path}: device node not restored (--privileged restores device nodes)"));
        return false;
    }
    if n.kind != NodeKind::Dir && n.mode & 0o6000 != 0 {
        n.mode &= !0o6000;
        warnings.push(format!("{path}: setuid/setgid bit not restored (--privileged restores it)"));
    }
    let before = n.xattrs.len();
    n.xattrs.retain(|x| x.name.0 != b"security.capability");
    if n.xattrs.len() != before {
        warnings.push(format!("{path}: file capabilities not restored (--privileged restores them)"));
    }
    true
}

/// What a restore left out or could not create, as lines for the user: the first
/// [`MAX_WARNINGS`] in full, then a count.
#[derive(Debug, Default, Clone)]
pub struct Warnings {
    pub lines: Vec<String>,
    pub more: u64,
}

impl Warnings {
    fn push(&mut self, w: String) {
        if self.lines.len() < MAX_WARNINGS {
            self.lines.push(w);
        } else {
            self.more += 1;
        }
    }
}

struct PlannedFile {
    rel: RelPath,
    node: Node,
    /// Index in `files` of the first name of the same inode, when this one is a hardlink.
    link_to: Option<usize>,
    skip: bool,
}

/// A blob to fetch, where it is, and `(file, offset)` of every place it goes.
type NeededBlob = (BlobId, cairn_repo::Location, Vec<(usize, u64)>);

#[derive(Default)]
pub struct RestorePlan {
    dirs: Vec<(RelPath, Node)>,
    files: Vec<PlannedFile>,
    specials: Vec<(RelPath, Node)>,
    /// pack -> blobs needed from it with their targets `(file, offset)`.
    packs: Vec<(PackId, [u8; 32], Vec<NeededBlob>)>,
    pub files_total: u64,
    pub bytes_total: u64,
    pub files_skipped: u64,
    pub warnings: Warnings,
}

#[derive(Debug, Default, Clone)]
pub struct RestoreSummary {
    pub files: u64,
    pub dirs: u64,
    pub specials: u64,
    pub bytes_written: u64,
    pub files_skipped: u64,
    pub verified: u64,
    /// What was left out (privilege, see [`RestoreOptions::privileged`]) or could not be
    /// created (a device node without root); everything else was restored.
    pub warnings: Warnings,
}

pub struct Restorer<'a> {
    repo: &'a Repository,
    index: &'a Index,
}

impl<'a> Restorer<'a> {
    pub fn new(repo: &'a Repository, index: &'a Index) -> Self {
        Restorer { repo, index }
    }

    /// `root` is restored as the target itself; `prefix` is its path in the snapshot (for
    /// the filter and messages).
    /// `budget` bounds the entries planned (see [`crate::browse::Budget`]): a tree may
    /// reference one subtree many times, legitimately, and a hostile one can make that
    /// exponential; the plan holds every entry in memory.
    pub fn plan(
        &self,
        root: TreeId,
        prefix: &str,
        dest: &dyn Destination,
        opts: &RestoreOptions<'_>,
        budget: &mut crate::browse::Budget,
    ) -> Result<RestorePlan> {
        let mut plan = RestorePlan::default();
        // Every tree of the snapshot is loaded: their packs are read whole, once.
        let trees = cairn_repo::TreeReader::new(self.repo);
        let mut inodes: HashMap<(u64, u64), usize> = HashMap::new();
        let mut needs: HashMap<BlobId, Vec<(usize, u64)>> = HashMap::new();
        // Each directory goes with whether the target holds nothing at or below it (a
        // restore into a new directory): then nothing below needs looking up, which on a
        // tree of 50,000 files is 50,000 lookups that would all say "nothing".
        let fresh_root = dest.fresh(&Vec::new()).map_err(|e| Error::io(display(&Vec::new()), e))?;
        let mut stack: Vec<(TreeId, RelPath, String, usize, bool)> =
            vec![(root, Vec::new(), prefix.trim_end_matches('/').to_string(), 0, fresh_root)];
        while let Some((tid, rel, spath, depth, fresh)) = stack.pop() {
            // Paths are held whole per entry: depth must be bounded, or a deep chain of
            // trees costs memory quadratic in its depth.
            if depth > cairn_repo::check::MAX_DEPTH {
                return Err(Error::Damaged(format!(
                    "{spath}: trees nested deeper than {}: damaged or hostile snapshot",
                    cairn_repo::check::MAX_DEPTH
                )));
            }
            let tree = trees.load(self.index, tid)?;
            budget.spend(tree.nodes.len())?;
            for mut n in tree.nodes {
                if !is_safe_name(&n.name.0) {
                    return Err(Error::Unsafe(format!(
                        "entry {:?} in {}",
                        n.name,
                        if spath.is_empty() { "/" } else { &spath }
                    )));
                }
                let child_s = format!("{spath}/{}", n.name.lossy());
                let mut child = Vec::with_capacity(rel.len() + 1 + n.name.0.len());
                child.extend_from_slice(&rel);
                if !rel.is_empty() {
                    child.push(b'/');
                }
                child.extend_from_slice(&n.name.0);
                let is_dir = n.kind == NodeKind::Dir;
                if !(opts.filter)(&child_s, is_dir) {
                    continue;
                }
                if !opts.privileged && !strip_privilege(&mut n, &child_s, &mut plan.warnings) {
                    continue;
                }
                match n.kind {
                    NodeKind::Dir => {
                        let st =
                            n.subtree.ok_or_else(|| Error::Damaged(format!("{child_s}: directory without subtree")))?;
                        let fresh = fresh || dest.fresh(&child).map_err(|e| Error::io(display(&child), e))?;
                        stack.push((st, child.clone(), child_s, depth + 1, fresh));
                        plan.dirs.push((child, n));
                    }
                    NodeKind::File => {
                        let idx = plan.files.len();
                        let link_to = if n.links > 1 { inodes.get(&(n.device, n.inode)).copied() } else { None };
                        let ex = if fresh {
                            Existing::Nothing
                        } else {
                            dest.existing(&child).map_err(|e| Error::io(display(&child), e))?
                        };
                        if ex == Existing::Dir {
                            // Refused before anything is written (never replace a directory).
                            return Err(Error::Invalid(format!(
                                "{}: a directory is in the way of a file",
                                display(&child)
                            )));
                        }
                        let identical =
                            matches!(ex, Existing::File { size, mtime } if size == n.size && mtime == n.mtime);
                        let skip = match (opts.overwrite, &ex) {
                            (_, Existing::Nothing) => false,
                            (Overwrite::Never, _) => true,
                            (Overwrite::IfChanged, _) => identical,
                            (Overwrite::Always, _) => false,
                        };
                        if link_to.is_none() && n.links > 1 {
                            inodes.insert((n.device, n.inode), idx);
                        }
                        if link_to.is_none() {
                            let mut total = 0u64;
                            for b in &n.content {
                                let loc = self.index.get(b).ok_or(cairn_repo::Error::BlobNotIndexed(*b))?;
                                total = total.saturating_add(loc.raw_length as u64);
                            }
                            if total != n.size {
                                return Err(Error::Damaged(format!(
                                    "{child_s}: the snapshot says {} bytes but its content holds {total}: damaged or hostile tree",
                                    n.size
                                )));
                            }
                        }
                        plan.files_total += 1;
                        if skip {
                            plan.files_skipped += 1;
                        } else if link_to.is_none() {
                            plan.bytes_total = plan.bytes_total.saturating_add(n.size);
                            let mut off = 0u64;
                            for b in &n.content {
                                let loc = self.index.get(b).ok_or(cairn_repo::Error::BlobNotIndexed(*b))?;
                                needs.entry(*b).or_default().push((idx, off));
                                off += loc.raw_length as u64;
                            }
                        }
                        plan.files.push(PlannedFile { rel: child, node: n, link_to, skip });
                    }
                    _ => {
                        let ex = if fresh {
                            Existing::Nothing
                        } else {
                            dest.existing(&child).map_err(|e| Error::io(display(&child), e))?
                        };
                        if ex == Existing::Dir {
                            return Err(Error::Invalid(format!("{}: a directory is in the way", display(&child))));
                        }
                        // Under `never`, whatever is there stays; otherwise specials are cheap
                        // to recreate and are always restored.
                        if opts.overwrite == Overwrite::Never && ex != Existing::Nothing {
                            plan.files_skipped += 1;
                        } else {
                            plan.specials.push((child, n));
                        }
                    }
                }
            }
        }
        plan.dirs.sort_by(|a, b| a.0.cmp(&b.0));
        // Group by pack, blobs in pack order.
        let mut by_pack: HashMap<u32, Vec<NeededBlob>> = HashMap::new();
        for (b, targets) in needs {
            if let Some(loc) = self.index.get(&b) {
                by_pack.entry(loc.pack).or_default().push((b, *loc, targets));
            }
        }
        for (p, mut blobs) in by_pack {
            blobs.sort_by_key(|(_, l, _)| l.offset);
            let (id, salt) = self.index.pack(p);
            plan.packs.push((id, salt, blobs));
        }
        plan.packs.sort_by_key(|(id, ..)| *id);
        Ok(plan)
    }

    pub fn execute(
        &self,
        plan: RestorePlan,
        dest: &dyn Destination,
        opts: &RestoreOptions<'_>,
        progress: &AtomicU64,
    ) -> Result<RestoreSummary> {
        let mut sum =
            RestoreSummary { files_skipped: plan.files_skipped, warnings: plan.warnings.clone(), ..Default::default() };
        // Every pack must be there before any file is created or truncated: a missing pack
        // fails the restore while the target is still untouched.
        let present: std::collections::HashSet<String> = self
            .repo
            .block_on(self.repo.store().list(cairn_repo::layout::DATA))
            .map_err(cairn_repo::Error::from)?
            .into_iter()
            .map(|m| m.path)
            .collect();
        for (pack, ..) in &plan.packs {
            if !present.contains(&cairn_repo::layout::pack(pack)) {
                return Err(Error::Damaged(format!(
                    "pack {} is missing from the repository; nothing was restored (run 'cairn check')",
                    pack.short()
                )));
            }
        }
        for (rel, _) in &plan.dirs {
            dest.create_dir(rel).map_err(|e| Error::io(display(rel), e))?;
        }
        sum.dirs = plan.dirs.len() as u64;
        // Files are created (and pre-sized) by one thread in the order the packs need them,
        // while the data workers read packs in that same order: creating 50,000 files is
        // a serial third of a second that now overlaps the reads. One creator, because
        // ext4 allocates inodes under locks concurrent creators spin on (two creating
        // threads tripled the system time). A worker writes a file once it exists.
        let created: Vec<std::sync::atomic::AtomicBool> =
            plan.files.iter().map(|_| std::sync::atomic::AtomicBool::new(false)).collect();
        let creator_ended = std::sync::atomic::AtomicBool::new(false);
        let queue = Mutex::new(plan.packs.iter());
        let errors: Mutex<Vec<String>> = Mutex::new(Vec::new());
        let written = AtomicU64::new(0);
        // Writes into one file are serial in the kernel anyway (ext4 holds the inode's
        // lock through a buffered write) and a second writer spins there on a core the
        // others need for decoding: a waiter sleeps here instead. Striped by file.
        let turns: Vec<Mutex<()>> = (0..64).map(|_| Mutex::new(())).collect();
        let creation = std::thread::scope(|s| {
            let creator = s.spawn(|| -> Result<()> {
                // However the creator ends (an error, even a panic), waiting workers must
                // hear of it: they stop waiting once this is set and a file is not there.
                struct Ended<'a>(&'a std::sync::atomic::AtomicBool);
                impl Drop for Ended<'_> {
                    fn drop(&mut self) {
                        self.0.store(true, Ordering::Release);
                    }
                }
                let _ended = Ended(&creator_ended);
                let wanted = plan.packs.iter().flat_map(|(_, _, blobs)| blobs.iter().flat_map(|(_, _, t)| t.iter()));
                let rest = plan.files.iter().enumerate().filter(|(_, f)| !f.skip && f.link_to.is_none());
                let order = wanted.map(|(fi, _)| *fi).chain(rest.map(|(fi, _)| fi));
                for fi in order {
                    if created[fi].load(Ordering::Relaxed) {
                        continue;
                    }
                    let f = &plan.files[fi];
                    dest.create_file(&f.rel, f.node.size).map_err(|e| Error::io(display(&f.rel), e))?;
                    created[fi].store(true, Ordering::Release);
                }
                Ok(())
            });
            // Data, pack by pack, on worker threads pulling from a shared queue.
            for _ in 0..opts.threads.max(1) {
                s.spawn(|| loop {
                    let next = queue.lock().unwrap_or_else(|p| p.into_inner()).next();
                    let Some((pack, salt, blobs)) = next else { break };
                    let ready = |fi: usize| -> bool {
                        while !created[fi].load(Ordering::Acquire) {
                            if creator_ended.load(Ordering::Acquire) {
                                // Ended without creating it: it failed.
                                return created[fi].load(Ordering::Acquire);
                            }
                            std::thread::sleep(std::time::Duration::from_micros(200));
                        }
                        true
                    };
                    // Keep going: one damaged pack must not leave every other file empty.
                    if let Err(e) =
                        self.restore_pack(*pack, salt, blobs, &plan.files, dest, &turns, &written, progress, &ready)
                    {
                        errors.lock().unwrap_or_else(|p| p.into_inner()).push(e.to_string());
                    }
                });
            }
            creator.join().unwrap_or_else(|_| Err(Error::Internal("the file creator panicked".into())))
        });
        creation?;
        sum.bytes_written = written.into_inner();
        let errors = errors.into_inner().unwrap_or_default();
        if !errors.is_empty() {
            return Err(Error::Invalid(format!(
                "{} (and {} more errors); files that need those blobs are incomplete",
                errors[0],
                errors.len() - 1
            )));
        }
        // Verify before metadata: restored modes (0o000, no x on a directory) must not stop
        // a non-root user from reading back what was written.
        if opts.verify {
            for f in plan.files.iter().filter(|f| !f.skip && f.link_to.is_none()) {
                self.verify_file(dest, f)?;
                sum.verified += 1;
            }
        }
        for f in plan.files.iter() {
            if f.skip {
                continue;
            }
            if let Some(first) = f.link_to {
                // The first name is either freshly restored or already there and identical
                // (skipped): either way this name links to it.
                let target = &plan.files[first];
                dest.hardlink(&target.rel, &f.rel).map_err(|e| Error::io(display(&f.rel), e))?;
                sum.files += 1;
                continue;
            }
            dest.set_metadata(&f.rel, &f.node).map_err(|e| Error::io(display(&f.rel), e))?;
            sum.files += 1;
        }
        for (rel, n) in &plan.specials {
            match dest.create_special(rel, n) {
                Ok(()) => {}
                // A device node without root (or a FIFO on a filesystem without them):
                // say so and restore the rest, directory metadata included.
                Err(e) if n.kind != NodeKind::Symlink => {
                    sum.warnings.push(format!("{}: not restored: {e}", display(rel)));
                    continue;
                }
                Err(e) => return Err(Error::io(display(rel), e)),
            }
            if n.kind != NodeKind::Symlink {
                dest.set_metadata(rel, n).map_err(|e| Error::io(display(rel), e))?;
            } else {
                let _ = dest.set_metadata(rel, n);
            }
            sum.specials += 1;
        }
        for (rel, n) in plan.dirs.iter().rev() {
            dest.set_metadata(rel, n).map_err(|e| Error::io(display(rel), e))?;
        }
        Ok(sum)
    }

    #[allow(clippy::too_many_arguments)]
    fn restore_pack(
        &self,
        pack: PackId,
        salt: &[u8; 32],
        blobs: &[NeededBlob],
        files: &[PlannedFile],
        dest: &dyn Destination,
        turns: &[Mutex<()>],
        written: &AtomicU64,
        progress: &AtomicU64,
        ready: &dyn Fn(usize) -> bool,
    ) -> Result<()> {
        let (Some(first), Some(last)) = (blobs.first(), blobs.last()) else { return Ok(()) };
        let start = first.1.offset as u64;
        let end = last.1.offset as u64 + last.1.length as u64;
        let path = cairn_repo::layout::pack(&pack);
        let mut span =
            self.repo.block_on(self.repo.store().get(&path, Some(start..end))).map_err(cairn_repo::Error::from)?;
        for (id, loc, targets) in blobs {
            let s = (loc.offset as u64 - start) as usize;
            let ct = span
                .get_mut(s..s + loc.length as usize)
                .ok_or_else(|| Error::Damaged(format!("pack {} shorter than indexed", pack.short())))?;
            let data = self.repo.open_blob_in(id, salt, loc.offset, loc.raw_length, ct)?;
            let zero = data.iter().all(|&b| b == 0);
            for (fi, off) in targets {
                progress.fetch_add(data.len() as u64, Ordering::Relaxed);
                if zero {
                    continue; // the file was pre-sized: leave a hole
                }
                if !ready(*fi) {
                    return Err(Error::Invalid("files could not be created".into()));
                }
                let f = &files[*fi];
                let _turn = turns[*fi % turns.len()].lock().unwrap_or_else(|p| p.into_inner());
                write_sparse(dest, &f.rel, *off, &data, written).map_err(|e| Error::io(display(&f.rel), e))?;
            }
        }
        Ok(())
    }
}

/// Writes the non-zero 4 KiB blocks of `data` at `off` (the file was pre-sized, so the
/// skipped blocks stay holes and a sparse file is restored sparse).
fn write_sparse(dest: &dyn Destination, rel: &RelPath, off: u64, data: &[u8], written: &AtomicU64) -> io::Result<()> {
    const B: usize = 4096;
    let mut run_start: Option<usize> = None;
    let mut i = 0;
    while i < data.len() {
        let end = (i + B).min(data.len());
        let zero = data[i..end].iter().all(|&b| b == 0);
        match (zero, run_start) {
            (false, None) => run_start = Some(i),
            (true, Some(s)) => {
                dest.write_at(rel, off + s as u64, &data[s..i])?;
                written.fetch_add((i - s) as u64, Ordering::Relaxed);
                run_start = None;
            }
            _ => {}
        }
        i = end;
    }
    if let Some(s) = run_start {
        dest.write_at(rel, off + s as u64, &data[s..])?;
        written.fetch_add((data.len() - s) as u64, Ordering::Relaxed);
    }
    Ok(())
}

impl Restorer<'_> {
    /// Re-reads a restored file and checks every chunk against its blob id.
    fn verify_file(&self, dest: &dyn Destination, f: &PlannedFile) -> Result<()> {
        let mut r = dest.open_read(&f.rel).map_err(|e| Error::io(display(&f.rel), e))?;
        let mut buf = Vec::new();
        for b in &f.node.content {
            let len = self.index.get(b).map(|l| l.raw_length).ok_or(cairn_repo::Error::BlobNotIndexed(*b))? as usize;
            buf.resize(len, 0);
            r.read_exact(&mut buf).map_err(|e| Error::io(display(&f.rel), e))?;
            if self.repo.blob_id(&buf) != *b {
                return Err(Error::Damaged(format!(
                    "{}: verification failed: restored content differs",
                    display(&f.rel)
                )));
            }
        }
        let mut extra = [0u8; 1];
        if r.read(&mut extra).map_err(|e| Error::io(display(&f.rel), e))? != 0 {
            return Err(Error::Damaged(format!("{}: verification failed: restored file is longer", display(&f.rel))));
        }
        Ok(())
    }
}

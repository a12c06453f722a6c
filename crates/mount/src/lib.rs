//! `cairn mount`: every snapshot of a repository as a read-only filesystem, through FUSE.
//!
//! ```text
//! /snapshots/<time>/...        each snapshot's tree (time in UTC, to the second;
//!                              `<time>-<short id>` where two snapshots share a second)
//! /snapshots/latest -> <time>  the newest
//! /hosts/<host>/<time>/...     and /hosts/<host>/latest
//! /tags/<tag>/<time>/...       and /tags/<tag>/latest
//! /ids/<short id>/...
//! /latest -> snapshots/latest
//! ```
//!
//! Principal types: [`Fs`] (the `fuser::Filesystem`), its inode table ([`Entry`] per
//! inode) and the open files ([`OpenFile`]: each blob's offset in the file).
//!
//! Key decisions:
//! - Inodes are handed out as the kernel looks names up and kept for the mount's life
//!   (memory grows with what is browsed, about 300 bytes per entry, not with the
//!   repository). One path, one inode, but the files of one hardlink group in one
//!   snapshot share an inode, so `cp -a` out of the mount recreates the group as a restore
//!   does.
//! - Contents are read by range: `open` places every blob of the file from the index
//!   alone (no blob is read), and `read` fetches only the blobs its range covers, through
//!   a cache of decrypted blobs ([`CACHE_BYTES`]). The last byte of a 10 GiB file costs one
//!   blob.
//! - The snapshot list (and with it the index) is read again when a directory built from
//!   it is listed or looked up and the list is older than `refresh`: new snapshots appear
//!   without remounting. Trees are immutable, so their listings are kept.
//! - A blob that cannot be read (a damaged or missing pack) fails that read with EIO and
//!   says why on stderr; every other file stays readable.
//! - Read-only, `nosuid`, `nodev`, permissions checked by the kernel against the stored
//!   modes and owners (`default_permissions`). Names a hostile snapshot could use to
//!   escape (`/` inside a name, `.`, `..`, empty) are not shown.

use std::collections::{HashMap, VecDeque};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cairn_format::snapshot::Snapshot;
use cairn_format::tree::{Node, NodeKind};
use cairn_format::{BlobId, SnapshotId, TreeId};
use cairn_repo::{Index, Repository};
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner, MountOption,
    OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEntry, ReplyOpen, ReplyXattr, Request,
};

/// Decrypted blobs kept for reads that come back to them (sequential reads of a file ask
/// for each blob many times, in 128 KiB pieces).
pub const CACHE_BYTES: usize = 64 << 20;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Repo(#[from] cairn_repo::Error),
    #[error("mounting at {path}: {source}")]
    Mount { path: String, source: std::io::Error },
}

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, Clone)]
pub struct MountOptions {
    /// Show only this snapshot's tree, at the mount's top.
    pub snapshot: Option<SnapshotId>,
    /// Let other users than the one mounting in (`allow_other`; as another user than root,
    /// `/etc/fuse.conf` must say `user_allow_other`).
    pub allow_other: bool,
    /// How old the snapshot list may get before a listing reads it again.
    pub refresh: Duration,
    /// Threads serving requests (concurrent readers).
    pub threads: usize,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions { snapshot: None, allow_other: false, refresh: Duration::from_secs(5), threads: 4 }
    }
}

/// Mounts `repo` at `mountpoint` and serves it until it is unmounted: by `fusermount3 -u`
/// (or `umount`) from outside, or when `stop` is set (the caller's SIGINT/SIGTERM).
/// `ready` is called once the mount is in place.
pub fn mount(
    repo: Arc<Repository>,
    mountpoint: &Path,
    opts: &MountOptions,
    stop: Arc<AtomicBool>,
    ready: impl FnOnce(),
) -> Result<()> {
    let fs = Fs::new(repo, opts)?;
    let mut cfg = fuser::Config::default();
    cfg.mount_options = vec![
        MountOption::RO,
        MountOption::NoSuid,
        MountOption::NoDev,
        MountOption::DefaultPermissions,
        MountOption::FSName("cairn".into()),
        MountOption::Subtype("cairn".into()),
    ];
    if opts.allow_other {
        cfg.acl = fuser::SessionACL::All;
    }
    cfg.n_threads = Some(opts.threads.max(1));
    let err = |source| Error::Mount { path: mountpoint.display().to_string(), source };
    let mut session = fuser::Session::new(fs, mountpoint, &cfg).map_err(err)?;
    let mut unmounter = session.unmount_callable();
    let done = Arc::new(AtomicBool::new(false));
    let at = std::fs::canonicalize(mountpoint).unwrap_or_else(|_| mountpoint.to_path_buf());
    let watcher = {
        let done = done.clone();
        std::thread::Builder::new()
            .name("cairn-mount-stop".into())
            .spawn(move || {
                while !done.load(Ordering::SeqCst) {
                    if stop.load(Ordering::SeqCst) {
                        // A shell sitting in the mount makes a plain unmount fail (busy):
                        // then detach it, so the mount goes as soon as it is let go.
                        if let Err(e) = unmounter.unmount() {
                            eprintln!("cairn: mount: unmounting {}: {e}; detaching it instead", at.display());
                            detach(&at);
                        }
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
            .map_err(err)?
    };
    ready();
    let r = session.run().map_err(err);
    done.store(true, Ordering::SeqCst);
    let _ = watcher.join();
    r
}

/// A lazy unmount (`umount -l`): as root by umount2(2), else through `fusermount3 -uz`.
fn detach(at: &Path) {
    let Ok(c) = std::ffi::CString::new(at.as_os_str().as_bytes()) else { return };
    // SAFETY: umount2 with a NUL-terminated path and a flag; it touches no memory of ours.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {
        return;
    }
    let ok = std::process::Command::new("fusermount3").arg("-uz").arg(at).status().is_ok_and(|s| s.success());
    if !ok {
        eprintln!("cairn: mount: could not detach {}: run 'fusermount3 -uz {}'", at.display(), at.display());
    }
}

/// A directory made of the snapshot list.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum View {
    Top,
    Snapshots,
    Hosts,
    Host(String),
    Tags,
    Tag(String),
    Ids,
}

#[derive(Debug, Clone)]
enum Entry {
    View(View),
    /// A symbolic link made of the snapshot list (`latest`).
    Link(Vec<u8>),
    /// A snapshot's root tree.
    Root {
        tree: TreeId,
        time: SystemTime,
    },
    /// An entry of a snapshot's tree; `root` is the inode of its snapshot's root.
    Node {
        node: Arc<Node>,
        root: u64,
    },
}

impl Entry {
    fn kind(&self) -> FileType {
        match self {
            Entry::View(_) | Entry::Root { .. } => FileType::Directory,
            Entry::Link(_) => FileType::Symlink,
            Entry::Node { node, .. } => match node.kind {
                NodeKind::File => FileType::RegularFile,
                NodeKind::Dir => FileType::Directory,
                NodeKind::Symlink => FileType::Symlink,
                NodeKind::Fifo => FileType::NamedPipe,
                NodeKind::Chardev => FileType::CharDevice,
                NodeKind::Blockdev => FileType::BlockDevice,
                NodeKind::Socket => FileType::Socket,
            },
        }
    }
}

struct Inode {
    parent: u64,
    entry: Entry,
}

/// What the snapshot list says, read at `at`.
struct Listing {
    snapshots: Vec<(SnapshotId, Snapshot)>,
    index: Arc<Index>,
    /// The index files `index` was loaded from: a prune that repacks changes them, not the
    /// snapshot list.
    index_files: Vec<cairn_format::IndexId>,
    at: Instant,
}

/// A directory's entries: name, inode, type.
type Listed = Arc<Vec<(Vec<u8>, u64, FileType)>>;

/// The inode table and what it was built from.
struct State {
    listing: Listing,
    /// Inode `n` is `inodes[n - 1]`; 1 is the top directory.
    inodes: Vec<Inode>,
    by_name: HashMap<(u64, Vec<u8>), u64>,
    /// Hardlink groups: (snapshot root inode, device, inode) -> our inode.
    links: HashMap<(u64, u64, u64), u64>,
    /// The children of tree directories, once listed (trees never change).
    listed: HashMap<u64, Listed>,
    /// The listings of snapshot-list directories, made from the listing read at the
    /// instant kept beside them (so `ls -l snapshots/` builds one listing, not one per name).
    views: HashMap<u64, (Instant, Listed)>,
}

/// A file opened for reading: where each of its blobs starts.
struct OpenFile {
    blobs: Vec<BlobId>,
    starts: Vec<u64>,
    size: u64,
    index: Arc<Index>,
}

struct BlobCache {
    blobs: HashMap<BlobId, Arc<Vec<u8>>>,
    order: VecDeque<BlobId>,
    bytes: usize,
}

/// The filesystem (see the module docs).
pub struct Fs {
    repo: Arc<Repository>,
    refresh: Duration,
    state: Mutex<State>,
    files: Mutex<HashMap<u64, Arc<OpenFile>>>,
    next_fh: AtomicU64,
    cache: Mutex<BlobCache>,
    mounted_at: SystemTime,
    owner: (u32, u32),
}

/// Listings of the snapshot list are short-lived; tree contents never change.
const VIEW_TTL: Duration = Duration::from_secs(1);
const TREE_TTL: Duration = Duration::from_secs(3600);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn time_of(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_nanos(ns.unsigned_abs())).unwrap_or(UNIX_EPOCH)
    }
}

/// A name as the filesystem can show it: `/` inside it made `_`, and the names a path
/// could not hold made visible ones.
fn safe_name(s: &str) -> Vec<u8> {
    let n: Vec<u8> = s.bytes().map(|b| if b == b'/' || b == 0 { b'_' } else { b }).collect();
    match n.as_slice() {
        b"" | b"." | b".." => [b"_".as_slice(), &n].concat(),
        _ => n,
    }
}

/// Whether a name from a tree can be shown as it is (a hostile tree's `..` cannot).
fn showable(name: &[u8]) -> bool {
    !(name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0))
}

/// Each snapshot's directory name: its time in UTC to the second, with the short id
/// where two share it.
fn names(snaps: &[(SnapshotId, Snapshot)]) -> Vec<Vec<u8>> {
    let base: Vec<String> = snaps
        .iter()
        .map(|(id, s)| match s.time.parse::<jiff::Timestamp>() {
            Ok(t) => t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
            Err(_) => id.short(),
        })
        .collect();
    let mut count: HashMap<&str, usize> = HashMap::new();
    for b in &base {
        *count.entry(b.as_str()).or_default() += 1;
    }
    base.iter()
        .zip(snaps)
        .map(|(b, (id, _))| if count[b.as_str()] > 1 { format!("{b}-{}", id.short()) } else { b.clone() }.into_bytes())
        .collect()
}

fn snapshot_time(s: &Snapshot) -> SystemTime {
    s.time.parse::<jiff::Timestamp>().map(|t| time_of(t.as_nanosecond() as i64)).unwrap_or(UNIX_EPOCH)
}

impl Fs {
    pub fn new(repo: Arc<Repository>, opts: &MountOptions) -> Result<Fs> {
        let listing = Self::list(&repo)?;
        let top = match &opts.snapshot {
            Some(id) => {
                let (_, s) = listing
                    .snapshots
                    .iter()
                    .find(|(i, _)| i == id)
                    .ok_or_else(|| cairn_repo::Error::SnapshotNotFound(id.short()))?;
                Entry::Root { tree: s.tree, time: snapshot_time(s) }
            }
            None => Entry::View(View::Top),
        };
        let top = Inode { parent: 1, entry: top };
        let refresh = opts.refresh;
        // SAFETY: getuid/getgid cannot fail.
        let owner = unsafe { (libc::getuid(), libc::getgid()) };
        Ok(Fs {
            repo,
            refresh,
            state: Mutex::new(State {
                listing,
                inodes: vec![top],
                by_name: HashMap::new(),
                links: HashMap::new(),
                listed: HashMap::new(),
                views: HashMap::new(),
            }),
            files: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            cache: Mutex::new(BlobCache { blobs: HashMap::new(), order: VecDeque::new(), bytes: 0 }),
            mounted_at: SystemTime::now(),
            owner,
        })
    }

    fn list(repo: &Repository) -> Result<Listing> {
        let mut snapshots = repo.list_snapshots_lenient()?.snapshots;
        snapshots.sort_by(|a, b| snapshot_time(&a.1).cmp(&snapshot_time(&b.1)).then(a.0.cmp(&b.0)));
        let mut index_files = repo.list_index_ids()?;
        index_files.sort();
        Ok(Listing { snapshots, index: Arc::new(repo.load_index()?), index_files, at: Instant::now() })
    }

    /// Reads the snapshot list again if it is older than `refresh`, and the index when its
    /// files changed (new backups, a prune's repack). What cannot be read keeps the old
    /// listing whole, to be tried again at the next refresh.
    fn refresh(&self, st: &mut State) {
        if st.listing.at.elapsed() < self.refresh {
            return;
        }
        st.listing.at = Instant::now();
        let fresh = (|| -> cairn_repo::Result<Option<Listing>> {
            let mut files = self.repo.list_index_ids()?;
            files.sort();
            let mut snapshots = self.repo.list_snapshots_lenient()?.snapshots;
            snapshots.sort_by(|a, b| snapshot_time(&a.1).cmp(&snapshot_time(&b.1)).then(a.0.cmp(&b.0)));
            let index = if files == st.listing.index_files {
                st.listing.index.clone()
            } else {
                Arc::new(self.repo.load_index()?)
            };
            Ok(Some(Listing { snapshots, index, index_files: files, at: Instant::now() }))
        })();
        match fresh {
            Ok(Some(l)) => st.listing = l,
            Ok(None) => {}
            Err(e) => {
                report("reading the snapshot list and index", &e);
            }
        }
    }

    /// The inode of `name` in `parent`, made if new. A `latest` link that now points
    /// elsewhere is changed in place; a name that now stands for another snapshot (two
    /// that shared a second, one forgotten) gets a new inode, since everything below the
    /// old one belongs to the old tree.
    fn child(st: &mut State, parent: u64, name: &[u8], entry: Entry) -> u64 {
        if let Some(&ino) = st.by_name.get(&(parent, name.to_vec())) {
            if let Some(i) = (ino as usize).checked_sub(1).and_then(|n| st.inodes.get_mut(n)) {
                match (&mut i.entry, &entry) {
                    (Entry::Link(old), Entry::Link(new)) => *old = new.clone(),
                    (Entry::Root { tree: old, .. }, Entry::Root { tree: new, .. }) if old != new => {
                        st.by_name.remove(&(parent, name.to_vec()));
                        return Self::child(st, parent, name, entry);
                    }
                    _ => {}
                }
            }
            return ino;
        }
        // Files of one hardlink group in one snapshot are one inode.
        let group = match &entry {
            Entry::Node { node, root } if node.kind == NodeKind::File && node.links > 1 && node.inode != 0 => {
                Some((*root, node.device, node.inode))
            }
            _ => None,
        };
        if let Some(&ino) = group.as_ref().and_then(|g| st.links.get(g)) {
            st.by_name.insert((parent, name.to_vec()), ino);
            return ino;
        }
        st.inodes.push(Inode { parent, entry });
        let ino = st.inodes.len() as u64;
        st.by_name.insert((parent, name.to_vec()), ino);
        if let Some(g) = group {
            st.links.insert(g, ino);
        }
        ino
    }

    /// The children of a directory inode: (name, inode, type).
    fn children(&self, ino: u64) -> std::result::Result<Listed, Errno> {
        let mut st = lock(&self.state);
        if let Some(l) = st.listed.get(&ino) {
            return Ok(l.clone());
        }
        let entry = (ino as usize)
            .checked_sub(1)
            .and_then(|n| st.inodes.get(n))
            .map(|i| i.entry.clone())
            .ok_or(Errno::ENOENT)?;
        let mut out = Vec::new();
        match entry {
            Entry::View(view) => {
                self.refresh(&mut st);
                let at = st.listing.at;
                if let Some((made, l)) = st.views.get(&ino) {
                    if *made == at {
                        return Ok(l.clone());
                    }
                }
                let snaps = std::mem::take(&mut st.listing.snapshots);
                let dir_names = names(&snaps);
                let root = |s: &Snapshot| Entry::Root { tree: s.tree, time: snapshot_time(s) };
                let mut add = |st: &mut State, name: Vec<u8>, e: Entry| {
                    let kind = e.kind();
                    let c = Self::child(st, ino, &name, e);
                    out.push((name, c, kind));
                };
                // The snapshots a view holds, oldest first, with their directory names.
                let pick = |f: &dyn Fn(&Snapshot) -> bool| -> Vec<(Vec<u8>, &Snapshot)> {
                    snaps.iter().zip(&dir_names).filter(|((_, s), _)| f(s)).map(|((_, s), n)| (n.clone(), s)).collect()
                };
                let with_latest = |st: &mut State,
                                   add: &mut dyn FnMut(&mut State, Vec<u8>, Entry),
                                   chosen: Vec<(Vec<u8>, &Snapshot)>| {
                    if let Some((n, _)) = chosen.last() {
                        add(st, b"latest".to_vec(), Entry::Link(n.clone()));
                    }
                    for (n, s) in chosen {
                        add(st, n, root(s));
                    }
                };
                match &view {
                    View::Top => {
                        for (n, v) in [
                            ("snapshots", View::Snapshots),
                            ("hosts", View::Hosts),
                            ("tags", View::Tags),
                            ("ids", View::Ids),
                        ] {
                            add(&mut st, n.as_bytes().to_vec(), Entry::View(v));
                        }
                        if !snaps.is_empty() {
                            add(&mut st, b"latest".to_vec(), Entry::Link(b"snapshots/latest".to_vec()));
                        }
                    }
                    View::Snapshots => with_latest(&mut st, &mut add, pick(&|_| true)),
                    View::Host(h) => with_latest(&mut st, &mut add, pick(&|s| s.hostname == *h)),
                    View::Tag(t) => with_latest(&mut st, &mut add, pick(&|s| s.tags.contains(t))),
                    View::Hosts | View::Tags => {
                        let mut keys: Vec<&String> = if view == View::Hosts {
                            snaps.iter().map(|(_, s)| &s.hostname).collect()
                        } else {
                            snaps.iter().flat_map(|(_, s)| s.tags.iter()).collect()
                        };
                        keys.sort();
                        keys.dedup();
                        let mut seen = std::collections::HashSet::new();
                        for k in keys {
                            let name = safe_name(k);
                            if seen.insert(name.clone()) {
                                let v = if view == View::Hosts { View::Host(k.clone()) } else { View::Tag(k.clone()) };
                                add(&mut st, name, Entry::View(v));
                            }
                        }
                    }
                    View::Ids => {
                        for (id, s) in &snaps {
                            add(&mut st, id.short().into_bytes(), root(s));
                        }
                    }
                }
                st.listing.snapshots = snaps;
                let out = Arc::new(out);
                st.views.insert(ino, (at, out.clone()));
                Ok(out)
            }
            // A tree: its snapshot's root, or a directory in it.
            Entry::Root { tree, .. } => self.list_tree(st, ino, tree, ino),
            Entry::Node { node, root } => match node.subtree.filter(|_| node.kind == NodeKind::Dir) {
                Some(tree) => self.list_tree(st, ino, tree, root),
                None => Err(Errno::ENOTDIR),
            },
            Entry::Link(_) => Err(Errno::ENOTDIR),
        }
    }

    /// Lists the tree `tree` as the directory `ino` of the snapshot whose root is `root`,
    /// reading it without holding the lock, and keeps the listing.
    fn list_tree(
        &self,
        st: MutexGuard<'_, State>,
        ino: u64,
        tree: TreeId,
        root: u64,
    ) -> std::result::Result<Listed, Errno> {
        let index = st.listing.index.clone();
        drop(st);
        let t = self.repo.load_tree(&index, tree).map_err(|e| report("reading a tree", &e))?;
        let mut st = lock(&self.state);
        let mut out = Vec::new();
        self.add_nodes(&mut st, ino, root, t.nodes, &mut out);
        let out = Arc::new(out);
        st.listed.insert(ino, out.clone());
        Ok(out)
    }

    fn add_nodes(
        &self,
        st: &mut State,
        dir: u64,
        root: u64,
        nodes: Vec<Node>,
        out: &mut Vec<(Vec<u8>, u64, FileType)>,
    ) {
        for n in nodes {
            if !showable(&n.name.0) {
                continue;
            }
            let name = n.name.0.clone();
            let e = Entry::Node { node: Arc::new(n), root };
            let kind = e.kind();
            let c = Self::child(st, dir, &name, e);
            out.push((name, c, kind));
        }
    }

    fn attr(&self, ino: u64, e: &Entry) -> FileAttr {
        let mut a = FileAttr {
            ino: INodeNo(ino),
            size: 0,
            blocks: 0,
            atime: self.mounted_at,
            mtime: self.mounted_at,
            ctime: self.mounted_at,
            crtime: self.mounted_at,
            kind: e.kind(),
            perm: 0o555,
            nlink: 2,
            uid: self.owner.0,
            gid: self.owner.1,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        };
        match e {
            Entry::View(_) => {}
            Entry::Link(target) => {
                a.perm = 0o777;
                a.nlink = 1;
                a.size = target.len() as u64;
            }
            Entry::Root { time, .. } => {
                (a.atime, a.mtime, a.ctime, a.crtime) = (*time, *time, *time, *time);
                a.perm = 0o755;
            }
            Entry::Node { node, .. } => {
                a.size = match node.kind {
                    NodeKind::File => node.size,
                    NodeKind::Symlink => node.link_target.as_ref().map(|t| t.0.len() as u64).unwrap_or(0),
                    _ => 0,
                };
                a.blocks = a.size.div_ceil(512);
                (a.atime, a.mtime, a.ctime) = (time_of(node.atime), time_of(node.mtime), time_of(node.ctime));
                a.crtime = a.mtime;
                a.perm = (node.mode & 0o7777) as u16;
                a.nlink = match node.kind {
                    NodeKind::Dir => 2,
                    _ => node.links.clamp(1, u32::MAX as u64) as u32,
                };
                (a.uid, a.gid) = (node.uid, node.gid);
                a.rdev = node.rdev as u32;
            }
        }
        a
    }

    fn entry(&self, ino: u64) -> Option<Entry> {
        lock(&self.state).inodes.get((ino as usize).checked_sub(1)?).map(|i| i.entry.clone())
    }

    fn ttl(e: &Entry) -> Duration {
        match e {
            Entry::View(_) | Entry::Link(_) => VIEW_TTL,
            _ => TREE_TTL,
        }
    }

    /// One blob, from the cache or the repository.
    fn blob(&self, index: &Index, id: &BlobId) -> std::result::Result<Arc<Vec<u8>>, Errno> {
        if let Some(b) = lock(&self.cache).blobs.get(id) {
            return Ok(b.clone());
        }
        let data = Arc::new(self.repo.read_blob(index, id).map_err(|e| report("reading file contents", &e))?);
        let mut c = lock(&self.cache);
        // Two readers may have fetched the same blob: count it once.
        if c.blobs.insert(*id, data.clone()).is_none() {
            c.bytes += data.len();
            c.order.push_back(*id);
        }
        while c.bytes > CACHE_BYTES {
            let Some(old) = c.order.pop_front() else { break };
            if let Some(b) = c.blobs.remove(&old) {
                c.bytes -= b.len();
            }
        }
        Ok(data)
    }
}

/// Says on stderr why an operation fails with EIO (the kernel passes on only the errno).
fn report(what: &str, e: &cairn_repo::Error) -> Errno {
    let msg: String = e.to_string().chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    eprintln!("cairn: mount: {what}: {msg}");
    Errno::EIO
}

impl Filesystem for Fs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        // The listing assigns every child its inode; the name is then one map look-up, not
        // a scan (`ls -l` of a directory of 100,000 entries looks each one up).
        let children = match self.children(parent.0) {
            Ok(c) => c,
            Err(e) => return reply.error(e),
        };
        let key = (parent.0, name.as_bytes().to_vec());
        let found = {
            let st = lock(&self.state);
            if st.listed.contains_key(&parent.0) {
                // A tree's listing never changes: its names are exactly those in the map.
                st.by_name.get(&key).copied()
            } else {
                // A listing of snapshots: the map may still name one that is gone.
                children.iter().find(|(n, _, _)| n.as_slice() == name.as_bytes()).map(|(_, c, _)| *c)
            }
        };
        let Some(ino) = found else {
            return reply.error(Errno::ENOENT);
        };
        match self.entry(ino) {
            Some(e) => reply.entry(&Self::ttl(&e), &self.attr(ino, &e), Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.entry(ino.0) {
            Some(e) => reply.attr(&Self::ttl(&e), &self.attr(ino.0, &e)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.entry(ino.0) {
            Some(Entry::Link(t)) => reply.data(&t),
            Some(Entry::Node { node, .. }) if node.kind == NodeKind::Symlink => {
                reply.data(node.link_target.as_ref().map(|t| t.0.as_slice()).unwrap_or(&[]))
            }
            Some(_) => reply.error(Errno::EINVAL),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let node = match self.entry(ino.0) {
            Some(Entry::Node { node, .. }) if node.kind == NodeKind::File => node,
            Some(_) => return reply.error(Errno::EISDIR),
            None => return reply.error(Errno::ENOENT),
        };
        let index = lock(&self.state).listing.index.clone();
        let mut starts = Vec::with_capacity(node.content.len());
        let mut at = 0u64;
        for b in &node.content {
            let Some(loc) = index.get(b) else {
                eprintln!("cairn: mount: {}: blob {} is in no pack the index knows", node.name.lossy(), b.short());
                return reply.error(Errno::EIO);
            };
            starts.push(at);
            at += loc.raw_length as u64;
        }
        let f = OpenFile { blobs: node.content.clone(), starts, size: node.size.min(at), index };
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.files).insert(fh, Arc::new(f));
        // Contents never change: the kernel may keep what it read across opens.
        reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE);
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let Some(f) = lock(&self.files).get(&fh.0).cloned() else {
            return reply.error(Errno::EBADF);
        };
        let end = offset.saturating_add(size as u64).min(f.size);
        if offset >= end {
            return reply.data(&[]);
        }
        let mut out = Vec::with_capacity((end - offset) as usize);
        let mut i = f.starts.partition_point(|s| *s <= offset).saturating_sub(1);
        let mut pos = offset;
        while pos < end && i < f.blobs.len() {
            let data = match self.blob(&f.index, &f.blobs[i]) {
                Ok(d) => d,
                Err(e) => return reply.error(e),
            };
            let from = (pos - f.starts[i]) as usize;
            let to = ((end - f.starts[i]) as usize).min(data.len());
            if from >= to {
                break;
            }
            out.extend_from_slice(&data[from..to]);
            pos += (to - from) as u64;
            i += 1;
        }
        reply.data(&out);
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: fuser::ReplyEmpty,
    ) {
        lock(&self.files).remove(&fh.0);
        reply.ok();
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let children = match self.children(ino.0) {
            Ok(c) => c,
            Err(e) => return reply.error(e),
        };
        let parent = (ino.0 as usize)
            .checked_sub(1)
            .and_then(|n| lock(&self.state).inodes.get(n).map(|i| i.parent))
            .unwrap_or(1);
        let dots = [(b".".to_vec(), ino.0, FileType::Directory), (b"..".to_vec(), parent, FileType::Directory)];
        for (i, (name, c, kind)) in dots.iter().chain(children.iter()).enumerate().skip(offset as usize) {
            if reply.add(INodeNo(*c), (i + 1) as u64, *kind, OsStr::from_bytes(name)) {
                break;
            }
        }
        reply.ok();
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let Some(Entry::Node { node, .. }) = self.entry(ino.0) else {
            return reply.error(Errno::NO_XATTR);
        };
        let Some(x) = node.xattrs.iter().find(|x| x.name.0 == name.as_bytes()) else {
            return reply.error(Errno::NO_XATTR);
        };
        xattr_reply(&x.value.0, size, reply);
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let mut names = Vec::new();
        if let Some(Entry::Node { node, .. }) = self.entry(ino.0) {
            for x in &node.xattrs {
                names.extend_from_slice(&x.name.0);
                names.push(0);
            }
        }
        xattr_reply(&names, size, reply);
    }
}

/// `size` 0 asks for the length; a buffer too small is ERANGE; more than the kernel
/// accepts (64 KiB) is E2BIG.
fn xattr_reply(data: &[u8], size: u32, reply: ReplyXattr) {
    if data.len() > 65536 {
        reply.error(Errno::E2BIG);
    } else if size == 0 {
        reply.size(data.len() as u32);
    } else if data.len() > size as usize {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(data);
    }
}

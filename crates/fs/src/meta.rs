//! Reading and applying metadata through libc: xattrs, times, owners, names.

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::fs::Metadata;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use cairn_format::tree::{HexBytes, Node, NodeKind, RawName, Xattr};

pub(crate) fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
}

pub(crate) fn ns(sec: i64, nsec: i64) -> i64 {
    sec.saturating_mul(1_000_000_000).saturating_add(nsec)
}

/// What a node takes from `lstat`, from std's metadata or from an `fstatat` on a
/// directory's descriptor (which spares the kernel a walk of the whole path per entry).
#[derive(Debug)]
pub(crate) struct Stat {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: i64,
    pub atime: i64,
    pub ctime: i64,
    pub ino: u64,
    pub dev: u64,
    pub nlink: u64,
    pub rdev: u64,
}

/// The names in the open directory `dir`, without `.` and `..`, in the order the file
/// system gives them. Listed through this descriptor, not by path again: the directory
/// statted by name is the one listed.
pub(crate) fn dir_names(dir: &std::fs::File) -> io::Result<Vec<Vec<u8>>> {
    use std::os::fd::AsRawFd;
    // fdopendir takes ownership of the descriptor it is given: give it a duplicate.
    // SAFETY: dup of a descriptor this frame borrows.
    let fd = unsafe { libc::fcntl(dir.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is ours; on failure it is still ours to close.
    let d = unsafe { libc::fdopendir(fd) };
    if d.is_null() {
        let e = io::Error::last_os_error();
        // SAFETY: fdopendir failed and did not take `fd`.
        unsafe { libc::close(fd) };
        return Err(e);
    }
    // The duplicate shares the original's position: from the start, whatever read it.
    // SAFETY: `d` is the open stream just made.
    unsafe { libc::rewinddir(d) };
    let mut names = Vec::new();
    let result = loop {
        // readdir reports an error only through errno, left unchanged at the end.
        // SAFETY: errno is this thread's.
        unsafe { *libc::__errno_location() = 0 };
        // SAFETY: `d` is an open directory stream used by this thread only.
        let e = unsafe { libc::readdir64(d) };
        if e.is_null() {
            let errno = io::Error::last_os_error();
            break if errno.raw_os_error() == Some(0) { Ok(()) } else { Err(errno) };
        }
        // SAFETY: readdir64 returned a valid entry whose d_name is NUL-terminated and
        // lives until the next readdir64 on `d`; it is copied before that.
        // Through a raw pointer: the last record may be shorter than a whole `dirent64`,
        // so no reference to its `d_name` array is made.
        let name = unsafe { CStr::from_ptr(std::ptr::addr_of!((*e).d_name).cast::<libc::c_char>()) }.to_bytes();
        if name != b"." && name != b".." {
            names.push(name.to_vec());
        }
    };
    // SAFETY: closes the stream and the duplicate it owns; `d` is not used after.
    unsafe { libc::closedir(d) };
    result.map(|()| names)
}

impl Stat {
    pub fn of(m: &Metadata) -> Stat {
        Stat {
            mode: m.mode(),
            uid: m.uid(),
            gid: m.gid(),
            size: m.len(),
            mtime: ns(m.mtime(), m.mtime_nsec()),
            atime: ns(m.atime(), m.atime_nsec()),
            ctime: ns(m.ctime(), m.ctime_nsec()),
            ino: m.ino(),
            dev: m.dev(),
            nlink: m.nlink(),
            rdev: m.rdev(),
        }
    }

    /// `name` in the directory open as `dir`, not following a final symlink.
    // `libc::stat`'s field types differ between targets (st_nlink is u32 on aarch64).
    #[allow(clippy::useless_conversion)]
    pub fn at(dir: &std::fs::File, name: &[u8]) -> io::Result<Stat> {
        use std::os::fd::AsRawFd;
        if name.contains(&0) {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        // Most names fit NAME_MAX (255 bytes): NUL-terminated on the stack, not in an
        // allocation per entry (a walk stats every entry). Longer ones exist (vfat, exFAT
        // or CIFS names of 255 UTF-16 units) and go through a CString.
        let mut short = [0u8; 256];
        let long;
        let c: *const libc::c_char = if name.len() < short.len() {
            short[..name.len()].copy_from_slice(name);
            short.as_ptr().cast()
        } else {
            long = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
            long.as_ptr()
        };
        // SAFETY: an all-zero `stat` is a valid value of this plain C struct.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: `c` points to a NUL-terminated name (`short` is zeroed past the name, or
        // `long`) alive until after the call; `st` is ours and as large as fstatat writes.
        let rc = unsafe { libc::fstatat(dir.as_raw_fd(), c, &mut st, libc::AT_SYMLINK_NOFOLLOW) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Stat {
            mode: u32::from(st.st_mode),
            uid: st.st_uid,
            gid: st.st_gid,
            size: st.st_size.max(0) as u64,
            mtime: ns(st.st_mtime, st.st_mtime_nsec),
            atime: ns(st.st_atime, st.st_atime_nsec),
            ctime: ns(st.st_ctime, st.st_ctime_nsec),
            ino: u64::from(st.st_ino),
            dev: u64::from(st.st_dev),
            nlink: u64::from(st.st_nlink),
            rdev: u64::from(st.st_rdev),
        })
    }

    pub fn kind(&self) -> NodeKind {
        match self.mode & libc::S_IFMT {
            libc::S_IFDIR => NodeKind::Dir,
            libc::S_IFLNK => NodeKind::Symlink,
            libc::S_IFIFO => NodeKind::Fifo,
            libc::S_IFCHR => NodeKind::Chardev,
            libc::S_IFBLK => NodeKind::Blockdev,
            libc::S_IFSOCK => NodeKind::Socket,
            _ => NodeKind::File,
        }
    }

    pub fn is_dir(&self) -> bool {
        self.kind() == NodeKind::Dir
    }
}

/// uid/gid -> name, cached (NSS lookups are slow).
#[derive(Default)]
pub struct IdNames {
    // Read locks: every entry of a walk asks, from several threads, and nearly always
    // finds the name already there.
    users: RwLock<HashMap<u32, Option<String>>>,
    groups: RwLock<HashMap<u32, Option<String>>>,
}

impl IdNames {
    pub fn user(&self, uid: u32) -> Option<String> {
        cached(&self.users, uid, user_name)
    }
    pub fn group(&self, gid: u32) -> Option<String> {
        cached(&self.groups, gid, group_name)
    }
}

fn cached(map: &RwLock<HashMap<u32, Option<String>>>, id: u32, look_up: fn(u32) -> Option<String>) -> Option<String> {
    if let Some(n) = map.read().unwrap_or_else(|p| p.into_inner()).get(&id) {
        return n.clone();
    }
    let name = look_up(id);
    map.write().unwrap_or_else(|p| p.into_inner()).insert(id, name.clone());
    name
}

/// The name of user `uid` (the system's user database), if it has one.
pub fn user_name(uid: u32) -> Option<String> {
    let mut buf = vec![0 as libc::c_char; 4096];
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut res: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: all pointers point to live, correctly sized buffers owned by this frame.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut res) };
    if rc != 0 || res.is_null() {
        return None;
    }
    // SAFETY: on success pw_name points into `buf`, NUL-terminated.
    Some(unsafe { CStr::from_ptr(pw.pw_name) }.to_string_lossy().into_owned())
}

fn group_name(gid: u32) -> Option<String> {
    let mut buf = vec![0 as libc::c_char; 4096];
    let mut gr: libc::group = unsafe { std::mem::zeroed() };
    let mut res: *mut libc::group = std::ptr::null_mut();
    // SAFETY: as in user_name.
    let rc = unsafe { libc::getgrgid_r(gid, &mut gr, buf.as_mut_ptr(), buf.len(), &mut res) };
    if rc != 0 || res.is_null() {
        return None;
    }
    // SAFETY: on success gr_name points into `buf`, NUL-terminated.
    Some(unsafe { CStr::from_ptr(gr.gr_name) }.to_string_lossy().into_owned())
}

/// The machine's host name.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: buf is writable for its length.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr() as *mut libc::c_char, buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// The machine's time zone, for local times (snapshot times carry the local offset, as
/// restic's do). Without `TZ`, read from `/etc/localtime` as it is: jiff's system zone
/// also looks the zone's name up in the tz database, which walks all of
/// `/usr/share/zoneinfo` (25 ms on a cold cache, a tenth of a quick re-backup's start).
/// Read once per process: a long-running daemon sees a change of zone at its restart.
pub fn local_time_zone() -> jiff::tz::TimeZone {
    static TZ: std::sync::OnceLock<jiff::tz::TimeZone> = std::sync::OnceLock::new();
    TZ.get_or_init(|| {
        if std::env::var_os("TZ").is_none() {
            if let Ok(data) = std::fs::read("/etc/localtime") {
                if let Ok(tz) = jiff::tz::TimeZone::tzif("Local", &data) {
                    return tz;
                }
            }
        }
        jiff::tz::TimeZone::system()
    })
    .clone()
}

/// (uid, gid, user name) of this process.
pub fn current_user() -> (u32, u32, String) {
    // SAFETY: these calls cannot fail.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    (uid, gid, user_name(uid).unwrap_or_else(|| uid.to_string()))
}

/// The node of `path()` (built only if a link or xattrs must be read) from its metadata.
/// `before`: the entry in the parent snapshot; when it is the same inode with the same
/// mtime and ctime, its xattrs and symlink target are taken as they are (setting an xattr
/// or replacing a link changes the ctime), which saves a syscall or two per entry of an
/// unchanged tree.
pub(crate) fn node_from(
    path: &dyn Fn() -> PathBuf,
    name: &[u8],
    m: &Stat,
    names: &IdNames,
    atime: bool,
    before: Option<&Node>,
) -> io::Result<Node> {
    let kind = m.kind();
    let mut n = Node::new(name.to_vec(), kind);
    n.mode = m.mode & 0o7777;
    n.uid = m.uid;
    n.gid = m.gid;
    n.user = names.user(n.uid);
    n.group = names.group(n.gid);
    n.mtime = m.mtime;
    n.atime = if atime { m.atime } else { n.mtime };
    n.ctime = m.ctime;
    n.inode = m.ino;
    n.device = m.dev;
    n.links = m.nlink;
    let same = before
        .filter(|b| b.kind == kind && b.inode == n.inode && b.mtime == n.mtime && b.ctime == n.ctime && n.inode != 0);
    match kind {
        NodeKind::File => n.size = m.size,
        NodeKind::Symlink => {
            n.link_target = match same.and_then(|b| b.link_target.clone()) {
                Some(t) => Some(t),
                None => Some(RawName(std::fs::read_link(path())?.as_os_str().as_bytes().to_vec())),
            }
        }
        NodeKind::Chardev | NodeKind::Blockdev => n.rdev = m.rdev,
        _ => {}
    }
    n.xattrs = match same {
        Some(b) => b.xattrs.clone(),
        None => read_xattrs(&path()).unwrap_or_default(),
    };
    Ok(n)
}

fn read_xattrs(path: &Path) -> io::Result<Vec<Xattr>> {
    let c = cpath(path)?;
    // SAFETY: a null buffer with size 0 asks for the needed size.
    let size = unsafe { libc::llistxattr(c.as_ptr(), std::ptr::null_mut(), 0) };
    if size <= 0 {
        return Ok(Vec::new());
    }
    let mut list = vec![0u8; size as usize];
    // SAFETY: list is writable for its length.
    let size = unsafe { libc::llistxattr(c.as_ptr(), list.as_mut_ptr() as *mut libc::c_char, list.len()) };
    if size < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    for name in list[..size as usize].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let cn = CString::new(name).map_err(|_| io::Error::other("xattr name"))?;
        // SAFETY: size query as above.
        let vs = unsafe { libc::lgetxattr(c.as_ptr(), cn.as_ptr(), std::ptr::null_mut(), 0) };
        if vs < 0 {
            continue;
        }
        let mut v = vec![0u8; vs as usize];
        // SAFETY: v is writable for its length.
        let vs = unsafe { libc::lgetxattr(c.as_ptr(), cn.as_ptr(), v.as_mut_ptr() as *mut libc::c_void, v.len()) };
        if vs < 0 {
            continue;
        }
        v.truncate(vs as usize);
        out.push(Xattr { name: RawName(name.to_vec()), value: HexBytes(v) });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

pub(crate) fn write_xattrs(path: &Path, xattrs: &[Xattr]) -> io::Result<()> {
    let c = cpath(path)?;
    for x in xattrs {
        let cn = CString::new(x.name.0.clone()).map_err(|_| io::Error::other("xattr name"))?;
        // SAFETY: pointers are valid for the given lengths.
        let rc = unsafe {
            libc::lsetxattr(c.as_ptr(), cn.as_ptr(), x.value.0.as_ptr() as *const libc::c_void, x.value.0.len(), 0)
        };
        if rc != 0 {
            let e = io::Error::last_os_error();
            // Not supported or not permitted here (security.* without privilege, a
            // filesystem without xattrs or with smaller limits): the file is still restored.
            if !matches!(
                e.raw_os_error(),
                Some(libc::ENOTSUP)
                    | Some(libc::EPERM)
                    | Some(libc::EACCES)
                    | Some(libc::EINVAL)
                    | Some(libc::E2BIG)
                    | Some(libc::ERANGE)
            ) {
                return Err(e);
            }
        }
    }
    Ok(())
}

pub(crate) fn set_times(path: &Path, atime: i64, mtime: i64) -> io::Result<()> {
    let c = cpath(path)?;
    let times = timespecs(atime, mtime);
    // SAFETY: c and times are valid for the call.
    let rc = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Access and modification times (ns since the epoch) as utimensat/futimens take them.
fn timespecs(atime: i64, mtime: i64) -> [libc::timespec; 2] {
    let ts = |t: i64| libc::timespec {
        tv_sec: t.div_euclid(1_000_000_000) as libc::time_t,
        tv_nsec: t.rem_euclid(1_000_000_000) as _,
    };
    [ts(atime), ts(mtime)]
}

/// As [`set_times`], through an open descriptor.
pub(crate) fn set_times_fd(f: &std::fs::File, atime: i64, mtime: i64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let times = timespecs(atime, mtime);
    // SAFETY: the descriptor is open for the call and times is valid.
    let rc = unsafe { libc::futimens(f.as_raw_fd(), times.as_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub(crate) fn mknod(path: &Path, kind: NodeKind, mode: u32, rdev: u64) -> io::Result<()> {
    let c = cpath(path)?;
    let t = match kind {
        NodeKind::Fifo => libc::S_IFIFO,
        NodeKind::Chardev => libc::S_IFCHR,
        NodeKind::Blockdev => libc::S_IFBLK,
        NodeKind::Socket => libc::S_IFSOCK,
        _ => return Err(io::Error::other("not a special file")),
    };
    // SAFETY: c is a valid C string.
    let rc = unsafe { libc::mknod(c.as_ptr(), t | (mode & 0o7777) as libc::mode_t, rdev as libc::dev_t) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub(crate) fn is_root() -> bool {
    // SAFETY: cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names past NAME_MAX reach the kernel (file systems such as vfat return them), and
    /// short ones are statted as before.
    #[test]
    fn stat_at_passes_short_and_long_names_to_the_file_system() {
        let dir = std::fs::File::open("/").unwrap();
        assert!(Stat::at(&dir, b"usr").unwrap().is_dir());
        let long = vec![b'x'; 300];
        let e = Stat::at(&dir, &long).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENAMETOOLONG), "{e}");
        assert_eq!(Stat::at(&dir, b"a\0b").unwrap_err().kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn dir_names_lists_from_the_start_every_time() {
        let dir = std::fs::File::open("/usr").unwrap();
        let first = dir_names(&dir).unwrap();
        assert!(first.iter().any(|n| n == b"bin"), "{first:?}");
        assert_eq!(dir_names(&dir).unwrap().len(), first.len());
    }
}

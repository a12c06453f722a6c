//! Dev-only helpers for cairn's tests: deterministic data, filesystem attribute helpers,
//! and a byte-for-byte, attribute-for-attribute tree comparison. Test code: panics on
//! unexpected I/O failures are the point.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

pub mod craft;
pub mod http;
pub mod pg;
pub mod s3;
pub mod ssh;

/// Deterministic pseudo-random bytes.
pub fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut s = seed | 1;
    let mut v = Vec::with_capacity(n + 8);
    while v.len() < n {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        v.extend_from_slice(&s.to_le_bytes());
    }
    v.truncate(n);
    v
}

/// A policy `schedule` value that runs hourly, at a minute about half an hour from now
/// (UTC), for a daemon test that must not see a backup of the daemon's own while it runs:
/// a fixed `"0 * * * *"` fired in the middle of a test that straddled the hour, in CI.
pub fn hourly_not_now() -> String {
    let minute = (unix_minutes() + 30) % 60;
    format!(r#"[{{ cron = "{minute} * * * *", timezone = "UTC" }}]"#)
}

/// A policy `schedule` value that runs daily, at an hour about half a day from now (UTC):
/// see [`hourly_not_now`].
pub fn daily_not_now() -> String {
    let hour = (unix_minutes() / 60 + 12) % 24;
    format!(r#"[{{ cron = "0 {hour} * * *", timezone = "UTC" }}]"#)
}

fn unix_minutes() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() / 60)
}

pub fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

pub fn xattrs(p: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).expect("path");
    let mut buf = vec![0u8; 4096];
    let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr() as *mut libc::c_char, buf.len()) };
    if n <= 0 {
        return Vec::new();
    }
    let mut out = Vec::new();
    for name in buf[..n as usize].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let cn = std::ffi::CString::new(name).expect("name");
        let mut v = vec![0u8; 4096];
        let m = unsafe { libc::lgetxattr(c.as_ptr(), cn.as_ptr(), v.as_mut_ptr() as *mut libc::c_void, v.len()) };
        if m >= 0 {
            v.truncate(m as usize);
            out.push((name.to_vec(), v));
        }
    }
    out.sort();
    out
}

pub fn set_xattr(p: &Path, name: &str, value: &[u8]) -> bool {
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).expect("path");
    let n = std::ffi::CString::new(name).expect("name");
    unsafe { libc::lsetxattr(c.as_ptr(), n.as_ptr(), value.as_ptr() as *const libc::c_void, value.len(), 0) == 0 }
}

pub fn set_mtime(p: &Path, secs: i64, nsec: i64) {
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).expect("path");
    let t = [libc::timespec { tv_sec: secs, tv_nsec: nsec }, libc::timespec { tv_sec: secs, tv_nsec: nsec }];
    let rc = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), t.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) };
    assert_eq!(rc, 0, "utimensat {}", p.display());
}

/// Compares two trees byte for byte and attribute for attribute; returns the differences.
pub fn compare_trees(a: &Path, b: &Path, check_owner: bool) -> Vec<String> {
    let mut diffs = Vec::new();
    let mut inode_map: std::collections::HashMap<u64, u64> = std::collections::HashMap::new();
    compare_dir(a, b, Path::new(""), check_owner, &mut diffs, &mut inode_map);
    diffs
}

fn compare_dir(
    a: &Path,
    b: &Path,
    rel: &Path,
    owner: bool,
    diffs: &mut Vec<String>,
    inodes: &mut std::collections::HashMap<u64, u64>,
) {
    let names = |d: &Path| {
        let mut v: Vec<_> =
            std::fs::read_dir(d).map(|r| r.filter_map(|e| e.ok()).map(|e| e.file_name()).collect()).unwrap_or_default();
        v.sort();
        v
    };
    let (na, nb) = (names(&a.join(rel)), names(&b.join(rel)));
    if na != nb {
        diffs.push(format!("{}: entries differ: {na:?} vs {nb:?}", rel.display()));
        return;
    }
    for n in na {
        let r = rel.join(&n);
        let (pa, pb) = (a.join(&r), b.join(&r));
        let (ma, mb) =
            (std::fs::symlink_metadata(&pa).expect("lstat a"), std::fs::symlink_metadata(&pb).expect("lstat b"));
        let d = r.display();
        if ma.mode() != mb.mode() {
            diffs.push(format!("{d}: mode {:o} vs {:o}", ma.mode(), mb.mode()));
        }
        if owner && (ma.uid(), ma.gid()) != (mb.uid(), mb.gid()) {
            diffs.push(format!("{d}: owner {}:{} vs {}:{}", ma.uid(), ma.gid(), mb.uid(), mb.gid()));
        }
        if !ma.is_dir() && (ma.mtime(), ma.mtime_nsec()) != (mb.mtime(), mb.mtime_nsec()) {
            diffs.push(format!("{d}: mtime differs"));
        }
        if ma.is_dir() && (ma.mtime(), ma.mtime_nsec()) != (mb.mtime(), mb.mtime_nsec()) {
            diffs.push(format!("{d}/: directory mtime differs"));
        }
        if xattrs(&pa) != xattrs(&pb) {
            diffs.push(format!("{d}: xattrs differ"));
        }
        if ma.rdev() != mb.rdev() {
            diffs.push(format!("{d}: rdev differs"));
        }
        let ft = ma.file_type();
        if ft.is_symlink() {
            if std::fs::read_link(&pa).ok() != std::fs::read_link(&pb).ok() {
                diffs.push(format!("{d}: symlink target differs"));
            }
        } else if ft.is_file() {
            if std::fs::read(&pa).ok() != std::fs::read(&pb).ok() {
                diffs.push(format!("{d}: content differs"));
            }
            if ma.nlink() != mb.nlink() {
                diffs.push(format!("{d}: link count {} vs {}", ma.nlink(), mb.nlink()));
            }
            if ma.nlink() > 1 {
                match inodes.get(&ma.ino()) {
                    Some(&ib) if ib != mb.ino() => diffs.push(format!("{d}: hardlink group broken")),
                    None => {
                        inodes.insert(ma.ino(), mb.ino());
                    }
                    _ => {}
                }
            }
        } else if ft.is_dir() {
            compare_dir(a, b, &r, owner, diffs, inodes);
        }
    }
}

pub fn os(s: &[u8]) -> &OsStr {
    OsStr::from_bytes(s)
}

/// Packs in a local repository, with their modification order.
pub fn packs(repo: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(repo.join("data")) {
        for d in rd.flatten() {
            for f in std::fs::read_dir(d.path()).into_iter().flatten().flatten() {
                if !f.file_name().to_string_lossy().starts_with(".tmp") {
                    out.push(f.path());
                }
            }
        }
    }
    out.sort();
    out
}

/// Flips one byte in the middle of a local repository's pack file: damage that only
/// reading its data finds (the header and the name stay as they were).
pub fn damage_pack(pack: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut bytes = std::fs::read(pack).expect("read pack");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::set_permissions(pack, std::fs::Permissions::from_mode(0o644)).expect("chmod pack");
    std::fs::write(pack, &bytes).expect("write pack");
}

pub fn run_sh(cmd: &str) -> bool {
    Command::new("sh").arg("-c").arg(cmd).status().map(|s| s.success()).unwrap_or(false)
}

/// A tmpfs mounted for a test and unmounted when dropped. `None` when this process may not
/// mount (not root, or no permission in this sandbox): the caller skips loudly.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    pub fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return None;
        }
        std::fs::create_dir_all(at).ok()?;
        run_sh(&format!("mount -t tmpfs -o size={size} tmpfs '{}'", at.display())).then(|| Tmpfs(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        run_sh(&format!("umount '{}'", self.0.display()));
    }
}

/// A test whose server, tool or privilege is missing: under CI (`CI=true`, as `.ci/run`
/// runs) this fails the test, so a missing install step cannot become a green run;
/// elsewhere it says why on stderr and the caller returns.
pub fn skip(why: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("{why} (CI=true: a missing server or tool is a failure, not a skip)");
    }
    eprintln!("SKIPPED: {why}");
}

/// Runs the test `name` of the calling test binary in a child process with `vars` in
/// its environment, and fails unless it ran and passed. For in-process clients that read
/// their settings from the environment (object_store's builders): setting variables in
/// the test process itself would race the other tests' threads under plain `cargo test`
/// (and `setenv` beside a `getenv` in another thread is undefined behaviour). The child
/// test is `#[ignore]`d so that it runs only this way.
pub fn run_child_test(name: &str, vars: &[(&str, &str)]) {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(exe)
        .args([name, "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .envs(vars.iter().copied())
        .env("CAIRN_CHILD_TEST", name)
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{name} (in a child process) failed:\n{text}");
    assert!(text.contains("1 passed"), "{name} did not run in the child process:\n{text}");
}

/// In a test that [`run_child_test`] runs: the variable its parent set (a child test run
/// any other way fails here, rather than pass without doing anything).
pub fn child_var(name: &str) -> String {
    assert!(std::env::var_os("CAIRN_CHILD_TEST").is_some(), "run by its parent test, in a child process");
    std::env::var(name).unwrap_or_else(|_| panic!("{name} not set by the parent test"))
}

#![allow(clippy::unwrap_used)]
//! `cairn mount` against the kernel's FUSE: what a mounted repository shows is what a
//! restore writes, reads cost what they touch, and a damaged pack fails only its files.
//! Needs root (mount(2)), /dev/fuse and Debian's fuse3 (`fusermount3`).

mod common;
use common::*;

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// A running `cairn mount`, unmounted and killed when dropped.
struct Mounted {
    child: Child,
    at: PathBuf,
    log: PathBuf,
}

impl Mounted {
    fn start(env: &Env, at: &Path, extra: &[&str]) -> Mounted {
        std::fs::create_dir_all(at).unwrap();
        let log = env.path(&format!("mount-{}.log", at.file_name().unwrap().to_string_lossy()));
        let child = env
            .cmd()
            .arg("mount")
            .arg(at)
            .args(["--refresh", "1"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut m = Mounted { child, at: at.to_path_buf(), log };
        let t0 = Instant::now();
        while !is_mount_point(at) {
            if let Some(s) = m.child.try_wait().unwrap() {
                panic!("cairn mount exited {s}: {}", m.log());
            }
            assert!(t0.elapsed() < Duration::from_secs(20), "not mounted: {}", m.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        m
    }
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    /// Waits for the command to end by itself (after an unmount or a signal).
    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let t0 = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(t0.elapsed() < Duration::from_secs(20), "cairn mount did not end: {}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if is_mount_point(&self.at) {
            run_sh(&format!("umount -l '{}'", self.at.display()));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn is_mount_point(p: &Path) -> bool {
    let p = std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(1) == Some(&p.display().to_string()) && l.contains("fuse"))
}

/// Whether this machine can run the tests (else they skip, which fails under CI).
fn fuse_ready() -> bool {
    let why = if !is_root() {
        "not root: mounting needs mount(2)"
    } else if !Path::new("/dev/fuse").exists() {
        "/dev/fuse is missing"
    } else if !run_sh("command -v fusermount3 >/dev/null") {
        "fusermount3 is missing (Debian package fuse3)"
    } else {
        return true;
    };
    skip(why);
    false
}

/// Bytes the mount process has read (its `rchar`): what reading through it cost.
fn read_by(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn a_mounted_repository_reads_like_a_restore() {
    if !fuse_ready() {
        return;
    }
    let env = Env::new();
    env.init();
    let data = env.path("data");
    std::fs::create_dir_all(data.join("docs/deep")).unwrap();
    std::fs::write(data.join("docs/report.txt"), "quarterly report: the needle is here\n").unwrap();
    std::fs::write(data.join("docs/deep/notes.md"), "nothing to see\n").unwrap();
    std::fs::set_permissions(data.join("docs/deep/notes.md"), std::fs::Permissions::from_mode(0o640)).unwrap();
    let big = noise(40 << 20, 7);
    std::fs::write(data.join("big.bin"), &big).unwrap();
    std::fs::hard_link(data.join("docs/report.txt"), data.join("report-link.txt")).unwrap();
    std::os::unix::fs::symlink("docs/report.txt", data.join("latest-report")).unwrap();
    assert!(set_xattr(&data.join("docs/report.txt"), "user.owner", b"finance"));
    set_mtime(&data.join("docs/deep/notes.md"), 1_600_000_000, 123_456_789);
    env.ok(&["backup", data.to_str().unwrap(), "--tag", "daily"]);
    let first = env.short_ids()[0].clone();
    let restored = env.path("restored");
    env.ok(&["restore", "latest", "--target", restored.to_str().unwrap()]);

    let at = env.path("mnt");
    let mut m = Mounted::start(&env, &at, &[]);
    let rel = data.strip_prefix("/").unwrap();
    let root = at.join("snapshots/latest");
    // The layout: by time, host, tag and id, with `latest` links.
    let host = cairn_fs::hostname();
    for p in [
        at.join("latest").join(rel).join("big.bin"),
        at.join("hosts").join(&host).join("latest").join(rel).join("big.bin"),
        at.join("tags/daily/latest").join(rel).join("big.bin"),
        at.join("ids").join(&first).join(rel).join("big.bin"),
    ] {
        assert_eq!(std::fs::metadata(&p).map(|m| m.len()).ok(), Some(big.len() as u64), "{}", p.display());
    }
    // `cp -a` out of the mount writes what a restore writes: contents, modes, owners,
    // times, xattrs, symlinks and the hardlink pair.
    let copied = env.path("copied");
    std::fs::create_dir_all(&copied).unwrap();
    assert!(run_sh(&format!("cp -a '{}/.' '{}'", root.display(), copied.display())), "cp -a failed");
    let diffs = compare_trees(&copied, &restored, true);
    assert!(diffs.is_empty(), "cp -a out of the mount differs from a restore: {diffs:?}");
    // find and grep walk it like any tree.
    let count = |d: &Path| {
        let o = std::process::Command::new("find").arg(d).output().unwrap();
        String::from_utf8_lossy(&o.stdout).lines().count()
    };
    assert_eq!(count(&root.join(rel)), count(&restored.join(rel)));
    let o = std::process::Command::new("grep").args(["-rl", "needle"]).arg(root.join(rel)).output().unwrap();
    let hits = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(hits.contains("docs/report.txt") && hits.contains("report-link.txt"), "{hits}");
    assert!(!hits.contains("notes.md"), "{hits}");
    // The last bytes of a 40 MiB file cost one blob (at most 4 MiB), not the file.
    let path = root.join(rel).join("big.bin");
    let mut f = std::fs::File::open(&path).unwrap();
    let before = read_by(m.child.id());
    f.seek(SeekFrom::End(-10)).unwrap();
    let mut tail = [0u8; 10];
    f.read_exact(&mut tail).unwrap();
    let cost = read_by(m.child.id()) - before;
    assert_eq!(&tail, &big[big.len() - 10..]);
    assert!(cost < 8 << 20, "reading 10 bytes at the end read {cost} bytes of the repository");
    for off in [0usize, 1 << 20, (17 << 20) + 12345, big.len() - 4096] {
        let mut b = vec![0u8; 4096];
        f.seek(SeekFrom::Start(off as u64)).unwrap();
        f.read_exact(&mut b).unwrap();
        assert_eq!(b, &big[off..off + 4096], "at {off}");
    }
    // Concurrent readers get the same bytes.
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|i| {
                let (path, root, rel, big) = (&path, &root, rel, &big);
                s.spawn(move || {
                    if i % 2 == 0 {
                        std::fs::read(path).unwrap() == *big
                    } else {
                        std::fs::read(root.join(rel).join("docs/report.txt")).unwrap()
                            == b"quarterly report: the needle is here\n"
                    }
                })
            })
            .collect();
        for h in hs {
            assert!(h.join().unwrap(), "a concurrent reader got other bytes");
        }
    });
    // Read-only.
    let w = std::fs::write(root.join(rel).join("new.txt"), "x");
    assert!(w.is_err(), "a write went through");
    // A new snapshot appears without remounting, and `latest` follows it.
    std::fs::write(data.join("docs/report.txt"), "revised report\n").unwrap();
    env.ok(&["backup", data.to_str().unwrap()]);
    let t0 = Instant::now();
    loop {
        let n = std::fs::read_dir(at.join("snapshots")).unwrap().count();
        let now = std::fs::read(at.join("latest").join(rel).join("docs/report.txt")).unwrap_or_default();
        if n == 3 && now == b"revised report\n" {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(15), "the new snapshot did not appear ({n} entries)");
        std::thread::sleep(Duration::from_millis(200));
    }
    // The first snapshot still shows the old report.
    assert_eq!(
        std::fs::read(at.join("ids").join(&first).join(rel).join("docs/report.txt")).unwrap(),
        b"quarterly report: the needle is here\n"
    );
    // fusermount3 -u ends it, cleanly (nothing of it may be open: a busy mount stays).
    drop(f);
    assert!(run_sh(&format!("fusermount3 -u '{}'", at.display())), "fusermount3 -u failed");
    let s = m.wait_exit();
    assert!(s.success(), "{s}: {}", m.log());
    // One snapshot only, at the top, with --snapshot.
    let one = env.path("one");
    let mut m = Mounted::start(&env, &one, &["--snapshot", &first]);
    assert_eq!(
        std::fs::read(one.join(rel).join("docs/report.txt")).unwrap(),
        b"quarterly report: the needle is here\n"
    );
    m.child.kill().ok();
    let _ = m.child.wait();
    drop(m);
    // The audit log has the mount.
    let log = env.ok(&["audit", "log", "--action", "mount"]);
    assert!(log.contains("mount") && log.contains(at.to_str().unwrap()), "{log}");
}

#[test]
fn a_damaged_pack_fails_only_its_files_and_sigterm_unmounts() {
    if !fuse_ready() {
        return;
    }
    let env = Env::new();
    env.init();
    let (a, b) = (env.path("a"), env.path("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    std::fs::write(a.join("victim.bin"), noise(3_000_000, 1)).unwrap();
    env.ok(&["backup", a.to_str().unwrap()]);
    let before = packs(&env.repo);
    std::fs::write(b.join("survivor.bin"), noise(3_000_000, 2)).unwrap();
    env.ok(&["backup", b.to_str().unwrap()]);
    // The data pack of the first backup is its largest.
    let victim = before.iter().max_by_key(|p| std::fs::metadata(p).unwrap().len()).unwrap().clone();
    damage_pack(&victim);
    let ids = env.short_ids();
    let at = env.path("mnt");
    let mut m = Mounted::start(&env, &at, &[]);
    let file =
        |id: &str, dir: &Path, name: &str| at.join("ids").join(id).join(dir.strip_prefix("/").unwrap()).join(name);
    let e = std::fs::read(file(&ids[0], &a, "victim.bin")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    assert_eq!(std::fs::read(file(&ids[1], &b, "survivor.bin")).unwrap(), noise(3_000_000, 2));
    // Its metadata still lists.
    assert_eq!(std::fs::metadata(file(&ids[0], &a, "victim.bin")).unwrap().len(), 3_000_000);
    assert!(m.log().contains("damaged"), "the mount says why: {}", m.log());
    // SAFETY: a signal to our child.
    unsafe { libc::kill(m.child.id() as i32, libc::SIGTERM) };
    let s = m.wait_exit();
    assert!(s.success(), "{s}: {}", m.log());
    assert!(!is_mount_point(&at), "still mounted after SIGTERM");
}

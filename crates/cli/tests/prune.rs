#![allow(clippy::unwrap_used)]
//! `cairn prune` through the binary: two-phase deletion, repacking, dry runs, erasure, and
//! safety under kill -9 and concurrent backups.

mod common;
use common::*;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// Every file of the repository with its size and content hash: what "changed nothing"
/// is measured against.
fn repo_state(repo: &Path) -> BTreeMap<String, (u64, [u8; 32])> {
    let mut out = BTreeMap::new();
    let mut stack = vec![repo.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            } else {
                let b = std::fs::read(&p).unwrap();
                out.insert(
                    p.strip_prefix(repo).unwrap().display().to_string(),
                    (b.len() as u64, *blake3::hash(&b).as_bytes()),
                );
            }
        }
    }
    out
}

fn open(repo: &Path, rt: &tokio::runtime::Runtime) -> cairn_repo::Repository {
    cairn_repo::Repository::open(Arc::new(cairn_store::LocalStore::new(repo)), rt.handle().clone(), PASSWORD.as_bytes())
        .unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    // The repository API needs a multi-thread runtime: it spawns reads and blocks on them.
    tokio::runtime::Builder::new_multi_thread().worker_threads(1).build().unwrap()
}

/// The plaintext of every blob in every pack file of the repository, indexed or not.
fn all_blobs(repo_path: &Path) -> Vec<Vec<u8>> {
    let rt = runtime();
    let repo = open(repo_path, &rt);
    let mut out = Vec::new();
    for p in packs(repo_path) {
        let id = cairn_format::PackId::from_hex(p.file_name().unwrap().to_str().unwrap()).unwrap();
        let (salt, entries) = repo.read_pack_header(id).unwrap();
        for e in entries {
            let loc = cairn_repo::Location {
                pack: 0,
                offset: e.offset,
                length: e.length,
                raw_length: e.raw_length,
                kind: e.kind,
            };
            out.push(repo.read_blob_at(&e.id, id, &salt, &loc).unwrap());
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn restore_equals(env: &Env, snap: &str, src: &Path, target: &str) {
    let t = env.path(target);
    env.ok(&["restore", &format!("{snap}:{}", src.display()), "--target", t.to_str().unwrap()]);
    let diffs = compare_trees(src, &t, false);
    assert!(diffs.is_empty(), "{snap} restored differently: {diffs:?}");
}

fn check_clean(env: &Env, read_data: bool) {
    let mut args = vec!["check"];
    if read_data {
        args.push("--read-data");
    }
    let o = env.run(&args);
    assert!(o.status.success(), "check failed:\n{}\n{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
}

#[test]
fn prune_marks_then_deletes_after_the_grace_period_and_repacks() {
    let env = Env::new();
    env.ok(&["init", "--pack-size", "64K"]);
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..30u64 {
        std::fs::write(src.join(format!("f{i:02}")), noise(20_000, 2 * i + 101)).unwrap();
    }
    std::fs::write(src.join("big"), noise(1_000_000, 100)).unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let first = env.short_ids()[0].clone();
    // Half the small files and the big one go: their packs become partly or wholly unused.
    for i in 0..30u64 {
        if i % 2 == 0 {
            std::fs::remove_file(src.join(format!("f{i:02}"))).unwrap();
        }
    }
    std::fs::remove_file(src.join("big")).unwrap();
    std::fs::write(src.join("new"), noise(30_000, 200)).unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    env.ok(&["forget", &first]);

    // A dry run reports and changes nothing.
    let before = repo_state(&env.repo);
    let dry = env.json(&["prune", "--dry-run", "--max-unused", "0"]);
    assert_eq!(dry["dry_run"], true);
    assert!(dry["packs_marked"].as_u64().unwrap() >= 1, "{dry}");
    assert!(dry["packs_repacked"].as_u64().unwrap() >= 1, "{dry}");
    assert_eq!(repo_state(&env.repo), before, "prune --dry-run changed the repository");

    // First run: marks and repacks, deletes nothing (grace period).
    let r1 = env.json(&["prune", "--max-unused", "0"]);
    assert_eq!(r1["packs_deleted"], 0, "{r1}");
    assert!(r1["packs_pending"].as_u64().unwrap() >= 2, "{r1}");
    assert!(r1["bytes_pending"].as_u64().unwrap() >= 1_000_000, "{r1}");
    check_clean(&env, false);
    restore_equals(&env, "latest", &src, "r1");
    let repo_bytes = |s: &BTreeMap<String, (u64, [u8; 32])>| s.values().map(|v| v.0).sum::<u64>();
    let size_marked = repo_bytes(&repo_state(&env.repo));

    // Still within the grace period: nothing goes.
    let r2 = env.json(&["prune"]);
    assert_eq!(r2["packs_deleted"], 0, "{r2}");
    assert_eq!(r2["packs_marked"], 0, "nothing new to mark: {r2}");

    // Grace period over (0 here): the marked packs go, and only they.
    let r3 = env.json(&["prune", "--grace", "0"]);
    assert_eq!(r3["packs_deleted"], r1["packs_pending"], "{r3}");
    assert_eq!(r3["packs_pending"], 0, "{r3}");
    let after = repo_bytes(&repo_state(&env.repo));
    assert!(after + 1_000_000 < size_marked, "{after} vs {size_marked}");
    check_clean(&env, true);
    restore_equals(&env, "latest", &src, "r3");
    assert!(env.run(&["restore", &first, "--target", env.path("gone").to_str().unwrap()]).status.code() == Some(1));

    // Steady state: nothing to do.
    let r4 = env.json(&["prune", "--grace", "0", "--max-unused", "0"]);
    assert_eq!(
        (r4["packs_marked"].as_u64(), r4["packs_repacked"].as_u64(), r4["packs_deleted"].as_u64()),
        (Some(0), Some(0), Some(0)),
        "{r4}"
    );
    assert!(r4["bytes_unused"].as_u64().unwrap() * 10 < r4["bytes_used"].as_u64().unwrap(), "{r4}");
}

#[test]
fn delete_now_is_refused_while_another_writer_holds_a_lease() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), noise(100_000, 1)).unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let rt = runtime();
    let repo = open(&env.repo, &rt);
    let lease = repo.lease("backup", "elsewhere").unwrap();
    let o = env.run(&["prune", "--delete-now"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("another cairn process") && err.contains("backup on elsewhere"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // Without --delete-now prune runs, and defers deletion to the writer's end.
    env.ok(&["forget", "latest"]);
    let r = env.json(&["prune", "--grace", "0"]);
    assert_eq!(r["packs_deleted"], 0, "{r}");
    assert!(r["packs_pending"].as_u64().unwrap() >= 1, "{r}");
    assert!(r["pending_reasons"][0].as_str().unwrap().contains("writer"), "{r}");
    drop(lease);
    let r = env.json(&["prune", "--grace", "0"]);
    assert!(r["packs_deleted"].as_u64().unwrap() >= 1, "{r}");
    check_clean(&env, true);
}

#[test]
fn rewrite_forget_and_prune_delete_now_erase_a_file_from_every_pack() {
    let env = Env::new();
    env.ok(&["init", "--pack-size", "64K"]);
    let src = env.path("src");
    std::fs::create_dir_all(src.join("docs")).unwrap();
    for i in 0..8u64 {
        std::fs::write(src.join(format!("docs/n{i}.txt")), noise(15_000, 2 * i + 301)).unwrap();
    }
    let secret = noise(15_000, 999);
    std::fs::write(src.join("docs/secret.txt"), &secret).unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    std::fs::write(src.join("docs/n0.txt"), noise(15_000, 50)).unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let probe = &secret[7_000..7_064];
    assert!(all_blobs(&env.repo).iter().any(|b| contains(b, probe)), "the test must see the secret before erasure");

    let mut args = vec!["rewrite".to_string(), "--exclude".into(), "secret.txt".into(), "--forget".into()];
    args.extend(env.short_ids());
    env.ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let r = env.json(&["prune", "--delete-now"]);
    assert!(r["packs_deleted"].as_u64().unwrap() >= 1, "{r}");
    assert_eq!(r["packs_pending"], 0, "{r}");

    let blobs = all_blobs(&env.repo);
    assert!(!blobs.is_empty());
    for b in &blobs {
        assert!(!contains(b, probe), "a pack still holds the erased file's bytes");
        assert!(!contains(b, b"secret.txt"), "a tree still names the erased file");
    }
    check_clean(&env, true);
    let t = env.path("r");
    env.ok(&["restore", &format!("latest:{}", src.display()), "--target", t.to_str().unwrap()]);
    assert!(!t.join("docs/secret.txt").exists());
    std::fs::remove_file(src.join("docs/secret.txt")).unwrap();
    // Removing the file from the source changed its directory's mtime; all else is equal.
    let diffs: Vec<String> =
        compare_trees(&src, &t, false).into_iter().filter(|d| d != "docs/: directory mtime differs").collect();
    assert!(diffs.is_empty(), "{diffs:?}");
}

/// Deterministic content of one backup iteration: blocks from a shared pool (so backups
/// keep re-using blobs whose last snapshot is being forgotten) and one file of its own.
fn iteration_dir(root: &Path, w: u64, i: u64) -> std::path::PathBuf {
    let d = root.join(format!("w{w}/i{i}"));
    std::fs::create_dir_all(&d).unwrap();
    let mut x = (w * 7919 + i * 104_729) | 1;
    for f in 0..6 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        std::fs::write(d.join(format!("f{f}")), noise(30_000, 2 * (x % 40) + 1)).unwrap();
    }
    std::fs::write(d.join("own"), noise(20_000, 2 * (1000 + w * 1000 + i) + 1)).unwrap();
    d
}

#[test]
fn concurrent_backups_forgets_and_prunes_lose_nothing() {
    let env = Env::new();
    env.ok(&["init", "--pack-size", "64K"]);
    let root = env.path("src");
    let stop = std::sync::atomic::AtomicBool::new(false);
    let deleted = std::sync::atomic::AtomicU64::new(0);
    let prunes = std::sync::atomic::AtomicU64::new(0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(40);
    std::thread::scope(|s| {
        for w in 0..3u64 {
            let (env, root, stop) = (&env, &root, &stop);
            s.spawn(move || {
                let mut ids: Vec<String> = Vec::new();
                let mut i = 0;
                while std::time::Instant::now() < deadline && !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let d = iteration_dir(root, w, i);
                    let o = env.run(&["--json", "backup", d.to_str().unwrap(), "--tag", &format!("w{w}-i{i}")]);
                    if !o.status.success() {
                        stop.store(true, std::sync::atomic::Ordering::Relaxed);
                        panic!("backup w{w} i{i} failed: {}", stderr(&o));
                    }
                    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
                    ids.push(v["snapshot_id"].as_str().unwrap().to_string());
                    // Keep the last two snapshots of this worker: the rest become garbage
                    // while the next backups keep re-using many of their blobs.
                    if ids.len() > 2 {
                        let old = ids.remove(0);
                        env.ok(&["forget", &old]);
                    }
                    i += 1;
                }
            });
        }
        for p in 0..2u64 {
            let (env, stop, deleted, prunes) = (&env, &stop, &deleted, &prunes);
            s.spawn(move || {
                let mut n = 0u64;
                while std::time::Instant::now() < deadline && !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let now = (n + p) % 3 == 0;
                    let mut args = vec!["--json", "prune", "--grace", "0", "--max-unused", "0"];
                    if now {
                        args.push("--delete-now");
                    }
                    let o = env.run(&args);
                    n += 1;
                    if now && o.status.code() == Some(1) && stderr(&o).contains("another cairn process") {
                        continue; // refused while backups run: as documented
                    }
                    if !o.status.success() {
                        stop.store(true, std::sync::atomic::Ordering::Relaxed);
                        panic!("prune failed: {}", stderr(&o));
                    }
                    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
                    deleted.fetch_add(v["packs_deleted"].as_u64().unwrap(), std::sync::atomic::Ordering::Relaxed);
                    prunes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            });
        }
    });
    assert!(prunes.into_inner() >= 4, "too few prunes ran to mean anything");
    assert!(deleted.into_inner() > 0, "no prune deleted anything: the test exercised nothing");
    env.ok(&["prune", "--grace", "0", "--max-unused", "0"]);
    check_clean(&env, true);
    let snaps = env.json(&["snapshots"]);
    let snaps = snaps.as_array().unwrap();
    assert!(snaps.len() >= 3, "{snaps:?}");
    for s in snaps {
        let tag = s["tags"][0].as_str().unwrap();
        let (w, i) = tag.trim_start_matches('w').split_once("-i").unwrap();
        let src = root.join(format!("w{w}/i{i}"));
        restore_equals(&env, s["short_id"].as_str().unwrap(), &src, &format!("restored-{tag}"));
    }
}

#[test]
fn prune_killed_at_any_point_leaves_a_repository_that_checks_and_prunes() {
    let env = Env::new();
    env.ok(&["init", "--pack-size", "64K"]);
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..240u64 {
        std::fs::write(src.join(format!("f{i:03}")), noise(20_000, 2 * i + 1)).unwrap();
    }
    env.ok(&["backup", src.to_str().unwrap()]);
    let first = env.short_ids()[0].clone();
    for i in 0..240u64 {
        if i % 3 != 0 {
            std::fs::remove_file(src.join(format!("f{i:03}"))).unwrap();
        }
    }
    env.ok(&["backup", src.to_str().unwrap()]);
    env.ok(&["forget", &first]);
    let packs_before = packs(&env.repo).len();
    // Short leases, so what the killed prunes leave expires within the test.
    let lease = "5";
    for k in 0..10u64 {
        let mut child = env
            .cmd()
            .env("CAIRN_WRITER_LEASE", lease)
            .args(["prune", "--grace", "0", "--max-unused", "0"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(60 + k * k * 9));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        check_clean(&env, false);
    }
    restore_equals(&env, "latest", &src, "mid");
    // Leases of the killed prunes expire (5 s + a fifth): then prune finishes the job.
    std::thread::sleep(std::time::Duration::from_secs(7));
    let mut pending = u64::MAX;
    for _ in 0..3 {
        let o = env
            .cmd()
            .env("CAIRN_WRITER_LEASE", lease)
            .args(["--json", "prune", "--grace", "0", "--max-unused", "0"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        pending = v["packs_pending"].as_u64().unwrap();
        if pending == 0 {
            break;
        }
    }
    assert_eq!(pending, 0, "prune never finished what the killed runs started");
    check_clean(&env, true);
    restore_equals(&env, "latest", &src, "end");
    let after = packs(&env.repo).len();
    assert!(after * 2 < packs_before, "{after} packs left of {packs_before}");
}

#[test]
fn a_backup_suspended_past_its_lease_publishes_nothing() {
    let env = Env::new();
    env.init();
    let child = env
        .cmd()
        .env("CAIRN_WRITER_LEASE", "5")
        .args(["backup", "--command", "sleep 1; head -c 300000 /dev/zero", "--stdin-name", "x"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let pid = child.id() as libc::pid_t;
    // As if the machine slept: the lease lapses while the process cannot renew it.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    std::thread::sleep(std::time::Duration::from_secs(8));
    unsafe { libc::kill(pid, libc::SIGCONT) };
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("lease lapsed"), "{}", stderr(&o));
    assert!(env.short_ids().is_empty(), "a snapshot was published after the lease lapsed");
    // Run again, it succeeds.
    env.ok(&["backup", "--command", "head -c 300000 /dev/zero", "--stdin-name", "x"]);
    assert_eq!(env.short_ids().len(), 1);
}

/// Sets a file's modification time `days` back.
fn age(p: &Path, days: i64) {
    let t = std::time::SystemTime::now() - std::time::Duration::from_secs((days * 86400) as u64);
    let secs = t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    set_mtime(p, secs, 0);
}

#[test]
fn objects_in_their_lock_period_are_never_deleted_by_cairn() {
    let env = Env::new();
    env.ok(&["init", "--object-lock-days", "1"]);
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), noise(2_000_000, 41)).unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let first = env.short_ids()[0].clone();
    std::fs::write(src.join("a"), noise(2_000_000, 43)).unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    // A young snapshot is kept by forget, with a clear note.
    let o = env.run(&["forget", &first]);
    assert!(o.status.success());
    assert!(stderr(&o).contains("object-lock period"), "{}", stderr(&o));
    assert_eq!(env.short_ids().len(), 2);
    // Once old enough it goes; its packs are still young: prune leaves them and says so.
    let snap = std::fs::read_dir(env.repo.join("snapshots")).unwrap().flatten().map(|e| e.path()).collect::<Vec<_>>();
    for s in &snap {
        age(s, 2);
    }
    env.ok(&["forget", &first]);
    assert_eq!(env.short_ids().len(), 1);
    let r = env.json(&["prune", "--delete-now"]);
    assert_eq!(r["packs_deleted"], 0, "{r}");
    assert!(r["packs_locked"].as_u64().unwrap() >= 1, "{r}");
    check_clean(&env, false);
    // After the lock period a later prune deletes them.
    for p in packs(&env.repo) {
        age(&p, 2);
    }
    let r = env.json(&["prune", "--delete-now"]);
    assert!(r["packs_deleted"].as_u64().unwrap() >= 1, "{r}");
    assert_eq!(r["packs_locked"], 0, "{r}");
    check_clean(&env, true);
    restore_equals(&env, "latest", &src, "r");
}

/// Marks every directory of the repository append-only (`chattr +a`: entries can be
/// added, none removed, even by root) and undoes it when dropped.
struct AppendOnly(Vec<std::path::PathBuf>);

impl AppendOnly {
    fn set(dirs: Vec<std::path::PathBuf>) -> Option<AppendOnly> {
        for d in &dirs {
            if !run_sh(&format!("chattr +a '{}' 2>/dev/null", d.display())) {
                let _ = AppendOnly(dirs.clone());
                return None;
            }
        }
        Some(AppendOnly(dirs))
    }
}

impl Drop for AppendOnly {
    fn drop(&mut self) {
        for d in &self.0 {
            run_sh(&format!("chattr -a '{}' 2>/dev/null", d.display()));
        }
    }
}

#[test]
fn an_append_only_repository_backs_up_and_says_clearly_what_needs_delete_rights() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), noise(600_000, 71)).unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let first = env.short_ids()[0].clone();
    std::fs::write(src.join("a"), noise(600_000, 73)).unwrap();
    let mut dirs: Vec<_> = ["snapshots", "index", "keys", "data"].iter().map(|d| env.repo.join(d)).collect();
    dirs.extend(std::fs::read_dir(env.repo.join("data")).unwrap().flatten().map(|e| e.path()));
    let Some(guard) = AppendOnly::set(dirs) else {
        cairn_testkit::skip("chattr +a is not available here (needs root on ext4/xfs)");
        return;
    };
    // Adding works: backup, check, restore.
    env.ok(&["backup", src.to_str().unwrap()]);
    check_clean(&env, true);
    restore_equals(&env, "latest", &src, "r");
    // Removing does not, and says why in one line.
    let o = env.run(&["forget", &first]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("forget needs the right to delete") && e.trim().lines().count() == 1, "{e}");
    drop(guard);
    env.ok(&["forget", &first]);
    let mut dirs: Vec<_> = ["index", "data"].iter().map(|d| env.repo.join(d)).collect();
    dirs.extend(std::fs::read_dir(env.repo.join("data")).unwrap().flatten().map(|e| e.path()));
    let _guard = AppendOnly::set(dirs).unwrap();
    let o = env.run(&["prune", "--delete-now"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("prune needs the right to delete"), "{}", stderr(&o));
    check_clean(&env, false);
}

/// A backup that read the index before a prune marked packs may save a snapshot whose
/// blobs only those packs hold (the policy daemon does this whenever a class's retention
/// runs beside another source's backup). Until the next sweep indexes them again, that
/// snapshot must check clean and restore; the sweep must keep them.
#[test]
fn a_snapshot_saved_while_prune_ran_restores_checks_and_survives_the_sweep() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), noise(300_000, 3)).unwrap();
    std::fs::write(src.join("b"), b"small file").unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let snaps = env.json(&["snapshots"]);
    let tree = snaps[0]["tree"].as_str().unwrap().to_string();
    let id = snaps[0]["id"].as_str().unwrap().to_string();
    env.ok(&["forget", &id]);
    // Marks every pack: no snapshot references them now.
    env.ok(&["prune"]);
    // What the concurrent backup saves once the prune has marked.
    {
        let (_rt, repo) = cairn_testkit::craft::open(&env.repo, PASSWORD);
        let root = cairn_format::TreeId::from_hex(&tree).unwrap();
        let _lease = repo.lease("backup", "test").unwrap();
        repo.save_snapshot(&cairn_testkit::craft::snapshot_of(root)).unwrap();
    }
    let o = env.run(&["check", "--read-data"]);
    assert!(o.status.success(), "check: {}", stderr(&o));
    assert!(stderr(&o).contains("marked for deletion"), "{}", stderr(&o));
    restore_equals(&env, "latest", &src, "before-sweep");
    env.ok(&["prune", "--delete-now"]);
    check_clean(&env, true);
    restore_equals(&env, "latest", &src, "after-sweep");
}

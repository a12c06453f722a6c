#![allow(clippy::unwrap_used)]
//! Killed writers, run again: whatever instant a `copy`, `backup`, `rewrite` or `prune`
//! dies at, the rerun must leave a repository that `check` passes and whose snapshots
//! restore. Issue 9 found a rerun copy that saved snapshots whose data never arrived,
//! because it trusted a tree that the killed run had left behind.
//!
//! The loops kill at random instants (the seed is printed; `CAIRN_CRASH_SEED` replays
//! it) over a tens of trials here; `bench/torture.sh` runs hundreds with
//! `CAIRN_CRASH_TRIALS`.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

fn trials(default: usize) -> usize {
    std::env::var("CAIRN_CRASH_TRIALS").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// xorshift64*, seeded from the clock unless `CAIRN_CRASH_SEED` says otherwise.
struct Rng(u64);

impl Rng {
    fn new(what: &str) -> Rng {
        let seed = std::env::var("CAIRN_CRASH_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
        });
        eprintln!("{what}: CAIRN_CRASH_SEED={seed}");
        Rng(seed | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(1).build().unwrap()
}

fn open(repo: &Path, rt: &tokio::runtime::Runtime) -> cairn_repo::Repository {
    cairn_repo::Repository::open(Arc::new(cairn_store::LocalStore::new(repo)), rt.handle().clone(), PASSWORD.as_bytes())
        .unwrap()
}

/// Adds `files` new files of 1-12 KB in `dirs` directories under `root/round-N`, and
/// rewrites a few older files, so a backup has new data, new trees and changed trees.
fn grow(root: &Path, round: u64, files: u64, dirs: u64) {
    grow_sized(root, round, files, dirs, 1_000..12_000)
}

fn grow_sized(root: &Path, round: u64, files: u64, dirs: u64, sizes: std::ops::Range<u64>) {
    for i in 0..files {
        let d = root.join(format!("round-{round:03}/d{:02}", i % dirs));
        std::fs::create_dir_all(&d).unwrap();
        let size = (sizes.start + (round * 7919 + i * 104_729) % (sizes.end - sizes.start)) as usize;
        std::fs::write(d.join(format!("file-with-a-longish-name-{i:04}.dat")), noise(size, round * 100_000 + i))
            .unwrap();
    }
    if let Ok(old) = std::fs::read_dir(root.join(format!("round-{:03}/d00", round.saturating_sub(1)))) {
        for e in old.flatten().take(5) {
            std::fs::write(e.path(), noise(4_000, round * 31 + 7)).unwrap();
        }
    }
}

/// Kills commands at random instants within `span`, a guess of how long they run (in
/// milliseconds for [`Killer::run`], in units of progress for [`Killer::run_at_progress`])
/// that it adapts as it goes: shorter when a command ended before its kill.
struct Killer {
    rng: Rng,
    span: u64,
    killed: usize,
    runs: usize,
}

impl Killer {
    fn new(what: &str, span: u64) -> Killer {
        Killer { rng: Rng::new(what), span: span.max(20), killed: 0, runs: 0 }
    }
    /// Starts `cmd`, SIGKILLs it at a random instant, and says whether it was still running.
    fn run(&mut self, mut cmd: Command) -> bool {
        let delay = Duration::from_millis(self.rng.below(self.span));
        let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        let start = Instant::now();
        let end = start + delay;
        self.runs += 1;
        while Instant::now() < end {
            if child.try_wait().unwrap().is_some() {
                self.span = (start.elapsed().as_millis() as u64).max(20);
                return false;
            }
            std::thread::sleep(Duration::from_millis(1).min(end.saturating_duration_since(Instant::now())));
        }
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        let killed = child.wait().unwrap().signal() == Some(libc::SIGKILL);
        if killed {
            self.killed += 1;
            self.span = self.span * 11 / 10 + 1;
        }
        killed
    }
    /// Starts `cmd` and SIGKILLs it once `progress()` (e.g. the packs in the repository it
    /// writes) has grown by a random amount, at most what a whole run added last time, plus
    /// a random few milliseconds: random points of the write sequence, however fast the
    /// machine. Says whether it was still running.
    fn run_at_progress(&mut self, mut cmd: Command, progress: impl Fn() -> usize) -> bool {
        let base = progress();
        let target = base + 1 + self.rng.below(self.span) as usize;
        let extra = Duration::from_micros(self.rng.below(5_000));
        let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        self.runs += 1;
        let deadline = Instant::now() + Duration::from_secs(60);
        while progress() < target && Instant::now() < deadline {
            if child.try_wait().unwrap().is_some() {
                self.span = (progress() - base).max(1) as u64;
                return false;
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        std::thread::sleep(extra);
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        let killed = child.wait().unwrap().signal() == Some(libc::SIGKILL);
        if killed {
            self.killed += 1;
            self.span += 1;
        }
        killed
    }
    /// Most runs must have been killed mid-way, or the loop tested little.
    fn assert_mostly_killed(&self, what: &str) {
        eprintln!("{what}: {} of {} runs killed mid-run (span now {})", self.killed, self.runs, self.span);
        assert!(self.killed * 2 >= self.runs, "{what}: only {} of {} runs were killed mid-run", self.killed, self.runs);
    }
}

fn assert_ok(o: &Output, what: &str) {
    assert!(o.status.success(), "{what} failed ({}):\n{}\n{}", o.status, String::from_utf8_lossy(&o.stdout), stderr(o));
}

/// A source repository and a destination made with `--copy-chunker-params-from` it, both
/// with 64 KiB packs so that a copy writes many packs, tree packs among them.
struct Pair {
    env: Env,
    dst: PathBuf,
}

impl Pair {
    fn new() -> Pair {
        let env = Env::new();
        env.ok(&["init", "--pack-size", "64K"]);
        let dst = env.path("dst");
        let p = Pair { env, dst };
        let o = p
            .on_dst()
            .env("CAIRN_FROM_PASSWORD", PASSWORD)
            .args(["init", "--pack-size", "64K", "--copy-chunker-params-from", p.env.repo.to_str().unwrap()])
            .output()
            .unwrap();
        assert_ok(&o, "init of the destination");
        p
    }
    fn on_dst(&self) -> Command {
        self.on(&self.dst)
    }
    fn on(&self, repo: &Path) -> Command {
        let mut c = self.env.cmd();
        c.env("CAIRN_REPO", repo);
        c
    }
    fn copy_to(&self, repo: &Path) -> Command {
        let mut c = self.env.cmd();
        c.env("CAIRN_TO_PASSWORD", PASSWORD).args(["--json", "copy", "--to", repo.to_str().unwrap()]);
        c
    }
    fn check_dst(&self, what: &str) {
        assert_ok(&self.on_dst().args(["check"]).output().unwrap(), &format!("check of the destination {what}"));
    }
}

/// The state issue 9 found, built on purpose: the destination holds a finished tree pack
/// of a killed copy, whose trees name data that never arrived, and no index names it.
/// The rerun adopts the pack; it must still send the data.
#[test]
fn copy_after_a_killed_copy_sends_the_data_its_adopted_tree_pack_needs() {
    let p = Pair::new();
    let src = p.env.path("src");
    grow(&src, 0, 300, 12);
    p.env.ok(&["backup", src.to_str().unwrap()]);
    grow(&src, 1, 300, 12);
    p.env.ok(&["backup", src.to_str().unwrap()]);

    // A complete copy into a clone of the destination (same keys), from which only the
    // tree packs are carried over, as if the killed run had finished them alone.
    let scratch = p.env.path("scratch");
    assert!(Command::new("cp").arg("-a").arg(&p.dst).arg(&scratch).status().unwrap().success());
    assert_ok(&p.copy_to(&scratch).output().unwrap(), "copy to the scratch clone");
    let rt = runtime();
    let repo = open(&scratch, &rt);
    let (mut tree_packs, mut data_blobs) = (0, 0);
    for f in packs(&scratch) {
        let id = cairn_format::PackId::from_hex(f.file_name().unwrap().to_str().unwrap()).unwrap();
        let (_, entries) = repo.read_pack_header(id).unwrap();
        if entries.iter().all(|e| e.kind == cairn_format::BlobType::Tree) {
            let to = p.dst.join(f.strip_prefix(&scratch).unwrap());
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(&f, &to).unwrap();
            tree_packs += 1;
        } else {
            data_blobs += entries.len() as u64;
        }
    }
    assert!(tree_packs >= 1, "the copy wrote no tree pack");
    // The destination now holds trees and none of their data: check says so (warnings
    // for unindexed packs only) and the copy must fill it in.
    let v: serde_json::Value = serde_json::from_slice(&p.copy_to(&p.dst).output().unwrap().stdout).unwrap();
    assert_eq!(v["copied"].as_array().unwrap().len(), 2, "{v}");
    assert!(v["blobs_copied"].as_u64().unwrap() >= data_blobs, "the {data_blobs} data blobs were not sent: {v}");
    p.check_dst("after the rerun");
    assert_ok(&p.on_dst().args(["check", "--read-data"]).output().unwrap(), "check --read-data");
    let t = p.env.path("restored");
    assert_ok(
        &p.on_dst()
            .args(["restore", &format!("latest:{}", src.display()), "--target", t.to_str().unwrap()])
            .output()
            .unwrap(),
        "restore",
    );
    let diffs = compare_trees(&src, &t, false);
    assert!(diffs.is_empty(), "restored differently: {diffs:?}");
}

/// Copies of two new snapshots each, killed at a random instant and run again; the
/// destination must check clean after every rerun, and restore equal at the end.
#[test]
fn copy_killed_at_random_instants_then_rerun_leaves_a_complete_destination() {
    let p = Pair::new();
    let src = p.env.path("src");
    grow(&src, 0, 200, 8);
    p.env.ok(&["backup", src.to_str().unwrap()]);
    assert_ok(&p.copy_to(&p.dst).output().unwrap(), "first copy");
    // Kills land after a random number of the copy's new packs (the span counts packs).
    let mut killer = Killer::new("copy", 8);
    let n = trials(20);
    for round in 1..=n as u64 {
        for half in 0..2 {
            // Small files under long names: tree packs fill faster than data packs, so
            // a tree pack often lands while the data its trees name is still unsent,
            // the state in which issue 9 lost data.
            grow_sized(&src, round * 2 + half, 300, 6, 40..400);
            p.env.ok(&["backup", src.to_str().unwrap()]);
        }
        killer.run_at_progress(p.copy_to(&p.dst), || packs(&p.dst).len());
        let o = p.copy_to(&p.dst).output().unwrap();
        assert_ok(&o, &format!("copy after the kill of round {round}"));
        p.check_dst(&format!("after round {round}"));
    }
    killer.assert_mostly_killed("copy");
    let src_ids = p.env.json(&["snapshots"]).as_array().unwrap().len();
    let dst = p.on_dst().args(["--json", "snapshots"]).output().unwrap();
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&dst.stdout).unwrap().as_array().unwrap().len(), src_ids);
    assert_ok(&p.on_dst().args(["check", "--read-data"]).output().unwrap(), "check --read-data");
    let t = p.env.path("restored");
    assert_ok(
        &p.on_dst()
            .args(["restore", &format!("latest:{}", src.display()), "--target", t.to_str().unwrap()])
            .output()
            .unwrap(),
        "restore",
    );
    assert!(compare_trees(&src, &t, false).is_empty());
}

/// Backups killed at random instants, each rerun on a changed tree (so parents, unchanged
/// files and adopted packs all play): the repository checks clean after every kill and
/// rerun, and the last snapshot restores equal.
#[test]
fn backup_killed_at_random_instants_then_rerun_leaves_a_clean_repository() {
    let env = Env::new();
    env.ok(&["init", "--pack-size", "64K"]);
    let src = env.path("src");
    grow(&src, 0, 200, 8);
    let t0 = Instant::now();
    env.ok(&["backup", src.to_str().unwrap()]);
    let mut killer = Killer::new("backup", t0.elapsed().as_millis() as u64);
    let mut packs_killer = Killer::new("backup at packs", 20);
    let n = trials(12);
    for round in 1..=n as u64 {
        grow(&src, round, 200, 8);
        let mut c = env.cmd();
        c.args(["backup", src.to_str().unwrap()]);
        // Alternately at a random time (walk, reads, uploads) and after a random number
        // of new packs (the write sequence).
        if round % 2 == 0 {
            killer.run(c);
        } else {
            packs_killer.run_at_progress(c, || packs(&env.repo).len());
        }
        assert_ok(&env.run(&["check"]), &format!("check after the kill of round {round}"));
        env.ok(&["backup", src.to_str().unwrap()]);
        assert_ok(&env.run(&["check"]), &format!("check after the rerun of round {round}"));
    }
    killer.assert_mostly_killed("backup");
    packs_killer.assert_mostly_killed("backup at packs");
    assert_ok(&env.run(&["check", "--read-data"]), "check --read-data");
    let t = env.path("restored");
    env.ok(&["restore", &format!("latest:{}", src.display()), "--target", t.to_str().unwrap()]);
    assert!(compare_trees(&src, &t, false).is_empty());
}

/// `rewrite --forget` and `prune` killed at random instants, with backups between them:
/// after every kill the repository checks clean; at the end, once the killed writers'
/// leases expired, prune finishes, `check --read-data` passes, every snapshot restores and
/// no rewritten snapshot holds an excluded file.
#[test]
fn rewrite_and_prune_killed_at_random_instants_leave_a_clean_repository() {
    let env = Env::new();
    env.ok(&["init", "--pack-size", "64K"]);
    let src = env.path("src");
    let lease = "5";
    let n = trials(10);
    let (mut rewrites, mut prunes) = (Killer::new("rewrite", 300), Killer::new("prune", 300));
    for round in 0..n as u64 {
        grow(&src, round, 120, 6);
        std::fs::write(src.join(format!("round-{round:03}/d00/secret-{round}.key")), noise(30_000, round)).unwrap();
        env.ok(&["backup", src.to_str().unwrap()]);
        // An erasure request: every snapshot, as an operator would run it (and rerun it
        // after a crash; a killed run may have saved a rewritten copy and not yet
        // forgotten its original).
        let rewrite_all = || {
            let mut c = env.cmd();
            c.env("CAIRN_WRITER_LEASE", lease)
                .args(["rewrite", "--exclude", "*.key", "--forget"])
                .args(env.short_ids());
            c
        };
        rewrites.run(rewrite_all());
        assert_ok(&env.run(&["check"]), &format!("check after the rewrite killed in round {round}"));
        let mut prune = env.cmd();
        prune.env("CAIRN_WRITER_LEASE", lease).args(["prune", "--grace", "0", "--max-unused", "0"]);
        prunes.run(prune);
        assert_ok(&env.run(&["check"]), &format!("check after the prune killed in round {round}"));
        // Rewrite again, to completion: the killed one may have got nowhere.
        assert_ok(&rewrite_all().output().unwrap(), "rewrite");
        assert_ok(&env.run(&["check"]), &format!("check after the rewrite of round {round}"));
    }
    rewrites.assert_mostly_killed("rewrite");
    prunes.assert_mostly_killed("prune");
    // The killed writers' leases expire (5 s + a fifth); then prune finishes.
    std::thread::sleep(Duration::from_secs(7));
    let mut pending = u64::MAX;
    for _ in 0..3 {
        let o = env.cmd().args(["--json", "prune", "--grace", "0", "--max-unused", "0"]).output().unwrap();
        assert_ok(&o, "prune");
        pending = serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["packs_pending"].as_u64().unwrap();
        if pending == 0 {
            break;
        }
    }
    assert_eq!(pending, 0, "prune never finished what the killed runs started");
    assert_ok(&env.run(&["check", "--read-data"]), "check --read-data");
    // One backup per round; a rewrite killed between saving the new snapshot and
    // forgetting the original can leave two rewritten copies of one backup (same time).
    let snaps = env.json(&["snapshots"]);
    let times: std::collections::HashSet<String> =
        snaps.as_array().unwrap().iter().map(|s| s["time"].as_str().unwrap().to_string()).collect();
    assert_eq!(times.len(), n, "one backup per round: {snaps}");
    let ids = env.short_ids();
    for (i, id) in ids.iter().enumerate() {
        let t = env.path(&format!("restored-{i}"));
        env.ok(&["restore", id, "--target", t.to_str().unwrap()]);
    }
    let keys = env.ok(&["find", "*.key"]);
    assert!(!keys.contains("secret-"), "an excluded file is still in a snapshot: {keys}");
}

/// `forget --prune` killed at random instants between backups: the repository checks clean
/// after every kill and every completed rerun; at the end the kept snapshots restore.
#[test]
fn forget_and_prune_killed_at_random_instants_leave_a_clean_repository() {
    let env = Env::new();
    env.ok(&["init", "--pack-size", "64K"]);
    let src = env.path("src");
    let lease = "5";
    let n = trials(10);
    let mut killer = Killer::new("forget+prune", 400);
    let forget = |env: &Env| {
        let mut c = env.cmd();
        c.env("CAIRN_WRITER_LEASE", lease).args([
            "forget",
            "--keep-last",
            "3",
            "--prune",
            "--grace",
            "0",
            "--max-unused",
            "0",
        ]);
        c
    };
    for round in 0..n as u64 {
        // Each round replaces some files, so older snapshots hold data no newer one has.
        let _ = std::fs::remove_dir_all(src.join(format!("round-{:03}", round.saturating_sub(2))));
        grow(&src, round, 150, 6);
        env.ok(&["backup", src.to_str().unwrap()]);
        killer.run(forget(&env));
        assert_ok(&env.run(&["check"]), &format!("check after the forget+prune killed in round {round}"));
        assert_ok(&forget(&env).output().unwrap(), "forget --prune");
        assert_ok(&env.run(&["check"]), &format!("check after forget+prune in round {round}"));
    }
    killer.assert_mostly_killed("forget+prune");
    assert_ok(&env.run(&["check", "--read-data"]), "check --read-data");
    let t = env.path("restored");
    env.ok(&["restore", &format!("latest:{}", src.display()), "--target", t.to_str().unwrap()]);
    assert!(compare_trees(&src, &t, false).is_empty());
}

/// A restore killed at random instants, resumed with `--overwrite if-changed`, ends equal
/// to the snapshot; the repository is untouched (restores only read).
#[test]
fn restore_killed_at_random_instants_resumes_to_an_equal_tree() {
    let env = Env::new();
    env.ok(&["init", "--pack-size", "64K"]);
    let src = env.path("src");
    grow(&src, 0, 400, 10);
    std::fs::write(src.join("big.bin"), noise(6_000_000, 99)).unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let n = trials(10);
    let mut killer = Killer::new("restore", 300);
    for round in 0..n {
        let t = env.path(&format!("restored-{round}"));
        let mut c = env.cmd();
        c.args(["restore", &format!("latest:{}", src.display()), "--target", t.to_str().unwrap()]);
        killer.run(c);
        // Resumed, perhaps killed again, then to the end.
        let mut c = env.cmd();
        c.args(["restore", &format!("latest:{}", src.display()), "--target", t.to_str().unwrap()]);
        c.args(["--overwrite", "if-changed"]);
        killer.run(c);
        env.ok(&[
            "restore",
            &format!("latest:{}", src.display()),
            "--target",
            t.to_str().unwrap(),
            "--overwrite",
            "if-changed",
        ]);
        let diffs = compare_trees(&src, &t, false);
        assert!(diffs.is_empty(), "round {round}: the resumed restore differs: {diffs:?}");
        let _ = std::fs::remove_dir_all(&t);
    }
    killer.assert_mostly_killed("restore");
    assert_ok(&env.run(&["check"]), "check");
}

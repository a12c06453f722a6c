#![allow(clippy::unwrap_used)]
//! Bad input, damage, hostile snapshots, crashes and concurrency: each gets a clear error
//! and loses nothing.

mod common;
use common::*;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use cairn_format::tree::{Node, NodeKind, RawName};
use cairn_format::{BlobType, TreeId};
use cairn_repo::Repository;

fn assert_clean_failure(o: &std::process::Output, needle: &str) {
    let e = stderr(o);
    assert_eq!(o.status.code(), Some(1), "expected exit 1, got {:?}: {e}", o.status);
    assert!(e.contains(needle), "stderr lacks {needle:?}: {e}");
    assert!(!e.contains("panicked"), "panic: {e}");
    assert_eq!(e.trim_end().lines().count(), 1, "not one line: {e}");
}

#[test]
fn errors_point_at_the_repository_concerned_before_asking_for_a_password() {
    let env = Env::new();
    // A repository that does not exist: said at once, though no password was given.
    let missing = env.path("nowhere");
    let o = env
        .cmd()
        .env_remove("CAIRN_PASSWORD")
        .args(["--repo", missing.to_str().unwrap(), "snapshots"])
        .output()
        .unwrap();
    assert_clean_failure(&o, "the directory does not exist");
    assert!(!stderr(&o).contains("password"), "{}", stderr(&o));
    std::fs::create_dir(&missing).unwrap();
    let o = env
        .cmd()
        .env_remove("CAIRN_PASSWORD")
        .args(["--repo", missing.to_str().unwrap(), "snapshots"])
        .output()
        .unwrap();
    assert_clean_failure(&o, "no config file");
    // A copy without the destination's password names the destination and how to give it,
    // though the source's password is set.
    env.init();
    let data = env.path("d");
    std::fs::create_dir(&data).unwrap();
    env.ok(&["backup", data.to_str().unwrap()]);
    let dst = env.path("dst");
    env.cmd().env("CAIRN_REPO", &dst).args(["init"]).output().unwrap();
    let o = env.run(&["copy", "--to", dst.to_str().unwrap()]);
    assert_clean_failure(&o, "destination repository");
    let e = stderr(&o);
    assert!(
        e.contains("--to-password-file") && e.contains("CAIRN_TO_PASSWORD") && !e.contains("CAIRN_PASSWORD_FILE"),
        "{e}"
    );
    // A wrong destination password says it is the destination's.
    let o = env.cmd().env("CAIRN_TO_PASSWORD", "wrong").args(["copy", "--to", dst.to_str().unwrap()]).output().unwrap();
    assert_clean_failure(&o, "destination");
    // A store that fails after the command started names the repository, not only the
    // transport: an object store nobody answers at...
    let url = "s3://bucket/prefix?endpoint=http://127.0.0.1:1";
    let o = env
        .cmd()
        .env("AWS_ACCESS_KEY_ID", "x")
        .env("AWS_SECRET_ACCESS_KEY", "y")
        .args(["--repo", url, "snapshots"])
        .output()
        .unwrap();
    assert_clean_failure(&o, &format!("repository {url}"));
    // ...and a pack gone from a local one; a copy from it names both sides.
    for p in packs(&env.repo) {
        std::fs::remove_file(p).unwrap();
    }
    let o = env.run(&["restore", "latest", "--target", env.path("t").to_str().unwrap()]);
    assert_clean_failure(&o, &format!("repository {}", env.repo.display()));
    let dst2 = env.path("dst2");
    env.cmd().env("CAIRN_REPO", &dst2).args(["init"]).output().unwrap();
    let o =
        env.cmd().env("CAIRN_TO_PASSWORD", PASSWORD).args(["copy", "--to", dst2.to_str().unwrap()]).output().unwrap();
    assert_clean_failure(&o, &format!("repository {}", env.repo.display()));
    assert!(stderr(&o).contains(&format!("copying to {}", dst2.display())), "{}", stderr(&o));
    // A failure of the destination's own (it cannot take a writer lease) names it, and
    // not the source.
    let _ = std::fs::remove_dir_all(dst2.join("writers"));
    std::fs::write(dst2.join("writers"), "in the way").unwrap();
    let o =
        env.cmd().env("CAIRN_TO_PASSWORD", PASSWORD).args(["copy", "--to", dst2.to_str().unwrap()]).output().unwrap();
    assert_clean_failure(&o, &format!("the destination repository {}", dst2.display()));
    assert!(!stderr(&o).contains(&format!("repository {}:", env.repo.display())), "{}", stderr(&o));
}

#[test]
fn bad_input_gets_one_clear_line() {
    let env = Env::new();
    assert_clean_failure(&env.run(&["snapshots"]), "no repository at");
    env.init();
    assert_clean_failure(&env.run(&["init"]), "already exists");
    assert_clean_failure(
        &env.cmd().env("CAIRN_PASSWORD", "wrong").args(["snapshots"]).output().unwrap(),
        "wrong password",
    );
    assert_clean_failure(&env.run(&["backup", env.path("missing").to_str().unwrap()]), "No such file");
    assert_clean_failure(&env.run(&["restore", "ffff", "--target", env.path("t").to_str().unwrap()]), "not found");
    assert_clean_failure(&env.run(&["restore", "latest", "--target", env.path("t").to_str().unwrap()]), "no snapshots");
    assert_clean_failure(&env.run(&["backup", "--time", "yesterday", env.dir.path().to_str().unwrap()]), "RFC 3339");
    assert_clean_failure(
        &env.cmd()
            .env("CAIRN_REPO", "sftp://no-such-host.invalid/x")
            .env("CAIRN_SSH_ARGS", "-o BatchMode=yes")
            .args(["snapshots"])
            .output()
            .unwrap(),
        "cannot open an SFTP session",
    );
    // A malformed config is reported, not trusted.
    std::fs::write(env.repo.join("config"), b"garbage").unwrap();
    let o = env.run(&["snapshots"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(!stderr(&o).contains("panicked"));
}

#[test]
fn flipped_byte_in_a_pack_is_named_and_other_files_still_restore() {
    let env = Env::new();
    env.init();
    let a = env.path("a");
    let b = env.path("b");
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    std::fs::write(a.join("victim.bin"), noise(3_000_000, 1)).unwrap();
    env.ok(&["backup", a.to_str().unwrap()]);
    let before = packs(&env.repo);
    std::fs::write(b.join("survivor.bin"), noise(3_000_000, 2)).unwrap();
    env.ok(&["backup", b.to_str().unwrap()]);
    env.ok(&["check", "--read-data"]);
    // The data pack of the first backup is its largest.
    let victim = before.iter().max_by_key(|p| std::fs::metadata(p).unwrap().len()).unwrap().clone();
    damage_pack(&victim);
    // The structural check reads headers only; the data check must fail and name it.
    let o = env.run(&["check", "--read-data"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let e = stderr(&o);
    let name = victim.file_name().unwrap().to_str().unwrap();
    assert!(e.contains(name), "pack not named: {e}");
    assert!(e.contains("victim.bin") && !e.contains("survivor.bin"), "affected files wrong: {e}");
    let t = env.path("t");
    let snaps = env.json(&["snapshots"]);
    let good = snaps[1]["short_id"].as_str().unwrap();
    env.ok(&["restore", good, "--target", t.to_str().unwrap(), "--verify"]);
    assert_eq!(std::fs::read(t.join(b.strip_prefix("/").unwrap()).join("survivor.bin")).unwrap(), noise(3_000_000, 2));
    let bad = snaps[0]["short_id"].as_str().unwrap();
    let o = env.run(&["restore", bad, "--target", env.path("t2").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("damaged"), "{}", stderr(&o));
    // The subset mode reads some packs.
    let o = env.run(&["--json", "check", "--read-data-subset", "1/1"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["clean"], false);
}

/// Writes tree blobs (children first, root last) and a snapshot of the root, bypassing
/// every check a real backup makes: what an attacker with the key could store.
fn plant(repo_path: &Path, blobs: &[(BlobType, Vec<u8>)], root: TreeId) {
    cairn_testkit::craft::plant(repo_path, PASSWORD, blobs, root);
}

use cairn_testkit::craft::{dir, file, raw_tree};

#[test]
fn hostile_snapshots_cannot_write_outside_the_target() {
    let env = Env::new();
    env.init();
    let outside = env.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let target = env.path("target");
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let repo =
        Repository::open(Arc::new(cairn_store::LocalStore::new(&env.repo)), rt.handle().clone(), PASSWORD.as_bytes())
            .unwrap();
    let evil = b"evil content".to_vec();
    let evil_id = repo.blob_id(&evil);

    // 1. An entry named "../escape" (and friends).
    for name in [&b"../escape"[..], b"..", b"a/../../escape", b"/abs-escape"] {
        let t = raw_tree(vec![file(name, vec![evil_id], evil.len() as u64)]);
        let id = repo.blob_id(&t).tree();
        plant(&env.repo, &[(BlobType::Data, evil.clone()), (BlobType::Tree, t)], id);
        let snaps = env.json(&["snapshots"]);
        let sid = snaps.as_array().unwrap().iter().find(|s| s["tree"] == id.to_hex()).unwrap()["short_id"]
            .as_str()
            .unwrap()
            .to_string();
        let o = env.run(&["restore", &sid, "--target", target.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(1), "restore of {:?} succeeded", String::from_utf8_lossy(name));
        assert!(stderr(&o).contains("unsafe") || stderr(&o).contains("damaged"), "{}", stderr(&o));
    }
    assert!(!env.path("escape").exists() && !Path::new("/abs-escape").exists());

    // 2. A symlink to the outside, then (other snapshot) a directory of the same name
    // with a file in it: restoring both into one target must not write through the link.
    let mut link = Node::new(b"link".to_vec(), NodeKind::Symlink);
    link.link_target = Some(RawName(outside.as_os_str().to_str().unwrap().as_bytes().to_vec()));
    let t1 = raw_tree(vec![link.clone()]);
    let t1_id = repo.blob_id(&t1).tree();
    plant(&env.repo, &[(BlobType::Tree, t1)], t1_id);
    let inner = raw_tree(vec![file(b"pwned", vec![evil_id], evil.len() as u64)]);
    let inner_id = repo.blob_id(&inner).tree();
    let mut dir = Node::new(b"link".to_vec(), NodeKind::Dir);
    dir.mode = 0o755;
    dir.subtree = Some(inner_id);
    let t2 = raw_tree(vec![dir.clone()]);
    let t2_id = repo.blob_id(&t2).tree();
    plant(&env.repo, &[(BlobType::Tree, inner.clone()), (BlobType::Tree, t2)], t2_id);
    let snaps = env.json(&["snapshots"]);
    let by_tree = |t: TreeId| {
        snaps.as_array().unwrap().iter().find(|s| s["tree"] == t.to_hex()).unwrap()["short_id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let t = env.path("target2");
    env.ok(&["restore", &by_tree(t1_id), "--target", t.to_str().unwrap()]);
    assert!(std::fs::symlink_metadata(t.join("link")).unwrap().file_type().is_symlink());
    let o = env.run(&["restore", &by_tree(t2_id), "--target", t.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(!outside.join("pwned").exists(), "wrote through a symlink");

    // 3. The same name twice in one tree (symlink, then directory) is refused outright.
    let t3 = raw_tree(vec![link, dir]);
    let t3_id = repo.blob_id(&t3).tree();
    plant(&env.repo, &[(BlobType::Tree, t3)], t3_id);
    let snaps = env.json(&["snapshots"]);
    let sid = snaps.as_array().unwrap().iter().find(|s| s["tree"] == t3_id.to_hex()).unwrap()["short_id"]
        .as_str()
        .unwrap()
        .to_string();
    let o = env.run(&["restore", &sid, "--target", env.path("target3").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(!outside.join("pwned").exists());
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
}

fn make_tree(root: &Path, files: usize, size: usize, seed: u64) -> u64 {
    std::fs::create_dir_all(root).unwrap();
    for i in 0..files {
        std::fs::write(root.join(format!("f{i:04}")), noise(size, seed + i as u64)).unwrap();
    }
    (files * size) as u64
}

fn data_size(repo: &Path) -> u64 {
    packs(repo).iter().map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)).sum()
}

#[test]
fn kill_9_mid_backup_leaves_a_clean_repository_and_the_rerun_reuses_uploads() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    let total = make_tree(&src, 160, 1_500_000, 100);
    // Kill when the run has uploaded a few new packs: mid-way by construction, however
    // fast the machine (a fixed delay let fast builds finish first). The first kill
    // comes before any pack exists.
    let mut killed = 0;
    for new_packs in [0usize, 2, 4] {
        let start = packs(&env.repo).len();
        let mut child = env
            .cmd()
            .args(["backup", src.to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while packs(&env.repo).len() < start + new_packs && std::time::Instant::now() < deadline {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        use std::os::unix::process::ExitStatusExt;
        if child.wait().unwrap().signal() == Some(libc::SIGKILL) {
            killed += 1;
        }
        let o = env.run(&["check"]);
        assert!(o.status.success(), "check after a kill at {new_packs} new packs failed: {}", stderr(&o));
    }
    assert_eq!(killed, 3, "a backup finished before its kill");
    assert!(env.json(&["snapshots"]).as_array().unwrap().is_empty());
    let before = data_size(&env.repo);
    let r = env.json(&["backup", src.to_str().unwrap()]);
    let after = data_size(&env.repo);
    assert_eq!(r["partial"], false);
    // Random data does not compress: if the reruns had re-uploaded, the packs would hold
    // several copies. Allow the open packs each kill lost (2 workers x 16 MiB).
    assert!(
        after < total + 3 * 40 * 1024 * 1024,
        "stored {after} for {total} bytes of data (before final run: {before}, added {})",
        r["bytes_added"]
    );
    env.ok(&["check", "--read-data"]);
    let t = env.path("t");
    env.ok(&["restore", "latest", "--target", t.to_str().unwrap()]);
    assert!(compare_trees(&src, &t.join(src.strip_prefix("/").unwrap()), true).is_empty());
}

#[test]
fn concurrent_backups_both_land() {
    let env = Env::new();
    env.init();
    let (a, b) = (env.path("a"), env.path("b"));
    make_tree(&a, 40, 500_000, 1);
    make_tree(&b, 40, 500_000, 1000);
    // Shared content too, so both race to store the same blobs.
    std::fs::write(a.join("shared"), noise(4_000_000, 77)).unwrap();
    std::fs::write(b.join("shared"), noise(4_000_000, 77)).unwrap();
    let spawn = |p: &Path| {
        env.cmd()
            .args(["backup", p.to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (ca, cb) = (spawn(&a), spawn(&b));
    let (oa, ob) = (ca.wait_with_output().unwrap(), cb.wait_with_output().unwrap());
    assert!(oa.status.success(), "{}", stderr(&oa));
    assert!(ob.status.success(), "{}", stderr(&ob));
    assert_eq!(env.json(&["snapshots"]).as_array().unwrap().len(), 2);
    env.ok(&["check", "--read-data"]);
    for p in [&a, &b] {
        let t = env.path("t");
        let snaps = env.json(&["snapshots", "--path", p.to_str().unwrap()]);
        let id = snaps[0]["short_id"].as_str().unwrap().to_string();
        let _ = std::fs::remove_dir_all(&t);
        env.ok(&["restore", &format!("{id}:{}", p.display()), "--target", t.to_str().unwrap()]);
        assert!(compare_trees(p, &t, true).is_empty());
    }
}

#[test]
fn unreadable_file_gives_partial_snapshot_and_exit_3() {
    let env = Env::new();
    let base = env.path("shared");
    std::fs::create_dir_all(&base).unwrap();
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o777)).unwrap();
    let src = base.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("ok.txt"), b"fine").unwrap();
    std::fs::write(src.join("secret"), b"no").unwrap();
    std::fs::set_permissions(src.join("secret"), std::fs::Permissions::from_mode(0o000)).unwrap();
    let repo = base.join("repo");
    let run = |args: &[&str]| {
        let mut c = if is_root() {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "nobody", "--", env!("CARGO_BIN_EXE_cairn")]);
            c
        } else {
            std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
        };
        c.env("CAIRN_REPO", &repo).env("CAIRN_PASSWORD", PASSWORD).env("HOME", &base).args(args).output().unwrap()
    };
    let o = run(&["init"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(&["backup", src.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("secret"), "unreadable file not listed: {}", stderr(&o));
    let o = run(&["--json", "snapshots"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["partial"], true);
    let o = run(&["ls", "latest"]);
    let ls = String::from_utf8_lossy(&o.stdout);
    assert!(ls.contains("ok.txt") && !ls.contains("secret"), "{ls}");
}

#[test]
fn full_disk_is_one_clear_error() {
    let env = Env::new();
    let mnt = env.path("small");
    let Some(_tmpfs) = Tmpfs::mount(&mnt, "3m") else {
        cairn_testkit::skip("full_disk_is_one_clear_error: cannot mount a small tmpfs here (needs root)");
        return;
    };
    let src = env.path("src");
    make_tree(&src, 10, 1_000_000, 5);
    let repo = mnt.join("repo");
    let o = env.cmd().env("CAIRN_REPO", &repo).args(["init"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let o = env.cmd().env("CAIRN_REPO", &repo).args(["backup", src.to_str().unwrap()]).output().unwrap();
    assert_clean_failure(&o, "No space left");
    // What was stored before stays readable.
    let o = env.cmd().env("CAIRN_REPO", &repo).args(["check"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn keys_add_remove_passwd() {
    let env = Env::new();
    env.init();
    let o = env.cmd().env("CAIRN_NEW_PASSWORD", "second").args(["--json", "key", "add"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let keys = env.json(&["key", "list"]);
    assert_eq!(keys.as_array().unwrap().len(), 2);
    assert!(env.cmd().env("CAIRN_PASSWORD", "second").args(["snapshots"]).output().unwrap().status.success());
    let current =
        keys.as_array().unwrap().iter().find(|k| k["current"] == true).unwrap()["id"].as_str().unwrap().to_string();
    let o = env.run(&["key", "remove", &current[..8]]);
    assert_eq!(o.status.code(), Some(1), "removing the key in use must be refused");
    let o = env.cmd().env("CAIRN_NEW_PASSWORD", "third").args(["key", "passwd"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(env.run(&["snapshots"]).status.code(), Some(1), "old password still works after passwd");
    assert!(env.cmd().env("CAIRN_PASSWORD", "third").args(["snapshots"]).output().unwrap().status.success());
    let o = env.cmd().env("CAIRN_PASSWORD", "third").args(["--json", "key", "list"]).output().unwrap();
    let keys: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let other =
        keys.as_array().unwrap().iter().find(|k| k["current"] == false).unwrap()["id"].as_str().unwrap().to_string();
    let o = env.cmd().env("CAIRN_PASSWORD", "third").args(["key", "remove", &other[..8]]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(env.cmd().env("CAIRN_PASSWORD", "second").args(["snapshots"]).output().unwrap().status.code(), Some(1));
}

#[test]
fn missing_pack_fails_the_restore_before_touching_the_target() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), noise(2_000_000, 9)).unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let t = env.path("t");
    env.ok(&["restore", &format!("latest:{}", src.display()), "--target", t.to_str().unwrap()]);
    std::fs::write(t.join("a"), b"the user's newer copy").unwrap();
    let data_pack = packs(&env.repo).into_iter().max_by_key(|p| std::fs::metadata(p).unwrap().len()).unwrap();
    std::fs::remove_file(&data_pack).unwrap();
    let o = env.run(&["restore", &format!("latest:{}", src.display()), "--target", t.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("missing"), "{}", stderr(&o));
    assert_eq!(
        std::fs::read(t.join("a")).unwrap(),
        b"the user's newer copy",
        "restore truncated a file it could not restore"
    );
    let o = env.run(&["check"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains(data_pack.file_name().unwrap().to_str().unwrap()[..8].as_ref() as &str),
        "{}",
        stderr(&o)
    );
}

/// Every object of a small repository, truncated or with a flipped byte: every command
/// ends with exit 0 or 1 and one clear line, never a panic, and `check` notices.
#[test]
fn any_damaged_object_gives_clean_errors_never_a_panic() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::write(src.join("a.bin"), noise(600_000, 3)).unwrap();
    std::fs::write(src.join("d/b.txt"), b"text ".repeat(10_000)).unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    std::fs::write(src.join("c"), b"second").unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let mut objects = Vec::new();
    for dir in ["", "keys", "index", "snapshots"] {
        for e in std::fs::read_dir(env.repo.join(dir)).unwrap().flatten() {
            if e.file_type().unwrap().is_file() {
                objects.push(e.path());
            }
        }
    }
    objects.extend(packs(&env.repo));
    assert!(objects.len() >= 8, "{objects:?}");
    for obj in &objects {
        let original = std::fs::read(obj).unwrap();
        let mut flipped = original.clone();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 0x40;
        let variants: [(&str, Vec<u8>); 3] =
            [("truncated", original[..original.len() / 2].to_vec()), ("flipped", flipped), ("empty", Vec::new())];
        for (what, bytes) in variants {
            std::fs::write(obj, &bytes).unwrap();
            let name = format!("{} {what}", obj.strip_prefix(&env.repo).unwrap().display());
            let t = env.path("t");
            let _ = std::fs::remove_dir_all(&t);
            for args in [
                vec!["check", "--read-data"],
                vec!["restore", "latest", "--target", t.to_str().unwrap()],
                vec!["ls", "latest"],
            ] {
                let o = env.run(&args);
                let e = stderr(&o);
                assert!(!e.contains("panicked"), "{name}: cairn {args:?} panicked: {e}");
                assert!(matches!(o.status.code(), Some(0) | Some(1)), "{name}: cairn {args:?}: {:?} {e}", o.status);
                if args[0] == "check" {
                    // Damage that check cannot see would be silent data loss, except for
                    // key files (another copy of the master key is not needed to read).
                    let is_key = obj.parent().unwrap().ends_with("keys");
                    assert!(is_key || o.status.code() == Some(1), "{name}: check passed a damaged repository");
                }
            }
        }
        std::fs::write(obj, &original).unwrap();
    }
    env.ok(&["check", "--read-data"]);
}

/// `check` refuses a file node whose size disagrees with its blobs (restore refuses it
/// too, so a check that passed it would promise a restore that fails).
#[test]
fn check_compares_each_file_size_with_its_blobs() {
    let env = Env::new();
    env.init();
    let (_rt, repo) = cairn_testkit::craft::open(&env.repo, PASSWORD);
    let data = b"twelve bytes".to_vec();
    let t = raw_tree(vec![file(b"liar", vec![repo.blob_id(&data)], 1000)]);
    let id = repo.blob_id(&t).tree();
    plant(&env.repo, &[(BlobType::Data, data), (BlobType::Tree, t)], id);
    let o = env.run(&["check"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("/liar: the tree says 1000 bytes but its content holds 12"), "{}", stderr(&o));
}

/// Runs cairn with a time limit and a 2 GiB address-space limit: a hang or a blow-up
/// fails the test instead of the machine.
fn bounded(env: &Env, args: &[&str]) -> std::process::Output {
    let start = std::time::Instant::now();
    let mut child = std::process::Command::new("prlimit")
        .arg("--as=2147483648")
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_cairn"))
        .args(args)
        .env("CAIRN_REPO", &env.repo)
        .env("CAIRN_PASSWORD", PASSWORD)
        .env("HOME", env.dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > std::time::Duration::from_secs(20) {
            let _ = child.kill();
            panic!("cairn {args:?} ran for more than 20 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    eprintln!("cairn {args:?}: {:?}", start.elapsed());
    child.wait_with_output().unwrap()
}

/// 41 trees of 28 KB standing for 2^40 paths (each level's two directories share one
/// subtree), and a chain of trees 5,000 deep: every command ends in seconds, within
/// memory; `check` walks each tree once (also with a damaged leaf); what must visit every
/// path (restore, ls, find, diff) stops with one clear line.
#[test]
fn shared_subtree_bombs_and_deep_chains_end_quickly() {
    let env = Env::new();
    env.init();
    let (rt, repo) = cairn_testkit::craft::open(&env.repo, PASSWORD);
    let data = b"leaf".to_vec();
    let missing = repo.blob_id(b"never stored");
    let bomb = |leaf_nodes: Vec<Node>| {
        let mut blobs = vec![(BlobType::Data, data.clone())];
        let leaf = raw_tree(leaf_nodes);
        let mut top = repo.blob_id(&leaf).tree();
        blobs.push((BlobType::Tree, leaf));
        for _ in 0..40 {
            let t = raw_tree(vec![dir(b"a", top), dir(b"b", top)]);
            top = repo.blob_id(&t).tree();
            blobs.push((BlobType::Tree, t));
        }
        plant(&env.repo, &blobs, top);
        top
    };
    // One whose leaf names a blob that is nowhere: check must report it, once.
    bomb(vec![file(b"f", vec![repo.blob_id(&data)], 4), file(b"lost", vec![missing], 12)]);
    let o = bounded(&env, &["check"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("is not indexed"), "{}", stderr(&o));
    // A sound one: check passes it, walking 42 trees.
    let clean = bomb(vec![file(b"f", vec![repo.blob_id(&data)], 4)]);
    let snaps = env.json(&["snapshots"]);
    let bomb = snaps.as_array().unwrap().iter().find(|s| s["tree"] == clean.to_hex()).unwrap()["short_id"]
        .as_str()
        .unwrap()
        .to_string();
    let t = env.path("t");
    for args in [
        vec!["restore", bomb.as_str(), "--target", t.to_str().unwrap()],
        vec!["ls", bomb.as_str()],
        vec!["find", "nothing-matches"],
    ] {
        let o = bounded(&env, &args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("more than"), "{args:?}: {}", stderr(&o));
        assert_eq!(stderr(&o).trim_end().lines().count(), 1, "{args:?}: {}", stderr(&o));
    }

    drop((rt, repo));
    let env = Env::new();
    env.init();
    let (_rt, repo) = cairn_testkit::craft::open(&env.repo, PASSWORD);
    let leaf = raw_tree(vec![file(b"f", vec![repo.blob_id(&data)], 4)]);
    let mut top = repo.blob_id(&leaf).tree();
    let mut blobs = vec![(BlobType::Data, data.clone()), (BlobType::Tree, leaf)];
    for _ in 0..5_000 {
        let t = raw_tree(vec![dir(b"d", top)]);
        top = repo.blob_id(&t).tree();
        blobs.push((BlobType::Tree, t));
    }
    plant(&env.repo, &blobs, top);
    let deep = env.short_ids()[0].clone();
    for args in
        [vec!["restore", deep.as_str(), "--target", t.to_str().unwrap()], vec!["ls", deep.as_str()], vec!["check"]]
    {
        let o = bounded(&env, &args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("deeper than"), "{args:?}: {}", stderr(&o));
    }
}

/// `cairn snapshots | head`: a reader that goes away ends a printing command quietly with
/// the status of a death by SIGPIPE (141), for every command (they keep SIGPIPE ignored so
/// that a child or socket closing early is an error with its message, not a silent death).
#[test]
fn closed_stdout_ends_commands_quietly() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..50 {
        std::fs::write(src.join(format!("f{i}")), format!("{i}")).unwrap();
    }
    env.ok(&["backup", src.to_str().unwrap()]);
    for args in [
        &["snapshots"][..],
        &["--json", "snapshots"],
        &["ls", "latest"],
        &["find", "f1*"],
        &["dump", "latest", &format!("{}/f7", src.display())],
        &["stats"],
        &["check"],
    ] {
        // The read end is closed before cairn starts: its first write meets EPIPE.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let o = env.cmd().args(args).stdout(writer).output().unwrap();
        let e = stderr(&o);
        assert!(!e.contains("panicked"), "cairn {args:?} panicked: {e}");
        assert_eq!(o.status.code(), Some(141), "cairn {args:?}: {:?} {e}", o.status);
        assert!(e.trim().is_empty(), "cairn {args:?} printed to stderr: {e}");
    }
}

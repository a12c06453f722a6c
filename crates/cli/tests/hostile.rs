#![allow(clippy::unwrap_used)]
//! A snapshot is untrusted input (issue 11): whoever controls the storage can write any
//! snapshot. What it holds must not grant privilege on restore, and what it names must not
//! forge the output people read.

mod common;
use common::*;

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

/// `security.capability` for `cap_setuid=ep` (VFS_CAP_REVISION_2 with the effective flag,
/// permitted = 1 << CAP_SETUID).
fn cap_setuid_xattr() -> Vec<u8> {
    let mut v = Vec::new();
    for w in [0x0200_0001u32, 1 << 7, 0, 0, 0] {
        v.extend_from_slice(&w.to_le_bytes());
    }
    v
}

fn has_xattr(p: &Path, name: &str) -> bool {
    xattrs(p).iter().any(|(n, _)| n == name.as_bytes())
}

/// A root restore of a snapshot holding a world-writable device node (the equivalent of
/// /dev/mem), a setuid-root file and a file with `cap_setuid=ep` recreates none of them
/// unless asked (`--privileged`); a FIFO and the rest come back, with a warning for each
/// left out. A non-root restore with `--privileged` skips the device it cannot create and
/// finishes everything else, directory metadata included.
#[test]
fn restore_leaves_out_what_grants_privilege_unless_asked() {
    if !is_root() {
        cairn_testkit::skip("restore_leaves_out_what_grants_privilege_unless_asked needs root (mknod, setcap)");
        return;
    }
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    assert!(run_sh(&format!("mknod -m 0666 '{}' c 1 1", src.join("d/mem").display())));
    assert!(run_sh(&format!("mkfifo '{}'", src.join("d/fifo").display())));
    std::fs::write(src.join("d/suid"), b"#!/bin/sh\nid\n").unwrap();
    std::fs::set_permissions(src.join("d/suid"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    std::fs::write(src.join("d/capped"), b"capped").unwrap();
    assert!(set_xattr(&src.join("d/capped"), "security.capability", &cap_setuid_xattr()), "setting a capability");
    std::fs::write(src.join("d/plain"), b"plain").unwrap();
    set_mtime(&src.join("d"), 1_600_000_000, 0);
    env.ok(&["backup", src.to_str().unwrap()]);

    let t = env.path("copy");
    let o = env.run(&["restore", &format!("latest:{}", src.display()), "--target", t.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(!t.join("d/mem").exists(), "a device node was recreated in a copy");
    assert!(e.contains("d/mem: device node not restored"), "{e}");
    assert_eq!(std::fs::metadata(t.join("d/suid")).unwrap().mode() & 0o7777, 0o755);
    assert!(e.contains("d/suid: setuid/setgid bit not restored"), "{e}");
    assert!(!has_xattr(&t.join("d/capped"), "security.capability"));
    assert!(e.contains("d/capped: file capabilities not restored"), "{e}");
    assert_eq!(std::fs::read(t.join("d/plain")).unwrap(), b"plain");
    assert!(std::fs::symlink_metadata(t.join("d/fifo")).unwrap().file_type().is_fifo());
    assert_eq!(std::fs::metadata(t.join("d")).unwrap().mtime(), 1_600_000_000);

    // Asked for: everything as it was.
    let t = env.path("privileged");
    env.ok(&["restore", &format!("latest:{}", src.display()), "--target", t.to_str().unwrap(), "--privileged"]);
    let m = std::fs::symlink_metadata(t.join("d/mem")).unwrap();
    assert_eq!((m.rdev(), m.mode() & 0o7777), (std::fs::symlink_metadata(src.join("d/mem")).unwrap().rdev(), 0o666));
    assert_eq!(std::fs::metadata(t.join("d/suid")).unwrap().mode() & 0o7777, 0o4755);
    assert!(has_xattr(&t.join("d/capped"), "security.capability"));

    // Not root: the device cannot be made; the rest is restored and the restore succeeds.
    let base = env.path("nobody");
    std::fs::create_dir_all(&base).unwrap();
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(run_sh(&format!("chown -R nobody '{}'", base.display())));
    let repo = env.path("repo-for-nobody");
    assert!(Command::new("cp").arg("-a").arg(&env.repo).arg(&repo).status().unwrap().success());
    assert!(run_sh(&format!("chown -R nobody '{}'", repo.display())));
    let o = Command::new("runuser")
        .args(["-u", "nobody", "--", env!("CARGO_BIN_EXE_cairn"), "restore", "--privileged"])
        .arg(format!("latest:{}", src.display()))
        .arg("--target")
        .arg(base.join("t"))
        .env("CAIRN_REPO", &repo)
        .env("CAIRN_PASSWORD", PASSWORD)
        .env("HOME", &base)
        .output()
        .unwrap();
    assert!(o.status.success(), "non-root restore: {}", stderr(&o));
    assert!(stderr(&o).contains("d/mem: not restored"), "{}", stderr(&o));
    let t = base.join("t");
    assert_eq!(std::fs::read(t.join("d/plain")).unwrap(), b"plain");
    assert!(t.join("d/fifo").exists());
    assert_eq!(std::fs::metadata(t.join("d")).unwrap().mtime(), 1_600_000_000, "directory metadata not applied");
}

/// Names with newlines and terminal escapes are escaped in what people read (`ls`, `find`,
/// `diff`, `snapshots`), and kept exact in `--json`.
#[test]
fn names_from_a_snapshot_cannot_forge_output() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    let evil = "evil\nforged-line\u{1b}[2J";
    std::fs::write(src.join(evil), b"x").unwrap();
    env.ok(&["backup", "--tag", "t\u{1b}]0;title\u{7}", src.to_str().unwrap()]);
    std::fs::write(src.join("new"), b"y").unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    for args in [vec!["ls", "latest"], vec!["ls", "--long", "latest"], vec!["find", "evil*"], vec!["snapshots"]] {
        let out = env.ok(&args);
        assert!(!out.contains('\u{1b}'), "{args:?} printed an escape: {out:?}");
        assert!(!out.lines().any(|l| l.starts_with("forged-line")), "{args:?} printed a forged line: {out:?}");
    }
    let ids = env.short_ids();
    let out = env.ok(&["diff", &ids[0], &ids[1]]);
    assert!(!out.contains('\u{1b}') && !out.lines().any(|l| l.starts_with("forged-line")), "{out:?}");
    assert!(env.ok(&["ls", "latest"]).contains("evil\\x0aforged-line\\x1b[2J"));
    let v = env.json(&["ls", "latest"]);
    assert!(v.as_array().unwrap().iter().any(|n| n["name"] == evil), "{v}");
}

/// Stores every indexed blob once more, in new packs that an index file names (what two
/// backups racing on the same data leave): each blob then has a home copy and a second one.
fn store_again(path: &Path) {
    let (_rt, repo) = cairn_testkit::craft::open(path, PASSWORD);
    let _lease = repo.lease("test", "dup").unwrap();
    let index = repo.load_index().unwrap();
    let blobs: Vec<_> = index.iter().map(|(id, l)| (*id, l.kind)).collect();
    let saver = cairn_repo::BlobSaver::new(&repo, cairn_repo::Index::default(), Vec::new(), 1);
    std::thread::scope(|s| {
        s.spawn(|| saver.run_uploader());
        let mut w = saver.worker().unwrap();
        for (id, kind) in &blobs {
            w.save(*kind, *id, &repo.read_blob(&index, id).unwrap()).unwrap();
        }
        w.flush().unwrap();
        saver.close();
    });
    saver.finish().unwrap();
}

/// `check --read-data` reads every pack an index names: a damaged pack whose blobs all
/// have another (home) copy is reported too, though every snapshot still restores.
#[test]
fn check_read_data_reads_packs_whose_blobs_live_elsewhere_too() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), noise(300_000, 5)).unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let before: Vec<_> = packs(&env.repo);
    store_again(&env.repo);
    let all = packs(&env.repo);
    assert_eq!(all.len(), 2 * before.len(), "{all:?}");
    // Damage each pack in turn (one of each pair holds only second copies).
    for p in &all {
        let good = std::fs::read(p).unwrap();
        let mut bad = good.clone();
        bad[40] ^= 0x55;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::write(p, &bad).unwrap();
        let o = env.run(&["check", "--read-data"]);
        let name = p.file_name().unwrap().to_str().unwrap();
        assert_eq!(o.status.code(), Some(1), "damage in {name} went unseen: {}", stderr(&o));
        assert!(stderr(&o).contains(&name[..8]), "{name} not named: {}", stderr(&o));
        std::fs::write(p, &good).unwrap();
    }
    assert!(env.run(&["check", "--read-data"]).status.success());
}

/// Key files planted without the password cannot stall or abort every command: those past
/// the KDF bounds are never run, the allowed but costly ones are tried after ours
/// (cheapest first, and the key that opened the repository last time before all).
#[test]
fn planted_key_files_cost_a_reader_almost_nothing() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), b"a").unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let plant = |memory_kib: u32, iterations: u32, parallelism: u32, n: u8| {
        let kf = cairn_format::keyfile::KeyFile {
            version: 1,
            created: "2026-01-01T00:00:00Z".into(),
            hostname: "evil".into(),
            username: "evil".into(),
            kdf: "argon2id".into(),
            memory_kib,
            iterations,
            parallelism,
            salt: "00".repeat(15) + &format!("{n:02x}"),
            wrapped: "00".repeat(60),
        };
        let bytes = kf.encode();
        let name = cairn_format::id::to_hex(&cairn_crypto::content_hash(&bytes));
        std::fs::write(env.repo.join("keys").join(name), bytes).unwrap();
    };
    plant(4 * 1024 * 1024, 100, 64, 1); // the old bounds' maximum: 4 GiB, 100 passes
    plant(256 * 1024, 4, 1, 2); // the largest now allowed
    plant(256 * 1024, 4, 16, 3);
    for _ in 0..2 {
        // Twice: once as a new host (no key id remembered), once as a known one; both
        // under a 1 GiB address-space limit that a 4 GiB Argon2 run could not live in.
        let t = std::time::Instant::now();
        let o = Command::new("prlimit")
            .arg("--as=1073741824")
            .arg("--")
            .arg(env!("CARGO_BIN_EXE_cairn"))
            .args(["snapshots"])
            .env("CAIRN_REPO", &env.repo)
            .env("CAIRN_PASSWORD", PASSWORD)
            .env("HOME", env.dir.path())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(t.elapsed() < std::time::Duration::from_secs(3), "took {:?}", t.elapsed());
    }
    // A wrong password is still one clear line, having tried only what is in bounds.
    let t = std::time::Instant::now();
    let o = env.cmd().env("CAIRN_PASSWORD", "wrong").args(["snapshots"]).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("wrong password"), "{}", stderr(&o));
    assert!(t.elapsed() < std::time::Duration::from_secs(10), "took {:?}", t.elapsed());
}

/// One flipped byte in one snapshot: `snapshots` lists the rest with a warning, `find`
/// and `restore latest` still work, `check` checks the rest and fails naming it; prune
/// refuses to run (an unreadable snapshot's data must not look unreferenced).
#[test]
fn one_damaged_snapshot_leaves_the_others_usable() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("first"), b"1").unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let first = env.short_ids()[0].clone();
    std::fs::write(src.join("second"), b"2").unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let path = std::fs::read_dir(env.repo.join("snapshots"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().unwrap().to_str().unwrap().starts_with(&first))
        .unwrap();
    let mut b = std::fs::read(&path).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 1;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&path, b).unwrap();

    let o = env.run(&["snapshots"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains(&format!("snapshot {first} is damaged")), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("1 snapshots"));
    assert!(env.ok(&["find", "second"]).contains("/second"));
    let t = env.path("t");
    env.ok(&["restore", &format!("latest:{}", src.display()), "--target", t.to_str().unwrap()]);
    assert_eq!(std::fs::read(t.join("second")).unwrap(), b"2");
    let o = env.run(&["check"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains(&format!("snapshot {first} is damaged")), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("1 snapshots") || stderr(&o).contains("1 snapshots"));
    let o = env.run(&["prune"]);
    assert_eq!(o.status.code(), Some(1), "prune ran with a damaged snapshot: {}", stderr(&o));
}

fn plant_data_pack(repo: &cairn_repo::Repository, blobs: Vec<(cairn_format::BlobId, u32, Vec<u8>)>) {
    cairn_testkit::craft::plant_pack(repo, cairn_format::BlobType::Data, blobs);
}

/// A blob whose pack header and index claim a raw length of 2^32-1 (or one that a zstd
/// frame contradicts) is refused before anything is allocated for it: restore, dump and
/// `check --read-data` fail cleanly under a 2 GiB address-space limit, in seconds.
#[test]
fn a_huge_claimed_blob_length_is_refused_before_allocating() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"x").unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let (_rt, repo) = cairn_testkit::craft::open(&env.repo, PASSWORD);
    let lease = repo.lease("test", "evil").unwrap();
    let zeros = vec![0u8; 1 << 20];
    let mut frame = vec![1u8]; // zstd
    frame.extend(zstd::bulk::compress(&zeros, 3).unwrap());
    let id = repo.blob_id(&zeros);
    plant_data_pack(&repo, vec![(id, u32::MAX, frame)]);
    // A file of that blob, claiming the size the header claims.
    let (sid, snap) = repo.resolve_snapshot("latest").unwrap();
    let _ = sid;
    let mut tree = repo.load_tree(&repo.load_index().unwrap(), snap.tree).unwrap();
    let mut n = tree.nodes[0].clone();
    n.name = cairn_format::tree::RawName(b"huge".to_vec());
    n.kind = cairn_format::tree::NodeKind::File;
    n.content = vec![id];
    n.size = u32::MAX as u64;
    n.subtree = None;
    tree.nodes.push(n);
    let bytes = cairn_format::tree::Tree::new(tree.nodes).encode();
    let tid = repo.blob_id(&bytes);
    let mut p = cairn_repo::Packer::new(repo.master(), cairn_format::BlobType::Tree, 1 << 20).unwrap();
    let mut codec = cairn_repo::BlobCodec::new(3);
    p.add_with(tid, bytes.len() as u32, |buf| codec.encode_into(&bytes, buf)).unwrap();
    let f = p.finish().unwrap();
    repo.block_on(repo.store().put(&cairn_repo::layout::pack(&f.id), f.data, cairn_store::PutMode::Create)).unwrap();
    repo.save_index(&cairn_format::index::IndexFile {
        supersedes: Vec::new(),
        packs: vec![cairn_format::index::IndexedPack { id: f.id, salt: f.salt, blobs: f.entries }],
    })
    .unwrap();
    let mut s2 = snap.clone();
    s2.tree = tid.tree();
    s2.time = "2030-01-01T00:00:00Z".into();
    repo.save_snapshot(&s2).unwrap();
    drop(lease);
    let t = env.path("t");
    for args in [
        vec!["restore".to_string(), "latest".into(), "--target".into(), t.display().to_string()],
        vec!["dump".into(), "latest".into(), format!("{}/huge", src.display())],
        vec!["check".into(), "--read-data".into()],
    ] {
        let start = std::time::Instant::now();
        let o = Command::new("prlimit")
            .arg("--as=2147483648")
            .arg("--")
            .arg(env!("CARGO_BIN_EXE_cairn"))
            .args(&args)
            .env("CAIRN_REPO", &env.repo)
            .env("CAIRN_PASSWORD", PASSWORD)
            .env("HOME", env.dir.path())
            .stdout(std::process::Stdio::null())
            .output()
            .unwrap();
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {:?} {e}", o.status);
        assert!(!e.contains("panicked") && !e.contains("memory allocation"), "{args:?}: {e}");
        assert!(start.elapsed() < std::time::Duration::from_secs(10), "{args:?} took {:?}", start.elapsed());
    }
}

/// One flipped byte in one index file: restore, ls and find still see everything (the
/// packs it named are read from their headers), with a warning; `check` fails naming it;
/// prune refuses (it must know every index file); a backup writes an index naming those
/// packs again, after which the repository checks clean once the damaged file is removed.
#[test]
fn one_damaged_index_file_hides_nothing() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), noise(200_000, 8)).unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let files: Vec<_> = std::fs::read_dir(env.repo.join("index")).unwrap().flatten().map(|e| e.path()).collect();
    assert_eq!(files.len(), 1);
    let mut b = std::fs::read(&files[0]).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 4;
    std::fs::set_permissions(&files[0], std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&files[0], b).unwrap();
    let name = files[0].file_name().unwrap().to_str().unwrap()[..8].to_string();

    let t = env.path("t");
    let o = env.run(&["restore", &format!("latest:{}", src.display()), "--target", t.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains(&format!("index file {name} is damaged")), "{}", stderr(&o));
    assert_eq!(std::fs::read(t.join("a")).unwrap(), noise(200_000, 8));
    assert!(env.ok(&["ls", "latest"]).contains("/a"));
    let o = env.run(&["check"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains(&format!("index file {name}")), "{}", stderr(&o));
    assert_eq!(env.run(&["prune"]).status.code(), Some(1), "prune ran with a damaged index file");
    // A backup adopts the packs no readable index names and records them anew.
    std::fs::write(src.join("b"), b"more").unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    std::fs::remove_file(&files[0]).unwrap();
    env.ok(&["check", "--read-data"]);
}

/// Trees of the smallest entries JSON allows: one at the entry cap (format.md §11), which
/// a reader decodes within the memory a hostile case may cost (512 MiB), and one entry
/// more, which is refused as damage (at 80 bytes an entry, 1.7 million fit into the blob
/// limit and took 560 MiB to decode before the cap).
#[test]
fn trees_of_tiny_entries_are_bounded_by_the_entry_cap() {
    let env = Env::new();
    env.init();
    let cap = cairn_format::tree::MAX_TREE_ENTRIES;
    let mut nodes: Vec<_> =
        (0..=cap).map(|i| cairn_testkit::craft::file(format!("{i:08}").as_bytes(), vec![], 0)).collect();
    let over = cairn_testkit::craft::raw_tree(nodes.clone());
    nodes.pop();
    let at = cairn_testkit::craft::raw_tree(nodes);
    drop(env.ok(&["snapshots"]));
    let (_rt, repo) = cairn_testkit::craft::open(&env.repo, PASSWORD);
    let (at_id, over_id) = (repo.blob_id(&at).tree(), repo.blob_id(&over).tree());
    drop(repo);
    let a = cairn_testkit::craft::plant(&env.repo, PASSWORD, &[(cairn_format::BlobType::Tree, at)], at_id);
    cairn_testkit::craft::plant(&env.repo, PASSWORD, &[(cairn_format::BlobType::Tree, over)], over_id);
    let run = |args: &[&str]| {
        let start = std::time::Instant::now();
        let o = Command::new("/usr/bin/time")
            .args(["-f", "maxrss_kib %M"])
            .arg(env!("CARGO_BIN_EXE_cairn"))
            .args(args)
            .env("CAIRN_REPO", &env.repo)
            .env("CAIRN_PASSWORD", PASSWORD)
            .env("HOME", env.dir.path())
            .stdout(std::process::Stdio::null())
            .output()
            .unwrap();
        let e = stderr(&o);
        let rss: u64 = e.lines().find_map(|l| l.strip_prefix("maxrss_kib ")).unwrap().trim().parse().unwrap();
        eprintln!("{args:?}: {rss} KiB in {:?}", start.elapsed());
        assert!(rss < 512 << 10, "{args:?}: {rss} KiB: {e}");
        assert!(start.elapsed() < std::time::Duration::from_secs(10), "{args:?} took {:?}", start.elapsed());
        assert!(!e.contains("panicked"), "{args:?}: {e}");
        e
    };
    // The tree at the cap decodes (ls then stops at its walk budget: the planted summary
    // claims nothing); the one over it is damage that check names.
    let e = run(&["ls", &a.to_string()]);
    assert!(e.contains("expands to more than"), "{e}");
    let e = run(&["check"]);
    assert!(e.contains(&format!("more than {cap} entries")), "{e}");
    assert!(e.contains("exited with non-zero status 1"), "{e}");
}

/// A pack whose sealed header claims one record more than it holds (sealed with the
/// repository's keys, so it decrypts): `check --read-data` names the pack as damaged and
/// fails; nothing panics or allocates for the claimed count; the snapshot's own data,
/// in other packs, still restores.
#[test]
fn a_pack_header_whose_count_disagrees_with_its_length_is_damage() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"kept").unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let (_rt, repo) = cairn_testkit::craft::open(&env.repo, PASSWORD);
    let _lease = repo.lease("test", "evil").unwrap();
    let data = b"planted".to_vec();
    let id = repo.blob_id(&data);
    let mut p = cairn_repo::Packer::new(repo.master(), cairn_format::BlobType::Data, 1 << 20).unwrap();
    let mut codec = cairn_repo::BlobCodec::new(0);
    p.add_with(id, data.len() as u32, |buf| codec.encode_into(&data, buf)).unwrap();
    let f = p.finish().unwrap();
    // Cut the honest header and trailer off and seal one that claims 2 records in 45 bytes.
    let hl = u32::from_le_bytes(f.data[f.data.len() - 4..].try_into().unwrap()) as usize;
    let mut pack = f.data[..f.data.len() - 4 - hl].to_vec();
    let mut header = cairn_format::pack::encode_header(&f.entries);
    header[1..5].copy_from_slice(&2u32.to_le_bytes());
    repo.master().object_key(&f.salt).seal(cairn_crypto::HEADER_NONCE, &mut header).unwrap();
    pack.extend_from_slice(&header);
    pack.extend_from_slice(&(header.len() as u32).to_le_bytes());
    let pid = cairn_format::PackId(cairn_format::Id(cairn_crypto::content_hash(&pack)));
    repo.block_on(repo.store().put(&cairn_repo::layout::pack(&pid), pack, cairn_store::PutMode::Create)).unwrap();
    repo.save_index(&cairn_format::index::IndexFile {
        supersedes: Vec::new(),
        packs: vec![cairn_format::index::IndexedPack { id: pid, salt: f.salt, blobs: f.entries }],
    })
    .unwrap();
    drop(_lease);
    let o = env.run(&["check", "--read-data"]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(e.contains(&pid.to_hex()[..8]) && e.contains("2 records but 45 bytes"), "{e}");
    assert!(!e.contains("panicked"), "{e}");
    let t = env.path("t");
    env.ok(&["restore", "latest", "--target", t.to_str().unwrap()]);
    assert_eq!(std::fs::read(t.join(src.strip_prefix("/").unwrap()).join("f")).unwrap(), b"kept");
}

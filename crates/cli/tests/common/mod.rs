#![allow(clippy::unwrap_used)]
//! Helpers for driving the built `cairn` binary against real directories.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

#[allow(unused_imports)]
pub use cairn_testkit::*;

pub mod http;
pub mod policy;

pub const PASSWORD: &str = "correct horse battery staple";

pub struct Env {
    pub dir: tempfile::TempDir,
    pub repo: PathBuf,
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::Builder::new().prefix("cairn-test-").tempdir().expect("tempdir");
        let repo = dir.path().join("repo");
        Env { dir, repo }
    }
    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cairn"));
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("CAIRN_REPO", &self.repo)
            .env("CAIRN_PASSWORD", PASSWORD)
            .stdin(Stdio::null());
        c
    }
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run cairn")
    }
    /// Runs and asserts success, returning stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(o.status.success(), "cairn {args:?} failed: {}\n{}", o.status, String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let out = self.ok(&a);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("bad JSON from {args:?}: {e}\n{out}"))
    }
    /// Short ids of every snapshot, oldest first.
    pub fn short_ids(&self) -> Vec<String> {
        self.json(&["snapshots"])
            .as_array()
            .expect("snapshots --json is an array")
            .iter()
            .map(|s| s["short_id"].as_str().expect("short_id").to_string())
            .collect()
    }
    pub fn init(&self) {
        self.ok(&["init"]);
    }
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A repository reached through a URL (S3, SFTP, ...): the test's `Env` plus the variables
/// that name the repository and carry its credentials. `run`, `ok` and `json` drive cairn
/// against it as `Env`'s do against the local one.
pub trait RemoteRepo {
    fn env(&self) -> &Env;
    /// `CAIRN_REPO` and whatever else this server needs (credentials, ssh options).
    fn vars(&self) -> Vec<(String, String)>;
    fn cmd(&self) -> Command {
        let mut c = self.env().cmd();
        c.env("CAIRN_TO_PASSWORD", PASSWORD);
        for (k, v) in self.vars() {
            c.env(k, v);
        }
        c
    }
    fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run cairn")
    }
    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(o.status.success(), "cairn {args:?} failed: {}", stderr(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
    fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let out = self.ok(&a);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("bad JSON from {args:?}: {e}\n{out}"))
    }
}

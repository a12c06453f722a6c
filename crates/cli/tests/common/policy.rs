#![allow(clippy::unwrap_used)]
//! A policy file over a test environment, the daemon running it, and the commands that
//! read its catalog.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::*;

/// A policy, its daemon and the commands that read its catalog.
pub struct Policy {
    pub env: Env,
    pub config: PathBuf,
}

pub struct Daemon {
    pub child: Child,
    pub log: PathBuf,
}

impl Daemon {
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill with our child's pid.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }
    /// SIGTERM, then wait for the exit.
    pub fn stop(mut self) -> String {
        self.signal(libc::SIGTERM);
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                assert!(s.success(), "daemon exited {s}:\n{log}");
                return log;
            }
            assert!(start.elapsed() < Duration::from_secs(60), "daemon did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    pub fn kill9(mut self) -> String {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Policy {
    /// `body` is the policy after the `[daemon]` and `[repository.primary]` sections.
    pub fn new(body: &str) -> Policy {
        let env = Env::new();
        let p = Policy { config: env.path("cairn.toml"), env };
        std::fs::write(p.env.path("pass"), PASSWORD).unwrap();
        p.env.init();
        p.write(body);
        p
    }
    pub fn write(&self, body: &str) {
        let text = format!(
            "[daemon]\nhostname = \"test-host\"\nretry_delay = \"1s\"\nstop_timeout = \"20s\"\nmax_parallel = 4\nalert_interval = \"1s\"\n\n\
             [repository.primary]\nurl = \"{}\"\npassword_file = \"{}\"\n\n{body}",
            self.env.repo.display(),
            self.env.path("pass").display()
        );
        std::fs::write(&self.config, text).unwrap();
    }
    pub fn cmd(&self) -> Command {
        let mut c = self.env.cmd();
        c.env("CAIRN_CONFIG", &self.config);
        c
    }
    pub fn run(&self, args: &[&str]) -> std::process::Output {
        self.cmd().args(args).output().unwrap()
    }
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(o.status.success(), "cairn {args:?}: {}\n{}", o.status, stderr(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
    pub fn json(&self, args: &[&str]) -> Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        serde_json::from_str(&self.ok(&a)).unwrap()
    }
    pub fn daemon(&self) -> Daemon {
        let log = self
            .env
            .path(&format!("daemon-{}.log", std::time::SystemTime::now().elapsed().map(|d| d.as_nanos()).unwrap_or(0)));
        let child = self
            .cmd()
            .arg("daemon")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Daemon { child, log }
    }
    /// Every job, oldest first.
    pub fn jobs(&self) -> Vec<Value> {
        let mut v = self.json(&["jobs", "--limit", "100000"]).as_array().unwrap().clone();
        v.reverse();
        v
    }
    pub fn jobs_of(&self, source: &str, kind: &str) -> Vec<Value> {
        self.jobs().into_iter().filter(|j| j["source"] == source && j["kind"] == kind).collect()
    }
    /// Waits (at most `secs`) until `f` holds for the job list.
    pub fn wait_for(&self, secs: u64, what: &str, d: Option<&Daemon>, f: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let start = Instant::now();
        loop {
            let jobs = self.jobs();
            if f(&jobs) {
                return jobs;
            }
            if start.elapsed() > Duration::from_secs(secs) {
                panic!(
                    "timed out waiting for {what}; jobs:\n{}\ndaemon log:\n{}",
                    serde_json::to_string_pretty(&jobs).unwrap(),
                    d.map(Daemon::log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

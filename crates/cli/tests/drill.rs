#![allow(clippy::unwrap_used)]
//! Restore drills of files, SQLite and command sources through the built binary: what
//! they prove when the backup is good, what they say when it is not (a pack gone, a check
//! that fails or hangs, a drill killed mid-way), the site-failure scenario from a copy,
//! the daemon running a drill on its schedule, and the history and evidence report.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::policy::*;
use common::*;
use serde_json::Value;

/// A policy with a files, an SQLite and a command source, each backed up once.
fn setup(extra_validate: &str) -> Policy {
    let p = Policy::new("");
    let src = p.env.path("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("big.bin"), noise(3 << 20, 7)).unwrap();
    std::fs::write(src.join("sub/orders.csv"), "id,total\n1,10\n2,20\n").unwrap();
    std::os::unix::fs::symlink("big.bin", src.join("link")).unwrap();
    let db = p.env.path("app.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch("CREATE TABLE orders (id INTEGER PRIMARY KEY, total INT); WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 500) INSERT INTO orders SELECT i, i * 3 FROM n;").unwrap();
    drop(conn);
    let repo2 = p.env.path("offsite");
    assert!(p.env.cmd().env("CAIRN_REPO", &repo2).args(["init"]).output().unwrap().status.success());
    p.write(&format!(
        r#"
[repository.offsite]
url = "{repo2}"
password_file = "{pass}"

[class.c]
repository = "primary"
schedule = "@daily"
rpo = "1d"
rto = "5m"
copy_to = ["offsite"]

[source.files]
class = "c"
kind = "files"
paths = ["{src}"]
validate = [
  "grep -q '^2,20$' \"$CAIRN_DRILL_PATH{src}/sub/orders.csv\"",
  {extra_validate}
]

[source.db]
class = "c"
kind = "sqlite"
path = "{db}"
validate = [{{ query = "SELECT count(*) FROM orders", min = 500 }}, {{ query = "SELECT sum(total) = 375750 FROM orders" }}]

[source.etcd]
class = "c"
kind = "command"
command = "printf 'snapshot-bytes-%s' 42"
stdin_name = "etcd.snap"
validate = ["test \"$(cat \"$CAIRN_DRILL_PATH\")\" = snapshot-bytes-42"]
"#,
        repo2 = repo2.display(),
        pass = p.env.path("pass").display(),
        src = src.display(),
        db = db.display(),
    ));
    for s in ["files", "db", "etcd"] {
        p.ok(&["run", s]);
    }
    p
}

fn drill(p: &Policy, args: &[&str]) -> (bool, Value) {
    let mut a = vec!["--json", "drill"];
    a.extend_from_slice(args);
    let o = p.run(&a);
    let v: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("drill {args:?}: {e}: {}\n{}", String::from_utf8_lossy(&o.stdout), stderr(&o)));
    (o.status.success(), v)
}

fn sandboxes(p: &Policy) -> Vec<String> {
    std::fs::read_dir(p.env.path("cairn-state/drills"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// The sandboxes of this test in which a `sleep 30` check runs.
fn checks_running(p: &Policy) -> Vec<std::path::PathBuf> {
    let drills = std::fs::canonicalize(p.env.path("cairn-state/drills")).unwrap_or_default();
    let mut v: Vec<std::path::PathBuf> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c.starts_with(b"sleep\x0030")))
        .filter_map(|e| std::fs::read_link(e.path().join("cwd")).ok())
        .filter(|cwd| !drills.as_os_str().is_empty() && cwd.starts_with(&drills))
        .collect();
    v.sort();
    v.dedup();
    v
}

fn failed_checks(r: &Value) -> Vec<String> {
    r["checks"].as_array().unwrap().iter().filter(|c| c["ok"] != true).map(|c| c.to_string()).collect()
}

#[test]
fn files_sqlite_and_command_drills_prove_the_backup_and_are_recorded() {
    let p = setup("\"test -L \\\"$CAIRN_DRILL_PATH\\\"/*/*/src/link || test -L \\\"$(find \\\"$CAIRN_DRILL_PATH\\\" -name link)\\\"\"");
    for s in ["files", "db", "etcd"] {
        let (ok, r) = drill(&p, &[s]);
        assert!(ok, "{s}: {}", serde_json::to_string_pretty(&r).unwrap());
        assert_eq!(r["verdict"], "passed");
        assert!(failed_checks(&r).is_empty());
        // Re-hashed and counted, then the source's own checks.
        let checks: Vec<&str> = r["checks"].as_array().unwrap().iter().map(|c| c["check"].as_str().unwrap()).collect();
        assert!(checks[0].contains("re-hashed"), "{checks:?}");
        let own = if s == "db" {
            3
        } else if s == "files" {
            2
        } else {
            1
        };
        assert_eq!(checks.len(), 1 + own, "{checks:?}");
        // RPO of a files drill is the drill's start minus the snapshot's time.
        let t = |f: &str| r[f].as_str().unwrap().parse::<jiff::Timestamp>().unwrap().as_millisecond() as f64 / 1000.0;
        let rpo = r["rpo_secs"].as_f64().unwrap();
        assert!((rpo - (t("started_at") - t("snapshot_time"))).abs() < 0.01, "{r}");
        assert_eq!(r["rpo_met"], true);
        assert_eq!(r["rto_met"], true);
        assert!(r["rto_secs"].as_f64().unwrap() > 0.0);
        assert_eq!(r["cleaned_up"], true);
    }
    let (_, r) = drill(&p, &["db"]);
    let sqlite: Vec<&str> = r["checks"].as_array().unwrap().iter().map(|c| c["output"].as_str().unwrap()).collect();
    assert_eq!(sqlite[1], "ok", "integrity_check: {sqlite:?}");
    assert!(sqlite[2].starts_with("500 "), "{sqlite:?}");
    assert!(sandboxes(&p).is_empty(), "{:?}", sandboxes(&p));

    // The history from the catalog, and the same drills from the repository alone.
    let h = p.json(&["drills"]);
    assert_eq!(h.as_array().unwrap().len(), 4);
    let from_repo = p.json(&["drills", "--repository", "primary"]);
    assert_eq!(from_repo.as_array().unwrap().len(), 4, "{from_repo}");
    assert_eq!(from_repo[0]["job"], h[0]["job"]);
    let table = p.ok(&["drills", "--source", "db"]);
    assert!(table.contains("passed") && table.contains("db: RTO last"), "{table}");

    // The evidence report, both formats, self-contained.
    let md = p.ok(&["drill", "report", "--format", "md"]);
    assert!(
        md.contains("## Source files") && md.contains("## Source db") && md.contains("data:image/svg+xml;base64,"),
        "{md}"
    );
    let html = p.ok(&["drill", "report", "--format", "html", "--since", "1h"]);
    assert!(html.starts_with("<!DOCTYPE html>") && html.matches("<svg").count() == 3, "{html}");
    assert!(
        !html.contains("http://")
            || html.matches("http://").count() == html.matches("xmlns=\"http://www.w3.org/2000/svg\"").count()
    );
    // Its restore phase as progress lines for tools, the last one complete.
    let o = p.run(&["--json-progress", "drill", "files"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let last: Value = serde_json::from_str(stderr(&o).lines().rfind(|l| l.starts_with('{')).unwrap()).unwrap();
    assert_eq!(last["operation"], "drill", "{last}");
    assert!(last["bytes_total"].as_u64() > Some(0) && last["bytes_done"] == last["bytes_total"], "{last}");
}

#[test]
fn drills_made_to_fail_say_why_and_leave_nothing_behind() {
    let p = setup("{ command = \"sleep 30\", timeout = \"1s\" }");
    // A check that hangs is killed at its timeout and fails the drill.
    let t0 = Instant::now();
    let (ok, r) = drill(&p, &["files"]);
    assert!(!ok && r["verdict"] == "failed", "{r}");
    assert!(t0.elapsed() < Duration::from_secs(20));
    let failed = failed_checks(&r);
    assert!(failed.len() == 1 && failed[0].contains("killed after"), "{failed:?}");
    assert!(r["reason"].as_str().unwrap().contains("sleep 30"), "{r}");
    assert!(r["rto_secs"].is_null() && r["rpo_met"].is_null(), "a failed drill proves no RTO: {r}");
    assert!(sandboxes(&p).is_empty());

    // A query that fails.
    let text =
        std::fs::read_to_string(&p.config).unwrap().replace("SELECT sum(total) = 375750", "SELECT sum(nope) = 1");
    std::fs::write(&p.config, text).unwrap();
    let (ok, r) = drill(&p, &["db"]);
    assert!(!ok && r["verdict"] == "failed", "{r}");
    assert!(r["reason"].as_str().unwrap().contains("no such column"), "{r}");

    let text = std::fs::read_to_string(&p.config).unwrap().replace("timeout = \"1s\"", "timeout = \"60s\"");
    std::fs::write(&p.config, text).unwrap();
    // SIGTERM mid-check: the drill stops at once, cleans up and says so.
    let child =
        p.cmd().args(["--json", "drill", "files"]).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let t0 = Instant::now();
    while checks_running(&p).is_empty() {
        assert!(t0.elapsed() < Duration::from_secs(60), "the drill never reached its checks");
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: kill with our child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let o = child.wait_with_output().unwrap();
    assert!(t0.elapsed() < Duration::from_secs(20), "SIGTERM did not stop the drill");
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(r["verdict"] == "failed" && r["reason"].as_str().unwrap().contains("stopped"), "{r}");
    assert!(sandboxes(&p).is_empty(), "{:?}", sandboxes(&p));
    // Killed with SIGKILL mid-way: the next drill removes what it left (and kills its
    // check, still running), and the history says it was interrupted.
    let mut child = p.cmd().args(["drill", "files"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let t0 = Instant::now();
    while checks_running(&p).is_empty() {
        assert!(t0.elapsed() < Duration::from_secs(60), "the drill never reached its checks");
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(sandboxes(&p).len(), 1, "a killed drill leaves its sandbox until the next one");
    let text = std::fs::read_to_string(&p.config)
        .unwrap()
        .replace("{ command = \"sleep 30\", timeout = \"60s\" }", "\"true\"");
    std::fs::write(&p.config, text).unwrap();
    assert_eq!(checks_running(&p).len(), 1, "the killed drill's check outlives it");
    let (ok, r) = drill(&p, &["files"]);
    assert!(ok, "{r}");
    assert!(sandboxes(&p).is_empty(), "{:?}", sandboxes(&p));
    assert!(checks_running(&p).is_empty(), "the sweep kills what ran in the sandbox");
    let h = p.json(&["drills", "--source", "files"]);
    let reasons: Vec<&str> = h.as_array().unwrap().iter().map(|d| d["reason"].as_str().unwrap_or("")).collect();
    assert!(reasons.iter().any(|r| r.starts_with("interrupted")), "{reasons:?}");
    let md = p.ok(&["drill", "report"]);
    assert!(md.contains("### Failures") && md.contains("interrupted"), "{md}");
    // A pack gone from the repository: the restore fails and the drill says which.
    for pack in packs(&p.env.repo) {
        std::fs::remove_file(pack).unwrap();
    }
    let (ok, r) = drill(&p, &["etcd"]);
    assert!(!ok && r["verdict"] == "failed", "{r}");
    let why = r["reason"].as_str().unwrap();
    assert!(why.contains("missing") || why.contains("data/") && why.contains("not found"), "{r}");
    assert!(sandboxes(&p).is_empty(), "{:?}", sandboxes(&p));
    let jobs = p.jobs();
    let drills: Vec<&Value> = jobs.iter().filter(|j| j["kind"] == "drill").collect();
    let statuses: Vec<&str> = drills.iter().map(|j| j["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["failed", "failed", "failed", "interrupted", "succeeded", "failed"], "{drills:?}");
}

#[test]
fn a_site_failure_drill_restores_from_the_copy_without_the_primary() {
    let p = setup("\"true\"");
    // The primary site is gone.
    let away = p.env.path("primary-gone");
    std::fs::rename(&p.env.repo, &away).unwrap();
    let (ok, r) = drill(&p, &["files"]);
    assert!(!ok && r["verdict"] == "failed", "without the primary a plain drill fails: {r}");
    let (ok, r) = drill(&p, &["files", "--from", "offsite"]);
    assert!(ok, "{}", serde_json::to_string_pretty(&r).unwrap());
    assert!(r["scenario"].as_str().unwrap().starts_with("site failure"), "{r}");
    assert_eq!(r["repository"], "offsite");
    assert!(!p.env.repo.exists(), "the drill must not recreate the primary");
    // The evidence sits in the copy the drill read.
    let in_copy = p.json(&["drills", "--repository", "offsite"]);
    assert_eq!(in_copy.as_array().unwrap().len(), 1);
    // A repository the source is not copied to is refused.
    let o = p.run(&["drill", "files", "--from", "nowhere"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("not copied to"), "{}", stderr(&o));
    std::fs::rename(&away, &p.env.repo).unwrap();
}

#[test]
fn the_daemon_runs_a_drill_on_its_schedule() {
    let p = setup("\"true\"");
    let text = std::fs::read_to_string(&p.config).unwrap().replace(
        "copy_to = [\"offsite\"]",
        "copy_to = [\"offsite\"]\ndrill = { schedule = \"*/2 * * * * *\", pick = \"random\" }",
    );
    std::fs::write(&p.config, text).unwrap();
    let d = p.daemon();
    p.wait_for(60, "a scheduled drill of each source", Some(&d), |jobs| {
        ["files", "db", "etcd"].iter().all(|s| {
            jobs.iter().any(|j| {
                j["kind"] == "drill" && j["source"] == *s && j["trigger"] == "schedule" && j["status"] == "succeeded"
            })
        })
    });
    d.stop();
    let h = p.json(&["drills"]);
    let scheduled: Vec<&Value> = h.as_array().unwrap().iter().filter(|d| d["trigger"] == "schedule").collect();
    assert!(scheduled.len() >= 3, "{h}");
    assert!(scheduled.iter().all(|d| d["pick"] == "random" && d["rpo_met"].is_null()), "{scheduled:?}");
    assert!(sandboxes(&p).is_empty());
}

#[test]
fn a_drill_killed_mid_restore_is_cleaned_up_and_recorded_by_the_next() {
    let p = setup("\"true\"");
    // Reads from the primary at 512 KiB/s: the 3 MiB file takes seconds to restore.
    let slow = std::fs::read_to_string(&p.config).unwrap().replace(
        &format!("[repository.primary]\nurl = \"{}\"", p.env.repo.display()),
        &format!("[repository.primary]\nurl = \"{}\"\nlimit_download = \"512KiB\"", p.env.repo.display()),
    );
    assert!(slow.contains("limit_download"));
    let fast = std::fs::read_to_string(&p.config).unwrap();
    std::fs::write(&p.config, &slow).unwrap();
    let mut child = p.cmd().args(["drill", "files"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let t0 = Instant::now();
    let restoring = loop {
        let big = sandboxes(&p).first().map(|s| p.env.path(&format!("cairn-state/drills/{s}/restore")));
        if let Some(dir) = big.filter(|d| d.exists()) {
            break dir;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "the drill never began restoring");
        std::thread::sleep(Duration::from_millis(20));
    };
    std::thread::sleep(Duration::from_millis(500));
    assert!(child.try_wait().unwrap().is_none(), "the restore ended before the kill: make it slower");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(restoring.exists(), "a SIGKILLed drill leaves its half-restored sandbox");
    std::fs::write(&p.config, fast).unwrap();
    let (ok, r) = drill(&p, &["files"]);
    assert!(ok, "{r}");
    assert!(sandboxes(&p).is_empty(), "{:?}", sandboxes(&p));
    let h = p.json(&["drills"]);
    let v: Vec<&str> = h.as_array().unwrap().iter().map(|d| d["verdict"].as_str().unwrap()).collect();
    assert_eq!(v, ["failed", "passed"], "{h}");
    assert!(h[0]["reason"].as_str().unwrap().starts_with("interrupted"), "{}", h[0]);
}

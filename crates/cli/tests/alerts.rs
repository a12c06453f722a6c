#![allow(clippy::unwrap_used)]
//! Alerts end to end: the daemon raises conditions from what really happened (a failing
//! dump command, a backup missed while no daemon ran, a slow backup, a full file system),
//! routes them by the policy's matchers to real receivers (an HTTP server, a command
//! writing a file, healthchecks-style pings), sends the resolution once the condition
//! clears, and a target that is down delays nothing.

mod common;

use std::time::Duration;

use cairn_testkit::http::Receiver;
use common::policy::*;
use common::*;
use serde_json::Value;

fn events(r: &Receiver, path: &str) -> Vec<Value> {
    r.requests().iter().filter(|q| q.path == path).map(|q| q.json()).collect()
}

#[test]
fn a_failing_job_is_raised_routed_and_resolved_and_a_dead_target_delays_nothing() {
    let hook = Receiver::start();
    let pings = Receiver::start();
    let p = Policy::new("");
    let data = p.env.path("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("f"), "x").unwrap();
    let flag = p.env.path("dump-works");
    let cmd_out = p.env.path("alerts.jsonl");
    p.write(&format!(
        r#"
[class.fast]
repository = "primary"
schedule = "* * * * * *"

[class.quiet]
repository = "primary"

[source.dump]
class = "fast"
kind = "command"
command = "test -e {flag} && echo dumped"

[source.files]
class = "fast"
kind = "files"
paths = ["{data}"]

[alert.ops]
kind = "webhook"
url = "{hook_url}"
events = ["job_failed"]
sources = ["dump"]

[alert.log]
kind = "command"
command = "cat >> {cmd_out}; echo >> {cmd_out}"
min_severity = "info"

[alert.down]
kind = "webhook"
url = "http://127.0.0.1:9/nothing-listens"
timeout = "2s"

[alert.hc]
kind = "ping"
url = "{ping_url}"
sources = ["files"]
"#,
        flag = flag.display(),
        data = data.display(),
        hook_url = hook.url("/hook"),
        cmd_out = cmd_out.display(),
        ping_url = pings.url("/ping/{source}"),
    ));
    let d = p.daemon();
    // The dump fails: job_failed reaches the webhook (matched by event and source), the
    // command target and the dead target's retries, and the daemon's start reaches the
    // command target (min_severity info).
    let raised = hook.wait_for(30, "a job_failed webhook", |r| r.path == "/hook" && r.json()["state"] == "raised");
    let e = raised.json();
    assert_eq!(e["event"], "job_failed");
    assert_eq!(e["source"], "dump");
    assert_eq!(e["severity"], "error");
    assert!(e["message"].as_str().unwrap().contains("backup job"), "{e}");
    assert_eq!(raised.header("content-type"), Some("application/json"));
    // Meanwhile the files source kept backing up every second, the dead target
    // notwithstanding; its pings went out.
    let before = p.jobs_of("files", "backup").len();
    std::thread::sleep(Duration::from_secs(3));
    let after = p.jobs_of("files", "backup").len();
    assert!(after >= before + 2, "backups were held up: {before} -> {after}\n{}", d.log());
    pings.wait_for(10, "a /start ping", |r| r.path == "/ping/files/start");
    pings.wait_for(10, "a success ping", |r| r.path == "/ping/files");
    // Fixed: the next backup succeeds and the resolution follows, once.
    std::fs::write(&flag, "").unwrap();
    hook.wait_for(30, "a resolved webhook", |r| r.path == "/hook" && r.json()["state"] == "resolved");
    std::thread::sleep(Duration::from_secs(2));
    let states: Vec<String> = events(&hook, "/hook").iter().map(|e| e["state"].as_str().unwrap().to_string()).collect();
    assert_eq!(states, ["raised", "resolved"], "one raise, one resolve: {states:?}");
    let log = d.stop();
    let lines: Vec<Value> = std::fs::read_to_string(&cmd_out)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let seen: Vec<(&str, &str)> =
        lines.iter().map(|e| (e["event"].as_str().unwrap(), e["state"].as_str().unwrap())).collect();
    assert!(seen.contains(&("daemon_started", "once")), "{seen:?}");
    assert!(seen.contains(&("job_failed", "raised")) && seen.contains(&("job_failed", "resolved")), "{seen:?}");
    // The dead target was tried, and retried, and recorded as failing.
    let a = p.json(&["alerts", "--since", "1h"]);
    let down: Vec<&Value> = a["deliveries"].as_array().unwrap().iter().filter(|d| d["target"] == "down").collect();
    assert!(down.iter().any(|d| d["attempt"].as_u64() >= Some(2)), "{a}\n{log}");
    assert!(down.iter().all(|d| d["error"].is_string()), "{a}");
    assert!(a["active"].as_array().unwrap().is_empty(), "{a}");
}

#[test]
fn a_backup_that_never_happened_is_raised_at_the_daemons_start_and_resolved_by_one() {
    let hook = Receiver::start();
    let p = Policy::new("");
    let data = p.env.path("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("f"), "x").unwrap();
    // Backups at 03:00 only, none taken yet: nothing in the repository meets the RPO, and
    // no job failed either; only the repository can say so (a dead-man alert).
    p.write(&format!(
        r#"
[class.daily]
repository = "primary"
schedule = "0 3 * * *"
rpo = "1d"

[source.files]
class = "daily"
kind = "files"
paths = ["{data}"]

[alert.chat]
kind = "webhook"
format = "slack"
url = "{url}"
"#,
        data = data.display(),
        url = hook.url("/slack"),
    ));
    let d = p.daemon();
    let r = hook.wait_for(20, "a backup_missing message", |r| r.path == "/slack");
    let text = r.json()["text"].as_str().unwrap().to_string();
    assert!(text.contains("ERROR backup_missing") && text.contains("files"), "{text}");
    // A manual backup clears it.
    p.ok(&["run", "files"]);
    let r = hook.wait_for(20, "the resolution", |r| r.json()["text"].as_str().is_some_and(|t| t.contains("RESOLVED")));
    assert!(r.json()["text"].as_str().unwrap().contains("backup_missing"), "{:?}", r.json());
    d.stop();
}

#[test]
fn alert_test_reaches_the_target_or_says_why_not() {
    let hook = Receiver::start();
    let p = Policy::new("");
    p.write(&format!(
        r#"
[alert.ok]
kind = "webhook"
url = "{url}"
token_file = "{token}"

[alert.bad]
kind = "webhook"
url = "http://127.0.0.1:9/"
timeout = "2s"
"#,
        url = hook.url("/t"),
        token = p.env.path("token").display(),
    ));
    std::fs::write(p.env.path("token"), "s3cret\n").unwrap();
    p.ok(&["alert", "test", "ok"]);
    let r = hook.wait_for(5, "the test notification", |r| r.path == "/t");
    assert_eq!(r.json()["state"], "test");
    assert_eq!(r.header("authorization"), Some("Bearer s3cret"));
    let o = p.run(&["alert", "test", "bad"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("alert bad"), "{}", stderr(&o));
    hook.respond(500);
    let o = p.run(&["alert", "test", "ok"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("500"), "{}", stderr(&o));
    let o = p.run(&["alert", "test", "nope"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("not in the policy"), "{}", stderr(&o));
}

#[test]
fn slow_backups_unreachable_copies_and_a_full_disk_are_raised_from_what_happened() {
    let hook = Receiver::start();
    let p = Policy::new("");
    // The copy's repository lives on a small tmpfs, then the tmpfs fills up.
    let Some(small) = Tmpfs::mount(&p.env.path("small"), "8m") else {
        skip("mounting a tmpfs needs root");
        return;
    };
    let offsite = p.env.path("small/offsite");
    assert!(p.env.cmd().env("CAIRN_REPO", &offsite).arg("init").output().unwrap().status.success());
    let data = p.env.path("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("f"), "x").unwrap();
    p.write(&format!(
        r#"
[repository.offsite]
url = "{offsite}"
password_file = "{pass}"

[class.c]
repository = "primary"
schedule = "*/2 * * * * *"
rpo = "1h"

[source.slow]
class = "c"
kind = "command"
command = "sleep 2; echo late"
max_duration = "1s"

[source.copied]
class = "c"
kind = "files"
paths = ["{data}"]
copy_to = ["offsite"]

[alert.ops]
kind = "webhook"
url = "{url}"
events = ["job_slow", "copy_lagging", "job_failed", "storage_full"]
"#,
        offsite = offsite.display(),
        pass = p.env.path("pass").display(),
        url = hook.url("/hook"),
        data = data.display(),
    ));
    let d = p.daemon();
    let slow = hook.wait_for(30, "job_slow", |r| r.json()["event"] == "job_slow");
    assert!(slow.json()["payload"]["duration_secs"].as_i64().unwrap() >= 1, "{}", slow.json());
    // Stopped at its max_duration, the slow job failed too, saying why.
    let stopped = hook.wait_for(10, "job_failed of the slow source", |r| {
        r.json()["event"] == "job_failed" && r.json()["source"] == "slow"
    });
    assert!(stopped.json()["message"].as_str().unwrap().contains("max_duration"), "{}", stopped.json());
    // Backups of the copied source reach the copy before its disk fills.
    let t0 = std::time::Instant::now();
    while !p.jobs_of("copied", "copy").iter().any(|j| j["status"] == "succeeded") {
        assert!(t0.elapsed() < Duration::from_secs(30), "no copy");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The disk of the copy fills: storage_full for offsite.
    let filler = p.env.path("small/filler");
    let _ = std::fs::write(&filler, vec![0u8; 7 << 20]);
    let full = hook.wait_for(30, "storage_full", |r| r.json()["event"] == "storage_full");
    assert_eq!(full.json()["repository"], "offsite", "{}", full.json());
    // The copy's site goes away: the copy job fails and the copy lags.
    drop(small);
    std::fs::remove_dir_all(p.env.path("small")).unwrap();
    hook.wait_for(30, "job_failed of the copy", |r| {
        r.json()["event"] == "job_failed" && r.json()["key"] == "job_failed/copied/copy"
    });
    hook.wait_for(30, "copy_lagging", |r| r.json()["event"] == "copy_lagging");
    // With the tmpfs gone, its file system is no longer full: resolved.
    hook.wait_for(30, "storage_full resolved", |r| {
        r.json()["event"] == "storage_full" && r.json()["state"] == "resolved"
    });
    d.stop();
}

/// Files encrypted in place: a backup in which every file changed and the new data does
/// not compress raises `ransomware_suspected`; one in which every file was edited with
/// ordinary (compressible) text does not. Forgetting the suspect backup resolves it.
#[test]
fn files_encrypted_in_place_raise_the_ransomware_signal_and_real_edits_do_not() {
    let hook = Receiver::start();
    let p = Policy::new("");
    let data = p.env.path("data");
    std::fs::create_dir_all(&data).unwrap();
    let text = |i: usize, v: &str| -> String {
        (0..200).map(|l| format!("record {i} line {l}: the quick brown fox, version {v}\n")).collect()
    };
    for i in 0..150 {
        std::fs::write(data.join(format!("doc{i:03}.txt")), text(i, "one")).unwrap();
    }
    p.write(&format!(
        r#"
[class.docs]
repository = "primary"
schedule = "@yearly"

[source.docs]
class = "docs"
kind = "files"
paths = ["{data}"]

[alert.sec]
kind = "webhook"
url = "{url}"
events = ["ransomware_suspected"]
"#,
        data = data.display(),
        url = hook.url("/sec"),
    ));
    p.ok(&["run", "docs"]);
    // Every file edited, as a mass search-and-replace would: all changed, all compressible.
    for i in 0..150 {
        std::fs::write(data.join(format!("doc{i:03}.txt")), text(i, "two")).unwrap();
    }
    p.ok(&["run", "docs"]);
    let d = p.daemon();
    std::thread::sleep(Duration::from_secs(3));
    assert!(events(&hook, "/sec").is_empty(), "real edits raised it: {:?}", events(&hook, "/sec"));
    // Every file replaced by what encryption leaves: bytes that do not compress.
    let mut urandom = std::fs::File::open("/dev/urandom").unwrap();
    for i in 0..150 {
        let mut b = vec![0u8; 12 * 1024];
        std::io::Read::read_exact(&mut urandom, &mut b).unwrap();
        std::fs::write(data.join(format!("doc{i:03}.txt")), b).unwrap();
    }
    p.ok(&["run", "docs"]);
    let r = hook.wait_for(20, "ransomware_suspected", |r| r.path == "/sec");
    let e = r.json();
    assert_eq!(e["state"], "raised", "{e}");
    assert_eq!(e["event"], "ransomware_suspected", "{e}");
    assert_eq!(e["payload"]["files_changed"], 150, "{e}");
    assert_eq!(e["payload"]["files_before"], 150, "{e}");
    let msg = e["message"].as_str().unwrap();
    assert!(msg.contains("100% of its files changed") && msg.contains("encrypted"), "{msg}");
    let suspect = e["payload"]["snapshot"].as_str().unwrap().to_string();
    // The next backup sees the encrypted files unchanged: the condition stays.
    p.ok(&["run", "docs"]);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(events(&hook, "/sec").len(), 1, "{:?}", events(&hook, "/sec"));
    // Forgetting the suspect backup (after checking it) clears it.
    p.env.ok(&["forget", &suspect]);
    let r = hook.wait_for(20, "the resolution", |r| r.path == "/sec" && r.json()["state"] == "resolved");
    assert_eq!(r.json()["event"], "ransomware_suspected");
    d.stop();
}

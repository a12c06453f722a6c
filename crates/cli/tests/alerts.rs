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
fn a_backup_that_never_happened_is_raised_once_the_first_rpo_has_passed_and_resolved_by_one() {
    let hook = Receiver::start();
    let p = Policy::new("");
    let data = p.env.path("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("f"), "x").unwrap();
    // Backups once a day, not while the test runs, none taken yet: nothing in the repository
    // meets the RPO, and no job failed either; only the repository can say so (a dead-man alert).
    p.write(&format!(
        r#"
[class.daily]
repository = "primary"
schedule = {schedule}
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
        schedule = cairn_testkit::daily_not_now(),
    ));
    // A source the daemon has just taken on is not yet past its RPO: its first window
    // has not even come. It is pending, and nothing is raised.
    let d = p.daemon();
    let t0 = std::time::Instant::now();
    while !d.log().contains("daemon started") {
        assert!(t0.elapsed() < Duration::from_secs(20), "daemon did not start:\n{}", d.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    // Conditions are evaluated at the start and every second (alert_interval).
    std::thread::sleep(Duration::from_secs(3));
    let st = p.json(&["status"]);
    assert_eq!(st[0]["rpo_state"], "PENDING", "{st}");
    let texts: Vec<String> =
        hook.requests().iter().filter_map(|r| r.json()["text"].as_str().map(str::to_string)).collect();
    assert!(!texts.iter().any(|t| t.contains("backup_missing")), "raised before its first window: {texts:?}");
    d.stop();
    // Two days later (the catalog says the daemon took the source on then) and still no
    // backup: past its RPO, raised at the daemon's start.
    let db = rusqlite::Connection::open(p.env.path("cairn-catalog.db")).unwrap();
    db.execute("UPDATE sources SET first_seen = first_seen - 2 * 86400000 WHERE name = 'files'", []).unwrap();
    drop(db);
    assert_eq!(p.json(&["status"])[0]["rpo_state"], "BREACHED");
    let d = p.daemon();
    let r = hook.wait_for(20, "a backup_missing message", |r| {
        r.json()["text"].as_str().is_some_and(|t| t.contains("backup_missing"))
    });
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

/// An SMTP server of the test's own (aiosmtpd: STARTTLS required, AUTH for one user, a
/// certificate from a CA made here), stopped on drop.
struct Smtp {
    child: std::process::Child,
    port: u16,
    smtps_port: u16,
    out: std::path::PathBuf,
    ca: std::path::PathBuf,
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Smtp {
    fn start(dir: &std::path::Path) -> Option<Smtp> {
        let has =
            std::process::Command::new("python3").args(["-c", "import aiosmtpd"]).status().is_ok_and(|s| s.success());
        if !has {
            skip("python3 with aiosmtpd (PyPI) is not installed");
            return None;
        }
        // A CA, and a server certificate it signs for localhost and 127.0.0.1 (webpki
        // refuses a self-signed certificate used as its own CA).
        let (ca, cert, key) = (dir.join("smtp-ca.pem"), dir.join("smtp-cert.pem"), dir.join("smtp-key.pem"));
        let script = r#"set -e
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=cairn-test-ca -keyout ca-key.pem -out smtp-ca.pem \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout smtp-key.pem -out srv.csr 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' > ext.cnf
openssl x509 -req -in srv.csr -CA smtp-ca.pem -CAkey ca-key.pem -CAcreateserial -days 2 -extfile ext.cnf -out smtp-cert.pem 2>/dev/null
"#;
        let o = std::process::Command::new("sh").arg("-c").arg(script).current_dir(dir).output();
        if !o.as_ref().is_ok_and(|o| o.status.success()) {
            skip(&format!("openssl could not make the test certificates: {o:?}"));
            return None;
        }
        let free = || std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap().local_addr().unwrap().port();
        let (port, smtps_port) = (free(), free());
        let out = dir.join("mail");
        let mut child = std::process::Command::new("python3")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/smtp_receiver.py"))
            .arg(port.to_string())
            .arg(smtps_port.to_string())
            .arg(&out)
            .arg(&cert)
            .arg(&key)
            .args(["alerts", "s3cret"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
        assert_eq!(line.trim(), "ready");
        Some(Smtp { child, port, smtps_port, out, ca })
    }

    /// The messages received so far, oldest first.
    fn mails(&self) -> Vec<Value> {
        let mut names: Vec<_> = std::fs::read_dir(&self.out)
            .map(|d| d.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "json")).collect())
            .unwrap_or_default();
        names.sort();
        names.iter().map(|p| serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()).collect()
    }

    fn wait_for(&self, secs: u64, what: &str, f: impl Fn(&Value) -> bool) -> Value {
        let start = std::time::Instant::now();
        loop {
            if let Some(m) = self.mails().into_iter().find(|m| f(m)) {
                return m;
            }
            assert!(start.elapsed() < Duration::from_secs(secs), "no mail {what} in {secs} s: {:?}", self.mails());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The decoded body of a received message (base64, as cairn sends it).
fn mail_body(m: &Value) -> String {
    let data = m["data"].as_str().unwrap().replace("\r\n", "\n");
    let b64 = data.split("\n\n").nth(1).unwrap().replace('\n', "");
    let mut c = std::process::Command::new("base64")
        .arg("-d")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut c.stdin.take().unwrap(), b64.as_bytes()).unwrap();
    String::from_utf8(c.wait_with_output().unwrap().stdout).unwrap()
}

/// Mail alerts through a real SMTP server: STARTTLS (with the policy's `ca_file`), AUTH,
/// every recipient; a server whose certificate is not trusted is refused, not used in
/// plain text; a failing job's alert arrives by mail.
#[test]
fn email_alerts_go_out_over_starttls_with_auth_and_an_untrusted_server_is_refused() {
    let p = Policy::new("");
    let Some(smtp) = Smtp::start(p.env.dir.path()) else { return };
    std::fs::write(p.env.path("smtp-pass"), "s3cret\n").unwrap();
    p.write(&format!(
        r#"
[class.fast]
repository = "primary"
schedule = "* * * * * *"

[source.dump]
class = "fast"
kind = "command"
command = "echo the dump tool failed >&2; exit 1"

[alert.mail]
kind = "email"
smtp = "smtp+starttls://localhost:{port}"
ca_file = "{ca}"
from = "cairn@backup.example.net"
to = ["ops@example.net", "dba@example.net"]
username = "alerts"
password_file = "{pass}"
events = ["job_failed"]

[alert.tls]
kind = "email"
smtp = "smtps://127.0.0.1:{smtps}"
ca_file = "{ca}"
from = "cairn@backup.example.net"
to = ["ops@example.net"]
username = "alerts"
password_file = "{pass}"
events = ["drill_failed"]

[alert.untrusted]
kind = "email"
smtp = "smtp+starttls://localhost:{port}"
from = "cairn@backup.example.net"
to = ["ops@example.net"]
username = "alerts"
password_file = "{pass}"
events = ["job_failed"]
"#,
        port = smtp.port,
        smtps = smtp.smtps_port,
        ca = smtp.ca.display(),
        pass = p.env.path("smtp-pass").display(),
    ));
    let out = p.ok(&["alert", "test", "mail"]);
    assert!(out.contains("delivered"), "{out}");
    let m = smtp.wait_for(10, "for the test", |_| true);
    assert_eq!(m["tls"], true, "{m}");
    assert_eq!(m["auth_user"], "alerts", "{m}");
    assert_eq!(m["mail_from"], "cairn@backup.example.net", "{m}");
    assert_eq!(m["rcpt_tos"], serde_json::json!(["ops@example.net", "dba@example.net"]), "{m}");
    let data = m["data"].as_str().unwrap();
    assert!(data.contains("Subject: [cairn test-host]") && data.contains("Auto-Submitted: auto-generated"), "{data}");
    // TLS from the first byte, to an address the certificate names.
    p.ok(&["alert", "test", "tls"]);
    let m = smtp.wait_for(10, "over smtps", |m| m["data"].as_str().is_some_and(|d| d.contains("alert test tls")));
    assert_eq!((m["tls"].as_bool(), m["auth_user"].as_str()), (Some(true), Some("alerts")), "{m}");
    // The system's roots do not know the test's CA: refused, nothing sent in plain text.
    let o = p.run(&["alert", "test", "untrusted"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("alert untrusted") && stderr(&o).to_lowercase().contains("certificate"),
        "{}",
        stderr(&o)
    );
    assert_eq!(smtp.mails().len(), 2);
    // A failing job, raised by the daemon, by mail.
    let d = p.daemon();
    let m = smtp.wait_for(30, "for job_failed", |m| m["data"].as_str().is_some_and(|d| d.contains("job_failed")));
    let body = mail_body(&m);
    assert!(body.contains("dump") && body.contains("the dump tool failed"), "{body}");
    assert!(body.contains("state       raised") && body.contains("source      dump"), "{body}");
    d.stop();
}

/// A repository with a `quota` (what an object store's owner grants, where the store
/// reports no capacity): `storage_full` compares what the repository holds with it.
#[test]
fn a_repository_over_its_quota_raises_storage_full() {
    let hook = Receiver::start();
    let p = Policy::new("");
    let metered = p.env.path("metered");
    assert!(p.env.cmd().env("CAIRN_REPO", &metered).arg("init").output().unwrap().status.success());
    let data = p.env.path("data");
    std::fs::create_dir_all(&data).unwrap();
    let mut urandom = std::fs::File::open("/dev/urandom").unwrap();
    let mut b = vec![0u8; 400 << 10];
    std::io::Read::read_exact(&mut urandom, &mut b).unwrap();
    std::fs::write(data.join("f"), b).unwrap();
    p.write(&format!(
        r#"
[repository.metered]
url = "{metered}"
password_file = "{pass}"
quota = "256KiB"

[class.c]
repository = "metered"
schedule = "@yearly"

[source.files]
class = "c"
kind = "files"
paths = ["{data}"]

[alert.ops]
kind = "webhook"
url = "{url}"
events = ["storage_full"]
"#,
        metered = metered.display(),
        pass = p.env.path("pass").display(),
        url = hook.url("/hook"),
        data = data.display(),
    ));
    p.ok(&["run", "files"]);
    let d = p.daemon();
    let r = hook.wait_for(20, "storage_full", |r| r.json()["event"] == "storage_full");
    let e = r.json();
    assert_eq!(e["repository"], "metered", "{e}");
    assert_eq!(e["payload"]["quota_bytes"], 256 << 10, "{e}");
    assert!(e["payload"]["used_bytes"].as_u64().unwrap() > 400 << 10, "{e}");
    assert!(e["message"].as_str().unwrap().contains("of its quota"), "{e}");
    d.stop();
}

#![allow(clippy::unwrap_used)]
//! `/metrics` end to end: the daemon serves the Prometheus text format, promtool accepts it
//! and the shipped rules, and a real Prometheus scraping the daemon sees a source whose
//! data is older than its RPO, with the shipped alert rule pending on it.

mod common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::policy::*;
use common::*;
use serde_json::Value;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One HTTP/1.1 request; the status and body.
fn http(port: u16, request: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (code, body)
}

fn get(port: u16, path: &str) -> (u16, String) {
    http(port, &format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"))
}

/// A GET with an API token.
fn get_as(port: u16, path: &str, token: &str) -> (u16, String) {
    http(
        port,
        &format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        ),
    )
}

fn need(tool: &str) -> bool {
    if Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output().is_ok_and(|o| o.status.success()) {
        return true;
    }
    skip(&format!("{tool} (Debian's prometheus package) is not installed; scripts/test installs it"));
    false
}

fn rules() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dist/prometheus/cairn-rules.yml")
}

#[test]
fn prometheus_scrapes_the_daemon_and_sees_a_source_past_its_rpo() {
    if !need("promtool") || !need("prometheus") {
        return;
    }
    let p = Policy::new("");
    let port = free_port();
    let flag = p.env.path("dump-works");
    std::fs::write(&flag, "").unwrap();
    p.write(&format!(
        r#"
[server]
listen = "127.0.0.1:{port}"

[class.c]
repository = "primary"
schedule = "* * * * * *"
rpo = "3s"

[source.dump]
class = "c"
kind = "command"
command = "test -e {flag} && echo dumped"
"#,
        flag = flag.display()
    ));
    let d = p.daemon();
    // Metrics need a token (auditor is the least role that may read them).
    let token = p.ok(&["token", "create", "prometheus", "--role", "auditor"]).trim().to_string();
    common::http::wait_listening(port, &|| d.log());
    assert_eq!(get(port, "/metrics").0, 401, "metrics without a token");
    let t0 = Instant::now();
    while p.jobs_of("dump", "backup").iter().all(|j| j["status"] != "succeeded") {
        assert!(t0.elapsed() < Duration::from_secs(30), "no backup:\n{}", d.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    // From now on the dump fails: the data ages past the 3 s RPO.
    std::fs::remove_file(&flag).unwrap();
    let (code, text) = get_as(port, "/metrics", &token);
    assert_eq!(code, 200, "{text}\n{}", d.log());
    for family in [
        "cairn_source_data_age_seconds",
        "cairn_jobs_total",
        "cairn_job_duration_seconds_bucket",
        "cairn_alerts_active",
    ] {
        assert!(text.contains(family), "{family} missing:\n{text}");
    }
    // The repository: its size in the store, what its snapshots stand for, the ratio.
    let value = |name: &str| -> f64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{name}{{repository=\"primary\"}}")))
            .unwrap_or_else(|| panic!("no {name}:\n{text}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    let (size, logical) = (value("cairn_repository_size_bytes"), value("cairn_repository_logical_bytes"));
    assert!(size > 0.0 && logical > 0.0 && value("cairn_repository_snapshots") >= 1.0, "{text}");
    assert!((value("cairn_repository_dedup_ratio") - logical / size).abs() < 1e-6, "{text}");
    // promtool accepts the exposition and the shipped rules.
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let o = check.wait_with_output().unwrap();
    assert!(o.status.success(), "promtool check metrics: {}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
    let o = Command::new("promtool").args(["check", "rules"]).arg(rules()).output().unwrap();
    assert!(o.status.success(), "promtool check rules: {}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
    // Hostile and wrong requests get an answer, not a crash.
    assert_eq!(
        http(port, &format!("POST /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")).0,
        405
    );
    assert_eq!(get(port, "/../../etc/passwd").0, 404);
    assert_eq!(http(port, "GARBAGE\r\n\r\n").0, 400);
    let huge = format!("GET /metrics HTTP/1.1\r\nHost: x\r\nX: {}\r\n\r\n", "a".repeat(200_000));
    let (code, _) = http(port, &huge);
    assert!(code == 431 || code == 400 || code == 0, "an oversized head: {code}");
    assert_eq!(get_as(port, "/metrics", &token).0, 200, "still serving after hostile requests");

    // A real Prometheus scrapes it every second with the shipped rules.
    let prom_port = free_port();
    let conf = p.env.path("prometheus.yml");
    std::fs::write(
        &conf,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: cairn\n    authorization:\n      credentials: {token}\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n",
            rules().display()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(p.env.path("prometheus.log")).unwrap();
    let mut prom = Command::new("prometheus")
        .arg(format!("--config.file={}", conf.display()))
        .arg(format!("--storage.tsdb.path={}", p.env.path("tsdb").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _ = prom.try_wait();
    let _prom = Kill(prom);
    let query =
        "/api/v1/query?query=cairn_source_data_age_seconds%7Bsource%3D%22dump%22%7D%20%3E%20cairn_source_rpo_seconds";
    let t0 = Instant::now();
    loop {
        let (code, body) = std::net::TcpStream::connect(("127.0.0.1", prom_port))
            .map(|_| get(prom_port, query))
            .unwrap_or((0, String::new()));
        if code == 200 {
            let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            if v["data"]["result"].as_array().is_some_and(|r| !r.is_empty()) {
                break;
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "Prometheus never saw the data age above the RPO: {code} {body}\n{}",
            std::fs::read_to_string(p.env.path("prometheus.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // And the shipped rule is pending (its `for` has not passed) or firing on it.
    let t0 = Instant::now();
    loop {
        let (_, body) = get(prom_port, "/api/v1/alerts");
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        let hit = v["data"]["alerts"].as_array().is_some_and(|a| {
            a.iter().any(|x| x["labels"]["alertname"] == "CairnDataOlderThanRPO" && x["labels"]["source"] == "dump")
        });
        if hit {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "no CairnDataOlderThanRPO alert: {body}");
        std::thread::sleep(Duration::from_millis(500));
    }
    d.stop();
}

#[test]
fn a_listen_address_off_loopback_is_refused_at_load() {
    let p = Policy::new("[server]\nlisten = \"0.0.0.0:9184\"\n");
    let o = p.run(&["policy", "check"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("plain HTTP off loopback"), "{}", stderr(&o));
}

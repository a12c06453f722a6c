#![allow(clippy::unwrap_used)]
//! The web console in Debian's Chromium, driven by Playwright (`tests/console/console.cjs`):
//! login, the dashboard's RPO colours, a manual backup seen in the audit page, search and
//! restore as a copy (the bytes checked here), role limits, and hostile file names shown
//! as text. Screenshots of each page land in `target/console/`.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::http::*;
use common::policy::*;

fn have(cmd: &str) -> bool {
    Command::new("sh").arg("-c").arg(cmd).output().is_ok_and(|o| o.status.success())
}

#[test]
fn the_console_in_a_real_browser() {
    if !have("test -x /usr/bin/chromium") {
        common::skip("Debian's chromium is not installed; scripts/test installs it");
        return;
    }
    let npm_root = Command::new("npm")
        .args(["root", "-g"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let Ok(npm_root) = npm_root else {
        common::skip("npm is not installed; scripts/test installs it");
        return;
    };
    if !std::path::Path::new(&npm_root).join("playwright-core").exists() {
        common::skip("playwright-core is not installed (npm install -g playwright-core; scripts/test does)");
        return;
    }
    let p = Policy::new("");
    let port = free_port();
    let data = p.env.path("data");
    let hostile_dir = data.join("inbox");
    std::fs::create_dir_all(&hostile_dir).unwrap();
    std::fs::create_dir_all(data.join("docs/2026")).unwrap();
    std::fs::write(data.join("docs/2026/report.txt"), "the report, as it was\n").unwrap();
    std::fs::write(hostile_dir.join("<img src=x onerror=alert(1)>"), "<b>bold?</b>\n").unwrap();
    let restores = p.env.path("restores");
    std::fs::create_dir_all(&restores).unwrap();
    let flag = p.env.path("ledger-works");
    std::fs::write(&flag, "").unwrap();
    p.write(&format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
restore_dirs = ["{restores}"]

[class.gold]
repository = "primary"
schedule = {gold}
rpo = "2h"

[class.fast]
repository = "primary"
schedule = "* * * * * *"
rpo = "2s"

[source.files]
class = "gold"
kind = "files"
paths = ["{data}"]

[source.ledger]
class = "fast"
kind = "command"
command = "test -e {flag} && echo ledger"
"#,
        restores = restores.display(),
        data = data.display(),
        flag = flag.display(),
        gold = cairn_testkit::hourly_not_now(),
    ));
    p.ok(&["run", "files"]);
    p.ok(&["run", "ledger"]);
    // From now on the ledger's dump fails: its data ages past the 2 s RPO.
    std::fs::remove_file(&flag).unwrap();
    let d = p.daemon();
    wait_listening(port, &|| d.log());
    let token = |name: &str, role: &str| p.ok(&["token", "create", name, "--role", role]).trim().to_string();
    let (admin, restore, auditor) = (token("admin", "admin"), token("helpdesk", "restore"), token("audit", "auditor"));
    let all = p.env.json(&["snapshots"]);
    let snapshot =
        all.as_array().unwrap().iter().find(|s| s["source"] == "files").unwrap()["id"].as_str().unwrap().to_string();
    // Wait until the ledger is past its RPO.
    let t0 = Instant::now();
    loop {
        let s = get(port, "/api/status?source=ledger", &admin).json();
        if s[0]["rpo_state"] == "BREACHED" {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "ledger never breached: {s}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let shots = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/console");
    std::fs::create_dir_all(&shots).unwrap();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/console/console.cjs");
    let o = Command::new("node")
        .arg(&script)
        .env("NODE_PATH", &npm_root)
        .env("BASE", format!("http://127.0.0.1:{port}"))
        .env("ADMIN", &admin)
        .env("RESTORE", &restore)
        .env("AUDITOR", &auditor)
        .env("SNAPSHOT", &snapshot)
        .env("RESTORE_DIR", &restores)
        .env("DATA_DIR", &data)
        .env("HOSTILE_DIR", &hostile_dir)
        .env("FILE", data.join("docs/2026/report.txt"))
        .env("SHOTS", &shots)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "the browser run failed:\n{}{}\ndaemon log:\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
        d.log()
    );
    // The copy restored from the browser holds the file's bytes.
    assert_eq!(std::fs::read(restores.join("from-browser/report.txt")).unwrap(), b"the report, as it was\n");
    for page in ["dashboard", "source", "audit", "search", "restore", "browse", "drills"] {
        let png = std::fs::read(shots.join(format!("{page}.png"))).unwrap();
        assert!(png.starts_with(b"\x89PNG") && png.len() > 5000, "{page}.png");
    }
}

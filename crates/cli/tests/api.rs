#![allow(clippy::unwrap_used)]
//! The HTTP API end to end through the built binary's daemon: the authorization matrix
//! (every route of the route table × every role, no token, an expired and a revoked one),
//! restores confined to the allowed directories, console sessions with CSRF, TLS, and the
//! limit on guessing.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cairn_api::routes::{grants, Answer, Perm, ROUTES};
use cairn_daemon::tokens::Role;
use common::http::*;
use common::policy::*;
use serde_json::{json, Value};

struct Site {
    p: Policy,
    d: Daemon,
    port: u16,
    data: PathBuf,
    restores: PathBuf,
    snapshot: String,
    job: String,
}

impl Site {
    fn token(&self, name: &str, role: &str) -> String {
        self.p.ok(&["token", "create", name, "--role", role]).trim().to_string()
    }
}

/// A policy with one files source backed up once, and the daemon serving it.
fn site(extra_server: &str) -> Site {
    let p = Policy::new("");
    let port = free_port();
    let data = p.env.path("data");
    std::fs::create_dir_all(data.join("docs/deep")).unwrap();
    std::fs::write(data.join("docs/report.txt"), "quarterly numbers\n").unwrap();
    std::fs::write(data.join("docs/deep/notes.md"), "# notes\n").unwrap();
    std::fs::write(data.join("big.bin"), (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect::<Vec<_>>()).unwrap();
    let restores = p.env.path("restores");
    std::fs::create_dir_all(&restores).unwrap();
    p.write(&format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
restore_dirs = ["{restores}"]
{extra_server}

[class.c]
repository = "primary"
schedule = {schedule}
rpo = "2h"

[source.files]
class = "c"
kind = "files"
paths = ["{data}"]
"#,
        restores = restores.display(),
        data = data.display(),
        schedule = cairn_testkit::hourly_not_now(),
    ));
    p.ok(&["run", "files"]);
    let d = p.daemon();
    wait_listening(port, &|| d.log());
    let snaps = p.env.json(&["snapshots"]);
    let snapshot = snaps[0]["id"].as_str().unwrap().to_string();
    let job = p.jobs()[0]["id"].as_str().unwrap().to_string();
    Site { p, d, port, data, restores, snapshot, job }
}

/// The route's path with its parameters filled and the query its required ones need.
fn fill(path: &str, s: &Site) -> String {
    let (host, n) = s.job.split_once('/').unwrap();
    let file = format!("{}/docs/report.txt", s.data.display());
    let dir = format!("{}/docs", s.data.display());
    let p = path
        .replace("/api/jobs/{host}/{n}", &format!("/api/jobs/{host}/{n}"))
        .replace("{id}", if path.starts_with("/api/tasks") { "999" } else { &s.snapshot })
        .replace("/sources/{name}", "/sources/files")
        .replace("/api/tokens/{name}", "/api/tokens/no-such-token");
    let q = match path {
        "/api/search" | "/search" => "?q=*.txt".to_string(),
        "/api/versions" | "/api/snapshots/{id}/file" => format!("?path={file}"),
        "/restore" => format!("?snapshot={}&path={file}", s.snapshot),
        "/api/snapshots/{id}/tree" | "/browse/{id}" => format!("?path={dir}"),
        _ => String::new(),
    };
    format!("{p}{q}")
}

fn call(port: u16, method: &str, path: &str, token: Option<&str>) -> Reply {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut h: Vec<(&str, &str)> = Vec::new();
    if let Some(a) = &auth {
        h.push(("Authorization", a));
    }
    // Empty bodies: an authorized state-changing call is refused as bad input (400) and
    // changes nothing, while an unauthorized one must be refused before that.
    let body: &[u8] = if method == "POST" || method == "DELETE" { b"{}" } else { b"" };
    if !body.is_empty() {
        h.push(("Content-Type", "application/json"));
    }
    request(port, method, path, &h, body)
}

#[test]
fn every_route_answers_every_role_as_the_route_table_says() {
    let s = site("");
    let roles: Vec<(Role, String)> =
        Role::ALL.iter().map(|r| (*r, s.token(&format!("t-{}", r.as_str()), r.as_str()))).collect();
    let expired = s.p.ok(&["token", "create", "old", "--role", "admin", "--expires", "1s"]).trim().to_string();
    let revoked = s.token("gone", "admin");
    s.p.ok(&["token", "revoke", "gone"]);
    std::thread::sleep(Duration::from_millis(1100));
    let mut cells = 0;
    for r in ROUTES {
        let path = fill(r.path, &s);
        let page = matches!(r.answer, Answer::Html | Answer::Redirect);
        for (who, tok) in
            [("no token", None), ("an expired token", Some(&expired)), ("a revoked token", Some(&revoked))]
        {
            let a = call(s.port, r.method, &path, tok.map(String::as_str));
            cells += 1;
            if r.perm == Perm::Public {
                assert!(a.code < 500 && a.code != 401 && a.code != 403, "{} {path} with {who}: {}", r.method, a.code);
            } else if page {
                assert_eq!((a.code, a.header("location")), (303, Some("/login")), "{} {path} with {who}", r.method);
            } else {
                assert_eq!(a.code, 401, "{} {path} with {who}: {}", r.method, a.text());
            }
        }
        for (role, tok) in &roles {
            let a = call(s.port, r.method, &path, Some(tok));
            cells += 1;
            if grants(*role, r.perm) {
                assert!(
                    a.code < 500 && a.code != 401 && a.code != 403,
                    "{} {path} as {}: {} {}\n{}",
                    r.method,
                    role.as_str(),
                    a.code,
                    a.text(),
                    s.d.log()
                );
            } else {
                assert_eq!(a.code, 403, "{} {path} as {}: {}", r.method, role.as_str(), a.text());
            }
        }
    }
    assert_eq!(cells, ROUTES.len() * 7);
    // The role's permissions as the API reports them are the table's.
    let (_, aud) = roles.iter().find(|(r, _)| *r == Role::Auditor).unwrap();
    let me = get(s.port, "/api/whoami", aud).json();
    assert_eq!(me["role"], "auditor");
    assert!(me["permissions"].as_array().unwrap().iter().all(|p| p != "read" && p != "browse"), "{me}");
    // The OpenAPI document covers every route, with its permission.
    let doc = request(s.port, "GET", "/api/openapi.json", &[], b"").json();
    for r in ROUTES {
        let op = &doc["paths"][r.path][r.method.to_lowercase()];
        assert_eq!(op["x-cairn-permission"], r.perm.as_str(), "{} {}", r.method, r.path);
    }
    // Unknown paths and methods, hostile heads.
    assert_eq!(call(s.port, "GET", "/../../etc/passwd", None).code, 404);
    assert_eq!(call(s.port, "PUT", "/api/status", Some(&roles[0].1)).code, 405);
    assert_eq!(raw(s.port, b"GARBAGE\r\n\r\n").code, 400);
    let huge = format!("GET /api/status HTTP/1.1\r\nHost: x\r\nX: {}\r\n\r\n", "a".repeat(200_000));
    assert!(matches!(raw(s.port, huge.as_bytes()).code, 0 | 400 | 431));
    assert_eq!(get(s.port, "/api/status", &roles[0].1).code, 200, "still serving:\n{}", s.d.log());
}

fn wait_task(port: u16, token: &str, task: &Value) -> Value {
    let id = task["id"].as_u64().unwrap_or_else(|| panic!("no task: {task}"));
    let t0 = Instant::now();
    loop {
        let t = get(port, &format!("/api/tasks/{id}"), token).json();
        if t["state"] != "running" {
            return t;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "task {id} still running: {t}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
    v.sort();
    v
}

#[test]
fn restores_stay_inside_the_allowed_directories_and_in_place_needs_the_role_and_a_confirmation() {
    let s = site("");
    let restore = s.token("helpdesk", "restore");
    let operator = s.token("ops", "operator");
    let outside = s.p.env.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, s.restores.join("escape")).unwrap();
    let file = format!("{}/docs/report.txt", s.data.display());
    let body = |target: &str| json!({"snapshot": s.snapshot, "paths": [file], "target": target});
    // Hostile targets: each refused, nothing written outside.
    let r = s.restores.display().to_string();
    for bad in [
        format!("{r}/../outside"),
        format!("{r}/escape"),
        format!("{r}/escape/deeper"),
        outside.display().to_string(),
        "relative/dir".to_string(),
        format!("{r}/./x"),
        "/".to_string(),
    ] {
        let a = post_json(s.port, "/api/restore/copy", &restore, &body(&bad));
        assert_eq!(a.code, 403, "target {bad}: {} {}", a.code, a.text());
    }
    assert!(listing(&outside).is_empty(), "something was written outside: {:?}", listing(&outside));
    // A restore as a copy: the bytes on disk are the file's.
    let a = post_json(s.port, "/api/restore/copy", &restore, &body(&format!("{r}/ticket-1")));
    assert_eq!(a.code, 202, "{}", a.text());
    let t = wait_task(s.port, &restore, &a.json());
    assert_eq!(t["state"], "succeeded", "{t}");
    assert_eq!(std::fs::read(s.restores.join("ticket-1/report.txt")).unwrap(), b"quarterly numbers\n");
    // A task is its starter's: another token does not see it.
    assert_eq!(get(s.port, &format!("/api/tasks/{}", t["id"]), &operator).code, 404);
    // A directory restores whole; a path with `..` in the snapshot is refused.
    let dir = format!("{}/docs", s.data.display());
    let a = post_json(
        s.port,
        "/api/restore/copy",
        &restore,
        &json!({"snapshot": &s.snapshot[..8], "paths": [dir], "target": format!("{r}/t2")}),
    );
    assert_eq!(wait_task(s.port, &restore, &a.json())["state"], "succeeded");
    assert_eq!(std::fs::read(s.restores.join("t2/docs/deep/notes.md")).unwrap(), b"# notes\n");
    let a = post_json(
        s.port,
        "/api/restore/copy",
        &restore,
        &json!({"snapshot": s.snapshot, "paths": [format!("{dir}/../../x")], "target": format!("{r}/t3")}),
    );
    assert_eq!(a.code, 202, "{}", a.text());
    assert_eq!(wait_task(s.port, &restore, &a.json())["state"], "failed");
    // In place: never for the restore role; for an operator, only with the confirmation.
    std::fs::write(&file, "overwritten by mistake\n").unwrap();
    let inplace = json!({"snapshot": s.snapshot, "paths": [file]});
    assert_eq!(post_json(s.port, "/api/restore/in-place", &restore, &inplace).code, 403);
    assert_eq!(post_json(s.port, "/api/restore/in-place/preview", &restore, &inplace).code, 403);
    let pv = post_json(s.port, "/api/restore/in-place/preview", &operator, &inplace).json();
    assert_eq!(pv["preview"]["overwrite"], json!([file]), "{pv}");
    let short = pv["confirm"].as_str().unwrap().to_string();
    let a = post_json(s.port, "/api/restore/in-place", &operator, &inplace);
    assert_eq!(a.code, 400, "no confirmation: {}", a.text());
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "overwritten by mistake\n");
    let a = post_json(
        s.port,
        "/api/restore/in-place",
        &operator,
        &json!({"snapshot": s.snapshot, "paths": [file], "confirm": short}),
    );
    assert_eq!(wait_task(s.port, &operator, &a.json())["state"], "succeeded");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "quarterly numbers\n");
    // Downloads: the bytes, as an attachment; an auditor gets none.
    let big = format!("{}/big.bin", s.data.display());
    let a = get(s.port, &format!("/api/snapshots/{}/file?path={big}", s.snapshot), &restore);
    assert_eq!(a.code, 200);
    assert_eq!(a.body, std::fs::read(&big).unwrap());
    assert!(a.header("content-disposition").unwrap().starts_with("attachment"));
    let auditor = s.token("audit", "auditor");
    assert_eq!(get(s.port, &format!("/api/snapshots/{}/file?path={big}", s.snapshot), &auditor).code, 403);
    // Search: by name at any depth, by an anchored path glob, across snapshots.
    let hits = get(s.port, "/api/search?q=report.txt", &restore).json();
    assert_eq!(hits["hits"].as_array().unwrap().len(), 1, "{hits}");
    assert_eq!(hits["hits"][0]["path"], file);
    let anchored = get(s.port, &format!("/api/search?q={}/docs/*/*.md", s.data.display()), &restore).json();
    assert_eq!(anchored["hits"][0]["name"], "notes.md", "{anchored}");
    let all = get(s.port, "/api/search?q=*&limit=2", &restore).json();
    assert_eq!((all["hits"].as_array().unwrap().len(), &all["truncated"]), (2, &json!(true)), "{all}");
    let none = get(s.port, "/api/search?q=/elsewhere/*/*.md", &restore).json();
    assert!(none["hits"].as_array().unwrap().is_empty(), "{none}");
    let v = get(s.port, &format!("/api/versions?path={file}"), &restore).json();
    assert_eq!(v.as_array().unwrap().len(), 1, "{v}");
    // A drill through the API: queued to the daemon, measured, in the history.
    let a = post_json(s.port, "/api/drills", &operator, &json!({"source": "files", "reason": "quarterly test"}));
    assert_eq!(a.code, 202, "{}", a.text());
    let t = wait_task(s.port, &operator, &a.json());
    assert_eq!(t["state"], "succeeded", "{t}\n{}", s.d.log());
    let drills = get(s.port, "/api/drills", &auditor).json();
    assert!(drills[0]["record"]["rto_secs"].as_f64().is_some_and(|r| r > 0.0), "{drills}");
    // A job's log says who asked and how it ended.
    let job = drills[0]["job"]["id"].as_str().unwrap().to_string();
    let detail = get(s.port, &format!("/api/jobs/{job}"), &auditor).json();
    assert!(detail["drill"]["verdict"] == "passed", "{detail}");
    // The audit log has each restore with the token and the address, refusals too.
    let log = get(s.port, "/api/audit?action=restore", &auditor).json();
    let recs = log["records"].as_array().unwrap();
    assert!(
        recs.iter().any(|x| x["record"]["actor"]["token"] == "helpdesk"
            && x["record"]["outcome"] == "ok"
            && x["record"]["actor"]["address"] == "127.0.0.1"),
        "{log}"
    );
    assert!(
        recs.iter().any(|x| x["record"]["actor"]["token"] == "helpdesk" && x["record"]["outcome"] == "failed"),
        "{log}"
    );
    assert!(recs.iter().any(|x| x["record"]["actor"]["token"] == "ops" && x["record"]["outcome"] == "ok"), "{log}");
}

fn openssl(args: &[&str], dir: &Path) {
    let o = Command::new("openssl").args(args).current_dir(dir).output().unwrap();
    assert!(o.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&o.stderr));
}

fn curl(args: &[&str]) -> (String, String) {
    let o = Command::new("curl").args(["-s", "-S", "--max-time", "30"]).args(args).output().unwrap();
    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

#[test]
fn console_sessions_over_tls_need_csrf_end_with_their_token_and_guessing_is_limited() {
    for tool in ["openssl", "curl"] {
        if !Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output().unwrap().status.success() {
            common::skip(&format!("{tool} is not installed; scripts/test installs it"));
            return;
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=test CA",
        ],
        dir,
    );
    openssl(
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
        dir,
    );
    std::fs::write(dir.join("ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext",
        ],
        dir,
    );
    let s = site(&format!(
        "tls_cert = \"{}\"\ntls_key = \"{}\"",
        dir.join("server.pem").display(),
        dir.join("server.key").display()
    ));
    let ca = dir.join("ca.pem").display().to_string();
    let base = format!("https://127.0.0.1:{}", s.port);
    let jar = dir.join("jar").display().to_string();
    let token = s.token("console-user", "operator");
    // Plain HTTP to the TLS port gets nothing.
    let (out, _) = curl(&["-o", "/dev/null", "-w", "%{http_code}", &format!("http://127.0.0.1:{}/api/status", s.port)]);
    assert_ne!(out, "200");
    // A login posted from another site's page is refused (login CSRF).
    let (out, _) = curl(&[
        "--cacert",
        &ca,
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-H",
        "Origin: https://evil.example",
        "-d",
        &format!("token={token}"),
        &format!("{base}/login"),
    ]);
    assert_eq!(out, "403", "a cross-site login");
    // Log in: the cookie is HttpOnly, SameSite=Strict and Secure.
    let (headers, err) = curl(&[
        "--cacert",
        &ca,
        "-c",
        &jar,
        "-D",
        "-",
        "-o",
        "/dev/null",
        "-d",
        &format!("token={token}"),
        &format!("{base}/login"),
    ]);
    assert!(headers.starts_with("HTTP/1.1 303"), "{headers}{err}");
    let cookie = headers
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_else(|| panic!("{headers}"));
    for attr in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/"] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    let (page, _) = curl(&["--cacert", &ca, "-b", &jar, &format!("{base}/")]);
    assert!(page.contains("<table class=\"status\"") && page.contains(">files</a>"), "{page}");
    // State changes through the session need the CSRF token the session was given.
    let body = r#"{"source":"files","label":"console","reason":"csrf test"}"#;
    let (out, _) = curl(&[
        "--cacert",
        &ca,
        "-b",
        &jar,
        "-H",
        "Content-Type: application/json",
        "-w",
        " %{http_code}",
        "-d",
        body,
        &format!("{base}/api/backups"),
    ]);
    assert!(out.ends_with(" 403") && out.contains("CSRF"), "{out}");
    let (me, _) = curl(&["--cacert", &ca, "-b", &jar, &format!("{base}/api/whoami")]);
    let csrf = serde_json::from_str::<Value>(&me).unwrap()["csrf"].as_str().unwrap().to_string();
    let (out, _) = curl(&[
        "--cacert",
        &ca,
        "-b",
        &jar,
        "-H",
        "Content-Type: application/json",
        "-H",
        &format!("X-CSRF-Token: {csrf}"),
        "-w",
        " %{http_code}",
        "-d",
        body,
        &format!("{base}/api/backups"),
    ]);
    assert!(out.ends_with(" 202"), "{out}\n{}", s.d.log());
    // Revoking the token ends its session at once.
    s.p.ok(&["token", "revoke", "console-user"]);
    let (out, _) = curl(&[
        "--cacert",
        &ca,
        "-b",
        &jar,
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{redirect_url}",
        &format!("{base}/"),
    ]);
    assert!(out.starts_with("303") && out.ends_with("/login"), "{out}");
    // Guessing: five unknown tokens, then the address waits.
    for i in 0..5 {
        let (out, _) = curl(&[
            "--cacert",
            &ca,
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-d",
            &format!("token=cairn_guess{i}"),
            &format!("{base}/login"),
        ]);
        assert_eq!(out, "303", "guess {i}");
    }
    let good = s.token("later", "admin");
    let (out, _) = curl(&[
        "--cacert",
        &ca,
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-H",
        &format!("Authorization: Bearer {good}"),
        &format!("{base}/api/status"),
    ]);
    assert_eq!(out, "429", "even a good token waits once the address guessed too often");
    // The logins, good and bad, are in the audit log with the address.
    let log = s.p.env.json(&["audit", "log", "--action", "login"]);
    let text = log.to_string();
    assert!(text.contains("console-user") && text.contains("\"failed\"") && text.contains("127.0.0.1"), "{text}");
}

#[test]
fn schemathesis_finds_no_server_error_and_every_response_conforms_to_the_openapi_document() {
    if !Command::new("sh").arg("-c").arg("command -v schemathesis").output().unwrap().status.success() {
        common::skip("schemathesis (PyPI) is not installed; scripts/test installs it");
        return;
    }
    let s = site("");
    let admin = s.token("fuzzer", "admin");
    let report = s.p.env.path("schemathesis.txt");
    // Token revocation is left out (it could revoke the fuzzer's own token mid-run), and so
    // are login and logout (forms, covered by the session test); checks on the answers
    // only: the input-strictness heuristics disagree with taking an empty field as absent.
    let o = Command::new("schemathesis")
        .args(["run", &format!("http://127.0.0.1:{}/api/openapi.json", s.port)])
        .args(["-H", &format!("Authorization: Bearer {admin}")])
        .args(["--checks", "not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,unsupported_method"])
        // One worker: with two, CPython 3.11's `ast.parse` (Hypothesis describing its
        // filters) races on the AST module's recursion counter across threads and
        // schemathesis fails with "SystemError: AST constructor recursion depth mismatch",
        // a fault of the tool, not of the server (CI, 2026-12-06).
        .args(["--generation-codec", "utf-8", "--max-time", "60", "--workers", "1", "--seed", "20261202"])
        .args(["--exclude-path-regex", "^/(login|logout)$", "--exclude-path", "/api/tokens/{name}"])
        .env("NO_COLOR", "1")
        // Its cache (past crashes it would replay) stays in the test's directory, not in
        // the source tree: every run starts from the same seed and nothing else.
        .current_dir(s.p.env.dir.path())
        .output()
        .unwrap();
    let out = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    std::fs::write(&report, &out).unwrap();
    assert!(o.status.success(), "schemathesis found failures:\n{out}\ndaemon log:\n{}", s.d.log());
    assert!(out.contains("passed") && !out.contains("failures"), "{out}");
    // The daemon is still well after it.
    assert_eq!(get(s.port, "/api/status", &admin).code, 200);
}

#[test]
fn the_api_listens_on_a_unix_socket_when_told() {
    let p = Policy::new("");
    let sock = p.env.path("run/api.sock");
    p.write(&format!("[server]\nlisten = \"unix:{}\"\n", sock.display()));
    let d = p.daemon();
    let t0 = Instant::now();
    while !sock.exists() {
        assert!(t0.elapsed() < Duration::from_secs(30), "no socket:\n{}", d.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777, 0o660);
    let token = p.ok(&["token", "create", "proxy", "--role", "auditor"]).trim().to_string();
    let out = |auth: Option<&str>| {
        let mut c = Command::new("curl");
        c.args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--unix-socket"]).arg(&sock);
        if let Some(t) = auth {
            c.args(["-H", &format!("Authorization: Bearer {t}")]);
        }
        String::from_utf8_lossy(&c.arg("http://cairn/api/status").output().unwrap().stdout).into_owned()
    };
    assert_eq!(out(None), "401", "tokens are needed on the socket too");
    assert_eq!(out(Some(&token)), "200", "{}", d.log());
    // A relative socket path is refused at load.
    p.write("[server]\nlisten = \"unix:run/api.sock\"\n");
    assert_eq!(p.run(&["policy", "check"]).status.code(), Some(2));
}

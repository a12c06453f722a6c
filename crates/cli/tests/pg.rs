#![allow(clippy::unwrap_used)]
//! `cairn pg` against real PostgreSQL clusters that the tests create with the machine's
//! `initdb`, archiving into a cairn repository through the built binary.

mod common;
use common::*;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use cairn_testkit::pg::{as_postgres, give_to_postgres, pg_bin, PgCluster};

/// A test directory owned by the server's user, holding the repository, its password
/// file, a copy of the cairn binary (so the server's user can run it wherever the build
/// lives) and the clusters.
struct PgEnv {
    dir: tempfile::TempDir,
    bin: PathBuf,
    cairn: PathBuf,
    repo: PathBuf,
    pwfile: PathBuf,
}

impl PgEnv {
    fn new() -> Option<PgEnv> {
        let Some(bin) = pg_bin() else {
            cairn_testkit::skip("no PostgreSQL server binaries (initdb) found; scripts/test installs them");
            return None;
        };
        let dir = tempfile::Builder::new().prefix("cairn-pg-").tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let cairn = dir.path().join("cairn");
        std::fs::copy(env!("CARGO_BIN_EXE_cairn"), &cairn).unwrap();
        let pwfile = dir.path().join("password");
        std::fs::write(&pwfile, PASSWORD).unwrap();
        std::fs::create_dir_all(dir.path().join("home")).unwrap();
        let e = PgEnv { repo: dir.path().join("repo"), bin, cairn, pwfile, dir };
        give_to_postgres(e.dir.path());
        e.ok(&["init"]);
        Some(e)
    }
    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
    /// The environment every cairn run gets, here and from the server's commands.
    fn env_prefix(&self) -> String {
        format!(
            "HOME={} XDG_CACHE_HOME={} CAIRN_REPO={} CAIRN_PASSWORD_FILE={}",
            self.path("home").display(),
            self.path("home/.cache").display(),
            self.repo.display(),
            self.pwfile.display()
        )
    }
    fn archive_command(&self) -> String {
        format!("{} {} pg archive-push %p", self.env_prefix(), self.cairn.display())
    }
    fn cmd(&self) -> Command {
        let mut c = as_postgres(&self.cairn);
        c.env_clear()
            .env("PATH", format!("{}:{}", self.bin.display(), std::env::var("PATH").unwrap_or_default()))
            .env("HOME", self.path("home"))
            .env("XDG_CACHE_HOME", self.path("home/.cache"))
            .env("CAIRN_REPO", &self.repo)
            .env("CAIRN_PASSWORD_FILE", &self.pwfile)
            .stdin(Stdio::null());
        c
    }
    fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }
    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(o.status.success(), "cairn {args:?} failed: {}\n{}", o.status, stderr(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
    fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let out = self.ok(&a);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("bad JSON from {args:?}: {e}\n{out}"))
    }
    /// A new cluster archiving into the repository.
    fn cluster(&self, name: &str) -> PgCluster {
        let dir = self.path(name);
        std::fs::create_dir_all(&dir).unwrap();
        let conf = format!("archive_mode = on\narchive_command = '{}'\n", self.archive_command().replace('\'', "''"));
        let mut c = PgCluster::init(&self.bin, &dir, &conf);
        c.start();
        c
    }
    /// A cluster object for a restored data directory.
    fn restored(&self, name: &str, data: &Path) -> PgCluster {
        let dir = self.path(name);
        std::fs::create_dir_all(&dir).unwrap();
        give_to_postgres(&dir);
        PgCluster::at(&self.bin, &dir, data)
    }
    /// Forces the current WAL segment out and waits until the repository has it.
    fn archive_now(&self, c: &PgCluster) {
        let o = self.run(&["pg", "check", "--connection", &c.conn(), "--timeout", "60"]);
        assert!(o.status.success(), "WAL did not reach the repository: {}\n{}", stderr(&o), c.server_log());
    }
}

const ACCOUNTS_MD5: &str =
    "SELECT md5(string_agg(aid::text || ':' || abalance::text, ',' ORDER BY aid)) FROM pgbench_accounts";

#[test]
fn point_in_time_restore_reaches_exactly_the_target_time() {
    let Some(env) = PgEnv::new() else { return };
    let c = env.cluster("primary");
    c.pgbench(&["-i", "-s", "1", "-q"]);
    c.sql("CREATE TABLE marks (phase text, at timestamptz default clock_timestamp())");
    let b = env.json(&["pg", "backup", "--data-dir", c.data.to_str().unwrap(), "--connection", &c.conn()]);
    assert!(b["stop_lsn"].as_str().unwrap().contains('/'), "{b}");
    // Writes after the base backup, then the target moment, then more writes.
    c.pgbench(&["-t", "200", "-c", "2", "-n"]);
    let xid_a = c.sql("INSERT INTO marks (phase) VALUES ('A') RETURNING xmin::text");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let t = c.sql("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')");
    let at_t = c.sql(ACCOUNTS_MD5);
    c.sql("SELECT pg_create_restore_point('after-a')");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    c.pgbench(&["-t", "200", "-c", "2", "-n"]);
    c.sql("INSERT INTO marks (phase) VALUES ('B')");
    assert_ne!(c.sql(ACCOUNTS_MD5), at_t, "the writes after T must change the table");
    env.archive_now(&c);

    let target = env.path("restored/data");
    env.ok(&["pg", "restore", "--target-dir", target.to_str().unwrap(), "--time", &t]);
    let mut r = env.restored("restored", &target);
    r.start();
    assert!(r.wait_promoted(120), "restored cluster never promoted:\n{}", r.server_log());
    assert_eq!(r.sql(ACCOUNTS_MD5), at_t, "state at T differs:\n{}", r.server_log());
    assert_eq!(r.sql("SELECT string_agg(phase, ',' ORDER BY at) FROM marks"), "A", "nothing after T may be there");
    r.stop();

    // The same moment by restore point name.
    let by_name = env.path("named/data");
    env.ok(&["pg", "restore", "--target-dir", by_name.to_str().unwrap(), "--name", "after-a"]);
    let mut n = env.restored("named", &by_name);
    n.start();
    assert!(n.wait_promoted(120), "never promoted:\n{}", n.server_log());
    assert_eq!(n.sql(ACCOUNTS_MD5), at_t);
    assert_eq!(n.sql("SELECT string_agg(phase, ',' ORDER BY at) FROM marks"), "A");
    n.stop();

    // And by the transaction that wrote mark A.
    let by_xid = env.path("byxid/data");
    env.ok(&["pg", "restore", "--target-dir", by_xid.to_str().unwrap(), "--xid", &xid_a]);
    let mut x = env.restored("byxid", &by_xid);
    x.start();
    assert!(x.wait_promoted(120), "never promoted:\n{}", x.server_log());
    assert_eq!(x.sql(ACCOUNTS_MD5), at_t);
    assert_eq!(x.sql("SELECT string_agg(phase, ',' ORDER BY at) FROM marks"), "A");
    x.stop();

    // A target before the oldest base backup ends is refused clearly.
    let o = env.run(&[
        "pg",
        "restore",
        "--target-dir",
        env.path("early").to_str().unwrap(),
        "--time",
        "2000-01-01T00:00:00Z",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no base backup ends before"), "{}", stderr(&o));
}

#[test]
fn second_base_backup_stores_a_small_fraction_and_wal_list_shows_the_windows() {
    let Some(env) = PgEnv::new() else { return };
    let mut c = env.cluster("primary");
    c.pgbench(&["-i", "-s", "5", "-q"]);
    let first = env.json(&["pg", "backup", "--data-dir", c.data.to_str().unwrap(), "--connection", &c.conn()]);
    c.sql("UPDATE pgbench_branches SET bbalance = bbalance + 1");
    let second = env.json(&["pg", "backup", "--data-dir", c.data.to_str().unwrap(), "--connection", &c.conn()]);
    let (a, b) = (first["bytes_added"].as_u64().unwrap(), second["bytes_added"].as_u64().unwrap());
    assert!(a > 1_000_000, "{first}");
    assert!(b * 10 < a, "second base backup stored {b} bytes, the first {a}");
    assert!(second["files_unmodified"].as_u64().unwrap() > 100, "{second}");
    let l = env.json(&["pg", "wal-list"]);
    let bs = l["base_backups"].as_array().unwrap();
    assert_eq!(bs.len(), 2, "{l}");
    assert!(bs.iter().all(|b| b["complete"] == true), "{l}");
    assert_eq!(l["timelines"][0]["timeline"], 1, "{l}");
    env.ok(&["pg", "check"]);
    // Retention: once the first base backup is forgotten, prune drops the WAL only it needed.
    env.ok(&["forget", first["short_id"].as_str().unwrap()]);
    let p = env.json(&["prune", "--grace", "0"]);
    assert!(p["wal_files_deleted"].as_u64().unwrap() >= 1, "{p}");
    let l = env.json(&["pg", "wal-list"]);
    assert_eq!(l["timelines"][0]["ranges"][0][0], second["start_wal"], "{l}");
    env.ok(&["pg", "check"]);
    c.stop();
}

#[test]
fn streaming_keeps_the_rpo_in_seconds_and_a_timeline_switch_archives_on() {
    let Some(env) = PgEnv::new() else { return };
    let mut c = env.cluster("primary");
    c.sql("CREATE TABLE t (id serial primary key, at timestamptz default clock_timestamp())");
    env.ok(&["pg", "backup", "--data-dir", c.data.to_str().unwrap(), "--connection", &c.conn()]);
    let mut stream = env
        .cmd()
        .args(["pg", "wal-stream", "--connection", &format!("{} replication=true", c.conn()), "--spool"])
        .arg(env.path("spool"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(2));
    // Commits up to the very moment of the crash.
    let t0 = std::time::Instant::now();
    while t0.elapsed() < std::time::Duration::from_secs(3) {
        c.sql("INSERT INTO t DEFAULT VALUES");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let last_commit: f64 = c.sql("SELECT extract(epoch FROM max(at)) FROM t").parse().unwrap();
    // Disaster: the server dies and its data directory is gone.
    c.crash();
    std::fs::remove_dir_all(&c.data).unwrap();
    // SIGTERM to cairn itself (under runuser when we are root, it is runuser's child).
    if cairn_testkit::pg::is_root() {
        Command::new("pkill").args(["-TERM", "-P", &stream.id().to_string()]).status().unwrap();
    } else {
        unsafe { libc::kill(stream.id() as i32, libc::SIGTERM) };
    }
    let st = stream.wait().unwrap();
    assert!(st.success(), "wal-stream did not stop cleanly: {st}");

    let target = env.path("r1/data");
    env.ok(&["pg", "restore", "--target-dir", target.to_str().unwrap(), "--latest"]);
    let mut r = env.restored("r1", &target);
    r.start();
    assert!(r.wait_promoted(120), "never promoted:\n{}", r.server_log());
    let recovered: f64 = r.sql("SELECT extract(epoch FROM max(at)) FROM t").parse().unwrap();
    let rpo = last_commit - recovered;
    eprintln!("RPO with wal-stream: {rpo:.2} s (last commit vs newest recovered commit)");
    assert!(rpo <= 5.0, "RPO {rpo:.2} s is over 5 s:\n{}", r.server_log());
    let committed: i64 = r.sql("SELECT count(*) FROM t").parse().unwrap();
    assert!(committed > 20, "{committed}");

    // The restored cluster runs on a new timeline and archives there.
    let tl: u32 = r.sql("SELECT timeline_id FROM pg_control_checkpoint()").parse().unwrap();
    r.sql("CHECKPOINT");
    let tl2: u32 = r.sql("SELECT timeline_id FROM pg_control_checkpoint()").parse().unwrap();
    assert!(tl.max(tl2) >= 2, "no timeline switch");
    r.sql("INSERT INTO t DEFAULT VALUES");
    env.ok(&["pg", "backup", "--data-dir", target.to_str().unwrap(), "--connection", &r.conn()]);
    r.sql("INSERT INTO t DEFAULT VALUES");
    env.archive_now(&r);
    r.stop();
    let l = env.json(&["pg", "wal-list"]);
    assert!(l["history_files"].as_array().unwrap().iter().any(|h| h == "00000002.history"), "{l}");
    let target2 = env.path("r2/data");
    env.ok(&["pg", "restore", "--target-dir", target2.to_str().unwrap()]);
    let mut r2 = env.restored("r2", &target2);
    r2.start();
    assert!(r2.wait_promoted(120), "never promoted:\n{}", r2.server_log());
    let got2: i64 = r2.sql("SELECT count(*) FROM t").parse().unwrap();
    assert_eq!(got2, committed + 2, "{}", r2.server_log());
    r2.stop();
}

#[test]
fn archive_push_and_get_behave_as_postgres_expects() {
    let Some(env) = PgEnv::new() else { return };
    let wal = env.path("pg_wal");
    std::fs::create_dir_all(&wal).unwrap();
    let seg = wal.join("000000010000000000000003");
    let content = noise(16 << 20, 5);
    std::fs::write(&seg, &content).unwrap();
    give_to_postgres(&wal);
    let push = |p: &Path| env.run(&["pg", "archive-push", p.to_str().unwrap()]);
    assert!(push(&seg).status.success());
    // Pushed again after a crash: same bytes, success.
    assert!(push(&seg).status.success());
    // Different bytes under the same name: refused loudly.
    let mut other = content.clone();
    other[100] ^= 1;
    std::fs::write(&seg, &other).unwrap();
    let o = push(&seg);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("different content"), "{}", stderr(&o));
    // Get: the stored bytes; a missing segment is exit 1 with nothing said.
    let out = env.path("got");
    give_to_postgres(env.dir.path());
    let o = env.run(&["pg", "archive-get", "000000010000000000000003", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(std::fs::read(&out).unwrap() == content);
    let o = env.run(&["pg", "archive-get", "000000010000000000000004", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(o.stderr.is_empty(), "archive-get must be silent on a missing file: {}", stderr(&o));
    // Names that are not WAL file names never reach the store.
    let o = env.run(&["pg", "archive-get", "../config", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("not a WAL file name"));
    // Per-call latency: the key cache spares the password KDF (measured, printed).
    let t = std::time::Instant::now();
    let n = 5;
    for i in 0..n {
        let p = wal.join(format!("0000000100000000000000{:02X}", 0x10 + i));
        std::fs::write(&p, &content).unwrap();
        give_to_postgres(&p);
        assert!(push(&p).status.success());
    }
    eprintln!("archive-push: {:.0} ms per 16 MiB segment (debug build)", t.elapsed().as_secs_f64() * 1000.0 / n as f64);
}

#[test]
fn bad_input_gives_clear_errors() {
    let Some(env) = PgEnv::new() else { return };
    let not_pg = env.path("notpg");
    std::fs::create_dir_all(&not_pg).unwrap();
    let o = env.run(&["pg", "backup", "--data-dir", not_pg.to_str().unwrap(), "--connection", "host=/nonexistent"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("not a PostgreSQL data directory"), "{}", stderr(&o));
    let mut c = env.cluster("primary");
    let data = c.data.clone();
    let conn = c.conn();
    c.stop();
    let o = env.run(&["pg", "backup", "--data-dir", data.to_str().unwrap(), "--connection", &conn]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("connecting to PostgreSQL") && e.trim().lines().count() == 1, "{e}");
    let o = env.run(&["pg", "restore", "--target-dir", env.path("x").to_str().unwrap(), "--latest"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no PostgreSQL base backup"), "{}", stderr(&o));
}

#[test]
fn archive_push_keeps_up_with_pgbench() {
    let Some(env) = PgEnv::new() else { return };
    let mut c = env.cluster("primary");
    // Loading scale 8 writes some 130 MB of WAL as fast as the server can.
    c.pgbench(&["-i", "-s", "8", "-q"]);
    c.pgbench(&["-T", "3", "-c", "2", "-n"]);
    let archived: i64 = c.sql("SELECT archived_count FROM pg_stat_archiver").parse().unwrap();
    let failed: i64 = c.sql("SELECT failed_count FROM pg_stat_archiver").parse().unwrap();
    let ready = std::fs::read_dir(c.data.join("pg_wal/archive_status"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".ready"))
        .count();
    eprintln!("pgbench: {archived} segments archived, {ready} waiting, {failed} failures");
    assert!(archived >= 3, "too little WAL to tell: {archived}");
    assert_eq!(failed, 0, "{}", c.server_log());
    assert!(ready <= 2, "the archiver falls behind: {ready} segments waiting");
    c.stop();
}

/// The policy daemon runs a postgres source: base backups on its schedule (as the server's
/// user, beside the cluster's own WAL archiving), and `status` measures the source's data
/// age from the newest WAL the repository holds.
#[test]
fn the_daemon_takes_base_backups_on_schedule_and_status_measures_the_wal_rpo() {
    let Some(env) = PgEnv::new() else { return };
    let mut c = env.cluster("main");
    let policy = env.path("cairn.toml");
    std::fs::write(
        &policy,
        format!(
            r#"
[daemon]
hostname = "db-host"
retry_delay = "1s"

[repository.primary]
url = "{repo}"
password_file = "{pw}"

[class.db]
repository = "primary"
schedule = "*/3 * * * * *"
rpo = "5m"
# Every instant of the last hour recoverable: no base backup of it is forgotten, though
# keep alone would leave one.
keep = {{ last = 1 }}
pitr_window = "1h"
retention = {{ schedule = "*/2 * * * * *" }}

[source.main]
class = "db"
kind = "postgres"
data_dir = "{data}"
connection = "{conn}"
stream = true
"#,
            repo = env.repo.display(),
            pw = env.pwfile.display(),
            data = c.data.display(),
            conn = c.conn()
        ),
    )
    .unwrap();
    let log = env.path("daemon.log");
    let mut d = env
        .cmd()
        .env("CAIRN_CONFIG", &policy)
        .arg("daemon")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .process_group(0)
        .spawn()
        .unwrap();
    // A failing assertion must not leave the daemon (under runuser) running.
    let _guard = KillGroup(d.id());
    let jobs = |env: &PgEnv| -> Vec<serde_json::Value> {
        let o = env.cmd().env("CAIRN_CONFIG", &policy).args(["--json", "jobs"]).output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap().as_array().unwrap().clone()
    };
    let start = std::time::Instant::now();
    loop {
        let j = jobs(&env);
        let t = |j: &serde_json::Value, f: &str| j[f].as_str().unwrap_or("").to_string();
        let mut ends: Vec<String> = j
            .iter()
            .filter(|j| j["kind"] == "backup" && j["status"] == "succeeded")
            .map(|j| t(j, "ended_at"))
            .collect();
        ends.sort();
        // A retention that ran after two base backups existed (RFC 3339 UTC sorts as time).
        let retained = ends.len() >= 2
            && j.iter().any(|r| r["kind"] == "retention" && r["status"] == "succeeded" && t(r, "started_at") > ends[1]);
        if retained {
            break;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(120),
            "no two base backups: {j:?}\n{}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default(),
            c.server_log()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // Streaming: commits reach the repository within seconds, no segment switch needed.
    // What only streaming writes is the segment in progress, as a `.partial` object; the
    // base backups every 3 s switch segments (and a completed segment replaces its
    // partial), so it is looked for while the writes go on.
    let has_partial = |env: &PgEnv| {
        std::fs::read_dir(env.repo.join("wal"))
            .into_iter()
            .flatten()
            .flatten()
            .flat_map(|tl| std::fs::read_dir(tl.path()).into_iter().flatten().flatten())
            .any(|f| f.file_name().to_string_lossy().ends_with(".partial"))
    };
    let t0 = std::time::Instant::now();
    let mut partial = false;
    while t0.elapsed() < std::time::Duration::from_secs(2)
        || (!partial && t0.elapsed() < std::time::Duration::from_secs(30))
    {
        c.sql(
            "CREATE TABLE IF NOT EXISTS streamed (at timestamptz default now()); INSERT INTO streamed DEFAULT VALUES",
        );
        partial |= has_partial(&env);
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let o = env.cmd().env("CAIRN_CONFIG", &policy).args(["--json", "status"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let st: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let streamed = st[0]["wal_age_secs"].as_i64().unwrap();
    assert!(
        partial,
        "no streamed .partial segment in the repository\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(
        streamed <= 5,
        "streaming: newest WAL {streamed} s old\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    // The source stops streaming (policy reloaded): its streamer stops and its replication
    // slot goes, or the server would keep every WAL segment from now on.
    let slots = || c.sql("SELECT slot_name FROM pg_replication_slots");
    assert!(slots().contains("cairn_main"), "streaming uses slot cairn_main: {}", slots());
    let text = std::fs::read_to_string(&policy).unwrap();
    std::fs::write(&policy, text.replace("stream = true", "stream = false")).unwrap();
    let o = env.cmd().env("CAIRN_CONFIG", &policy).args(["daemon", "reload"]).output().unwrap();
    assert!(o.status.success(), "reload: {}", stderr(&o));
    let t0 = std::time::Instant::now();
    // The slot goes from the server, then the daemon says so.
    let said = || std::fs::read_to_string(&log).unwrap_or_default().contains("dropped its replication slot cairn_main");
    while slots().contains("cairn_main") || !said() {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(30),
            "slot not dropped: {}\n{}",
            slots(),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // SAFETY: kill with our child's pid.
    unsafe { libc::kill(d.id() as i32, libc::SIGTERM) };
    // The child is runuser, which reports the signal; the daemon's own log says how it ended.
    d.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("daemon stopped") && text.contains("wal-stream of main stopped"), "{text}");
    let snaps = env.json(&["snapshots"]);
    let mine: Vec<_> = snaps.as_array().unwrap().iter().filter(|s| s["source"] == "main").collect();
    assert!(mine.len() >= 2 && mine.iter().all(|s| s["kind"] == "postgres" && s["hostname"] == "db-host"), "{snaps}");
    let backups = jobs(&env).iter().filter(|j| j["kind"] == "backup" && j["status"] == "succeeded").count();
    assert_eq!(mine.len(), backups, "the PITR window keeps every base backup inside it");
    // New WAL after the base backups: the data age follows it.
    c.sql("CREATE TABLE after_backup AS SELECT 1 AS x");
    env.archive_now(&c);
    let o = env.cmd().env("CAIRN_CONFIG", &policy).args(["--json", "status"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let st: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let m = &st[0];
    assert_eq!(m["rpo_state"], "OK", "{m}");
    let wal_age = m["wal_age_secs"].as_i64().unwrap();
    assert!(wal_age < 30, "{m}");
    assert!(m["data_age_secs"].as_i64().unwrap() <= wal_age + 1, "{m}");
    env.ok(&["pg", "check"]);
    env.ok(&["check"]);
    c.stop();
}

/// Kills a process group when dropped (a test that panics leaves nothing running).
struct KillGroup(u32);

impl Drop for KillGroup {
    fn drop(&mut self) {
        // SAFETY: a signal to the process group our child leads.
        unsafe { libc::kill(-(self.0 as i32), libc::SIGKILL) };
    }
}

/// Processes whose command line names `needle` (a sandbox path).
fn processes_naming(needle: &str) -> Vec<String> {
    let mut out = Vec::new();
    for p in std::fs::read_dir("/proc").unwrap().flatten() {
        if p.file_name().to_str().is_some_and(|s| s.parse::<u32>().is_ok()) {
            if let Ok(c) = std::fs::read(p.path().join("cmdline")) {
                let c = String::from_utf8_lossy(&c).replace('\0', " ");
                if c.contains(needle) {
                    out.push(format!("{}: {c}", p.file_name().to_string_lossy()));
                }
            }
        }
    }
    out
}

/// A PostgreSQL drill end to end: a base backup and archived WAL of a cluster that then
/// crashes; the drill restores into a sandbox, starts a server on it, replays, promotes,
/// runs the source's queries and measures RPO against commits whose times are known; a
/// point-in-time drill stops at its target; a drill killed with SIGKILL leaves no server,
/// and the next drill removes its sandbox and records it as interrupted.
#[test]
fn a_postgres_drill_replays_to_the_last_commit_and_measures_rto_and_rpo() {
    let Some(env) = PgEnv::new() else { return };
    let mut c = env.cluster("main");
    c.pgbench(&["-i", "-s", "1", "-q"]);
    c.sql("CREATE TABLE bookings (id serial, at timestamptz NOT NULL DEFAULT clock_timestamp())");
    let policy = env.path("cairn.toml");
    let (data, conn) = (c.data.clone(), c.conn());
    let write_policy = |validate: &str| {
        std::fs::write(
            &policy,
            format!(
                r#"
[daemon]
hostname = "db-host"

[repository.primary]
url = "{repo}"
password_file = "{pw}"

[class.db]
repository = "primary"
rpo = "1h"
rto = "10m"
drill = {{ timeout = "5m", pg_bin = "{bin}" }}

[source.main]
class = "db"
kind = "postgres"
data_dir = "{data}"
connection = "{conn}"
validate = [{validate}]
"#,
                repo = env.repo.display(),
                pw = env.pwfile.display(),
                bin = env.bin.display(),
                data = data.display(),
            ),
        )
        .unwrap()
    };
    write_policy(
        r#"{ query = "SELECT count(*) FROM bookings", min = 10 },
           { query = "SELECT count(*) = 100000 FROM pgbench_accounts" },
           { command = "psql -tAc 'SELECT 1' && test -f \"$CAIRN_DRILL_PATH/PG_VERSION\"" }"#,
    );
    // The base backup as the cluster's user (peer authentication), through the policy.
    let o = env.cmd().env("CAIRN_CONFIG", &policy).args(["run", "main"]).output().unwrap();
    assert!(o.status.success(), "{}\n{}", stderr(&o), c.server_log());
    // Three batches of bookings, a second apart; the time each batch committed is known
    // to lie between its rows' clock and the clock read after it.
    let mut batches = Vec::new();
    for _ in 0..3 {
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let at = c
            .sql("INSERT INTO bookings SELECT FROM generate_series(1, 10) RETURNING extract(epoch FROM at)::text")
            .lines()
            .last()
            .unwrap()
            .parse::<f64>()
            .unwrap();
        let after = c.sql("SELECT extract(epoch FROM clock_timestamp())::text").parse::<f64>().unwrap();
        batches.push((at, after));
    }
    let between_2_and_3 = c.sql(&format!(
        "SELECT to_char(to_timestamp({}) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
        (batches[1].1 + batches[2].0) / 2.0
    ));
    env.archive_now(&c);
    // The primary is gone.
    c.crash();

    let drill = |args: &[&str]| -> (bool, serde_json::Value) {
        let o = Command::new(env!("CARGO_BIN_EXE_cairn"))
            .env("CAIRN_CONFIG", &policy)
            .env("PATH", format!("{}:{}", env.bin.display(), std::env::var("PATH").unwrap_or_default()))
            .args(["--json", "drill", "main"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("drill {args:?}: {e}: {}\n{}", String::from_utf8_lossy(&o.stdout), stderr(&o)));
        (o.status.success(), v)
    };
    let (ok, r) = drill(&[]);
    assert!(ok, "{}", serde_json::to_string_pretty(&r).unwrap());
    assert_eq!(r["verdict"], "passed");
    let checks = r["checks"].as_array().unwrap();
    assert!(checks.iter().all(|c| c["ok"] == true), "{checks:?}");
    let count = checks.iter().find(|c| c["check"].as_str().unwrap().contains("bookings")).unwrap();
    assert!(count["output"].as_str().unwrap().starts_with("30 "), "{count}");
    assert!(checks.iter().any(|c| c["check"].as_str().unwrap().contains("pg_is_in_recovery")), "{checks:?}");
    let phases: Vec<&str> = r["phases"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    for p in ["restore data", "fetch wal", "start", "wal replay", "validate"] {
        assert!(phases.contains(&p), "phase {p} missing: {phases:?}");
    }
    // RPO: from the drill's start back to the last commit replayed, which is batch 3's.
    let recovered =
        r["recovered_to"].as_str().unwrap().parse::<jiff::Timestamp>().unwrap().as_millisecond() as f64 / 1000.0;
    let (at3, after3) = batches[2];
    assert!(
        recovered >= at3 - 0.01 && recovered <= after3 + 0.01,
        "recovered to {recovered}, batch 3 at {at3}..{after3}"
    );
    let started =
        r["started_at"].as_str().unwrap().parse::<jiff::Timestamp>().unwrap().as_millisecond() as f64 / 1000.0;
    let rpo = r["rpo_secs"].as_f64().unwrap();
    assert!((rpo - (started - recovered)).abs() < 0.01, "rpo {rpo} vs {}", started - recovered);
    assert_eq!(r["rpo_met"], true);
    let rto = r["rto_secs"].as_f64().unwrap();
    let sum: f64 = r["phases"].as_array().unwrap().iter().map(|p| p["secs"].as_f64().unwrap()).sum();
    assert!(rto > 0.0 && (rto - sum).abs() < 0.5, "rto {rto}, phases sum {sum}");
    assert_eq!(r["rto_met"], true);
    let sandbox = r["sandbox"].as_str().unwrap().to_string();
    assert!(!Path::new(&sandbox).exists(), "sandbox {sandbox} left behind");
    assert!(processes_naming(&sandbox).is_empty(), "{:?}", processes_naming(&sandbox));

    // To a point in time between batches 2 and 3: 20 bookings, and an RPO not judged.
    let (ok, r) = drill(&["--time", &between_2_and_3]);
    assert!(ok, "{}", serde_json::to_string_pretty(&r).unwrap());
    let count =
        r["checks"].as_array().unwrap().iter().find(|c| c["check"].as_str().unwrap().contains("bookings")).unwrap();
    assert!(count["output"].as_str().unwrap().starts_with("20 "), "{count}");
    assert!(r["rpo_met"].is_null(), "{r}");

    // Killed with SIGKILL while its server runs: the server dies with it, the next drill
    // removes the sandbox and the catalog says what happened.
    write_policy(r#"{ command = "sleep 67" }"#);
    let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .env("CAIRN_CONFIG", &policy)
        .args(["drill", "main"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let drills_dir = env.path("cairn-state/drills");
    let t0 = std::time::Instant::now();
    let killed_sandbox = loop {
        let running = std::fs::read_dir(&drills_dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.join("data/postmaster.pid").exists() && !processes_naming("sleep 67").is_empty());
        if let Some(p) = running {
            break p;
        }
        assert!(t0.elapsed() < std::time::Duration::from_secs(120), "the drill never reached its checks");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    let s = killed_sandbox.display().to_string();
    let t0 = std::time::Instant::now();
    while processes_naming(&format!("{s}/data")).iter().any(|p| p.contains("postgres")) {
        assert!(t0.elapsed() < std::time::Duration::from_secs(10), "{:?}", processes_naming(&s));
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    write_policy(r#"{ query = "SELECT count(*) FROM bookings", min = 30 }"#);
    let (ok, r) = drill(&[]);
    assert!(ok, "{}", serde_json::to_string_pretty(&r).unwrap());
    assert!(!killed_sandbox.exists(), "the killed drill's sandbox is still there");
    assert!(processes_naming("sleep 67").is_empty(), "{:?}", processes_naming("sleep 67"));
    let o = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .env("CAIRN_CONFIG", &policy)
        .args(["--json", "drills"])
        .output()
        .unwrap();
    let history: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let verdicts: Vec<&str> = history.as_array().unwrap().iter().map(|d| d["verdict"].as_str().unwrap()).collect();
    assert_eq!(verdicts, ["passed", "passed", "failed", "passed"], "{history}");
    assert!(history[2]["reason"].as_str().unwrap().contains("interrupted"), "{}", history[2]);

    // The newest WAL segment, which replay needs, is damaged in the repository: the drill
    // fails saying why, long before its timeout, and leaves no server or script behind.
    let tl = env.repo.join("wal/00000001");
    let newest = std::fs::read_dir(&tl)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.len() == 24))
        .max()
        .unwrap_or_else(|| panic!("no WAL segment in {}", tl.display()));
    let mut bytes = std::fs::read(&newest).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    let _ = std::fs::set_permissions(&newest, std::os::unix::fs::PermissionsExt::from_mode(0o644));
    std::fs::write(&newest, &bytes).unwrap();
    let t0 = std::time::Instant::now();
    let (ok, r) = drill(&[]);
    assert!(!ok && r["verdict"] == "failed", "{}", serde_json::to_string_pretty(&r).unwrap());
    let reason = r["reason"].as_str().unwrap();
    assert!(reason.contains("fetching WAL for replay"), "{reason}");
    assert!(t0.elapsed() < std::time::Duration::from_secs(60), "took {:?}", t0.elapsed());
    let sandbox = r["sandbox"].as_str().unwrap().to_string();
    let t0 = std::time::Instant::now();
    while !processes_naming(&sandbox).is_empty() {
        assert!(t0.elapsed() < std::time::Duration::from_secs(10), "{:?}", processes_naming(&sandbox));
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(!Path::new(&sandbox).exists(), "sandbox {sandbox} left behind");
}

/// The WAL prefetcher (cairn_pg::prefetch): after the first segment recovery asks for, the
/// next ones are fetched ahead into pg_wal/cairn-prefetch and handed over from there
/// without the repository; the archive's end still answers "missing"; the prefetcher ends
/// when its spool is gone.
#[test]
fn archive_get_serves_prefetched_segments_and_still_says_missing_at_the_end() {
    let env = common::Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    let names: Vec<String> = (1..=6).map(|i| format!("0000000100000000000000{i:02X}")).collect();
    for (i, n) in names.iter().enumerate() {
        std::fs::write(src.join(n), noise(1 << 20, i as u64 + 11)).unwrap();
        let o = env.run(&["pg", "archive-push", src.join(n).to_str().unwrap()]);
        assert!(o.status.success(), "{}", common::stderr(&o));
    }
    let data = env.path("data");
    std::fs::create_dir_all(data.join("pg_wal")).unwrap();
    let get = |name: &str| {
        env.cmd().current_dir(&data).args(["pg", "archive-get", name, "pg_wal/RECOVERYXLOG"]).output().unwrap()
    };
    let o = get(&names[0]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let spool = data.join("pg_wal/cairn-prefetch");
    let t0 = std::time::Instant::now();
    while !names[1..].iter().all(|n| spool.join(n).exists()) {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(20),
            "not prefetched: {:?}",
            std::fs::read_dir(&spool).map(|r| r.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // The repository goes away: the prefetched segments are still served, byte-exact.
    let hidden = env.path("repo-away");
    std::fs::rename(&env.repo, &hidden).unwrap();
    for (i, n) in names.iter().enumerate().skip(1).take(3) {
        let o = get(n);
        assert!(o.status.success(), "{n} from the spool: {}", common::stderr(&o));
        assert_eq!(std::fs::read(data.join("pg_wal/RECOVERYXLOG")).unwrap(), noise(1 << 20, i as u64 + 11));
        assert!(!spool.join(n).exists(), "handed over by a rename");
    }
    std::fs::rename(&hidden, &env.repo).unwrap();
    // Past the archive's end: missing, at once and silently.
    let t = std::time::Instant::now();
    let o = get("000000010000000000000009");
    assert_eq!(o.status.code(), Some(1));
    assert!(o.stderr.is_empty() && t.elapsed() < std::time::Duration::from_secs(5));
    // The spool removed (a drill's sandbox cleaned up): the prefetcher ends.
    let pattern = format!("archive-prefetch {}", spool.display());
    let alive = || std::process::Command::new("pgrep").args(["-f", &pattern]).output().unwrap().status.success();
    assert!(alive(), "a prefetcher follows the recovery");
    std::fs::remove_dir_all(&data).unwrap();
    let t0 = std::time::Instant::now();
    while alive() {
        assert!(t0.elapsed() < std::time::Duration::from_secs(10), "the prefetcher outlived its spool");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

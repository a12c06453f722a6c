#![allow(clippy::unwrap_used)]
//! `cairn backup --sqlite`: consistent copies of a database that another process keeps
//! writing to.

mod common;
use common::*;

use std::process::{Command, Stdio};

fn python(script: &str) -> std::process::Output {
    Command::new("python3").arg("-c").arg(script).output().expect("python3")
}

#[test]
fn a_database_written_to_meanwhile_backs_up_consistently() {
    if Command::new("python3").arg("-c").arg("import sqlite3").status().map(|s| !s.success()).unwrap_or(true) {
        cairn_testkit::skip("python3 with sqlite3 is needed to write the database");
        return;
    }
    let env = Env::new();
    env.init();
    let dir = env.path("app");
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("customers.db");
    // Invariant: the counter always equals the number of rows (one transaction each).
    let o = python(&format!(
        "import sqlite3\nc = sqlite3.connect({db:?})\nc.execute('PRAGMA journal_mode=WAL')\n\
         c.execute('CREATE TABLE t (id INTEGER PRIMARY KEY, payload BLOB)')\n\
         c.execute('CREATE TABLE counter (n INTEGER)')\nc.execute('INSERT INTO counter VALUES (0)')\n\
         for i in range(2000):\n    c.execute('INSERT INTO t (payload) VALUES (randomblob(1000))')\n\
         c.execute('UPDATE counter SET n = (SELECT count(*) FROM t)')\nc.commit()\n",
        db = db.display().to_string()
    ));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut writer = Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import sqlite3, time\nc = sqlite3.connect({db:?}, timeout=30)\nend = time.time() + 30\n\
             while time.time() < end:\n    c.execute('INSERT INTO t (payload) VALUES (randomblob(3000))')\n\
             \x20   c.execute('DELETE FROM t WHERE id IN (SELECT id FROM t ORDER BY random() LIMIT 1)')\n\
             \x20   c.execute('INSERT INTO t (payload) VALUES (randomblob(500))')\n\
             \x20   c.execute('UPDATE counter SET n = (SELECT count(*) FROM t)')\n    c.commit()\n",
            db = db.display().to_string()
        ))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let count = |p: &std::path::Path| -> i64 {
        let o = python(&format!("import sqlite3\nc = sqlite3.connect({:?}, timeout=30)\nprint(c.execute('SELECT count(*) FROM t').fetchone()[0])\n", p.display().to_string()));
        String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
    };
    let mut before = Vec::new();
    for _ in 0..3 {
        // Rows only grow: a backup holds at least what was committed before it started.
        before.push(count(&db));
        let r = env.json(&["backup", "--sqlite", db.to_str().unwrap()]);
        assert_eq!(r["partial"], false, "{r}");
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    writer.kill().unwrap();
    writer.wait().unwrap();
    let snaps = env.json(&["snapshots"]);
    let snaps = snaps.as_array().unwrap();
    assert_eq!(snaps.len(), 3);
    for (i, s) in snaps.iter().enumerate() {
        assert_eq!(s["kind"], "sqlite");
        let t = env.path(&format!("r{i}"));
        env.ok(&["restore", s["short_id"].as_str().unwrap(), "--target", t.to_str().unwrap()]);
        let restored = t.join(db.strip_prefix("/").unwrap());
        assert!(!restored.with_extension("db-wal").exists(), "the copy must stand alone");
        let o = python(&format!(
            "import sqlite3\nc = sqlite3.connect({p:?})\nprint(c.execute('PRAGMA integrity_check').fetchone()[0])\n\
             print(c.execute('SELECT n FROM counter').fetchone()[0] == c.execute('SELECT count(*) FROM t').fetchone()[0])\n",
            p = restored.display().to_string()
        ));
        let out = String::from_utf8_lossy(&o.stdout).to_string();
        assert_eq!(out.trim(), "ok\nTrue", "snapshot {i}: {out} {}", String::from_utf8_lossy(&o.stderr));
        assert!(count(&restored) >= before[i], "snapshot {i} misses commits made before it started");
    }
    // Not a database: a clear error.
    std::fs::write(dir.join("notes.txt"), "hello, not sqlite").unwrap();
    let o = env.run(&["backup", "--sqlite", dir.join("notes.txt").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("not a database"), "{}", stderr(&o));
}

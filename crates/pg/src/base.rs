//! Base backups: the server side (`pg_backup_start()` / `pg_backup_stop()` in one session),
//! what is left out of the data directory, and reading a data directory that PostgreSQL
//! keeps writing.

use std::io;
use std::path::Path;

use cairn_engine::Source;
use cairn_format::tree::{Node, Tree};

use crate::session::{literal, unhex, Session};
use crate::wal::{parse_lsn, WalName};
use crate::{Error, Result};

/// Facts about the server that a base backup and its checks need.
#[derive(Debug, Clone)]
pub struct Server {
    pub version: u32,
    pub data_dir: String,
    pub system_identifier: String,
    pub wal_segment_size: u64,
    pub wal_level: String,
    pub archive_mode: String,
    pub archive_command: String,
}

pub fn server(s: &mut Session) -> Result<Server> {
    let version: u32 = s
        .value("SHOW server_version_num")?
        .trim()
        .parse()
        .map_err(|_| Error::Sql("server_version_num is not a number".into()))?;
    if version < 100_000 {
        return Err(Error::Sql(format!("PostgreSQL {version} is too old: cairn needs 10 or later")));
    }
    let row = s.query(
        "SELECT current_setting('data_directory'), (SELECT system_identifier::text FROM pg_control_system()), \
         (SELECT setting FROM pg_settings WHERE name = 'wal_segment_size'), current_setting('wal_level'), \
         current_setting('archive_mode'), current_setting('archive_command')",
    )?;
    let r = row
        .into_iter()
        .next()
        .filter(|r| r.len() == 6)
        .ok_or_else(|| Error::Sql("unexpected answer about server settings".into()))?;
    let seg: u64 = r[2].parse().map_err(|_| Error::Sql("wal_segment_size is not a number".into()))?;
    // Before PostgreSQL 11 the setting counted 8 kB blocks.
    let wal_segment_size = if version < 110_000 { seg * 8192 } else { seg };
    Ok(Server {
        version,
        data_dir: r[0].clone(),
        system_identifier: r[1].clone(),
        wal_segment_size,
        wal_level: r[3].clone(),
        archive_mode: r[4].clone(),
        archive_command: r[5].clone(),
    })
}

/// What `pg_backup_start()` returned.
#[derive(Debug, Clone)]
pub struct Started {
    pub lsn: String,
    pub wal: WalName,
    pub time: String,
}

/// What `pg_backup_stop()` returned.
#[derive(Debug, Clone)]
pub struct Stopped {
    pub lsn: String,
    pub wal: WalName,
    pub time: String,
    pub label: String,
    pub tablespace_map: String,
}

const NOW: &str = "to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')";

fn walfile(s: &mut Session, lsn: &str) -> Result<WalName> {
    let name = s.value(&format!("SELECT pg_walfile_name({}::pg_lsn)", literal(lsn)))?;
    WalName::parse(name.trim()).ok_or_else(|| Error::Sql(format!("unexpected WAL file name {name:?}")))
}

/// Starts a non-exclusive base backup with an immediate checkpoint (`fast`) or a spread one.
pub fn start(s: &mut Session, srv: &Server, label: &str, fast: bool) -> Result<Started> {
    let f = if fast { "true" } else { "false" };
    let sql = if srv.version >= 150_000 {
        format!("SELECT pg_backup_start({}, {f})::text, {NOW}", literal(label))
    } else {
        format!("SELECT pg_start_backup({}, {f}, false)::text, {NOW}", literal(label))
    };
    let r = s
        .query(&sql)?
        .into_iter()
        .next()
        .filter(|r| r.len() == 2)
        .ok_or_else(|| Error::Sql("no answer from pg_backup_start".into()))?;
    parse_lsn(&r[0]).ok_or_else(|| Error::Sql(format!("unexpected LSN {:?}", r[0])))?;
    let wal = walfile(s, &r[0])?;
    Ok(Started { lsn: r[0].clone(), wal, time: r[1].clone() })
}

/// Ends the base backup. PostgreSQL switches to a new WAL segment and, when archiving is
/// on, waits until every segment the backup needs has been archived.
pub fn stop(s: &mut Session, srv: &Server) -> Result<Stopped> {
    let cols = "lsn::text, encode(convert_to(labelfile, 'UTF8'), 'hex'), encode(convert_to(coalesce(spcmapfile, ''), 'UTF8'), 'hex')";
    let sql = if srv.version >= 150_000 {
        format!("SELECT {cols}, {NOW} FROM pg_backup_stop(true)")
    } else {
        format!("SELECT {cols}, {NOW} FROM pg_stop_backup(false, true)")
    };
    let r = s
        .query(&sql)?
        .into_iter()
        .next()
        .filter(|r| r.len() == 4)
        .ok_or_else(|| Error::Sql("no answer from pg_backup_stop".into()))?;
    parse_lsn(&r[0]).ok_or_else(|| Error::Sql(format!("unexpected LSN {:?}", r[0])))?;
    let wal = walfile(s, &r[0])?;
    Ok(Stopped { lsn: r[0].clone(), wal, time: r[3].clone(), label: unhex(&r[1])?, tablespace_map: unhex(&r[2])? })
}

/// Refuses a directory that is not a PostgreSQL data directory, or one with tablespaces
/// (not supported yet).
pub fn check_data_dir(dir: &Path) -> Result<()> {
    let pgv = dir.join("PG_VERSION");
    if !pgv.is_file() || !dir.join("global/pg_control").is_file() {
        return Err(Error::Invalid(format!(
            "{} is not a PostgreSQL data directory (no PG_VERSION or global/pg_control)",
            dir.display()
        )));
    }
    if let Ok(rd) = std::fs::read_dir(dir.join("pg_tblspc")) {
        if rd.flatten().next().is_some() {
            return Err(Error::Invalid(format!(
                "{}: tablespaces (pg_tblspc) are not supported yet by cairn pg backup",
                dir.display()
            )));
        }
    }
    Ok(())
}

/// gitignore patterns, anchored at `data_dir` (given as a pattern-escaped absolute path),
/// for what PostgreSQL documents a base backup may leave out: the WAL (archived
/// separately), runtime state rebuilt at start, temporary files, and files that must not
/// be restored (`postmaster.pid`, a stale `backup_label`).
pub fn excludes(data_dir_pattern: &str) -> Vec<String> {
    let d = data_dir_pattern.trim_end_matches('/');
    let mut v: Vec<String> = [
        "pg_wal/*",
        "pg_dynshmem/*",
        "pg_notify/*",
        "pg_replslot/*",
        "pg_serial/*",
        "pg_snapshots/*",
        "pg_stat_tmp/*",
        "pg_subtrans/*",
        "postmaster.pid",
        "postmaster.opts",
        "backup_label",
        "backup_label.old",
        "tablespace_map",
        "tablespace_map.old",
        "recovery.signal",
        "standby.signal",
    ]
    .iter()
    .map(|p| format!("{d}/{p}"))
    .collect();
    // Anywhere below the data directory.
    v.push(format!("{d}/**/pgsql_tmp*"));
    v.push(format!("{d}/**/pg_internal.init"));
    v
}

/// A [`Source`] over a data directory that the server keeps changing: a file or directory
/// removed since it was listed (a dropped table) is read as empty instead of failing the
/// backup, a file replaced meanwhile is read as it is now, and changes while reading are
/// expected (WAL replay from the backup's start repairs them), so they are not reported.
pub struct LiveSource<S> {
    pub inner: S,
}

impl<S: Source> Source for LiveSource<S> {
    fn node(&self, path: &Path, name: &[u8]) -> io::Result<Node> {
        self.inner.node(path, name)
    }

    fn read_dir(&self, path: &Path, before: Option<&Tree>) -> io::Result<Vec<(Vec<u8>, io::Result<Node>)>> {
        match self.inner.read_dir(path, before) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e),
            Ok(v) => {
                Ok(v.into_iter().filter(|(_, n)| !matches!(n, Err(e) if e.kind() == io::ErrorKind::NotFound)).collect())
            }
        }
    }

    fn open(&self, path: &Path, walked: &Node, offset: u64) -> io::Result<Box<dyn io::Read + Send>> {
        match self.inner.open(path, walked, offset) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Box::new(io::empty())),
            Err(e) if e.kind() == io::ErrorKind::Other => {
                // Replaced since listed (a config file rewritten by rename): take it as is.
                let now = match self.inner.node(path, &walked.name.0) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Box::new(io::empty())),
                    Err(e) => return Err(e),
                };
                self.inner.open(path, &now, offset)
            }
            r => r,
        }
    }

    fn changed_since(&self, _path: &Path, _before: &Node) -> bool {
        false
    }

    fn is_excluded(&self, path: &Path, is_dir: bool) -> bool {
        self.inner.is_excluded(path, is_dir)
    }
}

//! Point-in-time recovery: which base backup serves a target, and the files that make a
//! restored data directory replay WAL from the repository to exactly that target.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use cairn_format::snapshot::{PgBackup, Snapshot};
use cairn_format::SnapshotId;

use crate::wal::{format_lsn, parse_lsn};
use crate::{Error, Result};

#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// Replay every WAL file the repository has, then promote.
    Latest,
    /// Stop at this time (ns since the epoch), inclusive.
    Time(i128),
    Lsn(u64),
    Xid(String),
    /// A restore point made with `pg_create_restore_point()`.
    Name(String),
}

/// Parses a time given with its UTC offset: RFC 3339, or PostgreSQL's `2026-11-25 15:00:00+00`.
pub fn parse_time(s: &str) -> Result<i128> {
    let t = s.trim();
    let iso =
        if t.len() > 10 && t.as_bytes()[10] == b' ' { format!("{}T{}", &t[..10], &t[11..]) } else { t.to_string() };
    // PostgreSQL prints offsets as +00 or +05:30; RFC 3339 wants +00:00.
    let fixed = fix_offset(&iso);
    fixed.parse::<jiff::Timestamp>().map(|ts| ts.as_nanosecond()).map_err(|_| {
        Error::Invalid(format!("time {s:?}: give a date and time with its UTC offset, e.g. 2026-11-25T15:00:00Z or '2026-11-25 16:00:00+01'"))
    })
}

fn fix_offset(s: &str) -> String {
    // A trailing [+-]HH without minutes.
    let b = s.as_bytes();
    if b.len() > 3
        && (b[b.len() - 3] == b'+' || b[b.len() - 3] == b'-')
        && s[s.len() - 2..].bytes().all(|c| c.is_ascii_digit())
    {
        return format!("{s}:00");
    }
    s.to_string()
}

pub fn parse_target(time: Option<&str>, lsn: Option<&str>, xid: Option<&str>, name: Option<&str>) -> Result<Target> {
    let given = [time.is_some(), lsn.is_some(), xid.is_some(), name.is_some()].iter().filter(|b| **b).count();
    if given > 1 {
        return Err(Error::Invalid("give at most one of --time, --lsn, --xid, --name, --latest".into()));
    }
    if let Some(t) = time {
        return Ok(Target::Time(parse_time(t)?));
    }
    if let Some(l) = lsn {
        return parse_lsn(l)
            .map(Target::Lsn)
            .ok_or_else(|| Error::Invalid(format!("--lsn {l:?}: expected X/Y in hex, like 0/3000028")));
    }
    if let Some(x) = xid {
        if x.is_empty() || !x.bytes().all(|c| c.is_ascii_digit()) {
            return Err(Error::Invalid(format!("--xid {x:?}: expected a transaction id (a number)")));
        }
        return Ok(Target::Xid(x.to_string()));
    }
    if let Some(n) = name {
        if n.is_empty() || n.contains('\n') {
            return Err(Error::Invalid("--name: expected a restore point name".into()));
        }
        return Ok(Target::Name(n.to_string()));
    }
    Ok(Target::Latest)
}

fn ns(rfc3339: &str) -> Option<i128> {
    rfc3339.parse::<jiff::Timestamp>().ok().map(|t| t.as_nanosecond())
}

/// The newest base backup that ends before the target (for a time or LSN target; the
/// newest one otherwise). `backups` are the postgres snapshots, oldest first.
pub fn choose<'a>(backups: &'a [(SnapshotId, Snapshot)], target: &Target) -> Result<&'a (SnapshotId, Snapshot)> {
    let pg: Vec<&(SnapshotId, Snapshot)> = backups.iter().filter(|(_, s)| s.postgres.is_some()).collect();
    let Some(newest) = pg.last() else {
        return Err(Error::Invalid("the repository has no PostgreSQL base backup (cairn pg backup)".into()));
    };
    let info = |s: &'a Snapshot| s.postgres.as_ref();
    let found = match target {
        Target::Time(t) => {
            pg.iter().rev().find(|(_, s)| info(s).and_then(|p| ns(&p.stop_time)).is_some_and(|stop| stop <= *t))
        }
        Target::Lsn(l) => {
            pg.iter().rev().find(|(_, s)| info(s).and_then(|p| parse_lsn(&p.stop_lsn)).is_some_and(|stop| stop <= *l))
        }
        _ => Some(newest),
    };
    found.copied().ok_or_else(|| {
        let oldest = pg[0].1.postgres.as_ref().map(|p| (p.stop_time.clone(), p.stop_lsn.clone())).unwrap_or_default();
        match target {
            Target::Time(_) => Error::Invalid(format!(
                "no base backup ends before the target time: the oldest one ends at {} (a base backup is consistent only from its end)",
                oldest.0
            )),
            _ => Error::Invalid(format!("no base backup ends before the target LSN: the oldest one ends at {}", oldest.1)),
        }
    })
}

/// The settings appended to `postgresql.auto.conf`.
pub fn settings(target: &Target, restore_command: &str) -> String {
    let q = |s: &str| format!("'{}'", s.replace('\'', "''"));
    let mut out = String::from("\n# Added by cairn pg restore: replay WAL from the repository.\n");
    out += &format!("restore_command = {}\n", q(restore_command));
    out += "recovery_target_timeline = 'latest'\n";
    let t = match target {
        Target::Latest => None,
        Target::Time(ns) => {
            let ts = jiff::Timestamp::from_nanosecond(*ns).unwrap_or_default();
            Some(format!("recovery_target_time = {}", q(&ts.strftime("%Y-%m-%d %H:%M:%S%.6f+00").to_string())))
        }
        Target::Lsn(l) => Some(format!("recovery_target_lsn = {}", q(&format_lsn(*l)))),
        Target::Xid(x) => Some(format!("recovery_target_xid = {}", q(x))),
        Target::Name(n) => Some(format!("recovery_target_name = {}", q(n))),
    };
    if let Some(t) = t {
        out += &t;
        out += "\nrecovery_target_action = 'promote'\n";
    }
    out
}

fn write_file(path: &Path, content: &[u8], mode: u32) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(|e| Error::io(path.display().to_string(), e))?;
    f.write_all(content).and_then(|_| f.sync_all()).map_err(|e| Error::io(path.display().to_string(), e))
}

/// Makes a restored data directory start as a recovery to the target: the backup label
/// (which tells PostgreSQL where replay must start), the empty runtime directories the
/// backup left out, `recovery.signal`, and the recovery settings.
pub fn prepare(dir: &Path, pg: &PgBackup, settings: &str, owner: Option<(u32, u32)>) -> Result<()> {
    if pg.server_version < 120_000 {
        return Err(Error::Invalid(format!(
            "restoring PostgreSQL {} (before 12, which needs recovery.conf) is not supported",
            pg.server_version
        )));
    }
    write_file(&dir.join("backup_label"), pg.backup_label.as_bytes(), 0o600)?;
    if !pg.tablespace_map.is_empty() {
        write_file(&dir.join("tablespace_map"), pg.tablespace_map.as_bytes(), 0o600)?;
    }
    let mut made = Vec::new();
    for d in [
        "pg_wal",
        "pg_wal/archive_status",
        "pg_dynshmem",
        "pg_notify",
        "pg_replslot",
        "pg_serial",
        "pg_snapshots",
        "pg_stat_tmp",
        "pg_subtrans",
    ] {
        let p = dir.join(d);
        if !p.exists() {
            std::fs::DirBuilder::new().mode(0o700).create(&p).map_err(|e| Error::io(p.display().to_string(), e))?;
            made.push(p);
        }
    }
    write_file(&dir.join("recovery.signal"), b"", 0o600)?;
    let auto = dir.join("postgresql.auto.conf");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(&auto)
        .map_err(|e| Error::io(auto.display().to_string(), e))?;
    f.write_all(settings.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io(auto.display().to_string(), e))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| Error::io(dir.display().to_string(), e))?;
    if let Some((uid, gid)) = owner {
        for p in
            [dir.join("backup_label"), dir.join("tablespace_map"), dir.join("recovery.signal"), auto, dir.to_path_buf()]
                .into_iter()
                .chain(made)
        {
            if p.exists() {
                std::os::unix::fs::chown(&p, Some(uid), Some(gid))
                    .map_err(|e| Error::io(p.display().to_string(), e))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(stop_time: &str, stop_lsn: &str) -> (SnapshotId, Snapshot) {
        let s: Snapshot = serde_json::from_value(serde_json::json!({
            "version": 1, "time": stop_time, "hostname": "h", "username": "u", "uid": 0, "gid": 0,
            "paths": ["/d"], "tree": "00".repeat(32), "kind": "postgres", "program_version": "t",
            "postgres": {"server_version": 150000, "system_identifier": "1", "data_dir": "/d", "timeline": 1,
              "start_lsn": "0/1", "stop_lsn": stop_lsn, "start_wal": "x", "stop_wal": "y",
              "start_time": stop_time, "stop_time": stop_time, "wal_segment_size": 16777216, "backup_label": "l"}
        }))
        .unwrap();
        (SnapshotId::default(), s)
    }

    #[test]
    fn the_newest_backup_ending_before_the_target_is_chosen() {
        let b = vec![snap("2026-01-01T10:00:00Z", "0/3000000"), snap("2026-01-01T12:00:00Z", "0/5000000")];
        let t = |s: &str| Target::Time(parse_time(s).unwrap());
        assert_eq!(choose(&b, &t("2026-01-01T11:00:00Z")).unwrap().1.time, "2026-01-01T10:00:00Z");
        assert_eq!(choose(&b, &t("2026-01-01 12:30:00+01")).unwrap().1.time, "2026-01-01T10:00:00Z");
        assert_eq!(choose(&b, &t("2026-01-01T12:00:00Z")).unwrap().1.time, "2026-01-01T12:00:00Z");
        assert!(choose(&b, &t("2026-01-01T09:00:00Z"))
            .unwrap_err()
            .to_string()
            .contains("oldest one ends at 2026-01-01T10:00:00Z"));
        assert_eq!(choose(&b, &Target::Lsn(0x4000000)).unwrap().1.time, "2026-01-01T10:00:00Z");
        assert_eq!(choose(&b, &Target::Latest).unwrap().1.time, "2026-01-01T12:00:00Z");
        assert!(choose(&[], &Target::Latest).is_err());
        assert!(parse_time("2026-01-01 10:00:00").is_err(), "a time without offset is ambiguous");
        assert!(parse_target(Some("2026-01-01T10:00:00Z"), Some("0/1"), None, None).is_err());
    }

    #[test]
    fn settings_quote_and_name_the_target() {
        let s = settings(&Target::Name("before 'x'".into()), "cairn pg archive-get %f %p");
        assert!(s.contains("recovery_target_name = 'before ''x'''"));
        assert!(s.contains("recovery_target_action = 'promote'"));
        assert!(!settings(&Target::Latest, "c").contains("recovery_target_action"));
        let t = settings(&Target::Time(parse_time("2026-01-01T10:00:00.5Z").unwrap()), "c");
        assert!(t.contains("recovery_target_time = '2026-01-01 10:00:00.500000+00'"), "{t}");
    }
}

//! What a repository can recover to: per timeline the runs of WAL it holds, and for each
//! base backup whether the WAL it needs is complete and how far past it replay can go
//! without a hole. And the live check that archiving reaches the repository: force a WAL
//! switch on the server and wait for that segment to arrive. `cairn pg wal-list` and
//! `cairn pg check` render these; the edges add nothing to them.

use std::time::{Duration, Instant};

use cairn_format::snapshot::PgBackup;
use cairn_format::SnapshotId;
use cairn_repo::Repository;

use crate::backup::postgres_snapshots;
use crate::session::Session;
use crate::wal::{self, Kind, Runs, WalName};
use crate::{Error, Result};

/// PostgreSQL's default WAL segment size, for a repository with WAL but no base backup
/// that would say otherwise.
pub const DEFAULT_SEGMENT: u64 = 16 << 20;

/// One base backup and the stretch of WAL that can be replayed from it.
#[derive(Debug, Clone)]
pub struct Window {
    pub id: SnapshotId,
    pub pg: PgBackup,
    /// The WAL from the backup's start to its stop is all in the repository: it restores.
    pub complete: bool,
    /// The last segment reachable from the backup's start without a hole.
    pub through: Option<String>,
    /// When that last segment was stored (milliseconds since the epoch), for a complete
    /// window: about how late an instant it recovers to.
    pub stored_at: Option<i64>,
}

/// Everything [`coverage`] found.
#[derive(Debug, Clone)]
pub struct Coverage {
    pub runs: Runs,
    pub windows: Vec<Window>,
    /// `NNNNNNNN.history` files (timeline switches).
    pub histories: Vec<String>,
    /// The segment size the names are computed with (the newest base backup's).
    pub segment_size: u64,
}

impl Coverage {
    /// The segment file name of `segno` on `timeline`.
    pub fn name(&self, timeline: u32, segno: u64) -> String {
        wal::segment_name(timeline, segno, self.segment_size)
    }
}

/// Reads the WAL listing and the base backups of `repo` once.
pub fn coverage(repo: &Repository) -> Result<Coverage> {
    let files = wal::list(repo)?;
    let snaps = postgres_snapshots(repo)?;
    let seg =
        snaps.last().and_then(|(_, s)| s.postgres.as_ref()).map(|p| p.wal_segment_size).unwrap_or(DEFAULT_SEGMENT);
    let runs = Runs::of(&files, seg);
    let mut windows = Vec::new();
    for (id, s) in snaps {
        let Some(pg) = s.postgres else { continue };
        let (Some(a), Some(b)) = (
            WalName::parse(&pg.start_wal).and_then(|w| w.segno(pg.wal_segment_size)),
            WalName::parse(&pg.stop_wal).and_then(|w| w.segno(pg.wal_segment_size)),
        ) else {
            continue;
        };
        let reach = runs.reach(pg.timeline, a);
        let complete = reach.is_some_and(|r| r >= b);
        let through = reach.map(|r| wal::segment_name(pg.timeline, r, pg.wal_segment_size));
        let stored_at = match (&through, complete) {
            (Some(t), true) => {
                WalName::parse(t).and_then(|w| wal::get_with_time(repo, &w).ok().flatten()).map(|(t, _)| t)
            }
            _ => None,
        };
        windows.push(Window { id, pg, complete, through, stored_at });
    }
    let histories = files.iter().filter(|(w, _)| w.kind == Kind::History).map(|(w, _)| w.name.clone()).collect();
    Ok(Coverage { runs, windows, histories, segment_size: seg })
}

/// How the archiving check ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Archiving {
    /// The switched-out segment reached the repository after this long.
    Works { segment: String, after: Duration },
    /// It had not arrived when the timeout ran out.
    NotArriving { segment: String, timeout: Duration },
}

/// Asks the server on `connection` to switch WAL (after a restore point, so the switch
/// always completes a segment) and waits up to `timeout` for that segment in `repo`.
pub fn check_archiving(repo: &Repository, connection: &str, timeout: Duration) -> Result<Archiving> {
    let mut s = Session::connect(connection).map_err(|e| Error::Sql(format!("connecting to PostgreSQL: {e}")))?;
    s.query("SELECT pg_create_restore_point('cairn check')")?;
    let name = s.value("SELECT pg_walfile_name(pg_switch_wal())")?;
    let w = WalName::parse(name.trim())
        .ok_or_else(|| Error::Sql(format!("the server named an unexpected WAL file {name:?}")))?;
    let start = Instant::now();
    loop {
        if wal::get(repo, &w)?.is_some() {
            return Ok(Archiving::Works { segment: w.name, after: start.elapsed() });
        }
        if start.elapsed() >= timeout {
            return Ok(Archiving::NotArriving { segment: w.name, timeout });
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

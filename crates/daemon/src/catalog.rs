//! The job catalog: every job with what, when, who and how it ended, in an embedded SQLite
//! database (no server). Several processes use it at once (the daemon, `cairn run`,
//! `cairn status`): WAL journal mode and a busy timeout make that safe.
//!
//! Schema versioned in `meta.schema_version`; [`Catalog::open`] migrates older versions
//! forward and refuses newer ones. Times are Unix milliseconds. It is a cache of the
//! repositories' truth: snapshots name their source and job, so [`Catalog::rebuild_from`]
//! restores the backup history of a lost catalog.

use std::collections::HashMap;
use std::path::Path;

use jiff::Timestamp;
use rusqlite::{params, Connection, OptionalExtension};

use crate::{Error, Result};

/// The schema this build writes.
pub const SCHEMA_VERSION: i64 = 7;

/// Lines a job's log keeps (the rest are dropped: a log is for reading, not for bulk).
pub const MAX_LOG_LINES: i64 = 1000;

const SCHEMA_V1: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    host         TEXT NOT NULL,
    kind         TEXT NOT NULL,
    source       TEXT NOT NULL,
    class        TEXT NOT NULL,
    repository   TEXT NOT NULL,
    trigger      TEXT NOT NULL,
    actor        TEXT NOT NULL,
    label        TEXT,
    reason       TEXT,
    scheduled_at INTEGER,
    started_at   INTEGER,
    ended_at     INTEGER,
    status       TEXT NOT NULL,
    pid          INTEGER,
    files        INTEGER,
    bytes_read   INTEGER,
    bytes_added  INTEGER,
    snapshot     TEXT,
    error        TEXT
);
CREATE INDEX IF NOT EXISTS jobs_by_source ON jobs (source, kind, started_at);
CREATE INDEX IF NOT EXISTS jobs_by_start ON jobs (started_at);
";

/// Version 2: the record of each drill job (its phases, measurements and checks), as the
/// JSON document `drill::Record` that is also sealed into the repository.
const SCHEMA_V2: &str = "
CREATE TABLE IF NOT EXISTS drills (
    job        INTEGER PRIMARY KEY,
    source     TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    verdict    TEXT NOT NULL,
    record     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS drills_by_source ON drills (source, started_at);
";

/// Version 3: alerts (and an index for metrics). The conditions now active (so a restart neither forgets nor repeats
/// them), when each target was last told of each, and every delivery attempt.
/// v5: API tokens (only the BLAKE3 of each secret is kept).
pub(crate) const SCHEMA_V5: &str = "
CREATE TABLE IF NOT EXISTS tokens (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    expires_at INTEGER,
    revoked_at INTEGER,
    last_used_at INTEGER
);
";

/// v6: backup outcomes per source and UTC day, kept by triggers as jobs end (the console's
/// 30-day strips read 3,000 rows, not a grouped scan of every job); each job's log lines.
pub(crate) const SCHEMA_V6: &str = "
CREATE TABLE IF NOT EXISTS job_days (
    source TEXT NOT NULL, day TEXT NOT NULL, ok INTEGER NOT NULL, failed INTEGER NOT NULL,
    PRIMARY KEY (source, day)
);
INSERT OR IGNORE INTO job_days (source, day, ok, failed)
    SELECT source, date(started_at / 1000, 'unixepoch'),
           sum(status IN ('succeeded', 'partial')), sum(status IN ('failed', 'interrupted', 'cancelled'))
    FROM jobs WHERE kind = 'backup' AND started_at IS NOT NULL AND status NOT IN ('running', 'queued')
    GROUP BY 1, 2;
CREATE TABLE IF NOT EXISTS job_log (
    job INTEGER NOT NULL, seq INTEGER NOT NULL, at INTEGER NOT NULL, line TEXT NOT NULL,
    PRIMARY KEY (job, seq)
);
CREATE TRIGGER IF NOT EXISTS job_days_on_end AFTER UPDATE OF status ON jobs
    WHEN NEW.kind = 'backup' AND OLD.status IN ('running', 'queued') AND NEW.status NOT IN ('running', 'queued')
         AND NEW.started_at IS NOT NULL
BEGIN
    INSERT INTO job_days (source, day, ok, failed)
    VALUES (NEW.source, date(NEW.started_at / 1000, 'unixepoch'), NEW.status IN ('succeeded', 'partial'),
            NEW.status IN ('failed', 'interrupted', 'cancelled'))
    ON CONFLICT (source, day) DO UPDATE SET ok = ok + excluded.ok, failed = failed + excluded.failed;
END;
CREATE TRIGGER IF NOT EXISTS job_days_on_insert AFTER INSERT ON jobs
    WHEN NEW.kind = 'backup' AND NEW.status NOT IN ('running', 'queued') AND NEW.started_at IS NOT NULL
BEGIN
    INSERT INTO job_days (source, day, ok, failed)
    VALUES (NEW.source, date(NEW.started_at / 1000, 'unixepoch'), NEW.status IN ('succeeded', 'partial'),
            NEW.status IN ('failed', 'interrupted', 'cancelled'))
    ON CONFLICT (source, day) DO UPDATE SET ok = ok + excluded.ok, failed = failed + excluded.failed;
END;
";

/// v7: when each source first came under a policy this daemon ran, so that a new source
/// is not "past its RPO" before its first window has had a chance (see `status`).
const SCHEMA_V7: &str = "
CREATE TABLE IF NOT EXISTS sources (name TEXT PRIMARY KEY, first_seen INTEGER NOT NULL);
INSERT OR IGNORE INTO sources (name, first_seen)
    SELECT source, min(coalesce(started_at, scheduled_at, ended_at)) FROM jobs
    WHERE coalesce(started_at, scheduled_at, ended_at) IS NOT NULL GROUP BY source;
";

const SCHEMA_V3: &str = "
CREATE TABLE IF NOT EXISTS alert_state (
    key   TEXT PRIMARY KEY,
    event TEXT NOT NULL,
    since INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS alert_sent (
    key    TEXT NOT NULL,
    target TEXT NOT NULL,
    at     INTEGER NOT NULL,
    PRIMARY KEY (key, target)
);
CREATE TABLE IF NOT EXISTS deliveries (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      INTEGER NOT NULL,
    target  TEXT NOT NULL,
    key     TEXT NOT NULL,
    event   TEXT NOT NULL,
    phase   TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    ok      INTEGER NOT NULL,
    error   TEXT
);
CREATE INDEX IF NOT EXISTS deliveries_by_time ON deliveries (at);
-- Covers /metrics' aggregate of every job by source, kind and status (no table reads).
CREATE INDEX IF NOT EXISTS jobs_by_outcome ON jobs (source, kind, status, started_at, ended_at, bytes_added);
";

/// Version 4: running totals of finished jobs per source, kind and status (count, bytes,
/// duration sum, newest success, duration histogram), kept by triggers on every way a
/// job ends (finished, marked interrupted, inserted finished), so `/metrics` reads a few
/// hundred rows instead of aggregating every job, and its counters never go down when old
/// jobs expire from the catalog. Filled from the jobs already recorded. The histogram's
/// bounds are `metrics::BUCKETS`: changing them needs a migration that rebuilds this.
fn schema_v4() -> String {
    let b = crate::metrics::BUCKETS;
    let cols: Vec<String> = (0..b.len()).map(|i| format!("b{i}")).collect();
    let defs: Vec<String> = cols.iter().map(|c| format!("{c} INTEGER NOT NULL DEFAULT 0")).collect();
    let is = |row: &str, i: usize| {
        format!("(CASE WHEN {row}.ended_at - {row}.started_at <= {} THEN 1 ELSE 0 END)", (b[i] * 1000.0) as i64)
    };
    let upsert = |row: &str| {
        let vals: Vec<String> = (0..b.len()).map(|i| is(row, i)).collect();
        let sets: Vec<String> = cols.iter().map(|c| format!("{c} = {c} + excluded.{c}")).collect();
        format!(
            "INSERT INTO job_totals (source, kind, status, count, bytes_added, duration_ms, last_success_ms, {cols})
             VALUES ({row}.source, {row}.kind, {row}.status, 1, coalesce({row}.bytes_added, 0),
                     {row}.ended_at - {row}.started_at,
                     CASE WHEN {row}.status IN ('succeeded', 'partial') THEN {row}.ended_at END, {vals})
             ON CONFLICT (source, kind, status) DO UPDATE SET
                 count = count + 1, bytes_added = bytes_added + excluded.bytes_added,
                 duration_ms = duration_ms + excluded.duration_ms,
                 last_success_ms = max(coalesce(last_success_ms, excluded.last_success_ms), coalesce(excluded.last_success_ms, last_success_ms)),
                 {sets};",
            cols = cols.join(", "),
            vals = vals.join(", "),
            sets = sets.join(", ")
        )
    };
    let fill: Vec<String> = (0..b.len()).map(|i| format!("sum({})", is("jobs", i))).collect();
    format!(
        "CREATE TABLE IF NOT EXISTS job_totals (
             source TEXT NOT NULL, kind TEXT NOT NULL, status TEXT NOT NULL,
             count INTEGER NOT NULL, bytes_added INTEGER NOT NULL, duration_ms INTEGER NOT NULL,
             last_success_ms INTEGER, {defs},
             PRIMARY KEY (source, kind, status)
         );
         INSERT OR IGNORE INTO job_totals (source, kind, status, count, bytes_added, duration_ms, last_success_ms, {cols})
             SELECT source, kind, status, count(*), coalesce(sum(bytes_added), 0), coalesce(sum(ended_at - started_at), 0),
                    max(CASE WHEN status IN ('succeeded', 'partial') THEN ended_at END), {fill}
             FROM jobs WHERE ended_at IS NOT NULL AND started_at IS NOT NULL AND status != 'running'
             GROUP BY source, kind, status;
         CREATE TRIGGER IF NOT EXISTS job_totals_on_end AFTER UPDATE OF status ON jobs
             WHEN OLD.status = 'running' AND NEW.status != 'running'
                  AND NEW.ended_at IS NOT NULL AND NEW.started_at IS NOT NULL
         BEGIN {on_update} END;
         CREATE TRIGGER IF NOT EXISTS job_totals_on_insert AFTER INSERT ON jobs
             WHEN NEW.status != 'running' AND NEW.ended_at IS NOT NULL AND NEW.started_at IS NOT NULL
         BEGIN {on_insert} END;",
        defs = defs.join(", "),
        cols = cols.join(", "),
        fill = fill.join(", "),
        on_update = upsert("NEW"),
        on_insert = upsert("NEW"),
    )
}

/// A job's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Backup,
    Copy,
    Retention,
    Verify,
    Drill,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Backup => "backup",
            Kind::Copy => "copy",
            Kind::Retention => "retention",
            Kind::Verify => "verify",
            Kind::Drill => "drill",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        [Kind::Backup, Kind::Copy, Kind::Retention, Kind::Verify, Kind::Drill].into_iter().find(|k| k.as_str() == s)
    }
}

/// Why a job ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Schedule,
    /// The one run for windows missed while no daemon ran.
    CatchUp,
    Manual,
    /// A run again after a failure, with backoff.
    Retry,
    /// Recorded from a snapshot while rebuilding a lost catalog.
    Rebuilt,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::CatchUp => "catch_up",
            Trigger::Manual => "manual",
            Trigger::Retry => "retry",
            Trigger::Rebuilt => "rebuilt",
        }
    }
}

/// How a job ended (or that it has not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Queued,
    Running,
    Succeeded,
    /// Saved, but some files could not be read.
    Partial,
    Failed,
    /// Its process died (kill -9, power loss) or was stopped before it ended.
    Interrupted,
    /// A `before` hook refused it, or the daemon stopped before it began.
    Cancelled,
    Skipped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Running => "running",
            Status::Succeeded => "succeeded",
            Status::Partial => "partial",
            Status::Failed => "failed",
            Status::Interrupted => "interrupted",
            Status::Cancelled => "cancelled",
            Status::Skipped => "skipped",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        [
            Status::Queued,
            Status::Running,
            Status::Succeeded,
            Status::Partial,
            Status::Failed,
            Status::Interrupted,
            Status::Cancelled,
            Status::Skipped,
        ]
        .into_iter()
        .find(|x| x.as_str() == s)
    }

    /// Whether a job so ended counts as done for scheduling (its data is saved).
    pub fn is_success(self) -> bool {
        matches!(self, Status::Succeeded | Status::Partial)
    }
}

/// A job about to start.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub host: String,
    pub kind: Kind,
    pub source: String,
    pub class: String,
    pub repository: String,
    pub trigger: Trigger,
    pub actor: String,
    pub label: Option<String>,
    pub reason: Option<String>,
    pub scheduled_at: Option<Timestamp>,
}

/// What a finished job produced.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub files: Option<u64>,
    pub bytes_read: Option<u64>,
    pub bytes_added: Option<u64>,
    pub snapshot: Option<String>,
    pub error: Option<String>,
}

/// One catalog row.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Job {
    /// `<host>/<number>`.
    pub id: String,
    #[serde(skip)]
    pub row: i64,
    pub host: String,
    pub kind: String,
    pub source: String,
    pub class: String,
    pub repository: String,
    pub trigger: String,
    pub actor: String,
    pub label: Option<String>,
    pub reason: Option<String>,
    pub scheduled_at: Option<String>,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
    pub status: String,
    pub pid: Option<u32>,
    pub files: Option<u64>,
    pub bytes_read: Option<u64>,
    pub bytes_added: Option<u64>,
    pub snapshot: Option<String>,
    pub error: Option<String>,
    #[serde(skip)]
    pub started_ms: Option<i64>,
    #[serde(skip)]
    pub ended_ms: Option<i64>,
}

/// Jobs of one source, kind and status, aggregated.
#[derive(Debug, Clone)]
pub struct JobStat {
    pub source: String,
    pub kind: String,
    pub status: String,
    pub count: u64,
    pub bytes_added: u64,
    pub duration_sum: f64,
    pub last_success_ms: Option<i64>,
    /// Jobs at most each of `crate::metrics::BUCKETS` long (not cumulative across statuses).
    pub buckets: Vec<u64>,
}

/// One attempt to deliver an alert.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Delivery {
    pub at: String,
    pub target: String,
    pub key: String,
    pub event: String,
    pub phase: String,
    pub attempt: u32,
    /// Why it failed; `None`: delivered.
    pub error: Option<String>,
}

/// What a job list is filtered by.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub source: Option<String>,
    pub kind: Option<Kind>,
    pub since: Option<Timestamp>,
    pub limit: Option<usize>,
}

pub struct Catalog {
    conn: Connection,
    path: String,
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(e.sqlite_error_code(), Some(rusqlite::ErrorCode::DatabaseBusy) | Some(rusqlite::ErrorCode::DatabaseLocked))
}

fn ms(t: Timestamp) -> i64 {
    t.as_millisecond()
}

fn time_of(ms: Option<i64>) -> Option<String> {
    ms.and_then(|m| Timestamp::from_millisecond(m).ok()).map(|t| t.to_string())
}

const COLUMNS: &str = "id, host, kind, source, class, repository, trigger, actor, label, reason, scheduled_at, \
                       started_at, ended_at, status, pid, files, bytes_read, bytes_added, snapshot, error";

fn row_to_job(r: &rusqlite::Row<'_>) -> rusqlite::Result<Job> {
    let row: i64 = r.get(0)?;
    let host: String = r.get(1)?;
    let started: Option<i64> = r.get(11)?;
    let ended: Option<i64> = r.get(12)?;
    let u = |v: Option<i64>| v.map(|v| v.max(0) as u64);
    Ok(Job {
        id: format!("{host}/{row}"),
        row,
        host,
        kind: r.get(2)?,
        source: r.get(3)?,
        class: r.get(4)?,
        repository: r.get(5)?,
        trigger: r.get(6)?,
        actor: r.get(7)?,
        label: r.get(8)?,
        reason: r.get(9)?,
        scheduled_at: time_of(r.get(10)?),
        started_at: time_of(started),
        ended_at: time_of(ended),
        status: r.get(13)?,
        pid: r.get::<_, Option<i64>>(14)?.map(|p| p as u32),
        files: u(r.get(15)?),
        bytes_read: u(r.get(16)?),
        bytes_added: u(r.get(17)?),
        snapshot: r.get(18)?,
        error: r.get(19)?,
        started_ms: started,
        ended_ms: ended,
    })
}

impl Catalog {
    /// Opens (creating, or migrating forward) the catalog at `path`.
    ///
    /// Switching a new database to WAL mode and migrating it take locks for which SQLite
    /// does not always call the busy handler (two processes opening a fresh catalog at once
    /// get "database is locked" at once): those steps are retried for the busy timeout.
    pub fn open(path: &Path) -> Result<Catalog> {
        let p = path.display().to_string();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            match Self::open_once(path, &p) {
                Err(Error::Catalog { source, .. }) if is_busy(&source) && std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                r => return r,
            }
        }
    }

    fn open_once(path: &Path, p: &str) -> Result<Catalog> {
        let err = |source| Error::Catalog { path: p.to_string(), source };
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(30)).map_err(err)?;
        // WAL: readers (status) never wait for the writer (the daemon).
        conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(())).map_err(err)?;
        conn.execute_batch("PRAGMA synchronous=NORMAL").map_err(err)?;
        let c = Catalog { conn, path: p.to_string() };
        c.migrate()?;
        Ok(c)
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> Error + '_ {
        move |source| Error::Catalog { path: self.path.clone(), source }
    }

    /// The schema version the database holds (0: none yet).
    fn version(&self) -> Result<i64> {
        let has_meta: bool = self
            .conn
            .query_row("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'meta'", [], |r| {
                r.get::<_, i64>(0).map(|n| n > 0)
            })
            .map_err(self.err())?;
        if !has_meta {
            return Ok(0);
        }
        let v = self
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |r| r.get::<_, String>(0))
            .optional()
            .map_err(self.err())?
            .map(|v| v.parse().unwrap_or(-1))
            .unwrap_or(0);
        if v < 0 {
            return Err(Error::CatalogVersion { path: self.path.clone(), why: "unreadable schema_version".into() });
        }
        if v > SCHEMA_VERSION {
            return Err(Error::CatalogVersion {
                path: self.path.clone(),
                why: format!("schema version {v} is newer than this cairn's ({SCHEMA_VERSION}); upgrade cairn"),
            });
        }
        Ok(v)
    }

    /// Brings the schema to this build's version. A current catalog is only read: every
    /// `cairn jobs` or `status` opens it beside a busy daemon. A migration runs in one
    /// `BEGIN IMMEDIATE` transaction, which takes the write lock up front (waiting for it):
    /// reading the version and then writing would be a read-to-write upgrade, which SQLite
    /// refuses at once with "database is locked" when another process wrote in between.
    fn migrate(&self) -> Result<()> {
        if self.version()? == SCHEMA_VERSION {
            return Ok(());
        }
        self.conn.execute_batch("BEGIN IMMEDIATE").map_err(self.err())?;
        let r = (|| -> Result<()> {
            let version = self.version()?;
            if version < 1 {
                self.conn.execute_batch(SCHEMA_V1).map_err(self.err())?;
            }
            if version < 2 {
                self.conn.execute_batch(SCHEMA_V2).map_err(self.err())?;
            }
            if version < 3 {
                self.conn.execute_batch(SCHEMA_V3).map_err(self.err())?;
            }
            if version < 4 {
                self.conn.execute_batch(&schema_v4()).map_err(self.err())?;
            }
            if version < 5 {
                self.conn.execute_batch(SCHEMA_V5).map_err(self.err())?;
            }
            if version < 6 {
                self.conn.execute_batch(SCHEMA_V6).map_err(self.err())?;
            }
            if version < 7 {
                self.conn.execute_batch(SCHEMA_V7).map_err(self.err())?;
            }
            // Later versions: `if version < 8 { ... }`, each in order.
            self.conn
                .execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', ?1)
                     ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    params![SCHEMA_VERSION.to_string()],
                )
                .map_err(self.err())?;
            Ok(())
        })();
        match r {
            Ok(()) => self.conn.execute_batch("COMMIT").map_err(self.err()),
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }

    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    pub(crate) fn sql_err(&self) -> impl Fn(rusqlite::Error) -> Error + '_ {
        self.err()
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    /// Records a job as running from `now`; returns its row number.
    pub fn start(&self, j: &NewJob, now: Timestamp) -> Result<i64> {
        self.conn
            .execute(
                "INSERT INTO jobs (host, kind, source, class, repository, trigger, actor, label, reason,
                                   scheduled_at, started_at, status, pid)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 'running', ?12)",
                params![
                    j.host,
                    j.kind.as_str(),
                    j.source,
                    j.class,
                    j.repository,
                    j.trigger.as_str(),
                    j.actor,
                    j.label,
                    j.reason,
                    j.scheduled_at.map(ms),
                    ms(now),
                    std::process::id() as i64,
                ],
            )
            .map_err(self.err())?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Records a job that never ran (cancelled or skipped) in one step.
    pub fn record(&self, j: &NewJob, status: Status, error: Option<&str>, now: Timestamp) -> Result<i64> {
        let row = self.start(j, now)?;
        self.finish(row, status, &Outcome { error: error.map(str::to_string), ..Outcome::default() }, now)?;
        Ok(row)
    }

    pub fn finish(&self, row: i64, status: Status, o: &Outcome, now: Timestamp) -> Result<()> {
        let i = |v: Option<u64>| v.map(|v| v.min(i64::MAX as u64) as i64);
        self.conn
            .execute(
                "UPDATE jobs SET status = ?2, ended_at = ?3, files = ?4, bytes_read = ?5, bytes_added = ?6,
                                 snapshot = ?7, error = ?8
                 WHERE id = ?1",
                params![
                    row,
                    status.as_str(),
                    ms(now),
                    i(o.files),
                    i(o.bytes_read),
                    i(o.bytes_added),
                    o.snapshot,
                    o.error
                ],
            )
            .map_err(self.err())?;
        Ok(())
    }

    /// Jobs recorded as running (by any process).
    pub fn running(&self) -> Result<Vec<Job>> {
        self.query(&format!("SELECT {COLUMNS} FROM jobs WHERE status = 'running' ORDER BY id"), [])
    }

    fn query<P: rusqlite::Params>(&self, sql: &str, p: P) -> Result<Vec<Job>> {
        let mut st = self.conn.prepare_cached(sql).map_err(self.err())?;
        let rows = st.query_map(p, row_to_job).map_err(self.err())?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(self.err())
    }

    /// Records that the daemon runs `sources` from `now` on, for those it had not seen:
    /// since their oldest job if the catalog has one (a rebuilt catalog), else `now`.
    pub fn note_sources<'a>(&self, sources: impl IntoIterator<Item = &'a str>, now: Timestamp) -> Result<()> {
        let mut st = self
            .conn
            .prepare_cached(
                "INSERT OR IGNORE INTO sources (name, first_seen)
                 VALUES (?1, min(?2, coalesce((SELECT min(started_at) FROM jobs WHERE source = ?1), ?2)))",
            )
            .map_err(self.err())?;
        for s in sources {
            st.execute(params![s, now.as_millisecond()]).map_err(self.err())?;
        }
        Ok(())
    }

    /// When a daemon first ran each source it has run ([`Catalog::note_sources`]).
    pub fn first_seen(&self) -> Result<HashMap<String, Timestamp>> {
        let mut st = self.conn.prepare_cached("SELECT name, first_seen FROM sources").map_err(self.err())?;
        let rows = st
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .map_err(self.err())?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(self.err())?;
        Ok(rows.into_iter().filter_map(|(n, ms)| Timestamp::from_millisecond(ms).ok().map(|t| (n, t))).collect())
    }

    /// The newest job of `source` and `kind` (of any status).
    pub fn last(&self, source: &str, kind: Kind) -> Result<Option<Job>> {
        Ok(self
            .query(
                &format!("SELECT {COLUMNS} FROM jobs WHERE source = ?1 AND kind = ?2 ORDER BY started_at DESC, id DESC LIMIT 1"),
                params![source, kind.as_str()],
            )?
            .pop())
    }

    /// The newest job of `source` and `kind` that has ended.
    pub fn last_finished(&self, source: &str, kind: Kind) -> Result<Option<Job>> {
        Ok(self
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM jobs WHERE source = ?1 AND kind = ?2 AND status != 'running'
                     ORDER BY started_at DESC, id DESC LIMIT 1"
                ),
                params![source, kind.as_str()],
            )?
            .pop())
    }

    /// What scheduling needs of a source's jobs of one kind: when the newest successful
    /// one started, and the failures that ended after it.
    pub fn history(&self, source: &str, kind: Kind) -> Result<crate::plan::History> {
        let last_success: Option<i64> = self
            .conn
            .query_row(
                "SELECT max(started_at) FROM jobs WHERE source = ?1 AND kind = ?2 AND status IN ('succeeded', 'partial')",
                params![source, kind.as_str()],
                |r| r.get(0),
            )
            .map_err(self.err())?;
        let (failures, last_failure): (i64, Option<i64>) = self
            .conn
            .query_row(
                "SELECT count(*), max(ended_at) FROM jobs WHERE source = ?1 AND kind = ?2
                   AND status IN ('failed', 'interrupted', 'cancelled') AND started_at > ?3",
                params![source, kind.as_str(), last_success.unwrap_or(i64::MIN)],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(self.err())?;
        let t = |v: Option<i64>| v.and_then(|m| Timestamp::from_millisecond(m).ok());
        Ok(crate::plan::History {
            last_success: t(last_success),
            failures: failures.clamp(0, u32::MAX as i64) as u32,
            last_failure: t(last_failure),
        })
    }

    /// Jobs, newest first.
    pub fn jobs(&self, f: &Filter) -> Result<Vec<Job>> {
        let mut sql = format!("SELECT {COLUMNS} FROM jobs WHERE 1 = 1");
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        if let Some(s) = &f.source {
            args.push(s.clone().into());
            sql.push_str(&format!(" AND source = ?{}", args.len()));
        }
        if let Some(k) = f.kind {
            args.push(k.as_str().to_string().into());
            sql.push_str(&format!(" AND kind = ?{}", args.len()));
        }
        if let Some(t) = f.since {
            args.push(ms(t).into());
            sql.push_str(&format!(" AND started_at >= ?{}", args.len()));
        }
        sql.push_str(" ORDER BY started_at DESC, id DESC");
        if let Some(n) = f.limit {
            sql.push_str(&format!(" LIMIT {n}"));
        }
        self.query(&sql, rusqlite::params_from_iter(args))
    }

    /// Per source and UTC day since `since`: backup jobs that ended well and that failed
    /// (the console's 30-day strip), from the per-day totals triggers keep.
    pub fn daily_backups(&self, since: Timestamp) -> Result<Vec<(String, String, u64, u64)>> {
        let day = since.strftime("%Y-%m-%d").to_string();
        let mut st = self
            .conn
            .prepare_cached("SELECT source, day, ok, failed FROM job_days WHERE day >= ?1")
            .map_err(self.err())?;
        let rows = st
            .query_map(params![day], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)?.max(0) as u64, r.get::<_, i64>(3)?.max(0) as u64))
            })
            .map_err(self.err())?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(self.err())
    }

    /// Appends a line to job `row`'s log (at most [`MAX_LOG_LINES`] lines, each bounded).
    pub fn log(&self, row: i64, line: &str, now: Timestamp) -> Result<()> {
        let line: String = line.chars().take(2000).collect();
        self.conn
            .execute(
                "INSERT INTO job_log (job, seq, at, line)
                 SELECT ?1, coalesce(max(seq), 0) + 1, ?2, ?3 FROM job_log WHERE job = ?1
                 HAVING coalesce(max(seq), 0) < ?4",
                params![row, ms(now), line, MAX_LOG_LINES],
            )
            .map_err(self.err())?;
        Ok(())
    }

    /// Job `row`'s log: `(time, line)`, oldest first.
    pub fn job_log(&self, row: i64) -> Result<Vec<(String, String)>> {
        let mut st =
            self.conn.prepare_cached("SELECT at, line FROM job_log WHERE job = ?1 ORDER BY seq").map_err(self.err())?;
        let rows = st
            .query_map(params![row], |r| {
                let at: i64 = r.get(0)?;
                Ok((Timestamp::from_millisecond(at).map(|t| t.to_string()).unwrap_or_default(), r.get(1)?))
            })
            .map_err(self.err())?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(self.err())
    }

    /// One job by its id (`<host>/<number>`).
    pub fn job(&self, id: &str) -> Result<Option<Job>> {
        let Some((host, n)) = id.rsplit_once('/') else { return Ok(None) };
        let Ok(row) = n.parse::<i64>() else { return Ok(None) };
        let sql = format!("SELECT {COLUMNS} FROM jobs WHERE id = ?1 AND host = ?2");
        Ok(self.query(&sql, params![row, host])?.into_iter().next())
    }

    pub fn set_status(&self, row: i64, status: Status, error: &str, now: Timestamp) -> Result<()> {
        self.conn
            .execute(
                "UPDATE jobs SET status = ?2, ended_at = coalesce(ended_at, ?3), error = coalesce(error, ?4) WHERE id = ?1",
                params![row, status.as_str(), ms(now), error],
            )
            .map_err(self.err())?;
        Ok(())
    }

    /// Marks job `row` interrupted if it is still recorded running; whether it was (a job
    /// that recorded its own end meanwhile keeps it).
    pub fn interrupt_if_running(&self, row: i64, error: &str, now: Timestamp) -> Result<bool> {
        let n = self
            .conn
            .execute(
                "UPDATE jobs SET status = ?2, ended_at = coalesce(ended_at, ?3), error = coalesce(error, ?4) \
                 WHERE id = ?1 AND status = 'running'",
                params![row, Status::Interrupted.as_str(), ms(now), error],
            )
            .map_err(self.err())?;
        Ok(n > 0)
    }

    /// Stores the record of drill job `row` (replacing an earlier one).
    pub fn save_drill(&self, row: i64, source: &str, started: Timestamp, verdict: &str, record: &str) -> Result<()> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO drills (job, source, started_at, verdict, record) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![row, source, ms(started), verdict, record],
            )
            .map_err(self.err())?;
        Ok(())
    }

    /// Drill jobs, oldest first, each with its record if it got one (a drill whose process
    /// was killed has none).
    pub fn drills(&self, source: Option<&str>, since: Option<Timestamp>) -> Result<Vec<(Job, Option<String>)>> {
        let cols: Vec<String> = COLUMNS.split(", ").map(|c| format!("j.{c}")).collect();
        // `(?1 IS NULL OR source = ?1)` would defeat the (source, kind, started_at) index:
        // /metrics asks this for every source of a 100,000-job catalog.
        let by_source = if source.is_some() { "j.source = ?1" } else { "?1 IS NULL" };
        let sql = format!(
            "SELECT {}, d.record FROM jobs j LEFT JOIN drills d ON d.job = j.id
             WHERE {by_source} AND j.kind = 'drill' AND (?2 IS NULL OR j.started_at >= ?2)
             ORDER BY j.started_at, j.id",
            cols.join(", ")
        );
        let mut st = self.conn.prepare_cached(&sql).map_err(self.err())?;
        let rows = st
            .query_map(params![source, since.map(ms)], |r| Ok((row_to_job(r)?, r.get::<_, Option<String>>(20)?)))
            .map_err(self.err())?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(self.err())
    }

    /// The active alert conditions: key, event JSON, since (Unix ms).
    pub fn alerts_active(&self) -> Result<Vec<(String, String, i64)>> {
        let mut st =
            self.conn.prepare_cached("SELECT key, event, since FROM alert_state ORDER BY key").map_err(self.err())?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).map_err(self.err())?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(self.err())
    }

    pub fn alert_raise(&self, key: &str, event: &str, now: Timestamp) -> Result<()> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO alert_state (key, event, since) VALUES (?1, ?2, ?3)",
                params![key, event, ms(now)],
            )
            .map_err(self.err())?;
        Ok(())
    }

    /// Forgets a condition that cleared, and whom it was sent to.
    pub fn alert_clear(&self, key: &str) -> Result<()> {
        self.conn.execute("DELETE FROM alert_state WHERE key = ?1", params![key]).map_err(self.err())?;
        self.conn.execute("DELETE FROM alert_sent WHERE key = ?1", params![key]).map_err(self.err())?;
        Ok(())
    }

    /// When `target` was last told of condition `key` (Unix ms).
    pub fn alert_last_sent(&self, key: &str, target: &str) -> Result<Option<i64>> {
        self.conn
            .query_row("SELECT at FROM alert_sent WHERE key = ?1 AND target = ?2", params![key, target], |r| r.get(0))
            .optional()
            .map_err(self.err())
    }

    pub fn alert_sent(&self, key: &str, target: &str, now: Timestamp) -> Result<()> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO alert_sent (key, target, at) VALUES (?1, ?2, ?3)",
                params![key, target, ms(now)],
            )
            .map_err(self.err())?;
        Ok(())
    }

    /// The targets that were told of condition `key`.
    pub fn alert_told(&self, key: &str) -> Result<Vec<String>> {
        let mut st = self
            .conn
            .prepare_cached("SELECT target FROM alert_sent WHERE key = ?1 ORDER BY target")
            .map_err(self.err())?;
        let rows = st.query_map(params![key], |r| r.get(0)).map_err(self.err())?;
        rows.collect::<rusqlite::Result<Vec<String>>>().map_err(self.err())
    }

    #[allow(clippy::too_many_arguments)]
    pub fn record_delivery(
        &self,
        target: &str,
        key: &str,
        event: &str,
        phase: &str,
        attempt: u32,
        error: Option<&str>,
        now: Timestamp,
    ) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO deliveries (at, target, key, event, phase, attempt, ok, error) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![ms(now), target, key, event, phase, attempt, error.is_none() as i64, error],
            )
            .map_err(self.err())?;
        Ok(())
    }

    /// Delivery attempts, oldest first.
    pub fn deliveries(&self, since: Option<Timestamp>) -> Result<Vec<Delivery>> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT at, target, key, event, phase, attempt, error FROM deliveries WHERE (?1 IS NULL OR at >= ?1) ORDER BY id",
            )
            .map_err(self.err())?;
        let rows = st
            .query_map(params![since.map(ms)], |r| {
                Ok(Delivery {
                    at: time_of(r.get(0)?).unwrap_or_default(),
                    target: r.get(1)?,
                    key: r.get(2)?,
                    event: r.get(3)?,
                    phase: r.get(4)?,
                    attempt: r.get(5)?,
                    error: r.get(6)?,
                })
            })
            .map_err(self.err())?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(self.err())
    }

    /// Finished jobs aggregated by source, kind and status, with the duration histogram's
    /// bucket counts (`crate::metrics::BUCKETS`), for `/metrics`: the running totals (schema
    /// v4), which count every job that ever ended, also those since expired.
    pub fn job_stats(&self) -> Result<Vec<JobStat>> {
        let n = crate::metrics::BUCKETS.len();
        let cols: Vec<String> = (0..n).map(|i| format!("b{i}")).collect();
        let sql = format!(
            "SELECT source, kind, status, count, bytes_added, duration_ms, last_success_ms, {}
             FROM job_totals ORDER BY source, kind, status",
            cols.join(", ")
        );
        let mut st = self.conn.prepare_cached(&sql).map_err(self.err())?;
        let rows = st
            .query_map([], |r| {
                let mut b = Vec::with_capacity(n);
                for i in 0..n {
                    b.push(r.get::<_, i64>(7 + i)?.max(0) as u64);
                }
                Ok(JobStat {
                    source: r.get(0)?,
                    kind: r.get(1)?,
                    status: r.get(2)?,
                    count: r.get::<_, i64>(3)?.max(0) as u64,
                    bytes_added: r.get::<_, i64>(4)?.max(0) as u64,
                    duration_sum: r.get::<_, i64>(5)?.max(0) as f64 / 1000.0,
                    last_success_ms: r.get(6)?,
                    buckets: b,
                })
            })
            .map_err(self.err())?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(self.err())
    }

    /// Deletes finished jobs that ended before `before` (the catalog's own retention).
    pub fn expire(&self, before: Timestamp) -> Result<usize> {
        self.conn.execute("DELETE FROM deliveries WHERE at < ?1", params![ms(before)]).map_err(self.err())?;
        self.conn
            .execute("DELETE FROM job_days WHERE day < ?1", params![before.strftime("%Y-%m-%d").to_string()])
            .map_err(self.err())?;
        self.conn
            .execute(
                "DELETE FROM job_log WHERE job IN (SELECT id FROM jobs WHERE status != 'running' AND ended_at < ?1)",
                params![ms(before)],
            )
            .map_err(self.err())?;
        self.conn
            .execute(
                "DELETE FROM drills WHERE job IN (SELECT id FROM jobs WHERE status != 'running' AND ended_at < ?1)",
                params![ms(before)],
            )
            .map_err(self.err())?;
        self.conn
            .execute("DELETE FROM jobs WHERE status != 'running' AND ended_at < ?1", params![ms(before)])
            .map_err(self.err())
    }

    pub fn count(&self) -> Result<u64> {
        self.conn
            .query_row("SELECT count(*) FROM jobs", [], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(self.err())
    }

    /// Whether any job of `source` was ever recorded.
    pub fn knows(&self, source: &str) -> Result<bool> {
        self.conn
            .query_row("SELECT count(*) FROM jobs WHERE source = ?1", params![source], |r| r.get::<_, i64>(0))
            .map(|n| n > 0)
            .map_err(self.err())
    }

    /// Records, for a source the catalog has no job of, a succeeded backup job per snapshot
    /// of it in the repository (trigger `rebuilt`). Returns how many were added.
    pub fn rebuild_from(
        &self,
        source: &str,
        class: &str,
        repository: &str,
        snapshots: &[(cairn_format::SnapshotId, cairn_format::snapshot::Snapshot)],
    ) -> Result<usize> {
        if self.knows(source)? {
            return Ok(0);
        }
        let mut n = 0;
        for (id, s) in snapshots.iter().filter(|(_, s)| s.source.as_deref() == Some(source)) {
            let Ok(t) = s.time.parse::<Timestamp>() else { continue };
            let end = t.checked_add(jiff::SignedDuration::from_secs_f64(s.summary.duration_secs.max(0.0))).unwrap_or(t);
            let job = NewJob {
                host: s.hostname.clone(),
                kind: Kind::Backup,
                source: source.to_string(),
                class: class.to_string(),
                repository: repository.to_string(),
                trigger: Trigger::Rebuilt,
                actor: s.username.clone(),
                label: s.label.clone(),
                reason: None,
                scheduled_at: None,
            };
            let row = self.start(&job, t)?;
            let files = s.summary.files_new + s.summary.files_changed + s.summary.files_unmodified;
            let status = if s.partial { Status::Partial } else { Status::Succeeded };
            self.finish(
                row,
                status,
                &Outcome {
                    files: Some(files),
                    bytes_read: Some(s.summary.bytes_read),
                    bytes_added: Some(s.summary.bytes_added),
                    snapshot: Some(id.to_hex()),
                    error: None,
                },
                end,
            )?;
            n += 1;
        }
        Ok(n)
    }

    /// Runs `f` in one transaction (bulk inserts).
    pub fn transaction<T>(&mut self, f: impl FnOnce(&Catalog) -> Result<T>) -> Result<T> {
        self.conn.execute_batch("BEGIN IMMEDIATE").map_err(self.err())?;
        match f(self) {
            Ok(v) => {
                self.conn.execute_batch("COMMIT").map_err(self.err())?;
                Ok(v)
            }
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(source: &str) -> NewJob {
        NewJob {
            host: "h".into(),
            kind: Kind::Backup,
            source: source.into(),
            class: "c".into(),
            repository: "r".into(),
            trigger: Trigger::Schedule,
            actor: "root".into(),
            label: None,
            reason: None,
            scheduled_at: None,
        }
    }

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).expect("time")
    }

    #[test]
    fn daily_backup_outcomes_follow_jobs_as_they_end() {
        let dir = tempfile::tempdir().expect("tmp");
        let c = Catalog::open(&dir.path().join("c.db")).expect("catalog");
        let j = job("a");
        let r1 = c.start(&j, t(0)).expect("start");
        c.finish(r1, Status::Succeeded, &Outcome::default(), t(5)).expect("finish");
        let r2 = c.start(&j, t(10)).expect("start");
        // Running jobs are not counted until they end.
        assert_eq!(c.daily_backups(t(-86_400)).expect("days")[0].2, 1);
        c.finish(r2, Status::Failed, &Outcome::default(), t(15)).expect("finish");
        c.record(&j, Status::Failed, Some("x"), t(20)).expect("record");
        let d = c.daily_backups(t(-86_400)).expect("days");
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].0.as_str(), d[0].2, d[0].3), ("a", 1, 2));
        assert_eq!(d[0].1, t(0).strftime("%Y-%m-%d").to_string());
        assert!(c.daily_backups(t(2 * 86_400)).expect("days").is_empty(), "before the window");
    }

    #[test]
    fn job_totals_count_every_way_a_job_ends_and_outlive_expiry() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("c.db");
        // A version 3 catalog with one finished job: migrated into the totals.
        {
            let conn = Connection::open(&p).expect("raw");
            for v in [SCHEMA_V1, SCHEMA_V2, SCHEMA_V3] {
                conn.execute_batch(v).expect("schema");
            }
            conn.execute("INSERT INTO meta (key, value) VALUES ('schema_version', '3')", []).expect("meta");
            conn.execute(
                "INSERT INTO jobs (host, kind, source, class, repository, trigger, actor, started_at, ended_at, status, bytes_added)
                 VALUES ('h', 'backup', 'a', 'c', 'r', 'schedule', 'root', 0, 5000, 'succeeded', 7)",
                [],
            )
            .expect("job");
        }
        let c = Catalog::open(&p).expect("migrated");
        let get = |c: &Catalog, status: &str| {
            c.job_stats().expect("stats").into_iter().find(|s| s.source == "a" && s.status == status)
        };
        let s = get(&c, "succeeded").expect("migrated totals");
        assert_eq!((s.count, s.bytes_added, s.duration_sum, s.last_success_ms), (1, 7, 5.0, Some(5000)));
        assert_eq!(s.buckets, vec![0, 1, 1, 1, 1, 1, 1, 1]);
        // Finished normally, finished twice (counted once), marked interrupted, recorded
        // as never run.
        let r = c.start(&job("a"), t(0)).expect("start");
        c.finish(r, Status::Succeeded, &Outcome { bytes_added: Some(3), ..Outcome::default() }, t(2)).expect("finish");
        c.finish(r, Status::Succeeded, &Outcome::default(), t(3)).expect("again");
        let r = c.start(&job("a"), t(10)).expect("start");
        c.set_status(r, Status::Interrupted, "killed", t(20)).expect("interrupted");
        c.record(&job("a"), Status::Cancelled, Some("hook"), t(30)).expect("record");
        let s = get(&c, "succeeded").expect("totals");
        assert_eq!((s.count, s.bytes_added), (2, 10));
        assert_eq!(s.last_success_ms, Some(ms(t(2))));
        assert_eq!(get(&c, "interrupted").expect("interrupted").count, 1);
        assert_eq!(get(&c, "cancelled").expect("cancelled").count, 1);
        // Expiring old jobs does not make the counters go down.
        assert!(c.expire(t(1000)).expect("expire") >= 4);
        assert_eq!(get(&c, "succeeded").expect("kept").count, 2);
    }

    #[test]
    fn history_counts_failures_after_the_last_success() {
        let dir = tempfile::tempdir().expect("tmp");
        let c = Catalog::open(&dir.path().join("c.db")).expect("open");
        let a = c.start(&job("s"), t(0)).expect("start");
        c.finish(a, Status::Succeeded, &Outcome::default(), t(5)).expect("finish");
        let b = c.start(&job("s"), t(10)).expect("start");
        c.finish(b, Status::Failed, &Outcome { error: Some("x".into()), ..Outcome::default() }, t(12)).expect("fin");
        let h = c.history("s", Kind::Backup).expect("history");
        assert_eq!(h.last_success, Some(t(0)));
        assert_eq!((h.failures, h.last_failure), (1, Some(t(12))));
        let d = c.start(&job("s"), t(20)).expect("start");
        c.finish(d, Status::Partial, &Outcome::default(), t(25)).expect("finish");
        let h = c.history("s", Kind::Backup).expect("history");
        assert_eq!((h.last_success, h.failures), (Some(t(20)), 0));
        assert_eq!(c.jobs(&Filter { source: Some("s".into()), ..Filter::default() }).expect("jobs").len(), 3);
        assert_eq!(c.jobs(&Filter { since: Some(t(10)), ..Filter::default() }).expect("jobs").len(), 2);
    }

    #[test]
    fn refuses_a_newer_schema() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("c.db");
        drop(Catalog::open(&p).expect("open"));
        let conn = Connection::open(&p).expect("raw");
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'", []).expect("update");
        drop(conn);
        let e = Catalog::open(&p).err().expect("refused");
        assert!(e.to_string().contains("newer than this cairn"), "{e}");
    }

    #[test]
    fn a_version_1_catalog_is_migrated_with_its_jobs_kept() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("c.db");
        let conn = Connection::open(&p).expect("raw");
        conn.execute_batch(SCHEMA_V1).expect("v1");
        conn.execute("INSERT INTO meta (key, value) VALUES ('schema_version', '1')", []).expect("meta");
        conn.execute(
            "INSERT INTO jobs (host, kind, source, class, repository, trigger, actor, started_at, ended_at, status)
             VALUES ('h', 'drill', 's', 'c', 'r', 'manual', 'root', 1, 2, 'failed')",
            [],
        )
        .expect("job");
        drop(conn);
        let c = Catalog::open(&p).expect("migrated");
        let drills = c.drills(Some("s"), None).expect("drills");
        assert_eq!(drills.len(), 1);
        assert!(drills[0].1.is_none());
        c.save_drill(drills[0].0.row, "s", t(0), "failed", "{}").expect("save");
        assert_eq!(c.drills(None, None).expect("drills")[0].1.as_deref(), Some("{}"));
        drop(c);
        let conn = Connection::open(&p).expect("raw");
        let v: String =
            conn.query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |r| r.get(0)).expect("v");
        assert_eq!(v, SCHEMA_VERSION.to_string());
    }

    #[test]
    fn many_processes_opening_a_fresh_catalog_at_once_all_get_it() {
        for round in 0..5 {
            let dir = tempfile::tempdir().expect("tmp");
            let p = dir.path().join(format!("c{round}.db"));
            let threads: Vec<_> = (0..8)
                .map(|i| {
                    let p = p.clone();
                    std::thread::spawn(move || {
                        let c = Catalog::open(&p)?;
                        if i % 2 == 0 {
                            c.start(&job("s"), t(i))?;
                        }
                        c.jobs(&Filter::default()).map(|_| ())
                    })
                })
                .collect();
            for t in threads {
                t.join().expect("thread").expect("open");
            }
        }
    }
}

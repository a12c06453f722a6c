//! `status`: for every source, its newest recoverable point as the repository holds it,
//! its data age against the class RPO, its last job and next run, and how far each copy
//! lags. Data age is read from the repository (snapshots name their source), never from
//! what a daemon believes it did, so it is right on any host that reads the repository.

use std::collections::HashMap;

use cairn_format::snapshot::Snapshot;
use cairn_format::SnapshotId;
use jiff::{SignedDuration, Timestamp};

use crate::catalog::{Catalog, Kind};
use crate::jobs::Env;
use crate::plan::{decide, Decision};
use crate::Result;

/// A data age against its RPO.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RpoState {
    Ok,
    /// Past 80% of the RPO.
    AtRisk,
    Breached,
    /// No backup yet, but the source came under the daemon less than one RPO ago: its
    /// first window has not been missed.
    Pending,
    /// No RPO set.
    NoObjective,
    /// The repository could not be read.
    Unknown,
}

impl RpoState {
    pub fn as_str(self) -> &'static str {
        match self {
            RpoState::Ok => "OK",
            RpoState::AtRisk => "AT RISK",
            RpoState::Breached => "BREACHED",
            RpoState::Pending => "PENDING",
            RpoState::NoObjective => "-",
            RpoState::Unknown => "UNKNOWN",
        }
    }
}

/// Where a data age stands against `rpo`. `new_for`: how long ago a daemon first ran the
/// source (none: never); a source with no backup is pending, not breached, within its
/// first RPO.
pub fn rpo_state(
    age: Option<SignedDuration>,
    rpo: Option<SignedDuration>,
    new_for: Option<SignedDuration>,
) -> RpoState {
    match (age, rpo) {
        (_, None) => RpoState::NoObjective,
        (None, Some(r)) if new_for.is_some_and(|n| n <= r) => RpoState::Pending,
        (None, Some(_)) => RpoState::Breached,
        (Some(a), Some(r)) if a > r => RpoState::Breached,
        (Some(a), Some(r)) if a.as_secs_f64() > 0.8 * r.as_secs_f64() => RpoState::AtRisk,
        (Some(_), Some(_)) => RpoState::Ok,
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct CopyStatus {
    pub repository: String,
    pub newest: Option<String>,
    /// How far the copy's newest point is behind the primary's, in seconds.
    pub lag_secs: Option<i64>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct SourceStatus {
    pub source: String,
    pub class: String,
    pub kind: String,
    pub repository: String,
    /// Time of the newest snapshot of the source in its repository.
    pub newest: Option<String>,
    pub newest_snapshot: Option<String>,
    pub newest_host: Option<String>,
    /// Age of the newest recoverable point: the newest backup, or for PostgreSQL the
    /// newest WAL in the repository after a base backup (the measured RPO).
    pub data_age_secs: Option<i64>,
    /// PostgreSQL: age of the newest WAL file in the repository (archived or streamed).
    pub wal_age_secs: Option<i64>,
    pub rpo_secs: Option<i64>,
    pub rpo_state: RpoState,
    pub last_job: Option<String>,
    pub last_status: Option<String>,
    pub last_error: Option<String>,
    pub next_run: Option<String>,
    pub copies: Vec<CopyStatus>,
    /// The newest backup within `[daemon] ransomware_window` that looks like files being
    /// encrypted in place (see [`suspect`]).
    pub suspect: Option<Suspect>,
    /// Why the repository could not be read.
    pub error: Option<String>,
}

/// A backup in which an unusual share of the files changed and the new data does not
/// compress: what encryption in place (ransomware) looks like from the repository, since
/// real edits change few files and ordinary data compresses.
#[derive(Debug, Clone, serde::Serialize, PartialEq)]
pub struct Suspect {
    pub snapshot: String,
    pub time: String,
    /// Files of the previous backup that changed, and how many it had.
    pub changed: u64,
    pub before: u64,
    /// Plaintext of the new data, and what storing it took.
    pub data_added: u64,
    pub bytes_added: u64,
}

/// New data smaller than this says nothing about compressibility.
const SUSPECT_MIN_DATA: u64 = 1 << 20;
/// Stored at least this share of its plaintext: the new data did not compress.
const INCOMPRESSIBLE: f64 = 0.9;

/// Whether `s` is a [`Suspect`] under the thresholds (`changed_pct` percent of at least
/// `min_files` files).
pub fn suspect(id: &SnapshotId, s: &Snapshot, changed_pct: f64, min_files: u64) -> Option<Suspect> {
    let m = &s.summary;
    let before = m.files_changed + m.files_unmodified;
    let unusual = m.files_changed >= min_files && (m.files_changed as f64) * 100.0 >= changed_pct * before as f64;
    let incompressible =
        m.data_added >= SUSPECT_MIN_DATA && m.bytes_added as f64 >= INCOMPRESSIBLE * m.data_added as f64;
    (unusual && incompressible).then(|| Suspect {
        snapshot: id.to_hex(),
        time: s.time.clone(),
        changed: m.files_changed,
        before,
        data_added: m.data_added,
        bytes_added: m.bytes_added,
    })
}

type Listing = std::result::Result<Vec<(SnapshotId, Snapshot)>, String>;

fn newest<'a>(snaps: &'a [(SnapshotId, Snapshot)], source: &str) -> Option<(&'a SnapshotId, &'a Snapshot, Timestamp)> {
    snaps
        .iter()
        .filter(|(_, s)| s.source.as_deref() == Some(source))
        .filter_map(|(id, s)| s.time.parse::<Timestamp>().ok().map(|t| (id, s, t)))
        .max_by_key(|(_, _, t)| *t)
}

/// The status of every source (or of `only`). Each repository is listed once.
pub fn status(env: &Env, catalog: &Catalog, now: Timestamp, only: Option<&str>) -> Result<Vec<SourceStatus>> {
    Ok(status_and_repositories(env, catalog, now, only)?.0)
}

/// What the snapshot lists say of a repository as a whole.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RepositoryFacts {
    pub snapshots: u64,
    /// The sum of the snapshots' logical sizes (each snapshot's files, counted in full).
    pub logical_bytes: u64,
}

/// [`status`], and for each repository it listed (readable ones only) its [`RepositoryFacts`].
pub fn status_and_repositories(
    env: &Env,
    catalog: &Catalog,
    now: Timestamp,
    only: Option<&str>,
) -> Result<(Vec<SourceStatus>, std::collections::BTreeMap<String, RepositoryFacts>)> {
    let mut listings: HashMap<String, Listing> = HashMap::new();
    let mut list = |name: &str| -> Listing {
        listings
            .entry(name.to_string())
            .or_insert_with(|| {
                env.open_repository(name)
                    .and_then(|r| Ok(r.list_snapshots_lenient()?.snapshots))
                    .map_err(|e| crate::one_line(&e))
            })
            .clone()
    };
    let daemon_start = now;
    let first_seen = catalog.first_seen()?;
    let mut out = Vec::new();
    for s in env.policy.sources.values().filter(|s| only.is_none_or(|o| o == s.name)) {
        let primary = list(&s.repository.value);
        let (newest_t, newest_id, newest_host, error) = match &primary {
            Ok(snaps) => match newest(snaps, &s.name) {
                Some((id, snap, t)) => (Some(t), Some(id.to_hex()), Some(snap.hostname.clone()), None),
                None => (None, None, None, None),
            },
            Err(e) => (None, None, None, Some(e.clone())),
        };
        // PostgreSQL recovers to the newest WAL past a base backup: that is its data age.
        let mut wal_age = None;
        let mut age = newest_t.map(|t| now.duration_since(t));
        if let (cairn_policy::file::SourceKind::Postgres { .. }, Some(base)) = (&s.kind, newest_t) {
            let wal = env
                .open_repository(&s.repository.value)
                .ok()
                .and_then(|r| cairn_pg::backup::newest_wal_time(&r).ok().flatten())
                .and_then(|secs| Timestamp::from_second(secs).ok());
            if let Some(w) = wal {
                wal_age = Some(now.duration_since(w).as_secs().max(0));
                age = Some(now.duration_since(w.max(base)));
            }
        }
        let new_for = first_seen.get(&s.name).map(|t| now.duration_since(*t));
        let state = if error.is_some() { RpoState::Unknown } else { rpo_state(age, s.rpo.value, new_for) };
        let d = &env.policy.daemon;
        let window = d.ransomware_window.unwrap_or(SignedDuration::from_hours(7 * 24));
        let suspect = match &primary {
            Ok(snaps) => snaps
                .iter()
                .filter(|(_, x)| x.source.as_deref() == Some(s.name.as_str()))
                .filter(|(_, x)| x.time.parse::<Timestamp>().is_ok_and(|t| now.duration_since(t) <= window))
                .filter_map(|(id, x)| {
                    suspect(id, x, d.ransomware_changed.unwrap_or(60.0), d.ransomware_min_files.unwrap_or(100))
                })
                .max_by(|a, b| a.time.cmp(&b.time)),
            Err(_) => None,
        };
        let last = catalog.last(&s.name, Kind::Backup)?;
        let h = catalog.history(&s.name, Kind::Backup)?;
        let next = match decide(&s.schedules.value, &s.name, &h, daemon_start, now, env.retry_delay()) {
            Decision::Due { .. } => Some(now),
            Decision::Wait(t) => Some(t),
            Decision::Never => None,
        };
        let mut copies = Vec::new();
        for c in &s.copy_to.value {
            let (newest_c, lag, err) = match list(&c.repository) {
                Ok(snaps) => {
                    // A copy keeps the original's time, host and paths but not its source
                    // field's meaning on another host: matched by the source name it carries.
                    let n = newest(&snaps, &s.name).map(|(_, _, t)| t);
                    let lag = match (newest_t, n) {
                        (Some(p), Some(c)) => Some(p.duration_since(c).as_secs().max(0)),
                        (Some(p), None) => Some(now.duration_since(p).as_secs().max(0)),
                        _ => None,
                    };
                    (n.map(|t| t.to_string()), lag, None)
                }
                Err(e) => (None, None, Some(e)),
            };
            copies.push(CopyStatus { repository: c.repository.clone(), newest: newest_c, lag_secs: lag, error: err });
        }
        out.push(SourceStatus {
            source: s.name.clone(),
            class: s.class.clone(),
            kind: s.kind.name().to_string(),
            repository: s.repository.value.clone(),
            newest: newest_t.map(|t| t.to_string()),
            newest_snapshot: newest_id,
            newest_host,
            data_age_secs: age.map(|a| a.as_secs().max(0)),
            wal_age_secs: wal_age,
            rpo_secs: s.rpo.value.map(|r| r.as_secs()),
            rpo_state: state,
            last_job: last.as_ref().map(|j| j.id.clone()),
            last_status: last.as_ref().map(|j| j.status.clone()),
            last_error: last.and_then(|j| j.error),
            next_run: next.map(|t| t.to_string()),
            copies,
            suspect,
            error,
        });
    }
    let facts = listings
        .into_iter()
        .filter_map(|(name, l)| {
            let snaps = l.ok()?;
            let logical = snaps.iter().fold(0u64, |a, (_, s)| a.saturating_add(s.summary.total_bytes));
            Some((name, RepositoryFacts { snapshots: snaps.len() as u64, logical_bytes: logical }))
        })
        .collect();
    Ok((out, facts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds() {
        let m = SignedDuration::from_mins;
        assert_eq!(rpo_state(Some(m(10)), Some(m(15)), None), RpoState::Ok);
        assert_eq!(rpo_state(Some(m(13)), Some(m(15)), None), RpoState::AtRisk);
        assert_eq!(rpo_state(Some(m(16)), Some(m(15)), None), RpoState::Breached);
        assert_eq!(rpo_state(None, Some(m(15)), None), RpoState::Breached);
        assert_eq!(rpo_state(Some(m(16)), None, None), RpoState::NoObjective);
    }

    #[test]
    fn a_new_source_is_pending_for_one_rpo_then_breached() {
        let m = SignedDuration::from_mins;
        assert_eq!(rpo_state(None, Some(m(15)), Some(m(0))), RpoState::Pending);
        assert_eq!(rpo_state(None, Some(m(15)), Some(m(15))), RpoState::Pending);
        assert_eq!(rpo_state(None, Some(m(15)), Some(m(16))), RpoState::Breached);
        // Once it has a backup, its age alone decides.
        assert_eq!(rpo_state(Some(m(16)), Some(m(15)), Some(m(1))), RpoState::Breached);
    }
}

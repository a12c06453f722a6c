//! A base backup, whole: check the data directory and the server, `pg_backup_start()`,
//! the data directory through the file engine (changed files only, against the previous
//! base backup of the same host and directory), `pg_backup_stop()`, wait until the WAL the
//! backup needs is in the repository, then save the snapshot with the backup's facts. The
//! operation `cairn pg backup` and the daemon's postgres sources both call.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use cairn_engine::{Archiver, BackupOptions, Progress, Provenance};
use cairn_format::snapshot::{PgBackup, Snapshot};
use cairn_format::SnapshotId;
use cairn_fs::{FsSource, FsSourceOptions};
use cairn_repo::Repository;

use crate::base::{self, LiveSource};
use crate::session::Session;
use crate::wal::{self, Kind, WalName};
use crate::{Error, Result};

#[derive(Debug, Clone)]
pub struct BaseBackupRequest {
    pub data_dir: PathBuf,
    /// libpq connection string.
    pub connection: String,
    /// Host, time, tags, label, source, job and audit head, as the snapshot records them.
    pub provenance: Provenance,
    /// Force the starting checkpoint now (else let it spread out).
    pub fast_checkpoint: bool,
    /// How long to wait for the WAL the backup needs to reach the repository.
    pub wal_timeout: Duration,
    pub threads: usize,
    pub uploads: usize,
    /// zstd level for new data (0: none); `None`: the repository's `compression_level`.
    pub compression: Option<i32>,
}

/// Base backups (snapshots of kind `postgres` with their facts) in the repository.
pub fn postgres_snapshots(repo: &Repository) -> Result<Vec<(SnapshotId, Snapshot)>> {
    Ok(repo.list_snapshots()?.into_iter().filter(|(_, s)| s.kind == "postgres" && s.postgres.is_some()).collect())
}

/// Takes a base backup; `progress` is updated as the files are read.
pub fn base_backup(repo: &Repository, req: &BaseBackupRequest, progress: &Progress) -> Result<(SnapshotId, Snapshot)> {
    let data_dir =
        std::fs::canonicalize(&req.data_dir).map_err(|e| Error::io(req.data_dir.display().to_string(), e))?;
    base::check_data_dir(&data_dir)?;
    let mut sess =
        Session::connect(&req.connection).map_err(|e| Error::Sql(format!("connecting to PostgreSQL: {e}")))?;
    let srv = base::server(&mut sess)?;
    let served = std::fs::canonicalize(&srv.data_dir).unwrap_or_else(|_| PathBuf::from(&srv.data_dir));
    if served != data_dir {
        return Err(Error::Setup(format!(
            "the server on this connection runs on {}, not on {}",
            srv.data_dir,
            data_dir.display()
        )));
    }
    if srv.wal_level == "minimal" {
        return Err(Error::Setup(
            "wal_level = minimal keeps no WAL for recovery: set wal_level = replica (and restart)".into(),
        ));
    }
    let _lease = repo.lease("pg backup", &req.provenance.host)?;
    let paths = vec![data_dir.display().to_string()];
    let parent =
        postgres_snapshots(repo)?.into_iter().rfind(|(_, s)| s.hostname == req.provenance.host && s.paths == paths);
    let started = base::start(&mut sess, &srv, &format!("cairn {}", req.provenance.time), req.fast_checkpoint)?;
    let src = FsSource::new(FsSourceOptions {
        excludes: base::excludes(&cairn_fs::gitignore_literal(&data_dir)),
        one_file_system: false,
        roots: vec![data_dir.clone()],
        atime: false,
    })
    .map_err(Error::Setup)?;
    let src = LiveSource { inner: src };
    let opts = BackupOptions {
        paths: vec![data_dir.clone()],
        parent: parent.as_ref().map(|(_, s)| s.tree),
        force: false,
        threads: req.threads,
        uploads: req.uploads,
        compression: req.compression,
    };
    // On any error the session ends with this function, which aborts the backup server-side.
    let outcome = Archiver::new(repo, &src, opts, progress).run().map_err(|e| match e {
        cairn_engine::Error::Repo(r) => Error::Repo(r),
        e => Error::Setup(e.to_string()),
    })?;
    if let Some(first) = outcome.errors.first() {
        return Err(Error::Setup(format!(
            "{} files of the data directory could not be read (first: {first}); no base backup saved",
            outcome.errors.len()
        )));
    }
    let stopped = base::stop(&mut sess, &srv)?;
    drop(sess);
    wait_for_wal(repo, &started.wal, &stopped.wal, srv.wal_segment_size, req.wal_timeout, &srv)?;
    let pg = PgBackup {
        server_version: srv.version,
        system_identifier: srv.system_identifier.clone(),
        data_dir: data_dir.display().to_string(),
        timeline: started.wal.timeline,
        start_lsn: started.lsn.clone(),
        stop_lsn: stopped.lsn.clone(),
        start_wal: started.wal.name.clone(),
        stop_wal: stopped.wal.name.clone(),
        start_time: started.time.clone(),
        stop_time: stopped.time.clone(),
        wal_segment_size: srv.wal_segment_size,
        backup_label: stopped.label.clone(),
        tablespace_map: stopped.tablespace_map.clone(),
    };
    let mut snap =
        outcome.snapshot(&req.provenance, cairn_fs::current_user(), "postgres", paths, parent.map(|(id, _)| id));
    snap.postgres = Some(pg);
    let id = repo.save_snapshot(&snap)?;
    Ok((id, snap))
}

/// Waits until every segment from `first` to `last` is in the repository.
fn wait_for_wal(
    repo: &Repository,
    first: &WalName,
    last: &WalName,
    seg: u64,
    timeout: Duration,
    srv: &base::Server,
) -> Result<()> {
    let (Some(a), Some(b)) = (first.segno(seg), last.segno(seg)) else {
        return Err(Error::Sql("unexpected WAL names from the server".into()));
    };
    let deadline = Instant::now() + timeout;
    loop {
        let present: std::collections::HashSet<String> = wal::list(repo)?
            .into_iter()
            .filter(|(w, _)| w.kind == Kind::Segment && w.timeline == last.timeline)
            .map(|(w, _)| w.name)
            .collect();
        let missing: Vec<String> =
            (a..=b).map(|n| wal::segment_name(last.timeline, n, seg)).filter(|n| !present.contains(n)).collect();
        if missing.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Error::Setup(format!(
                "WAL {} needed by this base backup did not reach the repository within {} s: set archive_mode = on and archive_command = 'cairn pg archive-push %p' (now: archive_mode = {}, archive_command = {:?}), or run 'cairn pg wal-stream'; no base backup saved",
                if missing.len() == 1 { missing[0].clone() } else { format!("{}..{}", missing[0], missing[missing.len() - 1]) },
                timeout.as_secs(),
                srv.archive_mode,
                srv.archive_command
            )));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// When the newest WAL file reached the repository (Unix seconds), if the store says:
/// the measured RPO of a cluster that archives (or streams) into it.
pub fn newest_wal_time(repo: &Repository) -> Result<Option<i64>> {
    let metas = repo.block_on(repo.store().list(wal::PREFIX)).map_err(cairn_repo::Error::from)?;
    Ok(metas
        .into_iter()
        .filter(|m| m.path.rsplit('/').next().and_then(WalName::parse).is_some())
        .filter_map(|m| m.modified)
        .max())
}

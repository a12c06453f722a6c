//! Repository maintenance the CLI and the daemon's jobs share: prune (the protocol lives in
//! the repo crate), then the PostgreSQL WAL no remaining base backup needs, then the
//! temporary files killed writers left in a local or SFTP repository; and the object-lock
//! verification of `check` and verify jobs.

use cairn_repo::{PruneOptions, PruneReport, Repository};

use crate::{Error, Result};

/// Prunes `repo` (at `location`, for the temporary-file sweep), counting the repack on
/// `meter`.
pub fn prune_repository(
    repo: &Repository,
    location: &str,
    opts: &PruneOptions,
    meter: &cairn_repo::Meter,
) -> Result<PruneReport> {
    let mut r = cairn_repo::prune_metered(repo, opts, meter)?;
    // WAL that no remaining PostgreSQL base backup needs.
    let backups: Vec<_> = repo.list_snapshots()?.into_iter().filter_map(|(_, s)| s.postgres).collect();
    let files = cairn_pg::wal::list(repo)?;
    let now = cairn_repo::lease::unix_now();
    for (w, size) in cairn_pg::wal::expirable(&files, &backups) {
        if repo.object_locked_until(&w.path(), now).is_some() {
            continue;
        }
        if !opts.dry_run {
            cairn_pg::wal::delete(repo, &w)?;
        }
        r.wal_files_deleted += 1;
        r.wal_bytes_deleted += size;
    }
    if !opts.dry_run {
        let age = std::time::Duration::from_secs(opts.grace_secs.max(3600) as u64);
        let swept = if !crate::repos::is_remote(location) {
            cairn_store::LocalStore::new(location).remove_stale_temporaries(age)
        } else if location.starts_with("sftp://") {
            match cairn_store_sftp::open(location) {
                Ok(s) => repo.block_on(s.remove_stale_temporaries(age)),
                Err(e) => Err(cairn_store::Error::Other { path: location.to_string(), message: e }),
            }
        } else {
            // Object stores have no temporaries: an upload appears whole or not at all.
            Ok((0, 0))
        };
        match swept {
            Ok((0, _)) => {}
            Ok((n, b)) => r.warnings.push(format!("removed {n} temporary files ({b} bytes) left by killed processes")),
            Err(e) => r.warnings.push(format!("temporary files: {e}")),
        }
    }
    Ok(r)
}

/// The prune options a retention job uses: 5% unused space tolerated, an hour's grace.
pub fn retention_prune_options(hostname: &str) -> PruneOptions {
    PruneOptions {
        max_unused: 0.05,
        max_repack_bytes: None,
        grace_secs: 3600,
        delete_now: false,
        dry_run: false,
        hostname: hostname.to_string(),
    }
}

/// For an s3:// repository with object lock: every object must carry a retention at least
/// as long as configured from its write time (an object without one could be deleted by
/// anyone holding the credentials). Every locked prefix is looked at: config, keys,
/// snapshots, index, data, wal (all but `.partial` segments, which streaming rewrites) and
/// prune documents. Problems go to `r.errors`; a summary line to `r.warnings`.
pub fn verify_object_lock(repo: &Repository, location: &str, r: &mut cairn_repo::check::CheckReport) -> Result<()> {
    let days = repo.config().object_lock_days;
    if !location.starts_with("s3://") || days == 0 {
        return Ok(());
    }
    let s3 = cairn_store_s3::open(location).map_err(Error::Location)?;
    let mut objects = vec![cairn_store::ObjectMeta { path: "config".into(), size: 0, modified: None }];
    for prefix in ["keys", "snapshots", "index", "data", "wal", "prune", "drills"] {
        let listed = repo.block_on(cairn_store::Store::list(&s3, prefix))?;
        objects.extend(listed.into_iter().filter(|o| !o.path.ends_with(".partial")));
    }
    // One HEAD per object (two without a listed time): 32 in flight, as a remote
    // repository has many thousands of objects.
    let s3 = std::sync::Arc::new(s3);
    let mut checked = repo.block_on(async {
        let mut out = Vec::with_capacity(objects.len());
        for chunk in objects.chunks(32) {
            let mut set = tokio::task::JoinSet::new();
            for o in chunk.iter().cloned() {
                let s3 = s3.clone();
                set.spawn(async move {
                    let modified = match o.modified {
                        Some(m) => Ok(m),
                        None => cairn_store::Store::head(&*s3, &o.path).await.map(|m| m.modified.unwrap_or(0)),
                    };
                    let retention = s3.retention(&o.path).await;
                    (o.path, modified, retention)
                });
            }
            while let Some(done) = set.join_next().await {
                match done {
                    Ok(x) => out.push(x),
                    Err(e) => return Err(Error::Source(format!("retention check: {e}"))),
                }
            }
        }
        Ok(out)
    })?;
    checked.sort_by(|a, b| a.0.cmp(&b.0));
    let (mut missing, mut short) = (0, 0);
    for (path, modified, retention) in checked {
        let modified = modified?;
        match retention? {
            None => {
                missing += 1;
                r.errors.push(format!("{path} has no object lock"));
            }
            // An hour of slack for clock differences between cairn and the store.
            Some((_, until)) if until + 3600 < modified + days as i64 * 86400 => {
                short += 1;
                r.errors.push(format!("{path} is locked only until {until} (Unix time), less than {days} days"));
            }
            Some(_) => {}
        }
    }
    if missing + short == 0 {
        r.warnings.push(format!("object lock: all {} objects are locked for at least {days} days", objects.len()));
    }
    Ok(())
}

impl From<cairn_store::Error> for Error {
    fn from(e: cairn_store::Error) -> Self {
        Error::Repo(e.into())
    }
}

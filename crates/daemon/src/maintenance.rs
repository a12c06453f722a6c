//! Repository maintenance the CLI's `prune` and the daemon's retention jobs share: prune
//! (the protocol lives in the repo crate), then the PostgreSQL WAL no remaining base backup
//! needs, then the temporary files killed writers left in a local or SFTP repository.

use cairn_repo::{PruneOptions, PruneReport, Repository};

use crate::{Error, Result};

/// Prunes `repo` (at `location`, for the temporary-file sweep).
pub fn prune_repository(repo: &Repository, location: &str, opts: &PruneOptions) -> Result<PruneReport> {
    let mut r = cairn_repo::prune(repo, opts)?;
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

impl From<cairn_store::Error> for Error {
    fn from(e: cairn_store::Error) -> Self {
        Error::Repo(e.into())
    }
}

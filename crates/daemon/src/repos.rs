//! Opening repositories: a location (directory or URL) and a password -> a [`Repository`]
//! behind the decorators its settings ask for (metadata cache for remote stores, bandwidth
//! limits, dry run, object lock). The CLI's global options and the policy file's
//! `[repository.NAME]` sections both end here.

use std::path::PathBuf;
use std::sync::Arc;

use cairn_repo::Repository;
use cairn_store::{DryRunStore, LimitStore, LocalStore, Store};

use crate::{Error, Result};

/// How a store is wrapped.
#[derive(Debug, Clone, Default)]
pub struct StoreOptions {
    /// Bytes per second.
    pub limit_upload: Option<u64>,
    pub limit_download: Option<u64>,
    /// Where remote metadata is cached (one directory per repository location).
    pub cache_dir: Option<PathBuf>,
    pub dry_run: bool,
}

/// Whether a location names a remote store rather than a directory.
pub fn is_remote(location: &str) -> bool {
    location.contains("://")
}

/// The store for a repository given as a directory or a URL (`s3://BUCKET/PREFIX?...`,
/// `sftp://USER@HOST/PATH`, ...).
pub fn store_for(location: &str) -> Result<Arc<dyn Store>> {
    let Some((scheme, _)) = location.split_once("://") else {
        return Ok(Arc::new(LocalStore::new(location)));
    };
    match scheme {
        // object_store retries 5xx replies and unsent requests itself; a create-only put cut
        // off mid-body comes back transient and is retried here. The SFTP store reconnects
        // on the next request after a dropped connection, which the retry decorator makes.
        "s3" | "gs" | "az" => Ok(retrying(Arc::new(cairn_store_s3::open(location).map_err(Error::Location)?))),
        "sftp" => Ok(retrying(Arc::new(cairn_store_sftp::open(location).map_err(|e| Error::Location(e.to_string()))?))),
        _ => Err(Error::Location(format!(
            "unknown repository URL scheme '{scheme}://' (s3://, gs://, az://, sftp://, or a directory)"
        ))),
    }
}

/// A remote store behind the retry decorator: transient failures are retried 6 times,
/// from 200 ms apart.
fn retrying(s: Arc<dyn Store>) -> Arc<dyn Store> {
    Arc::new(cairn_store::RetryStore::new(s, 6, std::time::Duration::from_millis(200)))
}

/// A cache key for a repository location (the same on every run).
pub fn location_key(location: &str) -> String {
    cairn_format::id::to_hex(&cairn_crypto::content_hash(location.as_bytes())[..16])
}

/// The cache, bandwidth limits and dry run around a store.
pub fn decorate(base: Arc<dyn Store>, location: &str, o: &StoreOptions) -> Arc<dyn Store> {
    let mut s = base;
    if is_remote(location) {
        if let Some(dir) = &o.cache_dir {
            s = Arc::new(cairn_store::CacheStore::new(s, dir.join(location_key(location))));
        }
    }
    if o.limit_upload.is_some() || o.limit_download.is_some() {
        s = Arc::new(LimitStore::new(s, o.limit_upload, o.limit_download));
    }
    if o.dry_run {
        Arc::new(DryRunStore::new(s))
    } else {
        s
    }
}

/// The decorated store of a location.
pub fn store(location: &str, o: &StoreOptions) -> Result<Arc<dyn Store>> {
    Ok(decorate(store_for(location)?, location, o))
}

/// For an s3:// repository whose config asks for object lock: the store that writes every
/// object with that retention.
pub fn locked_store(location: &str, days: u32, mode: &str, o: &StoreOptions) -> Result<Option<Arc<dyn Store>>> {
    if !location.starts_with("s3://") || days == 0 {
        return Ok(None);
    }
    let lock = cairn_store_s3::Lock { mode: if mode.is_empty() { "COMPLIANCE".into() } else { mode.into() }, days };
    let s = retrying(Arc::new(cairn_store_s3::open_locked(location, Some(lock)).map_err(Error::Location)?));
    Ok(Some(decorate(s, location, o)))
}

/// Puts the object-lock store in place where the repository's config asks for one.
pub fn apply_lock(repo: &mut Repository, location: &str, o: &StoreOptions) -> Result<()> {
    let (days, mode) = (repo.config().object_lock_days, repo.config().object_lock_mode.clone());
    if let Some(s) = locked_store(location, days, &mode, o)? {
        repo.replace_store(s);
    }
    Ok(())
}

/// Opens an existing repository, trying the key file `preferred` first.
pub fn open(
    location: &str,
    password: &[u8],
    o: &StoreOptions,
    rt: tokio::runtime::Handle,
    preferred: Option<cairn_format::KeyId>,
) -> Result<Repository> {
    let mut repo = Repository::open_preferring(store(location, o)?, rt, password, preferred)?;
    apply_lock(&mut repo, location, o)?;
    Ok(repo)
}

/// Writes a file readable only by its owner, atomically (temporary name, then rename),
/// creating its directory (0700) if needed.
pub fn write_private(path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir = path.parent().ok_or_else(|| std::io::Error::other("no parent directory"))?;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let tmp = dir.join(format!(".tmp-{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    std::io::Write::write_all(&mut f, data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Opens the repository without the password KDF when `cache` (a key cache entry for
/// this location: the master key wrapped under the password) exists, and writes the entry
/// otherwise: for commands that run often (`pg archive-push` per WAL file, `status`).
pub fn open_with_key_cache(
    location: &str,
    password: &[u8],
    o: &StoreOptions,
    rt: tokio::runtime::Handle,
    cache: Option<&std::path::Path>,
) -> Result<Repository> {
    if let Some(p) = cache {
        if let Some(master) = std::fs::read(p).ok().and_then(|b| cairn_crypto::unwrap_from_cache(&b, password)) {
            match Repository::open_with_master(store(location, o)?, rt.clone(), master) {
                Ok(mut r) => {
                    apply_lock(&mut r, location, o)?;
                    return Ok(r);
                }
                // Another repository now lives here: forget the entry.
                Err(cairn_repo::Error::WrongPassword { .. }) => {
                    let _ = std::fs::remove_file(p);
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    let mut repo = Repository::open(store(location, o)?, rt, password)?;
    apply_lock(&mut repo, location, o)?;
    if let Some(p) = cache {
        // Best effort: without a cache entry the next open is merely slower.
        if let Ok(entry) = cairn_crypto::wrap_for_cache(repo.master(), password) {
            let _ = write_private(p, &entry);
        }
    }
    Ok(repo)
}

fn trim_newline(mut v: Vec<u8>) -> Vec<u8> {
    while matches!(v.last(), Some(b'\n') | Some(b'\r')) {
        v.pop();
    }
    v
}

/// A password file's contents (one trailing newline dropped); empty is an error.
pub fn read_password_file(f: &std::path::Path) -> Result<Vec<u8>> {
    let v = std::fs::read(f).map_err(|e| Error::io(format!("reading password file {}", f.display()), e))?;
    let v = trim_newline(v);
    if v.is_empty() {
        return Err(Error::Password(format!("password file {} is empty", f.display())));
    }
    Ok(v)
}

/// A password command's standard output (its standard error goes to ours).
pub fn run_password_command(cmd: &str) -> Result<Vec<u8>> {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| Error::io(format!("running password command {cmd:?}"), e))?;
    if !out.status.success() {
        return Err(Error::Password(format!("password command {cmd:?} failed ({})", out.status)));
    }
    let v = trim_newline(out.stdout);
    if v.is_empty() {
        return Err(Error::Password(format!("password command {cmd:?} printed nothing")));
    }
    Ok(v)
}

/// The password of a policy repository. `Environment`: `CAIRN_PASSWORD_FILE`,
/// `CAIRN_PASSWORD_COMMAND` or `CAIRN_PASSWORD` of this process.
pub fn password(p: &cairn_policy::file::Password) -> Result<Vec<u8>> {
    use cairn_policy::file::Password;
    match p {
        Password::File(f) => read_password_file(std::path::Path::new(f)),
        Password::Command(c) => run_password_command(c),
        Password::Environment => {
            if let Some(f) = std::env::var_os("CAIRN_PASSWORD_FILE") {
                return read_password_file(std::path::Path::new(&f));
            }
            if let Ok(c) = std::env::var("CAIRN_PASSWORD_COMMAND") {
                return run_password_command(&c);
            }
            match std::env::var("CAIRN_PASSWORD") {
                Ok(p) if !p.is_empty() => Ok(p.into_bytes()),
                _ => Err(Error::Password(
                    "the repository sets neither password_file nor password_command, and no CAIRN_PASSWORD_FILE, CAIRN_PASSWORD_COMMAND or CAIRN_PASSWORD is set".into(),
                )),
            }
        }
    }
}

/// Opens a `[repository.NAME]` of the policy.
/// `key_cache`: the directory of key cache entries ([`open_with_key_cache`]).
pub fn open_policy_repository(
    r: &cairn_policy::file::Repository,
    cache_dir: Option<PathBuf>,
    key_cache: Option<&std::path::Path>,
    rt: tokio::runtime::Handle,
) -> Result<Repository> {
    let pw = password(&r.password)?;
    let o = StoreOptions { limit_upload: r.limit_upload, limit_download: r.limit_download, cache_dir, dry_run: false };
    let entry = key_cache.map(|d| d.join(location_key(&r.url)));
    // The storage class travels in the URL, as the store's other options do.
    let url = match &r.storage_class {
        Some(c) => format!("{}{}storage_class={c}", r.url, if r.url.contains('?') { '&' } else { '?' }),
        None => r.url.clone(),
    };
    let repo = open_with_key_cache(&url, &pw, &o, rt, entry.as_deref())
        .map_err(|e| e.context(format!("repository {:?}", r.name)))?;
    // The lock period is the repository's (set at `cairn init`); a policy that expects
    // another one would give a false sense of immutability.
    if let Some(days) = r.object_lock_days {
        let have = repo.config().object_lock_days;
        if have != days {
            return Err(Error::Location(format!(
                "repository {:?}: the policy says object_lock_days = {days} but the repository was created with {}; create it with `cairn init --object-lock-days {days}` (and bucket object lock), or change the policy",
                r.name,
                if have == 0 { "no object lock".to_string() } else { format!("{have} days") }
            )));
        }
    }
    Ok(repo)
}

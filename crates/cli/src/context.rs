//! Global options -> a validated context: which repository, how to get its password,
//! and how to open or create it.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context as _, Result};
use cairn_repo::{InitOptions, KeyMeta, Repository};
use cairn_store::{LocalStore, Store};

use crate::args::{Global, InitArgs};

pub struct Context {
    pub g: Global,
    pub rt: tokio::runtime::Handle,
    /// Where the repository is.
    pub repo_path: PathBuf,
    /// True when no repository was named and the default one is used.
    pub is_default: bool,
    /// The repository's URL when it is not on local disk (`repo_path` is then unused).
    pub remote: Option<String>,
}

pub fn data_home() -> Option<PathBuf> {
    match std::env::var_os("XDG_DATA_HOME") {
        Some(d) if !d.is_empty() => Some(PathBuf::from(d)),
        _ => std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")),
    }
}

fn config_home() -> Option<PathBuf> {
    match std::env::var_os("XDG_CONFIG_HOME") {
        Some(d) if !d.is_empty() => Some(PathBuf::from(d)),
        _ => std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")),
    }
}

/// A deletion the store refused for lack of rights, said as what it means: the
/// repository is append-only for these credentials.
pub fn delete_rights(cmd: &str, e: cairn_repo::Error) -> anyhow::Error {
    if e.store_kind() == Some(cairn_store::ErrorKind::PermissionDenied) {
        anyhow!("{cmd} needs the right to delete objects in the repository, which these credentials (or this directory) do not give: an append-only setup still allows backup, copy, check and restore ({e})")
    } else {
        e.into()
    }
}

/// The store for a repository given as a directory or a URL (`s3://BUCKET/PREFIX?...`,
/// `sftp://USER@HOST/PATH`, ...).
pub fn store_for(spec: &str) -> Result<Arc<dyn Store>> {
    Ok(cairn_daemon::repos::store_for(spec)?)
}

pub fn cache_home() -> Option<PathBuf> {
    match std::env::var_os("XDG_CACHE_HOME") {
        Some(d) if !d.is_empty() => Some(PathBuf::from(d)),
        _ => std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")),
    }
}

/// Writes a file readable only by its owner, atomically (temporary name, then rename),
/// creating its directory (0700) if needed.
pub fn write_private(path: &std::path::Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir = path.parent().ok_or_else(|| anyhow!("{}: no parent directory", path.display()))?;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let tmp = dir.join(format!(".tmp-{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// The generated password of the default repository, for users who set none.
fn default_password_file() -> Option<PathBuf> {
    config_home().map(|c| c.join("cairn/default-repo.password"))
}

impl Context {
    pub fn new(g: &Global, rt: tokio::runtime::Handle) -> Result<Context> {
        let (repo_path, is_default) = match &g.repo {
            Some(r) if r.contains("://") => {
                // Validated now, so a bad URL fails before any password prompt.
                store_for(r)?;
                return Ok(Context {
                    g: g.clone(),
                    rt,
                    repo_path: PathBuf::new(),
                    is_default: false,
                    remote: Some(r.clone()),
                });
            }
            Some(r) if r.is_empty() => bail!("--repo is empty"),
            Some(r) => (PathBuf::from(r), false),
            None => {
                let d = data_home().ok_or_else(|| {
                    anyhow!("no repository given (--repo or CAIRN_REPO) and no HOME to put the default one in")
                })?;
                (d.join("cairn/repo"), true)
            }
        };
        Ok(Context { g: g.clone(), rt, repo_path, is_default, remote: None })
    }

    pub fn store(&self, dry_run: bool) -> Arc<dyn Store> {
        let s: Arc<dyn Store> = match &self.remote {
            // Validated in `new`.
            Some(url) => store_for(url).unwrap_or_else(|_| Arc::new(LocalStore::new(&self.repo_path))),
            None => Arc::new(LocalStore::new(&self.repo_path)),
        };
        cairn_daemon::repos::decorate(s, &self.location(), &self.store_options(dry_run))
    }

    fn store_options(&self, dry_run: bool) -> cairn_daemon::repos::StoreOptions {
        let kib = |v: Option<u64>| v.map(|k| k.saturating_mul(1024));
        cairn_daemon::repos::StoreOptions {
            limit_upload: kib(self.g.limit_upload),
            limit_download: kib(self.g.limit_download),
            cache_dir: self.cache_base(),
            dry_run,
        }
    }

    /// Where remote repositories' metadata is cached: `--cache-dir` (or `CAIRN_CACHE_DIR`),
    /// else `$XDG_CACHE_HOME/cairn/repos`, one directory per repository location below it.
    /// `--cache-dir off` disables it.
    pub fn cache_base(&self) -> Option<PathBuf> {
        match &self.g.cache_dir {
            Some(d) if d.as_os_str() == "off" => None,
            Some(d) => Some(d.clone()),
            None => Some(cache_home()?.join("cairn/repos")),
        }
    }

    /// Requests kept in flight at once (`--connections`).
    pub fn connections(&self) -> usize {
        self.g.connections.map(usize::from).unwrap_or(if self.remote.is_some() { 8 } else { 2 })
    }

    pub fn location(&self) -> String {
        match &self.remote {
            Some(u) => u.clone(),
            None => self.repo_path.display().to_string(),
        }
    }

    /// The repository as another process should be told it (`CAIRN_REPO`): the URL, or
    /// the absolute directory.
    pub fn repo_spec(&self) -> Result<String> {
        Ok(match &self.remote {
            Some(u) => u.clone(),
            None => std::path::absolute(&self.repo_path)?.display().to_string(),
        })
    }

    /// The password: --password-file / CAIRN_PASSWORD_FILE, CAIRN_PASSWORD_COMMAND,
    /// CAIRN_PASSWORD, the default repository's generated file, or a prompt on a terminal.
    pub fn password(&self, confirm: bool) -> Result<Vec<u8>> {
        if let Some(f) = &self.g.password_file {
            return read_password_file(f);
        }
        if let Ok(cmd) = std::env::var("CAIRN_PASSWORD_COMMAND") {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(&cmd)
                .stderr(std::process::Stdio::inherit())
                .output()
                .with_context(|| format!("running CAIRN_PASSWORD_COMMAND {cmd:?}"))?;
            if !out.status.success() {
                bail!("CAIRN_PASSWORD_COMMAND failed ({})", out.status);
            }
            return Ok(trim_newline(out.stdout));
        }
        if let Ok(p) = std::env::var("CAIRN_PASSWORD") {
            return Ok(p.into_bytes());
        }
        if self.is_default {
            if let Some(f) = default_password_file().filter(|f| f.exists()) {
                return read_password_file(&f);
            }
        }
        prompt("enter repository password: ", confirm)
    }

    pub fn open(&self) -> Result<Repository> {
        self.open_with(false)
    }

    pub fn open_with(&self, dry_run: bool) -> Result<Repository> {
        if self.is_default && !self.repo_path.join("config").exists() {
            bail!("no repository given (--repo or CAIRN_REPO) and the default repository {} does not exist yet; 'cairn backup PATH' creates it", self.location());
        }
        // A directory that is not a repository is said before any password is asked for.
        if self.remote.is_none() && !self.repo_path.join("config").exists() {
            if !self.repo_path.exists() {
                bail!(
                    "no repository at {}: the directory does not exist ('cairn init' creates one)",
                    self.repo_path.display()
                );
            }
            bail!(
                "no repository at {}: the directory has no config file (not a cairn repository)",
                self.repo_path.display()
            );
        }
        let pw = self.password(false)?;
        // The key file that opened this repository last time is tried first (a hint,
        // not a secret: a key id is the hash of a file anyone with the storage can list).
        let hint = cache_home().map(|c| {
            c.join("cairn/key-ids")
                .join(cairn_format::id::to_hex(&cairn_crypto::content_hash(self.location().as_bytes())[..16]))
        });
        let preferred = hint
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|s| cairn_format::KeyId::from_hex(s.trim()));
        let mut repo = Repository::open_preferring(self.store(dry_run), self.rt.clone(), &pw, preferred)?;
        if let Some(p) = hint.filter(|_| preferred != Some(repo.key_id())) {
            // Best effort: without it the next open merely tries the cheapest key first.
            let _ = write_private(&p, repo.key_id().to_hex().as_bytes());
        }
        self.apply_lock(&mut repo, dry_run)?;
        Ok(repo)
    }

    /// For an s3:// repository whose config asks for object lock: the store that writes
    /// every object with that retention.
    fn locked_store(&self, days: u32, mode: &str, dry_run: bool) -> Result<Option<Arc<dyn Store>>> {
        Ok(cairn_daemon::repos::locked_store(&self.location(), days, mode, &self.store_options(dry_run))?)
    }

    fn apply_lock(&self, repo: &mut Repository, dry_run: bool) -> Result<()> {
        Ok(cairn_daemon::repos::apply_lock(repo, &self.location(), &self.store_options(dry_run))?)
    }

    /// Opens the repository without the password KDF when a key cache entry for it exists
    /// (and writes one otherwise): for commands that PostgreSQL runs once per WAL file.
    /// `CAIRN_KEY_CACHE=0` turns the cache off.
    pub fn open_fast(&self) -> Result<Repository> {
        if std::env::var("CAIRN_KEY_CACHE").is_ok_and(|v| v == "0") {
            return self.open();
        }
        if self.is_default && !self.repo_path.join("config").exists() {
            return self.open();
        }
        let pw = self.password(false)?;
        let path = cache_home().map(|c| c.join("cairn/keys").join(cairn_daemon::repos::location_key(&self.location())));
        Ok(cairn_daemon::repos::open_with_key_cache(
            &self.location(),
            &pw,
            &self.store_options(false),
            self.rt.clone(),
            path.as_deref(),
        )?)
    }

    /// Opens the repository, creating the default one on first use (backup only).
    pub fn open_or_create_default(&self, dry_run: bool) -> Result<Repository> {
        if !self.is_default || self.repo_path.join("config").exists() {
            return self.open_with(dry_run);
        }
        if dry_run {
            bail!("the default repository {} does not exist yet; run without --dry-run to create it", self.location());
        }
        let explicit = self.g.password_file.is_some()
            || std::env::var_os("CAIRN_PASSWORD_COMMAND").is_some()
            || std::env::var_os("CAIRN_PASSWORD").is_some();
        let pw = if explicit {
            self.password(true)?
        } else {
            let f =
                default_password_file().ok_or_else(|| anyhow!("no HOME for the default repository's password file"))?;
            let pw = generate_password()?;
            write_secret(&f, &pw)?;
            if !self.g.quiet {
                eprintln!("cairn: generated a password for the default repository in {} (keep a copy elsewhere: without it the backups cannot be read)", f.display());
            }
            pw
        };
        let repo = Repository::init(self.store(false), self.rt.clone(), &pw, &key_meta(), InitOptions::default())?;
        if !self.g.quiet {
            eprintln!("cairn: created the default repository in {}", self.location());
        }
        Ok(repo)
    }
}

pub fn key_meta() -> KeyMeta {
    let (_, _, user) = cairn_fs::current_user();
    KeyMeta { hostname: cairn_fs::hostname(), username: user, created: now_rfc3339() }
}

/// The time now, RFC 3339 in the machine's offset (one definition, the daemon's: a
/// snapshot's time reads the same whether `cairn backup` or a daemon job took it).
pub use cairn_daemon::backup::now_rfc3339;

fn trim_newline(mut v: Vec<u8>) -> Vec<u8> {
    while matches!(v.last(), Some(b'\n') | Some(b'\r')) {
        v.pop();
    }
    v
}

pub fn read_password_file(f: &std::path::Path) -> Result<Vec<u8>> {
    let v = std::fs::read(f).with_context(|| format!("reading password file {}", f.display()))?;
    let v = trim_newline(v);
    if v.is_empty() {
        bail!("password file {} is empty", f.display());
    }
    Ok(v)
}

pub fn prompt(msg: &str, confirm: bool) -> Result<Vec<u8>> {
    prompt_or(
        msg,
        confirm,
        "no password given: set CAIRN_PASSWORD_FILE, CAIRN_PASSWORD_COMMAND or CAIRN_PASSWORD, or run on a terminal",
    )
}

/// Prompts on a terminal; without one, fails with `missing` (which says how to give it).
pub fn prompt_or(msg: &str, confirm: bool, missing: &str) -> Result<Vec<u8>> {
    if !std::io::stdin().is_terminal() && !std::io::stderr().is_terminal() {
        bail!("{missing}");
    }
    let p = rpassword::prompt_password(msg).context("reading the password")?;
    if p.is_empty() {
        bail!("empty password");
    }
    if confirm {
        let q = rpassword::prompt_password("enter it again: ").context("reading the password")?;
        if p != q {
            bail!("the passwords do not match");
        }
    }
    Ok(p.into_bytes())
}

fn generate_password() -> Result<Vec<u8>> {
    let b: [u8; 24] = cairn_crypto::random_array()?;
    Ok(cairn_format::id::to_hex(&b).into_bytes())
}

fn write_secret(f: &std::path::Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(d) = f.parent() {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(f)
        .with_context(|| format!("creating {}", f.display()))?;
    file.write_all(data)?;
    file.write_all(b"\n")?;
    Ok(())
}

pub fn init(ctx: &Context, a: &InitArgs) -> Result<()> {
    if ctx.remote.is_none() && ctx.repo_path.join("config").exists() {
        bail!("a repository already exists at {}", ctx.location());
    }
    let mut opts = InitOptions::default();
    if let Some(d) = a.object_lock_days {
        if d == 0 || d > 36500 {
            bail!("--object-lock-days: {d} is not between 1 and 36500");
        }
        opts.object_lock_days = d;
        opts.object_lock_mode = a.object_lock_mode.to_ascii_uppercase();
    }
    if let Some(s) = &a.pack_size {
        let n = crate::prune::parse_size("--pack-size", s)?;
        if !(64 << 10..=1 << 30).contains(&n) {
            bail!("--pack-size: {s} is outside 64K..1G");
        }
        opts.pack_size = n as u32;
    }
    if let Some(s) = &a.chunk_size {
        let sizes =
            s.split(',').map(|v| crate::prune::parse_size("--chunk-size", v.trim())).collect::<Result<Vec<u64>>>()?;
        let [min, avg, max] = sizes[..] else { bail!("--chunk-size: {s} is not MIN,AVG,MAX") };
        let fit = |v: u64| u32::try_from(v).map_err(|_| anyhow::anyhow!("--chunk-size: {v} is too large"));
        opts.chunk_sizes = Some((fit(min)?, fit(avg)?, fit(max)?));
    }
    if let Some(from) = &a.copy_chunker_params_from {
        let pw = match (&a.from_password_file, std::env::var("CAIRN_FROM_PASSWORD")) {
            (Some(f), _) => read_password_file(f)?,
            (None, Ok(p)) => p.into_bytes(),
            (None, Err(_)) => prompt(&format!("enter the password of {from}: "), false)?,
        };
        let source =
            Repository::open(store_for(from)?, ctx.rt.clone(), &pw).with_context(|| format!("opening {from}"))?;
        opts.chunker_from = Some((source.chunker_params(), *source.id_key().as_bytes()));
    }
    let pw = ctx.password(true)?;
    let store = match ctx.locked_store(opts.object_lock_days, &opts.object_lock_mode, false)? {
        Some(s) => s,
        None => ctx.store(false),
    };
    let repo = Repository::init(store, ctx.rt.clone(), &pw, &key_meta(), opts)?;
    if ctx.g.json {
        println!("{}", serde_json::json!({"repository": ctx.location(), "id": repo.config().id}));
    } else if !ctx.g.quiet {
        println!("created repository {} at {}", &repo.config().id[..8], ctx.location());
    }
    Ok(())
}

/// `--exclude` patterns plus those of every `--exclude-file` (one per line; blank lines
/// and `#` comments skipped), as backup and rewrite both take them.
pub fn patterns(inline: &[String], files: &[PathBuf]) -> Result<Vec<String>> {
    let mut out = inline.to_vec();
    for f in files {
        let text = std::fs::read_to_string(f).with_context(|| format!("reading exclude file {}", f.display()))?;
        out.extend(text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(String::from));
    }
    Ok(out)
}

//! Running one job of a policy source: lock the source, record the job, run the hooks and
//! the operation, record how it ended. The daemon's scheduler and `cairn run` both come
//! here, so a job is the same job whoever started it.
//!
//! Order of a backup job: `before` hook (its failure cancels the job) -> backup ->
//! `after` (on success) or `on_failure` -> copies to each `copy_to` repository (each its
//! own catalog job) -> `finally`. Hooks get the job as JSON on standard input and as
//! `CAIRN_*` variables, and are killed at their timeout.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use cairn_policy::file::{Hook, Policy, Source, SourceKind};
use cairn_repo::Repository;
use jiff::{SignedDuration, Timestamp};

use crate::backup::{BackupRequest, Input, ParentChoice, What};
use crate::catalog::{Catalog, Kind, NewJob, Outcome, Status, Trigger};
use crate::lock::Lock;
use crate::{Error, Result};

/// Everything a job needs besides its request: the policy and where state lives.
#[derive(Clone)]
pub struct Env {
    pub policy: Policy,
    pub policy_path: PathBuf,
    pub catalog_path: PathBuf,
    pub state_dir: PathBuf,
    pub host: String,
    pub rt: tokio::runtime::Handle,
    /// Metadata cache of remote repositories.
    pub cache_dir: Option<PathBuf>,
    /// Key cache entries (repositories opened without the password KDF once known);
    /// `None` runs the KDF on every open.
    pub key_cache: Option<PathBuf>,
    /// How audit records name the way a job came (`daemon`; `cli` for one a command ran
    /// in its own process).
    pub via: &'static str,
}

impl Env {
    /// Resolves the catalog, state directory and host name from the policy's `[daemon]`
    /// section (defaults: `cairn-catalog.db` beside the policy file, `cairn-state/` beside
    /// the catalog; relative paths are relative to the policy file's directory).
    pub fn new(policy: Policy, policy_path: &Path, rt: tokio::runtime::Handle, cache_dir: Option<PathBuf>) -> Env {
        let base = policy_path.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
        let rel = |p: &str| if Path::new(p).is_absolute() { PathBuf::from(p) } else { base.join(p) };
        let catalog_path = policy.daemon.catalog.as_deref().map(rel).unwrap_or_else(|| base.join("cairn-catalog.db"));
        let state_dir = policy.daemon.state_dir.as_deref().map(rel).unwrap_or_else(|| {
            catalog_path.parent().map(|p| p.join("cairn-state")).unwrap_or_else(|| base.join("cairn-state"))
        });
        let host = policy.daemon.hostname.clone().unwrap_or_else(cairn_fs::hostname);
        let key_cache = cache_dir.as_ref().and_then(|d| d.parent()).map(|d| d.join("keys"));
        Env {
            policy,
            policy_path: policy_path.to_path_buf(),
            catalog_path,
            state_dir,
            host,
            rt,
            cache_dir,
            key_cache,
            via: "daemon",
        }
    }

    pub fn catalog(&self) -> Result<Catalog> {
        Catalog::open(&self.catalog_path)
    }

    pub fn source(&self, name: &str) -> Result<&Source> {
        self.policy.sources.get(name).ok_or_else(|| Error::UnknownSource(name.to_string()))
    }

    pub fn lock_path(&self, source: &str) -> PathBuf {
        self.state_dir.join("locks").join(format!("source-{source}.lock"))
    }

    fn retention_lock_path(&self, repository: &str) -> PathBuf {
        self.state_dir.join("locks").join(format!("retention-{repository}.lock"))
    }

    pub fn retry_delay(&self) -> SignedDuration {
        self.policy.daemon.retry_delay.unwrap_or(SignedDuration::from_secs(30))
    }

    pub fn open_repository(&self, name: &str) -> Result<Repository> {
        let r = self
            .policy
            .repositories
            .get(name)
            .ok_or_else(|| Error::Location(format!("repository {name:?} is not in the policy")))?;
        crate::repos::open_policy_repository(r, self.cache_dir.clone(), self.key_cache.as_deref(), self.rt.clone())
    }
}

/// A job to run.
#[derive(Debug, Clone)]
pub struct JobRequest {
    pub source: String,
    pub kind: Kind,
    pub trigger: Trigger,
    pub actor: String,
    pub label: Option<String>,
    pub reason: Option<String>,
    /// The scheduled time it stands for.
    pub window: Option<Timestamp>,
    /// The API client that asked for it (its token's name and address), for the audit log.
    pub client: Option<Client>,
}

/// An API client, as audit records name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    pub token: String,
    pub address: String,
}

/// How a job ended.
#[derive(Debug, Clone)]
pub struct JobReport {
    pub id: String,
    pub status: Status,
    pub snapshot: Option<String>,
    pub error: Option<String>,
    /// Copy jobs that followed a backup.
    pub copies: Vec<JobReport>,
}

/// The OS user running this process.
pub fn actor() -> String {
    cairn_fs::current_user().2
}

/// Takes the source's lock: at once or an error naming the running job (`wait = false`),
/// or after the running job ends (`wait = true`).
pub fn lock_source(env: &Env, source: &str, wait: bool) -> Result<Lock> {
    let path = env.lock_path(source);
    if wait {
        return crate::lock::lock(&path);
    }
    match crate::lock::try_lock(&path)? {
        Ok(l) => Ok(l),
        Err(h) => Err(Error::Busy { source_name: source.to_string(), job: h.job, pid: h.pid }),
    }
}

/// Runs a job under the source lock the caller took (`lock`); records it in the catalog.
pub fn run_locked(env: &Env, req: &JobRequest, lock: &mut Lock) -> Result<JobReport> {
    if req.kind == Kind::Drill {
        // A drill records itself (under its own lock) and runs no backup hooks.
        let d = crate::drill::DrillRequest {
            source: req.source.clone(),
            snapshot: None,
            time: None,
            from: None,
            keep: false,
            trigger: req.trigger,
            actor: req.actor.clone(),
            window: req.window,
        };
        let rec = crate::drill::run(env, &d, crate::daemon::stop_flag())?;
        let status = if rec.verdict == crate::drill::Verdict::Passed { Status::Succeeded } else { Status::Failed };
        return Ok(JobReport { id: rec.job, status, snapshot: rec.snapshot, error: rec.reason, copies: Vec::new() });
    }
    let src = env.source(&req.source)?.clone();
    let catalog = env.catalog()?;
    let new = NewJob {
        host: env.host.clone(),
        kind: req.kind,
        source: src.name.clone(),
        class: src.class.clone(),
        repository: src.repository.value.clone(),
        trigger: req.trigger,
        actor: req.actor.clone(),
        label: req.label.clone(),
        reason: req.reason.clone(),
        scheduled_at: req.window,
    };
    let row = catalog.start(&new, Timestamp::now())?;
    let id = format!("{}/{row}", env.host);
    lock.describe(&id)?;
    // The job's log: what happened, step by step, for the console and `GET /api/jobs/ID`.
    let log = |line: String| {
        let _ = catalog.log(row, &line, Timestamp::now());
    };
    let mut started = format!(
        "{} of {} started: trigger {}, asked by {}",
        req.kind.as_str(),
        src.name,
        req.trigger.as_str(),
        req.actor
    );
    if let Some(c) = &req.client {
        started.push_str(&format!(" (token {} from {})", c.token, c.address));
    }
    if let Some(l) = &req.label {
        started.push_str(&format!(", label {l:?}"));
    }
    if let Some(r) = &req.reason {
        started.push_str(&format!(", reason {r:?}"));
    }
    log(started);
    let ctx = HookCtx { id: id.clone(), req: req.clone(), src: src.clone() };
    let hooks = &src.hooks.value;
    if let Some(h) = &hooks.before {
        if let Err(e) = run_hook("before", h, &ctx, None) {
            let why = e.to_string();
            log(format!("cancelled: {why}"));
            catalog.finish(
                row,
                Status::Cancelled,
                &Outcome { error: Some(why.clone()), ..Outcome::default() },
                Timestamp::now(),
            )?;
            let cancelled = Outcome { error: Some(why.clone()), ..Outcome::default() };
            crate::audit::job(env, &src.repository.value, req, req.kind, &id, Status::Cancelled, &cancelled);
            if let Some(f) = &hooks.finally {
                if let Err(e) = run_hook("finally", f, &ctx, Some((Status::Cancelled, None, Some(&why)))) {
                    log(format!("{e}"));
                }
            }
            return Ok(JobReport {
                id,
                status: Status::Cancelled,
                snapshot: None,
                error: Some(why),
                copies: Vec::new(),
            });
        }
    }
    let mut pings = Vec::new();
    let result = match req.kind {
        Kind::Backup => {
            pings.extend(ping(env, &src, crate::alerts::PingStage::Start, String::new()));
            backup_job(env, &src, &id, req.label.clone())
        }
        Kind::Retention => retention_job(env, &src),
        Kind::Verify => verify_job(env, &src),
        Kind::Copy => copy_job(env, &src, None).map(|_| Done::default()),
        Kind::Drill => Err(Error::Source("drill jobs run through drill::run".into())),
    };
    let now = Timestamp::now();
    let (status, outcome) = match &result {
        Ok(d) => (if d.partial { Status::Partial } else { Status::Succeeded }, d.outcome.clone()),
        Err(e) => (Status::Failed, Outcome { error: Some(crate::one_line(e)), ..Outcome::default() }),
    };
    if hooks.before.is_some() {
        log("hook before: ok".into());
    }
    log(match (&outcome.error, &outcome.snapshot) {
        (Some(e), _) => format!("{}: {e}", status.as_str()),
        (None, snap) => {
            let mut l = status.as_str().to_string();
            if let Some(f) = outcome.files {
                l.push_str(&format!(": {f} files"));
            }
            if let (Some(r), Some(a)) = (outcome.bytes_read, outcome.bytes_added) {
                l.push_str(&format!(", {r} bytes read, {a} bytes added"));
            }
            if let Some(s) = snap {
                l.push_str(&format!(", snapshot {s}"));
            }
            l
        }
    });
    catalog.finish(row, status, &outcome, now)?;
    crate::audit::job(env, &src.repository.value, req, req.kind, &id, status, &outcome);
    if req.kind == Kind::Backup {
        let (stage, summary) = match &outcome.error {
            None => (crate::alerts::PingStage::Success, format!("job {id} {}", status.as_str())),
            Some(e) if status.is_success() => {
                (crate::alerts::PingStage::Success, format!("job {id} {}: {e}", status.as_str()))
            }
            Some(e) => (crate::alerts::PingStage::Fail, format!("job {id} {}: {e}", status.as_str())),
        };
        pings.extend(ping(env, &src, stage, summary));
    }
    let hook = if status.is_success() { ("after", &hooks.after) } else { ("on_failure", &hooks.on_failure) };
    let mut hook_error = None;
    if let Some(h) = hook.1 {
        match run_hook(hook.0, h, &ctx, Some((status, outcome.snapshot.as_deref(), outcome.error.as_deref()))) {
            Ok(()) => log(format!("hook {}: ok", hook.0)),
            Err(e) => {
                log(e.to_string());
                hook_error = Some(e.to_string());
            }
        }
    }
    let mut copies = Vec::new();
    // Copies belong to the backup: they run even when the daemon is stopping (within its
    // stop_timeout), or the copy would lag until the next backup.
    if req.kind == Kind::Backup && status.is_success() {
        for c in &src.copy_to.value {
            let j = copy_as_job(env, &catalog, &new, req, &c.repository, &src)?;
            log(format!(
                "copy to {}: job {} {}{}",
                c.repository,
                j.id,
                j.status.as_str(),
                j.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default()
            ));
            copies.push(j);
        }
    }
    if let Some(f) = &hooks.finally {
        match run_hook("finally", f, &ctx, Some((status, outcome.snapshot.as_deref(), outcome.error.as_deref()))) {
            Ok(()) => log("hook finally: ok".into()),
            Err(e) => {
                log(e.to_string());
                hook_error.get_or_insert(e.to_string());
            }
        }
    }
    let mut error = outcome.error.clone();
    if let (Some(h), true) = (hook_error, error.is_none()) {
        error = Some(h);
    }
    // Pings get a moment to go out (a one-shot `cairn run` exits after this); a ping
    // target that is down is not waited for.
    let until = Instant::now() + Duration::from_secs(2);
    while pings.iter().any(|h| !h.is_finished()) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(JobReport { id, status, snapshot: outcome.snapshot, error, copies })
}

fn ping(env: &Env, src: &Source, stage: crate::alerts::PingStage, summary: String) -> Vec<std::thread::JoinHandle<()>> {
    crate::alerts::ping(&env.policy, &src.name, &src.class, stage, summary, &env.rt)
}

/// Locks the source (see [`lock_source`]) and runs the job.
pub fn run(env: &Env, req: &JobRequest, wait: bool) -> Result<JobReport> {
    let mut lock = lock_source(env, &req.source, wait)?;
    run_locked(env, req, &mut lock)
}

#[derive(Debug, Default)]
struct Done {
    outcome: Outcome,
    partial: bool,
}

fn threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
}

fn connections(env: &Env, repository: &str) -> usize {
    let r = env.policy.repositories.get(repository);
    r.and_then(|r| r.connections).unwrap_or(if r.is_some_and(|r| crate::repos::is_remote(&r.url)) { 8 } else { 2 })
}

/// Single-quotes a path for `sh -c`.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// A backup job, stopped at the source's `max_duration`: a watchdog sets the engine's stop
/// flag (readers and the walk stop at their next step, nothing is saved, what was uploaded
/// stays for the next backup) and the job fails with [`Error::TimedOut`].
fn backup_job(env: &Env, src: &Source, id: &str, label: Option<String>) -> Result<Done> {
    let progress = cairn_engine::Progress::default();
    let Some(max) = src.max_duration.value else {
        return backup_job_in(env, src, id, label, &progress);
    };
    let limit = Duration::from_secs(max.as_secs().max(1) as u64);
    let done = AtomicBool::new(false);
    let (r, stopped) = std::thread::scope(|s| {
        let watchdog = s.spawn(|| {
            let until = Instant::now() + limit;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                if Instant::now() >= until {
                    progress.stop.store(true, std::sync::atomic::Ordering::Relaxed);
                    return true;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            false
        });
        let r = backup_job_in(env, src, id, label, &progress);
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        (r, watchdog.join().unwrap_or(false))
    });
    match r {
        Err(_) if stopped => Err(Error::TimedOut(cairn_policy::file::human(max))),
        r => r,
    }
}

fn backup_job_in(
    env: &Env,
    src: &Source,
    id: &str,
    label: Option<String>,
    progress: &cairn_engine::Progress,
) -> Result<Done> {
    let repo = env.open_repository(&src.repository.value)?;
    let repo_dir = env
        .policy
        .repositories
        .get(&src.repository.value)
        .filter(|r| !crate::repos::is_remote(&r.url))
        .map(|r| PathBuf::from(&r.url));
    let mut staging = None;
    // Taken when the backup itself starts (after a staging command has run).
    let provenance = || cairn_engine::Provenance {
        host: env.host.clone(),
        time: crate::backup::now_rfc3339(),
        tags: src.tags.value.clone(),
        label: label.clone(),
        source: Some(src.name.clone()),
        job: Some(id.to_string()),
        audit: crate::audit::anchor(env, &repo),
    };
    let what = match &src.kind {
        SourceKind::Files { paths, exclude, exclude_files, one_file_system, atime } => {
            let mut excludes = exclude.clone();
            for f in exclude_files {
                let text = std::fs::read_to_string(f).map_err(|e| Error::io(format!("reading exclude file {f}"), e))?;
                excludes.extend(
                    text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(String::from),
                );
            }
            What::Files {
                paths: paths.iter().map(PathBuf::from).collect(),
                excludes,
                one_file_system: *one_file_system,
                atime: *atime,
            }
        }
        SourceKind::Command { command, stdin_name } => {
            What::Stream { name: stdin_name.clone(), input: Input::Command(command.clone()) }
        }
        SourceKind::CommandDir { command } => {
            // One stable directory per source, so successive backups have the same path
            // (change detection against the parent) and a killed run's leftovers are
            // cleared by the next one.
            let dir = env.state_dir.join("staging").join(&src.name);
            if dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(|e| Error::io(format!("clearing {}", dir.display()), e))?;
            }
            std::fs::create_dir_all(&dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
            let cmd = command.replace("{dir}", &shell_quote(&dir.display().to_string()));
            let errfile = env.state_dir.join("staging").join(format!("{}.stderr", src.name));
            let err = std::fs::File::create(&errfile).map_err(|e| Error::io(errfile.display().to_string(), e))?;
            let mut c = std::process::Command::new("sh");
            c.arg("-c").arg(&cmd).stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null()).stderr(err);
            // Bounded by the job's stop flag (its max_duration): its process group is killed.
            let ended = crate::process::run(&mut c, Duration::MAX, &progress.stop)
                .map_err(|e| Error::io(format!("starting command {command:?}"), e))?;
            let last = crate::process::tail(&errfile, 4096);
            let last = last.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_string();
            let _ = std::fs::remove_file(&errfile);
            let status = match ended {
                crate::process::Ended::Exited(s) if s.success() => None,
                crate::process::Ended::Exited(s) => Some(s.to_string()),
                _ => Some("stopped".to_string()),
            };
            if let Some(status) = status {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(Error::CommandFailed {
                    command: command.clone(),
                    status: if last.is_empty() { status } else { format!("{status}: {last}") },
                });
            }
            staging = Some(dir.clone());
            What::Files { paths: vec![dir], excludes: Vec::new(), one_file_system: false, atime: false }
        }
        SourceKind::Sqlite { path } => What::Sqlite { path: PathBuf::from(path) },
        SourceKind::Postgres { data_dir, connection, .. } => {
            let req = cairn_pg::backup::BaseBackupRequest {
                data_dir: PathBuf::from(data_dir),
                connection: connection.clone(),
                provenance: provenance(),
                fast_checkpoint: true,
                wal_timeout: src
                    .max_duration
                    .value
                    .map(|d| Duration::from_secs(d.as_secs().max(1) as u64))
                    .unwrap_or(Duration::from_secs(300)),
                threads: threads(),
                uploads: connections(env, &src.repository.value),
                compression: src.compression.value.level(),
            };
            let (id, snap) = cairn_pg::backup::base_backup(&repo, &req, progress)?;
            let s = &snap.summary;
            return Ok(Done {
                outcome: Outcome {
                    files: Some(s.files_new + s.files_changed + s.files_unmodified),
                    bytes_read: Some(s.bytes_read),
                    bytes_added: Some(s.bytes_added),
                    snapshot: Some(id.to_hex()),
                    error: None,
                },
                partial: false,
            });
        }
    };
    let req = BackupRequest {
        what,
        provenance: provenance(),
        parent: ParentChoice::Auto,
        force: false,
        threads: threads(),
        uploads: connections(env, &src.repository.value),
        compression: src.compression.value.level(),
        repo_dir,
    };
    // The files' metadata read ahead by more threads than the walk's (cairn_fs::Warmer):
    // a scheduled backup usually finds a cold cache. Measured with the key already
    // derived, as the daemon's key cache leaves it: cold unchanged re-backup of a
    // 48k-file tree 0.70 -> 0.62 s.
    let warm = crate::backup::warm(&req.what, req.repo_dir.as_deref());
    let result = crate::backup::backup(&repo, &req, progress, warm);
    if let Some(dir) = staging {
        let _ = std::fs::remove_dir_all(dir);
    }
    let report = result?;
    let s = &report.snapshot.summary;
    Ok(Done {
        outcome: Outcome {
            files: Some(s.files_new + s.files_changed + s.files_unmodified),
            bytes_read: Some(s.bytes_read),
            bytes_added: Some(s.bytes_added),
            snapshot: Some(report.id.to_hex()),
            error: report
                .errors
                .first()
                .map(|e| format!("{} files could not be read (first: {e})", report.errors.len())),
        },
        partial: report.snapshot.partial,
    })
}

/// A copy after a backup, recorded as its own job.
fn copy_as_job(
    env: &Env,
    catalog: &Catalog,
    backup: &NewJob,
    req: &JobRequest,
    to: &str,
    src: &Source,
) -> Result<JobReport> {
    let new = NewJob { kind: Kind::Copy, repository: to.to_string(), scheduled_at: None, ..backup.clone() };
    let row = catalog.start(&new, Timestamp::now())?;
    let r = copy_job(env, src, Some(to));
    let (status, outcome) = match &r {
        Ok(o) => (Status::Succeeded, o.clone()),
        Err(e) => (Status::Failed, Outcome { error: Some(crate::one_line(e)), ..Outcome::default() }),
    };
    catalog.finish(row, status, &outcome, Timestamp::now())?;
    let id = format!("{}/{row}", env.host);
    crate::audit::job(env, &src.repository.value, req, Kind::Copy, &id, status, &outcome);
    Ok(JobReport { id, status, snapshot: outcome.snapshot, error: outcome.error, copies: Vec::new() })
}

/// Copies the source's snapshots the destination lacks to `only` (or every `copy_to`).
fn copy_job(env: &Env, src: &Source, only: Option<&str>) -> Result<Outcome> {
    let from = env.open_repository(&src.repository.value)?;
    let mine = |s: &cairn_format::snapshot::Snapshot| s.source.as_deref() == Some(src.name.as_str());
    let mut snaps = from.list_snapshots_lenient()?.snapshots;
    snaps.retain(|(_, s)| mine(s));
    let mut out = Outcome::default();
    for c in src.copy_to.value.iter().filter(|c| only.is_none_or(|o| o == c.repository)) {
        let to = env.open_repository(&c.repository)?;
        let _lease = to.lease("copy", &env.host)?;
        // Only what is newer than the copy's newest of this source: what the copy's own
        // retention forgot must not come back with the next backup.
        let there = to.list_snapshots_lenient()?.snapshots;
        let newest_there =
            there.iter().filter(|(_, s)| mine(s)).filter_map(|(_, s)| s.time.parse::<Timestamp>().ok()).max();
        let newer: Vec<_> = snaps
            .iter()
            .filter(|(_, s)| newest_there.is_none_or(|n| s.time.parse::<Timestamp>().is_ok_and(|t| t > n)))
            .cloned()
            .collect();
        let todo = cairn_engine::copy::missing(newer, &there);
        // The audit log travels with the snapshots (format.md §12.3), first, so that every
        // segment a copied snapshot anchors is there.
        cairn_audit::copy(&from, &to)?;
        let done = cairn_engine::copy::copy_snapshots(&from, &to, &todo, connections(env, &c.repository))?;
        out.bytes_added = Some(out.bytes_added.unwrap_or(0) + done.stats.bytes_copied);
        out.files = Some(out.files.unwrap_or(0) + done.copied.len() as u64);
        if let Some((_, d)) = done.copied.last() {
            out.snapshot = Some(d.to_hex());
        }
    }
    Ok(out)
}

/// Forgets the source's snapshots its keep-rules no longer keep (per host and paths), then
/// prunes the repository (one retention at a time per repository on this host; prune's own
/// protocol covers other hosts).
fn retention_job(env: &Env, src: &Source) -> Result<Done> {
    let Some(ret) = &src.retention.value else {
        return Err(Error::Source(format!("source {:?} has no keep rules", src.name)));
    };
    // The primary with the class's rules, then each copy with its own (or the class's).
    let mut targets = vec![(src.repository.value.clone(), ret.keep.clone())];
    for c in &src.copy_to.value {
        targets.push((c.repository.clone(), c.keep.clone().unwrap_or_else(|| ret.keep.clone())));
    }
    let mut forgotten = 0;
    for (repository, keep) in targets {
        let _alone = crate::lock::lock(&env.retention_lock_path(&repository))?;
        let repo = env.open_repository(&repository)?;
        forgotten += forget_source(&repo, &src.name, &keep, ret.pitr_window)
            .map_err(|e| e.context(format!("repository {repository:?}")))?;
        if ret.prune {
            let location = env.policy.repositories.get(&repository).map(|r| r.url.clone()).unwrap_or_default();
            let opts = crate::maintenance::retention_prune_options(&env.host);
            crate::maintenance::prune_repository(&repo, &location, &opts, &cairn_repo::Meter::default())
                .map_err(|e| e.context(format!("prune of {repository:?}")))?;
        }
    }
    Ok(Done { outcome: Outcome { files: Some(forgotten as u64), ..Outcome::default() }, partial: false })
}

/// Deletes the source's snapshots that `keep` does not keep; returns how many. With a
/// point-in-time window (PostgreSQL) the base backups every instant of the window needs
/// are kept too: all inside it and the newest one before it (the WAL they need stays, as
/// prune expires only WAL older than the oldest base backup).
pub fn forget_source(
    repo: &Repository,
    source: &str,
    keep: &cairn_policy::KeepPolicy,
    pitr_window: Option<SignedDuration>,
) -> Result<usize> {
    let mut snaps = repo.list_snapshots()?;
    snaps.retain(|(_, s)| s.source.as_deref() == Some(source));
    let mut window_keeps = std::collections::HashSet::new();
    if let Some(w) = pitr_window {
        let cutoff = Timestamp::now().checked_sub(w).unwrap_or(Timestamp::MIN);
        let mut before: Option<(Timestamp, cairn_format::SnapshotId)> = None;
        for (id, s) in &snaps {
            let Ok(t) = s.time.parse::<Timestamp>() else { continue };
            if t >= cutoff {
                window_keeps.insert(*id);
            } else if before.is_none_or(|(b, _)| t > b) {
                before = Some((t, *id));
            }
        }
        window_keeps.extend(before.map(|(_, id)| id));
    }
    let candidates: Vec<cairn_policy::Candidate> = snaps
        .iter()
        .map(|(_, s)| cairn_policy::Candidate {
            host: s.hostname.clone(),
            paths: s.paths.clone(),
            tags: s.tags.clone(),
            time: s.time.clone(),
        })
        .collect();
    let by = cairn_policy::GroupBy { host: true, paths: true, tags: false };
    let plan = cairn_policy::forget_plan(&candidates, keep, by)
        .map_err(|(i, e)| Error::Source(format!("snapshot {}: {e}", snaps[i].0.short())))?;
    let now = cairn_repo::lease::unix_now();
    let mut n = 0;
    for g in plan {
        for (i, d) in g.members {
            let id = snaps[i].0;
            // Under object lock a snapshot stays until its period ends; a later run removes it.
            if !d.keep()
                && !window_keeps.contains(&id)
                && repo.object_locked_until(&cairn_repo::layout::snapshot(&id), now).is_none()
            {
                repo.delete_snapshot(id)?;
                n += 1;
            }
        }
    }
    Ok(n)
}

fn verify_job(env: &Env, src: &Source) -> Result<Done> {
    let repo = env.open_repository(&src.repository.value)?;
    let subset = src.verify.value.as_ref().map(|v| v.read_data_subset).unwrap_or(0.0);
    let read = if subset <= 0.0 {
        cairn_repo::check::ReadData::None
    } else if subset >= 100.0 {
        cairn_repo::check::ReadData::All
    } else {
        cairn_repo::check::ReadData::Percent(subset / 100.0)
    };
    let mut r = cairn_repo::check::check(&repo, read)?;
    let location = env.policy.repositories.get(&src.repository.value).map(|r| r.url.clone()).unwrap_or_default();
    crate::maintenance::verify_object_lock(&repo, &location, &mut r)?;
    if let Some(first) = r.errors.first() {
        return Err(Error::Source(format!("check found {} problems (first: {first})", r.errors.len())));
    }
    Ok(Done { outcome: Outcome { files: Some(r.packs_read as u64), ..Outcome::default() }, partial: false })
}

struct HookCtx {
    id: String,
    req: JobRequest,
    src: Source,
}

/// Runs a hook with the job on stdin (JSON) and in `CAIRN_*` variables; an error if it
/// fails, cannot start, or outlives its timeout (it is then killed).
fn run_hook(
    name: &'static str,
    h: &Hook,
    cx: &HookCtx,
    end: Option<(Status, Option<&str>, Option<&str>)>,
) -> Result<()> {
    let fail = |why: String| Error::Hook { hook: name, command: h.command.clone(), why };
    let json = serde_json::json!({
        "hook": name, "job": cx.id, "kind": cx.req.kind.as_str(), "source": cx.src.name, "class": cx.src.class,
        "repository": cx.src.repository.value, "trigger": cx.req.trigger.as_str(), "actor": cx.req.actor,
        "label": cx.req.label, "reason": cx.req.reason,
        "status": end.map(|e| e.0.as_str()), "snapshot": end.and_then(|e| e.1), "error": end.and_then(|e| e.2),
    });
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c")
        .arg(&h.command)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .env("CAIRN_HOOK", name)
        .env("CAIRN_JOB_ID", &cx.id)
        .env("CAIRN_JOB_KIND", cx.req.kind.as_str())
        .env("CAIRN_SOURCE", &cx.src.name)
        .env("CAIRN_CLASS", &cx.src.class)
        .env("CAIRN_REPOSITORY", &cx.src.repository.value)
        .env("CAIRN_TRIGGER", cx.req.trigger.as_str());
    if let Some((status, snap, err)) = end {
        cmd.env("CAIRN_STATUS", status.as_str());
        if let Some(s) = snap {
            cmd.env("CAIRN_SNAPSHOT", s);
        }
        if let Some(e) = err {
            cmd.env("CAIRN_ERROR", e);
        }
    }
    // Its own process group, so a timeout stops what the hook started too.
    crate::process::own_group(&mut cmd);
    let mut child = cmd.spawn().map_err(|e| fail(format!("could not start: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its input is fine.
        let _ = stdin.write_all(json.to_string().as_bytes());
    }
    let limit = Duration::from_secs(h.timeout.as_secs().max(1) as u64);
    match crate::process::wait(child, limit, &AtomicBool::new(false)) {
        Ok(crate::process::Ended::Exited(s)) if s.success() => Ok(()),
        Ok(crate::process::Ended::Exited(s)) => Err(fail(format!("failed ({s})"))),
        Ok(_) => Err(fail(format!("ran past its timeout of {} and was killed", cairn_policy::file::human(h.timeout)))),
        Err(e) => Err(fail(format!("waiting: {e}"))),
    }
}

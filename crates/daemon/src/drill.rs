//! Restore drills: restore a source's backup into a sandbox, prove it usable, measure how
//! long that took (RTO) and how old the recovered data is (RPO), record it, clean up.
//!
//! Key decisions:
//! - A drill is a job (catalog kind `drill`) under its own per-source lock, so it runs
//!   beside the source's backups, never beside another drill of the source.
//! - RTO achieved is measured from the drill's start to the moment every check passed (the
//!   data is "validated-ready"); each phase is timed on its own. RPO achieved is the drill's
//!   start minus the time of the newest data recovered: for PostgreSQL the last transaction
//!   replayed (`pg_last_xact_replay_timestamp()`), else the snapshot's time. The targets
//!   are the source's `rto` and `rpo`; an RPO is judged only for a drill of the newest
//!   recovery point (a random or chosen older one is old by intent).
//! - Nothing of the drill touches production: files are restored without what grants
//!   privilege; a PostgreSQL sandbox server runs on a Unix socket in the sandbox only, with
//!   archiving off (its new timeline must never reach the repository), its own `pg_hba.conf`
//!   and WAL fetched by the drill process itself while the server replays
//!   ([`cairn_pg::prefetch::feed`]: `restore_command` is a shell script that takes what
//!   the drill put in the sandbox, so the server never holds a repository password, and
//!   replay never waits for a fetch nor for WAL beyond its target).
//! - Cleanup always runs: the sandbox server is stopped and the sandbox removed after a
//!   failure or a stop too; a server outlives a killed drill by no more than the kernel's
//!   parent-death signal, and the next drill (or daemon start) removes what is left.
//! - The record (phases, measures, checks with their output, verdict) goes into the catalog
//!   and, sealed, into the repository drilled (`drills/`), so whoever reads the repository
//!   sees the evidence even without this machine's catalog.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cairn_engine::{browse, Overwrite, RestoreOptions, Restorer};
use cairn_format::snapshot::Snapshot;
use cairn_format::SnapshotId;
use cairn_policy::file::{Check, Drill, Pick, Source, SourceKind};
use cairn_repo::{Index, Repository};
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use crate::catalog::{Kind, NewJob, Outcome, Status, Trigger};
use crate::jobs::Env;
use crate::process::Ended;
use crate::{Error, Result};

/// Where drill records live in a repository (sealed named objects, one per drill).
pub const PREFIX: &str = "drills";
/// Largest drill record read back.
const MAX_RECORD: usize = 4 << 20;
/// Output kept per check.
const MAX_OUTPUT: usize = 4096;

/// A drill to run.
#[derive(Debug, Clone)]
pub struct DrillRequest {
    pub source: String,
    /// A snapshot id (prefix) or `latest`; `None`: as the policy's `pick` says.
    pub snapshot: Option<String>,
    /// PostgreSQL: recover to this time (RFC 3339) instead of the end of the WAL.
    pub time: Option<String>,
    /// Restore from this repository (a copy of the source) and never read the primary.
    pub from: Option<String>,
    /// Leave the sandbox (and nothing running) for a human to inspect.
    pub keep: bool,
    pub trigger: Trigger,
    pub actor: String,
    pub window: Option<Timestamp>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Phase {
    pub name: String,
    pub secs: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckResult {
    pub check: String,
    pub ok: bool,
    pub secs: f64,
    pub output: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Passed,
    /// Restored and validated, but slower than the RTO or older than the RPO.
    MissedTarget,
    Failed,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Passed => "passed",
            Verdict::MissedTarget => "missed_target",
            Verdict::Failed => "failed",
        }
    }
}

/// Everything a drill found, as kept in the catalog and in the repository.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// This document's version.
    pub format: u32,
    pub job: String,
    pub host: String,
    pub source: String,
    pub class: String,
    pub kind: String,
    pub scenario: String,
    /// The repository restored from.
    pub repository: String,
    pub trigger: String,
    pub actor: String,
    pub started_at: String,
    pub ended_at: String,
    pub pick: String,
    pub snapshot: Option<String>,
    pub snapshot_time: Option<String>,
    pub target_time: Option<String>,
    /// The time of the newest data recovered.
    pub recovered_to: Option<String>,
    pub phases: Vec<Phase>,
    pub rto_secs: Option<f64>,
    pub rpo_secs: Option<f64>,
    pub rto_target_secs: Option<i64>,
    pub rpo_target_secs: Option<i64>,
    pub rto_met: Option<bool>,
    pub rpo_met: Option<bool>,
    pub restored_files: u64,
    pub restored_bytes: u64,
    pub checks: Vec<CheckResult>,
    pub verdict: Verdict,
    pub reason: Option<String>,
    pub sandbox: String,
    pub cleaned_up: bool,
    #[serde(default)]
    pub notes: Vec<String>,
}

/// The drill settings of a source without a `drill` table (`cairn drill` still works).
fn default_drill() -> Drill {
    Drill {
        timing: None,
        pick: Pick::Latest,
        root: None,
        timeout: SignedDuration::from_hours(1),
        from: None,
        pg_bin: None,
    }
}

pub fn settings(src: &Source) -> Drill {
    src.drill.value.clone().unwrap_or_else(default_drill)
}

/// The directory sandboxes are made in.
pub fn root(env: &Env, d: &Drill) -> PathBuf {
    let r = d.root.as_ref().map(PathBuf::from).unwrap_or_else(|| env.state_dir.join("drills"));
    // Absolute: checks run in the sandbox and get paths below it.
    std::path::absolute(&r).unwrap_or(r)
}

/// In a sandbox kept with `--keep`: the sweep leaves it for a human to remove.
const KEPT: &str = "KEPT-BY-CAIRN-DRILL";

pub fn lock_path(env: &Env, source: &str) -> PathBuf {
    env.state_dir.join("locks").join(format!("drill-{source}.lock"))
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

/// Removes the sandboxes of drills that no longer run (their process was killed): any
/// server still running in one is killed first. `held`: the source whose drill lock the
/// caller holds (its sandboxes are all leftovers). Returns the sandboxes removed.
pub fn sweep(env: &Env, held: Option<&str>) -> Result<Vec<PathBuf>> {
    let mut roots: Vec<PathBuf> = env.policy.sources.values().map(|s| root(env, &settings(s))).collect();
    roots.sort();
    roots.dedup();
    let mut removed = Vec::new();
    for r in roots {
        let Ok(entries) = std::fs::read_dir(&r) else { continue };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            // `<source>.<job row>`: only what a drill made is touched.
            let Some((source, row)) = name.rsplit_once('.') else { continue };
            if row.parse::<u64>().is_err() || !env.policy.sources.contains_key(source) {
                continue;
            }
            if e.path().join(KEPT).exists() {
                continue;
            }
            if held != Some(source) && !crate::lock::is_free(&lock_path(env, source))? {
                continue;
            }
            kill_in(&e.path());
            std::fs::remove_dir_all(e.path())
                .map_err(|err| Error::io(format!("removing {}", e.path().display()), err))?;
            removed.push(e.path());
        }
    }
    Ok(removed)
}

/// Kills every process working in `sandbox` (its current directory is in it): a sandbox
/// server and its backends, a check command and what it started. A killed drill's server
/// normally dies with it (parent-death signal); this catches what did not.
fn kill_in(sandbox: &Path) -> usize {
    let Ok(sandbox) = std::fs::canonicalize(sandbox) else { return 0 };
    let Ok(procs) = std::fs::read_dir("/proc") else { return 0 };
    let mut n = 0;
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        if pid <= 1 || pid == std::process::id() as i32 {
            continue;
        }
        if std::fs::read_link(p.path().join("cwd")).is_ok_and(|cwd| cwd.starts_with(&sandbox)) {
            // SAFETY: a signal to a process whose working directory is inside the sandbox.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            n += 1;
        }
    }
    if n > 0 {
        // Let the kernel take them away before their files are removed.
        std::thread::sleep(Duration::from_millis(200));
    }
    n
}

/// Runs a drill of `req.source`: the whole of it, recorded as a catalog job. Errors are
/// returned only when the drill could not begin (unknown source, busy, catalog); a drill
/// that began and failed returns its record with the verdict `failed` and the reason.
pub fn run(env: &Env, req: &DrillRequest, stop: &AtomicBool) -> Result<Record> {
    run_metered(env, req, stop, &cairn_repo::Meter::default())
}

/// [`run`], counting the bytes its restore phase writes on `meter`.
pub fn run_metered(env: &Env, req: &DrillRequest, stop: &AtomicBool, meter: &cairn_repo::Meter) -> Result<Record> {
    let src = env.source(&req.source)?.clone();
    let cfg = settings(&src);
    let from = req.from.clone().or(cfg.from.clone());
    if let Some(f) = &from {
        if *f != src.repository.value && !src.copy_to.value.iter().any(|c| c.repository == *f) {
            return Err(Error::Source(format!(
                "source {:?} is not copied to {f:?}: a drill restores from its repository or one of its copy_to",
                src.name
            )));
        }
    }
    let repository = from.clone().unwrap_or_else(|| src.repository.value.clone());
    let scenario = match &from {
        Some(f) if *f != src.repository.value => {
            format!("site failure: restore from the copy {f}; the primary {} is not read", src.repository.value)
        }
        _ => format!("restore from the source's repository {}", src.repository.value),
    };
    let dir = root(env, &cfg);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let mut lock = match crate::lock::try_lock(&lock_path(env, &src.name))? {
        Ok(l) => l,
        Err(h) => return Err(Error::Busy { source_name: src.name.clone(), job: h.job, pid: h.pid }),
    };
    let mut catalog = env.catalog()?;
    // Drills of this source still "running" cannot be: we hold its drill lock.
    for j in catalog.running()? {
        if j.kind == Kind::Drill.as_str() && j.source == src.name && j.host == env.host {
            catalog.set_status(
                j.row,
                Status::Interrupted,
                "the drill's process ended before the drill did (killed, or the machine stopped)",
                Timestamp::now(),
            )?;
        }
    }
    for j in crate::daemon::mark_interrupted(env, &catalog)? {
        crate::daemon::log(
            crate::daemon::Level::Warning,
            &format!("job {} ({} of {}) was interrupted: its process ended before it did", j.id, j.kind, j.source),
        );
    }
    sweep(env, Some(&src.name))?;
    let new = NewJob {
        host: env.host.clone(),
        kind: Kind::Drill,
        source: src.name.clone(),
        class: src.class.clone(),
        repository: repository.clone(),
        trigger: req.trigger,
        actor: req.actor.clone(),
        label: None,
        reason: None,
        scheduled_at: req.window,
    };
    let started = Timestamp::now();
    let row = catalog.start(&new, started)?;
    let id = format!("{}/{row}", env.host);
    lock.describe(&id)?;
    let sandbox = dir.join(format!("{}.{row}", src.name));
    let t0 = Instant::now();
    let mut rec = Record {
        format: 1,
        job: id.clone(),
        host: env.host.clone(),
        source: src.name.clone(),
        class: src.class.clone(),
        kind: src.kind.name().to_string(),
        scenario,
        repository: repository.clone(),
        trigger: req.trigger.as_str().to_string(),
        actor: req.actor.clone(),
        started_at: started.to_string(),
        ended_at: String::new(),
        pick: if req.snapshot.is_some() || req.time.is_some() { "chosen".into() } else { cfg.pick.as_str().into() },
        snapshot: None,
        snapshot_time: None,
        target_time: req.time.clone(),
        recovered_to: None,
        phases: Vec::new(),
        rto_secs: None,
        rpo_secs: None,
        rto_target_secs: src.rto.value.map(|d| d.as_secs()),
        rpo_target_secs: src.rpo.value.map(|d| d.as_secs()),
        rto_met: None,
        rpo_met: None,
        restored_files: 0,
        restored_bytes: 0,
        checks: Vec::new(),
        verdict: Verdict::Failed,
        reason: None,
        sandbox: sandbox.display().to_string(),
        cleaned_up: false,
        notes: Vec::new(),
    };
    let mut run = Run {
        env,
        src: &src,
        cfg: &cfg,
        req,
        sandbox: &sandbox,
        deadline: t0 + Duration::from_secs(cfg.timeout.as_secs().max(1) as u64),
        stop,
        meter,
        rec: &mut rec,
        last: Instant::now(),
        server: None,
        repo: None,
    };
    let result = std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&sandbox)
        .map_err(|e| Error::io(format!("creating the sandbox {}", sandbox.display()), e))
        .and_then(|_| run.drill(&repository));
    let ready = t0.elapsed();
    let repo = run.repo.take();
    // Cleanup, whatever happened.
    drop(run.server.take());
    drop(run);
    // What a check left running in the sandbox (a daemonised child) goes too.
    let stray = kill_in(&sandbox);
    if stray > 0 {
        rec.notes.push(format!("{stray} processes still running in the sandbox were killed"));
    }
    if req.keep {
        let _ = std::fs::write(sandbox.join(KEPT), b"kept by cairn drill --keep: remove this directory when done\n");
        rec.notes.push(format!("sandbox kept at {} (--keep)", sandbox.display()));
    } else {
        match std::fs::remove_dir_all(&sandbox) {
            Ok(()) => rec.cleaned_up = true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => rec.cleaned_up = true,
            Err(e) => rec.notes.push(format!("removing the sandbox failed: {e}")),
        }
    }
    match result {
        Ok(()) => {
            rec.rto_secs = Some(secs(ready));
            rec.rto_met = rec.rto_target_secs.map(|t| ready.as_secs_f64() <= t as f64);
            let mut missed = Vec::new();
            if rec.rto_met == Some(false) {
                missed.push(format!(
                    "recovery took {:.1} s, more than the RTO of {}",
                    ready.as_secs_f64(),
                    cairn_policy::file::human(SignedDuration::from_secs(rec.rto_target_secs.unwrap_or(0)))
                ));
            }
            if rec.rpo_met == Some(false) {
                missed.push(format!(
                    "the newest data recovered was {:.0} s old, more than the RPO of {}",
                    rec.rpo_secs.unwrap_or(0.0),
                    cairn_policy::file::human(SignedDuration::from_secs(rec.rpo_target_secs.unwrap_or(0)))
                ));
            }
            if missed.is_empty() {
                rec.verdict = Verdict::Passed;
            } else {
                rec.verdict = Verdict::MissedTarget;
                rec.reason = Some(missed.join("; "));
            }
        }
        Err(e) => {
            rec.verdict = Verdict::Failed;
            rec.reason = Some(crate::one_line(&e));
            // Targets are judged only for a recovery that was proven.
            rec.rpo_met = None;
        }
    }
    rec.ended_at = Timestamp::now().to_string();
    // The evidence goes into the repository drilled, if it can be reached.
    match repo.as_ref().map(|r| save_record(r, &rec)) {
        Some(Ok(())) => {}
        Some(Err(e)) => {
            rec.notes.push(format!("the record could not be written to the repository: {}", crate::one_line(&e)))
        }
        None => rec.notes.push("the repository could not be opened; the record is only in the catalog".into()),
    }
    if let Some(r) = &repo {
        let target = cairn_audit::Target {
            repository: rec.repository.clone(),
            source: Some(rec.source.clone()),
            snapshots: rec.snapshot.iter().cloned().collect(),
            paths: Vec::new(),
        };
        let message = format!(
            "job {}: {}{}",
            rec.job,
            rec.verdict.as_str(),
            rec.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default()
        );
        let mut a = cairn_audit::record(
            &crate::audit::actor(env, &req.actor),
            "drill",
            target,
            if rec.verdict == Verdict::Failed { "failed" } else { "ok" },
            Some(message),
        );
        a.reason = Some(req.trigger.as_str().to_string());
        if let Err(e) = crate::audit::writer(env).append(r, vec![a]) {
            rec.notes.push(format!("the audit record could not be written: {}", crate::one_line(&e)));
        }
    }
    let json = serde_json::to_string(&rec).map_err(|e| Error::Source(format!("encoding the drill record: {e}")))?;
    let status = if rec.verdict == Verdict::Passed { Status::Succeeded } else { Status::Failed };
    let outcome = Outcome {
        files: Some(rec.restored_files),
        bytes_read: Some(rec.restored_bytes),
        bytes_added: None,
        snapshot: rec.snapshot.clone(),
        error: rec.reason.clone(),
    };
    catalog.transaction(|c| {
        c.finish(row, status, &outcome, Timestamp::now())?;
        c.save_drill(row, &rec.source, started, rec.verdict.as_str(), &json)
    })?;
    Ok(rec)
}

/// Seals a record into `drills/` of the repository (named by a random id: create-only,
/// so an object lock keeps it).
pub fn save_record(repo: &Repository, rec: &Record) -> Result<()> {
    let json = serde_json::to_vec(rec).map_err(|e| Error::Source(format!("encoding the drill record: {e}")))?;
    let id = cairn_crypto::random_array::<32>().map_err(|e| Error::Source(format!("random id: {e}")))?;
    let path = format!("{PREFIX}/{}", cairn_format::id::to_hex(&id));
    repo.put_named(&path, &[&json], 3, cairn_store::PutMode::Create)?;
    Ok(())
}

/// An object that is not a readable drill record: its path and why.
pub type Unreadable = (String, String);

/// The drill records a repository holds, oldest first; unreadable ones are returned as
/// `(path, why)`.
pub fn records(repo: &Repository) -> Result<(Vec<Record>, Vec<Unreadable>)> {
    let listed = repo.block_on(repo.store().list(PREFIX)).map_err(cairn_repo::Error::from)?;
    let mut out = Vec::new();
    let mut bad = Vec::new();
    for m in listed {
        let name = m.path.rsplit('/').next().unwrap_or("");
        if cairn_format::Id::from_hex(name).is_none() || m.path != format!("{PREFIX}/{name}") {
            continue;
        }
        match repo.get_named(&m.path, MAX_RECORD) {
            Ok(b) => match serde_json::from_slice::<Record>(&b) {
                Ok(r) => out.push(r),
                Err(e) => bad.push((m.path, format!("not a drill record: {e}"))),
            },
            Err(e) => bad.push((m.path, crate::one_line(&e))),
        }
    }
    out.sort_by(|a, b| a.started_at.cmp(&b.started_at));
    Ok((out, bad))
}

/// One drill in progress.
struct Run<'a> {
    env: &'a Env,
    src: &'a Source,
    cfg: &'a Drill,
    req: &'a DrillRequest,
    sandbox: &'a Path,
    deadline: Instant,
    stop: &'a AtomicBool,
    meter: &'a cairn_repo::Meter,
    rec: &'a mut Record,
    /// When the current phase began.
    last: Instant,
    server: Option<Server>,
    repo: Option<Repository>,
}

impl Run<'_> {
    /// Ends the current phase: records its time, then refuses to go on past the deadline
    /// or after a stop.
    fn phase(&mut self, name: &str) -> Result<()> {
        let now = Instant::now();
        self.rec.phases.push(Phase { name: name.to_string(), secs: secs(now - self.last) });
        self.last = now;
        self.go_on()
    }

    fn go_on(&self) -> Result<()> {
        if self.stop.load(Ordering::Relaxed) {
            return Err(Error::Source("the drill was stopped (SIGTERM) before it finished".into()));
        }
        if Instant::now() >= self.deadline {
            return Err(Error::Source(format!(
                "the drill ran past its timeout of {}",
                cairn_policy::file::human(self.cfg.timeout)
            )));
        }
        Ok(())
    }

    fn left(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    fn drill(&mut self, repository: &str) -> Result<()> {
        let repo = self.env.open_repository(repository)?;
        let (index, damaged) = repo.load_index_reporting()?;
        for (id, why) in damaged {
            self.rec.notes.push(format!("index file {id} is damaged and was left out: {why}"));
        }
        let list = repo.list_snapshots_lenient()?;
        let mut snaps: Vec<(SnapshotId, Snapshot)> =
            list.snapshots.into_iter().filter(|(_, s)| of_source(self.src, s)).collect();
        snaps.sort_by(|a, b| a.1.time.cmp(&b.1.time));
        self.repo = Some(repo);
        self.phase("fetch metadata")?;
        let repo = self.repo.take().ok_or_else(|| Error::Source("repository lost".into()))?;
        let r = self.choose_and_restore(&repo, &index, snaps);
        self.repo = Some(repo);
        r
    }

    fn choose_and_restore(
        &mut self,
        repo: &Repository,
        index: &Index,
        snaps: Vec<(SnapshotId, Snapshot)>,
    ) -> Result<()> {
        let postgres = matches!(self.src.kind, SourceKind::Postgres { .. });
        let target = match &self.req.time {
            Some(_) if !postgres => {
                return Err(Error::Source(
                    "--time applies to postgres sources; choose a snapshot with --snapshot".into(),
                ))
            }
            Some(t) => Some(cairn_pg::recovery::parse_target(Some(t), None, None, None)?),
            None => None,
        };
        let (sid, snap) = if let Some(spec) = &self.req.snapshot {
            let (id, s) = repo.resolve_snapshot(spec)?;
            if !of_source(self.src, &s) {
                return Err(Error::Source(format!(
                    "snapshot {} is not a backup of source {:?}",
                    id.short(),
                    self.src.name
                )));
            }
            (id, s)
        } else if let Some(t) = &target {
            cairn_pg::recovery::choose(&snaps, t)?.clone()
        } else if snaps.is_empty() {
            return Err(Error::Source(format!(
                "repository {} holds no backup of source {:?} to drill",
                self.rec.repository, self.src.name
            )));
        } else if self.cfg.pick == Pick::Random {
            let r = cairn_crypto::random_array::<8>().map(u64::from_le_bytes).unwrap_or(0);
            snaps[(r % snaps.len() as u64) as usize].clone()
        } else {
            snaps[snaps.len() - 1].clone()
        };
        let newest = snaps.last().map(|(i, _)| *i);
        self.rec.snapshot = Some(sid.to_hex());
        self.rec.snapshot_time = Some(snap.time.clone());
        self.phase("select")?;
        // An RPO is judged only for the newest recovery point.
        let judged =
            self.req.snapshot.is_none() && target.is_none() && self.cfg.pick == Pick::Latest && newest == Some(sid);
        let recovered = if postgres {
            self.postgres(repo, index, &sid, &snap, target.as_ref())?
        } else {
            self.files(repo, index, &snap)?;
            snap.time.parse::<Timestamp>().ok()
        };
        if let Some(t) = recovered {
            let started: Timestamp = self.rec.started_at.parse().unwrap_or(t);
            let age = (started.as_millisecond() - t.as_millisecond()).max(0) as f64 / 1000.0;
            self.rec.recovered_to = Some(t.to_string());
            self.rec.rpo_secs = Some(age);
            if judged {
                self.rec.rpo_met = self.rec.rpo_target_secs.map(|r| age <= r as f64);
            }
        }
        if let Some(c) = self.rec.checks.iter().find(|c| !c.ok) {
            return Err(Error::Source(format!("check failed: {}: {}", c.check, first_line(&c.output))));
        }
        Ok(())
    }

    fn threads(&self) -> usize {
        cairn_engine::restore::default_threads(2)
    }

    // ---- files, command and sqlite sources ----

    fn files(&mut self, repo: &Repository, index: &Index, snap: &Snapshot) -> Result<()> {
        let target = self.sandbox.join("restore");
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&target)
            .map_err(|e| Error::io(format!("creating {}", target.display()), e))?;
        let dest = cairn_fs::FsDestination::new(&target).map_err(|e| Error::io(target.display().to_string(), e))?;
        let all = |_: &str, _: bool| true;
        // verify: every restored file is read back and each chunk re-hashed against the
        // blob id the snapshot names.
        let opts = RestoreOptions {
            overwrite: Overwrite::Always,
            verify: true,
            threads: self.threads(),
            filter: &all,
            privileged: false,
        };
        let restorer = Restorer::new(repo, index);
        let plan = restorer.plan(snap.tree, "", &dest, &opts, &mut browse::Budget::for_snapshot(&snap.summary))?;
        self.meter.plan(1, plan.bytes_total);
        let sum = restorer.execute(plan, &dest, &opts, &self.meter.bytes_done)?;
        self.meter.done(1, 0);
        self.rec.restored_files = sum.files;
        self.rec.restored_bytes = sum.bytes_written;
        if !sum.warnings.lines.is_empty() {
            self.rec.notes.push(format!(
                "{} entries left out or not restorable, first: {}",
                sum.warnings.lines.len() as u64 + sum.warnings.more,
                sum.warnings.lines[0]
            ));
        }
        self.phase("restore data")?;
        // What is on disk now, against what the backup said it saved.
        let t = Instant::now();
        let (files, bytes) = walk(&target).map_err(|e| Error::io(format!("reading {}", target.display()), e))?;
        let s = &snap.summary;
        let want_files = s.files_new + s.files_changed + s.files_unmodified;
        let ok = files == want_files && bytes == s.total_bytes && sum.verified == sum.files;
        self.rec.restored_bytes = bytes;
        self.rec.checks.push(CheckResult {
            check: "restored files re-hashed and counted against the snapshot".into(),
            ok,
            secs: secs(t.elapsed()),
            output: format!(
                "{} of {} files re-hashed; on disk {files} files, {bytes} bytes; the snapshot has {want_files} files, {} bytes",
                sum.verified, sum.files, s.total_bytes
            ),
        });
        let data_path = match &self.src.kind {
            SourceKind::Files { .. } => target.clone(),
            _ => snap.paths.first().map(|p| target.join(p.trim_start_matches('/'))).unwrap_or_else(|| target.clone()),
        };
        if let SourceKind::Sqlite { .. } = &self.src.kind {
            self.sqlite_checks(&data_path);
        }
        let env = vec![("CAIRN_DRILL_PATH".to_string(), data_path.display().to_string())];
        self.command_checks(&env, None);
        self.phase("validate")
    }

    fn sqlite_checks(&mut self, db: &Path) {
        let t = Instant::now();
        let conn = rusqlite::Connection::open_with_flags(
            db,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        );
        let conn = match conn {
            Ok(c) => c,
            Err(e) => {
                self.rec.checks.push(CheckResult {
                    check: "open the restored database".into(),
                    ok: false,
                    secs: secs(t.elapsed()),
                    output: e.to_string(),
                });
                return;
            }
        };
        let first = |sql: &str| -> std::result::Result<String, String> {
            conn.query_row(sql, [], |r| {
                Ok(match r.get_ref(0)? {
                    rusqlite::types::ValueRef::Null => String::new(),
                    rusqlite::types::ValueRef::Integer(i) => i.to_string(),
                    rusqlite::types::ValueRef::Real(f) => f.to_string(),
                    rusqlite::types::ValueRef::Text(t) | rusqlite::types::ValueRef::Blob(t) => {
                        String::from_utf8_lossy(t).into_owned()
                    }
                })
            })
            .map_err(|e| e.to_string())
        };
        let integrity = first("PRAGMA integrity_check");
        self.rec.checks.push(CheckResult {
            check: "PRAGMA integrity_check".into(),
            ok: integrity.as_deref() == Ok("ok"),
            secs: secs(t.elapsed()),
            output: integrity.unwrap_or_else(|e| e),
        });
        for c in self.src.validate.value.clone() {
            if let Check::Query { sql, min, .. } = &c {
                let t = Instant::now();
                let (ok, output) = judge(first(sql), *min);
                self.rec.checks.push(CheckResult { check: c.describe(), ok, secs: secs(t.elapsed()), output });
            }
        }
    }

    /// Runs the source's `validate` commands with `env` set; `cwd` defaults to the sandbox.
    fn command_checks(&mut self, env: &[(String, String)], cwd: Option<&Path>) {
        for c in self.src.validate.value.clone() {
            let Check::Command { command, timeout } = &c else { continue };
            let t = Instant::now();
            let mut cmd = std::process::Command::new("sh");
            cmd.arg("-c")
                .arg(command)
                .current_dir(cwd.unwrap_or(self.sandbox))
                .stdin(std::process::Stdio::null())
                .env("CAIRN_DRILL_JOB", &self.rec.job)
                .env("CAIRN_SOURCE", &self.rec.source)
                .env("CAIRN_SNAPSHOT", self.rec.snapshot.as_deref().unwrap_or(""));
            for (k, v) in env {
                cmd.env(k, v);
            }
            let limit = Duration::from_secs(timeout.as_secs().max(1) as u64).min(self.left());
            let out = self.sandbox.join("check-output");
            let (ok, output) = match crate::process::run_captured(&mut cmd, &out, MAX_OUTPUT, limit, self.stop) {
                Ok((Ended::Exited(s), text)) if s.success() => (true, text),
                Ok((Ended::Exited(s), text)) => (false, join(&format!("exited with {s}"), &text)),
                Ok((Ended::TimedOut, text)) => (
                    false,
                    join(&format!("killed after {:.0} s (its timeout, or the drill's)", limit.as_secs_f64()), &text),
                ),
                Ok((Ended::Stopped, text)) => (false, join("killed: the drill was stopped", &text)),
                Err(e) => (false, format!("could not start: {e}")),
            };
            self.rec.checks.push(CheckResult { check: c.describe(), ok, secs: secs(t.elapsed()), output });
        }
    }

    // ---- PostgreSQL ----

    fn postgres(
        &mut self,
        repo: &Repository,
        index: &Index,
        sid: &SnapshotId,
        snap: &Snapshot,
        target: Option<&cairn_pg::recovery::Target>,
    ) -> Result<Option<Timestamp>> {
        let SourceKind::Postgres { connection, .. } = &self.src.kind else {
            return Err(Error::Source("not a postgres source".into()));
        };
        let pgb = snap
            .postgres
            .as_ref()
            .ok_or_else(|| Error::Source(format!("snapshot {} is not a PostgreSQL base backup", sid.short())))?;
        if !pgb.tablespace_map.is_empty() {
            // Its symlinks would point at the production tablespaces.
            return Err(Error::Source("drills of clusters with tablespaces are not supported yet".into()));
        }
        let data = self.sandbox.join("data");
        let restored = cairn_pg::restore::data_dir(repo, index, sid, snap, &data, self.threads(), self.meter)?;
        self.rec.restored_files = restored.summary.files;
        self.rec.restored_bytes = restored.summary.bytes_written;
        self.phase("restore data")?;
        // The sandbox belongs to the cluster's owner: PostgreSQL refuses to run as root
        // and reads its data directory, WAL and configuration as that user.
        let root = unsafe { libc::geteuid() } == 0;
        let owner = root.then_some(restored.owner);
        // WAL is fetched by this process while the server replays (the server never holds
        // the repository's password): only the history files now, segments ahead of replay.
        let wal = self.sandbox.join("wal");
        std::fs::DirBuilder::new().mode(0o700).create(&wal).map_err(|e| Error::io(wal.display().to_string(), e))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&wal, Some(uid), Some(gid))
                .map_err(|e| Error::io(format!("chown {}", wal.display()), e))?;
        }
        let plan = cairn_pg::restore::wal_plan(repo, pgb)?;
        let rc = cairn_pg::prefetch::prepare_feed(repo, &plan, &wal, owner)?;
        self.phase("fetch wal")?;
        let latest = cairn_pg::recovery::Target::Latest;
        cairn_pg::recovery::prepare(
            &data,
            &restored.pg,
            &cairn_pg::recovery::settings(target.unwrap_or(&latest), &rc),
            owner,
        )?;
        let conf = data.join("postgresql.conf");
        if !conf.exists() {
            // Debian keeps the configuration outside the data directory: run on defaults.
            std::fs::write(&conf, b"").map_err(|e| Error::io(conf.display().to_string(), e))?;
        }
        let sock = self.sandbox.join("sock");
        std::fs::DirBuilder::new().mode(0o700).create(&sock).map_err(|e| Error::io(sock.display().to_string(), e))?;
        let hba = self.sandbox.join("pg_hba.conf");
        std::fs::write(&hba, b"# cairn drill: the sandbox socket only\nlocal all all trust\n")
            .map_err(|e| Error::io(hba.display().to_string(), e))?;
        if let Some((uid, gid)) = owner {
            for p in [self.sandbox.to_path_buf(), sock.clone(), hba.clone(), conf] {
                std::os::unix::fs::chown(&p, Some(uid), Some(gid))
                    .map_err(|e| Error::io(format!("chown {}", p.display()), e))?;
            }
        }
        let bin = pg_bin(self.cfg, &data)?;
        let port = free_port()?;
        let user = conn_value(connection, "user")
            .or_else(|| cairn_fs::user_name(restored.owner.0))
            .unwrap_or_else(|| "postgres".into());
        let dbname = conn_value(connection, "dbname").unwrap_or_else(|| "postgres".into());
        let conn = format!("host={} port={port} user={user} dbname={dbname}", sock.display());
        let stop_feed = std::sync::atomic::AtomicBool::new(false);
        let (replayed, fed) = std::thread::scope(|scope| {
            let feeder = scope.spawn(|| {
                cairn_pg::prefetch::feed(
                    repo,
                    &plan,
                    &wal,
                    owner,
                    cairn_pg::prefetch::DEPTH as usize,
                    cairn_pg::prefetch::PARALLEL,
                    &stop_feed,
                )
            });
            let replayed = (|| -> Result<cairn_pg::session::Session> {
                let log = self.sandbox.join("server.log");
                self.server = Some(Server::start(&bin, &data, &sock, &hba, port, owner, &log)?);
                let mut session = loop {
                    match cairn_pg::session::Session::connect(&conn) {
                        Ok(s) => break s,
                        Err(e) => {
                            if feeder.is_finished() {
                                return Err(Error::Source("fetching WAL for replay stopped".into()));
                            }
                            if let Some(s) = self.server.as_mut().and_then(|s| s.exited()) {
                                return Err(Error::Source(format!(
                                    "the sandbox PostgreSQL server stopped ({s}): {}",
                                    first_line(&crate::process::tail(&log, 600))
                                )));
                            }
                            if self.go_on().is_err() {
                                return Err(Error::Source(format!(
                                    "the sandbox PostgreSQL server did not accept connections before the drill's timeout: {e}"
                                )));
                            }
                            std::thread::sleep(Duration::from_millis(100));
                        }
                    }
                };
                self.phase("start")?;
                loop {
                    if feeder.is_finished() {
                        return Err(Error::Source("fetching WAL for replay stopped".into()));
                    }
                    let r = session.value("SELECT pg_is_in_recovery()")?;
                    if r == "f" {
                        break;
                    }
                    if let Some(s) = self.server.as_mut().and_then(|s| s.exited()) {
                        return Err(Error::Source(format!(
                            "the sandbox PostgreSQL server stopped during replay ({s})"
                        )));
                    }
                    self.go_on()?;
                    std::thread::sleep(Duration::from_millis(25));
                }
                Ok(session)
            })();
            stop_feed.store(true, std::sync::atomic::Ordering::Relaxed);
            let fed = feeder.join().unwrap_or_else(|_| Err(cairn_pg::Error::Invalid("the WAL feed panicked".into())));
            (replayed, fed)
        });
        // The feed's own error is the cause when it ended first.
        let fed = fed.map_err(|e| Error::Source(format!("fetching WAL for replay: {e}")))?;
        let mut session = replayed?;
        self.rec.notes.push(format!("{} WAL segments ({} bytes) fetched during replay", fed.files, fed.bytes));
        self.phase("wal replay")?;
        self.rec.checks.push(CheckResult {
            check: "pg_is_in_recovery() is false (promoted)".into(),
            ok: true,
            secs: 0.0,
            output: "f".into(),
        });
        let replayed = session
            .value("SELECT coalesce((extract(epoch FROM pg_last_xact_replay_timestamp()) * 1000)::bigint::text, '')")?;
        let recovered = match replayed.parse::<i64>().ok().and_then(|ms| Timestamp::from_millisecond(ms).ok()) {
            Some(t) => Some(t),
            None => {
                self.rec.notes.push("no transaction was replayed: the recovery point is the base backup's end".into());
                pgb.stop_time.parse::<Timestamp>().ok()
            }
        };
        for c in self.src.validate.value.clone() {
            if let Check::Query { sql, min, timeout } = &c {
                let t = Instant::now();
                let limit = timeout.as_secs().max(1).min(self.left().as_secs().max(1) as i64);
                // A session per query: psql ends at the first failing statement.
                let r = cairn_pg::session::Session::connect(&conn)
                    .and_then(|mut s| {
                        s.query(&format!("SET statement_timeout = '{limit}s'"))?;
                        s.value(sql)
                    })
                    .map_err(|e| e.to_string());
                let (ok, output) = judge(r, *min);
                self.rec.checks.push(CheckResult { check: c.describe(), ok, secs: secs(t.elapsed()), output });
            }
        }
        drop(session);
        let pg_env = vec![
            ("CAIRN_DRILL_PATH".to_string(), data.display().to_string()),
            ("PGHOST".to_string(), sock.display().to_string()),
            ("PGPORT".to_string(), port.to_string()),
            ("PGUSER".to_string(), user.clone()),
            ("PGDATABASE".to_string(), dbname.clone()),
        ];
        let amcheck = bin.join("pg_amcheck");
        if amcheck.exists() {
            let t = Instant::now();
            let mut cmd = std::process::Command::new(&amcheck);
            cmd.args(["--all", "--install-missing"])
                .arg("-h")
                .arg(&sock)
                .arg("-p")
                .arg(port.to_string())
                .arg("-U")
                .arg(&user)
                .stdin(std::process::Stdio::null());
            let out = self.sandbox.join("amcheck-output");
            let (ok, output) = match crate::process::run_captured(&mut cmd, &out, MAX_OUTPUT, self.left(), self.stop) {
                Ok((Ended::Exited(s), text)) if s.success() => {
                    (true, if text.is_empty() { "no corruption found".into() } else { text })
                }
                Ok((Ended::Exited(s), text)) => (false, join(&format!("exited with {s}"), &text)),
                Ok((_, text)) => (false, join("killed at the drill's timeout or stop", &text)),
                Err(e) => (false, format!("could not run pg_amcheck: {e}")),
            };
            self.rec.checks.push(CheckResult { check: "pg_amcheck --all".into(), ok, secs: secs(t.elapsed()), output });
        } else {
            self.rec.notes.push(format!("pg_amcheck not found in {}: not run", bin.display()));
        }
        self.command_checks(&pg_env, Some(self.sandbox));
        self.phase("validate")?;
        Ok(recovered)
    }
}

/// Whether a snapshot is a backup of the source: one the policy made names it; one made
/// by hand (`cairn backup`, `cairn pg backup`: no source recorded) counts when it holds
/// exactly what the source backs up.
fn of_source(src: &Source, s: &Snapshot) -> bool {
    match s.source.as_deref() {
        Some(name) => name == src.name,
        None => match &src.kind {
            SourceKind::Postgres { data_dir, .. } => s.postgres.as_ref().is_some_and(|p| {
                p.data_dir == *data_dir
                    || std::fs::canonicalize(data_dir).is_ok_and(|d| Path::new(&p.data_dir) == d.as_path())
            }),
            SourceKind::Files { paths, .. } => s.postgres.is_none() && s.paths == *paths,
            SourceKind::Sqlite { path } => s.postgres.is_none() && s.paths == [path.clone()],
            SourceKind::Command { .. } | SourceKind::CommandDir { .. } => false,
        },
    }
}

fn judge(r: std::result::Result<String, String>, min: Option<i64>) -> (bool, String) {
    match (r, min) {
        (Err(e), _) => (false, e),
        (Ok(v), Some(m)) => match v.trim().parse::<i64>() {
            Ok(n) => (n >= m, format!("{n} (at least {m} expected)")),
            Err(_) => (false, format!("{v:?} is not a count")),
        },
        (Ok(v), None) => (matches!(v.trim(), "t" | "true" | "1"), format!("{v:?} (true expected)")),
    }
}

fn first_line(s: &str) -> String {
    s.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("").chars().take(300).collect()
}

fn join(a: &str, b: &str) -> String {
    if b.is_empty() {
        a.to_string()
    } else {
        format!("{a}: {b}")
    }
}

/// Regular files and their total size below `dir` (symlinks not followed).
fn walk(dir: &Path) -> std::io::Result<(u64, u64)> {
    let mut files = 0;
    let mut bytes = 0;
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            let m = e.path().symlink_metadata()?;
            if m.is_dir() {
                todo.push(e.path());
            } else if m.is_file() {
                files += 1;
                bytes += m.len();
            }
        }
    }
    Ok((files, bytes))
}

/// A `key=value` of a libpq keyword/value connection string.
fn conn_value(conn: &str, key: &str) -> Option<String> {
    conn.split_whitespace().find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| v.trim_matches('\'').to_string())
    })
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| Error::io("finding a free port", e))?;
    l.local_addr().map(|a| a.port()).map_err(|e| Error::io("finding a free port", e))
}

/// The server binaries for a restored cluster: the policy's `pg_bin`, else those of its
/// major version (`PG_VERSION`) in Debian's layout, else `postgres` on `PATH`.
fn pg_bin(cfg: &Drill, data: &Path) -> Result<PathBuf> {
    if let Some(b) = &cfg.pg_bin {
        return Ok(PathBuf::from(b));
    }
    let version = std::fs::read_to_string(data.join("PG_VERSION")).unwrap_or_default();
    let debian = PathBuf::from(format!("/usr/lib/postgresql/{}/bin", version.trim()));
    if !version.trim().is_empty() && debian.join("postgres").exists() {
        return Ok(debian);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).find(|d| d.join("postgres").exists()).ok_or_else(|| {
        Error::Source(format!(
            "no PostgreSQL {} server binaries found (set drill.pg_bin in the policy)",
            version.trim()
        ))
    })
}

/// The sandbox's PostgreSQL server; stopped (immediate shutdown, then SIGKILL) when dropped.
struct Server {
    child: std::process::Child,
}

impl Server {
    fn start(
        bin: &Path,
        data: &Path,
        sock: &Path,
        hba: &Path,
        port: u16,
        owner: Option<(u32, u32)>,
        log: &Path,
    ) -> Result<Server> {
        let out = std::fs::File::create(log).map_err(|e| Error::io(log.display().to_string(), e))?;
        let err = out.try_clone().map_err(|e| Error::io(log.display().to_string(), e))?;
        let mut cmd = std::process::Command::new(bin.join("postgres"));
        cmd.arg("-D").arg(data).arg("-p").arg(port.to_string());
        let set = |cmd: &mut std::process::Command, k: &str, v: &str| {
            cmd.arg("-c").arg(format!("{k}={v}"));
        };
        set(&mut cmd, "listen_addresses", "");
        set(&mut cmd, "unix_socket_directories", &sock.display().to_string());
        set(&mut cmd, "hba_file", &hba.display().to_string());
        // Its new timeline must never be archived into the repository, nor wait for
        // standbys that belong to production.
        set(&mut cmd, "archive_mode", "off");
        set(&mut cmd, "synchronous_standby_names", "");
        set(&mut cmd, "hot_standby", "on");
        set(&mut cmd, "ssl", "off");
        set(&mut cmd, "logging_collector", "off");
        set(&mut cmd, "log_destination", "stderr");
        set(&mut cmd, "cluster_name", "cairn-drill");
        cmd.current_dir(data).stdin(std::process::Stdio::null()).stdout(out).stderr(err);
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                if let Some((uid, gid)) = owner {
                    if libc::setgroups(0, std::ptr::null()) != 0 || libc::setgid(gid) != 0 || libc::setuid(uid) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                // The server dies with the drill, even one killed with SIGKILL. After
                // setuid: changing credentials clears the parent-death signal.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            })
        };
        let child = cmd.spawn().map_err(|e| Error::io(format!("starting {}", bin.join("postgres").display()), e))?;
        Ok(Server { child })
    }

    /// The exit status, once the server has stopped.
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.exited().is_some() {
            return;
        }
        // SIGQUIT: immediate shutdown; the sandbox is thrown away anyway.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGQUIT) };
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            if self.exited().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

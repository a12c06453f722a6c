//! The daemon loop: asks [`crate::plan`] what is due for each source and job kind, starts
//! due jobs on their own threads (never two of one source: the source lock), sleeps until
//! the next window or a job's end, re-reads the policy on SIGHUP, and on SIGTERM lets
//! running jobs finish up to `stop_timeout` before it exits.
//!
//! Waking is cheap: a source's next window is computed once and kept until it passes, a
//! job of it ends, or the policy changes; between those the loop only polls its signal
//! flags once a second.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

use jiff::{SignedDuration, Timestamp};

use crate::catalog::{Catalog, Kind, Status};
use crate::jobs::{Env, JobReport, JobRequest};
use crate::plan::{decide, Decision};
use crate::{Error, Result};

static TERM: AtomicBool = AtomicBool::new(false);
static HUP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(sig: libc::c_int) {
    // Only atomic stores: async-signal-safe.
    if sig == libc::SIGHUP {
        HUP.store(true, Ordering::SeqCst);
    } else {
        TERM.store(true, Ordering::SeqCst);
    }
}

/// Makes the scheduler loop re-read the policy, as SIGHUP does.
pub fn ask_reload() {
    HUP.store(true, Ordering::SeqCst);
}

/// Set once SIGTERM or SIGINT arrived (after [`install_signal_handlers`]): what long jobs
/// such as drills poll to stop early and clean up.
pub fn stop_flag() -> &'static AtomicBool {
    &TERM
}

pub fn install_signal_handlers() {
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        // SAFETY: the handler only stores to atomics; sigaction's struct is zeroed and
        // filled with a valid handler and an empty mask.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            sa.sa_flags = libc::SA_RESTART;
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// Severity of a log line (syslog numbers, which journald reads from a `<N>` prefix).
#[derive(Debug, Clone, Copy)]
pub enum Level {
    Error = 3,
    Warning = 4,
    Info = 6,
}

/// One log line on standard error: `<N>` prefixed under systemd (journald files it at that
/// priority), with a time stamp otherwise.
pub fn log(level: Level, msg: &str) {
    let msg = crate::one_line(&msg);
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        eprintln!("<{}>{msg}", level as i32);
    } else {
        let tag = match level {
            Level::Error => "error",
            Level::Warning => "warning",
            Level::Info => "info",
        };
        eprintln!("{} {tag}: {msg}", Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ"));
    }
}

/// Reads and validates the policy file.
pub fn load_policy(path: &Path) -> Result<cairn_policy::file::Policy> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    Ok(cairn_policy::file::parse(&path.display().to_string(), &text, Timestamp::now())?)
}

fn daemon_lock_path(env: &Env) -> PathBuf {
    env.state_dir.join("daemon.lock")
}

/// The pid of the daemon running with this state directory, if one runs.
pub fn running_daemon(env: &Env) -> Result<Option<u32>> {
    match crate::lock::try_lock(&daemon_lock_path(env))? {
        Ok(_) => Ok(None),
        Err(h) => Ok(Some(h.pid)),
    }
}

/// Records as interrupted the jobs of this host still marked running whose source lock is
/// free: the process that ran them died before recording their end. Returns them (the
/// caller says what follows: a daemon runs them again, `cairn jobs` only shows them).
pub fn mark_interrupted(env: &Env, catalog: &Catalog) -> Result<Vec<crate::catalog::Job>> {
    let mut marked = Vec::new();
    for j in catalog.running()? {
        let lock = if j.kind == Kind::Drill.as_str() {
            crate::drill::lock_path(env, &j.source)
        } else {
            env.lock_path(&j.source)
        };
        if j.host != env.host {
            continue;
        }
        // Held while the row is updated: a job records its end before it lets its lock go,
        // so a row still running under a lock we hold lost its process. (`cairn jobs` and
        // `status` run this too, at any moment: a job ending meanwhile keeps its status.)
        let _held = if lock.exists() {
            match crate::lock::try_lock(&lock)? {
                Ok(l) => Some(l),
                Err(_) => continue,
            }
        } else {
            None
        };
        if !catalog.interrupt_if_running(
            j.row,
            "the process running it ended before the job did (killed, or the machine stopped)",
            Timestamp::now(),
        )? {
            continue;
        }
        marked.push(j);
    }
    Ok(marked)
}

/// For every source the catalog knows nothing of, the backups its repository holds
/// (a lost or new catalog is rebuilt from the repositories).
pub fn rebuild_catalog(env: &Env, catalog: &Catalog) -> Result<usize> {
    let mut by_repo: HashMap<&str, Vec<&cairn_policy::file::Source>> = HashMap::new();
    for s in env.policy.sources.values() {
        if !catalog.knows(&s.name)? {
            by_repo.entry(s.repository.value.as_str()).or_default().push(s);
        }
    }
    let mut n = 0;
    for (repo, sources) in by_repo {
        let snaps = match env.open_repository(repo) {
            Ok(r) => r.list_snapshots_lenient()?.snapshots,
            // A repository not created yet has nothing to rebuild from.
            Err(Error::Repo(cairn_repo::Error::NoRepository { .. })) => continue,
            Err(e) => return Err(e),
        };
        for s in sources {
            n += catalog.rebuild_from(&s.name, &s.class, repo, &snaps)?;
        }
    }
    Ok(n)
}

/// The kinds of job a source runs on a schedule, with their schedules.
fn scheduled_kinds(s: &cairn_policy::file::Source) -> Vec<(Kind, Vec<cairn_policy::file::Timing>)> {
    let mut v = vec![(Kind::Backup, s.schedules.value.clone())];
    if let Some(r) = &s.retention.value {
        v.push((Kind::Retention, vec![r.timing.clone()]));
    }
    if let Some(x) = &s.verify.value {
        v.push((Kind::Verify, vec![x.timing.clone()]));
    }
    if let Some(t) = s.drill.value.as_ref().and_then(|d| d.timing.clone()) {
        v.push((Kind::Drill, vec![t]));
    }
    v
}

/// A running WAL streamer and the flag that stops it.
struct Streamer {
    handle: std::thread::JoinHandle<()>,
    stop: Arc<AtomicBool>,
}

fn receivewal_bin() -> String {
    std::env::var("CAIRN_PG_RECEIVEWAL").unwrap_or_else(|_| "pg_receivewal".into())
}

/// Where the streamer of `source` spools (and records its replication slot).
fn spool_of(env: &Env, source: &str) -> PathBuf {
    env.state_dir.join("wal-stream").join(source)
}

/// Supervises WAL streaming for a postgres source with `stream = true`: `pg_receivewal`
/// through the pg crate, restarted with backoff (1 s doubling to a minute, reset after a
/// minute of running) until `stop` is set.
fn spawn_streamer(env: &Env, s: &cairn_policy::file::Source) -> Result<Streamer> {
    let stop = Arc::new(AtomicBool::new(false));
    let cairn_policy::file::SourceKind::Postgres { connection, .. } = &s.kind else {
        return Err(Error::Source(format!("source {:?} is not a postgres source", s.name)));
    };
    // Replication connections need `replication=true` (libpq); keep the operator's if set.
    let conn = if connection.contains("replication=") {
        connection.clone()
    } else if connection.starts_with("postgres://") || connection.starts_with("postgresql://") {
        format!("{connection}{}replication=true", if connection.contains('?') { '&' } else { '?' })
    } else {
        format!("{connection} replication=true")
    };
    // Slot names are [a-z0-9_]; a name that had to change gets a hash of the original so
    // two sources never share a slot (`db-1` and `db.1`).
    let clean: String =
        s.name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).take(40).collect();
    let slot = if clean == s.name {
        format!("cairn_{clean}")
    } else {
        format!("cairn_{clean}_{}", &crate::repos::location_key(&s.name)[..8])
    };
    let opts = cairn_pg::receive::StreamOptions {
        conn,
        spool: spool_of(env, &s.name),
        slot,
        poll: std::time::Duration::from_millis(500),
        receivewal: receivewal_bin(),
    };
    // Before the slot exists: whoever finds this spool later can drop it.
    cairn_pg::receive::remember_slot(&opts)?;
    let (env, name, repository) = (env.clone(), s.name.clone(), s.repository.value.clone());
    let flag = stop.clone();
    let handle = std::thread::Builder::new()
        .name(format!("stream-{name}"))
        .spawn(move || {
            let mut failures: u32 = 0;
            while !stop.load(Ordering::SeqCst) {
                let started = std::time::Instant::now();
                log(Level::Info, &format!("wal-stream of {name} starts"));
                let r = env.open_repository(&repository).and_then(|repo| {
                    cairn_pg::receive::run(&repo, &opts, &stop, &|l| {
                        log(Level::Info, &format!("wal-stream of {name}: {l}"))
                    })
                    .map_err(Error::from)
                });
                if stop.load(Ordering::SeqCst) {
                    // The last pass ships what arrived; if it could not, the spool keeps it.
                    if let Err(e) = r {
                        log(Level::Error, &format!("wal-stream of {name} stopped with WAL not stored: {e}"));
                    }
                    break;
                }
                match r {
                    Ok(()) => log(Level::Warning, &format!("wal-stream of {name} ended; restarting")),
                    Err(e) => log(Level::Error, &format!("wal-stream of {name} failed: {e}")),
                }
                if started.elapsed() > std::time::Duration::from_secs(60) {
                    failures = 0;
                }
                let wait = std::time::Duration::from_secs((1u64 << failures.min(6)).min(60));
                failures = failures.saturating_add(1);
                let until = std::time::Instant::now() + wait;
                while std::time::Instant::now() < until && !stop.load(Ordering::SeqCst) {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
            }
            log(Level::Info, &format!("wal-stream of {name} stopped"));
        })
        .map_err(|e| Error::io("starting a wal-stream thread", e))?;
    Ok(Streamer { handle, stop: flag })
}

fn streams(s: &cairn_policy::file::Source) -> bool {
    matches!(s.kind, cairn_policy::file::SourceKind::Postgres { stream: true, .. })
}

/// Starts a streamer for every streaming source that has none; stops those whose source
/// no longer streams (removed, or `stream = false`), and drops the replication slot of
/// every spool no streaming source owns: a slot nobody reads makes PostgreSQL keep all
/// WAL from then on, until its disk fills. A slot that cannot be dropped now (server
/// down) keeps its record and is tried again at the next start or reload.
fn start_streamers(env: &Env, streamers: &mut HashMap<String, Streamer>) {
    let wanted = |name: &str| env.policy.sources.get(name).is_some_and(streams);
    let gone: Vec<String> = streamers.keys().filter(|n| !wanted(n)).cloned().collect();
    for name in gone {
        if let Some(s) = streamers.remove(&name) {
            s.stop.store(true, Ordering::SeqCst);
            let _ = s.handle.join();
        }
    }
    if let Ok(dirs) = std::fs::read_dir(env.state_dir.join("wal-stream")) {
        for d in dirs.flatten() {
            let name = d.file_name().to_string_lossy().into_owned();
            if wanted(&name) {
                continue;
            }
            match cairn_pg::receive::drop_slot(&d.path(), &receivewal_bin()) {
                Ok(Some(dropped)) => {
                    log(
                        Level::Warning,
                        &format!("source {name} no longer streams WAL: dropped its replication slot {}", dropped.slot),
                    );
                    if !dropped.kept.is_empty() {
                        log(
                            Level::Error,
                            &format!(
                                "{} WAL files of {name} never reached the repository and stay in {}: store them with 'cairn pg archive-push'",
                                dropped.kept.len(),
                                d.path().display()
                            ),
                        );
                    }
                }
                Ok(None) => {}
                Err(e) => log(Level::Error, &format!("source {name} no longer streams WAL, but its slot stays: {e}")),
            }
        }
    }
    for s in env.policy.sources.values() {
        if streams(s) && !streamers.contains_key(&s.name) {
            match spawn_streamer(env, s) {
                Ok(st) => {
                    streamers.insert(s.name.clone(), st);
                }
                Err(e) => log(Level::Error, &format!("wal-stream of {} cannot start: {e}", s.name)),
            }
        }
    }
}

struct Running {
    kind: Kind,
    handle: std::thread::JoinHandle<()>,
    /// A manual job asked for through the control socket: who waits for its outcome.
    reply: Option<mpsc::Sender<crate::control::Reply>>,
}

/// Hands a finished job's outcome to whoever asked for it.
fn answer(reply: Option<mpsc::Sender<crate::control::Reply>>, r: &Result<JobReport>) {
    if let Some(tx) = reply {
        let _ = tx.send(match r {
            Ok(j) => crate::control::Reply::Done(j.clone()),
            Err(e) => crate::control::Reply::Refused(crate::one_line(e)),
        });
    }
}

/// What the daemon's HTTP edge (the API crate) is given: the policy in force (replaced on
/// reload), when the daemon started, and the queue of manual runs the scheduler takes
/// (so a job asked for over HTTP runs as one asked for by `cairn run`).
pub struct Shared {
    pub env: std::sync::RwLock<Env>,
    pub start: Timestamp,
    pub runs: mpsc::Sender<crate::control::RunRequest>,
}

impl Shared {
    /// The policy in force now.
    pub fn env(&self) -> Result<Env> {
        self.env.read().map(|e| e.clone()).map_err(|_| Error::Source("the daemon's policy lock is poisoned".into()))
    }
}

/// Starts the HTTP edge for `[server]` and says where it listens; the daemon does not
/// know HTTP (the API crate sits above it and is handed in by the binary).
pub type Serve<'a> = &'a dyn Fn(Arc<Shared>) -> Result<String>;

/// Runs the daemon until SIGTERM or SIGINT.
pub fn run(policy_path: &Path, rt: tokio::runtime::Handle, cache_dir: Option<PathBuf>, serve: Serve<'_>) -> Result<()> {
    install_signal_handlers();
    let mut env = Env::new(load_policy(policy_path)?, policy_path, rt.clone(), cache_dir.clone());
    let mut me = match crate::lock::try_lock(&daemon_lock_path(&env))? {
        Ok(l) => l,
        Err(h) => {
            return Err(Error::Source(format!(
                "a daemon (pid {}) already runs with the state directory {}",
                h.pid,
                env.state_dir.display()
            )))
        }
    };
    me.describe("daemon")?;
    let catalog = env.catalog()?;
    for j in mark_interrupted(&env, &catalog)? {
        log(Level::Warning, &format!("job {} ({} of {}) was interrupted; it will run again", j.id, j.kind, j.source));
    }
    // What killed drills left: their sandboxes and any server still running in one.
    match crate::drill::sweep(&env, None) {
        Ok(gone) => {
            for g in gone {
                log(Level::Warning, &format!("removed the sandbox of an interrupted drill: {}", g.display()));
            }
        }
        Err(e) => log(Level::Warning, &format!("cleaning up interrupted drills: {e}")),
    }
    match rebuild_catalog(&env, &catalog) {
        Ok(0) => {}
        Ok(n) => log(Level::Info, &format!("catalog: {n} backup jobs rebuilt from the repositories")),
        Err(e) => log(Level::Warning, &format!("catalog rebuild from the repositories failed: {e}")),
    }
    let start = Timestamp::now();
    catalog.note_sources(env.policy.sources.keys().map(String::as_str), start)?;
    let alerts = crate::alerts::Dispatcher::start(env.catalog_path.clone(), env.host.clone(), rt.clone())?;
    for n in crate::alerts::once(&env.policy, crate::alerts::daemon_started(&env), start) {
        alerts.send(n);
    }
    // Conditions are evaluated at once (a backup missed while the daemon was down is
    // raised now), then every alert_interval and after every job.
    let mut next_alert_tick = start;
    let mut last_alert_tick = start;
    let (ctl_tx, ctl_rx) = mpsc::channel::<crate::control::RunRequest>();
    let shared = Arc::new(Shared { env: std::sync::RwLock::new(env.clone()), start, runs: ctl_tx.clone() });
    if env.policy.server.is_some() {
        let what = serve(shared.clone())?;
        log(Level::Info, &format!("serving the API, the console and /metrics on {what}"));
    }
    log(
        Level::Info,
        &format!(
            "daemon started: {} sources, policy {}, catalog {}",
            env.policy.sources.len(),
            policy_path.display(),
            env.catalog_path.display()
        ),
    );
    crate::audit::policy_loaded(&env, "start");
    let mut streamers = HashMap::new();
    start_streamers(&env, &mut streamers);
    let (tx, rx) = mpsc::channel::<(String, Kind, Result<JobReport>)>();
    crate::control::serve(&env, ctl_tx)?;
    let mut pending: Vec<crate::control::RunRequest> = Vec::new();
    let mut running: HashMap<String, Running> = HashMap::new();
    let mut wake: HashMap<(String, &'static str), Timestamp> = HashMap::new();
    let mut busy_logged: HashMap<String, String> = HashMap::new();
    let mut last_expire: Option<Timestamp> = None;
    loop {
        if TERM.load(Ordering::SeqCst) {
            break;
        }
        if HUP.swap(false, Ordering::SeqCst) {
            // Those waiting now asked before the file is read below, so this reload's
            // outcome is theirs; a later asker sets HUP again and gets the next one.
            let waiters = crate::control::take_reload_waiters();
            let outcome = reload_policy(policy_path, &mut env, &catalog, &shared, &mut streamers, &rt, &cache_dir);
            if outcome.is_ok() {
                wake.clear();
            }
            for w in waiters {
                let _ = w.send(outcome.clone());
            }
        }
        let now = Timestamp::now();
        if last_expire.is_none_or(|t| now.duration_since(t) > SignedDuration::from_hours(1)) {
            let keep = env.policy.daemon.keep_jobs.unwrap_or(SignedDuration::from_hours(24 * 400));
            if let Ok(before) = now.checked_sub(keep) {
                if let Err(e) = catalog.expire(before) {
                    log(Level::Warning, &format!("catalog expiry: {e}"));
                }
            }
            // Audit retention, per repository that has one, in the background: listing
            // and deleting in a remote repository must not hold the scheduler.
            crate::audit::expire_all(&env, now);
            last_expire = Some(now);
        }
        // Manual runs asked for through the control socket, before the schedules: a
        // waiting one goes next when its source frees, not after every scheduled job.
        pending.extend(ctl_rx.try_iter());
        let mut still = Vec::new();
        for req in pending.drain(..) {
            if env.source(&req.source).is_err() {
                let _ = req
                    .reply
                    .send(crate::control::Reply::Refused(format!("source {:?} is not in the policy", req.source)));
                continue;
            }
            // A job of the source running here holds the lock too (flocks are per open file).
            match crate::jobs::lock_source(&env, &req.source, false) {
                Ok(lock) => {
                    let job = JobRequest {
                        client: req.client.clone(),
                        source: req.source.clone(),
                        kind: req.kind,
                        trigger: crate::catalog::Trigger::Manual,
                        actor: req.actor.clone(),
                        label: req.label.clone(),
                        reason: req.reason.clone(),
                        window: None,
                    };
                    log(
                        Level::Info,
                        &format!(
                            "{} of {} starts (trigger manual, asked by {})",
                            req.kind.as_str(),
                            req.source,
                            req.actor
                        ),
                    );
                    let handle = spawn_job(env.clone(), job, lock, tx.clone())?;
                    running.insert(req.source.clone(), Running { kind: req.kind, handle, reply: Some(req.reply) });
                }
                Err(Error::Busy { .. }) if req.wait => still.push(req),
                Err(e @ Error::Busy { .. }) => {
                    let _ = req.reply.send(crate::control::Reply::Refused(format!("{e}; --wait waits for it to end")));
                }
                Err(e) => {
                    let _ = req.reply.send(crate::control::Reply::Refused(crate::one_line(&e)));
                }
            }
        }
        pending = still;
        let max_parallel = env.policy.daemon.max_parallel.unwrap_or(2);
        let sources: Vec<cairn_policy::file::Source> = env.policy.sources.values().cloned().collect();
        for s in &sources {
            if running.contains_key(&s.name) || pending.iter().any(|p| p.source == s.name) {
                continue;
            }
            for (kind, timings) in scheduled_kinds(s) {
                let key = (s.name.clone(), kind.as_str());
                if wake.get(&key).is_some_and(|w| *w > now) {
                    continue;
                }
                let mut h = catalog.history(&s.name, kind)?;
                if kind == Kind::Drill {
                    // A failed drill is evidence, not a job to redo: it is recorded (and
                    // alerted), and the next drill runs at the next window, not in a retry
                    // loop that restores the same broken backup again and again.
                    let last = catalog.last(&s.name, kind)?.filter(|j| j.status != "running");
                    let started = last.and_then(|j| j.started_ms).and_then(|m| Timestamp::from_millisecond(m).ok());
                    h = crate::plan::History {
                        last_success: started.or(h.last_success),
                        failures: 0,
                        last_failure: None,
                    };
                }
                match decide(&timings, &s.name, &h, start, now, env.retry_delay()) {
                    Decision::Never => {
                        wake.insert(key, Timestamp::MAX);
                    }
                    Decision::Wait(t) => {
                        wake.insert(key, t);
                    }
                    Decision::Due { window, trigger } => {
                        let backups = running.values().filter(|r| r.kind == Kind::Backup).count();
                        if kind == Kind::Backup && backups >= max_parallel {
                            continue;
                        }
                        let lock = match crate::jobs::lock_source(&env, &s.name, false) {
                            Ok(l) => l,
                            Err(Error::Busy { job, pid, .. }) => {
                                // Another process (a `cairn run`) runs a job of it: look again shortly.
                                if busy_logged.get(&s.name) != Some(&job) {
                                    log(
                                        Level::Info,
                                        &format!(
                                            "{} of {} waits: job {job} (pid {pid}) of it is running",
                                            kind.as_str(),
                                            s.name
                                        ),
                                    );
                                    busy_logged.insert(s.name.clone(), job);
                                }
                                wake.insert(key, now.checked_add(SignedDuration::from_secs(1)).unwrap_or(now));
                                break;
                            }
                            Err(e) => return Err(e),
                        };
                        busy_logged.remove(&s.name);
                        let req = JobRequest {
                            client: None,
                            source: s.name.clone(),
                            kind,
                            trigger,
                            actor: crate::jobs::actor(),
                            label: None,
                            reason: None,
                            window: Some(window),
                        };
                        log(
                            Level::Info,
                            &format!("{} of {} starts (trigger {})", kind.as_str(), s.name, trigger.as_str()),
                        );
                        let handle = spawn_job(env.clone(), req, lock, tx.clone())?;
                        running.insert(s.name.clone(), Running { kind, handle, reply: None });
                        wake.remove(&key);
                        break;
                    }
                }
            }
        }
        if now >= next_alert_tick {
            if let Err(e) = crate::alerts::tick(&env, &catalog, &alerts, now) {
                log(Level::Warning, &format!("alert evaluation failed: {e}"));
            }
            let every = env.policy.daemon.alert_interval.unwrap_or(SignedDuration::from_mins(1));
            next_alert_tick = now.checked_add(every).unwrap_or(Timestamp::MAX);
            last_alert_tick = now;
        }
        let next = wake.values().min().copied().unwrap_or(Timestamp::MAX).min(next_alert_tick);
        let wait = if next <= now || !pending.is_empty() {
            std::time::Duration::from_millis(200)
        } else {
            let d = next.duration_since(now);
            std::time::Duration::from_millis(d.as_millis().clamp(10, 1000) as u64)
        };
        let mut first = rx.recv_timeout(wait).ok();
        while let Some((source, kind, r)) = first.take().or_else(|| rx.try_recv().ok()) {
            if let Some(run) = running.remove(&source) {
                let _ = run.handle.join();
                answer(run.reply, &r);
            }
            wake.retain(|(s, _), _| *s != source);
            report(&source, kind, &r);
            // A failed job is told now, not at the next interval; but at most one extra
            // evaluation a second (each reads every repository's snapshot list), however
            // many jobs end.
            let soon = last_alert_tick.checked_add(SignedDuration::from_secs(1)).unwrap_or(Timestamp::MAX);
            next_alert_tick = next_alert_tick.min(soon);
        }
    }
    // Stopping: no new jobs; streaming ends; the running jobs get `stop_timeout` to end.
    // Who waits for a reload hears now that none will come (their senders drop).
    drop(crate::control::take_reload_waiters());
    for s in streamers.values() {
        s.stop.store(true, Ordering::SeqCst);
    }
    for (_, s) in streamers {
        let _ = s.handle.join();
    }
    let bound = env.policy.daemon.stop_timeout.unwrap_or(SignedDuration::from_mins(5));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(bound.as_secs().max(0) as u64);
    if !running.is_empty() {
        log(
            Level::Info,
            &format!("stopping: waiting up to {} for {} running jobs", cairn_policy::file::human(bound), running.len()),
        );
    }
    while !running.is_empty() && std::time::Instant::now() < deadline {
        if let Ok((source, kind, r)) = rx.recv_timeout(std::time::Duration::from_millis(200)) {
            if let Some(run) = running.remove(&source) {
                let _ = run.handle.join();
                answer(run.reply, &r);
            }
            report(&source, kind, &r);
        }
    }
    for j in catalog.running()? {
        if j.host == env.host && j.pid == Some(std::process::id()) {
            catalog.set_status(
                j.row,
                Status::Interrupted,
                "stopped with the daemon (SIGTERM) before it ended",
                Timestamp::now(),
            )?;
            log(
                Level::Warning,
                &format!(
                    "job {} ({} of {}) stopped unfinished; it runs again at the next start",
                    j.id, j.kind, j.source
                ),
            );
        }
    }
    // What is queued for delivery gets a few seconds; a target that is down is not waited for.
    alerts.finish(std::time::Duration::from_secs(5));
    log(Level::Info, "daemon stopped");
    // Threads of unfinished jobs end with the process; what they uploaded is reused.
    Ok(())
}

fn spawn_job(
    env: Env,
    req: JobRequest,
    mut lock: crate::lock::Lock,
    tx: mpsc::Sender<(String, Kind, Result<JobReport>)>,
) -> Result<std::thread::JoinHandle<()>> {
    let name = format!("job-{}", req.source);
    std::thread::Builder::new()
        .name(name)
        // Deep directory trees recurse in the walk, as in the CLI.
        .stack_size(cairn_repo::check::WALK_STACK)
        .spawn(move || {
            let r = crate::jobs::run_locked(&env, &req, &mut lock);
            drop(lock);
            let _ = tx.send((req.source.clone(), req.kind, r));
        })
        .map_err(|e| Error::io("starting a job thread", e))
}

fn report(source: &str, kind: Kind, r: &Result<JobReport>) {
    match r {
        Ok(j) => {
            let level = if j.status.is_success() { Level::Info } else { Level::Error };
            let mut msg = format!("job {} ({} of {source}) {}", j.id, kind.as_str(), j.status.as_str());
            if let Some(s) = &j.snapshot {
                msg.push_str(&format!(", snapshot {}", &s[..s.len().min(8)]));
            }
            if let Some(e) = &j.error {
                msg.push_str(&format!(": {e}"));
            }
            log(level, &msg);
            for c in &j.copies {
                let level = if c.status.is_success() { Level::Info } else { Level::Error };
                log(
                    level,
                    &format!(
                        "job {} (copy of {source}) {}{}",
                        c.id,
                        c.status.as_str(),
                        c.error.as_ref().map(|e| format!(": {e}")).unwrap_or_default()
                    ),
                );
            }
        }
        Err(e) => log(Level::Error, &format!("{} of {source} could not run: {e}", kind.as_str())),
    }
}

/// Re-reads the policy (on SIGHUP or a `reload` through the control socket): the new one
/// replaces the old unless it is broken or moves what only a restart may move. The outcome
/// is logged and returned (what `cairn daemon reload` prints).
fn reload_policy(
    policy_path: &Path,
    env: &mut Env,
    catalog: &Catalog,
    shared: &Shared,
    streamers: &mut HashMap<String, Streamer>,
    rt: &tokio::runtime::Handle,
    cache_dir: &Option<PathBuf>,
) -> std::result::Result<String, String> {
    let refused = |why: String| {
        let why = format!("policy reload refused, the old policy stays: {why}");
        log(Level::Error, &why);
        Err(why)
    };
    let new = match load_policy(policy_path) {
        Ok(p) => Env::new(p, policy_path, rt.clone(), cache_dir.clone()),
        Err(e) => return refused(e.to_string()),
    };
    // The catalog, locks and host name are where running jobs record themselves: moving
    // them needs a restart.
    if (&new.catalog_path, &new.state_dir, &new.host) != (&env.catalog_path, &env.state_dir, &env.host) {
        return refused("[daemon] catalog, state_dir and hostname change only with a restart".into());
    }
    if new.policy.server != env.policy.server {
        return refused("[server] changes only with a restart".into());
    }
    *env = new;
    if let Err(e) = catalog.note_sources(env.policy.sources.keys().map(String::as_str), Timestamp::now()) {
        log(Level::Warning, &format!("catalog: recording the sources: {e}"));
    }
    if let Ok(mut e) = shared.env.write() {
        *e = env.clone();
    }
    // New streaming sources start; those that no longer stream stop and their slots are
    // dropped.
    start_streamers(env, streamers);
    let done = format!("policy reloaded: {} sources", env.policy.sources.len());
    log(Level::Info, &done);
    crate::audit::policy_loaded(env, "reload");
    Ok(done)
}

/// Signals the running daemon to re-read its policy.
pub fn reload(env: &Env) -> Result<u32> {
    let pid = running_daemon(env)?
        .ok_or_else(|| Error::Source(format!("no daemon runs with the state directory {}", env.state_dir.display())))?;
    // SAFETY: kill with a pid read from our lock file and a valid signal number.
    let rc = unsafe { libc::kill(pid as libc::pid_t, libc::SIGHUP) };
    if rc != 0 {
        return Err(Error::io(format!("signalling daemon pid {pid}"), std::io::Error::last_os_error()));
    }
    Ok(pid)
}

//! Alerts: conditions computed from the repositories and the catalog, routed by the
//! policy's matchers to targets, raised once, repeated while they last, resolved when they
//! clear.
//!
//! Key decisions:
//! - An alert is a *condition* with a key (`backup_missing/db`), not a log line: the set of
//!   active conditions is recomputed every `alert_interval` from what the repositories
//!   and the catalog say ([`conditions`], pure given its inputs and `now`), and compared
//!   with the set the catalog remembers ([`plan`]). So the backup that never happened is
//!   raised from the repository's newest snapshot, also right after a daemon that was down
//!   comes back, and a condition that clears is sent as resolved.
//! - Delivery never blocks a job: notifications go to a [`Dispatcher`] thread that retries
//!   a target that is down (1 s, 5 s, 30 s) and records every attempt in the catalog.
//! - Per target, a still-active condition is sent again after the target's `repeat`, and a
//!   resolved one only to the targets that were sent its raise.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cairn_policy::file::{Alert, Policy, Severity, SourceKind, Target, WebhookFormat};
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use crate::catalog::{Catalog, Kind};
use crate::status::{RpoState, SourceStatus};
use crate::Result;

/// One condition (or a one-off event such as `daemon_started`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub event: String,
    pub severity: String,
    /// What makes two events the same condition: `event/source[/detail]`.
    pub key: String,
    pub source: Option<String>,
    pub class: Option<String>,
    pub repository: Option<String>,
    pub job: Option<String>,
    pub message: String,
    pub payload: serde_json::Value,
}

impl Event {
    fn severity(&self) -> Severity {
        Severity::parse(&self.severity).unwrap_or(Severity::Error)
    }
}

/// Why a notification is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Raised,
    Repeated,
    Resolved,
    /// A one-off event (no condition to resolve).
    Once,
    Test,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Raised => "raised",
            Phase::Repeated => "repeated",
            Phase::Resolved => "resolved",
            Phase::Once => "once",
            Phase::Test => "test",
        }
    }
}

/// One notification for one target.
#[derive(Debug, Clone)]
pub struct Notification {
    pub target: Alert,
    pub event: Event,
    pub phase: Phase,
    pub at: Timestamp,
}

fn ev(
    event: &str,
    severity: Severity,
    key: String,
    s: Option<(&str, &str, &str)>,
    job: Option<String>,
    message: String,
    payload: serde_json::Value,
) -> Event {
    Event {
        event: event.to_string(),
        severity: severity.as_str().to_string(),
        key,
        source: s.map(|s| s.0.to_string()),
        class: s.map(|s| s.1.to_string()),
        repository: s.map(|s| s.2.to_string()),
        job,
        message,
        payload,
    }
}

/// The conditions that hold now, from the sources' status (data age read from the
/// repositories) and the newest job of each kind in the catalog.
pub fn conditions(
    policy: &Policy,
    catalog: &Catalog,
    rows: &[SourceStatus],
    usage: &BTreeMap<String, u64>,
    now: Timestamp,
) -> Result<Vec<Event>> {
    let mut out = Vec::new();
    for r in rows {
        let Some(src) = policy.sources.get(&r.source) else { continue };
        let who = Some((r.source.as_str(), r.class.as_str(), r.repository.as_str()));
        let postgres = matches!(src.kind, SourceKind::Postgres { .. });
        if r.rpo_state == RpoState::Breached {
            let age = r.data_age_secs.map(human).unwrap_or_else(|| "no backup at all".into());
            let rpo = r.rpo_secs.map(human).unwrap_or_default();
            let (event, what) = if postgres && r.newest.is_some() {
                ("wal_stalled", format!("the newest WAL of {} in {} is {age} old, more than its RPO of {rpo}: WAL archiving or streaming has stalled", r.source, r.repository))
            } else {
                (
                    "backup_missing",
                    format!("no successful backup of {} within its RPO of {rpo} (newest: {age})", r.source),
                )
            };
            out.push(ev(
                event,
                Severity::Error,
                format!("{event}/{}", r.source),
                who,
                None,
                what,
                serde_json::json!({"data_age_secs": r.data_age_secs, "rpo_secs": r.rpo_secs, "newest": r.newest}),
            ));
        }
        if let Some(x) = &r.suspect {
            let pct = x.changed as f64 * 100.0 / x.before.max(1) as f64;
            let stored = x.bytes_added as f64 * 100.0 / x.data_added.max(1) as f64;
            out.push(ev(
                "ransomware_suspected",
                Severity::Error,
                format!("ransomware/{}", r.source),
                who,
                None,
                format!(
                    "backup {} of {} at {}: {pct:.0}% of its files changed ({} of {}) and the new data does not compress ({stored:.0}% of it stored): files may have been encrypted in place; check the source before retention and copies carry on",
                    &x.snapshot[..x.snapshot.len().min(8)], r.source, x.time, x.changed, x.before
                ),
                serde_json::json!({"snapshot": x.snapshot, "time": x.time, "files_changed": x.changed,
                    "files_before": x.before, "data_added": x.data_added, "bytes_added": x.bytes_added}),
            ));
        }
        for c in &r.copies {
            let lagging = match (c.lag_secs, r.rpo_secs) {
                (Some(lag), Some(rpo)) => lag > rpo,
                _ => c.error.is_some(),
            };
            if lagging {
                let why = match (&c.error, c.lag_secs) {
                    (Some(e), _) => format!("copy {} of {} cannot be read: {e}", c.repository, r.source),
                    (None, Some(l)) => {
                        format!("copy {} of {} is {} behind its primary", c.repository, r.source, human(l))
                    }
                    _ => format!("copy {} of {} is behind", c.repository, r.source),
                };
                out.push(ev(
                    "copy_lagging",
                    Severity::Warning,
                    format!("copy_lagging/{}/{}", r.source, c.repository),
                    who,
                    None,
                    why,
                    serde_json::json!({"copy": c.repository, "lag_secs": c.lag_secs, "error": c.error}),
                ));
            }
        }
        for kind in [Kind::Backup, Kind::Copy, Kind::Retention, Kind::Verify, Kind::Drill] {
            // The newest finished job: a retry running now says nothing yet (reading the
            // running one would resolve the condition at every retry and raise it again).
            let Some(j) = catalog.last_finished(&r.source, kind)? else { continue };
            let took_ms = match (j.started_ms, j.ended_ms) {
                (Some(s), Some(e)) => Some((e - s).max(0)),
                _ => None,
            };
            let took = took_ms.map(|t| t / 1000);
            let payload = serde_json::json!({"job": j.id, "kind": j.kind, "status": j.status, "error": j.error,
                "started_at": j.started_at, "ended_at": j.ended_at, "duration_secs": took, "snapshot": j.snapshot});
            let err = j.error.clone().unwrap_or_default();
            match (kind, j.status.as_str()) {
                (Kind::Drill, "failed" | "interrupted") => {
                    let missed = err.contains("more than the RTO") || err.contains("more than the RPO");
                    let (event, sev) = if missed {
                        ("drill_missed_target", Severity::Warning)
                    } else {
                        ("drill_failed", Severity::Error)
                    };
                    out.push(ev(
                        event,
                        sev,
                        format!("drill/{}", r.source),
                        who,
                        Some(j.id.clone()),
                        format!("drill {} of {} did not pass: {err}", j.id, r.source),
                        payload,
                    ));
                }
                (Kind::Verify, "failed" | "interrupted") => out.push(ev(
                    "verify_damage",
                    Severity::Error,
                    format!("verify_damage/{}", r.source),
                    who,
                    Some(j.id.clone()),
                    format!("verify job {} of {} found a problem: {err}", j.id, r.repository),
                    payload,
                )),
                (_, "failed" | "interrupted" | "cancelled") => out.push(ev(
                    "job_failed",
                    Severity::Error,
                    format!("job_failed/{}/{}", r.source, kind.as_str()),
                    who,
                    Some(j.id.clone()),
                    format!("{} job {} of {} {}: {err}", kind.as_str(), j.id, r.source, j.status),
                    payload,
                )),
                (Kind::Backup, "partial") => out.push(ev(
                    "job_partial",
                    Severity::Warning,
                    format!("job_partial/{}", r.source),
                    who,
                    Some(j.id.clone()),
                    format!("backup {} of {} saved, but {err}", j.id, r.source),
                    payload,
                )),
                _ => {}
            }
            if kind == Kind::Backup {
                if let (Some(max), Some(t)) = (src.max_duration.value, took_ms) {
                    // Over its limit: a job stopped at max_duration, or one that ended
                    // just as it was stopped.
                    if t > max.as_millis() as i64 {
                        let t = t / 1000;
                        out.push(ev(
                            "job_slow",
                            Severity::Warning,
                            format!("job_slow/{}", r.source),
                            who,
                            Some(j.id.clone()),
                            format!(
                                "backup {} of {} took {}, more than its max_duration of {}",
                                j.id,
                                r.source,
                                human(t),
                                human(max.as_secs())
                            ),
                            serde_json::json!({"job": j.id, "duration_secs": t, "max_duration_secs": max.as_secs()}),
                        ));
                    }
                }
            }
        }
    }
    let fill = policy.daemon.fill_percent.unwrap_or(80.0);
    for (name, repo) in &policy.repositories {
        // A quota (what the store's owner grants, where an object store reports no
        // capacity) is compared with what the repository holds; it takes the place of the
        // file system's capacity for a local repository too.
        let (used, capacity, what, capacity_key) = match (repo.quota, usage.get(name)) {
            (Some(quota), Some(&used)) => (used, quota, "of its quota", "quota_bytes"),
            (Some(_), None) => continue,
            (None, _) if crate::repos::is_remote(&repo.url) => continue,
            (None, _) => match fs_usage(Path::new(&repo.url)) {
                Some((used, total)) => (used, total, "on a file system", "total_bytes"),
                None => continue,
            },
        };
        let pct = used as f64 * 100.0 / capacity.max(1) as f64;
        if pct > fill {
            let mut e = ev(
                "storage_full",
                Severity::Warning,
                format!("storage_full/{name}"),
                None,
                None,
                format!(
                    "repository {name} holds {} {what} of {} ({pct:.0}%, threshold {fill:.0}%)",
                    mib(used),
                    mib(capacity)
                ),
                serde_json::json!({"repository": name, "used_bytes": used, capacity_key: capacity, "percent": pct}),
            );
            e.repository = Some(name.clone());
            out.push(e);
        }
    }
    let _ = now;
    Ok(out)
}

/// Used and total bytes of the file system holding `path` (its nearest existing ancestor).
fn fs_usage(path: &Path) -> Option<(u64, u64)> {
    let mut p = path;
    while !p.exists() {
        p = p.parent()?;
    }
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: statvfs fills the zeroed struct for a valid NUL-terminated path.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let frsize = st.f_frsize as u64;
    let total = st.f_blocks as u64 * frsize;
    // Used as df counts it: what is not free (reserved blocks included).
    let used = (st.f_blocks as u64 - st.f_bfree as u64) * frsize;
    (total > 0).then_some((used, total))
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
}

fn human(secs: i64) -> String {
    cairn_policy::file::human(SignedDuration::from_secs(secs))
}

/// What to send now: raises for new conditions, resolves for cleared ones (to the targets
/// that were told), repeats for those a target has not heard of for its `repeat`. Updates
/// the catalog's memory of active conditions.
pub fn plan(
    policy: &Policy,
    catalog: &Catalog,
    now_conditions: Vec<Event>,
    now: Timestamp,
) -> Result<Vec<Notification>> {
    let active: BTreeMap<String, (Event, i64)> = catalog
        .alerts_active()?
        .into_iter()
        .filter_map(|(k, json, since)| Some((k, (serde_json::from_str::<Event>(&json).ok()?, since))))
        .collect();
    let current: BTreeMap<String, Event> = now_conditions.into_iter().map(|e| (e.key.clone(), e)).collect();
    let mut out = Vec::new();
    for (key, e) in &current {
        let new = !active.contains_key(key);
        if new {
            catalog.alert_raise(key, &serde_json::to_string(e).unwrap_or_default(), now)?;
        }
        for t in policy.alerts.values() {
            if matches!(t.target, Target::Ping { .. })
                || !t.matches(&e.event, e.severity(), e.class.as_deref(), e.source.as_deref())
            {
                continue;
            }
            let last = catalog.alert_last_sent(key, &t.name)?;
            let phase = match last {
                None => Phase::Raised,
                Some(l) if now.as_millisecond() - l >= t.repeat.as_millis() as i64 => Phase::Repeated,
                Some(_) => continue,
            };
            // Marked sent when handed to the dispatcher, so the next evaluation does not
            // raise it again while the delivery (or its retries) is under way; a target
            // that stays down hears of it again after `repeat`.
            catalog.alert_sent(key, &t.name, now)?;
            out.push(Notification { target: t.clone(), event: e.clone(), phase, at: now });
        }
    }
    for (key, (e, _)) in &active {
        if current.contains_key(key) {
            continue;
        }
        for t in catalog.alert_told(key)? {
            if let Some(target) = policy.alerts.get(&t) {
                out.push(Notification { target: target.clone(), event: e.clone(), phase: Phase::Resolved, at: now });
            }
        }
        catalog.alert_clear(key)?;
    }
    Ok(out)
}

/// Notifications of a one-off event to every matching (non-ping) target.
pub fn once(policy: &Policy, e: Event, now: Timestamp) -> Vec<Notification> {
    policy
        .alerts
        .values()
        .filter(|t| !matches!(t.target, Target::Ping { .. }))
        .filter(|t| t.matches(&e.event, e.severity(), e.class.as_deref(), e.source.as_deref()))
        .map(|t| Notification { target: t.clone(), event: e.clone(), phase: Phase::Once, at: now })
        .collect()
}

/// The one-off event of a daemon start.
pub fn daemon_started(env: &crate::jobs::Env) -> Event {
    ev(
        "daemon_started",
        Severity::Info,
        "daemon_started".into(),
        None,
        None,
        format!("the cairn daemon started on {} with {} sources", env.host, env.policy.sources.len()),
        serde_json::json!({"pid": std::process::id(), "sources": env.policy.sources.len()}),
    )
}

/// The JSON every target gets (the webhook body, the command's standard input).
pub fn body(n: &Notification, host: &str) -> serde_json::Value {
    serde_json::json!({
        "cairn": 1, "host": host, "alert": n.target.name, "state": n.phase.as_str(), "at": n.at.to_string(),
        "event": n.event.event, "severity": n.event.severity, "key": n.event.key, "source": n.event.source,
        "class": n.event.class, "repository": n.event.repository, "job": n.event.job,
        "message": n.event.message, "payload": n.event.payload,
    })
}

fn text(n: &Notification, host: &str) -> String {
    let what = match n.phase {
        Phase::Resolved => "RESOLVED",
        Phase::Test => "TEST",
        _ => match n.event.severity() {
            Severity::Error => "ERROR",
            Severity::Warning => "WARNING",
            Severity::Info => "INFO",
        },
    };
    format!("[cairn {host}] {what} {}: {}", n.event.event, n.event.message)
}

/// Delivers one notification once; `Err` says why it failed.
pub fn deliver(n: &Notification, host: &str, rt: &tokio::runtime::Handle) -> std::result::Result<(), String> {
    let timeout = Duration::from_secs(n.target.timeout.as_secs().max(1) as u64);
    match &n.target.target {
        Target::Webhook { url, format, token_file } => {
            let body = match format {
                WebhookFormat::Json => body(n, host),
                WebhookFormat::Slack => serde_json::json!({ "text": text(n, host) }),
            };
            let token = match token_file {
                Some(f) => Some(crate::repos::read_password_file(Path::new(f)).map_err(|e| e.to_string())?),
                None => None,
            };
            post(rt, url, Some(body.to_string().into_bytes()), token, timeout)
        }
        Target::Command { command } => {
            let mut cmd = std::process::Command::new("sh");
            cmd.arg("-c")
                .arg(command)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .env("CAIRN_ALERT", &n.target.name)
                .env("CAIRN_EVENT", &n.event.event)
                .env("CAIRN_ALERT_STATE", n.phase.as_str())
                .env("CAIRN_SEVERITY", &n.event.severity);
            crate::process::own_group(&mut cmd);
            let mut child = cmd.spawn().map_err(|e| format!("could not start: {e}"))?;
            if let Some(mut stdin) = child.stdin.take() {
                use std::io::Write;
                let _ = stdin.write_all(body(n, host).to_string().as_bytes());
            }
            match crate::process::wait(child, timeout, &std::sync::atomic::AtomicBool::new(false)) {
                Ok(crate::process::Ended::Exited(s)) if s.success() => Ok(()),
                Ok(crate::process::Ended::Exited(s)) => Err(format!("exited with {s}")),
                Ok(_) => Err("killed at its timeout".into()),
                Err(e) => Err(e.to_string()),
            }
        }
        Target::Ping { .. } => Err("a ping target is sent job starts and ends, not conditions".into()),
        Target::Email(e) => {
            let subject = text(n, host);
            let subject: String = subject.chars().take(200).collect();
            let ev = &n.event;
            let mut body = format!("{}\n\n", ev.message);
            for (k, v) in [
                ("state", Some(n.phase.as_str().to_string())),
                ("event", Some(ev.event.clone())),
                ("severity", Some(ev.severity.clone())),
                ("host", Some(host.to_string())),
                ("source", ev.source.clone()),
                ("class", ev.class.clone()),
                ("repository", ev.repository.clone()),
                ("job", ev.job.clone()),
                ("at", Some(n.at.to_string())),
            ] {
                if let Some(v) = v {
                    body.push_str(&format!("{k:<11} {v}\n"));
                }
            }
            body.push_str(&format!("\ndetails:\n{}\n", serde_json::to_string_pretty(&ev.payload).unwrap_or_default()));
            crate::smtp::send(e, &crate::smtp::Mail { subject: &subject, body: &body }, timeout)
        }
    }
}

fn post(
    rt: &tokio::runtime::Handle,
    url: &str,
    body: Option<Vec<u8>>,
    token: Option<Vec<u8>>,
    timeout: Duration,
) -> std::result::Result<(), String> {
    // The client's connector lives in the runtime (its reactor and timers).
    let _in = rt.enter();
    let client = reqwest::Client::builder().timeout(timeout).build().map_err(|e| e.to_string())?;
    let mut req = client.post(url).header("user-agent", concat!("cairn/", env!("CARGO_PKG_VERSION")));
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(b);
    }
    if let Some(t) = token {
        let t = String::from_utf8_lossy(&t).trim().to_string();
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let r = rt.block_on(req.send()).map_err(|e| crate::one_line(&e))?;
    if r.status().is_success() {
        Ok(())
    } else {
        Err(format!("HTTP {}", r.status()))
    }
}

/// A stage of a job that ping targets hear of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PingStage {
    Start,
    Success,
    Fail,
}

/// Sends the ping targets matching `source` one ping each, at most `timeout` each, on
/// threads that the returned handles join (the caller joins them when the job ends).
pub fn ping(
    policy: &Policy,
    source: &str,
    class: &str,
    stage: PingStage,
    summary: String,
    rt: &tokio::runtime::Handle,
) -> Vec<std::thread::JoinHandle<()>> {
    let mut out = Vec::new();
    for t in policy.alerts.values() {
        let Target::Ping { url } = &t.target else { continue };
        let matched = (t.sources.is_empty() || t.sources.iter().any(|s| s == source))
            && (t.classes.is_empty() || t.classes.iter().any(|c| c == class));
        if !matched {
            continue;
        }
        let base = url.replace("{source}", source);
        let url = match stage {
            PingStage::Start => format!("{}/start", base.trim_end_matches('/')),
            PingStage::Success => base,
            PingStage::Fail => format!("{}/fail", base.trim_end_matches('/')),
        };
        let (rt, timeout, body) = (rt.clone(), Duration::from_secs(t.timeout.as_secs().max(1) as u64), summary.clone());
        let name = t.name.clone();
        if let Ok(h) = std::thread::Builder::new().name("ping".into()).spawn(move || {
            for wait in [0u64, 1, 5] {
                std::thread::sleep(Duration::from_secs(wait));
                let b = (!body.is_empty()).then(|| body.clone().into_bytes());
                match post(&rt, &url, b, None, timeout) {
                    Ok(()) => return,
                    Err(e) => {
                        crate::daemon::log(crate::daemon::Level::Warning, &format!("alert {name}: ping {url}: {e}"))
                    }
                }
            }
        }) {
            out.push(h);
        }
    }
    out
}

/// Delivers notifications off the caller's thread: retries a target that fails (after 1 s,
/// 5 s and 30 s), records every attempt in the catalog, and never blocks the sender.
pub struct Dispatcher {
    tx: mpsc::Sender<Notification>,
    handle: Option<std::thread::JoinHandle<()>>,
}

const RETRIES: [u64; 3] = [1, 5, 30];

impl Dispatcher {
    pub fn start(catalog_path: std::path::PathBuf, host: String, rt: tokio::runtime::Handle) -> Result<Dispatcher> {
        let (tx, rx) = mpsc::channel::<Notification>();
        let handle = std::thread::Builder::new()
            .name("alerts".into())
            .spawn(move || {
                let catalog = Catalog::open(&catalog_path).ok();
                // (next attempt, attempt number, notification)
                let mut pending: Vec<(Instant, u32, Notification)> = Vec::new();
                let mut open = true;
                while open || !pending.is_empty() {
                    let wait = pending.iter().map(|p| p.0).min().map(|t| t.saturating_duration_since(Instant::now()));
                    let got = match wait {
                        Some(w) if open => rx.recv_timeout(w),
                        Some(w) => {
                            std::thread::sleep(w);
                            Err(mpsc::RecvTimeoutError::Timeout)
                        }
                        None => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
                    };
                    match got {
                        Ok(n) => pending.push((Instant::now(), 0, n)),
                        Err(mpsc::RecvTimeoutError::Disconnected) => {
                            open = false;
                            // Stopping: what failed once is not retried for minutes more.
                            pending.retain(|p| p.1 == 0);
                        }
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                    }
                    let now = Instant::now();
                    let (due, later): (Vec<_>, Vec<_>) = pending.drain(..).partition(|p| p.0 <= now);
                    pending = later;
                    for (_, attempt, n) in due {
                        let r = deliver(&n, &host, &rt);
                        if let Some(c) = &catalog {
                            let _ = c.record_delivery(
                                &n.target.name,
                                &n.event.key,
                                &n.event.event,
                                n.phase.as_str(),
                                attempt + 1,
                                r.as_ref().err().map(String::as_str),
                                Timestamp::now(),
                            );
                        }
                        match r {
                            Ok(()) => crate::daemon::log(
                                crate::daemon::Level::Info,
                                &format!("alert {}: {} {} sent", n.target.name, n.phase.as_str(), n.event.key),
                            ),
                            Err(e) => {
                                crate::daemon::log(
                                    crate::daemon::Level::Warning,
                                    &format!(
                                        "alert {}: {} {} not delivered (attempt {}): {e}",
                                        n.target.name,
                                        n.phase.as_str(),
                                        n.event.key,
                                        attempt + 1
                                    ),
                                );
                                if let (Some(w), true) = (RETRIES.get(attempt as usize), open) {
                                    pending.push((Instant::now() + Duration::from_secs(*w), attempt + 1, n));
                                }
                            }
                        }
                    }
                }
            })
            .map_err(|e| crate::Error::io("starting the alert thread", e))?;
        Ok(Dispatcher { tx, handle: Some(handle) })
    }

    pub fn send(&self, n: Notification) {
        let _ = self.tx.send(n);
    }

    /// Stops taking notifications and waits (at most `bound`) for what is queued.
    pub fn finish(mut self, bound: Duration) {
        let (tx, _) = mpsc::channel();
        drop(std::mem::replace(&mut self.tx, tx));
        if let Some(h) = self.handle.take() {
            let start = Instant::now();
            while !h.is_finished() && start.elapsed() < bound {
                std::thread::sleep(Duration::from_millis(20));
            }
            if h.is_finished() {
                let _ = h.join();
            }
        }
    }
}

/// Evaluates the conditions and hands what must be sent to the dispatcher.
pub fn tick(env: &crate::jobs::Env, catalog: &Catalog, d: &Dispatcher, now: Timestamp) -> Result<usize> {
    if env.policy.alerts.is_empty() {
        return Ok(0);
    }
    let rows = crate::status::status(env, catalog, now, None)?;
    let conds = conditions(&env.policy, catalog, &rows, &quota_usage(env), now)?;
    let sends = plan(&env.policy, catalog, conds, now)?;
    let n = sends.len();
    for s in sends {
        d.send(s);
    }
    Ok(n)
}

/// How long a repository's listed size stands (listing an object store costs a request
/// per thousand objects: not every minute).
const USAGE_TTL: Duration = Duration::from_secs(600);

/// Bytes each repository with a `quota` holds: the sizes of every object under the
/// format's prefixes, listed at most every [`USAGE_TTL`]; a repository that cannot be
/// listed is left out (its other alerts say why).
pub fn quota_usage(env: &crate::jobs::Env) -> BTreeMap<String, u64> {
    repository_sizes(env, true)
}

/// Bytes each repository (with `quota_only`, each with a `quota`) holds in its store, as
/// [`quota_usage`] lists them.
pub fn repository_sizes(env: &crate::jobs::Env, quota_only: bool) -> BTreeMap<String, u64> {
    static SEEN: std::sync::Mutex<BTreeMap<String, (Instant, u64)>> = std::sync::Mutex::new(BTreeMap::new());
    let mut out = BTreeMap::new();
    for (name, r) in env.policy.repositories.iter().filter(|(_, r)| !quota_only || r.quota.is_some()) {
        let key = format!("{name}\0{}", r.url);
        let cached = SEEN.lock().ok().and_then(|m| m.get(&key).copied()).filter(|(at, _)| at.elapsed() < USAGE_TTL);
        let used = match cached {
            Some((_, u)) => Some(u),
            None => crate::repos::store_for(&r.url).ok().and_then(|store| {
                let mut total = 0u64;
                for prefix in ["data", "index", "snapshots", "keys", "writers", "prune", "wal", "drills", "audit"] {
                    total += env.rt.block_on(store.list(prefix)).ok()?.iter().map(|m| m.size).sum::<u64>();
                }
                total += env.rt.block_on(store.head("config")).map(|m| m.size).unwrap_or(0);
                if let Ok(mut m) = SEEN.lock() {
                    m.insert(key.clone(), (Instant::now(), total));
                }
                Some(total)
            }),
        };
        if let Some(u) = used {
            out.insert(name.clone(), u);
        }
    }
    out
}

/// `cairn alert test TARGET`: one test notification, delivered now, recorded.
pub fn test(env: &crate::jobs::Env, name: &str) -> Result<std::result::Result<(), String>> {
    let t = env
        .policy
        .alerts
        .get(name)
        .ok_or_else(|| crate::Error::Source(format!("alert {name:?} is not in the policy ([alert.NAME])")))?;
    let e = ev(
        "test",
        Severity::Info,
        "test".into(),
        None,
        None,
        format!("a test notification from cairn on {} (cairn alert test {name})", env.host),
        serde_json::json!({}),
    );
    let n = Notification { target: t.clone(), event: e, phase: Phase::Test, at: Timestamp::now() };
    let r = match &t.target {
        Target::Ping { url } => {
            let url = url.replace("{source}", "cairn-test");
            post(&env.rt, &url, None, None, Duration::from_secs(t.timeout.as_secs().max(1) as u64))
        }
        _ => deliver(&n, &env.host, &env.rt),
    };
    env.catalog()?.record_delivery(
        name,
        "test",
        "test",
        "test",
        1,
        r.as_ref().err().map(String::as_str),
        Timestamp::now(),
    )?;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        let text = r#"
[repository.r]
url = "/srv/r"
[class.c]
repository = "r"
[source.s]
class = "c"
kind = "files"
paths = ["/srv/s"]
[alert.all]
kind = "command"
command = "true"
repeat = "1h"
[alert.only_drills]
kind = "command"
command = "true"
events = ["drill_failed"]
"#;
        cairn_policy::file::parse("p.toml", text, Timestamp::UNIX_EPOCH).expect("policy")
    }

    fn missing() -> Event {
        ev(
            "backup_missing",
            Severity::Error,
            "backup_missing/s".into(),
            Some(("s", "c", "r")),
            None,
            "no backup".into(),
            serde_json::json!({}),
        )
    }

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).expect("time")
    }

    #[test]
    fn a_condition_is_raised_once_repeated_after_its_interval_and_resolved_to_who_was_told() {
        let dir = tempfile::tempdir().expect("tmp");
        let c = Catalog::open(&dir.path().join("c.db")).expect("catalog");
        let p = policy();
        let phases = |v: &[Notification]| v.iter().map(|n| (n.target.name.clone(), n.phase)).collect::<Vec<_>>();
        let first = plan(&p, &c, vec![missing()], at(0)).expect("plan");
        assert_eq!(phases(&first), [("all".to_string(), Phase::Raised)], "the drills-only target is not matched");
        assert!(plan(&p, &c, vec![missing()], at(60)).expect("plan").is_empty(), "no repeat within the hour");
        let again = plan(&p, &c, vec![missing()], at(3600)).expect("plan");
        assert_eq!(phases(&again), [("all".to_string(), Phase::Repeated)]);
        let gone = plan(&p, &c, vec![], at(3700)).expect("plan");
        assert_eq!(phases(&gone), [("all".to_string(), Phase::Resolved)]);
        assert!(plan(&p, &c, vec![], at(3800)).expect("plan").is_empty(), "resolved once");
        // A restart (a new catalog handle) remembers what is active.
        plan(&p, &c, vec![missing()], at(4000)).expect("plan");
        drop(c);
        let c = Catalog::open(&dir.path().join("c.db")).expect("catalog");
        assert!(plan(&p, &c, vec![missing()], at(4001)).expect("plan").is_empty());
    }
}

//! The JSON endpoints (see [`crate::routes::ROUTES`] for which is which). Each parses its
//! input, calls the application layer on the blocking pool and answers JSON.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use cairn_daemon::browse::View;
use cairn_daemon::catalog::{Filter, Kind};
use cairn_daemon::restore::{Mode, Progress};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::Caller;
use crate::routes::{Perm, ROUTES};
use crate::{blocking, ApiError, App, P, Q};

type St = State<Arc<App>>;
type Who = Extension<Caller>;
type Answer = Result<Response, ApiError>;

fn ok(v: Value) -> Answer {
    Ok(Json(v).into_response())
}

/// Text a person typed (labels, reasons): trimmed, one line, bounded.
fn human_text(what: &str, v: Option<&str>, max: usize) -> Result<String, ApiError> {
    let v = v.map(str::trim).unwrap_or_default();
    if v.is_empty() {
        return Err(ApiError::bad(format!("{what} is required")));
    }
    if v.chars().count() > max || v.chars().any(char::is_control) {
        return Err(ApiError::bad(format!("{what}: one line of at most {max} characters")));
    }
    Ok(v.to_string())
}

/// The most results any listing gives in one answer.
pub const MAX_LIMIT: usize = 100_000;

fn limit(l: Option<i64>, default: usize, max: usize) -> Result<usize, ApiError> {
    match l {
        None => Ok(default),
        Some(n) if n >= 1 && n as u64 <= max as u64 => Ok(n as usize),
        Some(n) => Err(ApiError::bad(format!("limit {n}: between 1 and {max}"))),
    }
}

/// The repository a request means: the one named, else the source's, else the policy's
/// only (or first) one.
pub fn repository_of(app: &App, repository: Option<&str>, source: Option<&str>) -> Result<String, ApiError> {
    let env = app.env()?;
    if let Some(r) = repository {
        if !env.policy.repositories.contains_key(r) {
            return Err(ApiError::not_found(format!("repository {r:?} is not in the policy")));
        }
        return Ok(r.to_string());
    }
    if let Some(s) = source {
        return Ok(env.source(s)?.repository.value.clone());
    }
    env.policy
        .repositories
        .keys()
        .next()
        .cloned()
        .ok_or_else(|| ApiError::not_found("the policy has no repository".into()))
}

pub async fn openapi() -> Json<Value> {
    Json(crate::openapi::document())
}

pub async fn metrics(State(app): St) -> Answer {
    let a = app.clone();
    let text = blocking(move || {
        let env = a.env()?;
        let catalog = env.catalog()?;
        Ok(cairn_daemon::metrics::render(&env, &catalog, jiff::Timestamp::now(), Some(a.shared.start))?)
    })
    .await?;
    let mut r = text.into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    Ok(r)
}

pub async fn whoami(Extension(c): Who) -> Answer {
    let perms: Vec<&str> = crate::routes::ROUTES
        .iter()
        .map(|r| r.perm)
        .filter(|p| c.may(*p) && *p != Perm::Public)
        .map(Perm::as_str)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    ok(json!({"token": c.token, "role": c.role.as_str(), "address": c.address, "permissions": perms, "csrf": c.csrf}))
}

#[derive(Deserialize)]
pub struct SourceQuery {
    pub source: Option<String>,
}

pub async fn status(State(app): St, Q(q): Q<SourceQuery>) -> Answer {
    let rows = blocking(move || {
        let env = app.env()?;
        if let Some(s) = &q.source {
            env.source(s)?;
        }
        // Its own connection: status reads the repositories (seconds for a remote one), and
        // the shared connection authenticates every request meanwhile.
        let c = env.catalog()?;
        Ok(cairn_daemon::status::status(&env, &c, jiff::Timestamp::now(), q.source.as_deref())?)
    })
    .await?;
    ok(json!(rows))
}

pub async fn sources(State(app): St) -> Answer {
    let env = app.env()?;
    let rows: Vec<Value> = env
        .policy
        .sources
        .values()
        .map(|s| {
            json!({"name": s.name, "class": s.class, "kind": s.kind.name(), "repository": s.repository.value,
                "rpo_secs": s.rpo.value.map(|d| d.as_secs()), "rto_secs": s.rto.value.map(|d| d.as_secs()),
                "copy_to": s.copy_to.value.iter().map(|c| c.repository.clone()).collect::<Vec<_>>(),
                "drill": s.drill.value.is_some(), "tags": s.tags.value})
        })
        .collect();
    ok(json!(rows))
}

#[derive(Deserialize)]
pub struct JobsQuery {
    pub source: Option<String>,
    pub kind: Option<String>,
    pub limit: Option<i64>,
}

pub async fn jobs(State(app): St, Q(q): Q<JobsQuery>) -> Answer {
    let kind = match q.kind.as_deref() {
        None => None,
        Some(k) => Some(
            Kind::parse(k)
                .ok_or_else(|| ApiError::bad(format!("kind {k:?}: one of backup, retention, verify, copy, drill")))?,
        ),
    };
    let f = Filter { source: q.source, kind, since: None, limit: Some(limit(q.limit, 100, MAX_LIMIT)?) };
    let rows = blocking(move || app.with_catalog(|c| c.jobs(&f))).await?;
    ok(json!(rows))
}

pub async fn job(State(app): St, P((host, n)): P<(String, String)>) -> Answer {
    let id = format!("{host}/{n}");
    let (job, drill, log) = blocking(move || {
        app.with_catalog(|c| {
            let j = c.job(&id)?;
            let log = match &j {
                Some(j) => c.job_log(j.row)?,
                None => Vec::new(),
            };
            let d = match &j {
                Some(j) if j.kind == "drill" => {
                    c.drills(Some(&j.source), None)?.into_iter().find(|(x, _)| x.id == j.id).and_then(|(_, r)| r)
                }
                _ => None,
            };
            Ok((j, d, log))
        })
    })
    .await?;
    let job = job.ok_or_else(|| ApiError::not_found(format!("no job {host}/{n} in the catalog")))?;
    let record: Option<Value> = drill.and_then(|r| serde_json::from_str(&r).ok());
    let log: Vec<Value> = log.into_iter().map(|(at, line)| json!({"at": at, "line": line})).collect();
    ok(json!({"job": job, "log": log, "drill": record}))
}

pub async fn drills(State(app): St, Q(q): Q<SourceQuery>) -> Answer {
    let rows = blocking(move || app.with_catalog(|c| c.drills(q.source.as_deref(), None))).await?;
    let out: Vec<Value> = rows
        .into_iter()
        .rev()
        .map(|(j, r)| json!({"job": j, "record": r.and_then(|r| serde_json::from_str::<Value>(&r).ok())}))
        .collect();
    ok(json!(out))
}

pub async fn task(State(app): St, Extension(c): Who, P(id): P<String>) -> Answer {
    // A task is its starter's (and an admin's): its paths and errors name files.
    let t = id
        .parse::<u64>()
        .ok()
        .and_then(|n| app.tasks.get(n))
        .filter(|t| t.token == c.token || c.role == cairn_daemon::tokens::Role::Admin);
    match t {
        Some(t) => ok(json!(t)),
        None => Err(ApiError::not_found(format!("no task {id:?} (tasks are forgotten when the daemon restarts)"))),
    }
}

#[derive(Deserialize)]
pub struct SnapQuery {
    pub repository: Option<String>,
    pub source: Option<String>,
    pub path: Option<String>,
    pub limit: Option<i64>,
    pub q: Option<String>,
    pub preview: Option<bool>,
    /// The restore page's snapshot.
    pub snapshot: Option<String>,
}

fn snapshot_json(id: &cairn_format::SnapshotId, s: &cairn_format::snapshot::Snapshot) -> Value {
    json!({"id": id.to_hex(), "short_id": id.short(), "time": s.time, "hostname": s.hostname, "source": s.source,
        "job": s.job, "label": s.label, "tags": s.tags, "paths": s.paths, "kind": s.kind, "partial": s.partial,
        "files": s.summary.files_new + s.summary.files_changed + s.summary.files_unmodified,
        "total_bytes": s.summary.total_bytes, "bytes_added": s.summary.bytes_added})
}

async fn view_for(app: &Arc<App>, q: &SnapQuery) -> Result<Arc<View>, ApiError> {
    let a = app.clone();
    let (r, s) = (q.repository.clone(), q.source.clone());
    blocking(move || {
        let name = repository_of(&a, r.as_deref(), s.as_deref())?;
        a.view(&name)
    })
    .await
}

pub async fn snapshots(State(app): St, Q(q): Q<SnapQuery>) -> Answer {
    let v = view_for(&app, &q).await?;
    let out: Vec<Value> = v.of_source(q.source.as_deref()).rev().map(|(id, s)| snapshot_json(id, s)).collect();
    ok(json!({"repository": v.name, "snapshots": out}))
}

pub async fn tree(State(app): St, P(id): P<String>, Q(q): Q<SnapQuery>) -> Answer {
    let v = view_for(&app, &q).await?;
    let lim = limit(q.limit, 10_000, MAX_LIMIT)?;
    let path = q.path.clone().unwrap_or_else(|| "/".into());
    let (entries, truncated, sid) = blocking(move || {
        let (sid, snap) = v.snapshot(&id)?;
        let (e, t) = cairn_daemon::browse::list_dir(&v, snap, &path, lim)?;
        Ok((e, t, sid.to_hex()))
    })
    .await?;
    ok(json!({"snapshot": sid, "path": cairn_daemon::browse::clean_path(q.path.as_deref().unwrap_or("/"))?,
        "entries": entries, "truncated": truncated}))
}

pub async fn search(State(app): St, Q(q): Q<SnapQuery>) -> Answer {
    let pattern =
        q.q.clone().filter(|p| !p.trim().is_empty()).ok_or_else(|| ApiError::bad("q (a glob) is required"))?;
    if pattern.len() > 1024 {
        return Err(ApiError::bad("q: at most 1024 bytes"));
    }
    let v = view_for(&app, &q).await?;
    let lim = limit(q.limit, 1000, MAX_LIMIT)?;
    let src = q.source.clone();
    let (hits, truncated) = blocking(move || {
        let snaps: Vec<_> = v.of_source(src.as_deref()).collect();
        Ok(cairn_daemon::browse::search(&v, &snaps, &pattern, lim)?)
    })
    .await?;
    ok(json!({"hits": hits, "truncated": truncated}))
}

pub async fn versions(State(app): St, Q(q): Q<SnapQuery>) -> Answer {
    let path = q.path.clone().ok_or_else(|| ApiError::bad("path is required"))?;
    let v = view_for(&app, &q).await?;
    let src = q.source.clone();
    let out = blocking(move || {
        let snaps: Vec<_> = v.of_source(src.as_deref()).collect();
        Ok(cairn_daemon::browse::versions(&v, &snaps, &path)?)
    })
    .await?;
    ok(json!(out))
}

/// The most of a file a preview shows.
const PREVIEW: usize = 64 * 1024;

/// Keeps the first [`PREVIEW`] bytes, then says "enough" (an error the caller expects).
struct Head(Vec<u8>);

impl std::io::Write for Head {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let room = PREVIEW + 1 - self.0.len();
        if room == 0 {
            return Err(std::io::Error::other("preview complete"));
        }
        let n = b.len().min(room);
        self.0.extend_from_slice(&b[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A response body fed by a blocking writer through a bounded channel.
struct ChannelBody(tokio::sync::mpsc::Receiver<bytes::Bytes>);

impl http_body::Body for ChannelBody {
    type Data = bytes::Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, std::io::Error>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(http_body::Frame::data(b))))
    }
}

/// Writes into the body's channel; a client that reads nothing for [`STALL`] loses its
/// download (the blocking thread is not held for ever).
struct ChannelWriter(tokio::sync::mpsc::Sender<bytes::Bytes>, tokio::runtime::Handle);

const STALL: std::time::Duration = std::time::Duration::from_secs(60);

impl std::io::Write for ChannelWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.1
            .block_on(self.0.send_timeout(bytes::Bytes::copy_from_slice(b), STALL))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away or stalled"))?;
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `attachment; filename="..."` safe for any name: ASCII fallback plus RFC 5987 UTF-8.
fn disposition(name: &str) -> String {
    let ascii: String =
        name.chars().map(|c| if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' { c } else { '_' }).collect();
    let mut enc = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            enc.push(b as char);
        } else {
            enc.push_str(&format!("%{b:02X}"));
        }
    }
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{enc}")
}

pub async fn file(State(app): St, P(id): P<String>, Q(q): Q<SnapQuery>) -> Answer {
    let path = q.path.clone().ok_or_else(|| ApiError::bad("path is required"))?;
    let v = view_for(&app, &q).await?;
    let (v2, id2, p2) = (v.clone(), id.clone(), path.clone());
    let node = blocking(move || {
        let (_, snap) = v2.snapshot(&id2)?;
        let n = cairn_daemon::browse::node(&v2, snap, &p2)?;
        if n.kind != cairn_format::tree::NodeKind::File {
            return Err(ApiError::not_found(format!(
                "{p2}: no regular file there (a {})",
                cairn_daemon::browse::kind_name(n.kind)
            )));
        }
        Ok(n)
    })
    .await?;
    if q.preview == Some(true) {
        let size = node.size;
        let head = blocking(move || {
            let mut h = Head(Vec::new());
            match cairn_daemon::browse::read_file(&v, &node, &mut h) {
                Ok(_) => Ok(h.0),
                Err(_) if h.0.len() > PREVIEW => Ok(h.0),
                Err(e) => Err(e.into()),
            }
        })
        .await?;
        let truncated = head.len() > PREVIEW;
        let shown = &head[..head.len().min(PREVIEW)];
        let binary = shown.contains(&0);
        return ok(json!({"path": path, "size": size, "truncated": truncated, "binary": binary,
            "text": if binary { String::new() } else { String::from_utf8_lossy(shown).into_owned() }}));
    }
    let name = node.name.lossy().into_owned();
    let size = node.size;
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        // A read error mid-file ends the body early: the client sees a short download
        // (Content-Length says how long it should have been).
        let _ = cairn_daemon::browse::read_file(&v, &node, &mut ChannelWriter(tx, handle));
    });
    let mut r = Response::new(axum::body::Body::new(ChannelBody(rx)));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    if let Ok(v) = HeaderValue::from_str(&disposition(&name)) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(r)
}

#[derive(Deserialize)]
pub struct RestoreBody {
    pub snapshot: String,
    pub repository: Option<String>,
    pub source: Option<String>,
    pub paths: Vec<String>,
    pub target: Option<String>,
    pub confirm: Option<String>,
}

fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad(format!("request body: {e}")))
}

pub async fn restore_copy(State(app): St, Extension(c): Who, body: bytes::Bytes) -> Answer {
    let b: RestoreBody = parse_body(&body)?;
    let target =
        b.target.clone().ok_or_else(|| ApiError::bad("target (a directory under restore_dirs) is required"))?;
    // The request is checked before anything is made on disk.
    check_paths(&b.paths)?;
    let (a, r, s, snap) = (app.clone(), b.repository.clone(), b.source.clone(), b.snapshot.clone());
    blocking(move || {
        let name = repository_of(&a, r.as_deref(), s.as_deref())?;
        a.view(&name)?.snapshot(&snap).map(|_| ()).map_err(ApiError::from)
    })
    .await?;
    let env = app.env()?;
    let allowed = env.policy.server.as_ref().map(|s| s.restore_dirs.clone()).unwrap_or_default();
    let dir = blocking(move || Ok(cairn_daemon::restore::confine(&target, &allowed)?)).await;
    let dir = match dir {
        Ok(d) => d,
        Err(e) => {
            audit_refusal(&app, &c, &b, "restore", &e);
            return Err(e);
        }
    };
    start_restore(app, c, b, Mode::Copy(dir)).await
}

fn audit_refusal(app: &App, c: &Caller, b: &RestoreBody, action: &str, e: &ApiError) {
    if let Ok(env) = app.env() {
        let repo = repository_of(app, b.repository.as_deref(), b.source.as_deref()).ok();
        let target = cairn_audit::Target {
            repository: String::new(),
            source: b.source.clone(),
            snapshots: vec![b.snapshot.clone()],
            paths: b.paths.iter().cloned().chain(b.target.clone()).collect(),
        };
        cairn_daemon::audit::api_action(
            &env,
            &c.client(),
            action,
            repo.as_deref(),
            target,
            "failed",
            Some(e.message.clone()),
        );
    }
}

/// 1 to 1000 distinct paths, none the root.
fn check_paths(paths: &[String]) -> Result<(), ApiError> {
    if paths.is_empty() || paths.len() > 1000 {
        return Err(ApiError::bad("paths: 1 to 1000 paths in the snapshot"));
    }
    let mut seen = std::collections::HashSet::new();
    for p in paths {
        if p.trim_matches('/').is_empty() {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "the whole root is not restored through the API: pick directories",
            ));
        }
        if !seen.insert(p.trim_end_matches('/')) {
            return Err(ApiError::bad(format!("path {p:?} is given twice")));
        }
    }
    Ok(())
}

pub async fn preview_in_place(State(app): St, body: bytes::Bytes) -> Answer {
    let b: RestoreBody = parse_body(&body)?;
    check_paths(&b.paths)?;
    let a = app.clone();
    let p = blocking(move || {
        let name = repository_of(&a, b.repository.as_deref(), b.source.as_deref())?;
        let v = a.view(&name)?;
        let (sid, snap) = v.snapshot(&b.snapshot)?;
        let p = cairn_daemon::restore::preview_in_place(&v, snap, &b.paths, 1000)?;
        Ok(json!({"snapshot": sid.to_hex(), "confirm": sid.short(), "preview": p}))
    })
    .await?;
    ok(p)
}

pub async fn restore_in_place(State(app): St, Extension(c): Who, body: bytes::Bytes) -> Answer {
    let b: RestoreBody = parse_body(&body)?;
    start_restore(app, c, b, Mode::InPlace).await
}

async fn start_restore(app: Arc<App>, c: Caller, b: RestoreBody, mode: Mode) -> Answer {
    check_paths(&b.paths)?;
    let a = app.clone();
    let (r, s, snap_spec) = (b.repository.clone(), b.source.clone(), b.snapshot.clone());
    let (name, view, sid) = blocking(move || {
        let name = repository_of(&a, r.as_deref(), s.as_deref())?;
        let v = a.view(&name)?;
        let sid = v.snapshot(&snap_spec)?.0;
        Ok((name, v, sid))
    })
    .await?;
    if mode == Mode::InPlace && b.confirm.as_deref() != Some(sid.short().as_str()) {
        let e = ApiError::bad(format!(
            "restoring in place overwrites live data: confirm with the snapshot's short id {}",
            sid.short()
        ));
        audit_refusal(&app, &c, &b, "restore", &e);
        return Err(e);
    }
    // A slot, released when the restore thread ends (or could not start).
    use std::sync::atomic::Ordering;
    if app.restores.fetch_add(1, Ordering::SeqCst) >= crate::MAX_RESTORES {
        app.restores.fetch_sub(1, Ordering::SeqCst);
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("{} restores are running: try again when one has ended", crate::MAX_RESTORES),
        ));
    }
    struct Slot(Arc<App>);
    impl Drop for Slot {
        fn drop(&mut self) {
            self.0.restores.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
    let slot = Slot(app.clone());
    let progress = Arc::new(Progress::default());
    let task = app.tasks.start("restore", b.source.clone(), &c.token, Some(progress.clone()));
    let env = app.env()?;
    let a = app.clone();
    let where_to = match &mode {
        Mode::Copy(d) => d.display().to_string(),
        Mode::InPlace => "in place".into(),
    };
    std::thread::Builder::new()
        .name("api-restore".into())
        .stack_size(cairn_repo_stack())
        .spawn(move || {
            let _slot = slot;
            let started = std::time::Instant::now();
            let r = view
                .snapshot(&sid.to_hex())
                .and_then(|(_, snap)| cairn_daemon::restore::restore(&view, snap, &b.paths, &mode, &progress));
            let target = cairn_audit::Target {
                repository: name.clone(),
                source: b.source.clone(),
                snapshots: vec![sid.to_hex()],
                paths: b.paths.iter().cloned().chain(std::iter::once(where_to.clone())).collect(),
            };
            match r {
                Ok(sum) => {
                    let msg = format!(
                        "{} files, {} bytes restored {} in {:.1} s",
                        sum.files,
                        sum.bytes_written,
                        where_to,
                        started.elapsed().as_secs_f64()
                    );
                    cairn_daemon::audit::api_action(&env, &c.client(), "restore", Some(&name), target, "ok", Some(msg));
                    a.tasks.finish(task, "succeeded", Some(json!(sum)), None);
                }
                Err(e) => {
                    let msg = cairn_daemon::one_line(&e);
                    cairn_daemon::audit::api_action(
                        &env,
                        &c.client(),
                        "restore",
                        Some(&name),
                        target,
                        "failed",
                        Some(msg.clone()),
                    );
                    a.tasks.finish(task, "failed", None, Some(msg));
                }
            }
        })
        .map_err(|_| ApiError::internal("could not start the restore"))?;
    accepted(&app, task)
}

/// Stack for threads that walk trees (deep directories recurse), as the daemon's jobs.
fn cairn_repo_stack() -> usize {
    cairn_repo::check::WALK_STACK
}

fn accepted(app: &App, task: u64) -> Answer {
    let t = app.tasks.get(task).ok_or_else(|| ApiError::internal("task lost"))?;
    let mut r = (StatusCode::ACCEPTED, Json(json!(t))).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/api/tasks/{task}")) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    Ok(r)
}

#[derive(Deserialize)]
pub struct RunBody {
    pub source: String,
    pub label: Option<String>,
    pub reason: Option<String>,
}

pub async fn backup(State(app): St, Extension(c): Who, body: bytes::Bytes) -> Answer {
    let b: RunBody = parse_body(&body)?;
    let label = human_text("label", b.label.as_deref(), 200)?;
    let reason = human_text("reason", b.reason.as_deref(), 500)?;
    queue_job(app, c, Kind::Backup, b.source, Some(label), Some(reason)).await
}

pub async fn drill(State(app): St, Extension(c): Who, body: bytes::Bytes) -> Answer {
    let b: RunBody = parse_body(&body)?;
    // A source without a drill table is drilled with the defaults, as `cairn drill` does.
    app.env()?.source(&b.source)?;
    let reason =
        b.reason.as_deref().filter(|r| !r.is_empty()).map(|r| human_text("reason", Some(r), 500)).transpose()?;
    queue_job(app, c, Kind::Drill, b.source, None, reason).await
}

/// Hands a job to the daemon's queue; answers 409 at once if the source is busy, else 202
/// with a task that ends when the job does.
async fn queue_job(
    app: Arc<App>,
    c: Caller,
    kind: Kind,
    source: String,
    label: Option<String>,
    reason: Option<String>,
) -> Answer {
    app.env()?.source(&source)?;
    let (reply, rx) = std::sync::mpsc::channel();
    let req = cairn_daemon::control::RunRequest {
        source: source.clone(),
        kind,
        client: Some(c.client()),
        label,
        reason,
        actor: format!("token:{}", c.token),
        wait: false,
        reply,
    };
    app.shared.runs.send(req).map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the daemon is stopping"))?;
    let task = app.tasks.start(kind.as_str(), Some(source), &c.token, None);
    let a = app.clone();
    // A refusal (busy source) comes within a moment; the job's end may take hours.
    let first = blocking(move || Ok(rx.recv_timeout(Duration::from_secs(1)).map_err(|e| (e, rx)))).await?;
    let finish = move |a: &App, r: cairn_daemon::control::Reply| {
        a.refresh_views();
        match r {
            cairn_daemon::control::Reply::Done(j) => {
                let state = j.status.as_str().to_string();
                a.tasks.finish(task, &state, Some(json!({"job": j.id, "snapshot": j.snapshot})), j.error);
            }
            cairn_daemon::control::Reply::Refused(why) => a.tasks.finish(task, "failed", None, Some(why)),
        }
    };
    match first {
        Ok(cairn_daemon::control::Reply::Refused(why)) => {
            a.tasks.finish(task, "failed", None, Some(why.clone()));
            Err(ApiError::new(StatusCode::CONFLICT, why))
        }
        Ok(done) => {
            finish(&a, done);
            accepted(&app, task)
        }
        Err((_, rx)) => {
            let a2 = a.clone();
            std::thread::spawn(move || match rx.recv() {
                Ok(r) => finish(&a2, r),
                Err(_) => a2.tasks.finish(task, "failed", None, Some("the daemon stopped before the job ended".into())),
            });
            accepted(&app, task)
        }
    }
}

#[derive(Deserialize)]
pub struct AuditQuery {
    pub repository: Option<String>,
    pub action: Option<String>,
    pub since: Option<String>,
    pub limit: Option<i64>,
}

pub async fn audit(State(app): St, Q(q): Q<AuditQuery>) -> Answer {
    let since = match q.since.as_deref() {
        Some(s) => {
            Some(s.parse::<jiff::Timestamp>().map_err(|_| ApiError::bad(format!("since {s:?}: an RFC 3339 time")))?)
        }
        None => None,
    };
    let lim = limit(q.limit, 500, MAX_LIMIT)?;
    let a = app.clone();
    let out = blocking(move || {
        let name = repository_of(&a, q.repository.as_deref(), None)?;
        let v = a.view(&name)?;
        let loaded = cairn_audit::load(&v.repo, true).map_err(cairn_daemon::Error::from)?;
        let rows: Vec<Value> = cairn_audit::records(&loaded)
            .into_iter()
            .rev()
            .filter(|p| q.action.as_deref().is_none_or(|x| p.record.action == x))
            .filter(|p| since.is_none_or(|t| p.record.time.parse::<jiff::Timestamp>().is_ok_and(|rt| rt >= t)))
            .take(lim)
            .map(|p| json!({"chain": p.chain, "n": p.n, "record": p.record}))
            .collect();
        Ok(json!({"repository": name, "records": rows}))
    })
    .await?;
    ok(out)
}

#[derive(Deserialize)]
pub struct RepoQuery {
    pub repository: Option<String>,
}

pub async fn audit_verify(State(app): St, Q(q): Q<RepoQuery>) -> Answer {
    let a = app.clone();
    let out = blocking(move || {
        let name = repository_of(&a, q.repository.as_deref(), None)?;
        let env = a.env()?;
        let v = a.view(&name)?;
        let r = cairn_daemon::audit::verify(&env, &v.repo, None)?;
        Ok(json!({"repository": name, "chains": r.chains, "segments": r.segments, "records": r.records,
            "ok": r.findings.is_empty(), "findings": r.findings}))
    })
    .await?;
    ok(out)
}

pub async fn tokens(State(app): St) -> Answer {
    let l = blocking(move || app.with_catalog(cairn_daemon::tokens::list)).await?;
    ok(json!(l))
}

#[derive(Deserialize)]
pub struct TokenBody {
    pub name: String,
    pub role: String,
    pub expires: Option<String>,
}

pub async fn token_create(State(app): St, Extension(c): Who, body: bytes::Bytes) -> Answer {
    let b: TokenBody = parse_body(&body)?;
    let role = cairn_daemon::tokens::Role::parse(&b.role)
        .ok_or_else(|| ApiError::bad(format!("role {:?}: one of admin, operator, restore, auditor", b.role)))?;
    let expires = match b.expires.as_deref() {
        Some(e) => Some(cairn_policy::file::fixed_duration(e).map_err(ApiError::bad)?),
        None => None,
    };
    if expires.is_some_and(|d| d.as_secs() <= 0) {
        return Err(ApiError::bad("expires: a positive duration"));
    }
    let (a, by, name) = (app.clone(), format!("token:{}", c.token), b.name.clone());
    let secret = blocking(move || {
        a.with_catalog(|cat| cairn_daemon::tokens::create(cat, &name, role, expires, &by, jiff::Timestamp::now()))
    })
    .await?;
    let env = app.env()?;
    let target = cairn_audit::Target { paths: vec![format!("token {}", b.name)], ..Default::default() };
    cairn_daemon::audit::api_action(
        &env,
        &c.client(),
        "token_create",
        None,
        target,
        "ok",
        Some(format!("role {}", role.as_str())),
    );
    Ok((StatusCode::CREATED, Json(json!({"name": b.name, "role": role.as_str(), "secret": secret}))).into_response())
}

pub async fn token_revoke(State(app): St, Extension(c): Who, P(name): P<String>) -> Answer {
    let (a, n) = (app.clone(), name.clone());
    let done =
        blocking(move || a.with_catalog(|cat| cairn_daemon::tokens::revoke(cat, &n, jiff::Timestamp::now()))).await?;
    if !done {
        return Err(ApiError::not_found(format!("no current token named {name:?}")));
    }
    let env = app.env()?;
    let target = cairn_audit::Target { paths: vec![format!("token {name}")], ..Default::default() };
    cairn_daemon::audit::api_action(&env, &c.client(), "token_revoke", None, target, "ok", None);
    ok(json!({"ok": true}))
}

/// Every route's method and path, for the console's and tests' use.
pub fn route_list() -> Vec<(&'static str, &'static str)> {
    ROUTES.iter().map(|r| (r.method, r.path)).collect()
}

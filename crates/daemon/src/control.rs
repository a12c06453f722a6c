//! The daemon's control socket: `cairn run` asks the running daemon to run a manual job,
//! so the job runs with the daemon's rights and in its accounting (parallel limits, the
//! same job thread as scheduled jobs), and the actor is who asked: the peer's user id, from
//! the kernel (`SO_PEERCRED`), not a name the client claims.
//!
//! Protocol: one JSON line each way on `state_dir/daemon.sock` (mode 0600: the daemon's
//! user and root). Request `{"op":"run","source":S,"label":L,"reason":R,"wait":bool}`;
//! reply `{"id","status","snapshot","error","copies":[...]}` once the job has ended, or
//! `{"refused": MESSAGE}`. `wait` queues the job when one of the source runs; without it
//! such a request is refused, as `cairn run` without the daemon refuses.
//! `{"op":"reload"}` re-reads the policy as SIGHUP does and answers once the daemon has
//! done so: `{"reloaded": MESSAGE}` or `{"refused": WHY}` (a signal cannot carry back that
//! the new policy was refused, so `cairn daemon reload` asks here).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::mpsc;

use crate::catalog::Status;
use crate::jobs::{Env, JobReport};
use crate::{Error, Result};

/// A manual run asked for through the socket.
pub struct RunRequest {
    pub source: String,
    /// A backup or a drill.
    pub kind: crate::catalog::Kind,
    /// The API client that asked (`None`: a local user through the socket).
    pub client: Option<crate::jobs::Client>,
    pub label: Option<String>,
    pub reason: Option<String>,
    pub actor: String,
    pub wait: bool,
    /// Where the outcome goes (the connection's thread waits on it).
    pub reply: mpsc::Sender<Reply>,
}

/// What the daemon answers.
#[derive(Debug, Clone)]
pub enum Reply {
    Done(JobReport),
    Refused(String),
}

/// Who waits for the outcome of the next policy reload. The scheduler loop takes them
/// after it has re-read the policy (it looks at least once a second).
static RELOAD_WAITERS: std::sync::Mutex<Vec<mpsc::Sender<std::result::Result<String, String>>>> =
    std::sync::Mutex::new(Vec::new());

/// The connections waiting for a reload's outcome (emptied).
pub fn take_reload_waiters() -> Vec<mpsc::Sender<std::result::Result<String, String>>> {
    std::mem::take(&mut *RELOAD_WAITERS.lock().unwrap_or_else(|p| p.into_inner()))
}

/// The answer to a request this daemon does not know (an older daemon answers
/// `reload` with it too: the client then signals instead).
pub const UNKNOWN_REQUEST: &str = "not a request this daemon understands";

pub fn socket_path(env: &Env) -> PathBuf {
    env.state_dir.join("daemon.sock")
}

fn report_json(j: &JobReport) -> serde_json::Value {
    serde_json::json!({"id": j.id, "status": j.status.as_str(), "snapshot": j.snapshot, "error": j.error,
        "copies": j.copies.iter().map(report_json).collect::<Vec<_>>()})
}

fn report_of(v: &serde_json::Value) -> Option<JobReport> {
    Some(JobReport {
        id: v["id"].as_str()?.to_string(),
        status: Status::parse(v["status"].as_str()?)?,
        snapshot: v["snapshot"].as_str().map(str::to_string),
        error: v["error"].as_str().map(str::to_string),
        copies: v["copies"].as_array().map(|c| c.iter().filter_map(report_of).collect()).unwrap_or_default(),
    })
}

/// The user a connected peer runs as.
fn peer_user(s: &UnixStream) -> Option<String> {
    use std::os::fd::AsRawFd;
    let mut cred = libc::ucred { pid: 0, uid: 0, gid: 0 };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cred`, a ucred we own.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            &mut cred as *mut libc::ucred as *mut libc::c_void,
            &mut len,
        )
    };
    (rc == 0).then(|| cairn_fs::user_name(cred.uid).unwrap_or_else(|| cred.uid.to_string()))
}

/// Binds the socket (replacing a stale one: the caller holds the daemon lock) and serves
/// it on a thread, handing each request to `tx`.
pub fn serve(env: &Env, tx: mpsc::Sender<RunRequest>) -> Result<()> {
    let path = socket_path(env);
    let _ = std::fs::remove_file(&path);
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(|e| Error::io(format!("creating {}", d.display()), e))?;
    }
    let listener = UnixListener::bind(&path).map_err(|e| Error::io(format!("binding {}", path.display()), e))?;
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .map_err(|e| Error::io(format!("securing {}", path.display()), e))?;
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            for conn in listener.incoming().flatten() {
                let tx = tx.clone();
                // One thread per connection: a request waits for its job to end.
                let _ = std::thread::Builder::new().name("control-conn".into()).spawn(move || handle(conn, tx));
            }
        })
        .map_err(|e| Error::io("starting the control thread", e))?;
    Ok(())
}

fn handle(conn: UnixStream, tx: mpsc::Sender<RunRequest>) {
    let actor = peer_user(&conn).unwrap_or_else(|| "?".into());
    let mut line = String::new();
    let Ok(read) = conn.try_clone() else { return };
    // A bounded line: a hostile client cannot make the daemon buffer without end.
    if BufReader::new(std::io::Read::take(read, 64 * 1024)).read_line(&mut line).is_err() {
        return;
    }
    let answer = match serde_json::from_str::<serde_json::Value>(&line) {
        Ok(v) if v["op"] == "run" && v["source"].is_string() => {
            let (reply, rx) = mpsc::channel();
            let req = RunRequest {
                kind: crate::catalog::Kind::Backup,
                client: None,
                source: v["source"].as_str().unwrap_or_default().to_string(),
                label: v["label"].as_str().map(str::to_string),
                reason: v["reason"].as_str().map(str::to_string),
                actor,
                wait: v["wait"].as_bool().unwrap_or(false),
                reply,
            };
            if tx.send(req).is_err() {
                serde_json::json!({"refused": "the daemon is stopping"})
            } else {
                match rx.recv() {
                    Ok(Reply::Done(j)) => report_json(&j),
                    Ok(Reply::Refused(why)) => serde_json::json!({ "refused": why }),
                    Err(_) => serde_json::json!({"refused": "the daemon stopped before the job ran"}),
                }
            }
        }
        Ok(v) if v["op"] == "reload" => {
            let (tx, rx) = mpsc::channel();
            RELOAD_WAITERS.lock().unwrap_or_else(|p| p.into_inner()).push(tx);
            crate::daemon::ask_reload();
            match rx.recv() {
                Ok(Ok(done)) => serde_json::json!({ "reloaded": done }),
                Ok(Err(why)) => serde_json::json!({ "refused": why }),
                Err(_) => serde_json::json!({"refused": "the daemon stopped before it re-read the policy"}),
            }
        }
        _ => serde_json::json!({ "refused": UNKNOWN_REQUEST }),
    };
    let mut w = conn;
    let _ = writeln!(w, "{answer}");
}

/// Asks the running daemon to re-read its policy and waits for the outcome: `Ok(None)`
/// when no daemon listens, else what it said (`Err`: the reload was refused, the old
/// policy stays).
pub fn request_reload(env: &Env) -> Result<Option<std::result::Result<String, String>>> {
    let Some(v) = ask(env, &serde_json::json!({"op": "reload"}))? else { return Ok(None) };
    if let Some(why) = v["refused"].as_str() {
        return Ok(Some(Err(why.to_string())));
    }
    v["reloaded"]
        .as_str()
        .map(|m| Some(Ok(m.to_string())))
        .ok_or_else(|| Error::Source(format!("the daemon answered something unreadable: {v}")))
}

/// Sends one request line and reads the answer; `Ok(None)` when no daemon listens.
fn ask(env: &Env, req: &serde_json::Value) -> Result<Option<serde_json::Value>> {
    let path = socket_path(env);
    let mut conn = match UnixStream::connect(&path) {
        Ok(c) => c,
        Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused) => {
            return Ok(None)
        }
        Err(e) => return Err(Error::io(format!("connecting to the daemon at {}", path.display()), e)),
    };
    writeln!(conn, "{req}").map_err(|e| Error::io("asking the daemon", e))?;
    let mut line = String::new();
    BufReader::new(conn).read_line(&mut line).map_err(|e| Error::io("reading the daemon's answer", e))?;
    serde_json::from_str(&line)
        .map(Some)
        .map_err(|_| Error::Source(format!("the daemon answered something unreadable: {:?}", line.trim())))
}

/// Asks the running daemon to run a manual backup of `source`; `Ok(None)` when no daemon
/// listens (the caller then runs the job itself, under the same lock and catalog).
pub fn request_run(
    env: &Env,
    source: &str,
    label: Option<&str>,
    reason: Option<&str>,
    wait: bool,
) -> Result<Option<std::result::Result<JobReport, String>>> {
    let req = serde_json::json!({"op": "run", "source": source, "label": label, "reason": reason, "wait": wait});
    let Some(v) = ask(env, &req)? else { return Ok(None) };
    if let Some(why) = v["refused"].as_str() {
        return Ok(Some(Err(why.to_string())));
    }
    report_of(&v)
        .map(|j| Some(Ok(j)))
        .ok_or_else(|| Error::Source(format!("the daemon answered something unreadable: {v}")))
}

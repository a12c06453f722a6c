//! One SSH connection running the SFTP subsystem: starting `ssh`, the version handshake,
//! and requests with their replies routed by id (many in flight at once). The store
//! (`lib.rs`) decides what to ask; this module only asks and answers.

use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use cairn_store::{Error, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use crate::wire::{self, Attrs, Msg, Reader};
use crate::SftpUrl;

/// Where replies go, by request id; `None` once the connection is gone.
type Pending = Mutex<Option<HashMap<u32, oneshot::Sender<Msg>>>>;

/// One SSH connection running the SFTP subsystem.
#[derive(Debug)]
pub(crate) struct Conn {
    tx: mpsc::UnboundedSender<Vec<u8>>,
    pending: Arc<Pending>,
    next_id: AtomicU32,
    /// Largest data payload of one read and one write request.
    pub(crate) max_read: u32,
    pub(crate) max_write: u32,
    pub(crate) hardlink: bool,
    pub(crate) posix_rename: bool,
    pub(crate) fsync: bool,
    /// The child is killed when the connection is dropped.
    _child: tokio::process::Child,
}

pub(crate) fn lost(path: &str, what: &str) -> Error {
    Error::Transient { path: path.to_string(), message: format!("SFTP connection lost ({what})") }
}

/// A status reply as the store's error for `path`.
pub(crate) fn status_error(path: &str, code: u32, message: &str) -> Error {
    match code {
        wire::FX_NO_SUCH_FILE => Error::NotFound { path: path.to_string() },
        wire::FX_PERMISSION_DENIED => Error::Denied { path: path.to_string(), message: message.to_string() },
        wire::FX_NO_CONNECTION | wire::FX_CONNECTION_LOST => lost(path, message),
        _ => Error::Other {
            path: path.to_string(),
            message: if message.is_empty() { format!("SFTP error {code}") } else { format!("SFTP: {message}") },
        },
    }
}

pub(crate) fn bad_reply(path: &str, what: &str) -> Error {
    Error::Other { path: path.to_string(), message: format!("SFTP server sent an unexpected reply ({what})") }
}

impl Conn {
    /// Starts the command, speaks INIT/VERSION and learns the server's extensions.
    pub(crate) async fn connect(url: &SftpUrl) -> Result<Conn> {
        let argv = url.command();
        let place = format!("sftp://{}", url.host);
        let mut child = tokio::process::Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| Error::Other { path: place.clone(), message: format!("cannot run '{}': {e}", argv[0]) })?;
        let (Some(mut stdin), Some(mut stdout), Some(mut stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(Error::Other { path: place, message: "ssh pipes unavailable".into() });
        };
        // ssh's diagnostics (host key, authentication) are kept for the error message;
        // the last lines are what explains a failed connection.
        let errlog = Arc::new(Mutex::new(String::new()));
        let log = errlog.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                if let Ok(mut l) = log.lock() {
                    l.push_str(&String::from_utf8_lossy(&buf[..n]));
                    if l.len() > 8192 {
                        let cut = l.len() - 4096;
                        let cut = (cut..l.len()).find(|&i| l.is_char_boundary(i)).unwrap_or(l.len());
                        l.drain(..cut);
                    }
                }
            }
        });
        let ssh_failed = |what: &str| {
            let log = errlog.lock().map(|l| l.clone()).unwrap_or_default();
            let last = log.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_string();
            let why = if last.is_empty() { what.to_string() } else { last };
            let message = format!("cannot open an SFTP session with '{}': {why}", argv.join(" "));
            // A server restarting or a network blip may pass: the retry decorator tries
            // again. Authentication, host keys and names do not.
            const PASSING: [&str; 6] = [
                "Connection refused",
                "Connection timed out",
                "Connection reset",
                "Connection closed",
                "No route to host",
                "Network is unreachable",
            ];
            if PASSING.iter().any(|p| why.contains(p)) {
                Error::Transient { path: place.clone(), message }
            } else {
                Error::Other { path: place.clone(), message }
            }
        };
        let mut init = Vec::new();
        wire::put_u32(&mut init, 3);
        let handshake = async {
            stdin.write_all(&wire::packet(wire::FXP_INIT, &init)).await?;
            stdin.flush().await?;
            wire::read_packet(&mut stdout).await
        };
        let reply = match tokio::time::timeout(std::time::Duration::from_secs(120), handshake).await {
            Ok(Ok(p)) => p,
            Ok(Err(_)) => {
                // Let the stderr reader catch ssh's last words.
                let _ = tokio::time::timeout(std::time::Duration::from_millis(500), child.wait()).await;
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                return Err(ssh_failed("the connection closed"));
            }
            Err(_) => return Err(ssh_failed("no answer within 120 s")),
        };
        if reply.first() != Some(&wire::FXP_VERSION) {
            return Err(ssh_failed("the server did not answer as an SFTP server"));
        }
        let mut r = Reader::new(&reply[1..]);
        let version = r.u32().ok_or_else(|| ssh_failed("short version reply"))?;
        if version < 3 {
            return Err(ssh_failed(&format!("SFTP version {version} (3 is needed)")));
        }
        let mut exts = HashMap::new();
        while let (Some(name), Some(data)) = (r.string(), r.string()) {
            exts.insert(String::from_utf8_lossy(name).into_owned(), String::from_utf8_lossy(data).into_owned());
        }
        let pending: Arc<Pending> = Arc::new(Mutex::new(Some(HashMap::new())));
        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let pend_w = pending.clone();
        tokio::spawn(async move {
            while let Some(p) = rx.recv().await {
                if stdin.write_all(&p).await.is_err() {
                    break;
                }
                // Batch what is queued before flushing (pipelined writes).
                if rx.is_empty() && stdin.flush().await.is_err() {
                    break;
                }
            }
            // Nothing more reaches the server: the connection is dead for new requests
            // and for those waiting.
            if let Ok(mut m) = pend_w.lock() {
                *m = None;
            }
        });
        let pend = pending.clone();
        tokio::spawn(async move {
            while let Ok(p) = wire::read_packet(&mut stdout).await {
                let Some(msg) = Msg::parse(p) else { break };
                let sender = pend.lock().ok().and_then(|mut m| m.as_mut().and_then(|m| m.remove(&msg.id)));
                if let Some(s) = sender {
                    let _ = s.send(msg);
                }
            }
            // Gone: every request in flight fails (its sender is dropped) and new ones
            // are refused.
            if let Ok(mut m) = pend.lock() {
                *m = None;
            }
        });
        let mut conn = Conn {
            tx,
            pending,
            next_id: AtomicU32::new(1),
            max_read: 32 * 1024,
            max_write: 32 * 1024,
            hardlink: exts.contains_key("hardlink@openssh.com"),
            posix_rename: exts.contains_key("posix-rename@openssh.com"),
            fsync: exts.contains_key("fsync@openssh.com"),
            _child: child,
        };
        if exts.contains_key("limits@openssh.com") {
            let m = conn.call("", wire::FXP_EXTENDED, |b| wire::put_str(b, b"limits@openssh.com")).await?;
            if m.typ == wire::FXP_EXTENDED_REPLY {
                let mut r = Reader::new(&m.body);
                if let (Some(packet), Some(read), Some(write)) = (r.u64(), r.u64(), r.u64()) {
                    // 0 means "no limit"; at most 255 KiB, what OpenSSH accepts in one
                    // message, leaving room in a packet for the request's own fields.
                    let most = match packet {
                        0 => 255 * 1024,
                        p => p.saturating_sub(1024).clamp(4096, 255 * 1024),
                    };
                    let cap = |v: u64| if v == 0 { most as u32 } else { v.clamp(4096, most) as u32 };
                    conn.max_read = cap(read);
                    conn.max_write = cap(write);
                }
            }
        }
        Ok(conn)
    }

    pub(crate) fn alive(&self) -> bool {
        self.pending.lock().map(|m| m.is_some()).unwrap_or(false)
    }

    /// Sends a request now; the reply arrives on the receiver.
    pub(crate) fn send(&self, path: &str, typ: u8, body: impl FnOnce(&mut Vec<u8>)) -> Result<oneshot::Receiver<Msg>> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut payload = Vec::with_capacity(64);
        wire::put_u32(&mut payload, id);
        body(&mut payload);
        let (tx, rx) = oneshot::channel();
        {
            let mut m = self.pending.lock().map_err(|_| lost(path, "poisoned"))?;
            let Some(m) = m.as_mut() else { return Err(lost(path, "closed")) };
            m.insert(id, tx);
        }
        if self.tx.send(wire::packet(typ, &payload)).is_err() {
            if let Ok(mut m) = self.pending.lock() {
                if let Some(m) = m.as_mut() {
                    m.remove(&id);
                }
            }
            return Err(lost(path, "closed"));
        }
        Ok(rx)
    }

    pub(crate) async fn call(&self, path: &str, typ: u8, body: impl FnOnce(&mut Vec<u8>)) -> Result<Msg> {
        self.send(path, typ, body)?.await.map_err(|_| lost(path, "no reply"))
    }

    /// A request answered by a status: OK or the error.
    pub(crate) async fn call_status(&self, path: &str, typ: u8, body: impl FnOnce(&mut Vec<u8>)) -> Result<()> {
        let m = self.call(path, typ, body).await?;
        m.ok(path)
    }

    pub(crate) async fn open(&self, path: &str, remote: &str, pflags: u32) -> Result<Vec<u8>> {
        let m = self
            .call(path, wire::FXP_OPEN, |b| {
                wire::put_str(b, remote.as_bytes());
                wire::put_u32(b, pflags);
                wire::put_u32(b, 0); // no attributes: the server's umask applies
            })
            .await?;
        m.handle(path)
    }

    pub(crate) async fn close(&self, path: &str, handle: &[u8]) -> Result<()> {
        self.call_status(path, wire::FXP_CLOSE, |b| wire::put_str(b, handle)).await
    }

    pub(crate) async fn stat(&self, path: &str, remote: &str) -> Result<Attrs> {
        let m = self.call(path, wire::FXP_STAT, |b| wire::put_str(b, remote.as_bytes())).await?;
        m.attrs(path)
    }

    pub(crate) async fn extended(&self, path: &str, name: &str, args: &[&[u8]]) -> Result<()> {
        self.call_status(path, wire::FXP_EXTENDED, |b| {
            wire::put_str(b, name.as_bytes());
            for a in args {
                wire::put_str(b, a);
            }
        })
        .await
    }

    /// Writes `data` at offset 0 of the open `handle`, requests pipelined.
    pub(crate) async fn write_all(&self, path: &str, handle: &[u8], data: &[u8]) -> Result<()> {
        const WINDOW: usize = 64;
        let mut inflight = VecDeque::new();
        for (i, chunk) in data.chunks(self.max_write as usize).enumerate() {
            let offset = i as u64 * self.max_write as u64;
            inflight.push_back(self.send(path, wire::FXP_WRITE, |b| {
                wire::put_str(b, handle);
                wire::put_u64(b, offset);
                wire::put_str(b, chunk);
            })?);
            if inflight.len() >= WINDOW {
                if let Some(rx) = inflight.pop_front() {
                    rx.await.map_err(|_| lost(path, "no reply"))?.ok(path)?;
                }
            }
        }
        for rx in inflight {
            rx.await.map_err(|_| lost(path, "no reply"))?.ok(path)?;
        }
        Ok(())
    }

    /// Reads `range` of the open `handle`, requests pipelined; a short read (allowed by
    /// the protocol) is completed by further reads.
    pub(crate) async fn read_range(&self, path: &str, handle: &[u8], range: Range<u64>) -> Result<Vec<u8>> {
        const WINDOW: usize = 64;
        let len = usize::try_from(range.end - range.start).map_err(|_| bad_reply(path, "range too large"))?;
        let mut out = vec![0u8; len];
        let step = self.max_read as u64;
        let mut inflight = VecDeque::new();
        let mut next = range.start;
        let fill = |out: &mut [u8], at: u64, m: Msg| -> Result<usize> {
            let data = m.data(path)?;
            let start = (at - range.start) as usize;
            let n = data.len().min(out.len() - start);
            out[start..start + n].copy_from_slice(&data[..n]);
            Ok(n)
        };
        while next < range.end || !inflight.is_empty() {
            while next < range.end && inflight.len() < WINDOW {
                let n = step.min(range.end - next);
                let at = next;
                let rx = self.send(path, wire::FXP_READ, |b| {
                    wire::put_str(b, handle);
                    wire::put_u64(b, at);
                    wire::put_u32(b, n as u32);
                })?;
                inflight.push_back((at, n, rx));
                next += n;
            }
            let Some((at, n, rx)) = inflight.pop_front() else { break };
            let mut got = fill(&mut out, at, rx.await.map_err(|_| lost(path, "no reply"))?)? as u64;
            while got < n {
                let at2 = at + got;
                let m = self
                    .call(path, wire::FXP_READ, |b| {
                        wire::put_str(b, handle);
                        wire::put_u64(b, at2);
                        wire::put_u32(b, (n - got) as u32);
                    })
                    .await?;
                let k = fill(&mut out, at2, m)?;
                if k == 0 {
                    return Err(bad_reply(path, "empty read"));
                }
                got += k as u64;
            }
        }
        Ok(out)
    }

    /// Names and attributes of a directory's entries; `None` if it does not exist.
    pub(crate) async fn read_dir(&self, path: &str, remote: &str) -> Result<Option<Vec<(String, Attrs)>>> {
        let m = self.call(path, wire::FXP_OPENDIR, |b| wire::put_str(b, remote.as_bytes())).await?;
        let handle = match m.handle(path) {
            Ok(h) => h,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        let res = loop {
            let m = match self.call(path, wire::FXP_READDIR, |b| wire::put_str(b, &handle)).await {
                Ok(m) => m,
                Err(e) => break Err(e),
            };
            if m.typ == wire::FXP_STATUS {
                match m.status() {
                    Some((wire::FX_EOF, _)) => break Ok(()),
                    Some((code, msg)) => break Err(status_error(path, code, &msg)),
                    None => break Err(bad_reply(path, "short status")),
                }
            }
            match m.names() {
                Some(names) => out.extend(names),
                None => break Err(bad_reply(path, "readdir")),
            }
        };
        let _ = self.close(path, &handle).await;
        res.map(|()| Some(out))
    }
}

//! Writer leases: how prune knows which processes may still reference what it is about to
//! delete, without any lock that a killed process could leave behind.
//!
//! A writer (backup, rewrite, prune) takes a lease before it reads the index: it writes
//! `writers/<random id>` with an expiry `ttl` seconds ahead and renews it every `ttl/5`
//! from a background thread. Rules that make the prune protocol safe (argued in
//! `docs/format.md`):
//!
//! - A lease is renewed only while it is still valid by the writer's own wall clock. Once it
//!   has lapsed (the process was suspended or the store unreachable for a whole `ttl`), it is
//!   lost for good: [`Repository::save_index`] and [`Repository::save_snapshot`] refuse to
//!   write, so a writer that prune may have stopped waiting for never publishes a reference.
//! - Those writes also need `ttl/5` of validity left, so they land before the expiry that
//!   others see.
//! - Others treat a lease as live until `expires + ttl/5` (allowed clock skew).
//!
//! The wall clock, not `Instant`, decides: `CLOCK_MONOTONIC` stops during system suspend,
//! which is exactly when a lease must be seen to lapse.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use cairn_crypto::MasterKey;
use cairn_format::lease::WriterLease;
use cairn_format::{Id, WriterId};
use cairn_store::{PutMode, Store};

use crate::repository::{open_sealed, seal, KIND_LEASE};
use crate::{layout, Error, Repository, Result};

/// Lease length when `CAIRN_WRITER_LEASE` (seconds) does not say otherwise.
pub const DEFAULT_LEASE_SECS: i64 = 300;

/// Lease length in seconds: `CAIRN_WRITER_LEASE`, at least 5, else the default.
pub fn lease_secs() -> i64 {
    std::env::var("CAIRN_WRITER_LEASE")
        .ok()
        .and_then(|v| v.parse::<i64>().ok())
        .map(|v| v.max(5))
        .unwrap_or(DEFAULT_LEASE_SECS)
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// What the repository remembers of the lease it writes under.
#[derive(Debug)]
pub(crate) struct LeaseState {
    pub id: WriterId,
    ttl: i64,
    expires: AtomicI64,
    lost: AtomicBool,
}

impl LeaseState {
    /// Whether a write started now lands while the lease is still valid for everyone.
    pub fn usable(&self) -> bool {
        !self.lost.load(Ordering::SeqCst) && unix_now() + self.ttl / 5 < self.expires.load(Ordering::SeqCst)
    }
}

/// A held lease. Dropping it stops renewal and deletes the lease object.
pub struct Lease<'r> {
    repo: &'r Repository,
    state: Arc<LeaseState>,
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Lease<'_> {
    pub fn id(&self) -> WriterId {
        self.state.id
    }
}

struct Renewer {
    store: Arc<dyn Store>,
    rt: tokio::runtime::Handle,
    master: MasterKey,
    doc: WriterLease,
    state: Arc<LeaseState>,
}

impl Renewer {
    fn write(&self, expires: i64) -> Result<()> {
        let mut doc = self.doc.clone();
        doc.expires = expires;
        let sealed = seal(&self.master, KIND_LEASE, &doc.encode(), 1)?;
        self.rt.block_on(self.store.put(&layout::writer(&self.state.id), sealed, PutMode::Overwrite))?;
        Ok(())
    }

    fn run(self, stop: Arc<(Mutex<bool>, Condvar)>) {
        let period = std::time::Duration::from_secs((self.state.ttl / 5).max(1) as u64);
        let (lock, cv) = &*stop;
        let mut next = std::time::Instant::now() + period;
        let mut stopped = lock.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            // The flag is checked before every wait: a stop requested before this thread
            // first waited must not cost a whole period.
            if *stopped {
                return;
            }
            let left = next.saturating_duration_since(std::time::Instant::now());
            if !left.is_zero() {
                stopped = cv.wait_timeout(stopped, left).unwrap_or_else(|p| p.into_inner()).0;
                continue;
            }
            next += period;
            let now = unix_now();
            if now >= self.state.expires.load(Ordering::SeqCst) {
                // Lapsed: others may already have acted on its absence. Never revive it.
                self.state.lost.store(true, Ordering::SeqCst);
                return;
            }
            let expires = now + self.state.ttl;
            // Renew without holding the lock, so a stop is not delayed by the store. A failed
            // renewal is retried next period; the old expiry holds until then.
            drop(stopped);
            if self.write(expires).is_ok() {
                self.state.expires.store(expires, Ordering::SeqCst);
            }
            stopped = lock.lock().unwrap_or_else(|p| p.into_inner());
        }
    }
}

impl Repository {
    /// Takes a writer lease (see the module docs). Index files and snapshots can be written
    /// only while it is held and valid.
    pub fn lease(&self, command: &str, hostname: &str) -> Result<Lease<'_>> {
        let ttl = lease_secs();
        let now = unix_now();
        let state = Arc::new(LeaseState {
            id: WriterId(Id(cairn_crypto::random_array()?)),
            ttl,
            expires: AtomicI64::new(now + ttl),
            lost: AtomicBool::new(false),
        });
        let renewer = Renewer {
            store: self.store().clone(),
            rt: self.runtime().clone(),
            master: self.master().clone(),
            doc: WriterLease {
                version: cairn_format::magic::LEASE_VERSION,
                command: command.into(),
                hostname: hostname.into(),
                pid: std::process::id(),
                started: now,
                expires: now + ttl,
                ttl,
            },
            state: state.clone(),
        };
        renewer.write(now + ttl)?;
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let s2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("cairn-lease".into())
            .spawn(move || renewer.run(s2))
            .map_err(|e| Error::Internal(format!("starting the lease thread: {e}")))?;
        self.set_lease(Some(state.clone()));
        Ok(Lease { repo: self, state, stop, thread: Some(thread) })
    }

    /// Every lease object: its id, and its document unless it could not be read.
    pub fn list_leases(&self) -> Result<Vec<(WriterId, Option<WriterLease>)>> {
        let mut out = Vec::new();
        for m in self.block_on(self.store().list(layout::WRITERS))? {
            let Some(id) = layout::id_of(&m.path) else { continue };
            let doc = match self.block_on(self.store().get(&m.path, None)) {
                Ok(b) => {
                    open_sealed(self.master(), KIND_LEASE, &b, 1 << 20).ok().and_then(|p| WriterLease::decode(&p).ok())
                }
                Err(e) if e.is_not_found() => continue, // ended meanwhile
                Err(e) => return Err(e.into()),
            };
            out.push((WriterId(id), doc));
        }
        Ok(out)
    }

    /// Leases that others must still honour at `now` (unreadable ones are not honoured: a
    /// damaged object must not block deletion forever; check reports it).
    pub fn live_leases(&self, now: i64) -> Result<Vec<(WriterId, WriterLease)>> {
        Ok(self
            .list_leases()?
            .into_iter()
            .filter_map(|(id, d)| d.map(|d| (id, d)))
            .filter(|(_, d)| d.is_live(now))
            .collect())
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        {
            let (lock, cv) = &*self.stop;
            *lock.lock().unwrap_or_else(|p| p.into_inner()) = true;
            cv.notify_all();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.repo.set_lease(None);
        let _ = self.repo.block_on(self.repo.store().delete(&layout::writer(&self.state.id)));
    }
}

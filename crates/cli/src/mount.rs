//! `cairn mount MOUNTPOINT`: the repository's snapshots as a read-only filesystem until it
//! is unmounted (Ctrl-C, SIGTERM, `fusermount3 -u`). The filesystem is `cairn_mount`'s.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};

use crate::args::MountArgs;
use crate::context::Context;

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

pub fn run(ctx: &Context, a: &MountArgs) -> Result<()> {
    match std::fs::metadata(&a.mountpoint) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => bail!("{}: not a directory", a.mountpoint.display()),
        Err(e) => bail!("{}: {e} (the mount point must be an existing directory)", a.mountpoint.display()),
    }
    let repo = Arc::new(ctx.open()?);
    let snapshot = a.snapshot.as_deref().map(|s| repo.resolve_snapshot(s)).transpose()?.map(|(id, _)| id);
    // SAFETY: installing handlers that only store to an atomic.
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
    }
    let stop = Arc::new(AtomicBool::new(false));
    // The handler cannot reach an Arc: a thread carries its word over.
    {
        let stop = stop.clone();
        std::thread::Builder::new().name("cairn-signals".into()).spawn(move || loop {
            if STOP.load(Ordering::Relaxed) {
                stop.store(true, Ordering::SeqCst);
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        })?;
    }
    let opts = cairn_mount::MountOptions {
        snapshot,
        allow_other: a.allow_other,
        refresh: Duration::from_secs(a.refresh.max(1)),
        threads: 4,
    };
    let quiet = ctx.g.quiet;
    let at = a.mountpoint.display().to_string();
    crate::audit::recorded(ctx, &repo, "mount", |note| {
        note.target.paths = vec![at.clone()];
        note.target.snapshots = snapshot.iter().map(|s| s.to_hex()).collect();
        cairn_mount::mount(repo.clone(), &a.mountpoint, &opts, stop, || {
            if !quiet {
                eprintln!("cairn: mounted at {at}; Ctrl-C or 'fusermount3 -u {at}' unmounts");
            }
        })?;
        Ok(())
    })
}

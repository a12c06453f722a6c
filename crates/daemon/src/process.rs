//! Running a shell command with a time limit: hooks and drill checks. The command gets its
//! own process group, so a timeout (or a stop) kills what it started too.

use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How a bounded command ended.
#[derive(Debug)]
pub enum Ended {
    Exited(ExitStatus),
    /// Killed at its time limit.
    TimedOut,
    /// Killed because `stop` was set.
    Stopped,
}

/// Makes `cmd` lead its own process group (a timeout or a stop kills what it started
/// too) and die with the thread that starts it: a daemon killed with SIGKILL leaves no
/// command shell running on (a backup's dump, a hook), whose output nothing would read.
/// The calling thread must wait for the command, as every caller here does. Limits: only
/// the shell gets the signal; what it started runs on until it writes to its closed
/// output pipe (a command writing only to files runs to its end), and exec'ing a setuid
/// program clears the signal.
pub fn own_group(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    cmd.process_group(0);
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent died before the signal was asked for: nothing would send it.
            // (A raw error: nothing may allocate between fork and exec.)
            if libc::getppid() != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        })
    };
}

/// Spawns `cmd` in a new process group and waits for it up to `limit`, or until `stop`.
pub fn run(cmd: &mut Command, limit: Duration, stop: &AtomicBool) -> std::io::Result<Ended> {
    own_group(cmd);
    let child = cmd.spawn()?;
    wait(child, limit, stop)
}

/// Waits for a child that leads its own process group (see [`run`]).
pub fn wait(mut child: std::process::Child, limit: Duration, stop: &AtomicBool) -> std::io::Result<Ended> {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait()? {
            return Ok(Ended::Exited(s));
        }
        let why = if start.elapsed() >= limit {
            Some(Ended::TimedOut)
        } else if stop.load(Ordering::Relaxed) {
            Some(Ended::Stopped)
        } else {
            None
        };
        if let Some(why) = why {
            // SAFETY: kill on the process group the child leads.
            unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
            let _ = child.kill();
            let _ = child.wait();
            return Ok(why);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `cmd` as [`run`] does with its standard output and error in the file `out`, and
/// returns how it ended with the last `max` bytes of that output (the file is removed).
pub fn run_captured(
    cmd: &mut Command,
    out: &std::path::Path,
    max: usize,
    limit: Duration,
    stop: &AtomicBool,
) -> std::io::Result<(Ended, String)> {
    let f = std::fs::File::create(out)?;
    cmd.stdout(f.try_clone()?).stderr(f);
    let ended = run(cmd, limit, stop);
    let text = tail(out, max);
    let _ = std::fs::remove_file(out);
    Ok((ended?, text))
}

/// The last `max` bytes of a command's output file, as text.
pub fn tail(path: &std::path::Path, max: usize) -> String {
    let data = std::fs::read(path).unwrap_or_default();
    let from = data.len().saturating_sub(max);
    let mut s = String::from_utf8_lossy(&data[from..]).into_owned();
    if from > 0 {
        s.insert_str(0, "...");
    }
    s.trim().to_string()
}

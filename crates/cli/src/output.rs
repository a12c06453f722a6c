//! Formatting for people: sizes, times, one-line errors, progress.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub fn one_line(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for c in e.chain() {
        let s = c.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    // Messages quote names from snapshots: no control character reaches the terminal
    // (backslashes stay as they are: messages quote names with `{:?}` escapes).
    escape(&parts.join(": ").replace('\n', " "), false).into_owned()
}

pub fn bytes(n: u64) -> String {
    const U: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.2} {}", U[i])
    }
}

/// An RFC 3339 time shown in the local time zone.
pub fn local_time(rfc3339: &str) -> String {
    match rfc3339.parse::<jiff::Timestamp>() {
        Ok(t) => t.to_zoned_datetime(jiff::tz::TimeZone::system()).strftime("%Y-%m-%d %H:%M:%S").to_string(),
        Err(_) => sanitize(rfc3339).into_owned(),
    }
}

pub fn ns_time(ns: i64) -> String {
    match jiff::Timestamp::from_nanosecond(ns as i128) {
        Ok(t) => t.to_zoned_datetime(jiff::tz::TimeZone::system()).strftime("%Y-%m-%d %H:%M:%S").to_string(),
        Err(_) => ns.to_string(),
    }
}

pub fn stderr_is_tty() -> bool {
    std::io::stderr().is_terminal()
}

/// Prints a status line to stderr every 250 ms until `stop` is set.
pub fn progress_loop(stop: &AtomicBool, line: &dyn Fn(Duration) -> String) {
    let start = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(250));
        let l = line(start.elapsed());
        let mut e = std::io::stderr().lock();
        let _ = write!(e, "\r\x1b[2K{l}");
        let _ = e.flush();
    }
    let mut e = std::io::stderr().lock();
    let _ = write!(e, "\r\x1b[2K");
    let _ = e.flush();
}

/// Sets the flag when dropped, so a progress thread stops even if the work panics.
pub struct StopOnDrop<'a>(pub &'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

pub fn duration(d: Duration) -> String {
    let s = d.as_secs();
    format!("{}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
}

pub fn mode_string(kind: cairn_format::tree::NodeKind, mode: u32) -> String {
    use cairn_format::tree::NodeKind::*;
    let t = match kind {
        Dir => 'd',
        Symlink => 'l',
        Fifo => 'p',
        Chardev => 'c',
        Blockdev => 'b',
        Socket => 's',
        File => '-',
    };
    let mut s = String::from(t);
    for (i, c) in ['r', 'w', 'x', 'r', 'w', 'x', 'r', 'w', 'x'].iter().enumerate() {
        s.push(if mode & (1 << (8 - i)) != 0 { *c } else { '-' });
    }
    s
}

/// Text from a snapshot or repository (names, link targets, hosts, tags, owners) as one
/// safe line for a terminal: control characters (C0, DEL, C1), which could forge lines
/// or send escape sequences, become `\xNN` / `\u{NNNN}` escapes, and so does a backslash,
/// so that an escape is never ambiguous. `--json` output keeps exact values.
pub fn sanitize(s: &str) -> std::borrow::Cow<'_, str> {
    escape(s, true)
}

fn escape(s: &str, backslash: bool) -> std::borrow::Cow<'_, str> {
    let bad = |c: char| c.is_control() || (backslash && c == '\\');
    if !s.chars().any(bad) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\\' if backslash => out.push_str("\\\\"),
            c if (c as u32) < 0x100 && c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if c.is_control() => out.push_str(&format!("\\u{{{:04x}}}", c as u32)),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::sanitize;

    #[test]
    fn sanitize_escapes_what_could_forge_output() {
        assert_eq!(sanitize("plain name.txt"), "plain name.txt");
        assert_eq!(sanitize("a\nb"), "a\\x0ab");
        assert_eq!(sanitize("\u{1b}[2Jcleared"), "\\x1b[2Jcleared");
        assert_eq!(sanitize("c1\u{9b}31m"), "c1\\x9b31m");
        assert_eq!(sanitize("back\\slash"), "back\\\\slash");
        assert_eq!(sanitize("tab\there"), "tab\\x09here");
        assert_eq!(sanitize("ünïcödé ok"), "ünïcödé ok");
    }
}

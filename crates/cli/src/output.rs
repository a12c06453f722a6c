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
        Ok(t) => t.to_zoned_datetime(cairn_fs::local_time_zone()).strftime("%Y-%m-%d %H:%M:%S").to_string(),
        Err(_) => sanitize(rfc3339).into_owned(),
    }
}

pub fn ns_time(ns: i64) -> String {
    match jiff::Timestamp::from_nanosecond(ns as i128) {
        Ok(t) => t.to_zoned_datetime(cairn_fs::local_time_zone()).strftime("%Y-%m-%d %H:%M:%S").to_string(),
        Err(_) => ns.to_string(),
    }
}

pub fn stderr_is_tty() -> bool {
    std::io::stderr().is_terminal()
}

/// Where an operation is, read by the progress display.
#[derive(Debug, Default, Clone)]
pub struct Reading {
    /// What `files_done` counts: `files`, `packs`, `snapshots`.
    pub unit: &'static str,
    pub files_done: Option<u64>,
    pub files_total: Option<u64>,
    pub bytes_done: u64,
    pub bytes_total: u64,
    /// Whether `bytes_total` is final (a backup's walk may still be finding files).
    pub total_known: bool,
    /// A file that has been read for a while (shown so a slow one is not a mystery).
    pub slow_file: Option<String>,
}

impl Reading {
    /// What a [`cairn_repo::Meter`] says: its items (packs, snapshots) as the counted units.
    pub fn of_meter(m: &cairn_repo::Meter, unit: &'static str) -> Reading {
        Reading {
            unit,
            files_done: Some(m.items_done.load(Ordering::Relaxed)),
            files_total: Some(m.items_total.load(Ordering::Relaxed)),
            bytes_done: m.bytes_done.load(Ordering::Relaxed),
            bytes_total: m.bytes_total.load(Ordering::Relaxed),
            total_known: m.planned.load(Ordering::Relaxed),
            slow_file: None,
        }
    }
}

/// How progress is shown: a bar on a terminal, JSON lines on stderr for tools
/// (`--json-progress`), or nothing (not a terminal, `--quiet`, `--json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Show {
    Bar,
    Json,
    Nothing,
}

pub fn show(g: &crate::args::Global) -> Show {
    if g.json_progress {
        Show::Json
    } else if stderr_is_tty() && !g.quiet && !g.json {
        Show::Bar
    } else {
        Show::Nothing
    }
}

/// One progress line: elapsed, a bar and percentage once the total is known, files and
/// bytes done of total, rate, ETA.
pub fn bar_line(r: &Reading, el: Duration, width: usize) -> String {
    let secs = el.as_secs_f64().max(0.001);
    let rate = r.bytes_done as f64 / secs;
    let mut l = format!("[{}]", duration(el));
    if r.total_known && r.bytes_total > 0 {
        let frac = (r.bytes_done as f64 / r.bytes_total as f64).clamp(0.0, 1.0);
        let full = (frac * width as f64).round() as usize;
        l.push_str(&format!(" {}{} {:>3.0}%", "#".repeat(full), "-".repeat(width - full), frac * 100.0));
    }
    if let Some(f) = r.files_done {
        match r.files_total {
            Some(t) if r.total_known => l.push_str(&format!(" {f}/{t} {}", r.unit)),
            _ => l.push_str(&format!(" {f} {}", r.unit)),
        }
    }
    l.push_str(&format!(", {} / {}, {}/s", bytes(r.bytes_done), bytes(r.bytes_total), bytes(rate as u64)));
    if let Some(eta) = eta(r, el) {
        l.push_str(&format!(" ETA {}", duration(eta)));
    }
    if let Some(f) = &r.slow_file {
        // The end of the path is what tells files apart; control characters escaped.
        let f = escape(f, false);
        let tail: String = f.chars().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect();
        let cut = if tail.len() < f.len() { "..." } else { "" };
        l.push_str(&format!(" reading {cut}{tail}"));
    }
    l
}

fn eta(r: &Reading, el: Duration) -> Option<Duration> {
    let rate = r.bytes_done as f64 / el.as_secs_f64().max(0.001);
    (r.total_known && rate > 0.0 && r.bytes_total > r.bytes_done)
        .then(|| Duration::from_secs_f64((r.bytes_total - r.bytes_done) as f64 / rate))
}

/// One progress record for `--json-progress`.
pub fn json_line(what: &str, r: &Reading, el: Duration) -> String {
    let rate = r.bytes_done as f64 / el.as_secs_f64().max(0.001);
    let mut v = serde_json::json!({"type": "progress", "operation": what, "elapsed_secs": el.as_secs_f64(),
        "bytes_done": r.bytes_done, "bytes_total": r.bytes_total, "total_known": r.total_known,
        "bytes_per_sec": rate as u64, "eta_secs": eta(r, el).map(|d| d.as_secs())});
    v[format!("{}_done", r.unit)] = serde_json::json!(r.files_done);
    v[format!("{}_total", r.unit)] = serde_json::json!(r.files_total.filter(|_| r.total_known));
    if let Some(f) = &r.slow_file {
        v["slow_file"] = serde_json::json!(f);
    }
    v.to_string()
}

/// Runs `f` while showing `read()`'s progress as `show` says: a bar redrawn every 250 ms,
/// or a JSON line a second (a bounded rate, however fast the work goes).
pub fn with_meter<T: Send>(show: Show, what: &str, read: &(dyn Fn() -> Reading + Sync), f: impl FnOnce() -> T) -> T {
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        match show {
            Show::Bar => {
                s.spawn(|| progress_loop(&stop, &|el| bar_line(&read(), el, 24)));
            }
            Show::Json => {
                s.spawn(|| {
                    let start = Instant::now();
                    let mut last = Instant::now();
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(50));
                        if last.elapsed() >= Duration::from_secs(1) {
                            last = Instant::now();
                            eprintln!("{}", json_line(what, &read(), start.elapsed()));
                        }
                    }
                    eprintln!("{}", json_line(what, &read(), start.elapsed()));
                });
            }
            Show::Nothing => {}
        }
        f()
    })
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
    // setuid, setgid and sticky take the place of their class's x, as ls(1) shows them:
    // lower case over an x, upper case where there is none (a bit that grants nothing).
    let mut s: Vec<char> = s.chars().collect();
    for (bit, at, c) in [(0o4000, 3, 's'), (0o2000, 6, 's'), (0o1000, 9, 't')] {
        if mode & bit != 0 {
            s[at] = if s[at] == 'x' { c } else { c.to_ascii_uppercase() };
        }
    }
    s.into_iter().collect()
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
    use super::{bar_line, mode_string, sanitize, Reading};
    use cairn_format::tree::NodeKind;

    #[test]
    fn a_slow_file_is_named_by_its_end_and_escaped() {
        let mut r = Reading {
            unit: "files",
            files_done: Some(3),
            files_total: Some(10),
            bytes_done: 1 << 20,
            bytes_total: 4 << 20,
            total_known: true,
            slow_file: None,
        };
        let el = std::time::Duration::from_secs(4);
        assert!(!bar_line(&r, el, 10).contains("reading"));
        r.slow_file = Some(format!("/srv/{}/very-large-database-dump\u{1b}.sql", "x".repeat(60)));
        let l = bar_line(&r, el, 10);
        assert!(l.contains("3/10 files") && l.contains("ETA"), "{l}");
        // The end of the path, its escape character made visible, never sent raw.
        assert!(l.ends_with(r"very-large-database-dump\x1b.sql"), "{l}");
        assert!(l.contains(" reading ...") && !l.contains("/srv/") && !l.contains('\u{1b}'), "{l}");
    }

    /// As ls(1): an operator checking a snapshot sees the setuid file it holds.
    #[test]
    fn modes_show_setuid_setgid_and_sticky() {
        assert_eq!(mode_string(NodeKind::File, 0o754), "-rwxr-xr--");
        assert_eq!(mode_string(NodeKind::File, 0o4754), "-rwsr-xr--");
        assert_eq!(mode_string(NodeKind::File, 0o2644), "-rw-r-Sr--");
        assert_eq!(mode_string(NodeKind::File, 0o6755), "-rwsr-sr-x");
        assert_eq!(mode_string(NodeKind::Dir, 0o1777), "drwxrwxrwt");
        assert_eq!(mode_string(NodeKind::Dir, 0o1770), "drwxrwx--T");
        assert_eq!(mode_string(NodeKind::File, 0o4600), "-rwS------");
    }

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

//! When a source's job is due: a pure function of its schedules, its history in the
//! catalog, when the daemon started, and `now`.
//!
//! Rules:
//! - The anchor is the start of the newest successful job (recorded at success, so a
//!   failed run does not count as done). The next window is the first scheduled time after
//!   it, plus the source's deterministic jitter for that window.
//! - A window in the past is one run, however many windows have passed since the anchor:
//!   catch-up runs once (trigger `catch_up` when the window passed before this daemon
//!   started, `schedule` when the daemon was merely busy), never N times.
//! - After failures the job is retried (trigger `retry`) with exponential backoff from the
//!   end of the last failure (`retry_delay` × 2^(failures-1), at most an hour), even when
//!   the schedule's windows come faster: a failing source is not hammered, and the one
//!   retry stands for the windows it spans.
//! - A source that never succeeded is anchored at the daemon's start: it runs at its first
//!   window, not the instant the daemon starts.

use cairn_policy::file::Timing;
use jiff::{SignedDuration, Timestamp};

use crate::catalog::Trigger;

/// A source's job history of one kind, as scheduling sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct History {
    pub last_success: Option<Timestamp>,
    /// Failed, interrupted or cancelled (a `before` hook refused) jobs since the last
    /// success: each backs the next attempt off.
    pub failures: u32,
    pub last_failure: Option<Timestamp>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Run now; `window` is the scheduled time it stands for.
    Due { window: Timestamp, trigger: Trigger },
    /// Nothing to do before this instant.
    Wait(Timestamp),
    /// No schedule: runs only when asked.
    Never,
}

/// The first window after `after`, jitter included.
pub fn next_window(timings: &[Timing], key: &str, after: Timestamp) -> Option<Timestamp> {
    timings
        .iter()
        .filter_map(|t| {
            let w = t.schedule.next_after(after)?;
            w.checked_add(cairn_policy::schedule::jitter(key, w, t.jitter)).ok()
        })
        .min()
}

/// The backoff before retry number `failures` (1-based).
pub fn backoff(retry_delay: SignedDuration, failures: u32) -> SignedDuration {
    let cap = SignedDuration::from_hours(1).max(retry_delay);
    let shift = failures.saturating_sub(1).min(20);
    retry_delay.checked_mul(1 << shift).unwrap_or(cap).min(cap)
}

pub fn decide(
    timings: &[Timing],
    key: &str,
    h: &History,
    daemon_start: Timestamp,
    now: Timestamp,
    retry_delay: SignedDuration,
) -> Decision {
    if timings.is_empty() {
        return Decision::Never;
    }
    let anchor = h.last_success.unwrap_or(daemon_start);
    // Failures are counted after the last success only, so any is a reason to retry.
    if let Some(failed) = h.last_failure.filter(|_| h.failures > 0) {
        // The backoff rules even when windows come faster: a source failing every
        // minute is not run every minute. The one retry stands for the windows it spans.
        let at = failed.checked_add(backoff(retry_delay, h.failures)).unwrap_or(failed);
        if at <= now {
            return Decision::Due { window: at, trigger: Trigger::Retry };
        }
        return Decision::Wait(at);
    }
    match next_window(timings, key, anchor) {
        None => Decision::Never,
        Some(w) if w <= now => {
            let trigger = if w < daemon_start { Trigger::CatchUp } else { Trigger::Schedule };
            Decision::Due { window: w, trigger }
        }
        Some(w) => Decision::Wait(w),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_policy::schedule::Schedule;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("time")
    }

    fn every(cron: &str) -> Vec<Timing> {
        vec![Timing { schedule: Schedule::parse(cron, Some("UTC")).expect("cron"), jitter: SignedDuration::ZERO }]
    }

    const RETRY: SignedDuration = SignedDuration::from_secs(30);

    #[test]
    fn three_missed_windows_are_one_catch_up_run() {
        let t = every("0 * * * *");
        let h = History { last_success: Some(ts("2026-01-01T10:00:05Z")), ..History::default() };
        let start = ts("2026-01-01T13:30:00Z");
        let d = decide(&t, "s", &h, start, start, RETRY);
        assert_eq!(d, Decision::Due { window: ts("2026-01-01T11:00:00Z"), trigger: Trigger::CatchUp });
        // It succeeds at 13:30: the next run is 14:00, not 12:00 or 13:00.
        let h = History { last_success: Some(start), ..History::default() };
        let d = decide(&t, "s", &h, start, ts("2026-01-01T13:31:00Z"), RETRY);
        assert_eq!(d, Decision::Wait(ts("2026-01-01T14:00:00Z")));
    }

    #[test]
    fn a_busy_daemon_runs_late_windows_once_as_scheduled() {
        let t = every("*/10 * * * *");
        let start = ts("2026-01-01T00:00:00Z");
        let h = History { last_success: Some(ts("2026-01-01T01:00:00Z")), ..History::default() };
        let d = decide(&t, "s", &h, start, ts("2026-01-01T01:35:00Z"), RETRY);
        assert_eq!(d, Decision::Due { window: ts("2026-01-01T01:10:00Z"), trigger: Trigger::Schedule });
    }

    #[test]
    fn failures_retry_with_backoff_or_at_the_next_window() {
        let t = every("0 * * * *");
        let start = ts("2026-01-01T00:00:00Z");
        let h = History {
            last_success: Some(ts("2026-01-01T09:00:00Z")),
            failures: 1,
            last_failure: Some(ts("2026-01-01T10:00:10Z")),
        };
        assert_eq!(
            decide(&t, "s", &h, start, ts("2026-01-01T10:00:20Z"), RETRY),
            Decision::Wait(ts("2026-01-01T10:00:40Z"))
        );
        assert_eq!(
            decide(&t, "s", &h, start, ts("2026-01-01T10:00:40Z"), RETRY),
            Decision::Due { window: ts("2026-01-01T10:00:40Z"), trigger: Trigger::Retry }
        );
        // The fourth failure waits 4 minutes; the eighth an hour (the cap), past a window.
        let h4 = History { failures: 4, ..h };
        assert_eq!(
            decide(&t, "s", &h4, start, ts("2026-01-01T10:01:00Z"), RETRY),
            Decision::Wait(ts("2026-01-01T10:04:10Z"))
        );
        let h8 = History { failures: 8, ..h };
        assert_eq!(
            decide(&t, "s", &h8, start, ts("2026-01-01T10:01:00Z"), RETRY),
            Decision::Wait(ts("2026-01-01T11:00:10Z"))
        );
        // An every-second schedule does not shorten the backoff.
        assert_eq!(
            decide(&every("* * * * * *"), "s", &h4, start, ts("2026-01-01T10:01:00Z"), RETRY),
            Decision::Wait(ts("2026-01-01T10:04:10Z"))
        );
        assert_eq!(backoff(RETRY, 30), SignedDuration::from_hours(1));
    }

    #[test]
    fn a_new_source_waits_for_its_first_window() {
        let t = every("0 2 * * *");
        let start = ts("2026-01-01T10:00:00Z");
        let d = decide(&t, "s", &History::default(), start, start, RETRY);
        assert_eq!(d, Decision::Wait(ts("2026-01-02T02:00:00Z")));
        assert_eq!(decide(&[], "s", &History::default(), start, start, RETRY), Decision::Never);
    }

    #[test]
    fn jitter_delays_within_its_window() {
        let mut t = every("0 * * * *");
        t[0].jitter = SignedDuration::from_mins(10);
        let w = next_window(&t, "s", ts("2026-01-01T10:00:00Z")).expect("window");
        assert!(w >= ts("2026-01-01T11:00:00Z") && w < ts("2026-01-01T11:10:00Z"), "{w}");
        assert_eq!(next_window(&t, "s", ts("2026-01-01T10:00:00Z")), Some(w), "deterministic");
    }
}

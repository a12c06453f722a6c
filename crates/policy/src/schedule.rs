//! Schedules: cron expressions in an IANA time zone -> the next run after an instant.
//! Pure: the instant comes in, the next one goes out; the daemon and its tests pass `now`.
//!
//! Syntax: five fields (`minute hour day-of-month month day-of-week`) or six with seconds
//! first, each `*`, `N`, `A-B`, `*/S`, `A-B/S`, `N/S` or a comma list of those; months
//! `1-12` or `JAN`..`DEC`, weekdays `0-7` (0 and 7 are Sunday) or `SUN`..`SAT`; and the
//! shortcuts `@yearly` (`@annually`), `@monthly`, `@weekly`, `@daily` (`@midnight`),
//! `@hourly`. As in cron, when both day fields are restricted a day matching either runs.
//!
//! Key decision, daylight saving time (as cronie does it, so operators' expectations
//! hold): a schedule whose hour field is `*` runs by the wall clock it sees, so a civil
//! time skipped by a gap does not exist and a repeated hour runs twice (an every-15-minutes
//! job keeps its pace through both changes). A schedule at fixed hours runs once per civil
//! time: in a repeated hour at its first occurrence, and a time that a gap skips runs at
//! the instant the gap ends (02:30 on a spring-forward night runs at 03:00), so a daily job
//! is never lost.

use jiff::civil::DateTime;
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::{Timestamp, ToSpan};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ScheduleError {
    #[error("{expr:?}: {why}")]
    Syntax { expr: String, why: String },
    #[error("unknown time zone {0:?} (an IANA name such as Europe/Berlin or UTC)")]
    TimeZone(String),
}

/// A set of values `0..64` of one field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Bits(u64);

impl Bits {
    fn has(self, v: u32) -> bool {
        v < 64 && self.0 & (1 << v) != 0
    }
    /// The smallest value at or above `from` in the set.
    fn next(self, from: u32) -> Option<u32> {
        if from >= 64 {
            return None;
        }
        let rest = self.0 >> from;
        (rest != 0).then(|| from + rest.trailing_zeros())
    }
}

#[derive(Debug, Clone)]
pub struct Schedule {
    text: String,
    tz: TimeZone,
    tz_name: String,
    sec: Bits,
    min: Bits,
    hour: Bits,
    dom: Bits,
    month: Bits,
    dow: Bits,
    dom_any: bool,
    dow_any: bool,
    hour_any: bool,
}

const MONTHS: [&str; 12] = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"];
const DAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

fn field(f: &str, lo: u32, hi: u32, names: &[&str], name_base: u32) -> Result<(Bits, bool), String> {
    let value = |s: &str| -> Result<u32, String> {
        if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
            return Ok(i as u32 + name_base);
        }
        let v: u32 = s.parse().map_err(|_| format!("{s:?} is not a number in {f:?}"))?;
        if v < lo || v > hi {
            return Err(format!("{v} is outside {lo}-{hi} in {f:?}"));
        }
        Ok(v)
    };
    let mut bits = 0u64;
    for part in f.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let s: u32 = s.parse().map_err(|_| format!("step {s:?} is not a number in {f:?}"))?;
                if s == 0 {
                    return Err(format!("step 0 in {f:?}"));
                }
                (r, s)
            }
            None => (part, 1),
        };
        let (a, b) = if range == "*" {
            (lo, hi)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (value(a)?, value(b)?);
            if a > b {
                return Err(format!("range {range:?} runs backwards in {f:?}"));
            }
            (a, b)
        } else {
            let a = value(range)?;
            // `N/S` means from N to the end, every S.
            (a, if part.contains('/') { hi } else { a })
        };
        let mut v = a;
        while v <= b {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok((Bits(bits), f == "*"))
}

impl Schedule {
    /// Parses `expr` for the time zone `tz` (an IANA name; `None`: the system's).
    pub fn parse(expr: &str, tz: Option<&str>) -> Result<Schedule, ScheduleError> {
        let syntax = |why: String| ScheduleError::Syntax { expr: expr.to_string(), why };
        let (zone, tz_name) = match tz {
            Some(name) => (TimeZone::get(name).map_err(|_| ScheduleError::TimeZone(name.into()))?, name.to_string()),
            None => {
                let z = TimeZone::system();
                let n = z.iana_name().unwrap_or("the system time zone").to_string();
                (z, n)
            }
        };
        let text = expr.trim();
        let expanded = match text {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            t if t.starts_with('@') => return Err(syntax(format!("unknown shortcut {t:?}"))),
            t => t,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        let (sec, rest) = match fields.len() {
            5 => ("0", &fields[..]),
            6 => (fields[0], &fields[1..]),
            n => {
                return Err(syntax(format!("{n} fields; give 5 (minute hour day month weekday) or 6 (seconds first)")))
            }
        };
        let (sec, _) = field(sec, 0, 59, &[], 0).map_err(syntax)?;
        let (min, _) = field(rest[0], 0, 59, &[], 0).map_err(syntax)?;
        let (hour, hour_any) = field(rest[1], 0, 23, &[], 0).map_err(syntax)?;
        let (dom, dom_any) = field(rest[2], 1, 31, &[], 0).map_err(syntax)?;
        let (month, _) = field(rest[3], 1, 12, &MONTHS, 1).map_err(syntax)?;
        let (mut dow, dow_any) = field(rest[4], 0, 7, &DAYS, 0).map_err(syntax)?;
        if dow.has(7) {
            dow = Bits((dow.0 | 1) & !(1 << 7));
        }
        let s = Schedule {
            text: text.to_string(),
            tz: zone,
            tz_name,
            sec,
            min,
            hour,
            dom,
            month,
            dow,
            dom_any,
            dow_any,
            hour_any,
        };
        if s.next_civil(DateTime::constant(2000, 1, 1, 0, 0, 0, 0)).is_none() {
            return Err(syntax("no date ever matches (e.g. the 30th of February)".into()));
        }
        Ok(s)
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn time_zone(&self) -> &str {
        &self.tz_name
    }

    fn day_matches(&self, dt: DateTime) -> bool {
        let dom = self.dom.has(dt.day() as u32);
        let dow = self.dow.has(dt.weekday().to_sunday_zero_offset() as u32);
        match (self.dom_any, self.dow_any) {
            (true, true) => true,
            (true, false) => dow,
            (false, true) => dom,
            (false, false) => dom || dow,
        }
    }

    #[cfg(test)]
    fn matches(&self, dt: DateTime) -> bool {
        self.month.has(dt.month() as u32)
            && self.day_matches(dt)
            && self.hour.has(dt.hour() as u32)
            && self.min.has(dt.minute() as u32)
            && self.sec.has(dt.second() as u32)
    }

    /// The first civil time at or after `from` that matches, within eight years (leap
    /// days on a given weekday recur within that); `None` if there is none.
    fn next_civil(&self, from: DateTime) -> Option<DateTime> {
        let mut dt = from.with().subsec_nanosecond(0).build().ok()?;
        if dt < from {
            dt = dt.checked_add(1.second()).ok()?;
        }
        let end_year = from.year().checked_add(8)?;
        while dt.year() <= end_year {
            if !self.month.has(dt.month() as u32) {
                dt = dt.first_of_month().checked_add(1.month()).ok()?.start_of_day();
            } else if !self.day_matches(dt) {
                dt = dt.date().tomorrow().ok()?.to_datetime(jiff::civil::Time::midnight());
            } else if !self.hour.has(dt.hour() as u32) {
                dt = match self.hour.next(dt.hour() as u32).filter(|h| *h < 24) {
                    Some(h) => dt.with().hour(h as i8).minute(0).second(0).build().ok()?,
                    None => dt.date().tomorrow().ok()?.to_datetime(jiff::civil::Time::midnight()),
                };
            } else if !self.min.has(dt.minute() as u32) {
                dt = match self.min.next(dt.minute() as u32).filter(|m| *m < 60) {
                    Some(m) => dt.with().minute(m as i8).second(0).build().ok()?,
                    None => dt.with().minute(0).second(0).build().ok()?.checked_add(1.hour()).ok()?,
                };
            } else if !self.sec.has(dt.second() as u32) {
                dt = match self.sec.next(dt.second() as u32).filter(|s| *s < 60) {
                    Some(x) => dt.with().second(x as i8).build().ok()?,
                    None => dt.with().second(0).build().ok()?.checked_add(1.minute()).ok()?,
                };
            } else {
                return Some(dt);
            }
        }
        None
    }

    /// The instants a matching civil time stands for (see the module docs for DST).
    fn instants(&self, dt: DateTime) -> Vec<Timestamp> {
        match self.tz.to_ambiguous_timestamp(dt).offset() {
            AmbiguousOffset::Unambiguous { offset } => offset.to_timestamp(dt).ok().into_iter().collect(),
            AmbiguousOffset::Fold { before, after } => {
                let mut v: Vec<Timestamp> = before.to_timestamp(dt).ok().into_iter().collect();
                if self.hour_any {
                    v.extend(after.to_timestamp(dt).ok());
                }
                v
            }
            AmbiguousOffset::Gap { .. } if self.hour_any => Vec::new(),
            AmbiguousOffset::Gap { .. } => {
                // The instant the gap ends: the first civil minute after it that exists.
                let mut m = dt.with().second(0).build().ok();
                for _ in 0..(24 * 60) {
                    let Some(c) = m.and_then(|c| c.checked_add(1.minute()).ok()) else { break };
                    match self.tz.to_ambiguous_timestamp(c).offset() {
                        AmbiguousOffset::Gap { .. } => m = Some(c),
                        AmbiguousOffset::Unambiguous { offset } | AmbiguousOffset::Fold { before: offset, .. } => {
                            return offset.to_timestamp(c).ok().into_iter().collect();
                        }
                    }
                }
                Vec::new()
            }
        }
    }

    /// The instants in `[from, until)` where the schedule's time zone changes its offset
    /// (DST), where a schedule's spacing can differ from the rest of the year.
    pub fn offset_changes(&self, from: Timestamp, until: Timestamp) -> Vec<Timestamp> {
        self.tz.following(from).map(|t| t.timestamp()).take_while(|t| *t < until).take(64).collect()
    }

    /// The first run strictly after `t`; `None` if the schedule never runs again.
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        // Civil times map to instants monotonically except around a DST change (at most a
        // few hours): start a little before `t` in civil time and, once a candidate is
        // found, look a few hours of civil time past it for an earlier instant.
        const SLACK_HOURS: i64 = 4;
        let civil = |ts: Timestamp| self.tz.to_datetime(ts);
        // Fast path (every run away from a DST change): no offset change within the slack
        // on either side, so civil time is monotonic there and the first match after
        // civil(t) that lands within the slack is the answer. Without it a frequent
        // schedule would walk four hours of matches on every call.
        let slack = jiff::SignedDuration::from_hours(SLACK_HOURS);
        if let (Ok(lo), Ok(hi)) = (t.checked_sub(slack), t.checked_add(slack)) {
            let off = |x: Timestamp| self.tz.to_offset(x);
            if off(lo) == off(t) && off(t) == off(hi) {
                let mut cursor = civil(t);
                for _ in 0..4 {
                    let Some(dt) = self.next_civil(cursor) else { break };
                    match self.instants(dt).as_slice() {
                        [i] if *i > hi => break,
                        [i] if *i > t => return Some(*i),
                        [i] if *i <= t => {}
                        _ => break,
                    }
                    let Ok(c) = dt.checked_add(1.second()) else { break };
                    cursor = c;
                }
            }
        }
        let mut cursor = civil(t).checked_sub(SLACK_HOURS.hours()).ok()?;
        let mut best: Option<Timestamp> = None;
        let mut horizon: Option<DateTime> = None;
        loop {
            let dt = self.next_civil(cursor)?;
            if horizon.is_some_and(|h| dt > h) {
                return best;
            }
            for i in self.instants(dt) {
                if i > t && best.is_none_or(|b| i < b) {
                    best = Some(i);
                    horizon = civil(i).checked_add(SLACK_HOURS.hours()).ok();
                }
            }
            cursor = dt.checked_add(1.second()).ok()?;
        }
    }

    /// The next `n` runs after `t`.
    pub fn upcoming(&self, t: Timestamp, n: usize) -> Vec<Timestamp> {
        let mut out = Vec::with_capacity(n);
        let mut at = t;
        while out.len() < n {
            match self.next_after(at) {
                Some(x) => {
                    out.push(x);
                    at = x;
                }
                None => break,
            }
        }
        out
    }

    /// The longest time between two consecutive runs over the year after `from` (DST
    /// changes, short months and leap days included): what an RPO must allow.
    pub fn longest_interval(&self, from: Timestamp) -> Option<jiff::SignedDuration> {
        let end = from.checked_add(jiff::SignedDuration::from_hours(24 * 366)).ok()?;
        let mut prev = self.next_after(from)?;
        let mut longest = jiff::SignedDuration::ZERO;
        while prev < end {
            let next = self.next_after(prev)?;
            longest = longest.max(next.duration_since(prev));
            prev = next;
        }
        Some(longest)
    }
}

/// A deterministic delay in `[0, jitter)` for the run of `key` (a source name) at `at`:
/// spreads the sources of one schedule over the jitter window, the same on every daemon
/// restart, without randomness a test could not reproduce.
pub fn jitter(key: &str, at: Timestamp, jitter: jiff::SignedDuration) -> jiff::SignedDuration {
    let window = jitter.as_secs();
    if window <= 0 {
        return jiff::SignedDuration::ZERO;
    }
    // FNV-1a over the key and the scheduled second.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes().chain(at.as_second().to_le_bytes()) {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    jiff::SignedDuration::from_secs((h % window as u64) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn runs(expr: &str, tz: &str, from: &str, n: usize) -> Vec<String> {
        let s = Schedule::parse(expr, Some(tz)).unwrap();
        s.upcoming(ts(from), n).into_iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn fields_shortcuts_and_names() {
        assert_eq!(
            runs("*/15 * * * *", "UTC", "2026-12-02T10:07:00Z", 3),
            ["2026-12-02T10:15:00Z", "2026-12-02T10:30:00Z", "2026-12-02T10:45:00Z"]
        );
        assert_eq!(runs("@daily", "UTC", "2026-12-02T10:07:00Z", 1), ["2026-12-03T00:00:00Z"]);
        assert_eq!(
            runs("0 2 * * SUN", "UTC", "2026-12-02T00:00:00Z", 2),
            ["2026-12-06T02:00:00Z", "2026-12-13T02:00:00Z"]
        );
        assert_eq!(runs("0 2 * * 7", "UTC", "2026-12-02T00:00:00Z", 1), ["2026-12-06T02:00:00Z"]);
        assert_eq!(
            runs("*/20 * * * * *", "UTC", "2026-12-02T10:07:05Z", 2),
            ["2026-12-02T10:07:20Z", "2026-12-02T10:07:40Z"]
        );
        assert_eq!(runs("0 0 29 FEB *", "UTC", "2026-01-01T00:00:00Z", 1), ["2028-02-29T00:00:00Z"]);
        // Both day fields restricted: either matches (cron's rule).
        assert_eq!(
            runs("0 0 1 * MON", "UTC", "2026-12-01T00:00:00Z", 2),
            ["2026-12-07T00:00:00Z", "2026-12-14T00:00:00Z"]
        );
        assert_eq!(runs("0 1 * * *", "Europe/Berlin", "2026-12-02T00:00:00Z", 1), ["2026-12-03T00:00:00Z"]);
    }

    #[test]
    fn bad_expressions_say_why() {
        for (e, why) in [
            ("* * * *", "4 fields"),
            ("61 * * * *", "outside 0-59"),
            ("*/0 * * * *", "step 0"),
            ("5-1 * * * *", "backwards"),
            ("0 0 30 2 *", "no date ever matches"),
            ("@fortnightly", "unknown shortcut"),
            ("0 0 * * FUNDAY", "not a number"),
        ] {
            let err = Schedule::parse(e, Some("UTC")).unwrap_err().to_string();
            assert!(err.contains(why), "{e}: {err}");
        }
        assert!(matches!(Schedule::parse("@daily", Some("Mars/Olympus")), Err(ScheduleError::TimeZone(_))));
    }

    #[test]
    fn spring_forward_keeps_daily_runs_and_frequent_ones_by_the_wall_clock() {
        // 2026-03-08 in New York: 02:00 EST jumps to 03:00 EDT.
        assert_eq!(
            runs("30 2 * * *", "America/New_York", "2026-03-07T12:00:00Z", 3),
            // 02:30 on the 7th (EST), then on the 8th it does not exist: 03:00 EDT.
            ["2026-03-08T07:00:00Z", "2026-03-09T06:30:00Z", "2026-03-10T06:30:00Z"]
        );
        assert_eq!(
            runs("*/30 * * * *", "America/New_York", "2026-03-08T06:15:00Z", 4),
            // 01:30 EST, then 03:00 EDT, 03:30 EDT: 02:xx never happens.
            ["2026-03-08T06:30:00Z", "2026-03-08T07:00:00Z", "2026-03-08T07:30:00Z", "2026-03-08T08:00:00Z"]
        );
    }

    #[test]
    fn fall_back_runs_fixed_times_once_and_frequent_ones_in_both_hours() {
        // 2026-11-01 in New York: 02:00 EDT falls back to 01:00 EST.
        assert_eq!(
            runs("30 1 * * *", "America/New_York", "2026-11-01T04:00:00Z", 2),
            // 01:30 EDT only (05:30Z), not 01:30 EST (06:30Z).
            ["2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"]
        );
        assert_eq!(
            runs("*/30 * * * *", "America/New_York", "2026-11-01T04:45:00Z", 5),
            [
                "2026-11-01T05:00:00Z",
                "2026-11-01T05:30:00Z",
                "2026-11-01T06:00:00Z",
                "2026-11-01T06:30:00Z",
                "2026-11-01T07:00:00Z"
            ]
        );
    }

    #[test]
    fn longest_interval_sees_what_an_rpo_must_allow() {
        let s = Schedule::parse("*/15 * * * *", Some("Europe/Berlin")).unwrap();
        assert_eq!(s.longest_interval(ts("2026-01-01T00:00:00Z")), Some(jiff::SignedDuration::from_mins(15)));
        let d = Schedule::parse("0 2 * * *", Some("Europe/Berlin")).unwrap();
        // The spring change makes one interval 23 h, the autumn one 25 h.
        assert_eq!(d.longest_interval(ts("2026-01-01T00:00:00Z")), Some(jiff::SignedDuration::from_hours(25)));
    }

    #[test]
    fn jitter_stays_in_its_window_and_is_stable() {
        let w = jiff::SignedDuration::from_mins(10);
        let at = ts("2026-12-02T02:00:00Z");
        for key in ["db", "uploads", "influx", ""] {
            let j = jitter(key, at, w);
            assert!(j >= jiff::SignedDuration::ZERO && j < w, "{key}: {j:?}");
            assert_eq!(j, jitter(key, at, w));
        }
        assert_eq!(jitter("db", at, jiff::SignedDuration::ZERO), jiff::SignedDuration::ZERO);
    }

    /// Against brute force: for random schedules and instants, the next run is a match
    /// and no matching second lies strictly between `t` and it (UTC, where civil time and
    /// instants agree).
    #[test]
    fn next_after_agrees_with_brute_force() {
        use proptest::prelude::*;
        let mut runner =
            proptest::test_runner::TestRunner::new(proptest::test_runner::Config { cases: 200, ..Default::default() });
        let fieldv = |lo: u32, hi: u32| {
            prop_oneof![
                Just("*".to_string()),
                (lo..=hi).prop_map(|v| v.to_string()),
                (lo..=hi, 1u32..7).prop_map(move |(a, s)| format!("{a}/{s}")),
                (lo..=hi, lo..=hi).prop_map(|(a, b)| format!("{}-{}", a.min(b), a.max(b))),
            ]
        };
        let strat = (fieldv(0, 59), fieldv(0, 23), fieldv(1, 28), 0i64..4_000_000);
        runner
            .run(&strat, |(m, h, d, off)| {
                let expr = format!("{m} {h} {d} * *");
                let s = Schedule::parse(&expr, Some("UTC")).unwrap();
                let t = ts("2026-01-01T00:00:00Z").checked_add(jiff::SignedDuration::from_secs(off * 7)).unwrap();
                let next = s.next_after(t).unwrap();
                prop_assert!(next > t);
                prop_assert!(s.matches(s.tz.to_datetime(next)), "{expr}: {next} does not match");
                // No match in between: step minute by minute (seconds are 0 in 5-field form).
                let mut c = t.checked_add(jiff::SignedDuration::from_secs(60 - t.as_second().rem_euclid(60))).unwrap();
                while c < next {
                    prop_assert!(!s.matches(s.tz.to_datetime(c)), "{expr}: {c} matches before {next}");
                    c = c.checked_add(jiff::SignedDuration::from_mins(1)).unwrap();
                }
                Ok(())
            })
            .unwrap();
    }
}

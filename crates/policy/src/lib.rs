//! Retention: keep-rules -> a forget plan; schedules -> the next run ([`schedule`]). Pure:
//! snapshots and their times (or an instant) go in, a plan
//! of what to keep (and why) and what to remove comes out; no I/O, no clock.
//!
//! Principal types: [`KeepPolicy`] (the rules), [`Item`] (one snapshot's time and tags),
//! [`plan_group`] (one group's decisions) and [`group`] (grouping by host, paths, tags).
//!
//! Key decision: restic's documented semantics, so its users' policies mean the same here.
//! Within a group, snapshots are taken newest first; each `--keep-<unit> N` rule keeps the
//! newest snapshot of each of the N most recent buckets (hour, day, ISO week, month, year)
//! that hold a snapshot, so a bucket counts once however many snapshots it has. Buckets are
//! computed in the snapshot's own recorded time zone (the offset in its RFC 3339 time), not
//! the machine's. `--keep-within D` keeps everything newer than the group's newest snapshot
//! minus D (calendar arithmetic: `1y2m` is a year and two months), and
//! `--keep-within-<unit> D` applies the bucket rule to that window only. Rules combine by
//! union: a snapshot is kept if any rule keeps it, and the plan lists every rule that did.

pub mod file;
pub mod schedule;

use std::collections::BTreeMap;

use jiff::civil::DateTime;
use jiff::Timestamp;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    #[error("{0:?} is not a duration like 2y5m7d3h")]
    BadDuration(String),
    #[error("{0:?} is not an RFC 3339 time")]
    BadTime(String),
}

/// A calendar duration: years, months, days, hours (restic's `2y5m7d3h`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Duration {
    pub years: i32,
    pub months: i32,
    pub days: i32,
    pub hours: i32,
}

impl Duration {
    pub fn parse(s: &str) -> Result<Duration, Error> {
        let bad = || Error::BadDuration(s.to_string());
        let mut d = Duration::default();
        let mut num = String::new();
        let mut any = false;
        for c in s.chars() {
            if c.is_ascii_digit() {
                num.push(c);
                continue;
            }
            let n: i32 = num.parse().map_err(|_| bad())?;
            num.clear();
            match c {
                'y' => d.years += n,
                'm' => d.months += n,
                'd' => d.days += n,
                'h' => d.hours += n,
                _ => return Err(bad()),
            }
            any = true;
        }
        if !num.is_empty() || !any {
            return Err(bad());
        }
        Ok(d)
    }

    fn is_zero(&self) -> bool {
        *self == Duration::default()
    }
}

/// The keep-rules. `None`/zero means the rule is not used; `Some(-1)` means unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeepPolicy {
    pub last: Option<i64>,
    pub hourly: Option<i64>,
    pub daily: Option<i64>,
    pub weekly: Option<i64>,
    pub monthly: Option<i64>,
    pub yearly: Option<i64>,
    pub within: Duration,
    pub within_hourly: Duration,
    pub within_daily: Duration,
    pub within_weekly: Duration,
    pub within_monthly: Duration,
    pub within_yearly: Duration,
    /// Each entry is a tag list; a snapshot having every tag of one list is kept.
    pub tags: Vec<Vec<String>>,
}

impl KeepPolicy {
    /// Whether any rule is set (forgetting with none would remove everything).
    pub fn is_empty(&self) -> bool {
        [self.last, self.hourly, self.daily, self.weekly, self.monthly, self.yearly]
            .iter()
            .all(|r| r.is_none_or(|n| n == 0))
            && [
                self.within,
                self.within_hourly,
                self.within_daily,
                self.within_weekly,
                self.within_monthly,
                self.within_yearly,
            ]
            .iter()
            .all(Duration::is_zero)
            && self.tags.is_empty()
    }
}

/// A snapshot's time: the instant, and the wall-clock time in its own recorded offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotTime {
    pub instant: Timestamp,
    pub local: DateTime,
}

impl SnapshotTime {
    /// From an RFC 3339 string with its offset (`2025-12-31T23:30:00-05:00`).
    pub fn parse(s: &str) -> Result<SnapshotTime, Error> {
        let bad = || Error::BadTime(s.to_string());
        let instant: Timestamp = s.parse().map_err(|_| bad())?;
        let local: DateTime = s.get(..19).ok_or_else(bad)?.parse().map_err(|_| bad())?;
        Ok(SnapshotTime { instant, local })
    }
}

#[derive(Debug, Clone)]
pub struct Item {
    pub time: SnapshotTime,
    pub tags: Vec<String>,
}

/// Why a snapshot is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reason {
    Last,
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
    Within,
    WithinHourly,
    WithinDaily,
    WithinWeekly,
    WithinMonthly,
    WithinYearly,
    Tag,
}

impl Reason {
    pub fn describe(self) -> &'static str {
        match self {
            Reason::Last => "last snapshot",
            Reason::Hourly => "hourly snapshot",
            Reason::Daily => "daily snapshot",
            Reason::Weekly => "weekly snapshot",
            Reason::Monthly => "monthly snapshot",
            Reason::Yearly => "yearly snapshot",
            Reason::Within => "within",
            Reason::WithinHourly => "hourly within",
            Reason::WithinDaily => "daily within",
            Reason::WithinWeekly => "weekly within",
            Reason::WithinMonthly => "monthly within",
            Reason::WithinYearly => "yearly within",
            Reason::Tag => "tag",
        }
    }
}

/// The decision for one snapshot of a group: kept with its reasons, or removed (empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Index into the items given to [`plan_group`].
    pub index: usize,
    pub reasons: Vec<Reason>,
}

impl Decision {
    pub fn keep(&self) -> bool {
        !self.reasons.is_empty()
    }
}

#[derive(Clone, Copy)]
enum Unit {
    Hour,
    Day,
    Week,
    Month,
    Year,
}

fn bucket(t: &DateTime, u: Unit) -> (i32, i32, i32, i32) {
    let (y, m, d, h) = (t.year() as i32, t.month() as i32, t.day() as i32, t.hour() as i32);
    match u {
        Unit::Hour => (y, m, d, h),
        Unit::Day => (y, m, d, 0),
        Unit::Week => {
            let w = t.date().iso_week_date();
            (w.year() as i32, w.week() as i32, 0, 0)
        }
        Unit::Month => (y, m, 0, 0),
        Unit::Year => (y, 0, 0, 0),
    }
}

/// The instant before which a snapshot is outside `d` of `latest` (calendar arithmetic in
/// the newest snapshot's own offset).
fn cutoff(latest: &SnapshotTime, d: Duration) -> Option<i128> {
    let span = jiff::Span::new().years(d.years).months(d.months).days(d.days).hours(d.hours);
    let earlier = latest.local.checked_sub(span).ok()?;
    let utc = |c: DateTime| c.to_zoned_datetime(jiff::tz::TimeZone::UTC).ok().map(|z| z.timestamp().as_nanosecond());
    Some(latest.instant.as_nanosecond() - (utc(latest.local)? - utc(earlier)?))
}

/// Decides every snapshot of one group. The result is in the order of `items`.
pub fn plan_group(items: &[Item], p: &KeepPolicy) -> Vec<Decision> {
    let mut order: Vec<usize> = (0..items.len()).collect();
    // Newest first; ties broken by position so the plan is deterministic.
    order.sort_by(|&a, &b| items[b].time.instant.cmp(&items[a].time.instant).then(a.cmp(&b)));
    let mut reasons: Vec<Vec<Reason>> = vec![Vec::new(); items.len()];
    let Some(&newest) = order.first() else { return Vec::new() };
    let latest = items[newest].time;

    let count_rules = [
        (p.hourly, Unit::Hour, Reason::Hourly),
        (p.daily, Unit::Day, Reason::Daily),
        (p.weekly, Unit::Week, Reason::Weekly),
        (p.monthly, Unit::Month, Reason::Monthly),
        (p.yearly, Unit::Year, Reason::Yearly),
    ];
    let within_rules = [
        (p.within_hourly, Unit::Hour, Reason::WithinHourly),
        (p.within_daily, Unit::Day, Reason::WithinDaily),
        (p.within_weekly, Unit::Week, Reason::WithinWeekly),
        (p.within_monthly, Unit::Month, Reason::WithinMonthly),
        (p.within_yearly, Unit::Year, Reason::WithinYearly),
    ];
    let mut remaining: Vec<i64> = count_rules.iter().map(|(n, ..)| n.unwrap_or(0)).collect();
    let mut last_bucket: Vec<Option<(i32, i32, i32, i32)>> = vec![None; count_rules.len()];
    let within_cut: Vec<Option<i128>> =
        within_rules.iter().map(|(d, ..)| if d.is_zero() { None } else { cutoff(&latest, *d) }).collect();
    let mut within_last: Vec<Option<(i32, i32, i32, i32)>> = vec![None; within_rules.len()];
    let keep_within = if p.within.is_zero() { None } else { cutoff(&latest, p.within) };
    let mut last_left = p.last.unwrap_or(0);

    for &i in &order {
        let it = &items[i];
        let r = &mut reasons[i];
        if last_left != 0 {
            r.push(Reason::Last);
            last_left -= 1;
        }
        for (k, (_, unit, reason)) in count_rules.iter().enumerate() {
            if remaining[k] == 0 {
                continue;
            }
            let b = bucket(&it.time.local, *unit);
            if last_bucket[k] != Some(b) {
                last_bucket[k] = Some(b);
                r.push(*reason);
                remaining[k] -= 1;
            }
        }
        let t = it.time.instant.as_nanosecond();
        if keep_within.is_some_and(|c| t > c) {
            r.push(Reason::Within);
        }
        for (k, (_, unit, reason)) in within_rules.iter().enumerate() {
            if within_cut[k].is_some_and(|c| t > c) {
                let b = bucket(&it.time.local, *unit);
                if within_last[k] != Some(b) {
                    within_last[k] = Some(b);
                    r.push(*reason);
                }
            }
        }
        if p.tags.iter().any(|list| !list.is_empty() && list.iter().all(|t| it.tags.contains(t))) {
            r.push(Reason::Tag);
        }
    }
    (0..items.len()).map(|i| Decision { index: i, reasons: std::mem::take(&mut reasons[i]) }).collect()
}

/// One snapshot as a forget plan sees it.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub host: String,
    pub paths: Vec<String>,
    pub tags: Vec<String>,
    /// RFC 3339 with offset, as the snapshot records it.
    pub time: String,
}

/// One group's decisions, newest snapshot first.
#[derive(Debug, Clone)]
pub struct GroupPlan {
    pub key: GroupKey,
    /// Indices into the candidates, with each one's decision.
    pub members: Vec<(usize, Decision)>,
}

/// The forget plan: candidates grouped by `by`, the keep-rules applied per group. The one
/// planning step `cairn forget` and the daemon's retention share. An unreadable time is an
/// error naming the candidate (index).
pub fn forget_plan(snaps: &[Candidate], p: &KeepPolicy, by: GroupBy) -> Result<Vec<GroupPlan>, (usize, Error)> {
    let keys: Vec<(String, Vec<String>, Vec<String>)> =
        snaps.iter().map(|s| (s.host.clone(), s.paths.clone(), s.tags.clone())).collect();
    let mut out = Vec::new();
    for (key, members) in group(&keys, by) {
        let mut items = Vec::with_capacity(members.len());
        for &i in &members {
            let time = SnapshotTime::parse(&snaps[i].time).map_err(|e| (i, e))?;
            items.push(Item { time, tags: snaps[i].tags.clone() });
        }
        let decisions = plan_group(&items, p);
        let mut order: Vec<usize> = (0..members.len()).collect();
        order.sort_by(|&x, &y| items[y].time.instant.cmp(&items[x].time.instant));
        let members = order.into_iter().map(|k| (members[k], decisions[k].clone())).collect();
        out.push(GroupPlan { key, members });
    }
    Ok(out)
}

/// How snapshots are grouped before the rules apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupBy {
    pub host: bool,
    pub paths: bool,
    pub tags: bool,
}

impl GroupBy {
    pub fn parse(s: &str) -> Result<GroupBy, String> {
        let mut g = GroupBy { host: false, paths: false, tags: false };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "host" => g.host = true,
                "paths" => g.paths = true,
                "tags" => g.tags = true,
                other => return Err(format!("--group-by: unknown field {other:?} (use host, paths, tags)")),
            }
        }
        Ok(g)
    }
}

/// A group's key as shown to users.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct GroupKey {
    pub host: Option<String>,
    pub paths: Option<Vec<String>>,
    pub tags: Option<Vec<String>>,
}

/// Groups `(host, paths, tags)` triples; returns each key with the indices of its members.
pub fn group(snaps: &[(String, Vec<String>, Vec<String>)], by: GroupBy) -> Vec<(GroupKey, Vec<usize>)> {
    let mut m: BTreeMap<GroupKey, Vec<usize>> = BTreeMap::new();
    for (i, (host, paths, tags)) in snaps.iter().enumerate() {
        let mut paths = paths.clone();
        paths.sort();
        let mut tags = tags.clone();
        tags.sort();
        let k = GroupKey {
            host: by.host.then(|| host.clone()),
            paths: by.paths.then_some(paths),
            tags: by.tags.then_some(tags),
        };
        m.entry(k).or_default().push(i);
    }
    m.into_iter().collect()
}

#[cfg(test)]
mod tests;

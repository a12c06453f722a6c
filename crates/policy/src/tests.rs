//! Keep-rules over a year of generated snapshots, with the kept set written out by hand
//! for each rule combination (restic's semantics).

use super::*;

/// One snapshot per day of 2025 at 03:00 (+01:00), four more on Dec 31 at 10-13h, and the
/// one of June 15 tagged `keep`.
fn year() -> Vec<(String, Item)> {
    let mut out = Vec::new();
    let mut d: jiff::civil::Date = "2025-01-01".parse().unwrap();
    let end: jiff::civil::Date = "2025-12-31".parse().unwrap();
    loop {
        let t = format!("{d}T03:00:00+01:00");
        let tags = if t.starts_with("2025-06-15") { vec!["keep".to_string()] } else { vec![] };
        out.push((t.clone(), Item { time: SnapshotTime::parse(&t).unwrap(), tags }));
        if d == end {
            break;
        }
        d = d.tomorrow().unwrap();
    }
    for h in 10..=13 {
        let t = format!("2025-12-31T{h}:00:00+01:00");
        out.push((t.clone(), Item { time: SnapshotTime::parse(&t).unwrap(), tags: vec![] }));
    }
    out
}

fn kept(p: &KeepPolicy) -> Vec<String> {
    let data = year();
    let items: Vec<Item> = data.iter().map(|(_, i)| i.clone()).collect();
    let mut out: Vec<String> =
        plan_group(&items, p).into_iter().filter(|d| d.keep()).map(|d| data[d.index].0.clone()).collect();
    out.sort();
    out
}

fn at(s: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = s.iter().map(|x| x.to_string()).collect();
    v.sort();
    v
}

fn dur(s: &str) -> Duration {
    Duration::parse(s).unwrap()
}

#[test]
fn keep_rules_over_a_year() {
    let n = |x: i64| Some(x);
    let cases: Vec<(&str, KeepPolicy, Vec<String>)> = vec![
        (
            "last 3",
            KeepPolicy { last: n(3), ..Default::default() },
            at(&["2025-12-31T13:00:00+01:00", "2025-12-31T12:00:00+01:00", "2025-12-31T11:00:00+01:00"]),
        ),
        (
            "hourly 6: four hours of Dec 31, its 03:00, then Dec 30",
            KeepPolicy { hourly: n(6), ..Default::default() },
            at(&[
                "2025-12-31T13:00:00+01:00",
                "2025-12-31T12:00:00+01:00",
                "2025-12-31T11:00:00+01:00",
                "2025-12-31T10:00:00+01:00",
                "2025-12-31T03:00:00+01:00",
                "2025-12-30T03:00:00+01:00",
            ]),
        ),
        (
            "daily 3: a day with five snapshots counts once, its newest is kept",
            KeepPolicy { daily: n(3), ..Default::default() },
            at(&["2025-12-31T13:00:00+01:00", "2025-12-30T03:00:00+01:00", "2025-12-29T03:00:00+01:00"]),
        ),
        (
            "weekly 2: Dec 29-31 is ISO week 2026-W01, Dec 22-28 is 2025-W52",
            KeepPolicy { weekly: n(2), ..Default::default() },
            at(&["2025-12-31T13:00:00+01:00", "2025-12-28T03:00:00+01:00"]),
        ),
        (
            "monthly 3",
            KeepPolicy { monthly: n(3), ..Default::default() },
            at(&["2025-12-31T13:00:00+01:00", "2025-11-30T03:00:00+01:00", "2025-10-31T03:00:00+01:00"]),
        ),
        (
            "yearly 3: only one year has snapshots",
            KeepPolicy { yearly: n(3), ..Default::default() },
            at(&["2025-12-31T13:00:00+01:00"]),
        ),
        (
            "within 2d of the newest (Dec 29 13:00, exclusive)",
            KeepPolicy { within: dur("2d"), ..Default::default() },
            at(&[
                "2025-12-31T13:00:00+01:00",
                "2025-12-31T12:00:00+01:00",
                "2025-12-31T11:00:00+01:00",
                "2025-12-31T10:00:00+01:00",
                "2025-12-31T03:00:00+01:00",
                "2025-12-30T03:00:00+01:00",
            ]),
        ),
        (
            "within-daily 3d: daily buckets after Dec 28 13:00",
            KeepPolicy { within_daily: dur("3d"), ..Default::default() },
            at(&["2025-12-31T13:00:00+01:00", "2025-12-30T03:00:00+01:00", "2025-12-29T03:00:00+01:00"]),
        ),
        (
            "within-monthly 1m: monthly buckets after Nov 30 13:00",
            KeepPolicy { within_monthly: dur("1m"), ..Default::default() },
            at(&["2025-12-31T13:00:00+01:00"]),
        ),
        (
            "daily 2 + monthly 2 combine by union",
            KeepPolicy { daily: n(2), monthly: n(2), ..Default::default() },
            at(&["2025-12-31T13:00:00+01:00", "2025-12-30T03:00:00+01:00", "2025-11-30T03:00:00+01:00"]),
        ),
        (
            "tag keep",
            KeepPolicy { tags: vec![vec!["keep".into()]], ..Default::default() },
            at(&["2025-06-15T03:00:00+01:00"]),
        ),
        (
            "last 1 + tag keep + yearly 1",
            KeepPolicy { last: n(1), yearly: n(1), tags: vec![vec!["keep".into()]], ..Default::default() },
            at(&["2025-12-31T13:00:00+01:00", "2025-06-15T03:00:00+01:00"]),
        ),
        (
            "a tag list matches only snapshots with all its tags",
            KeepPolicy { tags: vec![vec!["keep".into(), "other".into()]], ..Default::default() },
            at(&[]),
        ),
    ];
    for (name, p, want) in cases {
        assert_eq!(kept(&p), want, "rule combination: {name}");
    }
}

#[test]
fn unlimited_counts_keep_every_bucket() {
    assert_eq!(kept(&KeepPolicy { monthly: Some(-1), ..Default::default() }).len(), 12);
    assert_eq!(kept(&KeepPolicy { daily: Some(-1), ..Default::default() }).len(), 365);
}

#[test]
fn buckets_use_each_snapshots_own_time_zone() {
    // Both are Dec 31 where they were taken (-05:00), though A is already Jan 1 in UTC.
    let a = SnapshotTime::parse("2025-12-31T23:30:00-05:00").unwrap();
    let b = SnapshotTime::parse("2025-12-31T18:00:00-05:00").unwrap();
    let items = vec![Item { time: b, tags: vec![] }, Item { time: a, tags: vec![] }];
    let d = plan_group(&items, &KeepPolicy { daily: Some(2), ..Default::default() });
    assert!(!d[0].keep(), "one day holds both snapshots: only the newest is kept");
    assert_eq!(d[1].reasons, vec![Reason::Daily]);
}

#[test]
fn reasons_list_every_rule_that_kept_a_snapshot() {
    let data = year();
    let items: Vec<Item> = data.iter().map(|(_, i)| i.clone()).collect();
    let d = plan_group(&items, &KeepPolicy { last: Some(1), daily: Some(1), within: dur("1h"), ..Default::default() });
    let newest = data.iter().position(|(t, _)| t == "2025-12-31T13:00:00+01:00").unwrap();
    assert_eq!(d[newest].reasons, vec![Reason::Last, Reason::Daily, Reason::Within]);
}

#[test]
fn planning_is_idempotent() {
    // Forgetting what a plan removes and planning again keeps the same set.
    let data = year();
    let items: Vec<Item> = data.iter().map(|(_, i)| i.clone()).collect();
    let p = KeepPolicy { daily: Some(7), weekly: Some(4), monthly: Some(12), ..Default::default() };
    let first: Vec<Item> =
        plan_group(&items, &p).into_iter().filter(|d| d.keep()).map(|d| items[d.index].clone()).collect();
    let second = plan_group(&first, &p);
    assert!(second.iter().all(Decision::keep));
}

#[test]
fn durations_parse_like_restic() {
    assert_eq!(dur("2y5m7d3h"), Duration { years: 2, months: 5, days: 7, hours: 3 });
    assert_eq!(dur("36h"), Duration { hours: 36, ..Default::default() });
    for bad in ["", "5", "3x", "d", "1.5d"] {
        assert!(Duration::parse(bad).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn empty_policy_is_detected() {
    assert!(KeepPolicy::default().is_empty());
    assert!(!KeepPolicy { within: dur("1d"), ..Default::default() }.is_empty());
}

#[test]
fn grouping_by_host_and_paths() {
    let snaps = vec![
        ("a".to_string(), vec!["/x".to_string()], vec!["t".to_string()]),
        ("a".to_string(), vec!["/x".to_string()], vec![]),
        ("b".to_string(), vec!["/x".to_string()], vec![]),
    ];
    let g = group(&snaps, GroupBy::parse("host,paths").unwrap());
    assert_eq!(g.len(), 2);
    assert_eq!(g[0].1, vec![0, 1]);
    let g = group(&snaps, GroupBy::parse("host,paths,tags").unwrap());
    assert_eq!(g.len(), 3);
    assert!(GroupBy::parse("hosts").is_err());
}

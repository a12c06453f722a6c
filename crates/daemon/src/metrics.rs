//! Prometheus metrics in the text exposition format, computed at each scrape from the
//! repositories (data age, copies, WAL, drills' targets) and the catalog (jobs, drills,
//! alerts). Nothing is kept in memory between scrapes, so every value is right after a
//! restart and a source removed from the policy has no series left.

use std::fmt::Write as _;

use jiff::Timestamp;

use crate::catalog::Catalog;
use crate::jobs::Env;
use crate::status::RpoState;
use crate::Result;

/// Upper bounds (seconds) of the job duration histogram's buckets.
pub const BUCKETS: [f64; 8] = [1.0, 10.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0];

/// A label value escaped as the exposition format wants (`\`, `"` and newlines).
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

struct Out {
    text: String,
    declared: std::collections::BTreeSet<&'static str>,
}

impl Out {
    fn family(&mut self, name: &'static str, kind: &str, help: &str) {
        if self.declared.insert(name) {
            let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}");
        }
    }
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], v: f64) {
        let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", esc(v))).collect();
        let v = if v.is_finite() {
            format!("{v}")
        } else if v > 0.0 {
            "+Inf".into()
        } else {
            "NaN".into()
        };
        if l.is_empty() {
            let _ = writeln!(self.text, "{name} {v}");
        } else {
            let _ = writeln!(self.text, "{name}{{{}}} {v}", l.join(","));
        }
    }
}

/// One source and kind's jobs across statuses: bucket counts, duration sum, count, bytes
/// added, the newest success (Unix ms).
type Kindwise = (Vec<u64>, f64, u64, u64, Option<i64>);

/// The whole exposition.
pub fn render(env: &Env, catalog: &Catalog, now: Timestamp, daemon_start: Option<Timestamp>) -> Result<String> {
    let mut o = Out { text: String::new(), declared: Default::default() };
    o.family("cairn_up", "gauge", "1 when this exposition was computed");
    o.sample("cairn_up", &[("host", &env.host)], 1.0);
    if let Some(t) = daemon_start {
        o.family("cairn_daemon_start_time_seconds", "gauge", "when the daemon started (Unix time)");
        o.sample("cairn_daemon_start_time_seconds", &[("host", &env.host)], t.as_second() as f64);
    }
    let (rows, repos) = crate::status::status_and_repositories(env, catalog, now, None)?;
    for r in &rows {
        let base = [("source", r.source.as_str()), ("class", r.class.as_str()), ("repository", r.repository.as_str())];
        o.family("cairn_source_info", "gauge", "one series per policy source, with its kind");
        let mut info = base.to_vec();
        info.push(("kind", r.kind.as_str()));
        o.sample("cairn_source_info", &info, 1.0);
        if let Some(a) = r.data_age_secs {
            o.family(
                "cairn_source_data_age_seconds",
                "gauge",
                "age of the newest recoverable point in the source's repository",
            );
            o.sample("cairn_source_data_age_seconds", &base, a as f64);
        }
        if let Some(n) = r.newest.as_deref().and_then(|t| t.parse::<Timestamp>().ok()) {
            o.family(
                "cairn_source_newest_backup_time_seconds",
                "gauge",
                "time of the source's newest backup in its repository (Unix time)",
            );
            o.sample("cairn_source_newest_backup_time_seconds", &base, n.as_second() as f64);
        }
        if let Some(rpo) = r.rpo_secs {
            o.family("cairn_source_rpo_seconds", "gauge", "the source's recovery point objective");
            o.sample("cairn_source_rpo_seconds", &base, rpo as f64);
            o.family(
                "cairn_source_rpo_breached",
                "gauge",
                "1 when the data age is over the RPO (or there is no backup)",
            );
            o.sample("cairn_source_rpo_breached", &base, (r.rpo_state == RpoState::Breached) as u8 as f64);
        }
        if let Some(w) = r.wal_age_secs {
            o.family(
                "cairn_postgres_wal_age_seconds",
                "gauge",
                "age of the newest WAL file of a postgres source in its repository",
            );
            o.sample("cairn_postgres_wal_age_seconds", &base, w as f64);
        }
        o.family(
            "cairn_repository_readable",
            "gauge",
            "1 when the source's repository could be read for this exposition",
        );
        o.sample("cairn_repository_readable", &base, r.error.is_none() as u8 as f64);
        for c in &r.copies {
            if let Some(l) = c.lag_secs {
                o.family(
                    "cairn_copy_lag_seconds",
                    "gauge",
                    "how far a copy's newest backup of the source is behind the primary's",
                );
                o.sample(
                    "cairn_copy_lag_seconds",
                    &[("source", &r.source), ("class", &r.class), ("copy", &c.repository)],
                    l as f64,
                );
            }
        }
        if let Some(rto) = env.policy.sources.get(&r.source).and_then(|s| s.rto.value) {
            o.family("cairn_source_rto_seconds", "gauge", "the source's recovery time objective");
            o.sample("cairn_source_rto_seconds", &base, rto.as_secs() as f64);
        }
    }
    // Jobs, from the catalog: counts, bytes, durations, last success.
    let known = |s: &str| env.policy.sources.contains_key(s);
    let stats = catalog.job_stats()?;
    for s in stats.iter().filter(|s| known(&s.source)) {
        let l = [("source", s.source.as_str()), ("kind", s.kind.as_str()), ("status", s.status.as_str())];
        o.family(
            "cairn_jobs_total",
            "counter",
            "jobs that ended, by source, kind and status (the catalog's, kept for keep_jobs)",
        );
        o.sample("cairn_jobs_total", &l, s.count as f64);
    }
    let mut by: std::collections::BTreeMap<(String, String), Kindwise> = Default::default();
    for s in stats.iter().filter(|s| known(&s.source)) {
        let e = by.entry((s.source.clone(), s.kind.clone())).or_insert((vec![0; BUCKETS.len()], 0.0, 0, 0, None));
        for (i, b) in s.buckets.iter().enumerate() {
            e.0[i] += b;
        }
        e.1 += s.duration_sum;
        e.2 += s.count;
        e.3 += s.bytes_added;
        if s.last_success_ms.is_some() {
            e.4 = e.4.max(s.last_success_ms);
        }
    }
    for ((source, kind), (buckets, sum, count, bytes, last)) in &by {
        let l = [("source", source.as_str()), ("kind", kind.as_str())];
        o.family("cairn_job_duration_seconds", "histogram", "how long jobs ran");
        for (i, b) in buckets.iter().enumerate() {
            let le = format!("{}", BUCKETS[i]);
            o.sample("cairn_job_duration_seconds_bucket", &[l[0], l[1], ("le", &le)], *b as f64);
        }
        o.sample("cairn_job_duration_seconds_bucket", &[l[0], l[1], ("le", "+Inf")], *count as f64);
        o.sample("cairn_job_duration_seconds_sum", &l, *sum);
        o.sample("cairn_job_duration_seconds_count", &l, *count as f64);
        if *bytes > 0 {
            o.family(
                "cairn_job_bytes_added_total",
                "counter",
                "bytes jobs added to repositories (after deduplication and compression)",
            );
            o.sample("cairn_job_bytes_added_total", &l, *bytes as f64);
        }
        if let Some(ms) = last {
            o.family(
                "cairn_job_last_success_time_seconds",
                "gauge",
                "when the newest successful job of this kind ended (Unix time)",
            );
            o.sample("cairn_job_last_success_time_seconds", &l, (*ms / 1000) as f64);
        }
    }
    // The newest job of each kind: its status as a label (one series per source and kind).
    for s in env.policy.sources.values() {
        for kind in [crate::catalog::Kind::Backup, crate::catalog::Kind::Drill] {
            if let Some(j) = catalog.last_finished(&s.name, kind)? {
                o.family(
                    "cairn_job_last_status",
                    "gauge",
                    "1, labelled with the status of the source's newest finished job of the kind",
                );
                o.sample(
                    "cairn_job_last_status",
                    &[("source", &s.name), ("kind", kind.as_str()), ("status", &j.status)],
                    1.0,
                );
            }
        }
    }
    // Drills: the newest drill's measures, and the newest passed drill's time.
    for s in env.policy.sources.values() {
        let drills = crate::report::history(catalog, Some(&s.name), None)?;
        if let Some(d) = drills.last() {
            let l = [("source", s.name.as_str()), ("class", s.class.as_str())];
            if let Some(v) = d.rto_secs {
                o.family("cairn_drill_rto_seconds", "gauge", "the newest drill's achieved RTO");
                o.sample("cairn_drill_rto_seconds", &l, v);
            }
            if let Some(v) = d.rpo_secs {
                o.family("cairn_drill_rpo_seconds", "gauge", "the newest drill's achieved RPO");
                o.sample("cairn_drill_rpo_seconds", &l, v);
            }
            o.family("cairn_drill_passed", "gauge", "1 when the newest drill passed");
            o.sample("cairn_drill_passed", &l, (d.verdict == crate::drill::Verdict::Passed) as u8 as f64);
        }
        if let Some(t) = drills
            .iter()
            .rev()
            .find(|d| d.verdict == crate::drill::Verdict::Passed)
            .and_then(|d| d.ended_at.parse::<Timestamp>().ok())
        {
            o.family(
                "cairn_drill_last_success_time_seconds",
                "gauge",
                "when the newest passed drill ended (Unix time)",
            );
            o.sample(
                "cairn_drill_last_success_time_seconds",
                &[("source", &s.name), ("class", &s.class)],
                t.as_second() as f64,
            );
        }
    }
    // Repositories: what they hold (listed at most every 10 minutes) and what that stands for.
    let sizes = crate::alerts::repository_sizes(env, false);
    for (name, f) in &repos {
        let l = [("repository", name.as_str())];
        o.family("cairn_repository_snapshots", "gauge", "snapshots in the repository");
        o.sample("cairn_repository_snapshots", &l, f.snapshots as f64);
        o.family(
            "cairn_repository_logical_bytes",
            "gauge",
            "the sum of the logical sizes of the repository's snapshots",
        );
        o.sample("cairn_repository_logical_bytes", &l, f.logical_bytes as f64);
        if let Some(&size) = sizes.get(name) {
            o.family("cairn_repository_size_bytes", "gauge", "bytes the repository's objects take in its store");
            o.sample("cairn_repository_size_bytes", &l, size as f64);
            if size > 0 {
                o.family(
                    "cairn_repository_dedup_ratio",
                    "gauge",
                    "logical bytes of every snapshot over the bytes stored (deduplication and compression)",
                );
                o.sample("cairn_repository_dedup_ratio", &l, f.logical_bytes as f64 / size as f64);
            }
        }
    }
    // Alert conditions active now, by event.
    let mut active: std::collections::BTreeMap<String, u64> = Default::default();
    for (_, e, _) in catalog.alerts_active()? {
        if let Ok(e) = serde_json::from_str::<crate::alerts::Event>(&e) {
            *active.entry(e.event).or_default() += 1;
        }
    }
    o.family("cairn_alerts_active", "gauge", "alert conditions active now, by event");
    for ev in cairn_policy::file::EVENTS.iter().filter(|e| !matches!(**e, "test" | "daemon_started")) {
        o.sample("cairn_alerts_active", &[("event", ev)], *active.get(*ev).unwrap_or(&0) as f64);
    }
    Ok(o.text)
}

#[cfg(test)]
mod tests {
    #[test]
    fn label_values_are_escaped() {
        assert_eq!(super::esc("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}

//! Drill history and the evidence report for auditors (Markdown or self-contained HTML):
//! per source its targets, every drill with its result, the failures with their reasons,
//! and a chart of RTO over time (SVG, inline: no external assets).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use jiff::Timestamp;

use crate::catalog::Catalog;
use crate::drill::{Record, Verdict};
use crate::Result;

/// The drills of the catalog, oldest first. A drill whose process died before it
/// recorded anything appears as failed with the catalog's reason; running ones are left out.
pub fn history(catalog: &Catalog, source: Option<&str>, since: Option<Timestamp>) -> Result<Vec<Record>> {
    let mut out = Vec::new();
    for (job, record) in catalog.drills(source, since)? {
        if let Some(r) = record.and_then(|r| serde_json::from_str::<Record>(&r).ok()) {
            out.push(r);
            continue;
        }
        if job.status == "running" {
            continue;
        }
        out.push(Record {
            format: 1,
            job: job.id.clone(),
            host: job.host.clone(),
            source: job.source.clone(),
            class: job.class.clone(),
            kind: String::new(),
            scenario: format!("restore from {}", job.repository),
            repository: job.repository.clone(),
            trigger: job.trigger.clone(),
            actor: job.actor.clone(),
            started_at: job.started_at.clone().unwrap_or_default(),
            ended_at: job.ended_at.clone().unwrap_or_default(),
            pick: String::new(),
            snapshot: job.snapshot.clone(),
            snapshot_time: None,
            target_time: None,
            recovered_to: None,
            phases: Vec::new(),
            rto_secs: None,
            rpo_secs: None,
            rto_target_secs: None,
            rpo_target_secs: None,
            rto_met: None,
            rpo_met: None,
            restored_files: 0,
            restored_bytes: 0,
            checks: Vec::new(),
            verdict: Verdict::Failed,
            reason: Some(format!("{}: {}", job.status, job.error.as_deref().unwrap_or("no record"))),
            sandbox: String::new(),
            cleaned_up: false,
            notes: Vec::new(),
        });
    }
    Ok(out)
}

/// `12.3 s`, `4 min 5 s`, `1 h 2 min`.
pub fn seconds(s: f64) -> String {
    // A small drill recovers in milliseconds: "0.0 s" would say nothing.
    if s < 0.95 {
        format!("{:.0} ms", s * 1000.0)
    } else if s < 60.0 {
        format!("{s:.1} s")
    } else if s < 3600.0 {
        format!("{} min {} s", (s / 60.0) as u64, (s % 60.0) as u64)
    } else {
        format!("{} h {} min", (s / 3600.0) as u64, ((s % 3600.0) / 60.0) as u64)
    }
}

pub fn met(m: Option<bool>) -> &'static str {
    match m {
        Some(true) => "yes",
        Some(false) => "NO",
        None => "-",
    }
}

/// The RTO trend of drills (oldest first): the last value, the median, and the change of
/// the last against the first, as one line.
pub fn trend(drills: &[&Record]) -> String {
    let rto: Vec<f64> = drills.iter().filter_map(|d| d.rto_secs).collect();
    if rto.is_empty() {
        return "no successful drill yet".into();
    }
    let mut sorted = rto.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let (first, last) = (rto[0], rto[rto.len() - 1]);
    let change =
        if first > 0.0 { format!(", {:+.0}% since the first", (last - first) / first * 100.0) } else { String::new() };
    format!("RTO last {}, median {} over {} drills{change}", seconds(last), seconds(median), rto.len())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Markdown,
    Html,
}

/// The evidence document.
pub fn render(drills: &[Record], format: Format, now: Timestamp, title_host: &str) -> String {
    let mut by_source: BTreeMap<&str, Vec<&Record>> = BTreeMap::new();
    for d in drills {
        by_source.entry(&d.source).or_default().push(d);
    }
    let html = format == Format::Html;
    let esc = |s: &str| if html { escape(s) } else { s.replace('|', "\\|").replace('\n', " ") };
    let mut o = String::new();
    let title = format!("Restore drill evidence: {title_host}");
    if html {
        let _ = write!(
            o,
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{}</title>\n<style>body{{font-family:sans-serif;max-width:70em;margin:2em auto}}table{{border-collapse:collapse}}td,th{{border:1px solid #bbb;padding:.2em .5em;text-align:left}}.fail{{color:#b00}}</style></head><body>\n<h1>{}</h1>\n",
            escape(&title),
            escape(&title)
        );
        let _ =
            writeln!(o, "<p>Generated {} by cairn. {} drills of {} sources.</p>", now, drills.len(), by_source.len());
    } else {
        let _ = writeln!(
            o,
            "# {title}\n\nGenerated {now} by cairn. {} drills of {} sources.\n",
            drills.len(),
            by_source.len()
        );
    }
    if by_source.is_empty() {
        o.push_str(if html {
            "<p>No drills recorded in this period.</p>\n"
        } else {
            "No drills recorded in this period.\n"
        });
    }
    for (source, ds) in &by_source {
        let last = ds[ds.len() - 1];
        let targets = format!(
            "RTO target {}, RPO target {}",
            last.rto_target_secs.map(|s| seconds(s as f64)).unwrap_or_else(|| "none".into()),
            last.rpo_target_secs.map(|s| seconds(s as f64)).unwrap_or_else(|| "none".into())
        );
        let passed = ds.iter().filter(|d| d.verdict == Verdict::Passed).count();
        let summary = format!("{} drills, {passed} passed; {targets}; {}", ds.len(), trend(ds));
        if html {
            let _ = writeln!(
                o,
                "<h2>Source {} (class {})</h2>\n<p>{}</p>",
                escape(source),
                escape(&last.class),
                escape(&summary)
            );
            o.push_str(&chart(ds));
            o.push_str("<table><tr><th>Date</th><th>Scenario</th><th>Snapshot</th><th>Recovery time</th><th>RTO met</th><th>RPO achieved</th><th>RPO met</th><th>Result</th><th>Notes</th></tr>\n");
        } else {
            let _ = writeln!(o, "## Source {source} (class {})\n\n{summary}\n", last.class);
            let _ = writeln!(o, "![RTO over time](data:image/svg+xml;base64,{})\n", base64(chart(ds).as_bytes()));
            o.push_str(
                "| Date | Scenario | Snapshot | Recovery time | RTO met | RPO achieved | RPO met | Result | Notes |\n",
            );
            o.push_str("|---|---|---|---|---|---|---|---|---|\n");
        }
        for d in ds {
            let cells = [
                d.started_at.clone(),
                d.scenario.clone(),
                d.snapshot.as_deref().map(|s| s[..s.len().min(8)].to_string()).unwrap_or_else(|| "-".into()),
                d.rto_secs.map(seconds).unwrap_or_else(|| "-".into()),
                met(d.rto_met).into(),
                d.rpo_secs.map(seconds).unwrap_or_else(|| "-".into()),
                met(d.rpo_met).into(),
                d.verdict.as_str().into(),
                d.reason.clone().unwrap_or_default(),
            ];
            if html {
                let class = if d.verdict == Verdict::Passed { "" } else { " class=\"fail\"" };
                let _ = write!(o, "<tr{class}>");
                for c in &cells {
                    let _ = write!(o, "<td>{}</td>", escape(c));
                }
                o.push_str("</tr>\n");
            } else {
                let _ = writeln!(o, "| {} |", cells.iter().map(|c| esc(c)).collect::<Vec<_>>().join(" | "));
            }
        }
        if html {
            o.push_str("</table>\n");
        } else {
            o.push('\n');
        }
        let failed: Vec<&&Record> = ds.iter().filter(|d| d.verdict != Verdict::Passed).collect();
        if !failed.is_empty() {
            if html {
                o.push_str("<h3>Failures</h3>\n<ul>\n");
            } else {
                o.push_str("### Failures\n\n");
            }
            for d in failed {
                let mut what = format!("{} (job {}): {}", d.started_at, d.job, d.reason.as_deref().unwrap_or("failed"));
                for c in d.checks.iter().filter(|c| !c.ok) {
                    let _ = write!(what, "; check {} said: {}", c.check, c.output.lines().next().unwrap_or(""));
                }
                if html {
                    let _ = writeln!(o, "<li>{}</li>", escape(&what));
                } else {
                    let _ = writeln!(o, "- {}", esc(&what));
                }
            }
            o.push_str(if html { "</ul>\n" } else { "\n" });
        }
    }
    if html {
        o.push_str("</body></html>\n");
    }
    o
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// RTO of each drill over time as an SVG line chart, the target as a dashed line, failed
/// drills as red marks on the axis.
pub fn chart(ds: &[&Record]) -> String {
    let (w, h, pad) = (640.0, 200.0, 40.0);
    let times: Vec<f64> =
        ds.iter().map(|d| d.started_at.parse::<Timestamp>().map(|t| t.as_second() as f64).unwrap_or(0.0)).collect();
    let (t0, t1) =
        (times.iter().cloned().fold(f64::INFINITY, f64::min), times.iter().cloned().fold(f64::NEG_INFINITY, f64::max));
    let target = ds.last().and_then(|d| d.rto_target_secs).map(|t| t as f64);
    let top = ds.iter().filter_map(|d| d.rto_secs).fold(target.unwrap_or(0.0), f64::max).max(1.0) * 1.1;
    let x = |t: f64| if t1 > t0 { pad + (t - t0) / (t1 - t0) * (w - 2.0 * pad) } else { w / 2.0 };
    let y = |v: f64| h - pad - v / top * (h - 2.0 * pad);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" role=\"img\"><title>RTO over time</title>"
    );
    let _ = write!(
        s,
        "<line x1=\"{pad}\" y1=\"{0}\" x2=\"{1}\" y2=\"{0}\" stroke=\"#444\"/><line x1=\"{pad}\" y1=\"{pad}\" x2=\"{pad}\" y2=\"{0}\" stroke=\"#444\"/>",
        h - pad,
        w - pad
    );
    let _ = write!(s, "<text x=\"4\" y=\"{}\" font-size=\"11\">{}</text>", pad - 4.0, escape(&seconds(top)));
    let _ = write!(s, "<text x=\"{pad}\" y=\"{}\" font-size=\"11\">RTO per drill</text>", h - 8.0);
    if let Some(t) = target {
        let _ = write!(
            s,
            "<line x1=\"{pad}\" y1=\"{0:.1}\" x2=\"{1}\" y2=\"{0:.1}\" stroke=\"#c60\" stroke-dasharray=\"4 3\"/><text x=\"{2}\" y=\"{3:.1}\" font-size=\"11\" fill=\"#c60\">target {4}</text>",
            y(t),
            w - pad,
            w - pad - 90.0,
            y(t) - 4.0,
            escape(&seconds(t))
        );
    }
    let pts: Vec<String> =
        ds.iter().zip(&times).filter_map(|(d, t)| d.rto_secs.map(|v| format!("{:.1},{:.1}", x(*t), y(v)))).collect();
    if pts.len() > 1 {
        let _ = write!(s, "<polyline fill=\"none\" stroke=\"#06c\" stroke-width=\"2\" points=\"{}\"/>", pts.join(" "));
    }
    for (d, t) in ds.iter().zip(&times) {
        match d.rto_secs {
            Some(v) if d.verdict == Verdict::Passed => {
                let _ = write!(s, "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"#06c\"/>", x(*t), y(v));
            }
            Some(v) => {
                let _ = write!(s, "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"4\" fill=\"#b00\"/>", x(*t), y(v));
            }
            None => {
                let _ = write!(
                    s,
                    "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"12\" fill=\"#b00\">x</text>",
                    x(*t) - 3.0,
                    h - pad + 4.0
                );
            }
        }
    }
    s.push_str("</svg>");
    s
}

pub(crate) fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_read_at_every_scale() {
        assert_eq!(super::seconds(0.042), "42 ms");
        assert_eq!(super::seconds(1.25), "1.2 s");
        assert_eq!(super::seconds(75.0), "1 min 15 s");
        assert_eq!(super::seconds(7260.0), "2 h 1 min");
    }

    #[test]
    fn base64_matches_the_rfc_vectors() {
        for (i, o) in
            [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("fooba", "Zm9vYmE=")]
        {
            assert_eq!(super::base64(i.as_bytes()), o);
        }
    }
}

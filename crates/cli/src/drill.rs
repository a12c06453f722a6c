//! `cairn drill`, `cairn drill report`, `cairn drills`.

use anyhow::{bail, Result};
use cairn_daemon::catalog::Trigger;
use cairn_daemon::drill::{DrillRequest, Record, Verdict};
use cairn_daemon::report::{self, Format};
use jiff::Timestamp;

use crate::args::{DrillAction, DrillArgs, DrillReportArgs, DrillsArgs, ReportFormat};
use crate::context::Context;
use crate::policy::{env, local, since};
use crate::{output, Exit};

pub fn run(ctx: &Context, a: &DrillArgs) -> Result<()> {
    if let Some(DrillAction::Report(r)) = &a.action {
        return report_cmd(ctx, r);
    }
    let Some(source) = &a.source else { bail!("name the source to drill (cairn drill SOURCE)") };
    let env = env(ctx)?;
    env.source(source)?;
    cairn_daemon::daemon::install_signal_handlers();
    let req = DrillRequest {
        source: source.clone(),
        snapshot: a.snapshot.clone(),
        time: a.time.clone(),
        from: a.from.clone(),
        keep: a.keep,
        trigger: Trigger::Manual,
        actor: cairn_daemon::jobs::actor(),
        window: None,
    };
    // A bar over the restore phase (the validation that follows is the drill's own).
    let meter = cairn_repo::Meter::default();
    let read = || crate::output::Reading::of_meter(&meter, "restores");
    let rec = crate::output::with_meter(crate::output::show(&ctx.g), "drill", &read, || {
        cairn_daemon::drill::run_metered(&env, &req, cairn_daemon::daemon::stop_flag(), &meter)
    })?;
    if ctx.g.json {
        println!("{}", serde_json::to_string(&rec)?);
    } else if !(ctx.g.quiet && rec.verdict == Verdict::Passed) {
        print_record(&rec);
    }
    match rec.verdict {
        Verdict::Passed => Ok(()),
        _ => Err(Exit(1).into()),
    }
}

fn print_record(r: &Record) {
    let mut out = Vec::new();
    out.push(format!("drill of {} (job {}): {}", r.source, r.job, r.verdict.as_str()));
    if let Some(why) = &r.reason {
        out.push(format!("  reason: {why}"));
    }
    out.push(format!("  scenario: {}", r.scenario));
    if let Some(s) = &r.snapshot {
        out.push(format!(
            "  recovery point: snapshot {} of {} ({}){}",
            &s[..s.len().min(8)],
            r.snapshot_time.as_deref().unwrap_or("?"),
            r.pick,
            r.recovered_to.as_deref().map(|t| format!(", data up to {t}")).unwrap_or_default()
        ));
    }
    let phases: Vec<String> = r.phases.iter().map(|p| format!("{} {}", p.name, report::seconds(p.secs))).collect();
    out.push(format!("  phases: {}", phases.join(", ")));
    let target = |t: Option<i64>, m: Option<bool>| match t {
        Some(t) => format!(
            " (target {}: {})",
            report::seconds(t as f64),
            if m == Some(true) {
                "met"
            } else if m == Some(false) {
                "MISSED"
            } else {
                "not judged"
            }
        ),
        None => " (no target)".into(),
    };
    out.push(format!(
        "  RTO {}{}; RPO {}{}",
        r.rto_secs.map(report::seconds).unwrap_or_else(|| "-".into()),
        target(r.rto_target_secs, r.rto_met),
        r.rpo_secs.map(report::seconds).unwrap_or_else(|| "-".into()),
        target(r.rpo_target_secs, r.rpo_met),
    ));
    for c in &r.checks {
        let first = c.output.lines().next().unwrap_or("");
        out.push(format!("  {} {}: {first}", if c.ok { "ok  " } else { "FAIL" }, c.check));
    }
    for n in &r.notes {
        out.push(format!("  note: {n}"));
    }
    out.push(format!("  sandbox {}: {}", r.sandbox, if r.cleaned_up { "removed" } else { "left" }));
    for l in out {
        println!("{}", output::sanitize(&l));
    }
}

pub fn history(ctx: &Context, a: &DrillsArgs) -> Result<()> {
    let env = env(ctx)?;
    if let Some(s) = &a.source {
        env.source(s)?;
    }
    let since = a.since.as_deref().map(|s| since(s, Timestamp::now())).transpose()?;
    let drills = match &a.repository {
        Some(name) => {
            let repo = env.open_repository(name)?;
            let (mut records, bad) = cairn_daemon::drill::records(&repo)?;
            for (path, why) in bad {
                eprintln!("cairn: warning: {path}: {}", output::sanitize(&why));
            }
            records.retain(|r| {
                a.source.as_ref().is_none_or(|s| *s == r.source)
                    && since.is_none_or(|t| r.started_at.parse::<Timestamp>().is_ok_and(|s| s >= t))
            });
            records
        }
        None => report::history(&env.catalog()?, a.source.as_deref(), since)?,
    };
    if ctx.g.json {
        println!("{}", serde_json::to_string(&drills)?);
        return Ok(());
    }
    println!(
        "{:<24} {:<14} {:<9} {:>12} {:>10} {:<4} {:>12} {:<4} {:<13} notes",
        "DATE", "SOURCE", "SCENARIO", "RECOVERY", "RTO", "MET", "RPO", "MET", "RESULT"
    );
    for d in &drills {
        let date = d.started_at.parse::<Timestamp>().map(local).unwrap_or_else(|_| d.started_at.clone());
        let scenario = if d.scenario.starts_with("site failure") { "copy" } else { "primary" };
        let line = format!(
            "{:<24} {:<14} {:<9} {:>12} {:>10} {:<4} {:>12} {:<4} {:<13} {}",
            date,
            d.source,
            scenario,
            d.rto_secs.map(report::seconds).unwrap_or_else(|| "-".into()),
            d.rto_target_secs.map(|t| report::seconds(t as f64)).unwrap_or_else(|| "-".into()),
            report::met(d.rto_met),
            d.rpo_secs.map(report::seconds).unwrap_or_else(|| "-".into()),
            report::met(d.rpo_met),
            d.verdict.as_str(),
            d.reason.as_deref().unwrap_or("")
        );
        println!("{}", output::sanitize(&line));
    }
    let mut sources: Vec<&str> = drills.iter().map(|d| d.source.as_str()).collect();
    sources.sort();
    sources.dedup();
    if !sources.is_empty() {
        println!();
    }
    for s in sources {
        let ds: Vec<&Record> = drills.iter().filter(|d| d.source == s).collect();
        println!("{}", output::sanitize(&format!("{s}: {}", report::trend(&ds))));
    }
    Ok(())
}

fn report_cmd(ctx: &Context, a: &DrillReportArgs) -> Result<()> {
    let env = env(ctx)?;
    if let Some(s) = &a.source {
        env.source(s)?;
    }
    let catalog = env.catalog()?;
    let now = Timestamp::now();
    let since = a.since.as_deref().map(|s| since(s, now)).transpose()?;
    let drills = report::history(&catalog, a.source.as_deref(), since)?;
    let format = match a.format {
        ReportFormat::Md => Format::Markdown,
        ReportFormat::Html => Format::Html,
    };
    print!("{}", report::render(&drills, format, now, &env.host));
    Ok(())
}

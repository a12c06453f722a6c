//! The policy commands: `policy check`, `daemon`, `run`, `jobs`, `status`. Arguments ->
//! the daemon crate's operations -> text or JSON.

use std::path::Path;

use anyhow::{anyhow, bail, Result};
use cairn_daemon::catalog::{Filter, Kind, Status, Trigger};
use cairn_daemon::jobs::{Env, JobReport, JobRequest};
use cairn_policy::file::{human, Origin, Policy, Set, SourceKind, Timing};
use jiff::{SignedDuration, Timestamp};

use crate::args::{DaemonAction, DaemonArgs, JobsArgs, PolicyAction, PolicyArgs, RunArgs, StatusArgs};
use crate::context::Context;
use crate::{output, Exit};

/// Reads and validates the policy; a mistake in it is one line and exit 2.
fn load(path: &Path) -> Result<Policy> {
    match cairn_daemon::daemon::load_policy(path) {
        Ok(p) => Ok(p),
        Err(cairn_daemon::Error::Policy(e)) => {
            eprintln!("cairn: error: {}", output::sanitize(&e.to_string()));
            Err(Exit(2).into())
        }
        Err(cairn_daemon::Error::Io { what, source }) if source.kind() == std::io::ErrorKind::NotFound => {
            bail!("{what}: no such file (give the policy with --config or CAIRN_CONFIG)")
        }
        Err(e) => Err(e.into()),
    }
}

pub fn env(ctx: &Context) -> Result<Env> {
    let policy = load(&ctx.g.config)?;
    let mut env = Env::new(policy, &ctx.g.config, ctx.rt.clone(), ctx.cache_base());
    // Jobs this process runs itself (`cairn run` without a daemon, `cairn drill`).
    env.via = "cli";
    Ok(env)
}

fn origin<T>(s: &Set<T>) -> &'static str {
    match s.origin {
        Origin::Class => "(class)",
        Origin::Source => "(source)",
        Origin::Default => "(default)",
    }
}

fn timing_text(t: &Timing) -> String {
    let mut s = format!("{} {}", t.schedule.text(), t.schedule.time_zone());
    if t.jitter > SignedDuration::ZERO {
        s.push_str(&format!(" jitter {}", human(t.jitter)));
    }
    s
}

fn opt_duration(d: Option<SignedDuration>) -> String {
    d.map(human).unwrap_or_else(|| "-".into())
}

pub fn local(t: Timestamp) -> String {
    let z = t.to_zoned_datetime(cairn_fs::local_time_zone());
    z.strftime("%Y-%m-%d %H:%M:%S %Z").to_string()
}

fn keep_text(k: &cairn_policy::KeepPolicy) -> String {
    let mut v = Vec::new();
    for (name, n) in [
        ("last", k.last),
        ("hourly", k.hourly),
        ("daily", k.daily),
        ("weekly", k.weekly),
        ("monthly", k.monthly),
        ("yearly", k.yearly),
    ] {
        if let Some(n) = n.filter(|n| *n != 0) {
            v.push(format!("{name} {}", if n < 0 { "all".to_string() } else { n.to_string() }));
        }
    }
    let w = k.within;
    if w != cairn_policy::Duration::default() {
        v.push(format!("within {}y{}mo{}d{}h", w.years, w.months, w.days, w.hours));
    }
    for t in &k.tags {
        v.push(format!("tag {}", t.join(",")));
    }
    v.join(", ")
}

pub fn check(ctx: &Context, a: &PolicyArgs) -> Result<()> {
    let PolicyAction::Check { file, next } = &a.action;
    let path = file.as_deref().unwrap_or(&ctx.g.config);
    let p = load(path)?;
    let now = Timestamp::now();
    if ctx.g.json {
        let sources: Vec<serde_json::Value> = p
            .sources
            .values()
            .map(|s| {
                serde_json::json!({
                    "name": s.name, "class": s.class, "kind": s.kind.name(),
                    "repository": {"value": s.repository.value, "from": s.repository.origin.as_str()},
                    "schedules": {"value": s.schedules.value.iter().map(timing_text).collect::<Vec<_>>(), "from": s.schedules.origin.as_str()},
                    "next_runs": s.schedules.value.iter().map(|t| t.schedule.upcoming(now, *next).iter().map(|x| x.to_string()).collect::<Vec<_>>()).collect::<Vec<_>>(),
                    "rpo_secs": {"value": s.rpo.value.map(|d| d.as_secs()), "from": s.rpo.origin.as_str()},
                    "rto_secs": {"value": s.rto.value.map(|d| d.as_secs()), "from": s.rto.origin.as_str()},
                    "copy_to": {"value": s.copy_to.value.iter().map(|c| serde_json::json!({"repository": c.repository, "keep": c.keep.as_ref().map(keep_text)})).collect::<Vec<_>>(), "from": s.copy_to.origin.as_str()},
                    "retention": {"value": s.retention.value.as_ref().map(|r| serde_json::json!({"keep": keep_text(&r.keep), "schedule": timing_text(&r.timing), "prune": r.prune, "pitr_window_secs": r.pitr_window.map(|d| d.as_secs())})), "from": s.retention.origin.as_str()},
                    "verify": {"value": s.verify.value.as_ref().map(|v| serde_json::json!({"schedule": timing_text(&v.timing), "read_data_subset_percent": v.read_data_subset})), "from": s.verify.origin.as_str()},
                    "drill": {"value": s.drill.value.as_ref().map(|d| serde_json::json!({"schedule": d.timing.as_ref().map(timing_text), "pick": d.pick.as_str(), "from": d.from, "timeout_secs": d.timeout.as_secs(), "root": d.root})), "from": s.drill.origin.as_str()},
                    "validate": {"value": s.validate.value.iter().map(|c| c.describe()).collect::<Vec<_>>(), "from": s.validate.origin.as_str()},
                    "compression": {"value": s.compression.value.to_string(), "from": s.compression.origin.as_str()},
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({"file": path.display().to_string(), "repositories": p.repositories.keys().collect::<Vec<_>>(),
                "classes": p.classes.keys().collect::<Vec<_>>(), "alerts": p.alerts.keys().collect::<Vec<_>>(), "sources": sources})
        );
        return Ok(());
    }
    if ctx.g.quiet {
        return Ok(());
    }
    let n = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
    println!(
        "{}: OK ({}, {}, {})",
        path.display(),
        n(p.repositories.len(), "repository").replace("repositorys", "repositories"),
        n(p.classes.len(), "class").replace("classs", "classes"),
        n(p.sources.len(), "source")
    );
    for r in p.repositories.values() {
        let mut extra = Vec::new();
        if let Some(d) = r.object_lock_days {
            extra.push(format!("object lock {d} days"));
        }
        if let Some(c) = &r.storage_class {
            extra.push(format!("storage class {c}"));
        }
        if let Some(q) = r.quota {
            extra.push(format!("quota {}", output::bytes(q)));
        }
        let extra = if extra.is_empty() { String::new() } else { format!(" ({})", extra.join(", ")) };
        println!("\nrepository {}: {}{extra}", r.name, output::sanitize(&r.url));
    }
    for a in p.alerts.values() {
        let to = match &a.target {
            cairn_policy::file::Target::Webhook { url, .. } | cairn_policy::file::Target::Ping { url } => url.clone(),
            cairn_policy::file::Target::Command { command } => command.clone(),
            cairn_policy::file::Target::Email(e) => format!("{} via {}:{}", e.to.join(", "), e.host, e.port),
        };
        let events = if a.events.is_empty() {
            format!("events of severity {} and above", a.min_severity.as_str())
        } else {
            a.events.join(", ")
        };
        let mut only = Vec::new();
        if !a.classes.is_empty() {
            only.push(format!("classes {}", a.classes.join(", ")));
        }
        if !a.sources.is_empty() {
            only.push(format!("sources {}", a.sources.join(", ")));
        }
        let only = if only.is_empty() { String::new() } else { format!("; only {}", only.join("; ")) };
        println!(
            "\nalert {} ({} {}): {events}{only}; repeat {}",
            a.name,
            a.target.kind(),
            output::sanitize(&to),
            cairn_policy::file::human(a.repeat)
        );
    }
    for s in p.sources.values() {
        let what = match &s.kind {
            SourceKind::Files { paths, .. } => format!("files {}", paths.join(" ")),
            SourceKind::Command { command, stdin_name } => format!("command {command:?} -> {stdin_name}"),
            SourceKind::CommandDir { command } => format!("command {command:?} writing a directory"),
            SourceKind::Postgres { data_dir, .. } => format!("postgres {data_dir}"),
            SourceKind::Sqlite { path } => format!("sqlite {path}"),
        };
        println!("\nsource {} (class {}): {}", s.name, s.class, output::sanitize(&what));
        let row = |k: &str, v: String, o: &str| println!("  {k:<13} {:<40} {o}", output::sanitize(&v));
        row("repository", s.repository.value.clone(), origin(&s.repository));
        let sched = if s.schedules.value.is_empty() {
            "none (manual only)".to_string()
        } else {
            s.schedules.value.iter().map(timing_text).collect::<Vec<_>>().join("; ")
        };
        row("schedule", sched, origin(&s.schedules));
        row("rpo", opt_duration(s.rpo.value), origin(&s.rpo));
        row("rto", opt_duration(s.rto.value), origin(&s.rto));
        row("max_duration", opt_duration(s.max_duration.value), origin(&s.max_duration));
        let ret = match &s.retention.value {
            Some(r) => {
                let mut t = format!("keep {}; at {}", keep_text(&r.keep), timing_text(&r.timing));
                if let Some(w) = r.pitr_window {
                    t.push_str(&format!("; pitr window {}", human(w)));
                }
                if !r.prune {
                    t.push_str("; no prune");
                }
                t
            }
            None => "none (everything kept)".into(),
        };
        row("retention", ret, origin(&s.retention));
        // A copy with its own keep-rules says them; the others keep what the retention keeps.
        let copies: Vec<String> = s
            .copy_to
            .value
            .iter()
            .map(|c| match &c.keep {
                Some(k) => format!("{} (keep {})", c.repository, keep_text(k)),
                None => c.repository.clone(),
            })
            .collect();
        row("copy_to", if copies.is_empty() { "-".into() } else { copies.join(", ") }, origin(&s.copy_to));
        let verify = s
            .verify
            .value
            .as_ref()
            .map(|v| format!("{}, read {}% of data", timing_text(&v.timing), v.read_data_subset))
            .unwrap_or_else(|| "-".into());
        row("verify", verify, origin(&s.verify));
        let drill = s
            .drill
            .value
            .as_ref()
            .map(|d| {
                let when = d.timing.as_ref().map(timing_text).unwrap_or_else(|| "by cairn drill only".into());
                let from = d.from.as_ref().map(|f| format!(", from {f}")).unwrap_or_default();
                format!("{when}, pick {}{from}, timeout {}", d.pick.as_str(), cairn_policy::file::human(d.timeout))
            })
            .unwrap_or_else(|| "-".into());
        row("drill", drill, origin(&s.drill));
        let checks: Vec<String> = s.validate.value.iter().map(|c| c.describe()).collect();
        row("validate", if checks.is_empty() { "-".into() } else { checks.join("; ") }, origin(&s.validate));
        let h = &s.hooks.value;
        let hooks: Vec<&str> =
            [("before", &h.before), ("after", &h.after), ("on_failure", &h.on_failure), ("finally", &h.finally)]
                .iter()
                .filter(|(_, x)| x.is_some())
                .map(|(n, _)| *n)
                .collect();
        row("hooks", if hooks.is_empty() { "-".into() } else { hooks.join(", ") }, origin(&s.hooks));
        row("compression", s.compression.value.to_string(), origin(&s.compression));
        row("tags", if s.tags.value.is_empty() { "-".into() } else { s.tags.value.join(", ") }, origin(&s.tags));
        for t in &s.schedules.value {
            let runs: Vec<String> = t.schedule.upcoming(now, *next).into_iter().map(local).collect();
            println!("  next runs of {}:", t.schedule.text());
            for r in runs {
                println!("    {r}");
            }
        }
    }
    Ok(())
}

pub fn daemon(ctx: &Context, a: &DaemonArgs) -> Result<()> {
    let env = env(ctx)?;
    match a.action {
        Some(DaemonAction::Reload) => {
            // Through the control socket the daemon says whether it took the new policy;
            // a bare SIGHUP cannot say, and is what a daemon without the socket or too old
            // to know the request gets.
            let asked = cairn_daemon::control::request_reload(&env)?;
            let asked = asked.filter(|r| !matches!(r, Err(why) if why == cairn_daemon::control::UNKNOWN_REQUEST));
            match asked {
                Some(Ok(done)) => {
                    if !ctx.g.quiet {
                        println!("{done} ({})", ctx.g.config.display());
                    }
                    Ok(())
                }
                Some(Err(why)) => bail!("{why}"),
                None => {
                    let pid = cairn_daemon::daemon::reload(&env)?;
                    if !ctx.g.quiet {
                        println!("asked the daemon (pid {pid}) to re-read {}", ctx.g.config.display());
                    }
                    Ok(())
                }
            }
        }
        None => {
            drop(env);
            cairn_daemon::daemon::run(&ctx.g.config, ctx.rt.clone(), ctx.cache_base(), &cairn_api::spawn)?;
            Ok(())
        }
    }
}

fn print_job(ctx: &Context, what: &str, j: &JobReport) {
    if ctx.g.quiet && j.status.is_success() {
        return;
    }
    let mut line = format!("job {} ({what}) {}", j.id, j.status.as_str());
    if let Some(s) = &j.snapshot {
        line.push_str(&format!(": snapshot {}", &s[..s.len().min(8)]));
    }
    if let Some(e) = &j.error {
        line.push_str(&format!(": {}", output::sanitize(e)));
    }
    println!("{line}");
}

fn job_json(j: &JobReport) -> serde_json::Value {
    serde_json::json!({"id": j.id, "status": j.status.as_str(), "snapshot": j.snapshot, "error": j.error,
        "copies": j.copies.iter().map(job_json).collect::<Vec<_>>()})
}

pub fn run(ctx: &Context, a: &RunArgs) -> Result<()> {
    let env = env(ctx)?;
    env.source(&a.source)?;
    let req = JobRequest {
        client: None,
        source: a.source.clone(),
        kind: Kind::Backup,
        trigger: Trigger::Manual,
        actor: cairn_daemon::jobs::actor(),
        label: a.label.clone(),
        reason: a.reason.clone(),
        window: None,
    };
    // Through the running daemon when there is one (its rights, its accounting; the actor
    // is who asked, as the kernel says); else here, under the same lock and catalog.
    let through = cairn_daemon::control::request_run(&env, &a.source, a.label.as_deref(), a.reason.as_deref(), a.wait)?;
    let j = match through {
        Some(Ok(j)) => j,
        Some(Err(why)) => bail!("{why}"),
        None => match cairn_daemon::jobs::run(&env, &req, a.wait) {
            Ok(j) => j,
            Err(e @ cairn_daemon::Error::Busy { .. }) => bail!("{e}; --wait waits for it to end"),
            Err(e) => return Err(e.into()),
        },
    };
    if ctx.g.json {
        println!("{}", job_json(&j));
    } else {
        print_job(ctx, &format!("backup of {}", a.source), &j);
        for c in &j.copies {
            print_job(ctx, "copy", c);
        }
    }
    if !j.copies.iter().all(|c| c.status.is_success()) {
        return Err(Exit(1).into());
    }
    match j.status {
        Status::Succeeded => Ok(()),
        // As `cairn backup`: saved, but some files could not be read.
        Status::Partial => Err(Exit(3).into()),
        _ => Err(Exit(1).into()),
    }
}

pub fn since(s: &str, now: Timestamp) -> Result<Timestamp> {
    if let Ok(t) = s.parse::<Timestamp>() {
        return Ok(t);
    }
    let d = cairn_policy::file::fixed_duration(s).map_err(|e| anyhow!("--since: {e} (or an RFC 3339 time)"))?;
    now.checked_sub(d).map_err(|_| anyhow!("--since {s:?} is too far back"))
}

fn secs_text(s: Option<i64>) -> String {
    s.map(|s| human(SignedDuration::from_secs(s))).unwrap_or_else(|| "-".into())
}

pub fn jobs(ctx: &Context, a: &JobsArgs) -> Result<()> {
    let env = env(ctx)?;
    let catalog = env.catalog()?;
    settle_orphans(&env, &catalog);
    let f = Filter {
        source: a.source.clone(),
        kind: None,
        since: a.since.as_deref().map(|s| since(s, Timestamp::now())).transpose()?,
        limit: Some(a.limit),
    };
    let jobs = catalog.jobs(&f)?;
    if ctx.g.json {
        println!("{}", serde_json::to_string(&jobs)?);
        return Ok(());
    }
    println!(
        "{:<16} {:<9} {:<16} {:<9} {:<11} {:<24} {:>8}  result",
        "ID", "KIND", "SOURCE", "TRIGGER", "STATUS", "STARTED", "TOOK"
    );
    for j in &jobs {
        let took = match (j.started_ms, j.ended_ms) {
            (Some(s), Some(e)) => human(SignedDuration::from_secs((e - s).max(0) / 1000)),
            _ => "-".into(),
        };
        let started = j.started_ms.and_then(|m| Timestamp::from_millisecond(m).ok()).map(local).unwrap_or_default();
        let result = match (&j.snapshot, &j.error) {
            (_, Some(e)) => e.clone(),
            (Some(s), None) => format!("snapshot {}", &s[..s.len().min(8)]),
            _ => String::new(),
        };
        let mut line = format!(
            "{:<16} {:<9} {:<16} {:<9} {:<11} {:<24} {:>8}  {}",
            j.id, j.kind, j.source, j.trigger, j.status, started, took, result
        );
        if let Some(l) = &j.label {
            line.push_str(&format!(" [label: {l}]"));
        }
        println!("{}", output::sanitize(&line));
    }
    Ok(())
}

/// Jobs of this host still marked running whose lock is free lost their process (a daemon
/// killed with -9, a machine that stopped): recorded as interrupted now, as the next
/// daemon start would, so that `jobs` and `status` do not show them running until then.
/// Best effort: a user who may read the catalog but not write it sees them as recorded.
fn settle_orphans(env: &Env, catalog: &cairn_daemon::catalog::Catalog) {
    let _ = cairn_daemon::daemon::mark_interrupted(env, catalog);
}

pub fn status(ctx: &Context, a: &StatusArgs) -> Result<()> {
    let env = env(ctx)?;
    if let Some(s) = &a.source {
        env.source(s)?;
    }
    let fresh = !env.catalog_path.exists();
    let catalog = env.catalog()?;
    if fresh {
        // A lost (or never made) catalog is rebuilt from what the repositories hold.
        let n = cairn_daemon::daemon::rebuild_catalog(&env, &catalog)?;
        if n > 0 && !ctx.g.quiet && !ctx.g.json {
            eprintln!("cairn: catalog {} rebuilt from the repositories ({n} backup jobs)", env.catalog_path.display());
        }
    }
    settle_orphans(&env, &catalog);
    let rows = cairn_daemon::status::status(&env, &catalog, Timestamp::now(), a.source.as_deref())?;
    if ctx.g.json {
        println!("{}", serde_json::to_string(&rows)?);
        return Ok(());
    }
    println!(
        "{:<16} {:<10} {:<10} {:<24} {:>9} {:>7} {:<9} {:<12} next run",
        "SOURCE", "CLASS", "REPO", "NEWEST", "AGE", "RPO", "STATE", "LAST JOB"
    );
    for r in &rows {
        let newest =
            r.newest.as_deref().and_then(|t| t.parse::<Timestamp>().ok()).map(local).unwrap_or_else(|| "none".into());
        let next =
            r.next_run.as_deref().and_then(|t| t.parse::<Timestamp>().ok()).map(local).unwrap_or_else(|| "-".into());
        let line = format!(
            "{:<16} {:<10} {:<10} {:<24} {:>9} {:>7} {:<9} {:<12} {}",
            r.source,
            r.class,
            r.repository,
            newest,
            secs_text(r.data_age_secs),
            secs_text(r.rpo_secs),
            r.rpo_state.as_str(),
            r.last_status.as_deref().unwrap_or("-"),
            next
        );
        println!("{}", output::sanitize(&line));
        if let Some(e) = &r.error {
            println!("  repository unreadable: {}", output::sanitize(e));
        }
        if let (Some(s), Some(e)) = (&r.last_status, &r.last_error) {
            if s != "succeeded" {
                println!("  last job {}: {}", r.last_job.as_deref().unwrap_or("?"), output::sanitize(e));
            }
        }
        for c in &r.copies {
            match &c.error {
                Some(e) => println!("  copy {}: unreadable: {}", c.repository, output::sanitize(e)),
                None => println!("  copy {}: lag {}", c.repository, secs_text(c.lag_secs)),
            }
        }
    }
    Ok(())
}

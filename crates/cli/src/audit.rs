//! `cairn audit log|verify`, and the record each acting command leaves in the repository
//! it acted on (`cairn_audit` has the format and the checks).

use std::path::PathBuf;

use anyhow::Result;
use cairn_audit::{Target, Writer};
use cairn_format::audit::Anchor;
use cairn_repo::Repository;
use jiff::Timestamp;

use crate::args::{AuditAction, AuditArgs};
use crate::context::Context;
use crate::{output, Exit};

/// Where this host remembers the heads it wrote (an anchor `audit verify` checks).
fn cache_dir() -> Option<PathBuf> {
    crate::context::cache_home().map(|c| c.join("cairn/audit"))
}

fn writer() -> Writer {
    Writer::new(&cairn_fs::hostname(), cache_dir())
}

/// The target `ctx`'s repository, with nothing more said yet.
pub fn target(ctx: &Context) -> Target {
    Target { repository: ctx.location(), ..Target::default() }
}

/// The anchor a snapshot written now records; none if the log cannot be read (the
/// backup goes on: `audit verify` reports the damage).
pub fn anchor(repo: &Repository) -> Option<Anchor> {
    writer().anchor(repo).ok().flatten()
}

/// What a command says of itself in its record, filled in as it goes.
pub struct Note {
    pub target: Target,
    pub message: Option<String>,
    /// Nothing to record after all (a dry run).
    pub skip: bool,
}

/// Runs `f` (the command's work on `repo`) and appends the record of `action`: outcome
/// `ok`, `partial` (exit code 3) or `failed` with the error's line.
pub fn recorded<T>(
    ctx: &Context,
    repo: &Repository,
    action: &str,
    f: impl FnOnce(&mut Note) -> Result<T>,
) -> Result<T> {
    let mut n = Note { target: target(ctx), message: None, skip: false };
    let r = f(&mut n);
    if !n.skip {
        note(repo, action, n.target, &r, n.message);
    }
    r
}

/// Appends the record of `action` on `target`, its outcome taken from `result`. A record
/// that cannot be written is a warning: the action itself happened and its result stands.
pub fn note<T>(repo: &Repository, action: &str, target: Target, result: &Result<T>, message: Option<String>) {
    let (outcome, message) = match result {
        Ok(_) => ("ok", message),
        Err(e) => match e.downcast_ref::<Exit>() {
            Some(Exit(3)) => ("partial", message),
            Some(_) => ("failed", message),
            None => ("failed", Some(output::one_line(e))),
        },
    };
    let rec = cairn_audit::record(&cairn_audit::local_actor("cli"), action, target, outcome, message);
    if let Err(e) = writer().append(repo, vec![rec]) {
        eprintln!("cairn: warning: audit record not written: {}", output::sanitize(&e.to_string()));
    }
}

pub fn run(ctx: &Context, a: &AuditArgs) -> Result<()> {
    let repo = ctx.open()?;
    let loaded = cairn_audit::load(&repo, matches!(a.action, AuditAction::Log { .. }))?;
    match &a.action {
        AuditAction::Log { since, actor, action } => {
            let since = since.as_deref().map(|s| crate::policy::since(s, Timestamp::now())).transpose()?;
            let shown: Vec<_> = cairn_audit::records(&loaded)
                .into_iter()
                .filter(|p| {
                    let r = &p.record;
                    since.is_none_or(|s| r.time.parse::<Timestamp>().is_ok_and(|t| t >= s))
                        && action.as_deref().is_none_or(|x| r.action == x)
                        && actor.as_deref().is_none_or(|x| {
                            r.actor.user == x || r.actor.host == x || r.actor.token.as_deref() == Some(x)
                        })
                })
                .collect();
            if ctx.g.json {
                let v: Vec<serde_json::Value> = shown
                    .iter()
                    .map(|p| {
                        serde_json::json!({"repository": p.repository, "chain": p.chain, "n": p.n,
                            "time": p.record.time, "actor": p.record.actor, "action": p.record.action,
                            "target": p.record.target, "outcome": p.record.outcome,
                            "reason": p.record.reason, "message": p.record.message})
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(v));
                return Ok(());
            }
            for p in &shown {
                let r = &p.record;
                let who = match &r.actor.token {
                    Some(t) => format!("token {t}"),
                    None => format!("{}@{}", r.actor.user, r.actor.host),
                };
                let mut what = r.target.snapshots.iter().map(|s| s.get(..8).unwrap_or(s)).collect::<Vec<_>>().join(",");
                if let Some(s) = &r.target.source {
                    what = format!("{s} {what}");
                }
                if !r.target.paths.is_empty() {
                    what = format!("{what} {}", r.target.paths.join(" "));
                }
                let line = format!(
                    "{}  {:<24} {:<11} {:<8} {}{}",
                    crate::policy::local(r.time.parse::<Timestamp>().unwrap_or_default()),
                    format!("{who} ({})", r.actor.via),
                    r.action,
                    r.outcome,
                    what.trim(),
                    r.message.as_deref().map(|m| format!(": {m}")).unwrap_or_default()
                );
                println!("{}", output::sanitize(&line));
            }
            Ok(())
        }
        AuditAction::Forget { older_than, before, dry_run } => {
            let now = Timestamp::now();
            let before = match (older_than, before) {
                (Some(d), _) => {
                    let d = cairn_policy::file::fixed_duration(d).map_err(|e| anyhow::anyhow!("--older-than: {e}"))?;
                    now.checked_sub(d).map_err(|_| anyhow::anyhow!("--older-than {d:?} is too far back"))?
                }
                (None, Some(t)) => t
                    .parse::<Timestamp>()
                    .map_err(|e| anyhow::anyhow!("--before {t:?} is not an RFC 3339 time: {e}"))?,
                (None, None) => anyhow::bail!("give --older-than or --before"),
            };
            let done = cairn_audit::expire(&repo, &writer(), &cairn_audit::local_actor("cli"), before, *dry_run)?;
            if ctx.g.json {
                let v: Vec<serde_json::Value> = done
                    .iter()
                    .map(|e| serde_json::json!({"repository": e.repository, "chain": e.chain, "from": e.from, "below": e.below, "records": e.records}))
                    .collect();
                println!("{}", serde_json::json!({"dry_run": dry_run, "before": before.to_string(), "chains": v}));
            } else if !ctx.g.quiet {
                for e in &done {
                    println!(
                        "chain {} (repository {}): segments {}..{} ({} records) {}",
                        output::sanitize(&e.chain),
                        e.repository.get(..8).unwrap_or(&e.repository),
                        e.from,
                        e.below - 1,
                        e.records,
                        if *dry_run { "would be removed" } else { "removed" }
                    );
                }
                if done.is_empty() {
                    println!("nothing ended before {}", crate::policy::local(before));
                }
            }
            Ok(())
        }
        AuditAction::Verify => {
            // The daemon's own memory of its heads, when this host runs one for a policy.
            let state_dir =
                if ctx.g.config.exists() { crate::policy::env(ctx).ok().map(|e| e.state_dir) } else { None };
            let witnesses = cairn_daemon::audit::witnesses(&repo, cache_dir().as_deref(), state_dir.as_deref())?;
            let r = cairn_audit::verify(&loaded, &witnesses);
            if ctx.g.json {
                println!(
                    "{}",
                    serde_json::json!({"chains": r.chains, "segments": r.segments, "records": r.records,
                        "anchors": witnesses.len(), "findings": r.findings})
                );
            } else {
                for f in &r.findings {
                    eprintln!("cairn: audit: {}", output::sanitize(f));
                }
                if !ctx.g.quiet {
                    println!(
                        "{} chain{}, {} segments, {} records, {} anchors checked: {}",
                        r.chains,
                        if r.chains == 1 { "" } else { "s" },
                        r.segments,
                        r.records,
                        witnesses.len(),
                        if r.findings.is_empty() {
                            "intact".to_string()
                        } else {
                            format!("{} problems", r.findings.len())
                        }
                    );
                }
            }
            if r.findings.is_empty() {
                Ok(())
            } else {
                Err(Exit(1).into())
            }
        }
    }
}

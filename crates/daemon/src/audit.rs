//! The audit records of the daemon's jobs (format.md §12.3, `cairn_audit`): each job ends
//! with one record in the repository it acted on, the actor being who asked for it (the
//! user of `cairn run`, or the scheduler) on this host.

use cairn_audit::{Target, Writer};
use cairn_format::audit::{Actor, Anchor};
use cairn_repo::Repository;

use crate::catalog::{Kind, Outcome, Status};
use crate::jobs::{Env, JobRequest};

/// This host's chain; heads remembered in the state directory.
pub fn writer(env: &Env) -> Writer {
    Writer::new(&env.host, Some(env.state_dir.join("audit")))
}

/// The anchor a snapshot written now records (none if the log cannot be read: the backup
/// goes on, `audit verify` reports the damage).
pub fn anchor(env: &Env, repo: &Repository) -> Option<Anchor> {
    writer(env).anchor(repo).ok().flatten()
}

pub fn actor(env: &Env, who: &str) -> Actor {
    Actor { user: who.to_string(), uid: None, host: env.host.clone(), via: env.via.into(), token: None, address: None }
}

/// The action a job kind is in the log.
pub fn action(kind: Kind) -> &'static str {
    match kind {
        Kind::Backup => "backup",
        Kind::Retention => "forget",
        Kind::Verify => "check",
        Kind::Copy => "copy",
        Kind::Drill => "drill",
    }
}

/// Records a finished job in `repository` (a policy repository name). A record that cannot
/// be written is logged, never a job failure: the job happened and its result stands.
pub fn job(env: &Env, repository: &str, req: &JobRequest, kind: Kind, id: &str, status: Status, outcome: &Outcome) {
    let target = Target {
        repository: repository.to_string(),
        source: Some(req.source.clone()),
        snapshots: outcome.snapshot.iter().cloned().collect(),
        paths: Vec::new(),
    };
    let outcome_word = match status {
        Status::Succeeded => "ok",
        Status::Partial => "partial",
        Status::Cancelled => "cancelled",
        _ => "failed",
    };
    let message = match &outcome.error {
        Some(e) => format!("job {id}: {e}"),
        None => format!("job {id}"),
    };
    let mut who = actor(env, &req.actor);
    if let Some(c) = &req.client {
        who.via = "api".into();
        who.token = Some(c.token.clone());
        who.address = Some(c.address.clone());
    }
    let mut rec = cairn_audit::record(&who, action(kind), target, outcome_word, Some(message));
    rec.reason = Some(match &req.reason {
        Some(r) => format!("{}: {r}", req.trigger.as_str()),
        None => req.trigger.as_str().to_string(),
    });
    append(env, repository, rec);
}

/// Appends one record to `repository`'s log, logging what went wrong.
pub fn append(env: &Env, repository: &str, rec: cairn_format::audit::Record) {
    let r = env.open_repository(repository).and_then(|repo| writer(env).append(&repo, vec![rec]).map_err(Into::into));
    if let Err(e) = r {
        crate::daemon::log(
            crate::daemon::Level::Warning,
            &format!("audit record not written to repository {repository}: {}", crate::one_line(&e)),
        );
    }
}

/// Records in every repository of the policy that the daemon (re)loaded it (`why`: `start`
/// or `reload`), with the file's BLAKE3 hash: which policy was in force is part of the
/// trail. In the background, so an unreachable repository delays nothing.
pub fn policy_loaded(env: &Env, why: &'static str) {
    let hash = std::fs::read(&env.policy_path)
        .map(|b| cairn_format::id::to_hex(&cairn_crypto::content_hash(&b)))
        .unwrap_or_else(|_| "unreadable".into());
    for name in env.policy.repositories.keys() {
        let (env, name, hash) = (env.clone(), name.clone(), hash.clone());
        std::thread::spawn(move || {
            let target = Target {
                repository: name.clone(),
                source: None,
                snapshots: Vec::new(),
                paths: vec![env.policy_path.display().to_string()],
            };
            let mut rec = cairn_audit::record(
                &actor(&env, &cairn_fs::current_user().2),
                "policy_load",
                target,
                "ok",
                Some(format!("{} sources, policy BLAKE3 {hash}", env.policy.sources.len())),
            );
            rec.reason = Some(why.into());
            append(&env, &name, rec);
        });
    }
}

/// Runs audit retention (`audit_keep`) in every repository that has it, each on a thread
/// of its own; what it removed or why it could not is logged.
pub fn expire_all(env: &Env, now: jiff::Timestamp) {
    for (name, r) in env.policy.repositories.iter() {
        let Some(keep) = r.audit_keep else { continue };
        let Ok(before) = now.checked_sub(keep) else { continue };
        let (env, name) = (env.clone(), name.clone());
        std::thread::spawn(move || {
            let who = actor(&env, &cairn_fs::current_user().2);
            let r = env.open_repository(&name).and_then(|repo| {
                cairn_audit::expire(&repo, &writer(&env), &who, before, false).map_err(crate::Error::from)
            });
            match r {
                Ok(done) if done.is_empty() => {}
                Ok(done) => crate::daemon::log(
                    crate::daemon::Level::Info,
                    &format!(
                        "audit retention in repository {name}: {} segments older than {before} removed",
                        done.iter().map(|e| e.below - e.from).sum::<u64>()
                    ),
                ),
                Err(e) => crate::daemon::log(
                    crate::daemon::Level::Warning,
                    &format!("audit retention in repository {name}: {}", crate::one_line(&e)),
                ),
            }
        });
    }
}

/// An action through the HTTP API (login, restore, token change...), recorded with the
/// token's name and the client's address: in `repository`, or in every repository of the
/// policy when the action concerns none in particular. In the background.
pub fn api_action(
    env: &Env,
    client: &crate::jobs::Client,
    action: &str,
    repository: Option<&str>,
    target: Target,
    outcome: &str,
    message: Option<String>,
) {
    let mut who = actor(env, &format!("token:{}", client.token));
    who.via = "api".into();
    who.token = Some(client.token.clone());
    who.address = Some(client.address.clone());
    record_in(env, &who, action, repository, target, outcome, message, false);
}

/// Records `action` by `who` in `repository` or in every repository of the policy; with
/// `wait`, returns once each is written (a command about to exit), else in the background.
#[allow(clippy::too_many_arguments)]
pub fn record_in(
    env: &Env,
    who: &Actor,
    action: &str,
    repository: Option<&str>,
    target: Target,
    outcome: &str,
    message: Option<String>,
    wait: bool,
) {
    let repos: Vec<String> = match repository {
        Some(r) => vec![r.to_string()],
        None => env.policy.repositories.keys().cloned().collect(),
    };
    let mut handles = Vec::new();
    for name in repos {
        let mut t = target.clone();
        t.repository = name.clone();
        let rec = cairn_audit::record(who, action, t, outcome, message.clone());
        let env = env.clone();
        handles.push(std::thread::spawn(move || append(&env, &name, rec)));
    }
    if wait {
        for h in handles {
            let _ = h.join();
        }
    }
}

/// Verifies the audit log of `repo` against every anchor known here (see [`witnesses`]).
pub fn verify(env: &Env, repo: &Repository, cli_cache: Option<&std::path::Path>) -> crate::Result<cairn_audit::Report> {
    let loaded = cairn_audit::load(repo, false)?;
    let w = witnesses(repo, cli_cache, Some(&env.state_dir))?;
    Ok(cairn_audit::verify(&loaded, &w))
}

/// The anchors an audit log is checked against: every snapshot's, this host's
/// command-line cache (`cli_cache`) and a daemon's own record of its writes (under its
/// `state_dir`).
pub fn witnesses(
    repo: &Repository,
    cli_cache: Option<&std::path::Path>,
    state_dir: Option<&std::path::Path>,
) -> crate::Result<Vec<cairn_audit::Witness>> {
    let list = repo.list_snapshots_lenient()?;
    let mut witnesses: Vec<cairn_audit::Witness> = list
        .snapshots
        .iter()
        .filter_map(|(id, s)| {
            Some(cairn_audit::Witness { by: format!("snapshot {}", id.short()), anchor: s.audit.clone()? })
        })
        .collect();
    if let Some(c) = cli_cache {
        witnesses.extend(cairn_audit::remembered_anchors(c, &repo.config().id));
    }
    if let Some(d) = state_dir {
        let mut daemon = cairn_audit::remembered_anchors(&d.join("audit"), &repo.config().id);
        for w in &mut daemon {
            w.by = "the daemon's own record of its last write".into();
        }
        witnesses.extend(daemon);
    }
    Ok(witnesses)
}

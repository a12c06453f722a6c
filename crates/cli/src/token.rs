//! `cairn token create|list|revoke`: API tokens in the policy's catalog. Each change is an
//! audit record in every repository of the policy.

use anyhow::{anyhow, bail, Result};
use cairn_daemon::tokens::{self, Role};
use jiff::Timestamp;

use crate::args::{TokenAction, TokenArgs};
use crate::context::Context;
use crate::output;
use crate::policy::env;

pub fn run(ctx: &Context, a: &TokenArgs) -> Result<()> {
    let env = env(ctx)?;
    let catalog = env.catalog()?;
    let now = Timestamp::now();
    let who = cairn_audit::local_actor("cli");
    let record = |action: &str, name: &str, message: Option<String>| {
        let target = cairn_audit::Target { paths: vec![format!("token {name}")], ..Default::default() };
        cairn_daemon::audit::record_in(&env, &who, action, None, target, "ok", message, true);
    };
    match &a.action {
        TokenAction::Create { name, role, expires } => {
            let role = Role::parse(role)
                .ok_or_else(|| anyhow!("--role {role:?}: one of admin, operator, restore, auditor"))?;
            let expires = match expires {
                Some(e) => {
                    let d = cairn_policy::file::fixed_duration(e).map_err(|m| anyhow!("--expires {m}"))?;
                    if d.as_secs() <= 0 {
                        bail!("--expires {e:?}: a positive duration, like 90d");
                    }
                    Some(d)
                }
                None => None,
            };
            let secret = tokens::create(&catalog, name, role, expires, &who.user, now)?;
            record("token_create", name, Some(format!("role {}", role.as_str())));
            if ctx.g.json {
                println!("{}", serde_json::json!({"name": name, "role": role.as_str(), "secret": secret}));
            } else {
                println!("{secret}");
                if !ctx.g.quiet {
                    eprintln!(
                        "cairn: token {name:?} ({}) created{}; the secret above is shown only now",
                        role.as_str(),
                        expires.map(|d| format!(", expires in {}", cairn_policy::file::human(d))).unwrap_or_default()
                    );
                }
            }
        }
        TokenAction::List => {
            let l = tokens::list(&catalog)?;
            if ctx.g.json {
                println!("{}", serde_json::to_string(&l)?);
                return Ok(());
            }
            println!("{:<24} {:<9} {:<24} {:<24} {:<24} STATE", "NAME", "ROLE", "CREATED", "EXPIRES", "LAST USED");
            for t in &l {
                let when = |s: &Option<String>| {
                    s.as_deref()
                        .and_then(|t| t.parse::<Timestamp>().ok())
                        .map(crate::policy::local)
                        .unwrap_or("-".into())
                };
                let expired =
                    t.expires_at.as_deref().and_then(|e| e.parse::<Timestamp>().ok()).is_some_and(|e| e <= now);
                let state = if t.revoked_at.is_some() {
                    "revoked"
                } else if expired {
                    "expired"
                } else {
                    "active"
                };
                let line = format!(
                    "{:<24} {:<9} {:<24} {:<24} {:<24} {state}",
                    t.name,
                    t.role.as_str(),
                    when(&Some(t.created_at.clone())),
                    when(&t.expires_at),
                    when(&t.last_used_at)
                );
                println!("{}", output::sanitize(&line));
            }
        }
        TokenAction::Revoke { name } => {
            if !tokens::revoke(&catalog, name, now)? {
                bail!("no current token named {name:?} (cairn token list shows them)");
            }
            record("token_revoke", name, None);
            if !ctx.g.quiet {
                println!("token {name:?} revoked");
            }
        }
    }
    Ok(())
}

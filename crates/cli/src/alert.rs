//! `cairn alert test`, `cairn alerts`.

use anyhow::{bail, Result};
use jiff::Timestamp;

use crate::args::{AlertAction, AlertArgs, AlertsArgs};
use crate::context::Context;
use crate::policy::{env, since};
use crate::{output, Exit};

pub fn run(ctx: &Context, a: &AlertArgs) -> Result<()> {
    let env = env(ctx)?;
    match &a.action {
        AlertAction::Test { name } => match cairn_daemon::alerts::test(&env, name)? {
            Ok(()) => {
                if !ctx.g.quiet {
                    println!("test notification delivered to {name}");
                }
                Ok(())
            }
            Err(why) => {
                eprintln!("cairn: error: alert {name}: {}", output::sanitize(&why));
                Err(Exit(1).into())
            }
        },
    }
}

pub fn list(ctx: &Context, a: &AlertsArgs) -> Result<()> {
    let env = env(ctx)?;
    let catalog = env.catalog()?;
    let since = since(&a.since, Timestamp::now())?;
    let active = catalog.alerts_active()?;
    let deliveries = catalog.deliveries(Some(since))?;
    if ctx.g.json {
        let active: Vec<serde_json::Value> = active
            .iter()
            .map(|(k, e, since)| {
                serde_json::json!({"key": k, "since": Timestamp::from_millisecond(*since).map(|t| t.to_string()).ok(),
                    "event": serde_json::from_str::<serde_json::Value>(e).unwrap_or_default()})
            })
            .collect();
        println!("{}", serde_json::json!({"active": active, "deliveries": deliveries}));
        return Ok(());
    }
    if env.policy.alerts.is_empty() {
        bail!("the policy has no [alert.NAME] targets");
    }
    println!("active conditions: {}", active.len());
    for (k, e, since) in &active {
        let msg = serde_json::from_str::<cairn_daemon::alerts::Event>(e).map(|e| e.message).unwrap_or_default();
        let t = Timestamp::from_millisecond(*since).map(crate::policy::local).unwrap_or_default();
        println!("{}", output::sanitize(&format!("  {k} since {t}: {msg}")));
    }
    println!("deliveries since {}:", crate::policy::local(since));
    for d in &deliveries {
        let result = match &d.error {
            None => "delivered".to_string(),
            Some(e) => format!("FAILED (attempt {}): {e}", d.attempt),
        };
        println!("{}", output::sanitize(&format!("  {} {} {} {}: {result}", d.at, d.target, d.phase, d.key)));
    }
    Ok(())
}

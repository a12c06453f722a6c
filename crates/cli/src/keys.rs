//! `cairn key list|add|remove|passwd`.

use anyhow::{bail, Result};
use cairn_crypto::KdfParams;
use cairn_format::KeyId;

use crate::args::{KeyAction, KeyArgs, NewPassword};
use crate::context::{key_meta, prompt, read_password_file, Context};

fn new_password(n: &NewPassword) -> Result<Vec<u8>> {
    if let Some(f) = &n.new_password_file {
        return read_password_file(f);
    }
    if let Ok(p) = std::env::var("CAIRN_NEW_PASSWORD") {
        return Ok(p.into_bytes());
    }
    prompt("enter the new password: ", true)
}

pub fn run(ctx: &Context, a: &KeyArgs) -> Result<()> {
    let repo = ctx.open()?;
    let action = match &a.action {
        KeyAction::List => return keys(ctx, a, &repo),
        KeyAction::Add(_) => "key_add",
        KeyAction::Remove { .. } => "key_remove",
        KeyAction::Passwd(_) => "key_passwd",
    };
    crate::audit::recorded(ctx, &repo, action, |_| keys(ctx, a, &repo))
}

fn keys(ctx: &Context, a: &KeyArgs, repo: &cairn_repo::Repository) -> Result<()> {
    match &a.action {
        KeyAction::List => {
            let keys = repo.list_keys()?;
            if ctx.g.json {
                let v: Vec<_> = keys
                    .iter()
                    .map(|(id, k)| serde_json::json!({"id": id.to_hex(), "current": *id == repo.key_id(), "username": k.username, "hostname": k.hostname, "created": k.created}))
                    .collect();
                println!("{}", serde_json::Value::Array(v));
            } else {
                println!(" {:<10} {:<12} {:<20} created", "ID", "user", "host");
                for (id, k) in keys {
                    let cur = if id == repo.key_id() { '*' } else { ' ' };
                    println!(
                        "{cur}{:<10} {:<12} {:<20} {}",
                        id.short(),
                        crate::output::sanitize(&k.username),
                        crate::output::sanitize(&k.hostname),
                        crate::output::local_time(&k.created)
                    );
                }
            }
        }
        KeyAction::Add(n) => {
            let pw = new_password(n)?;
            let id = repo.add_key(&pw, &key_meta(), KdfParams::DEFAULT)?;
            if ctx.g.json {
                println!("{}", serde_json::json!({"id": id.to_hex()}));
            } else if !ctx.g.quiet {
                println!("added key {}", id.short());
            }
        }
        KeyAction::Remove { id } => {
            let keys = repo.list_keys()?;
            let m: Vec<KeyId> =
                keys.iter().map(|(k, _)| *k).filter(|k| k.to_hex().starts_with(&id.to_ascii_lowercase())).collect();
            let target = match m.as_slice() {
                [one] => *one,
                [] => bail!("no key {id}"),
                _ => bail!("key prefix {id} is ambiguous"),
            };
            repo.remove_key(target)?;
            if !ctx.g.quiet && !ctx.g.json {
                println!("removed key {}", target.short());
            }
        }
        KeyAction::Passwd(n) => {
            let pw = new_password(n)?;
            let id = repo.change_password(&pw, &key_meta(), KdfParams::DEFAULT)?;
            if !ctx.g.quiet && !ctx.g.json {
                println!("password changed (new key {})", id.short());
            }
        }
    }
    Ok(())
}

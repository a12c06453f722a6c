//! API tokens: a name, a role and a secret. The secret is shown once, at creation; the
//! catalog keeps only its BLAKE3 hash, so a copy of the catalog grants nothing.
//!
//! Key decisions:
//! - Secrets are 32 random bytes (`cairn_` + 64 hex digits): guessing is hopeless, so a
//!   fast hash is right (a password KDF protects low-entropy secrets; these are not).
//!   Lookup is by hash, one indexed row, so every request can check revocation and
//!   expiry against the catalog: `cairn token revoke` takes effect on the next request.
//! - The role set is closed ([`Role`]); what each role may do is the API's route table.

use jiff::{SignedDuration, Timestamp};
use rusqlite::{params, OptionalExtension};

use crate::catalog::Catalog;
use crate::{Error, Result};

/// Who a token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything: tokens, policy, restores in place.
    Admin,
    /// Runs backups and drills, restores in place or as a copy, sees everything but the
    /// audit log and tokens.
    Operator,
    /// Browses and restores as a copy into the allowed directories; nothing else.
    Restore,
    /// Reads status, jobs, drills, the audit log and metrics; never file contents.
    Auditor,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Admin, Role::Operator, Role::Restore, Role::Auditor];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Restore => "restore",
            Role::Auditor => "auditor",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// A token as listed (never its secret).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Token {
    pub name: String,
    pub role: Role,
    pub created_at: String,
    pub created_by: String,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
    pub last_used_at: Option<String>,
}

/// Why a secret was refused (the API answers all of them the same way; the audit record
/// and the log say which).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    Unknown,
    Expired(String),
    Revoked(String),
}

/// A name is what audit records and `token revoke` use: short, printable, no spaces.
pub fn check_name(name: &str) -> Result<()> {
    let ok =
        !name.is_empty() && name.len() <= 64 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::Source(format!("token name {name:?}: 1 to 64 letters, digits, '-', '_', '.' or '@'")))
    }
}

fn hash(secret: &str) -> String {
    cairn_format::id::to_hex(&cairn_crypto::content_hash(secret.as_bytes()))
}

fn ms_text(ms: Option<i64>) -> Option<String> {
    ms.and_then(|m| Timestamp::from_millisecond(m).ok()).map(|t| t.to_string())
}

/// Creates a token and returns its secret (the only time it exists outside the client).
pub fn create(
    c: &Catalog,
    name: &str,
    role: Role,
    expires: Option<SignedDuration>,
    by: &str,
    now: Timestamp,
) -> Result<String> {
    check_name(name)?;
    let raw: [u8; 32] =
        cairn_crypto::random_array().map_err(|e| Error::Source(format!("no random bytes for a token: {e}")))?;
    let secret = format!("cairn_{}", cairn_format::id::to_hex(&raw));
    let expires_at = match expires {
        Some(d) => Some(
            now.checked_add(d)
                .map_err(|_| Error::Source(format!("token expiry {d} is past the end of time")))?
                .as_millisecond(),
        ),
        None => None,
    };
    let n = c
        .conn()
        .execute(
            "INSERT INTO tokens (name, role, hash, created_at, created_by, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (name) DO NOTHING",
            params![name, role.as_str(), hash(&secret), now.as_millisecond(), by, expires_at],
        )
        .map_err(c.sql_err())?;
    if n == 0 {
        return Err(Error::Exists(format!(
            "a token named {name:?} exists (revoked ones too keep their name: pick another)"
        )));
    }
    Ok(secret)
}

pub fn list(c: &Catalog) -> Result<Vec<Token>> {
    let mut st = c
        .conn()
        .prepare(
            "SELECT name, role, created_at, created_by, expires_at, revoked_at, last_used_at FROM tokens ORDER BY name",
        )
        .map_err(c.sql_err())?;
    let rows = st
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, Option<i64>>(4)?,
                r.get::<_, Option<i64>>(5)?,
                r.get::<_, Option<i64>>(6)?,
            ))
        })
        .map_err(c.sql_err())?;
    let mut out = Vec::new();
    for row in rows {
        let (name, role, created, by, expires, revoked, used) = row.map_err(c.sql_err())?;
        let Some(role) = Role::parse(&role) else { continue };
        out.push(Token {
            name,
            role,
            created_at: ms_text(Some(created)).unwrap_or_default(),
            created_by: by,
            expires_at: ms_text(expires),
            revoked_at: ms_text(revoked),
            last_used_at: ms_text(used),
        });
    }
    Ok(out)
}

/// Revokes a token; `false` if there is none of that name (or it was revoked before).
pub fn revoke(c: &Catalog, name: &str, now: Timestamp) -> Result<bool> {
    let n = c
        .conn()
        .execute(
            "UPDATE tokens SET revoked_at = ?2 WHERE name = ?1 AND revoked_at IS NULL",
            params![name, now.as_millisecond()],
        )
        .map_err(c.sql_err())?;
    Ok(n > 0)
}

/// The token a secret belongs to, if it is current; marks it used (at most once a
/// minute, so a busy console does not write on every request).
pub fn authenticate(c: &Catalog, secret: &str, now: Timestamp) -> Result<std::result::Result<(String, Role), Refused>> {
    if !secret.starts_with("cairn_") || secret.len() != 70 {
        return Ok(Err(Refused::Unknown));
    }
    let row = c
        .conn()
        .query_row(
            "SELECT name, role, expires_at, revoked_at, last_used_at FROM tokens WHERE hash = ?1",
            params![hash(secret)],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<i64>>(2)?,
                    r.get::<_, Option<i64>>(3)?,
                    r.get::<_, Option<i64>>(4)?,
                ))
            },
        )
        .optional()
        .map_err(c.sql_err())?;
    let Some((name, role, expires, revoked, used)) = row else { return Ok(Err(Refused::Unknown)) };
    if revoked.is_some() {
        return Ok(Err(Refused::Revoked(name)));
    }
    let now_ms = now.as_millisecond();
    if expires.is_some_and(|e| e <= now_ms) {
        return Ok(Err(Refused::Expired(name)));
    }
    let Some(role) = Role::parse(&role) else { return Ok(Err(Refused::Unknown)) };
    if used.is_none_or(|u| now_ms - u > 60_000) {
        // Best effort: a busy catalog must not refuse a valid token.
        let _ = c.conn().execute("UPDATE tokens SET last_used_at = ?2 WHERE name = ?1", params![name, now_ms]);
    }
    Ok(Ok((name, role)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_authenticates_until_it_expires_or_is_revoked() {
        let dir = tempfile::tempdir().expect("tmp");
        let c = Catalog::open(&dir.path().join("c.db")).expect("catalog");
        let now = Timestamp::from_second(1_800_000_000).expect("time");
        let s = create(&c, "ops", Role::Operator, Some(SignedDuration::from_hours(1)), "root", now).expect("create");
        assert_eq!(authenticate(&c, &s, now).expect("auth"), Ok(("ops".into(), Role::Operator)));
        let later = now.checked_add(SignedDuration::from_hours(2)).expect("t");
        assert_eq!(authenticate(&c, &s, later).expect("auth"), Err(Refused::Expired("ops".into())));
        let mut wrong = s.clone();
        wrong.replace_range(10..11, if &s[10..11] == "0" { "1" } else { "0" });
        assert_eq!(authenticate(&c, &wrong, now).expect("auth"), Err(Refused::Unknown));
        assert!(create(&c, "ops", Role::Admin, None, "root", now).is_err(), "names are unique");
        assert!(revoke(&c, "ops", now).expect("revoke"));
        assert!(!revoke(&c, "ops", now).expect("revoke twice"));
        assert_eq!(authenticate(&c, &s, now).expect("auth"), Err(Refused::Revoked("ops".into())));
        let l = list(&c).expect("list");
        assert_eq!((l.len(), l[0].role, l[0].revoked_at.is_some()), (1, Role::Operator, true));
        assert!(check_name("a b").is_err() && check_name("").is_err() && check_name("ci-bot_1").is_ok());
    }
}

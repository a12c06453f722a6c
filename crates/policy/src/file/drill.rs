//! The `drill` table and the `validate` list: what a restore drill restores, where, for how
//! long, and what it checks in the restored data.

use std::collections::BTreeMap;

use jiff::SignedDuration;
use serde::Deserialize;
use toml::Spanned;

use super::{fixed_duration, Cx, PolicyError, RawTiming, Repository, Timing};

/// Which snapshot a drill restores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// The newest snapshot of the source.
    Latest,
    /// Any snapshot of the source, chosen at random: old backups must restore too.
    Random,
}

impl Pick {
    pub fn as_str(self) -> &'static str {
        match self {
            Pick::Latest => "latest",
            Pick::Random => "random",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Drill {
    /// `None`: the drill runs only by `cairn drill`.
    pub timing: Option<Timing>,
    pub pick: Pick,
    /// The directory sandboxes are made in; `None`: `drills/` in the state directory.
    pub root: Option<String>,
    /// The whole drill is stopped (and failed) after this long (default 1 h).
    pub timeout: SignedDuration,
    /// Restore from this repository (a `copy_to` of the source) instead of the source's
    /// own: the site-failure scenario, in which the primary is never read.
    pub from: Option<String>,
    /// The PostgreSQL server binaries for a postgres drill; `None`: found from the
    /// restored cluster's `PG_VERSION` (`/usr/lib/postgresql/N/bin`), else on `PATH`.
    pub pg_bin: Option<String>,
}

/// One check a drill runs on the restored data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// A shell command run with `CAIRN_DRILL_PATH` set; it must exit 0.
    Command { command: String, timeout: SignedDuration },
    /// SQL (postgres and sqlite sources) whose first value is a count of at least `min`
    /// or, without `min`, true.
    Query { sql: String, min: Option<i64>, timeout: SignedDuration },
}

impl Check {
    pub fn describe(&self) -> String {
        match self {
            Check::Command { command, .. } => format!("command: {command}"),
            Check::Query { sql, min: Some(m), .. } => format!("query: {sql} >= {m}"),
            Check::Query { sql, min: None, .. } => format!("query: {sql} is true"),
        }
    }
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDrill {
    schedule: Option<String>,
    pick: Option<String>,
    root: Option<String>,
    timeout: Option<String>,
    from: Option<String>,
    pg_bin: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum RawCheck {
    Command(String),
    Table(RawCheckTable),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCheckTable {
    command: Option<String>,
    query: Option<String>,
    min: Option<i64>,
    timeout: Option<String>,
}

impl Cx<'_> {
    pub(super) fn drill(
        &self,
        d: &Spanned<RawDrill>,
        tz: Option<&str>,
        jitter: SignedDuration,
        repos: &BTreeMap<String, Repository>,
    ) -> Result<Drill, PolicyError> {
        let at = d.span().start;
        let r = d.get_ref();
        let timing =
            r.schedule.as_ref().map(|s| self.timing(RawTiming::Cron(s.clone()), tz, jitter, at)).transpose()?;
        let pick = match r.pick.as_deref() {
            None | Some("latest") => Pick::Latest,
            Some("random") => Pick::Random,
            Some(p) => return Err(self.err(at, format!("drill pick {p:?}: use \"latest\" or \"random\""))),
        };
        let timeout = match &r.timeout {
            Some(t) => fixed_duration(t).map_err(|why| self.err(at, why))?,
            None => SignedDuration::from_hours(1),
        };
        if timeout <= SignedDuration::ZERO {
            return Err(self.err(at, "drill timeout must be longer than zero".into()));
        }
        if let Some(f) = &r.from {
            if !repos.contains_key(f) {
                return Err(self.err(at, format!("drill from {f:?}: repository is not defined ([repository.NAME])")));
            }
        }
        for (key, v) in [("root", &r.root), ("pg_bin", &r.pg_bin)] {
            if v.as_deref().is_some_and(|p| !p.starts_with('/')) {
                return Err(self.err(at, format!("drill {key} must be an absolute path")));
            }
        }
        Ok(Drill { timing, pick, root: r.root.clone(), timeout, from: r.from.clone(), pg_bin: r.pg_bin.clone() })
    }

    pub(super) fn checks(&self, v: &Spanned<Vec<RawCheck>>) -> Result<Vec<Check>, PolicyError> {
        let at = v.span().start;
        let mut out = Vec::new();
        for c in v.get_ref() {
            let timeout = |t: &Option<String>| -> Result<SignedDuration, PolicyError> {
                let d = match t {
                    Some(t) => fixed_duration(t).map_err(|why| self.err(at, why))?,
                    None => SignedDuration::from_mins(5),
                };
                if d <= SignedDuration::ZERO {
                    return Err(self.err(at, "validate timeout must be longer than zero".into()));
                }
                Ok(d)
            };
            out.push(match c {
                RawCheck::Command(c) if c.trim().is_empty() => {
                    return Err(self.err(at, "validate command is empty".into()))
                }
                RawCheck::Command(c) => Check::Command { command: c.clone(), timeout: SignedDuration::from_mins(5) },
                RawCheck::Table(t) => match (&t.command, &t.query) {
                    (Some(c), None) if t.min.is_none() && !c.trim().is_empty() => {
                        Check::Command { command: c.clone(), timeout: timeout(&t.timeout)? }
                    }
                    (Some(_), None) if t.min.is_some() => {
                        return Err(self.err(at, "validate: min applies to a query, not a command".into()))
                    }
                    (None, Some(q)) if !q.trim().is_empty() => {
                        Check::Query { sql: q.clone(), min: t.min, timeout: timeout(&t.timeout)? }
                    }
                    (Some(_), Some(_)) => {
                        return Err(self.err(at, "validate: an entry has a command or a query, not both".into()))
                    }
                    _ => return Err(self.err(at, "validate: an entry needs a non-empty command or query".into())),
                },
            });
        }
        Ok(out)
    }
}

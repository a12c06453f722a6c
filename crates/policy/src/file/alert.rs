//! `[alert.NAME]` sections: where alerts go (the target) and which events go there (the
//! matchers), as Proxmox Backup Server's notification targets and matchers.

use std::collections::BTreeMap;

use jiff::SignedDuration;
use serde::Deserialize;
use toml::Spanned;

use super::{fixed_duration, Cx, PolicyError};

/// How bad an event is; matchers take events of at least a severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Info,
    Warning,
    Error,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
    pub fn parse(s: &str) -> Option<Severity> {
        [Severity::Info, Severity::Warning, Severity::Error].into_iter().find(|v| v.as_str() == s)
    }
}

/// Every event an alert can match, by name (docs/policy.md §5.9 lists what raises each).
pub const EVENTS: &[&str] = &[
    "job_failed",
    "job_partial",
    "job_slow",
    "backup_missing",
    "copy_lagging",
    "wal_stalled",
    "verify_damage",
    "storage_full",
    "drill_failed",
    "drill_missed_target",
    "ransomware_suspected",
    "daemon_started",
    "test",
];

/// A webhook's body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookFormat {
    /// The event as JSON.
    Json,
    /// `{"text": "..."}`, which Slack, Mattermost and Rocket.Chat incoming webhooks take.
    Slack,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// POST to `url`; `token_file` holds a bearer token sent as `Authorization`.
    Webhook { url: String, format: WebhookFormat, token_file: Option<String> },
    /// `sh -c command` with the event as JSON on standard input.
    Command { command: String },
    /// healthchecks.io-style pings: `url` with `{source}` replaced, `/start` when a backup
    /// starts, the URL itself on success, `/fail` with the job summary on failure.
    Ping { url: String },
}

impl Target {
    pub fn kind(&self) -> &'static str {
        match self {
            Target::Webhook { .. } => "webhook",
            Target::Command { .. } => "command",
            Target::Ping { .. } => "ping",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Alert {
    pub name: String,
    pub target: Target,
    /// Empty: every event of at least `min_severity`.
    pub events: Vec<String>,
    pub min_severity: Severity,
    /// Empty: every class (and events of no class).
    pub classes: Vec<String>,
    pub sources: Vec<String>,
    /// A condition still active is sent again after this long.
    pub repeat: SignedDuration,
    /// Each delivery attempt is given this long.
    pub timeout: SignedDuration,
}

impl Alert {
    /// Whether an event goes to this target.
    pub fn matches(&self, event: &str, severity: Severity, class: Option<&str>, source: Option<&str>) -> bool {
        if event == "test" {
            return false;
        }
        let by_event =
            if self.events.is_empty() { severity >= self.min_severity } else { self.events.iter().any(|e| e == event) };
        let by_class = self.classes.is_empty() || class.is_some_and(|c| self.classes.iter().any(|x| x == c));
        let by_source = self.sources.is_empty() || source.is_some_and(|s| self.sources.iter().any(|x| x == s));
        by_event && by_class && by_source
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAlert {
    kind: Spanned<String>,
    url: Option<Spanned<String>>,
    format: Option<Spanned<String>>,
    token_file: Option<Spanned<String>>,
    command: Option<Spanned<String>>,
    events: Option<Spanned<Vec<String>>>,
    min_severity: Option<Spanned<String>>,
    classes: Option<Spanned<Vec<String>>>,
    sources: Option<Spanned<Vec<String>>>,
    repeat: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
}

impl Cx<'_> {
    pub(super) fn alert(
        &self,
        name: &str,
        a: &Spanned<RawAlert>,
        classes: &BTreeMap<String, ()>,
        sources: &[&str],
    ) -> Result<Alert, PolicyError> {
        let r = a.get_ref();
        let need = |v: &Option<Spanned<String>>, key: &str| -> Result<String, PolicyError> {
            match v {
                Some(s) if !s.get_ref().trim().is_empty() => Ok(s.get_ref().clone()),
                _ => Err(self.at(&r.kind, format!("alert {name:?} of kind {:?} needs {key}", r.kind.get_ref()))),
            }
        };
        let refuse = |v: Option<&Spanned<String>>, key: &str| -> Result<(), PolicyError> {
            match v {
                Some(s) => Err(self.at(s, format!("{key} does not apply to a {} alert", r.kind.get_ref()))),
                None => Ok(()),
            }
        };
        let url = |u: String, at: &Spanned<String>| -> Result<String, PolicyError> {
            if u.starts_with("http://") || u.starts_with("https://") {
                Ok(u)
            } else {
                Err(self.at(at, format!("url {u:?}: use http:// or https://")))
            }
        };
        let target = match r.kind.get_ref().as_str() {
            "webhook" => {
                refuse(r.command.as_ref(), "command")?;
                let u = need(&r.url, "url")?;
                let format = match r.format.as_ref().map(|f| f.get_ref().as_str()) {
                    None | Some("json") => WebhookFormat::Json,
                    Some("slack") => WebhookFormat::Slack,
                    Some(f) => {
                        return Err(self.at(
                            r.format.as_ref().unwrap_or(&r.kind),
                            format!("format {f:?}: use \"json\" or \"slack\""),
                        ))
                    }
                };
                let token_file = r.token_file.as_ref().map(|t| t.get_ref().clone());
                if let (Some(t), Some(at)) = (&token_file, &r.token_file) {
                    if !t.starts_with('/') {
                        return Err(self.at(at, "token_file must be an absolute path"));
                    }
                }
                Target::Webhook { url: url(u, r.url.as_ref().unwrap_or(&r.kind))?, format, token_file }
            }
            "command" => {
                for (v, k) in [(&r.url, "url"), (&r.format, "format"), (&r.token_file, "token_file")] {
                    refuse(v.as_ref(), k)?;
                }
                Target::Command { command: need(&r.command, "command")? }
            }
            "ping" => {
                for (v, k) in [(&r.command, "command"), (&r.format, "format"), (&r.token_file, "token_file")] {
                    refuse(v.as_ref(), k)?;
                }
                let u = need(&r.url, "url")?;
                Target::Ping { url: url(u, r.url.as_ref().unwrap_or(&r.kind))? }
            }
            "email" => {
                return Err(
                    self.at(&r.kind, "kind \"email\" is not supported yet: use a webhook or a command (e.g. sendmail)")
                )
            }
            k => return Err(self.at(&r.kind, format!("kind {k:?}: use webhook, command or ping"))),
        };
        let events = match &r.events {
            Some(e) => {
                for x in e.get_ref() {
                    if !EVENTS.contains(&x.as_str()) || x == "test" {
                        return Err(self.at(
                            e,
                            format!("event {x:?} does not exist (events: {})", EVENTS[..EVENTS.len() - 1].join(", ")),
                        ));
                    }
                }
                e.get_ref().clone()
            }
            None => Vec::new(),
        };
        let min_severity = match &r.min_severity {
            Some(s) => Severity::parse(s.get_ref())
                .ok_or_else(|| self.at(s, format!("min_severity {:?}: use info, warning or error", s.get_ref())))?,
            None => Severity::Warning,
        };
        if let (Some(s), true) = (&r.min_severity, !events.is_empty()) {
            return Err(self.at(s, "min_severity applies when events is not given"));
        }
        let list = |v: &Option<Spanned<Vec<String>>>,
                    what: &str,
                    known: &dyn Fn(&str) -> bool|
         -> Result<Vec<String>, PolicyError> {
            match v {
                Some(l) => {
                    for x in l.get_ref() {
                        if !known(x) {
                            return Err(self.at(l, format!("{what} {x:?} is not defined")));
                        }
                    }
                    Ok(l.get_ref().clone())
                }
                None => Ok(Vec::new()),
            }
        };
        let classes = list(&r.classes, "class", &|c| classes.contains_key(c))?;
        let sources = list(&r.sources, "source", &|s| sources.contains(&s))?;
        let dur = |v: &Option<Spanned<String>>, default: SignedDuration| -> Result<SignedDuration, PolicyError> {
            match v {
                Some(s) => {
                    let d = fixed_duration(s.get_ref()).map_err(|why| self.at(s, why))?;
                    if d <= SignedDuration::ZERO {
                        return Err(self.at(s, "must be longer than zero"));
                    }
                    Ok(d)
                }
                None => Ok(default),
            }
        };
        Ok(Alert {
            name: name.to_string(),
            target,
            events,
            min_severity,
            classes,
            sources,
            repeat: dur(&r.repeat, SignedDuration::from_hours(4))?,
            timeout: dur(&r.timeout, SignedDuration::from_secs(10))?,
        })
    }
}

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
    /// Mail through an SMTP server.
    Email(Email),
}

/// How an email target reaches its SMTP server, and what it sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    pub host: String,
    pub port: u16,
    pub security: SmtpSecurity,
    pub from: String,
    pub to: Vec<String>,
    /// AUTH PLAIN with this user and the password in `password_file`.
    pub username: Option<String>,
    pub password_file: Option<String>,
    /// PEM certificates trusted instead of the system's (a private CA).
    pub ca_file: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// `smtp://`: no TLS (refused with a password unless the server is on loopback).
    Plain,
    /// `smtp+starttls://`: STARTTLS required before anything else is said.
    StartTls,
    /// `smtps://`: TLS from the first byte.
    Tls,
}

/// A mailbox as the policy may give it: `local@domain`, nothing that could break out of an
/// SMTP command or a header.
fn is_address(a: &str) -> bool {
    let Some((l, d)) = a.split_once('@') else { return false };
    !l.is_empty()
        && !d.is_empty()
        && a.len() <= 254
        && a.bytes().all(|b| b.is_ascii_graphic() && !matches!(b, b'<' | b'>' | b'"' | b',' | b'\\' | b';'))
}

impl Target {
    pub fn kind(&self) -> &'static str {
        match self {
            Target::Webhook { .. } => "webhook",
            Target::Command { .. } => "command",
            Target::Ping { .. } => "ping",
            Target::Email(_) => "email",
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
    smtp: Option<Spanned<String>>,
    from: Option<Spanned<String>>,
    to: Option<Spanned<Vec<String>>>,
    username: Option<Spanned<String>>,
    password_file: Option<Spanned<String>>,
    ca_file: Option<Spanned<String>>,
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
                for (v, k) in
                    [(&r.url, "url"), (&r.command, "command"), (&r.format, "format"), (&r.token_file, "token_file")]
                {
                    refuse(v.as_ref(), k)?;
                }
                Target::Email(self.email(name, r)?)
            }
            k => return Err(self.at(&r.kind, format!("kind {k:?}: use webhook, command, ping or email"))),
        };
        if r.kind.get_ref() != "email" {
            for (v, k) in [
                (&r.smtp, "smtp"),
                (&r.from, "from"),
                (&r.username, "username"),
                (&r.password_file, "password_file"),
                (&r.ca_file, "ca_file"),
            ] {
                refuse(v.as_ref(), k)?;
            }
            if let Some(t) = &r.to {
                return Err(self.at(t, format!("to does not apply to a {} alert", r.kind.get_ref())));
            }
        }
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

impl Cx<'_> {
    fn email(&self, name: &str, r: &RawAlert) -> Result<Email, PolicyError> {
        let smtp =
            r.smtp.as_ref().ok_or_else(|| self.at(&r.kind, format!("alert {name:?} of kind \"email\" needs smtp")))?;
        let u = smtp.get_ref();
        let (security, rest, default_port) = if let Some(x) = u.strip_prefix("smtps://") {
            (SmtpSecurity::Tls, x, 465)
        } else if let Some(x) = u.strip_prefix("smtp+starttls://") {
            (SmtpSecurity::StartTls, x, 587)
        } else if let Some(x) = u.strip_prefix("smtp://") {
            (SmtpSecurity::Plain, x, 25)
        } else {
            return Err(self.at(
                smtp,
                format!("smtp {u:?}: use smtps://HOST[:PORT], smtp+starttls://HOST[:PORT] or smtp://HOST[:PORT]"),
            ));
        };
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => match p.parse::<u16>() {
                Ok(p) if p > 0 => (h.to_string(), p),
                _ => return Err(self.at(smtp, format!("smtp {u:?}: the port must be 1-65535"))),
            },
            _ => (rest.to_string(), default_port),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
        if host.is_empty() || host.contains(['/', '@', ' ']) {
            return Err(self.at(smtp, format!("smtp {u:?}: give a host name or address")));
        }
        let from =
            r.from.as_ref().ok_or_else(|| self.at(&r.kind, format!("alert {name:?} of kind \"email\" needs from")))?;
        if !is_address(from.get_ref()) {
            return Err(self.at(from, format!("from {:?} is not a mail address (local@domain)", from.get_ref())));
        }
        let to = match &r.to {
            Some(t) if !t.get_ref().is_empty() => {
                for a in t.get_ref() {
                    if !is_address(a) {
                        return Err(self.at(t, format!("to: {a:?} is not a mail address (local@domain)")));
                    }
                }
                t.get_ref().clone()
            }
            Some(t) => return Err(self.at(t, "to needs at least one address")),
            None => return Err(self.at(&r.kind, format!("alert {name:?} of kind \"email\" needs to"))),
        };
        let abs = |v: &Option<Spanned<String>>, key: &str| -> Result<Option<String>, PolicyError> {
            match v {
                Some(p) if !p.get_ref().starts_with('/') => Err(self.at(p, format!("{key} must be an absolute path"))),
                Some(p) => Ok(Some(p.get_ref().clone())),
                None => Ok(None),
            }
        };
        let password_file = abs(&r.password_file, "password_file")?;
        let ca_file = abs(&r.ca_file, "ca_file")?;
        let username = r.username.as_ref().map(|u| u.get_ref().clone());
        match (&username, &password_file) {
            (Some(_), None) | (None, Some(_)) => {
                return Err(self.at(
                    r.username.as_ref().or(r.password_file.as_ref()).unwrap_or(&r.kind),
                    "username and password_file go together",
                ))
            }
            _ => {}
        }
        let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|a| a.is_loopback());
        if security == SmtpSecurity::Plain && username.is_some() && !loopback {
            return Err(self.at(
                smtp,
                "a password over plain smtp:// to a server off this host: use smtps:// or smtp+starttls://",
            ));
        }
        if let (SmtpSecurity::Plain, Some(c)) = (security, &r.ca_file) {
            return Err(self.at(c, "ca_file applies to smtps:// and smtp+starttls://"));
        }
        Ok(Email { host, port, security, from: from.get_ref().clone(), to, username, password_file, ca_file })
    }
}

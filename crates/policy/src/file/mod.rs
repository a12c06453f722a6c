//! The policy file (`cairn.toml`): TOML text -> a validated, resolved [`Policy`]. Pure: the
//! text, its name (for messages) and `now` (for the RPO check across DST changes) go in.
//!
//! Key decisions:
//! - Strict: unknown keys, wrong types, bad durations, sizes, cron expressions and time
//!   zones, undefined classes and repositories, and a schedule that cannot meet its RPO are
//!   errors that name the file, line and column of the offending value ([`PolicyError`]).
//!   A policy either loads whole or not at all, so a daemon keeps its old one on reload.
//! - One duration grammar for the whole file (jiff's friendly format: `30s`, `15m`, `6h`,
//!   `7d`, `2w`, `6mo`, `1y`, `1h30m`): `m` is minutes everywhere. Objectives and timeouts
//!   are fixed lengths (a day is 24 h, months and years are refused); `keep.within` is
//!   calendar time (months and years allowed, as restic's `--keep-within`).
//! - A source inherits every setting of its class and may override any of them; the
//!   resolved source records where each value came from ([`Origin`]) so `cairn policy
//!   check` can say it.
//! - Class and source sections share one raw shape: the source-only keys (kind, paths,
//!   command, ...) in a class section are errors like unknown keys.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Span, Timestamp};
use serde::Deserialize;
use toml::Spanned;

use crate::schedule::Schedule;
use crate::{Duration, KeepPolicy};

mod alert;
mod drill;
use alert::RawAlert;
pub use alert::{Alert, Email, Severity, SmtpSecurity, Target, WebhookFormat, EVENTS};
pub use drill::{Check, Drill, Pick};
use drill::{RawCheck, RawDrill};

/// A mistake in the policy file, located.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct PolicyError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Where a resolved setting came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Class,
    Source,
    Default,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Class => "class",
            Origin::Source => "source",
            Origin::Default => "default",
        }
    }
}

/// How a repository's password is obtained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Password {
    File(String),
    Command(String),
    /// Neither key given: `CAIRN_PASSWORD`/`CAIRN_PASSWORD_FILE` of the daemon's environment.
    Environment,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Repository {
    pub name: String,
    pub url: String,
    pub password: Password,
    pub object_lock_days: Option<u32>,
    pub connections: Option<usize>,
    /// Bytes per second.
    pub limit_upload: Option<u64>,
    pub limit_download: Option<u64>,
    pub storage_class: Option<String>,
    /// Bytes; what fill alerts compare with where the store reports no capacity.
    pub quota: Option<u64>,
    /// Audit records older than this are removed from the repository (hourly, by the
    /// daemon); `None` keeps them for ever.
    pub audit_keep: Option<SignedDuration>,
}

/// One schedule of a class or source, with its time zone and jitter.
#[derive(Debug, Clone)]
pub struct Timing {
    pub schedule: Schedule,
    pub jitter: SignedDuration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    pub command: String,
    pub timeout: SignedDuration,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hooks {
    pub before: Option<Hook>,
    pub after: Option<Hook>,
    pub on_failure: Option<Hook>,
    pub finally: Option<Hook>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CopyTo {
    pub repository: String,
    /// The copy's own retention; `None`: the copy keeps what the class keeps.
    pub keep: Option<KeepPolicy>,
}

#[derive(Debug, Clone)]
pub struct Verify {
    pub timing: Timing,
    /// Percent of packs whose data is read and checked, `0 < p <= 100`.
    pub read_data_subset: f64,
}

#[derive(Debug, Clone)]
pub struct Retention {
    pub keep: KeepPolicy,
    /// PostgreSQL: every instant of this window stays recoverable (base backups and WAL).
    pub pitr_window: Option<SignedDuration>,
    pub timing: Timing,
    /// Prune after forgetting (default true).
    pub prune: bool,
}

/// What a source backs up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceKind {
    Files {
        paths: Vec<String>,
        exclude: Vec<String>,
        exclude_files: Vec<String>,
        one_file_system: bool,
        /// Keep access times (default: not stored, see `backup --atime`).
        atime: bool,
    },
    /// A command whose standard output is stored as the file `stdin_name`.
    Command {
        command: String,
        stdin_name: String,
    },
    /// A command that writes a directory (`{dir}` in the command is its path), backed up
    /// and then removed.
    CommandDir {
        command: String,
    },
    Postgres {
        data_dir: String,
        connection: String,
        stream: bool,
    },
    Sqlite {
        path: String,
    },
}

impl SourceKind {
    pub fn name(&self) -> &'static str {
        match self {
            SourceKind::Files { .. } => "files",
            SourceKind::Command { .. } | SourceKind::CommandDir { .. } => "command",
            SourceKind::Postgres { .. } => "postgres",
            SourceKind::Sqlite { .. } => "sqlite",
        }
    }
}

/// A value and where it came from.
#[derive(Debug, Clone)]
pub struct Set<T> {
    pub value: T,
    pub origin: Origin,
}

/// The zstd level of a backup's new data: the `backup --compression` flag and the
/// policy's `compression` key, one vocabulary. Levels were chosen on the bench's tree
/// (README, "Compression"): `fast` stores about 2.6% more than the default 3 at 1.5 times
/// its speed; `max` 2% less at a third of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// The repository's `compression_level` (3 unless set at init).
    #[default]
    Auto,
    Off,
    Level(i32),
}

impl Compression {
    pub const FAST: i32 = 1;
    pub const MAX: i32 = 9;

    pub fn parse(s: &str) -> Result<Compression, String> {
        match s {
            "auto" => Ok(Compression::Auto),
            "off" | "none" => Ok(Compression::Off),
            "fast" => Ok(Compression::Level(Compression::FAST)),
            "max" => Ok(Compression::Level(Compression::MAX)),
            n => match n.parse::<i32>() {
                Ok(l @ 1..=19) => Ok(Compression::Level(l)),
                _ => Err(format!("'{n}' is not auto, fast, max, off or a zstd level from 1 to 19")),
            },
        }
    }

    /// The level a backup asks for; `None` leaves the repository's.
    pub fn level(self) -> Option<i32> {
        match self {
            Compression::Auto => None,
            Compression::Off => Some(0),
            Compression::Level(l) => Some(l),
        }
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Compression::Auto => f.write_str("auto"),
            Compression::Off => f.write_str("off"),
            Compression::Level(Compression::FAST) => f.write_str("fast"),
            Compression::Level(Compression::MAX) => f.write_str("max"),
            Compression::Level(l) => write!(f, "{l}"),
        }
    }
}

/// A source with its class's settings applied.
#[derive(Debug, Clone)]
pub struct Source {
    pub name: String,
    pub class: String,
    pub repository: Set<String>,
    pub kind: SourceKind,
    pub schedules: Set<Vec<Timing>>,
    pub rpo: Set<Option<SignedDuration>>,
    pub rto: Set<Option<SignedDuration>>,
    pub max_duration: Set<Option<SignedDuration>>,
    pub retention: Set<Option<Retention>>,
    pub copy_to: Set<Vec<CopyTo>>,
    pub verify: Set<Option<Verify>>,
    pub drill: Set<Option<Drill>>,
    /// What a drill checks in the restored data besides its own checks (`validate`).
    pub validate: Set<Vec<Check>>,
    pub hooks: Set<Hooks>,
    pub tags: Set<Vec<String>>,
    /// The zstd level of the source's backups (`compression`).
    pub compression: Set<Compression>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Daemon {
    /// The catalog database; `None`: `cairn-catalog.db` beside the policy file.
    pub catalog: Option<String>,
    /// Per-source locks, staging directories and other state; `None`: `cairn-state/`
    /// beside the catalog.
    pub state_dir: Option<String>,
    /// Catalog rows older than this are deleted (default 400 days).
    pub keep_jobs: Option<SignedDuration>,
    /// The host name written into snapshots (default the machine's).
    pub hostname: Option<String>,
    /// Backups run at once (default 2).
    pub max_parallel: Option<usize>,
    /// The first retry after a failed job waits this long, doubling per failure up to an
    /// hour (default 30 s).
    pub retry_delay: Option<SignedDuration>,
    /// On SIGTERM, running jobs get this long to finish before they are stopped (default 5m).
    pub stop_timeout: Option<SignedDuration>,
    /// How often alert conditions are evaluated (default 1m).
    pub alert_interval: Option<SignedDuration>,
    /// A local repository's file system fuller than this percent raises `storage_full`
    /// (default 80).
    pub fill_percent: Option<f64>,
    /// `ransomware_suspected`: a backup in which more than this percent of the files the
    /// previous one held changed (default 60)...
    pub ransomware_changed: Option<f64>,
    /// ...and at least this many (default 100)...
    pub ransomware_min_files: Option<u64>,
    /// ...raises the condition for this long after that backup (default 7d).
    pub ransomware_window: Option<SignedDuration>,
}

#[derive(Debug, Clone)]
pub struct Policy {
    pub daemon: Daemon,
    pub repositories: BTreeMap<String, Repository>,
    pub classes: BTreeMap<String, ()>,
    pub sources: BTreeMap<String, Source>,
    pub alerts: BTreeMap<String, Alert>,
    pub server: Option<Server>,
}

/// `[server]`: the daemon's HTTP endpoint (API, console, `/metrics`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub listen: Listen,
    /// Certificate chain and private key (PEM files); `None`: plain HTTP, which is only
    /// accepted on loopback unless `insecure_http` says otherwise.
    pub tls: Option<ServerTls>,
    /// Where the API may restore "as a copy" (absolute, no `..`).
    pub restore_dirs: Vec<std::path::PathBuf>,
    /// How long a console login lasts.
    pub session_ttl: SignedDuration,
}

/// Where the server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    Tcp(std::net::SocketAddr),
    /// `unix:/PATH`: a Unix socket (plain HTTP; who may connect is the socket file's mode).
    Unix(std::path::PathBuf),
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listen::Tcp(a) => write!(f, "{a}"),
            Listen::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTls {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

// ---- raw shapes (what serde reads) -------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    daemon: Option<RawDaemon>,
    #[serde(default)]
    repository: BTreeMap<String, Spanned<RawRepository>>,
    #[serde(default)]
    class: BTreeMap<String, Spanned<RawSection>>,
    #[serde(default)]
    source: BTreeMap<String, Spanned<RawSection>>,
    #[serde(default)]
    alert: BTreeMap<String, Spanned<RawAlert>>,
    #[serde(default)]
    server: Option<RawServer>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Spanned<String>,
    tls_cert: Option<Spanned<String>>,
    tls_key: Option<Spanned<String>>,
    insecure_http: Option<Spanned<bool>>,
    #[serde(default)]
    restore_dirs: Vec<Spanned<String>>,
    session_ttl: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDaemon {
    catalog: Option<Spanned<String>>,
    state_dir: Option<Spanned<String>>,
    keep_jobs: Option<Spanned<String>>,
    hostname: Option<Spanned<String>>,
    max_parallel: Option<Spanned<i64>>,
    retry_delay: Option<Spanned<String>>,
    stop_timeout: Option<Spanned<String>>,
    alert_interval: Option<Spanned<String>>,
    fill_percent: Option<Spanned<f64>>,
    ransomware_changed: Option<Spanned<f64>>,
    ransomware_min_files: Option<Spanned<i64>>,
    ransomware_window: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRepository {
    url: Spanned<String>,
    password_file: Option<Spanned<String>>,
    password_command: Option<Spanned<String>>,
    object_lock_days: Option<Spanned<i64>>,
    connections: Option<Spanned<i64>>,
    limit_upload: Option<Spanned<String>>,
    limit_download: Option<Spanned<String>>,
    storage_class: Option<Spanned<String>>,
    quota: Option<Spanned<String>>,
    audit_keep: Option<Spanned<String>>,
}

#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum RawTiming {
    Cron(String),
    Table(RawTimingTable),
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct RawTimingTable {
    cron: String,
    timezone: Option<String>,
    jitter: Option<String>,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct RawKeep {
    last: Option<i64>,
    hourly: Option<i64>,
    daily: Option<i64>,
    weekly: Option<i64>,
    monthly: Option<i64>,
    yearly: Option<i64>,
    within: Option<String>,
    tags: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetention {
    schedule: Option<String>,
    prune: Option<bool>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawCopyTo {
    Name(String),
    Table(RawCopyTable),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCopyTable {
    repository: String,
    keep: Option<RawKeep>,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct RawVerify {
    schedule: String,
    read_data_subset: Option<String>,
}

#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum RawHook {
    Command(String),
    Table(RawHookTable),
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct RawHookTable {
    command: String,
    timeout: Option<String>,
}

/// A setting a section may also set to `false`: in a source, `verify = false` takes away
/// the verify its class gives (likewise schedule, rpo, rto, max_duration, keep,
/// pitr_window, drill and the hooks). Lists (`copy_to`, `validate`, `tags`) are emptied
/// with `[]` instead.
#[derive(Clone)]
enum Removable<T> {
    Off,
    On(T),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Removable<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
        use serde::de::{Error, IntoDeserializer};
        struct V<T>(std::marker::PhantomData<T>);
        // Every other shape goes to T's own deserializer, so its messages stay as precise.
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for V<T> {
            type Value = Removable<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("the setting, or false to remove the class's")
            }
            fn visit_bool<E: Error>(self, b: bool) -> Result<Self::Value, E> {
                if b {
                    return Err(E::custom("true is not a setting: give one, or false to remove the class's"));
                }
                Ok(Removable::Off)
            }
            fn visit_str<E: Error>(self, s: &str) -> Result<Self::Value, E> {
                T::deserialize(s.into_deserializer()).map(Removable::On)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, m: A) -> Result<Self::Value, A::Error> {
                T::deserialize(MapAccessDeserializer::new(m)).map(Removable::On)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, s: A) -> Result<Self::Value, A::Error> {
                T::deserialize(SeqAccessDeserializer::new(s)).map(Removable::On)
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

impl<T> Removable<T> {
    fn on(&self) -> Option<&T> {
        match self {
            Removable::On(t) => Some(t),
            Removable::Off => None,
        }
    }
}

/// `compression = "max"` or `compression = 6`.
enum RawCompression {
    Name(String),
    Level(i64),
}

impl<'de> Deserialize<'de> for RawCompression {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = RawCompression;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("compression: \"auto\", \"fast\", \"max\", \"off\" or a zstd level from 1 to 19")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawCompression, E> {
                Ok(RawCompression::Name(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<RawCompression, E> {
                Ok(RawCompression::Level(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// A `[class.NAME]` or `[source.NAME]` section.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSection {
    // Settings a class gives and a source may override.
    repository: Option<Spanned<String>>,
    schedule: Option<Spanned<Removable<OneOrMany<RawTiming>>>>,
    timezone: Option<Spanned<String>>,
    jitter: Option<Spanned<String>>,
    rpo: Option<Spanned<Removable<String>>>,
    rto: Option<Spanned<Removable<String>>>,
    max_duration: Option<Spanned<Removable<String>>>,
    keep: Option<Spanned<Removable<RawKeep>>>,
    pitr_window: Option<Spanned<Removable<String>>>,
    retention: Option<Spanned<RawRetention>>,
    copy_to: Option<Spanned<Vec<RawCopyTo>>>,
    verify: Option<Spanned<Removable<RawVerify>>>,
    drill: Option<Spanned<Removable<RawDrill>>>,
    validate: Option<Spanned<Vec<RawCheck>>>,
    before: Option<Spanned<Removable<RawHook>>>,
    after: Option<Spanned<Removable<RawHook>>>,
    on_failure: Option<Spanned<Removable<RawHook>>>,
    finally: Option<Spanned<Removable<RawHook>>>,
    tags: Option<Spanned<Vec<String>>>,
    compression: Option<Spanned<RawCompression>>,
    // Source-only keys.
    class: Option<Spanned<String>>,
    kind: Option<Spanned<String>>,
    paths: Option<Spanned<Vec<String>>>,
    exclude: Option<Spanned<Vec<String>>>,
    exclude_file: Option<Spanned<Vec<String>>>,
    one_file_system: Option<Spanned<bool>>,
    atime: Option<Spanned<bool>>,
    command: Option<Spanned<String>>,
    output: Option<Spanned<String>>,
    stdin_name: Option<Spanned<String>>,
    data_dir: Option<Spanned<String>>,
    connection: Option<Spanned<String>>,
    stream: Option<Spanned<bool>>,
    path: Option<Spanned<String>>,
}

// ---- parsing -----------------------------------------------------------------------------

/// Reads and validates a policy. `file` names it in messages; `now` anchors the check that
/// each schedule meets its RPO (over the year ahead, DST changes included).
pub fn parse(file: &str, text: &str, now: Timestamp) -> Result<Policy, PolicyError> {
    let cx = Cx { file, text, gaps: Default::default() };
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        let at = e.span().map(|s| s.start).unwrap_or(0);
        cx.err(at, e.message().trim().to_string())
    })?;
    let mut repositories = BTreeMap::new();
    for (name, r) in raw.repository {
        cx.name(&name, r.span().start, "repository")?;
        let repo = cx.repository(&name, r.into_inner())?;
        repositories.insert(name, repo);
    }
    let daemon = match raw.daemon {
        Some(d) => cx.daemon(d)?,
        None => Daemon::default(),
    };
    let mut classes = BTreeMap::new();
    for (name, c) in &raw.class {
        cx.name(name, c.span().start, "class")?;
        cx.class_only(c)?;
        // Validate the class on its own, so a mistake is reported at the class even when
        // every source overrides it.
        cx.settings(None, Some(c.get_ref()), &repositories)?;
        classes.insert(name.clone(), ());
    }
    let mut sources = BTreeMap::new();
    for (name, s) in &raw.source {
        cx.name(name, s.span().start, "source")?;
        let src = cx.source(name, s, &raw.class, &repositories, now)?;
        sources.insert(name.clone(), src);
    }
    let mut alerts = BTreeMap::new();
    let names: Vec<&str> = sources.keys().map(String::as_str).collect();
    for (name, a) in &raw.alert {
        cx.name(name, a.span().start, "alert")?;
        alerts.insert(name.clone(), cx.alert(name, a, &classes, &names)?);
    }
    let server = match raw.server {
        Some(s) => Some(cx.server(s)?),
        None => None,
    };
    Ok(Policy { daemon, repositories, classes, sources, alerts, server })
}

struct Cx<'a> {
    file: &'a str,
    text: &'a str,
    /// The RPO check's answer per (schedules, rpo): sources of one class share it, and it
    /// walks a year of runs.
    gaps: std::cell::RefCell<std::collections::HashMap<GapKey, Option<SignedDuration>>>,
}

/// Schedules (expression, time zone, jitter seconds) and the rpo in seconds.
type GapKey = (Vec<(String, String, i64)>, i64);

/// The settings of a source after inheritance, before the kind is read.
struct Settings {
    repository: Option<Set<String>>,
    schedules: Set<Vec<Timing>>,
    rpo: Set<Option<SignedDuration>>,
    rto: Set<Option<SignedDuration>>,
    max_duration: Set<Option<SignedDuration>>,
    retention: Set<Option<Retention>>,
    copy_to: Set<Vec<CopyTo>>,
    verify: Set<Option<Verify>>,
    drill: Set<Option<Drill>>,
    validate: Set<Vec<Check>>,
    hooks: Set<Hooks>,
    tags: Set<Vec<String>>,
    compression: Set<Compression>,
}

impl Cx<'_> {
    fn err(&self, at: usize, message: String) -> PolicyError {
        let at = at.min(self.text.len());
        let before = &self.text[..self.text.floor_char_boundary_compat(at)];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
        PolicyError { file: self.file.to_string(), line, column, message }
    }

    fn at<T>(&self, s: &Spanned<T>, message: impl Into<String>) -> PolicyError {
        self.err(s.span().start, message.into())
    }

    fn name(&self, name: &str, at: usize, what: &str) -> Result<(), PolicyError> {
        let ok = !name.is_empty()
            && name.len() <= 64
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && !name.starts_with('.');
        if ok {
            Ok(())
        } else {
            Err(self.err(at, format!("{what} name {name:?}: use letters, digits, '-', '_' and '.' (at most 64)")))
        }
    }

    fn fixed(&self, s: &Spanned<String>) -> Result<SignedDuration, PolicyError> {
        fixed_duration(s.get_ref()).map_err(|why| self.at(s, why))
    }

    fn positive(&self, s: &Spanned<String>) -> Result<SignedDuration, PolicyError> {
        let d = self.fixed(s)?;
        if d <= SignedDuration::ZERO {
            return Err(self.at(s, format!("{:?} must be longer than zero", s.get_ref())));
        }
        Ok(d)
    }

    fn size(&self, s: &Spanned<String>) -> Result<u64, PolicyError> {
        parse_size(s.get_ref()).map_err(|why| self.at(s, why))
    }

    fn repository(&self, name: &str, r: RawRepository) -> Result<Repository, PolicyError> {
        if r.url.get_ref().trim().is_empty() {
            return Err(self.at(&r.url, "url is empty"));
        }
        let password = match (r.password_file, r.password_command) {
            (Some(_), Some(c)) => return Err(self.at(&c, "password_file and password_command exclude each other")),
            (Some(f), None) => Password::File(f.into_inner()),
            (None, Some(c)) => Password::Command(c.into_inner()),
            (None, None) => Password::Environment,
        };
        let object_lock_days = match r.object_lock_days {
            Some(d) if !(1..=36500).contains(d.get_ref()) => {
                return Err(self.at(&d, "object_lock_days must be between 1 and 36500"))
            }
            Some(d) => Some(*d.get_ref() as u32),
            None => None,
        };
        let connections = match r.connections {
            Some(c) if !(1..=256).contains(c.get_ref()) => {
                return Err(self.at(&c, "connections must be between 1 and 256"))
            }
            Some(c) => Some(*c.get_ref() as usize),
            None => None,
        };
        let limit = |l: Option<Spanned<String>>| -> Result<Option<u64>, PolicyError> {
            l.map(|l| {
                let v = self.size(&l)?;
                if v == 0 {
                    return Err(self.at(&l, "a bandwidth limit must be above zero"));
                }
                Ok(v)
            })
            .transpose()
        };
        Ok(Repository {
            name: name.to_string(),
            url: r.url.clone().into_inner(),
            password,
            object_lock_days,
            connections,
            limit_upload: limit(r.limit_upload)?,
            limit_download: limit(r.limit_download)?,
            storage_class: match r.storage_class {
                Some(c) => {
                    const CLASSES: &[&str] = &[
                        "STANDARD",
                        "STANDARD_IA",
                        "ONEZONE_IA",
                        "INTELLIGENT_TIERING",
                        "GLACIER_IR",
                        "REDUCED_REDUNDANCY",
                    ];
                    if !r.url.get_ref().starts_with("s3://") {
                        return Err(self.at(&c, "storage_class applies to s3:// repositories only"));
                    }
                    if !CLASSES.contains(&c.get_ref().as_str()) {
                        return Err(self.at(
                            &c,
                            format!(
                                "storage_class {:?}: one of {} (GLACIER and DEEP_ARCHIVE objects cannot be read without a restore request; a bucket lifecycle rule on data/ can move packs there)",
                                c.get_ref(),
                                CLASSES.join(", ")
                            ),
                        ));
                    }
                    Some(c.into_inner())
                }
                None => None,
            },
            quota: r.quota.map(|q| self.size(&q)).transpose()?,
            audit_keep: r.audit_keep.map(|k| self.positive(&k)).transpose()?,
        })
    }

    fn server(&self, s: RawServer) -> Result<Server, PolicyError> {
        let listen = match s.listen.get_ref().strip_prefix("unix:") {
            Some(p) if p.starts_with('/') && !p.split('/').any(|c| c == "..") => Listen::Unix(p.into()),
            Some(_) => return Err(self.at(&s.listen, "listen unix:PATH needs an absolute path without '..'")),
            None => Listen::Tcp(s.listen.get_ref().parse().map_err(|_| {
                self.at(
                    &s.listen,
                    format!(
                        "listen {:?}: an address and port, like 127.0.0.1:9184 or [::1]:9184, or unix:/run/cairn/api.sock",
                        s.listen.get_ref()
                    ),
                )
            })?),
        };
        let abs = |v: &Spanned<String>, what: &str| -> Result<std::path::PathBuf, PolicyError> {
            let p = std::path::Path::new(v.get_ref());
            if !p.is_absolute() || p.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
                return Err(self.at(v, format!("{what} {:?}: an absolute path without '..'", v.get_ref())));
            }
            Ok(p.to_path_buf())
        };
        let tls = match (&s.tls_cert, &s.tls_key) {
            (Some(c), Some(k)) => Some(ServerTls { cert: abs(c, "tls_cert")?, key: abs(k, "tls_key")? }),
            (None, None) => None,
            (Some(c), None) => return Err(self.at(c, "tls_cert without tls_key: give both, or neither")),
            (None, Some(k)) => return Err(self.at(k, "tls_key without tls_cert: give both, or neither")),
        };
        let insecure = s.insecure_http.as_ref().is_some_and(|b| *b.get_ref());
        let loopback = match &listen {
            Listen::Tcp(a) => a.ip().is_loopback(),
            Listen::Unix(_) => true,
        };
        if tls.is_none() && !loopback && !insecure {
            return Err(self.at(
                &s.listen,
                format!("listen {listen}: plain HTTP off loopback sends tokens in clear; set tls_cert and tls_key (or insecure_http = true behind a TLS proxy)"),
            ));
        }
        let mut restore_dirs = Vec::new();
        for d in &s.restore_dirs {
            restore_dirs.push(abs(d, "restore_dirs entry")?);
        }
        let session_ttl = match &s.session_ttl {
            Some(t) => self.positive(t)?,
            None => SignedDuration::from_hours(8),
        };
        Ok(Server { listen, tls, restore_dirs, session_ttl })
    }

    fn daemon(&self, d: RawDaemon) -> Result<Daemon, PolicyError> {
        let max_parallel = match d.max_parallel {
            Some(m) if !(1..=64).contains(m.get_ref()) => {
                return Err(self.at(&m, "max_parallel must be between 1 and 64"))
            }
            Some(m) => Some(*m.get_ref() as usize),
            None => None,
        };
        Ok(Daemon {
            catalog: d.catalog.map(Spanned::into_inner),
            state_dir: d.state_dir.map(Spanned::into_inner),
            keep_jobs: d.keep_jobs.map(|k| self.positive(&k)).transpose()?,
            hostname: d.hostname.map(Spanned::into_inner),
            max_parallel,
            retry_delay: d.retry_delay.map(|k| self.positive(&k)).transpose()?,
            stop_timeout: d.stop_timeout.map(|k| self.positive(&k)).transpose()?,
            alert_interval: d.alert_interval.map(|k| self.positive(&k)).transpose()?,
            fill_percent: match d.fill_percent {
                Some(f) if !(1.0..=100.0).contains(f.get_ref()) => {
                    return Err(self.at(&f, "fill_percent must be between 1 and 100"))
                }
                f => f.map(Spanned::into_inner),
            },
            ransomware_changed: match d.ransomware_changed {
                Some(f) if !(1.0..=100.0).contains(f.get_ref()) => {
                    return Err(self.at(&f, "ransomware_changed must be between 1 and 100"))
                }
                f => f.map(Spanned::into_inner),
            },
            ransomware_min_files: match d.ransomware_min_files {
                Some(n) if *n.get_ref() < 1 => return Err(self.at(&n, "ransomware_min_files must be at least 1")),
                n => n.map(|n| n.into_inner() as u64),
            },
            ransomware_window: d.ransomware_window.map(|k| self.positive(&k)).transpose()?,
        })
    }

    /// Source-only keys are errors in a class section.
    fn class_only(&self, c: &Spanned<RawSection>) -> Result<(), PolicyError> {
        let r = c.get_ref();
        let spans = [
            ("class", r.class.as_ref().map(|s| s.span())),
            ("kind", r.kind.as_ref().map(|s| s.span())),
            ("paths", r.paths.as_ref().map(|s| s.span())),
            ("exclude", r.exclude.as_ref().map(|s| s.span())),
            ("exclude_file", r.exclude_file.as_ref().map(|s| s.span())),
            ("one_file_system", r.one_file_system.as_ref().map(|s| s.span())),
            ("atime", r.atime.as_ref().map(|s| s.span())),
            ("command", r.command.as_ref().map(|s| s.span())),
            ("output", r.output.as_ref().map(|s| s.span())),
            ("stdin_name", r.stdin_name.as_ref().map(|s| s.span())),
            ("data_dir", r.data_dir.as_ref().map(|s| s.span())),
            ("connection", r.connection.as_ref().map(|s| s.span())),
            ("stream", r.stream.as_ref().map(|s| s.span())),
            ("path", r.path.as_ref().map(|s| s.span())),
        ];
        for (key, span) in spans {
            if let Some(span) = span {
                return Err(self.err(span.start, format!("`{key}` belongs in a [source.NAME] section, not in a class")));
            }
        }
        Ok(())
    }

    fn timing(&self, t: RawTiming, tz: Option<&str>, jitter: SignedDuration, at: usize) -> Result<Timing, PolicyError> {
        let (cron, tz, jitter) = match t {
            RawTiming::Cron(c) => (c, tz.map(str::to_string), jitter),
            RawTiming::Table(t) => {
                let j = match &t.jitter {
                    Some(j) => fixed_duration(j).map_err(|why| self.err(at, why))?,
                    None => jitter,
                };
                (t.cron, t.timezone.or(tz.map(str::to_string)), j)
            }
        };
        if jitter < SignedDuration::ZERO {
            return Err(self.err(at, "jitter must not be negative".into()));
        }
        let schedule = Schedule::parse(&cron, tz.as_deref()).map_err(|e| self.err(at, e.to_string()))?;
        Ok(Timing { schedule, jitter })
    }

    fn keep(&self, k: &RawKeep, at: usize) -> Result<KeepPolicy, PolicyError> {
        for (name, v) in [
            ("last", k.last),
            ("hourly", k.hourly),
            ("daily", k.daily),
            ("weekly", k.weekly),
            ("monthly", k.monthly),
            ("yearly", k.yearly),
        ] {
            if v.is_some_and(|n| n < -1) {
                return Err(self.err(at, format!("keep.{name} must be a count, or -1 for unlimited")));
            }
        }
        let within = match &k.within {
            Some(w) => calendar_duration(w).map_err(|why| self.err(at, why))?,
            None => Duration::default(),
        };
        let p = KeepPolicy {
            last: k.last,
            hourly: k.hourly,
            daily: k.daily,
            weekly: k.weekly,
            monthly: k.monthly,
            yearly: k.yearly,
            within,
            tags: k.tags.iter().flatten().map(|t| vec![t.clone()]).collect(),
            ..KeepPolicy::default()
        };
        if p.is_empty() {
            return Err(self.err(at, "keep has no rule: it would forget every snapshot".into()));
        }
        Ok(p)
    }

    fn hook(&self, h: &Spanned<RawHook>) -> Result<Hook, PolicyError> {
        let (command, timeout) = match h.get_ref() {
            RawHook::Command(c) => (c.clone(), None),
            RawHook::Table(t) => (t.command.clone(), t.timeout.clone()),
        };
        if command.trim().is_empty() {
            return Err(self.at(h, "hook command is empty"));
        }
        let timeout = match timeout {
            Some(t) => fixed_duration(&t).map_err(|why| self.at(h, why))?,
            None => SignedDuration::from_mins(5),
        };
        if timeout <= SignedDuration::ZERO {
            return Err(self.at(h, "hook timeout must be longer than zero"));
        }
        Ok(Hook { command, timeout })
    }

    /// The settings of `source` over those of `class` (either may be absent).
    fn settings(
        &self,
        source: Option<&RawSection>,
        class: Option<&RawSection>,
        repos: &BTreeMap<String, Repository>,
    ) -> Result<Settings, PolicyError> {
        // The section a key is taken from: the source's if it sets it, else the class's.
        fn pick<'r, T>(
            s: Option<&'r RawSection>,
            c: Option<&'r RawSection>,
            f: impl Fn(&'r RawSection) -> Option<&'r T>,
        ) -> (Option<&'r T>, Origin) {
            if let Some(v) = s.and_then(&f) {
                return (Some(v), Origin::Source);
            }
            if let Some(v) = c.and_then(&f) {
                return (Some(v), Origin::Class);
            }
            (None, Origin::Default)
        }
        // A removable key: as `pick`, and a section's `false` is "none" from that section.
        fn pick_on<'r, T: Clone + 'r>(
            s: Option<&'r RawSection>,
            c: Option<&'r RawSection>,
            f: impl Fn(&'r RawSection) -> Option<&'r Spanned<Removable<T>>>,
        ) -> (Option<Spanned<T>>, Origin) {
            let (v, origin) = pick(s, c, f);
            (v.and_then(|v| v.get_ref().on().map(|t| Spanned::new(v.span(), t.clone()))), origin)
        }
        let repository = match pick(source, class, |r| r.repository.as_ref()) {
            (Some(r), origin) => {
                if !repos.contains_key(r.get_ref()) {
                    return Err(self.at(r, format!("repository {:?} is not defined ([repository.NAME])", r.get_ref())));
                }
                Some(Set { value: r.get_ref().clone(), origin })
            }
            (None, _) => None,
        };
        // Time zone and jitter apply to the schedules of the section that sets them, or
        // inherited from the class.
        let (tz, _) = pick(source, class, |r| r.timezone.as_ref());
        if let Some(tz) = tz {
            Schedule::parse("@daily", Some(tz.get_ref())).map_err(|e| self.at(tz, e.to_string()))?;
        }
        let tz = tz.map(|t| t.get_ref().as_str());
        let jitter = match pick(source, class, |r| r.jitter.as_ref()).0 {
            Some(j) => {
                let d = self.fixed(j)?;
                if d < SignedDuration::ZERO {
                    return Err(self.at(j, "jitter must not be negative"));
                }
                d
            }
            None => SignedDuration::ZERO,
        };
        let schedules = match pick_on(source, class, |r| r.schedule.as_ref()) {
            (Some(s), origin) => {
                let s = &s;
                let at = s.span().start;
                let raw: Vec<&RawTiming> = match s.get_ref() {
                    OneOrMany::One(t) => vec![t],
                    OneOrMany::Many(v) => v.iter().collect(),
                };
                if raw.is_empty() {
                    return Err(self.at(s, "schedule is an empty list"));
                }
                let mut v = Vec::new();
                for t in raw {
                    let t = match t {
                        RawTiming::Cron(c) => RawTiming::Cron(c.clone()),
                        RawTiming::Table(t) => RawTiming::Table(RawTimingTable {
                            cron: t.cron.clone(),
                            timezone: t.timezone.clone(),
                            jitter: t.jitter.clone(),
                        }),
                    };
                    v.push(self.timing(t, tz, jitter, at)?);
                }
                Set { value: v, origin }
            }
            (None, origin) => Set { value: Vec::new(), origin },
        };
        let objective = |f: fn(&RawSection) -> Option<&Spanned<Removable<String>>>| -> Result<_, PolicyError> {
            let (v, origin) = pick_on(source, class, f);
            Ok(Set { value: v.as_ref().map(|v| self.positive(v)).transpose()?, origin })
        };
        let rpo = objective(|r| r.rpo.as_ref())?;
        let rto = objective(|r| r.rto.as_ref())?;
        let max_duration = objective(|r| r.max_duration.as_ref())?;
        let (keep, keep_origin) = pick_on(source, class, |r| r.keep.as_ref());
        let (pitr, pitr_origin) = pick_on(source, class, |r| r.pitr_window.as_ref());
        let (keep, pitr) = (keep.as_ref(), pitr.as_ref());
        let (ret, ret_origin) = pick(source, class, |r| r.retention.as_ref());
        let retention = match (keep, pitr) {
            (None, None) => {
                // A source that removed the class's keep (`keep = false`) has no retention,
                // whatever schedule the class gives it.
                let removed = keep_origin == Origin::Source || pitr_origin == Origin::Source;
                match ret {
                    Some(_) if removed && ret_origin == Origin::Class => Set { value: None, origin: Origin::Source },
                    Some(r) => {
                        return Err(self.at(r, "retention without keep (or pitr_window): nothing says what to keep"))
                    }
                    None if removed => Set { value: None, origin: Origin::Source },
                    None => Set { value: None, origin: Origin::Default },
                }
            }
            (keep, pitr) => {
                let keep_policy = match keep {
                    Some(k) => self.keep(k.get_ref(), k.span().start)?,
                    // A PITR window alone keeps the base backups it needs (the plan adds them).
                    None => KeepPolicy { last: Some(1), ..KeepPolicy::default() },
                };
                let pitr_window = pitr.map(|p| self.positive(p)).transpose()?;
                let (schedule, prune) = match ret {
                    Some(r) => (r.get_ref().schedule.clone(), r.get_ref().prune),
                    None => (None, None),
                };
                let at = ret.map(|r| r.span().start).or(keep.map(|k| k.span().start)).unwrap_or(0);
                let timing =
                    self.timing(RawTiming::Cron(schedule.unwrap_or_else(|| "@daily".into())), tz, jitter, at)?;
                let origin = [keep_origin, pitr_origin, ret_origin]
                    .into_iter()
                    .find(|o| *o == Origin::Source)
                    .unwrap_or(Origin::Class);
                Set {
                    value: Some(Retention { keep: keep_policy, pitr_window, timing, prune: prune.unwrap_or(true) }),
                    origin,
                }
            }
        };
        let copy_to = match pick(source, class, |r| r.copy_to.as_ref()) {
            (Some(c), origin) => {
                let mut v = Vec::new();
                for t in c.get_ref() {
                    let (repository, keep) = match t {
                        RawCopyTo::Name(n) => (n.clone(), None),
                        RawCopyTo::Table(t) => {
                            (t.repository.clone(), t.keep.as_ref().map(|k| self.keep(k, c.span().start)).transpose()?)
                        }
                    };
                    if !repos.contains_key(&repository) {
                        return Err(self.at(c, format!("copy_to: repository {repository:?} is not defined")));
                    }
                    if v.iter().any(|x: &CopyTo| x.repository == repository) {
                        return Err(self.at(c, format!("copy_to names {repository:?} twice")));
                    }
                    v.push(CopyTo { repository, keep });
                }
                Set { value: v, origin }
            }
            (None, origin) => Set { value: Vec::new(), origin },
        };
        let verify = match pick_on(source, class, |r| r.verify.as_ref()) {
            (Some(v), origin) => {
                let v = &v;
                let at = v.span().start;
                let subset = match &v.get_ref().read_data_subset {
                    Some(s) => parse_percent(s).map_err(|why| self.err(at, why))?,
                    None => 0.0,
                };
                let timing = self.timing(RawTiming::Cron(v.get_ref().schedule.clone()), tz, jitter, at)?;
                Set { value: Some(Verify { timing, read_data_subset: subset }), origin }
            }
            (None, origin) => Set { value: None, origin },
        };
        let drill = match pick_on(source, class, |r| r.drill.as_ref()) {
            (Some(d), origin) => Set { value: Some(self.drill(&d, tz, jitter, repos)?), origin },
            (None, origin) => Set { value: None, origin },
        };
        let validate = match pick(source, class, |r| r.validate.as_ref()) {
            (Some(v), origin) => Set { value: self.checks(v)?, origin },
            (None, origin) => Set { value: Vec::new(), origin },
        };
        let mut hooks = Hooks::default();
        let mut hooks_origin = Origin::Default;
        for (slot, f) in [
            (
                &mut hooks.before,
                (|r: &RawSection| r.before.as_ref()) as fn(&RawSection) -> Option<&Spanned<Removable<RawHook>>>,
            ),
            (&mut hooks.after, |r| r.after.as_ref()),
            (&mut hooks.on_failure, |r| r.on_failure.as_ref()),
            (&mut hooks.finally, |r| r.finally.as_ref()),
        ] {
            if let (Some(h), origin) = pick_on(source, class, f) {
                *slot = Some(self.hook(&h)?);
                if hooks_origin != Origin::Source {
                    hooks_origin = origin;
                }
            }
        }
        let tags = match pick(source, class, |r| r.tags.as_ref()) {
            (Some(t), origin) => {
                for tag in t.get_ref() {
                    if tag.is_empty() || tag.contains(',') || tag.chars().any(char::is_control) {
                        return Err(self.at(t, format!("tag {tag:?}: tags are non-empty and hold no comma")));
                    }
                }
                Set { value: t.get_ref().clone(), origin }
            }
            (None, origin) => Set { value: Vec::new(), origin },
        };
        let compression = match pick(source, class, |r| r.compression.as_ref()) {
            (Some(c), origin) => {
                let text = match c.get_ref() {
                    RawCompression::Name(n) => n.clone(),
                    RawCompression::Level(l) => l.to_string(),
                };
                let value = Compression::parse(&text).map_err(|e| self.at(c, format!("compression: {e}")))?;
                Set { value, origin }
            }
            (None, origin) => Set { value: Compression::Auto, origin },
        };
        Ok(Settings {
            repository,
            schedules,
            rpo,
            rto,
            max_duration,
            retention,
            copy_to,
            verify,
            drill,
            validate,
            hooks: Set { value: hooks, origin: hooks_origin },
            tags,
            compression,
        })
    }

    fn source(
        &self,
        name: &str,
        s: &Spanned<RawSection>,
        classes: &BTreeMap<String, Spanned<RawSection>>,
        repos: &BTreeMap<String, Repository>,
        now: Timestamp,
    ) -> Result<Source, PolicyError> {
        let r = s.get_ref();
        let section = s.span().start;
        let class_name = r.class.as_ref().ok_or_else(|| self.err(section, format!("source {name:?} has no class")))?;
        let class = classes.get(class_name.get_ref()).ok_or_else(|| {
            self.at(class_name, format!("class {:?} is not defined ([class.NAME])", class_name.get_ref()))
        })?;
        let mut set = self.settings(Some(r), Some(class.get_ref()), repos)?;
        let repository = set.repository.take().ok_or_else(|| {
            self.err(section, format!("source {name:?} has no repository (set it in the source or its class)"))
        })?;
        let kind = self.kind(name, r, section)?;
        if !matches!(kind, SourceKind::Postgres { .. }) {
            if let Some(w) = r.pitr_window.as_ref().filter(|w| w.get_ref().on().is_some()) {
                return Err(self.at(
                    w,
                    format!(
                        "pitr_window applies to postgres sources; source {name:?} is a {} source (use keep)",
                        kind.name()
                    ),
                ));
            }
            // A window inherited from the class is for the class's postgres sources: this
            // source keeps by its keep-rules only, or, with none, everything.
            let has_keep = match r.keep.as_ref() {
                Some(k) => k.get_ref().on().is_some(),
                None => class.get_ref().keep.as_ref().is_some_and(|k| k.get_ref().on().is_some()),
            };
            if let Some(ret) = set.retention.value.as_mut() {
                ret.pitr_window = None;
            }
            if !has_keep {
                set.retention.value = None;
            }
        }
        if !matches!(kind, SourceKind::Postgres { .. } | SourceKind::Sqlite { .. }) {
            if let Some(Check::Query { sql, .. }) = set.validate.value.iter().find(|c| matches!(c, Check::Query { .. }))
            {
                let at = r.validate.as_ref().or(class.get_ref().validate.as_ref()).map(|v| v.span().start);
                return Err(self.err(
                    at.unwrap_or(section),
                    format!(
                        "validate query {sql:?}: queries apply to postgres and sqlite sources; {name:?} is a {} source",
                        kind.name()
                    ),
                ));
            }
        }
        if let Some(from) = set.drill.value.as_ref().and_then(|d| d.from.as_ref()) {
            if *from != repository.value && !set.copy_to.value.iter().any(|c| c.repository == *from) {
                let at = r.drill.as_ref().or(class.get_ref().drill.as_ref()).map(|v| v.span().start);
                return Err(self.err(
                    at.unwrap_or(section),
                    format!("drill from {from:?}: source {name:?} is not copied there (add it to copy_to)"),
                ));
            }
        }
        if let Some(copy) = set.copy_to.value.iter().find(|c| c.repository == repository.value) {
            let at = r.copy_to.as_ref().map(|c| c.span().start).unwrap_or(section);
            return Err(self.err(at, format!("copy_to names {:?}, the source's own repository", copy.repository)));
        }
        // A schedule that cannot meet the RPO. PostgreSQL's RPO is kept by WAL archiving,
        // not by the base backups' schedule, so it is measured rather than checked here.
        if let (Some(rpo), false) = (set.rpo.value, matches!(kind, SourceKind::Postgres { .. })) {
            let at = r
                .schedule
                .as_ref()
                .map(|s| s.span().start)
                .or_else(|| class.get_ref().schedule.as_ref().map(|s| s.span().start))
                .unwrap_or(section);
            if set.schedules.value.is_empty() {
                return Err(self.err(at, format!("source {name:?} has an rpo but no schedule to meet it")));
            }
            let key = (
                set.schedules
                    .value
                    .iter()
                    .map(|t| (t.schedule.text().to_string(), t.schedule.time_zone().to_string(), t.jitter.as_secs()))
                    .collect::<Vec<_>>(),
                rpo.as_secs(),
            );
            let gap = *self.gaps.borrow_mut().entry(key).or_insert_with(|| longest_gap(&set.schedules.value, now, rpo));
            if let Some(gap) = gap {
                return Err(self.err(
                    at,
                    format!(
                        "the schedule of source {name:?} leaves up to {} between backups, more than its rpo of {}",
                        human(gap),
                        human(rpo)
                    ),
                ));
            }
        }
        Ok(Source {
            name: name.to_string(),
            class: class_name.get_ref().clone(),
            repository,
            kind,
            schedules: set.schedules,
            rpo: set.rpo,
            rto: set.rto,
            max_duration: set.max_duration,
            retention: set.retention,
            copy_to: set.copy_to,
            verify: set.verify,
            drill: set.drill,
            validate: set.validate,
            hooks: set.hooks,
            tags: set.tags,
            compression: set.compression,
        })
    }

    fn kind(&self, name: &str, r: &RawSection, section: usize) -> Result<SourceKind, PolicyError> {
        let kind = r.kind.as_ref().ok_or_else(|| {
            self.err(section, format!("source {name:?} has no kind (files, command, postgres or sqlite)"))
        })?;
        // Keys of the other kinds are mistakes, not silently ignored.
        let keys: [(&str, Option<std::ops::Range<usize>>); 12] = [
            ("paths", r.paths.as_ref().map(|s| s.span())),
            ("exclude", r.exclude.as_ref().map(|s| s.span())),
            ("exclude_file", r.exclude_file.as_ref().map(|s| s.span())),
            ("one_file_system", r.one_file_system.as_ref().map(|s| s.span())),
            ("atime", r.atime.as_ref().map(|s| s.span())),
            ("command", r.command.as_ref().map(|s| s.span())),
            ("output", r.output.as_ref().map(|s| s.span())),
            ("stdin_name", r.stdin_name.as_ref().map(|s| s.span())),
            ("data_dir", r.data_dir.as_ref().map(|s| s.span())),
            ("connection", r.connection.as_ref().map(|s| s.span())),
            ("stream", r.stream.as_ref().map(|s| s.span())),
            ("path", r.path.as_ref().map(|s| s.span())),
        ];
        let allowed: &[&str] = match kind.get_ref().as_str() {
            "files" => &["paths", "exclude", "exclude_file", "one_file_system", "atime"],
            "command" => &["command", "output", "stdin_name"],
            "postgres" => &["data_dir", "connection", "stream"],
            "sqlite" => &["path"],
            other => {
                return Err(self.at(kind, format!("kind {other:?} is not one of files, command, postgres, sqlite")))
            }
        };
        for (key, span) in &keys {
            if let (Some(span), false) = (span, allowed.contains(key)) {
                return Err(self.err(span.start, format!("`{key}` does not apply to a {} source", kind.get_ref())));
            }
        }
        let need = |v: &Option<Spanned<String>>, key: &str| -> Result<String, PolicyError> {
            match v {
                Some(v) if !v.get_ref().trim().is_empty() => Ok(v.get_ref().clone()),
                Some(v) => Err(self.at(v, format!("{key} is empty"))),
                None => Err(self.err(section, format!("a {} source needs `{key}`", kind.get_ref()))),
            }
        };
        let absolute = |v: &Spanned<String>| -> Result<String, PolicyError> {
            if !v.get_ref().starts_with('/') {
                return Err(self.at(v, format!("{:?} is not an absolute path", v.get_ref())));
            }
            Ok(v.get_ref().clone())
        };
        Ok(match kind.get_ref().as_str() {
            "files" => {
                let paths = r.paths.as_ref().ok_or_else(|| self.err(section, "a files source needs `paths`".into()))?;
                if paths.get_ref().is_empty() {
                    return Err(self.at(paths, "paths is empty"));
                }
                for p in paths.get_ref() {
                    if !p.starts_with('/') {
                        return Err(self.at(paths, format!("{p:?} is not an absolute path")));
                    }
                }
                SourceKind::Files {
                    paths: paths.get_ref().clone(),
                    exclude: r.exclude.as_ref().map(|e| e.get_ref().clone()).unwrap_or_default(),
                    exclude_files: r.exclude_file.as_ref().map(|e| e.get_ref().clone()).unwrap_or_default(),
                    one_file_system: r.one_file_system.as_ref().is_some_and(|b| *b.get_ref()),
                    atime: r.atime.as_ref().is_some_and(|b| *b.get_ref()),
                }
            }
            "command" => {
                let command = need(&r.command, "command")?;
                match r.output.as_ref().map(|o| o.get_ref().as_str()) {
                    None | Some("stdout") => {
                        let stdin_name = match &r.stdin_name {
                            Some(n) => {
                                let v = n.get_ref();
                                if v.is_empty() || v.contains('/') || v == "." || v == ".." {
                                    return Err(self.at(n, "stdin_name must be a plain file name"));
                                }
                                v.clone()
                            }
                            None => name.to_string(),
                        };
                        SourceKind::Command { command, stdin_name }
                    }
                    Some("dir") => {
                        if let Some(n) = &r.stdin_name {
                            return Err(self.at(n, "stdin_name applies to output = \"stdout\" only"));
                        }
                        if !command.contains("{dir}") {
                            let at = r.command.as_ref().map(|c| c.span().start).unwrap_or(section);
                            return Err(self.err(
                                at,
                                "output = \"dir\": the command must name {dir}, the directory it writes".into(),
                            ));
                        }
                        SourceKind::CommandDir { command }
                    }
                    Some(other) => {
                        let at = r.output.as_ref().map(|o| o.span().start).unwrap_or(section);
                        return Err(self.err(at, format!("output {other:?} is not \"stdout\" or \"dir\"")));
                    }
                }
            }
            "postgres" => {
                let data_dir = r
                    .data_dir
                    .as_ref()
                    .ok_or_else(|| self.err(section, "a postgres source needs `data_dir`".into()))?;
                SourceKind::Postgres {
                    data_dir: absolute(data_dir)?,
                    connection: need(&r.connection, "connection")?,
                    stream: r.stream.as_ref().is_some_and(|b| *b.get_ref()),
                }
            }
            _ => {
                let path = r.path.as_ref().ok_or_else(|| self.err(section, "a sqlite source needs `path`".into()))?;
                SourceKind::Sqlite { path: absolute(path)? }
            }
        })
    }
}

/// `str::floor_char_boundary` is unstable; error spans from the parser are on boundaries,
/// this only guards against a span in the middle of a character.
trait FloorBoundary {
    fn floor_char_boundary_compat(&self, i: usize) -> usize;
}

impl FloorBoundary for str {
    fn floor_char_boundary_compat(&self, mut i: usize) -> usize {
        while i > 0 && !self.is_char_boundary(i) {
            i -= 1;
        }
        i
    }
}

/// The longest gap between runs of the union of `timings` (jitter added to the gap) if it
/// exceeds `rpo`. Looked at over a window long enough to see every pattern a cron
/// expression has (a year for sparse schedules, fewer days for frequent ones), and around
/// every DST change of the year ahead, so the answer does not depend on the day of the
/// check.
fn longest_gap(timings: &[Timing], now: Timestamp, rpo: SignedDuration) -> Option<SignedDuration> {
    let year = SignedDuration::from_hours(24 * 366);
    let window = rpo.checked_mul(2000).unwrap_or(year).clamp(SignedDuration::from_hours(24 * 15), year);
    let mut windows = vec![(now, now.checked_add(window).ok()?)];
    let around = rpo.checked_mul(3).unwrap_or(year).max(SignedDuration::from_hours(48)).min(year);
    let horizon = now.checked_add(year).ok()?;
    for t in timings {
        for change in t.schedule.offset_changes(now, horizon) {
            let (Ok(a), Ok(b)) = (change.checked_sub(around), change.checked_add(around)) else { continue };
            windows.push((a.max(now), b));
        }
    }
    windows.into_iter().filter_map(|(a, b)| gap_in(timings, a, b, rpo)).max()
}

fn gap_in(timings: &[Timing], from: Timestamp, end: Timestamp, rpo: SignedDuration) -> Option<SignedDuration> {
    const MAX_RUNS: usize = 50_000;
    let year = SignedDuration::from_hours(24 * 366);
    let jitter = timings.iter().map(|t| t.jitter).max().unwrap_or(SignedDuration::ZERO);
    let next = |t: Timestamp| timings.iter().filter_map(|x| x.schedule.next_after(t)).min();
    let Some(mut prev) = next(from) else {
        return Some(year);
    };
    let mut runs = 0;
    while prev < end && runs < MAX_RUNS {
        let Some(n) = next(prev) else {
            return Some(year);
        };
        let gap = n.duration_since(prev).saturating_add(jitter);
        if gap > rpo {
            return Some(gap);
        }
        prev = n;
        runs += 1;
    }
    None
}

/// A duration for people: `15m`, `1h 30m`, `2d`.
pub fn human(d: SignedDuration) -> String {
    let mut s = d.as_secs();
    if s == 0 {
        return "0s".into();
    }
    let mut out = Vec::new();
    for (unit, len) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if s >= len {
            out.push(format!("{}{unit}", s / len));
            s %= len;
        }
    }
    out.join(" ")
}

/// A fixed length of time: `30s`, `15m`, `6h`, `7d` (24 h), `2w`; no months or years.
pub fn fixed_duration(s: &str) -> Result<SignedDuration, String> {
    let span: Span = s.parse().map_err(|_| format!("{s:?} is not a duration like 30s, 15m, 6h, 7d or 1h30m"))?;
    if span.get_years() != 0 || span.get_months() != 0 {
        return Err(format!("{s:?}: months and years have no fixed length; use days (30d, 365d)"));
    }
    let secs = span.get_weeks() as i128 * 7 * 86_400
        + span.get_days() as i128 * 86_400
        + span.get_hours() as i128 * 3_600
        + span.get_minutes() as i128 * 60
        + span.get_seconds() as i128;
    if span.get_milliseconds() != 0 || span.get_microseconds() != 0 || span.get_nanoseconds() != 0 {
        return Err(format!("{s:?}: durations are whole seconds"));
    }
    i64::try_from(secs).map(SignedDuration::from_secs).map_err(|_| format!("{s:?} is too long"))
}

/// Calendar time for `keep.within`: years, months, weeks, days, hours.
fn calendar_duration(s: &str) -> Result<Duration, String> {
    let span: Span = s.parse().map_err(|_| format!("{s:?} is not a duration like 7d, 6mo or 1y"))?;
    if span.get_minutes() != 0 || span.get_seconds() != 0 || span.get_milliseconds() != 0 {
        return Err(format!("{s:?}: keep.within counts hours, days, weeks, months and years"));
    }
    let d = Duration {
        years: span.get_years() as i32,
        months: span.get_months(),
        days: span.get_weeks() * 7 + span.get_days(),
        hours: span.get_hours(),
    };
    if d == Duration::default() || span.is_negative() {
        return Err(format!("{s:?} must be longer than zero"));
    }
    Ok(d)
}

/// `10MiB`, `1.5 GB`, `500k`, `2TiB`, or a bare number of bytes. k/M/G/T are decimal,
/// Ki/Mi/Gi/Ti binary; a trailing `/s` is allowed (bandwidth limits).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let bad = || format!("{s:?} is not a size like 10MiB, 1.5GB or 500k");
    let t = s.trim();
    let t = t.strip_suffix("/s").unwrap_or(t).trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| bad())?;
    let mult: f64 = match unit.trim().trim_end_matches(['B', 'b']).to_ascii_lowercase().as_str() {
        "" => 1.0,
        "k" => 1e3,
        "m" => 1e6,
        "g" => 1e9,
        "t" => 1e12,
        "ki" => 1024.0,
        "mi" => 1024.0 * 1024.0,
        "gi" => 1024.0 * 1024.0 * 1024.0,
        "ti" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return Err(bad()),
    };
    let v = n * mult;
    if !v.is_finite() || v < 0.0 || v > u64::MAX as f64 / 2.0 {
        return Err(bad());
    }
    Ok(v.round() as u64)
}

fn parse_percent(s: &str) -> Result<f64, String> {
    let bad = || format!("read_data_subset {s:?} is not a percentage like 5%");
    let v: f64 = s.trim().strip_suffix('%').ok_or_else(bad)?.trim().parse().map_err(|_| bad())?;
    if !(v > 0.0 && v <= 100.0) {
        return Err(bad());
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2026-12-02T09:00:00Z".parse().expect("time")
    }

    const GOOD: &str = r#"
[repository.primary]
url = "/srv/repo"
password_file = "/etc/cairn/primary.pass"

[repository.offsite]
url = "s3://bucket/cairn"
password_command = "cat /etc/cairn/offsite.pass"
object_lock_days = 30
limit_upload = "10MiB"

[class.critical]
repository = "primary"
schedule = "*/15 * * * *"
rpo = "20m"
rto = "1h"
keep = { within = "2d", daily = 30, weekly = 12 }
copy_to = ["offsite"]
verify = { schedule = "0 3 * * *", read_data_subset = "5%" }

[source.uploads]
class = "critical"
kind = "files"
paths = ["/srv/uploads"]
exclude = ["*.tmp"]
rpo = "1h"

[source.db]
class = "critical"
kind = "command"
command = "pg_dumpall"
stdin_name = "all.sql"
"#;

    fn err(text: &str) -> PolicyError {
        parse("p.toml", text, now()).expect_err("should fail")
    }

    #[test]
    fn email_targets_are_checked_where_they_are_written() {
        let with = |alert: &str| format!("{GOOD}\n[alert.mail]\nkind = \"email\"\n{alert}\n");
        let ok = with(
            "smtp = \"smtp+starttls://mail.example.net\"\nfrom = \"cairn@example.net\"\nto = [\"ops@example.net\"]\nusername = \"u\"\npassword_file = \"/etc/cairn/smtp.pass\"",
        );
        let p = parse("p.toml", &ok, now()).expect("parses");
        match &p.alerts["mail"].target {
            Target::Email(e) => {
                assert_eq!((e.host.as_str(), e.port, e.security), ("mail.example.net", 587, SmtpSecurity::StartTls));
            }
            t => panic!("{t:?}"),
        }
        for (alert, why) in [
            ("smtp = \"smtp://mail.example.net\"\nfrom = \"a@b.c\"\nto = [\"o@b.c\"]\nusername = \"u\"\npassword_file = \"/p\"", "plain smtp://"),
            ("smtp = \"smtps://mail.example.net\"\nfrom = \"a@b.c\"\nto = []", "at least one address"),
            ("smtp = \"smtps://mail.example.net\"\nfrom = \"a@b.c\"\nto = [\"o@b.c>\\r\\nRCPT TO:<x@y.z\"]", "not a mail address"),
            ("smtp = \"smtps://mail.example.net:0\"\nfrom = \"a@b.c\"\nto = [\"o@b.c\"]", "port"),
            ("smtp = \"mail.example.net\"\nfrom = \"a@b.c\"\nto = [\"o@b.c\"]", "use smtps://"),
            ("smtp = \"smtps://m\"\nfrom = \"a@b.c\"\nto = [\"o@b.c\"]\nusername = \"u\"", "go together"),
            ("smtp = \"smtps://m\"\nfrom = \"a@b.c\"\nto = [\"o@b.c\"]\nca_file = \"ca.pem\"", "absolute"),
            ("url = \"https://x\"\nsmtp = \"smtps://m\"\nfrom = \"a@b.c\"\nto = [\"o@b.c\"]", "url does not apply"),
        ] {
            let e = err(&with(alert)).to_string();
            assert!(e.contains(why), "{alert}: {e}");
        }
        let e = err(&format!("{GOOD}\n[alert.hook]\nkind = \"webhook\"\nurl = \"https://x\"\nto = [\"o@b.c\"]\n"))
            .to_string();
        assert!(e.contains("to does not apply to a webhook alert"), "{e}");
    }

    #[test]
    fn resolves_sources_over_classes() {
        let p = parse("p.toml", GOOD, now()).expect("parses");
        let u = &p.sources["uploads"];
        assert_eq!(u.repository.value, "primary");
        assert_eq!(u.repository.origin, Origin::Class);
        assert_eq!(u.rpo.value, Some(SignedDuration::from_hours(1)));
        assert_eq!(u.rpo.origin, Origin::Source);
        assert_eq!(u.copy_to.value[0].repository, "offsite");
        assert_eq!(p.repositories["offsite"].limit_upload, Some(10 * 1024 * 1024));
        assert!(matches!(&p.sources["db"].kind, SourceKind::Command { stdin_name, .. } if stdin_name == "all.sql"));
        let r = u.retention.value.as_ref().expect("retention");
        assert_eq!(r.keep.daily, Some(30));
        assert_eq!(r.keep.within, Duration { days: 2, ..Duration::default() });
    }

    #[test]
    fn compression_is_inherited_overridden_and_checked() {
        let text = GOOD
            .replace("rpo = \"20m\"", "rpo = \"20m\"\ncompression = \"max\"")
            .replace("stdin_name = \"all.sql\"", "stdin_name = \"all.sql\"\ncompression = \"off\"");
        let p = parse("p.toml", &text, now()).expect("parses");
        let (u, db) = (&p.sources["uploads"], &p.sources["db"]);
        assert_eq!((u.compression.value, u.compression.origin), (Compression::Level(9), Origin::Class));
        assert_eq!((db.compression.value, db.compression.origin), (Compression::Off, Origin::Source));
        assert_eq!(db.compression.value.level(), Some(0));
        let p = parse("p.toml", GOOD, now()).expect("parses");
        assert_eq!(p.sources["uploads"].compression.value, Compression::Auto);
        assert_eq!(p.sources["uploads"].compression.value.level(), None);
        let six = GOOD.replace("rpo = \"1h\"", "rpo = \"1h\"\ncompression = 6");
        assert_eq!(
            parse("p.toml", &six, now()).expect("parses").sources["uploads"].compression.value,
            Compression::Level(6)
        );
        for bad in ["\"fastest\"", "\"20\"", "\"0\"", "20", "true"] {
            let e = err(&GOOD.replace("rpo = \"1h\"", &format!("rpo = \"1h\"\ncompression = {bad}")));
            assert!(e.message.contains("compression") || e.to_string().contains("compression"), "{bad}: {e}");
        }
        assert_eq!(Compression::parse("7").map(|c| c.to_string()), Ok("7".to_string()));
        assert_eq!(Compression::parse("fast").map(|c| c.to_string()), Ok("fast".to_string()));
    }

    #[test]
    fn a_source_removes_what_its_class_gives_with_false() {
        let text = r#"
[repository.primary]
url = "/srv/backup"
password_file = "/etc/cairn/pass"

[class.gold]
repository = "primary"
schedule = "0 * * * *"
rpo = "2h"
rto = "1h"
max_duration = "30m"
keep = { daily = 7 }
retention = { schedule = "0 5 * * *" }
verify = { schedule = "0 3 * * *", read_data_subset = "5%" }
drill = { schedule = "0 4 * * 6" }
before = "true"
after = { command = "true", timeout = "10s" }

[source.kept]
class = "gold"
kind = "files"
paths = ["/srv/a"]

[source.bare]
class = "gold"
kind = "files"
paths = ["/srv/b"]
schedule = false
rpo = false
rto = false
max_duration = false
keep = false
verify = false
drill = false
before = false
after = false
"#;
        let p = parse("p.toml", text, now()).expect("parses");
        let (kept, bare) = (&p.sources["kept"], &p.sources["bare"]);
        assert!(kept.verify.value.is_some() && kept.drill.value.is_some() && kept.retention.value.is_some());
        assert!(kept.hooks.value.before.is_some() && kept.hooks.value.after.is_some());
        assert_eq!(kept.verify.origin, Origin::Class);
        // Each taken away, and `policy check` says the source did it.
        assert!(bare.schedules.value.is_empty());
        assert_eq!((bare.rpo.value, bare.rto.value, bare.max_duration.value), (None, None, None));
        assert!(bare.verify.value.is_none() && bare.drill.value.is_none() && bare.retention.value.is_none());
        assert_eq!(bare.retention.origin, Origin::Source);
        assert!(bare.hooks.value.before.is_none() && bare.hooks.value.after.is_none());
        assert_eq!(
            (bare.verify.origin, bare.rpo.origin, bare.drill.origin),
            (Origin::Source, Origin::Source, Origin::Source)
        );
        // `true` is no setting, and a malformed table keeps its precise message.
        let e = err(&text.replace("verify = false", "verify = true"));
        assert!(e.message.contains("true is not a setting"), "{e}");
        assert_eq!(e.line, text.lines().position(|l| l == "verify = false").unwrap() + 1);
        let e = err(&text.replace("verify = false", r#"verify = { schedule = "@daily", subset = "5%" }"#));
        assert!(e.message.contains("unknown field `subset`"), "{e}");
        let e = err(&text.replace("rpo = false", "rpo = \"fortnight\""));
        assert!(e.message.contains("fortnight"), "{e}");
    }

    #[test]
    fn mistakes_are_located() {
        let e = err("[class.c]\nrpo = \"15m\"\nbogus = 1\n");
        assert_eq!((e.line, e.column), (3, 1), "{e}");
        let e = err(&GOOD.replace("rpo = \"1h\"", "rpo = \"1 fortnight\""));
        assert!(e.message.contains("not a duration"), "{e}");
        let e = err(&GOOD.replace("*/15 * * * *", "*/15 * * *"));
        assert!(e.message.contains("*/15 * * *"), "{e}");
        let e = err(&GOOD.replace("class = \"critical\"\nkind = \"files\"", "class = \"nope\"\nkind = \"files\""));
        assert!(e.message.contains("class \"nope\" is not defined"), "{e}");
        let line = GOOD.lines().position(|l| l == "class = \"nope\"");
        let _ = line;
        let e = err(&GOOD.replace("copy_to = [\"offsite\"]", "copy_to = [\"elsewhere\"]"));
        assert!(e.message.contains("\"elsewhere\" is not defined"), "{e}");
        let e = err(&GOOD.replace("schedule = \"*/15 * * * *\"", "schedule = \"0 2 * * *\""));
        assert!(e.message.contains("more than its rpo"), "{e}");
        let e = err(&GOOD.replace("paths = [\"/srv/uploads\"]", "paths = [\"/srv/uploads\"]\ncommand = \"x\""));
        assert!(e.message.contains("does not apply to a files source"), "{e}");
        let e = err(&GOOD.replace("rto = \"1h\"", "rto = \"1h\"\npaths = [\"/x\"]"));
        assert!(e.message.contains("not in a class"), "{e}");
    }

    #[test]
    fn line_and_column_point_at_the_value() {
        let text = "[class.c]\nrpo = \"soon\"\n";
        let e = err(text);
        assert_eq!((e.line, e.column), (2, 7), "{e}");
        assert_eq!(e.to_string(), format!("p.toml:2:7: {}", e.message));
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(fixed_duration("15m"), Ok(SignedDuration::from_mins(15)));
        assert_eq!(fixed_duration("7d"), Ok(SignedDuration::from_hours(168)));
        assert_eq!(fixed_duration("1h30m"), Ok(SignedDuration::from_mins(90)));
        assert!(fixed_duration("6mo").is_err());
        assert_eq!(calendar_duration("6mo"), Ok(Duration { months: 6, ..Duration::default() }));
        assert_eq!(calendar_duration("2w"), Ok(Duration { days: 14, ..Duration::default() }));
        assert_eq!(parse_size("10MiB"), Ok(10 << 20));
        assert_eq!(parse_size("1.5GB"), Ok(1_500_000_000));
        assert_eq!(parse_size("500k/s"), Ok(500_000));
        assert!(parse_size("lots").is_err());
        assert_eq!(human(SignedDuration::from_secs(90061)), "1d 1h 1m 1s");
    }

    #[test]
    fn the_rpo_check_sees_dst_changes_whatever_the_day() {
        let text = "[repository.r]\nurl = \"/r\"\n[class.c]\nrepository = \"r\"\nschedule = \"0 */2 * * *\"\ntimezone = \"Europe/Berlin\"\nrpo = \"2h\"\n[source.s]\nclass = \"c\"\nkind = \"files\"\npaths = [\"/x\"]\n";
        // Months away from October's change, which leaves a three-hour gap.
        let e = parse("p.toml", text, "2026-05-01T00:00:00Z".parse().expect("t")).expect_err("gap");
        assert!(e.message.contains("3h"), "{e}");
        assert!(parse("p.toml", &text.replace("rpo = \"2h\"", "rpo = \"3h\""), now()).is_ok());
    }

    #[test]
    fn a_class_pitr_window_applies_to_its_postgres_sources_only() {
        let text = "[repository.r]\nurl = \"/r\"\n[class.c]\nrepository = \"r\"\npitr_window = \"7d\"\n\
                    [source.db]\nclass = \"c\"\nkind = \"postgres\"\ndata_dir = \"/pg\"\nconnection = \"host=/run\"\n\
                    [source.f]\nclass = \"c\"\nkind = \"files\"\npaths = [\"/x\"]\n";
        let p = parse("p.toml", text, now()).expect("parses");
        let db = p.sources["db"].retention.value.as_ref().expect("db retention");
        assert_eq!(db.pitr_window, Some(SignedDuration::from_hours(168)));
        assert!(p.sources["f"].retention.value.is_none(), "no keep: the files source keeps everything");
        let with_keep = text.replace("pitr_window = \"7d\"", "pitr_window = \"7d\"\nkeep = { daily = 7 }");
        let p = parse("p.toml", &with_keep, now()).expect("parses");
        let f = p.sources["f"].retention.value.as_ref().expect("keep applies");
        assert_eq!((f.pitr_window, f.keep.daily), (None, Some(7)));
        let own = text.replace("paths = [\"/x\"]", "paths = [\"/x\"]\npitr_window = \"1d\"");
        assert!(parse("p.toml", &own, now()).expect_err("refused").message.contains("postgres sources"));
    }

    #[test]
    fn every_second_schedule_meets_a_minute_rpo_quickly() {
        let text = "[repository.r]\nurl = \"/r\"\n[class.c]\nrepository = \"r\"\nschedule = \"* * * * * *\"\nrpo = \"1m\"\n[source.s]\nclass = \"c\"\nkind = \"files\"\npaths = [\"/x\"]\n";
        let t = std::time::Instant::now();
        parse("p.toml", text, now()).expect("parses");
        assert!(t.elapsed() < std::time::Duration::from_secs(5));
    }
}

//! The one table of routes: every path the server answers, the permission it needs, and
//! what the OpenAPI document says of it. The router is built from this table only
//! ([`crate::app`]), and the authorization layer looks each request's route up in it, so a
//! route without a permission cannot exist; the authorization test walks the same table.

use std::sync::Arc;

use axum::routing::{delete, get, post, MethodRouter};
use cairn_daemon::tokens::Role;

use crate::{api, console, App};

/// What a route needs. Roles grant permissions in [`grants`], the only place that says
/// which role may do what.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Perm {
    /// No token: the login page, static assets, the OpenAPI document.
    Public,
    /// Status, sources, jobs, drill history, snapshot lists.
    Status,
    /// `/metrics`.
    Metrics,
    /// The audit log and its verification.
    Audit,
    /// Directory listings, search and file versions (names and metadata).
    Browse,
    /// File contents: preview and download.
    Read,
    /// Restore as a copy into an allowed directory.
    RestoreCopy,
    /// Restore in place (overwrites live data).
    RestoreInPlace,
    /// Start a manual backup.
    Backup,
    /// Start a drill.
    Drill,
    /// Create, list and revoke tokens.
    Tokens,
}

impl Perm {
    pub fn as_str(self) -> &'static str {
        match self {
            Perm::Public => "public",
            Perm::Status => "status",
            Perm::Metrics => "metrics",
            Perm::Audit => "audit",
            Perm::Browse => "browse",
            Perm::Read => "read",
            Perm::RestoreCopy => "restore_copy",
            Perm::RestoreInPlace => "restore_in_place",
            Perm::Backup => "backup",
            Perm::Drill => "drill",
            Perm::Tokens => "tokens",
        }
    }
}

/// Whether `role` may do what `perm` guards.
pub fn grants(role: Role, perm: Perm) -> bool {
    use Perm::*;
    match role {
        Role::Admin => true,
        Role::Operator => !matches!(perm, Audit | Tokens),
        Role::Restore => matches!(perm, Public | Status | Browse | Read | RestoreCopy),
        Role::Auditor => matches!(perm, Public | Status | Metrics | Audit),
    }
}

/// Where a parameter is, for the OpenAPI document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum In {
    Path,
    Query,
}

#[derive(Debug, Clone, Copy)]
pub struct Param {
    pub name: &'static str,
    pub at: In,
    pub required: bool,
    /// `string`, `integer` or `boolean`.
    pub ty: &'static str,
    pub description: &'static str,
}

/// What a route answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// JSON, with the name of its schema in the OpenAPI document.
    Json(&'static str),
    Html,
    /// Text of this media type (Prometheus exposition, the console's script and style).
    Text(&'static str),
    Bytes,
    /// A redirect (login, logout).
    Redirect,
}

pub struct Route {
    pub method: &'static str,
    /// axum's syntax (`{id}`), which is OpenAPI's too.
    pub path: &'static str,
    pub perm: Perm,
    pub summary: &'static str,
    pub params: &'static [Param],
    /// The JSON request body's schema, or `form` for a form post.
    pub body: Option<&'static str>,
    pub answer: Answer,
    pub handler: fn() -> MethodRouter<Arc<App>>,
}

const fn q(name: &'static str, ty: &'static str, description: &'static str) -> Param {
    Param { name, at: In::Query, required: false, ty, description }
}
const fn rq(name: &'static str, ty: &'static str, description: &'static str) -> Param {
    Param { name, at: In::Query, required: true, ty, description }
}
const fn p(name: &'static str, description: &'static str) -> Param {
    Param { name, at: In::Path, required: true, ty: "string", description }
}

const SNAP: Param = p("id", "snapshot id or a unique prefix of at least 8 hex digits");
const REPO: Param = q("repository", "string", "policy repository name (default: the first one, or the source's)");
const SOURCE: Param = q("source", "string", "source name");
const LIMIT: Param = q("limit", "integer", "at most this many results");

pub static ROUTES: &[Route] = &[
    // ---- public ---------------------------------------------------------------------
    Route {
        method: "GET",
        path: "/login",
        perm: Perm::Public,
        summary: "Console login page",
        params: &[],
        body: None,
        answer: Answer::Html,
        handler: || get(console::login_page),
    },
    Route {
        method: "POST",
        path: "/login",
        perm: Perm::Public,
        summary: "Log in with a token (sets the session cookie)",
        params: &[],
        body: Some("form"),
        answer: Answer::Redirect,
        handler: || post(console::login),
    },
    Route {
        method: "GET",
        path: "/static/console.js",
        perm: Perm::Public,
        summary: "Console script",
        params: &[],
        body: None,
        answer: Answer::Text("text/javascript"),
        handler: || get(console::script),
    },
    Route {
        method: "GET",
        path: "/static/console.css",
        perm: Perm::Public,
        summary: "Console style sheet",
        params: &[],
        body: None,
        answer: Answer::Text("text/css"),
        handler: || get(console::style),
    },
    Route {
        method: "GET",
        path: "/api/openapi.json",
        perm: Perm::Public,
        summary: "This API's OpenAPI 3 document",
        params: &[],
        body: None,
        answer: Answer::Json("object"),
        handler: || get(api::openapi),
    },
    // ---- monitoring -----------------------------------------------------------------
    Route {
        method: "GET",
        path: "/metrics",
        perm: Perm::Metrics,
        summary: "Prometheus metrics",
        params: &[],
        body: None,
        answer: Answer::Text("text/plain"),
        handler: || get(api::metrics),
    },
    Route {
        method: "GET",
        path: "/api/whoami",
        perm: Perm::Status,
        summary: "The caller's token, role and permissions",
        params: &[],
        body: None,
        answer: Answer::Json("Whoami"),
        handler: || get(api::whoami),
    },
    Route {
        method: "GET",
        path: "/api/status",
        perm: Perm::Status,
        summary: "Every source with its RPO state, data age, last and next run",
        params: &[SOURCE],
        body: None,
        answer: Answer::Json("StatusList"),
        handler: || get(api::status),
    },
    Route {
        method: "GET",
        path: "/api/sources",
        perm: Perm::Status,
        summary: "The policy's sources with class, repository, RPO and RTO",
        params: &[],
        body: None,
        answer: Answer::Json("SourceList"),
        handler: || get(api::sources),
    },
    Route {
        method: "GET",
        path: "/api/jobs",
        perm: Perm::Status,
        summary: "Jobs, newest first",
        params: &[SOURCE, q("kind", "string", "backup, retention, verify, copy or drill"), LIMIT],
        body: None,
        answer: Answer::Json("JobList"),
        handler: || get(api::jobs),
    },
    Route {
        method: "GET",
        path: "/api/jobs/{host}/{n}",
        perm: Perm::Status,
        summary: "One job and its log",
        params: &[p("host", "the host that ran it"), p("n", "its number on that host")],
        body: None,
        answer: Answer::Json("JobDetail"),
        handler: || get(api::job),
    },
    Route {
        method: "GET",
        path: "/api/drills",
        perm: Perm::Status,
        summary: "Drill history with measured RTO and RPO",
        params: &[SOURCE],
        body: None,
        answer: Answer::Json("DrillList"),
        handler: || get(api::drills),
    },
    Route {
        method: "GET",
        path: "/api/tasks/{id}",
        perm: Perm::Status,
        summary: "A backup, drill or restore started through the API: its progress and result",
        params: &[p("id", "task id")],
        body: None,
        answer: Answer::Json("Task"),
        handler: || get(api::task),
    },
    Route {
        method: "GET",
        path: "/api/snapshots",
        perm: Perm::Status,
        summary: "Snapshots of a repository, newest first",
        params: &[REPO, SOURCE],
        body: None,
        answer: Answer::Json("SnapshotList"),
        handler: || get(api::snapshots),
    },
    // ---- browsing and contents ------------------------------------------------------
    Route {
        method: "GET",
        path: "/api/snapshots/{id}/tree",
        perm: Perm::Browse,
        summary: "One directory of a snapshot",
        params: &[SNAP, REPO, q("path", "string", "directory path in the snapshot (default /)"), LIMIT],
        body: None,
        answer: Answer::Json("Listing"),
        handler: || get(api::tree),
    },
    Route {
        method: "GET",
        path: "/api/search",
        perm: Perm::Browse,
        summary: "Entries matching a name or path glob across snapshots",
        params: &[rq("q", "string", "glob: *.pdf matches names at any depth, /srv/*/x a path"), REPO, SOURCE, LIMIT],
        body: None,
        answer: Answer::Json("SearchResult"),
        handler: || get(api::search),
    },
    Route {
        method: "GET",
        path: "/api/versions",
        perm: Perm::Browse,
        summary: "The versions of one file across snapshots",
        params: &[rq("path", "string", "absolute path in the snapshots"), REPO, SOURCE],
        body: None,
        answer: Answer::Json("VersionList"),
        handler: || get(api::versions),
    },
    Route {
        method: "GET",
        path: "/api/snapshots/{id}/file",
        perm: Perm::Read,
        summary: "A file's content (download, or a text preview)",
        params: &[
            SNAP,
            REPO,
            rq("path", "string", "file path in the snapshot"),
            q("preview", "boolean", "the first 64 KiB as text, not an attachment"),
        ],
        body: None,
        answer: Answer::Bytes,
        handler: || get(api::file),
    },
    // ---- actions --------------------------------------------------------------------
    Route {
        method: "POST",
        path: "/api/restore/copy",
        perm: Perm::RestoreCopy,
        summary: "Restore a selection as a copy into an allowed directory",
        params: &[],
        body: Some("RestoreCopy"),
        answer: Answer::Json("Task"),
        handler: || post(api::restore_copy),
    },
    Route {
        method: "POST",
        path: "/api/restore/in-place/preview",
        perm: Perm::RestoreInPlace,
        summary: "What restoring a selection in place would overwrite",
        params: &[],
        body: Some("RestoreInPlace"),
        answer: Answer::Json("Preview"),
        handler: || post(api::preview_in_place),
    },
    Route {
        method: "POST",
        path: "/api/restore/in-place",
        perm: Perm::RestoreInPlace,
        summary: "Restore a selection in place (needs confirm = the snapshot id's first 8 digits)",
        params: &[],
        body: Some("RestoreInPlace"),
        answer: Answer::Json("Task"),
        handler: || post(api::restore_in_place),
    },
    Route {
        method: "POST",
        path: "/api/backups",
        perm: Perm::Backup,
        summary: "Start a manual backup of a source (label and reason required)",
        params: &[],
        body: Some("BackupRequest"),
        answer: Answer::Json("Task"),
        handler: || post(api::backup),
    },
    Route {
        method: "POST",
        path: "/api/drills",
        perm: Perm::Drill,
        summary: "Run a drill of a source now",
        params: &[],
        body: Some("DrillRequest"),
        answer: Answer::Json("Task"),
        handler: || post(api::drill),
    },
    // ---- audit ----------------------------------------------------------------------
    Route {
        method: "GET",
        path: "/api/audit",
        perm: Perm::Audit,
        summary: "Audit records, newest first",
        params: &[REPO, q("action", "string", "only this action"), q("since", "string", "RFC 3339 time"), LIMIT],
        body: None,
        answer: Answer::Json("AuditList"),
        handler: || get(api::audit),
    },
    Route {
        method: "GET",
        path: "/api/audit/verify",
        perm: Perm::Audit,
        summary: "Verify the audit log's hash chains and anchors",
        params: &[REPO],
        body: None,
        answer: Answer::Json("AuditVerify"),
        handler: || get(api::audit_verify),
    },
    // ---- tokens ---------------------------------------------------------------------
    Route {
        method: "GET",
        path: "/api/tokens",
        perm: Perm::Tokens,
        summary: "Tokens (never their secrets)",
        params: &[],
        body: None,
        answer: Answer::Json("TokenList"),
        handler: || get(api::tokens),
    },
    Route {
        method: "POST",
        path: "/api/tokens",
        perm: Perm::Tokens,
        summary: "Create a token; the secret is in this answer only",
        params: &[],
        body: Some("TokenRequest"),
        answer: Answer::Json("TokenCreated"),
        handler: || post(api::token_create),
    },
    Route {
        method: "DELETE",
        path: "/api/tokens/{name}",
        perm: Perm::Tokens,
        summary: "Revoke a token",
        params: &[p("name", "token name")],
        body: None,
        answer: Answer::Json("Ok"),
        handler: || delete(api::token_revoke),
    },
    // ---- console pages --------------------------------------------------------------
    Route {
        method: "POST",
        path: "/logout",
        perm: Perm::Status,
        summary: "End the console session",
        params: &[],
        body: Some("form"),
        answer: Answer::Redirect,
        handler: || post(console::logout),
    },
    Route {
        method: "GET",
        path: "/",
        perm: Perm::Status,
        summary: "Dashboard",
        params: &[],
        body: None,
        answer: Answer::Html,
        handler: || get(console::dashboard),
    },
    Route {
        method: "GET",
        path: "/sources/{name}",
        perm: Perm::Status,
        summary: "A source: jobs, snapshots, back up now",
        params: &[p("name", "source name")],
        body: None,
        answer: Answer::Html,
        handler: || get(console::source),
    },
    Route {
        method: "GET",
        path: "/browse/{id}",
        perm: Perm::Browse,
        summary: "Snapshot browser",
        params: &[SNAP, REPO, q("path", "string", "directory")],
        body: None,
        answer: Answer::Html,
        handler: || get(console::browse),
    },
    Route {
        method: "GET",
        path: "/search",
        perm: Perm::Browse,
        summary: "Search across snapshots",
        params: &[q("q", "string", "glob"), REPO, SOURCE],
        body: None,
        answer: Answer::Html,
        handler: || get(console::search),
    },
    Route {
        method: "GET",
        path: "/restore",
        perm: Perm::RestoreCopy,
        summary: "Restore a selection",
        params: &[rq("snapshot", "string", "snapshot id"), REPO, rq("path", "string", "selected path")],
        body: None,
        answer: Answer::Html,
        handler: || get(console::restore),
    },
    Route {
        method: "GET",
        path: "/drills",
        perm: Perm::Status,
        summary: "Drill history and RTO chart",
        params: &[SOURCE],
        body: None,
        answer: Answer::Html,
        handler: || get(console::drills),
    },
    Route {
        method: "GET",
        path: "/audit",
        perm: Perm::Audit,
        summary: "Audit log with filters and verification",
        params: &[REPO, q("action", "string", "only this action")],
        body: None,
        answer: Answer::Html,
        handler: || get(console::audit),
    },
];

/// The row of a matched route.
pub fn find(method: &str, path: &str) -> Option<&'static Route> {
    let method = if method == "HEAD" { "GET" } else { method };
    ROUTES.iter().find(|r| r.method == method && r.path == path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_route_is_declared_once_and_roles_nest_as_documented() {
        let mut seen = std::collections::HashSet::new();
        for r in ROUTES {
            assert!(seen.insert((r.method, r.path)), "{} {} twice", r.method, r.path);
            assert!(r.params.iter().filter(|p| p.at == In::Path).all(|p| r.path.contains(&format!("{{{}}}", p.name))));
        }
        // No role but admin manages tokens; only admin and auditor read the audit log;
        // restore never writes in place; auditor never reads contents.
        for role in Role::ALL {
            assert_eq!(grants(role, Perm::Tokens), role == Role::Admin);
            assert_eq!(grants(role, Perm::Audit), matches!(role, Role::Admin | Role::Auditor));
            assert!(grants(role, Perm::Public) && grants(role, Perm::Status));
        }
        assert!(!grants(Role::Restore, Perm::RestoreInPlace) && grants(Role::Restore, Perm::RestoreCopy));
        assert!(!grants(Role::Auditor, Perm::Read) && !grants(Role::Auditor, Perm::Browse));
    }
}

//! cairn's HTTP edge: the JSON API under `/api/`, the web console, and `/metrics`, served
//! by the daemon on `[server] listen` (TLS with the policy's certificate, or plain HTTP on
//! loopback).
//!
//! Key decisions:
//! - One table of routes ([`routes::ROUTES`]) is the router: each row has the permission
//!   it needs, and the authorization layer ([`auth`]) looks every request up in it, so a
//!   route cannot exist without a policy and the authorization test iterates that table.
//! - Handlers are thin: they parse, call the application layer (`cairn_daemon`: status,
//!   browse, restore, tokens, the job queue), and render JSON or a page. The console's
//!   pages are clients of the same calls; no rule lives in a template or a script.
//! - Jobs started here (backups, drills) go through the daemon's own queue, so they obey
//!   its locks and parallel limits and are recorded like any manual run, with the token's
//!   name and the client's address in the audit log. Restores run here, on a blocking
//!   thread, as a task the console polls.
//! - Everything blocking (SQLite, repositories) runs on tokio's blocking pool; the async
//!   side only moves bytes.

pub mod api;
pub mod auth;
pub mod console;
pub mod html;
pub mod openapi;
pub mod routes;
pub mod serve;
pub mod tasks;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Router;
use cairn_daemon::browse::View;
use cairn_daemon::daemon::Shared;

pub use serve::spawn;

/// Everything a handler reads: the daemon's shared state and the edge's own memory
/// (console sessions, failed-login counts, tasks, opened repositories).
pub struct App {
    pub shared: Arc<Shared>,
    /// Served over TLS (cookies are then `Secure`).
    pub tls: bool,
    pub sessions: auth::Sessions,
    pub failures: auth::Failures,
    pub tasks: tasks::Tasks,
    catalog: Mutex<Option<cairn_daemon::catalog::Catalog>>,
    views: Mutex<HashMap<String, (Instant, Arc<View>)>>,
    /// Held while a repository is opened: concurrent requests wait for that one open
    /// (key derivation and index load) instead of each doing it.
    opening: Mutex<()>,
    /// Restores running through the API (at most [`MAX_RESTORES`]).
    pub restores: std::sync::atomic::AtomicUsize,
}

/// Restores the API runs at once; more are answered 429.
pub const MAX_RESTORES: usize = 2;

/// How long an opened repository (key, index, snapshot list) is reused: a new snapshot
/// shows within this, and a click does not pay for the key derivation and index load.
const VIEW_TTL: Duration = Duration::from_secs(5);

impl App {
    pub fn new(shared: Arc<Shared>, tls: bool) -> Arc<App> {
        Arc::new(App {
            shared,
            tls,
            sessions: auth::Sessions::default(),
            failures: auth::Failures::default(),
            tasks: tasks::Tasks::default(),
            catalog: Mutex::new(None),
            views: Mutex::new(HashMap::new()),
            opening: Mutex::new(()),
            restores: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    pub fn env(&self) -> Result<cairn_daemon::jobs::Env, ApiError> {
        Ok(self.shared.env()?)
    }

    /// Runs `f` with the catalog (one connection, opened on first use).
    pub fn with_catalog<T>(
        &self,
        f: impl FnOnce(&cairn_daemon::catalog::Catalog) -> cairn_daemon::Result<T>,
    ) -> Result<T, ApiError> {
        let mut c = self.catalog.lock().map_err(|_| ApiError::internal("catalog lock poisoned"))?;
        if c.is_none() {
            *c = Some(self.env()?.catalog()?);
        }
        match c.as_ref() {
            Some(c) => Ok(f(c)?),
            None => Err(ApiError::internal("catalog not open")),
        }
    }

    /// The opened repository `name` (a policy repository), reused for [`VIEW_TTL`].
    pub fn view(&self, name: &str) -> Result<Arc<View>, ApiError> {
        let env = self.env()?;
        if !env.policy.repositories.contains_key(name) {
            return Err(ApiError::not_found(format!("repository {name:?} is not in the policy")));
        }
        let cached = || {
            let v = self.views.lock().ok()?;
            v.get(name).filter(|(at, _)| at.elapsed() < VIEW_TTL).map(|(_, view)| view.clone())
        };
        if let Some(v) = cached() {
            return Ok(v);
        }
        let _one = self.opening.lock().map_err(|_| ApiError::internal("repository lock poisoned"))?;
        // Opened by the request this one waited for.
        if let Some(v) = cached() {
            return Ok(v);
        }
        let view = Arc::new(View::open(&env, name)?);
        if let Ok(mut v) = self.views.lock() {
            v.insert(name.to_string(), (Instant::now(), view.clone()));
        }
        Ok(view)
    }

    /// Forgets opened repositories (after a backup through the API: its snapshot shows).
    pub fn refresh_views(&self) {
        if let Ok(mut v) = self.views.lock() {
            v.clear();
        }
    }
}

/// The router: every row of [`routes::ROUTES`], behind the authorization layer.
pub fn app(state: Arc<App>) -> Router {
    let mut r: Router<Arc<App>> = Router::new();
    for route in routes::ROUTES {
        r = r.route(route.path, (route.handler)());
    }
    r.route_layer(axum::middleware::from_fn_with_state(state.clone(), auth::authorize))
        .fallback(|| async { ApiError::not_found("no such page or endpoint".into()) })
        .layer(axum::extract::DefaultBodyLimit::max(1 << 20))
        .with_state(state)
}

/// An error as an HTTP answer: `{"error": "..."}` with a status that says whose fault.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into() }
    }
    pub fn bad(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn not_found(message: String) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }
    pub fn internal(message: &str) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl From<cairn_daemon::Error> for ApiError {
    fn from(e: cairn_daemon::Error) -> ApiError {
        use cairn_daemon::Error as E;
        let status = match &e {
            E::NotFound(_) | E::UnknownSource(_) => StatusCode::NOT_FOUND,
            E::Refused(_) => StatusCode::FORBIDDEN,
            E::Busy { .. } | E::Exists(_) => StatusCode::CONFLICT,
            E::Source(_) | E::Policy(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, cairn_daemon::one_line(&e))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(serde_json::json!({ "error": self.message }))).into_response()
    }
}

/// Query parameters, with an empty value taken as absent (what an empty form field
/// sends) and a malformed query answered as JSON like every other error.
pub struct Q<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> axum::extract::FromRequestParts<S> for Q<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, ApiError> {
        let q = parts.uri.query().unwrap_or("");
        let kept: Vec<&str> = q.split('&').filter(|kv| !kv.is_empty() && !kv.ends_with('=')).collect();
        let uri: axum::http::Uri =
            format!("/?{}", kept.join("&")).parse().map_err(|_| ApiError::bad("the query string is malformed"))?;
        axum::extract::Query::<T>::try_from_uri(&uri)
            .map(|q| Q(q.0))
            .map_err(|e| ApiError::bad(format!("query: {}", e.body_text())))
    }
}

/// Path parameters, a malformed one answered as JSON.
pub struct P<T>(pub T);

impl<T: serde::de::DeserializeOwned + Send, S: Send + Sync> axum::extract::FromRequestParts<S> for P<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut axum::http::request::Parts, s: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, s)
            .await
            .map(|p| P(p.0))
            .map_err(|e| ApiError::bad(format!("path: {}", e.body_text())))
    }
}

/// Runs blocking work (SQLite, repositories) off the async threads.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|_| ApiError::internal("the request's work failed"))?
}

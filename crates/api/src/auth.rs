//! Who is calling, and may they: bearer tokens for API clients, session cookies for the
//! console, CSRF tokens for the console's state-changing requests, and a limit on failed
//! logins per client address.
//!
//! Key decisions:
//! - A session holds the token's secret in memory only; every request authenticates it
//!   against the catalog again, so revoking a token (or its expiry) ends its sessions at
//!   once. Sessions do not survive a restart: logging in again is the cost.
//! - Cookies are `HttpOnly; SameSite=Strict; Path=/` (and `Secure` under TLS). SameSite
//!   already stops cross-site posts in current browsers; the CSRF token (sent by the
//!   console's script in `X-CSRF-Token`) is the second lock, for old ones.
//! - Five unknown secrets from one address in a minute refuse that address with 429 for
//!   the rest of the minute, before any token is looked at (expired and revoked tokens
//!   are refused but not counted: they are not guesses).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use cairn_daemon::tokens::{Refused, Role};

use crate::routes::{self, Answer, Perm};
use crate::{blocking, ApiError, App};

/// The connection's peer, put on each request by the accept loop.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub token: String,
    pub role: Role,
    pub address: String,
    /// The session's CSRF token, when the caller came with the console's cookie.
    pub csrf: Option<String>,
}

impl Caller {
    pub fn may(&self, p: Perm) -> bool {
        routes::grants(self.role, p)
    }
    pub fn client(&self) -> cairn_daemon::jobs::Client {
        cairn_daemon::jobs::Client { token: self.token.clone(), address: self.address.clone() }
    }
}

pub const COOKIE: &str = "cairn_session";
const MAX_SESSIONS: usize = 10_000;
/// Sessions one token may hold; a new login past it ends that token's oldest.
const MAX_SESSIONS_PER_TOKEN: usize = 20;
const MAX_FAILURES: u32 = 5;
const FAILURE_WINDOW: Duration = Duration::from_secs(60);

struct Session {
    secret: String,
    csrf: String,
    expires: Instant,
    opened: Instant,
}

#[derive(Default)]
pub struct Sessions(Mutex<HashMap<String, Session>>);

fn random_hex() -> Result<String, ApiError> {
    let b: [u8; 32] = cairn_crypto::random_array().map_err(|_| ApiError::internal("no random bytes"))?;
    Ok(cairn_format::id::to_hex(&b))
}

impl Sessions {
    /// A new session for `secret`: `(session id, csrf token)`.
    pub fn open(&self, secret: &str, ttl: Duration) -> Result<(String, String), ApiError> {
        let (id, csrf) = (random_hex()?, random_hex()?);
        let mut m = self.0.lock().map_err(|_| ApiError::internal("session lock poisoned"))?;
        let now = Instant::now();
        m.retain(|_, s| s.expires > now);
        let mut mine: Vec<(Instant, String)> =
            m.iter().filter(|(_, s)| s.secret == secret).map(|(k, s)| (s.opened, k.clone())).collect();
        if mine.len() >= MAX_SESSIONS_PER_TOKEN {
            mine.sort();
            for (_, k) in mine.iter().take(mine.len() + 1 - MAX_SESSIONS_PER_TOKEN) {
                m.remove(k);
            }
        }
        if m.len() >= MAX_SESSIONS {
            return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "too many console sessions; try later"));
        }
        m.insert(
            id.clone(),
            Session { secret: secret.to_string(), csrf: csrf.clone(), expires: now + ttl, opened: now },
        );
        Ok((id, csrf))
    }

    fn get(&self, id: &str) -> Option<(String, String)> {
        let m = self.0.lock().ok()?;
        m.get(id).filter(|s| s.expires > Instant::now()).map(|s| (s.secret.clone(), s.csrf.clone()))
    }

    pub fn close(&self, id: &str) {
        if let Ok(mut m) = self.0.lock() {
            m.remove(id);
        }
    }
}

#[derive(Default)]
pub struct Failures(Mutex<HashMap<IpAddr, (u32, Instant)>>);

impl Failures {
    /// Seconds until `ip` may try again, if it is over the limit.
    pub fn blocked(&self, ip: IpAddr) -> Option<u64> {
        let m = self.0.lock().ok()?;
        let (n, since) = m.get(&ip)?;
        let left = FAILURE_WINDOW.checked_sub(since.elapsed())?;
        (*n >= MAX_FAILURES).then(|| left.as_secs().max(1))
    }

    pub fn failed(&self, ip: IpAddr) {
        if let Ok(mut m) = self.0.lock() {
            if m.len() > 100_000 {
                m.retain(|_, (_, t)| t.elapsed() < FAILURE_WINDOW);
            }
            let e = m.entry(ip).or_insert((0, Instant::now()));
            if e.1.elapsed() >= FAILURE_WINDOW {
                *e = (0, Instant::now());
            }
            e.0 += 1;
        }
    }
}

pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    for v in headers.get_all(header::COOKIE) {
        let Ok(v) = v.to_str() else { continue };
        for part in v.split(';') {
            if let Some((k, val)) = part.trim().split_once('=') {
                if k == name {
                    return Some(val.to_string());
                }
            }
        }
    }
    None
}

/// The client's address as the guess limit counts it: an IPv6 client by its /64 (one
/// host usually holds the whole prefix and could rotate through it).
pub fn peer_ip(req: &Request) -> IpAddr {
    match req.extensions().get::<Peer>().map(|p| p.0.ip()) {
        Some(IpAddr::V6(v6)) if v6.to_ipv4_mapped().is_none() => {
            let s = v6.segments();
            IpAddr::from([s[0], s[1], s[2], s[3], 0, 0, 0, 0])
        }
        Some(IpAddr::V6(v6)) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)),
        Some(ip) => ip,
        None => IpAddr::from([127, 0, 0, 1]),
    }
}

/// Whether a form post comes from a page of this server: a browser sends `Origin` on
/// posts, and one naming another host (or `null`, what a page that hides its origin
/// sends) is refused (login CSRF). The console's pages send theirs (Referrer-Policy
/// same-origin). No `Origin` at all is a non-browser client: nothing to forge.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else { return true };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
    origin.split_once("://").is_some_and(|(_, h)| h == host)
}

fn too_many(secs: u64) -> Response {
    let mut r = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        format!("too many failed logins from this address; wait {secs} s"),
    )
    .into_response();
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

fn unauthenticated(page: bool, why: &str) -> Response {
    if page {
        return Redirect::to("/login").into_response();
    }
    let mut r = ApiError::new(StatusCode::UNAUTHORIZED, why).into_response();
    r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"cairn\""));
    r
}

/// Checks a secret against the catalog, counting a failure against `ip`.
pub async fn check_secret(
    app: &Arc<App>,
    secret: String,
    ip: IpAddr,
) -> Result<Result<(String, Role), Refused>, ApiError> {
    let a = app.clone();
    let r =
        blocking(move || a.with_catalog(|c| cairn_daemon::tokens::authenticate(c, &secret, jiff::Timestamp::now())))
            .await?;
    if let Err(why) = &r {
        // Guessing is what the limit stops: a secret that never was a token. An expired
        // or revoked one is a real client behind on its configuration, not an attack.
        if *why == Refused::Unknown {
            app.failures.failed(ip);
        }
        let what = match why {
            Refused::Unknown => "an unknown token".to_string(),
            Refused::Expired(n) => format!("the expired token {n:?}"),
            Refused::Revoked(n) => format!("the revoked token {n:?}"),
        };
        cairn_daemon::daemon::log(cairn_daemon::daemon::Level::Warning, &format!("refused {what} from {ip}"));
    }
    Ok(r)
}

/// The authorization layer (see the module notes): every matched route passes here.
pub async fn authorize(
    State(app): State<Arc<App>>,
    matched: Option<MatchedPath>,
    mut req: Request,
    next: Next,
) -> Response {
    let Some(route) = matched.as_ref().and_then(|m| routes::find(req.method().as_str(), m.as_str())) else {
        // The path exists with other methods: the router answers 405 (no handler runs).
        if matched.as_ref().is_some_and(|m| routes::ROUTES.iter().any(|r| r.path == m.as_str())) {
            return next.run(req).await;
        }
        return ApiError::not_found("no such endpoint".into()).into_response();
    };
    if route.perm == Perm::Public {
        return next.run(req).await;
    }
    let page = matches!(route.answer, Answer::Html | Answer::Redirect);
    let ip = peer_ip(&req);
    if let Some(secs) = app.failures.blocked(ip) {
        return too_many(secs);
    }
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.strip_prefix("Bearer ").unwrap_or("").trim().to_string());
    let (secret, csrf) = match bearer {
        Some(b) => (b, None),
        None => match cookie(req.headers(), COOKIE).and_then(|id| app.sessions.get(&id)) {
            Some((s, c)) => (s, Some(c)),
            None => return unauthenticated(page, "a token is needed: Authorization: Bearer TOKEN"),
        },
    };
    let (name, role) = match check_secret(&app, secret, ip).await {
        Ok(Ok(t)) => t,
        Ok(Err(_)) => return unauthenticated(page, "the token is unknown, expired or revoked"),
        Err(e) => return e.into_response(),
    };
    if !routes::grants(role, route.perm) {
        let why = format!("token {name:?} (role {}) lacks the {} permission", role.as_str(), route.perm.as_str());
        if page {
            // A page answers as a page, with the navigation the role has.
            let who = Caller { token: name, role, address: ip.to_string(), csrf };
            let mut r = crate::html::page(
                "Not allowed",
                Some(&who),
                &format!("<p class=\"error\">{}</p>", crate::html::esc(&why)),
            );
            *r.status_mut() = StatusCode::FORBIDDEN;
            return r;
        }
        return ApiError::new(StatusCode::FORBIDDEN, why).into_response();
    }
    if let Some(c) = &csrf {
        if !matches!(*req.method(), Method::GET | Method::HEAD) {
            let sent = req.headers().get("x-csrf-token").and_then(|v| v.to_str().ok());
            if sent != Some(c.as_str()) {
                return ApiError::new(StatusCode::FORBIDDEN, "missing or wrong CSRF token (X-CSRF-Token)")
                    .into_response();
            }
        }
    }
    req.extensions_mut().insert(Caller { token: name, role, address: ip.to_string(), csrf });
    next.run(req).await
}

//! The web console: pages rendered here from the same application calls the JSON API
//! makes, plus one small script (`/static/console.js`) for what needs the API from the
//! browser: forms that start work, polling a task, previews, the tree's lazy expansion.
//! Without the script every page still shows its data; the actions need it (they send the
//! CSRF token in a header).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use cairn_daemon::tokens::Refused;
use serde::Deserialize;

use crate::api::{repository_of, SnapQuery, SourceQuery};
use crate::auth::{self, Caller};
use crate::html::{bytes, esc, page, qs, secs, time};
use crate::routes::Perm;
use crate::{blocking, ApiError, App, P, Q};

type St = State<Arc<App>>;
type Who = Extension<Caller>;

const SCRIPT: &str = include_str!("../assets/console.js");
const STYLE: &str = include_str!("../assets/console.css");

pub async fn script() -> Response {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8"), (header::CACHE_CONTROL, "max-age=300")], SCRIPT)
        .into_response()
}

pub async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "max-age=300")], STYLE).into_response()
}

/// An error as a page (the console's answer to what the API answers as JSON).
fn error_page(who: Option<&Caller>, e: ApiError) -> Response {
    let mut r = page("Error", who, &format!("<p class=\"error\">{}</p>", esc(&e.message)));
    *r.status_mut() = e.status;
    r
}

macro_rules! try_page {
    ($who:expr, $e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return error_page($who, e),
        }
    };
}

#[derive(Deserialize)]
pub struct LoginQuery {
    pub failed: Option<String>,
}

pub async fn login_page(Q(q): Q<LoginQuery>) -> Response {
    let msg = match q.failed.as_deref() {
        Some(_) => "<p class=\"error\" id=\"login-error\">That token is unknown, expired or revoked.</p>",
        None => "",
    };
    page(
        "Log in",
        None,
        &format!(
            "{msg}<form method=\"post\" action=\"/login\" class=\"login\">\
             <label>Token <input type=\"password\" name=\"token\" autocomplete=\"off\" required autofocus></label>\
             <button type=\"submit\">Log in</button></form>\
             <p class=\"hint\">Tokens are made with <code>cairn token create NAME --role ROLE</code>.</p>"
        ),
    )
}

#[derive(Deserialize)]
pub struct LoginForm {
    pub token: String,
}

pub async fn login(State(app): St, req: axum::extract::Request) -> Response {
    use axum::extract::FromRequest;
    let ip = auth::peer_ip(&req);
    let client = |name: &str| cairn_daemon::jobs::Client { token: name.to_string(), address: ip.to_string() };
    if let Some(secs) = app.failures.blocked(ip) {
        let mut r = page(
            "Log in",
            None,
            &format!("<p class=\"error\">Too many failed logins from this address; wait {secs} s.</p>"),
        );
        *r.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        return r;
    }
    if !auth::same_origin(req.headers()) {
        let mut r = page("Log in", None, "<p class=\"error\">A login must come from this server's own page.</p>");
        *r.status_mut() = StatusCode::FORBIDDEN;
        return r;
    }
    let Ok(Form(f)) = Form::<LoginForm>::from_request(req, &()).await else {
        return Redirect::to("/login?failed=1").into_response();
    };
    let secret = f.token.trim().to_string();
    let env = match app.env() {
        Ok(e) => e,
        Err(e) => return error_page(None, e),
    };
    match auth::check_secret(&app, secret.clone(), ip).await {
        Ok(Ok((name, role))) => {
            let ttl = env.policy.server.as_ref().map(|s| s.session_ttl.as_secs()).unwrap_or(8 * 3600).max(60);
            let (id, _csrf) = match app.sessions.open(&secret, std::time::Duration::from_secs(ttl as u64)) {
                Ok(s) => s,
                Err(e) => return error_page(None, e),
            };
            cairn_daemon::audit::api_action(
                &env,
                &client(&name),
                "login",
                None,
                cairn_audit::Target::default(),
                "ok",
                Some(format!("console session, role {}", role.as_str())),
            );
            let cookie = format!(
                "{}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={ttl}{}",
                auth::COOKIE,
                if app.tls { "; Secure" } else { "" }
            );
            let mut r = Redirect::to("/").into_response();
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        Ok(Err(why)) => {
            let (name, what) = match why {
                Refused::Unknown => ("?".to_string(), "unknown token".to_string()),
                Refused::Expired(n) => (n, "expired token".into()),
                Refused::Revoked(n) => (n, "revoked token".into()),
            };
            cairn_daemon::audit::api_action(
                &env,
                &client(&name),
                "login",
                None,
                cairn_audit::Target::default(),
                "failed",
                Some(what),
            );
            Redirect::to("/login?failed=1").into_response()
        }
        Err(e) => error_page(None, e),
    }
}

pub async fn logout(State(app): St, headers: HeaderMap) -> Response {
    if let Some(id) = auth::cookie(&headers, auth::COOKIE) {
        app.sessions.close(&id);
    }
    let mut r = Redirect::to("/login").into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("cairn_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    r
}

fn state_class(s: cairn_daemon::status::RpoState) -> &'static str {
    use cairn_daemon::status::RpoState;
    match s {
        RpoState::Ok => "green",
        RpoState::AtRisk => "amber",
        RpoState::Breached => "red",
        RpoState::NoObjective | RpoState::Unknown | RpoState::Pending => "grey",
    }
}

pub async fn dashboard(State(app): St, Extension(c): Who) -> Response {
    let a = app.clone();
    let data = blocking(move || {
        let env = a.env()?;
        let now = jiff::Timestamp::now();
        let since = now.checked_sub(jiff::SignedDuration::from_hours(24 * 30)).unwrap_or(now);
        // Its own connection, as /api/status: the repositories are read meanwhile.
        let cat = env.catalog()?;
        let rows = cairn_daemon::status::status(&env, &cat, now, None)?;
        let drills = cat.drills(None, None)?;
        let daily = cat.daily_backups(since)?;
        let sizes = cairn_daemon::alerts::repository_sizes(&env, false);
        Ok((env, rows, drills, daily, sizes, now))
    })
    .await;
    let (env, rows, drills, daily, sizes, now) = try_page!(Some(&c), data);
    // The newest drill record per source.
    let mut last_drill: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    for (j, r) in drills {
        if let Some(v) = r.and_then(|r| serde_json::from_str::<serde_json::Value>(&r).ok()) {
            last_drill.insert(j.source.clone(), v);
        }
    }
    let mut strip: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
    for (s, d, okn, bad) in daily {
        strip.insert((s, d), (okn, bad));
    }
    let days: Vec<String> = (0..30)
        .rev()
        .filter_map(|i| now.checked_sub(jiff::SignedDuration::from_hours(24 * i)).ok())
        .map(|t| t.strftime("%Y-%m-%d").to_string())
        .collect();
    let mut b = String::from(
        "<table class=\"status\" id=\"sources\"><thead><tr><th>Source</th><th>Class</th><th>RPO</th><th>Data age / target</th>\
         <th>RTO (last drill) / target</th><th>Last job</th><th>Next run</th><th>Last 30 days</th></tr></thead><tbody>",
    );
    for r in &rows {
        let state = r.rpo_state.as_str();
        let cls = state_class(r.rpo_state);
        let drill = last_drill.get(&r.source);
        let rto = drill.and_then(|d| d["rto_secs"].as_f64()).map(|s| s as i64);
        let rto_target = env.source(&r.source).ok().and_then(|s| s.rto.value).map(|d| d.as_secs());
        let rto_class = match (rto, rto_target, drill.and_then(|d| d["verdict"].as_str())) {
            (_, _, Some("failed")) => "red",
            (Some(a), Some(t), _) if a > t => "red",
            (Some(_), _, _) => "green",
            _ => "grey",
        };
        let mut cells = String::new();
        for d in &days {
            let (cls, title) = match strip.get(&(r.source.clone(), d.clone())) {
                Some((_, bad)) if *bad > 0 => ("red", format!("{d}: {bad} failed")),
                Some((okn, _)) => ("green", format!("{d}: {okn} succeeded")),
                None => ("grey", format!("{d}: none")),
            };
            cells.push_str(&format!("<i class=\"{cls}\" title=\"{}\"></i>", esc(&title)));
        }
        b.push_str(&format!(
            "<tr data-source=\"{src}\" data-rpo=\"{state}\"><td><a href=\"/sources/{srcq}\">{src}</a></td><td>{class}</td>\
             <td><span class=\"badge {cls}\">{state}</span></td><td>{age} / {rpo}</td>\
             <td><span class=\"badge {rto_class}\">{rto}</span> / {rto_t}</td><td>{last}</td><td>{next}</td><td class=\"strip\">{cells}</td></tr>",
            src = esc(&r.source),
            srcq = qs(&r.source),
            class = esc(&r.class),
            cls = cls,
            age = secs(r.data_age_secs),
            rpo = secs(r.rpo_secs),
            rto = secs(rto),
            rto_t = secs(rto_target),
            last = esc(r.last_status.as_deref().unwrap_or("-")),
            next = time(r.next_run.as_deref()),
        ));
        if let Some(e) = &r.error {
            b.push_str(&format!(
                "<tr><td></td><td colspan=\"7\" class=\"error\">repository unreadable: {}</td></tr>",
                esc(e)
            ));
        }
    }
    b.push_str("</tbody></table><h2>Storage</h2><table><thead><tr><th>Repository</th><th>Location</th><th>Used</th><th>Quota</th></tr></thead><tbody>");
    for (name, r) in &env.policy.repositories {
        b.push_str(&format!(
            "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
            esc(name),
            esc(&redact(&r.url)),
            sizes.get(name).map(|s| bytes(*s)).unwrap_or_else(|| "-".into()),
            r.quota.map(bytes).unwrap_or_else(|| "-".into())
        ));
    }
    b.push_str("</tbody></table>");
    page("Dashboard", Some(&c), &b)
}

/// A store URL without credentials in it.
fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://…@{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    }
}

pub async fn source(State(app): St, Extension(c): Who, P(name): P<String>) -> Response {
    let a = app.clone();
    let n = name.clone();
    let data = blocking(move || {
        let env = a.env()?;
        let s = env.source(&n)?.clone();
        let jobs = a.with_catalog(|cat| {
            cat.jobs(&cairn_daemon::catalog::Filter {
                source: Some(n.clone()),
                kind: None,
                since: None,
                limit: Some(50),
            })
        })?;
        let v = a.view(&s.repository.value)?;
        let snaps: Vec<_> = v.of_source(Some(&n)).rev().take(100).cloned().collect();
        Ok((s, jobs, snaps, v.name.to_string()))
    })
    .await;
    let (s, jobs, snaps, repo) = try_page!(Some(&c), data);
    let mut b = format!(
        "<p>Class <b>{}</b>, kind {}, repository <b>{}</b>.</p>",
        esc(&s.class),
        esc(s.kind.name()),
        esc(&repo)
    );
    if c.may(Perm::Backup) {
        b.push_str(&format!(
            "<h2>Back up now</h2><form class=\"action\" id=\"backup-form\" data-api=\"/api/backups\">\
             <input type=\"hidden\" name=\"source\" value=\"{}\">\
             <label>Label <input name=\"label\" required maxlength=\"200\"></label>\
             <label>Reason <input name=\"reason\" required maxlength=\"500\"></label>\
             <button type=\"submit\">Back up now</button><output class=\"task\"></output></form>",
            esc(&s.name)
        ));
    }
    b.push_str("<h2>Jobs</h2><table id=\"jobs\"><thead><tr><th>Job</th><th>Kind</th><th>Trigger</th><th>Actor</th><th>Label</th><th>Started</th><th>Status</th><th>Added</th><th>Message</th></tr></thead><tbody>");
    for j in &jobs {
        b.push_str(&format!(
            "<tr><td><button type=\"button\" class=\"joblog\" data-job=\"{}\">{}</button></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"st-{}\">{}</td><td>{}</td><td>{}</td></tr>",
            esc(&j.id),
            esc(&j.id),
            esc(&j.kind),
            esc(&j.trigger),
            esc(&j.actor),
            esc(j.label.as_deref().unwrap_or("")),
            time(j.started_at.as_deref()),
            esc(&j.status),
            esc(&j.status),
            j.bytes_added.map(bytes).unwrap_or_default(),
            esc(j.error.as_deref().or(j.reason.as_deref()).unwrap_or(""))
        ));
    }
    b.push_str("</tbody></table><h2>Snapshots</h2><table id=\"snapshots\"><thead><tr><th>Snapshot</th><th>Time</th><th>Host</th><th>Label</th><th>Files</th><th>Size</th></tr></thead><tbody>");
    for (id, sn) in &snaps {
        let link = if c.may(Perm::Browse) {
            format!("<a href=\"/browse/{}?repository={}\">{}</a>", id.to_hex(), qs(&repo), id.short())
        } else {
            id.short()
        };
        b.push_str(&format!(
            "<tr><td>{link}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            time(Some(&sn.time)),
            esc(&sn.hostname),
            esc(sn.label.as_deref().unwrap_or("")),
            sn.summary.files_new + sn.summary.files_changed + sn.summary.files_unmodified,
            bytes(sn.summary.total_bytes)
        ));
    }
    b.push_str("</tbody></table>");
    page(&format!("Source {}", s.name), Some(&c), &b)
}

pub async fn browse(State(app): St, Extension(c): Who, P(id): P<String>, Q(q): Q<SnapQuery>) -> Response {
    let a = app.clone();
    let path = q.path.clone().unwrap_or_else(|| "/".into());
    let (r, s) = (q.repository.clone(), q.source.clone());
    let data = blocking(move || {
        let name = repository_of(&a, r.as_deref(), s.as_deref())?;
        let v = a.view(&name)?;
        let (sid, snap) = v.snapshot(&id)?;
        let clean = cairn_daemon::browse::clean_path(&path)?;
        let (entries, truncated) = cairn_daemon::browse::list_dir(&v, snap, &clean, 10_000)?;
        Ok((name, *sid, snap.time.clone(), snap.source.clone(), clean, entries, truncated))
    })
    .await;
    let (repo, sid, stime, src, path, entries, truncated) = try_page!(Some(&c), data);
    let sidh = sid.to_hex();
    let mut b = format!(
        "<p>Snapshot <code>{}</code> of {} at {}, repository {}.</p><p class=\"crumbs\">",
        sid.short(),
        esc(src.as_deref().unwrap_or("-")),
        time(Some(&stime)),
        esc(&repo)
    );
    let mut acc = String::new();
    b.push_str(&format!("<a href=\"/browse/{sidh}?repository={}&path=/\">/</a>", qs(&repo)));
    for comp in path.split('/').filter(|x| !x.is_empty()) {
        acc.push('/');
        acc.push_str(comp);
        b.push_str(&format!(
            "<a href=\"/browse/{sidh}?repository={}&path={}\">{}/</a>",
            qs(&repo),
            qs(&acc),
            esc(comp)
        ));
    }
    b.push_str("</p>");
    b.push_str(&format!(
        "<table class=\"tree\" id=\"tree\" data-snapshot=\"{sidh}\" data-repository=\"{}\"><thead><tr><th>Name</th><th>Type</th><th>Size</th><th>Modified</th><th></th></tr></thead><tbody>",
        esc(&repo)
    ));
    for e in &entries {
        let name = if e.kind == "dir" {
            format!(
                "<button type=\"button\" class=\"expand\" data-path=\"{p}\" aria-label=\"expand\">▸</button> <a href=\"/browse/{sidh}?repository={r}&path={pq}\">{n}/</a>",
                p = esc(&e.path),
                r = qs(&repo),
                pq = qs(&e.path),
                n = esc(&e.name)
            )
        } else {
            format!("<span class=\"name\">{}</span>", esc(&e.name))
        };
        b.push_str(&format!(
            "<tr data-path=\"{}\"><td>{name}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&e.path),
            e.kind,
            if e.kind == "file" { bytes(e.size) } else { String::new() },
            time(Some(&e.mtime)),
            actions(&c, &repo, &sidh, &e.path, e.kind)
        ));
    }
    b.push_str("</tbody></table>");
    if truncated {
        b.push_str("<p class=\"hint\">Only the first 10,000 entries are shown.</p>");
    }
    b.push_str("<pre id=\"preview\" hidden></pre><div id=\"versions\"></div>");
    page(&format!("Browse {}", path), Some(&c), &b)
}

/// The links an entry gets, by what the caller may do.
pub fn actions(c: &Caller, repo: &str, sid: &str, path: &str, kind: &str) -> String {
    let mut a = String::new();
    if kind == "file" && c.may(Perm::Read) {
        a.push_str(&format!(
            "<button type=\"button\" class=\"preview\" data-path=\"{p}\" data-snapshot=\"{sid}\" data-repository=\"{re}\">Preview</button> \
             <a class=\"download\" href=\"/api/snapshots/{sid}/file?repository={r}&path={pq}\">Download</a> ",
            p = esc(path),
            r = qs(repo),
            re = esc(repo),
            pq = qs(path)
        ));
    }
    if kind == "file" && c.may(Perm::Browse) {
        a.push_str(&format!(
            "<button type=\"button\" class=\"versions\" data-path=\"{}\" data-repository=\"{}\">Versions</button> ",
            esc(path),
            esc(repo)
        ));
    }
    if c.may(Perm::RestoreCopy) {
        a.push_str(&format!(
            "<a class=\"restore\" href=\"/restore?snapshot={sid}&repository={}&path={}\">Restore</a>",
            qs(repo),
            qs(path)
        ));
    }
    a
}

pub async fn search(State(app): St, Extension(c): Who, Q(q): Q<SnapQuery>) -> Response {
    let pattern = q.q.clone().unwrap_or_default();
    let mut b = format!(
        "<form method=\"get\" action=\"/search\" id=\"search-form\"><label>Name or path glob \
         <input name=\"q\" value=\"{}\" placeholder=\"*.pdf or /srv/docs/report*\"></label>\
         <button type=\"submit\">Search</button></form>",
        esc(&pattern)
    );
    if pattern.trim().is_empty() {
        return page("Search", Some(&c), &b);
    }
    let a = app.clone();
    let (r, s) = (q.repository.clone(), q.source.clone());
    let data = blocking(move || {
        let name = repository_of(&a, r.as_deref(), s.as_deref())?;
        let v = a.view(&name)?;
        let snaps: Vec<_> = v.of_source(s.as_deref()).collect();
        let (hits, truncated) = cairn_daemon::browse::search(&v, &snaps, &pattern, 1000)?;
        Ok((name, hits, truncated))
    })
    .await;
    let (repo, hits, truncated) = try_page!(Some(&c), data);
    b.push_str(&format!("<p>{} hits{}.</p>", hits.len(), if truncated { " (the first 1000)" } else { "" }));
    b.push_str("<table id=\"hits\"><thead><tr><th>Path</th><th>Snapshot</th><th>Time</th><th>Size</th><th></th></tr></thead><tbody>");
    for h in &hits {
        b.push_str(&format!(
            "<tr data-path=\"{}\"><td class=\"name\">{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&h.entry.path),
            esc(&h.entry.path),
            esc(&h.snapshot[..8]),
            time(Some(&h.time)),
            if h.entry.kind == "file" { bytes(h.entry.size) } else { esc(h.entry.kind) },
            actions(&c, &repo, &h.snapshot, &h.entry.path, h.entry.kind)
        ));
    }
    b.push_str(&format!(
        "</tbody></table><pre id=\"preview\" hidden></pre><div id=\"versions\"></div><div id=\"tree\" data-repository=\"{}\" hidden></div>",
        esc(&repo)
    ));
    page("Search", Some(&c), &b)
}

pub async fn restore(State(app): St, Extension(c): Who, Q(q): Q<SnapQuery>) -> Response {
    let Some(path) = q.path.clone() else {
        return error_page(Some(&c), ApiError::bad("pick what to restore from the browser or a search: no path given"));
    };
    let a = app.clone();
    let (r, s) = (q.repository.clone(), q.source.clone());
    let sid_q = q_snapshot(&q);
    let data = blocking(move || {
        let name = repository_of(&a, r.as_deref(), s.as_deref())?;
        let v = a.view(&name)?;
        let (sid, snap) = v.snapshot(&sid_q)?;
        let n = cairn_daemon::browse::node(&v, snap, &path)?;
        let env = a.env()?;
        let dirs = env.policy.server.as_ref().map(|s| s.restore_dirs.clone()).unwrap_or_default();
        Ok((name, *sid, snap.time.clone(), path, cairn_daemon::browse::kind_name(n.kind), n.size, dirs))
    })
    .await;
    let (repo, sid, stime, path, kind, size, dirs) = try_page!(Some(&c), data);
    let name = path.rsplit('/').next().unwrap_or("").to_string();
    let suggested = dirs.first().map(|d| format!("{}/{}-{}", d.display(), sid.short(), name)).unwrap_or_default();
    let mut b = format!(
        "<p>Restore <code class=\"name\">{}</code> ({}{}) from snapshot <code>{}</code> of {}.</p>\
         <form class=\"action\" id=\"restore-form\" data-api=\"/api/restore/copy\">\
         <input type=\"hidden\" name=\"snapshot\" value=\"{}\"><input type=\"hidden\" name=\"repository\" value=\"{}\">\
         <input type=\"hidden\" name=\"paths\" value=\"{}\">\
         <fieldset><legend>Where</legend>\
         <label><input type=\"radio\" name=\"mode\" value=\"copy\" checked> As a copy into</label> \
         <input name=\"target\" size=\"60\" value=\"{}\"> <span class=\"hint\">allowed: {}</span>",
        esc(&path),
        kind,
        if kind == "file" { format!(", {}", bytes(size)) } else { String::new() },
        sid.short(),
        time(Some(&stime)),
        sid.to_hex(),
        esc(&repo),
        esc(&path),
        esc(&suggested),
        esc(&dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")),
    );
    if c.may(Perm::RestoreInPlace) {
        b.push_str(&format!(
            "<br><label><input type=\"radio\" name=\"mode\" value=\"in_place\" id=\"in-place\"> In place (overwrites {})</label>\
             <div id=\"in-place-confirm\" hidden><button type=\"button\" id=\"preview-overwrite\">Show what will be overwritten</button>\
             <ul id=\"overwrite-list\"></ul><label>Type <code>{}</code> to confirm <input name=\"confirm\" autocomplete=\"off\"></label></div>",
            esc(&path),
            sid.short()
        ));
    }
    b.push_str("</fieldset><button type=\"submit\">Restore</button><output class=\"task\"></output></form>");
    page("Restore", Some(&c), &b)
}

fn q_snapshot(q: &SnapQuery) -> String {
    q.snapshot.clone().unwrap_or_default()
}

pub async fn drills(State(app): St, Extension(c): Who, Q(q): Q<SourceQuery>) -> Response {
    let a = app.clone();
    let src = q.source.clone();
    let data = blocking(move || {
        let env = a.env()?;
        let rows = a.with_catalog(|cat| cat.drills(src.as_deref(), None))?;
        Ok((env, rows))
    })
    .await;
    let (env, rows) = try_page!(Some(&c), data);
    let mut b = String::new();
    let mut form = false;
    if c.may(Perm::Drill) {
        let opts: String = env.policy.sources.values().map(|s| format!("<option>{}</option>", esc(&s.name))).collect();
        if !opts.is_empty() {
            form = true;
            b.push_str(&format!(
                "<form class=\"action\" id=\"drill-form\" data-api=\"/api/drills\"><label>Source <select name=\"source\">{opts}</select></label>\
                 <button type=\"submit\">Run a drill now</button><output class=\"task\"></output></form>"
            ));
        }
    }
    let recs: Vec<(cairn_daemon::catalog::Job, serde_json::Value)> = rows
        .into_iter()
        .rev()
        .map(|(j, r)| (j, r.and_then(|r| serde_json::from_str(&r).ok()).unwrap_or(serde_json::Value::Null)))
        .collect();
    if recs.is_empty() {
        // Not an empty chart and table: say what is missing and how to get it.
        let of = q.source.as_deref().map(|s| format!(" for source {}", esc(s))).unwrap_or_default();
        b.push_str(&format!(
            "<p class=\"hint\" id=\"no-drills\">No drill has run yet{of}. A drill restores a source's latest \
             backup to a scratch place, checks it and measures the recovery time against the RTO. A source's \
             <code>drill.schedule</code> in the policy runs them; run one now{} or with <code>cairn drill SOURCE</code>.</p>",
            if form { " (above)" } else { "" }
        ));
        return page("Drills", Some(&c), &b);
    }
    // The RTO chart: one bar per drill (newest right), the target as a line.
    let shown: Vec<&(cairn_daemon::catalog::Job, serde_json::Value)> = recs.iter().take(40).collect();
    let max = shown
        .iter()
        .flat_map(|(_, r)| [r["rto_secs"].as_f64().unwrap_or(0.0), r["rto_target_secs"].as_f64().unwrap_or(0.0)])
        .fold(1.0f64, f64::max);
    let mut svg = String::from("<svg id=\"rto-chart\" viewBox=\"0 0 820 220\" role=\"img\" aria-label=\"RTO of each drill against its target\">");
    for (i, (j, r)) in shown.iter().rev().enumerate() {
        let rto = r["rto_secs"].as_f64().unwrap_or(0.0);
        let h = rto / max * 180.0;
        let x = 10.0 + i as f64 * 20.0;
        let cls = if r["verdict"].as_str() == Some("passed") && r["rto_met"].as_bool() != Some(false) {
            "green"
        } else {
            "red"
        };
        svg.push_str(&format!(
            "<rect class=\"{cls}\" x=\"{x:.0}\" y=\"{:.1}\" width=\"14\" height=\"{h:.1}\"><title>{} {}: {:.1} s</title></rect>",
            200.0 - h,
            esc(&j.source),
            esc(j.started_at.as_deref().unwrap_or("")),
            rto
        ));
        if let Some(t) = r["rto_target_secs"].as_f64() {
            let y = 200.0 - t / max * 180.0;
            svg.push_str(&format!(
                "<line class=\"target\" x1=\"{:.0}\" x2=\"{:.0}\" y1=\"{y:.1}\" y2=\"{y:.1}\"></line>",
                x - 3.0,
                x + 17.0
            ));
        }
    }
    svg.push_str("</svg>");
    b.push_str(&svg);
    b.push_str("<table id=\"drills\"><thead><tr><th>Date</th><th>Source</th><th>Scenario</th><th>Actual recovery time</th><th>Target</th><th>Target met?</th><th>RPO achieved</th><th>Verdict</th><th>Notes</th></tr></thead><tbody>");
    for (j, r) in &recs {
        let met = match r["rto_met"].as_bool() {
            Some(true) => "Yes",
            Some(false) => "No",
            None => "-",
        };
        let notes: Vec<String> = r["checks"]
            .as_array()
            .map(|cs| {
                cs.iter()
                    .map(|c| {
                        format!(
                            "{}: {}",
                            c["name"].as_str().unwrap_or("check"),
                            c["outcome"]
                                .as_str()
                                .or(c["passed"].as_bool().map(|p| if p { "passed" } else { "failed" }))
                                .unwrap_or("?")
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        b.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{met}</td><td>{}</td><td class=\"st-{v}\">{v}</td><td>{}</td></tr>",
            time(j.started_at.as_deref()),
            esc(&j.source),
            esc(r["scenario"].as_str().unwrap_or("-")),
            secs(r["rto_secs"].as_f64().map(|s| s as i64)),
            secs(r["rto_target_secs"].as_i64()),
            secs(r["rpo_secs"].as_f64().map(|s| s as i64)),
            esc(&notes.join("; ").chars().take(300).collect::<String>()),
            v = esc(r["verdict"].as_str().unwrap_or(&j.status)),
        ));
    }
    b.push_str("</tbody></table>");
    page("Drills", Some(&c), &b)
}

#[derive(Deserialize)]
pub struct AuditPageQuery {
    pub repository: Option<String>,
    pub action: Option<String>,
}

pub async fn audit(State(app): St, Extension(c): Who, Q(q): Q<AuditPageQuery>) -> Response {
    let a = app.clone();
    let (r, action) = (q.repository.clone(), q.action.clone().filter(|x| !x.is_empty()));
    let data = blocking(move || {
        let name = repository_of(&a, r.as_deref(), None)?;
        let env = a.env()?;
        let v = a.view(&name)?;
        let loaded = cairn_audit::load(&v.repo, true).map_err(cairn_daemon::Error::from)?;
        let recs: Vec<cairn_audit::Placed> = cairn_audit::records(&loaded)
            .into_iter()
            .rev()
            .filter(|p| action.as_deref().is_none_or(|x| p.record.action == x))
            .take(1000)
            .collect();
        let report = cairn_daemon::audit::verify(&env, &v.repo, None)?;
        Ok((name, env.policy.repositories.keys().cloned().collect::<Vec<_>>(), recs, report))
    })
    .await;
    let (repo, repos, recs, report) = try_page!(Some(&c), data);
    let opts: String = repos
        .iter()
        .map(|r| format!("<option{}>{}</option>", if *r == repo { " selected" } else { "" }, esc(r)))
        .collect();
    let mut b = format!(
        "<form method=\"get\" action=\"/audit\"><label>Repository <select name=\"repository\">{opts}</select></label> \
         <label>Action <input name=\"action\" value=\"{}\" placeholder=\"backup, restore, login…\"></label> <button type=\"submit\">Filter</button></form>",
        esc(q.action.as_deref().unwrap_or(""))
    );
    if report.findings.is_empty() {
        b.push_str(&format!(
            "<p class=\"verify ok\" id=\"verify\">audit verify: {} chains, {} segments, {} records, intact.</p>",
            report.chains, report.segments, report.records
        ));
    } else {
        b.push_str("<div class=\"verify bad\" id=\"verify\"><p>audit verify found damage:</p><ul>");
        for f in &report.findings {
            b.push_str(&format!("<li>{}</li>", esc(f)));
        }
        b.push_str("</ul></div>");
    }
    b.push_str("<table id=\"audit\"><thead><tr><th>Time</th><th>Actor</th><th>Via</th><th>Action</th><th>Source</th><th>Outcome</th><th>Reason</th><th>Message</th></tr></thead><tbody>");
    for p in &recs {
        let r = &p.record;
        let who = match (&r.actor.token, &r.actor.address) {
            (Some(t), Some(a)) => format!("token {t} from {a}"),
            _ => format!("{}@{}", r.actor.user, r.actor.host),
        };
        b.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"st-{o}\">{o}</td><td>{}</td><td>{}</td></tr>",
            time(Some(&r.time)),
            esc(&who),
            esc(&r.actor.via),
            esc(&r.action),
            esc(r.target.source.as_deref().unwrap_or("")),
            esc(r.reason.as_deref().unwrap_or("")),
            esc(r.message.as_deref().unwrap_or("")),
            o = esc(&r.outcome),
        ));
    }
    b.push_str("</tbody></table>");
    page("Audit log", Some(&c), &b)
}

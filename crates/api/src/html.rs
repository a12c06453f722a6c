//! Building pages: every text that came from outside (file names, labels, reasons, error
//! messages) goes through [`esc`], and attributes are always double-quoted, so a file
//! named `<img src=x onerror=alert(1)>` is shown as those characters. The console's
//! responses also carry a Content-Security-Policy that allows scripts from this server
//! only (no inline script runs even if escaping were ever missed).

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

use crate::auth::Caller;
use crate::routes::Perm;

/// Escapes text for HTML content and double-quoted attributes.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// Percent-encodes a query value.
pub fn qs(s: &str) -> String {
    let mut o = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            o.push(b as char);
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    o
}

pub fn bytes(n: u64) -> String {
    const U: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < U.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

pub fn secs(s: Option<i64>) -> String {
    match s {
        None => "-".into(),
        Some(s) if s < 120 => format!("{s} s"),
        Some(s) if s < 7200 => format!("{} min", s / 60),
        Some(s) if s < 172_800 => format!("{:.1} h", s as f64 / 3600.0),
        Some(s) => format!("{:.1} d", s as f64 / 86400.0),
    }
}

/// A time as `YYYY-MM-DD HH:MM:SS UTC` (the API gives RFC 3339).
pub fn time(t: Option<&str>) -> String {
    match t.and_then(|t| t.parse::<jiff::Timestamp>().ok()) {
        Some(ts) => ts.strftime("%Y-%m-%d %H:%M:%S UTC").to_string(),
        None => t.map(esc).unwrap_or_else(|| "-".into()),
    }
}

/// The page around `body`: navigation by what the caller may see, the CSRF token for the
/// script, the security headers.
pub fn page(title: &str, who: Option<&Caller>, body: &str) -> Response {
    let mut nav = String::new();
    if let Some(c) = who {
        let mut link = |href: &str, text: &str, p: Perm| {
            if c.may(p) {
                nav.push_str(&format!("<a href=\"{href}\">{text}</a>"));
            }
        };
        link("/", "Dashboard", Perm::Status);
        link("/search", "Search", Perm::Browse);
        link("/drills", "Drills", Perm::Status);
        link("/audit", "Audit", Perm::Audit);
        nav.push_str(&format!(
            "<span class=\"who\">{} ({})</span><button id=\"logout\" type=\"button\">Log out</button>",
            esc(&c.token),
            c.role.as_str()
        ));
    }
    let csrf = who.and_then(|c| c.csrf.clone()).unwrap_or_default();
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t} · cairn</title>\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"csrf\" content=\"{csrf}\"><link rel=\"stylesheet\" href=\"/static/console.css\">\
         <script src=\"/static/console.js\" defer></script></head>\
         <body><header><a class=\"brand\" href=\"/\">cairn</a><nav>{nav}</nav></header><main><h1>{t}</h1>{body}</main></body></html>\n",
        t = esc(title),
        csrf = esc(&csrf),
    );
    let mut r = axum::response::Html(html).into_response();
    secure_headers(&mut r);
    r
}

pub fn secure_headers(r: &mut Response) {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_are_text() {
        assert_eq!(esc("<img src=x onerror=alert(1)>"), "&lt;img src=x onerror=alert(1)&gt;");
        assert_eq!(esc("\"'&"), "&quot;&#39;&amp;");
        assert_eq!(qs("/a b/c&d"), "/a%20b/c%26d");
    }
}

//! Alert mail: a small SMTP client (RFC 5321) for the `email` alert target.
//!
//! Design notes:
//! - Blocking, on the alert dispatcher's thread, every read and write under the target's
//!   timeout: one mail per notification, so no pooling and no pipelining.
//! - TLS through rustls, as the object stores use it: `smtps://` from the first byte,
//!   `smtp+starttls://` refuses a server that does not offer STARTTLS (never falls back to
//!   plain text). Certificates from the system, or only those of `ca_file`.
//! - AUTH PLAIN only, and only under TLS or to a loopback server (the policy refuses a
//!   password over plain SMTP to anything else).
//! - The body is base64 UTF-8 text, so no line of an event's message can end the DATA
//!   phase or need 8BITMIME; the subject is RFC 2047-encoded when it is not ASCII.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use cairn_policy::file::{Email, SmtpSecurity};

/// A mail to send: subject and plain-text body.
pub struct Mail<'a> {
    pub subject: &'a str,
    pub body: &'a str,
}

trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

struct Conn {
    r: BufReader<Box<dyn Stream>>,
}

impl Conn {
    /// One reply: its code and its text (the lines of a multi-line reply joined).
    fn reply(&mut self) -> Result<(u16, String), String> {
        let mut text = String::new();
        loop {
            let mut line = String::new();
            let n = (&mut self.r).take(4096).read_line(&mut line).map_err(|e| format!("reading the reply: {e}"))?;
            if n == 0 {
                return Err("the server closed the connection".into());
            }
            let line = line.trim_end();
            let code: u16 =
                line.get(..3).and_then(|c| c.parse().ok()).ok_or_else(|| format!("not an SMTP reply: {line:?}"))?;
            text.push_str(line.get(4..).unwrap_or(""));
            text.push('\n');
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok((code, text.trim_end().to_string()));
            }
            if text.len() > 64 * 1024 {
                return Err("reply too long".into());
            }
        }
    }

    fn send(&mut self, line: &str) -> Result<(), String> {
        let w = self.r.get_mut();
        w.write_all(line.as_bytes())
            .and_then(|_| w.write_all(b"\r\n"))
            .and_then(|_| w.flush())
            .map_err(|e| format!("sending: {e}"))
    }

    /// Sends `line` and expects a reply whose code is in `ok`.
    fn command(&mut self, line: &str, ok: &[u16], what: &str) -> Result<String, String> {
        self.send(line)?;
        self.expect(ok, what)
    }

    fn expect(&mut self, ok: &[u16], what: &str) -> Result<String, String> {
        let (code, text) = self.reply()?;
        if ok.contains(&code) {
            Ok(text)
        } else {
            Err(format!("{what}: the server answered {code} {}", text.lines().next().unwrap_or("")))
        }
    }
}

fn tls_config(ca_file: Option<&str>) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(f) => {
            let pem = std::fs::read(f).map_err(|e| format!("ca_file {f}: {e}"))?;
            let mut n = 0;
            for c in rustls_pemfile::certs(&mut pem.as_slice()) {
                let c = c.map_err(|e| format!("ca_file {f}: {e}"))?;
                roots.add(c).map_err(|e| format!("ca_file {f}: {e}"))?;
                n += 1;
            }
            if n == 0 {
                return Err(format!("ca_file {f}: no PEM certificate in it"));
            }
        }
        None => {
            for c in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(c);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

fn tls(tcp: TcpStream, host: &str, ca_file: Option<&str>) -> Result<Box<dyn Stream>, String> {
    let name = rustls::pki_types::ServerName::try_from(host.to_string()).map_err(|e| format!("{host}: {e}"))?;
    let conn = rustls::ClientConnection::new(tls_config(ca_file)?, name).map_err(|e| format!("TLS: {e}"))?;
    let mut s = rustls::StreamOwned::new(conn, tcp);
    // Complete the handshake now, so a certificate problem is named as such.
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock).map_err(|e| format!("TLS with {host}: {e}"))?;
    }
    Ok(Box::new(s))
}

/// The local name for EHLO: this host's name if it is a plain DNS label sequence.
fn ehlo_name() -> String {
    let h = cairn_fs::hostname();
    if !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.') {
        h
    } else {
        "localhost".into()
    }
}

fn b64(data: &[u8]) -> String {
    crate::report::base64(data)
}

/// The message as sent after DATA: headers, a blank line, the base64 body in 76-column
/// lines, CRLF everywhere.
pub fn message(e: &Email, m: &Mail<'_>, date: &str, id: &str) -> String {
    let clean = |s: &str| s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect::<String>();
    let subject = clean(m.subject);
    let subject = if subject.is_ascii() { subject } else { format!("=?utf-8?b?{}?=", b64(subject.as_bytes())) };
    let mut out = String::new();
    for (k, v) in [
        ("From", e.from.clone()),
        ("To", e.to.join(", ")),
        ("Subject", subject),
        ("Date", date.to_string()),
        ("Message-ID", format!("<{id}@{}>", e.from.rsplit('@').next().unwrap_or("cairn"))),
        ("MIME-Version", "1.0".into()),
        ("Content-Type", "text/plain; charset=utf-8".into()),
        ("Content-Transfer-Encoding", "base64".into()),
        ("Auto-Submitted", "auto-generated".into()),
    ] {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    let body = b64(m.body.replace("\r\n", "\n").replace('\n', "\r\n").as_bytes());
    for chunk in body.as_bytes().chunks(76) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push_str("\r\n");
    }
    out
}

/// Sends one mail; `Err` says at which step and what the server said.
pub fn send(e: &Email, m: &Mail<'_>, timeout: Duration) -> Result<(), String> {
    use std::net::ToSocketAddrs;
    let addrs: Vec<_> =
        (e.host.as_str(), e.port).to_socket_addrs().map_err(|x| format!("{}:{}: {x}", e.host, e.port))?.collect();
    let mut last = format!("{}:{}: no address", e.host, e.port);
    let mut tcp = None;
    for a in addrs {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(t) => {
                tcp = Some(t);
                break;
            }
            Err(x) => last = format!("{}:{}: {x}", e.host, e.port),
        }
    }
    let tcp = tcp.ok_or(last)?;
    tcp.set_read_timeout(Some(timeout))
        .and_then(|_| tcp.set_write_timeout(Some(timeout)))
        .map_err(|x| x.to_string())?;
    // STARTTLS wraps the same socket later: keep a handle to it.
    let mut spare = None;
    let mut c = match e.security {
        SmtpSecurity::Tls => Conn { r: BufReader::new(tls(tcp, &e.host, e.ca_file.as_deref())?) },
        _ => {
            spare = Some(tcp.try_clone().map_err(|x| x.to_string())?);
            Conn { r: BufReader::new(Box::new(tcp) as Box<dyn Stream>) }
        }
    };
    c.expect(&[220], "greeting")?;
    let name = ehlo_name();
    let mut caps = c.command(&format!("EHLO {name}"), &[250], "EHLO")?;
    if e.security == SmtpSecurity::StartTls {
        if !caps.lines().any(|l| l.trim().eq_ignore_ascii_case("STARTTLS")) {
            return Err(format!("{} offers no STARTTLS: refusing to go on in plain text", e.host));
        }
        c.command("STARTTLS", &[220], "STARTTLS")?;
        // Whatever was buffered before the handshake would be an injection: there is none
        // in a well-behaved exchange, and none is accepted.
        if !c.r.buffer().is_empty() {
            return Err("the server sent data before the TLS handshake".into());
        }
        drop(c);
        let tcp = spare.take().ok_or("no socket to start TLS on")?;
        c = Conn { r: BufReader::new(tls(tcp, &e.host, e.ca_file.as_deref())?) };
        caps = c.command(&format!("EHLO {name}"), &[250], "EHLO after STARTTLS")?;
    }
    if let (Some(user), Some(pf)) = (&e.username, &e.password_file) {
        if !caps.lines().any(|l| {
            let l = l.to_ascii_uppercase();
            l.starts_with("AUTH") && l.split_whitespace().any(|m| m == "PLAIN")
        }) {
            return Err(format!("{} offers no AUTH PLAIN", e.host));
        }
        let pw = crate::repos::read_password_file(std::path::Path::new(pf)).map_err(|x| x.to_string())?;
        let mut token = vec![0u8];
        token.extend_from_slice(user.as_bytes());
        token.push(0);
        token.extend_from_slice(&pw);
        c.command(&format!("AUTH PLAIN {}", b64(&token)), &[235], "AUTH")?;
    }
    c.command(&format!("MAIL FROM:<{}>", e.from), &[250], "MAIL FROM")?;
    for to in &e.to {
        c.command(&format!("RCPT TO:<{to}>"), &[250, 251], &format!("RCPT TO {to}"))?;
    }
    c.command("DATA", &[354], "DATA")?;
    let now = jiff::Timestamp::now();
    let id = format!("{}.{}", now.as_nanosecond(), std::process::id());
    let msg = message(e, m, &now.strftime("%a, %d %b %Y %H:%M:%S +0000").to_string(), &id);
    // Headers are ours and the body is base64: no line starts with a dot.
    c.r.get_mut().write_all(msg.as_bytes()).map_err(|x| format!("sending the message: {x}"))?;
    c.command(".", &[250], "the message")?;
    let _ = c.command("QUIT", &[221], "QUIT");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_cannot_be_forged_and_the_body_is_safe() {
        let e = Email {
            host: "h".into(),
            port: 25,
            security: SmtpSecurity::Plain,
            from: "cairn@example.net".into(),
            to: vec!["a@example.net".into(), "b@example.net".into()],
            username: None,
            password_file: None,
            ca_file: None,
        };
        let m = message(&e, &Mail { subject: "x\r\nBcc: evil@x", body: ".\r\n.\nend" }, "D", "1");
        assert!(m.contains("Subject: x  Bcc: evil@x\r\n"), "{m}");
        assert!(!m.contains("\r\nBcc:"), "{m}");
        assert!(m.contains("To: a@example.net, b@example.net\r\n"));
        let body = m.split("\r\n\r\n").nth(1).unwrap();
        assert!(body.lines().all(|l| !l.starts_with('.')), "{body}");
        let u = message(&e, &Mail { subject: "déjà", body: "" }, "D", "1");
        assert!(u.contains("Subject: =?utf-8?b?"), "{u}");
    }
}

//! A real HTTP receiver on 127.0.0.1 for tests of webhooks and pings: every request is
//! kept (method, path, headers, body) and answered with the status the test sets.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

pub struct Receiver {
    pub port: u16,
    requests: Arc<Mutex<Vec<Request>>>,
    status: Arc<AtomicU16>,
}

impl Receiver {
    #[allow(clippy::unwrap_used)]
    pub fn start() -> Receiver {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let status = Arc::new(AtomicU16::new(200));
        let (r, st) = (requests.clone(), status.clone());
        std::thread::spawn(move || {
            for conn in l.incoming().flatten() {
                let (r, st) = (r.clone(), st.clone());
                std::thread::spawn(move || {
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
                    let mut w = match conn.try_clone() {
                        Ok(w) => w,
                        Err(_) => return,
                    };
                    let mut rd = BufReader::new(conn);
                    let mut line = String::new();
                    if rd.read_line(&mut line).is_err() {
                        return;
                    }
                    let mut parts = line.split_whitespace();
                    let (method, path) =
                        (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("").to_string());
                    let mut headers = Vec::new();
                    loop {
                        let mut h = String::new();
                        if rd.read_line(&mut h).is_err() || h.trim().is_empty() {
                            break;
                        }
                        if let Some((k, v)) = h.trim_end().split_once(':') {
                            headers.push((k.trim().to_string(), v.trim().to_string()));
                        }
                    }
                    let len = headers
                        .iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                        .and_then(|(_, v)| v.parse::<usize>().ok())
                        .unwrap_or(0);
                    let mut body = vec![0; len.min(16 << 20)];
                    let _ = rd.read_exact(&mut body);
                    if let Ok(mut v) = r.lock() {
                        v.push(Request { method, path, headers, body });
                    }
                    let code = st.load(Ordering::Relaxed);
                    let _ = write!(w, "HTTP/1.1 {code} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                });
            }
        });
        Receiver { port, requests, status }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The status later requests are answered with.
    pub fn respond(&self, code: u16) {
        self.status.store(code, Ordering::Relaxed);
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Waits (at most `secs`) for a request `f` accepts; panics with what came otherwise.
    pub fn wait_for(&self, secs: u64, what: &str, f: impl Fn(&Request) -> bool) -> Request {
        let start = Instant::now();
        loop {
            if let Some(r) = self.requests().into_iter().find(|r| f(r)) {
                return r;
            }
            if start.elapsed() > Duration::from_secs(secs) {
                let got: Vec<String> = self
                    .requests()
                    .iter()
                    .map(|r| format!("{} {} {}", r.method, r.path, String::from_utf8_lossy(&r.body)))
                    .collect();
                panic!("no {what} within {secs} s; received:\n{}", got.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

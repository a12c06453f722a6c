//! The daemon's HTTP endpoint: `GET /metrics` (Prometheus text format). The API and the
//! console of the next issue extend this router.
//!
//! Key decisions: hyper's HTTP/1 server on the daemon's runtime, with a header read
//! timeout (a client that sends nothing is dropped) and a bounded request head; each
//! scrape is computed on a blocking thread from the catalog and the repositories; only
//! GET and HEAD exist; plain HTTP is refused off loopback at policy load (no TLS yet).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use jiff::Timestamp;

use crate::jobs::Env;
use crate::{Error, Result};

/// What a request handler reads: the current policy (replaced on reload) and the start.
pub struct Shared {
    pub env: RwLock<Env>,
    pub start: Timestamp,
}

/// Binds `listen` and serves on the runtime until the process ends.
pub fn spawn(listen: SocketAddr, shared: Arc<Shared>, rt: &tokio::runtime::Handle) -> Result<SocketAddr> {
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(listen))
        .map_err(|e| Error::io(format!("listening on {listen}"), e))?;
    let bound = listener.local_addr().map_err(|e| Error::io(format!("listening on {listen}"), e))?;
    rt.spawn(async move {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(c) => c,
                Err(_) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let shared = shared.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| handle(req, shared.clone()));
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .max_buf_size(64 * 1024)
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(bound)
}

fn plain(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert("content-type", hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

async fn handle(req: Request<Incoming>, shared: Arc<Shared>) -> std::result::Result<Response<Full<Bytes>>, Infallible> {
    let head = req.method() == Method::HEAD;
    let r = match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/metrics") => {
            let s = shared.clone();
            let text = tokio::task::spawn_blocking(move || -> Result<String> {
                let env = s.env.read().map_err(|_| Error::Source("policy lock poisoned".into()))?.clone();
                let catalog = env.catalog()?;
                crate::metrics::render(&env, &catalog, Timestamp::now(), Some(s.start))
            })
            .await;
            match text {
                Ok(Ok(t)) => {
                    let mut r = plain(StatusCode::OK, t);
                    r.headers_mut().insert(
                        "content-type",
                        hyper::header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                    );
                    r
                }
                Ok(Err(e)) => plain(StatusCode::INTERNAL_SERVER_ERROR, format!("metrics: {}\n", crate::one_line(&e))),
                Err(_) => plain(StatusCode::INTERNAL_SERVER_ERROR, "metrics: the computation failed\n".into()),
            }
        }
        (_, "/metrics") => {
            let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n".into());
            r.headers_mut().insert("allow", hyper::header::HeaderValue::from_static("GET, HEAD"));
            r
        }
        _ => plain(StatusCode::NOT_FOUND, "not found\n".into()),
    };
    if head {
        let (parts, _) = r.into_parts();
        return Ok(Response::from_parts(parts, Full::new(Bytes::new())));
    }
    Ok(r)
}

//! The listener: plain TCP or TLS (rustls, the certificate and key the policy names), each
//! connection served by hyper's HTTP/1 with a header read timeout and a bounded request
//! head, the router answering.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cairn_daemon::daemon::Shared;
use cairn_daemon::{Error, Result};
use tower::ServiceExt;

use crate::auth::Peer;
use crate::App;

fn tls_config(cert: &std::path::Path, key: &std::path::Path) -> Result<tokio_rustls::rustls::ServerConfig> {
    let read = |p: &std::path::Path| std::fs::read(p).map_err(|e| Error::io(format!("reading {}", p.display()), e));
    let certs: Vec<_> = rustls_pemfile::certs(&mut &read(cert)?[..])
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::io(format!("{}: not a PEM certificate chain", cert.display()), e))?;
    if certs.is_empty() {
        return Err(Error::Source(format!("{}: no certificate in it", cert.display())));
    }
    let key_der = rustls_pemfile::private_key(&mut &read(key)?[..])
        .map_err(|e| Error::io(format!("{}: not a PEM private key", key.display()), e))?
        .ok_or_else(|| Error::Source(format!("{}: no private key in it", key.display())))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut c = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Source(format!("TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| Error::Source(format!("TLS certificate {} and key {}: {e}", cert.display(), key.display())))?;
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(c)
}

/// Binds `[server] listen` and serves the router on the daemon's runtime; returns the URL.
pub fn spawn(shared: Arc<Shared>) -> Result<String> {
    let env = shared.env()?;
    let Some(srv) = env.policy.server.clone() else { return Err(Error::Source("no [server] in the policy".into())) };
    let tls = match &srv.tls {
        Some(t) => Some(tokio_rustls::TlsAcceptor::from(Arc::new(tls_config(&t.cert, &t.key)?))),
        None => None,
    };
    let rt = env.rt.clone();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(srv.listen))
        .map_err(|e| Error::io(format!("listening on {}", srv.listen), e))?;
    let bound = listener.local_addr().map_err(|e| Error::io(format!("listening on {}", srv.listen), e))?;
    let state = App::new(shared, tls.is_some());
    let router = crate::app(state);
    let url = format!("{}://{bound}", if tls.is_some() { "https" } else { "http" });
    rt.spawn(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(_) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let (router, tls) = (router.clone(), tls.clone());
            tokio::spawn(async move {
                match tls {
                    Some(acc) => {
                        // A client that never finishes its handshake is dropped.
                        if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(10), acc.accept(stream)).await {
                            serve_conn(s, peer, router).await;
                        }
                    }
                    None => serve_conn(stream, peer, router).await,
                }
            });
        }
    });
    Ok(url)
}

async fn serve_conn<S>(stream: S, peer: SocketAddr, router: axum::Router)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(Peer(peer));
        router.clone().oneshot(req)
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .max_buf_size(64 * 1024)
        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
        .await;
}

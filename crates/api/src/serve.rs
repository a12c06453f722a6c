//! The listener: plain TCP or TLS (rustls, the certificate and key the policy names), each
//! connection served by hyper's HTTP/1 with a header read timeout and a bounded request
//! head, the router answering.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cairn_daemon::daemon::Shared;
use cairn_daemon::{Error, Result};
use cairn_policy::file::Listen;
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
    let state = App::new(shared, tls.is_some());
    let router = crate::app(state);
    let scheme = if tls.is_some() { "https" } else { "http" };
    match &srv.listen {
        Listen::Tcp(addr) => {
            let listener = rt
                .block_on(tokio::net::TcpListener::bind(addr))
                .map_err(|e| Error::io(format!("listening on {addr}"), e))?;
            let bound = listener.local_addr().map_err(|e| Error::io(format!("listening on {addr}"), e))?;
            rt.spawn(async move {
                loop {
                    match listener.accept().await {
                        Ok((stream, peer)) => connection(stream, peer, router.clone(), tls.clone()),
                        // Out of file descriptors and the like: wait, do not spin.
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
            });
            Ok(format!("{scheme}://{bound}"))
        }
        Listen::Unix(path) => {
            // A stale socket of a daemon that died is replaced (the caller holds the daemon
            // lock); who may connect is the socket's mode: the daemon's user and group.
            let _ = std::fs::remove_file(path);
            if let Some(d) = path.parent() {
                std::fs::create_dir_all(d).map_err(|e| Error::io(format!("creating {}", d.display()), e))?;
            }
            let listener = {
                let _g = rt.enter();
                tokio::net::UnixListener::bind(path)
                    .map_err(|e| Error::io(format!("listening on {}", path.display()), e))?
            };
            std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o660))
                .map_err(|e| Error::io(format!("securing {}", path.display()), e))?;
            // Clients over the socket are local: they count as the loopback address.
            let local = SocketAddr::from(([127, 0, 0, 1], 0));
            rt.spawn(async move {
                loop {
                    match listener.accept().await {
                        Ok((stream, _)) => connection(stream, local, router.clone(), tls.clone()),
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
            });
            Ok(format!("{scheme} on unix:{}", path.display()))
        }
    }
}

/// Serves one accepted connection on its own task (after the TLS handshake, if any; a
/// client that never finishes it is dropped after 10 s).
fn connection<S>(stream: S, peer: SocketAddr, router: axum::Router, tls: Option<tokio_rustls::TlsAcceptor>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        match tls {
            Some(acc) => {
                if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(10), acc.accept(stream)).await {
                    serve_conn(s, peer, router).await;
                }
            }
            None => serve_conn(stream, peer, router).await,
        }
    });
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

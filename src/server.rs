//! The listener of nodes and site agents: TCP accepts, TLS handshakes each in its own task and
//! bounded in time (a slow or silent client never holds up the next one), HTTP/1.1
//! connections with a bound on how long request headers may take, the client certificate's
//! identity attached to every request ([`Connection`]), and a graceful drain at shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tower::ServiceExt;

use crate::tls::{CertIdentity, Reloadable};

/// What the connection told us, attached to every request by the listener.
#[derive(Debug, Clone)]
pub struct Connection {
    pub remote: SocketAddr,
    /// The verified client certificate's identity, when one was presented over TLS.
    pub cert: Option<CertIdentity>,
    pub tls: bool,
}

/// Longer than any honest handshake over a WAN; a client still silent by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` until `stop` turns true, then lets open connections finish
/// their requests (the caller bounds how long it waits).
pub async fn serve(listener: TcpListener, app: Router, tls: Option<Arc<Reloadable>>, mut stop: watch::Receiver<bool>) {
    let graceful = GracefulShutdown::new();
    loop {
        let (tcp, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off rather than spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            stopped = stop.changed() => {
                if stopped.is_err() || *stop.borrow() { break } else { continue }
            }
        };
        let _ = tcp.set_nodelay(true);
        let (app, tls, watcher) = (app.clone(), tls.clone(), graceful.watcher());
        tokio::spawn(async move {
            match tls {
                None => {
                    let conn = Connection { remote, cert: None, tls: false };
                    let _ = watcher.watch(connection(TokioIo::new(tcp), app, conn)).await;
                }
                Some(tls) => {
                    let Some((stream, conn)) = handshake(tcp, remote, &tls).await else { return };
                    let _ = watcher.watch(connection(TokioIo::new(stream), app, conn)).await;
                }
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

async fn handshake(
    tcp: TcpStream,
    remote: SocketAddr,
    tls: &Reloadable,
) -> Option<(tokio_rustls::server::TlsStream<TcpStream>, Connection)> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.current().server.clone());
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            // Debug, not warn: port scanners and plain-HTTP clients would flood the log.
            tracing::debug!(%remote, error = %e, "TLS handshake failed");
            return None;
        }
        Err(_) => {
            tracing::debug!(%remote, "TLS handshake timed out");
            return None;
        }
    };
    let cert = stream.get_ref().1.peer_certificates().and_then(|chain| chain.first()).and_then(CertIdentity::of);
    Some((stream, Connection { remote, cert, tls: true }))
}

fn connection<I>(io: TokioIo<I>, app: Router, conn: Connection) -> impl hyper_util::server::graceful::GracefulConnection
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(conn.clone());
        app.clone().oneshot(req)
    });
    hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(io, service)
}

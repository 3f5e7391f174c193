//! The agent's side of the wire: an HTTP server that answers the
//! [`crate::Host`] methods of any implementation.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;

use crate::host::{dispatch, Host};

/// Requests carry an uploaded file's path, never its bytes; the largest are
/// network specs with the metadata documents of their guests (about 1 KiB
/// per NIC), so 16 MiB leaves room for thousands of NICs in one network.
const MAX_REQUEST_BYTES: usize = 16 << 20;

/// The routes of protocol v1 over `host`.
pub fn router(host: Arc<dyn Host>) -> Router {
    Router::new()
        .route("/v1/{method}", post(handle))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .with_state(host)
}

/// Serves `host` on a Unix socket until the listener fails.
pub async fn serve_unix(host: Arc<dyn Host>, listener: tokio::net::UnixListener) -> std::io::Result<()> {
    axum::serve(listener, router(host)).await
}

/// Serves `host` to the control plane over mutual TLS (see [`crate::tls`]):
/// a connection whose client shows no certificate of the cloud's CA valid
/// for client authentication ends at the handshake.
pub async fn serve_tls(host: Arc<dyn Host>, listener: tokio::net::TcpListener, tls: Arc<rustls::ServerConfig>) -> std::io::Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let app = router(host);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            // Out of file descriptors, a connection reset before it was
            // accepted…: the listener itself is fine; keep serving.
            Err(e) => {
                tracing::warn!(error = %e, "agent protocol: accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let (acceptor, app) = (acceptor.clone(), app.clone());
        // Each connection on its own task: a slow handshake holds up no one.
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::warn!(%peer, error = %e, "agent protocol: TLS handshake refused");
                    return;
                }
                Err(_) => {
                    tracing::warn!(%peer, "agent protocol: TLS handshake timed out");
                    return;
                }
            };
            let service = hyper_util::service::TowerToHyperService::new(app);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "agent protocol connection ended");
            }
        });
    }
}

/// How long to wait before accepting again after a failed accept.
const ACCEPT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);
/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

async fn handle(State(host): State<Arc<dyn Host>>, Path(method): Path<String>, body: Bytes) -> Response {
    // Run to completion even if the caller goes away: an operation cut in
    // the middle (a VM half started, a volume half copied) is worse than
    // one whose answer nobody reads. The caller asks again; methods are
    // idempotent.
    let task = tokio::spawn(async move { dispatch(&*host, &method, &body).await });
    match task.await {
        Ok(Ok(value)) => Json(value).into_response(),
        Ok(Err(e)) => (e.status(), Json(e)).into_response(),
        Err(join) => {
            let e = crate::HostError::internal(format!("the agent's handler failed: {join}"));
            (e.status(), Json(e)).into_response()
        }
    }
}

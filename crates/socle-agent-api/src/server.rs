//! The agent's side of the wire: an HTTP server that answers the
//! [`crate::Host`] methods of any implementation.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;

use crate::host::{dispatch, Host};

/// Requests can carry an uploaded file's path, never its bytes: 1 MiB is plenty.
const MAX_REQUEST_BYTES: usize = 1 << 20;

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

//! [`HostClient`]: the control plane's side of the wire. Every [`crate::Host`]
//! method becomes `POST /v1/<method>` to the agent.

use std::path::PathBuf;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::HostError;

/// A connection to one agent. Each call opens its own connection (a Unix
/// socket connect costs microseconds), so a slow call — a snapshot copy, a
/// VM stop — never holds up another.
#[derive(Debug, Clone)]
pub struct HostClient {
    socket: PathBuf,
}

impl HostClient {
    /// An agent listening on the Unix socket `socket`.
    pub fn unix(socket: impl Into<PathBuf>) -> HostClient {
        HostClient { socket: socket.into() }
    }

    /// Where the agent listens, for messages.
    pub fn endpoint(&self) -> String {
        format!("unix:{}", self.socket.display())
    }

    pub(crate) async fn call<A: Serialize, R: DeserializeOwned>(&self, method: &str, args: &A) -> Result<R, HostError> {
        let unreachable = |what: &str, e: &dyn std::fmt::Display| HostError::unreachable(format!("agent at {}: {method}: {what}: {e}", self.endpoint()));
        let body = serde_json::to_vec(args).map_err(|e| HostError::internal(format!("{method}: cannot encode the request: {e}")))?;
        let stream = tokio::net::UnixStream::connect(&self.socket).await.map_err(|e| unreachable("connect", &e))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| unreachable("handshake", &e))?;
        tokio::spawn(async move {
            // Ends with the request; an error here also shows in send_request.
            let _ = conn.await;
        });
        let request = http::Request::post(format!("/v{}/{method}", crate::PROTOCOL_VERSION))
            .header(http::header::HOST, "agent")
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| HostError::internal(format!("{method}: {e}")))?;
        let response = sender.send_request(request).await.map_err(|e| unreachable("request", &e))?;
        let status = response.status();
        let bytes = response.into_body().collect().await.map_err(|e| unreachable("reading the answer", &e))?.to_bytes();
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| unreachable("answer not in the protocol", &e));
        }
        Err(serde_json::from_slice::<HostError>(&bytes).unwrap_or_else(|_| {
            let text = String::from_utf8_lossy(&bytes[..bytes.len().min(512)]).into_owned();
            unreachable("answer not in the protocol", &format!("HTTP {status}: {text}"))
        }))
    }
}

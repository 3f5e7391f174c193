//! [`HostClient`]: the control plane's side of the wire. Every [`crate::Host`]
//! method becomes `POST /v1/<method>` to the agent.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::HostError;

/// A connection to one agent. Each call opens its own connection (a Unix
/// socket connect costs microseconds), so a slow call — a snapshot copy, a
/// VM stop — never holds up another.
#[derive(Clone)]
pub struct HostClient {
    endpoint: Endpoint,
    /// Caps every call's deadline (health checks want an answer in seconds).
    max_deadline: Option<Duration>,
}

#[derive(Clone)]
enum Endpoint {
    Unix(PathBuf),
    /// `addr` (host:port) over mutual TLS, expecting the certificate of
    /// `host_id` — and, when `pinned`, that very certificate (its
    /// fingerprint as recorded at its join, see `pki::cert_fingerprint`).
    Tls { addr: String, host_id: String, config: Arc<rustls::ClientConfig>, pinned: Option<String> },
}

impl std::fmt::Debug for HostClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.endpoint())
    }
}

/// How long a connection to an agent may take to establish.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

const MINUTE: u64 = 60;

/// How long `method` may take, connection included, before the call fails
/// as `Unreachable`: a stuck or hostile agent never holds a caller (the
/// lease holder's recovery, a reconciler task) for ever. Calls that copy or
/// convert whole disks get hours; the rest answer from the host's state or
/// drive QEMU, and get a minute or a few. Every step the control plane
/// retries is safe to do again, so a call that ran out is simply retried.
pub fn deadline(method: &str) -> Duration {
    Duration::from_secs(match method {
        "import_snapshot" => 6 * 60 * MINUTE,
        "create_volume" | "snapshot_volume" | "prepare_platform_image" | "define_vm" => 60 * MINUTE,
        "resize_volume" | "delete_volume" | "delete_snapshot" | "inspect_upload" | "snapshot_file" | "finish_snapshot" => 30 * MINUTE,
        // A graceful stop waits for the guest (StopVms' own timeout).
        "stop_vm" => 15 * MINUTE,
        "start_vm" | "link_volume" | "unlink_volume" | "link_nic" | "unlink_nic" | "destroy_vm" => 5 * MINUTE,
        // Answered from what the host has: a host that takes longer is as
        // good as away (a server's start waits for these on every host).
        "host_info" | "vm_runtime" | "list_vms" | "list_volumes" | "list_snapshots" | "vm_spec" | "vm_volumes" | "vm_nics"
        | "nic_plugged" | "snapshot_progress" | "console_output" => 15,
        _ => MINUTE,
    })
}

/// The largest answer `method` may send. Answers are read into memory: an
/// agent that sends more (a bug, or a hostile host) fails the call instead
/// of exhausting the control plane.
pub fn answer_cap(method: &str) -> usize {
    const MIB: usize = 1024 * 1024;
    match method {
        // IDs of everything on the host.
        "list_vms" | "list_volumes" | "list_snapshots" | "list_uploads" => 16 * MIB,
        // User data (up to 500 KiB in OSC), a console tail: base64 in JSON.
        "vm_spec" | "console_output" => 4 * MIB,
        // A piece of a snapshot copied between hosts (at most 8 MiB, base64).
        "read_snapshot" => 12 * MIB,
        _ => MIB,
    }
}

impl HostClient {
    /// An agent listening on the Unix socket `socket`.
    pub fn unix(socket: impl Into<PathBuf>) -> HostClient {
        HostClient { endpoint: Endpoint::Unix(socket.into()), max_deadline: None }
    }

    /// Host `host_id`'s agent at `addr` (host:port), over mutual TLS with
    /// the control plane's `config` (see [`crate::tls::client_config`]).
    pub fn tls(addr: impl Into<String>, host_id: impl Into<String>, config: Arc<rustls::ClientConfig>) -> HostClient {
        HostClient { endpoint: Endpoint::Tls { addr: addr.into(), host_id: host_id.into(), config, pinned: None }, max_deadline: None }
    }

    /// The same host, answering only with the certificate whose fingerprint
    /// is `cert_sha256`: another certificate the CA issued under the same
    /// name (a join whose answer was lost, a compromised copy) is refused.
    pub fn pinned_to(mut self, cert_sha256: impl Into<String>) -> HostClient {
        if let Endpoint::Tls { pinned, .. } = &mut self.endpoint {
            *pinned = Some(cert_sha256.into());
        }
        self
    }

    /// The same agent, with every call's deadline at most `limit`.
    pub fn with_max_deadline(mut self, limit: Duration) -> HostClient {
        self.max_deadline = Some(limit);
        self
    }

    /// Where the agent listens, for messages.
    pub fn endpoint(&self) -> String {
        match &self.endpoint {
            Endpoint::Unix(socket) => format!("unix:{}", socket.display()),
            Endpoint::Tls { addr, host_id, .. } => format!("tls:{addr} ({host_id})"),
        }
    }

    /// `method` could not reach the agent, or got no answer in the protocol.
    fn unreachable(&self, method: &str, what: &str, e: impl std::fmt::Display) -> HostError {
        HostError::unreachable(format!("agent at {}: {method}: {what}: {e}", self.endpoint()))
    }

    pub(crate) async fn call<A: Serialize, R: DeserializeOwned>(&self, method: &str, args: &A) -> Result<R, HostError> {
        let limit = self.max_deadline.map_or(deadline(method), |max| max.min(deadline(method)));
        tokio::time::timeout(limit, self.call_now(method, args))
            .await
            .unwrap_or_else(|_| Err(HostError::unreachable(format!("agent at {}: {method}: no answer within {} s", self.endpoint(), limit.as_secs_f32()))))
    }

    async fn call_now<A: Serialize, R: DeserializeOwned>(&self, method: &str, args: &A) -> Result<R, HostError> {
        let unreachable = |what: &str, e: &dyn std::fmt::Display| self.unreachable(method, what, e);
        let body = serde_json::to_vec(args).map_err(|e| HostError::internal(format!("{method}: cannot encode the request: {e}")))?;
        match &self.endpoint {
            Endpoint::Unix(socket) => {
                let stream = tokio::net::UnixStream::connect(socket).await.map_err(|e| unreachable("connect", &e))?;
                self.exchange(method, body, stream).await
            }
            Endpoint::Tls { addr, host_id, config, pinned } => {
                let name = rustls::pki_types::ServerName::try_from(crate::tls::host_name(host_id))
                    .map_err(|e| HostError::internal(format!("host name {host_id:?}: {e}")))?;
                let connect = async {
                    let tcp = tokio::net::TcpStream::connect(addr.as_str()).await.map_err(|e| unreachable("connect", &e))?;
                    tokio_rustls::TlsConnector::from(config.clone()).connect(name, tcp).await.map_err(|e| unreachable("TLS", &e))
                };
                let stream = tokio::time::timeout(CONNECT_TIMEOUT, connect).await.map_err(|_| unreachable("connect", &"timed out"))??;
                if let Some(want) = pinned {
                    let presented = stream.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| crate::pki::der_fingerprint(c));
                    if presented.as_deref() != Some(want.as_str()) {
                        return Err(unreachable(
                            "TLS",
                            &format!("the host presented another certificate than the one it joined with (SHA-256 {want})"),
                        ));
                    }
                }
                self.exchange(method, body, stream).await
            }
        }
    }

    /// One request and its answer on a fresh connection.
    async fn exchange<R: DeserializeOwned>(
        &self,
        method: &str,
        body: Vec<u8>,
        stream: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    ) -> Result<R, HostError> {
        let unreachable = |what: &str, e: &dyn std::fmt::Display| self.unreachable(method, what, e);
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
        let cap = answer_cap(method);
        let bytes = http_body_util::Limited::new(response.into_body(), cap)
            .collect()
            .await
            .map_err(|e| match e.downcast_ref::<http_body_util::LengthLimitError>() {
                Some(_) => unreachable("answer refused", &format!("larger than {cap} bytes")),
                None => unreachable("reading the answer", &e),
            })?
            .to_bytes();
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| unreachable("answer not in the protocol", &e));
        }
        Err(serde_json::from_slice::<HostError>(&bytes).unwrap_or_else(|_| {
            let text = String::from_utf8_lossy(&bytes[..bytes.len().min(512)]).into_owned();
            unreachable("answer not in the protocol", &format!("HTTP {status}: {text}"))
        }))
    }
}

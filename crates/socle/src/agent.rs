//! The host agent's side of the binary.
//!
//! - `socle agent`: the agent alone, in the foreground, serving the agent
//!   protocol on a Unix socket; a control plane (`socle up --agent
//!   unix:PATH`) drives it.
//! - [`start_in_process`]: the agent of the all-in-one `socle up`, served the
//!   same way on `DATA/agent.sock` inside the same process.
//!
//! Either way the control plane reaches the agent only through the socket,
//! so the all-in-one exercises the path a remote host takes. Guests outlive
//! the agent: QEMU runs detached, and an agent started again on the same
//! state dir takes its VMs back.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use socle_agent::{AccelChoice, Agent, AgentConfig};
use socle_agent_api::HostClient;

/// The socket's name in the data dir.
const SOCKET: &str = "agent.sock";

#[derive(clap::Args)]
pub struct AgentArgs {
    #[command(flatten)]
    dir: crate::DataDirArg,
    /// Where to serve the agent protocol: `unix:PATH` (default: unix:DATA/agent.sock).
    /// Remote hosts over TCP need mutual TLS, which is not there yet.
    #[arg(long, env = "SOCLE_AGENT_LISTEN")]
    listen: Option<String>,
    /// Hardware accelerator for guests: auto probes KVM with a real guest and
    /// falls back to TCG (software) when KVM cannot run it.
    #[arg(long, default_value = "auto", env = "SOCLE_ACCEL")]
    accel: AccelChoice,
}

/// The path of a `unix:PATH` endpoint.
pub fn unix_endpoint(endpoint: &str) -> anyhow::Result<PathBuf> {
    match endpoint.strip_prefix("unix:") {
        Some(path) if !path.is_empty() => Ok(PathBuf::from(path)),
        _ => anyhow::bail!("agent endpoint {endpoint:?}: expected unix:PATH (TCP with mutual TLS is not supported yet)"),
    }
}

pub fn run(args: AgentArgs) -> anyhow::Result<()> {
    crate::init_logs();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let data_dir = args.dir.resolve();
        let socket = match &args.listen {
            Some(endpoint) => unix_endpoint(endpoint)?,
            None => data_dir.join(SOCKET),
        };
        let agent = start(&data_dir, args.accel).await?;
        let listener = listen(&socket).await?;
        eprintln!(
            "\nSocle agent is up: unix:{} (accelerator {}, state in {})\n",
            socket.display(),
            agent.accel(),
            data_dir.join("agent").display()
        );
        tokio::select! {
            served = socle_agent_api::server::serve_unix(Arc::new(agent), listener) => {
                served.with_context(|| format!("the agent socket {} failed", socket.display()))?;
            }
            _ = crate::up::shutdown_signal() => {}
        }
        let _ = std::fs::remove_file(&socket);
        tracing::info!("stopped; guests keep running and are taken back at the next start");
        Ok(())
    })
}

/// Starts the agent on `data_dir` and serves it on `DATA/agent.sock`; a
/// client of it, and the accelerator it chose.
pub async fn start_in_process(data_dir: &Path, accel: AccelChoice) -> anyhow::Result<(HostClient, String)> {
    let agent = start(data_dir, accel).await?;
    let accel = agent.accel().to_string();
    let socket = data_dir.join(SOCKET);
    let listener = listen(&socket).await?;
    tokio::spawn(async move {
        if let Err(e) = socle_agent_api::server::serve_unix(Arc::new(agent), listener).await {
            tracing::error!(error = %e, "the host agent's socket failed");
        }
    });
    Ok((HostClient::unix(socket), accel))
}

async fn start(data_dir: &Path, accel: AccelChoice) -> anyhow::Result<Agent> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)
        .with_context(|| format!("cannot create the data dir {}", data_dir.display()))?;
    let mut cfg = AgentConfig::new(data_dir.join("agent"));
    cfg.accel = accel;
    Agent::new(cfg).await.context("cannot start the host agent")
}

/// Listens on `socket`, usable by this user only (requests carry volume
/// keys). A socket file left by a process that died is replaced; one that
/// a live agent answers on is not.
async fn listen(socket: &Path) -> anyhow::Result<tokio::net::UnixListener> {
    if tokio::net::UnixStream::connect(socket).await.is_ok() {
        anyhow::bail!("an agent already listens on {}", socket.display());
    }
    match std::fs::remove_file(socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot remove the old agent socket {}", socket.display())),
    }
    let listener = tokio::net::UnixListener::bind(socket).with_context(|| {
        format!("cannot listen on the agent socket {} (a Unix socket path is at most 107 bytes)", socket.display())
    })?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot restrict {}", socket.display()))?;
    Ok(listener)
}

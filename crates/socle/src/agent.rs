//! The host agent's side of the binary.
//!
//! - `socle agent`: the agent alone, in the foreground, serving the agent
//!   protocol on a Unix socket (a control plane on this machine drives it:
//!   `socle up --agent unix:PATH`) or, once the host has joined a cloud
//!   (`--join URL --token T`, once), on TCP with mutual TLS.
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
    /// Where to serve the agent protocol: `unix:PATH` (default: unix:DATA/agent.sock),
    /// or HOST:PORT over mutual TLS once this host has joined a cloud.
    #[arg(long, env = "SOCLE_AGENT_LISTEN")]
    listen: Option<String>,
    /// Join the cloud whose API is at this URL (e.g. http://10.0.0.1:8700), once:
    /// the host gets its certificate and is known from then on (later starts
    /// need only --data-dir and --listen).
    #[arg(long, requires = "token")]
    join: Option<String>,
    /// The one-time token from `socle host token` (or $SOCLE_JOIN_TOKEN).
    #[arg(long, env = "SOCLE_JOIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// HOST:PORT at which the control plane reaches this agent (default: --listen).
    #[arg(long)]
    advertise: Option<String>,
    /// Hardware accelerator for guests: auto probes KVM with a real guest and
    /// falls back to TCG (software) when KVM cannot run it.
    #[arg(long, default_value = "auto", env = "SOCLE_ACCEL")]
    accel: AccelChoice,
    /// Prefix of the namespaces, taps, veths and nftables tables of the
    /// cloud's networks on this host (1-6 lowercase letters/digits; differ
    /// per cloud on one host). Tenant networks need root: another user's
    /// agent runs VMs without them.
    #[arg(long, default_value = "socle", env = "SOCLE_NET_PREFIX")]
    net_prefix: String,
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
    let data_dir = args.dir.resolve();
    let tls_dir = data_dir.join("tls");
    let tcp = match args.listen.as_deref() {
        Some(l) if !l.starts_with("unix:") => Some(l.to_string()),
        _ => None,
    };
    if let Some(url) = &args.join {
        match crate::join::joined(&tls_dir)? {
            Some(host) => eprintln!("this host already joined as {} ({}); --join is ignored", host.host_id, host.subregion),
            None => {
                let listen = tcp.as_deref().context("--join needs --listen HOST:PORT: a joined host serves the agent protocol over TCP")?;
                let token = args.token.as_deref().context("--join needs --token")?;
                let endpoint = args.advertise.clone().unwrap_or_else(|| listen.to_string());
                let host = crate::join::join(url, token, &endpoint, &tls_dir)?;
                eprintln!("joined as {} in {}", host.host_id, host.subregion);
            }
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let networking = if unsafe { libc::geteuid() } == 0 {
            Some(args.net_prefix.as_str())
        } else {
            eprintln!("socle agent: not running as root, so this host wires no tenant networks (its VMs get no NICs)");
            None
        };
        let agent = Arc::new(start(&data_dir, args.accel, networking).await?);
        let accel = agent.accel();
        let state = data_dir.join("agent");
        let (served, socket) = match tcp {
            Some(addr) => {
                let host = crate::join::joined(&tls_dir)?
                    .with_context(|| format!("this host has not joined a cloud ({} is empty): serving over TCP needs --join once", tls_dir.display()))?;
                let tls = crate::join::server_tls(&tls_dir)?;
                let listener = tokio::net::TcpListener::bind(&addr).await.with_context(|| format!("cannot listen on {addr}"))?;
                eprintln!("\nSocle agent is up: host {} ({}) on {addr}, mutual TLS (accelerator {accel}, state in {})\n", host.host_id, host.subregion, state.display());
                (tokio::spawn(socle_agent_api::server::serve_tls(agent, listener, tls)), None)
            }
            None => {
                let socket = match &args.listen {
                    Some(endpoint) => unix_endpoint(endpoint)?,
                    None => data_dir.join(SOCKET),
                };
                let listener = listen(&socket).await?;
                eprintln!("\nSocle agent is up: unix:{} (accelerator {accel}, state in {})\n", socket.display(), state.display());
                (tokio::spawn(socle_agent_api::server::serve_unix(agent, listener)), Some(socket))
            }
        };
        tokio::select! {
            result = served => {
                result.context("the agent's server stopped")?.context("the agent's listener failed")?;
            }
            _ = crate::up::shutdown_signal() => {}
        }
        if let Some(socket) = socket {
            let _ = std::fs::remove_file(&socket);
        }
        tracing::info!("stopped; guests keep running and are taken back at the next start");
        Ok(())
    })
}

/// Starts the agent on `data_dir` and serves it on `DATA/agent.sock`; a
/// client of it, and the accelerator it chose.
/// `net_prefix`: tenant networks under that prefix, or none.
pub async fn start_in_process(data_dir: &Path, accel: AccelChoice, net_prefix: Option<&str>) -> anyhow::Result<(HostClient, String)> {
    let agent = start(data_dir, accel, net_prefix).await?;
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

pub(crate) async fn start(data_dir: &Path, accel: AccelChoice, net_prefix: Option<&str>) -> anyhow::Result<Agent> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)
        .with_context(|| format!("cannot create the data dir {}", data_dir.display()))?;
    let mut cfg = AgentConfig::new(data_dir.join("agent"));
    cfg.accel = accel;
    cfg.host_id = host_id(data_dir)?;
    // `DATA/net`: where the all-in-one's networks always lived.
    cfg.network = net_prefix.map(|prefix| socle_agent::NetworkConfig { dir: data_dir.join("net"), prefix: prefix.to_string() });
    Agent::new(cfg).await.context("cannot start the host agent")
}

/// The host's ID: the one it was given when it joined a cloud, else the
/// one it made at its first start (kept in `DATA/agent/host-id`), so that
/// the control plane of `socle up` knows the same host after a restart.
fn host_id(data_dir: &Path) -> anyhow::Result<String> {
    if let Some(host) = crate::join::joined(&data_dir.join("tls"))? {
        return Ok(host.host_id);
    }
    let path = data_dir.join("agent").join("host-id");
    match std::fs::read_to_string(&path) {
        Ok(id) => Ok(socle_types::ids::HostId::parse(id.trim()).with_context(|| format!("corrupt {}", path.display()))?.to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = socle_types::ids::HostId::generate().to_string();
            std::fs::create_dir_all(data_dir.join("agent")).with_context(|| format!("cannot create {}", data_dir.join("agent").display()))?;
            socle_control::startup::write_atomic(&path, id.as_bytes(), 0o600).with_context(|| format!("cannot write {}", path.display()))?;
            Ok(id)
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
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

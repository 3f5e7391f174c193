//! `socle up`: control plane + host agent + state (SQLite in the data dir, or
//! a PostgreSQL database) on this machine; `socle server`: the same without
//! a host agent of its own, for a cloud whose hosts all joined.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use socle_agent::AccelChoice;
use socle_control::startup::{ensure_default_credentials, open_cloud};
use socle_control::config::Ipv4Net;
use socle_control::CloudConfig;

use crate::StateArgs;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8700";

#[derive(clap::Args)]
pub struct UpArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Hardware accelerator for guests: auto probes KVM with a real guest and
    /// falls back to TCG (software) when KVM cannot run it.
    #[arg(long, default_value = "auto", env = "SOCLE_ACCEL")]
    accel: AccelChoice,
    /// Drive the host agent already serving at this endpoint (`unix:PATH`,
    /// see `socle agent`) instead of starting one in this process.
    #[arg(long, env = "SOCLE_AGENT")]
    agent: Option<String>,
}

/// What `socle up` and `socle server` share: the API, the state, the
/// cloud's settings.
#[derive(clap::Args)]
pub struct ServerArgs {
    #[command(flatten)]
    state: StateArgs,
    /// Address the API listens on.
    #[arg(long, default_value = DEFAULT_LISTEN, env = "SOCLE_LISTEN")]
    listen: SocketAddr,
    /// Region name this cloud answers as.
    #[arg(long, default_value = "eu-west-2")]
    region: String,
    /// Seconds a graceful stop (ACPI power button) may take before the VM is powered off.
    #[arg(long, default_value_t = 30)]
    stop_timeout: u64,
    /// Seconds terminated VMs stay visible in ReadVms.
    #[arg(long, default_value_t = 3600)]
    terminated_retention: u64,
    /// Storage pool size in GiB: volumes and snapshots (at their full size) must fit in it.
    #[arg(long, default_value_t = 1024)]
    storage_capacity_gib: i64,
    /// Guest vCPUs a host may carry per logical CPU it has.
    #[arg(long, default_value_t = socle_control::config::Overcommit::default().vcpus)]
    cpu_overcommit: f64,
    /// Guest memory a host may promise per unit of memory it has.
    #[arg(long, default_value_t = socle_control::config::Overcommit::default().memory)]
    memory_overcommit: f64,
    /// Prefix of the namespaces, taps, veths and nftables tables of this
    /// cloud's networks (1-6 lowercase letters/digits; differ per cloud on one host).
    #[arg(long, default_value = "socle", env = "SOCLE_NET_PREFIX")]
    net_prefix: String,
    /// Addresses for the uplinks of networks with internet access (a /31 each),
    /// used only on this host [default: 169.254.0.0/17, or a free /17 of
    /// 169.254.0.0/16 or 100.64.0.0/10 when the host routes part of it].
    /// A range the host routes is refused.
    #[arg(long)]
    uplink_range: Option<Ipv4Net>,
    /// The public IPs CreatePublicIp hands out: comma-separated IPv4 ranges
    /// (or single addresses), used lowest first. Addresses must be routed to
    /// this host, and not be of a network it uses itself [default:
    /// 198.18.0.0/24, of the RFC 2544 benchmark range, never routed on the
    /// internet; another /24 of 198.18.0.0/15 when the host routes it].
    #[arg(long, value_delimiter = ',', env = "SOCLE_PUBLIC_IP_POOL")]
    public_ip_pool: Vec<Ipv4Net>,
}

/// The defaults of `--uplink-range` and `--public-ip-pool`, and where to look
/// for a free range of the same size when the host routes part of them.
const DEFAULT_UPLINKS: (&str, &[&str]) = ("169.254.0.0/17", &["169.254.0.0/16", "100.64.0.0/10"]);
const DEFAULT_POOL: (&str, &[&str]) = ("198.18.0.0/24", &["198.18.0.0/15"]);

/// The uplink range and public IP pool: never a network the host uses. A
/// range given explicitly that overlaps one of the host's routes is refused,
/// naming the route; a default that does is replaced by a free range of
/// its size, and `socle up` says which.
fn host_ranges(uplink_range: Option<Ipv4Net>, public_ip_pool: &[Ipv4Net], prefix: &str) -> anyhow::Result<(Ipv4Net, Vec<Ipv4Net>)> {
    use socle_net::host_ranges::{free_range, host_routes, overlap};
    let routes = host_routes(prefix).context("cannot read this host's routes")?;
    let choose = |flag: &str, explicit: Option<Ipv4Net>, (default, spaces): (&str, &[&str])| -> anyhow::Result<Ipv4Net> {
        if let Some(range) = explicit {
            if let Some(route) = overlap(&routes, &range) {
                bail!("{flag} {range} overlaps this host's route `{}`: the host uses those addresses; give a range it does not route", route.shown);
            }
            return Ok(range);
        }
        let default: Ipv4Net = default.parse().expect("a valid default");
        let Some(route) = overlap(&routes, &default) else { return Ok(default) };
        let spaces: Vec<Ipv4Net> = spaces.iter().map(|s| s.parse().expect("a valid range")).collect();
        let free = free_range(&routes, &spaces, default.prefix_len())
            .ok_or_else(|| anyhow!("the default {flag} {default} overlaps this host's route `{}` and no free range of its size is left: give {flag}", route.shown))?;
        eprintln!("socle up: the default {flag} {default} overlaps this host's route `{}`: using {free} instead", route.shown);
        Ok(free)
    };
    let uplinks = choose("--uplink-range", uplink_range, DEFAULT_UPLINKS)?;
    let pool = if public_ip_pool.is_empty() {
        vec![choose("--public-ip-pool", None, DEFAULT_POOL)?]
    } else {
        for range in public_ip_pool {
            choose("--public-ip-pool", Some(*range), DEFAULT_POOL)?;
        }
        public_ip_pool.to_vec()
    };
    Ok((uplinks, pool))
}

/// The host agent of a server's own machine.
enum LocalAgent {
    /// Started inside the process (`socle up`).
    InProcess(AccelChoice),
    /// Already serving on this machine (`socle up --agent unix:PATH`).
    Unix(String),
    /// None (`socle server`): every host joined.
    None,
}

pub fn run(args: UpArgs) -> anyhow::Result<()> {
    crate::init_logs();
    let local = match args.agent {
        Some(endpoint) => LocalAgent::Unix(endpoint),
        None => LocalAgent::InProcess(args.accel),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(serve(args.server, local))
}

/// `socle server`.
pub fn run_server(args: ServerArgs) -> anyhow::Result<()> {
    crate::init_logs();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(serve(args, LocalAgent::None))
}

async fn serve(args: ServerArgs, local: LocalAgent) -> anyhow::Result<()> {
    let name = if matches!(local, LocalAgent::None) { "socle server" } else { "socle up" };
    let data_dir = args.state.dir.resolve();
    // Bind first: a busy port should fail in a second, not after the image build.
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let host = if addr.ip().is_unspecified() { "127.0.0.1".to_string() } else { addr.ip().to_string() };
    let endpoint = format!("http://{host}:{}/api/v1", addr.port());

    let mut config = CloudConfig::new(data_dir.clone(), endpoint.clone());
    config.database = args.state.database.clone();
    config.region = args.region;
    config.stop_timeout = Duration::from_secs(args.stop_timeout);
    config.terminated_retention = Duration::from_secs(args.terminated_retention);
    config.storage_capacity_gib = args.storage_capacity_gib;
    if !(args.cpu_overcommit > 0.0 && args.memory_overcommit > 0.0) {
        anyhow::bail!("--cpu-overcommit and --memory-overcommit must be above 0");
    }
    config.overcommit = socle_control::config::Overcommit { vcpus: args.cpu_overcommit, memory: args.memory_overcommit };
    // Tenant networks need namespaces, taps and nftables: root only, on
    // the hosts. A server without an agent wires nothing itself: its hosts'
    // agents say whether they can.
    if unsafe { libc::geteuid() } == 0 || matches!(local, LocalAgent::None) {
        let (uplink_range, public_ip_pool) = host_ranges(args.uplink_range, &args.public_ip_pool, &args.net_prefix)?;
        config.network = Some(socle_control::NetworkConfig { prefix: args.net_prefix.clone(), uplink_range });
        config.public_ip_pool = public_ip_pool;
    } else {
        eprintln!("{name}: not running as root, so VMs get no network (their NICs exist in the API only)");
        config.network = None;
        if !args.public_ip_pool.is_empty() {
            config.public_ip_pool = args.public_ip_pool.clone();
        }
    }
    let (agent, accel) = match &local {
        LocalAgent::Unix(endpoint) => {
            let client = socle_agent_api::HostClient::unix(crate::agent::unix_endpoint(endpoint)?);
            let info = socle_agent_api::Host::host_info(&client).await.with_context(|| format!("cannot reach the agent at {endpoint}"))?;
            (Some(client), format!("accelerator {}", info.accel))
        }
        LocalAgent::InProcess(accel) => {
            let (client, accel) = crate::agent::start_in_process(&data_dir, *accel, config.network.as_ref().map(|n| n.prefix.as_str())).await?;
            (Some(client), format!("accelerator {accel}"))
        }
        LocalAgent::None => (None, "no host agent here: VMs go to the hosts that joined".to_string()),
    };
    let agent = agent.map(|a| {
        let endpoint = a.endpoint();
        (Arc::new(a) as Arc<dyn socle_agent_api::Host>, endpoint)
    });
    let cloud = open_cloud(config, agent).await.context("cannot bring the cloud up")?;
    let creds_path = ensure_default_credentials(&cloud).context("cannot write the default credentials")?;

    let reconciler = tokio::spawn(socle_control::reconciler::run(cloud.clone()));
    // Hosts that joined with `socle agent --join`: ready or unreachable.
    let host_watch = tokio::spawn(socle_control::hosts::watch(cloud.clone()));
    let app = socle_api::service(cloud.clone());
    eprintln!(
        "\nSocle is up: API {endpoint} ({}, data in {}, state in {})\n\
         Credentials of the default account: {}\n\
         Try: socle vm create --data-dir {}   or   socle api ReadVms --data-dir {}\n",
        accel,
        data_dir.display(),
        if args.state.database.is_some() { "PostgreSQL" } else { "SQLite" },
        creds_path.display(),
        data_dir.display(),
        data_dir.display(),
    );
    axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await?;
    reconciler.abort();
    // Another server on the database takes over at once.
    cloud.lease.release(&cloud.store).await;
    host_watch.abort();
    tracing::info!("stopped; guests keep running and are re-attached at the next start");
    Ok(())
}

pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}

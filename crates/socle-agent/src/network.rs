//! Tenant networks on this host. The control plane compiles each network's
//! share of this host (its ports here, its subnets, routes, rules, uplink)
//! into a `NetSpec` and pushes it with the metadata documents of the
//! guests on it; the agent makes the kernel match with socle-net's driver
//! (namespace, bridge, dnsmasq, nftables) and serves those documents at
//! 169.254.169.254 inside the network's namespace.
//!
//! The control plane's database is the truth; the agent keeps nothing of a
//! spec but what the driver writes. A network present on the host but
//! never applied by this run of the agent (it restarted) keeps working
//! except for its metadata until the control plane applies it again, which
//! it does when the agent's boot ID ([`HostNets::boot_id`]) changes.

use std::collections::HashMap;
use std::net::SocketAddrV4;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use socle_agent_api::{faults, GuestMetadata, HostNets};
use socle_net::{NetDriver, NetSpec, METADATA_IP};
use tokio::task::JoinHandle;

use crate::metadata::{self, Guests};
use crate::{Agent, AgentError};

pub(crate) struct HostNetwork {
    driver: Arc<NetDriver>,
    vms_dir: PathBuf,
    /// The networks this run applied: their guests' documents and the
    /// metadata listener serving them. One apply or destroy at a time.
    served: tokio::sync::Mutex<HashMap<String, Served>>,
}

struct Served {
    guests: Guests,
    listener: JoinHandle<()>,
}

impl HostNetwork {
    /// The driver keeps its files in `state_dir/../net` (beside the agent's
    /// state, where the all-in-one always kept them) and names everything
    /// with `prefix`.
    pub(crate) fn new(net_dir: PathBuf, prefix: &str, vms_dir: PathBuf) -> Result<HostNetwork, AgentError> {
        let driver = NetDriver::new(net_dir, prefix)?.with_checkpoint(faults::point);
        Ok(HostNetwork { driver: Arc::new(driver), vms_dir, served: Default::default() })
    }
}

/// Runs a driver call (synchronous: it runs `ip`, `nft`…) off the runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, socle_net::NetError> + Send + 'static,
) -> Result<T, AgentError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => Ok(r?),
        Err(e) => Err(AgentError::Network(format!("network task failed: {e}"))),
    }
}

impl Agent {
    fn network(&self) -> Result<&HostNetwork, AgentError> {
        self.inner.network.as_ref().ok_or(AgentError::NetworkingOff)
    }

    /// See [`socle_agent_api::Host::apply_net`].
    pub async fn apply_net(&self, spec: NetSpec, guests: Vec<GuestMetadata>) -> Result<Vec<String>, AgentError> {
        let net = self.network()?;
        let twice = metadata::ambiguous(&guests);
        if !twice.is_empty() {
            return Err(AgentError::InvalidArgument(format!("network {}: metadata documents claim {twice:?} more than once", spec.net_id)));
        }
        let mut served = net.served.lock().await;
        let (driver, s) = (net.driver.clone(), spec.clone());
        let report = blocking(move || driver.apply(&s)).await?;
        // Crash tests: wired on the host, its metadata not served yet (the
        // control plane applies again after the restart).
        faults::point("network-applied");
        let key = spec.net_id.clone();
        match served.get(&key).filter(|s| !s.listener.is_finished()) {
            Some(s) => *s.guests.write().expect("metadata documents lock") = guests,
            None => {
                let (driver, k) = (net.driver.clone(), key.clone());
                let addr = SocketAddrV4::new(METADATA_IP, 80);
                let listener = blocking(move || driver.listen_tcp_in(&k, addr)).await?;
                let guests: Guests = Arc::new(RwLock::new(guests));
                let task = tokio::spawn(metadata::serve(key.clone(), listener, guests.clone(), net.vms_dir.clone()));
                served.insert(key.clone(), Served { guests, listener: task });
            }
        }
        tracing::info!(net = %key, ports = spec.ports.len(), missing = ?report.missing_ports, "network applied");
        Ok(report.missing_ports)
    }

    /// See [`socle_agent_api::Host::destroy_net`].
    pub async fn destroy_net(&self, net_id: &str) -> Result<(), AgentError> {
        let net = self.network()?;
        let mut served = net.served.lock().await;
        if let Some(s) = served.remove(net_id) {
            s.listener.abort();
        }
        let (driver, k) = (net.driver.clone(), net_id.to_string());
        blocking(move || driver.destroy(&k)).await?;
        tracing::info!(net = %net_id, "network removed from the host");
        Ok(())
    }

    /// See [`socle_agent_api::Host::list_nets`].
    pub async fn list_nets(&self) -> Result<HostNets, AgentError> {
        let net = self.network()?;
        let driver = net.driver.clone();
        let nets = blocking(move || driver.list_nets()).await?;
        Ok(HostNets { boot_id: self.inner.boot_id.clone(), nets })
    }

    /// See [`socle_agent_api::Host::prepare_tap`].
    pub async fn prepare_tap(&self, ifname: &str) -> Result<(), AgentError> {
        let driver = self.network()?.driver.clone();
        let tap = ifname.to_string();
        blocking(move || driver.prepare_tap(&tap)).await
    }

    /// See [`socle_agent_api::Host::remove_tap`].
    pub async fn remove_tap(&self, ifname: &str) -> Result<(), AgentError> {
        let driver = self.network()?.driver.clone();
        let tap = ifname.to_string();
        blocking(move || driver.remove_tap(&tap)).await
    }
}

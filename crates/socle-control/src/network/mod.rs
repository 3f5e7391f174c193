//! Tenant networking: the compiler from rows to each host's share of every
//! network (a `NetSpec` and the metadata documents of its guests there),
//! and the pass that pushes them to the hosts' agents, which apply them
//! with the host driver (socle-net) and serve the metadata.
//!
//! The database is the truth; the hosts follow it. A pass asks every host
//! which networks it has, compiles, applies those whose share changed
//! since this process last applied it there (or that were never applied to
//! this run of the host's agent: a restart of either side re-applies
//! all), and destroys the networks present on a host that the database no
//! longer wires there. Uplink slots are freed by the compilation, once a
//! network is neither wired nor on any host.
//! The agent's `apply_net` and `destroy_net` are idempotent and converge
//! from any partial state, so a crash anywhere is repaired by the next
//! pass (fault points: `network-applied` in the agent, `net-half-destroyed`
//! inside the driver's destroy, `network-destroyed`;
//! crates/socle/tests/networking_faults.rs).

pub(crate) mod compile;
mod guests;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use socle_agent_api::{GuestMetadata, Host, HostError, HostNets};
use socle_net::NetSpec;
use socle_store::nics::NicRow;
use socle_types::ids::HostId;
use socle_types::ApiError;

use crate::config::NetworkConfig;
use crate::{faults, Cloud};

pub(crate) use compile::tap_name;

pub struct Network {
    pub(crate) cfg: NetworkConfig,
    state: tokio::sync::Mutex<State>,
}

#[derive(Default)]
struct State {
    /// What this process last applied, by host.
    hosts: HashMap<HostId, Applied>,
}

/// What this process applied to one run of a host's agent.
#[derive(Default)]
struct Applied {
    boot_id: String,
    nets: HashMap<String, (NetSpec, Vec<GuestMetadata>)>,
}

impl Network {
    pub fn new(cfg: NetworkConfig) -> Network {
        Network { cfg, state: Default::default() }
    }

    /// The tap of `nic` (on its VM's host).
    pub(crate) fn tap_of(&self, nic: &NicRow) -> String {
        tap_name(&self.cfg.prefix, &nic.nic_id)
    }

    /// Has `host` create the tap QEMU will open for `nic` (root namespace).
    pub(crate) async fn prepare_tap(&self, host: &dyn Host, nic: &NicRow) -> Result<String, NetworkError> {
        let tap = self.tap_of(nic);
        host.prepare_tap(tap.clone()).await?;
        Ok(tap)
    }

    pub(crate) async fn remove_tap(&self, host: &dyn Host, nic: &NicRow) -> Result<(), NetworkError> {
        Ok(host.remove_tap(self.tap_of(nic)).await?)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("network compiler: {}", .0.internal.clone().unwrap_or_else(|| .0.details.clone()))]
    Compile(ApiError),
    #[error("host agent: {0}")]
    Host(#[from] HostError),
}

/// Holds off network passes while a VM starts: a pass must not move a tap
/// into its namespace before QEMU has opened it (QEMU opens taps by name,
/// in the root namespace; it would create a new, unwired one instead).
pub(crate) struct StartGuard<'a> {
    net: &'a Network,
    state: tokio::sync::MutexGuard<'a, State>,
}

impl Network {
    pub(crate) async fn hold_passes(&self) -> StartGuard<'_> {
        StartGuard { net: self, state: self.state.lock().await }
    }
}

impl StartGuard<'_> {
    /// After QEMU opened the taps: applies now (re-applying `keys` even if
    /// their specs did not change, to move the new taps in), then lets
    /// passes run again.
    pub(crate) async fn wire(mut self, cloud: &Arc<Cloud>, keys: &[String]) -> Result<(), NetworkError> {
        for applied in self.state.hosts.values_mut() {
            for k in keys {
                applied.nets.remove(k);
            }
        }
        pass_locked(cloud, self.net, &mut self.state).await
    }
}

/// One pass: make the host match the database. Passes never overlap.
pub(crate) async fn pass(cloud: &Arc<Cloud>) -> Result<(), NetworkError> {
    let Some(net) = &cloud.network else { return Ok(()) };
    let mut state = net.state.lock().await;
    pass_locked(cloud, net, &mut state).await
}

/// A failed pass marks the networks dirty, so that the reconciler retries
/// it whoever ran it (its own pass, a VM start, a NIC hot-plug).
async fn pass_locked(cloud: &Arc<Cloud>, net: &Network, state: &mut State) -> Result<(), NetworkError> {
    let result = apply_all(cloud, net, state).await;
    if result.is_err() {
        cloud.network_changed();
    }
    result
}

async fn apply_all(cloud: &Arc<Cloud>, net: &Network, state: &mut State) -> Result<(), NetworkError> {
    let rows = cloud.store.read(socle_store::hosts::list).await.map_err(|e| NetworkError::Compile(e.into()))?;
    let mut failed = None;
    // What each host has. A host that does not answer keeps what it has;
    // its networks keep their uplink slots meanwhile.
    let mut listed: Vec<(HostId, Arc<dyn Host>, HostNets)> = vec![];
    let mut on_hosts = BTreeSet::new();
    let mut complete = true;
    for row in rows.into_iter().filter(|h| h.state != "revoked") {
        let answer = match cloud.hosts.client(&row) {
            Ok(client) => client.list_nets().await.map(|nets| (client, nets)),
            Err(e) => Err(e),
        };
        match answer {
            Ok((client, nets)) => {
                on_hosts.extend(nets.nets.iter().cloned());
                listed.push((row.host_id, client, nets));
            }
            Err(e) => {
                tracing::warn!(host = %row.host_id, error = %e, "cannot list the host's networks; will retry");
                complete = false;
                failed = Some(NetworkError::Host(e));
            }
        }
    }
    let (cfg, local, region) = (net.cfg.clone(), cloud.hosts.local_id().cloned(), cloud.config.region.clone());
    let mut shares = cloud
        .store
        .write(move |c| compile::compile(c, &cfg, &region, local.as_ref(), complete.then_some(&on_hosts)))
        .await
        .map_err(NetworkError::Compile)?;
    for (host_id, host, nets) in listed {
        let applied = state.hosts.entry(host_id.clone()).or_default();
        if applied.boot_id != nets.boot_id {
            // A new run of the agent: it serves no metadata yet.
            *applied = Applied { boot_id: nets.boot_id.clone(), nets: HashMap::new() };
        }
        let wanted = shares.remove(&host_id).unwrap_or_default();
        for (key, share) in &wanted {
            if applied.nets.get(key) == Some(share) {
                continue;
            }
            match host.apply_net(share.0.clone(), share.1.clone()).await {
                Ok(missing) => {
                    if !missing.is_empty() {
                        // A stopped VM's NIC: wired when it starts.
                        tracing::debug!(host = %host_id, net = %key, ?missing, "ports without their tap");
                    }
                    applied.nets.insert(key.clone(), share.clone());
                }
                Err(e) => {
                    tracing::error!(host = %host_id, net = %key, error = %e, "network apply failed; will retry");
                    applied.nets.remove(key);
                    failed = Some(e.into());
                }
            }
        }
        // Only the applies above add networks to the host, and those are
        // wanted: the list taken before them still names every one to remove.
        for key in nets.nets.into_iter().filter(|k| !wanted.contains_key(k)) {
            applied.nets.remove(&key);
            if let Err(e) = host.destroy_net(key.clone()).await {
                tracing::error!(host = %host_id, net = %key, error = %e, "network removal failed; will retry");
                failed = Some(e.into());
                continue;
            }
            // Crash tests: gone from the host, its uplink slot still taken
            // (the next compilation frees it).
            faults::point("network-destroyed");
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

//! Tenant networking on this host: the compiler from rows to `NetSpec`s,
//! the pass that applies them with the host driver (socle-net), and the
//! metadata service of every wired network.
//!
//! The database is the truth; the host follows it. A pass compiles every
//! network, applies those whose spec changed since the last apply (or that
//! were never applied by this process, so a restart re-applies all), and
//! destroys the networks present on the host that the database no longer
//! wires. Uplink slots are freed by the compilation, once a network is
//! neither wired nor on the host.
//! `NetDriver::apply` and `destroy` are idempotent and converge from any
//! partial state, so a crash anywhere is repaired by the next pass (fault
//! points: `network-applied`, `net-half-destroyed` inside the driver's
//! destroy, `network-destroyed`; crates/socle/tests/networking_faults.rs).

pub(crate) mod compile;
mod metadata;
mod metadata_interfaces;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddrV4;
use std::path::Path;
use std::sync::Arc;

use socle_net::{NetDriver, NetSpec, METADATA_IP};
use socle_store::nics::NicRow;
use socle_types::ApiError;
use tokio::task::JoinHandle;

use crate::config::NetworkConfig;
use crate::{faults, Cloud};

pub(crate) use compile::tap_name;

pub struct Network {
    pub(crate) cfg: NetworkConfig,
    driver: Arc<NetDriver>,
    state: tokio::sync::Mutex<State>,
}

#[derive(Default)]
struct State {
    /// What this process last applied, by network key.
    applied: HashMap<String, NetSpec>,
    /// The metadata listener of each wired network.
    metadata: HashMap<String, JoinHandle<()>>,
}

impl Network {
    pub fn new(cfg: NetworkConfig, data_dir: &Path) -> Result<Network, socle_net::NetError> {
        let driver = NetDriver::new(data_dir.join("net"), &cfg.prefix)?.with_checkpoint(faults::point);
        Ok(Network { cfg, driver: Arc::new(driver), state: Default::default() })
    }

    /// The tap of `nic` on this host.
    pub(crate) fn tap_of(&self, nic: &NicRow) -> String {
        tap_name(&self.cfg.prefix, &nic.nic_id)
    }

    /// Creates the tap QEMU will open for `nic` (root namespace).
    pub(crate) async fn prepare_tap(&self, nic: &NicRow) -> Result<String, NetworkError> {
        let tap = self.tap_of(nic);
        let (driver, t) = (self.driver.clone(), tap.clone());
        blocking(move || driver.prepare_tap(&t)).await?;
        Ok(tap)
    }

    pub(crate) async fn remove_tap(&self, tap: String) -> Result<(), NetworkError> {
        let driver = self.driver.clone();
        blocking(move || driver.remove_tap(&tap)).await
    }
}

/// Runs a driver call (synchronous: it runs `ip`, `nft`…) off the runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, socle_net::NetError> + Send + 'static,
) -> Result<T, NetworkError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => Ok(r?),
        Err(e) => Err(NetworkError::Task(e.to_string())),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("network compiler: {}", .0.internal.clone().unwrap_or_else(|| .0.details.clone()))]
    Compile(ApiError),
    #[error("host network driver: {0}")]
    Driver(#[from] socle_net::NetError),
    #[error("network task failed: {0}")]
    Task(String),
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
        for k in keys {
            self.state.applied.remove(k);
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
    let cfg = net.cfg.clone();
    let driver = net.driver.clone();
    let on_host: BTreeSet<String> = blocking(move || driver.list_nets()).await?.into_iter().collect();
    let listed = on_host.clone();
    let specs: BTreeMap<String, NetSpec> = cloud
        .store
        .write(move |c| {
            let specs = compile::compile(c, &cfg, &listed)?;
            Ok::<_, ApiError>(specs)
        })
        .await
        .map_err(NetworkError::Compile)?;
    let mut failed = None;
    for (key, spec) in &specs {
        if state.applied.get(key) == Some(spec) {
            continue;
        }
        let (driver, s) = (net.driver.clone(), spec.clone());
        match blocking(move || driver.apply(&s)).await {
            Ok(report) => {
                // Crash tests: wired on the host, not recorded by this
                // process (a restart re-applies every network anyway).
                faults::point("network-applied");
                if !report.missing_ports.is_empty() {
                    // A stopped VM's NIC: wired when it starts.
                    tracing::debug!(net = %key, missing = ?report.missing_ports, "ports without their tap");
                }
                tracing::info!(net = %key, ports = spec.ports.len(), "network applied");
                state.applied.insert(key.clone(), spec.clone());
                if state.metadata.get(key).is_none_or(|h| h.is_finished()) {
                    let (driver, k) = (net.driver.clone(), key.clone());
                    let addr = SocketAddrV4::new(METADATA_IP, 80);
                    let listener = blocking(move || driver.listen_tcp_in(&k, addr)).await?;
                    let task = tokio::spawn(metadata::serve(Arc::downgrade(cloud), key.clone(), listener));
                    state.metadata.insert(key.clone(), task);
                }
            }
            Err(e) => {
                tracing::error!(net = %key, error = %e, "network apply failed; will retry");
                state.applied.remove(key);
                failed = Some(e);
            }
        }
    }
    // Only the applies above add networks to the host, and those are in
    // `specs`: the list taken before them still names every one to remove.
    for key in on_host.into_iter().filter(|k| !specs.contains_key(k)) {
        if let Some(task) = state.metadata.remove(&key) {
            task.abort();
        }
        state.applied.remove(&key);
        let (driver, k) = (net.driver.clone(), key.clone());
        blocking(move || driver.destroy(&k)).await?;
        // Crash tests: gone from the host, its uplink slot still taken
        // (the next compilation frees it).
        faults::point("network-destroyed");
        tracing::info!(net = %key, "network removed from the host");
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

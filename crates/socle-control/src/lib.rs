//! Socle's control plane.
//!
//! [`Cloud`] owns the state store, the sealing key and the host agents, and
//! answers OSC operations ([`Cloud::call`]) for an already authenticated
//! caller. The HTTP layer (socle-api) authenticates and shapes replies; the
//! [`reconciler`] moves VMs on their hosts towards what users asked for.

pub mod config;
mod custody;
pub mod hosts;
mod host_registry;
pub mod hsm;
mod dispatch;
mod faults;
pub mod identity;
pub mod lease;
mod ops;
mod paging;
pub mod network;
mod nic_reconciler;
pub mod reconciler;
pub mod secrets;
mod snapshot_copies;
pub mod startup;
mod storage_reconciler;

use std::sync::Arc;

use socle_agent_api::Host;
use socle_store::Store;
use socle_types::ids::{AccountId, HostId};
use socle_types::ApiError;

pub use config::{CloudConfig, NetworkConfig};
pub use ops::image_import;
pub use socle_store::now_iso;

/// Who is calling: resolved by authentication, checked by every operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub account_id: AccountId,
    /// The access key used, when the call was signed (for audit and logs).
    pub access_key_id: Option<String>,
}

impl Caller {
    /// Who acted, for audit records: the access key ID.
    pub fn actor(&self) -> String {
        self.access_key_id.clone().unwrap_or_else(|| format!("account {}", self.account_id))
    }
}

pub struct Cloud {
    pub config: CloudConfig,
    pub store: Store,
    pub secrets: secrets::SecretBox,
    /// The hosts' agents, through the agent protocol: this server's own
    /// (uploads and platform images go there) and the joined ones.
    pub hosts: host_registry::HostRegistry,
    /// Key custody: the software keystore and the registered HSM tokens.
    pub keystores: hsm::Keystores,
    /// Wakes the reconciler after an operation changed what users want.
    pub(crate) wake: tokio::sync::Notify,
    /// Set when a change may alter a Net's data plane (NICs, addresses,
    /// rules, gateways): the network reconciler recompiles and applies.
    pub(crate) network_dirty: std::sync::atomic::AtomicBool,
    /// Host networking (None where the host cannot do it: see
    /// [`config::CloudConfig::network`]).
    pub network: Option<network::Network>,
    /// Whether this server does the background work (see [`lease`]).
    pub lease: lease::Lease,
}

impl Cloud {
    pub fn new(
        config: CloudConfig,
        store: Store,
        secrets: secrets::SecretBox,
        local_host: Option<(HostId, Arc<dyn Host>)>,
        keystores: hsm::Keystores,
        network: Option<network::Network>,
    ) -> Arc<Cloud> {
        let lease = lease::Lease::new(&config.endpoint);
        let hosts = host_registry::HostRegistry::new(local_host, config.data_dir.clone());
        Arc::new(Cloud {
            config,
            store,
            secrets,
            hosts,
            keystores,
            wake: tokio::sync::Notify::new(),
            network_dirty: std::sync::atomic::AtomicBool::new(true),
            network,
            lease,
        })
    }

    /// Runs one OSC operation for `caller` (None for the operations that
    /// need no authentication). `body` is the request's JSON object.
    pub async fn call(
        self: &Arc<Self>,
        caller: Option<&Caller>,
        operation: &str,
        body: serde_json::Value,
    ) -> Result<serde_json::Value, ApiError> {
        dispatch::call(self, caller, operation, body).await
    }

    pub(crate) fn wake_reconciler(&self) {
        self.wake.notify_one();
    }

    /// To call after committing a change that alters what a Net's hosts
    /// must do (a NIC, an address, a security group rule, a gateway, a
    /// route, a public IP): the network reconciler applies it.
    pub(crate) fn network_changed(&self) {
        self.network_dirty.store(true, std::sync::atomic::Ordering::SeqCst);
        self.wake.notify_one();
    }
}

/// The API's answer when a host agent failed an operation's request: the
/// host not answering is retryable (503, code 6); anything else is the
/// operator's to read in the log.
pub(crate) fn host_api_error(what: &str, e: socle_agent_api::HostError) -> ApiError {
    match e.kind {
        socle_agent_api::HostErrorKind::Unreachable => {
            tracing::warn!(error = %e, "{what}: host agent unreachable");
            ApiError::new(socle_types::ErrorCode::Unavailable, "the host of this resource does not answer at the moment; retry later")
        }
        _ => ApiError::internal(format!("{what}: {e}")),
    }
}

/// Operations that answer without authentication, as on Outscale (osc-cli
/// sends them unsigned).
pub fn is_anonymous_operation(operation: &str) -> bool {
    matches!(
        operation,
        "ReadRegions"
            | "ReadVmTypes"
            | "ReadPublicIpRanges"
            | "ReadLocations"
            | "ReadProductTypes"
            | "ReadPublicCatalog"
            | "ReadFlexibleGpuCatalog"
            | "ReadNetAccessPointServices"
    )
}

//! The agents this server drives, by host ID: the agent of `socle up` on
//! this machine (over its Unix socket) and the hosts that joined (over
//! mutual TLS, with the control plane's certificate). Every VM, volume and
//! snapshot names its host; the work on it goes to that host's agent.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use socle_agent_api::{Host, HostClient, HostError, HostErrorKind};
use socle_store::hosts::HostRow;
use socle_types::ids::HostId;

pub struct HostRegistry {
    /// The agent of this server's machine (`socle up`); None for `socle server`.
    local: Option<(HostId, Arc<dyn Host>)>,
    data_dir: PathBuf,
    tls: OnceLock<Arc<rustls::ClientConfig>>,
    clients: Mutex<HashMap<HostId, Arc<dyn Host>>>,
    /// The boot ID each host's agent last showed.
    boots: Mutex<HashMap<HostId, String>>,
}

impl HostRegistry {
    pub fn new(local: Option<(HostId, Arc<dyn Host>)>, data_dir: PathBuf) -> HostRegistry {
        HostRegistry { local, data_dir, tls: OnceLock::new(), clients: Mutex::default(), boots: Mutex::default() }
    }

    /// Records the boot ID `host`'s agent showed; true when it is another
    /// run than the one seen before (it restarted: what it was told in
    /// memory, such as its networks' metadata, must be told again).
    pub fn note_boot(&self, host: &HostId, boot_id: &str) -> bool {
        let mut boots = self.boots.lock().expect("host boots lock");
        boots.insert(host.clone(), boot_id.to_string()).is_some_and(|before| before != boot_id)
    }

    /// The host of this server's own agent, if it has one.
    pub fn local_id(&self) -> Option<&HostId> {
        self.local.as_ref().map(|(id, _)| id)
    }

    /// This server's own agent: uploads land on its machine.
    pub fn local(&self) -> Result<&Arc<dyn Host>, HostError> {
        self.local.as_ref().map(|(_, agent)| agent).ok_or_else(|| {
            HostError::new(HostErrorKind::Unreachable, "this server has no host agent of its own (socle server)".to_string())
        })
    }

    /// A client of `host`'s agent (made once per host and kept).
    pub fn client(&self, host: &HostRow) -> Result<Arc<dyn Host>, HostError> {
        if let Some((id, agent)) = &self.local {
            if host.host_id == *id {
                return Ok(agent.clone());
            }
        }
        if host.state == "revoked" {
            return Err(HostError::new(HostErrorKind::Unreachable, format!("host {} is revoked", host.host_id)));
        }
        let mut clients = self.clients.lock().expect("host clients lock");
        if let Some(c) = clients.get(&host.host_id) {
            return Ok(c.clone());
        }
        let client: Arc<dyn Host> = match host.endpoint.strip_prefix("unix:") {
            // Another server's own agent, on this machine.
            Some(path) => Arc::new(HostClient::unix(path)),
            None => Arc::new(HostClient::tls(host.endpoint.clone(), host.host_id.to_string(), self.control_tls()?).pinned_to(host.cert_sha256.clone())),
        };
        clients.insert(host.host_id.clone(), client.clone());
        Ok(client)
    }

    fn control_tls(&self) -> Result<Arc<rustls::ClientConfig>, HostError> {
        if let Some(tls) = self.tls.get() {
            return Ok(tls.clone());
        }
        let tls = crate::hosts::control_tls(&self.data_dir)
            .map_err(|e| HostError::internal(format!("no TLS identity to reach hosts: {}", e.internal.unwrap_or(e.details))))?;
        Ok(self.tls.get_or_init(|| tls).clone())
    }
}

impl crate::Cloud {
    /// The agent of `host` (None: a row made before hosts existed, which
    /// the start gave to the local host).
    pub(crate) async fn host(&self, host: Option<&HostId>) -> Result<Arc<dyn Host>, HostError> {
        let Some(id) = host.filter(|h| Some(*h) != self.hosts.local_id()) else {
            return Ok(self.hosts.local()?.clone());
        };
        let lookup = id.clone();
        let row = self
            .read_for_host(format!("host {id}"), move |c| socle_store::hosts::get(c, &lookup))
            .await?
            .ok_or_else(|| HostError::new(HostErrorKind::Unreachable, format!("host {id} is not known")))?;
        self.hosts.client(&row)
    }

    /// The agent of the host a VM lives on.
    pub(crate) async fn host_of_vm(&self, vm: &socle_types::ids::VmId) -> Result<Arc<dyn Host>, HostError> {
        let lookup = vm.clone();
        let host = self.read_for_host(format!("VM {vm}"), move |c| socle_store::vms::get_any(c, &lookup)).await?.and_then(|v| v.host_id);
        self.host(host.as_ref()).await
    }

    /// A read on the way to a host: a store failure is the host call's.
    async fn read_for_host<T: Send + 'static>(
        &self,
        what: String,
        read: impl FnOnce(&socle_store::Conn) -> socle_store::Result<T> + Send + 'static,
    ) -> Result<T, HostError> {
        self.store.read(read).await.map_err(|e| HostError::internal(format!("cannot read {what}: {e}")))
    }
}

//! The network side of a VM once it exists: what ReadVms shows of its NICs,
//! and what happens to them when the VM is gone. (CreateVms makes them:
//! `launch_nics`.)

use std::collections::HashMap;

use socle_store::nics::{self as nic_store, NicRow};
use socle_store::Conn;
use socle_types::ids::VmId;
use socle_types::osc::*;
use socle_types::ApiError;

use super::nics::{light_view, nic_view};

/// After a VM is destroyed on its host: its NICs marked DeleteOnVmDeletion
/// are deleted (with their addresses), the others become available again.
pub(crate) fn release_nics(tx: &Conn, vm_id: &VmId) -> Result<(), ApiError> {
    for mut nic in nic_store::of_vm(tx, vm_id)? {
        if nic.delete_on_vm_deletion {
            socle_store::tags::delete_all_for_resource(tx, nic.nic_id.as_str())?;
            nic_store::delete(tx, &nic.nic_id)?;
        } else {
            // A public IP given at launch goes with the VM, not the NIC.
            for p in socle_store::public_ips::of_nic(tx, &nic.nic_id)?.into_iter().filter(|p| p.auto) {
                socle_store::public_ips::delete(tx, &p.public_ip_id)?;
            }
            nic.state = "available".into();
            nic.vm_id = None;
            nic.device_number = None;
            nic.link_nic_id = None;
            nic.linked_at = None;
            nic_store::update(tx, &nic)?;
        }
    }
    Ok(())
}

/// What ReadVms shows of a VM's network.
#[derive(Debug, Clone, Default)]
pub(crate) struct VmNetworkView {
    pub nics: Vec<NicLight>,
    pub net_id: Option<String>,
    pub subnet_id: Option<String>,
    pub private_ip: Option<String>,
    pub private_dns_name: Option<String>,
    pub security_groups: Vec<SecurityGroupLight>,
    pub is_source_dest_checked: bool,
    pub public_ip: Option<String>,
    pub public_dns_name: Option<String>,
}

impl VmNetworkView {
    pub(crate) fn apply_to(&self, vm: &mut Vm) {
        vm.nics = Some(self.nics.clone());
        vm.net_id = self.net_id.clone();
        vm.subnet_id = self.subnet_id.clone();
        vm.private_ip = self.private_ip.clone();
        vm.private_dns_name = self.private_dns_name.clone();
        vm.security_groups = Some(self.security_groups.clone());
        vm.is_source_dest_checked = Some(self.is_source_dest_checked);
        vm.public_ip = self.public_ip.clone();
        vm.public_dns_name = self.public_dns_name.clone();
    }
}

/// `ip-10-0-1-4.<region>.compute.internal`, as Outscale names addresses.
pub(crate) fn private_dns_name(ip: &str, region: &str) -> String {
    format!("ip-{}.{region}.compute.internal", ip.replace('.', "-"))
}

/// The network views of `vms`, by VM id (a VM without NIC has none).
pub(crate) fn vm_network_views(conn: &Conn, vms: &[VmId], region: &str) -> Result<HashMap<VmId, VmNetworkView>, ApiError> {
    let mut nics = vec![];
    for vm in vms {
        nics.extend(nic_store::of_vm(conn, vm)?);
    }
    views_of(conn, nics, region)
}

/// The network view of one VM (None: it has no NIC).
pub(crate) fn vm_network_view(conn: &Conn, vm: &VmId, region: &str) -> Result<Option<VmNetworkView>, ApiError> {
    Ok(views_of(conn, nic_store::of_vm(conn, vm)?, region)?.remove(vm))
}

fn views_of(conn: &Conn, mut nics: Vec<NicRow>, region: &str) -> Result<HashMap<VmId, VmNetworkView>, ApiError> {
    let mut out: HashMap<VmId, VmNetworkView> = HashMap::new();
    nics.sort_by_key(|n| n.device_number);
    for nic in nics {
        let Some(vm_id) = nic.vm_id.clone() else { continue };
        let full = nic_view(conn, &nic, region, vec![])?;
        let view = out.entry(vm_id).or_default();
        if nic.device_number == Some(0) {
            view.net_id = full.net_id.clone();
            view.subnet_id = full.subnet_id.clone();
            view.private_ip = full.private_ips.iter().flatten().find(|p| p.is_primary == Some(true)).and_then(|p| p.private_ip.clone());
            view.private_dns_name = full.private_dns_name.clone();
            view.security_groups = full.security_groups.clone().unwrap_or_default();
            view.is_source_dest_checked = nic.source_dest_check;
            view.public_ip = full.link_public_ip.as_ref().and_then(|p| p.public_ip.clone());
            view.public_dns_name = full.link_public_ip.as_ref().and_then(|p| p.public_dns_name.clone());
        }
        view.nics.push(light_view(full));
    }
    Ok(out)
}

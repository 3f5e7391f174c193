//! The network side of a VM: the primary NIC CreateVms makes (in a subnet,
//! or on the account's public-cloud network when no subnet is given, as on
//! Outscale), what ReadVms shows of a VM's NICs, and what happens to the
//! NICs when the VM is gone.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use socle_store::nets::SubnetRow;
use socle_store::nics::{self as nic_store, NicRow};
use socle_store::security_groups as sg_store;
use socle_store::{now_iso, Connection, Transaction};
use socle_types::ids::{AccountId, LinkNicId, SecurityGroupId, SubnetId, VmId};
use socle_types::osc::*;
use socle_types::ApiError;

use super::nics::{groups_view, new_nic, NewNic};
use super::public_ips::link_public_ip_view;
use super::security_groups::group_not_found;
use super::subnets::owned_subnet;

/// Where CreateVms puts the primary NIC of its VMs, parsed from the request.
#[derive(Debug, Clone)]
pub(crate) struct LaunchNetwork {
    subnet_id: Option<SubnetId>,
    group_ids: Vec<SecurityGroupId>,
    group_names: Vec<String>,
    private_ips: Vec<Ipv4Addr>,
}

/// A [`LaunchNetwork`] checked against the database.
pub(crate) struct ResolvedNetwork {
    subnet: Option<SubnetRow>,
    groups: Vec<SecurityGroupId>,
    private_ips: Vec<Ipv4Addr>,
}

impl LaunchNetwork {
    /// `max_vms`: PrivateIps names the primary address of one VM only.
    pub(crate) fn parse(req: &CreateVmsRequest, max_vms: i64) -> Result<LaunchNetwork, ApiError> {
        let subnet_id = req.subnet_id.as_deref().map(SubnetId::parse).transpose()?;
        let group_ids = req
            .security_group_ids
            .iter()
            .flatten()
            .map(|g| SecurityGroupId::parse(g))
            .collect::<Result<Vec<_>, _>>()?;
        let group_names = req.security_groups.clone().unwrap_or_default();
        let private_ips = req
            .private_ips
            .iter()
            .flatten()
            .map(|ip| ip.parse::<Ipv4Addr>().map_err(|_| ApiError::invalid_value(format!("PrivateIps: {ip:?} is not an IPv4 address"))))
            .collect::<Result<Vec<_>, _>>()?;
        if !private_ips.is_empty() {
            if subnet_id.is_none() {
                return Err(ApiError::invalid_value("PrivateIps needs a SubnetId (public-cloud addresses are allocated by the cloud)"));
            }
            if max_vms > 1 {
                return Err(ApiError::invalid_value("PrivateIps can only be given when launching one VM (MaxVmsCount 1)"));
            }
            if private_ips.len() > 1 {
                return Err(ApiError::invalid_value("PrivateIps: give the primary address only (add others with LinkPrivateIps)"));
            }
        }
        Ok(LaunchNetwork { subnet_id, group_ids, group_names, private_ips })
    }

    /// Checks the subnet and groups as the caller's and returns them with
    /// the subregion the VMs go to (the subnet's; a different Placement is
    /// refused).
    pub(crate) fn resolve(
        &self,
        tx: &Transaction,
        account: &AccountId,
        placement: Option<&str>,
        default_subregion: &str,
    ) -> Result<(ResolvedNetwork, String), ApiError> {
        let subnet = self.subnet_id.as_ref().map(|id| owned_subnet(tx, account, id)).transpose()?;
        let subregion = match (&subnet, placement) {
            (Some(s), Some(p)) if p != s.subregion_name => {
                return Err(ApiError::invalid_value(format!(
                    "the subnet {} is in {}, not in the requested subregion {p}",
                    s.subnet_id, s.subregion_name
                )))
            }
            (Some(s), _) => s.subregion_name.clone(),
            (None, p) => p.unwrap_or(default_subregion).to_string(),
        };
        let net_id = subnet.as_ref().map(|s| s.net_id.clone());
        let mut groups = self.group_ids.clone();
        for name in &self.group_names {
            let g = sg_store::get_by_name(tx, account, net_id.as_ref(), name)?.ok_or_else(|| group_not_found(name))?;
            if !groups.contains(&g.security_group_id) {
                groups.push(g.security_group_id);
            }
        }
        Ok((ResolvedNetwork { subnet, groups, private_ips: self.private_ips.clone() }, subregion))
    }
}

/// Makes the VM's primary NIC (device 0, deleted with the VM).
pub(crate) fn create_primary_nic(
    tx: &Transaction,
    net: &ResolvedNetwork,
    account: &AccountId,
    vm_id: &VmId,
    subregion: &str,
) -> Result<NicRow, ApiError> {
    let mut nic = new_nic(
        tx,
        NewNic {
            account,
            subnet: net.subnet.as_ref(),
            subregion,
            description: "Primary network interface".into(),
            primary_ip: net.private_ips.first().copied(),
            secondary_ips: vec![],
            groups: net.groups.clone(),
        },
    )?;
    nic.state = "in-use".into();
    nic.vm_id = Some(vm_id.clone());
    nic.device_number = Some(0);
    nic.link_nic_id = Some(LinkNicId::generate());
    nic.delete_on_vm_deletion = true;
    nic.linked_at = Some(now_iso());
    nic_store::update(tx, &nic)?;
    Ok(nic)
}

/// After a VM is destroyed on its host: its NICs marked DeleteOnVmDeletion
/// are deleted (with their addresses), the others become available again.
pub(crate) fn release_nics(tx: &Transaction, vm_id: &VmId) -> Result<(), ApiError> {
    for mut nic in nic_store::of_vm(tx, vm_id)? {
        if nic.delete_on_vm_deletion {
            socle_store::tags::delete_all_for_resource(tx, nic.nic_id.as_str())?;
            nic_store::delete(tx, &nic.nic_id)?;
        } else {
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

/// The network views of an account's VMs, by VM id.
pub(crate) fn vm_network_views(conn: &Connection, account: &AccountId, region: &str) -> Result<HashMap<VmId, VmNetworkView>, ApiError> {
    let nics = nic_store::list(conn, account)?.into_iter().filter(|n| n.vm_id.is_some()).collect();
    views_of(conn, nics, region)
}

/// The network view of one VM (None: it has no NIC).
pub(crate) fn vm_network_view(conn: &Connection, vm: &VmId, region: &str) -> Result<Option<VmNetworkView>, ApiError> {
    Ok(views_of(conn, nic_store::of_vm(conn, vm)?, region)?.remove(vm))
}

fn views_of(conn: &Connection, mut nics: Vec<NicRow>, region: &str) -> Result<HashMap<VmId, VmNetworkView>, ApiError> {
    let mut out: HashMap<VmId, VmNetworkView> = HashMap::new();
    nics.sort_by_key(|n| n.device_number);
    for nic in nics {
        let Some(vm_id) = nic.vm_id.clone() else { continue };
        let ips = nic_store::ips_of(conn, &nic.nic_id)?;
        let groups = groups_view(conn, &nic)?;
        let primary = ips.iter().find(|p| p.is_primary).map(|p| p.ip.clone());
        let publics = socle_store::public_ips::of_nic(conn, &nic.nic_id)?;
        let public_of = |ip: &str| publics.iter().find(|p| p.private_ip.as_deref() == Some(ip)).map(link_public_ip_view);
        let nic_public = primary.as_deref().and_then(public_of);
        let view = out.entry(vm_id).or_default();
        if nic.device_number == Some(0) {
            view.net_id = nic.net_id.as_ref().map(|n| n.to_string());
            view.subnet_id = nic.subnet_id.as_ref().map(|s| s.to_string());
            view.private_ip = primary.clone();
            view.private_dns_name = primary.as_deref().map(|ip| private_dns_name(ip, region));
            view.security_groups = groups.clone();
            view.is_source_dest_checked = nic.source_dest_check;
            view.public_ip = nic_public.as_ref().and_then(|p| p.public_ip.clone());
            view.public_dns_name = nic_public.as_ref().and_then(|p| p.public_dns_name.clone());
        }
        view.nics.push(NicLight {
            account_id: Some(nic.account_id.to_string()),
            description: Some(nic.description.clone()),
            is_source_dest_checked: Some(nic.source_dest_check),
            link_nic: Some(LinkNicLight {
                delete_on_vm_deletion: Some(nic.delete_on_vm_deletion),
                device_number: nic.device_number,
                link_nic_id: nic.link_nic_id.as_ref().map(|l| l.to_string()),
                state: Some("attached".into()),
            }),
            link_public_ip: nic_public.clone(),
            mac_address: Some(nic.mac.clone()),
            net_id: nic.net_id.as_ref().map(|n| n.to_string()),
            nic_id: Some(nic.nic_id.to_string()),
            private_dns_name: primary.as_deref().map(|ip| private_dns_name(ip, region)),
            private_ips: Some(
                ips.iter()
                    .map(|p| PrivateIpLightForVm {
                        is_primary: Some(p.is_primary),
                        link_public_ip: public_of(&p.ip),
                        private_dns_name: Some(private_dns_name(&p.ip, region)),
                        private_ip: Some(p.ip.clone()),
                    })
                    .collect(),
            ),
            security_groups: Some(groups),
            state: Some(nic.state.clone()),
            subnet_id: nic.subnet_id.as_ref().map(|s| s.to_string()),
        });
    }
    Ok(out)
}

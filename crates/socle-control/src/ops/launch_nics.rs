//! The NICs CreateVms gives each VM.
//!
//! Either the simple form — `SubnetId`, `PrivateIps`, `SecurityGroupIds`,
//! `SecurityGroups` describe the primary NIC (no `SubnetId`: the account's
//! public-cloud network, as on Outscale) — or `Nics`, one entry per device
//! (0 to 7, device 0 required): an existing available NIC (`NicId`) or a new
//! one in a subnet. The two forms do not mix. All NICs of a VM share one
//! Net and one subregion, which is where the VM goes.

use std::net::Ipv4Addr;

use socle_net::Ipv4Net;
use socle_store::nets::SubnetRow;
use socle_store::nics::{self as nic_store, NicRow};
use socle_store::security_groups as sg_store;
use socle_store::{now_iso, Conn};
use socle_types::ids::{AccountId, LinkNicId, NetId, NicId, SecurityGroupId, SubnetId, VmId};
use socle_types::osc::*;
use socle_types::ApiError;

use super::nic_alloc::{new_nic, NewNic};
use super::public_ips::give_at_launch;
use super::nics::{owned_nic, parse_group_ids, parse_ips, split_private_ips};
use super::security_groups::group_not_found;
use super::subnets::owned_subnet;

/// Where CreateVms puts the NICs of its VMs, parsed from the request.
#[derive(Debug, Clone)]
pub(crate) struct LaunchNetwork {
    nics: Vec<LaunchNic>,
    /// `SecurityGroups` (names) of the simple form, resolved in the Net of
    /// the primary NIC.
    group_names: Vec<String>,
}

#[derive(Debug, Clone)]
enum LaunchNic {
    Existing { nic_id: NicId, device: i64 },
    New(NewLaunchNic),
}

#[derive(Debug, Clone)]
struct NewLaunchNic {
    device: i64,
    /// None: the public cloud (simple form only).
    subnet_id: Option<SubnetId>,
    description: String,
    primary_ip: Option<Ipv4Addr>,
    secondary_ips: Vec<Ipv4Addr>,
    secondary_count: usize,
    groups: Vec<SecurityGroupId>,
    delete_on_vm_deletion: bool,
}

/// A [`LaunchNetwork`] checked against the database.
pub(crate) struct ResolvedNetwork {
    nics: Vec<ResolvedNic>,
}

enum ResolvedNic {
    Existing { row: NicRow, device: i64 },
    New { spec: NewLaunchNic, subnet: Option<SubnetRow> },
}

impl LaunchNetwork {
    /// `max_vms`: a named address or an existing NIC serves one VM only.
    pub(crate) fn parse(req: &CreateVmsRequest, max_vms: i64) -> Result<LaunchNetwork, ApiError> {
        match req.nics.as_deref() {
            Some(nics) if !nics.is_empty() => {
                if req.subnet_id.is_some() || req.private_ips.is_some() || req.security_group_ids.is_some() || req.security_groups.is_some() {
                    return Err(ApiError::invalid_value(
                        "Nics describes every NIC of the VM: give SubnetId, PrivateIps and security groups inside it, not beside it",
                    ));
                }
                Ok(LaunchNetwork { nics: Self::parse_nics(nics, max_vms)?, group_names: vec![] })
            }
            _ => Self::parse_simple(req, max_vms),
        }
    }

    fn parse_simple(req: &CreateVmsRequest, max_vms: i64) -> Result<LaunchNetwork, ApiError> {
        let subnet_id = req.subnet_id.as_deref().map(SubnetId::parse).transpose()?;
        let private_ips = parse_ips(req.private_ips.as_deref().unwrap_or_default())?;
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
        let primary = NewLaunchNic {
            device: 0,
            subnet_id,
            description: "Primary network interface".into(),
            primary_ip: private_ips.first().copied(),
            secondary_ips: vec![],
            secondary_count: 0,
            groups: parse_group_ids(&req.security_group_ids)?,
            delete_on_vm_deletion: true,
        };
        Ok(LaunchNetwork { nics: vec![LaunchNic::New(primary)], group_names: req.security_groups.clone().unwrap_or_default() })
    }

    fn parse_nics(nics: &[NicForVmCreation], max_vms: i64) -> Result<Vec<LaunchNic>, ApiError> {
        let mut out = vec![];
        let mut devices = vec![];
        for n in nics {
            let device = n.device_number.ok_or_else(|| ApiError::missing("Nics.DeviceNumber"))?;
            if !(0..=7).contains(&device) {
                return Err(ApiError::invalid_value(format!("Nics.DeviceNumber must be between 0 and 7, got {device}")));
            }
            if devices.contains(&device) {
                return Err(ApiError::invalid_value(format!("Nics: device number {device} is given twice")));
            }
            devices.push(device);
            match (&n.nic_id, &n.subnet_id) {
                (Some(id), None) => {
                    if n.private_ips.is_some() || n.secondary_private_ip_count.is_some() || n.security_group_ids.is_some() || n.description.is_some() || n.delete_on_vm_deletion.is_some() {
                        return Err(ApiError::invalid_value(
                            "Nics: an entry with NicId links that existing NIC as it is (change it with UpdateNic); give SubnetId for a new one",
                        ));
                    }
                    if max_vms > 1 {
                        return Err(ApiError::invalid_value("Nics.NicId: an existing NIC can only go to one VM (MaxVmsCount 1)"));
                    }
                    out.push(LaunchNic::Existing { nic_id: NicId::parse(id)?, device });
                }
                (None, Some(subnet)) => {
                    let (primary_ip, secondary_ips) = split_private_ips(n.private_ips.as_deref().unwrap_or_default())?;
                    if primary_ip.is_some() && max_vms > 1 {
                        return Err(ApiError::invalid_value("Nics.PrivateIps can only be given when launching one VM (MaxVmsCount 1)"));
                    }
                    let count = n.secondary_private_ip_count.unwrap_or(0);
                    if count < 0 {
                        return Err(ApiError::invalid_value("Nics.SecondaryPrivateIpCount must be positive"));
                    }
                    if count > 0 && !secondary_ips.is_empty() {
                        return Err(ApiError::invalid_value("Nics: give secondary PrivateIps or SecondaryPrivateIpCount, not both"));
                    }
                    out.push(LaunchNic::New(NewLaunchNic {
                        device,
                        subnet_id: Some(SubnetId::parse(subnet)?),
                        description: n.description.clone().unwrap_or_default(),
                        primary_ip,
                        secondary_ips,
                        secondary_count: count as usize,
                        groups: parse_group_ids(&n.security_group_ids)?,
                        delete_on_vm_deletion: n.delete_on_vm_deletion.unwrap_or(true),
                    }));
                }
                (Some(_), Some(_)) => return Err(ApiError::invalid_value("Nics: give NicId (an existing NIC) or SubnetId (a new one), not both")),
                (None, None) => return Err(ApiError::missing("Nics.NicId or Nics.SubnetId")),
            }
        }
        if !devices.contains(&0) {
            return Err(ApiError::invalid_value("Nics: one NIC must be device 0, the VM's primary NIC"));
        }
        out.sort_by_key(|n| match n {
            LaunchNic::Existing { device, .. } => *device,
            LaunchNic::New(s) => s.device,
        });
        Ok(out)
    }

    /// Checks subnets, NICs and groups as the caller's and returns them with
    /// the subregion the VMs must go to: the NICs' (a different Placement
    /// is refused), else the Placement's, else None (placement chooses).
    pub(crate) fn resolve(
        &self,
        tx: &Conn,
        account: &AccountId,
        placement: Option<&str>,
    ) -> Result<(ResolvedNetwork, Option<String>), ApiError> {
        let mut nics = vec![];
        // (Net, subregion) of the NICs seen so far, and which NIC set them.
        let mut place: Option<(Option<NetId>, Option<String>, String)> = None;
        for n in &self.nics {
            let (resolved, net, subregion, what) = match n {
                LaunchNic::Existing { nic_id, device } => {
                    let row = owned_nic(tx, account, nic_id)?;
                    if let Some(vm) = &row.vm_id {
                        return Err(ApiError::new(
                            socle_types::error::ErrorCode::InvalidResourceState,
                            format!("the NIC {nic_id} is {} on the VM {vm}; only available NICs can be linked", row.state),
                        ));
                    }
                    let (net, subregion) = (row.net_id.clone(), row.subregion_name.clone());
                    (ResolvedNic::Existing { row, device: *device }, net, Some(subregion), format!("the NIC {nic_id}"))
                }
                LaunchNic::New(spec) => {
                    let subnet = spec.subnet_id.as_ref().map(|id| owned_subnet(tx, account, id)).transpose()?;
                    let net = subnet.as_ref().map(|s| s.net_id.clone());
                    let subregion = subnet.as_ref().map(|s| s.subregion_name.clone());
                    let what = match &subnet {
                        Some(s) => format!("the subnet {}", s.subnet_id),
                        None => "the public cloud".into(),
                    };
                    (ResolvedNic::New { spec: spec.clone(), subnet }, net, subregion, what)
                }
            };
            let subregion = subregion.or_else(|| placement.map(str::to_string));
            match &place {
                None => place = Some((net, subregion, what)),
                Some((first_net, first_subregion, first)) => {
                    if *first_net != net {
                        return Err(ApiError::invalid_value(format!("{what} and {first} are not in the same Net; a VM's NICs share one Net")));
                    }
                    if *first_subregion != subregion {
                        return Err(ApiError::invalid_value(format!(
                            "{what} is in {}, {first} in {}; a VM's NICs share one subregion",
                            subregion.as_deref().unwrap_or("the public cloud"),
                            first_subregion.as_deref().unwrap_or("the public cloud")
                        )));
                    }
                }
            }
            nics.push(resolved);
        }
        let (net, subregion, first) = place.ok_or_else(|| ApiError::internal("a launch without any NIC"))?;
        if let (Some(p), Some(s)) = (placement, subregion.as_deref()) {
            if p != s {
                return Err(ApiError::invalid_value(format!("{first} is in {s}, not in the requested subregion {p}")));
            }
        }
        // Group names of the simple form, in the Net of the primary NIC.
        if let Some(ResolvedNic::New { spec, .. }) = nics.first_mut() {
            for name in &self.group_names {
                let g = sg_store::get_by_name(tx, account, net.as_ref(), name)?.ok_or_else(|| group_not_found(name))?;
                if !spec.groups.contains(&g.security_group_id) {
                    spec.groups.push(g.security_group_id);
                }
            }
        }
        Ok((ResolvedNetwork { nics }, subregion))
    }
}

/// Makes (or links) the NICs of one VM, in device order. A new primary NIC
/// in the public cloud, or in a subnet with MapPublicIpOnLaunch, gets a
/// public IP from `pool` (as on Outscale).
pub(crate) fn create_vm_nics(
    tx: &Conn,
    net: &ResolvedNetwork,
    account: &AccountId,
    vm_id: &VmId,
    subregion: &str,
    pool: &[Ipv4Net],
) -> Result<(), ApiError> {
    for n in &net.nics {
        let (mut row, device, delete_on_vm_deletion, public_ip) = match n {
            ResolvedNic::Existing { row, device } => (row.clone(), *device, false, false),
            ResolvedNic::New { spec, subnet } => {
                let row = new_nic(
                    tx,
                    NewNic {
                        account,
                        subnet: subnet.as_ref(),
                        subregion,
                        description: spec.description.clone(),
                        primary_ip: spec.primary_ip,
                        secondary_ips: spec.secondary_ips.clone(),
                        secondary_count: spec.secondary_count,
                        groups: spec.groups.clone(),
                    },
                )?;
                let public_ip = spec.device == 0 && subnet.as_ref().is_none_or(|s| s.map_public_ip_on_launch);
                (row, spec.device, spec.delete_on_vm_deletion, public_ip)
            }
        };
        // The VM has not started: its NICs are wired when it does.
        row.state = "in-use".into();
        row.vm_id = Some(vm_id.clone());
        row.device_number = Some(device);
        row.link_nic_id = Some(LinkNicId::generate());
        row.delete_on_vm_deletion = delete_on_vm_deletion;
        row.linked_at = Some(now_iso());
        nic_store::update(tx, &row)?;
        if public_ip {
            give_at_launch(tx, &row, pool)?;
        }
    }
    Ok(())
}

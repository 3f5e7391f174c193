//! LinkNic, UnlinkNic (a NIC on and off a VM) and LinkPrivateIps,
//! UnlinkPrivateIps (secondary addresses of a NIC).
//!
//! LinkNic and UnlinkNic record the wish (`attaching` / `detaching`) and
//! return; the reconciler does the host work (hot-plug into a running VM,
//! or into its stored definition) and settles the NIC (`in-use` /
//! `available`), see `nic_reconciler`. A NIC leaves a VM only once the
//! guest released it, so its tap is never shared by two VMs.

use std::sync::Arc;

use socle_store::nics as nic_store;
use socle_store::vms as vm_store;
use socle_store::now_iso;
use socle_types::error::ErrorCode;
use socle_types::ids::{LinkNicId, NicId, VmId};
use socle_types::osc::*;
use socle_types::ApiError;

use super::nic_alloc::{claim_ip, next_free_ip, range_of, too_many_ips, MAX_IPS_PER_NIC};
use super::nics::{owned_nic, parse_ips};
use super::subnets::owned_subnet;
use super::{is_dry_run, write, write_network};
use crate::{Caller, Cloud};

/// Device numbers LinkNic accepts; 0 is the primary NIC, made with the VM.
const DEVICE_NUMBERS: std::ops::RangeInclusive<i64> = 1..=7;

pub async fn link_nic(cloud: &Arc<Cloud>, caller: &Caller, req: LinkNicRequest) -> Result<LinkNicResponse, ApiError> {
    let id = NicId::parse(&req.nic_id)?;
    let vm_id = VmId::parse(&req.vm_id)?;
    if !DEVICE_NUMBERS.contains(&req.device_number) {
        return Err(ApiError::invalid_value(format!(
            "DeviceNumber must be between 1 and 7 (0 is the VM's primary NIC), got {}",
            req.device_number
        )));
    }
    let device = req.device_number;
    let account = caller.account_id.clone();
    let link = write(cloud, req.dry_run, move |tx| {
        let mut nic = owned_nic(tx, &account, &id)?;
        let vm = vm_store::get(tx, &account, &vm_id)?.ok_or_else(|| ApiError::not_found(ErrorCode::NoSuchVm, "VM", vm_id.as_str()))?;
        if matches!(vm.state.as_str(), "shutting-down" | "terminated") {
            return Err(ApiError::new(ErrorCode::InvalidVmState, format!("the VM {vm_id} is {}", vm.state)));
        }
        if let Some(other) = &nic.vm_id {
            return Err(ApiError::new(
                ErrorCode::InvalidResourceState,
                format!("the NIC {id} is {} on the VM {other}; only available NICs can be linked", nic.state),
            ));
        }
        let on_vm = nic_store::of_vm(tx, &vm_id)?;
        let primary_net = on_vm.iter().find(|n| n.device_number == Some(0)).and_then(|n| n.net_id.clone());
        match (&primary_net, &nic.net_id) {
            (Some(vm_net), Some(nic_net)) if vm_net == nic_net => {}
            (Some(vm_net), _) => {
                return Err(ApiError::invalid_value(format!(
                    "the NIC {id} is not in the Net {vm_net} of the VM {vm_id}; a VM's NICs share its Net"
                )))
            }
            (None, _) => {
                return Err(ApiError::new(
                    ErrorCode::VmNotInNet,
                    format!("the VM {vm_id} is in the public cloud; only VMs in a Net take more NICs"),
                ))
            }
        }
        if nic.subregion_name != vm.subregion {
            return Err(ApiError::invalid_value(format!(
                "the NIC {id} is in {}, the VM {vm_id} in {}; they must be in the same subregion",
                nic.subregion_name, vm.subregion
            )));
        }
        if let Some(taken) = on_vm.iter().find(|n| n.device_number == Some(device)) {
            return Err(ApiError::new(
                ErrorCode::DeviceInUse,
                format!("device number {device} of the VM {vm_id} is taken by the NIC {}", taken.nic_id),
            ));
        }
        let link = LinkNicId::generate();
        nic.state = "attaching".into();
        nic.vm_id = Some(vm_id.clone());
        nic.device_number = Some(device);
        nic.link_nic_id = Some(link.clone());
        nic.delete_on_vm_deletion = false;
        nic.linked_at = Some(now_iso());
        nic_store::update(tx, &nic)?;
        Ok(link)
    })
    .await?;
    if is_dry_run(req.dry_run) {
        return Ok(LinkNicResponse::default());
    }
    cloud.wake_reconciler();
    Ok(LinkNicResponse { link_nic_id: Some(link.to_string()), ..Default::default() })
}

pub async fn unlink_nic(cloud: &Arc<Cloud>, caller: &Caller, req: UnlinkNicRequest) -> Result<UnlinkNicResponse, ApiError> {
    let link = LinkNicId::parse(&req.link_nic_id)?;
    let account = caller.account_id.clone();
    write(cloud, req.dry_run, move |tx| {
        let mut nic = nic_store::list(tx, &account)?
            .into_iter()
            .find(|n| n.link_nic_id.as_ref() == Some(&link))
            .ok_or_else(|| ApiError::not_found(ErrorCode::NoSuchLink, "NIC link", link.as_str()))?;
        if nic.device_number == Some(0) {
            return Err(ApiError::new(
                ErrorCode::InvalidResourceState,
                format!("the NIC {} is the primary NIC of its VM; it goes with the VM", nic.nic_id),
            ));
        }
        if nic.state != "detaching" {
            nic.state = "detaching".into();
            nic_store::update(tx, &nic)?;
        }
        Ok(())
    })
    .await?;
    if !is_dry_run(req.dry_run) {
        cloud.wake_reconciler();
    }
    Ok(UnlinkNicResponse::default())
}

pub async fn link_private_ips(cloud: &Arc<Cloud>, caller: &Caller, req: LinkPrivateIpsRequest) -> Result<LinkPrivateIpsResponse, ApiError> {
    let id = NicId::parse(&req.nic_id)?;
    let ips = parse_ips(req.private_ips.as_deref().unwrap_or_default())?;
    let count = req.secondary_private_ip_count.unwrap_or(0);
    match (ips.is_empty(), count) {
        (true, 0) => return Err(ApiError::missing("PrivateIps or SecondaryPrivateIpCount")),
        (false, c) if c != 0 => {
            return Err(ApiError::invalid_value("give PrivateIps or SecondaryPrivateIpCount, not both"));
        }
        (_, c) if c < 0 => return Err(ApiError::invalid_value("SecondaryPrivateIpCount must be positive")),
        _ => {}
    }
    let allow_relink = req.allow_relink == Some(true);
    let account = caller.account_id.clone();
    write_network(cloud, req.dry_run, move |tx| {
        let nic = owned_nic(tx, &account, &id)?;
        let subnet = match &nic.subnet_id {
            Some(s) => owned_subnet(tx, &account, s)?,
            None => {
                return Err(ApiError::new(
                    ErrorCode::VmNotInNet,
                    format!("the NIC {id} is in the public cloud; secondary addresses are for NICs in a Net"),
                ))
            }
        };
        let held = nic_store::ips_of(tx, &id)?.len();
        if held + ips.len() + count as usize > MAX_IPS_PER_NIC {
            return Err(too_many_ips(&id));
        }
        let range = range_of(Some(&subnet))?;
        let space = nic.space();
        for ip in &ips {
            match nic_store::nic_with_ip(tx, &space, &ip.to_string())? {
                Some(holder) if holder == id => continue, // already so
                Some(holder) if allow_relink => {
                    // Only a secondary address moves; a NIC keeps its primary.
                    if !nic_store::remove_secondary_ip(tx, &holder, &ip.to_string())? {
                        return Err(ApiError::new(
                            ErrorCode::AddressInUse,
                            format!("{ip} is the primary address of the NIC {holder}; it cannot move"),
                        ));
                    }
                }
                _ => {}
            }
            claim_ip(tx, &nic, range, *ip, false)?;
        }
        for _ in 0..count {
            let ip = next_free_ip(tx, &space, range)?;
            claim_ip(tx, &nic, range, ip, false)?;
        }
        Ok(())
    })
    .await?;
    Ok(LinkPrivateIpsResponse::default())
}

pub async fn unlink_private_ips(
    cloud: &Arc<Cloud>,
    caller: &Caller,
    req: UnlinkPrivateIpsRequest,
) -> Result<UnlinkPrivateIpsResponse, ApiError> {
    let id = NicId::parse(&req.nic_id)?;
    if req.private_ips.is_empty() {
        return Err(ApiError::missing("PrivateIps"));
    }
    parse_ips(&req.private_ips)?;
    let account = caller.account_id.clone();
    write_network(cloud, req.dry_run, move |tx| {
        let nic = owned_nic(tx, &account, &id)?;
        let held = nic_store::ips_of(tx, &id)?;
        for t in &req.private_ips {
            match held.iter().find(|p| p.ip == *t) {
                None => return Err(ApiError::invalid_value(format!("{t} is not an address of the NIC {}", nic.nic_id))),
                Some(p) if p.is_primary => {
                    return Err(ApiError::invalid_value(format!("{t} is the primary address of the NIC {}; it stays", nic.nic_id)))
                }
                Some(_) => {
                    // A public IP linked to it is unlinked by the database
                    // (trigger public_ips_unlink_private_ip).
                    nic_store::remove_secondary_ip(tx, &id, t)?;
                }
            }
        }
        Ok(())
    })
    .await?;
    Ok(UnlinkPrivateIpsResponse::default())
}

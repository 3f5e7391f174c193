//! The metadata documents of guests (what the agent of their host serves
//! them at 169.254.169.254), made from the database at each compilation:
//! a change that alters one (a public IP, a group) also changes the
//! network, so the document reaches the host with the network's spec.

use std::net::Ipv4Addr;

use socle_agent_api::{GuestInterface, GuestKey, GuestMetadata};
use socle_store::nics::{self as nic_store, NicRow};
use socle_store::{keypairs as keypair_store, nets as net_store, security_groups as sg_store, vms as vm_store, Conn};
use socle_types::ApiError;

use crate::ops::vm_network::private_dns_name;

/// The document of the VM `nic` is linked to, answering the NIC's
/// `addresses` (None: no such VM).
pub(super) fn document(conn: &Conn, nic: &NicRow, addresses: &[Ipv4Addr], region: &str) -> Result<Option<GuestMetadata>, ApiError> {
    let Some(vm_id) = &nic.vm_id else { return Ok(None) };
    let Some(vm) = vm_store::get_any(conn, vm_id)? else { return Ok(None) };
    let nics = nic_store::of_vm(conn, vm_id)?;
    let primary = nics.first().unwrap_or(nic);
    let local_ipv4 = nic_store::ips_of(conn, &primary.nic_id)?.into_iter().find(|p| p.is_primary).map(|p| p.ip).unwrap_or_default();
    let public_key = match &vm.keypair_name {
        Some(name) => keypair_store::get_by_name(conn, &vm.account_id, name)?.map(|k| GuestKey { name: k.name, public_key: k.public_key }),
        None => None,
    };
    let security_groups = nic_store::groups_of(conn, &primary.nic_id)?
        .iter()
        .map(|g| Ok(sg_store::get(conn, &vm.account_id, g)?.map(|g| g.name).unwrap_or_default()))
        .collect::<Result<_, ApiError>>()?;
    let public_ipv4 = socle_store::public_ips::of_nic(conn, &primary.nic_id)?
        .into_iter()
        .find(|p| p.private_ip.as_deref() == Some(local_ipv4.as_str()))
        .map(|p| p.public_ip);
    Ok(Some(GuestMetadata {
        addresses: addresses.to_vec(),
        vm_id: vm.vm_id.to_string(),
        image_id: vm.image_id.to_string(),
        vm_type: vm.vm_type.clone(),
        reservation_id: vm.reservation_id.to_string(),
        hostname: private_dns_name(&local_ipv4, region),
        local_ipv4,
        public_ipv4,
        mac: primary.mac.clone(),
        security_groups,
        subregion: vm.subregion.clone(),
        public_key,
        interfaces: interfaces(conn, &nics)?,
    }))
}

/// The `network/interfaces/macs/` entries of a VM's NICs, primary first.
fn interfaces(conn: &Conn, nics: &[NicRow]) -> Result<Vec<GuestInterface>, ApiError> {
    let mut out = vec![];
    for n in nics {
        let subnet = match &n.subnet_id {
            Some(id) => net_store::get_subnet(conn, &n.account_id, id)?.map(|s| (s.subnet_id.to_string(), s.ip_range)),
            None => None,
        };
        let net = match &n.net_id {
            Some(id) => net_store::get_net_any(conn, id)?.map(|v| (v.net_id.to_string(), v.ip_range)),
            None => None,
        };
        out.push(GuestInterface {
            mac: n.mac.clone(),
            device_number: n.device_number.unwrap_or_default(),
            nic_id: n.nic_id.to_string(),
            private_ips: nic_store::ips_of(conn, &n.nic_id)?.into_iter().map(|p| p.ip).collect(),
            public_ips: socle_store::public_ips::of_nic(conn, &n.nic_id)?.into_iter().map(|p| p.public_ip).collect(),
            group_ids: nic_store::groups_of(conn, &n.nic_id)?.iter().map(|g| g.to_string()).collect(),
            subnet,
            net,
        });
    }
    Ok(out)
}

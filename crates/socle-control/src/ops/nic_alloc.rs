//! Making NICs: their MAC, private IPs and security groups, checked and
//! allocated inside the caller's transaction.
//!
//! CreateVms (primary NICs and its `Nics`) and CreateNic both go through
//! [`new_nic`]; LinkPrivateIps through [`claim_ip`] and [`next_free_ip`].
//! The uniqueness of an address per subnet is a primary key of the
//! database (`nic_private_ips`), so two concurrent claims cannot both win.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use rand::Rng;
use socle_net::Ipv4Net;
use socle_store::nets::SubnetRow;
use socle_store::nics::{self as nic_store, NicRow};
use socle_store::security_groups as sg_store;
use socle_store::{now_iso, Conn};
use socle_types::error::ErrorCode;
use socle_types::ids::{AccountId, NicId, SecurityGroupId};
use socle_types::ApiError;

use super::security_groups::{ensure_default_group, group_not_found};

/// The private range of every account's public-cloud network (VMs launched
/// without a subnet). Each account's is its own, in its own namespace, so
/// they may all use the same range.
pub(crate) fn public_cloud_range() -> Ipv4Net {
    Ipv4Net::new(Ipv4Addr::new(10, 0, 0, 0), 16).expect("10.0.0.0/16 is a valid range")
}

/// Addresses below this index of a subnet are reserved (network, gateway,
/// two for services); the last one is the broadcast address.
const FIRST_USABLE: u32 = 4;

/// Private IPs a NIC may hold, the primary included.
pub(crate) const MAX_IPS_PER_NIC: usize = 10;

/// What a new NIC is made of; addresses and groups are checked by [`new_nic`].
pub(crate) struct NewNic<'a> {
    pub account: &'a AccountId,
    /// None: the account's public-cloud network.
    pub subnet: Option<&'a SubnetRow>,
    pub subregion: &'a str,
    pub description: String,
    /// The primary address first; None: the lowest free one.
    pub primary_ip: Option<Ipv4Addr>,
    pub secondary_ips: Vec<Ipv4Addr>,
    /// Further secondary addresses, the lowest free ones.
    pub secondary_count: usize,
    /// Empty: the default group of the Net (or of the public cloud).
    pub groups: Vec<SecurityGroupId>,
}

/// The range NICs of `subnet` take addresses from.
pub(crate) fn range_of(subnet: Option<&SubnetRow>) -> Result<Ipv4Net, ApiError> {
    match subnet {
        Some(s) => s.ip_range.parse().map_err(|e| ApiError::internal(format!("stored subnet range {}: {e}", s.ip_range))),
        None => Ok(public_cloud_range()),
    }
}

/// Creates the NIC row with its addresses and groups (state `available`).
pub(crate) fn new_nic(tx: &Conn, n: NewNic<'_>) -> Result<NicRow, ApiError> {
    let net_id = n.subnet.map(|s| s.net_id.clone());
    let groups = if n.groups.is_empty() {
        vec![ensure_default_group(tx, n.account, net_id.as_ref())?]
    } else {
        check_groups(tx, n.account, net_id.as_ref(), &n.groups)?;
        n.groups
    };
    let row = NicRow {
        nic_id: NicId::generate(),
        account_id: n.account.clone(),
        net_id,
        subnet_id: n.subnet.map(|s| s.subnet_id.clone()),
        subregion_name: n.subregion.to_string(),
        description: n.description,
        mac: new_mac(tx)?,
        source_dest_check: true,
        state: "available".into(),
        vm_id: None,
        device_number: None,
        link_nic_id: None,
        delete_on_vm_deletion: false,
        linked_at: None,
        created_at: now_iso(),
    };
    nic_store::insert(tx, &row)?;
    let range = range_of(n.subnet)?;
    let primary = match n.primary_ip {
        Some(ip) => ip,
        None => next_free_ip(tx, &row.space(), range)?,
    };
    claim_ip(tx, &row, range, primary, true)?;
    if 1 + n.secondary_ips.len() + n.secondary_count > MAX_IPS_PER_NIC {
        return Err(too_many_ips(&row.nic_id));
    }
    for ip in n.secondary_ips {
        claim_ip(tx, &row, range, ip, false)?;
    }
    for _ in 0..n.secondary_count {
        let ip = next_free_ip(tx, &row.space(), range)?;
        claim_ip(tx, &row, range, ip, false)?;
    }
    nic_store::set_groups(tx, &row.nic_id, &groups)?;
    Ok(row)
}

pub(crate) fn too_many_ips(nic: &NicId) -> ApiError {
    ApiError::new(ErrorCode::TooManyPrivateIps, format!("a NIC holds at most {MAX_IPS_PER_NIC} private IPs ({nic})"))
}

/// Groups given for a NIC must be the caller's and belong to the NIC's Net
/// (or to the public cloud for a NIC outside any Net).
pub(crate) fn check_groups(
    tx: &Conn,
    account: &AccountId,
    net_id: Option<&socle_types::ids::NetId>,
    groups: &[SecurityGroupId],
) -> Result<(), ApiError> {
    for id in groups {
        let g = sg_store::get(tx, account, id)?.ok_or_else(|| group_not_found(id.as_str()))?;
        if g.net_id.as_ref() != net_id {
            let wanted = net_id.map(|n| format!("the Net {n}")).unwrap_or_else(|| "the public cloud".into());
            return Err(ApiError::invalid_value(format!("the security group {id} does not belong to {wanted}")));
        }
    }
    Ok(())
}

/// Records `ip` for the NIC after checking it lies in the usable part of
/// the range and is free.
pub(crate) fn claim_ip(tx: &Conn, nic: &NicRow, range: Ipv4Net, ip: Ipv4Addr, primary: bool) -> Result<(), ApiError> {
    if !usable(range, ip) {
        return Err(ApiError::new(
            ErrorCode::InvalidIpAddress,
            format!("{ip} is not a usable address of {range} (the first four and the last are reserved)"),
        ));
    }
    let space = nic.space();
    nic_store::add_ip(tx, &nic.nic_id, &space, &ip.to_string(), primary).map_err(|e| {
        if e.is_unique_violation() {
            ApiError::new(ErrorCode::AddressInUse, format!("{ip} is already used in {range}"))
        } else {
            e.into()
        }
    })
}

fn usable(range: Ipv4Net, ip: Ipv4Addr) -> bool {
    let offset = u32::from(ip).wrapping_sub(u32::from(range.network()));
    range.contains(ip) && offset >= FIRST_USABLE && ip != range.broadcast()
}

/// The lowest free usable address of `range` in `space`.
pub(crate) fn next_free_ip(tx: &Conn, space: &str, range: Ipv4Net) -> Result<Ipv4Addr, ApiError> {
    let taken: HashSet<Ipv4Addr> = nic_store::ips_in_space(tx, space)?.iter().filter_map(|s| s.parse().ok()).collect();
    (FIRST_USABLE..range.size() as u32)
        .filter_map(|i| range.nth(i))
        .find(|ip| usable(range, *ip) && !taken.contains(ip))
        .ok_or_else(|| ApiError::new(ErrorCode::TooManyPrivateIps, format!("no free address left in {range}")))
}

/// A random locally administered unicast MAC (`aa:fc:…`), unused so far.
fn new_mac(tx: &Conn) -> Result<String, ApiError> {
    let mut rng = rand::thread_rng();
    loop {
        let b: [u8; 4] = rng.gen();
        let mac = format!("aa:fc:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3]);
        if !nic_store::mac_in_use(tx, &mac)? {
            return Ok(mac);
        }
    }
}

//! Public IPs: CreatePublicIp, ReadPublicIps, DeletePublicIp, LinkPublicIp,
//! UnlinkPublicIp.
//!
//! Addresses come from the operator's pool (`CloudConfig::public_ip_pool`),
//! lowest free first, and are unique in the cloud (a UNIQUE column). A
//! public IP is linked to one private address of a NIC: a VM's (VmId: its
//! primary NIC) or a NIC's (NicId, PrivateIp defaulting to its primary).
//! The NIC must be in the public cloud, or in a Net with an internet
//! service linked (else nothing could carry the traffic: 9045). A public
//! IP used by a NAT service can be neither linked nor deleted. Deleting a
//! linked public IP unlinks it, as on Outscale.

use std::net::Ipv4Addr;
use std::sync::Arc;

use socle_net::Ipv4Net;
use socle_store::internet_services as igw_store;
use socle_store::nics::{self as nic_store, NicRow};
use socle_store::public_ips::{self as ip_store, PublicIpRow};
use socle_store::{accounts, now_iso, vms as vm_store, Conn};
use socle_types::error::ErrorCode;
use socle_types::ids::{AccountId, LinkPublicIpId, NicId, PublicIpId, VmId};
use socle_types::osc::*;
use socle_types::ApiError;

use super::nics::nic_not_found;
use super::{is_dry_run, list_with_tags, tag_pairs, write, write_network};
use crate::paging::{created_key, matches, matches_opt, paginate, reject_unsupported_filters, tags_match};
use crate::{Caller, Cloud};

pub(crate) fn public_ip_not_found(id_or_address: &str) -> ApiError {
    ApiError::not_found(ErrorCode::NoSuchPublicIp, "public IP", id_or_address)
}

/// The addresses of the pool in allocation order: range by range, low to
/// high, without network and broadcast addresses (for ranges wider than /31).
fn pool_addresses(pool: &[Ipv4Net]) -> impl Iterator<Item = Ipv4Addr> + '_ {
    pool.iter().flat_map(|range| {
        (0..range.size()).filter_map(move |i| range.nth(i as u32)).filter(move |ip| range.is_host_address(*ip))
    })
}

fn view(row: &PublicIpRow, tags: Vec<ResourceTag>) -> PublicIp {
    PublicIp {
        link_public_ip_id: row.link_public_ip_id.as_ref().map(|l| l.to_string()),
        nat_service_id: row.nat_service_id.as_ref().map(|n| n.to_string()),
        net_access_point_ids: None,
        nic_account_id: row.nic_account_id.as_ref().map(|a| a.to_string()),
        nic_id: row.nic_id.as_ref().map(|n| n.to_string()),
        private_ip: row.private_ip.clone(),
        public_ip: Some(row.public_ip.clone()),
        public_ip_id: Some(row.public_ip_id.to_string()),
        tags: Some(tags),
        vm_id: row.vm_id.as_ref().map(|v| v.to_string()),
    }
}

fn parse_address(param: &str, text: &str) -> Result<Ipv4Addr, ApiError> {
    text.parse().map_err(|_| ApiError::invalid_value(format!("{param} must be an IPv4 address, got {text:?}")))
}

/// The caller's public IP named by its ID or its address (one of them; if
/// both, they must agree).
fn find(conn: &Conn, account: &AccountId, id: Option<&str>, address: Option<&str>) -> Result<PublicIpRow, ApiError> {
    match (id, address) {
        (None, None) => Err(ApiError::missing("PublicIpId or PublicIp")),
        (Some(id), address) => {
            let id = PublicIpId::parse(id)?;
            let row = ip_store::get(conn, account, &id)?.ok_or_else(|| public_ip_not_found(id.as_str()))?;
            if let Some(a) = address.filter(|a| *a != row.public_ip) {
                return Err(ApiError::invalid_value(format!("the public IP {id} is {}, not {a}", row.public_ip)));
            }
            Ok(row)
        }
        (None, Some(address)) => {
            let ip = parse_address("PublicIp", address)?;
            ip_store::get_by_address(conn, account, &ip.to_string())?.ok_or_else(|| public_ip_not_found(address))
        }
    }
}

/// A VM's primary NIC (device 0), the one VmId designates in LinkPublicIp
/// and CreateRoute.
pub(crate) fn primary_nic(conn: &Conn, account: &AccountId, vm: &VmId) -> Result<NicRow, ApiError> {
    vm_store::get(conn, account, vm)?.ok_or_else(|| ApiError::not_found(ErrorCode::NoSuchVm, "VM", vm.as_str()))?;
    nic_store::of_vm(conn, vm)?.into_iter().find(|n| n.device_number == Some(0)).ok_or_else(|| {
        ApiError::new(ErrorCode::InvalidResourceState, format!("the VM {vm} has no network interface (NIC)"))
    })
}

fn used_by_nat(row: &PublicIpRow) -> Result<(), ApiError> {
    match &row.nat_service_id {
        Some(nat) => Err(ApiError::new(
            ErrorCode::PublicIpLinked,
            format!("the public IP {} is used by the NAT service {nat}; delete that first", row.public_ip),
        )),
        None => Ok(()),
    }
}

/// ReadPublicIpRanges' request and answer (the generated OSC types lack
/// them): the ranges the cloud's public IPs come from.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadPublicIpRangesRequest {
    /// Accepted and ignored: reading the pool changes nothing.
    #[serde(rename = "DryRun", default)]
    pub _dry_run: Option<bool>,
}

#[derive(Debug, serde::Serialize)]
pub struct ReadPublicIpRangesResponse {
    #[serde(rename = "PublicIps")]
    pub public_ips: Vec<String>,
}

/// The operator's pool, answered without authentication as on Outscale.
pub async fn read_public_ip_ranges(cloud: &Arc<Cloud>, _req: ReadPublicIpRangesRequest) -> Result<ReadPublicIpRangesResponse, ApiError> {
    Ok(ReadPublicIpRangesResponse { public_ips: cloud.config.public_ip_pool.iter().map(|r| r.to_string()).collect() })
}

fn pool_exhausted(pool: &[Ipv4Net]) -> ApiError {
    let ranges: Vec<String> = pool.iter().map(|r| r.to_string()).collect();
    ApiError::new(
        ErrorCode::TooManyPublicIps,
        format!("no public IP left in this cloud's pool ({}); ask its operator for more", ranges.join(", ")),
    )
}

/// Gives a VM's new primary NIC a public IP at launch (VMs of the public
/// cloud, and of subnets with MapPublicIpOnLaunch, as on Outscale). It is
/// not the account's to manage and goes when the NIC or VM goes.
pub(crate) fn give_at_launch(tx: &Conn, nic: &NicRow, pool: &[Ipv4Net]) -> Result<(), ApiError> {
    let id = PublicIpId::generate();
    ip_store::allocate(tx, &nic.account_id, &id, pool_addresses(pool), &now_iso(), true)?.ok_or_else(|| pool_exhausted(pool))?;
    let primary = nic_store::ips_of(tx, &nic.nic_id)?
        .into_iter()
        .find(|p| p.is_primary)
        .ok_or_else(|| ApiError::internal(format!("the NIC {} has no primary address", nic.nic_id)))?;
    ip_store::link(tx, &id, &LinkPublicIpId::generate(), &nic.nic_id, &primary.ip)?;
    Ok(())
}

pub async fn create_public_ip(cloud: &Arc<Cloud>, caller: &Caller, req: CreatePublicIpRequest) -> Result<CreatePublicIpResponse, ApiError> {
    let account = caller.account_id.clone();
    let pool = cloud.config.public_ip_pool.clone();
    let row = write(cloud, req.dry_run, move |tx| {
        let max = accounts::get(tx, &account)?.ok_or_else(|| ApiError::internal("authenticated account has no row"))?.quotas.max_public_ips;
        if ip_store::count_held(tx, &account)? >= max {
            return Err(ApiError::new(
                ErrorCode::TooManyPublicIps,
                format!("public IP quota reached: the account holds {max}, the most it may; delete unused ones or ask for more"),
            ));
        }
        ip_store::allocate(tx, &account, &PublicIpId::generate(), pool_addresses(&pool), &now_iso(), false)?.ok_or_else(|| pool_exhausted(&pool))
    })
    .await?;
    if is_dry_run(req.dry_run) {
        return Ok(CreatePublicIpResponse::default());
    }
    Ok(CreatePublicIpResponse { public_ip: Some(view(&row, vec![])), ..Default::default() })
}

pub async fn read_public_ips(cloud: &Arc<Cloud>, caller: &Caller, req: ReadPublicIpsRequest) -> Result<ReadPublicIpsResponse, ApiError> {
    reject_unsupported_filters(
        &req.filters,
        &["LinkPublicIpIds", "NicAccountIds", "NicIds", "PrivateIps", "PublicIpIds", "PublicIps", "VmIds", "TagKeys", "TagValues", "Tags"],
    )?;
    let f = req.filters.unwrap_or_default();
    let rows = list_with_tags(cloud, &caller.account_id, ip_store::list, |r| r.public_ip_id.as_str()).await?;
    let items: Vec<(PublicIpRow, Vec<ResourceTag>)> = rows
        .into_iter()
        .filter(|(r, tags)| {
            matches(&f.public_ip_ids, r.public_ip_id.as_str())
                && matches(&f.public_ips, &r.public_ip)
                && matches_opt(&f.link_public_ip_ids, r.link_public_ip_id.as_ref().map(|l| l.as_str()))
                && matches_opt(&f.nic_ids, r.nic_id.as_ref().map(|n| n.as_str()))
                && matches_opt(&f.nic_account_ids, r.nic_account_id.as_ref().map(|a| a.as_str()))
                && matches_opt(&f.private_ips, r.private_ip.as_deref())
                && matches_opt(&f.vm_ids, r.vm_id.as_ref().map(|v| v.as_str()))
                && tags_match(&tag_pairs(tags), &f.tag_keys, &f.tag_values, &f.tags)
        })
        .collect();
    let (page, next) = paginate(items, req.next_page_token.as_deref(), req.results_per_page, |(r, _)| {
        created_key(&r.created_at, r.public_ip_id.as_str())
    })?;
    Ok(ReadPublicIpsResponse {
        public_ips: Some(page.into_iter().map(|(r, t)| view(&r, t)).collect()),
        next_page_token: next,
        ..Default::default()
    })
}

pub async fn delete_public_ip(cloud: &Arc<Cloud>, caller: &Caller, req: DeletePublicIpRequest) -> Result<DeletePublicIpResponse, ApiError> {
    let account = caller.account_id.clone();
    let was_linked = write(cloud, req.dry_run, move |tx| {
        let row = find(tx, &account, req.public_ip_id.as_deref(), req.public_ip.as_deref())?;
        used_by_nat(&row)?;
        socle_store::tags::delete_all_for_resource(tx, row.public_ip_id.as_str())?;
        ip_store::delete(tx, &row.public_ip_id)?;
        Ok(row.nic_id.is_some())
    })
    .await?;
    if was_linked && !is_dry_run(req.dry_run) {
        cloud.network_changed();
    }
    Ok(DeletePublicIpResponse::default())
}

/// The NIC a LinkPublicIp request names (VmId: the VM's primary NIC) and
/// the private address on it.
fn link_target(tx: &Conn, account: &AccountId, req: &LinkPublicIpRequest) -> Result<(NicRow, String), ApiError> {
    let nic = match (&req.vm_id, &req.nic_id) {
        (Some(_), Some(_)) => return Err(ApiError::invalid_value("give VmId or NicId, not both")),
        (None, None) => return Err(ApiError::missing("VmId or NicId")),
        (Some(vm), None) => primary_nic(tx, account, &VmId::parse(vm)?)?,
        (None, Some(nic)) => {
            let id = NicId::parse(nic)?;
            nic_store::get(tx, account, &id)?.ok_or_else(|| nic_not_found(id.as_str()))?
        }
    };
    let ips = nic_store::ips_of(tx, &nic.nic_id)?;
    let private_ip = match &req.private_ip {
        None => ips.iter().find(|p| p.is_primary).map(|p| p.ip.clone()).ok_or_else(|| {
            ApiError::internal(format!("the NIC {} has no primary address", nic.nic_id))
        })?,
        Some(text) => {
            let ip = parse_address("PrivateIp", text)?.to_string();
            if !ips.iter().any(|p| p.ip == ip) {
                return Err(ApiError::new(ErrorCode::InvalidIpAddress, format!("{ip} is not an address of the NIC {}", nic.nic_id)));
            }
            ip
        }
    };
    if let Some(net) = &nic.net_id {
        if igw_store::linked_to_net(tx, net)?.is_none() {
            return Err(ApiError::new(
                ErrorCode::NotPublicSubnet,
                format!(
                    "the NIC {} is in the Net {net}, which has no internet service linked: a public IP needs one \
                     (CreateInternetService, LinkInternetService)",
                    nic.nic_id
                ),
            ));
        }
    }
    Ok((nic, private_ip))
}

pub async fn link_public_ip(cloud: &Arc<Cloud>, caller: &Caller, req: LinkPublicIpRequest) -> Result<LinkPublicIpResponse, ApiError> {
    let account = caller.account_id.clone();
    let dry_run = req.dry_run;
    let link = write_network(cloud, dry_run, move |tx| {
        let row = find(tx, &account, req.public_ip_id.as_deref(), req.public_ip.as_deref())?;
        let (nic, private_ip) = link_target(tx, &account, &req)?;
        used_by_nat(&row)?;
        if let (Some(link), Some(linked_nic)) = (&row.link_public_ip_id, &row.nic_id) {
            if *linked_nic == nic.nic_id && row.private_ip.as_deref() == Some(private_ip.as_str()) {
                return Ok(link.clone()); // already so: nothing to change
            }
            // Outscale's default: relink in the public cloud, refuse in a Net.
            if !req.allow_relink.unwrap_or(nic.net_id.is_none()) {
                return Err(ApiError::new(
                    ErrorCode::PublicIpLinked,
                    format!(
                        "the public IP {} is linked to {} of the NIC {linked_nic}; unlink it first, or set AllowRelink",
                        row.public_ip,
                        row.private_ip.as_deref().unwrap_or_default()
                    ),
                ));
            }
        }
        if let Some(other) = ip_store::of_nic(tx, &nic.nic_id)?.into_iter().find(|p| p.private_ip.as_deref() == Some(private_ip.as_str())) {
            // The address given at launch makes way, as on Outscale.
            if other.auto {
                ip_store::delete(tx, &other.public_ip_id)?;
            } else {
                return Err(ApiError::new(
                ErrorCode::PublicIpLinked,
                    format!("{private_ip} of the NIC {} has the public IP {} already; unlink it first", nic.nic_id, other.public_ip),
                ));
            }
        }
        let link = LinkPublicIpId::generate();
        ip_store::link(tx, &row.public_ip_id, &link, &nic.nic_id, &private_ip)?;
        Ok(link)
    })
    .await?;
    if is_dry_run(dry_run) {
        return Ok(LinkPublicIpResponse::default());
    }
    Ok(LinkPublicIpResponse { link_public_ip_id: Some(link.to_string()), ..Default::default() })
}

pub async fn unlink_public_ip(cloud: &Arc<Cloud>, caller: &Caller, req: UnlinkPublicIpRequest) -> Result<UnlinkPublicIpResponse, ApiError> {
    let account = caller.account_id.clone();
    write_network(cloud, req.dry_run, move |tx| {
        let link_not_found = |what: &str| ApiError::not_found(ErrorCode::NoSuchPublicIpLink, "public IP link", what);
        let row = match (&req.link_public_ip_id, &req.public_ip) {
            (None, None) => return Err(ApiError::missing("LinkPublicIpId or PublicIp")),
            (Some(link), _) => {
                let id = LinkPublicIpId::parse(link)?;
                ip_store::get_by_link(tx, &account, &id)?.ok_or_else(|| link_not_found(id.as_str()))?
            }
            (None, Some(address)) => {
                let row = find(tx, &account, None, Some(address))?;
                if row.link_public_ip_id.is_none() {
                    return Err(link_not_found(&format!("of {address}")));
                }
                row
            }
        };
        if let Some(address) = req.public_ip.as_deref().filter(|a| *a != row.public_ip) {
            return Err(ApiError::invalid_value(format!("{} is the link of {}, not of {address}", req.link_public_ip_id.clone().unwrap_or_default(), row.public_ip)));
        }
        ip_store::unlink(tx, &row.public_ip_id)?;
        Ok(())
    })
    .await?;
    Ok(UnlinkPublicIpResponse::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_skips_network_and_broadcast_of_wide_ranges_only() {
        let pool: Vec<Ipv4Net> = ["198.18.7.0/30", "198.18.7.9/32", "198.18.8.0/31"].iter().map(|r| r.parse().unwrap()).collect();
        let got: Vec<String> = pool_addresses(&pool).map(|ip| ip.to_string()).collect();
        assert_eq!(got, ["198.18.7.1", "198.18.7.2", "198.18.7.9", "198.18.8.0", "198.18.8.1"]);
    }
}

//! NICs: CreateNic, ReadNics, UpdateNic, DeleteNic, and the OSC view of a
//! NIC that ReadVms also shows (as `NicLight`).
//!
//! A NIC made by CreateNic lives in a subnet; it is `available` until
//! LinkNic puts it on a VM (see `nic_links`). VMs' primary NICs are made by
//! CreateVms and go with their VM. DeleteNic takes an `available` NIC only;
//! its addresses are free again at once, and a public IP linked to it is
//! unlinked (the database does it, `public_ips_unlink_nic`).

use std::net::Ipv4Addr;
use std::sync::Arc;

use socle_store::nics::{self as nic_store, NicRow};
use socle_store::public_ips::{self as ip_store, PublicIpRow};
use socle_store::security_groups as sg_store;
use socle_store::Conn;
use socle_types::error::ErrorCode;
use socle_types::ids::{NicId, SecurityGroupId, SubnetId};
use socle_types::osc::*;
use socle_types::ApiError;

use super::nic_alloc::{check_groups, new_nic, NewNic};
use super::subnets::owned_subnet;
use super::vm_network::private_dns_name;
use super::{is_dry_run, resource_tags, tag_pairs, write, write_network};
use crate::paging::{created_key, matches, matches_any, matches_opt, paginate, reject_unsupported_filters, tags_match};
use crate::{Caller, Cloud};

/// NICs an account may have, VMs' primary NICs included (those are bounded
/// by the VM quota and never refused for this one).
pub(crate) const MAX_NICS_PER_ACCOUNT: i64 = 256;

pub(crate) fn nic_not_found(id: &str) -> ApiError {
    ApiError::not_found(ErrorCode::NoSuchNic, "NIC", id)
}

/// The caller's NIC (another account's answers like an absent one).
pub(crate) fn owned_nic(conn: &Conn, account: &socle_types::ids::AccountId, id: &NicId) -> Result<NicRow, ApiError> {
    nic_store::get(conn, account, id)?.ok_or_else(|| nic_not_found(id.as_str()))
}

/// Security groups of a NIC, as `{SecurityGroupId, SecurityGroupName}`.
pub(crate) fn groups_view(conn: &Conn, nic: &NicRow) -> Result<Vec<SecurityGroupLight>, ApiError> {
    let mut out = vec![];
    for id in nic_store::groups_of(conn, &nic.nic_id)? {
        let name = sg_store::get(conn, &nic.account_id, &id)?.map(|g| g.name).unwrap_or_default();
        out.push(SecurityGroupLight { security_group_id: Some(id.to_string()), security_group_name: Some(name) });
    }
    Ok(out)
}

/// The state of the link as OSC names it (`LinkNic.State`).
fn link_state(nic_state: &str) -> &'static str {
    match nic_state {
        "attaching" => "attaching",
        "detaching" => "detaching",
        _ => "attached",
    }
}

fn link_public_ip(row: &PublicIpRow) -> LinkPublicIp {
    LinkPublicIp {
        link_public_ip_id: row.link_public_ip_id.as_ref().map(|l| l.to_string()),
        public_dns_name: None,
        public_ip: Some(row.public_ip.clone()),
        public_ip_account_id: Some(row.account_id.to_string()),
        public_ip_id: Some(row.public_ip_id.to_string()),
    }
}

/// The OSC view of a NIC.
pub(crate) fn nic_view(conn: &Conn, nic: &NicRow, region: &str, tags: Vec<ResourceTag>) -> Result<Nic, ApiError> {
    let ips = nic_store::ips_of(conn, &nic.nic_id)?;
    let publics = ip_store::of_nic(conn, &nic.nic_id)?;
    let public_of = |ip: &str| publics.iter().find(|p| p.private_ip.as_deref() == Some(ip)).map(link_public_ip);
    let primary = ips.iter().find(|p| p.is_primary).map(|p| p.ip.clone());
    Ok(Nic {
        account_id: Some(nic.account_id.to_string()),
        description: Some(nic.description.clone()),
        is_source_dest_checked: Some(nic.source_dest_check),
        link_nic: nic.vm_id.as_ref().map(|vm| LinkNic {
            delete_on_vm_deletion: Some(nic.delete_on_vm_deletion),
            device_number: nic.device_number,
            link_nic_id: nic.link_nic_id.as_ref().map(|l| l.to_string()),
            state: Some(link_state(&nic.state).into()),
            vm_account_id: Some(nic.account_id.to_string()),
            vm_id: Some(vm.to_string()),
        }),
        link_public_ip: primary.as_deref().and_then(public_of),
        mac_address: Some(nic.mac.clone()),
        net_id: nic.net_id.as_ref().map(|n| n.to_string()),
        nic_id: Some(nic.nic_id.to_string()),
        private_dns_name: primary.as_deref().map(|ip| private_dns_name(ip, region)),
        private_ips: Some(
            ips.iter()
                .map(|p| PrivateIp {
                    is_primary: Some(p.is_primary),
                    link_public_ip: public_of(&p.ip),
                    private_dns_name: Some(private_dns_name(&p.ip, region)),
                    private_ip: Some(p.ip.clone()),
                })
                .collect(),
        ),
        security_groups: Some(groups_view(conn, nic)?),
        state: Some(nic.state.clone()),
        subnet_id: nic.subnet_id.as_ref().map(|s| s.to_string()),
        subregion_name: Some(nic.subregion_name.clone()),
        tags: Some(tags),
    })
}

fn light_public_ip(p: &LinkPublicIp) -> LinkPublicIpLightForVm {
    LinkPublicIpLightForVm {
        public_dns_name: p.public_dns_name.clone(),
        public_ip: p.public_ip.clone(),
        public_ip_account_id: p.public_ip_account_id.clone(),
    }
}

/// What ReadVms shows of a NIC.
pub(crate) fn light_view(nic: Nic) -> NicLight {
    NicLight {
        account_id: nic.account_id,
        description: nic.description,
        is_source_dest_checked: nic.is_source_dest_checked,
        link_nic: nic.link_nic.map(|l| LinkNicLight {
            delete_on_vm_deletion: l.delete_on_vm_deletion,
            device_number: l.device_number,
            link_nic_id: l.link_nic_id,
            state: l.state,
        }),
        link_public_ip: nic.link_public_ip.as_ref().map(light_public_ip),
        mac_address: nic.mac_address,
        net_id: nic.net_id,
        nic_id: nic.nic_id,
        private_dns_name: nic.private_dns_name,
        private_ips: nic.private_ips.map(|ips| {
            ips.into_iter()
                .map(|p| PrivateIpLightForVm {
                    is_primary: p.is_primary,
                    link_public_ip: p.link_public_ip.as_ref().map(light_public_ip),
                    private_dns_name: p.private_dns_name,
                    private_ip: p.private_ip,
                })
                .collect()
        }),
        security_groups: nic.security_groups,
        state: nic.state,
        subnet_id: nic.subnet_id,
    }
}

fn parse_ip(param: &str, text: &str) -> Result<Ipv4Addr, ApiError> {
    text.parse().map_err(|_| ApiError::invalid_value(format!("{param}: {text:?} is not an IPv4 address")))
}

/// A `PrivateIps` list of addresses (CreateVms, LinkPrivateIps, UnlinkPrivateIps).
pub(crate) fn parse_ips(list: &[String]) -> Result<Vec<Ipv4Addr>, ApiError> {
    list.iter().map(|t| parse_ip("PrivateIps", t)).collect()
}

/// `PrivateIps` of CreateNic (and of `Nics` in CreateVms): the primary
/// address (the one marked `IsPrimary`, else the first) and the others.
pub(crate) fn split_private_ips(ips: &[PrivateIpLight]) -> Result<(Option<Ipv4Addr>, Vec<Ipv4Addr>), ApiError> {
    let mut parsed = vec![];
    for p in ips {
        let text = p.private_ip.as_deref().ok_or_else(|| ApiError::missing("PrivateIps.PrivateIp"))?;
        let ip = parse_ip("PrivateIps", text)?;
        if parsed.iter().any(|(other, _)| *other == ip) {
            return Err(ApiError::invalid_value(format!("PrivateIps names {ip} twice")));
        }
        parsed.push((ip, p.is_primary == Some(true)));
    }
    let primaries = parsed.iter().filter(|(_, primary)| *primary).count();
    if primaries > 1 {
        return Err(ApiError::invalid_value("PrivateIps: only one address can be the primary one (IsPrimary)"));
    }
    let primary_at = parsed.iter().position(|(_, primary)| *primary).unwrap_or(0);
    if parsed.is_empty() {
        return Ok((None, vec![]));
    }
    let primary = parsed.remove(primary_at).0;
    Ok((Some(primary), parsed.into_iter().map(|(ip, _)| ip).collect()))
}

pub(crate) fn parse_group_ids(ids: &Option<Vec<String>>) -> Result<Vec<SecurityGroupId>, ApiError> {
    ids.iter().flatten().map(|g| SecurityGroupId::parse(g)).collect()
}

pub async fn create_nic(cloud: &Arc<Cloud>, caller: &Caller, req: CreateNicRequest) -> Result<CreateNicResponse, ApiError> {
    let subnet_id = SubnetId::parse(&req.subnet_id)?;
    let (primary_ip, secondary_ips) = split_private_ips(req.private_ips.as_deref().unwrap_or_default())?;
    let groups = parse_group_ids(&req.security_group_ids)?;
    let description = req.description.clone().unwrap_or_default();
    check_description(&description)?;
    let account = caller.account_id.clone();
    let region = cloud.config.region.clone();
    let nic = write(cloud, req.dry_run, move |tx| {
        let subnet = owned_subnet(tx, &account, &subnet_id)?;
        if nic_store::count_of_account(tx, &account)? >= MAX_NICS_PER_ACCOUNT {
            return Err(ApiError::new(
                ErrorCode::TooManyNics,
                format!("an account may have {MAX_NICS_PER_ACCOUNT} NICs; delete unused ones first"),
            ));
        }
        let row = new_nic(
            tx,
            NewNic {
                account: &account,
                subnet: Some(&subnet),
                subregion: &subnet.subregion_name,
                description: description.clone(),
                primary_ip,
                secondary_ips: secondary_ips.clone(),
                secondary_count: 0,
                groups: groups.clone(),
            },
        )?;
        nic_view(tx, &row, &region, vec![])
    })
    .await?;
    if is_dry_run(req.dry_run) {
        return Ok(CreateNicResponse::default());
    }
    Ok(CreateNicResponse { nic: Some(nic), ..Default::default() })
}

fn check_description(d: &str) -> Result<(), ApiError> {
    if d.len() > 255 {
        return Err(ApiError::new(ErrorCode::InvalidParameterValueLength, "a NIC Description is at most 255 characters"));
    }
    Ok(())
}

const NIC_FILTERS: &[&str] = &[
    "Descriptions",
    "IsSourceDestCheck",
    "LinkNicDeleteOnVmDeletion",
    "LinkNicDeviceNumbers",
    "LinkNicLinkNicIds",
    "LinkNicStates",
    "LinkNicVmAccountIds",
    "LinkNicVmIds",
    "LinkPublicIpAccountIds",
    "LinkPublicIpLinkPublicIpIds",
    "LinkPublicIpPublicIpIds",
    "LinkPublicIpPublicIps",
    "MacAddresses",
    "NetIds",
    "NicIds",
    "PrivateDnsNames",
    "PrivateIpsLinkPublicIpAccountIds",
    "PrivateIpsLinkPublicIpPublicIps",
    "PrivateIpsPrivateIps",
    "SecurityGroupIds",
    "SecurityGroupNames",
    "States",
    "SubnetIds",
    "SubregionNames",
    "TagKeys",
    "TagValues",
    "Tags",
];

/// Whether the NIC passes every given filter (each list is "any of").
fn nic_matches(n: &Nic, f: &FiltersNic) -> bool {
    let link = n.link_nic.clone().unwrap_or_default();
    let public = n.link_public_ip.clone().unwrap_or_default();
    let ips = n.private_ips.clone().unwrap_or_default();
    let groups = n.security_groups.clone().unwrap_or_default();
    let tags = tag_pairs(n.tags.as_deref().unwrap_or_default());
    let opt = |o: &Option<String>| o.clone().unwrap_or_default();
    let bool_matches = |want: Option<bool>, have: Option<bool>| want.is_none() || want == have;
    matches_opt(&f.descriptions, n.description.as_deref())
        && bool_matches(f.is_source_dest_check, n.is_source_dest_checked)
        && bool_matches(f.link_nic_delete_on_vm_deletion, link.delete_on_vm_deletion.filter(|_| n.link_nic.is_some()))
        && (f.link_nic_device_numbers.is_none() || link.device_number.is_some_and(|d| matches(&f.link_nic_device_numbers, &d)))
        && matches_opt(&f.link_nic_link_nic_ids, link.link_nic_id.as_deref())
        && matches_opt(&f.link_nic_states, link.state.as_deref())
        && matches_opt(&f.link_nic_vm_account_ids, link.vm_account_id.as_deref())
        && matches_opt(&f.link_nic_vm_ids, link.vm_id.as_deref())
        && matches_opt(&f.link_public_ip_account_ids, public.public_ip_account_id.as_deref())
        && matches_opt(&f.link_public_ip_link_public_ip_ids, public.link_public_ip_id.as_deref())
        && matches_opt(&f.link_public_ip_public_ip_ids, public.public_ip_id.as_deref())
        && matches_opt(&f.link_public_ip_public_ips, public.public_ip.as_deref())
        && matches_opt(&f.mac_addresses, n.mac_address.as_deref())
        && matches_opt(&f.net_ids, n.net_id.as_deref())
        && matches(&f.nic_ids, opt(&n.nic_id).as_str())
        && matches_opt(&f.private_dns_names, n.private_dns_name.as_deref())
        && matches_any(
            &f.private_ips_link_public_ip_account_ids,
            ips.iter().filter_map(|p| p.link_public_ip.as_ref()?.public_ip_account_id.as_deref()),
        )
        && matches_any(
            &f.private_ips_link_public_ip_public_ips,
            ips.iter().filter_map(|p| p.link_public_ip.as_ref()?.public_ip.as_deref()),
        )
        && matches_any(&f.private_ips_private_ips, ips.iter().filter_map(|p| p.private_ip.as_deref()))
        && matches_any(&f.security_group_ids, groups.iter().filter_map(|g| g.security_group_id.as_deref()))
        && matches_any(&f.security_group_names, groups.iter().filter_map(|g| g.security_group_name.as_deref()))
        && matches_opt(&f.states, n.state.as_deref())
        && matches_opt(&f.subnet_ids, n.subnet_id.as_deref())
        && matches_opt(&f.subregion_names, n.subregion_name.as_deref())
        && tags_match(&tags, &f.tag_keys, &f.tag_values, &f.tags)
}

pub async fn read_nics(cloud: &Arc<Cloud>, caller: &Caller, req: ReadNicsRequest) -> Result<ReadNicsResponse, ApiError> {
    reject_unsupported_filters(&req.filters, NIC_FILTERS)?;
    let f = req.filters.unwrap_or_default();
    let account = caller.account_id.clone();
    let region = cloud.config.region.clone();
    let views = cloud
        .store
        .read(move |c| -> Result<Vec<(Nic, String)>, ApiError> {
            let mut out = vec![];
            for row in nic_store::list(c, &account)? {
                let tags = resource_tags(c, row.nic_id.as_str())?;
                out.push((nic_view(c, &row, &region, tags)?, created_key(&row.created_at, row.nic_id.as_str())));
            }
            Ok(out)
        })
        .await?;
    let items: Vec<(Nic, String)> = views.into_iter().filter(|(n, _)| nic_matches(n, &f)).collect();
    let (page, next) = paginate(items, req.next_page_token.as_deref(), req.results_per_page, |(_, key)| key.clone())?;
    Ok(ReadNicsResponse { nics: Some(page.into_iter().map(|(n, _)| n).collect()), next_page_token: next, ..Default::default() })
}

pub async fn update_nic(cloud: &Arc<Cloud>, caller: &Caller, req: UpdateNicRequest) -> Result<UpdateNicResponse, ApiError> {
    let id = NicId::parse(&req.nic_id)?;
    if let Some(d) = &req.description {
        check_description(d)?;
    }
    let groups = req.security_group_ids.as_ref().map(|_| parse_group_ids(&req.security_group_ids)).transpose()?;
    if groups.as_ref().is_some_and(|g| g.is_empty()) {
        return Err(ApiError::invalid_value("SecurityGroupIds: a NIC keeps at least one security group"));
    }
    let link = req.link_nic.clone();
    if link.as_ref().is_some_and(|l| l.delete_on_vm_deletion.is_none() && l.link_nic_id.is_none()) {
        return Err(ApiError::missing("LinkNic.LinkNicId and LinkNic.DeleteOnVmDeletion"));
    }
    let account = caller.account_id.clone();
    let region = cloud.config.region.clone();
    let description = req.description.clone();
    let nic = write_network(cloud, req.dry_run, move |tx| {
        let mut row = owned_nic(tx, &account, &id)?;
        if let Some(d) = description.clone() {
            row.description = d;
        }
        if let Some(l) = link.clone() {
            let current = row.link_nic_id.as_ref().map(|l| l.to_string());
            match (&l.link_nic_id, &current) {
                (_, None) => {
                    return Err(ApiError::new(ErrorCode::InvalidResourceState, format!("the NIC {id} is not linked to a VM")))
                }
                (Some(given), Some(cur)) if given != cur => {
                    return Err(ApiError::not_found(ErrorCode::NoSuchLink, "NIC link", given));
                }
                _ => {}
            }
            if let Some(d) = l.delete_on_vm_deletion {
                row.delete_on_vm_deletion = d;
            }
        }
        if let Some(groups) = groups.clone() {
            check_groups(tx, &account, row.net_id.as_ref(), &groups)?;
            nic_store::set_groups(tx, &id, &groups)?;
        }
        nic_store::update(tx, &row)?;
        let tags = resource_tags(tx, id.as_str())?;
        nic_view(tx, &row, &region, tags)
    })
    .await?;
    if is_dry_run(req.dry_run) {
        return Ok(UpdateNicResponse::default());
    }
    Ok(UpdateNicResponse { nic: Some(nic), ..Default::default() })
}

pub async fn delete_nic(cloud: &Arc<Cloud>, caller: &Caller, req: DeleteNicRequest) -> Result<DeleteNicResponse, ApiError> {
    let id = NicId::parse(&req.nic_id)?;
    let account = caller.account_id.clone();
    write_network(cloud, req.dry_run, move |tx| {
        let row = owned_nic(tx, &account, &id)?;
        if let Some(vm) = &row.vm_id {
            return Err(ApiError::new(
                ErrorCode::InvalidResourceState,
                format!("the NIC {id} is {} on the VM {vm}; unlink it first (UnlinkNic)", row.state),
            ));
        }
        socle_store::tags::delete_all_for_resource(tx, id.as_str())?;
        nic_store::delete(tx, &id)?;
        Ok(())
    })
    .await?;
    Ok(DeleteNicResponse::default())
}

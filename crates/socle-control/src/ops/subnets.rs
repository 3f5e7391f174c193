//! Subnets: ranges of a Net in one subregion, where NICs (and so VMs) get
//! their addresses. Subnets of one Net never overlap (checked in the insert
//! transaction).

use std::sync::Arc;

use socle_store::nets::{self as net_store, SubnetRow};
use socle_store::now_iso;
use socle_types::error::ErrorCode;
use socle_types::ids::{AccountId, NetId, SubnetId};
use socle_types::osc::*;
use socle_types::ApiError;

use super::nets::{owned_net, parse_range};
use super::{is_dry_run, tag_pairs, with_tags, write};
use crate::paging::{created_key, matches, paginate, reject_unsupported_filters, tags_match};
use crate::{Caller, Cloud};

/// Addresses of a subnet no NIC can get: the network address, the gateway
/// (.1), two reserved for services (.2, .3) and the broadcast address, as
/// on Outscale and AWS.
pub(crate) const RESERVED_PER_SUBNET: u64 = 5;

pub(crate) fn subnet_not_found(id: &str) -> ApiError {
    ApiError::not_found(ErrorCode::NoSuchSubnet, "subnet", id)
}

pub(crate) fn owned_subnet(conn: &socle_store::Conn, account: &AccountId, id: &SubnetId) -> Result<SubnetRow, ApiError> {
    net_store::get_subnet(conn, account, id)?.ok_or_else(|| subnet_not_found(id.as_str()))
}

fn subnet_view(s: &SubnetRow, tags: Vec<ResourceTag>) -> Subnet {
    let size = s.ip_range.parse::<socle_net::Ipv4Net>().map(|n| n.size()).unwrap_or(0);
    Subnet {
        available_ips_count: Some(size.saturating_sub(RESERVED_PER_SUBNET) as i64),
        ip_range: Some(s.ip_range.clone()),
        map_public_ip_on_launch: Some(s.map_public_ip_on_launch),
        net_id: Some(s.net_id.to_string()),
        state: Some(s.state.clone()),
        subnet_id: Some(s.subnet_id.to_string()),
        subregion_name: Some(s.subregion_name.clone()),
        tags: Some(tags),
    }
}

pub async fn create_subnet(cloud: &Arc<Cloud>, caller: &Caller, req: CreateSubnetRequest) -> Result<CreateSubnetResponse, ApiError> {
    let net_id = NetId::parse(&req.net_id)?;
    let range = parse_range("IpRange", &req.ip_range)?;
    let subregion = req.subregion_name.clone().unwrap_or_else(|| cloud.config.default_subregion());
    let account = caller.account_id.clone();
    let row = write(cloud, req.dry_run, move |tx| {
        super::placement::check_subregion(tx, &subregion)?;
        let net = owned_net(tx, &account, &net_id)?;
        let net_range: socle_net::Ipv4Net = net.ip_range.parse().map_err(|e| ApiError::internal(format!("stored range: {e}")))?;
        if !net_range.contains_net(&range) {
            return Err(ApiError::new(
                ErrorCode::NotInNetRange,
                format!("IpRange {range} is not inside the range {net_range} of the Net {net_id}"),
            ));
        }
        for other in net_store::subnets_of(tx, &net_id)? {
            let theirs: socle_net::Ipv4Net = other.ip_range.parse().map_err(|e| ApiError::internal(format!("stored range: {e}")))?;
            if theirs.overlaps(&range) {
                return Err(ApiError::new(
                    ErrorCode::SubnetConflict,
                    format!("IpRange {range} overlaps the subnet {} ({theirs})", other.subnet_id),
                ));
            }
        }
        let row = SubnetRow {
            subnet_id: SubnetId::generate(),
            account_id: account.clone(),
            net_id: net_id.clone(),
            ip_range: range.to_string(),
            subregion_name: subregion.clone(),
            map_public_ip_on_launch: false,
            state: "available".into(),
            created_at: now_iso(),
        };
        net_store::insert_subnet(tx, &row)?;
        Ok(row)
    })
    .await?;
    if is_dry_run(req.dry_run) {
        return Ok(CreateSubnetResponse::default());
    }
    Ok(CreateSubnetResponse { subnet: Some(subnet_view(&row, vec![])), ..Default::default() })
}

pub async fn read_subnets(cloud: &Arc<Cloud>, caller: &Caller, req: ReadSubnetsRequest) -> Result<ReadSubnetsResponse, ApiError> {
    reject_unsupported_filters(
        &req.filters,
        &["SubnetIds", "NetIds", "IpRanges", "States", "SubregionNames", "AvailableIpsCounts", "TagKeys", "TagValues", "Tags"],
    )?;
    let f = req.filters.unwrap_or_default();
    let account = caller.account_id.clone();
    let rows = cloud
        .store
        .read(move |c| {
            let rows = net_store::list_subnets(c, &account)?;
            with_tags(c, &account, rows, |s| s.subnet_id.as_str())
        })
        .await?;
    let items: Vec<(SubnetRow, Subnet)> = rows
        .into_iter()
        .filter(|(s, tags)| {
            matches(&f.subnet_ids, s.subnet_id.as_str())
                && matches(&f.net_ids, s.net_id.as_str())
                && matches(&f.ip_ranges, &s.ip_range)
                && matches(&f.states, &s.state)
                && matches(&f.subregion_names, &s.subregion_name)
                && tags_match(&tag_pairs(tags), &f.tag_keys, &f.tag_values, &f.tags)
        })
        .map(|(s, t)| {
            let view = subnet_view(&s, t);
            (s, view)
        })
        .filter(|(_, v)| matches(&f.available_ips_counts, &v.available_ips_count.unwrap_or(0)))
        .collect();
    let (page, next) = paginate(items, req.next_page_token.as_deref(), req.results_per_page, |(s, _)| {
        created_key(&s.created_at, s.subnet_id.as_str())
    })?;
    let page = page.into_iter().map(|(_, v)| v).collect();
    Ok(ReadSubnetsResponse { subnets: Some(page), next_page_token: next, ..Default::default() })
}

pub async fn update_subnet(cloud: &Arc<Cloud>, caller: &Caller, req: UpdateSubnetRequest) -> Result<UpdateSubnetResponse, ApiError> {
    let id = SubnetId::parse(&req.subnet_id)?;
    let account = caller.account_id.clone();
    let on = req.map_public_ip_on_launch;
    let (row, tags) = write(cloud, req.dry_run, move |tx| {
        let mut row = owned_subnet(tx, &account, &id)?;
        net_store::set_map_public_ip(tx, &id, on)?;
        row.map_public_ip_on_launch = on;
        let tags = super::resource_tags(tx, id.as_str())?;
        Ok((row, tags))
    })
    .await?;
    if is_dry_run(req.dry_run) {
        return Ok(UpdateSubnetResponse::default());
    }
    Ok(UpdateSubnetResponse { subnet: Some(subnet_view(&row, tags)), ..Default::default() })
}

pub async fn delete_subnet(cloud: &Arc<Cloud>, caller: &Caller, req: DeleteSubnetRequest) -> Result<DeleteSubnetResponse, ApiError> {
    let id = SubnetId::parse(&req.subnet_id)?;
    let account = caller.account_id.clone();
    write(cloud, req.dry_run, move |tx| {
        owned_subnet(tx, &account, &id)?;
        let nics = socle_store::nics::count_in_subnet(tx, &id)?;
        if nics > 0 {
            return Err(ApiError::new(
                ErrorCode::SubnetInUse,
                format!("the subnet {id} still has {nics} NIC(s); delete its VMs and NICs first"),
            ));
        }
        let nat_services = socle_store::nat_services::count_in_subnet(tx, &id)?;
        if nat_services > 0 {
            return Err(ApiError::new(
                ErrorCode::SubnetInUse,
                format!("the subnet {id} still has {nat_services} NAT service(s); delete them first"),
            ));
        }
        socle_store::tags::delete_all_for_resource(tx, id.as_str())?;
        net_store::delete_subnet(tx, &id)?;
        Ok(())
    })
    .await?;
    Ok(DeleteSubnetResponse::default())
}

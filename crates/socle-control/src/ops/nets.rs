//! Nets: private networks (like VPCs) an account creates with an address
//! range of its choice. Two accounts may use the same range: each Net is
//! isolated on the host (its own network namespace, see socle-net).

use std::sync::Arc;

use socle_net::Ipv4Net;
use socle_store::nets::{self as net_store, NetRow};
use socle_store::now_iso;
use socle_types::error::ErrorCode;
use socle_types::ids::{AccountId, NetId};
use socle_types::osc::*;
use socle_types::ApiError;

use super::{is_dry_run, tag_pairs, with_tags, write};
use crate::paging::{created_key, matches, paginate, reject_unsupported_filters, tags_match};
use crate::{Caller, Cloud};

pub(crate) fn net_not_found(id: &str) -> ApiError {
    ApiError::not_found(ErrorCode::NoSuchNet, "Net", id)
}

/// Parses an IP range of a Net or subnet: canonical IPv4 CIDR, /16 to /28
/// as on Outscale.
pub(crate) fn parse_range(field: &str, text: &str) -> Result<Ipv4Net, ApiError> {
    let net: Ipv4Net = text.parse().map_err(|e| ApiError::invalid_value(format!("{field}: {e}")))?;
    if !text.contains('/') {
        return Err(ApiError::invalid_value(format!("{field}: {text:?} is an address, not a range such as 10.0.0.0/16")));
    }
    if !(16..=28).contains(&net.prefix_len()) {
        return Err(ApiError::new(
            ErrorCode::InvalidCidrSize,
            format!("{field}: {text} is a /{}; ranges go from /16 to /28", net.prefix_len()),
        ));
    }
    Ok(net)
}

/// The Net `id` of `account`, or the not-found error (also for another account's).
pub(crate) fn owned_net(conn: &socle_store::Conn, account: &AccountId, id: &NetId) -> Result<NetRow, ApiError> {
    net_store::get_net(conn, account, id)?.ok_or_else(|| net_not_found(id.as_str()))
}

fn net_view(n: &NetRow, tags: Vec<ResourceTag>) -> Net {
    Net {
        dhcp_options_set_id: None,
        ip_range: Some(n.ip_range.clone()),
        net_id: Some(n.net_id.to_string()),
        state: Some(n.state.clone()),
        tags: Some(tags),
        tenancy: Some(n.tenancy.clone()),
    }
}

pub async fn create_net(cloud: &Arc<Cloud>, caller: &Caller, req: CreateNetRequest) -> Result<CreateNetResponse, ApiError> {
    let range = parse_range("IpRange", &req.ip_range)?;
    let tenancy = req.tenancy.clone().unwrap_or_else(|| "default".into());
    if !matches!(tenancy.as_str(), "default" | "dedicated") {
        return Err(ApiError::invalid_value(format!("Tenancy must be default or dedicated, not {tenancy:?}")));
    }
    let account = caller.account_id.clone();
    let row = write(cloud, req.dry_run, move |tx| {
        let row = NetRow {
            net_id: NetId::generate(),
            account_id: account.clone(),
            ip_range: range.to_string(),
            tenancy: tenancy.clone(),
            state: "available".into(),
            vni: net_store::next_vni(tx)?,
            created_at: now_iso(),
        };
        net_store::insert_net(tx, &row)?;
        // Every Net has its "default" group: inbound from its own members, outbound anywhere.
        super::security_groups::ensure_default_group(tx, &account, Some(&row.net_id))?;
        super::route_tables::create_main_table(tx, &account, &row.net_id)?;
        Ok(row)
    })
    .await?;
    if is_dry_run(req.dry_run) {
        return Ok(CreateNetResponse::default());
    }
    Ok(CreateNetResponse { net: Some(net_view(&row, vec![])), ..Default::default() })
}

pub async fn read_nets(cloud: &Arc<Cloud>, caller: &Caller, req: ReadNetsRequest) -> Result<ReadNetsResponse, ApiError> {
    reject_unsupported_filters(&req.filters, &["NetIds", "IpRanges", "States", "IsDefault", "TagKeys", "TagValues", "Tags"])?;
    let f = req.filters.unwrap_or_default();
    let account = caller.account_id.clone();
    let rows = cloud
        .store
        .read(move |c| {
            let rows = net_store::list_nets(c, &account)?;
            with_tags(c, &account, rows, |n| n.net_id.as_str())
        })
        .await?;
    let items: Vec<(NetRow, Vec<ResourceTag>)> = rows
        .into_iter()
        .filter(|(n, tags)| {
            matches(&f.net_ids, n.net_id.as_str())
                && matches(&f.ip_ranges, &n.ip_range)
                && matches(&f.states, &n.state)
                // Socle has no default Net: every Net is one an account made.
                && f.is_default != Some(true)
                && tags_match(&tag_pairs(tags), &f.tag_keys, &f.tag_values, &f.tags)
        })
        .collect();
    let (page, next) = paginate(items, req.next_page_token.as_deref(), req.results_per_page, |(n, _)| {
        created_key(&n.created_at, n.net_id.as_str())
    })?;
    Ok(ReadNetsResponse {
        nets: Some(page.into_iter().map(|(n, t)| net_view(&n, t)).collect()),
        next_page_token: next,
        ..Default::default()
    })
}

pub async fn update_net(cloud: &Arc<Cloud>, caller: &Caller, req: UpdateNetRequest) -> Result<UpdateNetResponse, ApiError> {
    let id = NetId::parse(&req.net_id)?;
    let account = caller.account_id.clone();
    cloud.store.read(move |c| owned_net(c, &account, &id).map(|_| ())).await?;
    // The only thing UpdateNet changes is the DHCP options set, and Socle
    // has none to offer yet: say so rather than pretend.
    Err(ApiError::invalid_value(format!(
        "DhcpOptionsSetId {:?}: DHCP options sets are not supported by this Socle; its Nets use Socle's DHCP",
        req.dhcp_options_set_id
    )))
}

pub async fn delete_net(cloud: &Arc<Cloud>, caller: &Caller, req: DeleteNetRequest) -> Result<DeleteNetResponse, ApiError> {
    let id = NetId::parse(&req.net_id)?;
    let account = caller.account_id.clone();
    write(cloud, req.dry_run, move |tx| {
        owned_net(tx, &account, &id)?;
        let subnets = net_store::subnets_of(tx, &id)?;
        if !subnets.is_empty() {
            let names: Vec<&str> = subnets.iter().map(|s| s.subnet_id.as_str()).collect();
            return Err(ApiError::new(
                ErrorCode::NetInUse,
                format!("the Net {id} still has subnets ({}); delete them first", names.join(", ")),
            ));
        }
        super::net_usage::refuse_if_in_use(tx, &id)?;
        // Refused while groups other than "default" remain; the default one goes with the Net.
        super::security_groups::delete_groups_of_net(tx, &id)?;
        super::route_tables::delete_main_table(tx, &id)?;
        socle_store::tags::delete_all_for_resource(tx, id.as_str())?;
        net_store::delete_net(tx, &id)?;
        Ok(())
    })
    .await?;
    Ok(DeleteNetResponse::default())
}

//! Route tables: CreateRouteTable, ReadRouteTables, DeleteRouteTable,
//! LinkRouteTable, UnlinkRouteTable, CreateRoute, DeleteRoute.
//!
//! Every Net has a main table, made by CreateNet ([`create_main_table`]) and
//! deleted with the Net ([`delete_main_table`]); a subnet uses the table
//! explicitly linked to it, else the main one. Every table shows the local
//! route (the Net's range, `GatewayId: local`), which is never stored: no
//! other route may cover part of the Net's range, and it cannot be deleted.
//! A route targets exactly one of an internet service linked to the Net, a
//! NAT service of the Net, or a NIC of the Net (VmId: that VM's primary
//! NIC); a target that goes away leaves the route as a `blackhole`.

use std::collections::HashMap;
use std::sync::Arc;

use socle_net::Ipv4Net;
use socle_store::nets::{self as net_store, NetRow};
use socle_store::route_tables::{self as rt_store, LinkRow, RouteRow, RouteTableRow, RouteTarget};
use socle_store::{nat_services as nat_store, nics as nic_store, now_iso, Conn};
use socle_types::error::ErrorCode;
use socle_types::ids::{AccountId, InternetServiceId, LinkRouteTableId, NatServiceId, NetId, NicId, RouteTableId, SubnetId, VmId};
use socle_types::osc::*;
use socle_types::ApiError;

use super::internet_services::owned_internet_service;
use super::nat_services::nat_service_not_found;
use super::nets::owned_net;
use super::nics::nic_not_found;
use super::subnets::owned_subnet;
use super::{is_dry_run, resource_tags, tag_pairs, with_tags, write, write_network};
use crate::paging::{created_key, matches, matches_any, paginate, reject_unsupported_filters, tags_match};
use crate::{Caller, Cloud};

/// How OSC names the origin of a route.
const BY_NET: &str = "CreateRouteTable";
const BY_USER: &str = "CreateRoute";

pub(crate) fn route_table_not_found(id: &str) -> ApiError {
    ApiError::not_found(ErrorCode::NoSuchRouteTable, "route table", id)
}

fn owned_table(conn: &Conn, account: &AccountId, id: &RouteTableId) -> Result<RouteTableRow, ApiError> {
    rt_store::get(conn, account, id)?.ok_or_else(|| route_table_not_found(id.as_str()))
}

fn net_range(net: &NetRow) -> Result<Ipv4Net, ApiError> {
    net.ip_range.parse().map_err(|e| ApiError::internal(format!("stored range of {}: {e}", net.net_id)))
}

/// A DestinationIpRange: an IPv4 CIDR written as its network (host bits
/// refused, as for security group rules).
fn canonical_destination(text: &str) -> Result<String, ApiError> {
    super::security_groups::parse_cidr(text)
        .map_err(|e| ApiError::invalid_value(e.details.replacen("IpRange", "DestinationIpRange", 1)))
}

/// A new route's destination, outside the Net's range (the local route
/// covers that range, and only it).
fn parse_destination(text: &str, net: &NetRow) -> Result<Ipv4Net, ApiError> {
    let canonical = canonical_destination(text)?;
    let dest: Ipv4Net = canonical.parse().map_err(|e| ApiError::internal(format!("{canonical}: {e}")))?;
    let range = net_range(net)?;
    if range.contains_net(&dest) {
        return Err(ApiError::invalid_value(format!(
            "DestinationIpRange {dest} is inside the range {range} of the Net {}: the local route covers it",
            net.net_id
        )));
    }
    Ok(dest)
}

// ------------------------------------------------------------------ views

fn local_route(range: &str) -> Route {
    Route {
        creation_method: Some(BY_NET.into()),
        destination_ip_range: Some(range.to_string()),
        gateway_id: Some("local".into()),
        state: Some("active".into()),
        ..Default::default()
    }
}

fn route_view(r: &RouteRow) -> Route {
    Route {
        creation_method: Some(BY_USER.into()),
        destination_ip_range: Some(r.destination.clone()),
        gateway_id: r.gateway_id.as_ref().map(|g| g.to_string()),
        nat_service_id: r.nat_service_id.as_ref().map(|n| n.to_string()),
        nic_id: r.nic_id.as_ref().map(|n| n.to_string()),
        vm_id: r.vm_id.as_ref().map(|v| v.to_string()),
        vm_account_id: r.vm_account_id.as_ref().map(|a| a.to_string()),
        state: Some(if r.blackhole { "blackhole" } else { "active" }.into()),
        ..Default::default()
    }
}

fn table_view(t: &RouteTableRow, range: &str, links: &[&LinkRow], routes: &[&RouteRow], tags: Vec<ResourceTag>) -> RouteTable {
    let main = t.main_link_id.as_ref().map(|id| LinkRouteTable {
        link_route_table_id: Some(id.to_string()),
        main: Some(true),
        net_id: Some(t.net_id.to_string()),
        route_table_id: Some(t.route_table_id.to_string()),
        subnet_id: None,
    });
    let explicit = links.iter().map(|l| LinkRouteTable {
        link_route_table_id: Some(l.link_route_table_id.to_string()),
        main: Some(false),
        net_id: None,
        route_table_id: Some(l.route_table_id.to_string()),
        subnet_id: Some(l.subnet_id.to_string()),
    });
    RouteTable {
        link_route_tables: Some(main.into_iter().chain(explicit).collect()),
        net_id: Some(t.net_id.to_string()),
        route_propagating_virtual_gateways: Some(vec![]),
        route_table_id: Some(t.route_table_id.to_string()),
        routes: Some(std::iter::once(local_route(range)).chain(routes.iter().map(|r| route_view(r))).collect()),
        tags: Some(tags),
    }
}

/// One table as the API shows it, read inside the caller's transaction.
fn load_view(conn: &Conn, t: &RouteTableRow) -> Result<RouteTable, ApiError> {
    let net = owned_net(conn, &t.account_id, &t.net_id)?;
    let links = rt_store::links_of_table(conn, &t.route_table_id)?;
    let routes = rt_store::routes_of_table(conn, &t.route_table_id)?;
    let tags = resource_tags(conn, t.route_table_id.as_str())?;
    Ok(table_view(t, &net.ip_range, &links.iter().collect::<Vec<_>>(), &routes.iter().collect::<Vec<_>>(), tags))
}

// ------------------------------------------------------ shared with Nets

/// The main table of a new Net, with its "Main" link (CreateNet's transaction).
pub(crate) fn create_main_table(tx: &Conn, account: &AccountId, net: &NetId) -> Result<RouteTableRow, ApiError> {
    let row = RouteTableRow {
        route_table_id: RouteTableId::generate(),
        account_id: account.clone(),
        net_id: net.clone(),
        main_link_id: Some(LinkRouteTableId::generate()),
        created_at: now_iso(),
    };
    rt_store::insert_table(tx, &row)?;
    Ok(row)
}

/// Deletes the main table of a Net about to be deleted (with its routes
/// and tags). Other tables must be gone already ([`super::net_usage`]).
pub(crate) fn delete_main_table(tx: &Conn, net: &NetId) -> Result<(), ApiError> {
    if let Some(main) = rt_store::main_of(tx, net)? {
        socle_store::tags::delete_all_for_resource(tx, main.route_table_id.as_str())?;
        rt_store::delete_table(tx, &main.route_table_id)?;
    }
    Ok(())
}

// ----------------------------------------------------------- operations

pub async fn create_route_table(cloud: &Arc<Cloud>, caller: &Caller, req: CreateRouteTableRequest) -> Result<CreateRouteTableResponse, ApiError> {
    let net_id = NetId::parse(&req.net_id)?;
    let account = caller.account_id.clone();
    let view = write(cloud, req.dry_run, move |tx| {
        let net = owned_net(tx, &account, &net_id)?;
        let row = RouteTableRow {
            route_table_id: RouteTableId::generate(),
            account_id: account.clone(),
            net_id: net_id.clone(),
            main_link_id: None,
            created_at: now_iso(),
        };
        rt_store::insert_table(tx, &row)?;
        Ok(table_view(&row, &net.ip_range, &[], &[], vec![]))
    })
    .await?;
    if is_dry_run(req.dry_run) {
        return Ok(CreateRouteTableResponse::default());
    }
    Ok(CreateRouteTableResponse { route_table: Some(view), ..Default::default() })
}

pub async fn read_route_tables(cloud: &Arc<Cloud>, caller: &Caller, req: ReadRouteTablesRequest) -> Result<ReadRouteTablesResponse, ApiError> {
    reject_unsupported_filters(
        &req.filters,
        &[
            "LinkRouteTableIds", "LinkRouteTableLinkRouteTableIds", "LinkRouteTableMain", "LinkSubnetIds", "NetIds",
            "RouteCreationMethods", "RouteDestinationIpRanges", "RouteDestinationServiceIds", "RouteGatewayIds",
            "RouteNatServiceIds", "RouteNetPeeringIds", "RouteStates", "RouteTableIds", "RouteVmIds", "TagKeys",
            "TagValues", "Tags",
        ],
    )?;
    let f = req.filters.unwrap_or_default();
    let account = caller.account_id.clone();
    let items: Vec<(RouteTableRow, RouteTable)> = cloud
        .store
        .read(move |c| {
            let ranges: HashMap<NetId, String> =
                net_store::list_nets(c, &account)?.into_iter().map(|n| (n.net_id, n.ip_range)).collect();
            let links = rt_store::links_of_account(c, &account)?;
            let routes = rt_store::routes_of_account(c, &account)?;
            let tables = with_tags(c, &account, rt_store::list(c, &account)?, |t| t.route_table_id.as_str())?;
            let mut out = Vec::with_capacity(tables.len());
            for (t, tags) in tables {
                let pairs = tag_pairs(&tags);
                let mine = |id: &RouteTableId| *id == t.route_table_id;
                let v = table_view(
                    &t,
                    ranges.get(&t.net_id).map(String::as_str).unwrap_or_default(),
                    &links.iter().filter(|l| mine(&l.route_table_id)).collect::<Vec<_>>(),
                    &routes.iter().filter(|r| mine(&r.route_table_id)).collect::<Vec<_>>(),
                    tags,
                );
                if tags_match(&pairs, &f.tag_keys, &f.tag_values, &f.tags) && view_matches(&v, &f) {
                    out.push((t, v));
                }
            }
            Ok::<_, ApiError>(out)
        })
        .await?;
    let (page, next) = paginate(items, req.next_page_token.as_deref(), req.results_per_page, |(t, _)| {
        created_key(&t.created_at, t.route_table_id.as_str())
    })?;
    Ok(ReadRouteTablesResponse {
        route_tables: Some(page.into_iter().map(|(_, v)| v).collect()),
        next_page_token: next,
        ..Default::default()
    })
}

/// The non-tag filters, on the view: a filter on links or routes matches
/// a table when one of its links or routes matches.
fn view_matches(v: &RouteTable, f: &FiltersRouteTable) -> bool {
    let links = v.link_route_tables.as_deref().unwrap_or_default();
    let routes = v.routes.as_deref().unwrap_or_default();
    let of_links = |get: fn(&LinkRouteTable) -> Option<&String>| links.iter().filter_map(get).map(String::as_str);
    let of_routes = |get: fn(&Route) -> Option<&String>| routes.iter().filter_map(get).map(String::as_str);
    matches(&f.route_table_ids, v.route_table_id.as_deref().unwrap_or_default())
        && matches(&f.net_ids, v.net_id.as_deref().unwrap_or_default())
        && matches_any(&f.link_route_table_ids, of_links(|l| l.route_table_id.as_ref()))
        && matches_any(&f.link_route_table_link_route_table_ids, of_links(|l| l.link_route_table_id.as_ref()))
        && matches_any(&f.link_subnet_ids, of_links(|l| l.subnet_id.as_ref()))
        && f.link_route_table_main.is_none_or(|main| links.iter().any(|l| l.main == Some(main)))
        && matches_any(&f.route_creation_methods, of_routes(|r| r.creation_method.as_ref()))
        && matches_any(&f.route_destination_ip_ranges, of_routes(|r| r.destination_ip_range.as_ref()))
        && matches_any(&f.route_destination_service_ids, of_routes(|r| r.destination_service_id.as_ref()))
        && matches_any(&f.route_gateway_ids, of_routes(|r| r.gateway_id.as_ref()))
        && matches_any(&f.route_nat_service_ids, of_routes(|r| r.nat_service_id.as_ref()))
        && matches_any(&f.route_net_peering_ids, of_routes(|r| r.net_peering_id.as_ref()))
        && matches_any(&f.route_states, of_routes(|r| r.state.as_ref()))
        && matches_any(&f.route_vm_ids, of_routes(|r| r.vm_id.as_ref()))
}

pub async fn delete_route_table(cloud: &Arc<Cloud>, caller: &Caller, req: DeleteRouteTableRequest) -> Result<DeleteRouteTableResponse, ApiError> {
    let id = RouteTableId::parse(&req.route_table_id)?;
    let account = caller.account_id.clone();
    write(cloud, req.dry_run, move |tx| {
        let t = owned_table(tx, &account, &id)?;
        if t.is_main() {
            return Err(ApiError::new(
                ErrorCode::ResourceConflict,
                format!("{id} is the main route table of the Net {}: it goes with its Net", t.net_id),
            ));
        }
        let links = rt_store::links_of_table(tx, &id)?;
        if !links.is_empty() {
            let subnets: Vec<&str> = links.iter().map(|l| l.subnet_id.as_str()).collect();
            return Err(ApiError::new(
                ErrorCode::SubnetAlreadyLinked,
                format!("the route table {id} is linked to {}; unlink it first (UnlinkRouteTable)", subnets.join(", ")),
            ));
        }
        socle_store::tags::delete_all_for_resource(tx, id.as_str())?;
        rt_store::delete_table(tx, &id)?;
        Ok(())
    })
    .await?;
    Ok(DeleteRouteTableResponse::default())
}

pub async fn link_route_table(cloud: &Arc<Cloud>, caller: &Caller, req: LinkRouteTableRequest) -> Result<LinkRouteTableResponse, ApiError> {
    let id = RouteTableId::parse(&req.route_table_id)?;
    let subnet_id = SubnetId::parse(&req.subnet_id)?;
    let account = caller.account_id.clone();
    let link = write_network(cloud, req.dry_run, move |tx| {
        let t = owned_table(tx, &account, &id)?;
        let subnet = owned_subnet(tx, &account, &subnet_id)?;
        if subnet.net_id != t.net_id {
            return Err(ApiError::invalid_value(format!(
                "the subnet {subnet_id} is in the Net {} but the route table {id} in the Net {}",
                subnet.net_id, t.net_id
            )));
        }
        if let Some(l) = rt_store::links_of_account(tx, &account)?.into_iter().find(|l| l.subnet_id == subnet_id) {
            return Err(ApiError::new(
                ErrorCode::SubnetAlreadyLinked,
                format!(
                    "the subnet {subnet_id} is linked to the route table {} already ({}); unlink it first",
                    l.route_table_id, l.link_route_table_id
                ),
            ));
        }
        let link = LinkRow { link_route_table_id: LinkRouteTableId::generate(), route_table_id: id.clone(), subnet_id: subnet_id.clone(), created_at: now_iso() };
        rt_store::insert_link(tx, &link)?;
        Ok(link.link_route_table_id)
    })
    .await?;
    if is_dry_run(req.dry_run) {
        return Ok(LinkRouteTableResponse::default());
    }
    Ok(LinkRouteTableResponse { link_route_table_id: Some(link.to_string()), ..Default::default() })
}

pub async fn unlink_route_table(cloud: &Arc<Cloud>, caller: &Caller, req: UnlinkRouteTableRequest) -> Result<UnlinkRouteTableResponse, ApiError> {
    let id = LinkRouteTableId::parse(&req.link_route_table_id)?;
    let account = caller.account_id.clone();
    write_network(cloud, req.dry_run, move |tx| {
        if rt_store::get_link(tx, &account, &id)?.is_none() {
            if let Some(main) = rt_store::list(tx, &account)?.into_iter().find(|t| t.main_link_id.as_ref() == Some(&id)) {
                return Err(ApiError::new(
                    ErrorCode::ResourceConflict,
                    format!("{id} is the main link of the Net {}: a Net always has its main route table", main.net_id),
                ));
            }
            return Err(ApiError::not_found(ErrorCode::NoSuchLink, "route table link", id.as_str()));
        }
        rt_store::delete_link(tx, &id)?;
        Ok(())
    })
    .await?;
    Ok(UnlinkRouteTableResponse::default())
}

/// The target a CreateRoute request names, checked to be the caller's and
/// in the table's Net.
fn resolve_target(tx: &Conn, account: &AccountId, t: &RouteTableRow, req: &CreateRouteRequest) -> Result<RouteTarget, ApiError> {
    let given = [
        ("GatewayId", req.gateway_id.is_some()),
        ("NatServiceId", req.nat_service_id.is_some()),
        ("NicId", req.nic_id.is_some()),
        ("VmId", req.vm_id.is_some()),
        ("NetPeeringId", req.net_peering_id.is_some()),
    ];
    let names: Vec<&str> = given.iter().filter(|(_, g)| *g).map(|(n, _)| *n).collect();
    if names.len() != 1 {
        return Err(if names.is_empty() {
            ApiError::missing("GatewayId, NatServiceId, NicId or VmId (the route's target)")
        } else {
            ApiError::invalid_value(format!("a route has one target; got {}", names.join(" and ")))
        });
    }
    let in_net = |net: Option<&NetId>, what: &str| -> Result<(), ApiError> {
        if net != Some(&t.net_id) {
            return Err(ApiError::invalid_value(format!("{what} is not in the Net {} of the route table {}", t.net_id, t.route_table_id)));
        }
        Ok(())
    };
    if let Some(g) = &req.gateway_id {
        let id = InternetServiceId::parse(g)?;
        let igw = owned_internet_service(tx, account, &id)?;
        if igw.net_id.as_ref() != Some(&t.net_id) {
            return Err(ApiError::new(
                ErrorCode::GatewayNotLinked,
                format!("the internet service {id} is not linked to the Net {} of the route table", t.net_id),
            ));
        }
        return Ok(RouteTarget::Gateway(id));
    }
    if let Some(n) = &req.nat_service_id {
        let id = NatServiceId::parse(n)?;
        let nat = nat_store::get(tx, account, &id)?.ok_or_else(|| nat_service_not_found(id.as_str()))?;
        in_net(Some(&nat.net_id), &format!("the NAT service {id}"))?;
        return Ok(RouteTarget::NatService(id));
    }
    if let Some(n) = &req.nic_id {
        let id = NicId::parse(n)?;
        let nic = nic_store::get(tx, account, &id)?.ok_or_else(|| nic_not_found(id.as_str()))?;
        in_net(nic.net_id.as_ref(), &format!("the NIC {id}"))?;
        return Ok(RouteTarget::Nic(id));
    }
    if let Some(v) = &req.vm_id {
        let nic = super::public_ips::primary_nic(tx, account, &VmId::parse(v)?)?;
        in_net(nic.net_id.as_ref(), &format!("the VM {v}"))?;
        return Ok(RouteTarget::Nic(nic.nic_id));
    }
    Err(ApiError::invalid_value("NetPeeringId: Net peerings are not supported by this Socle version"))
}

pub async fn create_route(cloud: &Arc<Cloud>, caller: &Caller, req: CreateRouteRequest) -> Result<CreateRouteResponse, ApiError> {
    let id = RouteTableId::parse(&req.route_table_id)?;
    let account = caller.account_id.clone();
    let dry_run = req.dry_run;
    let view = write_network(cloud, dry_run, move |tx| {
        let t = owned_table(tx, &account, &id)?;
        let net = owned_net(tx, &account, &t.net_id)?;
        let dest = parse_destination(&req.destination_ip_range, &net)?;
        let target = resolve_target(tx, &account, &t, &req)?;
        rt_store::insert_route(tx, &id, &dest.to_string(), &target, &now_iso()).map_err(|e| {
            if e.is_unique_violation() {
                ApiError::new(ErrorCode::RouteAlreadyExists, format!("the route table {id} has a route to {dest} already"))
            } else {
                e.into()
            }
        })?;
        load_view(tx, &t)
    })
    .await?;
    if is_dry_run(dry_run) {
        return Ok(CreateRouteResponse::default());
    }
    Ok(CreateRouteResponse { route_table: Some(view), ..Default::default() })
}

pub async fn delete_route(cloud: &Arc<Cloud>, caller: &Caller, req: DeleteRouteRequest) -> Result<DeleteRouteResponse, ApiError> {
    let id = RouteTableId::parse(&req.route_table_id)?;
    let account = caller.account_id.clone();
    let view = write_network(cloud, req.dry_run, move |tx| {
        let t = owned_table(tx, &account, &id)?;
        let net = owned_net(tx, &account, &t.net_id)?;
        let dest = canonical_destination(&req.destination_ip_range)?;
        if dest == net.ip_range {
            return Err(ApiError::invalid_value(format!("{dest} is the local route of the Net {}: it cannot be deleted", net.net_id)));
        }
        if !rt_store::delete_route(tx, &id, &dest)? {
            return Err(ApiError::new(ErrorCode::NoSuchRoute, format!("the route table {id} has no route to {dest}")));
        }
        load_view(tx, &t)
    })
    .await?;
    if is_dry_run(req.dry_run) {
        return Ok(DeleteRouteResponse::default());
    }
    Ok(DeleteRouteResponse { route_table: Some(view), ..Default::default() })
}

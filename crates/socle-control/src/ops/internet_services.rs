//! Internet services: CreateInternetService, ReadInternetServices,
//! DeleteInternetService, LinkInternetService, UnlinkInternetService.
//!
//! An internet service gives the Net it is linked to its uplink (public
//! IPs, NAT services, routes to it). A Net has at most one (a UNIQUE
//! column); a linked service cannot be deleted, and cannot be unlinked
//! while the Net has public IPs linked or NAT services, which would be
//! left without a way out.

use std::sync::Arc;

use socle_store::internet_services::{self as igw_store, InternetServiceRow};
use socle_store::{nat_services as nat_store, now_iso, public_ips as ip_store, Conn};
use socle_types::error::ErrorCode;
use socle_types::ids::{AccountId, InternetServiceId, NetId};
use socle_types::osc::*;
use socle_types::ApiError;

use super::nets::owned_net;
use super::{is_dry_run, list_with_tags, tag_pairs, write, write_network};
use crate::paging::{created_key, matches, matches_opt, paginate, reject_unsupported_filters, tags_match};
use crate::{Caller, Cloud};

pub(crate) fn internet_service_not_found(id: &str) -> ApiError {
    ApiError::not_found(ErrorCode::NoSuchInternetService, "internet service", id)
}

pub(crate) fn owned_internet_service(
    conn: &Conn,
    account: &AccountId,
    id: &InternetServiceId,
) -> Result<InternetServiceRow, ApiError> {
    igw_store::get(conn, account, id)?.ok_or_else(|| internet_service_not_found(id.as_str()))
}

fn view(row: &InternetServiceRow, tags: Vec<ResourceTag>) -> InternetService {
    InternetService {
        internet_service_id: Some(row.internet_service_id.to_string()),
        net_id: row.net_id.as_ref().map(|n| n.to_string()),
        // The state of the link: shown only while linked, as on Outscale.
        state: row.net_id.as_ref().map(|_| "available".to_string()),
        tags: Some(tags),
    }
}

pub async fn create_internet_service(
    cloud: &Arc<Cloud>,
    caller: &Caller,
    req: CreateInternetServiceRequest,
) -> Result<CreateInternetServiceResponse, ApiError> {
    let account = caller.account_id.clone();
    let row = write(cloud, req.dry_run, move |tx| {
        let row = InternetServiceRow {
            internet_service_id: InternetServiceId::generate(),
            account_id: account.clone(),
            net_id: None,
            created_at: now_iso(),
        };
        igw_store::insert(tx, &row)?;
        Ok(row)
    })
    .await?;
    if is_dry_run(req.dry_run) {
        return Ok(CreateInternetServiceResponse::default());
    }
    Ok(CreateInternetServiceResponse { internet_service: Some(view(&row, vec![])), ..Default::default() })
}

pub async fn read_internet_services(
    cloud: &Arc<Cloud>,
    caller: &Caller,
    req: ReadInternetServicesRequest,
) -> Result<ReadInternetServicesResponse, ApiError> {
    reject_unsupported_filters(&req.filters, &["InternetServiceIds", "LinkNetIds", "LinkStates", "TagKeys", "TagValues", "Tags"])?;
    let f = req.filters.unwrap_or_default();
    let rows = list_with_tags(cloud, &caller.account_id, igw_store::list, |r| r.internet_service_id.as_str()).await?;
    let items: Vec<(InternetServiceRow, Vec<ResourceTag>)> = rows
        .into_iter()
        .filter(|(r, tags)| {
            matches(&f.internet_service_ids, r.internet_service_id.as_str())
                && matches_opt(&f.link_net_ids, r.net_id.as_ref().map(|n| n.as_str()))
                && matches_opt(&f.link_states, r.net_id.as_ref().map(|_| "available"))
                && tags_match(&tag_pairs(tags), &f.tag_keys, &f.tag_values, &f.tags)
        })
        .collect();
    let (page, next) = paginate(items, req.next_page_token.as_deref(), req.results_per_page, |(r, _)| {
        created_key(&r.created_at, r.internet_service_id.as_str())
    })?;
    Ok(ReadInternetServicesResponse {
        internet_services: Some(page.into_iter().map(|(r, t)| view(&r, t)).collect()),
        next_page_token: next,
        ..Default::default()
    })
}

pub async fn delete_internet_service(
    cloud: &Arc<Cloud>,
    caller: &Caller,
    req: DeleteInternetServiceRequest,
) -> Result<DeleteInternetServiceResponse, ApiError> {
    let id = InternetServiceId::parse(&req.internet_service_id)?;
    let account = caller.account_id.clone();
    write(cloud, req.dry_run, move |tx| {
        let row = owned_internet_service(tx, &account, &id)?;
        if let Some(net) = &row.net_id {
            return Err(ApiError::new(
                ErrorCode::GatewayAlreadyLinked,
                format!("the internet service {id} is linked to the Net {net}; unlink it first (UnlinkInternetService)"),
            ));
        }
        socle_store::tags::delete_all_for_resource(tx, id.as_str())?;
        igw_store::delete(tx, &id)?;
        Ok(())
    })
    .await?;
    Ok(DeleteInternetServiceResponse::default())
}

/// Runs `change` on the caller's internet service and Net named by a
/// Link/UnlinkInternetService request (both checked to be the caller's),
/// in one write transaction that tells the network reconciler.
async fn change_link<F>(cloud: &Arc<Cloud>, caller: &Caller, igw: &str, net: &str, dry_run: Option<bool>, change: F) -> Result<(), ApiError>
where
    F: Fn(&Conn, InternetServiceRow, NetId) -> Result<(), ApiError> + Send + 'static,
{
    let id = InternetServiceId::parse(igw)?;
    let net_id = NetId::parse(net)?;
    let account = caller.account_id.clone();
    write_network(cloud, dry_run, move |tx| {
        let row = owned_internet_service(tx, &account, &id)?;
        owned_net(tx, &account, &net_id)?;
        change(tx, row, net_id.clone())
    })
    .await
}

pub async fn link_internet_service(
    cloud: &Arc<Cloud>,
    caller: &Caller,
    req: LinkInternetServiceRequest,
) -> Result<LinkInternetServiceResponse, ApiError> {
    change_link(cloud, caller, &req.internet_service_id, &req.net_id, req.dry_run, |tx, row, net_id| {
        let id = &row.internet_service_id;
        if let Some(linked) = &row.net_id {
            return Err(ApiError::new(
                ErrorCode::GatewayAlreadyLinked,
                format!("the internet service {id} is already linked to the Net {linked}"),
            ));
        }
        if let Some(other) = igw_store::linked_to_net(tx, &net_id)? {
            return Err(ApiError::new(
                ErrorCode::GatewayAlreadyLinked,
                format!("the Net {net_id} has the internet service {} already; a Net has one at most", other.internet_service_id),
            ));
        }
        igw_store::set_net(tx, id, Some(&net_id))?;
        Ok(())
    })
    .await?;
    Ok(LinkInternetServiceResponse::default())
}

pub async fn unlink_internet_service(
    cloud: &Arc<Cloud>,
    caller: &Caller,
    req: UnlinkInternetServiceRequest,
) -> Result<UnlinkInternetServiceResponse, ApiError> {
    change_link(cloud, caller, &req.internet_service_id, &req.net_id, req.dry_run, |tx, row, net_id| {
        let id = &row.internet_service_id;
        if row.net_id.as_ref() != Some(&net_id) {
            return Err(ApiError::new(
                ErrorCode::GatewayNotLinked,
                format!("the internet service {id} is not linked to the Net {net_id}"),
            ));
        }
        // What only works through the uplink must go first.
        let public_ips = ip_store::count_linked_in_net(tx, &net_id)?;
        let nat_services = nat_store::of_net(tx, &net_id)?;
        if public_ips > 0 || !nat_services.is_empty() {
            return Err(ApiError::new(
                ErrorCode::ResourceConflict,
                format!(
                    "the Net {net_id} still has {public_ips} public IP(s) linked and {} NAT service(s), which need its \
                     internet service; unlink and delete them first",
                    nat_services.len()
                ),
            ));
        }
        igw_store::set_net(tx, id, None)?;
        Ok(())
    })
    .await?;
    Ok(UnlinkInternetServiceResponse::default())
}

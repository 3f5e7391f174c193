//! NAT services: CreateNatService, ReadNatServices, DeleteNatService.
//!
//! A NAT service lives in a subnet of a Net that has an internet service
//! linked, and sends out (SNAT) through one public IP of the caller that
//! nothing else uses; subnets reach it by a route (CreateRoute with
//! NatServiceId). It is `available` at once: the network reconciler does
//! the host work. A deleted one leaves no row (no `deleted` state kept),
//! and its public IP is free again. ClientToken makes creation idempotent,
//! as for CreateVolume: the same token gives back the same NAT service.

use std::sync::Arc;

use socle_store::nat_services::{self as nat_store, NatServiceRow};
use socle_store::{internet_services as igw_store, now_iso, public_ips as ip_store};
use socle_types::error::ErrorCode;
use socle_types::ids::{NatServiceId, PublicIpId, SubnetId};
use socle_types::osc::*;
use socle_types::ApiError;

use super::public_ips::public_ip_not_found;
use super::subnets::owned_subnet;
use super::{is_dry_run, list_with_tags, tag_pairs, write_network};
use crate::paging::{created_key, matches, matches_opt, paginate, reject_unsupported_filters, tags_match};
use crate::{Caller, Cloud};

/// NAT services per Net (AWS allows 5 per availability zone; a Net here
/// lives in one subregion).
pub(crate) const MAX_PER_NET: usize = 5;

pub(crate) fn nat_service_not_found(id: &str) -> ApiError {
    ApiError::not_found(ErrorCode::NoSuchNatService, "NAT service", id)
}

fn view(n: &NatServiceRow, tags: Vec<ResourceTag>) -> NatService {
    NatService {
        client_token: n.client_token.clone(),
        nat_service_id: Some(n.nat_service_id.to_string()),
        net_id: Some(n.net_id.to_string()),
        public_ips: Some(vec![PublicIpLight {
            public_ip: Some(n.public_ip.clone()),
            public_ip_id: Some(n.public_ip_id.to_string()),
        }]),
        state: Some(n.state.clone()),
        subnet_id: Some(n.subnet_id.to_string()),
        tags: Some(tags),
    }
}

pub async fn create_nat_service(cloud: &Arc<Cloud>, caller: &Caller, req: CreateNatServiceRequest) -> Result<CreateNatServiceResponse, ApiError> {
    let subnet_id = SubnetId::parse(&req.subnet_id)?;
    let public_ip_id = PublicIpId::parse(&req.public_ip_id)?;
    let account = caller.account_id.clone();
    let token = req.client_token.clone();
    let (row, tags) = write_network(cloud, req.dry_run, move |tx| {
        if let Some(existing) = token.as_deref().map(|t| nat_store::by_client_token(tx, &account, t)).transpose()?.flatten() {
            let tags = super::resource_tags(tx, existing.nat_service_id.as_str())?;
            return Ok((existing, tags));
        }
        let subnet = owned_subnet(tx, &account, &subnet_id)?;
        let ip = ip_store::get(tx, &account, &public_ip_id)?.ok_or_else(|| public_ip_not_found(public_ip_id.as_str()))?;
        if let Some(user) = ip.nat_service_id.as_ref().map(|n| format!("the NAT service {n}")).or(ip.nic_id.as_ref().map(|n| format!("the NIC {n}"))) {
            return Err(ApiError::new(
                ErrorCode::PublicIpLinked,
                format!("the public IP {} is used by {user}; a NAT service needs one of its own", ip.public_ip),
            ));
        }
        if igw_store::linked_to_net(tx, &subnet.net_id)?.is_none() {
            return Err(ApiError::new(
                ErrorCode::NotPublicSubnet,
                format!(
                    "the Net {} of the subnet {subnet_id} has no internet service linked: a NAT service needs one",
                    subnet.net_id
                ),
            ));
        }
        if nat_store::of_net(tx, &subnet.net_id)?.len() >= MAX_PER_NET {
            return Err(ApiError::new(
                ErrorCode::TooManyNatServices,
                format!("the Net {} has {MAX_PER_NET} NAT services already, the most it may have", subnet.net_id),
            ));
        }
        let row = NatServiceRow {
            nat_service_id: NatServiceId::generate(),
            account_id: account.clone(),
            net_id: subnet.net_id,
            subnet_id: subnet_id.clone(),
            public_ip_id: public_ip_id.clone(),
            public_ip: ip.public_ip,
            client_token: token.clone(),
            state: "available".into(),
            created_at: now_iso(),
        };
        nat_store::insert(tx, &row)?;
        Ok((row, vec![]))
    })
    .await?;
    if is_dry_run(req.dry_run) {
        return Ok(CreateNatServiceResponse::default());
    }
    Ok(CreateNatServiceResponse { nat_service: Some(view(&row, tags)), ..Default::default() })
}

pub async fn read_nat_services(cloud: &Arc<Cloud>, caller: &Caller, req: ReadNatServicesRequest) -> Result<ReadNatServicesResponse, ApiError> {
    reject_unsupported_filters(
        &req.filters,
        &["ClientTokens", "NatServiceIds", "NetIds", "States", "SubnetIds", "TagKeys", "TagValues", "Tags"],
    )?;
    let f = req.filters.unwrap_or_default();
    let rows = list_with_tags(cloud, &caller.account_id, nat_store::list, |n| n.nat_service_id.as_str()).await?;
    let items: Vec<(NatServiceRow, Vec<ResourceTag>)> = rows
        .into_iter()
        .filter(|(n, tags)| {
            matches(&f.nat_service_ids, n.nat_service_id.as_str())
                && matches_opt(&f.client_tokens, n.client_token.as_deref())
                && matches(&f.net_ids, n.net_id.as_str())
                && matches(&f.states, &n.state)
                && matches(&f.subnet_ids, n.subnet_id.as_str())
                && tags_match(&tag_pairs(tags), &f.tag_keys, &f.tag_values, &f.tags)
        })
        .collect();
    let (page, next) = paginate(items, req.next_page_token.as_deref(), req.results_per_page, |(n, _)| {
        created_key(&n.created_at, n.nat_service_id.as_str())
    })?;
    Ok(ReadNatServicesResponse {
        nat_services: Some(page.into_iter().map(|(n, t)| view(&n, t)).collect()),
        next_page_token: next,
        ..Default::default()
    })
}

pub async fn delete_nat_service(cloud: &Arc<Cloud>, caller: &Caller, req: DeleteNatServiceRequest) -> Result<DeleteNatServiceResponse, ApiError> {
    let id = NatServiceId::parse(&req.nat_service_id)?;
    let account = caller.account_id.clone();
    write_network(cloud, req.dry_run, move |tx| {
        nat_store::get(tx, &account, &id)?.ok_or_else(|| nat_service_not_found(id.as_str()))?;
        socle_store::tags::delete_all_for_resource(tx, id.as_str())?;
        nat_store::delete(tx, &id)?;
        Ok(())
    })
    .await?;
    Ok(DeleteNatServiceResponse::default())
}

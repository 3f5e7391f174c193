//! Tags on the caller's resources.

use std::sync::Arc;

use socle_store::tags::{self as tag_store, TagRow, MAX_TAGS_PER_RESOURCE};
use socle_store::{images as image_store, keypairs as keypair_store, security_groups as sg_store, vms as vm_store, snapshots as snapshot_store, volumes as volume_store, Conn};
use socle_types::error::ErrorCode;
use socle_types::ids::{
    AccountId, ImageId, InternetServiceId, KeypairId, NatServiceId, NetId, NicId, PublicIpId, RouteTableId, SecurityGroupId, SnapshotId,
    SubnetId, VmId, VolumeId,
};
use socle_types::osc::*;
use socle_types::ApiError;

use super::write;
use crate::paging::{matches, paginate, reject_unsupported_filters};
use crate::{Caller, Cloud};

/// Checks that `id` names a resource of `account` and returns its OSC
/// resource type. Absent and foreign resources give the same error.
fn owned_resource_type(conn: &Conn, account: &AccountId, id: &str) -> Result<&'static str, ApiError> {
    let prefix = id.split('-').next().unwrap_or("");
    // Each kind answers with its own not-found code, as its Read/Delete operations do.
    let (found, code, what) = match prefix {
        "i" => (vm_store::get(conn, account, &VmId::parse(id)?)?.map(|_| "instance"), ErrorCode::NoSuchVm, "VM"),
        "key" => (
            keypair_store::get(conn, account, &KeypairId::parse(id)?)?.map(|_| "keypair"),
            ErrorCode::NoSuchKeypair,
            "keypair",
        ),
        "vol" => (
            volume_store::get(conn, account, &VolumeId::parse(id)?)?.map(|_| "volume"),
            ErrorCode::NoSuchVolume,
            "volume",
        ),
        "snap" => (
            snapshot_store::get_owned(conn, account, &SnapshotId::parse(id)?)?.map(|_| "snapshot"),
            ErrorCode::NoSuchSnapshot,
            "snapshot",
        ),
        "vpc" => (
            socle_store::nets::get_net(conn, account, &NetId::parse(id)?)?.map(|_| "vpc"),
            ErrorCode::NoSuchNet,
            "Net",
        ),
        "subnet" => (
            socle_store::nets::get_subnet(conn, account, &SubnetId::parse(id)?)?.map(|_| "subnet"),
            ErrorCode::NoSuchSubnet,
            "subnet",
        ),
        "ami" => (
            image_store::get_visible(conn, account, &ImageId::parse(id)?)?
                .filter(|i| i.account_id == *account)
                .map(|_| "image"),
            ErrorCode::NoSuchImage,
            "image",
        ),
        "sg" => (
            sg_store::get(conn, account, &SecurityGroupId::parse(id)?)?.map(|_| "security-group"),
            ErrorCode::NoSuchSecurityGroup,
            "security group",
        ),
        "igw" => (
            socle_store::internet_services::get(conn, account, &InternetServiceId::parse(id)?)?.map(|_| "internet-gateway"),
            ErrorCode::NoSuchInternetService,
            "internet service",
        ),
        "rtb" => (
            socle_store::route_tables::get(conn, account, &RouteTableId::parse(id)?)?.map(|_| "route-table"),
            ErrorCode::NoSuchRouteTable,
            "route table",
        ),
        "eipalloc" => (
            socle_store::public_ips::get(conn, account, &PublicIpId::parse(id)?)?.map(|_| "public-ip"),
            ErrorCode::NoSuchPublicIp,
            "public IP",
        ),
        "eni" => (
            socle_store::nics::get(conn, account, &NicId::parse(id)?)?.map(|_| "network-interface"),
            ErrorCode::NoSuchNic,
            "NIC",
        ),
        "nat" => (
            socle_store::nat_services::get(conn, account, &NatServiceId::parse(id)?)?.map(|_| "natgateway"),
            ErrorCode::NoSuchNatService,
            "NAT service",
        ),
        _ => {
            return Err(ApiError::new(
                ErrorCode::InvalidIdPrefix,
                format!("{id:?} is not the ID of a taggable resource (VM, volume, snapshot, image, keypair, Net, subnet, security group, internet service, route table, public IP, NIC or NAT service)"),
            ))
        }
    };
    found.ok_or_else(|| ApiError::not_found(code, what, id))
}

fn validate_tag(tag: &ResourceTag) -> Result<(), ApiError> {
    if tag.key.is_empty() || tag.key.len() > 255 {
        return Err(ApiError::new(ErrorCode::InvalidParameterValueLength, "a tag Key must be 1 to 255 characters"));
    }
    if tag.key.starts_with("osc:") || tag.key.starts_with("aws:") {
        return Err(ApiError::invalid_value("tag keys starting with osc: or aws: are reserved"));
    }
    if tag.value.len() > 255 {
        return Err(ApiError::new(ErrorCode::InvalidParameterValueLength, "a tag Value must be at most 255 characters"));
    }
    Ok(())
}

fn require_non_empty<T>(list: &[T], name: &str) -> Result<(), ApiError> {
    if list.is_empty() {
        return Err(ApiError::missing(name));
    }
    Ok(())
}

pub async fn create_tags(cloud: &Arc<Cloud>, caller: &Caller, req: CreateTagsRequest) -> Result<CreateTagsResponse, ApiError> {
    require_non_empty(&req.resource_ids, "ResourceIds")?;
    require_non_empty(&req.tags, "Tags")?;
    req.tags.iter().try_for_each(validate_tag)?;
    let account = caller.account_id.clone();
    write(cloud, req.dry_run, move |tx| {
        for id in &req.resource_ids {
            let resource_type = owned_resource_type(tx, &account, id)?;
            for tag in &req.tags {
                let row = TagRow {
                    resource_id: id.clone(),
                    resource_type: resource_type.into(),
                    key: tag.key.clone(),
                    value: tag.value.clone(),
                };
                tag_store::upsert(tx, &account, &row)?;
            }
            if tag_store::count_for_resource(tx, id)? > MAX_TAGS_PER_RESOURCE {
                return Err(ApiError::new(
                    ErrorCode::TooManyTags,
                    format!("{id} would have more than {MAX_TAGS_PER_RESOURCE} tags"),
                ));
            }
        }
        Ok(())
    })
    .await?;
    Ok(CreateTagsResponse::default())
}

pub async fn delete_tags(cloud: &Arc<Cloud>, caller: &Caller, req: DeleteTagsRequest) -> Result<DeleteTagsResponse, ApiError> {
    require_non_empty(&req.resource_ids, "ResourceIds")?;
    require_non_empty(&req.tags, "Tags")?;
    let account = caller.account_id.clone();
    write(cloud, req.dry_run, move |tx| {
        for id in &req.resource_ids {
            owned_resource_type(tx, &account, id)?;
            for tag in &req.tags {
                // An empty Value means "whatever the value" (the spec makes Value required).
                let value = (!tag.value.is_empty()).then_some(tag.value.as_str());
                tag_store::delete(tx, &account, id, &tag.key, value)?;
            }
        }
        Ok(())
    })
    .await?;
    Ok(DeleteTagsResponse::default())
}

pub async fn read_tags(cloud: &Arc<Cloud>, caller: &Caller, req: ReadTagsRequest) -> Result<ReadTagsResponse, ApiError> {
    reject_unsupported_filters(&req.filters, &["Keys", "Values", "ResourceIds", "ResourceTypes"])?;
    let f = req.filters.unwrap_or_default();
    let account = caller.account_id.clone();
    let rows = cloud.store.read(move |conn| tag_store::list(conn, &account).map_err(ApiError::from)).await?;
    let items: Vec<TagRow> = rows
        .into_iter()
        .filter(|t| {
            matches(&f.keys, &t.key)
                && matches(&f.values, &t.value)
                && matches(&f.resource_ids, &t.resource_id)
                && matches(&f.resource_types, &t.resource_type)
        })
        .collect();
    let (page, next) = paginate(items, req.next_page_token.as_deref(), req.results_per_page, |t| {
        format!("{}|{}", t.resource_id, t.key)
    })?;
    Ok(ReadTagsResponse {
        tags: Some(
            page.into_iter()
                .map(|t| Tag {
                    key: Some(t.key),
                    value: Some(t.value),
                    resource_id: Some(t.resource_id),
                    resource_type: Some(t.resource_type),
                })
                .collect(),
        ),
        next_page_token: next,
        ..Default::default()
    })
}

//! Snapshots of volumes, and sharing them between accounts.
//!
//! A snapshot is a standalone encrypted copy with its own data key (wrapped
//! by the owner's KEK). Sharing lets another account create volumes from it;
//! the copy it gets is re-encrypted under a key of its own.

use std::sync::Arc;

use socle_store::listing::Listing;
use socle_store::snapshots::{self as snapshot_store, SnapshotRow};
use socle_store::{now_iso, volumes as volume_store};
use socle_types::error::ErrorCode;
use socle_types::ids::{AccountId, SnapshotId, VolumeId};
use socle_types::osc::*;
use socle_types::ApiError;

use super::volumes::volume_not_found;
use super::{is_dry_run, read_page, write, ShareChange};
use crate::paging::{page_request, reject_unsupported_fields, reject_unsupported_filters};
use crate::{custody, Caller, Cloud};

pub(crate) fn snapshot_not_found(id: &str) -> ApiError {
    ApiError::not_found(ErrorCode::NoSuchSnapshot, "snapshot", id)
}

/// The owner sees who it shares with; others only see that it is shared.
fn snapshot_view(s: &SnapshotRow, shares: Vec<String>, viewer: &AccountId, tags: Vec<ResourceTag>) -> Snapshot {
    let owner = s.account_id == *viewer;
    Snapshot {
        account_alias: Some(String::new()),
        account_id: Some(s.account_id.to_string()),
        client_token: s.client_token.clone(),
        creation_date: Some(s.created_at.clone()),
        description: Some(s.description.clone()),
        permissions_to_create_volume: Some(PermissionsOnResource {
            account_ids: Some(if owner { shares } else { vec![] }),
            global_permission: Some(s.is_public),
        }),
        progress: Some(s.progress),
        snapshot_id: Some(s.snapshot_id.to_string()),
        state: Some(s.state.clone()),
        tags: Some(if owner { tags } else { vec![] }),
        volume_id: s.volume_id.clone(),
        volume_size: Some(s.volume_size),
    }
}

pub async fn create_snapshot(cloud: &Arc<Cloud>, caller: &Caller, req: CreateSnapshotRequest) -> Result<CreateSnapshotResponse, ApiError> {
    reject_unsupported_fields(&req, &["FileLocation", "SnapshotSize", "SourceRegionName", "SourceSnapshotId"])?;
    let volume_id = VolumeId::parse(req.volume_id.as_deref().ok_or_else(|| ApiError::missing("VolumeId"))?)?;
    if req.description.as_ref().is_some_and(|d| d.len() > 255) {
        return Err(ApiError::new(ErrorCode::InvalidParameterValueLength, "Description is limited to 255 characters"));
    }
    let account = caller.account_id.clone();
    let actor = caller.actor();
    let cloud2 = cloud.clone();
    let capacity = cloud.config.storage_capacity_gib;
    let row = write(cloud, req.dry_run, move |tx| {
        if let Some(token) = &req.client_token {
            if let Some(s) = snapshot_store::get_by_client_token(tx, &account, token)? {
                return Ok(s);
            }
        }
        let v = volume_store::get(tx, &account, &volume_id)?.ok_or_else(|| volume_not_found(volume_id.as_str()))?;
        if !matches!(v.state.as_str(), "available" | "in-use") || v.pending == "create" {
            return Err(ApiError::new(
                ErrorCode::InvalidVolumeState,
                format!("the volume {volume_id} is {}; snapshots are taken of available or in-use volumes", v.state),
            ));
        }
        super::volumes::ensure_room(tx, v.size_gib, capacity)?;
        let snapshot_id = SnapshotId::generate();
        let wrapped = custody::wrap_new_key(&cloud2, tx, &account, &actor, snapshot_id.as_str())?;
        let row = SnapshotRow {
            snapshot_id,
            account_id: account.clone(),
            volume_id: Some(volume_id.to_string()),
            volume_size: v.size_gib,
            description: req.description.clone().unwrap_or_default(),
            client_token: req.client_token.clone(),
            state: "pending".into(),
            progress: 0,
            wrapped_key: Some(wrapped),
            is_public: false,
            pending: "create".into(),
            created_at: now_iso(),
            // Copied where the volume lives.
            host_id: v.host_id.clone(),
        };
        snapshot_store::insert(tx, &row)?;
        Ok(row)
    })
    .await?;
    if is_dry_run(req.dry_run) {
        return Ok(CreateSnapshotResponse::default());
    }
    cloud.wake_reconciler();
    let viewer = caller.account_id.clone();
    Ok(CreateSnapshotResponse { snapshot: Some(snapshot_view(&row, vec![], &viewer, vec![])), ..Default::default() })
}

pub async fn read_snapshots(cloud: &Arc<Cloud>, caller: &Caller, req: ReadSnapshotsRequest) -> Result<ReadSnapshotsResponse, ApiError> {
    reject_unsupported_filters(
        &req.filters,
        &[
            "SnapshotIds", "VolumeIds", "States", "AccountIds", "Descriptions", "VolumeSizes", "Progresses", "ClientTokens",
            "PermissionsToCreateVolumeAccountIds", "PermissionsToCreateVolumeGlobalPermission", "TagKeys", "TagValues", "Tags",
        ],
    )?;
    let f = req.filters.unwrap_or_default();
    let viewer = caller.account_id.clone();
    let mut listing = Listing::visible("snapshots", "snapshot_id", viewer.as_str(), snapshot_store::VISIBLE_TO);
    listing
        .any_of("snapshot_id", f.snapshot_ids.as_deref())
        .any_of("volume_id", f.volume_ids.as_deref())
        .any_of("state", f.states.as_deref())
        .any_of("account_id", f.account_ids.as_deref())
        .any_of("description", f.descriptions.as_deref())
        .any_of("volume_size", f.volume_sizes.as_deref())
        .any_of("progress", f.progresses.as_deref())
        .any_of("client_token", f.client_tokens.as_deref())
        .tags(f.tag_keys.as_deref(), f.tag_values.as_deref(), f.tags.as_deref());
    listing.shared_with("snapshot_shares", f.permissions_to_create_volume_account_ids.as_deref());
    if let Some(global) = f.permissions_to_create_volume_global_permission {
        listing.any_of("is_public", Some(&[global]));
    }
    let page = page_request(req.next_page_token.as_deref(), req.results_per_page)?;
    let who = viewer.clone();
    let (snapshots, next) = read_page(cloud, &viewer, listing, snapshot_store::page, page, |s| (s.snapshot_id.as_str(), &s.created_at), move |conn, s, tags| {
        // Whom a snapshot is shared with is its owner's to know.
        let shares = if s.account_id == who { snapshot_store::shares(conn, &s.snapshot_id)? } else { vec![] };
        Ok(snapshot_view(&s, shares, &who, tags))
    })
    .await?;
    Ok(ReadSnapshotsResponse { snapshots: Some(snapshots), next_page_token: next, ..Default::default() })
}

pub async fn delete_snapshot(cloud: &Arc<Cloud>, caller: &Caller, req: DeleteSnapshotRequest) -> Result<DeleteSnapshotResponse, ApiError> {
    let id = SnapshotId::parse(&req.snapshot_id)?;
    let account = caller.account_id.clone();
    write(cloud, req.dry_run, move |tx| {
        let mut s = snapshot_store::get_owned(tx, &account, &id)?.ok_or_else(|| snapshot_not_found(id.as_str()))?;
        match s.state.as_str() {
            "deleting" => Ok(()),
            "completed" | "error" => {
                let in_use = volume_store::list_unsettled(tx)?
                    .iter()
                    .any(|v| v.pending == "create" && v.snapshot_id.as_deref() == Some(id.as_str()));
                if let Some(image) = socle_store::images::using_snapshot(tx, id.as_str())?.first() {
                    return Err(ApiError::new(
                        ErrorCode::InvalidResourceState,
                        format!("the snapshot {id} is the root disk of the image {image}; delete the image first"),
                    ));
                }
                if in_use {
                    return Err(ApiError::new(
                        ErrorCode::InvalidResourceState,
                        format!("volumes are being created from the snapshot {id}; delete it once they are available"),
                    ));
                }
                s.state = "deleting".into();
                s.pending = "delete".into();
                snapshot_store::update(tx, &s)?;
                Ok(())
            }
            other => Err(ApiError::new(ErrorCode::InvalidResourceState, format!("the snapshot {id} is {other}"))),
        }
    })
    .await?;
    if !is_dry_run(req.dry_run) {
        cloud.wake_reconciler();
    }
    Ok(DeleteSnapshotResponse::default())
}


pub async fn update_snapshot(cloud: &Arc<Cloud>, caller: &Caller, req: UpdateSnapshotRequest) -> Result<UpdateSnapshotResponse, ApiError> {
    let id = SnapshotId::parse(&req.snapshot_id)?;
    let change = ShareChange::parse(Some(req.permissions_to_create_volume.clone()))?;
    let account = caller.account_id.clone();
    let (row, shares) = write(cloud, req.dry_run, move |tx| {
        let mut s = snapshot_store::get_owned(tx, &account, &id)?.ok_or_else(|| snapshot_not_found(id.as_str()))?;
        change.apply(&mut s.is_public, |a| snapshot_store::add_share(tx, &id, a), |a| snapshot_store::remove_share(tx, &id, a))?;
        snapshot_store::update(tx, &s)?;
        let shares = snapshot_store::shares(tx, &id)?;
        Ok((s, shares))
    })
    .await?;
    if is_dry_run(req.dry_run) {
        return Ok(UpdateSnapshotResponse::default());
    }
    let viewer = caller.account_id.clone();
    Ok(UpdateSnapshotResponse { snapshot: Some(snapshot_view(&row, shares, &viewer, vec![])), ..Default::default() })
}

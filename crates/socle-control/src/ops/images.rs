//! Machine images (OMIs): the platform's public ones and the images
//! accounts make from their VMs (a snapshot of the root disk), shared with
//! other accounts or made public through launch permissions.

use std::sync::Arc;

use socle_store::images::{self as image_store, ImageRow};
use socle_store::snapshots::{self as snapshot_store, SnapshotRow};
use socle_store::{now_iso, vms as vm_store, volumes as volume_store};
use socle_types::error::ErrorCode;
use socle_types::ids::{AccountId, ImageId, SnapshotId, VmId};
use socle_types::osc::*;
use socle_types::ApiError;

use super::{is_dry_run, tag_pairs, with_tags, write, ShareChange};
use crate::paging::{created_key, matches, paginate, reject_unsupported_fields, reject_unsupported_filters, tags_match};
use crate::{custody, Caller, Cloud};

/// The account that owns platform images such as `socle-tiny`.
pub const PLATFORM_ACCOUNT: &str = "000000000000";

pub(crate) fn image_view(row: &ImageRow, tags: Vec<ResourceTag>, shares: Vec<String>, state: &str, viewer: &AccountId) -> Image {
    let owner = row.account_id == *viewer;
    let mappings = row
        .root_snapshot_id
        .iter()
        .map(|sid| BlockDeviceMappingImage {
            device_name: Some("/dev/sda1".into()),
            bsu: Some(BsuToCreate {
                delete_on_vm_deletion: Some(true),
                snapshot_id: Some(sid.clone()),
                volume_size: Some(row.size_gib),
                volume_type: Some("standard".into()),
                iops: None,
            }),
            virtual_device_name: None,
        })
        .collect();
    Image {
        account_id: Some(row.account_id.to_string()),
        account_alias: Some(if row.account_id.as_str() == PLATFORM_ACCOUNT { "socle".into() } else { String::new() }),
        architecture: Some(row.architecture.clone()),
        block_device_mappings: Some(mappings),
        boot_modes: Some(vec!["legacy".into()]),
        creation_date: Some(row.created_at.clone()),
        description: Some(row.description.clone()),
        file_location: Some(format!("{}/{}", if row.account_id.as_str() == PLATFORM_ACCOUNT { "socle" } else { row.account_id.as_str() }, row.name)),
        image_id: Some(row.image_id.to_string()),
        image_name: Some(row.name.clone()),
        image_type: Some("machine".into()),
        permissions_to_launch: Some(PermissionsOnResource {
            account_ids: Some(if owner { shares } else { vec![] }),
            global_permission: Some(row.is_public),
        }),
        product_codes: Some(vec!["0001".into()]),
        root_device_name: Some("/dev/sda1".into()),
        root_device_type: Some("bsu".into()),
        secure_boot: Some(false),
        state: Some(state.to_string()),
        state_comment: Some(StateComment::default()),
        tags: Some(if owner { tags } else { vec![] }),
        tpm_mandatory: Some(false),
    }
}

pub async fn read_images(cloud: &Arc<Cloud>, caller: &Caller, req: ReadImagesRequest) -> Result<ReadImagesResponse, ApiError> {
    reject_unsupported_filters(
        &req.filters,
        &["ImageIds", "ImageNames", "AccountIds", "States", "Architectures", "TagKeys", "TagValues", "Tags", "PermissionsToLaunchGlobalPermission", "PermissionsToLaunchAccountIds"],
    )?;
    let f = req.filters.unwrap_or_default();
    let account = caller.account_id.clone();
    let rows = cloud
        .store
        .run(move |conn| {
            let rows = image_store::list_visible(conn, &account)?;
            with_tags(conn, &account, rows, |r| r.image_id.as_str())?
                .into_iter()
                .map(|(r, tags)| {
                    let shares = if r.account_id == account { image_store::shares(conn, &r.image_id)? } else { vec![] };
                    let state = effective_state(conn, &r)?;
                    Ok((r, tags, shares, state))
                })
                .collect::<Result<Vec<_>, ApiError>>()
        })
        .await?;
    let viewer = caller.account_id.clone();
    let items: Vec<Image> = rows
        .into_iter()
        .filter(|(r, tags, shares, state)| {
            matches(&f.image_ids, r.image_id.as_str())
                && matches(&f.image_names, &r.name)
                && matches(&f.account_ids, r.account_id.as_str())
                && matches(&f.states, state)
                && f.permissions_to_launch_account_ids.as_ref().is_none_or(|l| shares.iter().any(|a| l.contains(a)))
                && matches(&f.architectures, &r.architecture)
                && f.permissions_to_launch_global_permission.is_none_or(|g| g == r.is_public)
                && tags_match(&tag_pairs(tags), &f.tag_keys, &f.tag_values, &f.tags)
        })
        .map(|(r, tags, shares, state)| image_view(&r, tags, shares, &state, &viewer))
        .collect();
    let (page, next) = paginate(items, req.next_page_token.as_deref(), req.results_per_page, |i| {
        created_key(i.creation_date.as_deref().unwrap_or(""), i.image_id.as_deref().unwrap_or(""))
    })?;
    Ok(ReadImagesResponse { images: Some(page), next_page_token: next, ..Default::default() })
}

/// What an image's state really is: one made from a VM is pending until the
/// snapshot of its root disk completes (failed if that failed).
pub(crate) fn effective_state(conn: &socle_store::Connection, image: &ImageRow) -> Result<String, ApiError> {
    let Some(sid) = &image.root_snapshot_id else { return Ok(image.state.clone()) };
    let snap = socle_store::snapshots::get_any(conn, &SnapshotId::from_trusted(sid.clone()))?;
    Ok(match snap.map(|s| s.state) {
        Some(s) if s == "completed" => "available".into(),
        Some(s) if s == "error" => "failed".into(),
        Some(_) => "pending".into(),
        None => "failed".into(),
    })
}

fn image_not_found(id: &str) -> ApiError {
    ApiError::not_found(ErrorCode::NoSuchImage, "image", id)
}

pub async fn create_image(cloud: &Arc<Cloud>, caller: &Caller, req: CreateImageRequest) -> Result<CreateImageResponse, ApiError> {
    reject_unsupported_fields(
        &req,
        &["BlockDeviceMappings", "FileLocation", "SourceImageId", "SourceRegionName", "ProductCodes", "RootDeviceName", "TpmMandatory"],
    )?;
    if req.boot_modes.as_ref().is_some_and(|m| m.iter().any(|b| b != "legacy")) {
        return Err(ApiError::invalid_value("BootModes: only legacy is supported"));
    }
    if req.architecture.as_deref().is_some_and(|a| a != "x86_64") {
        return Err(ApiError::invalid_value("Architecture: only x86_64 is supported"));
    }
    let name = req.image_name.clone().ok_or_else(|| ApiError::missing("ImageName"))?;
    if !(3..=128).contains(&name.len()) || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"()[] ./-'@_".contains(&b)) {
        return Err(ApiError::new(
            ErrorCode::InvalidParameterValueLength,
            "ImageName must be 3 to 128 characters among letters, digits, spaces and ()[]./-'@_",
        ));
    }
    let vm_id = VmId::parse(req.vm_id.as_deref().ok_or_else(|| ApiError::missing("VmId"))?)?;
    let account = caller.account_id.clone();
    let actor = caller.actor();
    let cloud2 = cloud.clone();
    let capacity = cloud.config.storage_capacity_gib;
    let row = write(cloud, req.dry_run, move |tx| {
        let vm = vm_store::get(tx, &account, &vm_id)?.ok_or_else(|| super::vms::vm_not_found(vm_id.as_str()))?;
        if matches!(vm.state.as_str(), "shutting-down" | "terminated") {
            return Err(ApiError::new(ErrorCode::InvalidVmState, format!("the VM {vm_id} is {}", vm.state)));
        }
        let root = volume_store::linked_to(tx, &vm_id)?
            .into_iter()
            .find(|v| v.is_root())
            .ok_or_else(|| ApiError::new(ErrorCode::InvalidVmState, format!("the VM {vm_id} has no root volume to image")))?;
        if root.pending == "create" {
            return Err(ApiError::new(
                ErrorCode::InvalidVmState,
                format!("the VM {vm_id} has never run: its root disk does not exist yet; start it first"),
            ));
        }
        if image_store::name_taken(tx, &account, &name)? {
            return Err(ApiError::invalid_value(format!("an image named {name:?} already exists in this account")));
        }
        let source = image_store::get(tx, &vm.image_id)?
            .ok_or_else(|| ApiError::internal(format!("the image {} of {vm_id} is gone", vm.image_id)))?;
        let provisioned = volume_store::provisioned_gib(tx)?;
        if provisioned + root.size_gib > capacity {
            return Err(super::volumes::capacity_error(root.size_gib, provisioned, capacity));
        }
        let image_id = ImageId::generate();
        let snapshot_id = SnapshotId::generate();
        let wrapped = custody::wrap_new_key(&cloud2, tx, &account, &actor, snapshot_id.as_str())?;
        let now = now_iso();
        snapshot_store::insert(
            tx,
            &SnapshotRow {
                snapshot_id: snapshot_id.clone(),
                account_id: account.clone(),
                volume_id: Some(root.volume_id.to_string()),
                volume_size: root.size_gib,
                description: format!("Created by CreateImage({vm_id}) for {image_id}"),
                client_token: None,
                state: "pending".into(),
                progress: 0,
                wrapped_key: Some(wrapped),
                is_public: false,
                pending: "create".into(),
                created_at: now.clone(),
            },
        )?;
        let row = ImageRow {
            image_id,
            account_id: account.clone(),
            name: name.clone(),
            description: req.description.clone().unwrap_or_default(),
            state: "pending".into(),
            architecture: "x86_64".into(),
            // Same boot as the VM it comes from (direct kernel).
            kernel_path: source.kernel_path.clone(),
            initrd_path: source.initrd_path.clone(),
            disk_path: String::new(),
            is_public: false,
            created_at: now,
            size_gib: root.size_gib,
            root_snapshot_id: Some(snapshot_id.to_string()),
        };
        image_store::insert(tx, &row)?;
        Ok(row)
    })
    .await?;
    if is_dry_run(req.dry_run) {
        return Ok(CreateImageResponse::default());
    }
    cloud.wake_reconciler();
    Ok(CreateImageResponse { image: Some(image_view(&row, vec![], vec![], "pending", &caller.account_id)), ..Default::default() })
}


pub async fn update_image(cloud: &Arc<Cloud>, caller: &Caller, req: UpdateImageRequest) -> Result<UpdateImageResponse, ApiError> {
    reject_unsupported_fields(&req, &["ProductCodes"])?;
    let id = ImageId::parse(&req.image_id)?;
    let change = ShareChange::parse(req.permissions_to_launch.clone())?;
    let account = caller.account_id.clone();
    let (row, shares, state) = write(cloud, req.dry_run, move |tx| {
        let mut image = image_store::get(tx, &id)?.filter(|i| i.account_id == account).ok_or_else(|| image_not_found(id.as_str()))?;
        change.apply(&mut image.is_public, |a| image_store::add_share(tx, &id, a), |a| image_store::remove_share(tx, &id, a))?;
        if let Some(d) = &req.description {
            image.description = d.clone();
        }
        image_store::update(tx, &image)?;
        let state = effective_state(tx, &image)?;
        Ok((image, image_store::shares(tx, &id)?, state))
    })
    .await?;
    if is_dry_run(req.dry_run) {
        return Ok(UpdateImageResponse::default());
    }
    Ok(UpdateImageResponse { image: Some(image_view(&row, vec![], shares, &state, &caller.account_id)), ..Default::default() })
}

pub async fn delete_image(cloud: &Arc<Cloud>, caller: &Caller, req: DeleteImageRequest) -> Result<DeleteImageResponse, ApiError> {
    let id = ImageId::parse(&req.image_id)?;
    let account = caller.account_id.clone();
    write(cloud, req.dry_run, move |tx| {
        image_store::get(tx, &id)?.filter(|i| i.account_id == account).ok_or_else(|| image_not_found(id.as_str()))?;
        // The snapshot of its root disk stays: it is the user's, as on Outscale.
        socle_store::tags::delete_all_for_resource(tx, id.as_str())?;
        image_store::delete(tx, &id)?;
        Ok(())
    })
    .await?;
    Ok(DeleteImageResponse::default())
}

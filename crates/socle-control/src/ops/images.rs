//! Machine images (OMIs): the platform's public ones and the images
//! accounts make from their VMs (a snapshot of the root disk), shared with
//! other accounts or made public through launch permissions.

use std::sync::Arc;

use socle_store::images::{self as image_store, ImageRow};
use socle_store::listing::Listing;
use socle_store::snapshots::{self as snapshot_store, SnapshotRow};
use socle_store::volumes::ROOT_DEVICE;
use socle_store::{now_iso, vms as vm_store, volumes as volume_store};
use socle_types::error::ErrorCode;
use socle_types::ids::{AccountId, ImageId, SnapshotId, VmId, VolumeId};
use socle_types::osc::*;
use socle_types::ApiError;

use super::{is_dry_run, read_page, write, ShareChange};
use crate::paging::{page_request, reject_unsupported_fields, reject_unsupported_filters};
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
    let viewer = caller.account_id.clone();
    let mut listing = Listing::visible("images", "image_id", viewer.as_str(), image_store::VISIBLE_TO);
    listing
        .any_of("image_id", f.image_ids.as_deref())
        .any_of("name", f.image_names.as_deref())
        .any_of("account_id", f.account_ids.as_deref())
        .any_of("architecture", f.architectures.as_deref())
        .tags(f.tag_keys.as_deref(), f.tag_values.as_deref(), f.tags.as_deref());
    if let Some(states) = &f.states {
        listing.condition_with(&Listing::in_list(&format!("({})", image_store::EFFECTIVE_STATE), states.len()), states);
    }
    listing.shared_with("image_shares", f.permissions_to_launch_account_ids.as_deref());
    if let Some(global) = f.permissions_to_launch_global_permission {
        listing.any_of("is_public", Some(&[global]));
    }
    let page = page_request(req.next_page_token.as_deref(), req.results_per_page)?;
    let who = viewer.clone();
    let (images, next) = read_page(cloud, &viewer, listing, image_store::page, page, |r| (r.image_id.as_str(), &r.created_at), move |conn, r, tags| {
        // Whom an image is shared with is its owner's to know.
        let shares = if r.account_id == who { image_store::shares(conn, &r.image_id)? } else { vec![] };
        let state = effective_state(conn, &r)?;
        Ok(image_view(&r, tags, shares, &state, &who))
    })
    .await?;
    Ok(ReadImagesResponse { images: Some(images), next_page_token: next, ..Default::default() })
}

/// What an image's state really is: one made from a VM is pending until the
/// snapshot of its root disk completes (failed if that failed).
pub(crate) fn effective_state(conn: &socle_store::Conn, image: &ImageRow) -> Result<String, ApiError> {
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
    reject_unsupported_fields(&req, &["FileLocation", "SourceImageId", "SourceRegionName", "ProductCodes", "TpmMandatory"])?;
    if req.boot_modes.as_ref().is_some_and(|m| m.iter().any(|b| b != "legacy")) {
        return Err(ApiError::invalid_value("BootModes: only legacy is supported"));
    }
    if req.architecture.as_deref().is_some_and(|a| a != "x86_64") {
        return Err(ApiError::invalid_value("Architecture: only x86_64 is supported"));
    }
    let name = req.image_name.clone().ok_or_else(|| ApiError::missing("ImageName"))?;
    check_image_name(&name)?;
    let source = match (&req.vm_id, &req.block_device_mappings) {
        (Some(vm), None) => Source::Vm(VmId::parse(vm)?),
        (None, Some(mappings)) => Source::Snapshot(registered_root(mappings, req.root_device_name.as_deref())?),
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid_value(
                "give either VmId (to image a VM) or BlockDeviceMappings with RootDeviceName (to register a snapshot), not both",
            ))
        }
        (None, None) => return Err(ApiError::missing("VmId (or BlockDeviceMappings and RootDeviceName to register a snapshot)")),
    };
    let account = caller.account_id.clone();
    let actor = caller.actor();
    let cloud2 = cloud.clone();
    let description = req.description.clone().unwrap_or_default();
    let row = write(cloud, req.dry_run, move |tx| {
        check_name_free(tx, &account, &name)?;
        let row = match source.clone() {
            Source::Vm(vm_id) => image_vm(&cloud2, tx, &account, &actor, &vm_id)?,
            Source::Snapshot(root) => register_snapshot(tx, &account, &root)?,
        };
        let row = ImageRow { name: name.clone(), description: description.clone(), ..row };
        image_store::insert(tx, &row)?;
        Ok(row)
    })
    .await?;
    if is_dry_run(req.dry_run) {
        return Ok(CreateImageResponse::default());
    }
    cloud.wake_reconciler();
    let state = cloud.store.write({
        let row = row.clone();
        move |c| effective_state(c, &row)
    })
    .await?;
    Ok(CreateImageResponse { image: Some(image_view(&row, vec![], vec![], &state, &caller.account_id)), ..Default::default() })
}

pub(crate) fn check_image_name(name: &str) -> Result<(), ApiError> {
    if !(3..=128).contains(&name.len()) || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"()[] ./-'@_".contains(&b)) {
        return Err(ApiError::new(
            ErrorCode::InvalidParameterValueLength,
            "ImageName must be 3 to 128 characters among letters, digits, spaces and ()[]./-'@_",
        ));
    }
    Ok(())
}

/// Image names are unique per account.
pub(crate) fn check_name_free(conn: &socle_store::Conn, account: &AccountId, name: &str) -> Result<(), ApiError> {
    if image_store::name_taken(conn, account, name)? {
        return Err(ApiError::invalid_value(format!("an image named {name:?} already exists in this account")));
    }
    Ok(())
}

/// Where a new image's root disk comes from.
#[derive(Clone)]
enum Source {
    /// A snapshot of this VM's root volume, taken now.
    Vm(VmId),
    /// An existing snapshot, registered as is.
    Snapshot(RegisteredRoot),
}

#[derive(Clone)]
struct RegisteredRoot {
    snapshot_id: SnapshotId,
    size_gib: Option<i64>,
}

/// The one mapping Socle registers: the root device, from a snapshot.
fn registered_root(mappings: &[BlockDeviceMappingImage], root_device: Option<&str>) -> Result<RegisteredRoot, ApiError> {
    let root_device = root_device.ok_or_else(|| ApiError::missing("RootDeviceName (required with BlockDeviceMappings)"))?;
    if root_device != ROOT_DEVICE {
        return Err(ApiError::invalid_value(format!("RootDeviceName must be {ROOT_DEVICE}")));
    }
    let [m] = mappings else {
        return Err(ApiError::new(
            ErrorCode::InvalidParameterValue,
            "BlockDeviceMappings: register exactly one mapping, the root device; extra volumes are not supported",
        ));
    };
    if m.device_name.as_deref() != Some(ROOT_DEVICE) {
        return Err(ApiError::invalid_value(format!("BlockDeviceMappings: DeviceName must be the root device {ROOT_DEVICE}")));
    }
    if m.virtual_device_name.is_some() {
        return Err(ApiError::new(ErrorCode::InvalidParameterValue, "BlockDeviceMappings: VirtualDeviceName (ephemeral disks) is not supported"));
    }
    let bsu = m.bsu.as_ref().ok_or_else(|| ApiError::missing("BlockDeviceMappings.Bsu"))?;
    let snapshot_id = SnapshotId::parse(bsu.snapshot_id.as_deref().ok_or_else(|| ApiError::missing("BlockDeviceMappings.Bsu.SnapshotId"))?)?;
    if let Some(size) = bsu.volume_size {
        if !(1..=14_901).contains(&size) {
            return Err(ApiError::new(ErrorCode::InvalidVolumeSize, format!("VolumeSize must be between 1 and 14901 GiB, not {size}")));
        }
    }
    Ok(RegisteredRoot { snapshot_id, size_gib: bsu.volume_size })
}

/// CreateImage from a VM: snapshots its root volume into a new snapshot the
/// account owns; the image is pending until that snapshot completes.
fn image_vm(cloud: &Arc<Cloud>, tx: &socle_store::Conn, account: &AccountId, actor: &str, vm_id: &VmId) -> Result<ImageRow, ApiError> {
    let vm = vm_store::get(tx, account, vm_id)?.ok_or_else(|| super::vms::vm_not_found(vm_id.as_str()))?;
    if matches!(vm.state.as_str(), "shutting-down" | "terminated") {
        return Err(ApiError::new(ErrorCode::InvalidVmState, format!("the VM {vm_id} is {}", vm.state)));
    }
    let root = volume_store::linked_to(tx, vm_id)?
        .into_iter()
        .find(|v| v.is_root())
        .ok_or_else(|| ApiError::new(ErrorCode::InvalidVmState, format!("the VM {vm_id} has no root volume to image")))?;
    if root.pending == "create" {
        return Err(ApiError::new(
            ErrorCode::InvalidVmState,
            format!("the VM {vm_id} has never run: its root disk does not exist yet; start it first"),
        ));
    }
    let source = image_store::get(tx, &vm.image_id)?.ok_or_else(|| ApiError::internal(format!("the image {} of {vm_id} is gone", vm.image_id)))?;
    super::volumes::ensure_room(tx, root.size_gib, cloud.config.storage_capacity_gib)?;
    let image_id = ImageId::generate();
    let snapshot_id = SnapshotId::generate();
    let wrapped = custody::wrap_new_key(cloud, tx, account, actor, snapshot_id.as_str())?;
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
            host_id: root.host_id.clone(),
        },
    )?;
    // Same boot as the VM it comes from.
    Ok(account_image_row(image_id, account, source.boot_kernel, root.size_gib, &snapshot_id, now))
}

/// CreateImage from a snapshot of the caller's: the image uses it as its
/// root disk (DeleteSnapshot is refused while an image does). Another
/// account's snapshot is refused rather than referenced: its owner must stay
/// free to delete it.
fn register_snapshot(tx: &socle_store::Conn, account: &AccountId, root: &RegisteredRoot) -> Result<ImageRow, ApiError> {
    let sid = &root.snapshot_id;
    let Some(snap) = snapshot_store::get_owned(tx, account, sid)? else {
        let shared = snapshot_store::get_visible(tx, account, sid)?.is_some();
        return Err(if shared {
            ApiError::new(
                ErrorCode::InvalidParameterValue,
                format!("the snapshot {sid} belongs to another account: create a volume from it, snapshot that volume, and register your own snapshot"),
            )
        } else {
            super::snapshots::snapshot_not_found(sid.as_str())
        });
    };
    if snap.state != "completed" {
        return Err(ApiError::new(ErrorCode::InvalidResourceState, format!("the snapshot {sid} is {}; register a completed snapshot", snap.state)));
    }
    let size_gib = root.size_gib.unwrap_or(snap.volume_size);
    if size_gib < snap.volume_size {
        return Err(ApiError::new(
            ErrorCode::InvalidVolumeSize,
            format!("VolumeSize {size_gib} is smaller than the snapshot {sid} ({} GiB)", snap.volume_size),
        ));
    }
    Ok(account_image_row(ImageId::generate(), account, boot_of_snapshot(tx, &snap)?, size_gib, sid, now_iso()))
}

/// The row of an account's image whose root disk is `root_snapshot`. Its
/// state is not stored but derived from that snapshot ([`effective_state`]);
/// name and description are the caller's to fill. `boot_kernel`: the
/// platform image whose kernel boots it, or none for a BIOS boot of the disk.
pub(crate) fn account_image_row(
    image_id: ImageId,
    account: &AccountId,
    boot_kernel: Option<String>,
    size_gib: i64,
    root_snapshot: &SnapshotId,
    created_at: String,
) -> ImageRow {
    ImageRow {
        image_id,
        account_id: account.clone(),
        name: String::new(),
        description: String::new(),
        state: "pending".into(),
        architecture: "x86_64".into(),
        boot_kernel,
        base_image: None,
        is_public: false,
        created_at,
        size_gib,
        root_snapshot_id: Some(root_snapshot.to_string()),
    }
}

/// How a registered snapshot boots: a disk that came from a direct-kernel
/// image (such as socle-tiny, whose disk holds no bootloader) keeps booting
/// with that kernel; anything else boots as a full disk through the BIOS,
/// as cloud images do. The lineage is followed through the volume the
/// snapshot was taken of, while that volume exists.
fn boot_of_snapshot(tx: &socle_store::Conn, snap: &SnapshotRow) -> Result<Option<String>, ApiError> {
    let volume = match &snap.volume_id {
        Some(v) => volume_store::get_any(tx, &VolumeId::from_trusted(v.clone()))?,
        None => None,
    };
    let image = match volume.and_then(|v| v.source_image_id) {
        Some(i) => image_store::get(tx, &ImageId::from_trusted(i))?,
        None => None,
    };
    Ok(image.and_then(|i| i.boot_kernel))
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

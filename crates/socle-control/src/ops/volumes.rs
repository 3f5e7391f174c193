//! Block volumes: create, read, update, link to / unlink from VMs, delete.
//!
//! Operations record the wish and answer at once; the reconciler creates,
//! resizes, plugs, unplugs and deletes on the host. Every volume gets its own
//! random data key, stored only wrapped by the account's key-encryption key.

use std::sync::Arc;

use socle_store::listing::Listing;
use socle_store::volumes::{self as volume_store, VolumeRow};
use socle_store::{now_iso, snapshots as snapshot_store, vms as vm_store, Conn};
use socle_types::error::ErrorCode;
use socle_types::ids::{AccountId, SnapshotId, VmId, VolumeId};
use socle_types::osc::*;
use socle_types::ApiError;

use super::vms::vm_not_found;
use super::{is_dry_run, read_page, write};
use crate::paging::{page_request, reject_unsupported_filters};
use crate::{custody, Caller, Cloud};

/// Volume sizes Outscale accepts, in GiB.
const MAX_SIZE_GIB: i64 = 14_901;
const MAX_IOPS: i64 = 13_000;
pub(crate) const DEFAULT_TYPE: &str = "standard";

pub(crate) fn volume_not_found(id: &str) -> ApiError {
    ApiError::not_found(ErrorCode::NoSuchVolume, "volume", id)
}

/// Checks the type/IOPS pair: io1 needs Iops, the others take none.
pub(crate) fn check_type(volume_type: &str, iops: Option<i64>) -> Result<Option<i64>, ApiError> {
    match (volume_type, iops) {
        ("io1", Some(i)) if (100..=MAX_IOPS).contains(&i) => Ok(Some(i)),
        ("io1", Some(i)) => Err(ApiError::new(ErrorCode::InvalidIops, format!("Iops must be 100 to {MAX_IOPS}, got {i}"))),
        ("io1", None) => Err(ApiError::missing("Iops (required for io1 volumes)")),
        ("standard" | "gp2", None) => Ok(None),
        ("standard" | "gp2", Some(_)) => {
            Err(ApiError::new(ErrorCode::InvalidIops, "Iops can only be set on io1 volumes"))
        }
        (other, _) => Err(ApiError::invalid_value(format!("VolumeType must be standard, gp2 or io1, got {other:?}"))),
    }
}

/// io1 allows at most 300 IOPS per GiB, as on Outscale.
pub(crate) fn check_iops_ratio(iops: Option<i64>, size_gib: i64) -> Result<(), ApiError> {
    match iops {
        Some(i) if i > 300 * size_gib => Err(ApiError::new(
            ErrorCode::InvalidIops,
            format!("{i} IOPS on {size_gib} GiB exceeds the io1 ratio of 300 IOPS per GiB"),
        )),
        _ => Ok(()),
    }
}

pub(crate) fn check_size(size: i64) -> Result<(), ApiError> {
    if !(1..=MAX_SIZE_GIB).contains(&size) {
        return Err(ApiError::new(ErrorCode::InvalidVolumeSize, format!("Size must be 1 to {MAX_SIZE_GIB} GiB, got {size}")));
    }
    Ok(())
}

/// `/dev/xvdb`…`/dev/xvdz` or `/dev/sdb`…`/dev/sdz` (the root is `/dev/sda1`).
pub(crate) fn check_device_name(name: &str) -> Result<(), ApiError> {
    let letter = name.strip_prefix("/dev/xvd").or_else(|| name.strip_prefix("/dev/sd"));
    match letter {
        Some(l) if l.len() == 1 && ("b"..="z").contains(&l) => Ok(()),
        _ => Err(ApiError::new(
            ErrorCode::InvalidDeviceName,
            format!("DeviceName must be /dev/xvdb to /dev/xvdz (or /dev/sdb to /dev/sdz), got {name:?}"),
        )),
    }
}

/// Refuses (10024) when the storage pool cannot hold `asked` GiB more; run
/// it in the transaction that then inserts or grows, so nothing slips between.
pub(crate) fn ensure_room(conn: &socle_store::Conn, asked: i64, capacity: i64) -> Result<(), ApiError> {
    let provisioned = volume_store::provisioned_gib(conn)?;
    if provisioned + asked > capacity {
        return Err(capacity_error(asked, provisioned, capacity));
    }
    Ok(())
}

pub(crate) fn capacity_error(asked: i64, provisioned: i64, capacity: i64) -> ApiError {
    ApiError::new(
        ErrorCode::TooMuchVolumeSize,
        format!("the storage pool cannot hold {asked} GiB more ({provisioned} of {capacity} GiB provisioned)"),
    )
}

pub(crate) fn volume_view(v: &VolumeRow, tags: Vec<ResourceTag>) -> Volume {
    Volume {
        client_token: v.client_token.clone(),
        creation_date: Some(v.created_at.clone()),
        iops: v.iops,
        linked_volumes: Some(
            v.vm_id
                .iter()
                .map(|vm| LinkedVolume {
                    delete_on_vm_deletion: Some(v.delete_on_vm_deletion),
                    device_name: v.device_name.clone(),
                    state: v.link_state.clone(),
                    vm_id: Some(vm.to_string()),
                    volume_id: Some(v.volume_id.to_string()),
                })
                .collect(),
        ),
        size: Some(v.size_gib),
        snapshot_id: v.snapshot_id.clone(),
        state: Some(v.state.clone()),
        subregion_name: Some(v.subregion.clone()),
        tags: Some(tags),
        task_id: None,
        volume_id: Some(v.volume_id.to_string()),
        volume_type: Some(v.volume_type.clone()),
    }
}

fn get_owned(tx: &Conn, account: &AccountId, id: &VolumeId) -> Result<VolumeRow, ApiError> {
    volume_store::get(tx, account, id)?.ok_or_else(|| volume_not_found(id.as_str()))
}

pub async fn create_volume(cloud: &Arc<Cloud>, caller: &Caller, req: CreateVolumeRequest) -> Result<CreateVolumeResponse, ApiError> {
    let volume_type = req.volume_type.clone().unwrap_or_else(|| DEFAULT_TYPE.into());
    let iops = check_type(&volume_type, req.iops)?;
    let snapshot_id = req.snapshot_id.as_deref().map(SnapshotId::parse).transpose()?;
    if snapshot_id.is_none() && req.size.is_none() {
        return Err(ApiError::missing("Size (or SnapshotId)"));
    }
    if let Some(size) = req.size {
        check_size(size)?;
    }
    let account = caller.account_id.clone();
    let actor = caller.actor();
    let cloud2 = cloud.clone();
    let capacity = cloud.config.storage_capacity_gib;
    let row = write(cloud, req.dry_run, move |tx| {
        if let Some(token) = &req.client_token {
            let existing = volume_store::list(tx, &account)?.into_iter().find(|v| v.client_token.as_ref() == Some(token));
            if let Some(v) = existing {
                return Ok(v);
            }
        }
        let (size, snapshot_host) = match &snapshot_id {
            None => (req.size.expect("checked above"), None),
            Some(sid) => {
                let snap = snapshot_store::get_visible(tx, &account, sid)?
                    .ok_or_else(|| ApiError::not_found(ErrorCode::NoSuchSnapshot, "snapshot", sid.as_str()))?;
                if snap.state != "completed" {
                    return Err(ApiError::new(
                        ErrorCode::InvalidResourceState,
                        format!("the snapshot {sid} is {}, not completed", snap.state),
                    ));
                }
                let size = req.size.unwrap_or(snap.volume_size);
                if size < snap.volume_size {
                    return Err(ApiError::new(
                        ErrorCode::InvalidVolumeSize,
                        format!("Size must be at least the snapshot's {} GiB", snap.volume_size),
                    ));
                }
                (size, snap.host_id)
            }
        };
        let host_id = super::placement::volume_host(tx, &req.subregion_name, snapshot_host.as_ref())?;
        check_iops_ratio(iops, size)?;
        // Capacity first: a refused create should not touch the keystore.
        ensure_room(tx, size, capacity)?;
        let volume_id = VolumeId::generate();
        let wrapped = custody::wrap_new_key(&cloud2, tx, &account, &actor, volume_id.as_str())?;
        let row = VolumeRow {
            volume_id,
            account_id: account.clone(),
            size_gib: size,
            volume_type: volume_type.clone(),
            iops,
            subregion: req.subregion_name.clone(),
            snapshot_id: snapshot_id.clone().map(|s| s.to_string()),
            source_image_id: None,
            client_token: req.client_token.clone(),
            state: "creating".into(),
            wrapped_key: Some(wrapped),
            vm_id: None,
            device_name: None,
            link_state: None,
            delete_on_vm_deletion: false,
            linked_at: None,
            pending: "create".into(),
            state_reason: String::new(),
            created_at: now_iso(),
            revision: 0,
            host_id: Some(host_id),
        };
        volume_store::insert_within_capacity(tx, &row, capacity)?
            .map_err(|e| capacity_error(row.size_gib, e.provisioned_gib, e.capacity_gib))?;
        Ok(row)
    })
    .await?;
    if is_dry_run(req.dry_run) {
        return Ok(CreateVolumeResponse::default());
    }
    cloud.wake_reconciler();
    Ok(CreateVolumeResponse { volume: Some(volume_view(&row, vec![])), ..Default::default() })
}

pub async fn read_volumes(cloud: &Arc<Cloud>, caller: &Caller, req: ReadVolumesRequest) -> Result<ReadVolumesResponse, ApiError> {
    reject_unsupported_filters(
        &req.filters,
        &[
            "VolumeIds", "VolumeStates", "VolumeTypes", "VolumeSizes", "SubregionNames", "SnapshotIds", "ClientTokens",
            "LinkVolumeVmIds", "LinkVolumeDeviceNames", "LinkVolumeLinkStates", "LinkVolumeDeleteOnVmDeletion",
            "TagKeys", "TagValues", "Tags",
        ],
    )?;
    let f = req.filters.unwrap_or_default();
    let mut listing = Listing::new("volumes", "volume_id", caller.account_id.as_str());
    listing
        .any_of("volume_id", f.volume_ids.as_deref())
        .any_of("state", f.volume_states.as_deref())
        .any_of("volume_type", f.volume_types.as_deref())
        .any_of("size_gib", f.volume_sizes.as_deref())
        .any_of("subregion", f.subregion_names.as_deref())
        .any_of("snapshot_id", f.snapshot_ids.as_deref())
        .any_of("client_token", f.client_tokens.as_deref())
        .any_of("vm_id", f.link_volume_vm_ids.as_deref())
        .any_of("device_name", f.link_volume_device_names.as_deref())
        .any_of("link_state", f.link_volume_link_states.as_deref())
        .tags(f.tag_keys.as_deref(), f.tag_values.as_deref(), f.tags.as_deref());
    if let Some(d) = f.link_volume_delete_on_vm_deletion {
        // A filter on a link's property excludes the volumes without a link.
        listing.condition("vm_id IS NOT NULL").any_of("delete_on_vm_deletion", Some(&[d]));
    }
    let page = page_request(req.next_page_token.as_deref(), req.results_per_page)?;
    let (volumes, next) = read_page(cloud, &caller.account_id, listing, volume_store::page, page, |v| (v.volume_id.as_str(), &v.created_at), |_, v, t| {
        Ok(volume_view(&v, t))
    })
    .await?;
    Ok(ReadVolumesResponse {
        volumes: Some(volumes),
        next_page_token: next,
        ..Default::default()
    })
}

pub async fn update_volume(cloud: &Arc<Cloud>, caller: &Caller, req: UpdateVolumeRequest) -> Result<UpdateVolumeResponse, ApiError> {
    let id = VolumeId::parse(&req.volume_id)?;
    if let Some(size) = req.size {
        check_size(size)?;
    }
    let account = caller.account_id.clone();
    let capacity = cloud.config.storage_capacity_gib;
    let row = write(cloud, req.dry_run, move |tx| {
        let mut v = get_owned(tx, &account, &id)?;
        if !matches!(v.state.as_str(), "available" | "in-use") || v.is_busy() {
            return Err(ApiError::new(
                ErrorCode::InvalidVolumeState,
                format!("the volume {id} is {}; it can be updated when available or in-use", v.state),
            ));
        }
        let new_type = req.volume_type.clone().unwrap_or_else(|| v.volume_type.clone());
        let new_iops = if req.volume_type.is_some() || req.iops.is_some() {
            check_type(&new_type, req.iops.or(if new_type == "io1" { v.iops } else { None }))?
        } else {
            v.iops
        };
        if let Some(size) = req.size {
            if size < v.size_gib {
                return Err(ApiError::new(
                    ErrorCode::InvalidVolumeSize,
                    format!("volumes only grow: {id} is {} GiB, asked {size}", v.size_gib),
                ));
            }
            ensure_room(tx, size - v.size_gib, capacity)?;
            if size > v.size_gib {
                v.size_gib = size;
                v.pending = "resize".into();
                v.state = "updating".into();
            }
        }
        check_iops_ratio(new_iops, req.size.unwrap_or(v.size_gib).max(v.size_gib))?;
        if new_type != v.volume_type || new_iops != v.iops {
            v.volume_type = new_type;
            v.iops = new_iops;
            if v.pending.is_empty() {
                // New I/O limits for a linked volume are applied by the reconciler.
                v.pending = "limits".into();
            }
        }
        volume_store::update(tx, &v)?;
        Ok(v)
    })
    .await?;
    if is_dry_run(req.dry_run) {
        return Ok(UpdateVolumeResponse::default());
    }
    cloud.wake_reconciler();
    Ok(UpdateVolumeResponse { volume: Some(volume_view(&row, vec![])), ..Default::default() })
}

pub async fn link_volume(cloud: &Arc<Cloud>, caller: &Caller, req: LinkVolumeRequest) -> Result<LinkVolumeResponse, ApiError> {
    let id = VolumeId::parse(&req.volume_id)?;
    let vm_id = VmId::parse(&req.vm_id)?;
    check_device_name(&req.device_name)?;
    let account = caller.account_id.clone();
    let actor = caller.actor();
    let cloud2 = cloud.clone();
    write(cloud, req.dry_run, move |tx| {
        let mut v = get_owned(tx, &account, &id)?;
        let vm = vm_store::get(tx, &account, &vm_id)?.ok_or_else(|| vm_not_found(vm_id.as_str()))?;
        if matches!(vm.state.as_str(), "shutting-down" | "terminated") {
            return Err(ApiError::new(ErrorCode::InvalidVmState, format!("the VM {vm_id} is {}", vm.state)));
        }
        if v.state != "available" || v.is_busy() {
            return Err(ApiError::new(
                ErrorCode::InvalidVolumeState,
                format!("the volume {id} is {}; only available volumes can be linked", v.state),
            ));
        }
        if v.subregion != vm.subregion {
            return Err(ApiError::invalid_value(format!(
                "the volume {id} is in {}, the VM {vm_id} in {}: a volume links to VMs of its own subregion",
                v.subregion, vm.subregion
            )));
        }
        if v.host_id != vm.host_id {
            // Until volumes can move between hosts (the cross-host data plane).
            return Err(ApiError::new(
                ErrorCode::ResourceConflict,
                format!("the volume {id} and the VM {vm_id} are kept on different machines of {}; this Socle version cannot link them", v.subregion),
            ));
        }
        // The volume's key must open now: a revoked customer key is refused
        // here, clearly, rather than leaving the link stuck on the host.
        let wrapped = v.wrapped_key.clone().ok_or_else(|| ApiError::internal(format!("{id} has no data key")))?;
        custody::unwrap_key(&cloud2, tx, &account, &actor, id.as_str(), &wrapped)?;
        let canonical = canonical_device(&req.device_name);
        if volume_store::linked_to(tx, &vm_id)?.iter().any(|o| o.device_name.as_deref().map(canonical_device) == Some(canonical.clone())) {
            return Err(ApiError::new(
                ErrorCode::DeviceInUse,
                format!("{} is already used on {vm_id}", req.device_name),
            ));
        }
        v.vm_id = Some(vm_id.clone());
        v.device_name = Some(req.device_name.clone());
        v.link_state = Some("attaching".into());
        v.delete_on_vm_deletion = false;
        v.linked_at = Some(now_iso());
        v.state = "in-use".into();
        volume_store::update(tx, &v)?;
        Ok(())
    })
    .await?;
    if !is_dry_run(req.dry_run) {
        cloud.wake_reconciler();
    }
    Ok(LinkVolumeResponse::default())
}

/// `/dev/sdc` and `/dev/xvdc` name the same slot.
fn canonical_device(name: &str) -> String {
    name.rsplit('/').next().unwrap_or(name).trim_start_matches("xvd").trim_start_matches("sd").to_string()
}

pub async fn unlink_volume(cloud: &Arc<Cloud>, caller: &Caller, req: UnlinkVolumeRequest) -> Result<UnlinkVolumeResponse, ApiError> {
    let id = VolumeId::parse(&req.volume_id)?;
    let account = caller.account_id.clone();
    write(cloud, req.dry_run, move |tx| {
        let mut v = get_owned(tx, &account, &id)?;
        if v.is_root() {
            return Err(ApiError::new(
                ErrorCode::InvalidVolumeState,
                format!("the volume {id} is the root disk of {}; it goes with its VM", v.vm_id.as_ref().map(|i| i.to_string()).unwrap_or_default()),
            ));
        }
        match v.link_state.as_deref() {
            None => Err(ApiError::new(ErrorCode::VolumeNotInUse, format!("the volume {id} is not linked"))),
            Some("detaching") => Ok(()),
            Some(_) => {
                v.link_state = Some("detaching".into());
                volume_store::update(tx, &v)?;
                Ok(())
            }
        }
    })
    .await?;
    if !is_dry_run(req.dry_run) {
        cloud.wake_reconciler();
    }
    Ok(UnlinkVolumeResponse::default())
}

pub async fn delete_volume(cloud: &Arc<Cloud>, caller: &Caller, req: DeleteVolumeRequest) -> Result<DeleteVolumeResponse, ApiError> {
    let id = VolumeId::parse(&req.volume_id)?;
    let account = caller.account_id.clone();
    write(cloud, req.dry_run, move |tx| {
        let mut v = get_owned(tx, &account, &id)?;
        if let Some(vm) = &v.vm_id {
            return Err(ApiError::new(
                ErrorCode::InvalidVolumeState,
                format!("the volume {id} is linked to {vm}; unlink it first"),
            ));
        }
        if v.state == "deleting" {
            return Ok(());
        }
        if !matches!(v.state.as_str(), "available" | "error" | "creating") {
            return Err(ApiError::new(ErrorCode::InvalidVolumeState, format!("the volume {id} is {}", v.state)));
        }
        v.state = "deleting".into();
        v.pending = "delete".into();
        volume_store::update(tx, &v)?;
        Ok(())
    })
    .await?;
    if !is_dry_run(req.dry_run) {
        cloud.wake_reconciler();
    }
    Ok(DeleteVolumeResponse::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_and_iops_rules() {
        assert_eq!(check_type("io1", Some(100)).unwrap(), Some(100));
        assert_eq!(check_type("io1", None).unwrap_err().code(), "7000");
        assert_eq!(check_type("io1", Some(99)).unwrap_err().code(), "4029");
        assert_eq!(check_type("gp2", Some(100)).unwrap_err().code(), "4029");
        assert_eq!(check_type("standard", None).unwrap(), None);
        assert_eq!(check_type("sc1", None).unwrap_err().code(), "4047");
    }

    #[test]
    fn device_names() {
        for ok in ["/dev/xvdb", "/dev/xvdz", "/dev/sdc"] {
            check_device_name(ok).unwrap();
        }
        for bad in ["/dev/xvda", "/dev/sda1", "xvdb", "/dev/xvdbb", "/dev/vdb", ""] {
            assert_eq!(check_device_name(bad).unwrap_err().code(), "4019", "{bad}");
        }
        assert_eq!(canonical_device("/dev/sdc"), canonical_device("/dev/xvdc"));
    }
}

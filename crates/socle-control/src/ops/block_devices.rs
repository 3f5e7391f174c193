//! `BlockDeviceMappings` of CreateVms: the root volume every VM gets (a copy
//! of its image, `/dev/sda1`) and any extra volumes to create and link.

use socle_store::snapshots as snapshot_store;
use socle_store::volumes::{self as volume_store, VolumeRow, ROOT_DEVICE};
use socle_store::{images::ImageRow, now_iso, Conn};
use socle_types::error::ErrorCode;
use socle_store::vms::VmRow;
use socle_types::ids::{AccountId, SnapshotId, VolumeId};
use socle_types::osc::BlockDeviceMappingVmCreation;
use socle_types::ApiError;

use super::volumes::{capacity_error, check_device_name, check_iops_ratio, check_size, check_type, DEFAULT_TYPE};
use crate::{custody, Cloud};

/// One volume to make for each VM of the call.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PlannedVolume {
    pub device: String,
    pub size: Option<i64>,
    pub volume_type: String,
    pub iops: Option<i64>,
    pub snapshot_id: Option<SnapshotId>,
    pub delete_on_vm_deletion: bool,
}

/// Checks the mappings and returns the root (always present) then the data
/// volumes. Volumes made at launch are deleted with their VM unless
/// `DeleteOnVmDeletion` is false, as on Outscale.
pub(crate) fn plan(mappings: &Option<Vec<BlockDeviceMappingVmCreation>>) -> Result<Vec<PlannedVolume>, ApiError> {
    let mut root = PlannedVolume {
        device: ROOT_DEVICE.into(),
        size: None,
        volume_type: DEFAULT_TYPE.into(),
        iops: None,
        snapshot_id: None,
        delete_on_vm_deletion: true,
    };
    let mut data: Vec<PlannedVolume> = vec![];
    for m in mappings.iter().flatten() {
        if m.no_device.is_some() || m.virtual_device_name.is_some() {
            return Err(ApiError::invalid_value("NoDevice and VirtualDeviceName are not supported by this Socle version"));
        }
        let device = m.device_name.clone().ok_or_else(|| ApiError::missing("BlockDeviceMappings.DeviceName"))?;
        let bsu = m.bsu.clone().ok_or_else(|| ApiError::missing("BlockDeviceMappings.Bsu"))?;
        let volume_type = bsu.volume_type.clone().unwrap_or_else(|| DEFAULT_TYPE.into());
        let iops = check_type(&volume_type, bsu.iops)?;
        if let Some(size) = bsu.volume_size {
            check_size(size)?;
        }
        let delete_on_vm_deletion = bsu.delete_on_vm_deletion.unwrap_or(true);
        if device == ROOT_DEVICE {
            if bsu.snapshot_id.is_some() {
                return Err(ApiError::invalid_value("the root volume comes from the image; SnapshotId is not accepted for /dev/sda1"));
            }
            root = PlannedVolume { device, size: bsu.volume_size, volume_type, iops, snapshot_id: None, delete_on_vm_deletion };
            continue;
        }
        check_device_name(&device)?;
        let slot = device.trim_start_matches("/dev/").trim_start_matches("xvd").trim_start_matches("sd").to_string();
        if data.iter().any(|d| d.device.ends_with(&slot)) {
            return Err(ApiError::new(ErrorCode::DeviceInUse, format!("{device} is mapped twice")));
        }
        let snapshot_id = bsu.snapshot_id.as_deref().map(SnapshotId::parse).transpose()?;
        if snapshot_id.is_none() && bsu.volume_size.is_none() {
            return Err(ApiError::missing("BlockDeviceMappings.Bsu.VolumeSize (or SnapshotId)"));
        }
        data.push(PlannedVolume { device, size: bsu.volume_size, volume_type, iops, snapshot_id, delete_on_vm_deletion });
    }
    let mut all = vec![root];
    all.extend(data);
    Ok(all)
}

/// Records the planned volumes of one new VM, linked to it, keys wrapped,
/// within the pool's capacity (all in the caller's transaction). Their files
/// are made by the reconciler before the VM first starts.
#[allow(clippy::too_many_arguments)]
pub(crate) fn record(
    cloud: &Cloud,
    tx: &Conn,
    account: &AccountId,
    actor: &str,
    vm: &VmRow,
    image: &ImageRow,
    planned: &[PlannedVolume],
) -> Result<(), ApiError> {
    let now = now_iso();
    for p in planned {
        let (size, source_image_id, snapshot_id) = if p.device == ROOT_DEVICE {
            let size = p.size.unwrap_or(image.size_gib);
            if size < image.size_gib {
                return Err(ApiError::new(
                    ErrorCode::InvalidVolumeSize,
                    format!("the root volume must hold the image: at least {} GiB", image.size_gib),
                ));
            }
            // An image made from a VM is a snapshot of its root disk; a
            // platform image is a plain base disk.
            (size, Some(image.image_id.to_string()), image.root_snapshot_id.clone())
        } else if let Some(sid) = &p.snapshot_id {
            let snap = snapshot_store::get_visible(tx, account, sid)?
                .ok_or_else(|| ApiError::not_found(ErrorCode::NoSuchSnapshot, "snapshot", sid.as_str()))?;
            if snap.state != "completed" {
                return Err(ApiError::new(ErrorCode::InvalidResourceState, format!("the snapshot {sid} is {}", snap.state)));
            }
            let size = p.size.unwrap_or(snap.volume_size);
            if size < snap.volume_size {
                return Err(ApiError::new(ErrorCode::InvalidVolumeSize, format!("{} must be at least the snapshot's {} GiB", p.device, snap.volume_size)));
            }
            (size, None, Some(sid.to_string()))
        } else {
            (p.size.expect("checked by plan"), None, None)
        };
        check_iops_ratio(p.iops, size)?;
        super::volumes::ensure_room(tx, size, cloud.config.storage_capacity_gib)?;
        let volume_id = VolumeId::generate();
        let wrapped = custody::wrap_new_key(cloud, tx, account, actor, volume_id.as_str())?;
        let row = VolumeRow {
            volume_id,
            account_id: account.clone(),
            size_gib: size,
            volume_type: p.volume_type.clone(),
            iops: p.iops,
            subregion: vm.subregion.clone(),
            snapshot_id,
            source_image_id,
            client_token: None,
            state: "in-use".into(),
            wrapped_key: Some(wrapped),
            vm_id: Some(vm.vm_id.clone()),
            device_name: Some(p.device.clone()),
            // Linked from the start: the VM gets it at its first boot.
            link_state: Some("attached".into()),
            delete_on_vm_deletion: p.delete_on_vm_deletion,
            linked_at: Some(now.clone()),
            pending: "create".into(),
            state_reason: String::new(),
            created_at: now.clone(),
            revision: 0,
            // Where the VM runs.
            host_id: vm.host_id.clone(),
        };
        volume_store::insert_within_capacity(tx, &row, cloud.config.storage_capacity_gib)?
            .map_err(|e| capacity_error(size, e.provisioned_gib, e.capacity_gib))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use socle_types::osc::BsuToCreate;

    fn m(device: &str, bsu: BsuToCreate) -> BlockDeviceMappingVmCreation {
        BlockDeviceMappingVmCreation { device_name: Some(device.into()), bsu: Some(bsu), ..Default::default() }
    }

    #[test]
    fn root_is_always_planned_first() {
        let p = plan(&None).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!((p[0].device.as_str(), p[0].delete_on_vm_deletion), (ROOT_DEVICE, true));
        let p = plan(&Some(vec![
            m("/dev/xvdb", BsuToCreate { volume_size: Some(2), delete_on_vm_deletion: Some(false), ..Default::default() }),
            m(ROOT_DEVICE, BsuToCreate { volume_size: Some(5), ..Default::default() }),
        ]))
        .unwrap();
        assert_eq!((p[0].size, p[1].size, p[1].delete_on_vm_deletion), (Some(5), Some(2), false));
    }

    #[test]
    fn bad_mappings_are_refused() {
        let dup = plan(&Some(vec![
            m("/dev/xvdb", BsuToCreate { volume_size: Some(1), ..Default::default() }),
            m("/dev/sdb", BsuToCreate { volume_size: Some(1), ..Default::default() }),
        ]));
        assert_eq!(dup.unwrap_err().code(), "9004");
        assert_eq!(plan(&Some(vec![m("/dev/xvdb", BsuToCreate::default())])).unwrap_err().code(), "7000");
        assert_eq!(plan(&Some(vec![m("/dev/vda", BsuToCreate { volume_size: Some(1), ..Default::default() })])).unwrap_err().code(), "4019");
        assert_eq!(
            plan(&Some(vec![m(ROOT_DEVICE, BsuToCreate { snapshot_id: Some("snap-12345678".into()), ..Default::default() })])).unwrap_err().code(),
            "4047"
        );
    }
}

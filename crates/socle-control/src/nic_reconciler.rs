//! Settles NICs whose link is changing: LinkNic left them `attaching`,
//! UnlinkNic `detaching`.
//!
//! Attaching: on a running VM the NIC's tap is prepared and hot-plugged
//! (with network passes held, so a pass cannot move the tap into its
//! namespace before QEMU opened it), then wired at once; a VM that is not
//! running gets it when it starts (`reconciler::prepare_nics`). Detaching:
//! the device leaves the VM (the guest releases it first), then its tap
//! goes, then the NIC is available — never earlier, so a NIC cannot be on
//! two VMs' taps at once. Each step is idempotent and the database is
//! written last, so a crash anywhere is repaired by doing it again; a
//! settle finds the row as it was, or changes nothing (the user unlinked
//! meanwhile, or the VM went).

use std::sync::Arc;

use socle_agent_api::{HostError, HostErrorKind, VmNic, VmRuntime};
use socle_store::nics::{self as nic_store, NicRow};
use socle_types::ids::{NicId, VmId};

use crate::network::compile::net_key;
use crate::reconciler::ReconcileError;
use crate::{faults, Cloud};

/// One step for one NIC.
pub async fn work_nic(cloud: &Arc<Cloud>, id: &NicId) -> Result<(), ReconcileError> {
    let lookup = id.clone();
    let Some(nic) = cloud.store.read(move |c| nic_store::get_any(c, &lookup)).await? else {
        return Ok(());
    };
    let Some(vm) = nic.vm_id.clone() else { return Ok(()) };
    match nic.state.as_str() {
        "attaching" => attach(cloud, &nic, &vm).await,
        "detaching" => detach(cloud, &nic, &vm).await,
        _ => Ok(()),
    }
}

async fn attach(cloud: &Arc<Cloud>, nic: &NicRow, vm: &VmId) -> Result<(), ReconcileError> {
    let Some(net) = &cloud.network else {
        // No host networking (not root): the link is only recorded.
        if settle(cloud, nic, "attaching", |n| n.state = "in-use".into()).await? {
            cloud.network_changed();
        }
        return Ok(());
    };
    let hold = net.hold_passes().await;
    let host = cloud.host_of_vm(vm).await?;
    let running = match host.vm_runtime(vm.to_string()).await {
        Ok(r) => matches!(r, VmRuntime::Running | VmRuntime::Paused),
        Err(HostError { kind: HostErrorKind::VmNotFound { .. }, .. }) => false,
        Err(e) => return Err(e.into()),
    };
    if running {
        // After a crash the NIC may be plugged already: its tap is then
        // QEMU's, and preparing it again would re-create it under QEMU.
        let tap = net.tap_of(nic);
        if !host.nic_plugged(vm.to_string(), tap.clone()).await? {
            net.prepare_tap(&*host, nic).await?;
        }
        host.link_nic(vm.to_string(), VmNic { ifname: tap, mac: nic.mac.clone() }).await?;
        faults::point("nic-hot-plugged");
    }
    if settle(cloud, nic, "attaching", |n| n.state = "in-use".into()).await? {
        // Its addresses now count as members of its groups, and its tap
        // (if plugged) goes into the namespace.
        if running {
            hold.wire(cloud, &[net_key(nic)]).await?;
        } else {
            cloud.network_changed();
        }
        return Ok(());
    }
    drop(hold);
    // Unlinked meanwhile, or its VM went: undo what this step plugged
    // unless the NIC is still (being) linked to that VM.
    let lookup = nic.nic_id.clone();
    let now = cloud.store.read(move |c| nic_store::get_any(c, &lookup)).await?;
    if now.as_ref().and_then(|n| n.vm_id.as_ref()) != Some(vm) {
        unplug(cloud, nic, vm).await?;
    }
    Ok(())
}

async fn detach(cloud: &Arc<Cloud>, nic: &NicRow, vm: &VmId) -> Result<(), ReconcileError> {
    unplug(cloud, nic, vm).await?;
    faults::point("nic-unplugged");
    let changed = settle(cloud, nic, "detaching", |n| {
        n.state = "available".into();
        n.vm_id = None;
        n.device_number = None;
        n.link_nic_id = None;
        n.delete_on_vm_deletion = false;
        n.linked_at = None;
    })
    .await?;
    if changed {
        cloud.network_changed();
    }
    Ok(())
}

/// Takes the NIC off the VM (definition and, if running, the guest) and
/// removes its tap. Idempotent.
async fn unplug(cloud: &Arc<Cloud>, nic: &NicRow, vm: &VmId) -> Result<(), ReconcileError> {
    let Some(net) = &cloud.network else { return Ok(()) };
    let host = cloud.host_of_vm(vm).await?;
    host.unlink_nic(vm.to_string(), net.tap_of(nic)).await?;
    net.remove_tap(&*host, nic).await?;
    Ok(())
}

/// Applies `change` if the NIC is still in `expected` state with the same
/// link; returns whether it did.
async fn settle(cloud: &Arc<Cloud>, nic: &NicRow, expected: &'static str, change: impl Fn(&mut NicRow) + Send + 'static) -> Result<bool, ReconcileError> {
    let (id, link) = (nic.nic_id.clone(), nic.link_nic_id.clone());
    let changed = cloud
        .store
        .write(move |c| -> Result<bool, socle_store::StoreError> {
            let Some(mut row) = nic_store::get_any(c, &id)? else { return Ok(false) };
            if row.state != expected || row.link_nic_id != link {
                return Ok(false);
            }
            change(&mut row);
            nic_store::update(c, &row)?;
            Ok(true)
        })
        .await?;
    Ok(changed)
}

//! StartVms, StopVms, RebootVms, DeleteVms.
//!
//! These record the user's wish (`desired`) and the transitional state in
//! one transaction, then wake the reconciler, which does the host work. All
//! IDs are checked before anything changes: one unknown ID fails the whole
//! call and changes nothing.

use std::sync::Arc;

use socle_store::vms::{self as vm_store, VmRow};
use socle_types::error::ErrorCode;
use socle_types::ids::VmId;
use socle_types::osc::*;
use socle_types::ApiError;

use super::{is_dry_run, write};
use super::vms::vm_not_found;
use crate::{Caller, Cloud};

/// What a lifecycle call does to one VM in a given state.
enum Transition {
    /// Nothing to do (already there or on the way).
    Stay,
    /// New (state, desired, force_stop).
    To(&'static str, &'static str, bool),
}

fn parse_ids(ids: &[String]) -> Result<Vec<VmId>, ApiError> {
    if ids.is_empty() {
        return Err(ApiError::missing("VmIds"));
    }
    let mut out: Vec<VmId> = ids.iter().map(|s| VmId::parse(s)).collect::<Result<_, _>>()?;
    out.dedup();
    Ok(out)
}

/// Applies `decide` to every VM in one transaction and reports each VM's
/// previous and current state (None for a dry run).
async fn transition(
    cloud: &Arc<Cloud>,
    caller: &Caller,
    ids: &[String],
    dry_run: Option<bool>,
    decide: fn(&VmRow) -> Result<Transition, ApiError>,
) -> Result<Option<Vec<VmState>>, ApiError> {
    let ids = parse_ids(ids)?;
    let account = caller.account_id.clone();
    let states = write(cloud, dry_run, move |tx| {
        let mut vms = vec![];
        for id in &ids {
            vms.push(vm_store::get(tx, &account, id)?.ok_or_else(|| vm_not_found(id.as_str()))?);
        }
        // Decide for all before changing any: one refusal changes nothing.
        let plans = vms.iter().map(decide).collect::<Result<Vec<_>, _>>()?;
        let mut out = vec![];
        for (vm, plan) in vms.iter().zip(plans) {
            let current = match plan {
                Transition::Stay => vm.state.clone(),
                Transition::To(state, desired, force) => {
                    vm_store::set_lifecycle(tx, &vm.vm_id, state, desired, force)?;
                    state.to_string()
                }
            };
            out.push(VmState {
                vm_id: Some(vm.vm_id.to_string()),
                previous_state: Some(vm.state.clone()),
                current_state: Some(current),
            });
        }
        Ok(out)
    })
    .await?;
    if is_dry_run(dry_run) {
        return Ok(None);
    }
    cloud.wake_reconciler();
    Ok(Some(states))
}

fn gone(vm: &VmRow) -> ApiError {
    ApiError::new(ErrorCode::InvalidVmState, format!("the VM {} is {}", vm.vm_id, vm.state))
}

pub async fn start_vms(cloud: &Arc<Cloud>, caller: &Caller, req: StartVmsRequest) -> Result<StartVmsResponse, ApiError> {
    let vms = transition(cloud, caller, &req.vm_ids, req.dry_run, |vm| match vm.state.as_str() {
        "pending" | "running" => Ok(Transition::Stay),
        "stopped" | "stopping" => Ok(Transition::To("pending", "running", false)),
        _ => Err(gone(vm)),
    })
    .await?;
    Ok(StartVmsResponse { vms, ..Default::default() })
}

fn stop(vm: &VmRow, force: bool) -> Result<Transition, ApiError> {
    match vm.state.as_str() {
        "stopped" => Ok(Transition::Stay),
        "stopping" if !force || vm.force_stop => Ok(Transition::Stay),
        "pending" | "running" | "stopping" => Ok(Transition::To("stopping", "stopped", force)),
        _ => Err(gone(vm)),
    }
}

pub async fn stop_vms(cloud: &Arc<Cloud>, caller: &Caller, req: StopVmsRequest) -> Result<StopVmsResponse, ApiError> {
    let vms = if req.force_stop == Some(true) {
        transition(cloud, caller, &req.vm_ids, req.dry_run, |vm| stop(vm, true)).await?
    } else {
        transition(cloud, caller, &req.vm_ids, req.dry_run, |vm| stop(vm, false)).await?
    };
    Ok(StopVmsResponse { vms, ..Default::default() })
}

pub async fn delete_vms(cloud: &Arc<Cloud>, caller: &Caller, req: DeleteVmsRequest) -> Result<DeleteVmsResponse, ApiError> {
    let vms = transition(cloud, caller, &req.vm_ids, req.dry_run, |vm| {
        if vm.deletion_protection {
            return Err(ApiError::new(
                ErrorCode::ResourceConflict,
                format!("the VM {} has DeletionProtection; turn it off with UpdateVm first", vm.vm_id),
            ));
        }
        match vm.state.as_str() {
            "shutting-down" | "terminated" => Ok(Transition::Stay),
            _ => Ok(Transition::To("shutting-down", "terminated", true)),
        }
    })
    .await?;
    Ok(DeleteVmsResponse { vms, ..Default::default() })
}

pub async fn reboot_vms(cloud: &Arc<Cloud>, caller: &Caller, req: RebootVmsRequest) -> Result<RebootVmsResponse, ApiError> {
    let ids = parse_ids(&req.vm_ids)?;
    let account = caller.account_id.clone();
    let lookup = ids.clone();
    let vms = cloud
        .store
        .read(move |conn| -> Result<Vec<VmRow>, ApiError> {
            lookup.iter().map(|id| vm_store::get(conn, &account, id)?.ok_or_else(|| vm_not_found(id.as_str()))).collect()
        })
        .await?;
    if let Some(vm) = vms.iter().find(|vm| vm.state != "running") {
        return Err(ApiError::new(
            ErrorCode::InvalidVmState,
            format!("the VM {} is {}; only running VMs can be rebooted", vm.vm_id, vm.state),
        ));
    }
    if is_dry_run(req.dry_run) {
        return Ok(RebootVmsResponse::default());
    }
    for vm in &vms {
        let reboot = async { cloud.host(vm.host_id.as_ref()).await?.reboot_vm(vm.vm_id.to_string()).await };
        reboot.await.map_err(|e| crate::host_api_error(&format!("reboot {}", vm.vm_id), e))?;
    }
    Ok(RebootVmsResponse::default())
}

//! VM creation, reading, updating and console.

use std::collections::HashMap;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use sha2::{Digest, Sha256};
use socle_agent_api::{HostError, HostErrorKind};
use socle_store::vms::{self as vm_store, ClientTokenRecord, QuotaExceeded, VmRow};
use socle_store::volumes::{self as volume_store, VolumeRow};
use socle_store::listing::Listing;
use socle_store::placement::{self, Demand};
use socle_store::{accounts, hosts as host_store, images as image_store, keypairs as keypair_store, now_iso};
use socle_types::error::ErrorCode;
use socle_types::ids::{HostId, ImageId, ReservationId, VmId};
use socle_types::osc::*;
use socle_types::vm_type::{parse_vm_type, VmShape, DEFAULT_VM_TYPE};
use socle_types::ApiError;

use super::launch_nics::{create_vm_nics, LaunchNetwork};
use super::vm_network::{vm_network_view, vm_network_views, VmNetworkView};
use super::{is_dry_run, resource_tags, tags_by_resource, write};
use crate::paging::{created_key, finish_page, page_request, reject_unsupported_fields, reject_unsupported_filters};
use crate::{Caller, Cloud};

/// At most this many VMs per CreateVms call.
const MAX_VMS_PER_CALL: i64 = 100;
/// UserData limit (decoded), as on Outscale.
const MAX_USER_DATA: usize = 500 * 1024;
/// ReadConsoleOutput returns at most the last 64 KiB of the console.
const CONSOLE_TAIL: u64 = 64 * 1024;

/// OSC state codes (as AWS): shown by ReadVms filters on VmStateCodes.
pub(crate) fn state_code(state: &str) -> i64 {
    match state {
        "pending" => 0,
        "running" => 16,
        "shutting-down" => 32,
        "terminated" => 48,
        "stopping" => 64,
        "stopped" => 80,
        _ => -1,
    }
}

pub(crate) fn vm_not_found(id: &str) -> ApiError {
    ApiError::not_found(ErrorCode::NoSuchVm, "VM", id)
}

/// A VM as the API shows it, with its tags and the volumes linked to it.
pub(crate) fn vm_view(row: &VmRow, tags: Vec<ResourceTag>, volumes: &[VolumeRow], network: Option<&VmNetworkView>) -> Vm {
    // Device order: the root (/dev/sda1) first, then /dev/xvdb, /dev/xvdc…
    let mut volumes: Vec<&VolumeRow> = volumes.iter().collect();
    volumes.sort_by(|a, b| a.device_name.cmp(&b.device_name));
    let mappings = volumes
        .iter()
        .map(|v| BlockDeviceMappingCreated {
            device_name: v.device_name.clone(),
            bsu: Some(BsuCreated {
                delete_on_vm_deletion: Some(v.delete_on_vm_deletion),
                link_date: v.linked_at.clone(),
                state: v.link_state.clone(),
                volume_id: Some(v.volume_id.to_string()),
            }),
        })
        .collect();
    let mut vm = Vm {
        architecture: Some("x86_64".into()),
        block_device_mappings: Some(mappings),
        boot_mode: Some("legacy".into()),
        bsu_optimized: Some(false),
        client_token: Some(row.client_token.clone().unwrap_or_default()),
        creation_date: Some(row.created_at.clone()),
        deletion_protection: Some(row.deletion_protection),
        hypervisor: Some("kvm".into()),
        image_id: Some(row.image_id.to_string()),
        is_source_dest_checked: Some(true),
        keypair_name: row.keypair_name.clone(),
        launch_number: Some(row.launch_number),
        nested_virtualization: Some(false),
        nics: Some(vec![]),
        os_family: Some(String::new()),
        performance: Some(row.performance.clone()),
        placement: Some(Placement { subregion_name: Some(row.subregion.clone()), tenancy: Some(row.tenancy.clone()) }),
        product_codes: Some(vec!["0001".into()]),
        reservation_id: Some(row.reservation_id.to_string()),
        root_device_name: Some("/dev/sda1".into()),
        root_device_type: Some("ebs".into()),
        security_groups: Some(vec![]),
        state: Some(row.state.clone()),
        state_reason: Some(row.state_reason.clone()),
        tags: Some(tags),
        tpm_enabled: Some(false),
        user_data: Some(row.user_data.clone()),
        vm_id: Some(row.vm_id.to_string()),
        vm_initiated_shutdown_behavior: Some("stop".into()),
        vm_type: Some(row.vm_type.clone()),
        ..Default::default()
    };
    if let Some(n) = network {
        n.apply_to(&mut vm);
    }
    vm
}

fn performance_of(req: Option<&str>, shape: &VmShape) -> Result<String, ApiError> {
    match req {
        None => Ok(shape.performance_name().to_string()),
        Some(p @ ("medium" | "high" | "highest")) => Ok(p.to_string()),
        Some(p) => Err(ApiError::invalid_value(format!("Performance must be medium, high or highest, got {p:?}"))),
    }
}

fn quota_error(q: QuotaExceeded, asked: i64) -> ApiError {
    match q {
        QuotaExceeded::Vms { max, used } => ApiError::new(
            ErrorCode::TooManyVms,
            format!("VM quota exceeded: {used} of {max} VMs in use, {asked} more requested"),
        ),
        QuotaExceeded::Vcpus { max, used } => ApiError::new(
            ErrorCode::TooManyCores,
            format!("vCPU quota exceeded: {used} of {max} vCPUs in use"),
        ),
        QuotaExceeded::Memory { max_mib, used_mib } => ApiError::new(
            ErrorCode::TooMuchMemory,
            format!("memory quota exceeded: {} of {} GiB in use", (used_mib + 1023) / 1024, max_mib / 1024),
        ),
    }
}

pub async fn create_vms(cloud: &Arc<Cloud>, caller: &Caller, req: CreateVmsRequest) -> Result<CreateVmsResponse, ApiError> {
    reject_unsupported_fields(
        &req,
        &[
            "ActionsOnNextBoot",
            "ShutdownBehaviorConfiguration",
        ],
    )?;
    if req.boot_mode.as_deref().is_some_and(|m| m != "legacy") {
        return Err(ApiError::invalid_value("BootMode: only legacy boot is supported by this Socle version"));
    }
    if req.nested_virtualization == Some(true) || req.tpm_enabled == Some(true) {
        return Err(ApiError::invalid_value("NestedVirtualization and TpmEnabled are not supported by this Socle version"));
    }
    if req.vm_initiated_shutdown_behavior.as_deref().is_some_and(|b| b != "stop") {
        return Err(ApiError::invalid_value("VmInitiatedShutdownBehavior: only \"stop\" is supported"));
    }
    let image_id = ImageId::parse(&req.image_id)?;
    let vm_type = req.vm_type.clone().unwrap_or_else(|| DEFAULT_VM_TYPE.to_string());
    let shape = parse_vm_type(&vm_type)?;
    let performance = performance_of(req.performance.as_deref(), &shape)?;
    let min = req.min_vms_count.unwrap_or(1);
    let max = req.max_vms_count.unwrap_or(min.max(1));
    if min < 1 || max < min || max > MAX_VMS_PER_CALL {
        return Err(ApiError::invalid_value(format!(
            "need 1 <= MinVmsCount <= MaxVmsCount <= {MAX_VMS_PER_CALL}, got MinVmsCount={min}, MaxVmsCount={max}"
        )));
    }
    let user_data = req.user_data.clone().unwrap_or_default();
    let decoded = STANDARD
        .decode(&user_data)
        .map_err(|_| ApiError::invalid_value("UserData must be Base64-encoded"))?;
    if decoded.len() > MAX_USER_DATA {
        return Err(ApiError::invalid_value(format!("UserData is limited to {MAX_USER_DATA} bytes once decoded")));
    }
    let placement = req.placement.as_ref().and_then(|p| p.subregion_name.clone());
    let tenancy = match req.placement.as_ref().and_then(|p| p.tenancy.as_deref()) {
        None | Some("default") => "default",
        Some("dedicated") => "dedicated",
        Some(t) => return Err(ApiError::invalid_value(format!("Placement.Tenancy must be default or dedicated, got {t:?}"))),
    };
    let region = cloud.config.region.clone();
    let pool = cloud.config.public_ip_pool.clone();
    let network = LaunchNetwork::parse(&req, max)?;
    if let Some(token) = &req.client_token {
        if token.is_empty() || token.len() > 64 {
            return Err(ApiError::invalid_value("ClientToken must be 1 to 64 characters"));
        }
    }
    let request_hash = {
        let mut canonical = req.clone();
        canonical.dry_run = None;
        hex::encode(Sha256::digest(serde_json::to_vec(&canonical).map_err(|e| ApiError::internal(e.to_string()))?))
    };
    let planned = super::block_devices::plan(&req.block_device_mappings)?;
    let dry_run = req.dry_run;
    let account = caller.account_id.clone();
    let actor = caller.actor();
    let cloud2 = cloud.clone();
    let rows = write(cloud, dry_run, move |tx| {
            if let Some(token) = &req.client_token {
                if let Some(rec) = vm_store::get_client_token(tx, &account, "CreateVms", token)? {
                    if rec.request_hash != request_hash {
                        return Err(ApiError::invalid_value(
                            "this ClientToken was already used with different parameters",
                        ));
                    }
                    let reservation = ReservationId::from_trusted(rec.result);
                    let rows = vm_store::list_by_reservation(tx, &account, &reservation)?;
                    let ids: Vec<VmId> = rows.iter().map(|r| r.vm_id.clone()).collect();
                    return Ok((rows, vm_network_views(tx, &ids, &region)?));
                }
            }
            let (net, subregion) = network.resolve(tx, &account, placement.as_deref())?;
            let acct = accounts::get(tx, &account)
                ?
                .ok_or_else(|| ApiError::internal("authenticated account has no row"))?;
            let image = image_store::get_visible(tx, &account, &image_id)
                ?
                .ok_or_else(|| ApiError::not_found(ErrorCode::NoSuchImage, "image", image_id.as_str()))?;
            let state = super::images::effective_state(tx, &image)?;
            if state != "available" {
                return Err(ApiError::new(
                    ErrorCode::InvalidImageState,
                    format!("the image {image_id} is {state}, not available"),
                ));
            }
            if let Some(name) = &req.keypair_name {
                if keypair_store::get_by_name(tx, &account, name)?.is_none() {
                    return Err(ApiError::not_found(ErrorCode::NoSuchKeypair, "keypair", name));
                }
            }
            // Launch as many as fit between Min and Max (as Outscale does).
            let used = vm_store::usage(tx, &account)?;
            let q = acct.quotas;
            let fits = |n: i64| {
                used.vms + n <= q.max_vms
                    && used.vcpus + n * i64::from(shape.vcpus) <= q.max_vcpus
                    && used.memory_mib + n * shape.memory_mib as i64 <= q.max_memory_mib
            };
            let count = (min..=max).rev().find(|&n| fits(n)).unwrap_or(min);
            let reservation = ReservationId::generate();
            let now = now_iso();
            let boot = req.boot_on_creation != Some(false);
            // Over quota is said before any host is looked for.
            let add = vm_store::Usage { vms: count, vcpus: count * i64::from(shape.vcpus), memory_mib: count * shape.memory_mib as i64 };
            vm_store::check_quota(tx, &account, &q, add)?.map_err(|e| quota_error(e, count))?;
            let mut rows: Vec<VmRow> = vec![];
            for i in 0..count {
                let vm_id = VmId::generate();
                let demand = Demand {
                    vm_id: &vm_id,
                    account: &account,
                    vcpus: i64::from(shape.vcpus),
                    memory_mib: shape.memory_mib as i64,
                    subregion: subregion.as_deref(),
                    // Disks made from snapshots kept elsewhere are made
                    // once the snapshots are copied to the VM's host.
                    host: None,
                    dedicated: tenancy == "dedicated",
                };
                let placed = match super::placement::place_vm(tx, &demand) {
                    Ok(p) => p,
                    // Launch as many as there is room for, at least Min.
                    Err(e) if e.code == ErrorCode::InsufficientCapacity && i >= min => break,
                    Err(e) => return Err(e),
                };
                rows.push(VmRow {
                    vm_id,
                    account_id: account.clone(),
                    reservation_id: reservation.clone(),
                    image_id: image_id.clone(),
                    vm_type: vm_type.clone(),
                    vcpus: i64::from(shape.vcpus),
                    memory_mib: shape.memory_mib as i64,
                    performance: performance.clone(),
                    keypair_name: req.keypair_name.clone(),
                    user_data: user_data.clone(),
                    subregion: placed.subregion,
                    deletion_protection: req.deletion_protection.unwrap_or(false),
                    client_token: req.client_token.clone(),
                    launch_number: i,
                    state: if boot { "pending" } else { "stopped" }.into(),
                    desired: if boot { "running" } else { "stopped" }.into(),
                    force_stop: false,
                    state_reason: String::new(),
                    created_at: now.clone(),
                    terminated_at: None,
                    host_id: Some(placed.host_id),
                    tenancy: tenancy.to_string(),
                });
            }
            vm_store::insert_within_quota(tx, &account, &q, &rows)?.map_err(|e| quota_error(e, count))?;
            for vm in &rows {
                super::block_devices::record(&cloud2, tx, &account, &actor, vm, &image, &planned)?;
                create_vm_nics(tx, &net, &account, &vm.vm_id, &vm.subregion, &pool)?;
            }
            if let Some(token) = &req.client_token {
                let rec = ClientTokenRecord { request_hash: request_hash.clone(), result: reservation.to_string() };
                vm_store::put_client_token(tx, &account, "CreateVms", token, &rec, &now)?;
            }
            let ids: Vec<VmId> = rows.iter().map(|r| r.vm_id.clone()).collect();
            let views = vm_network_views(tx, &ids, &region)?;
            Ok((rows, views))
        })
        .await?;
    if is_dry_run(dry_run) {
        return Ok(CreateVmsResponse::default());
    }
    cloud.network_changed();
    let (rows, views) = rows;
    Ok(CreateVmsResponse {
        vms: Some(rows.iter().map(|r| vm_view(r, vec![], &[], views.get(&r.vm_id))).collect()),
        ..Default::default()
    })
}

/// The VM states with each OSC state code (ReadVms' VmStateCodes filter).
const VM_STATES: [&str; 6] = ["pending", "running", "shutting-down", "terminated", "stopping", "stopped"];

/// The state reason of a VM whose host does not answer.
const HOST_AWAY: &str = "Server.HostUnreachable: the host of this VM does not answer at the moment; its state is the last one known";

pub async fn read_vms(cloud: &Arc<Cloud>, caller: &Caller, req: ReadVmsRequest) -> Result<ReadVmsResponse, ApiError> {
    reject_unsupported_filters(
        &req.filters,
        &[
            "VmIds", "VmStateNames", "VmStateCodes", "TagKeys", "TagValues", "Tags", "ImageIds", "SubregionNames",
            "VmTypes", "KeypairNames", "ReservationIds", "ClientTokens", "LaunchNumbers", "Architectures",
        ],
    )?;
    let f = req.filters.unwrap_or_default();
    let (after, per_page) = page_request(req.next_page_token.as_deref(), req.results_per_page)?;
    // Every filter is a WHERE clause: the cost follows the page, not the account.
    let mut listing = Listing::new("vms", "vm_id", caller.account_id.as_str());
    listing
        .any_of("vm_id", f.vm_ids.as_deref())
        .any_of("state", f.vm_state_names.as_deref())
        .any_of("image_id", f.image_ids.as_deref())
        .any_of("subregion", f.subregion_names.as_deref())
        .any_of("vm_type", f.vm_types.as_deref())
        .any_of("keypair_name", f.keypair_names.as_deref())
        .any_of("reservation_id", f.reservation_ids.as_deref())
        .any_of("client_token", f.client_tokens.as_deref())
        .any_of("launch_number", f.launch_numbers.as_deref())
        .tags(f.tag_keys.as_deref(), f.tag_values.as_deref(), f.tags.as_deref());
    if let Some(codes) = &f.vm_state_codes {
        let states: Vec<&str> = VM_STATES.into_iter().filter(|s| codes.contains(&state_code(s))).collect();
        listing.any_of("state", Some(&states));
    }
    if f.architectures.as_ref().is_some_and(|a| !a.iter().any(|a| a == "x86_64")) {
        listing.condition("1 = 0");
    }
    let account = caller.account_id.clone();
    let region = cloud.config.region.clone();
    let (rows, tags, volumes, networks, away) = cloud
        .store
        .read(move |c| {
            let rows = vm_store::page(c, &listing, after.as_ref(), per_page + 1)?;
            let ids: Vec<&str> = rows.iter().take(per_page as usize).map(|v| v.vm_id.as_str()).collect();
            let tags = tags_by_resource(c, &account, &ids)?;
            let volumes = volume_store::linked_to_any(c, &ids)?;
            let vm_ids: Vec<VmId> = ids.iter().map(|id| VmId::from_trusted(id.to_string())).collect();
            let networks = vm_network_views(c, &vm_ids, &region)?;
            let away: Vec<HostId> = host_store::list(c)?.into_iter().filter(|h| h.state == "unreachable").map(|h| h.host_id).collect();
            Ok::<_, ApiError>((rows, tags, volumes, networks, away))
        })
        .await?;
    let (page, next) = finish_page(rows, per_page, |v| created_key(&v.created_at, v.vm_id.as_str()));
    let mut tags_of = tags;
    let mut volumes_of: HashMap<String, Vec<VolumeRow>> = HashMap::new();
    for v in volumes {
        if let Some(vm) = &v.vm_id {
            volumes_of.entry(vm.to_string()).or_default().push(v);
        }
    }
    Ok(ReadVmsResponse {
        vms: Some(
            page.iter()
                .map(|v| {
                    let linked = volumes_of.get(v.vm_id.as_str()).map(Vec::as_slice).unwrap_or(&[]);
                    let mut view = vm_view(v, tags_of.remove(v.vm_id.as_str()).unwrap_or_default(), linked, networks.get(&v.vm_id));
                    if v.host_id.as_ref().is_some_and(|h| away.contains(h)) && v.state != "terminated" {
                        // Its state is what was last known: say so rather than guess.
                        view.state_reason = Some(HOST_AWAY.into());
                    }
                    view
                })
                .collect(),
        ),
        next_page_token: next,
        ..Default::default()
    })
}

pub async fn read_vms_state(
    cloud: &Arc<Cloud>,
    caller: &Caller,
    req: ReadVmsStateRequest,
) -> Result<ReadVmsStateResponse, ApiError> {
    reject_unsupported_filters(&req.filters, &["VmIds", "VmStates", "SubregionNames"])?;
    let f = req.filters.unwrap_or_default();
    let (after, per_page) = page_request(req.next_page_token.as_deref(), req.results_per_page)?;
    let mut listing = Listing::new("vms", "vm_id", caller.account_id.as_str());
    listing
        .any_of("vm_id", f.vm_ids.as_deref())
        .any_of("state", f.vm_states.as_deref())
        .any_of("subregion", f.subregion_names.as_deref());
    if req.all_vms != Some(true) {
        listing.any_of("state", Some(&["running"]));
    }
    let rows = cloud.store.read(move |c| vm_store::page(c, &listing, after.as_ref(), per_page + 1)).await?;
    let (page, next) = finish_page(rows, per_page, |v| created_key(&v.created_at, v.vm_id.as_str()));
    Ok(ReadVmsStateResponse {
        vm_states: Some(
            page.into_iter()
                .map(|v| VmStates {
                    vm_id: Some(v.vm_id.to_string()),
                    vm_state: Some(v.state),
                    subregion_name: Some(v.subregion),
                    maintenance_events: Some(vec![]),
                })
                .collect(),
        ),
        next_page_token: next,
        ..Default::default()
    })
}

pub async fn update_vm(cloud: &Arc<Cloud>, caller: &Caller, req: UpdateVmRequest) -> Result<UpdateVmResponse, ApiError> {
    reject_unsupported_fields(
        &req,
        &[
            "ActionsOnNextBoot",
            "BlockDeviceMappings",
            "SecurityGroupIds",
            "ShutdownBehaviorConfiguration",
            "IsSourceDestChecked",
            "NestedVirtualization",
        ],
    )?;
    if req.vm_initiated_shutdown_behavior.as_deref().is_some_and(|b| b != "stop") {
        return Err(ApiError::invalid_value("VmInitiatedShutdownBehavior: only \"stop\" is supported"));
    }
    let vm_id = VmId::parse(&req.vm_id)?;
    let new_shape = req.vm_type.as_deref().map(parse_vm_type).transpose()?;
    if let Some(ud) = &req.user_data {
        let decoded = STANDARD.decode(ud).map_err(|_| ApiError::invalid_value("UserData must be Base64-encoded"))?;
        if decoded.len() > MAX_USER_DATA {
            return Err(ApiError::invalid_value(format!("UserData is limited to {MAX_USER_DATA} bytes once decoded")));
        }
    }
    let dry_run = req.dry_run;
    let account = caller.account_id.clone();
    let row = write(cloud, dry_run, move |tx| {
            let mut vm = vm_store::get(tx, &account, &vm_id)
                ?
                .ok_or_else(|| vm_not_found(vm_id.as_str()))?;
            if matches!(vm.state.as_str(), "terminated" | "shutting-down") {
                return Err(ApiError::new(ErrorCode::InvalidVmState, format!("the VM {vm_id} is {}", vm.state)));
            }
            if let (Some(shape), Some(name)) = (new_shape, &req.vm_type) {
                if vm.state != "stopped" {
                    return Err(ApiError::new(
                        ErrorCode::InvalidVmState,
                        format!("the VM {vm_id} must be stopped to change its type (it is {})", vm.state),
                    ));
                }
                // The new size must fit the quota, counting the VM's current size as freed.
            let acct = accounts::get(tx, &account)?.ok_or_else(|| ApiError::internal("no account row"))?;
                let used = vm_store::usage(tx, &account)?;
                if used.vcpus - vm.vcpus + i64::from(shape.vcpus) > acct.quotas.max_vcpus {
                    return Err(quota_error(QuotaExceeded::Vcpus { max: acct.quotas.max_vcpus, used: used.vcpus }, 0));
                }
                if used.memory_mib - vm.memory_mib + shape.memory_mib as i64 > acct.quotas.max_memory_mib {
                    return Err(quota_error(
                        QuotaExceeded::Memory { max_mib: acct.quotas.max_memory_mib, used_mib: used.memory_mib },
                        0,
                    ));
                }
                // And its host must have room for it (a stopped VM keeps its place).
                if !placement::resize(tx, &vm.vm_id, i64::from(shape.vcpus), shape.memory_mib as i64)? {
                    return Err(ApiError::new(
                        ErrorCode::InsufficientCapacity,
                        format!("the host of {vm_id} has no room for a {name} at the moment; retry later"),
                    ));
                }
                vm.vm_type = name.clone();
                vm.vcpus = i64::from(shape.vcpus);
                vm.memory_mib = shape.memory_mib as i64;
                vm.performance = shape.performance_name().to_string();
            }
            if let Some(p) = &req.performance {
                vm.performance = performance_of(Some(p), &parse_vm_type(&vm.vm_type)?)?;
            }
            if let Some(name) = &req.keypair_name {
                if keypair_store::get_by_name(tx, &account, name)?.is_none() {
                    return Err(ApiError::not_found(ErrorCode::NoSuchKeypair, "keypair", name));
                }
                vm.keypair_name = Some(name.clone());
            }
            if let Some(ud) = &req.user_data {
                vm.user_data = ud.clone();
            }
            if let Some(dp) = req.deletion_protection {
                vm.deletion_protection = dp;
            }
            vm_store::update_settings(tx, &vm)?;
            Ok(vm)
        })
        .await?;
    if is_dry_run(dry_run) {
        return Ok(UpdateVmResponse::default());
    }
    let (id, region) = (row.vm_id.clone(), cloud.config.region.clone());
    let (tags, volumes, network) = cloud
        .store
        .read(move |conn| {
            let network = vm_network_view(conn, &id, &region)?;
            Ok::<_, ApiError>((resource_tags(conn, id.as_str())?, volume_store::linked_to(conn, &id)?, network))
        })
        .await?;
    Ok(UpdateVmResponse { vm: Some(vm_view(&row, tags, &volumes, network.as_ref())), ..Default::default() })
}

pub async fn read_console_output(
    cloud: &Arc<Cloud>,
    caller: &Caller,
    req: ReadConsoleOutputRequest,
) -> Result<ReadConsoleOutputResponse, ApiError> {
    let vm_id = VmId::parse(&req.vm_id)?;
    let account = caller.account_id.clone();
    let id = vm_id.clone();
    let vm = cloud
        .store
        .read(move |conn| vm_store::get(conn, &account, &id).map_err(ApiError::from))
        .await?
        .ok_or_else(|| vm_not_found(vm_id.as_str()))?;
    if is_dry_run(req.dry_run) {
        return Ok(ReadConsoleOutputResponse::default());
    }
    let host = cloud.host(vm.host_id.as_ref()).await.map_err(|e| crate::host_api_error(&format!("console of {vm_id}"), e))?;
    // A VM that never ran (or was terminated and cleaned up) has no console yet.
    let bytes = match host.console_output(vm_id.to_string(), CONSOLE_TAIL).await {
        Ok(blob) => blob.0,
        Err(HostError { kind: HostErrorKind::VmNotFound { .. }, .. }) => Vec::new(),
        Err(e) => return Err(crate::host_api_error(&format!("console of {vm_id}"), e)),
    };
    Ok(ReadConsoleOutputResponse {
        console_output: Some(STANDARD.encode(bytes)),
        vm_id: Some(vm_id.to_string()),
        ..Default::default()
    })
}

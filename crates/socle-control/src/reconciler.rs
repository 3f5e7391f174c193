//! Moves VMs on the host towards what their users asked for.
//!
//! The database holds, per VM, `desired` (running / stopped / terminated)
//! and `state`. Whenever they differ the reconciler runs one worker for that
//! VM (never two at once) which calls the agent and records the outcome.
//! Because the wish is persisted before anything happens on the host, a
//! crash at any point is repaired by the next pass: every agent call is
//! idempotent (start re-attaches to a running QEMU, destroy of an absent VM
//! succeeds).
//!
//! A slower health pass notices guests that powered themselves off.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use socle_agent_api::{Host, HostError, HostErrorKind, PlatformImage, RootDisk, VmNic, VmRuntime, VmSpec, VolumeKey};
use socle_store::hosts::HostRow;
use socle_store::nics as nic_store;
use socle_store::vms::{self as vm_store, VmRow};
use socle_store::{format_iso, images as image_store, now_iso, placement, snapshots as snapshot_store, volumes as volume_store, StoreError};
use socle_types::ids::{HostId, VmId};

use crate::lease;
use crate::{custody, network, nic_reconciler, storage_reconciler, Cloud};

/// How often the reconciler looks even when nobody woke it.
const TICK: Duration = Duration::from_millis(500);
/// Networks are re-applied at least this often (drift repair).
const NETWORK_EVERY: Duration = Duration::from_secs(30);
/// Terminated VMs are purged at most this often (or twice per retention
/// period when that is shorter).
const PURGE_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("host agent: {0}")]
    Agent(#[from] HostError),
    #[error("VM {0} refers to image {1}, which is gone")]
    MissingImage(String, String),
    #[error("{0}")]
    Key(socle_types::ApiError),
    #[error(transparent)]
    Network(#[from] network::NetworkError),
}

/// At a server's start: when no other server holds the lease of background
/// work, takes it and repairs what a crash left before the API serves
/// (so a single server starts as it always has); otherwise the holder
/// does the work and this server only answers the API.
pub async fn recover_at_start(cloud: &Arc<Cloud>) -> Result<(), ReconcileError> {
    // A server killed and started again gets its lease back at once.
    cloud.lease.take_from_dead_predecessor(&cloud.store).await;
    cloud.lease.renew(&cloud.store).await;
    if cloud.lease.held() {
        recover(cloud).await?;
        cloud.lease.recovered.store(true, Ordering::SeqCst);
    } else {
        tracing::info!("another server holds the lease of background work; this one answers the API");
    }
    Ok(())
}

/// Repairs what a crash or a host restart left (by the holder of the lease
/// of background work, when it takes it): VMs we believed running whose
/// QEMU is gone are queued to start again, and disk files and VM
/// directories with nothing in the database behind them (a crash between
/// the host work and the database write) are removed.
pub async fn recover(cloud: &Arc<Cloud>) -> Result<(), ReconcileError> {
    crate::image_import::remove_stale_uploads(cloud).await.map_err(ReconcileError::Key)?;
    let live = cloud.store.read(|c| vm_store::list_live(c)).await?;
    let hosts = cloud.store.read(socle_store::hosts::list).await?;
    // Each host on its own: one that is slow or away (its calls end at
    // their deadlines) never holds up the others.
    let mut per_host = tokio::task::JoinSet::new();
    for host in hosts.into_iter().filter(|h| h.state != "revoked") {
        let vms: Vec<VmRow> = live
            .iter()
            .filter(|vm| vm.state == "running" && vm.desired == "running")
            .filter(|vm| vm.host_id.as_ref().or(cloud.hosts.local_id()) == Some(&host.host_id))
            .cloned()
            .collect();
        let cloud = cloud.clone();
        per_host.spawn(async move { recover_host(&cloud, host, vms).await });
    }
    let mut first_error = None;
    while let Some(done) = per_host.join_next().await {
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => first_error = first_error.or(Some(e)),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => {}
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Re-attaches to the VMs of `host` that ran, queues those whose QEMU is
/// gone to start again, and sweeps the host. A host that does not answer
/// is left to the health checks and to the next recovery.
async fn recover_host(cloud: &Arc<Cloud>, host: HostRow, vms: Vec<VmRow>) -> Result<(), ReconcileError> {
    let result = async {
        let agent = cloud.hosts.client(&host)?;
        for vm in &vms {
            reattach(cloud, &*agent, vm).await?;
        }
        sweep_host(cloud, &host.host_id, &*agent).await
    }
    .await;
    match result {
        Err(ReconcileError::Agent(e)) if e.kind == HostErrorKind::Unreachable => {
            tracing::warn!(host = %host.host_id, error = %e, "host not recovered: it does not answer");
            Ok(())
        }
        other => other,
    }
}

async fn reattach(cloud: &Arc<Cloud>, agent: &dyn Host, vm: &VmRow) -> Result<(), ReconcileError> {
    match agent.vm_runtime(vm.vm_id.to_string()).await? {
        VmRuntime::Running | VmRuntime::Paused => {
            tracing::info!(vm = %vm.vm_id, "re-attached to running VM");
        }
        VmRuntime::Shutdown | VmRuntime::NotRunning => {
            tracing::warn!(vm = %vm.vm_id, "VM was running before the restart but its QEMU is gone; starting it again");
            let id = vm.vm_id.clone();
            cloud
                .store
                .write(move |c| vm_store::set_state(c, &id, "running", "pending", "restarting after a host restart", &now_iso()))
                .await?;
        }
    }
    Ok(())
}

/// Removes from one host the volume and snapshot files, the uploads and
/// the VM directories that no row stands for (a crash between the host work and
/// the database write; or a database restored from a backup older than the
/// host's files). A file is kept while any row names it, on whichever host:
/// a host that came back under another ID loses nothing.
async fn sweep_host(cloud: &Arc<Cloud>, host_id: &HostId, agent: &dyn Host) -> Result<(), ReconcileError> {
    let (vm_ids, volume_ids, snapshot_ids) = cloud
        .store
        .read(|c| -> Result<_, StoreError> {
            let vms: HashSet<String> = vm_store::list_live(c)?.into_iter().map(|v| v.vm_id.to_string()).collect();
            Ok((vms, volume_store::all_ids(c)?, snapshot_store::all_ids(c)?))
        })
        .await?;
    for id in agent.list_volumes().await? {
        if !volume_ids.contains(&id) {
            tracing::warn!(host = %host_id, volume = %id, "removing a volume file with no volume in the database");
            agent.delete_volume(id.clone()).await?;
        }
    }
    for id in agent.list_snapshots().await? {
        if !snapshot_ids.contains(&id) {
            tracing::warn!(host = %host_id, snapshot = %id, "removing a snapshot file with no snapshot in the database");
            agent.delete_snapshot(id.clone()).await?;
        }
    }
    // Uploads wait on their host for the import of their snapshot.
    let importing: HashSet<String> = cloud
        .store
        .read(|c| snapshot_store::list_unsettled(c))
        .await?
        .into_iter()
        .filter(|s| s.pending == "import")
        .map(|s| s.snapshot_id.to_string())
        .collect();
    for id in agent.list_uploads().await? {
        if !importing.contains(&id) {
            tracing::warn!(host = %host_id, upload = %id, "removing an upload no import waits for");
            agent.delete_upload(id.clone()).await?;
        }
    }
    for dir in agent.list_vms().await? {
        if !vm_ids.contains(&dir) {
            tracing::warn!(host = %host_id, vm = %dir, "removing a VM left on the host with no live VM in the database");
            agent.destroy_vm(dir.clone()).await?;
        }
    }
    Ok(())
}

/// Runs forever (until its task is aborted).
pub async fn run(cloud: Arc<Cloud>) {
    // IDs (VMs, volumes, snapshots) with a worker running: one at a time each.
    let active: Arc<Mutex<HashSet<String>>> = Arc::default();
    let mut last_health = Instant::now();
    let mut last_network = Instant::now();
    let purge_every = PURGE_EVERY.min(cloud.config.terminated_retention / 2);
    let mut last_purge = Instant::now() - purge_every;
    tokio::spawn(lease::keep(cloud.clone()));
    loop {
        tokio::select! {
            _ = cloud.wake.notified() => {}
            _ = tokio::time::sleep(TICK) => {}
        }
        // Another server on the database does the background work.
        if !cloud.lease.held() {
            cloud.lease.recovered.store(false, Ordering::SeqCst);
            continue;
        }
        if !cloud.lease.recovered.load(Ordering::SeqCst) {
            match recover(&cloud).await {
                Ok(()) => cloud.lease.recovered.store(true, Ordering::SeqCst),
                Err(e) => {
                    tracing::error!(error = %e, "cannot repair what a crash left; trying again");
                    tokio::time::sleep(STORE_ERROR_BACKOFF).await;
                    continue;
                }
            }
        }
        let live = match cloud.store.read(|c| vm_store::list_live(c)).await {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(error = %e, "reconciler cannot read VMs");
                // The database is down or failing: no point in waking up at
                // every finished task meanwhile.
                tokio::time::sleep(STORE_ERROR_BACKOFF).await;
                continue;
            }
        };
        for vm in live.iter().filter(|vm| vm.state != vm.desired) {
            let id = vm.vm_id.clone();
            spawn_once(&cloud, &active, id.to_string(), move |cloud| async move { work(&cloud, &id).await.map_err(|e| e.to_string()) });
        }
        match cloud.store.read(|c| volume_store::list_unsettled(c)).await {
            Ok(volumes) => {
                for v in volumes {
                    let id = v.volume_id;
                    spawn_once(&cloud, &active, id.to_string(), move |cloud| async move {
                        storage_reconciler::work_volume(&cloud, &id).await.map_err(|e| e.to_string())
                    });
                }
            }
            Err(e) => tracing::error!(error = %e, "reconciler cannot read volumes"),
        }
        match cloud.store.read(|c| snapshot_store::list_unsettled(c)).await {
            Ok(snapshots) => {
                for s in snapshots {
                    let id = s.snapshot_id;
                    spawn_once(&cloud, &active, id.to_string(), move |cloud| async move {
                        storage_reconciler::work_snapshot(&cloud, &id).await.map_err(|e| e.to_string())
                    });
                }
            }
            Err(e) => tracing::error!(error = %e, "reconciler cannot read snapshots"),
        }
        match cloud.store.read(|c| nic_store::unsettled(c)).await {
            Ok(nics) => {
                for n in nics {
                    let id = n.nic_id;
                    spawn_once(&cloud, &active, id.to_string(), move |cloud| async move {
                        nic_reconciler::work_nic(&cloud, &id).await.map_err(|e| e.to_string())
                    });
                }
            }
            Err(e) => tracing::error!(error = %e, "reconciler cannot read NICs"),
        }
        // Networks: after a change, and now and then to repair drift. The
        // pass clears the flag, not this loop: spawn_once skips while a pass
        // runs, and a change made then (after that pass compiled) must make
        // another pass as soon as it ends, not wait for the periodic one.
        if cloud.network_dirty.load(Ordering::SeqCst) || last_network.elapsed() >= NETWORK_EVERY {
            last_network = Instant::now();
            spawn_once(&cloud, &active, "network".into(), |cloud| async move {
                // Before compiling: a change from now on sets it again (and
                // so does a failure: see network::pass).
                cloud.network_dirty.store(false, Ordering::SeqCst);
                network::pass(&cloud).await.map_err(|e| e.to_string())
            });
        }
        if last_health.elapsed() >= cloud.config.health_interval {
            last_health = Instant::now();
            let settled = live.iter().filter(|vm| vm.state == "running" && vm.desired == "running");
            for vm in settled {
                let id = &vm.vm_id;
                if active.lock().unwrap().contains(id.as_str()) {
                    continue;
                }
                if let Err(e) = check_health(&cloud, vm).await {
                    tracing::error!(vm = %id, error = %e, "health check failed");
                }
            }
        }
        if last_purge.elapsed() >= purge_every {
            last_purge = Instant::now();
            let retention = time::Duration::try_from(cloud.config.terminated_retention).unwrap_or(time::Duration::HOUR);
            let cutoff = format_iso(time::OffsetDateTime::now_utc() - retention);
            match cloud.store.write(move |c| vm_store::purge_terminated_before(c, &cutoff)).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(count = n, "forgot VMs terminated longer ago than the retention"),
                Err(e) => tracing::error!(error = %e, "purge of terminated VMs failed"),
            }
        }
    }
}

/// How long the reconciler waits after it could not read its work.
const STORE_ERROR_BACKOFF: Duration = Duration::from_secs(1);

/// Runs `step` for `id` unless a worker for it is already running; on
/// failure, waits a little before the ID becomes eligible again.
fn spawn_once<F, Fut>(cloud: &Arc<Cloud>, active: &Arc<Mutex<HashSet<String>>>, id: String, step: F)
where
    F: FnOnce(Arc<Cloud>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    if !active.lock().unwrap().insert(id.clone()) {
        return;
    }
    let (cloud, active) = (cloud.clone(), active.clone());
    tokio::spawn(async move {
        if let Err(e) = step(cloud.clone()).await {
            tracing::error!(resource = %id, error = %e, "reconcile step failed; will retry");
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        active.lock().unwrap().remove(&id);
        cloud.wake.notify_one();
    });
}

/// One step for one VM: re-reads the row (the wish may have changed since
/// the pass that spawned us) and acts.
async fn work(cloud: &Arc<Cloud>, id: &VmId) -> Result<(), ReconcileError> {
    // The VM and its disks from one snapshot: a decision on a VM read
    // before a change and disks read after it would be on neither state.
    let lookup = id.clone();
    let (vm, volumes) = cloud
        .store
        .read(move |c| -> Result<_, StoreError> {
            let vm = vm_store::get_any(c, &lookup)?;
            let volumes = if vm.is_some() { volume_store::linked_to(c, &lookup)? } else { vec![] };
            Ok((vm, volumes))
        })
        .await?;
    let Some(vm) = vm else { return Ok(()) };
    if vm.state == vm.desired {
        return Ok(());
    }
    // Disks made at launch (root, mappings) must exist before the first boot.
    if vm.desired == "running" && volumes.iter().any(|v| v.pending == "create") {
        return Ok(());
    }
    let host = cloud.host(vm.host_id.as_ref()).await?;
    let (next, reason) = match vm.desired.as_str() {
        "running" => match start(cloud, &*host, &vm).await {
            Ok(()) => ("running", String::new()),
            // The host did not answer: nothing says the VM cannot start;
            // the next pass tries again.
            Err(ReconcileError::Agent(e)) if e.kind == HostErrorKind::Unreachable => return Err(ReconcileError::Agent(e)),
            Err(e) => {
                // Do not retry a VM that cannot start in a loop: it ends
                // stopped with a reason the user sees; StartVms retries.
                tracing::error!(vm = %vm.vm_id, error = %e, "VM failed to start");
                let id = vm.vm_id.clone();
                let gave_up = cloud
                    .store
                    .write(move |c| vm_store::abandon_wish(c, &id, "running", "stopping", "stopped"))
                    .await?;
                // Whatever was started of it goes, whatever comes next.
                host.stop_vm(vm.vm_id.to_string(), true, 0).await?;
                if !gave_up {
                    // The user asked for something else meanwhile (DeleteVms
                    // while it started): the next pass does that.
                    return Ok(());
                }
                let reason = match &e {
                    ReconcileError::Key(api) if api.internal.is_none() => format!("Client.KeyUnavailable: {}", api.details),
                    _ => "Server.InternalError: the VM failed to start; the operator log has details".to_string(),
                };
                ("stopped", reason)
            }
        },
        "stopped" => {
            host.stop_vm(vm.vm_id.to_string(), vm.force_stop, cloud.config.stop_timeout.as_secs()).await?;
            ("stopped", if vm.force_stop { "User initiated (forced)" } else { "User initiated" }.to_string())
        }
        "terminated" => {
            host.destroy_vm(vm.vm_id.to_string()).await?;
            release_volumes(cloud, &vm.vm_id).await?;
            release_nics(cloud, &*host, &vm.vm_id).await?;
            ("terminated", "User initiated".to_string())
        }
        other => {
            tracing::error!(vm = %vm.vm_id, desired = other, "unknown desired state");
            return Ok(());
        }
    };
    // After a start failure the wish became "stopped".
    let failed_start = vm.desired == "running" && next == "stopped";
    let acted_on = if failed_start { "stopped" } else { vm.desired.as_str() }.to_string();
    let id = vm.vm_id.clone();
    let changed = cloud
        .store
        .write(move |c| -> Result<bool, StoreError> {
            let changed = vm_store::set_state(c, &id, &acted_on, next, &reason, &now_iso())?;
            // Its host's capacity is free again (once: see placement).
            if changed && next == "terminated" {
                placement::release(c, &id)?;
            }
            Ok(changed)
        })
        .await?;
    tracing::info!(vm = %vm.vm_id, from = %vm.state, to = next, recorded = changed, "VM state");
    Ok(())
}

/// After a VM is destroyed: its volumes marked DeleteOnVmDeletion are
/// queued for deletion, the others become available again.
async fn release_volumes(cloud: &Arc<Cloud>, vm_id: &VmId) -> Result<(), ReconcileError> {
    let vm_id = vm_id.clone();
    cloud
        .store
        .write(move |c| -> Result<(), StoreError> {
            for mut v in volume_store::linked_to(c, &vm_id)? {
                v.vm_id = None;
                v.device_name = None;
                v.link_state = None;
                v.linked_at = None;
                if v.delete_on_vm_deletion {
                    v.state = "deleting".into();
                    v.pending = "delete".into();
                } else {
                    v.state = "available".into();
                }
                v.delete_on_vm_deletion = false;
                volume_store::update(c, &v)?;
            }
            Ok(())
        })
        .await?;
    Ok(())
}

/// After a VM is destroyed: its taps go, its NICs marked
/// DeleteOnVmDeletion are deleted, the others become available again.
async fn release_nics(cloud: &Arc<Cloud>, host: &dyn Host, vm_id: &VmId) -> Result<(), ReconcileError> {
    let lookup = vm_id.clone();
    let nics = cloud.store.read(move |c| nic_store::of_vm(c, &lookup)).await?;
    if let Some(net) = &cloud.network {
        for nic in &nics {
            net.remove_tap(host, nic).await?;
        }
    }
    let vm_id = vm_id.clone();
    cloud
        .store
        .write(move |c| {
            crate::ops::vm_network::release_nics(c, &vm_id)?;
            Ok::<_, socle_types::ApiError>(())
        })
        .await
        .map_err(ReconcileError::Key)?;
    cloud.network_changed();
    Ok(())
}

/// Before QEMU starts: a tap per NIC of the VM in the root namespace, and
/// the agent's list of NICs in line with the database (the primary first).
/// A NIC being unlinked (`detaching`) is left out: it must not come back.
async fn prepare_nics(cloud: &Arc<Cloud>, host: &dyn Host, vm_id: &VmId) -> Result<Vec<String>, ReconcileError> {
    let lookup = vm_id.clone();
    let mut nics = cloud.store.read(move |c| nic_store::of_vm(c, &lookup)).await?;
    nics.retain(|n| n.state != "detaching");
    let Some(net) = &cloud.network else { return Ok(vec![]) };
    let mut wanted = vec![];
    for nic in &nics {
        let ifname = net.prepare_tap(host, nic).await?;
        wanted.push(VmNic { ifname, mac: nic.mac.clone() });
    }
    for on_host in host.vm_nics(vm_id.to_string()).await? {
        if !wanted.contains(&on_host) {
            host.unlink_nic(vm_id.to_string(), on_host.ifname.clone()).await?;
        }
    }
    for nic in &wanted {
        host.link_nic(vm_id.to_string(), nic.clone()).await?;
    }
    Ok(nics.iter().map(network::compile::net_key).collect())
}

async fn start(cloud: &Arc<Cloud>, host: &dyn Host, vm: &VmRow) -> Result<(), ReconcileError> {
    let image_id = vm.image_id.clone();
    let image = cloud.store.read(move |c| image_store::get(c, &image_id)).await?;
    let named = |name: &Option<String>| name.as_deref().and_then(PlatformImage::from_name);
    let (kernel, base) = match image {
        Some(image) => (named(&image.boot_kernel), named(&image.base_image)),
        // The image was deleted since: the VM keeps booting what it booted
        // (a VM of a deleted image boots from its root volume).
        None => match host.vm_spec(vm.vm_id.to_string()).await {
            Ok(spec) => (spec.kernel, None),
            Err(_) => return Err(ReconcileError::MissingImage(vm.vm_id.to_string(), vm.image_id.to_string())),
        },
    };
    let user_data = STANDARD.decode(&vm.user_data).ok().filter(|d| !d.is_empty());
    let spec = VmSpec {
        vm_id: vm.vm_id.to_string(),
        vcpus: vm.vcpus as u32,
        memory_mib: vm.memory_mib as u64,
        kernel,
        user_data,
        kernel_cmdline: None,
    };
    let root = {
        let lookup = vm.vm_id.clone();
        cloud.store.read(move |c| volume_store::linked_to(c, &lookup)).await?.into_iter().find(|v| v.is_root())
    };
    match &root {
        Some(r) => {
            host.define_vm(spec, RootDisk::Volume(r.volume_id.to_string())).await?;
            let limits = storage_reconciler::limits_for(&r.volume_type, r.size_gib, r.iops);
            host.set_volume_limits(r.volume_id.to_string(), limits).await?;
        }
        None => {
            let base = base.ok_or_else(|| ReconcileError::MissingImage(vm.vm_id.to_string(), vm.image_id.to_string()))?;
            host.define_vm(spec, RootDisk::Overlay(base)).await?
        }
    }
    let vm_id = vm.vm_id.clone();
    let keys = sync_volumes(cloud, host, &vm_id).await?;
    let hold = match &cloud.network {
        Some(net) => Some(net.hold_passes().await),
        None => None,
    };
    let networks = prepare_nics(cloud, host, &vm_id).await?;
    match host.start_vm(vm_id.to_string(), keys).await {
        Ok(()) => {}
        // A volume link settled on the host after the devices were read
        // (LinkVolume while the VM starts): read them again, once.
        Err(HostError { kind: HostErrorKind::MissingVolumeKey { volume_id, .. }, .. }) => {
            tracing::info!(vm = %vm_id, volume = %volume_id, "a volume was linked while the VM started; reading its volumes again");
            let keys = sync_volumes(cloud, host, &vm_id).await?;
            host.start_vm(vm_id.to_string(), keys).await?;
        }
        Err(e) => return Err(e.into()),
    }
    // Wire the taps QEMU just opened now rather than at the next pass: the
    // guest asks for its address within seconds.
    if let Some(hold) = hold {
        if let Err(e) = hold.wire(cloud, &networks).await {
            tracing::error!(vm = %vm_id, error = %e, "network pass after start failed; will retry");
        }
    }
    Ok(())
}

/// Brings the host's list of the VM's linked volumes in line with the
/// database and returns their keys (unwrapped for QEMU), by volume ID.
async fn sync_volumes(
    cloud: &Arc<Cloud>,
    host: &dyn Host,
    vm_id: &VmId,
) -> Result<std::collections::HashMap<String, VolumeKey>, ReconcileError> {
    // Bring the host's list of linked volumes in line with the database,
    // and unwrap their keys for QEMU.
    let (cloud2, lookup) = (cloud.clone(), vm_id.clone());
    let linked = cloud
        .store
        .write(move |c| -> Result<Vec<(socle_store::volumes::VolumeRow, socle_kms::DataKey)>, socle_types::ApiError> {
            let mut out = vec![];
            for v in volume_store::linked_to(c, &lookup)? {
                let wrapped = v.wrapped_key.clone().unwrap_or_default();
                let dek = custody::unwrap_key(&cloud2, c, &v.account_id, "reconciler", v.volume_id.as_str(), &wrapped)?;
                out.push((v, dek));
            }
            Ok(out)
        })
        .await
        .map_err(ReconcileError::Key)?;
    let mut keys = std::collections::HashMap::new();
    for (v, dek) in &linked {
        let key = VolumeKey::from_bytes(*dek.expose_secret());
        if v.is_root() {
            keys.insert(v.volume_id.to_string(), key);
            continue;
        }
        let limits = storage_reconciler::limits_for(&v.volume_type, v.size_gib, v.iops);
        let device = v.device_name.clone().unwrap_or_default();
        host.link_volume(vm_id.to_string(), v.volume_id.to_string(), key.clone(), device, limits).await?;
        keys.insert(v.volume_id.to_string(), key);
    }
    for on_host in host.vm_volumes(vm_id.to_string()).await? {
        if !linked.iter().any(|(v, _)| v.volume_id.as_str() == on_host.volume_id) {
            host.unlink_volume(vm_id.to_string(), on_host.volume_id.clone()).await?;
        }
    }
    Ok(keys)
}

/// A running VM whose guest powered itself off becomes stopped.
async fn check_health(cloud: &Arc<Cloud>, vm: &VmRow) -> Result<(), ReconcileError> {
    let host = cloud.host(vm.host_id.as_ref()).await?;
    let id = &vm.vm_id;
    match host.vm_runtime(id.to_string()).await? {
        VmRuntime::Running | VmRuntime::Paused => Ok(()),
        VmRuntime::Shutdown | VmRuntime::NotRunning => {
            tracing::info!(vm = %id, "guest powered off by itself");
            host.stop_vm(id.to_string(), true, 0).await?;
            let id = id.clone();
            cloud.store.write(move |c| vm_store::mark_guest_stopped(c, &id)).await?;
            Ok(())
        }
    }
}

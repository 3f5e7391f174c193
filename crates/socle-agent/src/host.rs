//! The agent as a [`Host`]: what the control plane calls, locally or over
//! the wire (socle_agent_api's server serves any `Host`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use socle_agent_api::{
    Blob, BlockJobProgress, GuestMetadata, Host, HostError, HostErrorKind, HostInfo, HostNets, IoLimits, LinkedVolume, PlatformImage, RootDisk,
    SnapshotFile, SnapshotInfo, UploadFormat, UploadInfo, VmNic, VmRuntime, VmSpec, VolumeInfo, VolumeKey, VolumeSource,
    PROTOCOL_VERSION,
};

use crate::spec::{self, ImageFiles};
use crate::{Agent, AgentError};

/// What crosses the wire of an [`AgentError`]: its message, and a kind for
/// the cases the control plane acts on.
impl From<AgentError> for HostError {
    fn from(e: AgentError) -> HostError {
        let message = e.to_string();
        let kind = match e {
            AgentError::VmNotFound(vm_id) => HostErrorKind::VmNotFound { vm_id },
            AgentError::VolumeNotFound(volume_id) => HostErrorKind::VolumeNotFound { volume_id },
            AgentError::SnapshotNotFound(snapshot_id) => HostErrorKind::SnapshotNotFound { snapshot_id },
            AgentError::MissingVolumeKey { vm_id, volume_id } => HostErrorKind::MissingVolumeKey { vm_id, volume_id },
            AgentError::ImportRefused { reason, .. } => HostErrorKind::ImportRefused { reason },
            AgentError::WrongKey { .. } => HostErrorKind::WrongKey,
            AgentError::VmRunning { .. }
            | AgentError::VmNotRunning { .. }
            | AgentError::Conflict { .. }
            | AgentError::VolumeConflict { .. } => HostErrorKind::Conflict,
            AgentError::InvalidVmId(_)
            | AgentError::InvalidId { .. }
            | AgentError::InvalidArgument(_)
            | AgentError::Net(socle_net::NetError::Spec { .. } | socle_net::NetError::InvalidNetId(_) | socle_net::NetError::InvalidInterfaceName(_)) => {
                HostErrorKind::InvalidArgument
            }
            _ => HostErrorKind::Internal,
        };
        HostError::new(kind, message)
    }
}

#[async_trait]
impl Host for Agent {
    async fn host_info(&self) -> Result<HostInfo, HostError> {
        Ok(HostInfo {
            protocol_version: PROTOCOL_VERSION,
            host_id: self.host_id().to_string(),
            accel: self.accel().to_string(),
            accel_reason: self.accel_reason().to_string(),
            qemu_version: self.qemu_version().to_string(),
            capacity: crate::capacity::of_this_machine(),
            boot_id: self.boot_id().to_string(),
        })
    }

    async fn prepare_platform_image(&self, image: PlatformImage) -> Result<(), HostError> {
        self.platform_image(image).await?;
        Ok(())
    }

    async fn define_vm(&self, spec: VmSpec, root: RootDisk) -> Result<(), HostError> {
        let (image, root) = self.boot_files(&spec.vm_id, spec.kernel, root).await?;
        let spec = spec::VmSpec {
            vm_id: spec.vm_id,
            vcpus: spec.vcpus,
            memory_mib: spec.memory_mib,
            image,
            user_data: spec.user_data,
            kernel_cmdline: spec.kernel_cmdline,
        };
        Ok(self.define_vm_with_root(&spec, &root).await?)
    }

    async fn vm_spec(&self, vm_id: String) -> Result<VmSpec, HostError> {
        let spec = Agent::vm_spec(self, &vm_id).await?;
        Ok(VmSpec {
            vm_id: spec.vm_id,
            vcpus: spec.vcpus,
            memory_mib: spec.memory_mib,
            // A spec.json older than platform names has a kernel of
            // socle-tiny's: the only platform image that has one.
            kernel: spec.image.kernel.is_some().then(|| spec.image.platform.unwrap_or(PlatformImage::SocleTiny)),
            user_data: spec.user_data,
            kernel_cmdline: spec.kernel_cmdline,
        })
    }

    async fn start_vm(&self, vm_id: String, keys: HashMap<String, VolumeKey>) -> Result<(), HostError> {
        Ok(self.start_vm_with(&vm_id, &keys).await?)
    }

    async fn stop_vm(&self, vm_id: String, force: bool, timeout_secs: u64) -> Result<(), HostError> {
        Ok(Agent::stop_vm(self, &vm_id, force, Duration::from_secs(timeout_secs)).await?)
    }

    async fn reboot_vm(&self, vm_id: String) -> Result<(), HostError> {
        Ok(Agent::reboot_vm(self, &vm_id).await?)
    }

    async fn destroy_vm(&self, vm_id: String) -> Result<(), HostError> {
        Ok(Agent::destroy_vm(self, &vm_id).await?)
    }

    async fn vm_runtime(&self, vm_id: String) -> Result<VmRuntime, HostError> {
        Ok(Agent::vm_runtime(self, &vm_id).await?)
    }

    async fn list_vms(&self) -> Result<Vec<String>, HostError> {
        Ok(Agent::list_vms(self).await?)
    }

    async fn console_output(&self, vm_id: String, max_bytes: u64) -> Result<Blob, HostError> {
        let agent = self.clone();
        let max = usize::try_from(max_bytes).unwrap_or(usize::MAX);
        // Reads a file: off the async workers.
        let bytes = tokio::task::spawn_blocking(move || agent.console_output(&vm_id, max))
            .await
            .map_err(|e| HostError::internal(format!("console read failed: {e}")))??;
        Ok(Blob(bytes))
    }

    async fn create_volume(&self, volume_id: String, size_gib: u64, key: VolumeKey, source: Option<VolumeSource>) -> Result<VolumeInfo, HostError> {
        let source = match source {
            None => None,
            Some(VolumeSource::Snapshot { snapshot_id, key }) => Some(spec::VolumeSource::Snapshot { snapshot_id, key }),
            Some(VolumeSource::Platform { image }) => Some(spec::VolumeSource::Image { disk: self.platform_image(image).await?.disk }),
        };
        Ok(Agent::create_volume(self, &volume_id, size_gib, &key, source).await?)
    }

    async fn resize_volume(&self, volume_id: String, new_size_gib: u64, key: VolumeKey) -> Result<VolumeInfo, HostError> {
        Ok(Agent::resize_volume(self, &volume_id, new_size_gib, &key).await?)
    }

    async fn delete_volume(&self, volume_id: String) -> Result<(), HostError> {
        Ok(Agent::delete_volume(self, &volume_id).await?)
    }

    async fn list_volumes(&self) -> Result<Vec<String>, HostError> {
        Ok(Agent::list_volumes(self).await?)
    }

    async fn link_volume(&self, vm_id: String, volume_id: String, key: VolumeKey, device_name: String, limits: IoLimits) -> Result<(), HostError> {
        Ok(Agent::link_volume(self, &vm_id, &volume_id, &key, &device_name, limits).await?)
    }

    async fn unlink_volume(&self, vm_id: String, volume_id: String) -> Result<(), HostError> {
        Ok(Agent::unlink_volume(self, &vm_id, &volume_id).await?)
    }

    async fn set_volume_limits(&self, volume_id: String, limits: IoLimits) -> Result<(), HostError> {
        Ok(Agent::set_volume_limits(self, &volume_id, limits).await?)
    }

    async fn vm_volumes(&self, vm_id: String) -> Result<Vec<LinkedVolume>, HostError> {
        Ok(Agent::vm_volumes(self, &vm_id).await?)
    }

    async fn snapshot_volume(&self, volume_id: String, snapshot_id: String, key: VolumeKey, snap_key: VolumeKey) -> Result<SnapshotInfo, HostError> {
        Ok(Agent::snapshot_volume(self, &volume_id, &snapshot_id, &key, &snap_key).await?)
    }

    async fn snapshot_progress(&self, snapshot_id: String) -> Result<Option<BlockJobProgress>, HostError> {
        Ok(Agent::snapshot_progress(self, &snapshot_id))
    }

    async fn list_snapshots(&self) -> Result<Vec<String>, HostError> {
        Ok(Agent::list_snapshots(self).await?)
    }

    async fn delete_snapshot(&self, snapshot_id: String) -> Result<(), HostError> {
        Ok(Agent::delete_snapshot(self, &snapshot_id).await?)
    }

    async fn snapshot_file(&self, snapshot_id: String) -> Result<SnapshotFile, HostError> {
        Ok(Agent::snapshot_file(self, &snapshot_id).await?)
    }

    async fn read_snapshot(&self, snapshot_id: String, offset: u64, len: u64) -> Result<Blob, HostError> {
        Ok(Agent::read_snapshot(self, &snapshot_id, offset, len).await?)
    }

    async fn receive_snapshot(&self, snapshot_id: String, offset: u64, data: Blob) -> Result<(), HostError> {
        Ok(Agent::receive_snapshot(self, &snapshot_id, offset, data).await?)
    }

    async fn finish_snapshot(&self, snapshot_id: String, expected: SnapshotFile) -> Result<(), HostError> {
        Ok(Agent::finish_snapshot(self, &snapshot_id, expected).await?)
    }

    async fn link_nic(&self, vm_id: String, nic: VmNic) -> Result<(), HostError> {
        Ok(Agent::link_nic(self, &vm_id, &nic).await?)
    }

    async fn unlink_nic(&self, vm_id: String, ifname: String) -> Result<(), HostError> {
        Ok(Agent::unlink_nic(self, &vm_id, &ifname).await?)
    }

    async fn vm_nics(&self, vm_id: String) -> Result<Vec<VmNic>, HostError> {
        Ok(Agent::vm_nics(self, &vm_id).await?)
    }

    async fn nic_plugged(&self, vm_id: String, ifname: String) -> Result<bool, HostError> {
        Ok(Agent::nic_plugged(self, &vm_id, &ifname).await?)
    }

    async fn apply_net(&self, spec: socle_net::NetSpec, guests: Vec<GuestMetadata>) -> Result<Vec<String>, HostError> {
        Ok(Agent::apply_net(self, spec, guests).await?)
    }

    async fn destroy_net(&self, net_id: String) -> Result<(), HostError> {
        Ok(Agent::destroy_net(self, &net_id).await?)
    }

    async fn list_nets(&self) -> Result<HostNets, HostError> {
        Ok(Agent::list_nets(self).await?)
    }

    async fn prepare_tap(&self, ifname: String) -> Result<(), HostError> {
        Ok(Agent::prepare_tap(self, &ifname).await?)
    }

    async fn remove_tap(&self, ifname: String) -> Result<(), HostError> {
        Ok(Agent::remove_tap(self, &ifname).await?)
    }

    async fn receive_upload(&self, upload_id: String, offset: u64, data: Blob) -> Result<(), HostError> {
        Ok(Agent::receive_upload(self, &upload_id, offset, data).await?)
    }

    async fn inspect_upload(&self, upload_id: String) -> Result<UploadInfo, HostError> {
        Ok(Agent::inspect_upload(self, &self.upload_path(&upload_id)?).await?)
    }

    async fn import_snapshot(&self, upload_id: String, format: Option<UploadFormat>, snapshot_id: String, key: VolumeKey) -> Result<SnapshotInfo, HostError> {
        Ok(self.import_as_encrypted_snapshot(&self.upload_path(&upload_id)?, format, &snapshot_id, &key).await?)
    }

    async fn list_uploads(&self) -> Result<Vec<String>, HostError> {
        Ok(Agent::list_uploads(self)?)
    }

    async fn delete_upload(&self, upload_id: String) -> Result<(), HostError> {
        Ok(Agent::delete_upload(self, &upload_id)?)
    }
}

impl Agent {
    /// The files a VM of the protocol boots: the kernel of the platform
    /// image `kernel`, and the base disk of the overlay `root` names.
    async fn boot_files(&self, vm_id: &str, kernel: Option<PlatformImage>, root: RootDisk) -> Result<(ImageFiles, spec::RootDisk), HostError> {
        let booted = match kernel {
            Some(k) => {
                let files = self.platform_image(k).await?;
                ImageFiles { disk: PathBuf::new(), ..files }
            }
            None => ImageFiles::full_disk(PathBuf::new()),
        };
        match root {
            RootDisk::Volume(v) => Ok((booted, spec::RootDisk::Volume(v))),
            RootDisk::Overlay(base) => {
                // An overlay's base never changes: a VM defined before
                // platform images lived in the agent's state dir keeps the
                // base it was made on.
                let disk = match self.load_spec(vm_id) {
                    Ok(old) if old.root_volume.is_none() => old.image.disk,
                    _ => self.platform_image(base).await?.disk,
                };
                let platform = booted.platform.or(Some(base));
                Ok((ImageFiles { disk, platform, ..booted }, spec::RootDisk::Overlay))
            }
        }
    }
}

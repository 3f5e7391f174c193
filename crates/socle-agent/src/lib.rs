//! Socle host agent: runs guests as QEMU processes on this host.
//!
//! One QEMU process per VM, started with `-daemonize` so it lives in its own
//! session and outlives the agent. Everything the agent knows about a VM is on
//! disk under `<state_dir>/vms/<vm_id>/`:
//!
//! | file          | what                                                            |
//! |---------------|-----------------------------------------------------------------|
//! | `spec.json`   | vcpus, memory, image files, kernel command line, root volume and linked volumes |
//! | `disk.qcow2`  | root disk: qcow2 overlay backed by the image's base disk (absent when the root disk is a volume) |
//! | `user-data`   | optional user data, given to the guest via fw_cfg               |
//! | `console.log` | serial console (appended across boots)                          |
//! | `qemu.pid`    | pid of the QEMU process (written by QEMU, locked while it runs) |
//! | `qmp.sock`    | QMP control socket                                              |
//!
//! A fresh agent on the same state dir therefore re-attaches to running guests
//! by itself: a VM is running when its pidfile names a live process whose
//! command line carries our `-name socle-<id>` and `-pidfile` (guards against
//! pid reuse). QEMU also locks the pidfile and the qcow2 overlay, so a second
//! QEMU for the same VM can never start.
//!
//! Block storage (encrypted volumes, hot-plug, I/O limits, snapshots) is in
//! [`volume`](crate::volume); how keys reach QEMU is in `secret.rs`.

mod accel;
mod capacity;
mod cpio;
mod error;
mod host;
mod image;
mod platform;
mod spec;
mod import;
mod metadata;
mod metadata_interfaces;
mod network;
mod nic;
mod qmp;
mod secret;
mod snapshot_copy;
mod uploads;
mod util;
mod volume;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::process::Command;

pub use accel::{Accel, AccelChoice};
pub use error::AgentError;
pub use import::MAX_IMPORT_BYTES;
pub use spec::{ImageFiles, RootDisk, VmSpec, VolumeSource};
// The protocol's values, under the names the agent has always used.
pub use socle_agent_api::{
    BlockJobProgress, ImportRefusal, IoLimits, LinkedVolume, PlatformImage, SnapshotInfo, UploadFormat, UploadInfo,
    VmNic, VmRuntime, VolumeAttachment, VolumeInfo, VolumeKey, VOLUME_KEY_LEN,
};
pub use volume::{MAX_SNAPSHOT_ID_LEN, MAX_VOLUME_GIB, MAX_VOLUME_ID_LEN, UNLINK_TIMEOUT};

use qmp::Qmp;
use secret::SecretFds;
use util::{
    pid_alive, proc_cmdline, qemu_opt, read_optional, remove_file_quiet, run, send_signal,
    wait_pid_exit, write_atomic,
};
use nic::VmNicExt;
use volume::VolumeLink;

/// Printed by the socle-tiny guest on its serial console once userspace is up.
pub const READY_MARKER: &str = "socle-guest: ready";
/// Printed by the socle-tiny guest at the start of every boot.
pub const BOOTING_MARKER: &str = "socle-guest: booting";

/// Kernel arguments used when `VmSpec::kernel_cmdline` is None.
/// `no_timer_check`: Linux checks at boot that the IO-APIC timer interrupt
/// ticks within a few busy-waited milliseconds and panics ("IO-APIC + timer
/// doesn't work!") when it does not; under TCG on a loaded host a virtual
/// CPU can be descheduled through that window (seen in CI). The emulated
/// timer is fine: skip the check, as cloud images for virtual machines do.
const DEFAULT_CMDLINE_EXTRA: &str = "quiet no_timer_check";
/// While a graceful stop waits, the ACPI power button is pressed again this
/// often (a guest still booting when the first press came ignores it).
const POWERDOWN_REPEAT: Duration = Duration::from_secs(5);
/// Grace between SIGTERM and SIGKILL in a hard kill.
const SIGTERM_GRACE: Duration = Duration::from_secs(3);
/// The console log is trimmed to its last `CONSOLE_KEEP` bytes at VM start
/// once it exceeds `CONSOLE_MAX`.
const CONSOLE_MAX: u64 = 16 << 20;
const CONSOLE_KEEP: u64 = 1 << 20;

/// Agent configuration.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Where VM directories and the accelerator probe cache live (e.g. `DATA/agent`).
    pub state_dir: PathBuf,
    pub accel: AccelChoice,
    /// Default `qemu-system-x86_64` (looked up in PATH).
    pub qemu_binary: PathBuf,
    /// Default `qemu-img` (looked up in PATH).
    pub qemu_img_binary: PathBuf,
    /// Where built guest images are cached. Default: `$SOCLE_IMAGE_CACHE`, else
    /// `~/.cache/socle/images`.
    pub image_cache_dir: PathBuf,
    /// Where the Debian packages that images are built from are kept, so a
    /// rebuild needs no network; None: `debs` in `image_cache_dir`.
    pub deb_cache_dir: Option<PathBuf>,
    /// The host's ID in its cloud, reported by `host_info` (the binary
    /// gives the joined ID, or one it keeps in the data dir).
    pub host_id: String,
    /// Tenant networking: the driver's directory and the prefix of the
    /// namespaces, taps and tables it makes. None: no tenant networks on
    /// this host (not root); their methods answer an error.
    pub network: Option<NetworkConfig>,
}

/// Where and under which name the host's tenant networks live.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    pub dir: PathBuf,
    /// 1-6 lowercase letters/digits, one per cloud on a machine.
    pub prefix: String,
}

impl AgentConfig {
    /// Defaults for everything but the state directory.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        AgentConfig {
            state_dir: state_dir.into(),
            accel: AccelChoice::Auto,
            qemu_binary: PathBuf::from("qemu-system-x86_64"),
            qemu_img_binary: PathBuf::from("qemu-img"),
            image_cache_dir: Self::default_image_cache_dir(),
            deb_cache_dir: None,
            host_id: String::new(),
            network: None,
        }
    }

    /// [`AgentConfig::deb_cache_dir`], its default applied.
    pub fn deb_cache(&self) -> PathBuf {
        self.deb_cache_dir.clone().unwrap_or_else(|| self.image_cache_dir.join("debs"))
    }

    /// `$SOCLE_IMAGE_CACHE`, else `$HOME/.cache/socle/images`, else
    /// `/var/cache/socle/images`.
    pub fn default_image_cache_dir() -> PathBuf {
        if let Some(d) = std::env::var_os("SOCLE_IMAGE_CACHE").filter(|d| !d.is_empty()) {
            return PathBuf::from(d);
        }
        match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
            Some(home) => PathBuf::from(home).join(".cache/socle/images"),
            None => PathBuf::from("/var/cache/socle/images"),
        }
    }
}

/// What spec.json holds (user data lives next to it in `user-data`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct StoredSpec {
    vm_id: String,
    vcpus: u32,
    memory_mib: u64,
    image: ImageFiles,
    kernel_cmdline: Option<String>,
    has_user_data: bool,
    /// Boots from this volume instead of `disk.qcow2` (see [`RootDisk`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    root_volume: Option<String>,
    /// I/O limits of the root volume.
    #[serde(default, skip_serializing_if = "IoLimits::is_default")]
    root_limits: IoLimits,
    /// Linked data volumes, in slot order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    volumes: Vec<VolumeLink>,
    /// Linked NICs, in link order (see `nic.rs`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    nics: Vec<VmNic>,
}

struct Inner {
    cfg: AgentConfig,
    vms_dir: PathBuf,
    accel: Accel,
    accel_reason: String,
    qemu_version: String,
    /// One async lock per VM id: operations on a VM never overlap.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    image_lock: tokio::sync::Mutex<()>,
    /// Held while a platform image is copied into the state dir.
    platform_lock: tokio::sync::Mutex<()>,
    /// Progress of the snapshots being taken, by snapshot id.
    progress: Mutex<HashMap<String, BlockJobProgress>>,
    /// Tenant networks (see [`AgentConfig::network`]).
    network: Option<network::HostNetwork>,
    /// A new ID at every start (see [`socle_agent_api::HostInfo::boot_id`]).
    boot_id: String,
}

/// The host agent. Cheap to clone (shared state behind an `Arc`).
#[derive(Clone)]
pub struct Agent {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("state_dir", &self.inner.cfg.state_dir)
            .field("accel", &self.inner.accel)
            .finish()
    }
}

/// A new ID for this run of the agent: the kernel's random UUID.
fn boot_id() -> Result<String, AgentError> {
    let path = "/proc/sys/kernel/random/uuid";
    let id = std::fs::read_to_string(path).map_err(|e| AgentError::io("cannot read", path, e))?;
    Ok(id.trim().to_string())
}

impl Agent {
    /// Prepares the state directory, checks QEMU and resolves the accelerator
    /// (for `Auto`: a cached verdict, else a real KVM boot probe, see
    /// [`AccelChoice`]).
    pub async fn new(mut cfg: AgentConfig) -> Result<Agent, AgentError> {
        let vms_dir = cfg.state_dir.join("vms");
        std::fs::create_dir_all(&vms_dir)
            .map_err(|e| AgentError::io("cannot create the agent state directory", &vms_dir, e))?;
        // Absolute paths: QEMU gets them on its command line and runs with cwd "/".
        cfg.state_dir = std::fs::canonicalize(&cfg.state_dir)
            .map_err(|e| AgentError::io("cannot resolve", &cfg.state_dir, e))?;
        let vms_dir = cfg.state_dir.join("vms");

        let mut cmd = Command::new(&cfg.qemu_binary);
        cmd.arg("-version");
        let out = run(cmd, Duration::from_secs(30)).await?;
        let qemu_version = String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_string();

        let network = match &cfg.network {
            Some(n) => Some(network::HostNetwork::new(n.dir.clone(), &n.prefix, vms_dir.clone())?),
            None => None,
        };
        let mut agent = Agent {
            inner: Arc::new(Inner {
                cfg,
                vms_dir,
                accel: Accel::Tcg,
                accel_reason: String::new(),
                qemu_version,
                locks: Mutex::new(HashMap::new()),
                image_lock: tokio::sync::Mutex::new(()),
                platform_lock: tokio::sync::Mutex::new(()),
                progress: Mutex::new(HashMap::new()),
                network,
                boot_id: boot_id()?,
            }),
        };
        let (accel, why) = agent.resolve_accel().await?;
        tracing::info!(accel = %accel, choice = %agent.inner.cfg.accel, reason = %why, qemu = %agent.inner.qemu_version, "accelerator selected");
        let inner = Arc::get_mut(&mut agent.inner).expect("agent not shared yet");
        inner.accel = accel;
        inner.accel_reason = why;

        // Half-made volumes and snapshots of an agent that died mid-copy.
        agent.remove_stale_temporaries();

        // Report guests that survived a previous agent: they are re-attached
        // implicitly (every operation reads the pidfile).
        let mut running = Vec::new();
        for id in agent.list_vms().await? {
            if agent.running_pid(&id).is_some() {
                running.push(id);
            }
        }
        if !running.is_empty() {
            tracing::info!(count = running.len(), vms = ?running, "re-attached to running VMs");
        }
        Ok(agent)
    }

    /// This run's ID: it changes at every start of the agent.
    pub fn boot_id(&self) -> &str {
        &self.inner.boot_id
    }

    /// The accelerator every VM of this agent runs with.
    /// The host's ID in its cloud (see [`AgentConfig::host_id`]).
    pub fn host_id(&self) -> &str {
        &self.inner.cfg.host_id
    }

    pub fn accel(&self) -> Accel {
        self.inner.accel
    }

    /// Why that accelerator was chosen ("configured", the probe's verdict, ...).
    pub fn accel_reason(&self) -> &str {
        &self.inner.accel_reason
    }

    /// First line of `qemu-system-x86_64 -version`.
    pub fn qemu_version(&self) -> &str {
        &self.inner.qemu_version
    }

    pub fn state_dir(&self) -> &Path {
        &self.inner.cfg.state_dir
    }

    async fn resolve_accel(&self) -> Result<(Accel, String), AgentError> {
        let cfg = &self.inner.cfg;
        match cfg.accel {
            AccelChoice::Tcg => Ok((Accel::Tcg, "configured".into())),
            AccelChoice::Kvm => {
                accel::kvm_device_usable()
                    .map_err(|e| AgentError::Accel(format!("KVM was configured but {e}")))?;
                Ok((Accel::Kvm, "configured".into()))
            }
            AccelChoice::Auto => {
                if let Err(e) = accel::kvm_device_usable() {
                    return Ok((Accel::Tcg, e));
                }
                let image = self.tiny_files().await.map_err(|e| {
                    AgentError::Accel(format!(
                        "cannot build the socle-tiny image the KVM probe boots (configure the accelerator as kvm or tcg to skip the probe): {e}"
                    ))
                })?;
                let key = accel::ProbeKey::new(
                    &cfg.qemu_binary,
                    &self.inner.qemu_version,
                    &image.kernel,
                )?;
                let cache = cfg.state_dir.join("accel-probe.json");
                if let Some(rec) = accel::load_cached(&cache, &key) {
                    return Ok((
                        rec.accel,
                        format!("cached probe result ({}): {}", cache.display(), rec.reason),
                    ));
                }
                tracing::info!(
                    timeout_s = accel::KVM_PROBE_TIMEOUT.as_secs(),
                    "probing KVM by booting the socle-tiny guest"
                );
                let started = Instant::now();
                let (accel, reason) = match accel::probe_kvm(
                    &cfg.qemu_binary,
                    &image.kernel,
                    &image.initrd,
                    &cfg.state_dir,
                    accel::KVM_PROBE_TIMEOUT,
                )
                .await
                {
                    Ok(r) => (Accel::Kvm, r),
                    Err(r) => (Accel::Tcg, format!("KVM probe failed: {r}")),
                };
                let rec = accel::ProbeRecord {
                    key,
                    accel,
                    reason: reason.clone(),
                    probe_seconds: started.elapsed().as_secs_f64(),
                };
                accel::store(&cache, &rec)?;
                Ok((accel, reason))
            }
        }
    }

    /// Builds the socle-tiny image (Debian cloud kernel + busybox initramfs +
    /// empty 1 GiB base qcow2) into the image cache, or returns the cached one.
    /// It boots with a direct kernel (`kernel`/`initrd` are `Some`).
    pub async fn build_tiny_image(&self) -> Result<ImageFiles, AgentError> {
        Ok(self.tiny_files().await?.direct())
    }

    /// The full-disk variant of socle-tiny, booted by the BIOS like a cloud
    /// image: `kernel`/`initrd` are `None` and `disk` is a 1 GiB qcow2 with an
    /// MBR, SYSLINUX and a FAT partition holding the same kernel and
    /// initramfs (kernel command line `console=ttyS0 quiet no_timer_check`). Cached next to
    /// the direct-kernel files (same cache key); built on first use, which
    /// needs the host tools syslinux, mtools and mkfs.vfat.
    pub async fn build_tiny_disk_image(&self) -> Result<ImageFiles, AgentError> {
        let _g = self.inner.image_lock.lock().await;
        let disk = image::full_disk_or_build(
            &self.inner.cfg.image_cache_dir,
            &self.inner.cfg.deb_cache(),
            &self.inner.cfg.qemu_img_binary,
        )
        .await?;
        Ok(ImageFiles::full_disk(disk))
    }

    async fn tiny_files(&self) -> Result<image::TinyFiles, AgentError> {
        let _g = self.inner.image_lock.lock().await;
        image::build_or_reuse(
            &self.inner.cfg.image_cache_dir,
            &self.inner.cfg.deb_cache(),
            &self.inner.cfg.qemu_img_binary,
        )
        .await
    }

    // ----- paths and locks ------------------------------------------------

    fn vm_dir(&self, vm_id: &str) -> PathBuf {
        self.inner.vms_dir.join(vm_id)
    }

    async fn lock_vm(&self, vm_id: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let m = {
            let mut map = self.inner.locks.lock().expect("lock map poisoned");
            map.entry(vm_id.to_string()).or_default().clone()
        };
        m.lock_owned().await
    }

    fn existing_vm_dir(&self, vm_id: &str) -> Result<PathBuf, AgentError> {
        validate_vm_id(vm_id)?;
        let dir = self.vm_dir(vm_id);
        if dir.is_dir() {
            Ok(dir)
        } else {
            Err(AgentError::VmNotFound(vm_id.to_string()))
        }
    }

    fn load_spec(&self, vm_id: &str) -> Result<StoredSpec, AgentError> {
        let dir = self.existing_vm_dir(vm_id)?;
        let path = dir.join("spec.json");
        let data = read_optional(&path)?.ok_or_else(|| AgentError::Corrupt {
            path: path.clone(),
            detail: "missing (VM directory without spec; define the VM again or destroy it)".into(),
        })?;
        serde_json::from_slice(&data).map_err(|e| AgentError::Corrupt {
            path,
            detail: e.to_string(),
        })
    }

    fn save_spec(&self, spec: &StoredSpec) -> Result<(), AgentError> {
        let path = self.vm_dir(&spec.vm_id).join("spec.json");
        write_atomic(
            &path,
            &serde_json::to_vec_pretty(spec).expect("spec serializes"),
        )
    }

    /// The pid of this VM's QEMU if it is alive (and really ours).
    fn running_pid(&self, vm_id: &str) -> Option<i32> {
        let dir = self.vm_dir(vm_id);
        let pidfile = dir.join("qemu.pid");
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .ok()?
            .trim()
            .parse()
            .ok()?;
        if pid <= 1 || !pid_alive(pid) {
            return None;
        }
        let argv = proc_cmdline(pid)?;
        let name = format!("socle-{vm_id}");
        let has = |flag: &str, value: &str| argv.windows(2).any(|w| w[0] == flag && w[1] == value);
        (has("-name", &name) && has("-pidfile", &pidfile.to_string_lossy())).then_some(pid)
    }

    async fn qmp(&self, vm_id: &str) -> Result<Qmp, AgentError> {
        let socket = self.vm_dir(vm_id).join("qmp.sock");
        Qmp::connect(&socket)
            .await
            .map_err(|detail| AgentError::Qmp {
                vm_id: vm_id.to_string(),
                socket,
                detail,
            })
    }

    async fn qmp_status(&self, vm_id: &str) -> Result<String, AgentError> {
        let mut q = self.qmp(vm_id).await?;
        q.query_status()
            .await
            .map_err(|detail| self.qmp_err(vm_id, detail))
    }

    async fn qmp_command(&self, vm_id: &str, command: &str) -> Result<(), AgentError> {
        let mut q = self.qmp(vm_id).await?;
        q.execute(command, None)
            .await
            .map(|_| ())
            .map_err(|detail| self.qmp_err(vm_id, detail))
    }

    /// Asks the guest to release the device `device` (QMP `device_del`,
    /// re-sent every 5 s: a guest still booting may miss it) and waits up to
    /// `timeout` until QEMU no longer lists it under /machine/peripheral.
    /// Returns a connection on which the caller removes the device's
    /// backend. `what` names the device in the timeout error; a
    /// `device_del` refusal other than "being unplugged" or "not found"
    /// becomes `refused(detail)`.
    pub(crate) async fn release_device(
        &self,
        vm_id: &str,
        device: &str,
        what: &str,
        timeout: Duration,
        refused: impl Fn(String) -> AgentError,
    ) -> Result<Qmp, AgentError> {
        let started = Instant::now();
        let mut last_request: Option<Instant> = None;
        loop {
            let mut q = self.qmp(vm_id).await?;
            let devices = q
                .call("qom-list", serde_json::json!({ "path": "/machine/peripheral" }))
                .await
                .map_err(|d| self.qmp_err(vm_id, d))?;
            let present = devices.as_array().is_some_and(|a| {
                a.iter().any(|e| e.get("name").and_then(serde_json::Value::as_str) == Some(device))
            });
            if !present {
                return Ok(q);
            }
            if started.elapsed() >= timeout {
                return Err(AgentError::Timeout {
                    vm_id: vm_id.into(),
                    what: format!(
                        "the guest to release {what} (device_del {device} sent; is the guest up and does it handle ACPI PCI hot-unplug?)"
                    ),
                    secs: timeout.as_secs(),
                });
            }
            if last_request.is_none_or(|t| t.elapsed() >= Duration::from_secs(5)) {
                if let Err(d) = q.call("device_del", serde_json::json!({ "id": device })).await {
                    if !d.contains("in the process of unplug") && !d.contains("not found") {
                        return Err(refused(format!("device_del failed: {d}")));
                    }
                }
                last_request = Some(Instant::now());
            }
            let slice = Duration::from_secs(2).min(timeout.saturating_sub(started.elapsed()));
            let _ = q
                .wait_event(
                    "DEVICE_DELETED",
                    |d| d.get("device").and_then(serde_json::Value::as_str) == Some(device),
                    slice,
                )
                .await
                .map_err(|d| self.qmp_err(vm_id, d))?;
            // Loop: re-check on a fresh connection (an event can be missed).
        }
    }

    fn qmp_err(&self, vm_id: &str, detail: String) -> AgentError {
        AgentError::Qmp {
            vm_id: vm_id.to_string(),
            socket: self.vm_dir(vm_id).join("qmp.sock"),
            detail,
        }
    }

    fn cleanup_runtime_files(&self, vm_id: &str) {
        let dir = self.vm_dir(vm_id);
        remove_file_quiet(&dir.join("qemu.pid"));
        remove_file_quiet(&dir.join("qmp.sock"));
    }

    // ----- lifecycle ------------------------------------------------------

    /// Creates (or re-confirms) a VM: its directory, spec.json, and a root disk
    /// that is a qcow2 overlay backed by `spec.image.disk`. Idempotent: an
    /// existing disk is kept. Changing vcpus/memory/cmdline/user data is
    /// allowed while the VM is stopped; changing the base image is refused
    /// (destroy the VM first). Linked volumes are kept.
    pub async fn define_vm(&self, spec: &VmSpec) -> Result<(), AgentError> {
        self.define_vm_with_root(spec, &RootDisk::Overlay).await
    }

    /// [`Agent::define_vm`] with a choice of root disk: the overlay on the
    /// image, or an existing volume of this host (made e.g. with
    /// `create_volume(…, Some(VolumeSource::Image { disk }))`), which then
    /// needs its key at every start (`start_vm_with`) and survives the VM.
    /// The root disk of a defined VM cannot change (destroy the VM first).
    /// With a root volume, `spec.image.disk` is not used.
    pub async fn define_vm_with_root(
        &self,
        spec: &VmSpec,
        root: &RootDisk,
    ) -> Result<(), AgentError> {
        validate_vm_id(&spec.vm_id)?;
        validate_size(&spec.vm_id, spec.vcpus, spec.memory_mib)?;
        let root_volume = match root {
            RootDisk::Overlay => None,
            RootDisk::Volume(v) => {
                volume::validate_volume_id(v)?;
                Some(v.clone())
            }
        };
        if spec.image.kernel.is_none() && spec.image.initrd.is_some() {
            return Err(AgentError::InvalidArgument(format!(
                "VM {}: an initrd without a kernel (a full-disk image boots its own kernel; give neither)",
                spec.vm_id
            )));
        }
        let image = ImageFiles {
            kernel: match &spec.image.kernel {
                Some(k) => Some(absolute_existing(k, "kernel")?),
                None => None,
            },
            initrd: match &spec.image.initrd {
                Some(i) => Some(absolute_existing(i, "initrd")?),
                None => None,
            },
            disk: match root_volume {
                None => absolute_existing(&spec.image.disk, "base disk")?,
                Some(_) => std::fs::canonicalize(&spec.image.disk)
                    .unwrap_or_else(|_| spec.image.disk.clone()),
            },
            platform: spec.image.platform,
        };
        let mut stored = StoredSpec {
            vm_id: spec.vm_id.clone(),
            vcpus: spec.vcpus,
            memory_mib: spec.memory_mib,
            image,
            kernel_cmdline: spec.kernel_cmdline.clone(),
            has_user_data: spec.user_data.is_some(),
            root_volume: root_volume.clone(),
            root_limits: IoLimits::default(),
            volumes: Vec::new(),
            nics: Vec::new(),
        };
        let _vg = match &root_volume {
            Some(v) => Some(self.lock_volume(v).await),
            None => None,
        };
        if let Some(v) = &root_volume {
            if !self.volume_path(v).is_file() {
                return Err(AgentError::VolumeNotFound(v.clone()));
            }
            if let Some(a) = self.attachment_of(v)? {
                if a.vm_id != spec.vm_id || a.device_name.is_some() {
                    return Err(AgentError::VolumeConflict {
                        volume_id: v.clone(),
                        what: match a.device_name {
                            Some(d) => format!("is linked to VM {} as {d}", a.vm_id),
                            None => format!("is the root disk of VM {}", a.vm_id),
                        },
                    });
                }
            }
        }
        let _g = self.lock_vm(&spec.vm_id).await;
        let dir = self.vm_dir(&spec.vm_id);
        std::fs::create_dir_all(&dir)
            .map_err(|e| AgentError::io("cannot create the VM directory", &dir, e))?;
        let disk = dir.join("disk.qcow2");
        let user_data_path = dir.join("user-data");

        if let Ok(old) = self.load_spec(&spec.vm_id) {
            if old.root_volume != stored.root_volume {
                let name = |r: &Option<String>| match r {
                    Some(v) => format!("volume {v}"),
                    None => "an overlay on its image".to_string(),
                };
                return Err(AgentError::Conflict {
                    vm_id: spec.vm_id.clone(),
                    what: format!(
                        "already defined with its root disk on {}; destroy it before defining it on {}",
                        name(&old.root_volume),
                        name(&stored.root_volume)
                    ),
                });
            }
            stored.volumes = old.volumes.clone();
            stored.nics = old.nics.clone();
            stored.root_limits = old.root_limits;
            if stored.root_volume.is_some() {
                stored.image.disk = old.image.disk.clone();
            }
            if stored.root_volume.is_none() && old.image.disk != stored.image.disk && disk.exists()
            {
                return Err(AgentError::Conflict {
                    vm_id: spec.vm_id.clone(),
                    what: format!(
                        "already defined with base disk {}; destroy it before defining it on {}",
                        old.image.disk.display(),
                        stored.image.disk.display()
                    ),
                });
            }
            let old_ud = read_optional(&user_data_path)?;
            if old == stored && old_ud.as_deref() == spec.user_data.as_deref() {
                return Ok(()); // nothing to do (possibly while running)
            }
            if self.running_pid(&spec.vm_id).is_some() {
                return Err(AgentError::VmRunning {
                    vm_id: spec.vm_id.clone(),
                    what: "its definition cannot change while it runs; stop it first".into(),
                });
            }
        }

        match &spec.user_data {
            Some(ud) => write_atomic(&user_data_path, ud)?,
            None => remove_file_quiet(&user_data_path),
        }
        if stored.root_volume.is_none() && !disk.exists() {
            // Create under a temporary name, then rename: never a half-made disk.
            let tmp = dir.join("disk.qcow2.tmp");
            remove_file_quiet(&tmp);
            let mut cmd = Command::new(&self.inner.cfg.qemu_img_binary);
            cmd.args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
                .arg(&stored.image.disk)
                .arg(&tmp);
            run(cmd, Duration::from_secs(60)).await?;
            std::fs::rename(&tmp, &disk)
                .map_err(|e| AgentError::io("cannot rename the new root disk to", &disk, e))?;
        }
        self.save_spec(&stored)?;
        tracing::info!(vm = %spec.vm_id, vcpus = spec.vcpus, memory_mib = spec.memory_mib, "VM defined");
        Ok(())
    }

    /// Changes vcpus and memory of a stopped VM (takes effect at next start).
    pub async fn update_vm(
        &self,
        vm_id: &str,
        vcpus: u32,
        memory_mib: u64,
    ) -> Result<(), AgentError> {
        validate_vm_id(vm_id)?;
        validate_size(vm_id, vcpus, memory_mib)?;
        let _g = self.lock_vm(vm_id).await;
        let mut spec = self.load_spec(vm_id)?;
        if self.running_pid(vm_id).is_some() {
            return Err(AgentError::VmRunning {
                vm_id: vm_id.to_string(),
                what: "vcpus and memory can only change while it is stopped".into(),
            });
        }
        spec.vcpus = vcpus;
        spec.memory_mib = memory_mib;
        self.save_spec(&spec)
    }

    /// The VM's definition as stored on disk.
    pub async fn vm_spec(&self, vm_id: &str) -> Result<VmSpec, AgentError> {
        let spec = self.load_spec(vm_id)?;
        let user_data = read_optional(&self.vm_dir(vm_id).join("user-data"))?;
        Ok(VmSpec {
            vm_id: spec.vm_id,
            vcpus: spec.vcpus,
            memory_mib: spec.memory_mib,
            image: spec.image,
            user_data,
            kernel_cmdline: spec.kernel_cmdline,
        })
    }

    /// Starts the VM's QEMU (or resumes a paused one). Idempotent. Returns once
    /// QMP `query-status` says "running" (the guest is then booting; watch the
    /// console for readiness). A VM with a root volume or linked volumes needs
    /// their keys: use [`Agent::start_vm_with`].
    pub async fn start_vm(&self, vm_id: &str) -> Result<(), AgentError> {
        self.start_vm_with(vm_id, &HashMap::new()).await
    }

    /// [`Agent::start_vm`] for a VM with volumes: `keys` holds the key of its
    /// root volume and of each linked volume, by volume id (extra keys are
    /// ignored; a missing one is `MissingVolumeKey`, a wrong one `WrongKey`,
    /// and QEMU is then not left running). The keys reach QEMU through
    /// memfds, never its command line. A VM already running is left as is.
    pub async fn start_vm_with(
        &self,
        vm_id: &str,
        keys: &HashMap<String, VolumeKey>,
    ) -> Result<(), AgentError> {
        validate_vm_id(vm_id)?;
        let _g = self.lock_vm(vm_id).await;
        let spec = self.load_spec(vm_id)?;

        if let Some(pid) = self.running_pid(vm_id) {
            let status = self.qmp_status(vm_id).await?;
            match runtime_of(&status) {
                VmRuntime::Running => return Ok(()),
                VmRuntime::Paused if is_resumable(&status) => {
                    self.qmp_command(vm_id, "cont").await?;
                    return self.wait_running(vm_id, pid).await;
                }
                _ => {
                    // Powered off, crashed or wedged: replace the process.
                    tracing::info!(vm = vm_id, status = %status, "restarting a QEMU that is not running its guest");
                    self.hard_kill(vm_id, pid).await?;
                }
            }
        }

        let dir = self.vm_dir(vm_id);
        for (f, what) in [
            (&spec.image.kernel, "kernel"),
            (&spec.image.initrd, "initrd"),
        ] {
            let Some(f) = f else { continue };
            if !f.is_file() {
                return Err(AgentError::QemuStart {
                    vm_id: vm_id.into(),
                    detail: format!("the {what} {} is missing", f.display()),
                    stderr: String::new(),
                });
            }
        }
        let disk = dir.join("disk.qcow2");
        if spec.root_volume.is_none() && !disk.is_file() {
            return Err(AgentError::QemuStart {
                vm_id: vm_id.into(),
                detail: format!(
                    "the root disk {} is missing (define the VM again)",
                    disk.display()
                ),
                stderr: String::new(),
            });
        }
        // A stale qemu.pid / qmp.sock left by a killed QEMU needs no cleanup:
        // QEMU rewrites (and locks) the pidfile and unlinks the socket before
        // binding it.
        trim_console(&dir.join("console.log"));

        // Volume keys: one memfd each, inherited by this QEMU only, emptied
        // when `secrets` is dropped (QEMU has read them by the time the
        // daemonizing parent exits).
        let mut secrets = SecretFds::new();
        let (root_args, volume_args) = self.volume_args(&spec, keys, &mut secrets)?;
        let mut cmd = self.qemu_command(&spec, &dir, root_args, volume_args);
        secrets.pass_to(&mut cmd);
        tracing::info!(vm = vm_id, command = %util::render(&cmd), "starting QEMU");
        let started = run(cmd, Duration::from_secs(60)).await;
        drop(secrets);
        started.map_err(|e| match e {
            AgentError::Command { stderr, .. } if stderr.contains(error::WRONG_KEY_TEXT) => {
                AgentError::WrongKey {
                    what: match Self::volume_named_in(&spec, &stderr) {
                        Some(v) => format!("volume {v} of VM {vm_id}"),
                        None => format!("a volume of VM {vm_id}"),
                    },
                    detail: String::new(),
                }
            }
            AgentError::Command { status, stderr, .. } => AgentError::QemuStart {
                vm_id: vm_id.into(),
                detail: format!(
                    "{} exited with {status}",
                    self.inner.cfg.qemu_binary.display()
                ),
                stderr,
            },
            other => other,
        })?;
        // With -daemonize, QEMU returns only once the daemon wrote its pidfile
        // and opened the QMP socket.
        let pid = self
            .running_pid(vm_id)
            .ok_or_else(|| AgentError::QemuStart {
                vm_id: vm_id.into(),
                detail: format!(
                    "QEMU reported success but {} names no live QEMU process",
                    dir.join("qemu.pid").display()
                ),
                stderr: String::new(),
            })?;
        if let Err(e) = self.wait_running(vm_id, pid).await {
            let _ = self.hard_kill(vm_id, pid).await;
            return Err(e);
        }
        tracing::info!(vm = vm_id, pid, accel = %self.inner.accel, "VM running");
        Ok(())
    }

    /// `root_args`: the root volume's arguments (empty: the overlay);
    /// `volume_args`: the linked volumes' (see `volume_args`).
    fn qemu_command(
        &self,
        spec: &StoredSpec,
        dir: &Path,
        root_args: Vec<String>,
        volume_args: Vec<String>,
    ) -> Command {
        let cfg = &self.inner.cfg;
        let pidfile = dir.join("qemu.pid");
        let console = dir.join("console.log");
        let disk = dir.join("disk.qcow2");
        let user_data = dir.join("user-data");
        // sockaddr_un holds 107 bytes: a longer socket path is given relative to
        // QEMU's working directory (the VM dir); QEMU binds it before it
        // daemonizes and changes to "/". The agent reaches it via /proc/self/fd.
        let sock = dir.join("qmp.sock");
        let sock_arg = if sock.as_os_str().len() <= 107 {
            sock.to_string_lossy().into_owned()
        } else {
            "qmp.sock".to_string()
        };
        let mut cmdline = String::from("console=ttyS0 ");
        cmdline.push_str(
            spec.kernel_cmdline
                .as_deref()
                .unwrap_or(DEFAULT_CMDLINE_EXTRA),
        );

        let mut cmd = Command::new(&cfg.qemu_binary);
        cmd.current_dir(dir);
        cmd.arg("-name").arg(format!("socle-{}", spec.vm_id));
        // No default devices: no default NIC (the VM's NICs are its linked
        // ones), no VGA, no default monitor/serial.
        cmd.args([
            "-nodefaults",
            "-no-user-config",
            "-M",
            "pc",
            "-display",
            "none",
        ]);
        match self.inner.accel {
            Accel::Kvm => cmd.args(["-accel", "kvm", "-cpu", "host"]),
            Accel::Tcg => cmd.args(["-accel", "tcg"]),
        };
        cmd.arg("-smp").arg(spec.vcpus.to_string());
        cmd.arg("-m").arg(format!("{}M", spec.memory_mib));
        cmd.arg("-daemonize").arg("-pidfile").arg(&pidfile);
        cmd.arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", qemu_opt(&sock_arg)));
        cmd.arg("-chardev").arg(format!(
            "file,id=console0,path={},append=on",
            qemu_opt(&console.to_string_lossy())
        ));
        cmd.args(["-serial", "chardev:console0"]);
        match &spec.image.kernel {
            Some(kernel) => {
                cmd.arg("-kernel").arg(kernel);
                if let Some(initrd) = &spec.image.initrd {
                    cmd.arg("-initrd").arg(initrd);
                }
                cmd.arg("-append").arg(cmdline);
            }
            // SeaBIOS boots the root disk (bootindex 0) and nothing else:
            // a data volume carrying a boot sector is never booted instead.
            None => {
                cmd.args(["-boot", "strict=on"]);
            }
        }
        if root_args.is_empty() {
            cmd.arg("-drive").arg(format!(
                "file={},format=qcow2,if=none,id=root,discard=unmap",
                qemu_opt(&disk.to_string_lossy())
            ));
            let boot = if spec.image.boots_from_disk() {
                ",bootindex=0"
            } else {
                ""
            };
            cmd.arg("-device")
                .arg(format!("virtio-blk-pci,drive=root{boot}"));
        } else {
            // First device on the command line: the guest's vda.
            cmd.args(root_args);
        }
        cmd.args(volume_args);
        for nic in &spec.nics {
            cmd.args(nic.qemu_args());
        }
        cmd.arg("-fw_cfg").arg(format!(
            "name=opt/socle/vm-id,string={}",
            qemu_opt(&spec.vm_id)
        ));
        if spec.has_user_data && user_data.is_file() {
            cmd.arg("-fw_cfg").arg(format!(
                "name=opt/socle/user-data,file={}",
                qemu_opt(&user_data.to_string_lossy())
            ));
        }
        cmd
    }

    async fn wait_running(&self, vm_id: &str, pid: i32) -> Result<(), AgentError> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if !pid_alive(pid) {
                let tail = self.console_output(vm_id, 2048).unwrap_or_default();
                return Err(AgentError::QemuStart {
                    vm_id: vm_id.into(),
                    detail: format!(
                        "QEMU (pid {pid}) exited right after starting; console tail:\n{}",
                        String::from_utf8_lossy(&tail)
                    ),
                    stderr: String::new(),
                });
            }
            let last = match self.qmp_status(vm_id).await {
                Ok(s) if s == "running" => return Ok(()),
                Ok(s) => format!("status {s}"),
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(AgentError::Timeout {
                    vm_id: vm_id.into(),
                    what: format!("QMP query-status to say \"running\" (last: {last})"),
                    secs: 30,
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the VM. Graceful (`force == false`): presses the ACPI power button
    /// (QMP `system_powerdown`, repeated every 5 s) and waits up to `timeout`
    /// for QEMU to exit, then hard-kills. `force`: hard kill at once. A hard
    /// kill is SIGTERM (QEMU exits immediately, flushing its disk caches; the
    /// guest has no say) then SIGKILL after 3 s. Idempotent: a stopped VM is Ok.
    pub async fn stop_vm(
        &self,
        vm_id: &str,
        force: bool,
        timeout: Duration,
    ) -> Result<(), AgentError> {
        self.existing_vm_dir(vm_id)?;
        let _g = self.lock_vm(vm_id).await;
        let Some(pid) = self.running_pid(vm_id) else {
            self.cleanup_runtime_files(vm_id);
            return Ok(());
        };
        if !force {
            let started = Instant::now();
            let deadline = started + timeout;
            loop {
                if let Err(e) = self.qmp_command(vm_id, "system_powerdown").await {
                    if !pid_alive(pid) {
                        break;
                    }
                    tracing::warn!(vm = vm_id, error = %e, "cannot send the ACPI power-down; killing instead");
                    break;
                }
                let now = Instant::now();
                let slice = POWERDOWN_REPEAT.min(deadline.saturating_duration_since(now));
                if wait_pid_exit(pid, slice).await {
                    tracing::info!(
                        vm = vm_id,
                        secs = started.elapsed().as_secs_f64(),
                        "guest powered off"
                    );
                    self.cleanup_runtime_files(vm_id);
                    return Ok(());
                }
                if Instant::now() >= deadline {
                    tracing::warn!(
                        vm = vm_id,
                        timeout_s = timeout.as_secs_f64(),
                        "guest did not power off in time; killing QEMU"
                    );
                    break;
                }
            }
        }
        self.hard_kill(vm_id, pid).await
    }

    async fn hard_kill(&self, vm_id: &str, pid: i32) -> Result<(), AgentError> {
        if pid_alive(pid) {
            send_signal(pid, libc::SIGTERM);
            if !wait_pid_exit(pid, SIGTERM_GRACE).await {
                send_signal(pid, libc::SIGKILL);
                if !wait_pid_exit(pid, Duration::from_secs(10)).await {
                    return Err(AgentError::Timeout {
                        vm_id: vm_id.into(),
                        what: format!("QEMU pid {pid} to die after SIGKILL"),
                        secs: 10,
                    });
                }
            }
        }
        tracing::info!(vm = vm_id, pid, "QEMU killed");
        self.cleanup_runtime_files(vm_id);
        Ok(())
    }

    /// Hard reset of a running VM (QMP `system_reset`): the guest reboots.
    pub async fn reboot_vm(&self, vm_id: &str) -> Result<(), AgentError> {
        self.existing_vm_dir(vm_id)?;
        let _g = self.lock_vm(vm_id).await;
        if self.running_pid(vm_id).is_none() {
            return Err(AgentError::VmNotRunning {
                vm_id: vm_id.into(),
                what: "cannot reboot it".into(),
            });
        }
        self.qmp_command(vm_id, "system_reset").await?;
        tracing::info!(vm = vm_id, "VM reset");
        Ok(())
    }

    /// Kills the VM if it runs and removes every file of it. Idempotent: an
    /// unknown VM is Ok.
    pub async fn destroy_vm(&self, vm_id: &str) -> Result<(), AgentError> {
        validate_vm_id(vm_id)?;
        let _g = self.lock_vm(vm_id).await;
        let dir = self.vm_dir(vm_id);
        if !dir.exists() {
            return Ok(());
        }
        if let Some(pid) = self.running_pid(vm_id) {
            // Its disk is about to be deleted: no need for SIGTERM first.
            send_signal(pid, libc::SIGKILL);
            if !wait_pid_exit(pid, Duration::from_secs(10)).await {
                return Err(AgentError::Timeout {
                    vm_id: vm_id.into(),
                    what: format!("QEMU pid {pid} to die after SIGKILL"),
                    secs: 10,
                });
            }
        }
        std::fs::remove_dir_all(&dir)
            .map_err(|e| AgentError::io("cannot remove the VM directory", &dir, e))?;
        self.inner
            .locks
            .lock()
            .expect("lock map poisoned")
            .remove(vm_id);
        tracing::info!(vm = vm_id, "VM destroyed");
        Ok(())
    }

    /// Current run state, from the pidfile and QMP `query-status`.
    pub async fn vm_runtime(&self, vm_id: &str) -> Result<VmRuntime, AgentError> {
        self.existing_vm_dir(vm_id)?;
        let Some(pid) = self.running_pid(vm_id) else {
            return Ok(VmRuntime::NotRunning);
        };
        match self.qmp_status(vm_id).await {
            Ok(s) => Ok(runtime_of(&s)),
            Err(_) if !pid_alive(pid) => Ok(VmRuntime::NotRunning), // exited meanwhile
            Err(e) => Err(e),
        }
    }

    /// Every VM directory on disk, sorted (running or not, complete or not), so
    /// the control plane can find orphans after a crash.
    pub async fn list_vms(&self) -> Result<Vec<String>, AgentError> {
        self.list_vm_dirs()
    }

    fn list_vm_dirs(&self) -> Result<Vec<String>, AgentError> {
        let dir = &self.inner.vms_dir;
        let rd = match std::fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(AgentError::io("cannot list", dir, e)),
        };
        let mut ids: Vec<String> = rd
            .flatten()
            .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .filter(|n| validate_vm_id(n).is_ok())
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// The last `max_bytes` of the VM's serial console log (empty if the VM
    /// never ran).
    pub fn console_output(&self, vm_id: &str, max_bytes: usize) -> Result<Vec<u8>, AgentError> {
        use std::io::{Read, Seek, SeekFrom};
        let dir = self.existing_vm_dir(vm_id)?;
        let path = dir.join("console.log");
        let mut f = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(AgentError::io("cannot open", &path, e)),
        };
        let len = f
            .metadata()
            .map_err(|e| AgentError::io("cannot stat", &path, e))?
            .len();
        let start = len.saturating_sub(max_bytes as u64);
        f.seek(SeekFrom::Start(start))
            .map_err(|e| AgentError::io("cannot seek", &path, e))?;
        let mut buf = Vec::with_capacity((len - start) as usize);
        f.take(max_bytes as u64)
            .read_to_end(&mut buf)
            .map_err(|e| AgentError::io("cannot read", &path, e))?;
        Ok(buf)
    }
}

/// Maps a QMP run state to [`VmRuntime`].
fn runtime_of(status: &str) -> VmRuntime {
    match status {
        "running" => VmRuntime::Running,
        "shutdown" => VmRuntime::Shutdown,
        _ => VmRuntime::Paused,
    }
}

/// States that `cont` can leave.
fn is_resumable(status: &str) -> bool {
    matches!(status, "paused" | "prelaunch" | "suspended" | "debug")
}

fn validate_vm_id(id: &str) -> Result<(), AgentError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && !id.starts_with('.')
        && !id.starts_with('-')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(AgentError::InvalidVmId(id.to_string()))
    }
}

fn validate_size(vm_id: &str, vcpus: u32, memory_mib: u64) -> Result<(), AgentError> {
    if !(1..=255).contains(&vcpus) || !(64..=4 << 20).contains(&memory_mib) {
        return Err(AgentError::Conflict {
            vm_id: vm_id.into(),
            what: format!(
                "unsupported size: {vcpus} vCPUs, {memory_mib} MiB (1-255 vCPUs, 64 MiB-4 TiB)"
            ),
        });
    }
    Ok(())
}

fn absolute_existing(path: &Path, what: &str) -> Result<PathBuf, AgentError> {
    std::fs::canonicalize(path)
        .map_err(|e| AgentError::io(format!("image {what} not usable:"), path, e))
}

/// Keeps the console log from growing without bound across boots.
fn trim_console(path: &Path) {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(md) = std::fs::metadata(path) else {
        return;
    };
    if md.len() <= CONSOLE_MAX {
        return;
    }
    let tail = std::fs::File::open(path).and_then(|mut f| {
        f.seek(SeekFrom::Start(md.len() - CONSOLE_KEEP))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        Ok(buf)
    });
    if let Ok(buf) = tail {
        let _ = write_atomic(path, &buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_ids() {
        assert!(validate_vm_id("i-0a1b2c3d").is_ok());
        for bad in ["", ".", "..", "../x", "a/b", "-x", "x y", &"a".repeat(65)] {
            assert!(validate_vm_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn accel_choice_parses() {
        assert_eq!("auto".parse::<AccelChoice>().unwrap(), AccelChoice::Auto);
        assert_eq!("KVM".parse::<AccelChoice>().unwrap(), AccelChoice::Kvm);
        assert_eq!(" tcg ".parse::<AccelChoice>().unwrap(), AccelChoice::Tcg);
        assert!("xen".parse::<AccelChoice>().is_err());
    }

    #[test]
    fn agent_is_send_sync_clone() {
        fn check<T: Send + Sync + Clone + 'static>() {}
        check::<Agent>();
    }

    #[test]
    fn old_spec_json_reads_as_direct_kernel_boot() {
        // spec.json as written before kernel/initrd became optional.
        let old = r#"{
  "vm_id": "i-old",
  "vcpus": 1,
  "memory_mib": 256,
  "image": {
    "kernel": "/img/vmlinuz",
    "initrd": "/img/initrd.cpio",
    "disk": "/img/base.qcow2"
  },
  "kernel_cmdline": null,
  "has_user_data": false
}"#;
        let spec: StoredSpec = serde_json::from_str(old).unwrap();
        assert_eq!(
            spec.image.kernel.as_deref(),
            Some(Path::new("/img/vmlinuz"))
        );
        assert_eq!(
            spec.image.initrd.as_deref(),
            Some(Path::new("/img/initrd.cpio"))
        );
        assert!(!spec.image.boots_from_disk());
        // A full-disk spec round-trips without kernel/initrd keys.
        let mut full = spec.clone();
        full.image = ImageFiles::full_disk("/img/full-disk.qcow2");
        let json = serde_json::to_string(&full).unwrap();
        assert!(
            !json.contains("kernel\":") && !json.contains("initrd"),
            "{json}"
        );
        let back: StoredSpec = serde_json::from_str(&json).unwrap();
        assert_eq!(back, full);
        assert!(back.image.boots_from_disk());
    }

    #[test]
    fn run_states() {
        assert_eq!(runtime_of("running"), VmRuntime::Running);
        assert_eq!(runtime_of("shutdown"), VmRuntime::Shutdown);
        assert_eq!(runtime_of("paused"), VmRuntime::Paused);
        assert_eq!(runtime_of("internal-error"), VmRuntime::Paused);
    }
}

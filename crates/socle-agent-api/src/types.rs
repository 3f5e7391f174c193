//! The values that cross the agent protocol. Plain data: how the agent acts
//! on them (QEMU arguments, validation against its state) is the agent's.

use std::path::PathBuf;

use base64::Engine;
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::key::VolumeKey;

/// What an agent says of itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HostInfo {
    /// The protocol version it speaks (see [`crate::PROTOCOL_VERSION`]).
    pub protocol_version: u32,
    /// The host's ID in the cloud (`h-…`): the one it was given when it
    /// joined, else the one the agent made for itself at its first start.
    #[serde(default)]
    pub host_id: String,
    /// "kvm" or "tcg".
    pub accel: String,
    /// Why this accelerator (e.g. why KVM is not used).
    pub accel_reason: String,
    pub qemu_version: String,
    /// What the host has for guests, before any overcommit.
    #[serde(default)]
    pub capacity: HostCapacity,
    /// Changes at every start of the agent (see [`HostNets::boot_id`]).
    #[serde(default)]
    pub boot_id: String,
}

/// A host's physical resources for guests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HostCapacity {
    /// Logical CPUs.
    pub vcpus: u32,
    /// Physical memory.
    pub memory_mib: u64,
}

/// An image every host holds itself, built from Debian packages (or found
/// in its cache) the first time it is needed: the control plane names it,
/// the agent knows its files. A control-plane file path never crosses the
/// wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PlatformImage {
    /// A Debian cloud kernel and a busybox initramfs, booted directly by
    /// QEMU (`-kernel`/`-initrd`), with an empty 1 GiB base disk.
    SocleTiny,
    /// The same system as a full 1 GiB disk (MBR, SYSLINUX, kernel and
    /// initramfs on a FAT partition), booted by the BIOS as a cloud image is.
    SocleTinyDisk,
}

impl PlatformImage {
    pub const ALL: [PlatformImage; 2] = [PlatformImage::SocleTiny, PlatformImage::SocleTinyDisk];

    /// Its image name (`socle-tiny`, `socle-tiny-disk`), as users see it.
    pub fn name(self) -> &'static str {
        match self {
            PlatformImage::SocleTiny => "socle-tiny",
            PlatformImage::SocleTinyDisk => "socle-tiny-disk",
        }
    }

    pub fn from_name(name: &str) -> Option<PlatformImage> {
        PlatformImage::ALL.into_iter().find(|p| p.name() == name)
    }

    /// True when QEMU loads its kernel directly (else the firmware boots
    /// the disk's own boot loader).
    pub fn has_kernel(self) -> bool {
        matches!(self, PlatformImage::SocleTiny)
    }
}

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct VmSpec {
    /// e.g. "i-0a1b2c3d"; 1-64 characters from [A-Za-z0-9._-].
    pub vm_id: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    /// The platform image whose kernel (and initramfs) QEMU loads directly;
    /// None: the firmware (SeaBIOS) boots the root disk's own boot loader,
    /// as with a cloud image.
    pub kernel: Option<PlatformImage>,
    /// Handed to the guest through fw_cfg as `opt/socle/user-data`.
    #[serde(default, with = "optional_base64")]
    #[schemars(with = "Option<Blob>")]
    pub user_data: Option<Vec<u8>>,
    /// Extra kernel arguments (default "quiet no_timer_check"); `console=ttyS0` is always first.
    /// Direct kernel boot only: a VM without `kernel` boots with the command
    /// line of its disk's own boot loader configuration.
    pub kernel_cmdline: Option<String>,
}

/// What a VM boots from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RootDisk {
    /// A qcow2 overlay on the base disk of a platform image, inside the VM
    /// directory (deleted with the VM).
    Overlay(PlatformImage),
    /// An existing volume of this host (encrypted; its key is given to
    /// `start_vm`). It survives the VM.
    Volume(String),
}

/// Run state of a VM's QEMU process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum VmRuntime {
    Running,
    /// QEMU alive, vCPUs stopped (paused, migrating, prelaunch, error states).
    Paused,
    /// QEMU alive but the guest powered off (QEMU exits right after, normally).
    Shutdown,
    NotRunning,
}

/// One port of a VM: a tap the host's network driver prepared, and the
/// guest's MAC on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct VmNic {
    /// The tap's name (at most 15 bytes, `[A-Za-z0-9_.-]`).
    pub ifname: String,
    /// The guest's MAC, `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
}

/// Where a new volume's data comes from.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum VolumeSource {
    /// A full copy of a snapshot of this host, opened with the snapshot's own key.
    Snapshot { snapshot_id: String, key: VolumeKey },
    /// A full copy of a platform image's base disk, to make a root volume.
    Platform { image: PlatformImage },
}

/// I/O limits of one linked volume (QEMU throttle group). 0 = unlimited.
/// `*_total` cannot be combined with the `*_read`/`*_write` of the same kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct IoLimits {
    pub iops_total: u64,
    pub iops_read: u64,
    pub iops_write: u64,
    pub bps_total: u64,
    pub bps_read: u64,
    pub bps_write: u64,
    /// Requests larger than this many bytes count as several I/O operations
    /// (e.g. 262144 counts a 1 MiB request as 4); 0 = every request counts once.
    pub iops_size: u64,
}

impl IoLimits {
    /// No limit at all.
    pub fn unlimited() -> IoLimits {
        IoLimits::default()
    }

    /// Only a total IOPS cap (io1/gp2-style provisioned IOPS).
    pub fn iops(iops_total: u64) -> IoLimits {
        IoLimits { iops_total, ..IoLimits::default() }
    }

    pub fn is_default(&self) -> bool {
        *self == IoLimits::default()
    }

    pub fn is_unlimited(&self) -> bool {
        [self.iops_total, self.iops_read, self.iops_write, self.bps_total, self.bps_read, self.bps_write]
            .iter()
            .all(|v| *v == 0)
    }
}

/// A volume of a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct VolumeInfo {
    pub volume_id: String,
    /// The file on the host: for the agent's own callers; it never crosses
    /// the protocol (empty on the control plane's side), which names
    /// everything by ID.
    #[serde(skip)]
    #[schemars(skip)]
    pub path: PathBuf,
    /// Size seen by the guest.
    pub size_bytes: u64,
    /// Bytes the file uses on the host (thin provisioning).
    pub allocated_bytes: u64,
    pub encrypted: bool,
    /// The VM using it, if any.
    pub attachment: Option<VolumeAttachment>,
}

/// How a volume is used by a VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct VolumeAttachment {
    pub vm_id: String,
    /// `None` for the VM's root disk, else the device name given to `link_volume`.
    pub device_name: Option<String>,
    pub limits: IoLimits,
}

/// A data volume linked to a VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LinkedVolume {
    pub volume_id: String,
    pub device_name: String,
    pub limits: IoLimits,
}

/// A snapshot of a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SnapshotInfo {
    pub snapshot_id: String,
    /// The file on the host (see [`VolumeInfo::path`]): never on the wire.
    #[serde(skip)]
    #[schemars(skip)]
    pub path: PathBuf,
    /// Size of the volume it was taken from.
    pub size_bytes: u64,
    pub allocated_bytes: u64,
}

/// Progress of a snapshot copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct BlockJobProgress {
    pub done: u64,
    pub total: u64,
}

impl BlockJobProgress {
    /// 0-100.
    pub fn percent(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.done as f64 * 100.0 / self.total as f64
        }
    }
}

/// The two accepted upload formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum UploadFormat {
    Raw,
    Qcow2,
}

impl UploadFormat {
    /// The qemu driver name.
    pub fn as_str(self) -> &'static str {
        match self {
            UploadFormat::Raw => "raw",
            UploadFormat::Qcow2 => "qcow2",
        }
    }
}

impl std::fmt::Display for UploadFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the agent found out about an acceptable upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct UploadInfo {
    pub format: UploadFormat,
    /// Size of the disk the image describes (what a guest would see).
    pub virtual_size_bytes: u64,
    /// Size of the uploaded file itself.
    pub file_size_bytes: u64,
}

/// Why an uploaded file is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ImportRefusal {
    #[error("the file is empty")]
    Empty,
    #[error("not a regular file")]
    NotAFile,
    /// Neither qcow2 nor any known image format, and not a raw disk either.
    #[error("not a disk image: {0}")]
    NotADiskImage(String),
    /// A known image format other than raw and qcow2 (vmdk, vdi, vhd, …).
    #[error("format {0} is not accepted (only raw and qcow2 images can be imported; convert it first, e.g. `qemu-img convert -O qcow2`)")]
    UnsupportedFormat(String),
    #[error("the qcow2 image has a backing file ({0:?}); only standalone images can be imported (flatten it with `qemu-img convert`)")]
    BackingFile(String),
    #[error("the qcow2 image stores its data in an external data file{}; only standalone images can be imported", if .0.is_empty() { String::new() } else { format!(" ({:?})", .0) })]
    ExternalDataFile(String),
    #[error("the image is encrypted; import a plain image (it is encrypted on import)")]
    Encrypted,
    #[error("virtual size {virtual_size_bytes} bytes is above the {max_bytes}-byte limit")]
    TooBig { virtual_size_bytes: u64, max_bytes: u64 },
    #[error("the image is damaged: {0}")]
    Corrupt(String),
    #[error("it was declared {declared} but is {found}")]
    FormatMismatch { declared: UploadFormat, found: UploadFormat },
}

/// Bytes that travel as standard base64 (a console log, user data), not as
/// a JSON array of numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Blob(pub Vec<u8>);

impl Serialize for Blob {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Blob, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD.decode(text.as_bytes()).map(Blob).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Blob {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Blob".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "string", "contentEncoding": "base64", "description": "bytes, standard base64"})
    }
}

mod optional_base64 {
    use super::Blob;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        v.as_ref().map(|b| Blob(b.clone())).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Ok(Option::<Blob>::deserialize(d)?.map(|b| b.0))
    }
}

/// The tenant networks wired on a host, and which run of the agent says so.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HostNets {
    /// Changes at every start of the agent: what a previous run was told
    /// (its networks' metadata documents) is then gone, and the control
    /// plane applies every network again.
    pub boot_id: String,
    /// The networks present on the host (by `net_id`), applied by this run
    /// or left by an earlier one.
    pub nets: Vec<String>,
}

/// What the metadata service at 169.254.169.254 tells one guest, as the
/// EC2 layout has it (cloud-init's EC2 datasource and Outscale guests read
/// it). The agent answers a caller by its source address, which
/// anti-spoofing makes one of the guest's own: a guest only sees its own
/// document. User data is not here: the agent has it from the VM's spec.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct GuestMetadata {
    /// The addresses this document answers, in the network it is pushed with.
    pub addresses: Vec<std::net::Ipv4Addr>,
    pub vm_id: String,
    pub image_id: String,
    pub vm_type: String,
    pub reservation_id: String,
    /// The primary private IP of the VM's primary NIC.
    pub local_ipv4: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_ipv4: Option<String>,
    pub hostname: String,
    pub mac: String,
    /// Names of the primary NIC's security groups.
    #[serde(default)]
    pub security_groups: Vec<String>,
    pub subregion: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<GuestKey>,
    /// Every NIC of the VM, primary first.
    #[serde(default)]
    pub interfaces: Vec<GuestInterface>,
}

/// The keypair a VM was created with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct GuestKey {
    pub name: String,
    /// OpenSSH public key line.
    pub public_key: String,
}

/// One NIC in the `network/interfaces/macs/` tree of the metadata service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct GuestInterface {
    pub mac: String,
    pub device_number: i64,
    pub nic_id: String,
    /// The primary first.
    pub private_ips: Vec<String>,
    #[serde(default)]
    pub public_ips: Vec<String>,
    #[serde(default)]
    pub group_ids: Vec<String>,
    /// (subnet ID, its range); None in the public cloud.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<(String, String)>,
    /// (Net ID, its range); None in the public cloud.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net: Option<(String, String)>,
}

/// A snapshot's file as a host keeps it (its qcow2, encrypted under the
/// snapshot's key): what a copy to another host must match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SnapshotFile {
    pub size: u64,
    /// Hex.
    pub sha256: String,
}

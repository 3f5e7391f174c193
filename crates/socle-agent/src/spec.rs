//! What the agent itself works with: VMs and volumes described by files of
//! this host. The agent protocol names platform images instead
//! (`socle_agent_api::PlatformImage`); `host.rs` turns names into these
//! files, and the agent's own Rust API (and its tests) take files directly.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use socle_agent_api::{PlatformImage, VolumeKey};

/// What a VM boots from: a base disk, and optionally a kernel (+ initramfs)
/// that QEMU loads directly.
///
/// * Direct kernel boot (`kernel` is `Some`): QEMU gets `-kernel`, `-initrd`
///   and `-append`; the disk is only a disk.
/// * Full-disk boot (`kernel` is `None`): the firmware (SeaBIOS) boots the
///   root disk's own boot loader, as with a cloud image; the kernel command
///   line is the one in the disk's boot loader configuration
///   (`VmSpec::kernel_cmdline` does not apply).
///
/// Old `spec.json` files, written when both fields were mandatory, read as
/// direct kernel boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageFiles {
    /// bzImage passed to `-kernel`; `None`: boot the root disk through the BIOS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<PathBuf>,
    /// initramfs passed to `-initrd` (only with a kernel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd: Option<PathBuf>,
    /// Base disk (qcow2 or raw); each VM's root disk is an overlay backed by
    /// it, or a root volume copied from it. For full-disk boot it holds the
    /// partition table, boot loader, kernel and initramfs.
    pub disk: PathBuf,
    /// The platform image these are the files of (None: files a caller of
    /// the Rust API gave, or a `spec.json` older than platform names).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<PlatformImage>,
}

impl ImageFiles {
    /// Direct kernel boot.
    pub fn direct_kernel(kernel: impl Into<PathBuf>, initrd: Option<PathBuf>, disk: impl Into<PathBuf>) -> ImageFiles {
        ImageFiles { kernel: Some(kernel.into()), initrd, disk: disk.into(), platform: None }
    }

    /// Full-disk boot: the BIOS boots `disk`'s boot loader.
    pub fn full_disk(disk: impl Into<PathBuf>) -> ImageFiles {
        ImageFiles { kernel: None, initrd: None, disk: disk.into(), platform: None }
    }

    /// True when the firmware boots the root disk (no `-kernel`).
    pub fn boots_from_disk(&self) -> bool {
        self.kernel.is_none()
    }
}

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmSpec {
    /// e.g. "i-0a1b2c3d"; 1-64 characters from [A-Za-z0-9._-].
    pub vm_id: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub image: ImageFiles,
    /// Handed to the guest through fw_cfg as `opt/socle/user-data`.
    pub user_data: Option<Vec<u8>>,
    /// Extra kernel arguments (default "quiet no_timer_check"); `console=ttyS0` is always first.
    /// Direct kernel boot only: a full-disk image (`image.kernel` None) boots
    /// with the command line of its own boot loader configuration.
    pub kernel_cmdline: Option<String>,
}

/// What a VM boots from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootDisk {
    /// A qcow2 overlay on the image's base disk, inside the VM directory
    /// (deleted with the VM).
    Overlay,
    /// An existing volume of this host (encrypted; its key is given to
    /// `start_vm`). It survives the VM.
    Volume(String),
}

/// Where a new volume's data comes from.
#[derive(Debug, Clone)]
pub enum VolumeSource {
    /// A full copy of a snapshot of this host, opened with the snapshot's own key.
    Snapshot { snapshot_id: String, key: VolumeKey },
    /// A full copy of an image's base disk (qcow2 or raw, no backing file),
    /// e.g. `ImageFiles::disk`, to make a root volume.
    Image { disk: PathBuf },
}

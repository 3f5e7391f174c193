//! The "socle-tiny" guest image: a Debian cloud kernel, a busybox initramfs
//! and an empty base qcow2 disk.
//!
//! Everything comes from Debian packages fetched with `apt-get download` and
//! unpacked with `dpkg-deb -x`, so nothing is installed on the host:
//!   * kernel: the `linux-image-*-cloud-amd64` package that the metapackage
//!     `linux-image-cloud-amd64` depends on (bzImage + the few modules we need);
//!   * userland: the static busybox binary of `busybox-static`.
//!
//! The initramfs is written by [`crate::cpio`] (deterministic, no root needed).
//! Builds happen in a temporary directory inside the cache and are renamed into
//! place, so concurrent builders (threads or processes) never see half an
//! image; the loser of the race discards its copy. The cache directory name is
//! a hash of this recipe (guest scripts, module list, recipe version): a
//! complete directory is reused as is, without asking apt anything.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::process::Command;

use crate::cpio::CpioWriter;
use crate::error::AgentError;
use crate::spec::ImageFiles;
use crate::util::set_mode;
use crate::util::{fnv1a64, run};

/// Bump when the build procedure changes in a way the hash below cannot see.
const RECIPE_VERSION: &str = "socle-tiny/2";
const KERNEL_METAPACKAGE: &str = "linux-image-cloud-amd64";
const BUSYBOX_PACKAGE: &str = "busybox-static";
/// Virtual size of the empty base disk.
const BASE_DISK_SIZE: &str = "1G";

// ----- the full-disk variant (booted by the BIOS, as a cloud image is) -----
//
// Layout: an MBR (syslinux's mbr.bin boot code + one active partition), a
// FAT16 partition holding SYSLINUX (ldlinux.sys/ldlinux.c32), its
// configuration, the kernel and the initramfs, and free space up to 1 GiB.
// Everything is written into a plain file with mkfs.vfat --offset, mtools and
// `syslinux --offset` (no loop device, no mount, no root), then converted to
// qcow2. The boot loader ships inside the guest disk, not in our binaries.

/// Virtual size of the full disk (the same as the empty base disk).
const FULL_DISK_BYTES: u64 = 1 << 30;
/// First sector of the boot partition (1 MiB alignment, like every partitioner).
const BOOT_PART_START_LBA: u64 = 2048;
/// Size of the boot partition.
const BOOT_PART_BYTES: u64 = 64 << 20;
/// MBR partition type: FAT16 with LBA addressing.
const BOOT_PART_TYPE: u8 = 0x0e;
/// FAT volume label and serial (fixed, so two builds differ only in timestamps).
const BOOT_FS_LABEL: &str = "SOCLEBOOT";
const BOOT_FS_SERIAL: &str = "50C1E7A9";
/// File name of the full disk in the image directory.
const FULL_DISK_FILE: &str = "full-disk.qcow2";
/// Where Debian (and other distributions) put syslinux's MBR boot code.
const MBR_BIN_CANDIDATES: &[&str] = &[
    "/usr/lib/syslinux/mbr/mbr.bin",
    "/usr/lib/SYSLINUX/mbr.bin",
    "/usr/share/syslinux/mbr.bin",
    "/usr/lib/syslinux/bios/mbr.bin",
];
/// How to get the full-disk tools.
pub(crate) const FULL_DISK_TOOLS_HINT: &str = " (the full-disk socle-tiny image needs the Debian packages syslinux, syslinux-common, mtools and dosfstools: run scripts/install-deps.sh)";

/// SYSLINUX configuration of the full disk: boot at once, same kernel command
/// line as a direct-kernel boot with the default arguments.
fn syslinux_cfg() -> String {
    format!(
        "# socle-tiny full disk (written by the Socle image builder)\n\
         SERIAL 0 115200\n\
         DEFAULT socle\n\
         PROMPT 0\n\
         TIMEOUT 0\n\
         LABEL socle\n\
         \x20 KERNEL /vmlinuz\n\
         \x20 INITRD /initrd.img\n\
         \x20 APPEND console=ttyS0 {}\n",
        crate::DEFAULT_CMDLINE_EXTRA
    )
}

const GUEST_INIT: &str = include_str!("guest/init.sh");
const GUEST_INITTAB: &str = include_str!("guest/inittab");
const GUEST_RCS: &str = include_str!("guest/rcS.sh");
const GUEST_RCK: &str = include_str!("guest/rcK.sh");
const GUEST_POWER_BUTTON: &str = include_str!("guest/power-button.sh");
const GUEST_DISKS: &str = include_str!("guest/socle-disks.sh");
const GUEST_NET: &str = include_str!("guest/socle-net.sh");

/// Modules the guest loads (their dependencies are added automatically and
/// ordered first). `true` = required: the build fails if the kernel has it
/// neither as a module nor built in.
const MODULES: &[(&str, bool)] = &[
    ("virtio_pci", true),   // virtio transport (pulls virtio_ring, virtio, ...)
    ("virtio_blk", true),   // root disk
    ("button", true),       // ACPI power button -> input event
    ("evdev", true),        // /dev/input/event* for acpid
    ("qemu_fw_cfg", false), // /sys/firmware/qemu_fw_cfg: vm-id and user-data
    ("virtio_net", true),   // NICs
];

/// The files of one socle-tiny build (both boot modes share the kernel and
/// initramfs).
#[derive(Debug, Clone)]
pub(crate) struct TinyFiles {
    pub(crate) kernel: PathBuf,
    pub(crate) initrd: PathBuf,
    /// Empty base disk of the direct-kernel image.
    pub(crate) disk: PathBuf,
}

impl TinyFiles {
    pub(crate) fn direct(&self) -> ImageFiles {
        ImageFiles::direct_kernel(&self.kernel, Some(self.initrd.clone()), &self.disk)
    }
}

/// Written last into a finished image directory; its presence means "complete".
#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    name: String,
    recipe: String,
    kernel_package: String,
    kernel_package_version: String,
    kernel_release: String,
    busybox_package_version: String,
    modules: Vec<String>,
    built_in_seconds: f64,
}

/// Name of the cache directory for the current recipe.
fn cache_key() -> String {
    let mut parts: Vec<&[u8]> = vec![
        RECIPE_VERSION.as_bytes(),
        GUEST_INIT.as_bytes(),
        GUEST_INITTAB.as_bytes(),
        GUEST_RCS.as_bytes(),
        GUEST_RCK.as_bytes(),
        GUEST_POWER_BUTTON.as_bytes(),
        GUEST_DISKS.as_bytes(),
        GUEST_NET.as_bytes(),
        BASE_DISK_SIZE.as_bytes(),
    ];
    let layout = format!(
        "{FULL_DISK_BYTES}/{BOOT_PART_START_LBA}/{BOOT_PART_BYTES}/{BOOT_PART_TYPE}/{BOOT_FS_LABEL}/{BOOT_FS_SERIAL}/{FULL_DISK_FILE}"
    );
    let cfg = syslinux_cfg();
    parts.push(layout.as_bytes());
    parts.push(cfg.as_bytes());
    let mods: Vec<String> = MODULES.iter().map(|(m, r)| format!("{m}:{r}")).collect();
    for m in &mods {
        parts.push(m.as_bytes());
    }
    format!("socle-tiny-{:016x}", fnv1a64(&parts))
}

fn files_in(dir: &Path) -> TinyFiles {
    TinyFiles {
        kernel: dir.join("vmlinuz"),
        initrd: dir.join("initrd.cpio"),
        disk: dir.join("base.qcow2"),
    }
}

fn complete(dir: &Path) -> Option<TinyFiles> {
    let f = files_in(dir);
    (dir.join("manifest.json").is_file()
        && f.kernel.is_file()
        && f.initrd.is_file()
        && f.disk.is_file())
    .then_some(f)
}

/// Returns the cached socle-tiny image, building it first if needed.
pub(crate) async fn build_or_reuse(
    cache_dir: &Path,
    deb_cache: &Path,
    qemu_img: &Path,
) -> Result<TinyFiles, AgentError> {
    let final_dir = cache_dir.join(cache_key());
    if let Some(files) = complete(&final_dir) {
        return Ok(files);
    }
    std::fs::create_dir_all(cache_dir)
        .map_err(|e| AgentError::io("cannot create the image cache directory", cache_dir, e))?;
    let started = Instant::now();
    tracing::info!(dir = %final_dir.display(), "building the socle-tiny guest image");
    let tmp = tempfile::Builder::new()
        .prefix(".build-")
        .tempdir_in(cache_dir)
        .map_err(|e| AgentError::io("cannot create a build directory in", cache_dir, e))?;
    let out = tmp.path().join("out");
    build_into(tmp.path(), &out, deb_cache, qemu_img, started).await?;
    match std::fs::rename(&out, &final_dir) {
        Ok(()) => {}
        Err(e) => {
            // Someone else finished first: use their copy (ours goes with `tmp`).
            if complete(&final_dir).is_none() {
                return Err(AgentError::io(
                    "cannot move the finished image to",
                    &final_dir,
                    e,
                ));
            }
        }
    }
    tracing::info!(dir = %final_dir.display(), secs = started.elapsed().as_secs_f64(), "socle-tiny image ready");
    complete(&final_dir).ok_or_else(|| {
        AgentError::Image(format!(
            "{} is incomplete after the build",
            final_dir.display()
        ))
    })
}

async fn build_into(
    work: &Path,
    out: &Path,
    deb_cache: &Path,
    qemu_img: &Path,
    started: Instant,
) -> Result<(), AgentError> {
    let debs = work.join("debs");
    for d in [&debs, out] {
        std::fs::create_dir_all(d).map_err(|e| AgentError::io("cannot create", d, e))?;
    }

    // 1. Which versioned kernel package does the cloud metapackage point at?
    let kernel_pkg = resolve_kernel_package().await?;

    // 2. Fetch both packages (no install) and unpack them.
    fetch_debs(&[&kernel_pkg, BUSYBOX_PACKAGE], &debs, deb_cache).await?;
    let kernel_deb = find_deb(&debs, &kernel_pkg)?;
    let busybox_deb = find_deb(&debs, BUSYBOX_PACKAGE)?;
    let kroot = work.join("kernel");
    let broot = work.join("busybox");
    for (deb, dir) in [(&kernel_deb, &kroot), (&busybox_deb, &broot)] {
        let mut cmd = Command::new("dpkg-deb");
        cmd.arg("-x").arg(deb).arg(dir);
        run(cmd, Duration::from_secs(300)).await?;
    }
    let kernel_version = deb_field(&kernel_deb, "Version").await?;
    let busybox_version = deb_field(&busybox_deb, "Version").await?;

    // 3. Assemble kernel + initramfs (blocking file work).
    let out2 = out.to_path_buf();
    let (kernel_release, modules) =
        tokio::task::spawn_blocking(move || assemble(&kroot, &broot, &out2))
            .await
            .map_err(|e| AgentError::Image(format!("image assembly task failed: {e}")))??;

    // 4. The empty base disk.
    let disk = out.join("base.qcow2");
    let mut cmd = Command::new(qemu_img);
    cmd.args(["create", "-q", "-f", "qcow2"])
        .arg(&disk)
        .arg(BASE_DISK_SIZE);
    run(cmd, Duration::from_secs(60)).await?;

    // Read-only: VMs only ever read these (their writes go to their overlay).
    for f in ["vmlinuz", "initrd.cpio", "base.qcow2"] {
        set_mode(&out.join(f), 0o444)?;
    }
    let manifest = Manifest {
        name: "socle-tiny".into(),
        recipe: cache_key(),
        kernel_package: kernel_pkg,
        kernel_package_version: kernel_version,
        kernel_release,
        busybox_package_version: busybox_version,
        modules,
        built_in_seconds: started.elapsed().as_secs_f64(),
    };
    let json = serde_json::to_vec_pretty(&manifest).expect("manifest serializes");
    let path = out.join("manifest.json");
    std::fs::write(&path, json).map_err(|e| AgentError::io("cannot write", &path, e))?;
    Ok(())
}

/// Written next to the full disk before it is renamed into place.
#[derive(Debug, Serialize, Deserialize)]
struct FullDiskManifest {
    recipe: String,
    bootloader: String,
    partition_start_lba: u64,
    partition_bytes: u64,
    partition_type: u8,
    syslinux_cfg: String,
    virtual_size: u64,
    built_in_seconds: f64,
}

/// Returns the cached full-disk socle-tiny (building the image, then the
/// disk, if needed): a qcow2 with an MBR, SYSLINUX and a FAT partition
/// holding the same kernel and initramfs as the direct-kernel image.
pub(crate) async fn full_disk_or_build(
    cache_dir: &Path,
    deb_cache: &Path,
    qemu_img: &Path,
) -> Result<PathBuf, AgentError> {
    let files = build_or_reuse(cache_dir, deb_cache, qemu_img).await?;
    let dir = files
        .kernel
        .parent()
        .expect("image files live in a directory")
        .to_path_buf();
    let disk = dir.join(FULL_DISK_FILE);
    if disk.is_file() {
        return Ok(disk);
    }
    let started = Instant::now();
    tracing::info!(disk = %disk.display(), "building the full-disk socle-tiny image");
    let tmp = tempfile::Builder::new()
        .prefix(".build-disk-")
        .tempdir_in(cache_dir)
        .map_err(|e| AgentError::io("cannot create a build directory in", cache_dir, e))?;
    let built = tmp.path().join(FULL_DISK_FILE);
    let manifest = build_full_disk(tmp.path(), &files, &built, qemu_img, started).await?;
    let mpath = dir.join("full-disk.json");
    crate::util::write_atomic(
        &mpath,
        &serde_json::to_vec_pretty(&manifest).expect("manifest serializes"),
    )?;
    set_mode(&built, 0o444)?;
    // rename(2) replaces atomically: a concurrent builder's identical disk is
    // overwritten by ours, never seen half-made.
    std::fs::rename(&built, &disk)
        .map_err(|e| AgentError::io("cannot move the finished full disk to", &disk, e))?;
    tracing::info!(disk = %disk.display(), secs = started.elapsed().as_secs_f64(), "full-disk socle-tiny image ready");
    Ok(disk)
}

async fn build_full_disk(
    work: &Path,
    files: &TinyFiles,
    out: &Path,
    qemu_img: &Path,
    started: Instant,
) -> Result<FullDiskManifest, AgentError> {
    let raw = work.join("disk.raw");
    let offset = BOOT_PART_START_LBA * 512;
    // 1. A sparse raw file of the final size.
    std::fs::File::create(&raw)
        .and_then(|f| f.set_len(FULL_DISK_BYTES))
        .map_err(|e| AgentError::io("cannot create", &raw, e))?;
    // 2. The FAT16 file system of the boot partition, written in place.
    let mut cmd = Command::new(sbin_tool("mkfs.vfat"));
    cmd.args([
        "--invariant",
        "-F",
        "16",
        "-n",
        BOOT_FS_LABEL,
        "-i",
        BOOT_FS_SERIAL,
    ])
    .arg(format!("--offset={BOOT_PART_START_LBA}"))
    .arg("-h")
    .arg(BOOT_PART_START_LBA.to_string())
    .arg(&raw)
    .arg((BOOT_PART_BYTES / 1024).to_string());
    run(cmd, Duration::from_secs(60)).await?;
    // 3. Kernel, initramfs and boot loader configuration (mtools: no mount).
    let cfg = work.join("syslinux.cfg");
    std::fs::write(&cfg, syslinux_cfg()).map_err(|e| AgentError::io("cannot write", &cfg, e))?;
    let target = format!("{}@@{offset}", raw.display());
    for (src, name) in [
        (&files.kernel, "vmlinuz"),
        (&files.initrd, "initrd.img"),
        (&cfg, "syslinux.cfg"),
    ] {
        let mut cmd = mtools("mcopy");
        cmd.arg("-i").arg(&target).arg(src).arg(format!("::{name}"));
        run(cmd, Duration::from_secs(120)).await?;
    }
    // 4. SYSLINUX's boot sector and ldlinux.sys/ldlinux.c32 (it uses mtools).
    let mut cmd = mtools("syslinux");
    cmd.arg("--offset")
        .arg(offset.to_string())
        .arg("--install")
        .arg(&raw);
    run(cmd, Duration::from_secs(120)).await?;
    let mut cmd = Command::new("syslinux");
    cmd.arg("--version");
    let bootloader = match run(cmd, Duration::from_secs(30)).await {
        Ok(o) => {
            let text = [o.stdout, o.stderr].concat();
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("syslinux")
                .trim()
                .to_string()
        }
        Err(_) => "syslinux".to_string(),
    };
    // 5. The MBR: boot code that chain-loads the active partition, and the
    //    partition table.
    let mbr_code = read_mbr_bin()?;
    write_mbr(&raw, &mbr_code)?;
    // 6. qcow2 (zero clusters are not stored: a few MiB for 1 GiB).
    let mut cmd = Command::new(qemu_img);
    cmd.args(["convert", "-q", "-f", "raw", "-O", "qcow2"])
        .arg(&raw)
        .arg(out);
    run(cmd, Duration::from_secs(300)).await?;
    crate::util::remove_file_quiet(&raw);
    Ok(FullDiskManifest {
        recipe: cache_key(),
        bootloader,
        partition_start_lba: BOOT_PART_START_LBA,
        partition_bytes: BOOT_PART_BYTES,
        partition_type: BOOT_PART_TYPE,
        syslinux_cfg: syslinux_cfg(),
        virtual_size: FULL_DISK_BYTES,
        built_in_seconds: started.elapsed().as_secs_f64(),
    })
}

/// `name` from PATH, else from /usr/sbin or /sbin (not in a non-root PATH).
fn sbin_tool(name: &str) -> PathBuf {
    let in_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false);
    if !in_path {
        for d in ["/usr/sbin", "/sbin"] {
            let p = Path::new(d).join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    PathBuf::from(name)
}

/// An mtools-based command that ignores any user mtools configuration and
/// does not insist on a floppy-like geometry.
fn mtools(program: &str) -> Command {
    let mut cmd = Command::new(program);
    cmd.env("MTOOLSRC", "/dev/null")
        .env("MTOOLS_SKIP_CHECK", "1");
    cmd
}

fn read_mbr_bin() -> Result<Vec<u8>, AgentError> {
    for c in MBR_BIN_CANDIDATES {
        if let Ok(data) = std::fs::read(c) {
            if data.is_empty() || data.len() > 440 {
                return Err(AgentError::Image(format!(
                    "{c} is {} bytes; MBR boot code must be 1-440 bytes",
                    data.len()
                )));
            }
            return Ok(data);
        }
    }
    Err(AgentError::Image(format!(
        "no SYSLINUX MBR boot code (mbr.bin) in {}{FULL_DISK_TOOLS_HINT}",
        MBR_BIN_CANDIDATES.join(", ")
    )))
}

/// Sector 0: `code` (≤ 440 bytes), then one active partition entry covering
/// the boot partition (LBA only: CHS fields saturated), then 0x55AA.
fn mbr_sector(code: &[u8]) -> [u8; 512] {
    let mut s = [0u8; 512];
    s[..code.len()].copy_from_slice(code);
    let e = &mut s[446..462];
    e[0] = 0x80; // active
    e[1..4].copy_from_slice(&[0xfe, 0xff, 0xff]);
    e[4] = BOOT_PART_TYPE;
    e[5..8].copy_from_slice(&[0xfe, 0xff, 0xff]);
    e[8..12].copy_from_slice(&(BOOT_PART_START_LBA as u32).to_le_bytes());
    e[12..16].copy_from_slice(&((BOOT_PART_BYTES / 512) as u32).to_le_bytes());
    s[510] = 0x55;
    s[511] = 0xaa;
    s
}

fn write_mbr(raw: &Path, code: &[u8]) -> Result<(), AgentError> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(raw)
        .map_err(|e| AgentError::io("cannot open", raw, e))?;
    f.write_all_at(&mbr_sector(code), 0)
        .map_err(|e| AgentError::io("cannot write the MBR of", raw, e))
}

/// Puts the candidate versions of `packages` into `debs`: from `cache` when
/// it holds them (same file name, so same version), else downloaded with
/// `apt-get download` and then kept in `cache`. A rebuild of an image (a new
/// cache, a test from a clean cache) so needs no network.
async fn fetch_debs(packages: &[&str], debs: &Path, cache: &Path) -> Result<(), AgentError> {
    let apt_error = |e: AgentError| AgentError::AptDownload { packages: packages.join(" and "), detail: e.to_string() };
    // `--print-uris` names the files without downloading: 'URI' FILE SIZE HASH.
    let mut cmd = Command::new("apt-get");
    cmd.args(["download", "--print-uris"]).args(packages).current_dir(debs);
    let out = run(cmd, Duration::from_secs(120)).await.map_err(apt_error)?;
    let files: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|f| f.ends_with(".deb") && !f.contains('/'))
        .map(str::to_string)
        .collect();
    if files.len() == packages.len() && files.iter().all(|f| cache.join(f).is_file()) {
        for f in &files {
            std::fs::copy(cache.join(f), debs.join(f)).map_err(|e| AgentError::io("cannot copy", &cache.join(f), e))?;
        }
        tracing::info!(cache = %cache.display(), "image packages taken from the cache");
        return Ok(());
    }
    let mut cmd = Command::new("apt-get");
    cmd.arg("download").args(packages).current_dir(debs);
    run(cmd, Duration::from_secs(600)).await.map_err(apt_error)?;
    // Kept for the next build; a failure to keep them only costs a download.
    if std::fs::create_dir_all(cache).is_ok() {
        for f in &files {
            let tmp = cache.join(format!(".{f}.part"));
            if std::fs::copy(debs.join(f), &tmp).is_ok() {
                let _ = std::fs::rename(&tmp, cache.join(f));
            }
        }
    }
    Ok(())
}

async fn resolve_kernel_package() -> Result<String, AgentError> {
    let mut cmd = Command::new("apt-cache");
    cmd.arg("depends").arg(KERNEL_METAPACKAGE);
    let out = run(cmd, Duration::from_secs(120))
        .await
        .map_err(|e| AgentError::AptDownload {
            packages: KERNEL_METAPACKAGE.into(),
            detail: e.to_string(),
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter_map(|l| l.trim().trim_start_matches('|').strip_prefix("Depends:"))
        .map(str::trim)
        .find(|p| {
            p.strip_prefix("linux-image-")
                .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
        })
        .map(str::to_string)
        .ok_or_else(|| AgentError::AptDownload {
            packages: KERNEL_METAPACKAGE.into(),
            detail: format!(
                "`apt-cache depends {KERNEL_METAPACKAGE}` names no linux-image-<version>-cloud-amd64 package (is the package list empty?); output: {}",
                text.trim()
            ),
        })
}

fn find_deb(dir: &Path, package: &str) -> Result<PathBuf, AgentError> {
    let prefix = format!("{package}_");
    let rd = std::fs::read_dir(dir).map_err(|e| AgentError::io("cannot list", dir, e))?;
    for entry in rd.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&prefix) && name.ends_with(".deb") {
            return Ok(entry.path());
        }
    }
    Err(AgentError::AptDownload {
        packages: package.into(),
        detail: format!(
            "apt-get download succeeded but left no {prefix}*.deb in {}",
            dir.display()
        ),
    })
}

async fn deb_field(deb: &Path, field: &str) -> Result<String, AgentError> {
    let mut cmd = Command::new("dpkg-deb");
    cmd.arg("-f").arg(deb).arg(field);
    let out = run(cmd, Duration::from_secs(60)).await?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}


/// Copies the kernel and writes the initramfs into `out`.
/// Returns the kernel release and the module load order.
fn assemble(kroot: &Path, broot: &Path, out: &Path) -> Result<(String, Vec<String>), AgentError> {
    // Kernel: the package holds exactly one boot/vmlinuz-<release>.
    let boot = kroot.join("boot");
    let rd = std::fs::read_dir(&boot)
        .map_err(|e| AgentError::io("kernel package has no boot directory:", &boot, e))?;
    let mut vmlinuz = None;
    for entry in rd.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(rel) = name.strip_prefix("vmlinuz-") {
            vmlinuz = Some((entry.path(), rel.to_string()));
        }
    }
    let (vmlinuz, release) =
        vmlinuz.ok_or_else(|| AgentError::Image(format!("no vmlinuz-* in {}", boot.display())))?;
    let kernel_dst = out.join("vmlinuz");
    std::fs::copy(&vmlinuz, &kernel_dst)
        .map_err(|e| AgentError::io("cannot copy the kernel to", &kernel_dst, e))?;

    // Modules: index the tree, then resolve dependencies.
    let moddir = kroot.join("lib/modules").join(&release);
    let mut index = HashMap::new();
    index_modules(&moddir.join("kernel"), &mut index)?;
    let builtin = read_builtin(&moddir.join("modules.builtin"));
    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    for (name, required) in MODULES {
        if index.contains_key(*name) {
            add_with_deps(name, &index, &builtin, &mut seen, &mut order)?;
        } else if builtin.contains(*name) {
            tracing::debug!(module = name, "built into the kernel");
        } else if *required {
            return Err(AgentError::Image(format!(
                "kernel {release} has module {name} neither as a .ko under {} nor built in",
                moddir.display()
            )));
        } else {
            tracing::warn!(module = name, kernel = %release, "optional module not available; the guest will run without it");
        }
    }

    let busybox_path = broot.join("bin/busybox");
    let busybox = std::fs::read(&busybox_path)
        .map_err(|e| AgentError::io("busybox-static package has no usable", &busybox_path, e))?;

    let mut w = CpioWriter::new();
    for d in [
        "bin",
        "dev",
        "etc",
        "etc/init.d",
        "etc/acpi",
        "etc/acpi/PWRF",
        "lib",
        "lib/modules",
        "proc",
        "run",
        "sys",
        "var",
        "var/log",
    ] {
        w.dir(d, 0o755);
    }
    w.dir("root", 0o700);
    w.dir("tmp", 0o1777);
    // The kernel opens /dev/console for PID 1 before anything is mounted.
    w.char_dev("dev/console", 0o600, 5, 1);
    w.file("bin/busybox", 0o755, &busybox);
    w.symlink("bin/sh", "busybox");
    w.file("bin/socle-disks", 0o755, GUEST_DISKS.as_bytes());
    w.file("bin/socle-net", 0o755, GUEST_NET.as_bytes());
    w.file("init", 0o755, GUEST_INIT.as_bytes());
    w.file("etc/inittab", 0o644, GUEST_INITTAB.as_bytes());
    w.file("etc/init.d/rcS", 0o755, GUEST_RCS.as_bytes());
    w.file("etc/init.d/rcK", 0o755, GUEST_RCK.as_bytes());
    // busybox acpid maps KEY_POWER to "PWRF/00000080" under its config dir.
    w.file(
        "etc/acpi/PWRF/00000080",
        0o755,
        GUEST_POWER_BUTTON.as_bytes(),
    );
    let mut list = String::new();
    for m in &order {
        let src = &index[m.as_str()];
        let data = std::fs::read(src).map_err(|e| AgentError::io("cannot read module", src, e))?;
        w.file(&format!("lib/modules/{m}.ko"), 0o644, &data);
        list.push_str(m);
        list.push('\n');
    }
    w.file("etc/socle-modules", 0o644, list.as_bytes());
    w.file(
        "etc/socle-release",
        0o644,
        format!("socle-tiny {} kernel {release}\n", cache_key()).as_bytes(),
    );
    let initrd = out.join("initrd.cpio");
    std::fs::write(&initrd, w.finish()).map_err(|e| AgentError::io("cannot write", &initrd, e))?;
    Ok((release, order))
}

/// Maps module name (dashes normalised to underscores) → .ko path.
fn index_modules(dir: &Path, index: &mut HashMap<String, PathBuf>) -> Result<(), AgentError> {
    let rd = std::fs::read_dir(dir)
        .map_err(|e| AgentError::io("cannot list kernel modules in", dir, e))?;
    for entry in rd.flatten() {
        let path = entry.path();
        let ft = entry
            .file_type()
            .map_err(|e| AgentError::io("cannot stat", &path, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if ft.is_dir() {
            index_modules(&path, index)?;
        } else if let Some(stem) = name.strip_suffix(".ko") {
            index.insert(stem.replace('-', "_"), path);
        } else if name.contains(".ko.") {
            // .ko.xz / .ko.zst: busybox insmod cannot load them; say so if one is needed.
            let stem = name
                .split(".ko.")
                .next()
                .unwrap_or_default()
                .replace('-', "_");
            index.entry(stem).or_insert(path);
        }
    }
    Ok(())
}

fn read_builtin(path: &Path) -> BTreeSet<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.rsplit('/').next())
        .filter_map(|f| f.strip_suffix(".ko"))
        .map(|s| s.replace('-', "_"))
        .collect()
}

/// Depth-first: dependencies land in `order` before the module itself.
fn add_with_deps(
    name: &str,
    index: &HashMap<String, PathBuf>,
    builtin: &BTreeSet<String>,
    seen: &mut BTreeSet<String>,
    order: &mut Vec<String>,
) -> Result<(), AgentError> {
    if !seen.insert(name.to_string()) {
        return Ok(());
    }
    let Some(path) = index.get(name) else {
        if builtin.contains(name) {
            return Ok(());
        }
        return Err(AgentError::Image(format!(
            "module dependency {name} not found in the kernel package"
        )));
    };
    if path.extension().is_some_and(|e| e != "ko") {
        return Err(AgentError::Image(format!(
            "module {} is compressed; the socle-tiny initramfs needs plain .ko files",
            path.display()
        )));
    }
    let data = std::fs::read(path).map_err(|e| AgentError::io("cannot read module", path, e))?;
    for dep in module_depends(&data) {
        add_with_deps(&dep, index, builtin, seen, order)?;
    }
    order.push(name.to_string());
    Ok(())
}

/// The `depends=a,b` entry of a module's .modinfo section.
fn module_depends(ko: &[u8]) -> Vec<String> {
    const KEY: &[u8] = b"\0depends=";
    let Some(pos) = ko.windows(KEY.len()).position(|w| w == KEY) else {
        return Vec::new();
    };
    let rest = &ko[pos + KEY.len()..];
    let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
    String::from_utf8_lossy(&rest[..end])
        .split(',')
        .map(|s| s.trim().replace('-', "_"))
        .filter(|s| !s.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depends_parsing() {
        let ko = b"junk\0license=GPL\0depends=virtio_ring,virtio\0name=x\0";
        assert_eq!(module_depends(ko), vec!["virtio_ring", "virtio"]);
        assert!(module_depends(b"\0depends=\0").is_empty());
        assert!(module_depends(b"nothing").is_empty());
    }

    #[test]
    fn mbr_layout() {
        let s = mbr_sector(&[0xfa; 440]);
        assert_eq!(&s[..440], &[0xfa; 440][..]);
        assert_eq!(s[446], 0x80);
        assert_eq!(s[450], 0x0e);
        assert_eq!(u32::from_le_bytes(s[454..458].try_into().unwrap()), 2048);
        assert_eq!(
            u32::from_le_bytes(s[458..462].try_into().unwrap()),
            (64 << 20) / 512
        );
        assert_eq!(&s[462..510], &[0u8; 48][..]);
        assert_eq!(&s[510..], &[0x55, 0xaa]);
        const { assert!(BOOT_PART_START_LBA * 512 + BOOT_PART_BYTES <= FULL_DISK_BYTES) };
    }

    #[test]
    fn syslinux_cfg_has_the_serial_console() {
        let cfg = syslinux_cfg();
        assert!(cfg.contains("APPEND console=ttyS0 quiet"), "{cfg}");
        assert!(cfg.contains("KERNEL /vmlinuz"));
        assert!(cfg.contains("INITRD /initrd.img"));
    }

    #[test]
    fn cache_key_is_stable_within_a_build() {
        assert_eq!(cache_key(), cache_key());
        assert!(cache_key().starts_with("socle-tiny-"));
    }
}

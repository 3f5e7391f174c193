//! Block storage: encrypted volume files, hot-plug into running VMs with I/O
//! limits, point-in-time snapshots.
//!
//! Files (under the agent state dir):
//!
//! | path                          | what                                                  |
//! |-------------------------------|-------------------------------------------------------|
//! | `volumes/<vol-id>.qcow2`      | a volume: standalone qcow2, LUKS-encrypted (aes-256-xts) |
//! | `snapshots/<snap-id>.qcow2`   | a snapshot: standalone qcow2, encrypted under its own key |
//! | `volumes/.<id>.qcow2.tmp`     | a volume being made (renamed into place when complete) |
//!
//! Which VM uses which volume is recorded only in that VM's `spec.json` (its
//! root volume and its linked volumes): one source of truth, so a crash can
//! never leave two records that disagree. Keys are never stored (see
//! [`crate::secret`]).
//!
//! Inside QEMU every volume is the same chain of named nodes, whether it was
//! on the command line at start or hot-plugged through QMP:
//!
//! ```text
//! secret sec-V ─┐
//! file f-V ── qcow2 q-V (LUKS, key-secret=sec-V) ── throttle t-V (group tg-V) ── virtio-blk-pci disk-V (serial=V)
//! ```
//!
//! The throttle node is always there (unlimited until limits are set), so
//! limits change at run time with a `qom-set` on the group. Snapshots of a
//! running VM's volume read `q-V` (not throttled) with `blockdev-backup`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;
use tokio::process::Command;

use crate::error::{tail_text, AgentError, WRONG_KEY_TEXT};
use crate::qmp::Qmp;
use crate::secret::SecretFds;
use crate::util::{qemu_opt, remove_file_quiet, render, run};
use crate::spec::VolumeSource;
use crate::{Agent, StoredSpec};
use socle_agent_api::{BlockJobProgress, IoLimits, LinkedVolume, SnapshotInfo, VolumeAttachment, VolumeInfo, VolumeKey};

/// Longest volume id: the id is the disk's virtio-blk serial, which holds 20 bytes.
pub const MAX_VOLUME_ID_LEN: usize = 20;
/// Longest snapshot id (QEMU node names derived from it must stay under 32 bytes).
pub const MAX_SNAPSHOT_ID_LEN: usize = 24;
/// Largest volume (16 TiB).
pub const MAX_VOLUME_GIB: u64 = 16 * 1024;
/// How long `unlink_volume` waits for the guest to release the device.
pub const UNLINK_TIMEOUT: Duration = Duration::from_secs(30);

/// PBKDF2 time of the LUKS key slots (see `secret.rs` for why this is sound).
const LUKS_ITER_TIME_MS: u32 = 10;
/// qemu-img benchmarks PBKDF2 with the thread CPU clock before creating a LUKS
/// header and fails ("Unable to get accurate CPU usage") when a short sample
/// reads 0 ms, which happens on coarse clocks; it is simply retried.
const LUKS_CREATE_ATTEMPTS: usize = 10;
const LUKS_CLOCK_FLAKE: &str = "Unable to get accurate CPU usage";
/// PCI slot of a data volume = this + the index of its device letter (b=1 … z=25).
const FIRST_VOLUME_SLOT: u8 = 5;
/// Poll period of block jobs and of device removal.
const POLL: Duration = Duration::from_millis(200);

/// How the agent applies [`IoLimits`]: checked against QEMU's rules, and
/// as QEMU's `ThrottleLimits`.
pub(crate) trait IoLimitsExt {
    fn validate(&self) -> Result<(), AgentError>;
    fn to_qemu(self) -> Value;
}

impl IoLimitsExt for IoLimits {
    fn validate(&self) -> Result<(), AgentError> {
        const MAX: u64 = 1_000_000_000_000_000; // QEMU's THROTTLE_VALUE_MAX
        if (self.iops_total != 0 && (self.iops_read != 0 || self.iops_write != 0))
            || (self.bps_total != 0 && (self.bps_read != 0 || self.bps_write != 0))
        {
            return Err(AgentError::InvalidArgument(format!(
                "I/O limits {self:?}: a total limit cannot be combined with read/write limits of the same kind"
            )));
        }
        for v in [
            self.iops_total,
            self.iops_read,
            self.iops_write,
            self.bps_total,
            self.bps_read,
            self.bps_write,
            self.iops_size,
        ] {
            if v > MAX {
                return Err(AgentError::InvalidArgument(format!(
                    "I/O limit {v} is above QEMU's maximum {MAX}"
                )));
            }
        }
        Ok(())
    }

    /// QEMU `ThrottleLimits`.
    fn to_qemu(self) -> Value {
        json!({
            "iops-total": self.iops_total,
            "iops-read": self.iops_read,
            "iops-write": self.iops_write,
            "bps-total": self.bps_total,
            "bps-read": self.bps_read,
            "bps-write": self.bps_write,
            "iops-size": self.iops_size,
        })
    }
}

/// A data volume as recorded in the VM's spec.json.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct VolumeLink {
    pub(crate) volume_id: String,
    pub(crate) device_name: String,
    /// PCI slot on bus 0 (from the device name): the guest enumerates linked
    /// volumes present at boot in device-name order.
    pub(crate) slot: u8,
    #[serde(default)]
    pub(crate) limits: IoLimits,
}

/// QEMU object, node and device names of one volume.
struct Names {
    secret: String,
    file: String,
    fmt: String,
    group: String,
    throttle: String,
    device: String,
}

impl Names {
    fn of(volume_id: &str) -> Names {
        Names {
            secret: format!("sec-{volume_id}"),
            file: format!("f-{volume_id}"),
            fmt: format!("q-{volume_id}"),
            group: format!("tg-{volume_id}"),
            throttle: format!("t-{volume_id}"),
            device: format!("disk-{volume_id}"),
        }
    }

    fn file_node(&self, path: &Path) -> Value {
        json!({
            "driver": "file",
            "filename": path.to_string_lossy(),
            "node-name": self.file,
            "discard": "unmap",
        })
    }

    fn qcow2_node(&self) -> Value {
        json!({
            "driver": "qcow2",
            "file": self.file,
            "node-name": self.fmt,
            "encrypt": { "format": "luks", "key-secret": self.secret },
            "discard": "unmap",
        })
    }

    fn throttle_group(&self, limits: &IoLimits) -> Value {
        json!({ "qom-type": "throttle-group", "id": self.group, "limits": limits.to_qemu() })
    }

    fn throttle_node(&self) -> Value {
        json!({
            "driver": "throttle",
            "file": self.fmt,
            "throttle-group": self.group,
            "node-name": self.throttle,
        })
    }

    /// `slot` None: let QEMU pick (the root disk, first on the command line).
    fn device(&self, volume_id: &str, slot: Option<u8>) -> Value {
        let mut d = json!({
            "driver": "virtio-blk-pci",
            "id": self.device,
            "drive": self.throttle,
            "serial": volume_id,
        });
        if let Some(slot) = slot {
            d["bus"] = json!("pci.0");
            d["addr"] = json!(format!("0x{slot:x}"));
        }
        d
    }
}

/// Snapshot job names inside QEMU.
struct SnapNames {
    secret: String,
    file: String,
    fmt: String,
    job: String,
}

impl SnapNames {
    fn of(snapshot_id: &str) -> SnapNames {
        SnapNames {
            secret: format!("ssec-{snapshot_id}"),
            file: format!("snf-{snapshot_id}"),
            fmt: format!("sn-{snapshot_id}"),
            job: format!("bk-{snapshot_id}"),
        }
    }
}

fn validate_id(kind: &'static str, id: &str, max: usize) -> Result<(), AgentError> {
    let ok = !id.is_empty()
        && id.len() <= max
        && id.as_bytes()[0].is_ascii_alphanumeric()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(AgentError::InvalidId {
            kind,
            id: id.to_string(),
            rule: if kind == "volume" {
                "expected 1-20 characters from [A-Za-z0-9._-] starting with a letter or digit (it becomes the disk's 20-byte virtio serial)"
            } else {
                "expected 1-24 characters from [A-Za-z0-9._-] starting with a letter or digit"
            },
        })
    }
}

pub(crate) fn validate_volume_id(id: &str) -> Result<(), AgentError> {
    validate_id("volume", id, MAX_VOLUME_ID_LEN)
}

pub(crate) fn validate_snapshot_id(id: &str) -> Result<(), AgentError> {
    validate_id("snapshot", id, MAX_SNAPSHOT_ID_LEN)
}

/// "/dev/xvdb", "/dev/sdc", "vdd", "xvdz" → PCI slot. Letter "a" is the root disk.
pub(crate) fn device_slot(device_name: &str) -> Result<u8, AgentError> {
    let bad = || {
        AgentError::InvalidArgument(format!(
            "device name {device_name:?}: expected /dev/xvdX, /dev/sdX or /dev/vdX with X in b-z (a is the root disk)"
        ))
    };
    let name = device_name.strip_prefix("/dev/").unwrap_or(device_name);
    let letter = ["xvd", "sd", "vd", "hd"]
        .iter()
        .find_map(|p| name.strip_prefix(p))
        .ok_or_else(bad)?;
    let [l] = letter.as_bytes() else {
        return Err(bad());
    };
    if !(b'b'..=b'z').contains(l) {
        return Err(bad());
    }
    Ok(FIRST_VOLUME_SLOT + (l - b'a'))
}

pub(crate) fn gib(n: u64) -> u64 {
    n << 30
}

fn validate_gib(size_gib: u64) -> Result<(), AgentError> {
    if !(1..=MAX_VOLUME_GIB).contains(&size_gib) {
        return Err(AgentError::InvalidArgument(format!(
            "volume size {size_gib} GiB: expected 1-{MAX_VOLUME_GIB} GiB"
        )));
    }
    Ok(())
}

/// Turns "the key opens no key slot" into `WrongKey`.
fn key_error(e: AgentError, what: impl FnOnce() -> String) -> AgentError {
    match &e {
        AgentError::Command { stderr, .. } if stderr.contains(WRONG_KEY_TEXT) => {
            AgentError::WrongKey {
                what: what(),
                detail: String::new(),
            }
        }
        _ => e,
    }
}

fn is_wrong_key_qmp(detail: &str) -> bool {
    detail.contains(WRONG_KEY_TEXT)
}

/// fsync a file, then its directory (after a rename into it).
pub(crate) fn sync_path(path: &Path) -> Result<(), AgentError> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| AgentError::io("cannot fsync", path, e))
}

pub(crate) fn sync_dir_of(path: &Path) {
    if let Some(dir) = path.parent() {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
}

/// A `json:` source for qemu-img: format driver `format` on the local file
/// `path`, never a protocol guessed from the name (a ':' in it), and for
/// qcow2 never the backing file named in the header.
pub(crate) fn plain_source(path: &Path, format: &str) -> String {
    let mut v = json!({
        "driver": format,
        "file": { "driver": "file", "filename": path.to_string_lossy() },
    });
    if format == "qcow2" {
        v["backing"] = Value::Null;
    }
    format!("json:{v}")
}

/// `--image-opts` of an encrypted qcow2.
fn encrypted_opts(path: &Path, secret_id: &str) -> String {
    format!(
        "driver=qcow2,file.filename={},encrypt.key-secret={secret_id}",
        qemu_opt(&path.to_string_lossy())
    )
}

impl Agent {
    // ----- paths, locks, lookups -----------------------------------------

    fn volumes_dir(&self) -> PathBuf {
        self.inner.cfg.state_dir.join("volumes")
    }

    pub(crate) fn snapshots_dir(&self) -> PathBuf {
        self.inner.cfg.state_dir.join("snapshots")
    }

    /// The file of a volume (whether it exists or not).
    pub fn volume_path(&self, volume_id: &str) -> PathBuf {
        self.volumes_dir().join(format!("{volume_id}.qcow2"))
    }

    /// The file of a snapshot (whether it exists or not).
    pub fn snapshot_path(&self, snapshot_id: &str) -> PathBuf {
        self.snapshots_dir().join(format!("{snapshot_id}.qcow2"))
    }

    pub(crate) async fn lock_volume(&self, volume_id: &str) -> tokio::sync::OwnedMutexGuard<()> {
        // VM ids cannot contain '/': no clash with the VM locks of the same map.
        self.lock_vm(&format!("volume/{volume_id}")).await
    }

    pub(crate) async fn lock_snapshot(
        &self,
        snapshot_id: &str,
    ) -> tokio::sync::OwnedMutexGuard<()> {
        self.lock_vm(&format!("snapshot/{snapshot_id}")).await
    }

    /// Removes `.<id>.qcow2.tmp` files (copies a dead agent never finished).
    pub(crate) fn remove_stale_temporaries(&self) {
        for dir in [self.volumes_dir(), self.snapshots_dir()] {
            let Ok(rd) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') && name.ends_with(".qcow2.tmp") {
                    tracing::info!(file = %e.path().display(), "removing an unfinished copy");
                    remove_file_quiet(&e.path());
                }
            }
        }
    }

    /// Drops the lock entry of a deleted volume or snapshot (as `destroy_vm`
    /// does for VMs), so the map does not grow forever.
    fn forget_lock(&self, key: &str) {
        self.inner
            .locks
            .lock()
            .expect("lock map poisoned")
            .remove(key);
    }

    /// Every VM whose spec uses the volume: (vm id, None for root / Some(link)).
    fn volume_users(
        &self,
        volume_id: &str,
    ) -> Result<Vec<(String, Option<VolumeLink>)>, AgentError> {
        let mut users = Vec::new();
        for vm in self.list_vm_dirs()? {
            let spec = match self.load_spec(&vm) {
                Ok(s) => s,
                Err(_) => continue, // a VM dir without a (valid) spec uses nothing
            };
            if spec.root_volume.as_deref() == Some(volume_id) {
                users.push((vm.clone(), None));
            }
            if let Some(l) = spec.volumes.iter().find(|l| l.volume_id == volume_id) {
                users.push((vm, Some(l.clone())));
            }
        }
        Ok(users)
    }

    pub(crate) fn attachment_of(
        &self,
        volume_id: &str,
    ) -> Result<Option<VolumeAttachment>, AgentError> {
        let users = self.volume_users(volume_id)?;
        Ok(users.into_iter().next().map(|(vm_id, link)| {
            let limits = match &link {
                Some(l) => l.limits,
                None => self
                    .load_spec(&vm_id)
                    .map(|s| s.root_limits)
                    .unwrap_or_default(),
            };
            VolumeAttachment {
                vm_id,
                device_name: link.map(|l| l.device_name),
                limits,
            }
        }))
    }

    // ----- qemu-img -------------------------------------------------------

    fn qemu_img(&self) -> Command {
        Command::new(&self.inner.cfg.qemu_img_binary)
    }

    /// `qemu-img info -U` (no key needed: the LUKS header is not opened).
    async fn image_info(&self, path: &Path) -> Result<Value, AgentError> {
        let mut cmd = self.qemu_img();
        cmd.args(["info", "-U", "--output=json"]).arg(path);
        let out = run(cmd, Duration::from_secs(60)).await?;
        serde_json::from_slice(&out.stdout).map_err(|e| AgentError::Corrupt {
            path: path.to_path_buf(),
            detail: format!("qemu-img info printed no JSON: {e}"),
        })
    }

    /// Opens the image with `key` (a tiny `qemu-img map`): Ok or `WrongKey`.
    pub(crate) async fn check_key(
        &self,
        path: &Path,
        key: &VolumeKey,
        what: &str,
    ) -> Result<(), AgentError> {
        let mut secrets = SecretFds::new();
        let file = secrets.add(key)?;
        let mut cmd = self.qemu_img();
        cmd.args([
            "map",
            "-U",
            "--output=json",
            "--max-length",
            "65536",
            "--object",
        ])
        .arg(format!("secret,id=k0,file={file}"))
        .arg("--image-opts")
        .arg(encrypted_opts(path, "k0"));
        secrets.pass_to(&mut cmd);
        run(cmd, Duration::from_secs(60))
            .await
            .map(|_| ())
            .map_err(|e| key_error(e, || what.to_string()))
    }

    /// Creates an empty encrypted qcow2 of `size_bytes` at `path` (which must not exist).
    pub(crate) async fn create_encrypted(
        &self,
        path: &Path,
        size_bytes: u64,
        key: &VolumeKey,
    ) -> Result<(), AgentError> {
        let mut last = None;
        for attempt in 1..=LUKS_CREATE_ATTEMPTS {
            remove_file_quiet(path);
            let mut secrets = SecretFds::new();
            let file = secrets.add(key)?;
            let mut cmd = self.qemu_img();
            cmd.args(["create", "-q", "-f", "qcow2", "--object"])
                .arg(format!("secret,id=k0,file={file}"))
                .arg("-o")
                .arg(format!(
                    "encrypt.format=luks,encrypt.key-secret=k0,encrypt.cipher-alg=aes-256,\
                     encrypt.cipher-mode=xts,encrypt.ivgen-alg=plain64,encrypt.hash-alg=sha256,\
                     encrypt.iter-time={LUKS_ITER_TIME_MS}"
                ))
                .arg(path)
                .arg(size_bytes.to_string());
            secrets.pass_to(&mut cmd);
            match run(cmd, Duration::from_secs(120)).await {
                Ok(_) => return Ok(()),
                Err(AgentError::Command {
                    stderr,
                    command,
                    status,
                }) if stderr.contains(LUKS_CLOCK_FLAKE) => {
                    tracing::debug!(attempt, path = %path.display(), "qemu-img PBKDF2 benchmark read a 0 ms sample; retrying");
                    last = Some(AgentError::Command {
                        stderr,
                        command,
                        status,
                    });
                }
                Err(e) => {
                    remove_file_quiet(path);
                    return Err(e);
                }
            }
        }
        remove_file_quiet(path);
        Err(last.expect("at least one attempt"))
    }

    /// Full copy of `src` into the existing (empty, large enough) encrypted
    /// `dst`. `src_key` None: an unencrypted image of format `src_format`
    /// ("raw" or "qcow2"), opened as a local file with that driver only and
    /// never its backing file (see [`plain_source`]).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn copy_into(
        &self,
        src: &Path,
        src_format: &str,
        src_key: Option<&VolumeKey>,
        dst: &Path,
        dst_key: &VolumeKey,
        total: u64,
        on_progress: &(dyn Fn(BlockJobProgress) + Send + Sync),
    ) -> Result<(), AgentError> {
        let mut secrets = SecretFds::new();
        let mut cmd = self.qemu_img();
        // -W: out-of-order writes (parallel encryption; the target is fresh).
        cmd.args(["convert", "-p", "-W"]);
        if let Some(k) = src_key {
            let f = secrets.add(k)?;
            cmd.arg("--object").arg(format!("secret,id=src0,file={f}"));
        }
        let f = secrets.add(dst_key)?;
        cmd.arg("--object").arg(format!("secret,id=dst0,file={f}"));
        match src_key {
            Some(_) => {
                cmd.arg("--image-opts").arg(encrypted_opts(src, "src0"));
            }
            None => {
                cmd.arg(plain_source(src, src_format));
            }
        }
        // -n: write into the target made by create_encrypted (which carries
        // the LUKS parameters); it is known to read as zeros.
        cmd.args(["-n", "--target-is-zero", "--target-image-opts"])
            .arg(encrypted_opts(dst, "dst0"));
        secrets.pass_to(&mut cmd);
        // Generous: a 1 TiB copy at 50 MB/s takes ~6 h.
        let timeout = Duration::from_secs(600 + total / (50 << 20));
        run_with_progress(cmd, timeout, |pct| {
            on_progress(BlockJobProgress {
                done: (total as f64 * pct / 100.0) as u64,
                total,
            })
        })
        .await
    }

    fn virtual_size(info: &Value, path: &Path) -> Result<u64, AgentError> {
        info.get("virtual-size")
            .and_then(Value::as_u64)
            .ok_or_else(|| AgentError::Corrupt {
                path: path.to_path_buf(),
                detail: format!("qemu-img info reports no virtual-size: {info}"),
            })
    }

    // ----- volumes --------------------------------------------------------

    /// Creates `volumes/<id>.qcow2`: a qcow2 encrypted with LUKS (aes-256-xts,
    /// plain64, sha256, 10 ms PBKDF2) under `key`. Empty, or a full copy of
    /// `source` (a snapshot, opened with its own key, or an image's base
    /// disk); `size_gib` 0 with a source means "the source's size". Built
    /// under a temporary name and renamed: never a half-made volume.
    /// Idempotent: an existing volume of the same size (opened by `key`) is Ok.
    pub async fn create_volume(
        &self,
        volume_id: &str,
        size_gib: u64,
        key: &VolumeKey,
        source: Option<VolumeSource>,
    ) -> Result<VolumeInfo, AgentError> {
        validate_volume_id(volume_id)?;
        if size_gib != 0 || source.is_none() {
            validate_gib(size_gib)?;
        }
        if let Some(VolumeSource::Snapshot { snapshot_id, .. }) = &source {
            validate_snapshot_id(snapshot_id)?;
        }
        let _g = self.lock_volume(volume_id).await;
        let path = self.volume_path(volume_id);
        let what = format!("volume {volume_id}");
        if path.is_file() {
            let info = self.volume_info_unlocked(volume_id).await?;
            if size_gib != 0 && info.size_bytes != gib(size_gib) {
                return Err(AgentError::VolumeConflict {
                    volume_id: volume_id.into(),
                    what: format!(
                        "already exists with {} bytes, not {size_gib} GiB",
                        info.size_bytes
                    ),
                });
            }
            self.check_key(&path, key, &what).await?;
            return Ok(info);
        }
        let dir = self.volumes_dir();
        std::fs::create_dir_all(&dir)
            .map_err(|e| AgentError::io("cannot create the volumes directory", &dir, e))?;
        let tmp = dir.join(format!(".{volume_id}.qcow2.tmp"));
        let started = Instant::now();
        let res = self
            .fill_new_volume(&tmp, volume_id, size_gib, key, source.as_ref())
            .await;
        if let Err(e) = res {
            remove_file_quiet(&tmp);
            return Err(e);
        }
        sync_path(&tmp)?;
        std::fs::rename(&tmp, &path)
            .map_err(|e| AgentError::io("cannot rename the new volume to", &path, e))?;
        sync_dir_of(&path);
        let info = self.volume_info_unlocked(volume_id).await?;
        tracing::info!(volume = volume_id, size = info.size_bytes, secs = started.elapsed().as_secs_f64(), from = ?source.as_ref().map(source_name), "volume created");
        Ok(info)
    }

    async fn fill_new_volume(
        &self,
        tmp: &Path,
        volume_id: &str,
        size_gib: u64,
        key: &VolumeKey,
        source: Option<&VolumeSource>,
    ) -> Result<(), AgentError> {
        let (src, src_format, src_key, src_size) = match source {
            None => return self.create_encrypted(tmp, gib(size_gib), key).await,
            Some(VolumeSource::Snapshot {
                snapshot_id,
                key: skey,
            }) => {
                let spath = self.snapshot_path(snapshot_id);
                if !spath.is_file() {
                    return Err(AgentError::SnapshotNotFound(snapshot_id.clone()));
                }
                // Fail on a wrong snapshot key before paying for the new header.
                self.check_key(&spath, skey, &format!("snapshot {snapshot_id}"))
                    .await?;
                let info = self.image_info(&spath).await?;
                let size = Self::virtual_size(&info, &spath)?;
                (spath, "qcow2".to_string(), Some(skey), size)
            }
            Some(VolumeSource::Image { disk }) => {
                let info = self.image_info(disk).await?;
                let format = info
                    .get("format")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                if format != "qcow2" && format != "raw" {
                    return Err(AgentError::InvalidArgument(format!(
                        "image disk {}: format {format:?} is not supported (qcow2 or raw)",
                        disk.display()
                    )));
                }
                if info.get("backing-filename").is_some() {
                    return Err(AgentError::InvalidArgument(format!(
                        "image disk {} has a backing file; flatten it first",
                        disk.display()
                    )));
                }
                if info.get("encrypted").and_then(Value::as_bool) == Some(true) {
                    return Err(AgentError::InvalidArgument(format!(
                        "image disk {} is encrypted; only plain images can be a volume source",
                        disk.display()
                    )));
                }
                let size = Self::virtual_size(&info, disk)?;
                (disk.clone(), format, None, size)
            }
        };
        let size = if size_gib == 0 {
            src_size.div_ceil(1 << 30).max(1) << 30
        } else {
            gib(size_gib)
        };
        if size < src_size {
            return Err(AgentError::InvalidArgument(format!(
                "volume {volume_id}: {size_gib} GiB is smaller than its source ({src_size} bytes)"
            )));
        }
        self.create_encrypted(tmp, size, key).await?;
        self.copy_into(&src, &src_format, src_key, tmp, key, src_size, &|_| {})
            .await
            .map_err(|e| {
                key_error(e, || match source {
                    Some(VolumeSource::Snapshot { snapshot_id, .. }) => {
                        format!("snapshot {snapshot_id}")
                    }
                    _ => format!("volume {volume_id}"),
                })
            })
    }

    async fn volume_info_unlocked(&self, volume_id: &str) -> Result<VolumeInfo, AgentError> {
        let path = self.volume_path(volume_id);
        if !path.is_file() {
            return Err(AgentError::VolumeNotFound(volume_id.into()));
        }
        let info = self.image_info(&path).await?;
        Ok(VolumeInfo {
            volume_id: volume_id.into(),
            size_bytes: Self::virtual_size(&info, &path)?,
            allocated_bytes: info.get("actual-size").and_then(Value::as_u64).unwrap_or(0),
            encrypted: info
                .get("encrypted")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            attachment: self.attachment_of(volume_id)?,
            path,
        })
    }

    /// Size, allocation and attachment of a volume (no key needed).
    pub async fn volume_info(&self, volume_id: &str) -> Result<VolumeInfo, AgentError> {
        validate_volume_id(volume_id)?;
        self.volume_info_unlocked(volume_id).await
    }

    /// Ids of the volumes on this host, sorted.
    pub async fn list_volumes(&self) -> Result<Vec<String>, AgentError> {
        list_ids(&self.volumes_dir(), validate_volume_id)
    }

    /// Grows a volume to `new_size_gib` (shrinking is refused; the same size
    /// is Ok). Online (QMP `block_resize`, the guest sees the new capacity at
    /// once) when it is used by a running VM, else offline with qemu-img and
    /// `key`.
    pub async fn resize_volume(
        &self,
        volume_id: &str,
        new_size_gib: u64,
        key: &VolumeKey,
    ) -> Result<VolumeInfo, AgentError> {
        validate_volume_id(volume_id)?;
        validate_gib(new_size_gib)?;
        let _vg = self.lock_volume(volume_id).await;
        let cur = self.volume_info_unlocked(volume_id).await?;
        let new = gib(new_size_gib);
        if new < cur.size_bytes {
            return Err(AgentError::VolumeConflict {
                volume_id: volume_id.into(),
                what: format!(
                    "cannot shrink it from {} to {new} bytes (volumes only grow)",
                    cur.size_bytes
                ),
            });
        }
        if new == cur.size_bytes {
            return Ok(cur);
        }
        let owner = cur.attachment.as_ref().map(|a| a.vm_id.clone());
        let _g = match &owner {
            Some(vm) => Some(self.lock_vm(vm).await),
            None => None,
        };
        match owner.filter(|vm| self.running_pid(vm).is_some()) {
            Some(vm) => {
                let mut q = self.qmp(&vm).await?;
                q.call(
                    "block_resize",
                    // The top node: resizing below a filter would not reach the
                    // device (the guest would not see the new capacity).
                    json!({ "node-name": Names::of(volume_id).throttle, "size": new }),
                )
                .await
                .map_err(|d| self.qmp_err(&vm, d))?;
                tracing::info!(volume = volume_id, vm = %vm, size = new, "volume resized online");
            }
            None => {
                let path = self.volume_path(volume_id);
                let mut secrets = SecretFds::new();
                let f = secrets.add(key)?;
                let mut cmd = self.qemu_img();
                cmd.args(["resize", "-q", "--object"])
                    .arg(format!("secret,id=k0,file={f}"))
                    .arg("--image-opts")
                    .arg(encrypted_opts(&path, "k0"))
                    .arg(new.to_string());
                secrets.pass_to(&mut cmd);
                run(cmd, Duration::from_secs(120))
                    .await
                    .map_err(|e| key_error(e, || format!("volume {volume_id}")))?;
                sync_path(&path)?;
                tracing::info!(volume = volume_id, size = new, "volume resized offline");
            }
        }
        self.volume_info_unlocked(volume_id).await
    }

    /// Deletes a volume file. Refused while a VM uses it (unlink it, or
    /// destroy the VM whose root disk it is, first). Idempotent.
    pub async fn delete_volume(&self, volume_id: &str) -> Result<(), AgentError> {
        validate_volume_id(volume_id)?;
        let _vg = self.lock_volume(volume_id).await;
        if let Some(a) = self.attachment_of(volume_id)? {
            return Err(AgentError::VolumeConflict {
                volume_id: volume_id.into(),
                what: match a.device_name {
                    Some(d) => format!("is linked to VM {} as {d}; unlink it first", a.vm_id),
                    None => format!("is the root disk of VM {}; destroy the VM first", a.vm_id),
                },
            });
        }
        let path = self.volume_path(volume_id);
        match std::fs::remove_file(&path) {
            Ok(()) => {
                sync_dir_of(&path);
                self.forget_lock(&format!("volume/{volume_id}"));
                tracing::info!(volume = volume_id, "volume deleted");
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(AgentError::io("cannot delete", &path, e)),
        }
    }

    // ----- linking --------------------------------------------------------

    /// Links a volume to a VM as `device_name` (`/dev/xvdb` … `/dev/xvdz`, or
    /// sdX/vdX) with I/O `limits`. A running VM gets it hot-plugged at once
    /// (QMP: secret, file + qcow2 nodes, throttle group + node,
    /// virtio-blk-pci with serial = volume id); a stopped one at its next
    /// start. The link is recorded in the VM's spec, so it survives restarts
    /// (`start_vm_with` then needs the key). The key is checked now either way.
    /// Idempotent: linking the same volume again as the same device is Ok (the
    /// limits are updated).
    pub async fn link_volume(
        &self,
        vm_id: &str,
        volume_id: &str,
        key: &VolumeKey,
        device_name: &str,
        limits: IoLimits,
    ) -> Result<(), AgentError> {
        crate::validate_vm_id(vm_id)?;
        validate_volume_id(volume_id)?;
        limits.validate()?;
        let slot = device_slot(device_name)?;
        let _vg = self.lock_volume(volume_id).await;
        let path = self.volume_path(volume_id);
        if !path.is_file() {
            return Err(AgentError::VolumeNotFound(volume_id.into()));
        }
        for (other, link) in self.volume_users(volume_id)? {
            match link {
                None => {
                    return Err(AgentError::VolumeConflict {
                        volume_id: volume_id.into(),
                        what: format!("is the root disk of VM {other}"),
                    })
                }
                Some(l) if other != vm_id || l.device_name != device_name => {
                    return Err(AgentError::VolumeConflict {
                        volume_id: volume_id.into(),
                        what: format!("is already linked to VM {other} as {}", l.device_name),
                    })
                }
                Some(_) => {}
            }
        }
        self.existing_vm_dir(vm_id)?;
        let _g = self.lock_vm(vm_id).await;
        let mut spec = self.load_spec(vm_id)?;
        if let Some(other) = spec
            .volumes
            .iter()
            .find(|l| l.slot == slot && l.volume_id != volume_id)
        {
            return Err(AgentError::VolumeConflict {
                volume_id: volume_id.into(),
                what: format!(
                    "VM {vm_id} already has volume {} as {}",
                    other.volume_id, other.device_name
                ),
            });
        }
        let link = VolumeLink {
            volume_id: volume_id.into(),
            device_name: device_name.into(),
            slot,
            limits,
        };
        if self.running_pid(vm_id).is_some() {
            self.plug(vm_id, &link, &path, key).await?;
            // Already plugged (a repeated call): apply the limits asked now.
            self.apply_limits(vm_id, volume_id, &limits).await?;
        } else {
            self.check_key(&path, key, &format!("volume {volume_id}"))
                .await?;
        }
        spec.volumes.retain(|l| l.volume_id != volume_id);
        spec.volumes.push(link);
        spec.volumes.sort_by_key(|l| l.slot);
        self.save_spec(&spec)?;
        tracing::info!(
            vm = vm_id,
            volume = volume_id,
            device = device_name,
            ?limits,
            "volume linked"
        );
        Ok(())
    }

    /// Unlinks a data volume. On a running VM: `device_del`, then waits (up to
    /// 30 s) until the guest has released the device (DEVICE_DELETED), then
    /// removes its nodes and secret from QEMU; on timeout the volume stays
    /// linked (retry later). Idempotent: a volume not linked to the VM is Ok.
    pub async fn unlink_volume(&self, vm_id: &str, volume_id: &str) -> Result<(), AgentError> {
        crate::validate_vm_id(vm_id)?;
        validate_volume_id(volume_id)?;
        let _vg = self.lock_volume(volume_id).await;
        let _g = self.lock_vm(vm_id).await;
        let mut spec = match self.load_spec(vm_id) {
            Ok(s) => s,
            Err(AgentError::VmNotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        if spec.root_volume.as_deref() == Some(volume_id) {
            return Err(AgentError::VolumeConflict {
                volume_id: volume_id.into(),
                what: format!("is the root disk of VM {vm_id}; it cannot be unlinked"),
            });
        }
        if !spec.volumes.iter().any(|l| l.volume_id == volume_id) {
            return Ok(());
        }
        if self.running_pid(vm_id).is_some() {
            self.unplug(vm_id, volume_id, UNLINK_TIMEOUT).await?;
        }
        spec.volumes.retain(|l| l.volume_id != volume_id);
        self.save_spec(&spec)?;
        tracing::info!(vm = vm_id, volume = volume_id, "volume unlinked");
        Ok(())
    }

    /// Changes the I/O limits of a linked volume (root or data), live on a
    /// running VM. The agent keeps limits only for linked volumes: for an
    /// unlinked one this is a no-op (give the limits to `link_volume`).
    pub async fn set_volume_limits(
        &self,
        volume_id: &str,
        limits: IoLimits,
    ) -> Result<(), AgentError> {
        validate_volume_id(volume_id)?;
        limits.validate()?;
        let _vg = self.lock_volume(volume_id).await;
        let Some(att) = self.attachment_of(volume_id)? else {
            return Ok(());
        };
        let vm_id = att.vm_id;
        let _g = self.lock_vm(&vm_id).await;
        let mut spec = self.load_spec(&vm_id)?;
        if spec.root_volume.as_deref() == Some(volume_id) {
            spec.root_limits = limits;
        }
        for l in spec.volumes.iter_mut().filter(|l| l.volume_id == volume_id) {
            l.limits = limits;
        }
        if self.running_pid(&vm_id).is_some() {
            self.apply_limits(&vm_id, volume_id, &limits).await?;
        }
        self.save_spec(&spec)?;
        tracing::info!(vm = %vm_id, volume = volume_id, ?limits, "volume limits set");
        Ok(())
    }

    /// The data volumes linked to a VM, in device order.
    pub async fn vm_volumes(&self, vm_id: &str) -> Result<Vec<LinkedVolume>, AgentError> {
        let spec = self.load_spec(vm_id)?;
        Ok(spec
            .volumes
            .into_iter()
            .map(|l| LinkedVolume {
                volume_id: l.volume_id,
                device_name: l.device_name,
                limits: l.limits,
            })
            .collect())
    }

    /// The VM's root volume, if it boots from one (see [`RootDisk`]).
    pub async fn vm_root_volume(&self, vm_id: &str) -> Result<Option<String>, AgentError> {
        Ok(self.load_spec(vm_id)?.root_volume)
    }

    // ----- QEMU plumbing --------------------------------------------------

    /// Command-line arguments for the volumes of `spec` (root volume first,
    /// then data volumes), their keys handed over through `secrets`.
    pub(crate) fn volume_args(
        &self,
        spec: &StoredSpec,
        keys: &HashMap<String, VolumeKey>,
        secrets: &mut SecretFds,
    ) -> Result<(Vec<String>, Vec<String>), AgentError> {
        let mut one = |volume_id: &str, slot: Option<u8>, limits: &IoLimits| {
            let key = keys
                .get(volume_id)
                .ok_or_else(|| AgentError::MissingVolumeKey {
                    vm_id: spec.vm_id.clone(),
                    volume_id: volume_id.into(),
                })?;
            let path = self.volume_path(volume_id);
            if !path.is_file() {
                return Err(AgentError::QemuStart {
                    vm_id: spec.vm_id.clone(),
                    detail: format!("its volume {volume_id} ({}) does not exist", path.display()),
                    stderr: String::new(),
                });
            }
            let n = Names::of(volume_id);
            let file = secrets.add(key)?;
            let js = |v: Value| v.to_string();
            Ok::<_, AgentError>(vec![
                "-object".into(),
                js(json!({ "qom-type": "secret", "id": n.secret, "file": file })),
                "-blockdev".into(),
                js(n.file_node(&path)),
                "-blockdev".into(),
                js(n.qcow2_node()),
                "-object".into(),
                js(n.throttle_group(limits)),
                "-blockdev".into(),
                js(n.throttle_node()),
                "-device".into(),
                js(n.device(volume_id, slot)),
            ])
        };
        let root = match &spec.root_volume {
            Some(v) => {
                let mut args = one(v, None, &spec.root_limits)?;
                // Full-disk boot: the firmware boots this disk.
                if let Some(dev) = args.last_mut().filter(|_| spec.image.boots_from_disk()) {
                    let mut d: Value = serde_json::from_str(dev).expect("device JSON");
                    d["bootindex"] = json!(0);
                    *dev = d.to_string();
                }
                args
            }
            None => Vec::new(),
        };
        let mut data = Vec::new();
        for l in &spec.volumes {
            data.extend(one(&l.volume_id, Some(l.slot), &l.limits)?);
        }
        Ok((root, data))
    }

    /// Which of the spec's volumes a QEMU error names (it quotes the option).
    pub(crate) fn volume_named_in(spec: &StoredSpec, text: &str) -> Option<String> {
        spec.root_volume
            .iter()
            .chain(spec.volumes.iter().map(|l| &l.volume_id))
            .find(|v| {
                text.contains(&format!("\"q-{v}\"")) || text.contains(&format!("\"sec-{v}\""))
            })
            .cloned()
    }

    /// Hot-plugs a volume into the running VM (no-op if its device is there).
    async fn plug(
        &self,
        vm_id: &str,
        link: &VolumeLink,
        path: &Path,
        key: &VolumeKey,
    ) -> Result<(), AgentError> {
        let n = Names::of(&link.volume_id);
        let mut q = self.qmp(vm_id).await?;
        let present = self.qmp_state(vm_id, &mut q).await?;
        if present.devices.contains(&n.device) {
            return Ok(());
        }
        // Leftovers of an interrupted plug or unplug.
        self.remove_volume_nodes(vm_id, &mut q, &n, &present)
            .await?;
        let steps: Vec<(&str, Value)> = vec![
            (
                "object-add",
                json!({ "qom-type": "secret", "id": n.secret, "data": key.luks_passphrase() }),
            ),
            ("blockdev-add", n.file_node(path)),
            ("blockdev-add", n.qcow2_node()),
            ("object-add", n.throttle_group(&link.limits)),
            ("blockdev-add", n.throttle_node()),
            ("device_add", n.device(&link.volume_id, Some(link.slot))),
        ];
        for (cmd, args) in steps {
            if let Err(detail) = q.call(cmd, args).await {
                // Roll back what was added (fresh view of what is there).
                if let Ok(now) = self.qmp_state(vm_id, &mut q).await {
                    let _ = self.remove_volume_nodes(vm_id, &mut q, &n, &now).await;
                }
                return Err(if is_wrong_key_qmp(&detail) {
                    AgentError::WrongKey {
                        what: format!("volume {}", link.volume_id),
                        detail: String::new(),
                    }
                } else {
                    AgentError::BlockDevice {
                        vm_id: vm_id.into(),
                        volume_id: link.volume_id.clone(),
                        detail: format!("cannot hot-plug it: {detail}"),
                    }
                });
            }
        }
        tracing::info!(vm = vm_id, volume = %link.volume_id, slot = link.slot, "volume hot-plugged");
        Ok(())
    }

    /// Asks the guest to release the volume's device, waits until QEMU has
    /// deleted it, then removes its nodes and objects.
    async fn unplug(
        &self,
        vm_id: &str,
        volume_id: &str,
        timeout: Duration,
    ) -> Result<(), AgentError> {
        let n = Names::of(volume_id);
        let started = Instant::now();
        let mut q = self
            .release_device(vm_id, &n.device, &format!("volume {volume_id}"), timeout, |detail| AgentError::BlockDevice {
                vm_id: vm_id.into(),
                volume_id: volume_id.into(),
                detail,
            })
            .await?;
        let state = self.qmp_state(vm_id, &mut q).await?;
        self.remove_volume_nodes(vm_id, &mut q, &n, &state).await?;
        tracing::info!(
            vm = vm_id,
            volume = volume_id,
            secs = started.elapsed().as_secs_f64(),
            "volume hot-unplugged"
        );
        Ok(())
    }

    /// Sets the throttle group's limits of a plugged volume.
    async fn apply_limits(
        &self,
        vm_id: &str,
        volume_id: &str,
        limits: &IoLimits,
    ) -> Result<(), AgentError> {
        let n = Names::of(volume_id);
        let mut q = self.qmp(vm_id).await?;
        q.call(
            "qom-set",
            json!({ "path": format!("/objects/{}", n.group), "property": "limits", "value": limits.to_qemu() }),
        )
        .await
        .map_err(|d| AgentError::BlockDevice {
            vm_id: vm_id.into(),
            volume_id: volume_id.into(),
            detail: format!("cannot set its I/O limits: {d}"),
        })?;
        Ok(())
    }

    /// Names of the devices, objects and block nodes a QEMU has.
    async fn qmp_state(&self, vm_id: &str, q: &mut Qmp) -> Result<QemuState, AgentError> {
        let names = |v: Value, key: &str| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|e| e.get(key).and_then(Value::as_str).map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        let devices = q
            .call("qom-list", json!({ "path": "/machine/peripheral" }))
            .await
            .map_err(|d| self.qmp_err(vm_id, d))?;
        let objects = q
            .call("qom-list", json!({ "path": "/objects" }))
            .await
            .map_err(|d| self.qmp_err(vm_id, d))?;
        let nodes = q
            .call("query-named-block-nodes", json!({ "flat": true }))
            .await
            .map_err(|d| self.qmp_err(vm_id, d))?;
        Ok(QemuState {
            devices: names(devices, "name"),
            objects: names(objects, "name"),
            nodes: names(nodes, "node-name"),
        })
    }

    /// Removes whichever of the volume's nodes and objects exist (not its device).
    async fn remove_volume_nodes(
        &self,
        vm_id: &str,
        q: &mut Qmp,
        n: &Names,
        st: &QemuState,
    ) -> Result<(), AgentError> {
        let mut first_err = None;
        for (is_node, name) in [
            (true, &n.throttle),
            (false, &n.group),
            (true, &n.fmt),
            (true, &n.file),
            (false, &n.secret),
        ] {
            let (present, cmd, args) = if is_node {
                (
                    st.nodes.contains(name),
                    "blockdev-del",
                    json!({ "node-name": name }),
                )
            } else {
                (
                    st.objects.contains(name),
                    "object-del",
                    json!({ "id": name }),
                )
            };
            if present {
                if let Err(d) = q.call(cmd, args).await {
                    tracing::warn!(vm = vm_id, name = %name, error = %d, "cannot remove a volume node");
                    first_err.get_or_insert(d);
                }
            }
        }
        match first_err {
            None => Ok(()),
            Some(d) => Err(self.qmp_err(vm_id, d)),
        }
    }

    // ----- snapshots ------------------------------------------------------

    /// Takes a point-in-time snapshot of a volume into
    /// `snapshots/<snapshot_id>.qcow2`, a standalone qcow2 encrypted under
    /// `snap_key`. While a running VM uses the volume: QMP `blockdev-backup`
    /// (sync=full: copy-before-write makes it the state at the job's start,
    /// whatever the guest writes meanwhile), `key` is then not needed (QEMU has
    /// the volume open). Otherwise `qemu-img convert` with both keys.
    /// Idempotent: an existing snapshot (opened by `snap_key`) is returned.
    pub async fn snapshot_volume(
        &self,
        volume_id: &str,
        snapshot_id: &str,
        key: &VolumeKey,
        snap_key: &VolumeKey,
    ) -> Result<SnapshotInfo, AgentError> {
        self.snapshot_volume_with_progress(volume_id, snapshot_id, key, snap_key, |_| {})
            .await
    }

    /// [`Agent::snapshot_volume`] that reports the copy's progress to
    /// `on_progress` (also readable with [`Agent::snapshot_progress`]).
    pub async fn snapshot_volume_with_progress(
        &self,
        volume_id: &str,
        snapshot_id: &str,
        key: &VolumeKey,
        snap_key: &VolumeKey,
        on_progress: impl Fn(BlockJobProgress) + Send + Sync,
    ) -> Result<SnapshotInfo, AgentError> {
        validate_volume_id(volume_id)?;
        validate_snapshot_id(snapshot_id)?;
        let _vg = self.lock_volume(volume_id).await;
        let _sg = self.lock_snapshot(snapshot_id).await;
        let vpath = self.volume_path(volume_id);
        if !vpath.is_file() {
            return Err(AgentError::VolumeNotFound(volume_id.into()));
        }
        let fin = self.snapshot_path(snapshot_id);
        if fin.is_file() {
            self.check_key(&fin, snap_key, &format!("snapshot {snapshot_id}"))
                .await?;
            return self.snapshot_info(snapshot_id).await;
        }
        let dir = self.snapshots_dir();
        std::fs::create_dir_all(&dir)
            .map_err(|e| AgentError::io("cannot create the snapshots directory", &dir, e))?;
        let tmp = dir.join(format!(".{snapshot_id}.qcow2.tmp"));
        let started = Instant::now();
        let report = |p: BlockJobProgress| {
            self.inner
                .progress
                .lock()
                .expect("progress map poisoned")
                .insert(snapshot_id.to_string(), p);
            on_progress(p);
        };
        report(BlockJobProgress::default());
        let res = self
            .snapshot_into(volume_id, snapshot_id, &vpath, &tmp, key, snap_key, &report)
            .await;
        self.inner
            .progress
            .lock()
            .expect("progress map poisoned")
            .remove(snapshot_id);
        let online = match res {
            Ok(online) => online,
            Err(e) => {
                remove_file_quiet(&tmp);
                return Err(e);
            }
        };
        sync_path(&tmp)?;
        std::fs::rename(&tmp, &fin)
            .map_err(|e| AgentError::io("cannot rename the new snapshot to", &fin, e))?;
        sync_dir_of(&fin);
        let info = self.snapshot_info(snapshot_id).await?;
        tracing::info!(
            volume = volume_id,
            snapshot = snapshot_id,
            online,
            size = info.size_bytes,
            secs = started.elapsed().as_secs_f64(),
            "snapshot taken"
        );
        Ok(info)
    }

    /// Returns whether the copy was made online.
    #[allow(clippy::too_many_arguments)]
    async fn snapshot_into(
        &self,
        volume_id: &str,
        snapshot_id: &str,
        vpath: &Path,
        tmp: &Path,
        key: &VolumeKey,
        snap_key: &VolumeKey,
        report: &(dyn Fn(BlockJobProgress) + Send + Sync),
    ) -> Result<bool, AgentError> {
        remove_file_quiet(tmp);
        let owner = self.attachment_of(volume_id)?.map(|a| a.vm_id);
        let vm_guard = match &owner {
            Some(vm) => Some(self.lock_vm(vm).await),
            None => None,
        };
        if let Some(vm) = owner.filter(|vm| self.running_pid(vm).is_some()) {
            drop(vm_guard);
            self.snapshot_online(&vm, volume_id, snapshot_id, tmp, snap_key, report)
                .await?;
            return Ok(true);
        }
        // Offline; the VM lock (if any) keeps the VM from starting meanwhile.
        self.check_key(vpath, key, &format!("volume {volume_id}"))
            .await?;
        let size = Self::virtual_size(&self.image_info(vpath).await?, vpath)?;
        self.create_encrypted(tmp, size, snap_key).await?;
        self.copy_into(vpath, "qcow2", Some(key), tmp, snap_key, size, report)
            .await
            .map_err(|e| key_error(e, || format!("volume {volume_id}")))?;
        report(BlockJobProgress {
            done: size,
            total: size,
        });
        drop(vm_guard);
        Ok(false)
    }

    async fn snapshot_online(
        &self,
        vm_id: &str,
        volume_id: &str,
        snapshot_id: &str,
        tmp: &Path,
        snap_key: &VolumeKey,
        report: &(dyn Fn(BlockJobProgress) + Send + Sync),
    ) -> Result<(), AgentError> {
        let n = Names::of(volume_id);
        let s = SnapNames::of(snapshot_id);
        // The target must have exactly the source's size.
        let size = {
            let mut q = self.qmp(vm_id).await?;
            let nodes = q
                .call("query-named-block-nodes", json!({ "flat": true }))
                .await
                .map_err(|d| self.qmp_err(vm_id, d))?;
            nodes
                .as_array()
                .into_iter()
                .flatten()
                .find(|e| e.get("node-name").and_then(Value::as_str) == Some(n.fmt.as_str()))
                .and_then(|e| e.pointer("/image/virtual-size"))
                .and_then(Value::as_u64)
                .ok_or_else(|| AgentError::BlockDevice {
                    vm_id: vm_id.into(),
                    volume_id: volume_id.into(),
                    detail: format!("its node {} is not in the running QEMU", n.fmt),
                })?
        };
        self.create_encrypted(tmp, size, snap_key).await?;

        let start = async {
            let _g = self.lock_vm(vm_id).await;
            let mut q = self.qmp(vm_id).await?;
            self.snapshot_teardown(vm_id, &mut q, &s).await; // an earlier attempt's leftovers
            let steps: Vec<(&str, Value)> = vec![
                (
                    "object-add",
                    json!({ "qom-type": "secret", "id": s.secret, "data": snap_key.luks_passphrase() }),
                ),
                (
                    "blockdev-add",
                    json!({ "driver": "file", "filename": tmp.to_string_lossy(), "node-name": s.file }),
                ),
                (
                    "blockdev-add",
                    json!({
                        "driver": "qcow2", "file": s.file, "node-name": s.fmt,
                        "encrypt": { "format": "luks", "key-secret": s.secret },
                    }),
                ),
                (
                    "blockdev-backup",
                    json!({
                        "job-id": s.job, "device": n.fmt, "target": s.fmt, "sync": "full",
                        "auto-dismiss": false,
                    }),
                ),
            ];
            for (cmd, args) in steps {
                if let Err(d) = q.call(cmd, args).await {
                    self.snapshot_teardown(vm_id, &mut q, &s).await;
                    return Err(AgentError::BlockDevice {
                        vm_id: vm_id.into(),
                        volume_id: volume_id.into(),
                        detail: format!("cannot start the snapshot job: {d}"),
                    });
                }
            }
            Ok::<_, AgentError>(())
        };
        start.await?;
        tracing::info!(
            vm = vm_id,
            volume = volume_id,
            snapshot = snapshot_id,
            size,
            "blockdev-backup started"
        );

        // Poll on short connections (the monitor serves one client at a time;
        // others such as the health checks must get their turn). The job is
        // not auto-dismissed, so its end state and error stay visible.
        let outcome: Result<(), AgentError> = loop {
            tokio::time::sleep(POLL).await;
            if self.running_pid(vm_id).is_none() {
                break Err(AgentError::VmNotRunning {
                    vm_id: vm_id.into(),
                    what: format!("it stopped while snapshot {snapshot_id} was being copied"),
                });
            }
            let jobs = match self.qmp(vm_id).await {
                Ok(mut q) => q.execute("query-block-jobs", None).await,
                Err(e) => Err(e.to_string()),
            };
            let jobs = match jobs {
                Ok(j) => j,
                Err(d) => {
                    if self.running_pid(vm_id).is_none() {
                        continue; // reported on the next turn
                    }
                    break Err(self.qmp_err(vm_id, d));
                }
            };
            let Some(job) = jobs
                .as_array()
                .into_iter()
                .flatten()
                .find(|j| j.get("device").and_then(Value::as_str) == Some(s.job.as_str()))
            else {
                break Err(AgentError::BlockDevice {
                    vm_id: vm_id.into(),
                    volume_id: volume_id.into(),
                    detail: format!("the snapshot job {} vanished (QEMU restarted?)", s.job),
                });
            };
            let done = job.get("offset").and_then(Value::as_u64).unwrap_or(0);
            let total = job.get("len").and_then(Value::as_u64).unwrap_or(size);
            report(BlockJobProgress { done, total });
            if job.get("status").and_then(Value::as_str) == Some("concluded") {
                break match job.get("error").and_then(Value::as_str) {
                    Some(err) => Err(AgentError::BlockDevice {
                        vm_id: vm_id.into(),
                        volume_id: volume_id.into(),
                        detail: format!("the snapshot job failed: {err}"),
                    }),
                    None => Ok(()),
                };
            }
        };
        {
            let _g = self.lock_vm(vm_id).await;
            if let Ok(mut q) = self.qmp(vm_id).await {
                self.snapshot_teardown(vm_id, &mut q, &s).await;
            }
        }
        outcome
    }

    /// Dismisses the job and removes the snapshot target's nodes and secret
    /// (whichever exist). Best effort.
    async fn snapshot_teardown(&self, vm_id: &str, q: &mut Qmp, s: &SnapNames) {
        if let Ok(jobs) = q.execute("query-block-jobs", None).await {
            let job = jobs
                .as_array()
                .into_iter()
                .flatten()
                .find(|j| j.get("device").and_then(Value::as_str) == Some(s.job.as_str()))
                .cloned();
            if let Some(job) = job {
                if job.get("status").and_then(Value::as_str) != Some("concluded") {
                    let _ = q
                        .call(
                            "block-job-cancel",
                            json!({ "device": s.job, "force": true }),
                        )
                        .await;
                    for _ in 0..50 {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        let st = q.execute("query-block-jobs", None).await.ok();
                        let concluded = st
                            .as_ref()
                            .and_then(Value::as_array)
                            .and_then(|a| {
                                a.iter().find(|j| {
                                    j.get("device").and_then(Value::as_str) == Some(s.job.as_str())
                                })
                            })
                            .is_none_or(|j| {
                                j.get("status").and_then(Value::as_str) == Some("concluded")
                            });
                        if concluded {
                            break;
                        }
                    }
                }
                let _ = q.call("job-dismiss", json!({ "id": s.job })).await;
            }
        }
        let Ok(st) = self.qmp_state(vm_id, q).await else {
            return;
        };
        if st.nodes.contains(&s.fmt) {
            let _ = q.call("blockdev-del", json!({ "node-name": s.fmt })).await;
        }
        if st.nodes.contains(&s.file) {
            let _ = q.call("blockdev-del", json!({ "node-name": s.file })).await;
        }
        if st.objects.contains(&s.secret) {
            let _ = q.call("object-del", json!({ "id": s.secret })).await;
        }
    }

    /// Progress of a snapshot being taken by this agent (None when none is).
    pub fn snapshot_progress(&self, snapshot_id: &str) -> Option<BlockJobProgress> {
        self.inner
            .progress
            .lock()
            .expect("progress map poisoned")
            .get(snapshot_id)
            .copied()
    }

    pub async fn snapshot_info(&self, snapshot_id: &str) -> Result<SnapshotInfo, AgentError> {
        validate_snapshot_id(snapshot_id)?;
        let path = self.snapshot_path(snapshot_id);
        if !path.is_file() {
            return Err(AgentError::SnapshotNotFound(snapshot_id.into()));
        }
        let info = self.image_info(&path).await?;
        Ok(SnapshotInfo {
            snapshot_id: snapshot_id.into(),
            size_bytes: Self::virtual_size(&info, &path)?,
            allocated_bytes: info.get("actual-size").and_then(Value::as_u64).unwrap_or(0),
            path,
        })
    }

    /// Ids of the snapshots on this host, sorted.
    pub async fn list_snapshots(&self) -> Result<Vec<String>, AgentError> {
        list_ids(&self.snapshots_dir(), validate_snapshot_id)
    }

    /// Deletes a snapshot file. Idempotent. (A volume being created from it
    /// meanwhile finishes its copy: the open file outlives the name.)
    pub async fn delete_snapshot(&self, snapshot_id: &str) -> Result<(), AgentError> {
        validate_snapshot_id(snapshot_id)?;
        let _sg = self.lock_snapshot(snapshot_id).await;
        let path = self.snapshot_path(snapshot_id);
        match std::fs::remove_file(&path) {
            Ok(()) => {
                sync_dir_of(&path);
                self.forget_lock(&format!("snapshot/{snapshot_id}"));
                tracing::info!(snapshot = snapshot_id, "snapshot deleted");
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(AgentError::io("cannot delete", &path, e)),
        }
    }
}

struct QemuState {
    devices: Vec<String>,
    objects: Vec<String>,
    nodes: Vec<String>,
}

fn source_name(s: &VolumeSource) -> String {
    match s {
        VolumeSource::Snapshot { snapshot_id, .. } => snapshot_id.clone(),
        VolumeSource::Image { disk } => disk.display().to_string(),
    }
}

/// `<id>.qcow2` files of a directory whose id is valid, sorted.
fn list_ids(
    dir: &Path,
    valid: fn(&str) -> Result<(), AgentError>,
) -> Result<Vec<String>, AgentError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(AgentError::io("cannot list", dir, e)),
    };
    let mut ids: Vec<String> = rd
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".qcow2"))
                .map(str::to_string)
        })
        .filter(|id| valid(id).is_ok())
        .collect();
    ids.sort();
    Ok(ids)
}

/// Runs a `qemu-img … -p` command, calling `on_percent` with each progress
/// figure it prints ("    (42.00/100%)\r").
async fn run_with_progress(
    mut cmd: Command,
    timeout: Duration,
    on_percent: impl Fn(f64),
) -> Result<(), AgentError> {
    let rendered = render(&cmd);
    let program = cmd.as_std().get_program().to_string_lossy().into_owned();
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|source| AgentError::Spawn {
        program: program.clone(),
        hint: String::new(),
        source,
    })?;
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let err_task = tokio::spawn(async move {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf).await;
        buf
    });
    let work = async {
        let mut pending = Vec::new();
        let mut chunk = [0u8; 512];
        loop {
            let n = stdout.read(&mut chunk).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            pending.extend_from_slice(&chunk[..n]);
            while let Some(i) = pending.iter().position(|b| *b == b'\r' || *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=i).collect();
                let text = String::from_utf8_lossy(&line);
                if let Some(p) = text
                    .trim()
                    .strip_prefix('(')
                    .and_then(|t| t.split('/').next())
                    .and_then(|t| t.parse::<f64>().ok())
                {
                    on_percent(p);
                }
            }
        }
        child.wait().await
    };
    let status = match tokio::time::timeout(timeout, work).await {
        Ok(s) => s.map_err(|source| AgentError::Spawn {
            program: program.clone(),
            hint: String::new(),
            source,
        })?,
        Err(_) => {
            return Err(AgentError::CommandTimeout {
                command: rendered,
                secs: timeout.as_secs(),
            })
        }
    };
    let err = err_task.await.unwrap_or_default();
    if !status.success() {
        return Err(AgentError::Command {
            command: rendered,
            status: status.to_string(),
            stderr: tail_text(&err, 15),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(validate_volume_id("vol-0a1b2c3d").is_ok());
        assert!(validate_volume_id(&"v".repeat(20)).is_ok());
        for bad in ["", "-x", ".x", "a/b", "x y", &"v".repeat(21)] {
            assert!(validate_volume_id(bad).is_err(), "{bad:?}");
        }
        assert!(validate_snapshot_id("snap-0a1b2c3d").is_ok());
        assert!(validate_snapshot_id(&"s".repeat(25)).is_err());
    }

    #[test]
    fn device_names() {
        assert_eq!(device_slot("/dev/xvdb").unwrap(), 6);
        assert_eq!(device_slot("/dev/sdc").unwrap(), 7);
        assert_eq!(device_slot("vdz").unwrap(), 30);
        for bad in ["/dev/xvda", "/dev/xvdba", "/dev/nvme0n1", "", "/dev/sd"] {
            assert!(device_slot(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn limits() {
        assert!(IoLimits::iops(100).validate().is_ok());
        assert!(IoLimits {
            iops_total: 1,
            iops_read: 1,
            ..Default::default()
        }
        .validate()
        .is_err());
        assert!(IoLimits::unlimited().is_unlimited());
        assert_eq!(IoLimits::iops(100).to_qemu()["iops-total"], 100);
    }

    #[test]
    fn progress() {
        let p = BlockJobProgress { done: 1, total: 4 };
        assert_eq!(p.percent(), 25.0);
        assert_eq!(BlockJobProgress::default().percent(), 0.0);
    }
}

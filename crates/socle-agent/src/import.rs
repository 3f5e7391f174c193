//! Importing a disk image uploaded by a user (`socle image import FILE|URL`).
//!
//! An uploaded file is hostile until proven otherwise. A qcow2 can name a
//! backing file or an external data file (any host path: `/etc/shadow`, a
//! device), and qemu-img's format probing can be steered (a vmdk descriptor
//! names extent files; a name with ':' is read as a protocol). So:
//!
//! * the format is decided here, from the file's first bytes, against an
//!   allow-list: **raw** (a disk with an MBR/GPT boot signature) or **qcow2**
//!   (version 2 or 3, no backing file, no external data file, no encryption);
//!   every other format is refused by name, anything else as "not a disk image";
//! * qemu-img then only ever opens the file through an explicit
//!   `json:{"driver":"raw"|"qcow2","file":{"driver":"file",…},"backing":null}`
//!   source: no probing, no protocol, no backing chain. Its `info` output is
//!   checked again (backing file, data file, encryption, size) and a qcow2
//!   must pass `qemu-img check`;
//! * the accepted image is converted into the same file as a snapshot made
//!   by `snapshot_volume`: `snapshots/<id>.qcow2`, a standalone qcow2
//!   encrypted with LUKS under the snapshot's own key (passed to qemu-img in a
//!   memfd, never on its command line), its virtual size rounded up to whole
//!   GiB. A volume (and so a VM's root disk) is then made from it with
//!   `create_volume(…, Some(VolumeSource::Snapshot { … }))`, exactly as from
//!   a snapshot of a volume.
//!
//! Refusals are [`AgentError::ImportRefused`] with a typed [`ImportRefusal`];
//! nothing is written for a refused file.

use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::error::AgentError;
use socle_agent_api::{BlockJobProgress, ImportRefusal, SnapshotInfo, UploadFormat, UploadInfo, VolumeKey};
use crate::util::{remove_file_quiet, run};
use crate::volume::{
    gib, plain_source, sync_dir_of, sync_path, validate_snapshot_id, MAX_VOLUME_GIB,
};
use crate::Agent;

/// Largest virtual size an imported image may have (that of the largest volume).
pub const MAX_IMPORT_BYTES: u64 = MAX_VOLUME_GIB << 30;

const QCOW2_MAGIC: &[u8; 4] = b"QFI\xfb";
/// qcow2 v3 incompatible feature bits.
const QCOW2_INCOMPAT_CORRUPT: u64 = 1 << 1;
const QCOW2_INCOMPAT_DATA_FILE: u64 = 1 << 2;

fn refused(path: &Path, reason: ImportRefusal) -> AgentError {
    AgentError::ImportRefused {
        path: path.to_path_buf(),
        reason,
    }
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Other image formats, recognised by their magic, to refuse them by name.
fn other_format(head: &[u8], tail: &[u8]) -> Option<&'static str> {
    let at = |off: usize, magic: &[u8]| {
        head.len() >= off + magic.len() && &head[off..off + magic.len()] == magic
    };
    let checks: &[(usize, &[u8], &str)] = &[
        (0, b"KDMV", "vmdk"),
        (0, b"COWD", "vmdk"),
        (0, b"# Disk DescriptorFile", "vmdk"),
        (0, b"<<< ", "vdi"), // "<<< Oracle VM VirtualBox Disk Image >>>" and friends
        (64, &[0x7f, 0x10, 0xda, 0xbe], "vdi"),
        (0, b"vhdxfile", "vhdx"),
        (0, b"conectix", "vpc (VHD)"),
        (0, b"QED\0", "qed"),
        (0, b"LUKS\xba\xbe", "luks"),
        (0, b"WithoutFreeSpace", "parallels"),
        (0, b"WithouFreSpacExt", "parallels"),
        (0, b"Bochs Virtual HD Image", "bochs"),
        (0, b"#!/bin/sh\n#V2.0 Format", "cloop"),
        (0, b"\x1f\x8b", "gzip (compressed; decompress it first)"),
        (0, b"\xfd7zXZ\0", "xz (compressed; decompress it first)"),
        (
            0,
            b"\x28\xb5\x2f\xfd",
            "zstd (compressed; decompress it first)",
        ),
        (0, b"BZh", "bzip2 (compressed; decompress it first)"),
        (257, b"ustar", "tar archive"),
        (0, b"PK\x03\x04", "zip archive"),
    ];
    for (off, magic, name) in checks {
        if at(*off, magic) {
            return Some(name);
        }
    }
    // A fixed VHD is raw data followed by a 512-byte "conectix" footer; a DMG
    // ends with a "koly" trailer.
    if tail.len() >= 512 && tail[tail.len() - 512..].starts_with(b"conectix") {
        return Some("vpc (VHD)");
    }
    if tail.len() >= 512 && tail[tail.len() - 512..].starts_with(b"koly") {
        return Some("dmg");
    }
    None
}

/// Decides the format from the file's bytes alone (qemu-img has not seen it
/// yet) and returns it with the virtual size.
fn sniff(path: &Path) -> Result<(UploadFormat, u64, u64), AgentError> {
    let md = std::fs::metadata(path).map_err(|e| AgentError::io("cannot stat", path, e))?;
    if !md.is_file() {
        return Err(refused(path, ImportRefusal::NotAFile));
    }
    let len = md.len();
    if len == 0 {
        return Err(refused(path, ImportRefusal::Empty));
    }
    let mut f = std::fs::File::open(path).map_err(|e| AgentError::io("cannot open", path, e))?;
    let mut head = Vec::with_capacity(4096);
    (&mut f)
        .take(4096)
        .read_to_end(&mut head)
        .map_err(|e| AgentError::io("cannot read", path, e))?;
    let tail = {
        use std::os::unix::fs::FileExt;
        let n = len.min(512) as usize;
        let mut t = vec![0u8; n];
        f.read_exact_at(&mut t, len - n as u64)
            .map_err(|e| AgentError::io("cannot read", path, e))?;
        t
    };

    if head.starts_with(QCOW2_MAGIC) {
        if head.len() < 72 {
            return Err(refused(
                path,
                ImportRefusal::Corrupt("qcow2 header truncated".into()),
            ));
        }
        let version = be32(&head, 4);
        if version != 2 && version != 3 {
            return Err(refused(
                path,
                ImportRefusal::UnsupportedFormat(format!("qcow version {version}")),
            ));
        }
        let backing_offset = be64(&head, 8);
        if backing_offset != 0 {
            let size = be32(&head, 16).min(1023) as usize;
            let mut name = vec![0u8; size];
            use std::os::unix::fs::FileExt;
            let _ = f.read_exact_at(&mut name, backing_offset);
            return Err(refused(
                path,
                ImportRefusal::BackingFile(String::from_utf8_lossy(&name).into_owned()),
            ));
        }
        let virtual_size = be64(&head, 24);
        if be32(&head, 32) != 0 {
            return Err(refused(path, ImportRefusal::Encrypted));
        }
        if version == 3 {
            if head.len() < 80 {
                return Err(refused(
                    path,
                    ImportRefusal::Corrupt("qcow2 v3 header truncated".into()),
                ));
            }
            let incompatible = be64(&head, 72);
            if incompatible & QCOW2_INCOMPAT_DATA_FILE != 0 {
                return Err(refused(
                    path,
                    ImportRefusal::ExternalDataFile(String::new()),
                ));
            }
            if incompatible & QCOW2_INCOMPAT_CORRUPT != 0 {
                return Err(refused(
                    path,
                    ImportRefusal::Corrupt("the qcow2 header is marked corrupt".into()),
                ));
            }
        }
        return Ok((UploadFormat::Qcow2, virtual_size, len));
    }
    if let Some(name) = other_format(&head, &tail) {
        return Err(refused(path, ImportRefusal::UnsupportedFormat(name.into())));
    }
    // Raw: it must look like a disk the BIOS can boot (or at least a
    // partitioned disk): the MBR boot signature. A GPT disk has one too
    // (its protective MBR).
    if head.len() < 512 || head[510..512] != [0x55, 0xaa] {
        return Err(refused(
            path,
            ImportRefusal::NotADiskImage(
                "neither qcow2 nor a raw disk (no MBR boot signature 0x55AA at byte 510)".into(),
            ),
        ));
    }
    Ok((UploadFormat::Raw, len, len))
}

impl Agent {
    /// Checks an uploaded disk image before import (see the module doc):
    /// raw or qcow2 only; a qcow2 must have no backing file, no external data
    /// file, no encryption and pass `qemu-img check`; a raw file must carry an
    /// MBR boot signature; the virtual size must be at most
    /// [`MAX_IMPORT_BYTES`]. Refusals are [`AgentError::ImportRefused`].
    /// Reads the file only (qemu-img opens it with an explicit driver, never
    /// anything it names).
    pub async fn inspect_upload(&self, path: &Path) -> Result<UploadInfo, AgentError> {
        let (format, sniffed_size, file_size) = sniff(path)?;
        let too_big = |v: u64| {
            refused(
                path,
                ImportRefusal::TooBig {
                    virtual_size_bytes: v,
                    max_bytes: MAX_IMPORT_BYTES,
                },
            )
        };
        if sniffed_size > MAX_IMPORT_BYTES {
            return Err(too_big(sniffed_size));
        }
        let source = plain_source(path, format.as_str());
        let mut cmd = self.qemu_img_cmd();
        cmd.args(["info", "--output=json"]).arg(&source);
        let out = run(cmd, Duration::from_secs(60))
            .await
            .map_err(|e| match e {
                AgentError::Command { stderr, .. } => refused(path, ImportRefusal::Corrupt(stderr)),
                other => other,
            })?;
        let info: Value = serde_json::from_slice(&out.stdout).map_err(|e| {
            refused(
                path,
                ImportRefusal::Corrupt(format!("qemu-img info printed no JSON: {e}")),
            )
        })?;
        // Second line of defence: what qemu-img itself read in the header.
        if info.get("format").and_then(Value::as_str) != Some(format.as_str()) {
            return Err(refused(
                path,
                ImportRefusal::Corrupt(format!("qemu-img reports {}", info["format"])),
            ));
        }
        if let Some(b) = info.get("backing-filename").and_then(Value::as_str) {
            return Err(refused(path, ImportRefusal::BackingFile(b.into())));
        }
        if let Some(d) = info
            .pointer("/format-specific/data/data-file")
            .and_then(Value::as_str)
        {
            return Err(refused(path, ImportRefusal::ExternalDataFile(d.into())));
        }
        if info.get("encrypted").and_then(Value::as_bool) == Some(true) {
            return Err(refused(path, ImportRefusal::Encrypted));
        }
        if info
            .pointer("/format-specific/data/corrupt")
            .and_then(Value::as_bool)
            == Some(true)
        {
            return Err(refused(
                path,
                ImportRefusal::Corrupt("qemu-img reports the image corrupt".into()),
            ));
        }
        let virtual_size = info
            .get("virtual-size")
            .and_then(Value::as_u64)
            .ok_or_else(|| {
                refused(
                    path,
                    ImportRefusal::Corrupt("qemu-img reports no virtual size".into()),
                )
            })?;
        if virtual_size == 0 {
            return Err(refused(path, ImportRefusal::Empty));
        }
        if virtual_size > MAX_IMPORT_BYTES {
            return Err(too_big(virtual_size));
        }
        if format == UploadFormat::Qcow2 {
            self.check_qcow2(path, &source).await?;
        }
        Ok(UploadInfo {
            format,
            virtual_size_bytes: virtual_size,
            file_size_bytes: file_size,
        })
    }

    /// `qemu-img check`: refuses a qcow2 with corruptions (leaks are harmless).
    async fn check_qcow2(&self, path: &Path, source: &str) -> Result<(), AgentError> {
        let mut cmd = self.qemu_img_cmd();
        cmd.args(["check", "--output=json"]).arg(source);
        // Exit 2/3 = corruptions/leaks found: the JSON is printed either way.
        let out = cmd
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(600), out)
            .await
            .map_err(|_| AgentError::CommandTimeout {
                command: format!("qemu-img check {source}"),
                secs: 600,
            })?
            .map_err(|source| AgentError::Spawn {
                program: self.inner.cfg.qemu_img_binary.display().to_string(),
                hint: String::new(),
                source,
            })?;
        let report: Option<Value> = serde_json::from_slice(&out.stdout).ok();
        let corruptions = report
            .as_ref()
            .and_then(|r| r.get("corruptions"))
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let errors = report
            .as_ref()
            .and_then(|r| r.get("check-errors"))
            .and_then(Value::as_u64)
            .unwrap_or(0);
        if report.is_none() || corruptions > 0 || errors > 0 {
            return Err(refused(
                path,
                ImportRefusal::Corrupt(format!(
                    "qemu-img check: {corruptions} corruptions, {errors} check errors{}",
                    crate::error::tail_text(&out.stderr, 5)
                        .lines()
                        .map(|l| format!("; {l}"))
                        .collect::<String>()
                )),
            ));
        }
        Ok(())
    }

    fn qemu_img_cmd(&self) -> tokio::process::Command {
        tokio::process::Command::new(&self.inner.cfg.qemu_img_binary)
    }

    /// Imports an uploaded image as `snapshots/<snapshot_id>.qcow2`, encrypted
    /// under `key` like every snapshot, so that
    /// `create_volume(…, Some(VolumeSource::Snapshot { snapshot_id, key }))`
    /// makes a volume (e.g. a VM's root disk) of it exactly as from a
    /// snapshot taken by [`Agent::snapshot_volume`]. The file is inspected
    /// again first ([`Agent::inspect_upload`]) and must be of `format` when
    /// one is declared (`None`: raw or qcow2, whichever the file is).
    /// The snapshot's size is the image's virtual size rounded up to whole
    /// GiB. Built under a temporary name and renamed: nothing is left behind
    /// on failure. Idempotent: an existing snapshot opened by `key` is
    /// returned as is. The upload itself is not modified or removed.
    pub async fn import_as_encrypted_snapshot(
        &self,
        src: &Path,
        format: Option<UploadFormat>,
        snapshot_id: &str,
        key: &VolumeKey,
    ) -> Result<SnapshotInfo, AgentError> {
        self.import_as_encrypted_snapshot_with_progress(src, format, snapshot_id, key, |_| {})
            .await
    }

    /// [`Agent::import_as_encrypted_snapshot`] reporting the copy's progress
    /// to `on_progress` (also readable with [`Agent::snapshot_progress`]).
    pub async fn import_as_encrypted_snapshot_with_progress(
        &self,
        src: &Path,
        format: Option<UploadFormat>,
        snapshot_id: &str,
        key: &VolumeKey,
        on_progress: impl Fn(BlockJobProgress) + Send + Sync,
    ) -> Result<SnapshotInfo, AgentError> {
        validate_snapshot_id(snapshot_id)?;
        let _sg = self.lock_snapshot(snapshot_id).await;
        let fin = self.snapshot_path(snapshot_id);
        if fin.is_file() {
            self.check_key(&fin, key, &format!("snapshot {snapshot_id}"))
                .await?;
            return self.snapshot_info(snapshot_id).await;
        }
        let info = self.inspect_upload(src).await?;
        if let Some(declared) = format.filter(|f| *f != info.format) {
            return Err(refused(
                src,
                ImportRefusal::FormatMismatch {
                    declared,
                    found: info.format,
                },
            ));
        }
        let dir = self.snapshots_dir();
        std::fs::create_dir_all(&dir)
            .map_err(|e| AgentError::io("cannot create the snapshots directory", &dir, e))?;
        let tmp = dir.join(format!(".{snapshot_id}.qcow2.tmp"));
        let started = Instant::now();
        let total = info.virtual_size_bytes;
        let report = |p: BlockJobProgress| {
            self.inner
                .progress
                .lock()
                .expect("progress map poisoned")
                .insert(snapshot_id.to_string(), p);
            on_progress(p);
        };
        report(BlockJobProgress { done: 0, total });
        let size = gib(total.div_ceil(1 << 30).max(1));
        let res = async {
            self.create_encrypted(&tmp, size, key).await?;
            self.copy_into(src, info.format.as_str(), None, &tmp, key, total, &report)
                .await
        }
        .await;
        self.inner
            .progress
            .lock()
            .expect("progress map poisoned")
            .remove(snapshot_id);
        if let Err(e) = res {
            remove_file_quiet(&tmp);
            return Err(e);
        }
        if let Err(e) = sync_path(&tmp) {
            remove_file_quiet(&tmp);
            return Err(e);
        }
        if let Err(e) = std::fs::rename(&tmp, &fin) {
            remove_file_quiet(&tmp);
            return Err(AgentError::io("cannot rename the new snapshot to", &fin, e));
        }
        sync_dir_of(&fin);
        let snap = self.snapshot_info(snapshot_id).await?;
        tracing::info!(
            snapshot = snapshot_id,
            source = %src.display(),
            format = %info.format,
            virtual_size = total,
            size = snap.size_bytes,
            secs = started.elapsed().as_secs_f64(),
            "image imported as an encrypted snapshot"
        );
        Ok(snap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, data: &[u8]) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, data).unwrap();
        p
    }

    fn reason(r: Result<(UploadFormat, u64, u64), AgentError>) -> ImportRefusal {
        match r {
            Err(AgentError::ImportRefused { reason, .. }) => reason,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn sniffing() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        assert_eq!(
            reason(sniff(&write(dir, "empty", b""))),
            ImportRefusal::Empty
        );
        assert_eq!(reason(sniff(dir)), ImportRefusal::NotAFile);
        assert!(matches!(
            reason(sniff(&write(dir, "garbage", &[7u8; 4096]))),
            ImportRefusal::NotADiskImage(_)
        ));
        assert!(matches!(
            reason(sniff(&write(dir, "short", b"hello"))),
            ImportRefusal::NotADiskImage(_)
        ));
        let mut mbr = vec![0u8; 8192];
        mbr[510] = 0x55;
        mbr[511] = 0xaa;
        assert_eq!(
            sniff(&write(dir, "disk.raw", &mbr)).unwrap(),
            (UploadFormat::Raw, 8192, 8192)
        );
        let mut vmdk = mbr.clone();
        vmdk[..4].copy_from_slice(b"KDMV");
        assert_eq!(
            reason(sniff(&write(dir, "x.vmdk", &vmdk))),
            ImportRefusal::UnsupportedFormat("vmdk".into())
        );
        let mut vhd = mbr.clone();
        let n = vhd.len();
        vhd[n - 512..n - 504].copy_from_slice(b"conectix");
        assert_eq!(
            reason(sniff(&write(dir, "x.vhd", &vhd))),
            ImportRefusal::UnsupportedFormat("vpc (VHD)".into())
        );

        // qcow2 headers.
        let mut q = vec![0u8; 4096];
        q[..4].copy_from_slice(QCOW2_MAGIC);
        q[4..8].copy_from_slice(&3u32.to_be_bytes());
        q[24..32].copy_from_slice(&(1u64 << 30).to_be_bytes());
        assert_eq!(
            sniff(&write(dir, "ok.qcow2", &q)).unwrap(),
            (UploadFormat::Qcow2, 1 << 30, 4096)
        );
        let mut b = q.clone();
        b[8..16].copy_from_slice(&1024u64.to_be_bytes());
        b[16..20].copy_from_slice(&13u32.to_be_bytes());
        b[1024..1037].copy_from_slice(b"/etc/hostname");
        assert_eq!(
            reason(sniff(&write(dir, "b.qcow2", &b))),
            ImportRefusal::BackingFile("/etc/hostname".into())
        );
        let mut e = q.clone();
        e[32..36].copy_from_slice(&2u32.to_be_bytes());
        assert_eq!(
            reason(sniff(&write(dir, "e.qcow2", &e))),
            ImportRefusal::Encrypted
        );
        let mut x = q.clone();
        x[72..80].copy_from_slice(&4u64.to_be_bytes());
        assert_eq!(
            reason(sniff(&write(dir, "x.qcow2", &x))),
            ImportRefusal::ExternalDataFile(String::new())
        );
        let mut v1 = q.clone();
        v1[4..8].copy_from_slice(&1u32.to_be_bytes());
        assert!(matches!(
            reason(sniff(&write(dir, "v1.qcow", &v1))),
            ImportRefusal::UnsupportedFormat(_)
        ));
    }

    #[test]
    fn format_names() {
        assert_eq!(UploadFormat::Raw.to_string(), "raw");
        assert_eq!(
            serde_json::to_string(&UploadFormat::Qcow2).unwrap(),
            "\"qcow2\""
        );
    }
}

//! Accelerator selection.
//!
//! `/dev/kvm` existing (or even opening) proves little: on some hosts (nested
//! or paravirtual KVM such as PVM) a stock guest kernel hangs or dies under
//! KVM. So `Auto` boots the socle-tiny image under `-accel kvm` and waits for
//! the guest's `socle-guest: ready` line; only then is KVM used. The verdict is
//! cached in `<state_dir>/accel-probe.json`, keyed by the QEMU binary and
//! version and by the kernel file, so the (up to 20 s) probe runs once.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::str::FromStr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tokio::process::Command;

use crate::error::{tail_text, AgentError};
use crate::util::write_atomic;

/// What the configuration asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccelChoice {
    /// Probe KVM with a real guest boot; fall back to TCG.
    #[default]
    Auto,
    /// Use KVM unconditionally (fails if /dev/kvm cannot be opened).
    Kvm,
    /// Use TCG (software emulation) unconditionally.
    Tcg,
}

impl FromStr for AccelChoice {
    type Err = AgentError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(AccelChoice::Auto),
            "kvm" => Ok(AccelChoice::Kvm),
            "tcg" => Ok(AccelChoice::Tcg),
            other => Err(AgentError::Accel(format!(
                "unknown accelerator {other:?}: expected auto, kvm or tcg"
            ))),
        }
    }
}

impl fmt::Display for AccelChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AccelChoice::Auto => "auto",
            AccelChoice::Kvm => "kvm",
            AccelChoice::Tcg => "tcg",
        })
    }
}

/// The accelerator actually in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    /// The `-accel` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How long the KVM probe waits for the guest to reach userspace.
pub(crate) const KVM_PROBE_TIMEOUT: Duration = Duration::from_secs(20);

/// Contents of accel-probe.json.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct ProbeRecord {
    pub key: ProbeKey,
    pub accel: Accel,
    pub reason: String,
    pub probe_seconds: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct ProbeKey {
    pub qemu_binary: PathBuf,
    pub qemu_version: String,
    pub kernel: PathBuf,
    pub kernel_size: u64,
    pub kernel_mtime: i64,
}

impl ProbeKey {
    pub(crate) fn new(
        qemu_binary: &Path,
        qemu_version: &str,
        kernel: &Path,
    ) -> Result<Self, AgentError> {
        use std::os::unix::fs::MetadataExt;
        let md = std::fs::metadata(kernel)
            .map_err(|e| AgentError::io("cannot stat the kernel", kernel, e))?;
        Ok(ProbeKey {
            qemu_binary: qemu_binary.to_path_buf(),
            qemu_version: qemu_version.to_string(),
            kernel: kernel.to_path_buf(),
            kernel_size: md.len(),
            kernel_mtime: md.mtime(),
        })
    }
}

/// True if /dev/kvm can be opened read-write (necessary, not sufficient).
pub(crate) fn kvm_device_usable() -> Result<(), String> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map(|_| ())
        .map_err(|e| format!("cannot open /dev/kvm: {e}"))
}

pub(crate) fn load_cached(path: &Path, key: &ProbeKey) -> Option<ProbeRecord> {
    let data = std::fs::read(path).ok()?;
    let rec: ProbeRecord = serde_json::from_slice(&data).ok()?;
    (rec.key == *key).then_some(rec)
}

pub(crate) fn store(path: &Path, rec: &ProbeRecord) -> Result<(), AgentError> {
    write_atomic(
        path,
        &serde_json::to_vec_pretty(rec).expect("probe record serializes"),
    )
}

/// Boots `image` under KVM (no disk, no daemonize) and reports whether the
/// guest printed `socle-guest: ready` within `timeout`.
/// Ok(reason) means KVM works; Err(reason) means it does not.
pub(crate) async fn probe_kvm(
    qemu: &Path,
    kernel: &Path,
    initrd: &Path,
    work_dir: &Path,
    timeout: Duration,
) -> Result<String, String> {
    let tmp = tempfile::Builder::new()
        .prefix(".kvm-probe-")
        .tempdir_in(work_dir)
        .map_err(|e| {
            format!(
                "cannot create a probe directory in {}: {e}",
                work_dir.display()
            )
        })?;
    let console = tmp.path().join("console.log");
    let mut cmd = Command::new(qemu);
    cmd.args([
        "-nodefaults",
        "-no-user-config",
        "-M",
        "pc",
        "-accel",
        "kvm",
        "-cpu",
        "host",
    ])
    .args(["-m", "256", "-smp", "1", "-display", "none", "-no-reboot"])
    .arg("-serial")
    .arg(format!("file:{}", console.display()))
    .arg("-kernel")
    .arg(kernel)
    .arg("-initrd")
    .arg(initrd)
    .args(["-append", "console=ttyS0 quiet"])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", qemu.display()))?;
    // Drain stderr in the background so QEMU never blocks on a full pipe.
    let mut stderr = child.stderr.take();
    let stderr_task = tokio::spawn(async move {
        let mut buf = Vec::new();
        if let Some(e) = stderr.as_mut() {
            let _ = e.read_to_end(&mut buf).await;
        }
        buf
    });
    let started = Instant::now();
    let verdict = loop {
        let text = std::fs::read(&console).unwrap_or_default();
        if text
            .windows(crate::READY_MARKER.len())
            .any(|w| w == crate::READY_MARKER.as_bytes())
        {
            break Ok(format!(
                "a KVM guest reached userspace in {:.1} s",
                started.elapsed().as_secs_f64()
            ));
        }
        if let Ok(Some(status)) = child.try_wait() {
            break Err(format!(
                "QEMU under KVM exited ({status}) before the guest was up"
            ));
        }
        if started.elapsed() >= timeout {
            break Err(format!(
                "a KVM guest did not reach userspace within {} s (console: {} bytes)",
                timeout.as_secs(),
                text.len()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let _ = child.start_kill();
    let _ = child.wait().await;
    let err = stderr_task.await.unwrap_or_default();
    let err = tail_text(&err, 3);
    verdict.map_err(|reason| {
        if err.is_empty() {
            reason
        } else {
            format!("{reason}; QEMU stderr: {err}")
        }
    })
}

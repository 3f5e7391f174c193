//! The one error type of the agent. Every message names the VM, file or command
//! involved, and for failing external programs the tail of their stderr, so an
//! operator can act on it without reading the code.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("invalid VM id {0:?}: expected 1-64 characters from [A-Za-z0-9._-], not starting with '.' or '-'")]
    InvalidVmId(String),

    #[error("VM {0} is not defined on this host (no directory under the agent state dir)")]
    VmNotFound(String),

    #[error("VM {vm_id} is running: {what}")]
    VmRunning { vm_id: String, what: String },

    #[error("VM {vm_id} is not running: {what}")]
    VmNotRunning { vm_id: String, what: String },

    #[error("VM {vm_id}: {what}")]
    Conflict { vm_id: String, what: String },

    #[error("{what} {}: {source}", path.display())]
    Io {
        what: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot run `{program}`: {source}{hint}")]
    Spawn {
        program: String,
        hint: String,
        #[source]
        source: std::io::Error,
    },

    #[error("`{command}` failed ({status}){}", stderr_suffix(stderr))]
    Command {
        command: String,
        status: String,
        stderr: String,
    },

    #[error("`{command}` did not finish within {secs} s")]
    CommandTimeout { command: String, secs: u64 },

    #[error("apt-get download of {packages} failed: {detail}\nhint: the socle-tiny image is built from Debian packages; run `apt-get update` and check that the Debian mirror is reachable")]
    AptDownload { packages: String, detail: String },

    #[error("socle-tiny image build failed: {0}")]
    Image(String),

    #[error("cannot start QEMU for VM {vm_id}: {detail}{}", stderr_suffix(stderr))]
    QemuStart {
        vm_id: String,
        detail: String,
        stderr: String,
    },

    #[error("QMP error for VM {vm_id} ({}): {detail}", socket.display())]
    Qmp {
        vm_id: String,
        socket: PathBuf,
        detail: String,
    },

    #[error("VM {vm_id}: timed out after {secs} s waiting for {what}")]
    Timeout {
        vm_id: String,
        what: String,
        secs: u64,
    },

    #[error("accelerator: {0}")]
    Accel(String),

    #[error("corrupt file {}: {detail}", path.display())]
    Corrupt { path: PathBuf, detail: String },

    #[error("invalid {kind} id {id:?}: {rule}")]
    InvalidId {
        kind: &'static str,
        id: String,
        rule: &'static str,
    },

    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    #[error("volume {0} does not exist on this host")]
    VolumeNotFound(String),

    #[error("snapshot {0} does not exist on this host")]
    SnapshotNotFound(String),

    /// The volume exists with other properties, is in use, is already linked
    /// elsewhere, would shrink, ...
    #[error("volume {volume_id}: {what}")]
    VolumeConflict { volume_id: String, what: String },

    /// The key given for a volume or snapshot does not open it.
    #[error(
        "{what}: the key given does not open it (wrong key for this volume or snapshot){}",
        detail_suffix(detail)
    )]
    WrongKey { what: String, detail: String },

    #[error("VM {vm_id}: no key given for its volume {volume_id} (start_vm_with needs the key of its root volume and of every linked volume)")]
    MissingVolumeKey { vm_id: String, volume_id: String },

    /// An uploaded disk image was refused by [`crate::Agent::inspect_upload`]
    /// or [`crate::Agent::import_as_encrypted_snapshot`]; nothing was written.
    #[error("image file {} refused: {reason}", path.display())]
    ImportRefused {
        path: PathBuf,
        reason: socle_agent_api::ImportRefusal,
    },

    #[error("VM {vm_id}: volume {volume_id}: {detail}")]
    BlockDevice {
        vm_id: String,
        volume_id: String,
        detail: String,
    },

    #[error("host network driver: {0}")]
    Net(#[from] socle_net::NetError),

    #[error("{0}")]
    Network(String),

    #[error("this host's agent runs without tenant networking (it is not root, or was started without a network prefix)")]
    NetworkingOff,

    #[error("VM {vm_id}: NIC on tap {ifname}: {detail}")]
    Nic {
        vm_id: String,
        ifname: String,
        detail: String,
    },
}

fn detail_suffix(detail: &str) -> String {
    let s = detail.trim();
    if s.is_empty() {
        String::new()
    } else {
        format!(" ({s})")
    }
}

/// What QEMU and qemu-img say when a LUKS passphrase opens no key slot.
pub(crate) const WRONG_KEY_TEXT: &str = "cannot unlock any keyslot";

fn stderr_suffix(stderr: &str) -> String {
    let s = stderr.trim();
    if s.is_empty() {
        String::new()
    } else {
        format!("; stderr (tail):\n{s}")
    }
}

impl AgentError {
    pub(crate) fn io(
        what: impl Into<String>,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        AgentError::Io {
            what: what.into(),
            path: path.into(),
            source,
        }
    }
}

/// Last `max_lines` lines (at most 4 KiB) of a program's stderr, lossily decoded.
pub(crate) fn tail_text(bytes: &[u8], max_lines: usize) -> String {
    let start = bytes.len().saturating_sub(4096);
    let text = String::from_utf8_lossy(&bytes[start..]);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let from = lines.len().saturating_sub(max_lines);
    lines[from..].join("\n")
}

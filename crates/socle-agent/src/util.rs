//! Small helpers: running external commands with good errors, atomic writes,
//! and process inspection through /proc.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use tokio::process::Command;

use crate::error::{tail_text, AgentError};

/// Human-readable rendering of a command line, for error messages and logs.
pub(crate) fn render(cmd: &Command) -> String {
    let std = cmd.as_std();
    let mut s = std.get_program().to_string_lossy().into_owned();
    for a in std.get_args() {
        let a = a.to_string_lossy();
        if a.contains(' ') || a.is_empty() {
            s.push_str(&format!(" '{a}'"));
        } else {
            s.push(' ');
            s.push_str(&a);
        }
    }
    s
}

fn install_hint(program: &str) -> &'static str {
    let base = Path::new(program)
        .file_name()
        .and_then(|s| s.to_str())
        .unwrap_or(program);
    if base.starts_with("qemu") {
        " (install the Debian packages qemu-system-x86 and qemu-utils, see scripts/install-agent-deps.sh, or set AgentConfig::qemu_binary / qemu_img_binary)"
    } else if base == "apt-get" || base == "apt-cache" || base.starts_with("dpkg") {
        " (the socle-tiny image builder needs Debian's apt and dpkg)"
    } else if matches!(base, "syslinux" | "mkfs.vfat" | "mcopy") {
        crate::image::FULL_DISK_TOOLS_HINT
    } else {
        ""
    }
}

/// Runs `cmd` to completion (stdin closed, output captured) within `timeout`.
/// A non-zero exit becomes `AgentError::Command` with the stderr tail.
pub(crate) async fn run(mut cmd: Command, timeout: Duration) -> Result<Output, AgentError> {
    let rendered = render(&cmd);
    let program = cmd.as_std().get_program().to_string_lossy().into_owned();
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().map_err(|source| AgentError::Spawn {
        hint: install_hint(&program).to_string(),
        program: program.clone(),
        source,
    })?;
    let out = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(r) => r.map_err(|source| AgentError::Spawn {
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
    if !out.status.success() {
        let mut stderr = tail_text(&out.stderr, 15);
        if stderr.is_empty() {
            stderr = tail_text(&out.stdout, 15);
        }
        return Err(AgentError::Command {
            command: rendered,
            status: out.status.to_string(),
            stderr,
        });
    }
    Ok(out)
}

/// Writes `data` to `path` atomically (temp file in the same dir + rename).
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> Result<(), AgentError> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .map_err(|e| AgentError::io("cannot create a temporary file in", dir, e))?;
    tmp.write_all(data)
        .and_then(|_| tmp.as_file().sync_all())
        .map_err(|e| AgentError::io("cannot write", tmp.path(), e))?;
    tmp.persist(path)
        .map_err(|e| AgentError::io("cannot rename a temporary file to", path, e.error))?;
    Ok(())
}

/// Reads a file, mapping "not found" to `Ok(None)`.
pub(crate) fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, AgentError> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(AgentError::io("cannot read", path, e)),
    }
}

/// Removes a file, ignoring "not found".
pub(crate) fn remove_file_quiet(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove file");
        }
    }
}

/// The argv of a live process, or None if it is gone or a zombie
/// (a zombie's cmdline is empty, and it will never run again).
pub(crate) fn proc_cmdline(pid: i32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    if raw.is_empty() {
        return None;
    }
    Some(
        raw.split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect(),
    )
}

/// True while `pid` exists and is not a zombie.
pub(crate) fn pid_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // Format: "pid (comm) S ...": the state follows the last ')'.
        Ok(stat) => match stat.rfind(')') {
            Some(i) => !matches!(
                stat[i + 1..].trim_start().chars().next(),
                Some('Z') | Some('X') | None
            ),
            None => false,
        },
        Err(_) => false,
    }
}

pub(crate) fn send_signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// Polls until `pid` has exited (or turned zombie), up to `timeout`.
pub(crate) async fn wait_pid_exit(pid: i32, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if !pid_alive(pid) {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Escapes a value for QEMU's `key=value,key=value` option syntax (`,` → `,,`).
pub(crate) fn qemu_opt(value: &str) -> String {
    value.replace(',', ",,")
}

/// Small stable hash (FNV-1a 64), used for cache keys. Not cryptographic.
pub(crate) fn fnv1a64(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.iter().chain(std::iter::once(&0xffu8)) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// Sets a file's permission bits.
pub(crate) fn set_mode(path: &Path, mode: u32) -> Result<(), AgentError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| AgentError::io("cannot chmod", path, e))
}

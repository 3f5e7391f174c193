//! Volume keys and how they reach qemu-img and QEMU without touching a disk or
//! a command line.
//!
//! A [`VolumeKey`] is 32 random bytes chosen by the caller (the control plane
//! unwraps it from its KMS). The agent never writes it to disk. qcow2's LUKS
//! layer wants a UTF-8 passphrase, so the passphrase of a volume is the
//! standard base64 (padded, 44 characters) of the 32 key bytes: still 256 bits
//! of entropy.
//!
//! How the passphrase is handed over:
//! * external programs (qemu-img, the QEMU that starts a VM): a `memfd` (an
//!   anonymous in-memory file, never on a file system) holding the passphrase
//!   is inherited by that one child only (the fd is close-on-exec everywhere
//!   else, and made inheritable between fork and exec of that child), named on
//!   the command line as `--object secret,id=…,file=/dev/fd/N`. So `ps` and
//!   `/proc/PID/cmdline` show only the fd path. When the command has returned
//!   (for a daemonized QEMU: once it has set everything up, secrets included)
//!   the memfd is truncated to zero bytes, so the copy of the fd that a QEMU
//!   daemon keeps open reads empty;
//! * a running QEMU: QMP `object-add` of a `secret` object, over the unix
//!   socket only the agent can reach.
//!
//! Why a 10 ms LUKS iteration time is sound: PBKDF2 iterations exist to slow
//! down guessing of a low-entropy *password*. Guessing a uniformly random
//! 256-bit key costs 2^255 tries on average; multiplying that by ~2^16
//! iterations changes nothing, while the default 2 s iteration time would add
//! ~2 s of CPU to every open of a volume (each VM start, hot-plug, snapshot
//! and copy). The master key that encrypts the data is itself random and
//! unaffected.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use tokio::process::Command;

use crate::error::AgentError;
use socle_agent_api::VolumeKey;

/// Passphrases handed to one child process through inherited memfds.
/// Dropping it empties and closes the memfds.
pub(crate) struct SecretFds {
    fds: Vec<OwnedFd>,
}

impl SecretFds {
    pub(crate) fn new() -> SecretFds {
        SecretFds { fds: Vec::new() }
    }

    /// Stores `key`'s passphrase in a new memfd; returns the path the child
    /// reads it from (`/dev/fd/N`).
    pub(crate) fn add(&mut self, key: &VolumeKey) -> Result<String, AgentError> {
        let name = c"socle-volume-secret";
        // SAFETY: a valid C string; flags are plain bits.
        let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(AgentError::io(
                "memfd_create failed",
                "memfd:socle-volume-secret",
                std::io::Error::last_os_error(),
            ));
        }
        // SAFETY: `fd` was just returned by memfd_create and is owned by nobody else.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let pass = key.luks_passphrase();
        let mut f = std::fs::File::from(owned);
        use std::io::Write;
        let res = f.write_all(pass.as_bytes());
        let owned = OwnedFd::from(f);
        res.map_err(|e| AgentError::io("cannot write a secret to", "memfd", e))?;
        let path = format!("/dev/fd/{}", owned.as_raw_fd());
        self.fds.push(owned);
        Ok(path)
    }

    /// Lets `cmd`'s child (and only it) inherit the memfds.
    pub(crate) fn pass_to(&self, cmd: &mut Command) {
        if self.fds.is_empty() {
            return;
        }
        let raw: Vec<RawFd> = self.fds.iter().map(|f| f.as_raw_fd()).collect();
        // SAFETY: the closure runs between fork and exec and only calls
        // fcntl(2), which is async-signal-safe; it allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                for fd in &raw {
                    if libc::fcntl(*fd, libc::F_SETFD, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
    }
}

impl Drop for SecretFds {
    fn drop(&mut self) {
        for fd in &self.fds {
            // Empty the shared in-memory file: a daemon that still holds a copy
            // of the fd (QEMU) then reads nothing from it.
            // SAFETY: ftruncate on an fd we own.
            unsafe {
                libc::ftruncate(fd.as_raw_fd(), 0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memfd_secret_is_readable_then_emptied() {
        let key = VolumeKey::from_bytes([7; 32]);
        let mut s = SecretFds::new();
        let path = s.add(&key).unwrap();
        let fd: i32 = path.trim_start_matches("/dev/fd/").parse().unwrap();
        assert_eq!(
            std::fs::read_to_string(format!("/proc/self/fd/{fd}")).unwrap(),
            key.luks_passphrase()
        );
        // Another handle on the same memfd (as a daemon would keep).
        let other = std::fs::File::open(format!("/proc/self/fd/{fd}")).unwrap();
        drop(s);
        assert_eq!(other.metadata().unwrap().len(), 0);
    }
}

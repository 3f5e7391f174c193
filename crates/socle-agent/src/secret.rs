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

/// Length of a [`VolumeKey`] in bytes.
pub const VOLUME_KEY_LEN: usize = 32;

/// The 256-bit key of one volume or snapshot. Its `Debug` output is redacted
/// and its bytes are overwritten when it is dropped.
#[derive(Clone)]
pub struct VolumeKey([u8; VOLUME_KEY_LEN]);

impl VolumeKey {
    pub fn from_bytes(bytes: [u8; VOLUME_KEY_LEN]) -> VolumeKey {
        VolumeKey(bytes)
    }

    /// A key from exactly 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<VolumeKey, AgentError> {
        let arr: [u8; VOLUME_KEY_LEN] = bytes.try_into().map_err(|_| {
            AgentError::InvalidArgument(format!(
                "a volume key is {VOLUME_KEY_LEN} bytes, not {}",
                bytes.len()
            ))
        })?;
        Ok(VolumeKey(arr))
    }

    /// 32 bytes from the kernel's CSPRNG (getrandom(2)). For tests and tools;
    /// the control plane's keys come from its KMS.
    pub fn generate() -> Result<VolumeKey, AgentError> {
        let mut buf = [0u8; VOLUME_KEY_LEN];
        let mut filled = 0;
        while filled < buf.len() {
            // SAFETY: the pointer and length describe the unfilled tail of `buf`.
            let n = unsafe {
                libc::getrandom(buf[filled..].as_mut_ptr().cast(), buf.len() - filled, 0)
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(AgentError::io("getrandom failed", "/dev/urandom", e));
            }
            filled += n as usize;
        }
        Ok(VolumeKey(buf))
    }

    pub fn as_bytes(&self) -> &[u8; VOLUME_KEY_LEN] {
        &self.0
    }

    /// The LUKS passphrase the volume is encrypted under: standard padded
    /// base64 of the key bytes. Only for recovery tools and tests that open a
    /// volume with qemu-img/qemu-io themselves; never log it.
    pub fn luks_passphrase(&self) -> String {
        base64(&self.0)
    }
}

impl std::fmt::Debug for VolumeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VolumeKey(<redacted>)")
    }
}

impl Drop for VolumeKey {
    fn drop(&mut self) {
        for b in self.0.iter_mut() {
            // SAFETY: a valid, aligned &mut u8; volatile so it is not elided.
            unsafe { std::ptr::write_volatile(b, 0) };
        }
    }
}

/// Standard base64 with padding (RFC 4648 §4).
pub(crate) fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

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
    fn base64_vectors() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foob"), "Zm9vYg==");
        assert_eq!(base64(b"fooba"), "Zm9vYmE=");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64(&[0xff; 32]).len(), 44);
    }

    #[test]
    fn keys() {
        let a = VolumeKey::generate().unwrap();
        let b = VolumeKey::generate().unwrap();
        assert_ne!(a.as_bytes(), b.as_bytes());
        assert_eq!(format!("{a:?}"), "VolumeKey(<redacted>)");
        assert!(VolumeKey::from_slice(&[1; 31]).is_err());
        let c = VolumeKey::from_slice(&[0x41; 32]).unwrap();
        assert_eq!(c.luks_passphrase(), base64(&[0x41; 32]));
    }

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

//! Sealing of secrets at rest (access-key secrets).
//!
//! A 256-bit master key lives in the data dir (`master.key`, mode 0600) and
//! seals each secret with AES-256-GCM under a fresh random nonce. The ID the
//! secret belongs to is bound as associated data, so a sealed secret copied
//! onto another row does not open. Issue "block storage" moves this key into
//! the pluggable keystore (software or PKCS#11).

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::RngCore;

const NONCE_LEN: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read or create the master key {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("the master key {0} is not 32 bytes: it is damaged or not a Socle key")]
    BadKey(String),
    #[error("a sealed secret does not open with this data dir's master key")]
    Unseal,
}

pub struct SecretBox {
    cipher: Aes256Gcm,
}

impl SecretBox {
    /// Loads the master key, creating it (mode 0600) on first use.
    pub fn load_or_create(path: &Path) -> Result<SecretBox, SecretError> {
        let io = |source| SecretError::Io { path: path.display().to_string(), source };
        if !path.exists() {
            let mut key = [0u8; 32];
            rand::thread_rng().fill_bytes(&mut key);
            // create_new: two processes racing to create the key cannot both win.
            match fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
                Ok(mut f) => {
                    f.write_all(&key).map_err(io)?;
                    f.sync_all().map_err(io)?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io(e)),
            }
        }
        let key = fs::read(path).map_err(io)?;
        if key.len() != 32 {
            return Err(SecretError::BadKey(path.display().to_string()));
        }
        Ok(SecretBox { cipher: Aes256Gcm::new_from_slice(&key).expect("32-byte key") })
    }

    pub fn seal(&self, bound_to: &str, secret: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut nonce);
        let ct = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: secret, aad: bound_to.as_bytes() })
            .expect("AES-GCM encryption cannot fail for in-memory buffers");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        out
    }

    pub fn open(&self, bound_to: &str, sealed: &[u8]) -> Result<Vec<u8>, SecretError> {
        if sealed.len() < NONCE_LEN {
            return Err(SecretError::Unseal);
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        self.cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad: bound_to.as_bytes() })
            .map_err(|_| SecretError::Unseal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_round_trip_and_binding() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let b = SecretBox::load_or_create(&path).unwrap();
        let sealed = b.seal("AK1", b"very secret");
        assert!(!sealed.windows(11).any(|w| w == b"very secret"));
        assert_eq!(b.open("AK1", &sealed).unwrap(), b"very secret");
        assert!(b.open("AK2", &sealed).is_err(), "bound to its ID");
        let again = SecretBox::load_or_create(&path).unwrap();
        assert_eq!(again.open("AK1", &sealed).unwrap(), b"very secret");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }
}

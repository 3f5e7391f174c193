//! Socle key management: envelope encryption of volumes, snapshots and images.
//!
//! Every disk is a qcow2+LUKS file encrypted with its own random 256-bit data
//! key ([`DataKey`], "DEK"). The DEK is never stored in clear: only as a
//! [`WrappedKey`], sealed by the owning account's key-encryption key ("KEK"),
//! which a [`Keystore`] holds:
//!
//! - [`SoftwareKeystore`], the embedded default: KEKs are random keys stored in
//!   files sealed by a master key file (0600);
//! - [`Pkcs11Keystore`]: the KEK is an AES key inside a PKCS#11 token (an HSM,
//!   SoftHSM2 in tests) and never leaves it. A customer can hold that key:
//!   removing or disabling it on the token revokes every disk of the account
//!   at once (crypto-shredding); re-importing it from the customer's backup
//!   restores them.
//!
//! [`Kms`] routes each [`KekRef`] to the keystore that holds it and reports
//! every key operation (who, which key, which disk, when, outcome; never key
//! bytes) to an [`AuditSink`].
//!
//! # One wrapping format for both keystores
//!
//! A wrapped DEK is `0x01 ‖ nonce(12) ‖ AES-256-GCM(KEK, nonce, DEK, aad)`
//! (61 bytes), with `aad = "socle-kms/dek/v1\0" ‖ context`. The context is the
//! ID of the disk the DEK encrypts (`vol-…`, `snap-…`, `ami-…`). Binding it as
//! associated data means a wrapped key copied onto another disk's row does not
//! open there, even for the same account, and the check happens inside the
//! HSM for PKCS#11 keys. AES-GCM is used rather than AES key wrap
//! (RFC 3394/5649, `CKM_AES_KEY_WRAP_PAD`) because key wrap has no associated
//! data and, through PKCS#11, needs the DEK to be a key object on the token
//! that must then be made extractable to be read back; with `C_Encrypt` /
//! `C_Decrypt` the DEK is plain data in and out and the KEK only needs
//! `CKA_ENCRYPT`/`CKA_DECRYPT`. The same format on both sides also means a
//! customer's backup of their key material decrypts their wrapped DEKs with
//! any AES-GCM implementation, without Socle (tested). Nonces are random
//! 96-bit values: sound up to 2^32 wraps per KEK (NIST SP 800-38D), far more
//! disks than one account will have. The leading version byte leaves room
//! for another mechanism (e.g. for HSMs that refuse caller-chosen GCM IVs).

use std::fmt;
use std::path::PathBuf;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

mod kms;
mod pkcs11;
mod software;

/// The PKCS#11 crate, for callers of [`Pkcs11Keystore::session`].
pub use cryptoki;
pub use kms::{AuditSink, KeyEvent, KeyOp, Kms, TracingAudit};
pub use pkcs11::{Pkcs11Keystore, TokenSession};
pub use software::SoftwareKeystore;

/// A 256-bit data-encryption key. Zeroed on drop; `Debug` never shows it.
#[derive(Clone)]
pub struct DataKey(Zeroizing<[u8; 32]>);

impl DataKey {
    /// A new random key from the operating system's CSPRNG.
    pub fn generate() -> DataKey {
        let mut k = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(k.as_mut());
        DataKey(k)
    }

    pub fn from_bytes(bytes: Zeroizing<[u8; 32]>) -> DataKey {
        DataKey(bytes)
    }

    /// The raw key. Keep the borrow short; never log it.
    pub fn expose_secret(&self) -> &[u8; 32] {
        &self.0
    }

    /// The key as base64, for a QEMU `secret` object
    /// (`{"qom-type":"secret","id":"…","data":<this>,"format":"base64"}`) that
    /// the LUKS layer references with `encrypt.key-secret`. Pass it through QMP
    /// `object-add` or a 0600 file (`file=`), never on the command line, where
    /// any local user can read it in /proc/PID/cmdline.
    pub fn to_qemu_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(self.0.as_ref()))
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(<redacted>)")
    }
}

impl PartialEq for DataKey {
    fn eq(&self, other: &DataKey) -> bool {
        self.0[..].ct_eq(&other.0[..]).into()
    }
}
impl Eq for DataKey {}

/// Which keystore serves a KEK.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KeystoreId {
    Software,
    /// One token; the module and PIN come from configuration.
    Pkcs11 {
        token_label: String,
    },
}

impl fmt::Display for KeystoreId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeystoreId::Software => f.write_str("software keystore"),
            KeystoreId::Pkcs11 { token_label } => write!(f, "PKCS#11 token '{token_label}'"),
        }
    }
}

/// Names a KEK. Holds no secret and no path: it is stored next to every
/// wrapped key, so it must stay valid when a module is reinstalled elsewhere
/// or a PIN changes; the module path and PIN of a token come from the
/// configuration of the [`Pkcs11Keystore`] that serves `token_label`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum KekRef {
    /// A KEK of the [`SoftwareKeystore`] (`keks/<id>.kek`).
    Software { id: String },
    /// An AES key with `CKA_LABEL = key_label` on the token `token_label`.
    Pkcs11 { token_label: String, key_label: String },
}

impl KekRef {
    pub fn keystore(&self) -> KeystoreId {
        match self {
            KekRef::Software { .. } => KeystoreId::Software,
            KekRef::Pkcs11 { token_label, .. } => {
                KeystoreId::Pkcs11 { token_label: token_label.clone() }
            }
        }
    }
}

impl fmt::Display for KekRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KekRef::Software { id } => write!(f, "software:{id}"),
            KekRef::Pkcs11 { token_label, key_label } => {
                write!(f, "pkcs11:{token_label}/{key_label}")
            }
        }
    }
}

/// A DEK sealed by a KEK, ready to store (serde; `blob` is base64 in JSON).
/// `context` is the disk it belongs to: kept in clear so a mix-up is reported
/// as [`KmsError::WrongContext`], and bound into the ciphertext so editing it
/// does not help.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WrappedKey {
    pub kek: KekRef,
    pub context: String,
    #[serde(with = "b64")]
    pub blob: Vec<u8>,
}

mod b64 {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD.decode(s).map_err(serde::de::Error::custom)
    }
}

/// Everything that can go wrong. Messages name the key, token, file or disk
/// involved and never contain key material or PINs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KmsError {
    /// The KEK is gone or disabled (destroyed file or token object,
    /// `CKA_DECRYPT`/`CKA_ENCRYPT` cleared): the data it protects is
    /// unreadable until the key is restored.
    #[error("key {kek} is revoked: {reason}")]
    KeyRevoked { kek: String, reason: String },
    /// The token cannot be reached (absent, removed, device error).
    #[error("{keystore} is unavailable: {reason}")]
    TokenUnavailable { keystore: String, reason: String },
    /// Login refused (wrong or locked PIN). The PIN itself is never shown.
    #[error("login to {keystore} failed: {reason}")]
    AuthFailed { keystore: String, reason: String },
    /// The wrapped key belongs to another disk.
    #[error("the wrapped key belongs to '{expected}', not to '{given}'")]
    WrongContext { expected: String, given: String },
    /// AES-GCM refused the data: altered blob or context, or a different key
    /// than the one that sealed it (e.g. a new key re-created under the old
    /// name instead of the original material).
    #[error("{what} does not authenticate under {kek}: altered, or sealed by a different key")]
    IntegrityFailure { kek: String, what: String },
    #[error("key {kek} already exists")]
    KeyExists { kek: String },
    #[error("no keystore is configured for {keystore} (key {kek})")]
    NoKeystore { keystore: String, kek: String },
    #[error("invalid {what}: {reason}")]
    Invalid { what: &'static str, reason: String },
    #[error("cannot {action} {}: {source}", path.display())]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },
    /// Any other PKCS#11 failure (`rv` is the CKR_ name).
    #[error("PKCS#11 {op} on {keystore} failed: {rv}")]
    Pkcs11 { keystore: String, op: &'static str, rv: String },
}

/// Holds KEKs and seals/unseals DEKs with them. Implementations reach their
/// storage on every call (no cached keys, no long-lived sessions), so a
/// revocation takes effect on the next operation.
pub trait Keystore: Send + Sync + fmt::Debug {
    /// The [`KekRef`]s this store serves are those whose `keystore()` is this.
    fn id(&self) -> KeystoreId;
    /// A new random KEK named `label` (fails if the name is taken).
    fn create_kek(&self, label: &str) -> Result<KekRef, KmsError>;
    /// Checks that the KEK exists and is usable now, e.g. before binding an
    /// account to a customer key.
    fn probe(&self, kek: &KekRef) -> Result<(), KmsError>;
    fn wrap(&self, kek: &KekRef, dek: &DataKey, context: &str) -> Result<WrappedKey, KmsError>;
    fn unwrap(&self, wrapped: &WrappedKey, context: &str) -> Result<DataKey, KmsError>;
    /// Destroys the KEK: every DEK it wraps becomes unreadable.
    fn destroy_kek(&self, kek: &KekRef) -> Result<(), KmsError>;
}

// ---- shared wrapping format -------------------------------------------------

pub(crate) const FORMAT_V1: u8 = 1;
pub(crate) const NONCE_LEN: usize = 12;
pub(crate) const TAG_LEN: usize = 16;
pub(crate) const BLOB_LEN: usize = 1 + NONCE_LEN + 32 + TAG_LEN;

pub(crate) fn random_nonce() -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut n);
    n
}

pub(crate) fn dek_aad(context: &str) -> Vec<u8> {
    let mut aad = b"socle-kms/dek/v1\0".to_vec();
    aad.extend_from_slice(context.as_bytes());
    aad
}

pub(crate) fn check_context(context: &str) -> Result<(), KmsError> {
    if context.is_empty() || context.len() > 1024 || context.chars().any(char::is_control) {
        return Err(KmsError::Invalid {
            what: "context",
            reason: "must be 1 to 1024 bytes without control characters".into(),
        });
    }
    Ok(())
}

/// Shape checks common to every unwrap: the right disk, the right format.
/// Returns (nonce, ciphertext‖tag).
pub(crate) fn split_blob<'a>(
    wrapped: &'a WrappedKey,
    context: &str,
) -> Result<(&'a [u8], &'a [u8]), KmsError> {
    check_context(context)?;
    if wrapped.context != context {
        return Err(KmsError::WrongContext {
            expected: wrapped.context.clone(),
            given: context.to_string(),
        });
    }
    let b = &wrapped.blob;
    if b.len() != BLOB_LEN || b[0] != FORMAT_V1 {
        return Err(KmsError::IntegrityFailure {
            kek: wrapped.kek.to_string(),
            what: format!("the wrapped key of '{context}' (not a v1 blob)"),
        });
    }
    Ok((&b[1..1 + NONCE_LEN], &b[1 + NONCE_LEN..]))
}

pub(crate) fn join_blob(nonce: &[u8; NONCE_LEN], ct: &[u8]) -> Vec<u8> {
    let mut blob = Vec::with_capacity(BLOB_LEN);
    blob.push(FORMAT_V1);
    blob.extend_from_slice(nonce);
    blob.extend_from_slice(ct);
    blob
}

/// AES-256-GCM in software (the software keystore, and the sealing of its
/// KEKs by the master key).
pub(crate) fn gcm_seal(key: &[u8; 32], nonce: &[u8; NONCE_LEN], aad: &[u8], msg: &[u8]) -> Vec<u8> {
    Aes256Gcm::new(key.into())
        .encrypt(Nonce::from_slice(nonce), Payload { msg, aad })
        .expect("AES-GCM encryption of an in-memory buffer cannot fail")
}

pub(crate) fn gcm_open(
    key: &[u8; 32],
    nonce: &[u8],
    aad: &[u8],
    ct: &[u8],
) -> Option<Zeroizing<[u8; 32]>> {
    let mut pt = Aes256Gcm::new(key.into())
        .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad })
        .ok()?;
    let out = to_key32(&pt);
    pt.zeroize();
    out
}

pub(crate) fn to_key32(bytes: &[u8]) -> Option<Zeroizing<[u8; 32]>> {
    let mut k = Zeroizing::new([0u8; 32]);
    if bytes.len() != 32 {
        return None;
    }
    k.copy_from_slice(bytes);
    Some(k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_key_debug_and_qemu_form() {
        let k = DataKey::generate();
        let dbg = format!("{k:?}");
        assert_eq!(dbg, "DataKey(<redacted>)");
        let b64 = k.to_qemu_base64();
        let back = base64::engine::general_purpose::STANDARD.decode(b64.as_bytes()).unwrap();
        assert_eq!(&back[..], &k.expose_secret()[..]);
        assert_ne!(k, DataKey::generate());
        assert_eq!(k, k.clone());
    }

    #[test]
    fn wrapped_key_json_shape() {
        let w = WrappedKey {
            kek: KekRef::Pkcs11 { token_label: "t".into(), key_label: "k".into() },
            context: "vol-1".into(),
            blob: vec![1, 2, 3],
        };
        let j = serde_json::to_string(&w).unwrap();
        assert_eq!(
            j,
            r#"{"kek":{"kind":"pkcs11","token_label":"t","key_label":"k"},"context":"vol-1","blob":"AQID"}"#
        );
        assert_eq!(serde_json::from_str::<WrappedKey>(&j).unwrap(), w);
        let s = KekRef::Software { id: "acc-1".into() };
        assert_eq!(serde_json::to_string(&s).unwrap(), r#"{"kind":"software","id":"acc-1"}"#);
    }
}

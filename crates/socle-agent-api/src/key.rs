//! [`VolumeKey`]: the 256-bit key of one volume or snapshot, as the control
//! plane hands it to the agent that opens the disk.
//!
//! The control plane unwraps it from its KMS for one request; the agent never
//! writes it to disk. On the wire it is standard base64 inside the request
//! body — the transport is a Unix socket only the control plane can open, or
//! mutual TLS between hosts — and it never appears in a `Debug` output or a
//! log line.

use base64::Engine;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{HostError, HostErrorKind};

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
    pub fn from_slice(bytes: &[u8]) -> Result<VolumeKey, HostError> {
        let arr: [u8; VOLUME_KEY_LEN] = bytes.try_into().map_err(|_| {
            HostError::new(
                HostErrorKind::InvalidArgument,
                format!("a volume key is {VOLUME_KEY_LEN} bytes, not {}", bytes.len()),
            )
        })?;
        Ok(VolumeKey(arr))
    }

    /// 32 bytes from the kernel's CSPRNG (getrandom(2)). For tests and tools;
    /// the control plane's keys come from its KMS.
    pub fn generate() -> std::io::Result<VolumeKey> {
        let mut buf = [0u8; VOLUME_KEY_LEN];
        let mut filled = 0;
        while filled < buf.len() {
            // SAFETY: the pointer and length describe the unfilled tail of `buf`.
            let n = unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), buf.len() - filled, 0) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            filled += n as usize;
        }
        Ok(VolumeKey(buf))
    }

    pub fn as_bytes(&self) -> &[u8; VOLUME_KEY_LEN] {
        &self.0
    }

    /// The LUKS passphrase the volume is encrypted under: standard padded
    /// base64 of the key bytes (qcow2's LUKS layer wants UTF-8; still 256
    /// bits of entropy). Only for the agent and for recovery tools and tests
    /// that open a volume with qemu-img/qemu-io themselves; never log it.
    pub fn luks_passphrase(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.0)
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

impl Serialize for VolumeKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.luks_passphrase())
    }
}

impl<'de> Deserialize<'de> for VolumeKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<VolumeKey, D::Error> {
        let text = String::deserialize(d)?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map_err(|_| serde::de::Error::custom("a volume key is 32 bytes in standard base64"))?;
        VolumeKey::from_slice(&bytes).map_err(serde::de::Error::custom)
    }
}

impl schemars::JsonSchema for VolumeKey {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "VolumeKey".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "contentEncoding": "base64",
            "minLength": 44,
            "maxLength": 44,
            "description": "the 32 bytes of a volume key, standard base64; never logged"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_crosses_the_wire_intact_and_never_shows_in_debug() {
        let key = VolumeKey::generate().unwrap();
        let json = serde_json::to_string(&key).unwrap();
        let back: VolumeKey = serde_json::from_str(&json).unwrap();
        assert_eq!(back.as_bytes(), key.as_bytes());
        assert_eq!(format!("{key:?}"), "VolumeKey(<redacted>)");
        assert!(serde_json::from_str::<VolumeKey>("\"c2hvcnQ=\"").is_err(), "a short key is refused");
    }
}

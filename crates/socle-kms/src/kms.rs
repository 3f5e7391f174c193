//! Routing of KEK references to keystores, and the audit trail.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::{DataKey, KekRef, Keystore, KeystoreId, KmsError, WrappedKey};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyOp {
    CreateKek,
    Probe,
    Wrap,
    Unwrap,
    DestroyKek,
}

/// One key operation, for the audit log: who, what, which key, which disk,
/// when, and how it ended. Holds names and error messages only, never key
/// material.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KeyEvent {
    /// Milliseconds since the Unix epoch.
    pub unix_ms: u64,
    /// Who asked, as the caller names it (`acc-…`, `admin:alice`, `reconciler`).
    pub actor: String,
    pub op: KeyOp,
    /// The KEK ([`KekRef`]'s `Display`: `software:ID`, `pkcs11:TOKEN/LABEL`).
    pub kek: String,
    /// The disk (`vol-…`, `snap-…`, `ami-…`) for wrap and unwrap.
    pub context: Option<String>,
    /// `None` on success; the error's message otherwise.
    pub error: Option<String>,
}

/// Receives every [`KeyEvent`]; must not block for long (it runs inline).
pub trait AuditSink: Send + Sync {
    fn record(&self, event: &KeyEvent);
}

/// Writes events to `tracing` under the target `socle_kms::audit` (info on
/// success, warn on failure).
#[derive(Debug, Default, Clone, Copy)]
pub struct TracingAudit;

impl AuditSink for TracingAudit {
    fn record(&self, e: &KeyEvent) {
        let context = e.context.as_deref().unwrap_or("-");
        match &e.error {
            None => {
                tracing::info!(target: "socle_kms::audit", actor = %e.actor, op = ?e.op, kek = %e.kek, context, "key operation")
            }
            Some(err) => {
                tracing::warn!(target: "socle_kms::audit", actor = %e.actor, op = ?e.op, kek = %e.kek, context, error = %err, "key operation failed")
            }
        }
    }
}

/// The keystores of this deployment (the software one and one per
/// configured token), and the audit sink every operation reports to.
pub struct Kms {
    stores: HashMap<KeystoreId, Arc<dyn Keystore>>,
    audit: Arc<dyn AuditSink>,
}

impl std::fmt::Debug for Kms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kms")
            .field("stores", &self.stores.values().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Kms {
    pub fn new(audit: Arc<dyn AuditSink>) -> Kms {
        Kms { stores: HashMap::new(), audit }
    }

    /// Adds a keystore; two for the same software store or token label is a
    /// configuration error.
    pub fn add(&mut self, store: Arc<dyn Keystore>) -> Result<(), KmsError> {
        let id = store.id();
        if self.stores.contains_key(&id) {
            return Err(KmsError::Invalid {
                what: "KMS configuration",
                reason: format!("{id} is configured twice"),
            });
        }
        self.stores.insert(id, store);
        Ok(())
    }

    pub fn store(&self, id: &KeystoreId) -> Option<&Arc<dyn Keystore>> {
        self.stores.get(id)
    }

    fn route(&self, kek: &KekRef) -> Result<&Arc<dyn Keystore>, KmsError> {
        let id = kek.keystore();
        self.stores
            .get(&id)
            .ok_or_else(|| KmsError::NoKeystore { keystore: id.to_string(), kek: kek.to_string() })
    }

    fn record<T>(
        &self,
        actor: &str,
        op: KeyOp,
        kek: String,
        context: Option<&str>,
        result: Result<T, KmsError>,
    ) -> Result<T, KmsError> {
        let unix_ms =
            SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        self.audit.record(&KeyEvent {
            unix_ms,
            actor: actor.to_string(),
            op,
            kek,
            context: context.map(str::to_string),
            error: result.as_ref().err().map(ToString::to_string),
        });
        result
    }

    /// A new KEK named `label` in the keystore `keystore`.
    pub fn create_kek(
        &self,
        keystore: &KeystoreId,
        label: &str,
        actor: &str,
    ) -> Result<KekRef, KmsError> {
        let name = match keystore {
            KeystoreId::Software => KekRef::Software { id: label.into() },
            KeystoreId::Pkcs11 { token_label } => {
                KekRef::Pkcs11 { token_label: token_label.clone(), key_label: label.into() }
            }
        };
        let result = self.route(&name).and_then(|s| s.create_kek(label));
        self.record(actor, KeyOp::CreateKek, name.to_string(), None, result)
    }

    /// Checks that `kek` is reachable and usable (e.g. before binding an
    /// account to a customer key, or as a health check).
    pub fn probe(&self, kek: &KekRef, actor: &str) -> Result<(), KmsError> {
        let result = self.route(kek).and_then(|s| s.probe(kek));
        self.record(actor, KeyOp::Probe, kek.to_string(), None, result)
    }

    /// A fresh DEK for the disk `context`, and its wrapped form to store.
    pub fn new_data_key(
        &self,
        kek: &KekRef,
        context: &str,
        actor: &str,
    ) -> Result<(DataKey, WrappedKey), KmsError> {
        let dek = DataKey::generate();
        let wrapped = self.wrap(kek, &dek, context, actor)?;
        Ok((dek, wrapped))
    }

    pub fn wrap(
        &self,
        kek: &KekRef,
        dek: &DataKey,
        context: &str,
        actor: &str,
    ) -> Result<WrappedKey, KmsError> {
        let result = self.route(kek).and_then(|s| s.wrap(kek, dek, context));
        self.record(actor, KeyOp::Wrap, kek.to_string(), Some(context), result)
    }

    pub fn unwrap(
        &self,
        wrapped: &WrappedKey,
        context: &str,
        actor: &str,
    ) -> Result<DataKey, KmsError> {
        let result = self.route(&wrapped.kek).and_then(|s| s.unwrap(wrapped, context));
        self.record(actor, KeyOp::Unwrap, wrapped.kek.to_string(), Some(context), result)
    }

    /// Re-seals a DEK for another disk and/or KEK: a snapshot or image that
    /// shares its volume's encrypted bytes, or an account moving to a
    /// customer key. Audited as an unwrap and a wrap.
    pub fn rewrap(
        &self,
        wrapped: &WrappedKey,
        context: &str,
        new_kek: &KekRef,
        new_context: &str,
        actor: &str,
    ) -> Result<WrappedKey, KmsError> {
        let dek = self.unwrap(wrapped, context, actor)?;
        self.wrap(new_kek, &dek, new_context, actor)
    }

    /// Destroys a KEK (crypto-shredding of everything it wraps).
    pub fn destroy_kek(&self, kek: &KekRef, actor: &str) -> Result<(), KmsError> {
        let result = self.route(kek).and_then(|s| s.destroy_kek(kek));
        self.record(actor, KeyOp::DestroyKek, kek.to_string(), None, result)
    }
}

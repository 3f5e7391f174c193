//! Key custody for the control plane: each account's key-encryption key
//! (KEK), and the data keys (DEKs) of its volumes and snapshots.
//!
//! An account's KEK is created in the software keystore the first time it
//! needs one, unless the operator bound the account to a key in an HSM. A
//! DEK is generated per disk and stored only wrapped by the KEK, bound to the
//! disk's ID. Every key operation is recorded in `key_events` (which key,
//! which disk, when, by whom, outcome) in the caller's transaction, so the
//! record commits with the change it explains.

use socle_kms::{DataKey, KekRef, KeystoreId, KmsError, WrappedKey};
use socle_store::keys::{self as key_store, KeyEvent};
use socle_store::{now_iso, Conn};
use socle_types::error::ErrorCode;
use socle_types::ids::AccountId;
use socle_types::ApiError;

use crate::Cloud;

/// A key problem as the user sees it: a revoked or unreachable customer key
/// is the user's (or their HSM's) business and is said plainly; anything
/// else is internal.
pub(crate) fn kms_error(e: &KmsError, what: &str) -> ApiError {
    match e {
        KmsError::KeyRevoked { .. } | KmsError::TokenUnavailable { .. } | KmsError::AuthFailed { .. } => ApiError::new(
            ErrorCode::InvalidResourceState,
            format!("the encryption key protecting {what} is unavailable (revoked, or its HSM is unreachable)"),
        ),
        other => ApiError::internal(format!("key custody for {what}: {other}")),
    }
}

fn record(conn: &Conn, account: &AccountId, actor: &str, op: &str, kek: &str, resource: &str, outcome: &str) -> Result<(), ApiError> {
    key_store::record(
        conn,
        &KeyEvent {
            at: now_iso(),
            account_id: account.to_string(),
            actor: actor.to_string(),
            operation: op.to_string(),
            kek_ref: kek.to_string(),
            resource_id: resource.to_string(),
            outcome: outcome.to_string(),
        },
    )?;
    Ok(())
}

fn outcome<T>(r: &Result<T, KmsError>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => e.to_string(),
    }
}

/// The account's KEK, created (software keystore) on first use.
pub(crate) fn account_kek(cloud: &Cloud, conn: &Conn, account: &AccountId, actor: &str) -> Result<KekRef, ApiError> {
    if let Some(json) = key_store::account_kek(conn, account)? {
        return serde_json::from_str(&json).map_err(|e| ApiError::internal(format!("stored KEK reference of {account}: {e}")));
    }
    let label = format!("account-{account}");
    // The KEK may exist without its row: a transaction that created it was
    // rolled back (a refused or dry-run call). The label is the account's, so
    // the existing key is this account's key: adopt it.
    let created = match cloud.keystores.with(|k| k.create_kek(&KeystoreId::Software, &label, actor)) {
        Err(KmsError::KeyExists { .. }) => Ok(KekRef::Software { id: label.clone() }),
        other => other,
    };
    let shown = match &created {
        Ok(k) => k.to_string(),
        Err(_) => format!("software:{label}"),
    };
    record(conn, account, actor, "create_kek", &shown, account.as_str(), &outcome(&created))?;
    let kek = created.map_err(|e| kms_error(&e, &format!("account {account}")))?;
    let json = serde_json::to_string(&kek).map_err(|e| ApiError::internal(e.to_string()))?;
    key_store::set_account_kek(conn, account, &json, &now_iso())?;
    Ok(kek)
}

/// A fresh DEK for `resource`, returned wrapped (JSON) for storage.
pub(crate) fn wrap_new_key(cloud: &Cloud, conn: &Conn, account: &AccountId, actor: &str, resource: &str) -> Result<String, ApiError> {
    let kek = account_kek(cloud, conn, account, actor)?;
    let made = cloud.keystores.with(|k| k.new_data_key(&kek, resource, actor));
    record(conn, account, actor, "wrap", &kek.to_string(), resource, &outcome(&made))?;
    let (_dek, wrapped) = made.map_err(|e| kms_error(&e, resource))?;
    serde_json::to_string(&wrapped).map_err(|e| ApiError::internal(e.to_string()))
}

/// Unwraps the DEK of `resource` (for the host to open its disk).
pub(crate) fn unwrap_key(
    cloud: &Cloud,
    conn: &Conn,
    account: &AccountId,
    actor: &str,
    resource: &str,
    wrapped_json: &str,
) -> Result<DataKey, ApiError> {
    let wrapped: WrappedKey =
        serde_json::from_str(wrapped_json).map_err(|e| ApiError::internal(format!("stored wrapped key of {resource}: {e}")))?;
    let opened = cloud.keystores.with(|k| k.unwrap(&wrapped, resource, actor));
    record(conn, account, actor, "unwrap", &wrapped.kek.to_string(), resource, &outcome(&opened))?;
    opened.map_err(|e| kms_error(&e, resource))
}

/// Records that the DEK of `resource` was destroyed (its wrapped copy erased
/// with the row): the disk's data is unrecoverable from then on.
pub(crate) fn record_destroyed(conn: &Conn, account: &AccountId, actor: &str, resource: &str, wrapped_json: &str) -> Result<(), ApiError> {
    let kek = serde_json::from_str::<WrappedKey>(wrapped_json).map(|w| w.kek.to_string()).unwrap_or_default();
    record(conn, account, actor, "destroy_dek", &kek, resource, "ok")
}

//! Keystores of a data dir: the software keystore (`DATA/keys`) and the
//! PKCS#11 tokens the operator registered in `DATA/hsm.json`, plus binding
//! an account to a customer-held key on one of those tokens.
//!
//! `hsm.json` names each token by label with its module and a PIN file
//! (0600); PINs never appear in the database, logs or errors. The server
//! reloads the file when it meets a key on a token it does not know, so a
//! binding made with `socle account bind-key` while it runs takes effect
//! without a restart.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use socle_kms::{KekRef, Kms, KmsError, Pkcs11Keystore, SoftwareKeystore, TracingAudit, WrappedKey};
use socle_store::keys as key_store;
use socle_store::{accounts, snapshots as snapshot_store, volumes as volume_store, Conn};

/// One registered token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    pub token_label: String,
    pub module: PathBuf,
    /// A file (mode 0600) holding the user PIN.
    pub pin_file: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum HsmError {
    #[error("{path}: {reason}")]
    Config { path: String, reason: String },
    #[error(transparent)]
    Kms(#[from] KmsError),
    #[error(transparent)]
    Store(#[from] socle_store::StoreError),
    #[error("no account named {0:?}")]
    NoSuchAccount(String),
}

fn config_path(data_dir: &Path) -> PathBuf {
    data_dir.join("hsm.json")
}

pub fn load_tokens(data_dir: &Path) -> Result<Vec<TokenConfig>, HsmError> {
    let path = config_path(data_dir);
    let err = |reason: String| HsmError::Config { path: path.display().to_string(), reason };
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| err(e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(vec![]),
        Err(e) => Err(err(e.to_string())),
    }
}

/// Adds or replaces a token in `hsm.json`.
pub fn register_token(data_dir: &Path, token: TokenConfig) -> Result<(), HsmError> {
    let mut tokens = load_tokens(data_dir)?;
    tokens.retain(|t| t.token_label != token.token_label);
    tokens.push(token);
    let path = config_path(data_dir);
    crate::startup::write_private_json(&path, &tokens)
        .map_err(|e| HsmError::Config { path: path.display().to_string(), reason: e.to_string() })
}

fn open_token(t: &TokenConfig) -> Result<Pkcs11Keystore, HsmError> {
    let pin = std::fs::read_to_string(&t.pin_file).map_err(|e| HsmError::Config {
        path: t.pin_file.display().to_string(),
        reason: format!("cannot read the PIN file of token {:?}: {e}", t.token_label),
    })?;
    Ok(Pkcs11Keystore::open(&t.module, &t.token_label, pin.trim_end_matches(['\n', '\r']))?)
}

/// The keystores of a data dir, reloadable while running.
pub struct Keystores {
    data_dir: PathBuf,
    kms: RwLock<Kms>,
}

impl Keystores {
    pub fn open(data_dir: &Path) -> Result<Keystores, HsmError> {
        let mut kms = Kms::new(Arc::new(TracingAudit));
        kms.add(Arc::new(SoftwareKeystore::open(&data_dir.join("keys"))?))?;
        for t in load_tokens(data_dir)? {
            kms.add(Arc::new(open_token(&t)?))?;
        }
        Ok(Keystores { data_dir: data_dir.to_path_buf(), kms: RwLock::new(kms) })
    }

    /// Runs `f` with the keystores; if it names a token we have not opened,
    /// reloads `hsm.json` once and retries.
    pub fn with<T>(&self, f: impl Fn(&Kms) -> Result<T, KmsError>) -> Result<T, KmsError> {
        let first = f(&self.kms.read().unwrap_or_else(|p| p.into_inner()));
        match first {
            Err(KmsError::NoKeystore { .. }) => {
                self.reload();
                f(&self.kms.read().unwrap_or_else(|p| p.into_inner()))
            }
            other => other,
        }
    }

    fn reload(&self) {
        let tokens = match load_tokens(&self.data_dir) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "cannot reload the HSM tokens");
                return;
            }
        };
        let mut kms = self.kms.write().unwrap_or_else(|p| p.into_inner());
        for t in tokens {
            let known = kms.store(&socle_kms::KeystoreId::Pkcs11 { token_label: t.token_label.clone() }).is_some();
            if known {
                continue;
            }
            match open_token(&t).map_err(|e| e.to_string()).and_then(|ks| kms.add(Arc::new(ks)).map_err(|e| e.to_string())) {
                Ok(()) => tracing::info!(token = %t.token_label, "HSM token added"),
                Err(e) => tracing::warn!(token = %t.token_label, error = %e, "cannot open HSM token"),
            }
        }
    }
}

/// Binds an account to `kek` (a key on a registered token): checks the key
/// works, re-wraps every data key of the account under it, and records it as
/// the account's KEK, all in one transaction. From then on, revoking that
/// key on the token makes every disk of the account unreadable.
pub fn bind_account(conn: &Conn, keystores: &Keystores, account_name: &str, kek: &KekRef, actor: &str) -> Result<usize, HsmError> {
    keystores.with(|k| k.probe(kek, actor))?;
    let account = accounts::get_by_name(conn, account_name)?.ok_or_else(|| HsmError::NoSuchAccount(account_name.into()))?;
    let rewrap = |json: &str, context: &str| -> Result<String, HsmError> {
        let w: WrappedKey = serde_json::from_str(json)
            .map_err(|e| HsmError::Config { path: context.into(), reason: format!("stored wrapped key: {e}") })?;
        let new = keystores.with(|k| k.rewrap(&w, context, kek, context, actor))?;
        Ok(serde_json::to_string(&new).expect("serialisable"))
    };
    let mut count = 0;
    for mut v in volume_store::list(conn, &account.account_id)? {
        if let Some(json) = &v.wrapped_key {
            v.wrapped_key = Some(rewrap(json, v.volume_id.as_str())?);
            volume_store::update(conn, &v)?;
            count += 1;
        }
    }
    for mut s in snapshot_store::list_owned(conn, &account.account_id)? {
        if let Some(json) = &s.wrapped_key {
            s.wrapped_key = Some(rewrap(json, s.snapshot_id.as_str())?);
            snapshot_store::update(conn, &s)?;
            count += 1;
        }
    }
    let json = serde_json::to_string(kek).expect("serialisable");
    key_store::set_account_kek(conn, &account.account_id, &json, &socle_store::now_iso())?;
    key_store::record(
        conn,
        &key_store::KeyEvent {
            at: socle_store::now_iso(),
            account_id: account.account_id.to_string(),
            actor: actor.into(),
            operation: "bind".into(),
            kek_ref: kek.to_string(),
            resource_id: account.account_id.to_string(),
            outcome: format!("ok, {count} data keys re-wrapped"),
        },
    )?;
    Ok(count)
}

//! Accounts and access keys: creation (admin side) and lookup (authentication).

use socle_store::access_keys::{self, AccessKeyRow};
use socle_store::accounts::{self, Account, Quotas};
use socle_store::{now_iso, Conn, StoreError};
use socle_types::ids::{generate_secret_key, AccessKeyId, AccountId};

use crate::secrets::SecretBox;

/// Credentials as given to a user once; the secret is never shown again.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NewCredentials {
    #[serde(rename = "AccountId")]
    pub account_id: String,
    #[serde(rename = "AccessKey")]
    pub access_key: String,
    #[serde(rename = "SecretKey")]
    pub secret_key: String,
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("an account named {0:?} already exists")]
    NameTaken(String),
    #[error("no account named {0:?}")]
    NoSuchAccount(String),
    #[error("account names are 1 to 64 letters, digits, '-', '_' or '.'; got {0:?}")]
    BadName(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// Creates an account and its first access key.
pub fn create_account(
    conn: &Conn,
    secrets: &SecretBox,
    name: &str,
    quotas: Quotas,
) -> Result<NewCredentials, IdentityError> {
    if !valid_name(name) {
        return Err(IdentityError::BadName(name.to_string()));
    }
    if accounts::get_by_name(conn, name)?.is_some() {
        return Err(IdentityError::NameTaken(name.to_string()));
    }
    let account = Account { account_id: AccountId::generate(), name: name.to_string(), created_at: now_iso(), quotas };
    accounts::insert(conn, &account)?;
    let (key, secret) = new_access_key(&account.account_id, secrets, None, None);
    access_keys::insert(conn, &key)?;
    Ok(NewCredentials {
        account_id: account.account_id.to_string(),
        access_key: key.access_key_id.to_string(),
        secret_key: secret,
    })
}

/// A new active access key row (secret sealed) and its clear secret.
pub fn new_access_key(
    account: &AccountId,
    secrets: &SecretBox,
    tag: Option<String>,
    expiration_date: Option<String>,
) -> (AccessKeyRow, String) {
    let id = AccessKeyId::generate();
    let secret = generate_secret_key();
    let now = now_iso();
    let row = AccessKeyRow {
        secret_sealed: secrets.seal(id.as_str(), secret.as_bytes()),
        access_key_id: id,
        account_id: account.clone(),
        state: "ACTIVE".into(),
        tag,
        expiration_date,
        created_at: now.clone(),
        updated_at: now,
    };
    (row, secret)
}

/// What authentication needs to know about an access key.
pub struct KeyForAuth {
    pub account_id: AccountId,
    pub secret: String,
    pub active: bool,
    pub expiration_date: Option<String>,
}

/// Looks up an access key and unseals its secret.
pub fn key_for_auth(conn: &Conn, secrets: &SecretBox, access_key_id: &str) -> Result<Option<KeyForAuth>, String> {
    let Some(row) = access_keys::get(conn, access_key_id).map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    let secret = secrets
        .open(row.access_key_id.as_str(), &row.secret_sealed)
        .map_err(|e| format!("access key {access_key_id}: {e}"))?;
    Ok(Some(KeyForAuth {
        account_id: row.account_id,
        secret: String::from_utf8(secret).map_err(|_| format!("access key {access_key_id}: secret not UTF-8"))?,
        active: row.state == "ACTIVE",
        expiration_date: row.expiration_date,
    }))
}

pub fn set_quotas(conn: &Conn, name: &str, change: impl FnOnce(&mut Quotas)) -> Result<Account, IdentityError> {
    let mut account = accounts::get_by_name(conn, name)?.ok_or_else(|| IdentityError::NoSuchAccount(name.into()))?;
    change(&mut account.quotas);
    accounts::set_quotas(conn, &account.account_id, &account.quotas)?;
    Ok(account)
}

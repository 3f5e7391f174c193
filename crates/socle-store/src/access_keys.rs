//! Access keys. The secret is stored sealed (encrypted) by the caller; this
//! module never sees it in clear.

use crate::params;
use crate::db::{Conn, OptionalExtension, Row};
use socle_types::ids::{AccessKeyId, AccountId};

use crate::Result;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessKeyRow {
    pub access_key_id: AccessKeyId,
    pub account_id: AccountId,
    pub secret_sealed: Vec<u8>,
    /// `ACTIVE` or `INACTIVE`.
    pub state: String,
    pub tag: Option<String>,
    pub expiration_date: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

const COLUMNS: &str =
    "access_key_id, account_id, secret_sealed, state, tag, expiration_date, created_at, updated_at";

fn from_row(r: &Row) -> crate::Result<AccessKeyRow> {
    Ok(AccessKeyRow {
        access_key_id: AccessKeyId::from_trusted(r.get(0)?),
        account_id: AccountId::from_trusted(r.get(1)?),
        secret_sealed: r.get(2)?,
        state: r.get(3)?,
        tag: r.get(4)?,
        expiration_date: r.get(5)?,
        created_at: r.get(6)?,
        updated_at: r.get(7)?,
    })
}

pub fn insert(conn: &Conn, k: &AccessKeyRow) -> Result<()> {
    conn.execute(
        &format!("INSERT INTO access_keys ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"),
        params![
            k.access_key_id.as_str(),
            k.account_id.as_str(),
            k.secret_sealed,
            k.state,
            k.tag,
            k.expiration_date,
            k.created_at,
            k.updated_at
        ],
    )?;
    Ok(())
}

/// Looks a key up by ID alone: used by authentication, before the account is known.
pub fn get(conn: &Conn, id: &str) -> Result<Option<AccessKeyRow>> {
    Ok(conn
        .query_row(&format!("SELECT {COLUMNS} FROM access_keys WHERE access_key_id = ?1"), [id], from_row)
        .optional()?)
}

pub fn list_for_account(conn: &Conn, account: &AccountId) -> Result<Vec<AccessKeyRow>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM access_keys WHERE account_id = ?1 ORDER BY created_at, access_key_id"
    ))?;
    let rows = stmt.query_map([account.as_str()], from_row)?.collect::<crate::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Updates state, tag and expiration of a key of `account`. Returns false if
/// the account has no such key.
pub fn update(conn: &Conn, account: &AccountId, k: &AccessKeyRow) -> Result<bool> {
    let n = conn.execute(
        "UPDATE access_keys SET state = ?3, tag = ?4, expiration_date = ?5, updated_at = ?6
         WHERE access_key_id = ?1 AND account_id = ?2",
        params![k.access_key_id.as_str(), account.as_str(), k.state, k.tag, k.expiration_date, k.updated_at],
    )?;
    Ok(n == 1)
}

pub fn delete(conn: &Conn, account: &AccountId, id: &str) -> Result<bool> {
    let n = conn.execute(
        "DELETE FROM access_keys WHERE access_key_id = ?1 AND account_id = ?2",
        params![id, account.as_str()],
    )?;
    Ok(n == 1)
}

//! SSH keypairs. Only the public key is stored; a generated private key is
//! returned once, at creation, and never kept.

use crate::params;
use crate::db::{Conn, OptionalExtension, Row};
use socle_types::ids::{AccountId, KeypairId};

use crate::Result;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeypairRow {
    pub keypair_id: KeypairId,
    pub account_id: AccountId,
    pub name: String,
    pub key_type: String,
    pub fingerprint: String,
    pub public_key: String,
    pub created_at: String,
}

const COLUMNS: &str = "keypair_id, account_id, name, key_type, fingerprint, public_key, created_at";

fn from_row(r: &Row) -> crate::Result<KeypairRow> {
    Ok(KeypairRow {
        keypair_id: KeypairId::from_trusted(r.get(0)?),
        account_id: AccountId::from_trusted(r.get(1)?),
        name: r.get(2)?,
        key_type: r.get(3)?,
        fingerprint: r.get(4)?,
        public_key: r.get(5)?,
        created_at: r.get(6)?,
    })
}

/// Fails with a unique violation when the account already has that name.
pub fn insert(conn: &Conn, k: &KeypairRow) -> Result<()> {
    conn.execute(
        &format!("INSERT INTO keypairs ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
        params![
            k.keypair_id.as_str(),
            k.account_id.as_str(),
            k.name,
            k.key_type,
            k.fingerprint,
            k.public_key,
            k.created_at
        ],
    )?;
    Ok(())
}

/// One page of the keypairs `listing` selects (see [`crate::listing`]).
pub fn page(conn: &Conn, listing: &crate::listing::Listing, after: Option<&crate::listing::After>, limit: i64) -> Result<Vec<KeypairRow>> {
    listing.page(conn, COLUMNS, after, limit, from_row)
}

pub fn get_by_name(conn: &Conn, account: &AccountId, name: &str) -> Result<Option<KeypairRow>> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM keypairs WHERE account_id = ?1 AND name = ?2"),
            params![account.as_str(), name],
            from_row,
        )
        .optional()?)
}

pub fn get(conn: &Conn, account: &AccountId, id: &KeypairId) -> Result<Option<KeypairRow>> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM keypairs WHERE account_id = ?1 AND keypair_id = ?2"),
            params![account.as_str(), id.as_str()],
            from_row,
        )
        .optional()?)
}

pub fn delete(conn: &Conn, account: &AccountId, id: &KeypairId) -> Result<bool> {
    let n = conn.execute(
        "DELETE FROM keypairs WHERE account_id = ?1 AND keypair_id = ?2",
        params![account.as_str(), id.as_str()],
    )?;
    Ok(n == 1)
}

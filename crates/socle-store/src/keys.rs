//! Key custody records: each account's KEK reference, and the audit trail of
//! key operations (which key, which resource, when, by whom — never key
//! material).

use crate::params;
use crate::db::{Conn, OptionalExtension};
use socle_types::ids::AccountId;

use crate::Result;

pub fn account_kek(conn: &Conn, account: &AccountId) -> Result<Option<String>> {
    Ok(conn
        .query_row("SELECT kek_ref FROM account_keks WHERE account_id = ?1", [account.as_str()], |r| r.get(0))
        .optional()?)
}

pub fn set_account_kek(conn: &Conn, account: &AccountId, kek_ref: &str, now: &str) -> Result<()> {
    conn.execute(
        "INSERT INTO account_keks (account_id, kek_ref, created_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (account_id) DO UPDATE SET kek_ref = excluded.kek_ref",
        params![account.as_str(), kek_ref, now],
    )?;
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEvent {
    pub at: String,
    pub account_id: String,
    /// Who caused it: an access key ID, or `reconciler`, `admin`.
    pub actor: String,
    /// wrap, unwrap, destroy, bind.
    pub operation: String,
    pub kek_ref: String,
    pub resource_id: String,
    /// ok, or the error kind.
    pub outcome: String,
}

pub fn record(conn: &Conn, e: &KeyEvent) -> Result<()> {
    conn.execute(
        "INSERT INTO key_events (at, account_id, actor, operation, kek_ref, resource_id, outcome)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![e.at, e.account_id, e.actor, e.operation, e.kek_ref, e.resource_id, e.outcome],
    )?;
    Ok(())
}

pub fn events_for(conn: &Conn, resource_id: &str) -> Result<Vec<KeyEvent>> {
    let mut stmt = conn.prepare(
        "SELECT at, account_id, actor, operation, kek_ref, resource_id, outcome FROM key_events
         WHERE resource_id = ?1 ORDER BY id",
    )?;
    let rows = stmt
        .query_map([resource_id], |r| {
            Ok(KeyEvent {
                at: r.get(0)?,
                account_id: r.get(1)?,
                actor: r.get(2)?,
                operation: r.get(3)?,
                kek_ref: r.get(4)?,
                resource_id: r.get(5)?,
                outcome: r.get(6)?,
            })
        })?
        .collect::<crate::Result<Vec<_>>>()?;
    Ok(rows)
}

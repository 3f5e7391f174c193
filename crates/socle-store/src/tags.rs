//! Tags on resources. A tag row carries the owning account so that reading
//! tags never needs to join the resource tables, and one account can never
//! read another's tags.

use crate::params;
use crate::db::{Conn, Row};
use socle_types::ids::AccountId;

use crate::Result;

/// At most this many tags per resource, as on Outscale.
pub const MAX_TAGS_PER_RESOURCE: i64 = 50;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagRow {
    pub resource_id: String,
    pub resource_type: String,
    pub key: String,
    pub value: String,
}

fn from_row(r: &Row) -> crate::Result<TagRow> {
    Ok(TagRow { resource_id: r.get(0)?, resource_type: r.get(1)?, key: r.get(2)?, value: r.get(3)? })
}

/// Sets (inserts or overwrites) a tag.
pub fn upsert(conn: &Conn, account: &AccountId, t: &TagRow) -> Result<()> {
    conn.execute(
        "INSERT INTO tags (account_id, resource_id, resource_type, key, value) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (resource_id, key) DO UPDATE SET value = excluded.value",
        params![account.as_str(), t.resource_id, t.resource_type, t.key, t.value],
    )?;
    Ok(())
}

pub fn count_for_resource(conn: &Conn, resource_id: &str) -> Result<i64> {
    Ok(conn.query_row("SELECT COUNT(*) FROM tags WHERE resource_id = ?1", [resource_id], |r| r.get(0))?)
}

/// Deletes a tag; when `value` is given, only if it has that value (OSC
/// semantics of DeleteTags).
pub fn delete(conn: &Conn, account: &AccountId, resource_id: &str, key: &str, value: Option<&str>) -> Result<()> {
    conn.execute(
        "DELETE FROM tags WHERE account_id = ?1 AND resource_id = ?2 AND key = ?3 AND (CAST(?4 AS TEXT) IS NULL OR value = ?4)",
        params![account.as_str(), resource_id, key, value],
    )?;
    Ok(())
}

pub fn delete_all_for_resource(conn: &Conn, resource_id: &str) -> Result<()> {
    conn.execute("DELETE FROM tags WHERE resource_id = ?1", [resource_id])?;
    Ok(())
}

pub fn list(conn: &Conn, account: &AccountId) -> Result<Vec<TagRow>> {
    let mut stmt = conn.prepare(
        "SELECT resource_id, resource_type, key, value FROM tags WHERE account_id = ?1 ORDER BY resource_id, key",
    )?;
    let rows = stmt.query_map([account.as_str()], from_row)?.collect::<crate::Result<Vec<_>>>()?;
    Ok(rows)
}

/// The tags of the given resources of `account`, by resource then key.
pub fn for_resources(conn: &Conn, account: &AccountId, resource_ids: &[&str]) -> Result<Vec<TagRow>> {
    if resource_ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT resource_id, resource_type, key, value FROM tags WHERE account_id = ? AND resource_id IN ({})
         ORDER BY resource_id, key",
        vec!["?"; resource_ids.len()].join(", ")
    );
    let mut params = vec![crate::Value::Text(account.to_string())];
    params.extend(resource_ids.iter().map(|id| crate::Value::Text((*id).to_string())));
    conn.query_map(&sql, params, from_row)
}

pub fn for_resource(conn: &Conn, resource_id: &str) -> Result<Vec<TagRow>> {
    let mut stmt = conn.prepare(
        "SELECT resource_id, resource_type, key, value FROM tags WHERE resource_id = ?1 ORDER BY key",
    )?;
    let rows = stmt.query_map([resource_id], from_row)?.collect::<crate::Result<Vec<_>>>()?;
    Ok(rows)
}

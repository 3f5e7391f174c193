//! Volume snapshots and who may use them.

use crate::params;
use crate::db::{Conn, OptionalExtension, Row};
use socle_types::ids::{AccountId, HostId, SnapshotId};

use crate::Result;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRow {
    pub snapshot_id: SnapshotId,
    pub account_id: AccountId,
    pub volume_id: Option<String>,
    pub volume_size: i64,
    pub description: String,
    pub client_token: Option<String>,
    /// OSC state: pending, completed, error, deleting.
    pub state: String,
    pub progress: i64,
    pub wrapped_key: Option<String>,
    pub is_public: bool,
    /// Host work owed: '' (none), create, delete.
    pub pending: String,
    pub created_at: String,
    /// The host it lives on (None only for rows made before hosts existed,
    /// until the start that gives them the local host).
    pub host_id: Option<HostId>,
}

const COLUMNS: &str = "snapshot_id, account_id, volume_id, volume_size, description, client_token, state, progress, \
                       wrapped_key, is_public, pending, created_at, host_id";

fn from_row(r: &Row) -> crate::Result<SnapshotRow> {
    Ok(SnapshotRow {
        snapshot_id: SnapshotId::from_trusted(r.get(0)?),
        account_id: AccountId::from_trusted(r.get(1)?),
        volume_id: r.get(2)?,
        volume_size: r.get(3)?,
        description: r.get(4)?,
        client_token: r.get(5)?,
        state: r.get(6)?,
        progress: r.get(7)?,
        wrapped_key: r.get(8)?,
        is_public: r.get(9)?,
        pending: r.get(10)?,
        created_at: r.get(11)?,
        host_id: r.get::<_, Option<String>>(12)?.map(HostId::from_trusted),
    })
}

pub fn insert(conn: &Conn, s: &SnapshotRow) -> Result<()> {
    conn.execute(
        &format!("INSERT INTO snapshots ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"),
        params![
            s.snapshot_id.as_str(),
            s.account_id.as_str(),
            s.volume_id,
            s.volume_size,
            s.description,
            s.client_token,
            s.state,
            s.progress,
            s.wrapped_key,
            s.is_public,
            s.pending,
            s.created_at,
            s.host_id.as_ref().map(HostId::as_str)
        ],
    )?;
    Ok(())
}

pub fn update(conn: &Conn, s: &SnapshotRow) -> Result<()> {
    conn.execute(
        "UPDATE snapshots SET state = ?2, progress = ?3, wrapped_key = ?4, is_public = ?5, pending = ?6, description = ?7
         WHERE snapshot_id = ?1",
        params![s.snapshot_id.as_str(), s.state, s.progress, s.wrapped_key, s.is_public, s.pending, s.description],
    )?;
    Ok(())
}

pub fn delete(conn: &Conn, id: &SnapshotId) -> Result<()> {
    conn.execute("DELETE FROM snapshots WHERE snapshot_id = ?1", [id.as_str()])?;
    Ok(())
}

/// A snapshot `account` owns.
pub fn get_owned(conn: &Conn, account: &AccountId, id: &SnapshotId) -> Result<Option<SnapshotRow>> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM snapshots WHERE snapshot_id = ?1 AND account_id = ?2"),
            params![id.as_str(), account.as_str()],
            from_row,
        )
        .optional()?)
}

const VISIBLE: &str = "(account_id = ?1 OR is_public = 1 OR snapshot_id IN
                         (SELECT snapshot_id FROM snapshot_shares WHERE account_id = ?1))";

/// A snapshot `account` may use: its own, public ones, and ones shared with it.
pub fn get_visible(conn: &Conn, account: &AccountId, id: &SnapshotId) -> Result<Option<SnapshotRow>> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM snapshots WHERE snapshot_id = ?2 AND {VISIBLE}"),
            params![account.as_str(), id.as_str()],
            from_row,
        )
        .optional()?)
}

/// What [`crate::listing::Listing::visible`] needs to list the snapshots an
/// account may see (every `?` is that account).
pub const VISIBLE_TO: &str =
    "account_id = ? OR is_public = 1 OR snapshot_id IN (SELECT snapshot_id FROM snapshot_shares WHERE account_id = ?)";

/// The account's own snapshots.
pub fn list_owned(conn: &Conn, account: &AccountId) -> Result<Vec<SnapshotRow>> {
    conn.query_map(&format!("SELECT {COLUMNS} FROM snapshots WHERE account_id = ?1 ORDER BY created_at, snapshot_id"), [account.as_str()], from_row)
}

/// The account's snapshot made with `token` (CreateSnapshot's ClientToken).
pub fn get_by_client_token(conn: &Conn, account: &AccountId, token: &str) -> Result<Option<SnapshotRow>> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM snapshots WHERE account_id = ?1 AND client_token = ?2 ORDER BY created_at LIMIT 1"),
            params![account.as_str(), token],
            from_row,
        )
        .optional()?)
}

/// One page of the snapshots `listing` selects (see [`crate::listing`]).
pub fn page(conn: &Conn, listing: &crate::listing::Listing, after: Option<&crate::listing::After>, limit: i64) -> Result<Vec<SnapshotRow>> {
    listing.page(conn, COLUMNS, after, limit, from_row)
}

pub fn get_any(conn: &Conn, id: &SnapshotId) -> Result<Option<SnapshotRow>> {
    Ok(conn
        .query_row(&format!("SELECT {COLUMNS} FROM snapshots WHERE snapshot_id = ?1"), [id.as_str()], from_row)
        .optional()?)
}

pub fn list_unsettled(conn: &Conn) -> Result<Vec<SnapshotRow>> {
    let mut stmt =
        conn.prepare(&format!("SELECT {COLUMNS} FROM snapshots WHERE pending != '' ORDER BY created_at, snapshot_id"))?;
    let rows = stmt.query_map([], from_row)?.collect::<crate::Result<Vec<_>>>()?;
    Ok(rows)
}

pub fn shares(conn: &Conn, id: &SnapshotId) -> Result<Vec<String>> {
    let mut stmt = conn.prepare("SELECT account_id FROM snapshot_shares WHERE snapshot_id = ?1 ORDER BY account_id")?;
    let rows = stmt.query_map([id.as_str()], |r| r.get(0))?.collect::<crate::Result<Vec<_>>>()?;
    Ok(rows)
}

pub fn add_share(conn: &Conn, id: &SnapshotId, account: &str) -> Result<()> {
    conn.execute(
        "INSERT INTO snapshot_shares (snapshot_id, account_id) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
        params![id.as_str(), account],
    )?;
    Ok(())
}

pub fn remove_share(conn: &Conn, id: &SnapshotId, account: &str) -> Result<()> {
    conn.execute(
        "DELETE FROM snapshot_shares WHERE snapshot_id = ?1 AND account_id = ?2",
        params![id.as_str(), account],
    )?;
    Ok(())
}

/// Every snapshot ID the database knows (to find orphan files after a crash).
pub fn all_ids(conn: &Conn) -> Result<Vec<String>> {
    let mut stmt = conn.prepare("SELECT snapshot_id FROM snapshots")?;
    let rows = stmt.query_map([], |r| r.get(0))?.collect::<crate::Result<Vec<_>>>()?;
    Ok(rows)
}

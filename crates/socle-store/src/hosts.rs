//! The hosts of a cloud (machines whose agent the control plane drives)
//! and the one-time tokens with which a host joins.

use crate::db::{Conn, OptionalExtension, Row};
use crate::params;
use crate::Result;
use socle_types::ids::{HostId, JoinTokenId};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRow {
    pub host_id: HostId,
    pub subregion: String,
    /// host:port of its agent.
    pub endpoint: String,
    pub cert_sha256: String,
    /// ready, cordoned, unreachable or revoked.
    pub state: String,
    pub joined_at: String,
    pub seen_at: Option<String>,
}

const COLUMNS: &str = "host_id, subregion, endpoint, cert_sha256, state, joined_at, seen_at";

fn from_row(r: &Row) -> Result<HostRow> {
    Ok(HostRow {
        host_id: HostId::from_trusted(r.get(0)?),
        subregion: r.get(1)?,
        endpoint: r.get(2)?,
        cert_sha256: r.get(3)?,
        state: r.get(4)?,
        joined_at: r.get(5)?,
        seen_at: r.get(6)?,
    })
}

pub fn insert(conn: &Conn, h: &HostRow) -> Result<()> {
    conn.execute(
        &format!("INSERT INTO hosts ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
        params![h.host_id.as_str(), h.subregion, h.endpoint, h.cert_sha256, h.state, h.joined_at, h.seen_at],
    )?;
    Ok(())
}

/// Every host, by subregion then ID.
pub fn list(conn: &Conn) -> Result<Vec<HostRow>> {
    conn.query_map(&format!("SELECT {COLUMNS} FROM hosts ORDER BY subregion, host_id"), [], from_row)
}

pub fn get(conn: &Conn, host_id: &HostId) -> Result<Option<HostRow>> {
    Ok(conn.query_row(&format!("SELECT {COLUMNS} FROM hosts WHERE host_id = ?1"), [host_id.as_str()], from_row).optional()?)
}

/// Sets a host's state; false when there is no such host. A revoked host
/// stays revoked.
pub fn set_state(conn: &Conn, host_id: &HostId, state: &str) -> Result<bool> {
    let n = conn.execute("UPDATE hosts SET state = ?2 WHERE host_id = ?1 AND state <> 'revoked'", params![host_id.as_str(), state])?;
    Ok(n == 1)
}

/// What the health check saw: `ready` when the agent answered (unless the
/// operator cordoned the host), `unreachable` when it did not; revoked
/// hosts are left alone.
pub fn record_check(conn: &Conn, host_id: &HostId, answered: bool, now: &str) -> Result<()> {
    if answered {
        conn.execute(
            "UPDATE hosts SET seen_at = ?2, state = CASE WHEN state = 'unreachable' THEN 'ready' ELSE state END \
             WHERE host_id = ?1 AND state <> 'revoked'",
            params![host_id.as_str(), now],
        )?;
    } else {
        conn.execute("UPDATE hosts SET state = 'unreachable' WHERE host_id = ?1 AND state IN ('ready', 'cordoned')", params![host_id.as_str()])?;
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostTokenRow {
    pub token_id: JoinTokenId,
    pub subregion: String,
    pub secret_sealed: Vec<u8>,
    pub expires_at: String,
    pub used_by: Option<HostId>,
}

pub fn insert_token(conn: &Conn, t: &HostTokenRow) -> Result<()> {
    conn.execute(
        "INSERT INTO host_tokens (token_id, subregion, secret_sealed, expires_at, used_by) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![t.token_id.as_str(), t.subregion, t.secret_sealed, t.expires_at, t.used_by.as_ref().map(HostId::as_str)],
    )?;
    Ok(())
}

pub fn get_token(conn: &Conn, token_id: &JoinTokenId) -> Result<Option<HostTokenRow>> {
    Ok(conn
        .query_row(
            "SELECT token_id, subregion, secret_sealed, expires_at, used_by FROM host_tokens WHERE token_id = ?1",
            [token_id.as_str()],
            |r| {
                Ok(HostTokenRow {
                    token_id: JoinTokenId::from_trusted(r.get(0)?),
                    subregion: r.get(1)?,
                    secret_sealed: r.get(2)?,
                    expires_at: r.get(3)?,
                    used_by: r.get::<_, Option<String>>(4)?.map(HostId::from_trusted),
                })
            },
        )
        .optional()?)
}

/// Marks a token used by `host_id`; false when it was used already (two
/// joins racing with one token: one wins).
pub fn use_token(conn: &Conn, token_id: &JoinTokenId, host_id: &HostId) -> Result<bool> {
    Ok(conn.execute("UPDATE host_tokens SET used_by = ?2 WHERE token_id = ?1 AND used_by IS NULL", params![token_id.as_str(), host_id.as_str()])? == 1)
}

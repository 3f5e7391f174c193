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
    /// ready, unreachable or revoked.
    pub state: String,
    /// The operator keeps new VMs off it.
    pub cordoned: bool,
    pub joined_at: String,
    pub seen_at: Option<String>,
    /// Schedulable capacity (the host's own, times the overcommit ratios).
    pub vcpus: i64,
    pub memory_mib: i64,
    /// What the VMs placed there reserve (until they terminate).
    pub used_vcpus: i64,
    pub used_memory_mib: i64,
    /// The account whose dedicated VM runs there, if any.
    pub dedicated_to: Option<String>,
}

impl HostRow {
    /// A host as it joins: nothing known of its capacity yet, and
    /// `unreachable` (never seen) until its agent first answers a health
    /// check with the certificate the join gave it. A host whose join
    /// answer was lost never does: it stays so, never gets a VM, and
    /// `socle host remove` takes it out.
    pub fn joining(host_id: HostId, subregion: String, endpoint: String, cert_sha256: String, now: String) -> HostRow {
        HostRow {
            host_id,
            subregion,
            endpoint,
            cert_sha256,
            state: "unreachable".into(),
            cordoned: false,
            joined_at: now,
            seen_at: None,
            vcpus: 0,
            memory_mib: 0,
            used_vcpus: 0,
            used_memory_mib: 0,
            dedicated_to: None,
        }
    }
}

const COLUMNS: &str =
    "host_id, subregion, endpoint, cert_sha256, state, joined_at, seen_at, vcpus, memory_mib, used_vcpus, used_memory_mib, dedicated_to, cordoned";

fn from_row(r: &Row) -> Result<HostRow> {
    Ok(HostRow {
        host_id: HostId::from_trusted(r.get(0)?),
        subregion: r.get(1)?,
        endpoint: r.get(2)?,
        cert_sha256: r.get(3)?,
        state: r.get(4)?,
        joined_at: r.get(5)?,
        seen_at: r.get(6)?,
        vcpus: r.get(7)?,
        memory_mib: r.get(8)?,
        used_vcpus: r.get(9)?,
        used_memory_mib: r.get(10)?,
        dedicated_to: r.get(11)?,
        cordoned: r.get(12)?,
    })
}

/// Records a new host (its capacity and use come later: see
/// [`record_capacity`]).
pub fn insert(conn: &Conn, h: &HostRow) -> Result<()> {
    conn.execute(
        "INSERT INTO hosts (host_id, subregion, endpoint, cert_sha256, state, joined_at, seen_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![h.host_id.as_str(), h.subregion, h.endpoint, h.cert_sha256, h.state, h.joined_at, h.seen_at],
    )?;
    Ok(())
}

/// Records the host of `socle up` (its agent on this machine, reached over
/// a Unix socket, not through a join) if it is not known yet; its
/// endpoint is updated if the socket moved. Returns its row.
pub fn ensure_local(conn: &Conn, host_id: &HostId, subregion: &str, endpoint: &str, now: &str) -> Result<HostRow> {
    conn.execute(
        "INSERT INTO hosts (host_id, subregion, endpoint, cert_sha256, state, joined_at) VALUES (?1, ?2, ?3, '', 'ready', ?4) \
         ON CONFLICT (host_id) DO UPDATE SET endpoint = excluded.endpoint",
        params![host_id.as_str(), subregion, endpoint, now],
    )?;
    get(conn, host_id)?.ok_or(crate::StoreError::NoRows)
}

/// Sets what a host can take: its own CPUs and memory times the
/// overcommit ratios (what it already holds is kept, even above).
pub fn record_capacity(conn: &Conn, host_id: &HostId, vcpus: i64, memory_mib: i64) -> Result<()> {
    conn.execute(
        "UPDATE hosts SET vcpus = ?2, memory_mib = ?3 WHERE host_id = ?1 AND (vcpus <> ?2 OR memory_mib <> ?3)",
        params![host_id.as_str(), vcpus, memory_mib],
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

/// The subregions that have a host: a ready one with `ready_only`, else
/// any host not revoked (a subregion whose hosts are all away still is).
pub fn subregions(conn: &Conn, ready_only: bool) -> Result<Vec<String>> {
    let which = if ready_only { "state = 'ready' AND cordoned = 0" } else { "state <> 'revoked'" };
    conn.query_map(&format!("SELECT DISTINCT subregion FROM hosts WHERE {which} ORDER BY subregion"), [], |r| r.get(0))
}

/// The ready host of `subregion` that is least loaded (where a new volume
/// goes).
pub fn least_loaded_in(conn: &Conn, subregion: &str) -> Result<Option<HostId>> {
    Ok(conn
        .query_row(
            "SELECT host_id FROM hosts WHERE state = 'ready' AND cordoned = 0 AND subregion = ?1 \
             ORDER BY COALESCE(used_vcpus * 1000 / NULLIF(vcpus, 0), 1000000000), host_id LIMIT 1",
            [subregion],
            |r| Ok(HostId::from_trusted(r.get(0)?)),
        )
        .optional()?)
}

/// Sets a host's state; false when there is no such host. A revoked host
/// stays revoked.
pub fn set_state(conn: &Conn, host_id: &HostId, state: &str) -> Result<bool> {
    let n = conn.execute("UPDATE hosts SET state = ?2 WHERE host_id = ?1 AND state <> 'revoked'", params![host_id.as_str(), state])?;
    Ok(n == 1)
}

/// What keeps a host from being removed: what still lives there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HostHolds {
    /// VMs not terminated.
    pub vms: i64,
    pub volumes: i64,
    pub snapshots: i64,
}

impl HostHolds {
    pub fn is_empty(&self) -> bool {
        *self == HostHolds::default()
    }
}

/// Removes a host from the cloud for good, if nothing lives there any
/// more (else says what does, and changes nothing); None when there is no
/// such host. Terminated VMs that named it keep the name.
pub fn remove(conn: &Conn, host_id: &HostId) -> Result<Option<HostHolds>> {
    if get(conn, host_id)?.is_none() {
        return Ok(None);
    }
    let count = |sql: &str| -> Result<i64> { conn.query_row(sql, [host_id.as_str()], |r| r.get(0)) };
    let holds = HostHolds {
        vms: count("SELECT COUNT(*) FROM vms WHERE host_id = ?1 AND state <> 'terminated'")?,
        volumes: count("SELECT COUNT(*) FROM volumes WHERE host_id = ?1")?,
        snapshots: count("SELECT COUNT(*) FROM snapshots WHERE host_id = ?1")?,
    };
    if holds.is_empty() {
        conn.execute("DELETE FROM host_reservations WHERE host_id = ?1", [host_id.as_str()])?;
        conn.execute("DELETE FROM hosts WHERE host_id = ?1", [host_id.as_str()])?;
    }
    Ok(Some(holds))
}

/// Cordons a host (no new VM is placed there) or lifts it; false when
/// there is no such host.
pub fn set_cordoned(conn: &Conn, host_id: &HostId, cordoned: bool) -> Result<bool> {
    Ok(conn.execute("UPDATE hosts SET cordoned = ?2 WHERE host_id = ?1", params![host_id.as_str(), cordoned])? == 1)
}

/// What the health check saw: `ready` when the agent answered,
/// `unreachable` when it did not; revoked hosts are left alone.
pub fn record_check(conn: &Conn, host_id: &HostId, answered: bool, now: &str) -> Result<()> {
    if answered {
        conn.execute(
            "UPDATE hosts SET seen_at = ?2, state = 'ready' \
             WHERE host_id = ?1 AND state <> 'revoked'",
            params![host_id.as_str(), now],
        )?;
    } else {
        conn.execute("UPDATE hosts SET state = 'unreachable' WHERE host_id = ?1 AND state = 'ready'", params![host_id.as_str()])?;
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

/// The SHA-256 of the cloud's CA certificate, once a server recorded it.
pub fn recorded_ca(conn: &Conn) -> Result<Option<String>> {
    Ok(conn.query_row("SELECT cert_sha256 FROM cloud_ca WHERE one = 1", [], |r| r.get(0)).optional()?)
}

/// Records `cert_sha256` as the cloud's CA unless one is recorded already;
/// returns the one recorded (the first server's, if several race).
pub fn record_ca(conn: &Conn, cert_sha256: &str, now: &str) -> Result<String> {
    conn.execute(
        "INSERT INTO cloud_ca (one, cert_sha256, recorded_at) VALUES (1, ?1, ?2) ON CONFLICT (one) DO NOTHING",
        params![cert_sha256, now],
    )?;
    Ok(recorded_ca(conn)?.unwrap_or_default())
}

#[cfg(test)]
mod ca_tests {
    #[test]
    fn the_first_ca_recorded_stays_the_clouds() {
        crate::on_each_engine(|c| {
            assert_eq!(super::recorded_ca(c)?, None);
            assert_eq!(super::record_ca(c, "aa", "t1")?, "aa");
            assert_eq!(super::record_ca(c, "bb", "t2")?, "aa", "a second CA does not replace the first");
            assert_eq!(super::recorded_ca(c)?.as_deref(), Some("aa"));
            Ok(())
        });
    }
}

#[cfg(test)]
mod remove_tests {
    use super::*;
    use crate::accounts::{self, Account};
    use crate::snapshots::{self, SnapshotRow};
    use socle_types::ids::{AccountId, SnapshotId};

    #[test]
    fn a_joined_host_is_ready_once_it_answers_and_leaves_once_nothing_lives_there() {
        crate::on_each_engine(|c| {
            let id = HostId::from_trusted("h-0000000a".into());
            insert(c, &HostRow::joining(id.clone(), "eu-west-2b".into(), "10.0.0.2:8701".into(), String::new(), "t0".into()))?;
            let account = AccountId::from_trusted("a-1".into());
            accounts::insert(c, &Account { account_id: account.clone(), name: "a".into(), created_at: crate::now_iso(), quotas: Default::default() })?;
            let snap = SnapshotRow {
                snapshot_id: SnapshotId::generate(),
                account_id: account,
                volume_id: None,
                volume_size: 1,
                description: String::new(),
                client_token: None,
                state: "completed".into(),
                progress: 100,
                wrapped_key: None,
                is_public: false,
                pending: String::new(),
                created_at: "t1".into(),
                host_id: Some(id.clone()),
            };
            snapshots::insert(c, &snap)?;
            assert_eq!(get(c, &id)?.unwrap().state, "unreachable", "a joined host is not ready before its agent answers");
            record_check(c, &id, false, "t1")?;
            assert_eq!(get(c, &id)?.unwrap().state, "unreachable");
            record_check(c, &id, true, "t2")?;
            assert_eq!(get(c, &id)?.unwrap().state, "ready", "its agent answered");
            let holds = remove(c, &id)?.expect("the host exists");
            assert_eq!(holds, HostHolds { vms: 0, volumes: 0, snapshots: 1 });
            assert!(get(c, &id)?.is_some(), "refused: it stays");
            snapshots::delete(c, &snap.snapshot_id)?;
            assert!(remove(c, &id)?.expect("still there").is_empty());
            assert!(get(c, &id)?.is_none());
            assert_eq!(remove(c, &id)?, None, "gone");
            Ok(())
        });
    }
}

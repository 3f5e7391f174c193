//! Virtual machines.
//!
//! Two columns drive the lifecycle: `desired` (what the user last asked for:
//! `running`, `stopped` or `terminated`) and `state` (what `ReadVms` reports:
//! the OSC states). API operations write `desired` (and the transitional
//! `state`); the reconciler acts on the host and writes `state`. Because the
//! wish is persisted, a crash at any point resumes from the database.

use crate::params;
use crate::db::{Conn, OptionalExtension, Row};
use socle_types::ids::{AccountId, HostId, ImageId, ReservationId, VmId};

use crate::accounts::Quotas;
use crate::Result;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmRow {
    pub vm_id: VmId,
    pub account_id: AccountId,
    pub reservation_id: ReservationId,
    pub image_id: ImageId,
    pub vm_type: String,
    pub vcpus: i64,
    pub memory_mib: i64,
    pub performance: String,
    pub keypair_name: Option<String>,
    /// Base64, as given by the user.
    pub user_data: String,
    pub subregion: String,
    pub deletion_protection: bool,
    pub client_token: Option<String>,
    pub launch_number: i64,
    pub state: String,
    pub desired: String,
    pub force_stop: bool,
    pub state_reason: String,
    pub created_at: String,
    pub terminated_at: Option<String>,
    /// The host it lives on (None only for rows made before hosts existed,
    /// until the start that gives them the local host).
    pub host_id: Option<HostId>,
    /// `default`, or `dedicated`: its host carries no other account's VM.
    pub tenancy: String,
}

const COLUMNS: &str = "vm_id, account_id, reservation_id, image_id, vm_type, vcpus, memory_mib, performance, \
     keypair_name, user_data, subregion, deletion_protection, client_token, launch_number, state, desired, \
     force_stop, state_reason, created_at, terminated_at, host_id, tenancy";

fn from_row(r: &Row) -> crate::Result<VmRow> {
    Ok(VmRow {
        vm_id: VmId::from_trusted(r.get(0)?),
        account_id: AccountId::from_trusted(r.get(1)?),
        reservation_id: ReservationId::from_trusted(r.get(2)?),
        image_id: ImageId::from_trusted(r.get(3)?),
        vm_type: r.get(4)?,
        vcpus: r.get(5)?,
        memory_mib: r.get(6)?,
        performance: r.get(7)?,
        keypair_name: r.get(8)?,
        user_data: r.get(9)?,
        subregion: r.get(10)?,
        deletion_protection: r.get(11)?,
        client_token: r.get(12)?,
        launch_number: r.get(13)?,
        state: r.get(14)?,
        desired: r.get(15)?,
        force_stop: r.get(16)?,
        state_reason: r.get(17)?,
        created_at: r.get(18)?,
        terminated_at: r.get(19)?,
        host_id: r.get::<_, Option<String>>(20)?.map(HostId::from_trusted),
        tenancy: r.get(21)?,
    })
}

/// What an account currently consumes: every VM not yet terminated counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub vms: i64,
    pub vcpus: i64,
    pub memory_mib: i64,
}

pub fn usage(conn: &Conn, account: &AccountId) -> Result<Usage> {
    Ok(conn.query_row(
        "SELECT COUNT(*), COALESCE(SUM(vcpus), 0), COALESCE(SUM(memory_mib), 0)
         FROM vms WHERE account_id = ?1 AND state != 'terminated'",
        [account.as_str()],
        |r| Ok(Usage { vms: r.get(0)?, vcpus: r.get(1)?, memory_mib: r.get(2)? }),
    )?)
}

/// Whether `account` may add `add` to what it uses.
pub fn check_quota(tx: &Conn, account: &AccountId, quotas: &Quotas, add: Usage) -> Result<Result<(), QuotaExceeded>> {
    let used = usage(tx, account)?;
    Ok(if used.vms + add.vms > quotas.max_vms {
        Err(QuotaExceeded::Vms { max: quotas.max_vms, used: used.vms })
    } else if used.vcpus + add.vcpus > quotas.max_vcpus {
        Err(QuotaExceeded::Vcpus { max: quotas.max_vcpus, used: used.vcpus })
    } else if used.memory_mib + add.memory_mib > quotas.max_memory_mib {
        Err(QuotaExceeded::Memory { max_mib: quotas.max_memory_mib, used_mib: used.memory_mib })
    } else {
        Ok(())
    })
}

/// Which quota a create would break.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaExceeded {
    Vms { max: i64, used: i64 },
    Vcpus { max: i64, used: i64 },
    Memory { max_mib: i64, used_mib: i64 },
}

/// Inserts `vms` (all for one account) if, and only if, the account stays
/// within `quotas` afterwards.
///
/// The check and the insert run in one IMMEDIATE transaction: SQLite takes
/// the write lock at BEGIN, so no concurrent create can slip between the
/// usage read and the insert — 50 parallel calls cannot overshoot.
pub fn insert_within_quota(
    tx: &Conn,
    account: &AccountId,
    quotas: &Quotas,
    vms: &[VmRow],
) -> Result<Result<(), QuotaExceeded>> {
    let add = Usage { vms: vms.len() as i64, vcpus: vms.iter().map(|v| v.vcpus).sum(), memory_mib: vms.iter().map(|v| v.memory_mib).sum() };
    if let Err(e) = check_quota(tx, account, quotas, add)? {
        return Ok(Err(e));
    }
    let mut stmt = tx.prepare(&format!(
        "INSERT INTO vms ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22)"
    ))?;
    for v in vms {
        stmt.execute(params![
            v.vm_id.as_str(),
            v.account_id.as_str(),
            v.reservation_id.as_str(),
            v.image_id.as_str(),
            v.vm_type,
            v.vcpus,
            v.memory_mib,
            v.performance,
            v.keypair_name,
            v.user_data,
            v.subregion,
            v.deletion_protection,
            v.client_token,
            v.launch_number,
            v.state,
            v.desired,
            v.force_stop,
            v.state_reason,
            v.created_at,
            v.terminated_at,
            v.host_id.as_ref().map(HostId::as_str),
            v.tenancy
        ])?;
    }
    Ok(Ok(()))
}

/// One page of the VMs `listing` selects (see [`crate::listing`]).
pub fn page(conn: &Conn, listing: &crate::listing::Listing, after: Option<&crate::listing::After>, limit: i64) -> Result<Vec<VmRow>> {
    listing.page(conn, COLUMNS, after, limit, from_row)
}

/// All VMs of an account that ReadVms may show, in creation order.
pub fn list(conn: &Conn, account: &AccountId) -> Result<Vec<VmRow>> {
    let mut stmt =
        conn.prepare(&format!("SELECT {COLUMNS} FROM vms WHERE account_id = ?1 ORDER BY created_at, vm_id"))?;
    let rows = stmt.query_map([account.as_str()], from_row)?.collect::<crate::Result<Vec<_>>>()?;
    Ok(rows)
}

pub fn list_by_reservation(conn: &Conn, account: &AccountId, r: &ReservationId) -> Result<Vec<VmRow>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM vms WHERE account_id = ?1 AND reservation_id = ?2 ORDER BY launch_number"
    ))?;
    let rows = stmt.query_map([account.as_str(), r.as_str()], from_row)?.collect::<crate::Result<Vec<_>>>()?;
    Ok(rows)
}

/// One VM of `account`. Another account's VM is `None`, like an absent one.
pub fn get(conn: &Conn, account: &AccountId, id: &VmId) -> Result<Option<VmRow>> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM vms WHERE vm_id = ?1 AND account_id = ?2"),
            params![id.as_str(), account.as_str()],
            from_row,
        )
        .optional()?)
}

/// One VM whatever its account: for the reconciler only.
pub fn get_any(conn: &Conn, id: &VmId) -> Result<Option<VmRow>> {
    Ok(conn
        .query_row(&format!("SELECT {COLUMNS} FROM vms WHERE vm_id = ?1"), [id.as_str()], from_row)
        .optional()?)
}

/// Every VM whose host side may need work: not yet terminated.
pub fn list_live(conn: &Conn) -> Result<Vec<VmRow>> {
    let mut stmt =
        conn.prepare(&format!("SELECT {COLUMNS} FROM vms WHERE state != 'terminated' ORDER BY created_at, vm_id"))?;
    let rows = stmt.query_map([], from_row)?.collect::<crate::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Records a user's request: the new wish and the transitional state.
pub fn set_lifecycle(conn: &Conn, id: &VmId, state: &str, desired: &str, force_stop: bool) -> Result<()> {
    conn.execute(
        "UPDATE vms SET state = ?2, desired = ?3, force_stop = ?4 WHERE vm_id = ?1",
        params![id.as_str(), state, desired, force_stop],
    )?;
    Ok(())
}

/// Gives up a wish the host could not fulfil (a start that failed: the VM
/// becomes stopped), provided the wish is still `acted_on`: a newer one
/// (DeleteVms during the start) is kept. Returns whether it changed.
pub fn abandon_wish(conn: &Conn, id: &VmId, acted_on: &str, state: &str, desired: &str) -> Result<bool> {
    let n = conn.execute(
        "UPDATE vms SET state = ?3, desired = ?4, force_stop = 1 WHERE vm_id = ?1 AND desired = ?2",
        params![id.as_str(), acted_on, state, desired],
    )?;
    Ok(n == 1)
}

/// Records what the host did, provided the user's wish is still `acted_on`:
/// if the user changed their mind while the host worked, the state is left
/// for the next reconciler pass rather than overwritten with a stale result.
/// Returns whether the row changed. `terminated_at` is set on `terminated`.
pub fn set_state(conn: &Conn, id: &VmId, acted_on: &str, state: &str, reason: &str, now: &str) -> Result<bool> {
    let n = conn.execute(
        "UPDATE vms SET state = ?3, state_reason = ?4,
                terminated_at = CASE WHEN ?3 = 'terminated' THEN ?5 ELSE terminated_at END
         WHERE vm_id = ?1 AND desired = ?2",
        params![id.as_str(), acted_on, state, reason, now],
    )?;
    Ok(n == 1)
}

/// A guest that powered itself off: both state and wish become `stopped`,
/// unless the user asked for something else meanwhile.
pub fn mark_guest_stopped(conn: &Conn, id: &VmId) -> Result<()> {
    conn.execute(
        "UPDATE vms SET state = 'stopped', desired = 'stopped', state_reason = 'guest powered off'
         WHERE vm_id = ?1 AND desired = 'running' AND state = 'running'",
        [id.as_str()],
    )?;
    Ok(())
}

/// Saves the user-changeable settings of a VM (UpdateVm).
pub fn update_settings(conn: &Conn, vm: &VmRow) -> Result<()> {
    conn.execute(
        "UPDATE vms SET vm_type = ?2, vcpus = ?3, memory_mib = ?4, performance = ?5, keypair_name = ?6,
                user_data = ?7, deletion_protection = ?8
         WHERE vm_id = ?1",
        params![
            vm.vm_id.as_str(),
            vm.vm_type,
            vm.vcpus,
            vm.memory_mib,
            vm.performance,
            vm.keypair_name,
            vm.user_data,
            vm.deletion_protection
        ],
    )?;
    Ok(())
}

/// Forgets VMs terminated before `cutoff` (they stop showing in ReadVms),
/// with their tags. Returns how many were purged.
pub fn purge_terminated_before(conn: &Conn, cutoff: &str) -> Result<usize> {
    conn.execute(
        "DELETE FROM tags WHERE resource_id IN
           (SELECT vm_id FROM vms WHERE state = 'terminated' AND terminated_at < ?1)",
        [cutoff],
    )?;
    conn.execute("DELETE FROM vms WHERE state = 'terminated' AND terminated_at < ?1", [cutoff])
}

/// The idempotency record of a create call with a ClientToken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTokenRecord {
    pub request_hash: String,
    /// Operation-specific result, e.g. the reservation ID of CreateVms.
    pub result: String,
}

pub fn get_client_token(
    conn: &Conn,
    account: &AccountId,
    operation: &str,
    token: &str,
) -> Result<Option<ClientTokenRecord>> {
    Ok(conn
        .query_row(
            "SELECT request_hash, result FROM client_tokens WHERE account_id = ?1 AND operation = ?2 AND token = ?3",
            params![account.as_str(), operation, token],
            |r| Ok(ClientTokenRecord { request_hash: r.get(0)?, result: r.get(1)? }),
        )
        .optional()?)
}

pub fn put_client_token(
    conn: &Conn,
    account: &AccountId,
    operation: &str,
    token: &str,
    rec: &ClientTokenRecord,
    now: &str,
) -> Result<()> {
    conn.execute(
        "INSERT INTO client_tokens (account_id, operation, token, request_hash, result, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![account.as_str(), operation, token, rec.request_hash, rec.result, now],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounts::{self, Account};

    fn vm(account: &AccountId, vcpus: i64) -> VmRow {
        VmRow {
            vm_id: VmId::generate(),
            account_id: account.clone(),
            reservation_id: ReservationId::generate(),
            image_id: ImageId::generate(),
            vm_type: "t2.small".into(),
            vcpus,
            memory_mib: 1024,
            performance: "high".into(),
            keypair_name: None,
            user_data: String::new(),
            subregion: "eu-west-2a".into(),
            deletion_protection: false,
            client_token: None,
            launch_number: 0,
            state: "pending".into(),
            desired: "running".into(),
            force_stop: false,
            state_reason: String::new(),
            created_at: crate::now_iso(),
            terminated_at: None,
            host_id: None,
            tenancy: "default".into(),
        }
    }

    #[test]
    fn quota_is_enforced_and_terminated_vms_free_it() {
        crate::on_each_engine(|conn| -> Result<()> {
                let id = AccountId::generate();
                let quotas = Quotas { max_vms: 2, max_vcpus: 3, max_memory_mib: 10_000, max_public_ips: 1 };
                accounts::insert(conn, &Account { account_id: id.clone(), name: "a".into(), created_at: crate::now_iso(), quotas })?;
                assert_eq!(insert_within_quota(conn, &id, &quotas, &[vm(&id, 1), vm(&id, 1)])?, Ok(()));
                assert_eq!(insert_within_quota(conn, &id, &quotas, &[vm(&id, 1)])?, Err(QuotaExceeded::Vms { max: 2, used: 2 }));
                let first = list(conn, &id)?.remove(0);
                set_lifecycle(conn, &first.vm_id, "shutting-down", "terminated", false)?;
                assert!(set_state(conn, &first.vm_id, "terminated", "terminated", "", &crate::now_iso())?);
                assert_eq!(insert_within_quota(conn, &id, &quotas, &[vm(&id, 3)])?, Err(QuotaExceeded::Vcpus { max: 3, used: 1 }));
                assert_eq!(insert_within_quota(conn, &id, &quotas, &[vm(&id, 1)])?, Ok(()));
                assert_eq!(usage(conn, &id)?, Usage { vms: 2, vcpus: 2, memory_mib: 2048 });
                Ok(())
            });
    }

    /// ReadVms' query: filters, tag filters and keyset pages in SQL, on both
    /// engines, never showing another account's VMs.
    #[test]
    fn pages_follow_filters_tags_and_positions() {
        use crate::listing::{After, Listing};
        use crate::tags::{self, TagRow};
        crate::on_each_engine(|conn| {
            let (a, b) = (AccountId::generate(), AccountId::generate());
            for (id, name) in [(&a, "a"), (&b, "b")] {
                accounts::insert(conn, &Account { account_id: id.clone(), name: name.into(), created_at: crate::now_iso(), quotas: Quotas::default() })?;
            }
            let mut mine = Vec::new();
            for i in 0..5 {
                let mut v = vm(&a, 1);
                v.created_at = format!("2026-01-01T00:00:0{i}.000Z");
                v.state = if i % 2 == 0 { "running" } else { "stopped" }.into();
                insert_within_quota(conn, &a, &Quotas::default(), std::slice::from_ref(&v))?.unwrap();
                mine.push(v);
            }
            let other = vm(&b, 1);
            insert_within_quota(conn, &b, &Quotas::default(), std::slice::from_ref(&other))?.unwrap();
            let tag = |v: &VmRow, k: &str, val: &str| TagRow { resource_id: v.vm_id.to_string(), resource_type: "vm".into(), key: k.into(), value: val.into() };
            tags::upsert(conn, &a, &tag(&mine[1], "env", "prod"))?;
            tags::upsert(conn, &a, &tag(&mine[3], "env", "dev"))?;
            tags::upsert(conn, &b, &tag(&other, "env", "prod"))?;
            let ids = |rows: Vec<VmRow>| rows.into_iter().map(|r| r.vm_id).collect::<Vec<_>>();

            let all = Listing::new("vms", "vm_id", a.as_str());
            let first = page(conn, &all, None, 2)?;
            assert_eq!(ids(first.clone()), [mine[0].vm_id.clone(), mine[1].vm_id.clone()]);
            let after = After { created_at: first[1].created_at.clone(), id: first[1].vm_id.to_string() };
            assert_eq!(ids(page(conn, &all, Some(&after), 10)?), [mine[2].vm_id.clone(), mine[3].vm_id.clone(), mine[4].vm_id.clone()]);

            let mut running = Listing::new("vms", "vm_id", a.as_str());
            running.any_of("state", Some(&["running"]));
            assert_eq!(page(conn, &running, None, 10)?.len(), 3);
            let mut by_id = Listing::new("vms", "vm_id", a.as_str());
            by_id.any_of("vm_id", Some(&[mine[4].vm_id.as_str(), other.vm_id.as_str()]));
            assert_eq!(ids(page(conn, &by_id, None, 10)?), [mine[4].vm_id.clone()], "another account's VM stays hidden");
            let none: &[&str] = &[];
            let mut empty = Listing::new("vms", "vm_id", a.as_str());
            empty.any_of("vm_id", Some(none));
            assert!(page(conn, &empty, None, 10)?.is_empty(), "an empty filter list matches nothing");

            let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
            let mut prod = Listing::new("vms", "vm_id", a.as_str());
            prod.tags(None, None, Some(&s(&["env=prod"])));
            assert_eq!(ids(page(conn, &prod, None, 10)?), [mine[1].vm_id.clone()]);
            let mut env = Listing::new("vms", "vm_id", a.as_str());
            env.tags(Some(&s(&["env"])), Some(&s(&["dev", "qa"])), None);
            assert_eq!(ids(page(conn, &env, None, 10)?), [mine[3].vm_id.clone()]);
            Ok(())
        });
    }

    #[test]
    fn other_accounts_vms_are_invisible() {
        crate::on_each_engine(|conn| -> Result<()> {
                let a = AccountId::generate();
                let b = AccountId::generate();
                for (id, name) in [(&a, "a"), (&b, "b")] {
                    accounts::insert(conn, &Account { account_id: id.clone(), name: name.into(), created_at: crate::now_iso(), quotas: Quotas::default() })?;
                }
                let v = vm(&a, 1);
                insert_within_quota(conn, &a, &Quotas::default(), std::slice::from_ref(&v))?.unwrap();
                assert!(get(conn, &a, &v.vm_id)?.is_some());
                assert!(get(conn, &b, &v.vm_id)?.is_none());
                assert!(list(conn, &b)?.is_empty());
                Ok(())
            });
    }
}

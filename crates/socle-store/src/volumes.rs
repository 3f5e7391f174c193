//! Block volumes and their links to VMs.
//!
//! As for VMs, the API records what the user asked and the reconciler does
//! the host work: `pending` names the work still owed (`create`, `resize`,
//! `delete`), `link_state` the link work (`attaching`, `detaching`). A crash
//! leaves that work recorded, and the next pass finishes it.

use crate::params;
use crate::db::{Conn, OptionalExtension, Row};
use socle_types::ids::{AccountId, HostId, VmId, VolumeId};

use crate::Result;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeRow {
    pub volume_id: VolumeId,
    pub account_id: AccountId,
    pub size_gib: i64,
    pub volume_type: String,
    pub iops: Option<i64>,
    pub subregion: String,
    pub snapshot_id: Option<String>,
    /// For a root volume: the image it is a copy of.
    pub source_image_id: Option<String>,
    pub client_token: Option<String>,
    pub state: String,
    /// The data key wrapped by the account's KEK (JSON); None once destroyed.
    pub wrapped_key: Option<String>,
    pub vm_id: Option<VmId>,
    pub device_name: Option<String>,
    pub link_state: Option<String>,
    pub delete_on_vm_deletion: bool,
    pub linked_at: Option<String>,
    pub pending: String,
    pub state_reason: String,
    pub created_at: String,
    /// Bumped by every save: host work saves its outcome only over the
    /// revision it read (see `update_if_unchanged`).
    pub revision: i64,
    /// The host it lives on (None only for rows made before hosts existed,
    /// until the start that gives them the local host).
    pub host_id: Option<HostId>,
}

const COLUMNS: &str = "volume_id, account_id, size_gib, volume_type, iops, subregion, snapshot_id, client_token, \
     state, wrapped_key, vm_id, device_name, link_state, delete_on_vm_deletion, linked_at, pending, state_reason, created_at, \
     source_image_id, revision, host_id";

/// The device name of a VM's root volume.
pub const ROOT_DEVICE: &str = "/dev/sda1";

fn from_row(r: &Row) -> crate::Result<VolumeRow> {
    Ok(VolumeRow {
        volume_id: VolumeId::from_trusted(r.get(0)?),
        account_id: AccountId::from_trusted(r.get(1)?),
        size_gib: r.get(2)?,
        volume_type: r.get(3)?,
        iops: r.get(4)?,
        subregion: r.get(5)?,
        snapshot_id: r.get(6)?,
        client_token: r.get(7)?,
        state: r.get(8)?,
        wrapped_key: r.get(9)?,
        vm_id: r.get::<_, Option<String>>(10)?.map(VmId::from_trusted),
        device_name: r.get(11)?,
        link_state: r.get(12)?,
        delete_on_vm_deletion: r.get(13)?,
        linked_at: r.get(14)?,
        pending: r.get(15)?,
        state_reason: r.get(16)?,
        created_at: r.get(17)?,
        source_image_id: r.get(18)?,
        revision: r.get(19)?,
        host_id: r.get::<_, Option<String>>(20)?.map(HostId::from_trusted),
    })
}

/// GiB provisioned on the storage pool: every volume and snapshot counts at
/// its full size until its files are gone.
pub fn provisioned_gib(conn: &Conn) -> Result<i64> {
    Ok(conn.query_row(
        "SELECT (SELECT COALESCE(SUM(size_gib), 0) FROM volumes) + (SELECT COALESCE(SUM(volume_size), 0) FROM snapshots)",
        [],
        |r| r.get(0),
    )?)
}

/// The pool would overflow: how much is provisioned out of what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapacityExceeded {
    pub capacity_gib: i64,
    pub provisioned_gib: i64,
}

/// Inserts `v` if the pool keeps room for it; check and insert are atomic in
/// the caller's IMMEDIATE transaction.
pub fn insert_within_capacity(
    tx: &Conn,
    v: &VolumeRow,
    capacity_gib: i64,
) -> Result<std::result::Result<(), CapacityExceeded>> {
    let provisioned = provisioned_gib(tx)?;
    if provisioned + v.size_gib > capacity_gib {
        return Ok(Err(CapacityExceeded { capacity_gib, provisioned_gib: provisioned }));
    }
    insert(tx, v)?;
    Ok(Ok(()))
}

fn insert(conn: &Conn, v: &VolumeRow) -> Result<()> {
    conn.execute(
        &format!("INSERT INTO volumes ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21)"),
        params![
            v.volume_id.as_str(),
            v.account_id.as_str(),
            v.size_gib,
            v.volume_type,
            v.iops,
            v.subregion,
            v.snapshot_id,
            v.client_token,
            v.state,
            v.wrapped_key,
            v.vm_id.as_ref().map(|i| i.as_str()),
            v.device_name,
            v.link_state,
            v.delete_on_vm_deletion,
            v.linked_at,
            v.pending,
            v.state_reason,
            v.created_at,
            v.source_image_id,
            v.revision,
            v.host_id.as_ref().map(HostId::as_str)
        ],
    )?;
    Ok(())
}

impl VolumeRow {
    pub fn is_root(&self) -> bool {
        self.device_name.as_deref() == Some(ROOT_DEVICE)
    }

    /// Host work the user waits on (creation, resizing, deletion) is under
    /// way. New I/O limits are applied in the background and hold nothing
    /// up: the volume reads available meanwhile, so it must act available.
    pub fn is_busy(&self) -> bool {
        !matches!(self.pending.as_str(), "" | "limits")
    }
}

/// Saves `v` only if nobody saved the row since `v` was read (its
/// `revision` is still the row's): host work must not overwrite what the
/// user or another task changed while it ran (a DeleteVolume during
/// creation, an UnlinkVolume during attachment, new I/O limits during a
/// limits pass, a key re-wrapped by a KEK rotation); the next pass acts on
/// the row as it now is. Returns whether the row was saved.
pub fn update_if_unchanged(conn: &Conn, v: &VolumeRow) -> Result<bool> {
    Ok(save(conn, v, true)? == 1)
}

/// Saves every mutable column of `v`, whatever was saved since it was read.
pub fn update(conn: &Conn, v: &VolumeRow) -> Result<()> {
    save(conn, v, false)?;
    Ok(())
}

fn save(conn: &Conn, v: &VolumeRow, only_over_read_revision: bool) -> Result<usize> {
    Ok(conn.execute(
        "UPDATE volumes SET size_gib = ?2, volume_type = ?3, iops = ?4, state = ?5, wrapped_key = ?6, vm_id = ?7,
                device_name = ?8, link_state = ?9, delete_on_vm_deletion = ?10, linked_at = ?11, pending = ?12,
                state_reason = ?13, revision = revision + 1
         WHERE volume_id = ?1 AND (CAST(?14 AS BIGINT) IS NULL OR revision = ?14)",
        params![
            v.volume_id.as_str(),
            v.size_gib,
            v.volume_type,
            v.iops,
            v.state,
            v.wrapped_key,
            v.vm_id.as_ref().map(|i| i.as_str()),
            v.device_name,
            v.link_state,
            v.delete_on_vm_deletion,
            v.linked_at,
            v.pending,
            v.state_reason,
            only_over_read_revision.then_some(v.revision)
        ],
    )?)
}

pub fn delete(conn: &Conn, id: &VolumeId) -> Result<()> {
    conn.execute("DELETE FROM volumes WHERE volume_id = ?1", [id.as_str()])?;
    Ok(())
}

/// One volume of `account`; another account's is `None`, like an absent one.
pub fn get(conn: &Conn, account: &AccountId, id: &VolumeId) -> Result<Option<VolumeRow>> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM volumes WHERE volume_id = ?1 AND account_id = ?2"),
            params![id.as_str(), account.as_str()],
            from_row,
        )
        .optional()?)
}

/// One volume whatever its account: for the reconciler only.
pub fn get_any(conn: &Conn, id: &VolumeId) -> Result<Option<VolumeRow>> {
    Ok(conn
        .query_row(&format!("SELECT {COLUMNS} FROM volumes WHERE volume_id = ?1"), [id.as_str()], from_row)
        .optional()?)
}

pub fn list(conn: &Conn, account: &AccountId) -> Result<Vec<VolumeRow>> {
    let mut stmt =
        conn.prepare(&format!("SELECT {COLUMNS} FROM volumes WHERE account_id = ?1 ORDER BY created_at, volume_id"))?;
    let rows = stmt.query_map([account.as_str()], from_row)?.collect::<crate::Result<Vec<_>>>()?;
    Ok(rows)
}

/// One page of the volumes `listing` selects (see [`crate::listing`]).
pub fn page(conn: &Conn, listing: &crate::listing::Listing, after: Option<&crate::listing::After>, limit: i64) -> Result<Vec<VolumeRow>> {
    listing.page(conn, COLUMNS, after, limit, from_row)
}

/// Volumes with host work owed.
pub fn list_unsettled(conn: &Conn) -> Result<Vec<VolumeRow>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM volumes WHERE (pending != '' OR link_state IN ('attaching', 'detaching'))
           -- a root disk is made when its VM is first asked to run
           -- (IS, not =: a NULL device or VM must not turn the test into NULL)
           AND NOT (pending IS NOT DISTINCT FROM 'create' AND device_name IS NOT DISTINCT FROM '/dev/sda1'
                    AND EXISTS (SELECT 1 FROM vms WHERE vms.vm_id IS NOT DISTINCT FROM volumes.vm_id AND desired != 'running'))
         ORDER BY created_at, volume_id"
    ))?;
    let rows = stmt.query_map([], from_row)?.collect::<crate::Result<Vec<_>>>()?;
    Ok(rows)
}

/// The volumes linked (or being linked) to any of `vms`, in device order.
pub fn linked_to_any(conn: &Conn, vms: &[&str]) -> Result<Vec<VolumeRow>> {
    if vms.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!("SELECT {COLUMNS} FROM volumes WHERE vm_id IN ({}) ORDER BY device_name", vec!["?"; vms.len()].join(", "));
    conn.query_map(&sql, vms.iter().map(|v| crate::Value::Text((*v).to_string())).collect::<Vec<_>>(), from_row)
}

/// Volumes linked (or being linked) to a VM, in device order.
pub fn linked_to(conn: &Conn, vm: &VmId) -> Result<Vec<VolumeRow>> {
    let mut stmt =
        conn.prepare(&format!("SELECT {COLUMNS} FROM volumes WHERE vm_id = ?1 ORDER BY device_name"))?;
    let rows = stmt.query_map([vm.as_str()], from_row)?.collect::<crate::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Every volume ID the database knows (to find orphan files after a crash).
pub fn all_ids(conn: &Conn) -> Result<Vec<String>> {
    let mut stmt = conn.prepare("SELECT volume_id FROM volumes")?;
    let rows = stmt.query_map([], |r| r.get(0))?.collect::<crate::Result<Vec<_>>>()?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounts::{self, Account};

    #[test]
    fn host_work_saves_its_outcome_only_over_the_row_it_read() {
        crate::on_each_engine(|conn| {
            let account = AccountId::from_trusted("111111111111".into());
            accounts::insert(conn, &Account { account_id: account.clone(), name: "a".into(), created_at: crate::now_iso(), quotas: Default::default() })?;
            let id = VolumeId::from_trusted("vol-0000000a".into());
            let row = VolumeRow {
                volume_id: id.clone(),
                account_id: account.clone(),
                size_gib: 4,
                volume_type: "io1".into(),
                iops: Some(200),
                subregion: "eu-west-2a".into(),
                snapshot_id: None,
                source_image_id: None,
                client_token: None,
                state: "available".into(),
                wrapped_key: None,
                vm_id: None,
                device_name: None,
                link_state: None,
                delete_on_vm_deletion: false,
                linked_at: None,
                pending: "limits".into(),
                state_reason: String::new(),
                created_at: crate::now_iso(),
                revision: 0,
                host_id: None,
            };
            insert(conn, &row)?;
            // The reconciler reads the row and starts applying 200 IOPS...
            let mut worked = get(conn, &account, &id)?.unwrap();
            // ...while the user asks for 300: still pending limits.
            let mut wish = get(conn, &account, &id)?.unwrap();
            assert!(!wish.is_busy(), "pending limits must not hold the user up");
            wish.iops = Some(300);
            update(conn, &wish)?;
            worked.pending.clear();
            assert!(!update_if_unchanged(conn, &worked)?, "a stale outcome must not be saved");
            let now = get(conn, &account, &id)?.unwrap();
            assert_eq!((now.iops, now.pending.as_str()), (Some(300), "limits"), "the wish survives for the next pass");
            // The next pass acts on the row as it now is, and saves.
            let mut next = now.clone();
            next.pending.clear();
            assert!(update_if_unchanged(conn, &next)?);
            let done = get(conn, &account, &id)?.unwrap();
            assert_eq!((done.iops, done.pending.as_str(), done.revision), (Some(300), "", now.revision + 1));
            Ok(())
        });
    }
}

//! Where VMs go: choosing a host and reserving its capacity.
//!
//! A host's row holds its schedulable capacity and what its VMs reserve, so
//! that choosing and reserving are one conditional `UPDATE … WHERE it still
//! fits … RETURNING`: two servers placing at once on PostgreSQL either see
//! each other's reservation or lose a serialization race, and the store runs
//! the losing transaction again (on SQLite writes are serialized). No host
//! is ever overbooked. Each VM's reservation is also a row of its own, so
//! that releasing it (when the VM terminates) happens exactly once.

use socle_types::ids::{AccountId, HostId, VmId};

use crate::db::{Conn, OptionalExtension, ToValue, Value};
use crate::params;
use crate::Result;

/// What one VM needs of a host.
#[derive(Debug, Clone)]
pub struct Demand<'a> {
    pub vm_id: &'a VmId,
    pub account: &'a AccountId,
    pub vcpus: i64,
    pub memory_mib: i64,
    /// Only hosts of this subregion (a Placement, or the VM's subnet's).
    pub subregion: Option<&'a str>,
    /// Only this host (the VM boots from a snapshot that lives there).
    pub host: Option<&'a HostId>,
    /// Dedicated tenancy: the host holds no other account's VM, and takes
    /// none while this one lives.
    pub dedicated: bool,
}

/// Where a VM was placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    pub host_id: HostId,
    pub subregion: String,
}

/// Reserves room for `d` on the least loaded ready host that fits (spread
/// over subregions first, then over the hosts of one subregion); None when
/// no host fits.
///
/// A dedicated VM goes to a host already dedicated to its account or to an
/// empty one, which becomes dedicated to the account until it is empty
/// again; a default VM goes to a host dedicated to no other account.
pub fn reserve(conn: &Conn, d: &Demand) -> Result<Option<Placed>> {
    // ?1 vCPUs, ?2 MiB, ?3 account; optional filters follow.
    let mut values: Vec<Value> = vec![d.vcpus.to_value(), d.memory_mib.to_value(), d.account.as_str().to_value()];
    let mut fits = String::from(
        "state = 'ready' AND cordoned = 0 AND used_vcpus + ?1 <= vcpus AND used_memory_mib + ?2 <= memory_mib",
    );
    fits.push_str(if d.dedicated {
        " AND (dedicated_to = ?3 OR used_vcpus = 0)"
    } else {
        " AND (dedicated_to IS NULL OR dedicated_to = ?3)"
    });
    if let Some(s) = d.subregion {
        values.push(s.to_value());
        fits.push_str(&format!(" AND subregion = ?{}", values.len()));
    }
    if let Some(h) = d.host {
        values.push(h.as_str().to_value());
        fits.push_str(&format!(" AND host_id = ?{}", values.len()));
    }
    let dedicate = if d.dedicated { "?3" } else { "dedicated_to" };
    // Load in thousandths of vCPUs reserved: the subregion's, then the host's.
    let sql = format!(
        "UPDATE hosts SET used_vcpus = used_vcpus + ?1, used_memory_mib = used_memory_mib + ?2, dedicated_to = {dedicate} \
         WHERE host_id = ( \
             SELECT host_id FROM hosts h WHERE {fits} \
             ORDER BY (SELECT SUM(s.used_vcpus) * 1000 / NULLIF(SUM(s.vcpus), 0) FROM hosts s \
                       WHERE s.subregion = h.subregion AND s.state = 'ready' AND s.cordoned = 0), \
                      used_vcpus * 1000 / NULLIF(vcpus, 0), host_id \
             LIMIT 1) \
           AND {fits} \
         RETURNING host_id, subregion"
    );
    let placed = conn
        .query_row(&sql, values, |r| Ok(Placed { host_id: HostId::from_trusted(r.get(0)?), subregion: r.get(1)? }))
        .optional()?;
    if let Some(p) = &placed {
        conn.execute(
            "INSERT INTO host_reservations (vm_id, host_id, vcpus, memory_mib) VALUES (?1, ?2, ?3, ?4)",
            params![d.vm_id.as_str(), p.host_id.as_str(), d.vcpus, d.memory_mib],
        )?;
    }
    Ok(placed)
}

/// Gives a VM's reservation back to its host (the VM terminated). Doing it
/// again does nothing. A host left empty is dedicated to no one anymore.
pub fn release(conn: &Conn, vm_id: &VmId) -> Result<()> {
    let held = conn
        .query_row(
            "DELETE FROM host_reservations WHERE vm_id = ?1 RETURNING host_id, vcpus, memory_mib",
            [vm_id.as_str()],
            |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?)),
        )
        .optional()?;
    if let Some((host_id, vcpus, memory_mib)) = held {
        conn.execute(
            "UPDATE hosts SET used_vcpus = used_vcpus - ?2, used_memory_mib = used_memory_mib - ?3, \
                 dedicated_to = CASE WHEN used_vcpus - ?2 <= 0 THEN NULL ELSE dedicated_to END \
             WHERE host_id = ?1",
            params![host_id, vcpus, memory_mib],
        )?;
    }
    Ok(())
}

/// Changes a VM's reservation to a new shape (UpdateVm of a stopped VM),
/// if its host has room for the difference; false when it has not.
pub fn resize(conn: &Conn, vm_id: &VmId, vcpus: i64, memory_mib: i64) -> Result<bool> {
    let Some((host_id, old_vcpus, old_memory)) = conn
        .query_row(
            "SELECT host_id, vcpus, memory_mib FROM host_reservations WHERE vm_id = ?1",
            [vm_id.as_str()],
            |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?)),
        )
        .optional()?
    else {
        return Ok(true);
    };
    let (dv, dm) = (vcpus - old_vcpus, memory_mib - old_memory);
    // Shrinking always fits; growing must fit what the host can take.
    let changed = conn.execute(
        "UPDATE hosts SET used_vcpus = used_vcpus + ?2, used_memory_mib = used_memory_mib + ?3 \
         WHERE host_id = ?1 AND (?2 <= 0 OR used_vcpus + ?2 <= vcpus) AND (?3 <= 0 OR used_memory_mib + ?3 <= memory_mib)",
        params![host_id, dv, dm],
    )?;
    if changed == 0 {
        return Ok(false);
    }
    conn.execute(
        "UPDATE host_reservations SET vcpus = ?2, memory_mib = ?3 WHERE vm_id = ?1",
        params![vm_id.as_str(), vcpus, memory_mib],
    )?;
    Ok(true)
}

/// Gives `host` whatever was made before hosts existed (VMs, volumes and
/// snapshots without a host), with a reservation for each VM that is not
/// terminated; the host's use is then recounted from its reservations.
pub fn adopt_unplaced(conn: &Conn, host: &HostId) -> Result<usize> {
    let h = host.as_str();
    conn.execute(
        "INSERT INTO host_reservations (vm_id, host_id, vcpus, memory_mib) \
         SELECT vm_id, ?1, vcpus, memory_mib FROM vms WHERE host_id IS NULL AND state <> 'terminated'",
        [h],
    )?;
    let vms = conn.execute("UPDATE vms SET host_id = ?1 WHERE host_id IS NULL", [h])?;
    let volumes = conn.execute("UPDATE volumes SET host_id = ?1 WHERE host_id IS NULL", [h])?;
    let snapshots = conn.execute("UPDATE snapshots SET host_id = ?1 WHERE host_id IS NULL", [h])?;
    conn.execute(
        "UPDATE hosts SET \
             used_vcpus = (SELECT COALESCE(SUM(vcpus), 0) FROM host_reservations WHERE host_id = ?1), \
             used_memory_mib = (SELECT COALESCE(SUM(memory_mib), 0) FROM host_reservations WHERE host_id = ?1) \
         WHERE host_id = ?1",
        [h],
    )?;
    Ok(vms + volumes + snapshots)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hosts::{self, HostRow};

    fn host(c: &Conn, id: &str, subregion: &str, vcpus: i64, memory_mib: i64) -> Result<HostId> {
        let id = HostId::from_trusted(id.to_string());
        hosts::insert(c, &HostRow::joining(id.clone(), subregion.into(), format!("{id}:1"), String::new(), "t0".into()))?;
        hosts::record_check(c, &id, true, "t0")?;
        hosts::record_capacity(c, &id, vcpus, memory_mib)?;
        Ok(id)
    }

    /// Two empty hosts of 8 vCPUs and 8 GiB in eu-west-2a.
    fn two_hosts_in_a(c: &Conn) -> Result<(HostId, HostId)> {
        Ok((host(c, "h-00000001", "eu-west-2a", 8, 8192)?, host(c, "h-00000002", "eu-west-2a", 8, 8192)?))
    }

    fn demand<'a>(vm: &'a VmId, account: &'a AccountId, vcpus: i64) -> Demand<'a> {
        Demand { vm_id: vm, account, vcpus, memory_mib: 1024, subregion: None, host: None, dedicated: false }
    }

    fn used(c: &Conn, id: &HostId) -> Result<(i64, i64, Option<String>)> {
        let h = hosts::get(c, id)?.unwrap();
        Ok((h.used_vcpus, h.used_memory_mib, h.dedicated_to))
    }

    #[test]
    fn spreads_over_subregions_then_hosts_and_never_overbooks() {
        crate::on_each_engine(|c| {
            let a1 = host(c, "h-000000a1", "eu-west-2a", 4, 8192)?;
            let a2 = host(c, "h-000000a2", "eu-west-2a", 4, 8192)?;
            let b1 = host(c, "h-000000b1", "eu-west-2b", 4, 8192)?;
            let acct = AccountId::from_trusted("a-1".into());
            let mut got = vec![];
            for _ in 0..3 {
                let vm = VmId::generate();
                got.push(reserve(c, &demand(&vm, &acct, 2))?.unwrap().host_id);
            }
            // a (0/8) → a1; b (0/4) → b1; a (2/8) vs b (2/4): a → a2.
            assert_eq!(got, vec![a1.clone(), b1.clone(), a2.clone()]);
            // Subregion b has 2 vCPUs left: a 3-vCPU VM does not fit there.
            let vm = VmId::generate();
            let only_b = Demand { subregion: Some("eu-west-2b"), ..demand(&vm, &acct, 3) };
            assert_eq!(reserve(c, &only_b)?, None);
            assert_eq!(used(c, &b1)?.0, 2, "a refused reservation takes nothing");
            // Fill everything: 12 vCPUs in all, 6 used.
            let mut placed = 0;
            while reserve(c, &demand(&VmId::generate(), &acct, 1))?.is_some() {
                placed += 1;
                assert!(placed <= 6, "overbooked");
            }
            assert_eq!(placed, 6);
            for h in [&a1, &a2, &b1] {
                assert_eq!(used(c, h)?.0, 4);
            }
            // Memory counts too.
            let vm = VmId::generate();
            let big = Demand { memory_mib: 9000, ..demand(&vm, &acct, 0) };
            assert_eq!(reserve(c, &big)?, None);
            Ok(())
        });
    }

    #[test]
    fn release_gives_back_once_and_resize_must_fit() {
        crate::on_each_engine(|c| {
            let h = host(c, "h-00000001", "eu-west-2a", 4, 4096)?;
            let acct = AccountId::from_trusted("a-1".into());
            let (v1, v2) = (VmId::generate(), VmId::generate());
            reserve(c, &demand(&v1, &acct, 2))?.unwrap();
            reserve(c, &demand(&v2, &acct, 1))?.unwrap();
            assert_eq!(used(c, &h)?, (3, 2048, None));
            assert!(!resize(c, &v2, 3, 1024)?, "2 + 3 > 4");
            assert_eq!(used(c, &h)?, (3, 2048, None), "a refused resize changes nothing");
            assert!(resize(c, &v2, 2, 512)?);
            assert_eq!(used(c, &h)?, (4, 1536, None));
            release(c, &v1)?;
            release(c, &v1)?;
            assert_eq!(used(c, &h)?, (2, 512, None), "released once");
            Ok(())
        });
    }

    #[test]
    fn dedicated_hosts_carry_one_account() {
        crate::on_each_engine(|c| {
            let (h1, h2) = two_hosts_in_a(c)?;
            let (alice, bob) = (AccountId::from_trusted("a-alice".into()), AccountId::from_trusted("a-bob".into()));
            // Bob's default VM goes to h1; Alice's dedicated VM to the empty h2.
            let bob1 = VmId::generate();
            assert_eq!(reserve(c, &demand(&bob1, &bob, 1))?.unwrap().host_id, h1);
            let alice1 = VmId::generate();
            let dedicated = |vm| Demand { dedicated: true, ..demand(vm, &alice, 1) };
            assert_eq!(reserve(c, &dedicated(&alice1))?.unwrap().host_id, h2);
            assert_eq!(used(c, &h2)?.2.as_deref(), Some("a-alice"));
            // Bob's next VMs avoid h2 even though it is emptier; when h1 is
            // full there is no room for Bob.
            for _ in 0..7 {
                assert_eq!(reserve(c, &demand(&VmId::generate(), &bob, 1))?.unwrap().host_id, h1);
            }
            assert_eq!(reserve(c, &demand(&VmId::generate(), &bob, 1))?, None);
            // Alice's own VMs (dedicated or not) may join her host.
            let alice2 = VmId::generate();
            assert_eq!(reserve(c, &demand(&alice2, &alice, 1))?.unwrap().host_id, h2);
            // A dedicated VM never joins a host with another account's VMs.
            let h3 = host(c, "h-00000003", "eu-west-2b", 8, 8192)?;
            reserve(c, &Demand { subregion: Some("eu-west-2b"), ..demand(&VmId::generate(), &bob, 1) })?.unwrap();
            let vm = VmId::generate();
            assert_eq!(reserve(c, &Demand { subregion: Some("eu-west-2b"), ..dedicated(&vm) })?, None, "h3 holds Bob's VM");
            assert_eq!(used(c, &h3)?.2, None);
            // Once Alice's VMs are gone, h2 is anyone's again.
            release(c, &alice1)?;
            assert_eq!(used(c, &h2)?.2.as_deref(), Some("a-alice"), "still holds alice2");
            release(c, &alice2)?;
            assert_eq!(used(c, &h2)?, (0, 0, None));
            let vm = VmId::generate();
            assert_eq!(reserve(c, &Demand { subregion: Some("eu-west-2a"), ..demand(&vm, &bob, 1) })?.unwrap().host_id, h2);
            Ok(())
        });
    }

    #[test]
    fn pinned_demands_and_hosts_not_ready_are_honoured() {
        crate::on_each_engine(|c| {
            let (h1, h2) = two_hosts_in_a(c)?;
            let acct = AccountId::from_trusted("a-1".into());
            let vm = VmId::generate();
            assert_eq!(reserve(c, &Demand { host: Some(&h2), ..demand(&vm, &acct, 1) })?.unwrap().host_id, h2);
            hosts::set_cordoned(c, &h1, true)?;
            hosts::set_state(c, &h2, "unreachable")?;
            assert_eq!(reserve(c, &demand(&VmId::generate(), &acct, 1))?, None);
            hosts::set_cordoned(c, &h1, false)?;
            assert_eq!(reserve(c, &demand(&VmId::generate(), &acct, 1))?.unwrap().host_id, h1);
            Ok(())
        });
    }

    /// Sixteen threads race for a host with room for ten: on PostgreSQL the
    /// losers of each race are run again by the store, and exactly ten win.
    #[test]
    fn concurrent_reservations_never_overbook() {
        for store in crate::test_stores() {
            store
                .write_sync(|c| host(c, "h-00000001", "eu-west-2a", 10, 1 << 20).map(|_| ()))
                .unwrap();
            let acct = AccountId::from_trusted("a-1".into());
            let won: usize = std::thread::scope(|s| {
                let racers: Vec<_> = (0..16)
                    .map(|_| {
                        let (store, acct) = (&store, &acct);
                        s.spawn(move || {
                            let vm = VmId::generate();
                            store.write_sync(|c| reserve(c, &demand(&vm, acct, 1))).unwrap().is_some() as usize
                        })
                    })
                    .collect();
                racers.into_iter().map(|r| r.join().unwrap()).sum()
            });
            assert_eq!(won, 10, "on {:?}", store.engine());
            let (used_vcpus, reservations) = store
                .read_sync(|c| {
                    let h = hosts::get(c, &HostId::from_trusted("h-00000001".into()))?.unwrap();
                    let n: i64 = c.query_row("SELECT COUNT(*) FROM host_reservations", [], |r| r.get(0))?;
                    Ok::<_, crate::StoreError>((h.used_vcpus, n))
                })
                .unwrap();
            assert_eq!((used_vcpus, reservations), (10, 10), "on {:?}", store.engine());
        }
    }
}

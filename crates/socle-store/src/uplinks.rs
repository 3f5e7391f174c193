//! Uplink slots: each network wired on the host with an uplink (a veth to
//! the root namespace) gets a slot, which the control plane turns into a
//! pair of addresses in the operator's uplink range. Stored so the pair
//! never changes under running guests and two networks never share one.

use std::collections::BTreeSet;

use crate::params;
use crate::db::{Conn, OptionalExtension};

use crate::Result;

/// The slot of `net_key`, allocating the lowest free one if it has none.
pub fn slot_of(conn: &Conn, net_key: &str) -> Result<i64> {
    if let Some(s) = conn
        .query_row("SELECT slot FROM uplink_slots WHERE net_key = ?1", [net_key], |r| r.get(0))
        .optional()?
    {
        return Ok(s);
    }
    let slot: i64 = conn.query_row(
        "SELECT COALESCE((SELECT MIN(a.slot + 1) FROM uplink_slots a
                          WHERE NOT EXISTS (SELECT 1 FROM uplink_slots b WHERE b.slot = a.slot + 1)
                            AND EXISTS (SELECT 1 FROM uplink_slots WHERE slot = 0)), 0)",
        [],
        |r| r.get(0),
    )?;
    conn.execute("INSERT INTO uplink_slots (net_key, slot) VALUES (?1, ?2)", params![net_key, slot])?;
    Ok(slot)
}

/// Frees the slot of a network that is no longer wired.
pub fn release(conn: &Conn, net_key: &str) -> Result<()> {
    conn.execute("DELETE FROM uplink_slots WHERE net_key = ?1", [net_key])?;
    Ok(())
}

/// Frees the slots of every network not in `wired`, whether or not it
/// ever reached the host; returns their keys. Releasing by difference
/// rather than network by network after each removal means a slot can't
/// be lost to a crash between a removal and its release.
pub fn release_all_but(conn: &Conn, wired: &BTreeSet<String>) -> Result<Vec<String>> {
    let keys: Vec<String> = conn
        .prepare("SELECT net_key FROM uplink_slots ORDER BY net_key")?
        .query_map([], |r| r.get(0))?
        .collect::<std::result::Result<_, _>>()?;
    let stale: Vec<String> = keys.into_iter().filter(|k| !wired.contains(k)).collect();
    for k in &stale {
        release(conn, k)?;
    }
    Ok(stale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_stable_unique_and_reused_lowest_first() {
        crate::on_each_engine(|conn| {
            assert_eq!(slot_of(conn, "vpc-a").unwrap(), 0);
            assert_eq!(slot_of(conn, "vpc-b").unwrap(), 1);
            assert_eq!(slot_of(conn, "vpc-c").unwrap(), 2);
            assert_eq!(slot_of(conn, "vpc-a").unwrap(), 0);
            release(conn, "vpc-a").unwrap();
            release(conn, "vpc-c").unwrap();
            assert_eq!(slot_of(conn, "pub-1").unwrap(), 0);
            assert_eq!(slot_of(conn, "pub-2").unwrap(), 2);
            Ok(())
        });
    }

    #[test]
    fn release_all_but_frees_every_other_slot() {
        crate::on_each_engine(|conn| {
            for k in ["vpc-a", "vpc-b", "vpc-c"] {
                slot_of(conn, k).unwrap();
            }
            let wired: BTreeSet<String> = ["vpc-b".to_string(), "vpc-z".to_string()].into();
            assert_eq!(release_all_but(conn, &wired).unwrap(), vec!["vpc-a", "vpc-c"]);
            assert_eq!(release_all_but(conn, &wired).unwrap(), Vec::<String>::new());
            assert_eq!(slot_of(conn, "vpc-b").unwrap(), 1, "kept");
            assert_eq!(slot_of(conn, "vpc-d").unwrap(), 0, "freed");
            Ok(())
        });
    }
}

//! Uplink slots: each network wired on the host with an uplink (a veth to
//! the root namespace) gets a slot, which the control plane turns into a
//! pair of addresses in the operator's uplink range. Stored so the pair
//! never changes under running guests and two networks never share one.

use rusqlite::{params, Connection, OptionalExtension};

use crate::Result;

/// The slot of `net_key`, allocating the lowest free one if it has none.
pub fn slot_of(conn: &Connection, net_key: &str) -> Result<i64> {
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
pub fn release(conn: &Connection, net_key: &str) -> Result<()> {
    conn.execute("DELETE FROM uplink_slots WHERE net_key = ?1", [net_key])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Store;

    #[test]
    fn slots_are_stable_unique_and_reused_lowest_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let conn = store.conn.lock().unwrap();
        assert_eq!(slot_of(&conn, "vpc-a").unwrap(), 0);
        assert_eq!(slot_of(&conn, "vpc-b").unwrap(), 1);
        assert_eq!(slot_of(&conn, "vpc-c").unwrap(), 2);
        assert_eq!(slot_of(&conn, "vpc-a").unwrap(), 0);
        release(&conn, "vpc-a").unwrap();
        release(&conn, "vpc-c").unwrap();
        assert_eq!(slot_of(&conn, "pub-1").unwrap(), 0);
        assert_eq!(slot_of(&conn, "pub-2").unwrap(), 2);
    }
}

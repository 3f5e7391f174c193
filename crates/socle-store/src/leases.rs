//! Leases: work that one server at a time must do (the reconcilers, the
//! host health check) belongs to the holder of its lease. A holder renews
//! it every few seconds; when it stops (a crash, a lost network), the lease
//! expires and another server takes it.
//!
//! Times are the servers' clocks in the store's ISO format: servers of one
//! cloud must keep their clocks in step (NTP), as for any lease.

use crate::db::{Conn, OptionalExtension};
use crate::params;
use crate::Result;

/// Takes or renews lease `name` for `holder` until `until`, unless another
/// holder has it and it has not expired at `now`. True when `holder` holds
/// it afterwards.
pub fn take(conn: &Conn, name: &str, holder: &str, now: &str, until: &str) -> Result<bool> {
    conn.execute(
        "INSERT INTO leases (name, holder, expires_at) VALUES (?1, ?2, ?4) \
         ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
         WHERE leases.holder = excluded.holder OR leases.expires_at < ?3",
        params![name, holder, now, until],
    )?;
    Ok(holder_of(conn, name)?.as_deref() == Some(holder))
}

/// Takes lease `name` from `old` (whatever its expiry) for `new` until
/// `until`; true when it did, false when `old` no longer holds it.
pub fn take_over(conn: &Conn, name: &str, old: &str, new: &str, until: &str) -> Result<bool> {
    let changed = conn.execute(
        "UPDATE leases SET holder = ?3, expires_at = ?4 WHERE name = ?1 AND holder = ?2",
        params![name, old, new, until],
    )?;
    Ok(changed == 1)
}

/// Gives lease `name` up (if `holder` has it), so another server can take it at once.
pub fn release(conn: &Conn, name: &str, holder: &str) -> Result<()> {
    conn.execute("DELETE FROM leases WHERE name = ?1 AND holder = ?2", params![name, holder])?;
    Ok(())
}

pub fn holder_of(conn: &Conn, name: &str) -> Result<Option<String>> {
    Ok(conn.query_row("SELECT holder FROM leases WHERE name = ?1", [name], |r| r.get(0)).optional()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_until_it_expires_or_is_released() {
        crate::on_each_engine(|c| {
            {
                assert!(take(c, "bg", "a", "t1", "t5")?);
                assert!(!take(c, "bg", "b", "t2", "t6")?, "b cannot take a's live lease");
                assert!(take(c, "bg", "a", "t3", "t7")?, "a renews");
                assert!(!take(c, "bg", "b", "t6", "t9")?, "still a's until t7");
                assert!(take(c, "bg", "b", "t8", "t9")?, "expired: b takes it");
                assert_eq!(holder_of(c, "bg")?.as_deref(), Some("b"));
                release(c, "bg", "a")?;
                assert_eq!(holder_of(c, "bg")?.as_deref(), Some("b"), "a cannot release b's lease");
                release(c, "bg", "b")?;
                assert!(take(c, "bg", "a", "t8", "t9")?, "released: free at once");
                Ok(())
            }
        });
    }
}

//! The background lease: of the servers on one database, only the holder
//! runs the reconcilers and the host health check (several would start a
//! VM twice, or fight over a network). [`keep`] takes and renews it; a
//! server that stops renewing — killed, cut off from the database — loses it
//! within [`TTL`], and another server takes over.
//!
//! A holder considers itself the holder only until `TTL - MARGIN` after its
//! last successful renewal began, by its own monotonic clock, so it stops
//! before another server can have taken over. Work already started then
//! runs to its end (every step is idempotent and re-checks the database).

use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use socle_store::leases;
use socle_store::{format_iso, Store};

use crate::Cloud;

/// The lease of the reconcilers and health checks.
const BACKGROUND: &str = "background";
/// How long a taken lease lasts, and how often it is renewed.
pub const TTL: Duration = Duration::from_secs(10);
const RENEW_EVERY: Duration = Duration::from_secs(2);
const MARGIN: Duration = Duration::from_secs(3);

/// This server's view of the background lease.
pub struct Lease {
    /// Who this server process is in the `leases` table: its API endpoint
    /// (for humans) and an ID drawn at each start. The endpoint alone is not
    /// unique: every server listening on `0.0.0.0:P` calls itself
    /// `http://127.0.0.1:P/…`, and a restarted server is another process
    /// than the one that may still be running its work.
    holder: String,
    held_until: Mutex<Option<Instant>>,
    /// Given up for good (the server is stopping): never taken again.
    released: std::sync::atomic::AtomicBool,
    /// What a crash left was repaired since this server last took the lease.
    pub(crate) recovered: std::sync::atomic::AtomicBool,
}

impl Lease {
    /// The lease as the server process at `endpoint` sees it.
    pub fn new(endpoint: &str) -> Lease {
        let instance: u64 = rand::random();
        Lease {
            holder: format!("{endpoint} boot {} pid {} #{instance:016x}", boot_id(), std::process::id()),
            held_until: Mutex::new(None),
            released: Default::default(),
            recovered: Default::default(),
        }
    }

    /// Who this server process is in the `leases` table.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// True while this server may do background work.
    pub fn held(&self) -> bool {
        self.held_until.lock().unwrap().is_some_and(|until| Instant::now() < until)
    }

    /// Takes the lease at once from a holder that is known dead: a server
    /// process of this very boot of this machine whose PID is gone (a server
    /// killed and started again). Any other holder keeps it until it expires.
    pub(crate) async fn take_from_dead_predecessor(&self, store: &Store) {
        let Ok(Some(old)) = store.read(|c| leases::holder_of(c, BACKGROUND)).await else { return };
        if !is_dead_here(&old) {
            return;
        }
        let now = time::OffsetDateTime::now_utc();
        let (new, until) = (self.holder.clone(), format_iso(now + TTL));
        let old_shown = old.clone();
        if let Ok(true) = store.write(move |c| leases::take_over(c, BACKGROUND, &old, &new, &until)).await {
            tracing::info!(from = %old_shown, "took over the lease of a server process of this host that is gone");
        }
    }

    /// One attempt to take or renew the lease.
    pub(crate) async fn renew(&self, store: &Store) {
        if self.released.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let started = Instant::now();
        let now = time::OffsetDateTime::now_utc();
        let (holder, from, until) = (self.holder.clone(), format_iso(now), format_iso(now + TTL));
        let was = self.held();
        match store.write(move |c| leases::take(c, BACKGROUND, &holder, &from, &until)).await {
            // A renewal that was in flight when the server released the
            // lease must not put it back.
            Ok(true) if self.released.load(std::sync::atomic::Ordering::SeqCst) => {
                let holder = self.holder.clone();
                if let Err(e) = store.write(move |c| leases::release(c, BACKGROUND, &holder)).await {
                    tracing::warn!(error = %e, "cannot release the lease of background work");
                }
            }
            Ok(true) => {
                *self.held_until.lock().unwrap() = Some(started + TTL - MARGIN);
                if !was {
                    tracing::info!(holder = %self.holder, "this server holds the lease of background work");
                }
            }
            Ok(false) => {
                *self.held_until.lock().unwrap() = None;
                if was {
                    tracing::warn!(holder = %self.holder, "another server took the lease of background work");
                }
            }
            // Keep what we had: it runs out by itself if this lasts.
            Err(e) => tracing::warn!(error = %e, "cannot renew the lease of background work"),
        }
    }

    /// Gives the lease up, so that another server takes over at once (a
    /// clean stop).
    pub async fn release(&self, store: &Store) {
        self.released.store(true, std::sync::atomic::Ordering::SeqCst);
        *self.held_until.lock().unwrap() = None;
        let holder = self.holder.clone();
        if let Err(e) = store.write(move |c| leases::release(c, BACKGROUND, &holder)).await {
            tracing::warn!(error = %e, "cannot release the lease of background work");
        }
    }
}

/// This boot of this machine (`/proc/sys/kernel/random/boot_id`), empty
/// where it cannot be read (then no holder is ever known dead).
fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").map(|s| s.trim().to_string()).unwrap_or_default()
}

/// True when `holder` names a process of this boot whose PID is not alive.
/// A PID reused meanwhile reads as alive: the lease then just expires.
fn is_dead_here(holder: &str) -> bool {
    let mut words = holder.split_whitespace();
    let (Some(_endpoint), Some("boot"), Some(boot), Some("pid"), Some(pid)) = (words.next(), words.next(), words.next(), words.next(), words.next()) else {
        return false;
    };
    let Ok(pid) = pid.parse::<i32>() else { return false };
    let here = boot_id();
    // SAFETY: kill with signal 0 only checks that the process exists.
    !here.is_empty() && boot == here && pid != std::process::id() as i32 && unsafe { libc::kill(pid, 0) } != 0
}

/// Takes and renews the background lease for ever.
pub async fn keep(cloud: Arc<Cloud>) {
    loop {
        cloud.lease.renew(&cloud.store).await;
        tokio::time::sleep(RENEW_EVERY).await;
    }
}

/// Waits until this server holds the lease.
pub async fn wait_held(cloud: &Cloud) {
    while !cloud.lease.held() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two servers on two machines, both listening on 0.0.0.0:8700, have the
    /// same endpoint: they must still be two holders.
    #[tokio::test]
    async fn two_servers_with_one_endpoint_never_both_hold_the_lease() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db")).unwrap();
        let endpoint = "http://127.0.0.1:8700/api/v1";
        let (a, b) = (Lease::new(endpoint), Lease::new(endpoint));
        assert_ne!(a.holder(), b.holder());
        for _ in 0..3 {
            a.renew(&store).await;
            b.renew(&store).await;
            assert!(a.held() && !b.held(), "a: {}, b: {}", a.held(), b.held());
        }
        // A clean stop hands over at once; the stopped one never takes it back.
        a.release(&store).await;
        b.renew(&store).await;
        a.renew(&store).await;
        assert!(b.held() && !a.held());
    }

    /// A server killed and started again takes its lease back at once; a
    /// live holder, or one of another machine, keeps it.
    #[tokio::test]
    async fn only_a_dead_process_of_this_host_loses_its_lease_early() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db")).unwrap();
        let endpoint = "http://127.0.0.1:8700/api/v1";
        let put = |holder: String| {
            let store = store.clone();
            async move {
                let until = format_iso(time::OffsetDateTime::now_utc() + TTL);
                // "now" past every expiry: whoever held it, `holder` does now.
                store.write(move |c| leases::take(c, BACKGROUND, &holder, "9999", &until)).await.unwrap();
            }
        };
        let mut dead = std::process::Command::new("true").spawn().unwrap();
        dead.wait().unwrap();
        let cases = [
            (format!("{endpoint} boot {} pid {} #1", boot_id(), dead.id()), true),
            (format!("{endpoint} boot {} pid 1 #1", boot_id()), false),
            (format!("{endpoint} boot 00000000-another-machine pid {} #1", dead.id()), false),
            (format!("{endpoint} #1"), false),
        ];
        for (old, taken) in cases {
            put(old.clone()).await;
            let me = Lease::new(endpoint);
            me.take_from_dead_predecessor(&store).await;
            let now = store.read(|c| leases::holder_of(c, BACKGROUND)).await.unwrap().unwrap();
            assert_eq!(now == me.holder(), taken, "holder was {old}");
        }
    }
}

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
    /// Who this server is in the `leases` table: its API endpoint, unique
    /// among the servers of a cloud and the same across its restarts (a
    /// restarted server takes its own lease back at once).
    holder: String,
    held_until: Mutex<Option<Instant>>,
    /// Given up for good (the server is stopping): never taken again.
    released: std::sync::atomic::AtomicBool,
    /// What a crash left was repaired since this server last took the lease.
    pub(crate) recovered: std::sync::atomic::AtomicBool,
}

impl Lease {
    pub fn new(holder: impl Into<String>) -> Lease {
        Lease { holder: holder.into(), held_until: Mutex::new(None), released: Default::default(), recovered: Default::default() }
    }

    /// True while this server may do background work.
    pub fn held(&self) -> bool {
        self.held_until.lock().unwrap().is_some_and(|until| Instant::now() < until)
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

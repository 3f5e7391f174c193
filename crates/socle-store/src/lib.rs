//! Socle's persistent state.
//!
//! One SQLite database (WAL mode) holds accounts, keys, images, keypairs,
//! VMs and tags. Queries live in one module per resource; each takes a
//! `&Connection` (or a transaction) so that callers compose them inside one
//! transaction when an invariant spans several statements (quotas).
//!
//! Access goes through [`Store::run`], which moves the blocking SQLite call
//! off the async runtime. A single connection behind a mutex is enough:
//! SQLite serialises writers anyway, and every query here is sub-millisecond.

pub mod access_keys;
pub mod accounts;
pub mod images;
pub mod internet_services;
pub mod keypairs;
pub mod nat_services;
pub mod nets;
pub mod nics;
pub mod uplinks;
pub mod public_ips;
pub mod route_tables;
mod migrations;
pub mod security_groups;
pub mod tags;
pub mod vms;
pub mod volumes;
pub mod snapshots;
pub mod keys;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use rusqlite::{Connection, Transaction, TransactionBehavior};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database task failed: {0}")]
    Join(String),
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// True when the statement broke a UNIQUE or PRIMARY KEY constraint.
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _))
            if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                || e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
}

impl Store {
    /// Opens (creating if needed) the database and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Store> {
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: a VM the API acknowledged must survive a power cut.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        migrations::apply(&mut conn)?;
        Ok(Store { conn: Arc::new(Mutex::new(conn)) })
    }

    /// Runs `f` with the connection on a blocking thread.
    pub async fn run<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, E> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            f(&mut guard)
        })
        .await
        .map_err(|e| E::from(StoreError::Join(e.to_string())))?
    }

    /// Runs `f` synchronously (for the admin CLI and start-up code).
    pub fn run_sync<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut Connection) -> Result<T, E>,
    {
        let mut guard = self.conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut guard)
    }
}

/// Now, in the OSC date format (`2010-10-01T12:34:56.789Z`). Stored as text:
/// the format sorts lexically in time order.
pub fn now_iso() -> String {
    format_iso(time::OffsetDateTime::now_utc())
}

pub fn format_iso(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// Opens an in-memory store for unit tests.
#[cfg(test)]
pub(crate) fn test_store() -> Store {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("t.db")).unwrap();
    std::mem::forget(dir);
    store
}

/// Begins a write transaction. IMMEDIATE takes SQLite's write lock at once,
/// so two writers (say the server and `socle account create`) never
/// deadlock upgrading a read lock, and check-then-write sequences inside are
/// atomic.
pub fn begin(conn: &mut Connection) -> Result<Transaction<'_>> {
    Ok(conn.transaction_with_behavior(TransactionBehavior::Immediate)?)
}

pub fn commit(tx: Transaction<'_>) -> Result<()> {
    Ok(tx.commit()?)
}

/// A storage failure is an internal error to API callers: they cannot fix it,
/// the operator finds the cause in the log.
impl From<StoreError> for socle_types::ApiError {
    fn from(e: StoreError) -> Self {
        socle_types::ApiError::internal(e.to_string())
    }
}

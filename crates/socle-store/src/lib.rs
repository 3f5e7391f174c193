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

pub mod db;
pub mod listing;
pub mod testing;
pub mod access_keys;
pub mod accounts;
pub mod hosts;
pub mod images;
pub mod internet_services;
pub mod keypairs;
pub mod leases;
pub mod nat_services;
pub mod nets;
pub mod placement;
pub mod nics;
pub mod uplinks;
pub mod public_ips;
pub mod route_tables;
mod migrations;
mod pg_tls;
pub mod security_groups;
pub mod tags;
pub mod vms;
pub mod volumes;
pub mod snapshots;
pub mod keys;

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

pub use db::{Conn, Engine, OptionalExtension, Row, Value};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database error: {}", postgres_message(.0))]
    Postgres(#[from] postgres::Error),
    #[error("the query returned no row")]
    NoRows,
    #[error("unexpected column value: {0}")]
    Column(String),
    #[error("database contention: {0}")]
    Contention(String),
    #[error("database task failed: {0}")]
    Join(String),
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The database URL asks for something Socle does not do (see `pg_tls`).
    #[error("database URL: {0}")]
    Config(String),
}

/// SQLSTATEs of PostgreSQL errors the store reasons about.
mod sqlstate {
    pub const UNIQUE_VIOLATION: &str = "23505";
    pub const SERIALIZATION_FAILURE: &str = "40001";
    pub const DEADLOCK_DETECTED: &str = "40P01";
}

impl StoreError {
    /// True when the statement broke a UNIQUE or PRIMARY KEY constraint.
    pub fn is_unique_violation(&self) -> bool {
        match self {
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => {
                e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    || e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
            }
            StoreError::Postgres(e) => e.code().map(|c| c.code()) == Some(sqlstate::UNIQUE_VIOLATION),
            _ => false,
        }
    }

    /// True when the transaction lost a race with another one and may
    /// simply be run again (PostgreSQL's serializable isolation).
    pub fn is_serialization_failure(&self) -> bool {
        matches!(self, StoreError::Postgres(e)
            if matches!(e.code().map(|c| c.code()), Some(sqlstate::SERIALIZATION_FAILURE | sqlstate::DEADLOCK_DETECTED)))
    }

    /// True when the database could not be reached (down, restarting, the
    /// connection broke): the request may succeed if tried again later.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Postgres(e) => {
                use std::error::Error;
                // Closed or never opened (refused, timed out, shutting down):
                // an I/O failure, or the server's own "cannot connect now".
                e.is_closed()
                    || e.source().is_some_and(|s| s.is::<std::io::Error>())
                    || e.to_string().starts_with("error connecting")
                    || e.code().is_some_and(|c| c.code().starts_with("57P") || c.code().starts_with("08"))
            }
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => {
                matches!(e.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
            }
            _ => false,
        }
    }
}

/// PostgreSQL's own words (message, SQLSTATE, detail), which the client
/// error's Display leaves out ("db error").
fn postgres_message(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut m = format!("{} (SQLSTATE {})", db.message(), db.code().code());
            if let Some(d) = db.detail() {
                m.push_str(": ");
                m.push_str(d);
            }
            m
        }
        None => e.to_string(),
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// How many times a write that lost a serialization race is run again
/// before the error reaches the caller.
const WRITE_ATTEMPTS: usize = 50;

/// The handle on the cloud's state: SQLite (one file, the all-in-one
/// default) or PostgreSQL (shared by several servers).
#[derive(Clone)]
pub struct Store {
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    Sqlite(Arc<SqliteFile>),
    Postgres(Arc<PgPool>),
}

/// One SQLite file: a single writer connection behind a mutex (SQLite
/// serialises writers anyway), and read-only connections, one per
/// concurrent reader, so reads never wait behind a write (WAL: a reader
/// sees the last committed state).
struct SqliteFile {
    path: std::path::PathBuf,
    writer: Mutex<rusqlite::Connection>,
    readers: Mutex<Vec<rusqlite::Connection>>,
}

/// Idle read connections kept open per SQLite file.
const IDLE_SQLITE_READERS: usize = 8;

fn sqlite_connection(path: &Path) -> Result<rusqlite::Connection> {
    let conn = rusqlite::Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

impl SqliteFile {
    fn transaction<T, E, F>(&self, kind: TxKind, mut f: F) -> Result<T, E>
    where
        E: From<StoreError>,
        F: FnMut(&Conn) -> Result<T, E>,
    {
        if kind == TxKind::Read {
            let idle = self.readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let mut conn = match idle {
                Some(c) => c,
                None => {
                    let c = sqlite_connection(&self.path)?;
                    c.pragma_update(None, "query_only", "ON").map_err(StoreError::from)?;
                    c
                }
            };
            let out = {
                // DEFERRED: a snapshot taken at the first read, no lock held.
                let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Deferred).map_err(StoreError::from)?;
                let out = f(&Conn::sqlite(&tx));
                tx.rollback().map_err(StoreError::from)?;
                out
            };
            let mut idle = self.readers.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < IDLE_SQLITE_READERS {
                idle.push(conn);
            }
            return out;
        }
        let mut guard = self.writer.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // IMMEDIATE takes SQLite's write lock at once, so two writers (say
        // the server and `socle account create`) never deadlock upgrading a
        // read lock, and check-then-write sequences inside are atomic.
        let tx = guard.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(StoreError::from)?;
        let out = f(&Conn::sqlite(&tx))?;
        match kind {
            TxKind::Write { commit: true } => tx.commit().map_err(StoreError::from)?,
            _ => tx.rollback().map_err(StoreError::from)?,
        }
        Ok(out)
    }
}

impl Store {
    /// Opens (creating if needed) the SQLite database at `path` and brings
    /// its schema up to date.
    pub fn open(path: &Path) -> Result<Store> {
        let conn = sqlite_connection(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: a VM the API acknowledged must survive a power cut.
        conn.pragma_update(None, "synchronous", "FULL")?;
        let file = SqliteFile { path: path.to_owned(), writer: Mutex::new(conn), readers: Mutex::new(Vec::new()) };
        let store = Store { backend: Backend::Sqlite(Arc::new(file)) };
        store.write_sync(|c| migrations::apply(c))?;
        Ok(store)
    }

    /// Connects to PostgreSQL (`postgres://…` or `host=… dbname=…`) and
    /// brings the schema up to date. Several servers may do so at once.
    pub fn connect(url: &str) -> Result<Store> {
        let store = Store { backend: Backend::Postgres(Arc::new(PgPool::new(url)?)) };
        store.write_sync(|c| migrations::apply(c))?;
        Ok(store)
    }

    pub fn engine(&self) -> Engine {
        match self.backend {
            Backend::Sqlite(_) => Engine::Sqlite,
            Backend::Postgres(_) => Engine::Postgres,
        }
    }

    /// Runs `f` in a read transaction (a consistent snapshot) on a blocking
    /// thread.
    pub async fn read<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&Conn) -> Result<T, E> + Send + 'static,
    {
        let store = self.clone();
        blocking(move || store.transaction(TxKind::Read, run_once(f))).await
    }

    /// Runs `f` in a write transaction and commits it, on a blocking thread.
    /// `f` may run more than once: on PostgreSQL a transaction that lost a
    /// serialization race is rolled back and run again, so `f` must not act
    /// outside the database.
    pub async fn write<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnMut(&Conn) -> Result<T, E> + Send + 'static,
    {
        self.write_or_dry_run(false, f).await
    }

    /// [`Store::write`], rolled back instead of committed when `dry_run`:
    /// a dry run checks exactly what a real call would and changes nothing.
    pub async fn write_or_dry_run<T, E, F>(&self, dry_run: bool, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnMut(&Conn) -> Result<T, E> + Send + 'static,
    {
        let store = self.clone();
        blocking(move || store.transaction(TxKind::Write { commit: !dry_run }, f)).await
    }

    /// [`Store::read`], synchronously (admin CLI, start-up, tests).
    pub fn read_sync<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send,
        E: From<StoreError> + Send,
        F: FnOnce(&Conn) -> Result<T, E> + Send,
    {
        self.off_runtime(|| self.transaction(TxKind::Read, run_once(f)))
    }

    /// [`Store::write`], synchronously (admin CLI, start-up, tests).
    pub fn write_sync<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send,
        E: From<StoreError> + Send,
        F: FnMut(&Conn) -> Result<T, E> + Send,
    {
        self.off_runtime(|| self.transaction(TxKind::Write { commit: true }, f))
    }

    /// Runs `g` where blocking is allowed. The PostgreSQL client blocks on
    /// a runtime of its own, which tokio forbids inside another runtime's
    /// worker: a synchronous call made from async code (start-up) then runs
    /// on a thread of its own.
    fn off_runtime<T: Send>(&self, g: impl FnOnce() -> T + Send) -> T {
        if matches!(self.backend, Backend::Postgres(_)) && tokio::runtime::Handle::try_current().is_ok() {
            std::thread::scope(|s| s.spawn(g).join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
        } else {
            g()
        }
    }
    fn transaction<T, E, F>(&self, kind: TxKind, f: F) -> Result<T, E>
    where
        E: From<StoreError>,
        F: FnMut(&Conn) -> Result<T, E>,
    {
        match &self.backend {
            Backend::Sqlite(file) => file.transaction(kind, f),
            Backend::Postgres(pool) => pool.transaction(kind, f),
        }
    }
}

/// A read's body as the FnMut transactions take (a read is never re-run).
fn run_once<T, E: From<StoreError>>(f: impl FnOnce(&Conn) -> Result<T, E>) -> impl FnMut(&Conn) -> Result<T, E> {
    let mut f = Some(f);
    move |c| match f.take() {
        Some(f) => f(c),
        None => Err(StoreError::Contention("a read lost a serialization race".into()).into()),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TxKind {
    Read,
    Write { commit: bool },
}

async fn blocking<T: Send + 'static, E: From<StoreError> + Send + 'static>(
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, E> {
    tokio::task::spawn_blocking(f).await.map_err(|e| E::from(StoreError::Join(e.to_string())))?
}

/// PostgreSQL sessions shared by the tasks of one process, at most
/// `MAX_SESSIONS` open at once; a broken session is dropped, not reused,
/// so a restarted server is reconnected to on the next request.
struct PgPool {
    config: postgres::Config,
    connector: pg_tls::PgConnector,
    idle: Mutex<Vec<db::PgSession>>,
    busy: Mutex<usize>,
    freed: Condvar,
}

const MAX_SESSIONS: usize = 16;
/// How long a caller waits for a session when all are busy: past it, the
/// request answers "retry later" (503) instead of waiting for ever behind a
/// stuck statement.
const SESSION_WAIT: Duration = Duration::from_secs(10);
/// The longest any one statement may take on PostgreSQL.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Closing a session blocks on the client's own runtime, which tokio
/// forbids on a runtime thread (the pool is often dropped there, at
/// shutdown): the idle sessions are closed on a thread of their own.
impl Drop for PgPool {
    fn drop(&mut self) {
        let idle = std::mem::take(self.idle.get_mut().unwrap_or_else(|p| p.into_inner()));
        if !idle.is_empty() {
            let _ = std::thread::spawn(move || drop(idle)).join();
        }
    }
}

impl PgPool {
    fn new(url: &str) -> Result<PgPool> {
        let (mut config, connector) = pg_tls::prepare(url)?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        config.application_name("socle");
        // No statement waits or runs for ever (a lock held by a stuck
        // session, a runaway query): it fails after STATEMENT_TIMEOUT, and
        // a session idle inside a transaction is ended, freeing its locks.
        let options = format!(
            "{} -c statement_timeout={}s -c idle_in_transaction_session_timeout={}s",
            config.get_options().unwrap_or_default(),
            STATEMENT_TIMEOUT.as_secs(),
            2 * STATEMENT_TIMEOUT.as_secs()
        );
        config.options(options.trim());
        Ok(PgPool { config, connector, idle: Mutex::new(Vec::new()), busy: Mutex::new(0), freed: Condvar::new() })
    }

    fn take(&self) -> Result<db::PgSession> {
        {
            let mut busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
            let deadline = std::time::Instant::now() + SESSION_WAIT;
            while *busy >= MAX_SESSIONS {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    return Err(StoreError::Contention(format!(
                        "all {MAX_SESSIONS} database sessions stayed busy for {} s",
                        SESSION_WAIT.as_secs()
                    )));
                }
                busy = self.freed.wait_timeout(busy, left).unwrap_or_else(|p| p.into_inner()).0;
            }
            *busy += 1;
        }
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let session = match idle {
            Some(s) if !s.client.is_closed() => Ok(s),
            _ => self.connector.connect(&self.config).map(db::PgSession::new).map_err(StoreError::from),
        };
        if session.is_err() {
            self.release(None);
        }
        session
    }

    fn release(&self, session: Option<db::PgSession>) {
        if let Some(s) = session.filter(|s| !s.client.is_closed()) {
            self.idle.lock().unwrap_or_else(|p| p.into_inner()).push(s);
        }
        *self.busy.lock().unwrap_or_else(|p| p.into_inner()) -= 1;
        self.freed.notify_one();
    }

    fn transaction<T, E, F>(&self, kind: TxKind, mut f: F) -> Result<T, E>
    where
        E: From<StoreError>,
        F: FnMut(&Conn) -> Result<T, E>,
    {
        let mut session = self.take()?;
        let mut attempt = 0;
        let out = loop {
            attempt += 1;
            let once = db::pg_transaction(&mut session, kind == TxKind::Read, |conn| {
                let out = f(conn);
                let commit = out.is_ok() && kind == (TxKind::Write { commit: true });
                (out, commit)
            });
            match once {
                db::PgOutcome::Done(out) => break out,
                db::PgOutcome::Retry(_) if attempt < WRITE_ATTEMPTS => {
                    // Back off a little, at random, so the racers spread out.
                    let ms = rand::random::<u64>() % (attempt as u64 * 4 + 1);
                    std::thread::sleep(Duration::from_millis(ms));
                }
                db::PgOutcome::Retry(e) => break Err(E::from(e)),
                // An idle session the server closed (it restarted): nothing
                // ran, so one fresh session may run the transaction.
                db::PgOutcome::NotStarted(e) if attempt == 1 && (session.client.is_closed() || e.is_unavailable()) => {
                    match self.connector.connect(&self.config) {
                        Ok(client) => session = db::PgSession::new(client),
                        Err(e) => break Err(E::from(StoreError::from(e))),
                    }
                }
                db::PgOutcome::NotStarted(e) | db::PgOutcome::Failed(e) => break Err(E::from(e)),
            }
        };
        self.release(Some(session));
        out
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

/// Runs `body` in a write transaction of a fresh store of each engine.
#[cfg(test)]
pub(crate) fn on_each_engine(mut body: impl FnMut(&Conn) -> Result<()> + Send) {
    for store in test_stores() {
        let engine = store.engine();
        store.write_sync(&mut body).unwrap_or_else(|e| panic!("on {engine:?}: {e}"));
    }
}

/// A fresh store on each engine, for store tests that must hold on both.
/// Without PostgreSQL the test fails, saying why: CI installs it.
#[cfg(test)]
pub(crate) fn test_stores() -> Vec<Store> {
    let cluster = testing::PgCluster::shared().unwrap_or_else(|e| panic!("no PostgreSQL for the store tests: {e}"));
    let url = cluster.new_database().expect("a test database");
    vec![test_store(), Store::connect(&url).expect("connect to the test database")]
}

#[cfg(test)]
mod session_tests {
    #[test]
    fn postgres_sessions_bound_every_statement() {
        for store in crate::test_stores().into_iter().filter(|s| s.engine() == crate::Engine::Postgres) {
            let settings = store
                .read_sync(|c| {
                    let get = |name: &str| c.query_row(&format!("SHOW {name}"), [], |r| r.get::<_, String>(0));
                    Ok::<_, crate::StoreError>((get("statement_timeout")?, get("idle_in_transaction_session_timeout")?))
                })
                .unwrap();
            assert_eq!(settings, ("30s".to_string(), "1min".to_string()));
        }
    }
}

/// A storage failure is an internal error to API callers: they cannot fix it,
/// the operator finds the cause in the log. A database that is down or too
/// contended answers 503, which the clients retry: nothing was written.
impl From<StoreError> for socle_types::ApiError {
    fn from(e: StoreError) -> Self {
        if e.is_unavailable() || matches!(e, StoreError::Contention(_)) {
            let mut err = socle_types::ApiError::new(
                socle_types::error::ErrorCode::Unavailable,
                "the cloud cannot serve this request right now; nothing was changed, retry later",
            );
            err.internal = Some(e.to_string());
            return err;
        }
        socle_types::ApiError::internal(e.to_string())
    }
}

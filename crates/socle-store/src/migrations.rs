//! Schema migrations, applied in order at start-up. Each entry is applied
//! once, inside a transaction, and recorded in `schema_version`. Never edit a
//! released migration: add a new one.

use rusqlite::Connection;

const MIGRATIONS: &[&str] = &[
    // 1: the foundation.
    r#"
    CREATE TABLE accounts (
        account_id     TEXT PRIMARY KEY,
        name           TEXT NOT NULL UNIQUE,
        created_at     TEXT NOT NULL,
        max_vms        INTEGER NOT NULL,
        max_vcpus      INTEGER NOT NULL,
        max_memory_mib INTEGER NOT NULL
    );
    CREATE TABLE access_keys (
        access_key_id   TEXT PRIMARY KEY,
        account_id      TEXT NOT NULL REFERENCES accounts(account_id),
        -- the secret key sealed with the data dir's master key (AES-256-GCM)
        secret_sealed   BLOB NOT NULL,
        state           TEXT NOT NULL,
        tag             TEXT,
        expiration_date TEXT,
        created_at      TEXT NOT NULL,
        updated_at      TEXT NOT NULL
    );
    CREATE INDEX access_keys_account ON access_keys(account_id);
    CREATE TABLE images (
        image_id         TEXT PRIMARY KEY,
        account_id       TEXT NOT NULL,
        name             TEXT NOT NULL,
        description      TEXT NOT NULL DEFAULT '',
        state            TEXT NOT NULL,
        architecture     TEXT NOT NULL,
        kernel_path      TEXT,
        initrd_path      TEXT,
        disk_path        TEXT NOT NULL,
        is_public        INTEGER NOT NULL DEFAULT 0,
        created_at       TEXT NOT NULL
    );
    CREATE TABLE keypairs (
        keypair_id  TEXT PRIMARY KEY,
        account_id  TEXT NOT NULL REFERENCES accounts(account_id),
        name        TEXT NOT NULL,
        key_type    TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        public_key  TEXT NOT NULL,
        created_at  TEXT NOT NULL,
        UNIQUE (account_id, name)
    );
    CREATE TABLE vms (
        vm_id               TEXT PRIMARY KEY,
        account_id          TEXT NOT NULL REFERENCES accounts(account_id),
        reservation_id      TEXT NOT NULL,
        image_id            TEXT NOT NULL,
        vm_type             TEXT NOT NULL,
        vcpus               INTEGER NOT NULL,
        memory_mib          INTEGER NOT NULL,
        performance         TEXT NOT NULL,
        keypair_name        TEXT,
        user_data           TEXT NOT NULL DEFAULT '',
        subregion           TEXT NOT NULL,
        deletion_protection INTEGER NOT NULL DEFAULT 0,
        client_token        TEXT,
        launch_number       INTEGER NOT NULL,
        -- state: what ReadVms reports; desired: what the user last asked for.
        -- The reconciler moves state towards desired.
        state               TEXT NOT NULL,
        desired             TEXT NOT NULL,
        force_stop          INTEGER NOT NULL DEFAULT 0,
        state_reason        TEXT NOT NULL DEFAULT '',
        created_at          TEXT NOT NULL,
        terminated_at       TEXT
    );
    CREATE INDEX vms_account ON vms(account_id, created_at, vm_id);
    CREATE INDEX vms_unsettled ON vms(state, desired);
    -- ClientToken idempotency: one row per (account, operation, token).
    CREATE TABLE client_tokens (
        account_id   TEXT NOT NULL,
        operation    TEXT NOT NULL,
        token        TEXT NOT NULL,
        request_hash TEXT NOT NULL,
        result       TEXT NOT NULL,
        created_at   TEXT NOT NULL,
        PRIMARY KEY (account_id, operation, token)
    );
    CREATE TABLE tags (
        account_id    TEXT NOT NULL,
        resource_id   TEXT NOT NULL,
        resource_type TEXT NOT NULL,
        key           TEXT NOT NULL,
        value         TEXT NOT NULL,
        PRIMARY KEY (resource_id, key)
    );
    CREATE INDEX tags_account ON tags(account_id);
    "#,
];

pub fn apply(conn: &mut Connection) -> rusqlite::Result<()> {
    conn.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")?;
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let current: i64 = tx.query_row("SELECT COALESCE(MAX(version), 0) FROM schema_version", [], |r| r.get(0))?;
    for (i, sql) in MIGRATIONS.iter().enumerate() {
        let version = i as i64 + 1;
        if version > current {
            tx.execute_batch(sql)?;
            tx.execute("INSERT INTO schema_version (version) VALUES (?1)", [version])?;
        }
    }
    tx.commit()
}

//! Schema migrations, applied in order at start-up. Each entry is applied
//! once, inside a transaction, and recorded in `schema_version`. Never edit a
//! released migration: add a new one.
//!
//! One schema for both engines: each migration is written in SQLite's
//! dialect restricted to what PostgreSQL also takes, with the few
//! differences spelled out — types are renamed for PostgreSQL by
//! [`postgres_ddl`] (INTEGER is 64-bit in SQLite: BIGINT; BLOB: BYTEA), and
//! triggers, whose syntax differs, are given once per engine.

use crate::db::{Conn, Engine};
use crate::Result;

struct Migration {
    /// Both engines (after [`postgres_ddl`] for PostgreSQL).
    common: &'static str,
    /// SQLite only, after `common`.
    sqlite: &'static str,
    /// PostgreSQL only, after `common`.
    postgres: &'static str,
}

const fn both(common: &'static str) -> Migration {
    Migration { common, sqlite: "", postgres: "" }
}

const MIGRATIONS: &[Migration] = &[
    // 1: the foundation.
    both(r#"
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
    "#),
    // 2: block storage and key custody.
    both(r#"
    -- Each account's key-encryption key (a reference into a keystore, never key bytes).
    CREATE TABLE account_keks (
        account_id TEXT PRIMARY KEY REFERENCES accounts(account_id),
        kek_ref    TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE volumes (
        volume_id             TEXT PRIMARY KEY,
        account_id            TEXT NOT NULL REFERENCES accounts(account_id),
        size_gib              INTEGER NOT NULL,
        volume_type           TEXT NOT NULL,
        iops                  INTEGER,
        subregion             TEXT NOT NULL,
        snapshot_id           TEXT,
        client_token          TEXT,
        -- OSC state: creating, available, in-use, updating, deleting, error.
        state                 TEXT NOT NULL,
        -- The data key wrapped by the account's KEK; NULL once destroyed.
        wrapped_key           TEXT,
        -- Link to a VM: link_state is attaching, attached or detaching.
        vm_id                 TEXT,
        device_name           TEXT,
        link_state            TEXT,
        delete_on_vm_deletion INTEGER NOT NULL DEFAULT 0,
        linked_at             TEXT,
        -- Work the reconciler still owes: '' (none), create, resize, delete.
        pending               TEXT NOT NULL DEFAULT '',
        state_reason          TEXT NOT NULL DEFAULT '',
        created_at            TEXT NOT NULL
    );
    CREATE INDEX volumes_account ON volumes(account_id, created_at, volume_id);
    CREATE UNIQUE INDEX volumes_device ON volumes(vm_id, device_name) WHERE vm_id IS NOT NULL;
    CREATE TABLE snapshots (
        snapshot_id  TEXT PRIMARY KEY,
        account_id   TEXT NOT NULL REFERENCES accounts(account_id),
        volume_id    TEXT,
        volume_size  INTEGER NOT NULL,
        description  TEXT NOT NULL DEFAULT '',
        client_token TEXT,
        -- OSC state: pending, completed, error, deleting.
        state        TEXT NOT NULL,
        progress     INTEGER NOT NULL DEFAULT 0,
        wrapped_key  TEXT,
        is_public    INTEGER NOT NULL DEFAULT 0,
        pending      TEXT NOT NULL DEFAULT '',
        created_at   TEXT NOT NULL
    );
    CREATE INDEX snapshots_account ON snapshots(account_id, created_at, snapshot_id);
    -- Accounts allowed to create volumes from a snapshot they do not own.
    CREATE TABLE snapshot_shares (
        snapshot_id TEXT NOT NULL REFERENCES snapshots(snapshot_id) ON DELETE CASCADE,
        account_id  TEXT NOT NULL,
        PRIMARY KEY (snapshot_id, account_id)
    );
    -- Audit of key operations: which key, which resource, when, by whom. Never key material.
    CREATE TABLE key_events (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        at          TEXT NOT NULL,
        account_id  TEXT NOT NULL,
        actor       TEXT NOT NULL,
        operation   TEXT NOT NULL,
        kek_ref     TEXT NOT NULL,
        resource_id TEXT NOT NULL,
        outcome     TEXT NOT NULL
    );
    "#),
    // 3: root volumes made from images.
    both(r#"
    ALTER TABLE volumes ADD COLUMN source_image_id TEXT;
    ALTER TABLE images ADD COLUMN size_gib INTEGER NOT NULL DEFAULT 1;
    "#),
    // 4: account images (from a VM's root disk) and their launch permissions.
    both(r#"
    ALTER TABLE images ADD COLUMN root_snapshot_id TEXT;
    CREATE TABLE image_shares (
        image_id   TEXT NOT NULL REFERENCES images(image_id) ON DELETE CASCADE,
        account_id TEXT NOT NULL,
        PRIMARY KEY (image_id, account_id)
    );
    "#),
    // 5: networking — Nets, subnets, security groups and their rules.
    both(r#"
    CREATE TABLE nets (
        net_id     TEXT PRIMARY KEY,
        account_id TEXT NOT NULL,
        ip_range   TEXT NOT NULL,
        tenancy    TEXT NOT NULL DEFAULT 'default',
        state      TEXT NOT NULL,
        -- The VXLAN network identifier a multi-host overlay gives this Net:
        -- allocated once, unique in the cloud (docs/NETWORKING.md).
        vni        INTEGER NOT NULL UNIQUE,
        created_at TEXT NOT NULL
    );
    CREATE INDEX nets_account ON nets(account_id, created_at, net_id);
    CREATE TABLE subnets (
        subnet_id      TEXT PRIMARY KEY,
        account_id     TEXT NOT NULL,
        net_id         TEXT NOT NULL REFERENCES nets(net_id),
        ip_range       TEXT NOT NULL,
        subregion_name TEXT NOT NULL,
        map_public_ip_on_launch INTEGER NOT NULL DEFAULT 0,
        state          TEXT NOT NULL,
        created_at     TEXT NOT NULL
    );
    CREATE INDEX subnets_net ON subnets(net_id);
    CREATE INDEX subnets_account ON subnets(account_id, created_at, subnet_id);
    -- net_id NULL: a group of the public cloud (VMs outside any Net).
    CREATE TABLE security_groups (
        security_group_id TEXT PRIMARY KEY,
        account_id  TEXT NOT NULL,
        net_id      TEXT REFERENCES nets(net_id),
        name        TEXT NOT NULL,
        description TEXT NOT NULL,
        created_at  TEXT NOT NULL
    );
    -- Names are unique per account and Net (NULLs would be distinct in a plain UNIQUE).
    CREATE UNIQUE INDEX security_groups_name ON security_groups(account_id, COALESCE(net_id, ''), name);
    CREATE TABLE security_group_rules (
        rule_id           TEXT PRIMARY KEY,
        security_group_id TEXT NOT NULL REFERENCES security_groups(security_group_id) ON DELETE CASCADE,
        -- 'inbound' or 'outbound'
        flow              TEXT NOT NULL,
        -- '-1' (all), 'tcp', 'udp', 'icmp'
        protocol          TEXT NOT NULL,
        from_port         INTEGER,
        to_port           INTEGER,
        -- Exactly one of: an IP range, or a group (of this or another account).
        ip_range          TEXT,
        peer_group_id     TEXT,
        created_at        TEXT NOT NULL
    );
    CREATE UNIQUE INDEX security_group_rules_unique ON security_group_rules(
        security_group_id, flow, protocol, COALESCE(from_port, -1), COALESCE(to_port, -1),
        COALESCE(ip_range, ''), COALESCE(peer_group_id, ''));
    -- "Is this group still a peer somewhere?" (DeleteSecurityGroup).
    CREATE INDEX security_group_rules_peer ON security_group_rules(peer_group_id);
    "#),
    // 6: NICs and their private IPs.
    both(r#"
    -- net_id/subnet_id NULL: the NIC of a VM in the public cloud, on the
    -- account's own hidden network (docs/NETWORKING.md).
    CREATE TABLE nics (
        nic_id         TEXT PRIMARY KEY,
        account_id     TEXT NOT NULL,
        net_id         TEXT REFERENCES nets(net_id),
        subnet_id      TEXT REFERENCES subnets(subnet_id),
        subregion_name TEXT NOT NULL,
        description    TEXT NOT NULL DEFAULT '',
        mac            TEXT NOT NULL UNIQUE,
        source_dest_check INTEGER NOT NULL DEFAULT 1,
        -- 'available' (unlinked), 'in-use' (linked to vm_id).
        state          TEXT NOT NULL,
        vm_id          TEXT,
        device_number  INTEGER,
        link_nic_id    TEXT,
        delete_on_vm_deletion INTEGER NOT NULL DEFAULT 0,
        linked_at      TEXT,
        -- The host whose bridge holds the NIC's port: what a multi-host
        -- overlay needs to know to send the NIC's traffic (one host today).
        host           TEXT NOT NULL DEFAULT 'local',
        created_at     TEXT NOT NULL
    );
    CREATE INDEX nics_account ON nics(account_id, created_at, nic_id);
    CREATE INDEX nics_net ON nics(net_id);
    CREATE INDEX nics_subnet ON nics(subnet_id);
    CREATE UNIQUE INDEX nics_vm_device ON nics(vm_id, device_number) WHERE vm_id IS NOT NULL;
    -- One row per address of a NIC. `space` is what the address is unique
    -- in: the subnet id, or 'public:<account>' for the public cloud.
    CREATE TABLE nic_private_ips (
        nic_id     TEXT NOT NULL REFERENCES nics(nic_id) ON DELETE CASCADE,
        space      TEXT NOT NULL,
        ip         TEXT NOT NULL,
        is_primary INTEGER NOT NULL,
        PRIMARY KEY (space, ip)
    );
    CREATE INDEX nic_private_ips_nic ON nic_private_ips(nic_id);
    CREATE TABLE nic_security_groups (
        nic_id            TEXT NOT NULL REFERENCES nics(nic_id) ON DELETE CASCADE,
        security_group_id TEXT NOT NULL REFERENCES security_groups(security_group_id),
        PRIMARY KEY (nic_id, security_group_id)
    );
    CREATE INDEX nic_security_groups_group ON nic_security_groups(security_group_id);
    -- The slot of each wired network's uplink in the operator's uplink
    -- range (a /31 each): stable across restarts, unique on the host.
    -- net_key: a Net id, or 'pub-<account>' for a public-cloud network.
    CREATE TABLE uplink_slots (
        net_key TEXT PRIMARY KEY,
        slot    INTEGER NOT NULL UNIQUE
    );
    "#),
    // 7: the way in and out of Nets — internet services, route tables and
    // their links and routes, public IPs, NAT services (docs/NETWORKING.md).
    Migration {
        common: r#"
    -- net_id NULL while unlinked; UNIQUE: a Net has at most one internet service.
    CREATE TABLE internet_services (
        internet_service_id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL,
        net_id     TEXT UNIQUE REFERENCES nets(net_id),
        created_at TEXT NOT NULL
    );
    CREATE INDEX internet_services_account ON internet_services(account_id, created_at, internet_service_id);
    -- main_link_id: set on the Net's main table only (its rtbassoc- "Main" link);
    -- the partial index keeps one main table per Net.
    CREATE TABLE route_tables (
        route_table_id TEXT PRIMARY KEY,
        account_id     TEXT NOT NULL,
        net_id         TEXT NOT NULL REFERENCES nets(net_id),
        main_link_id   TEXT UNIQUE,
        created_at     TEXT NOT NULL
    );
    CREATE INDEX route_tables_account ON route_tables(account_id, created_at, route_table_id);
    CREATE INDEX route_tables_net ON route_tables(net_id);
    CREATE UNIQUE INDEX route_tables_main ON route_tables(net_id) WHERE main_link_id IS NOT NULL;
    -- Explicit links of tables to subnets: a subnet has at most one (UNIQUE);
    -- it goes with its subnet, which then has no table to fall back from.
    CREATE TABLE route_table_links (
        link_route_table_id TEXT PRIMARY KEY,
        route_table_id TEXT NOT NULL REFERENCES route_tables(route_table_id),
        subnet_id      TEXT NOT NULL UNIQUE REFERENCES subnets(subnet_id) ON DELETE CASCADE,
        created_at     TEXT NOT NULL
    );
    CREATE INDEX route_table_links_table ON route_table_links(route_table_id);
    -- Routes other than the implicit local one, one per (table, destination),
    -- with exactly one target. Targets have no foreign key on purpose: a
    -- route whose target is gone stays, shown as a blackhole.
    CREATE TABLE routes (
        route_table_id TEXT NOT NULL REFERENCES route_tables(route_table_id) ON DELETE CASCADE,
        destination    TEXT NOT NULL,
        gateway_id     TEXT,
        nat_service_id TEXT,
        nic_id         TEXT,
        created_at     TEXT NOT NULL,
        PRIMARY KEY (route_table_id, destination),
        CHECK ((gateway_id IS NOT NULL) + (nat_service_id IS NOT NULL) + (nic_id IS NOT NULL) = 1)
    );
    -- An address of the operator's pool, held by one account. The link to a
    -- NIC's private address lives on the row (so one link per public IP);
    -- one public IP per private address of a NIC.
    CREATE TABLE public_ips (
        public_ip_id      TEXT PRIMARY KEY,
        account_id        TEXT NOT NULL,
        public_ip         TEXT NOT NULL UNIQUE,
        link_public_ip_id TEXT UNIQUE,
        nic_id            TEXT,
        private_ip        TEXT,
        created_at        TEXT NOT NULL,
        CHECK ((link_public_ip_id IS NULL) = (nic_id IS NULL) AND (nic_id IS NULL) = (private_ip IS NULL))
    );
    CREATE INDEX public_ips_account ON public_ips(account_id, created_at, public_ip_id);
    CREATE UNIQUE INDEX public_ips_private ON public_ips(nic_id, private_ip) WHERE nic_id IS NOT NULL;
    -- A NAT service SNATs through one public IP (UNIQUE: used once).
    CREATE TABLE nat_services (
        nat_service_id TEXT PRIMARY KEY,
        account_id     TEXT NOT NULL,
        net_id         TEXT NOT NULL REFERENCES nets(net_id),
        subnet_id      TEXT NOT NULL REFERENCES subnets(subnet_id),
        public_ip_id   TEXT NOT NULL UNIQUE REFERENCES public_ips(public_ip_id),
        client_token   TEXT,
        state          TEXT NOT NULL,
        created_at     TEXT NOT NULL
    );
    CREATE INDEX nat_services_account ON nat_services(account_id, created_at, nat_service_id);
    CREATE INDEX nat_services_net ON nat_services(net_id);
    CREATE INDEX nat_services_subnet ON nat_services(subnet_id);
    CREATE UNIQUE INDEX nat_services_token ON nat_services(account_id, client_token) WHERE client_token IS NOT NULL;
    "#,
        // A link goes with its NIC or its private address (VM deletion,
        // UnlinkPrivateIps), as on Outscale, whoever deletes them.
        sqlite: r#"
    CREATE TRIGGER public_ips_unlink_nic AFTER DELETE ON nics BEGIN
        UPDATE public_ips SET link_public_ip_id = NULL, nic_id = NULL, private_ip = NULL WHERE nic_id = OLD.nic_id;
    END;
    CREATE TRIGGER public_ips_unlink_private_ip AFTER DELETE ON nic_private_ips BEGIN
        UPDATE public_ips SET link_public_ip_id = NULL, nic_id = NULL, private_ip = NULL
        WHERE nic_id = OLD.nic_id AND private_ip = OLD.ip;
    END;
    "#,
        postgres: r#"
    CREATE FUNCTION public_ips_unlink_nic() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
        UPDATE public_ips SET link_public_ip_id = NULL, nic_id = NULL, private_ip = NULL WHERE nic_id = OLD.nic_id;
        RETURN NULL;
    END $$;
    CREATE TRIGGER public_ips_unlink_nic AFTER DELETE ON nics FOR EACH ROW EXECUTE FUNCTION public_ips_unlink_nic();
    CREATE FUNCTION public_ips_unlink_private_ip() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
        UPDATE public_ips SET link_public_ip_id = NULL, nic_id = NULL, private_ip = NULL
        WHERE nic_id = OLD.nic_id AND private_ip = OLD.ip;
        RETURN NULL;
    END $$;
    CREATE TRIGGER public_ips_unlink_private_ip AFTER DELETE ON nic_private_ips
        FOR EACH ROW EXECUTE FUNCTION public_ips_unlink_private_ip();
    "#,
    },
    // 8: public IPs given with a VM at launch (public cloud, or a subnet
    // with MapPublicIpOnLaunch) and the per-account public IP quota.
    // `auto`: given at launch, not the account's to manage (ReadPublicIps
    // does not list it, the quota does not count it); it lives only while
    // linked, so it is released with its VM, its NIC or its address.
    Migration {
        common: r#"
    ALTER TABLE public_ips ADD COLUMN auto INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE accounts ADD COLUMN max_public_ips INTEGER NOT NULL DEFAULT 10;
    "#,
        sqlite: r#"
    CREATE TRIGGER public_ips_auto_released AFTER UPDATE OF nic_id ON public_ips
        WHEN NEW.auto = 1 AND NEW.nic_id IS NULL BEGIN
        DELETE FROM public_ips WHERE public_ip_id = NEW.public_ip_id;
    END;
    "#,
        postgres: r#"
    CREATE FUNCTION public_ips_auto_released() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
        DELETE FROM public_ips WHERE public_ip_id = NEW.public_ip_id;
        RETURN NULL;
    END $$;
    CREATE TRIGGER public_ips_auto_released AFTER UPDATE OF nic_id ON public_ips
        FOR EACH ROW WHEN (NEW.auto = 1 AND NEW.nic_id IS NULL) EXECUTE FUNCTION public_ips_auto_released();
    "#,
    },
    // 9: an explicit order for a NIC's addresses and groups (SQLite's
    // implicit rowid gave it; PostgreSQL has none).
    Migration {
        common: r#"
    ALTER TABLE nic_private_ips ADD COLUMN position INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE nic_security_groups ADD COLUMN position INTEGER NOT NULL DEFAULT 0;
    "#,
        sqlite: r#"
    UPDATE nic_private_ips SET position = rowid;
    UPDATE nic_security_groups SET position = rowid;
    "#,
        postgres: "",
    },
    // 10: the hosts of a cloud, the one-time tokens that let a host join, and
    // the leases of background work.
    both(
        r#"
    CREATE TABLE hosts (
        host_id TEXT PRIMARY KEY,
        subregion TEXT NOT NULL,
        -- host:port where its agent serves the agent protocol (mutual TLS).
        endpoint TEXT NOT NULL,
        -- SHA-256 of the certificate it was given when it joined.
        cert_sha256 TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('ready', 'cordoned', 'unreachable', 'revoked')),
        joined_at TEXT NOT NULL,
        seen_at TEXT
    );
    CREATE TABLE host_tokens (
        token_id TEXT PRIMARY KEY,
        subregion TEXT NOT NULL,
        -- The secret, sealed by the cloud's master key (bound to token_id).
        secret_sealed BLOB NOT NULL,
        expires_at TEXT NOT NULL,
        -- The host that joined with it: a token serves once.
        used_by TEXT
    );
    -- Background work (reconcilers, health checks) is done by one server at
    -- a time: the holder of its lease, renewed every few seconds.
    CREATE TABLE leases (
        name TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        expires_at TEXT NOT NULL
    );
    "#,
    ),
    // 11: a volume row's revision, bumped by every save, so host work saves
    // its outcome only over the row it read.
    both("ALTER TABLE volumes ADD COLUMN revision INTEGER NOT NULL DEFAULT 0;"),
    // 12: placement. A host's schedulable capacity (after overcommit) and
    // what its VMs reserve, kept on the host's row so that choosing a host
    // and reserving on it is one conditional UPDATE; the reservation of
    // each VM, released once when the VM terminates; where each VM, volume
    // and snapshot lives. NULL host IDs (rows made before hosts existed)
    // are given the local host of `socle up` at start.
    both(
        r#"
    ALTER TABLE hosts ADD COLUMN vcpus INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE hosts ADD COLUMN memory_mib INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE hosts ADD COLUMN used_vcpus INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE hosts ADD COLUMN used_memory_mib INTEGER NOT NULL DEFAULT 0;
    -- The account whose dedicated-tenancy VM runs there: no other account's
    -- VM may come while it holds any VM.
    ALTER TABLE hosts ADD COLUMN dedicated_to TEXT;
    -- Cordoned by the operator (no new VM goes there), whether it answers
    -- or not: the state says only ready, unreachable or revoked from now on.
    ALTER TABLE hosts ADD COLUMN cordoned INTEGER NOT NULL DEFAULT 0;
    UPDATE hosts SET cordoned = 1, state = 'ready' WHERE state = 'cordoned';
    CREATE TABLE host_reservations (
        vm_id TEXT PRIMARY KEY,
        host_id TEXT NOT NULL,
        vcpus INTEGER NOT NULL,
        memory_mib INTEGER NOT NULL
    );
    ALTER TABLE vms ADD COLUMN host_id TEXT;
    ALTER TABLE vms ADD COLUMN tenancy TEXT NOT NULL DEFAULT 'default';
    ALTER TABLE volumes ADD COLUMN host_id TEXT;
    ALTER TABLE snapshots ADD COLUMN host_id TEXT;
    CREATE INDEX vms_host ON vms(host_id);
    "#,
    ),
    // 13: images name what they boot instead of holding control-plane file
    // paths: every host keeps its own copy of the platform images, so a
    // row says which platform image's kernel boots it and which one's disk
    // its root disks start from. Until now only socle-tiny had a kernel,
    // and only the two platform images had no root snapshot.
    both(
        r#"
    ALTER TABLE images ADD COLUMN boot_kernel TEXT;
    ALTER TABLE images ADD COLUMN base_image TEXT;
    UPDATE images SET boot_kernel = 'socle-tiny' WHERE kernel_path IS NOT NULL;
    UPDATE images SET base_image = name
        WHERE root_snapshot_id IS NULL AND account_id = '000000000000' AND name IN ('socle-tiny', 'socle-tiny-disk');
    ALTER TABLE images DROP COLUMN kernel_path;
    ALTER TABLE images DROP COLUMN initrd_path;
    ALTER TABLE images DROP COLUMN disk_path;
    "#,
    ),
    // 14: the cloud's CA, as the database knows it: the SHA-256 of the
    // first `DATA/ca/ca.pem` a server used. A server whose data dir holds
    // another CA, or none, refuses to issue or trust host certificates.
    both(
        r#"
    CREATE TABLE cloud_ca (
        one INTEGER PRIMARY KEY CHECK (one = 1),
        cert_sha256 TEXT NOT NULL,
        recorded_at TEXT NOT NULL
    );
    "#,
    ),
];

/// The key of the advisory lock that keeps two servers starting at once
/// from migrating the same PostgreSQL database together.
const MIGRATION_LOCK: i64 = 0x736f_636c_65;

pub fn apply(conn: &Conn) -> Result<()> {
    if conn.engine() == Engine::Postgres {
        conn.query_row("SELECT pg_advisory_xact_lock(?1)", [MIGRATION_LOCK], |_| Ok(()))?;
    }
    conn.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")?;
    let current: i64 = conn.query_row("SELECT COALESCE(MAX(version), 0) FROM schema_version", [], |r| r.get(0))?;
    for (i, m) in MIGRATIONS.iter().enumerate() {
        let version = i as i64 + 1;
        if version > current {
            match conn.engine() {
                Engine::Sqlite => {
                    conn.execute_batch(m.common)?;
                    conn.execute_batch(m.sqlite)?;
                }
                Engine::Postgres => {
                    conn.execute_batch(&postgres_ddl(m.common))?;
                    conn.execute_batch(m.postgres)?;
                }
            }
            conn.execute("INSERT INTO schema_version (version) VALUES (?1)", [version])?;
        }
    }
    Ok(())
}

/// The common DDL in PostgreSQL's words: SQLite's INTEGER is 64-bit
/// (BIGINT), its auto-increment key an identity, BLOB is BYTEA, and a CHECK
/// that adds booleans counts non-NULLs instead.
fn postgres_ddl(sql: &str) -> String {
    let sql = sql
        .replace("INTEGER PRIMARY KEY AUTOINCREMENT", "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY")
        .replace(
            "(gateway_id IS NOT NULL) + (nat_service_id IS NOT NULL) + (nic_id IS NOT NULL) = 1",
            "num_nonnulls(gateway_id, nat_service_id, nic_id) = 1",
        )
        .replace(" BLOB", " BYTEA");
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql.as_str();
    while let Some(i) = rest.find("INTEGER") {
        let word_start = i == 0 || !rest.as_bytes()[i - 1].is_ascii_alphanumeric();
        let after = rest.as_bytes().get(i + 7).copied();
        let word_end = after.is_none_or(|b| !b.is_ascii_alphanumeric() && b != b'_');
        out.push_str(&rest[..i]);
        out.push_str(if word_start && word_end { "BIGINT" } else { "INTEGER" });
        rest = &rest[i + 7..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn postgres_ddl_renames_types_not_words() {
        assert_eq!(
            super::postgres_ddl("a INTEGER NOT NULL, b BLOB, c INTEGERS, id INTEGER PRIMARY KEY AUTOINCREMENT"),
            "a BIGINT NOT NULL, b BYTEA, c INTEGERS, id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"
        );
    }
}

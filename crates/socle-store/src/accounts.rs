//! Accounts: the tenants. Every other row belongs to one.

use crate::params;
use crate::db::{Conn, OptionalExtension, Row};
use socle_types::ids::AccountId;

use crate::Result;

/// Per-account limits, enforced when VMs and public IPs are created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quotas {
    pub max_vms: i64,
    pub max_vcpus: i64,
    pub max_memory_mib: i64,
    /// Public IPs the account may hold (CreatePublicIp); those given with
    /// VMs at launch do not count.
    pub max_public_ips: i64,
}

impl Default for Quotas {
    /// Defaults sized for a small team on one host; operators raise them with
    /// `socle account quota`.
    fn default() -> Self {
        Quotas { max_vms: 20, max_vcpus: 40, max_memory_mib: 80 * 1024, max_public_ips: 10 }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub account_id: AccountId,
    pub name: String,
    pub created_at: String,
    pub quotas: Quotas,
}

fn from_row(r: &Row) -> crate::Result<Account> {
    Ok(Account {
        account_id: AccountId::from_trusted(r.get(0)?),
        name: r.get(1)?,
        created_at: r.get(2)?,
        quotas: Quotas { max_vms: r.get(3)?, max_vcpus: r.get(4)?, max_memory_mib: r.get(5)?, max_public_ips: r.get(6)? },
    })
}

const COLUMNS: &str = "account_id, name, created_at, max_vms, max_vcpus, max_memory_mib, max_public_ips";

pub fn insert(conn: &Conn, account: &Account) -> Result<()> {
    conn.execute(
        "INSERT INTO accounts (account_id, name, created_at, max_vms, max_vcpus, max_memory_mib, max_public_ips)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            account.account_id.as_str(),
            account.name,
            account.created_at,
            account.quotas.max_vms,
            account.quotas.max_vcpus,
            account.quotas.max_memory_mib,
            account.quotas.max_public_ips
        ],
    )?;
    Ok(())
}

pub fn get(conn: &Conn, id: &AccountId) -> Result<Option<Account>> {
    Ok(conn
        .query_row(&format!("SELECT {COLUMNS} FROM accounts WHERE account_id = ?1"), [id.as_str()], from_row)
        .optional()?)
}

pub fn get_by_name(conn: &Conn, name: &str) -> Result<Option<Account>> {
    Ok(conn
        .query_row(&format!("SELECT {COLUMNS} FROM accounts WHERE name = ?1"), [name], from_row)
        .optional()?)
}

pub fn list(conn: &Conn) -> Result<Vec<Account>> {
    let mut stmt = conn.prepare(&format!("SELECT {COLUMNS} FROM accounts ORDER BY created_at, account_id"))?;
    let rows = stmt.query_map([], from_row)?.collect::<crate::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Returns false when the account does not exist.
pub fn set_quotas(conn: &Conn, id: &AccountId, q: &Quotas) -> Result<bool> {
    let n = conn.execute(
        "UPDATE accounts SET max_vms = ?2, max_vcpus = ?3, max_memory_mib = ?4, max_public_ips = ?5 WHERE account_id = ?1",
        params![id.as_str(), q.max_vms, q.max_vcpus, q.max_memory_mib, q.max_public_ips],
    )?;
    Ok(n == 1)
}

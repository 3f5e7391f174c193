//! Nets (private networks) and their subnets. Address ranges are stored as
//! canonical CIDR text (`10.0.0.0/16`); the control plane parses and checks
//! them, and checks overlaps inside the insert transaction.

use crate::params;
use crate::db::{Conn, OptionalExtension, Row};
use socle_types::ids::{AccountId, NetId, SubnetId};

use crate::Result;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetRow {
    pub net_id: NetId,
    pub account_id: AccountId,
    pub ip_range: String,
    pub tenancy: String,
    pub state: String,
    /// VXLAN network identifier for a multi-host overlay (unique).
    pub vni: i64,
    pub created_at: String,
}

const NET_COLUMNS: &str = "net_id, account_id, ip_range, tenancy, state, vni, created_at";

fn net_from_row(r: &Row) -> crate::Result<NetRow> {
    Ok(NetRow {
        net_id: NetId::from_trusted(r.get(0)?),
        account_id: AccountId::from_trusted(r.get(1)?),
        ip_range: r.get(2)?,
        tenancy: r.get(3)?,
        state: r.get(4)?,
        vni: r.get(5)?,
        created_at: r.get(6)?,
    })
}

/// The next free VNI (VXLAN identifiers 1..2^24; Socle starts at 100).
pub fn next_vni(conn: &Conn) -> Result<i64> {
    Ok(conn.query_row("SELECT COALESCE(MAX(vni), 99) + 1 FROM nets", [], |r| r.get(0))?)
}

pub fn insert_net(conn: &Conn, n: &NetRow) -> Result<()> {
    conn.execute(
        &format!("INSERT INTO nets ({NET_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
        params![n.net_id.as_str(), n.account_id.as_str(), n.ip_range, n.tenancy, n.state, n.vni, n.created_at],
    )?;
    Ok(())
}

pub fn get_net(conn: &Conn, account: &AccountId, id: &NetId) -> Result<Option<NetRow>> {
    Ok(conn
        .query_row(
            &format!("SELECT {NET_COLUMNS} FROM nets WHERE net_id = ?1 AND account_id = ?2"),
            params![id.as_str(), account.as_str()],
            net_from_row,
        )
        .optional()?)
}

/// A Net whoever owns it (for the network compiler, never for API callers).
pub fn get_net_any(conn: &Conn, id: &NetId) -> Result<Option<NetRow>> {
    Ok(conn
        .query_row(&format!("SELECT {NET_COLUMNS} FROM nets WHERE net_id = ?1"), [id.as_str()], net_from_row)
        .optional()?)
}

pub fn list_nets(conn: &Conn, account: &AccountId) -> Result<Vec<NetRow>> {
    let mut stmt = conn.prepare(&format!("SELECT {NET_COLUMNS} FROM nets WHERE account_id = ?1 ORDER BY created_at, net_id"))?;
    let rows = stmt.query_map([account.as_str()], net_from_row)?.collect::<crate::Result<_>>()?;
    Ok(rows)
}

pub fn delete_net(conn: &Conn, id: &NetId) -> Result<()> {
    conn.execute("DELETE FROM nets WHERE net_id = ?1", [id.as_str()])?;
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetRow {
    pub subnet_id: SubnetId,
    pub account_id: AccountId,
    pub net_id: NetId,
    pub ip_range: String,
    pub subregion_name: String,
    pub map_public_ip_on_launch: bool,
    pub state: String,
    pub created_at: String,
}

const SUBNET_COLUMNS: &str = "subnet_id, account_id, net_id, ip_range, subregion_name, map_public_ip_on_launch, state, created_at";

fn subnet_from_row(r: &Row) -> crate::Result<SubnetRow> {
    Ok(SubnetRow {
        subnet_id: SubnetId::from_trusted(r.get(0)?),
        account_id: AccountId::from_trusted(r.get(1)?),
        net_id: NetId::from_trusted(r.get(2)?),
        ip_range: r.get(3)?,
        subregion_name: r.get(4)?,
        map_public_ip_on_launch: r.get(5)?,
        state: r.get(6)?,
        created_at: r.get(7)?,
    })
}

pub fn insert_subnet(conn: &Conn, s: &SubnetRow) -> Result<()> {
    conn.execute(
        &format!("INSERT INTO subnets ({SUBNET_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"),
        params![
            s.subnet_id.as_str(),
            s.account_id.as_str(),
            s.net_id.as_str(),
            s.ip_range,
            s.subregion_name,
            s.map_public_ip_on_launch,
            s.state,
            s.created_at
        ],
    )?;
    Ok(())
}

pub fn get_subnet(conn: &Conn, account: &AccountId, id: &SubnetId) -> Result<Option<SubnetRow>> {
    Ok(conn
        .query_row(
            &format!("SELECT {SUBNET_COLUMNS} FROM subnets WHERE subnet_id = ?1 AND account_id = ?2"),
            params![id.as_str(), account.as_str()],
            subnet_from_row,
        )
        .optional()?)
}

pub fn list_subnets(conn: &Conn, account: &AccountId) -> Result<Vec<SubnetRow>> {
    let mut stmt =
        conn.prepare(&format!("SELECT {SUBNET_COLUMNS} FROM subnets WHERE account_id = ?1 ORDER BY created_at, subnet_id"))?;
    let rows = stmt.query_map([account.as_str()], subnet_from_row)?.collect::<crate::Result<_>>()?;
    Ok(rows)
}

pub fn subnets_of(conn: &Conn, net: &NetId) -> Result<Vec<SubnetRow>> {
    let mut stmt = conn.prepare(&format!("SELECT {SUBNET_COLUMNS} FROM subnets WHERE net_id = ?1 ORDER BY created_at, subnet_id"))?;
    let rows = stmt.query_map([net.as_str()], subnet_from_row)?.collect::<crate::Result<_>>()?;
    Ok(rows)
}

pub fn set_map_public_ip(conn: &Conn, id: &SubnetId, on: bool) -> Result<()> {
    conn.execute("UPDATE subnets SET map_public_ip_on_launch = ?2 WHERE subnet_id = ?1", params![id.as_str(), on])?;
    Ok(())
}

pub fn delete_subnet(conn: &Conn, id: &SubnetId) -> Result<()> {
    conn.execute("DELETE FROM subnets WHERE subnet_id = ?1", [id.as_str()])?;
    Ok(())
}

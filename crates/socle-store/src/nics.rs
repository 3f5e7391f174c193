//! NICs (a VM's ports), their private IPs and their security groups.
//!
//! A private IP is unique in its *address space*: the subnet of the NIC, or
//! `public:<account>` for the NICs of the public cloud (VMs launched
//! without a subnet). The primary key of `nic_private_ips` enforces it, so
//! two concurrent allocations of one address cannot both commit.

use crate::params;
use crate::db::{Conn, OptionalExtension, Row};
use socle_types::ids::{AccountId, LinkNicId, NetId, NicId, SecurityGroupId, SubnetId, VmId};

use crate::Result;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicRow {
    pub nic_id: NicId,
    pub account_id: AccountId,
    /// None for a public-cloud NIC.
    pub net_id: Option<NetId>,
    pub subnet_id: Option<SubnetId>,
    pub subregion_name: String,
    pub description: String,
    /// `aa:bb:cc:dd:ee:ff`, unique in the cloud.
    pub mac: String,
    pub source_dest_check: bool,
    /// `available` or `in-use`.
    pub state: String,
    pub vm_id: Option<VmId>,
    /// 0 for the primary NIC of a VM.
    pub device_number: Option<i64>,
    pub link_nic_id: Option<LinkNicId>,
    pub delete_on_vm_deletion: bool,
    pub linked_at: Option<String>,
    pub created_at: String,
}

impl NicRow {
    /// The address space its private IPs are unique in.
    pub fn space(&self) -> String {
        address_space(self.subnet_id.as_ref(), &self.account_id)
    }
}

/// `subnet-…`, or `public:<account>` for the public cloud.
pub fn address_space(subnet: Option<&SubnetId>, account: &AccountId) -> String {
    match subnet {
        Some(s) => s.to_string(),
        None => format!("public:{account}"),
    }
}

const COLUMNS: &str = "nic_id, account_id, net_id, subnet_id, subregion_name, description, mac, source_dest_check, \
                       state, vm_id, device_number, link_nic_id, delete_on_vm_deletion, linked_at, created_at";

fn from_row(r: &Row) -> crate::Result<NicRow> {
    Ok(NicRow {
        nic_id: NicId::from_trusted(r.get(0)?),
        account_id: AccountId::from_trusted(r.get(1)?),
        net_id: r.get::<_, Option<String>>(2)?.map(NetId::from_trusted),
        subnet_id: r.get::<_, Option<String>>(3)?.map(SubnetId::from_trusted),
        subregion_name: r.get(4)?,
        description: r.get(5)?,
        mac: r.get(6)?,
        source_dest_check: r.get(7)?,
        state: r.get(8)?,
        vm_id: r.get::<_, Option<String>>(9)?.map(VmId::from_trusted),
        device_number: r.get(10)?,
        link_nic_id: r.get::<_, Option<String>>(11)?.map(LinkNicId::from_trusted),
        delete_on_vm_deletion: r.get(12)?,
        linked_at: r.get(13)?,
        created_at: r.get(14)?,
    })
}

fn query(conn: &Conn, filter: &str, args: &[&dyn crate::db::ToValue]) -> Result<Vec<NicRow>> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {COLUMNS} FROM nics {filter}"))?;
    let rows = stmt.query_map(args, from_row)?.collect::<crate::Result<Vec<_>>>()?;
    Ok(rows)
}

pub fn insert(conn: &Conn, n: &NicRow) -> Result<()> {
    conn.execute(
        &format!("INSERT INTO nics ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)"),
        params![
            n.nic_id.as_str(),
            n.account_id.as_str(),
            n.net_id.as_ref().map(|i| i.as_str()),
            n.subnet_id.as_ref().map(|i| i.as_str()),
            n.subregion_name,
            n.description,
            n.mac,
            n.source_dest_check,
            n.state,
            n.vm_id.as_ref().map(|i| i.as_str()),
            n.device_number,
            n.link_nic_id.as_ref().map(|i| i.as_str()),
            n.delete_on_vm_deletion,
            n.linked_at,
            n.created_at,
        ],
    )?;
    Ok(())
}

/// Rewrites the mutable columns (description, source/dest check, link).
pub fn update(conn: &Conn, n: &NicRow) -> Result<()> {
    conn.execute(
        "UPDATE nics SET description = ?2, source_dest_check = ?3, state = ?4, vm_id = ?5, device_number = ?6, \
         link_nic_id = ?7, delete_on_vm_deletion = ?8, linked_at = ?9 WHERE nic_id = ?1",
        params![
            n.nic_id.as_str(),
            n.description,
            n.source_dest_check,
            n.state,
            n.vm_id.as_ref().map(|i| i.as_str()),
            n.device_number,
            n.link_nic_id.as_ref().map(|i| i.as_str()),
            n.delete_on_vm_deletion,
            n.linked_at,
        ],
    )?;
    Ok(())
}

/// The caller's NIC (another account's is absent).
pub fn get(conn: &Conn, account: &AccountId, id: &NicId) -> Result<Option<NicRow>> {
    Ok(query(conn, "WHERE nic_id = ?1 AND account_id = ?2", &[&id.as_str(), &account.as_str()])?.pop())
}

/// A NIC whoever owns it (for the network compiler, never for API callers).
pub fn get_any(conn: &Conn, id: &NicId) -> Result<Option<NicRow>> {
    Ok(query(conn, "WHERE nic_id = ?1", &[&id.as_str()])?.pop())
}

pub fn list(conn: &Conn, account: &AccountId) -> Result<Vec<NicRow>> {
    query(conn, "WHERE account_id = ?1 ORDER BY created_at, nic_id", &[&account.as_str()])
}

/// The NICs of a VM, primary (device 0) first.
pub fn of_vm(conn: &Conn, vm: &VmId) -> Result<Vec<NicRow>> {
    query(conn, "WHERE vm_id = ?1 ORDER BY device_number", &[&vm.as_str()])
}

/// Every NIC of a Net, linked or not.
pub fn in_net(conn: &Conn, net: &NetId) -> Result<Vec<NicRow>> {
    query(conn, "WHERE net_id = ?1 ORDER BY created_at, nic_id", &[&net.as_str()])
}

/// The public-cloud NICs of an account.
pub fn in_public_cloud(conn: &Conn, account: &AccountId) -> Result<Vec<NicRow>> {
    query(conn, "WHERE net_id IS NULL AND account_id = ?1 ORDER BY created_at, nic_id", &[&account.as_str()])
}

/// Every NIC linked to a VM, in the whole cloud: the ports hosts must wire.
pub fn linked(conn: &Conn) -> Result<Vec<NicRow>> {
    query(conn, "WHERE vm_id IS NOT NULL ORDER BY created_at, nic_id", &[])
}

/// NICs whose link is changing on their host (`attaching`, `detaching`):
/// the reconciler's work list.
pub fn unsettled(conn: &Conn) -> Result<Vec<NicRow>> {
    query(conn, "WHERE state IN ('attaching', 'detaching') ORDER BY created_at, nic_id", &[])
}

pub fn count_of_account(conn: &Conn, account: &AccountId) -> Result<i64> {
    Ok(conn.query_row("SELECT COUNT(*) FROM nics WHERE account_id = ?1", [account.as_str()], |r| r.get(0))?)
}

pub fn count_in_subnet(conn: &Conn, subnet: &SubnetId) -> Result<i64> {
    Ok(conn.query_row("SELECT COUNT(*) FROM nics WHERE subnet_id = ?1", [subnet.as_str()], |r| r.get(0))?)
}

pub fn count_in_net(conn: &Conn, net: &NetId) -> Result<i64> {
    Ok(conn.query_row("SELECT COUNT(*) FROM nics WHERE net_id = ?1", [net.as_str()], |r| r.get(0))?)
}

pub fn mac_in_use(conn: &Conn, mac: &str) -> Result<bool> {
    Ok(conn.query_row("SELECT EXISTS(SELECT 1 FROM nics WHERE mac = ?1)", [mac], |r| r.get(0))?)
}

/// Deletes the NIC with its private IPs and group memberships.
pub fn delete(conn: &Conn, id: &NicId) -> Result<()> {
    conn.execute("DELETE FROM nics WHERE nic_id = ?1", [id.as_str()])?;
    Ok(())
}

// --- private IPs -----------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrivateIpRow {
    pub ip: String,
    pub is_primary: bool,
}

/// Fails with a unique violation when the address is taken in `space`.
pub fn add_ip(conn: &Conn, nic: &NicId, space: &str, ip: &str, primary: bool) -> Result<()> {
    conn.execute(
        "INSERT INTO nic_private_ips (nic_id, space, ip, is_primary, position)
         VALUES (?1, ?2, ?3, ?4, (SELECT COALESCE(MAX(position), 0) + 1 FROM nic_private_ips WHERE nic_id = ?1))",
        params![nic.as_str(), space, ip, primary],
    )?;
    Ok(())
}

/// Removes a secondary address; returns whether one was removed.
pub fn remove_secondary_ip(conn: &Conn, nic: &NicId, ip: &str) -> Result<bool> {
    let n = conn.execute(
        "DELETE FROM nic_private_ips WHERE nic_id = ?1 AND ip = ?2 AND is_primary = 0",
        params![nic.as_str(), ip],
    )?;
    Ok(n > 0)
}

/// The NIC's addresses, primary first, then in allocation order.
pub fn ips_of(conn: &Conn, nic: &NicId) -> Result<Vec<PrivateIpRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT ip, is_primary FROM nic_private_ips WHERE nic_id = ?1 ORDER BY is_primary DESC, position",
    )?;
    let rows = stmt
        .query_map([nic.as_str()], |r| Ok(PrivateIpRow { ip: r.get(0)?, is_primary: r.get(1)? }))?
        .collect::<crate::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Every address taken in `space` (to allocate the next free one).
pub fn ips_in_space(conn: &Conn, space: &str) -> Result<Vec<String>> {
    let mut stmt = conn.prepare_cached("SELECT ip FROM nic_private_ips WHERE space = ?1")?;
    let rows = stmt.query_map([space], |r| r.get(0))?.collect::<crate::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Which NIC holds `ip` in `space`, if any.
pub fn nic_with_ip(conn: &Conn, space: &str, ip: &str) -> Result<Option<NicId>> {
    Ok(conn
        .query_row("SELECT nic_id FROM nic_private_ips WHERE space = ?1 AND ip = ?2", [space, ip], |r| {
            r.get::<_, String>(0)
        })
        .optional()?
        .map(NicId::from_trusted))
}

// --- security groups -----------------------------------------------------

/// Replaces the NIC's groups.
pub fn set_groups(conn: &Conn, nic: &NicId, groups: &[SecurityGroupId]) -> Result<()> {
    conn.execute("DELETE FROM nic_security_groups WHERE nic_id = ?1", [nic.as_str()])?;
    for g in groups {
        conn.execute(
            "INSERT INTO nic_security_groups (nic_id, security_group_id, position)
             VALUES (?1, ?2, (SELECT COALESCE(MAX(position), 0) + 1 FROM nic_security_groups WHERE nic_id = ?1))
             ON CONFLICT DO NOTHING",
            [nic.as_str(), g.as_str()],
        )?;
    }
    Ok(())
}

/// The NIC's groups, in the order they were given.
pub fn groups_of(conn: &Conn, nic: &NicId) -> Result<Vec<SecurityGroupId>> {
    let mut stmt = conn.prepare_cached("SELECT security_group_id FROM nic_security_groups WHERE nic_id = ?1 ORDER BY position")?;
    let rows = stmt.query_map([nic.as_str()], |r| r.get::<_, String>(0))?.collect::<crate::Result<Vec<_>>>()?;
    Ok(rows.into_iter().map(SecurityGroupId::from_trusted).collect())
}

/// The NICs that are members of a group (rules naming it as a peer expand
/// to their addresses).
pub fn members_of_group(conn: &Conn, group: &SecurityGroupId) -> Result<Vec<NicId>> {
    let mut stmt = conn.prepare_cached("SELECT nic_id FROM nic_security_groups WHERE security_group_id = ?1 ORDER BY nic_id")?;
    let rows = stmt.query_map([group.as_str()], |r| r.get::<_, String>(0))?.collect::<crate::Result<Vec<_>>>()?;
    Ok(rows.into_iter().map(NicId::from_trusted).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nic(id: &str, account: &str) -> NicRow {
        NicRow {
            nic_id: NicId::from_trusted(id.into()),
            account_id: AccountId::from_trusted(account.into()),
            net_id: None,
            subnet_id: None,
            subregion_name: "eu-west-2a".into(),
            description: String::new(),
            mac: format!("aa:fc:00:00:00:{:02x}", id.len()),
            source_dest_check: true,
            state: "available".into(),
            vm_id: None,
            device_number: None,
            link_nic_id: None,
            delete_on_vm_deletion: false,
            linked_at: None,
            created_at: "2026-01-01T00:00:00.000Z".into(),
        }
    }

    #[test]
    fn an_address_is_taken_once_per_space_and_goes_with_its_nic() {
        crate::on_each_engine(|conn| {
            let a = nic("eni-00000001", "111111111111");
            let mut b = nic("eni-0000000b", "111111111111");
            b.mac = "aa:fc:00:00:00:bb".into();
            insert(conn, &a).unwrap();
            insert(conn, &b).unwrap();
            let space = a.space();
            add_ip(conn, &a.nic_id, &space, "10.0.0.4", true).unwrap();
            let dup = add_ip(conn, &b.nic_id, &space, "10.0.0.4", true).unwrap_err();
            assert!(dup.is_unique_violation(), "{dup}");
            // Another account's public cloud is another space.
            add_ip(conn, &b.nic_id, "public:222222222222", "10.0.0.4", true).unwrap();
            add_ip(conn, &a.nic_id, &space, "10.0.0.9", false).unwrap();
            let ips = ips_of(conn, &a.nic_id).unwrap();
            assert_eq!(ips.iter().map(|p| (p.ip.as_str(), p.is_primary)).collect::<Vec<_>>(), [("10.0.0.4", true), ("10.0.0.9", false)]);
            assert!(!remove_secondary_ip(conn, &a.nic_id, "10.0.0.4").unwrap(), "the primary address stays");
            delete(conn, &a.nic_id).unwrap();
            assert_eq!(ips_in_space(conn, &space).unwrap(), Vec::<String>::new());
            assert!(mac_in_use(conn, &b.mac).unwrap());
            Ok(())
        });
    }
}

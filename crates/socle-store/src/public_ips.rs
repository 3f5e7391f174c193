//! Public IPs: addresses of the operator's pool held by accounts, each
//! linked to at most one private address of a NIC, or used by a NAT
//! service.
//!
//! The database holds the invariants: an address is held once in the
//! whole cloud (`public_ip` UNIQUE), the link lives on the row (one link
//! per public IP), a private address has at most one public IP, and links
//! go with their NIC or private address (triggers of migration 7).

use std::collections::HashSet;
use std::net::Ipv4Addr;

use crate::params;
use crate::db::{Conn, Row};
use socle_types::ids::{AccountId, LinkPublicIpId, NatServiceId, NicId, PublicIpId, VmId};

use crate::Result;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicIpRow {
    pub public_ip_id: PublicIpId,
    pub account_id: AccountId,
    /// The address (`198.18.0.1`).
    pub public_ip: String,
    /// The link to a NIC's private address; all three set or none.
    pub link_public_ip_id: Option<LinkPublicIpId>,
    pub nic_id: Option<NicId>,
    pub private_ip: Option<String>,
    /// The NAT service that uses it, if any (read from `nat_services`).
    pub nat_service_id: Option<NatServiceId>,
    /// The linked NIC's VM and owner, if any (read from `nics`).
    pub vm_id: Option<VmId>,
    pub nic_account_id: Option<AccountId>,
    pub created_at: String,
    /// Given with a VM at launch: not listed, not counted, gone once unlinked.
    pub auto: bool,
}

const SELECT: &str = "SELECT p.public_ip_id, p.account_id, p.public_ip, p.link_public_ip_id, p.nic_id, p.private_ip,
            s.nat_service_id, n.vm_id, n.account_id, p.created_at, p.auto
     FROM public_ips p
     LEFT JOIN nat_services s ON s.public_ip_id = p.public_ip_id
     LEFT JOIN nics n ON n.nic_id = p.nic_id";

fn from_row(r: &Row) -> crate::Result<PublicIpRow> {
    Ok(PublicIpRow {
        public_ip_id: PublicIpId::from_trusted(r.get(0)?),
        account_id: AccountId::from_trusted(r.get(1)?),
        public_ip: r.get(2)?,
        link_public_ip_id: r.get::<_, Option<String>>(3)?.map(LinkPublicIpId::from_trusted),
        nic_id: r.get::<_, Option<String>>(4)?.map(NicId::from_trusted),
        private_ip: r.get(5)?,
        nat_service_id: r.get::<_, Option<String>>(6)?.map(NatServiceId::from_trusted),
        vm_id: r.get::<_, Option<String>>(7)?.map(VmId::from_trusted),
        nic_account_id: r.get::<_, Option<String>>(8)?.map(AccountId::from_trusted),
        created_at: r.get(9)?,
        auto: r.get(10)?,
    })
}

fn query(conn: &Conn, filter: &str, args: &[&dyn crate::db::ToValue]) -> Result<Vec<PublicIpRow>> {
    let mut stmt = conn.prepare_cached(&format!("{SELECT} {filter}"))?;
    let rows = stmt.query_map(args, from_row)?.collect::<crate::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Gives `account` the first address of `candidates` (the operator's pool,
/// in order) that no account holds; None when the pool is exhausted. Call
/// it in a write transaction: the UNIQUE column makes a concurrent double
/// allocation fail rather than succeed twice. `auto`: given with a VM at
/// launch (link it in the same transaction: unlinked, it is released).
pub fn allocate(
    conn: &Conn,
    account: &AccountId,
    id: &PublicIpId,
    candidates: impl IntoIterator<Item = Ipv4Addr>,
    created_at: &str,
    auto: bool,
) -> Result<Option<PublicIpRow>> {
    let mut stmt = conn.prepare_cached("SELECT public_ip FROM public_ips")?;
    let taken = stmt.query_map([], |r| r.get::<_, String>(0))?.collect::<crate::Result<HashSet<_>>>()?;
    let Some(ip) = candidates.into_iter().map(|ip| ip.to_string()).find(|ip| !taken.contains(ip)) else {
        return Ok(None);
    };
    conn.execute(
        "INSERT INTO public_ips (public_ip_id, account_id, public_ip, created_at, auto) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![id.as_str(), account.as_str(), ip, created_at, auto],
    )?;
    Ok(query(conn, "WHERE p.public_ip_id = ?1", &[&id.as_str()])?.pop())
}

// The account's own public IPs (not `auto`): what its operations see.

/// The caller's public IP (another account's is absent).
pub fn get(conn: &Conn, account: &AccountId, id: &PublicIpId) -> Result<Option<PublicIpRow>> {
    Ok(query(conn, "WHERE p.public_ip_id = ?1 AND p.account_id = ?2 AND p.auto = 0", &[&id.as_str(), &account.as_str()])?.pop())
}

/// The caller's public IP with that address.
pub fn get_by_address(conn: &Conn, account: &AccountId, ip: &str) -> Result<Option<PublicIpRow>> {
    Ok(query(conn, "WHERE p.public_ip = ?1 AND p.account_id = ?2 AND p.auto = 0", &[&ip, &account.as_str()])?.pop())
}

/// The caller's public IP with that link.
pub fn get_by_link(conn: &Conn, account: &AccountId, link: &LinkPublicIpId) -> Result<Option<PublicIpRow>> {
    Ok(query(conn, "WHERE p.link_public_ip_id = ?1 AND p.account_id = ?2 AND p.auto = 0", &[&link.as_str(), &account.as_str()])?.pop())
}

pub fn list(conn: &Conn, account: &AccountId) -> Result<Vec<PublicIpRow>> {
    query(conn, "WHERE p.account_id = ?1 AND p.auto = 0 ORDER BY p.created_at, p.public_ip_id", &[&account.as_str()])
}

/// How many public IPs the account holds (its quota counts these).
pub fn count_held(conn: &Conn, account: &AccountId) -> Result<i64> {
    Ok(conn.query_row("SELECT COUNT(*) FROM public_ips WHERE account_id = ?1 AND auto = 0", [account.as_str()], |r| r.get(0))?)
}

// Every public IP, `auto` ones included: what hosts wire and VMs show.

/// Every linked public IP of the cloud (the 1:1 NAT mappings to compile).
pub fn linked(conn: &Conn) -> Result<Vec<PublicIpRow>> {
    query(conn, "WHERE p.nic_id IS NOT NULL ORDER BY p.public_ip", &[])
}

/// The public IPs linked to one NIC.
pub fn of_nic(conn: &Conn, nic: &NicId) -> Result<Vec<PublicIpRow>> {
    query(conn, "WHERE p.nic_id = ?1 ORDER BY p.public_ip", &[&nic.as_str()])
}

/// Public IPs linked to NICs of the Net (an internet service must stay
/// linked while there are some).
pub fn count_linked_in_net(conn: &Conn, net: &socle_types::ids::NetId) -> Result<i64> {
    Ok(conn.query_row(
        "SELECT COUNT(*) FROM public_ips p JOIN nics n ON n.nic_id = p.nic_id WHERE n.net_id = ?1",
        [net.as_str()],
        |r| r.get(0),
    )?)
}

/// Links (or relinks) the public IP to a private address of a NIC. Fails
/// with a unique violation when that address has another public IP.
pub fn link(conn: &Conn, id: &PublicIpId, link: &LinkPublicIpId, nic: &NicId, private_ip: &str) -> Result<()> {
    conn.execute(
        "UPDATE public_ips SET link_public_ip_id = ?2, nic_id = ?3, private_ip = ?4 WHERE public_ip_id = ?1",
        params![id.as_str(), link.as_str(), nic.as_str(), private_ip],
    )?;
    Ok(())
}

pub fn unlink(conn: &Conn, id: &PublicIpId) -> Result<()> {
    conn.execute(
        "UPDATE public_ips SET link_public_ip_id = NULL, nic_id = NULL, private_ip = NULL WHERE public_ip_id = ?1",
        [id.as_str()],
    )?;
    Ok(())
}

/// Frees the address for the pool. A NAT service using it holds it
/// (foreign key): callers check first.
pub fn delete(conn: &Conn, id: &PublicIpId) -> Result<()> {
    conn.execute("DELETE FROM public_ips WHERE public_ip_id = ?1", [id.as_str()])?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::nics::{self, NicRow};
    use crate::now_iso;

    pub(crate) fn pool(last_octets: &[u8]) -> Vec<Ipv4Addr> {
        last_octets.iter().map(|o| Ipv4Addr::new(198, 18, 0, *o)).collect()
    }

    pub(crate) fn take(conn: &Conn, account: &AccountId, candidates: &[Ipv4Addr]) -> Option<PublicIpRow> {
        allocate(conn, account, &PublicIpId::generate(), candidates.iter().copied(), &now_iso(), false).unwrap()
    }

    fn nic(conn: &Conn, account: &AccountId, mac: &str, ips: &[&str]) -> NicId {
        let row = NicRow {
            nic_id: NicId::generate(),
            account_id: account.clone(),
            net_id: None,
            subnet_id: None,
            subregion_name: "eu-west-2a".into(),
            description: String::new(),
            mac: mac.into(),
            source_dest_check: true,
            state: "in-use".into(),
            vm_id: Some(VmId::generate()),
            device_number: Some(0),
            link_nic_id: None,
            delete_on_vm_deletion: true,
            linked_at: None,
            created_at: now_iso(),
        };
        nics::insert(conn, &row).unwrap();
        for (i, ip) in ips.iter().enumerate() {
            nics::add_ip(conn, &row.nic_id, &row.space(), ip, i == 0).unwrap();
        }
        row.nic_id
    }

    #[test]
    fn the_pool_gives_the_lowest_free_address_once_in_the_cloud() {
        crate::on_each_engine(|conn| -> Result<()> {
                let (a, b) = (AccountId::generate(), AccountId::generate());
                let candidates = pool(&[1, 2, 3]);
                let first = take(conn, &a, &candidates).unwrap();
                assert_eq!((first.public_ip.as_str(), first.link_public_ip_id.as_ref()), ("198.18.0.1", None));
                assert_eq!(take(conn, &b, &candidates).unwrap().public_ip, "198.18.0.2", "the pool is the cloud's");
                let third = take(conn, &a, &candidates).unwrap();
                assert!(take(conn, &b, &candidates).is_none(), "exhausted");
                delete(conn, &first.public_ip_id)?;
                assert_eq!(take(conn, &b, &candidates).unwrap().public_ip, "198.18.0.1", "a freed address is reused first");
                // The database refuses a second holder whatever the caller does.
                let dup = conn.execute(
                    "INSERT INTO public_ips (public_ip_id, account_id, public_ip, created_at) VALUES ('eipalloc-00000000', ?1, ?2, '')",
                    [a.as_str(), third.public_ip.as_str()],
                );
                assert!(crate::StoreError::from(dup.unwrap_err()).is_unique_violation());
                assert_eq!(list(conn, &a)?.len(), 1);
                assert!(get(conn, &b, &third.public_ip_id)?.is_none(), "another account's is absent");
                Ok(())
            });
    }

    #[test]
    fn links_are_unique_and_go_with_their_nic_or_address() {
        crate::on_each_engine(|conn| -> Result<()> {
                let a = AccountId::generate();
                let candidates = pool(&[1, 2, 3]);
                let (p1, p2, p3) = (take(conn, &a, &candidates).unwrap(), take(conn, &a, &candidates).unwrap(), take(conn, &a, &candidates).unwrap());
                let n = nic(conn, &a, "aa:fc:00:00:00:01", &["10.0.0.4", "10.0.0.5"]);
                let l1 = LinkPublicIpId::generate();
                link(conn, &p1.public_ip_id, &l1, &n, "10.0.0.4")?;
                let dup = link(conn, &p2.public_ip_id, &LinkPublicIpId::generate(), &n, "10.0.0.4").unwrap_err();
                assert!(dup.is_unique_violation(), "one public IP per private address: {dup}");
                link(conn, &p2.public_ip_id, &LinkPublicIpId::generate(), &n, "10.0.0.5")?;
                let got = get_by_link(conn, &a, &l1)?.unwrap();
                assert_eq!((got.nic_id.as_ref(), got.private_ip.as_deref()), (Some(&n), Some("10.0.0.4")));
                assert!(got.vm_id.is_some() && got.nic_account_id.as_ref() == Some(&a));
                assert_eq!(of_nic(conn, &n)?.len(), 2);
                assert_eq!(linked(conn)?.iter().map(|p| p.public_ip.as_str()).collect::<Vec<_>>(), ["198.18.0.1", "198.18.0.2"]);
                // Removing the secondary address unlinks its public IP only.
                assert!(nics::remove_secondary_ip(conn, &n, "10.0.0.5")?);
                assert_eq!(get(conn, &a, &p2.public_ip_id)?.unwrap().link_public_ip_id, None);
                // Deleting the NIC unlinks the rest; the addresses stay the account's.
                nics::delete(conn, &n)?;
                assert!(linked(conn)?.is_empty());
                assert_eq!(list(conn, &a)?.len(), 3);
                unlink(conn, &p3.public_ip_id)?;
                Ok(())
            });
    }

    #[test]
    fn a_launch_address_is_hidden_uncounted_and_released_once_unlinked() {
        crate::on_each_engine(|conn| -> Result<()> {
                let a = AccountId::generate();
                let candidates = pool(&[1, 2, 3]);
                let n = nic(conn, &a, "aa:fc:00:00:00:02", &["10.0.0.4", "10.0.0.5"]);
                let mut auto = vec![];
                for private in ["10.0.0.4", "10.0.0.5"] {
                    let id = PublicIpId::generate();
                    allocate(conn, &a, &id, candidates.iter().copied(), &now_iso(), true)?.unwrap();
                    link(conn, &id, &LinkPublicIpId::generate(), &n, private)?;
                    auto.push(id);
                }
                assert!(list(conn, &a)?.is_empty() && get(conn, &a, &auto[0])?.is_none(), "not the account's to see");
                assert_eq!(count_held(conn, &a)?, 0, "not counted");
                assert_eq!(of_nic(conn, &n)?.len(), 2, "but wired and shown on the NIC");
                // Unlinked (the address removed, then the NIC deleted): gone, its address free.
                assert!(nics::remove_secondary_ip(conn, &n, "10.0.0.5")?);
                nics::delete(conn, &n)?;
                let left: i64 = conn.query_row("SELECT COUNT(*) FROM public_ips", [], |r| r.get(0))?;
                assert_eq!(left, 0);
                assert_eq!(take(conn, &a, &candidates).unwrap().public_ip, "198.18.0.1");
                Ok(())
            });
    }
}

//! NAT services (NAT gateways): a subnet's exit for the subnets whose
//! default route points at it, through one public IP. The public IP is
//! used by one NAT service at most (UNIQUE) and cannot be deleted while
//! used (foreign key). A deleted NAT service leaves no row.

use crate::params;
use crate::db::{Conn, Row};
use socle_types::ids::{AccountId, NatServiceId, NetId, PublicIpId, SubnetId};

use crate::Result;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatServiceRow {
    pub nat_service_id: NatServiceId,
    pub account_id: AccountId,
    pub net_id: NetId,
    pub subnet_id: SubnetId,
    pub public_ip_id: PublicIpId,
    /// The public IP's address (read from `public_ips`).
    pub public_ip: String,
    pub client_token: Option<String>,
    /// `available` (the host side is the network reconciler's business).
    pub state: String,
    pub created_at: String,
}

const SELECT: &str = "SELECT s.nat_service_id, s.account_id, s.net_id, s.subnet_id, s.public_ip_id, p.public_ip,
            s.client_token, s.state, s.created_at
     FROM nat_services s JOIN public_ips p ON p.public_ip_id = s.public_ip_id";

fn from_row(r: &Row) -> crate::Result<NatServiceRow> {
    Ok(NatServiceRow {
        nat_service_id: NatServiceId::from_trusted(r.get(0)?),
        account_id: AccountId::from_trusted(r.get(1)?),
        net_id: NetId::from_trusted(r.get(2)?),
        subnet_id: SubnetId::from_trusted(r.get(3)?),
        public_ip_id: PublicIpId::from_trusted(r.get(4)?),
        public_ip: r.get(5)?,
        client_token: r.get(6)?,
        state: r.get(7)?,
        created_at: r.get(8)?,
    })
}

fn query(conn: &Conn, filter: &str, args: &[&dyn crate::db::ToValue]) -> Result<Vec<NatServiceRow>> {
    let mut stmt = conn.prepare(&format!("{SELECT} {filter}"))?;
    let rows = stmt.query_map(args, from_row)?.collect::<crate::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Inserts the row (`public_ip` is not stored: it is the public IP row's).
/// Fails with a unique violation when the public IP is used by another
/// NAT service or the account used the client token already.
pub fn insert(conn: &Conn, n: &NatServiceRow) -> Result<()> {
    conn.execute(
        "INSERT INTO nat_services (nat_service_id, account_id, net_id, subnet_id, public_ip_id, client_token, state, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            n.nat_service_id.as_str(),
            n.account_id.as_str(),
            n.net_id.as_str(),
            n.subnet_id.as_str(),
            n.public_ip_id.as_str(),
            n.client_token,
            n.state,
            n.created_at
        ],
    )?;
    Ok(())
}

/// The caller's NAT service (another account's is absent).
pub fn get(conn: &Conn, account: &AccountId, id: &NatServiceId) -> Result<Option<NatServiceRow>> {
    Ok(query(conn, "WHERE s.nat_service_id = ?1 AND s.account_id = ?2", &[&id.as_str(), &account.as_str()])?.pop())
}

/// The caller's NAT service made with that ClientToken.
pub fn by_client_token(conn: &Conn, account: &AccountId, token: &str) -> Result<Option<NatServiceRow>> {
    Ok(query(conn, "WHERE s.client_token = ?1 AND s.account_id = ?2", &[&token, &account.as_str()])?.pop())
}

pub fn list(conn: &Conn, account: &AccountId) -> Result<Vec<NatServiceRow>> {
    query(conn, "WHERE s.account_id = ?1 ORDER BY s.created_at, s.nat_service_id", &[&account.as_str()])
}

/// The NAT services of a Net, with their public addresses (what the
/// network compiler turns into SNAT rules).
pub fn of_net(conn: &Conn, net: &NetId) -> Result<Vec<NatServiceRow>> {
    query(conn, "WHERE s.net_id = ?1 ORDER BY s.created_at, s.nat_service_id", &[&net.as_str()])
}

pub fn count_in_subnet(conn: &Conn, subnet: &SubnetId) -> Result<i64> {
    Ok(conn.query_row("SELECT COUNT(*) FROM nat_services WHERE subnet_id = ?1", [subnet.as_str()], |r| r.get(0))?)
}

pub fn delete(conn: &Conn, id: &NatServiceId) -> Result<()> {
    conn.execute("DELETE FROM nat_services WHERE nat_service_id = ?1", [id.as_str()])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::internet_services::tests::test_net;
    use crate::nets::{insert_subnet, SubnetRow};
    use crate::public_ips::{self, tests::{pool, take}};
    use crate::now_iso;

    #[test]
    fn a_public_ip_serves_one_nat_service_and_stays_while_used() {
        crate::on_each_engine(|conn| -> Result<()> {
                let a = AccountId::generate();
                let net = test_net(conn, &a, "10.0.0.0/16").net_id;
                let subnet = SubnetRow {
                    subnet_id: SubnetId::generate(),
                    account_id: a.clone(),
                    net_id: net.clone(),
                    ip_range: "10.0.1.0/24".into(),
                    subregion_name: "eu-west-2a".into(),
                    map_public_ip_on_launch: false,
                    state: "available".into(),
                    created_at: now_iso(),
                };
                insert_subnet(conn, &subnet)?;
                let ip = take(conn, &a, &pool(&[7])).unwrap();
                let row = NatServiceRow {
                    nat_service_id: NatServiceId::generate(),
                    account_id: a.clone(),
                    net_id: net.clone(),
                    subnet_id: subnet.subnet_id.clone(),
                    public_ip_id: ip.public_ip_id.clone(),
                    public_ip: String::new(),
                    client_token: Some("t1".into()),
                    state: "available".into(),
                    created_at: now_iso(),
                };
                insert(conn, &row)?;
                let again = NatServiceRow { nat_service_id: NatServiceId::generate(), client_token: None, ..row.clone() };
                assert!(insert(conn, &again).unwrap_err().is_unique_violation(), "one NAT service per public IP");
                let got = of_net(conn, &net)?;
                assert_eq!((got.len(), got[0].public_ip.as_str()), (1, "198.18.0.7"));
                assert_eq!(by_client_token(conn, &a, "t1")?.unwrap().nat_service_id, row.nat_service_id);
                assert!(by_client_token(conn, &AccountId::generate(), "t1")?.is_none());
                let used = public_ips::get(conn, &a, &ip.public_ip_id)?.unwrap();
                assert_eq!(used.nat_service_id.as_ref(), Some(&row.nat_service_id));
                assert!(public_ips::delete(conn, &ip.public_ip_id).is_err(), "a used public IP stays");
                assert_eq!(count_in_subnet(conn, &subnet.subnet_id)?, 1);
                delete(conn, &row.nat_service_id)?;
                public_ips::delete(conn, &ip.public_ip_id)?;
                Ok(())
            });
    }
}

//! Internet services (internet gateways): the way between a Net and the
//! outside. One is linked to at most one Net, and a Net has at most one:
//! `net_id` is a UNIQUE column, NULL while unlinked.

use crate::params;
use crate::db::{Conn, Row};
use socle_types::ids::{AccountId, InternetServiceId, NetId};

use crate::Result;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InternetServiceRow {
    pub internet_service_id: InternetServiceId,
    pub account_id: AccountId,
    /// The Net it is linked to, if any.
    pub net_id: Option<NetId>,
    pub created_at: String,
}

const COLUMNS: &str = "internet_service_id, account_id, net_id, created_at";

fn from_row(r: &Row) -> crate::Result<InternetServiceRow> {
    Ok(InternetServiceRow {
        internet_service_id: InternetServiceId::from_trusted(r.get(0)?),
        account_id: AccountId::from_trusted(r.get(1)?),
        net_id: r.get::<_, Option<String>>(2)?.map(NetId::from_trusted),
        created_at: r.get(3)?,
    })
}

fn query(conn: &Conn, filter: &str, args: &[&dyn crate::db::ToValue]) -> Result<Vec<InternetServiceRow>> {
    let mut stmt = conn.prepare(&format!("SELECT {COLUMNS} FROM internet_services {filter}"))?;
    let rows = stmt.query_map(args, from_row)?.collect::<crate::Result<Vec<_>>>()?;
    Ok(rows)
}

pub fn insert(conn: &Conn, row: &InternetServiceRow) -> Result<()> {
    conn.execute(
        &format!("INSERT INTO internet_services ({COLUMNS}) VALUES (?1, ?2, ?3, ?4)"),
        params![
            row.internet_service_id.as_str(),
            row.account_id.as_str(),
            row.net_id.as_ref().map(|n| n.as_str()),
            row.created_at
        ],
    )?;
    Ok(())
}

/// The caller's internet service (another account's is absent).
pub fn get(conn: &Conn, account: &AccountId, id: &InternetServiceId) -> Result<Option<InternetServiceRow>> {
    Ok(query(conn, "WHERE internet_service_id = ?1 AND account_id = ?2", &[&id.as_str(), &account.as_str()])?.pop())
}

pub fn list(conn: &Conn, account: &AccountId) -> Result<Vec<InternetServiceRow>> {
    query(conn, "WHERE account_id = ?1 ORDER BY created_at, internet_service_id", &[&account.as_str()])
}

/// The internet service linked to the Net, if any (what the network
/// compiler reads to give the Net its uplink).
pub fn linked_to_net(conn: &Conn, net: &NetId) -> Result<Option<InternetServiceRow>> {
    Ok(query(conn, "WHERE net_id = ?1", &[&net.as_str()])?.pop())
}

/// Links to `net` (Some) or unlinks (None). Linking to a Net that has one
/// already breaks the UNIQUE constraint ([`crate::StoreError::is_unique_violation`]).
pub fn set_net(conn: &Conn, id: &InternetServiceId, net: Option<&NetId>) -> Result<()> {
    conn.execute(
        "UPDATE internet_services SET net_id = ?2 WHERE internet_service_id = ?1",
        params![id.as_str(), net.map(|n| n.as_str())],
    )?;
    Ok(())
}

pub fn delete(conn: &Conn, id: &InternetServiceId) -> Result<()> {
    conn.execute("DELETE FROM internet_services WHERE internet_service_id = ?1", [id.as_str()])?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::nets::{insert_net, NetRow};
    use crate::now_iso;

    /// A Net row for tests of the modules that hang off Nets.
    pub(crate) fn test_net(conn: &Conn, account: &AccountId, range: &str) -> NetRow {
        let row = NetRow {
            net_id: NetId::generate(),
            account_id: account.clone(),
            ip_range: range.into(),
            tenancy: "default".into(),
            state: "available".into(),
            vni: crate::nets::next_vni(conn).unwrap(),
            created_at: now_iso(),
        };
        insert_net(conn, &row).unwrap();
        row
    }

    pub(crate) fn test_igw(conn: &Conn, account: &AccountId) -> InternetServiceRow {
        let row = InternetServiceRow {
            internet_service_id: InternetServiceId::generate(),
            account_id: account.clone(),
            net_id: None,
            created_at: now_iso(),
        };
        insert(conn, &row).unwrap();
        row
    }

    #[test]
    fn a_net_has_at_most_one_internet_service() {
        crate::on_each_engine(|conn| -> Result<()> {
                let a = AccountId::generate();
                let net = test_net(conn, &a, "10.0.0.0/16");
                let (one, two) = (test_igw(conn, &a), test_igw(conn, &a));
                assert_eq!(linked_to_net(conn, &net.net_id)?, None);
                set_net(conn, &one.internet_service_id, Some(&net.net_id))?;
                let err = set_net(conn, &two.internet_service_id, Some(&net.net_id)).unwrap_err();
                assert!(err.is_unique_violation(), "{err}");
                assert_eq!(linked_to_net(conn, &net.net_id)?.unwrap().internet_service_id, one.internet_service_id);
                assert!(get(conn, &AccountId::generate(), &one.internet_service_id)?.is_none(), "another account's is absent");
                set_net(conn, &one.internet_service_id, None)?;
                set_net(conn, &two.internet_service_id, Some(&net.net_id))?;
                assert_eq!(list(conn, &a)?.len(), 2);
                Ok(())
            });
    }
}

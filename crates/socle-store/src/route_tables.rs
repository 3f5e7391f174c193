//! Route tables of Nets, their links to subnets and their routes.
//!
//! Every Net has one main table (made with the Net, gone with it), marked
//! by its `main_link_id` (the `rtbassoc-` of its "Main" link). A subnet
//! uses the table explicitly linked to it, else the main one. The local
//! route (the Net's own range) is implicit: it is never stored, so it can
//! neither be deleted nor go stale. A route's target may disappear (an
//! internet service unlinked, a NAT service or NIC deleted): the route
//! stays and reads as a blackhole, computed here from the target's rows.

use crate::params;
use crate::db::{Conn, Row};
use socle_types::ids::{
    AccountId, InternetServiceId, LinkRouteTableId, NatServiceId, NetId, NicId, RouteTableId, SubnetId, VmId,
};

use crate::Result;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteTableRow {
    pub route_table_id: RouteTableId,
    pub account_id: AccountId,
    pub net_id: NetId,
    /// Set on the Net's main table only: the ID of its "Main" link.
    pub main_link_id: Option<LinkRouteTableId>,
    pub created_at: String,
}

impl RouteTableRow {
    pub fn is_main(&self) -> bool {
        self.main_link_id.is_some()
    }
}

/// An explicit link of a table to a subnet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkRow {
    pub link_route_table_id: LinkRouteTableId,
    pub route_table_id: RouteTableId,
    pub subnet_id: SubnetId,
    pub created_at: String,
}

/// Where a route sends its traffic: exactly one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteTarget {
    Gateway(InternetServiceId),
    NatService(NatServiceId),
    Nic(NicId),
}

/// A stored route (never the local one). Exactly one of `gateway_id`,
/// `nat_service_id` and `nic_id` is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteRow {
    pub route_table_id: RouteTableId,
    /// Canonical CIDR (`0.0.0.0/0`).
    pub destination: String,
    pub gateway_id: Option<InternetServiceId>,
    pub nat_service_id: Option<NatServiceId>,
    pub nic_id: Option<NicId>,
    /// The VM the target NIC is linked to now, and its owner (shown as VmId).
    pub vm_id: Option<VmId>,
    pub vm_account_id: Option<AccountId>,
    /// The target is gone: the internet service is no longer linked to the
    /// table's Net, the NAT service was deleted, the NIC was deleted or is
    /// linked to no VM. The network compiler skips such routes.
    pub blackhole: bool,
    pub created_at: String,
}

const TABLE_COLUMNS: &str = "route_table_id, account_id, net_id, main_link_id, created_at";

fn table_from_row(r: &Row) -> crate::Result<RouteTableRow> {
    Ok(RouteTableRow {
        route_table_id: RouteTableId::from_trusted(r.get(0)?),
        account_id: AccountId::from_trusted(r.get(1)?),
        net_id: NetId::from_trusted(r.get(2)?),
        main_link_id: r.get::<_, Option<String>>(3)?.map(LinkRouteTableId::from_trusted),
        created_at: r.get(4)?,
    })
}

fn tables(conn: &Conn, filter: &str, args: &[&dyn crate::db::ToValue]) -> Result<Vec<RouteTableRow>> {
    let mut stmt = conn.prepare(&format!("SELECT {TABLE_COLUMNS} FROM route_tables {filter}"))?;
    let rows = stmt.query_map(args, table_from_row)?.collect::<crate::Result<Vec<_>>>()?;
    Ok(rows)
}

pub fn insert_table(conn: &Conn, t: &RouteTableRow) -> Result<()> {
    conn.execute(
        &format!("INSERT INTO route_tables ({TABLE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5)"),
        params![
            t.route_table_id.as_str(),
            t.account_id.as_str(),
            t.net_id.as_str(),
            t.main_link_id.as_ref().map(|l| l.as_str()),
            t.created_at
        ],
    )?;
    Ok(())
}

/// The caller's table (another account's is absent).
pub fn get(conn: &Conn, account: &AccountId, id: &RouteTableId) -> Result<Option<RouteTableRow>> {
    Ok(tables(conn, "WHERE route_table_id = ?1 AND account_id = ?2", &[&id.as_str(), &account.as_str()])?.pop())
}

pub fn list(conn: &Conn, account: &AccountId) -> Result<Vec<RouteTableRow>> {
    tables(conn, "WHERE account_id = ?1 ORDER BY created_at, route_table_id", &[&account.as_str()])
}

/// Every table of a Net, the main one included.
pub fn of_net(conn: &Conn, net: &NetId) -> Result<Vec<RouteTableRow>> {
    tables(conn, "WHERE net_id = ?1 ORDER BY created_at, route_table_id", &[&net.as_str()])
}

pub fn main_of(conn: &Conn, net: &NetId) -> Result<Option<RouteTableRow>> {
    Ok(tables(conn, "WHERE net_id = ?1 AND main_link_id IS NOT NULL", &[&net.as_str()])?.pop())
}

/// Deletes a table and (ON DELETE CASCADE) its routes. Its subnet links
/// must be gone (foreign key).
pub fn delete_table(conn: &Conn, id: &RouteTableId) -> Result<()> {
    conn.execute("DELETE FROM route_tables WHERE route_table_id = ?1", [id.as_str()])?;
    Ok(())
}

// --- links -------------------------------------------------------------------

const LINK_SELECT: &str = "SELECT l.link_route_table_id, l.route_table_id, l.subnet_id, l.created_at
     FROM route_table_links l JOIN route_tables t ON t.route_table_id = l.route_table_id";

fn link_from_row(r: &Row) -> crate::Result<LinkRow> {
    Ok(LinkRow {
        link_route_table_id: LinkRouteTableId::from_trusted(r.get(0)?),
        route_table_id: RouteTableId::from_trusted(r.get(1)?),
        subnet_id: SubnetId::from_trusted(r.get(2)?),
        created_at: r.get(3)?,
    })
}

fn links(conn: &Conn, filter: &str, args: &[&dyn crate::db::ToValue]) -> Result<Vec<LinkRow>> {
    let mut stmt = conn.prepare(&format!("{LINK_SELECT} {filter} ORDER BY l.created_at, l.link_route_table_id"))?;
    let rows = stmt.query_map(args, link_from_row)?.collect::<crate::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Fails with a unique violation when the subnet has an explicit link already.
pub fn insert_link(conn: &Conn, l: &LinkRow) -> Result<()> {
    conn.execute(
        "INSERT INTO route_table_links (link_route_table_id, route_table_id, subnet_id, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![l.link_route_table_id.as_str(), l.route_table_id.as_str(), l.subnet_id.as_str(), l.created_at],
    )?;
    Ok(())
}

/// One explicit link of the caller's tables.
pub fn get_link(conn: &Conn, account: &AccountId, id: &LinkRouteTableId) -> Result<Option<LinkRow>> {
    Ok(links(conn, "WHERE l.link_route_table_id = ?1 AND t.account_id = ?2", &[&id.as_str(), &account.as_str()])?.pop())
}

/// Every explicit link of the caller's tables (one query for ReadRouteTables).
pub fn links_of_account(conn: &Conn, account: &AccountId) -> Result<Vec<LinkRow>> {
    links(conn, "WHERE t.account_id = ?1", &[&account.as_str()])
}

pub fn links_of_table(conn: &Conn, table: &RouteTableId) -> Result<Vec<LinkRow>> {
    links(conn, "WHERE l.route_table_id = ?1", &[&table.as_str()])
}

pub fn delete_link(conn: &Conn, id: &LinkRouteTableId) -> Result<()> {
    conn.execute("DELETE FROM route_table_links WHERE link_route_table_id = ?1", [id.as_str()])?;
    Ok(())
}

// --- routes ------------------------------------------------------------------

const ROUTE_SELECT: &str = "SELECT r.route_table_id, r.destination, r.gateway_id, r.nat_service_id, r.nic_id,
            n.vm_id, n.account_id,
            CASE
              WHEN r.gateway_id IS NOT NULL THEN NOT EXISTS (SELECT 1 FROM internet_services i
                   WHERE i.internet_service_id = r.gateway_id AND i.net_id = t.net_id)
              WHEN r.nat_service_id IS NOT NULL THEN NOT EXISTS (SELECT 1 FROM nat_services s
                   WHERE s.nat_service_id = r.nat_service_id)
              ELSE n.vm_id IS NULL
            END,
            r.created_at
     FROM routes r JOIN route_tables t ON t.route_table_id = r.route_table_id
     LEFT JOIN nics n ON n.nic_id = r.nic_id";

fn route_from_row(r: &Row) -> crate::Result<RouteRow> {
    let vm_id = r.get::<_, Option<String>>(5)?.map(VmId::from_trusted);
    Ok(RouteRow {
        route_table_id: RouteTableId::from_trusted(r.get(0)?),
        destination: r.get(1)?,
        gateway_id: r.get::<_, Option<String>>(2)?.map(InternetServiceId::from_trusted),
        nat_service_id: r.get::<_, Option<String>>(3)?.map(NatServiceId::from_trusted),
        nic_id: r.get::<_, Option<String>>(4)?.map(NicId::from_trusted),
        // The owner matters only next to a VM.
        vm_account_id: vm_id.as_ref().and(r.get::<_, Option<String>>(6)?).map(AccountId::from_trusted),
        vm_id,
        blackhole: r.get(7)?,
        created_at: r.get(8)?,
    })
}

fn routes(conn: &Conn, filter: &str, args: &[&dyn crate::db::ToValue]) -> Result<Vec<RouteRow>> {
    let mut stmt = conn.prepare(&format!("{ROUTE_SELECT} {filter} ORDER BY r.created_at, r.destination"))?;
    let rows = stmt.query_map(args, route_from_row)?.collect::<crate::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Fails with a unique violation when the table has a route to `destination`.
pub fn insert_route(conn: &Conn, table: &RouteTableId, destination: &str, target: &RouteTarget, created_at: &str) -> Result<()> {
    let (gateway, nat, nic) = match target {
        RouteTarget::Gateway(g) => (Some(g.as_str()), None, None),
        RouteTarget::NatService(n) => (None, Some(n.as_str()), None),
        RouteTarget::Nic(n) => (None, None, Some(n.as_str())),
    };
    conn.execute(
        "INSERT INTO routes (route_table_id, destination, gateway_id, nat_service_id, nic_id, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![table.as_str(), destination, gateway, nat, nic, created_at],
    )?;
    Ok(())
}

/// Returns whether a route was deleted.
pub fn delete_route(conn: &Conn, table: &RouteTableId, destination: &str) -> Result<bool> {
    let n = conn.execute(
        "DELETE FROM routes WHERE route_table_id = ?1 AND destination = ?2",
        params![table.as_str(), destination],
    )?;
    Ok(n > 0)
}

pub fn routes_of_table(conn: &Conn, table: &RouteTableId) -> Result<Vec<RouteRow>> {
    routes(conn, "WHERE r.route_table_id = ?1", &[&table.as_str()])
}

/// Every route of the caller's tables (one query for ReadRouteTables).
pub fn routes_of_account(conn: &Conn, account: &AccountId) -> Result<Vec<RouteRow>> {
    routes(conn, "WHERE t.account_id = ?1", &[&account.as_str()])
}

/// The routes that apply to `subnet` of `net`: those of the table
/// explicitly linked to the subnet, else those of the Net's main table;
/// without the local route (the Net's range, always there), blackholes
/// included (`blackhole` says which to skip).
pub fn effective_routes(conn: &Conn, net: &NetId, subnet: &SubnetId) -> Result<Vec<RouteRow>> {
    routes(
        conn,
        "WHERE r.route_table_id = COALESCE(
             (SELECT route_table_id FROM route_table_links WHERE subnet_id = ?2),
             (SELECT route_table_id FROM route_tables WHERE net_id = ?1 AND main_link_id IS NOT NULL))",
        &[&net.as_str(), &subnet.as_str()],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::internet_services::{self as igw, tests::{test_igw, test_net}};
    use crate::nets::{insert_subnet, SubnetRow};
    use crate::now_iso;

    fn table(conn: &Conn, account: &AccountId, net: &NetId, main: bool) -> RouteTableRow {
        let t = RouteTableRow {
            route_table_id: RouteTableId::generate(),
            account_id: account.clone(),
            net_id: net.clone(),
            main_link_id: main.then(LinkRouteTableId::generate),
            created_at: now_iso(),
        };
        insert_table(conn, &t).unwrap();
        t
    }

    fn subnet(conn: &Conn, account: &AccountId, net: &NetId, range: &str) -> SubnetId {
        let s = SubnetRow {
            subnet_id: SubnetId::generate(),
            account_id: account.clone(),
            net_id: net.clone(),
            ip_range: range.into(),
            subregion_name: "eu-west-2a".into(),
            map_public_ip_on_launch: false,
            state: "available".into(),
            created_at: now_iso(),
        };
        insert_subnet(conn, &s).unwrap();
        s.subnet_id
    }

    fn link(conn: &Conn, t: &RouteTableId, s: &SubnetId) -> Result<LinkRow> {
        let l = LinkRow {
            link_route_table_id: LinkRouteTableId::generate(),
            route_table_id: t.clone(),
            subnet_id: s.clone(),
            created_at: now_iso(),
        };
        insert_link(conn, &l)?;
        Ok(l)
    }

    fn destinations(rows: &[RouteRow]) -> Vec<(&str, bool)> {
        rows.iter().map(|r| (r.destination.as_str(), r.blackhole)).collect()
    }

    #[test]
    fn effective_routes_fall_back_to_the_main_table() {
        crate::on_each_engine(|conn| -> Result<()> {
                let a = AccountId::generate();
                let net = test_net(conn, &a, "10.0.0.0/16").net_id;
                let main = table(conn, &a, &net, true);
                let mut second = main.clone();
                second.route_table_id = RouteTableId::generate();
                second.main_link_id = Some(LinkRouteTableId::generate());
                assert!(insert_table(conn, &second).unwrap_err().is_unique_violation(), "one main table per Net");
                let custom = table(conn, &a, &net, false);
                let (s1, s2) = (subnet(conn, &a, &net, "10.0.1.0/24"), subnet(conn, &a, &net, "10.0.2.0/24"));
                let gw = test_igw(conn, &a);
                igw::set_net(conn, &gw.internet_service_id, Some(&net))?;
                let to_gw = RouteTarget::Gateway(gw.internet_service_id.clone());
                insert_route(conn, &main.route_table_id, "0.0.0.0/0", &to_gw, &now_iso())?;
                let nat = RouteTarget::NatService(NatServiceId::generate());
                insert_route(conn, &custom.route_table_id, "0.0.0.0/0", &nat, &now_iso())?;
                insert_route(conn, &custom.route_table_id, "192.168.0.0/24", &to_gw, &now_iso())?;
                let dup = insert_route(conn, &custom.route_table_id, "0.0.0.0/0", &to_gw, &now_iso()).unwrap_err();
                assert!(dup.is_unique_violation(), "one route per destination: {dup}");

                // Without an explicit link a subnet uses the main table.
                assert_eq!(destinations(&effective_routes(conn, &net, &s1)?), [("0.0.0.0/0", false)]);
                let l = link(conn, &custom.route_table_id, &s1)?;
                let dup = link(conn, &main.route_table_id, &s1).unwrap_err();
                assert!(dup.is_unique_violation(), "one explicit link per subnet: {dup}");
                // The NAT service does not exist: a blackhole, still listed.
                assert_eq!(
                    destinations(&effective_routes(conn, &net, &s1)?),
                    [("0.0.0.0/0", true), ("192.168.0.0/24", false)]
                );
                assert_eq!(effective_routes(conn, &net, &s2)?[0].gateway_id.as_ref(), Some(&gw.internet_service_id));
                // An unlinked internet service makes its routes blackholes.
                igw::set_net(conn, &gw.internet_service_id, None)?;
                assert_eq!(destinations(&effective_routes(conn, &net, &s2)?), [("0.0.0.0/0", true)]);
                delete_link(conn, &l.link_route_table_id)?;
                assert_eq!(effective_routes(conn, &net, &s1)?.len(), 1, "back to the main table");
                assert!(delete_route(conn, &main.route_table_id, "0.0.0.0/0")?);
                assert!(!delete_route(conn, &main.route_table_id, "0.0.0.0/0")?);
                assert!(effective_routes(conn, &net, &s1)?.is_empty());
                // A subnet's link goes with the subnet.
                link(conn, &custom.route_table_id, &s2)?;
                conn.execute("DELETE FROM subnets WHERE subnet_id = ?1", [s2.as_str()])?;
                assert!(links_of_table(conn, &custom.route_table_id)?.is_empty());
                delete_table(conn, &custom.route_table_id)?;
                assert!(routes_of_account(conn, &a)?.is_empty(), "routes go with their table");
                assert_eq!(main_of(conn, &net)?.unwrap().route_table_id, main.route_table_id);
                Ok(())
            });
    }
}

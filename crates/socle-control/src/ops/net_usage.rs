//! What keeps a Net from being deleted besides its subnets and security
//! groups: an internet service linked, NAT services, NICs, route tables
//! other than its main one (which goes with the Net).

use socle_store::{internet_services as igw_store, nat_services as nat_store, nics as nic_store, route_tables as rt_store, Conn};
use socle_types::error::ErrorCode;
use socle_types::ids::NetId;
use socle_types::ApiError;

/// Refuses (9066, naming what is left) while the Net still has any of them.
pub(crate) fn refuse_if_in_use(conn: &Conn, net: &NetId) -> Result<(), ApiError> {
    let mut left = Vec::new();
    if let Some(igw) = igw_store::linked_to_net(conn, net)? {
        left.push(format!("the internet service {} linked", igw.internet_service_id));
    }
    let nats: Vec<String> = nat_store::of_net(conn, net)?.into_iter().map(|n| n.nat_service_id.to_string()).collect();
    if !nats.is_empty() {
        left.push(format!("NAT services ({})", nats.join(", ")));
    }
    let nics = nic_store::count_in_net(conn, net)?;
    if nics > 0 {
        left.push(format!("{nics} NIC(s)"));
    }
    let tables: Vec<String> =
        rt_store::of_net(conn, net)?.into_iter().filter(|t| !t.is_main()).map(|t| t.route_table_id.to_string()).collect();
    if !tables.is_empty() {
        left.push(format!("route tables ({})", tables.join(", ")));
    }
    if left.is_empty() {
        return Ok(());
    }
    Err(ApiError::new(ErrorCode::NetInUse, format!("the Net {net} still has {}; remove them first", left.join(", "))))
}

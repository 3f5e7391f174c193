//! The ranges a cloud puts in the host's root namespace (its uplinks, its
//! public IPs) must not be networks the host already uses: a cloud that
//! took the host's own subnet would answer for its gateway or its neighbours.
//! `socle up` checks them against the host's routes before it uses them.

use crate::cidr::Ipv4Net;
use crate::error::Result;
use crate::host;

/// A route of the host's root namespace that claims addresses.
#[derive(Debug, Clone)]
pub struct HostRoute {
    pub dest: Ipv4Net,
    /// As `ip route` would show it, for error messages.
    pub shown: String,
}

/// The routes of every table of the root namespace, except the default
/// route (it reaches everything and claims nothing) and the routes of the
/// cloud's own devices (names starting with `own_prefix`: it made them from
/// these very ranges).
pub fn host_routes(own_prefix: &str) -> Result<Vec<HostRoute>> {
    let routes = host::routes(None, &["table", "all"])?;
    Ok(claiming(routes, own_prefix))
}

fn claiming(routes: Vec<host::RouteEntry>, own_prefix: &str) -> Vec<HostRoute> {
    routes
        .into_iter()
        .filter(|r| r.dst != "default")
        .filter(|r| !r.dev.as_deref().is_some_and(|d| d.starts_with(own_prefix)))
        .filter_map(|r| {
            let dest = r.dest()?;
            let mut shown = match &r.kind {
                Some(kind) if kind != "unicast" => format!("{kind} {}", r.dst),
                _ => r.dst.clone(),
            };
            if let Some(dev) = &r.dev {
                shown.push_str(&format!(" dev {dev}"));
            }
            if let Some(table) = r.table.as_deref().filter(|t| *t != "main") {
                shown.push_str(&format!(" table {table}"));
            }
            Some(HostRoute { dest, shown })
        })
        .collect()
}

/// The first route that overlaps `range`.
pub fn overlap<'a>(routes: &'a [HostRoute], range: &Ipv4Net) -> Option<&'a HostRoute> {
    routes.iter().find(|r| r.dest.overlaps(range))
}

/// The first range of length `prefix_len` inside `spaces` (taken in order)
/// that no route overlaps.
pub fn free_range(routes: &[HostRoute], spaces: &[Ipv4Net], prefix_len: u8) -> Option<Ipv4Net> {
    for space in spaces.iter().filter(|s| s.prefix_len() <= prefix_len) {
        let count = 1u64 << (prefix_len - space.prefix_len());
        let size = 1u64 << (32 - u32::from(prefix_len));
        for i in 0..count {
            let base = u32::from(space.network()) as u64 + i * size;
            let candidate = Ipv4Net::new((base as u32).into(), prefix_len)?;
            if overlap(routes, &candidate).is_none() {
                return Some(candidate);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes(json: &str) -> Vec<HostRoute> {
        claiming(serde_json::from_str(json).unwrap(), "socle")
    }

    #[test]
    fn the_hosts_routes_claim_their_ranges_but_not_the_default_nor_the_clouds_own() {
        let r = routes(
            r#"[{"dst":"default","gateway":"192.0.2.1","dev":"eth0"},
                {"dst":"192.0.2.0/24","dev":"eth0","protocol":"kernel"},
                {"dst":"169.254.0.0/16","dev":"eth1"},
                {"dst":"198.18.0.7","dev":"socle-1a2b3c4d"},
                {"type":"local","dst":"127.0.0.0/8","dev":"lo","table":"local"}]"#,
        );
        let shown: Vec<&str> = r.iter().map(|r| r.shown.as_str()).collect();
        assert_eq!(shown, ["192.0.2.0/24 dev eth0", "169.254.0.0/16 dev eth1", "local 127.0.0.0/8 dev lo table local"]);
        let uplinks: Ipv4Net = "169.254.0.0/17".parse().unwrap();
        assert_eq!(overlap(&r, &uplinks).unwrap().shown, "169.254.0.0/16 dev eth1");
        assert!(overlap(&r, &"198.18.0.0/24".parse().unwrap()).is_none(), "the cloud's own routes do not count");
        // The whole link-local range is taken: the next space.
        let spaces = ["169.254.0.0/16".parse().unwrap(), "100.64.0.0/10".parse().unwrap()];
        assert_eq!(free_range(&r, &spaces, 17), Some("100.64.0.0/17".parse().unwrap()));
        let r = routes(r#"[{"dst":"198.18.0.0/24","dev":"eth0"}]"#);
        assert_eq!(free_range(&r, &["198.18.0.0/15".parse().unwrap()], 24), Some("198.18.1.0/24".parse().unwrap()));
    }
}

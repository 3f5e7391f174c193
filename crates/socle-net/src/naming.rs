//! Names of everything the driver creates. Interface names are limited to
//! 15 bytes by the kernel, so names that must be unique in the root namespace
//! use a short hash of the Net id; names inside a Net's namespace only need
//! to be unique there (the namespace belongs to the driver).

use crate::cidr::MacAddr;

/// The Net-side end of the uplink veth, inside the namespace.
pub const UPLINK: &str = "uplink";

/// The nftables tables inside a Net's namespace (one `bridge`, one `inet`).
pub const NS_TABLE: &str = "socle";

/// The metadata service address, on `lo` of every Net namespace.
pub const METADATA_IP: std::net::Ipv4Addr = std::net::Ipv4Addr::new(169, 254, 169, 254);

/// FNV-1a, 32 bits: stable across versions and platforms (unlike std's
/// hasher), which matters because names outlive the process.
pub fn hash32(s: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in s.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

pub fn valid_prefix(p: &str) -> bool {
    (1..=6).contains(&p.len())
        && p.as_bytes()[0].is_ascii_lowercase()
        && p.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

pub fn valid_net_id(id: &str) -> bool {
    (1..=48).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// A plausible Linux interface name that `ip` will not misread.
pub fn valid_ifname(name: &str) -> bool {
    (1..=15).contains(&name.len())
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// Port interfaces live in the namespace next to the driver's own devices,
/// so their names must not collide with them.
pub fn valid_port_ifname(name: &str) -> bool {
    valid_ifname(name) && name != "lo" && name != UPLINK && !is_bridge_name(name)
}

/// The network namespace of a Net: `<prefix>-<net_id>`.
pub fn namespace(prefix: &str, net_id: &str) -> String {
    format!("{prefix}-{net_id}")
}

/// The Net id of a namespace name under `prefix`, if it is one.
pub fn net_of_namespace<'a>(prefix: &str, ns: &'a str) -> Option<&'a str> {
    ns.strip_prefix(prefix)?
        .strip_prefix('-')
        .filter(|id| valid_net_id(id))
}

/// The root-namespace end of a Net's uplink veth: `<prefix>-<hash>`, at most
/// 15 characters.
pub fn root_veth(prefix: &str, net_id: &str) -> String {
    format!("{prefix}-{:08x}", hash32(net_id))
}

/// The per-Net nftables table (family inet) in the root namespace.
pub fn root_table(prefix: &str, net_id: &str) -> String {
    format!("{prefix}_{net_id}")
}

pub fn net_of_root_table<'a>(prefix: &str, table: &'a str) -> Option<&'a str> {
    table
        .strip_prefix(prefix)?
        .strip_prefix('_')
        .filter(|id| valid_net_id(id))
}

/// The bridge of a subnet inside the Net's namespace: `sn<hash>`.
pub fn bridge(subnet_id: &str) -> String {
    format!("sn{:08x}", hash32(subnet_id))
}

pub fn is_bridge_name(name: &str) -> bool {
    name.len() == 10
        && name.starts_with("sn")
        && name[2..]
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A fixed MAC for a subnet's bridge. Without it the bridge takes the lowest
/// MAC of its ports and changes it as ports come and go, which would break
/// the gateway's entry in every guest's ARP cache.
pub fn bridge_mac(subnet_id: &str) -> MacAddr {
    let h = hash32(subnet_id).to_be_bytes();
    // 02: locally administered, unicast.
    MacAddr([0x02, 0x5c, h[0], h[1], h[2], h[3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_the_kernel_limit() {
        assert!(valid_prefix("socle"));
        assert!(valid_prefix("t1a2b3"));
        assert!(!valid_prefix("t1a2b3c"));
        assert!(!valid_prefix("1abc"));
        assert!(!valid_prefix("Soc"));
        assert!(!valid_prefix(""));
        let v = root_veth("t1a2b3", "vpc-1a2b3c4d");
        assert!(v.len() <= 15 && v.starts_with("t1a2b3-"), "{v}");
        assert_eq!(root_veth("socle", "vpc-1"), root_veth("socle", "vpc-1"));
        assert_ne!(root_veth("socle", "vpc-1"), root_veth("socle", "vpc-2"));
        assert!(is_bridge_name(&bridge("subnet-12345678")));
        assert!(bridge("subnet-12345678").len() <= 15);
    }

    #[test]
    fn hash_is_stable() {
        // FNV-1a test vectors: names on hosts depend on these never changing.
        assert_eq!(hash32(""), 0x811c9dc5);
        assert_eq!(hash32("a"), 0xe40c292c);
        assert_eq!(hash32("foobar"), 0xbf9cf968);
    }

    #[test]
    fn round_trips() {
        let ns = namespace("socle", "vpc-1a2b");
        assert_eq!(net_of_namespace("socle", &ns), Some("vpc-1a2b"));
        assert_eq!(net_of_namespace("soc", &ns), None);
        assert_eq!(net_of_namespace("socle", "socle-"), None);
        assert_eq!(net_of_namespace("socle", "soclex-vpc"), None);
        let t = root_table("socle", "vpc-1a2b");
        assert_eq!(net_of_root_table("socle", &t), Some("vpc-1a2b"));
        assert_eq!(net_of_root_table("socl", &t), None);
    }

    #[test]
    fn ifnames() {
        assert!(valid_port_ifname("tap-eni-1234567"));
        assert!(!valid_port_ifname("tap-eni-12345678"));
        assert!(!valid_port_ifname("uplink"));
        assert!(!valid_port_ifname("sn0123abcd"));
        assert!(valid_port_ifname("sn0123abcg"));
        assert!(!valid_port_ifname("a/b"));
        assert!(!valid_port_ifname(".."));
        assert!(bridge_mac("subnet-1").is_unicast());
    }
}

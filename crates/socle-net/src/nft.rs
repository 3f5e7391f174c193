//! nftables rulesets, generated as text (pure functions, unit-tested) and
//! loaded with `nft -f -`.
//!
//! Inside a Net's namespace there are two tables, because this kernel (like
//! many) has no conntrack in the bridge family (`CONFIG_NF_CONNTRACK_BRIDGE`
//! unset) while inet chains, reached by bridged IPv4 through br_netfilter,
//! cannot see which bridge *port* a packet came from:
//!
//! * `table bridge socle` – stateless layer-2 checks where the port is known:
//!   a frame from a port must carry the port's MAC and one of its IPs (ARP
//!   sender included; only the DHCP discover may come from 0.0.0.0), a port
//!   may not answer DHCP, only IPv4 and ARP pass; the frame is then marked
//!   with the port's number (`meta mark`). A frame towards a port must be ARP
//!   or IPv4 addressed to one of the port's IPs (DHCP replies from the
//!   namespace itself excepted).
//! * `table inet socle` – stateful security groups (conntrack works there),
//!   NAT and the way out. The source port is known from the mark (set above,
//!   so it can't be forged), the destination port from the destination IP
//!   (trustworthy because the bridge table only lets a port receive packets
//!   addressed to its own IPs).
//!
//! Every ruleset is loaded as `table X; delete table X; table X {…}` in one
//! `nft -f`, which is one transaction: the new rules apply at once and
//! conntrack entries (established flows) survive the change.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::Ipv4Addr;

use crate::cidr::{normalize, Ipv4Net};
use crate::naming::{self, METADATA_IP, NS_TABLE, UPLINK};
use crate::spec::{IcmpMatch, NetSpec, PortSpec, Protocol, RouteTarget, Rule, SubnetSpec};

/// The `meta mark` of the i-th port of a spec. Marks are only meaningful
/// within one loaded ruleset, so indexes may shift between applies.
pub fn port_mark(index: usize) -> u32 {
    0x5c00_0000 | (index as u32 + 1)
}

/// `{ a, b }` for nft (a single element needs no braces but they're fine).
fn set<T: std::fmt::Display>(items: impl IntoIterator<Item = T>) -> String {
    let v: Vec<String> = items.into_iter().map(|i| i.to_string()).collect();
    format!("{{ {} }}", v.join(", "))
}

fn quoted(s: &str) -> String {
    format!("\"{s}\"")
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// Peers are sources.
    Inbound,
    /// Peers are destinations.
    Outbound,
}

/// The match part of one allow rule, or `None` when it can match nothing
/// (no peers).
fn rule_match(rule: &Rule, dir: Direction) -> Option<String> {
    let peers = normalize(&rule.peers);
    if peers.is_empty() {
        return None;
    }
    let mut parts = Vec::new();
    if peers != [Ipv4Net::ANY] {
        let field = match dir {
            Direction::Inbound => "ip saddr",
            Direction::Outbound => "ip daddr",
        };
        parts.push(format!("{field} {}", set(&peers)));
    }
    let proto = match rule.protocol {
        Protocol::Any => None,
        Protocol::Tcp => Some("tcp"),
        Protocol::Udp => Some("udp"),
        Protocol::Icmp => Some("icmp"),
    };
    match (proto, rule.ports) {
        (Some(p @ ("tcp" | "udp")), Some((a, b))) if a == b => parts.push(format!("{p} dport {a}")),
        (Some(p @ ("tcp" | "udp")), Some((a, b))) => parts.push(format!("{p} dport {a}-{b}")),
        (Some("icmp"), _) => match rule.icmp {
            Some(IcmpMatch { kind, code: Some(code) }) => parts.push(format!("icmp type {kind} icmp code {code}")),
            Some(IcmpMatch { kind, code: None }) => parts.push(format!("icmp type {kind}")),
            None => parts.push("ip protocol icmp".to_string()),
        },
        (Some(p), _) => parts.push(format!("ip protocol {p}")),
        (None, _) => parts.push("meta nfproto ipv4".to_string()),
    }
    Some(parts.join(" "))
}

/// Routes of a subnet, most specific first: nft rules are first-match while
/// the kernel picks the longest prefix, and both must agree.
fn routes_by_specificity(s: &SubnetSpec) -> Vec<&crate::spec::Route> {
    let mut v: Vec<_> = s.routes.iter().collect();
    v.sort_by_key(|r| std::cmp::Reverse(r.dest.prefix_len()));
    v
}

/// private IP → public IP of the mappings whose private IP is in `s`.
fn mapped_in(spec: &NetSpec, s: &SubnetSpec) -> BTreeMap<Ipv4Addr, Ipv4Addr> {
    spec.public_ips
        .iter()
        .filter(|m| s.ip_range.contains(m.private_ip))
        .map(|m| (m.private_ip, m.public_ip))
        .collect()
}

fn nat_ip(spec: &NetSpec, nat_id: &str) -> Option<Ipv4Addr> {
    spec.nat_services
        .iter()
        .find(|n| n.nat_id == nat_id)
        .map(|n| n.public_ip)
}

/// The whole ruleset of a Net's namespace (both tables), as one atomic
/// replacement script.
pub fn ns_ruleset(spec: &NetSpec) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# socle-net: Net {} (generated; replaced as a whole on every apply)",
        spec.net_id
    );
    for family in ["bridge", "inet"] {
        let _ = writeln!(out, "table {family} {NS_TABLE}");
        let _ = writeln!(out, "delete table {family} {NS_TABLE}");
    }
    out.push_str(&bridge_table(spec));
    out.push_str(&inet_table(spec));
    out
}

fn bridge_table(spec: &NetSpec) -> String {
    let ports: Vec<(usize, &PortSpec)> = spec.ports.iter().enumerate().collect();
    let mut t = String::new();
    let _ = writeln!(t, "table bridge {NS_TABLE} {{");

    // Base chains dispatch by port; anything not from/to a known port drops.
    let from_map = set(ports
        .iter()
        .map(|(i, p)| format!("{} : jump from_{i}", quoted(&p.ifname))));
    let to_map = set(ports
        .iter()
        .map(|(i, p)| format!("{} : jump to_{i}", quoted(&p.ifname))));
    let _ = writeln!(t, "\tchain prerouting {{");
    let _ = writeln!(
        t,
        "\t\ttype filter hook prerouting priority -200; policy drop;"
    );
    if !ports.is_empty() {
        let _ = writeln!(t, "\t\tiifname vmap {from_map}");
    }
    let _ = writeln!(t, "\t}}");
    let _ = writeln!(t, "\tchain forward {{");
    let _ = writeln!(
        t,
        "\t\ttype filter hook forward priority -200; policy drop;"
    );
    if !ports.is_empty() {
        let _ = writeln!(t, "\t\toifname vmap {to_map}");
    }
    let _ = writeln!(t, "\t}}");
    let _ = writeln!(t, "\tchain output {{");
    let _ = writeln!(t, "\t\ttype filter hook output priority -200; policy drop;");
    let _ = writeln!(
        t,
        "\t\t# DHCP answers of the namespace's dnsmasq (may be broadcast)"
    );
    let _ = writeln!(t, "\t\tether type ip udp sport 67 udp dport 68 accept");
    if !ports.is_empty() {
        let _ = writeln!(t, "\t\toifname vmap {to_map}");
    }
    let _ = writeln!(t, "\t}}");

    for (i, p) in &ports {
        let mark = port_mark(*i);
        let ips = set(&p.private_ips);
        let mut arp_ips: Vec<String> = p.private_ips.iter().map(|ip| ip.to_string()).collect();
        arp_ips.push("0.0.0.0".into()); // ARP probes (RFC 5227)
        let _ = writeln!(t, "\t# {} ({}), mac {}", p.nic_id, p.ifname, p.mac);
        let _ = writeln!(t, "\tchain from_{i} {{");
        let _ = writeln!(t, "\t\tether saddr != {} drop", p.mac);
        let _ = writeln!(t, "\t\tarp saddr ether != {} drop", p.mac);
        let _ = writeln!(t, "\t\tarp saddr ip != {} drop", set(&arp_ips));
        let _ = writeln!(t, "\t\tether type arp meta mark set {mark:#x} accept");
        let _ = writeln!(t, "\t\tether type ip udp sport 67 drop");
        let _ = writeln!(
            t,
            "\t\tip saddr 0.0.0.0 ip daddr 255.255.255.255 udp sport 68 udp dport 67 meta mark set {mark:#x} accept"
        );
        if p.source_dest_check {
            let _ = writeln!(t, "\t\tip saddr {ips} meta mark set {mark:#x} accept");
        } else {
            let _ = writeln!(
                t,
                "\t\t# source/dest check off: a router may forward others' packets"
            );
            let _ = writeln!(t, "\t\tether type ip meta mark set {mark:#x} accept");
        }
        let _ = writeln!(t, "\t\tdrop");
        let _ = writeln!(t, "\t}}");
        let _ = writeln!(t, "\tchain to_{i} {{");
        let _ = writeln!(t, "\t\tether type arp accept");
        if p.source_dest_check {
            let _ = writeln!(t, "\t\tip daddr {ips} accept");
        } else {
            let _ = writeln!(t, "\t\tether type ip accept");
        }
        let _ = writeln!(t, "\t\tdrop");
        let _ = writeln!(t, "\t}}");
    }
    let _ = writeln!(t, "}}");
    t
}

fn inet_table(spec: &NetSpec) -> String {
    let mut t = String::new();
    let has_uplink = spec.uplink.is_some();
    let _ = writeln!(t, "table inet {NS_TABLE} {{");

    // --- NAT ---
    let _ = writeln!(t, "\tchain prerouting_nat {{");
    let _ = writeln!(
        t,
        "\t\ttype nat hook prerouting priority dstnat; policy accept;"
    );
    if has_uplink && !spec.public_ips.is_empty() {
        let map = set(spec
            .public_ips
            .iter()
            .map(|m| format!("{} : {}", m.public_ip, m.private_ip)));
        let _ = writeln!(
            t,
            "\t\tiifname {} dnat ip to ip daddr map {map}",
            quoted(UPLINK)
        );
    }
    let _ = writeln!(t, "\t}}");
    let _ = writeln!(t, "\tchain postrouting_nat {{");
    let _ = writeln!(
        t,
        "\t\ttype nat hook postrouting priority srcnat; policy accept;"
    );
    if has_uplink {
        for s in &spec.subnets {
            let mapped = mapped_in(spec, s);
            for r in routes_by_specificity(s) {
                let m = format!(
                    "oifname {} ip saddr {} ip daddr {}",
                    quoted(UPLINK),
                    s.ip_range,
                    r.dest
                );
                match &r.target {
                    RouteTarget::Internet => {
                        if !mapped.is_empty() {
                            let map = set(mapped.iter().map(|(p, q)| format!("{p} : {q}")));
                            let _ = writeln!(t, "\t\t{m} snat ip to ip saddr map {map}");
                        }
                        let _ = writeln!(t, "\t\t{m} accept");
                    }
                    RouteTarget::Nat { nat_id } => {
                        if let Some(ip) = nat_ip(spec, nat_id) {
                            let _ = writeln!(t, "\t\t{m} snat ip to {ip}");
                        }
                    }
                    RouteTarget::Address { .. } => {}
                }
            }
        }
    }
    let _ = writeln!(t, "\t}}");

    let out_map = set(spec
        .ports
        .iter()
        .enumerate()
        .map(|(i, _)| format!("{:#x} : jump out_{i}", port_mark(i))));
    let in_map = set(spec.ports.iter().enumerate().flat_map(|(i, p)| {
        p.private_ips
            .iter()
            .map(move |ip| format!("{ip} : jump in_{i}"))
    }));

    // --- the namespace itself: gateway, DHCP server, metadata service ---
    let _ = writeln!(t, "\tchain input {{");
    let _ = writeln!(
        t,
        "\t\ttype filter hook input priority filter; policy drop;"
    );
    let _ = writeln!(t, "\t\tiif \"lo\" accept");
    let _ = writeln!(t, "\t\tct state established,related accept");
    let _ = writeln!(t, "\t\tct state invalid drop");
    let _ = writeln!(t, "\t\tiifname {} drop", quoted(UPLINK));
    let _ = writeln!(t, "\t\tudp sport 68 udp dport 67 accept");
    let _ = writeln!(t, "\t\tip daddr {METADATA_IP} tcp dport 80 accept");
    if !spec.ports.is_empty() {
        let _ = writeln!(t, "\t\tmeta mark vmap {out_map}");
        // Only ports (checked by their outbound rules just above) may ping
        // their gateway.
        let _ = writeln!(t, "\t\tmeta mark != 0 icmp type echo-request accept");
    }
    let _ = writeln!(t, "\t}}");

    // --- everything routed or bridged through the namespace ---
    let bridges: Vec<String> = spec
        .subnets
        .iter()
        .map(|s| quoted(&naming::bridge(&s.subnet_id)))
        .collect();
    let _ = writeln!(t, "\tchain forward {{");
    let _ = writeln!(
        t,
        "\t\ttype filter hook forward priority filter; policy drop;"
    );
    let _ = writeln!(t, "\t\tct state established,related accept");
    let _ = writeln!(t, "\t\tct state invalid drop");
    let _ = writeln!(
        t,
        "\t\tiifname {} ip saddr {} drop",
        quoted(UPLINK),
        spec.ip_range
    );
    let _ = writeln!(t, "\t\tiifname {} ct status ! dnat drop", quoted(UPLINK));
    if !spec.ports.is_empty() {
        let _ = writeln!(
            t,
            "\t\t# source port: its outbound rules (return when allowed)"
        );
        let _ = writeln!(t, "\t\tmeta mark vmap {out_map}");
        let _ = writeln!(
            t,
            "\t\t# destination port: its inbound rules (accept or drop)"
        );
        let _ = writeln!(t, "\t\tip daddr vmap {in_map}");
    }
    let _ = writeln!(t, "\t\toifname {} jump to_uplink", quoted(UPLINK));
    let _ = writeln!(t, "\t\tiifname {} drop", quoted(UPLINK));
    if !bridges.is_empty() {
        let _ = writeln!(
            t,
            "\t\t# inside the Net towards a non-port address: a next-hop route"
        );
        let _ = writeln!(
            t,
            "\t\tiifname {} oifname {} accept",
            set(&bridges),
            set(&bridges)
        );
    }
    let _ = writeln!(t, "\t}}");

    // --- leaving through the uplink: only along a route, with a public source ---
    let _ = writeln!(t, "\tchain to_uplink {{");
    if has_uplink {
        for s in &spec.subnets {
            let mapped = mapped_in(spec, s);
            for r in routes_by_specificity(s) {
                let m = format!("ip saddr {} ip daddr {}", s.ip_range, r.dest);
                match &r.target {
                    RouteTarget::Internet => {
                        if !mapped.is_empty() {
                            let _ = writeln!(t, "\t\t{m} ip saddr {} accept", set(mapped.keys()));
                        }
                        // Without a public IP there is no way out.
                        let _ = writeln!(t, "\t\t{m} drop");
                    }
                    RouteTarget::Nat { .. } => {
                        let _ = writeln!(t, "\t\t{m} accept");
                    }
                    RouteTarget::Address { .. } => {}
                }
            }
        }
    }
    let _ = writeln!(t, "\t\tdrop");
    let _ = writeln!(t, "\t}}");

    // --- per-port security groups ---
    for (i, p) in spec.ports.iter().enumerate() {
        let _ = writeln!(t, "\t# {} ({})", p.nic_id, p.ifname);
        let _ = writeln!(t, "\tchain out_{i} {{");
        for r in &p.outbound {
            if let Some(m) = rule_match(r, Direction::Outbound) {
                let _ = writeln!(t, "\t\t{m} return");
            }
        }
        let _ = writeln!(t, "\t\tdrop");
        let _ = writeln!(t, "\t}}");
        let _ = writeln!(t, "\tchain in_{i} {{");
        for r in &p.inbound {
            if let Some(m) = rule_match(r, Direction::Inbound) {
                let _ = writeln!(t, "\t\t{m} accept");
            }
        }
        let _ = writeln!(t, "\t\tdrop");
        let _ = writeln!(t, "\t}}");
    }
    let _ = writeln!(t, "}}");
    t
}

/// The per-Net table of the root namespace: a Net's uplink may only carry
/// the Net's public IPs, in both directions, and may not reach the host
/// itself. `None` when the Net has no uplink (the table must then be gone).
pub fn root_ruleset(table: &str, veth: &str, spec: &NetSpec) -> Option<String> {
    spec.uplink?;
    let publics = spec.public_addresses();
    let v = quoted(veth);
    let mut t = String::new();
    let _ = writeln!(t, "# socle-net: uplink of Net {} (generated)", spec.net_id);
    let _ = writeln!(t, "table inet {table}");
    let _ = writeln!(t, "delete table inet {table}");
    let _ = writeln!(t, "table inet {table} {{");
    let _ = writeln!(t, "\tchain forward {{");
    let _ = writeln!(
        t,
        "\t\ttype filter hook forward priority filter; policy accept;"
    );
    let _ = writeln!(t, "\t\tiifname {v} meta nfproto != ipv4 drop");
    let _ = writeln!(t, "\t\toifname {v} meta nfproto != ipv4 drop");
    if publics.is_empty() {
        let _ = writeln!(t, "\t\tiifname {v} drop");
        let _ = writeln!(t, "\t\toifname {v} drop");
    } else {
        let _ = writeln!(t, "\t\tiifname {v} ip saddr != {} drop", set(&publics));
        let _ = writeln!(t, "\t\toifname {v} ip daddr != {} drop", set(&publics));
    }
    let _ = writeln!(t, "\t}}");
    let _ = writeln!(t, "\tchain input {{");
    let _ = writeln!(
        t,
        "\t\ttype filter hook input priority filter; policy accept;"
    );
    let _ = writeln!(t, "\t\tiifname {v} ct state established,related accept");
    let _ = writeln!(t, "\t\tiifname {v} drop");
    let _ = writeln!(t, "\t}}");
    let _ = writeln!(t, "}}");
    Some(t)
}

/// Removes a table if present, as one idempotent script.
pub fn delete_table_script(family: &str, table: &str) -> String {
    format!("table {family} {table}\ndelete table {family} {table}\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::tests::{n, sample};

    #[test]
    fn rule_matches() {
        let r = Rule {
            protocol: Protocol::Tcp,
            ports: Some((80, 80)),
            icmp: None,
            peers: vec![n("10.0.0.0/16"), n("10.0.1.5/32")],
        };
        assert_eq!(
            rule_match(&r, Direction::Inbound).unwrap(),
            "ip saddr { 10.0.0.0/16 } tcp dport 80"
        );
        let r = Rule {
            protocol: Protocol::Udp,
            ports: Some((1000, 2000)),
            icmp: None,
            peers: vec![Ipv4Net::ANY],
        };
        assert_eq!(
            rule_match(&r, Direction::Outbound).unwrap(),
            "udp dport 1000-2000"
        );
        let r = Rule {
            protocol: Protocol::Icmp,
            ports: None,
            icmp: None,
            peers: vec![n("192.0.2.1/32"), n("192.0.2.7/32")],
        };
        assert_eq!(
            rule_match(&r, Direction::Outbound).unwrap(),
            "ip daddr { 192.0.2.1/32, 192.0.2.7/32 } ip protocol icmp"
        );
        let mut r = Rule {
            protocol: Protocol::Icmp,
            ports: None,
            icmp: Some(IcmpMatch { kind: 8, code: None }),
            peers: vec![n("10.0.1.0/24")],
        };
        assert_eq!(rule_match(&r, Direction::Inbound).unwrap(), "ip saddr { 10.0.1.0/24 } icmp type 8");
        r.icmp = Some(IcmpMatch { kind: 3, code: Some(4) });
        assert_eq!(rule_match(&r, Direction::Inbound).unwrap(), "ip saddr { 10.0.1.0/24 } icmp type 3 icmp code 4");
        let r = Rule {
            protocol: Protocol::Any,
            ports: None,
            icmp: None,
            peers: vec![Ipv4Net::ANY],
        };
        assert_eq!(
            rule_match(&r, Direction::Inbound).unwrap(),
            "meta nfproto ipv4"
        );
        let r = Rule {
            protocol: Protocol::Tcp,
            ports: None,
            icmp: None,
            peers: vec![],
        };
        assert_eq!(
            rule_match(&r, Direction::Inbound),
            None,
            "no peers, no match"
        );
    }

    #[test]
    fn ns_ruleset_shape() {
        let s = sample();
        let r = ns_ruleset(&s);
        // Atomic replacement of both tables.
        assert!(r.starts_with("# socle-net"));
        assert!(r.contains("table bridge socle\ndelete table bridge socle\n"));
        assert!(r.contains("table inet socle\ndelete table inet socle\n"));
        // Anti-spoofing of port 0.
        assert!(r.contains("ether saddr != 02:00:00:00:00:01 drop"));
        assert!(r.contains("arp saddr ip != { 10.0.1.10, 10.0.1.11, 0.0.0.0 } drop"));
        assert!(r.contains("ip saddr { 10.0.1.10, 10.0.1.11 } meta mark set 0x5c000001 accept"));
        assert!(r.contains("iifname vmap { \"tap1\" : jump from_0, \"tap2\" : jump from_1 }"));
        // Security groups.
        assert!(r.contains(
            "ip daddr vmap { 10.0.1.10 : jump in_0, 10.0.1.11 : jump in_0, 10.0.2.10 : jump in_1 }"
        ));
        assert!(r.contains("\tchain in_0 {\n\t\ttcp dport 22 accept\n\t\tdrop\n"));
        assert!(
            r.contains("\tchain out_1 {\n\t\tdrop\n"),
            "no outbound rule: nothing allowed"
        );
        assert!(
            r.contains("\tchain in_1 {\n\t\tip saddr { 10.0.1.0/24 } ip protocol icmp accept\n")
        );
        // NAT: 1:1 for subnet a, NAT service for subnet b.
        assert!(
            r.contains("iifname \"uplink\" dnat ip to ip daddr map { 198.51.100.5 : 10.0.1.10 }")
        );
        assert!(r.contains("oifname \"uplink\" ip saddr 10.0.1.0/24 ip daddr 0.0.0.0/0 snat ip to ip saddr map { 10.0.1.10 : 198.51.100.5 }"));
        assert!(r.contains(
            "oifname \"uplink\" ip saddr 10.0.2.0/24 ip daddr 0.0.0.0/0 snat ip to 198.51.100.9"
        ));
        assert!(r.contains("ip saddr 10.0.1.0/24 ip daddr 0.0.0.0/0 ip saddr { 10.0.1.10 } accept\n\t\tip saddr 10.0.1.0/24 ip daddr 0.0.0.0/0 drop"));
    }

    #[test]
    fn router_port_without_source_dest_check() {
        let mut s = sample();
        s.ports[1].source_dest_check = false;
        let r = ns_ruleset(&s);
        let from_1 = &r[r.find("chain from_1").unwrap()..];
        let from_1 = &from_1[..from_1.find("\n\t}").unwrap()];
        assert!(
            from_1.contains("ether saddr != 02:00:00:00:00:02 drop"),
            "MAC still checked"
        );
        assert!(
            from_1.contains("arp saddr ip != { 10.0.2.10, 0.0.0.0 } drop"),
            "ARP still checked"
        );
        assert!(from_1.contains("ether type ip meta mark set 0x5c000002 accept"));
        let to_1 = &r[r.find("chain to_1").unwrap()..];
        assert!(to_1[..to_1.find("\n\t}").unwrap()].contains("ether type ip accept"));
    }

    #[test]
    fn no_uplink_no_way_out() {
        let mut s = sample();
        s.uplink = None;
        let r = ns_ruleset(&s);
        assert!(!r.contains("dnat ip to"));
        assert!(!r.contains("snat ip to"));
        assert!(r.contains("\tchain to_uplink {\n\t\tdrop\n\t}"));
        assert_eq!(root_ruleset("t_vpc-1", "t-0", &s), None);
    }

    #[test]
    fn most_specific_route_first() {
        let mut s = sample();
        s.subnets[0].routes.insert(
            0,
            crate::spec::Route {
                dest: Ipv4Net::ANY,
                target: RouteTarget::Nat {
                    nat_id: "nat-1".into(),
                },
            },
        );
        s.subnets[0].routes[1].dest = n("192.0.2.0/24");
        let r = ns_ruleset(&s);
        let specific = r
            .find("ip saddr 10.0.1.0/24 ip daddr 192.0.2.0/24 snat")
            .unwrap();
        let wide = r
            .find("ip saddr 10.0.1.0/24 ip daddr 0.0.0.0/0 snat")
            .unwrap();
        assert!(specific < wide);
    }

    #[test]
    fn no_ports() {
        let mut s = sample();
        s.ports.clear();
        s.public_ips.clear();
        let r = ns_ruleset(&s);
        assert!(!r.contains("vmap"));
    }

    #[test]
    fn root_ruleset_shape() {
        let s = sample();
        let r = root_ruleset("t_vpc-1", "t-0000", &s).unwrap();
        assert!(r.contains("table inet t_vpc-1\ndelete table inet t_vpc-1\ntable inet t_vpc-1 {"));
        assert!(r.contains("iifname \"t-0000\" ip saddr != { 198.51.100.5, 198.51.100.9 } drop"));
        assert!(r.contains("oifname \"t-0000\" ip daddr != { 198.51.100.5, 198.51.100.9 } drop"));
        let mut s = sample();
        s.public_ips.clear();
        s.nat_services.clear();
        s.subnets[1].routes.clear();
        let r = root_ruleset("t_vpc-1", "t-0000", &s).unwrap();
        assert!(r.contains("iifname \"t-0000\" drop"));
    }
}

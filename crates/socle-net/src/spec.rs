//! The declarative description of one tenant Net that [`crate::NetDriver::apply`]
//! makes true on the host, and its validation.
//!
//! The control plane owns these values (they come from its database); the
//! driver never stores them except as the generated configuration files.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::cidr::{Ipv4Net, MacAddr};
use crate::error::SpecError;
use crate::naming;

/// One tenant network (an Outscale "Net", an AWS VPC).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NetSpec {
    /// e.g. `vpc-1a2b3c4d`; names the namespace and files of the Net.
    pub net_id: String,
    /// The Net's private range, e.g. 10.0.0.0/16. Always routed locally.
    pub ip_range: Ipv4Net,
    pub subnets: Vec<SubnetSpec>,
    /// One per NIC whose interface should be attached now.
    pub ports: Vec<PortSpec>,
    /// Present when an internet gateway is linked to the Net.
    pub uplink: Option<UplinkSpec>,
    /// 1:1 NAT between a public IP and a NIC's private IP; effective only
    /// with an uplink and for subnets whose routes send traffic to Internet.
    #[serde(default)]
    pub public_ips: Vec<PublicIpMapping>,
    #[serde(default)]
    pub nat_services: Vec<NatServiceSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SubnetSpec {
    pub subnet_id: String,
    /// Inside the Net's range, at least /29. The gateway is its first host
    /// address (`.1` of a /24).
    pub ip_range: Ipv4Net,
    /// The route table of the subnet, without the implicit local route of
    /// the Net's range.
    #[serde(default)]
    pub routes: Vec<Route>,
}

impl SubnetSpec {
    /// The subnet's router address, also the DHCP server and the router
    /// option handed to guests.
    pub fn gateway(&self) -> Ipv4Addr {
        // Validation guarantees at least a /29, so a first host exists.
        self.ip_range
            .first_host()
            .unwrap_or(self.ip_range.network())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Route {
    /// Must not lie inside the Net's range (that range is always local);
    /// wider prefixes such as 0.0.0.0/0 are fine.
    pub dest: Ipv4Net,
    pub target: RouteTarget,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RouteTarget {
    /// Out through the uplink, with the 1:1 public IP of the sender as
    /// source (a sender without a public IP is dropped, it has no way out).
    Internet,
    /// Out through the uplink, source-NATed to the NAT service's public IP.
    Nat { nat_id: String },
    /// To a next hop inside the Net (a VM acting as a router).
    Address { ip: Ipv4Addr },
}

/// One NIC of a VM: the host-side interface and what the guest may do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PortSpec {
    pub nic_id: String,
    /// The interface in the root namespace (a tap the agent created with
    /// [`crate::NetDriver::prepare_tap`], opened by QEMU). `apply` moves it
    /// into the Net's namespace; it keeps its name there.
    pub ifname: String,
    /// The guest's MAC: the only source MAC accepted from this port.
    pub mac: MacAddr,
    pub subnet_id: String,
    /// Primary first (the one DHCP hands out); all are accepted as sources.
    pub private_ips: Vec<Ipv4Addr>,
    /// Who may open connections to the port.
    #[serde(default)]
    pub inbound: Vec<Rule>,
    /// Where the port may open connections to.
    #[serde(default)]
    pub outbound: Vec<Rule>,
    /// As AWS's SourceDestCheck: when true (the default) the port may only
    /// send from and receive to its own IPs. A VM acting as a router (the
    /// target of a [`RouteTarget::Address`] route) needs it false; its MAC
    /// and its ARP announcements stay restricted, and its outbound rules
    /// still apply to what it forwards.
    #[serde(default = "yes")]
    pub source_dest_check: bool,
}

fn yes() -> bool {
    true
}

impl PortSpec {
    pub fn primary_ip(&self) -> Option<Ipv4Addr> {
        self.private_ips.first().copied()
    }
}

/// One allow rule of a security group, already resolved for one port:
/// a security group given as source/destination has been expanded by the
/// caller into its members' addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Rule {
    pub protocol: Protocol,
    /// Inclusive destination port range; only for tcp and udp. `None` is all
    /// ports.
    #[serde(default)]
    pub ports: Option<(u16, u16)>,
    /// Only for icmp: the ICMP type and, if given, code allowed. `None` is
    /// every ICMP message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp: Option<IcmpMatch>,
    /// The remote side: sources for inbound rules, destinations for
    /// outbound ones. Empty matches nothing.
    pub peers: Vec<Ipv4Net>,
}

/// An ICMP type (`8`: echo request) and optionally one of its codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct IcmpMatch {
    pub kind: u8,
    #[serde(default)]
    pub code: Option<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Any,
    Tcp,
    Udp,
    Icmp,
}

/// The link between the Net's namespace and the root namespace. Allocated by
/// the control plane (from a link pool such as 100.64.0.0/10) and recorded,
/// so the addresses stay stable and a later multi-host design can keep them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct UplinkSpec {
    /// Address of the root-namespace end (the Net's next hop to Internet).
    pub root_ip: Ipv4Addr,
    /// Address of the Net-namespace end (where the host routes public IPs).
    pub net_ip: Ipv4Addr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PublicIpMapping {
    pub public_ip: Ipv4Addr,
    pub private_ip: Ipv4Addr,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NatServiceSpec {
    pub nat_id: String,
    pub public_ip: Ipv4Addr,
}

fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

impl NetSpec {
    pub fn subnet(&self, subnet_id: &str) -> Option<&SubnetSpec> {
        self.subnets.iter().find(|s| s.subnet_id == subnet_id)
    }

    /// The subnet whose range holds `ip`.
    pub fn subnet_of(&self, ip: Ipv4Addr) -> Option<&SubnetSpec> {
        self.subnets.iter().find(|s| s.ip_range.contains(ip))
    }

    /// Checks everything the host configuration relies on. `net_id` itself
    /// is checked by the driver (it names host objects).
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.ip_range.prefix_len() > 28 {
            return Err(SpecError::NetRangeTooSmall(self.ip_range));
        }

        // Subnets.
        let mut ids = HashSet::new();
        let mut bridges: HashMap<String, &str> = HashMap::new();
        for s in &self.subnets {
            if !valid_id(&s.subnet_id) {
                return Err(SpecError::InvalidSubnetId(s.subnet_id.clone()));
            }
            if !ids.insert(s.subnet_id.as_str()) {
                return Err(SpecError::DuplicateSubnet(s.subnet_id.clone()));
            }
            if !self.ip_range.contains_net(&s.ip_range) {
                return Err(SpecError::SubnetOutsideNet {
                    subnet_id: s.subnet_id.clone(),
                    range: s.ip_range,
                    net_range: self.ip_range,
                });
            }
            if s.ip_range.prefix_len() > 29 {
                return Err(SpecError::SubnetTooSmall {
                    subnet_id: s.subnet_id.clone(),
                    range: s.ip_range,
                });
            }
            if let Some(other) = bridges.insert(naming::bridge(&s.subnet_id), &s.subnet_id) {
                return Err(SpecError::BridgeNameClash {
                    a: other.to_string(),
                    b: s.subnet_id.clone(),
                });
            }
        }
        for (i, a) in self.subnets.iter().enumerate() {
            for b in &self.subnets[i + 1..] {
                if a.ip_range.overlaps(&b.ip_range) {
                    return Err(SpecError::SubnetsOverlap {
                        a: a.subnet_id.clone(),
                        b: b.subnet_id.clone(),
                    });
                }
            }
        }

        // Uplink, NAT services and public IPs.
        if let Some(u) = &self.uplink {
            if u.root_ip == u.net_ip
                || self.ip_range.contains(u.root_ip)
                || self.ip_range.contains(u.net_ip)
            {
                return Err(SpecError::BadUplink {
                    root_ip: u.root_ip,
                    net_ip: u.net_ip,
                });
            }
        }
        let mut publics = HashSet::new();
        let mut nat_ids = HashSet::new();
        for n in &self.nat_services {
            if !valid_id(&n.nat_id) || !nat_ids.insert(n.nat_id.as_str()) {
                return Err(SpecError::BadNatId(n.nat_id.clone()));
            }
            if !publics.insert(n.public_ip) {
                return Err(SpecError::DuplicatePublicIp(n.public_ip));
            }
            if self.ip_range.contains(n.public_ip) {
                return Err(SpecError::PublicIpInsideNet(n.public_ip));
            }
        }

        // Routes.
        for s in &self.subnets {
            let mut dests = HashSet::new();
            for r in &s.routes {
                let bad = |reason: &str| SpecError::BadRoute {
                    subnet_id: s.subnet_id.clone(),
                    dest: r.dest,
                    reason: reason.to_string(),
                };
                if self.ip_range.contains_net(&r.dest) {
                    return Err(bad("inside the Net range, which is always local"));
                }
                if !dests.insert(r.dest) {
                    return Err(bad("destination appears twice"));
                }
                match &r.target {
                    RouteTarget::Internet => {}
                    RouteTarget::Nat { nat_id } => {
                        if !nat_ids.contains(nat_id.as_str()) {
                            return Err(bad(&format!("unknown NAT service {nat_id}")));
                        }
                    }
                    RouteTarget::Address { ip } => match self.subnet_of(*ip) {
                        Some(t) if t.ip_range.is_host_address(*ip) && *ip != t.gateway() => {}
                        _ => {
                            return Err(bad(&format!(
                                "next hop {ip} is not a host address of a subnet of the Net"
                            )))
                        }
                    },
                }
            }
        }

        // Ports.
        let mut nics = HashSet::new();
        let mut ifnames = HashSet::new();
        let mut macs = HashSet::new();
        let mut ips = HashSet::new();
        for p in &self.ports {
            if !valid_id(&p.nic_id) {
                return Err(SpecError::InvalidNicId(p.nic_id.clone()));
            }
            if !nics.insert(p.nic_id.as_str()) {
                return Err(SpecError::DuplicateNic(p.nic_id.clone()));
            }
            if !naming::valid_port_ifname(&p.ifname) {
                return Err(SpecError::BadInterfaceName {
                    nic_id: p.nic_id.clone(),
                    ifname: p.ifname.clone(),
                });
            }
            if !ifnames.insert(p.ifname.as_str()) {
                return Err(SpecError::DuplicateInterface(p.ifname.clone()));
            }
            if !p.mac.is_unicast() {
                return Err(SpecError::BadMac {
                    nic_id: p.nic_id.clone(),
                    mac: p.mac,
                });
            }
            if !macs.insert(p.mac) {
                return Err(SpecError::DuplicateMac(p.mac));
            }
            let subnet = self
                .subnet(&p.subnet_id)
                .ok_or_else(|| SpecError::UnknownSubnet {
                    nic_id: p.nic_id.clone(),
                    subnet_id: p.subnet_id.clone(),
                })?;
            if p.private_ips.is_empty() {
                return Err(SpecError::NoPrivateIp {
                    nic_id: p.nic_id.clone(),
                });
            }
            for ip in &p.private_ips {
                if !subnet.ip_range.is_host_address(*ip) || *ip == subnet.gateway() {
                    return Err(SpecError::IpOutsideSubnet {
                        nic_id: p.nic_id.clone(),
                        ip: *ip,
                        subnet_id: subnet.subnet_id.clone(),
                        range: subnet.ip_range,
                    });
                }
                if !ips.insert(*ip) {
                    return Err(SpecError::DuplicateIp(*ip));
                }
            }
            for (direction, rules) in [("inbound", &p.inbound), ("outbound", &p.outbound)] {
                for r in rules {
                    if r.icmp.is_some() && r.protocol != Protocol::Icmp {
                        return Err(SpecError::IcmpWithoutIcmp { nic_id: p.nic_id.clone(), direction });
                    }
                    if let Some((from, to)) = r.ports {
                        if !matches!(r.protocol, Protocol::Tcp | Protocol::Udp) {
                            return Err(SpecError::PortsWithoutTcpUdp {
                                nic_id: p.nic_id.clone(),
                                direction,
                            });
                        }
                        if from > to {
                            return Err(SpecError::BadPortRange {
                                nic_id: p.nic_id.clone(),
                                direction,
                                from,
                                to,
                            });
                        }
                    }
                }
            }
        }

        let mut mapped = HashSet::new();
        for m in &self.public_ips {
            if !ips.contains(&m.private_ip) {
                return Err(SpecError::UnknownPrivateIp {
                    public_ip: m.public_ip,
                    private_ip: m.private_ip,
                });
            }
            if !mapped.insert(m.private_ip) {
                return Err(SpecError::PrivateIpMappedTwice(m.private_ip));
            }
            if !publics.insert(m.public_ip) {
                return Err(SpecError::DuplicatePublicIp(m.public_ip));
            }
            if self.ip_range.contains(m.public_ip) {
                return Err(SpecError::PublicIpInsideNet(m.public_ip));
            }
        }
        Ok(())
    }

    /// Every public address the host must route to this Net (1:1 mappings
    /// and NAT services), sorted.
    pub fn public_addresses(&self) -> Vec<Ipv4Addr> {
        let mut v: Vec<Ipv4Addr> = self
            .public_ips
            .iter()
            .map(|m| m.public_ip)
            .chain(self.nat_services.iter().map(|n| n.public_ip))
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn n(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }
    pub(crate) fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    pub(crate) fn sample() -> NetSpec {
        NetSpec {
            net_id: "vpc-1".into(),
            ip_range: n("10.0.0.0/16"),
            subnets: vec![
                SubnetSpec {
                    subnet_id: "subnet-a".into(),
                    ip_range: n("10.0.1.0/24"),
                    routes: vec![Route {
                        dest: Ipv4Net::ANY,
                        target: RouteTarget::Internet,
                    }],
                },
                SubnetSpec {
                    subnet_id: "subnet-b".into(),
                    ip_range: n("10.0.2.0/24"),
                    routes: vec![Route {
                        dest: Ipv4Net::ANY,
                        target: RouteTarget::Nat {
                            nat_id: "nat-1".into(),
                        },
                    }],
                },
            ],
            ports: vec![
                PortSpec {
                    nic_id: "eni-1".into(),
                    ifname: "tap1".into(),
                    mac: "02:00:00:00:00:01".parse().unwrap(),
                    subnet_id: "subnet-a".into(),
                    private_ips: vec![ip("10.0.1.10"), ip("10.0.1.11")],
                    inbound: vec![Rule {
                        protocol: Protocol::Tcp,
                        ports: Some((22, 22)),
                        icmp: None,
                        peers: vec![Ipv4Net::ANY],
                    }],
                    outbound: vec![Rule {
                        protocol: Protocol::Any,
                        ports: None,
                        icmp: None,
                        peers: vec![Ipv4Net::ANY],
                    }],
                    source_dest_check: true,
                },
                PortSpec {
                    nic_id: "eni-2".into(),
                    ifname: "tap2".into(),
                    mac: "02:00:00:00:00:02".parse().unwrap(),
                    subnet_id: "subnet-b".into(),
                    private_ips: vec![ip("10.0.2.10")],
                    inbound: vec![Rule {
                        protocol: Protocol::Icmp,
                        ports: None,
                        icmp: None,
                        peers: vec![n("10.0.1.0/24"), n("10.0.1.10/32")],
                    }],
                    outbound: vec![],
                    source_dest_check: true,
                },
            ],
            uplink: Some(UplinkSpec {
                root_ip: ip("100.64.0.1"),
                net_ip: ip("100.64.0.2"),
            }),
            public_ips: vec![PublicIpMapping {
                public_ip: ip("198.51.100.5"),
                private_ip: ip("10.0.1.10"),
            }],
            nat_services: vec![NatServiceSpec {
                nat_id: "nat-1".into(),
                public_ip: ip("198.51.100.9"),
            }],
        }
    }

    #[test]
    fn sample_is_valid() {
        sample().validate().unwrap();
        assert_eq!(sample().subnets[0].gateway(), ip("10.0.1.1"));
        assert_eq!(
            sample().public_addresses(),
            vec![ip("198.51.100.5"), ip("198.51.100.9")]
        );
    }

    #[test]
    fn overlapping_subnets() {
        let mut s = sample();
        s.subnets[1].ip_range = n("10.0.0.0/23");
        assert_eq!(
            s.validate(),
            Err(SpecError::SubnetsOverlap {
                a: "subnet-a".into(),
                b: "subnet-b".into()
            })
        );
    }

    #[test]
    fn subnet_outside_net() {
        let mut s = sample();
        s.subnets[1].ip_range = n("10.1.2.0/24");
        assert!(matches!(
            s.validate(),
            Err(SpecError::SubnetOutsideNet { ref subnet_id, .. }) if subnet_id == "subnet-b"
        ));
        let mut s = sample();
        s.subnets[1].ip_range = n("10.0.2.0/30");
        assert!(matches!(
            s.validate(),
            Err(SpecError::SubnetTooSmall { .. })
        ));
    }

    #[test]
    fn bad_port_range() {
        let mut s = sample();
        s.ports[0].inbound[0].ports = Some((80, 79));
        assert_eq!(
            s.validate(),
            Err(SpecError::BadPortRange {
                nic_id: "eni-1".into(),
                direction: "inbound",
                from: 80,
                to: 79
            })
        );
        let mut s = sample();
        s.ports[0].outbound[0].ports = Some((1, 2));
        assert!(matches!(
            s.validate(),
            Err(SpecError::PortsWithoutTcpUdp {
                direction: "outbound",
                ..
            })
        ));
    }

    #[test]
    fn port_checks() {
        let mut s = sample();
        s.ports[1].private_ips = vec![ip("10.0.2.1")];
        assert!(
            matches!(s.validate(), Err(SpecError::IpOutsideSubnet { .. })),
            "the gateway is reserved"
        );
        let mut s = sample();
        s.ports[1].private_ips = vec![ip("10.0.1.11")];
        assert!(matches!(
            s.validate(),
            Err(SpecError::IpOutsideSubnet { .. })
        ));
        let mut s = sample();
        s.ports[1].subnet_id = "subnet-a".into();
        s.ports[1].private_ips = vec![ip("10.0.1.11")];
        assert_eq!(s.validate(), Err(SpecError::DuplicateIp(ip("10.0.1.11"))));
        let mut s = sample();
        s.ports[1].mac = s.ports[0].mac;
        assert!(matches!(s.validate(), Err(SpecError::DuplicateMac(_))));
        let mut s = sample();
        s.ports[1].mac = "03:00:00:00:00:02".parse().unwrap();
        assert!(matches!(s.validate(), Err(SpecError::BadMac { .. })));
        for bad in ["uplink", "lo", "sn0123abcd", "a-name-too-long-x", "a b", ""] {
            let mut s = sample();
            s.ports[1].ifname = bad.into();
            assert!(
                matches!(s.validate(), Err(SpecError::BadInterfaceName { .. })),
                "{bad}"
            );
        }
        let mut s = sample();
        s.ports[1].ifname = "tap1".into();
        assert!(matches!(
            s.validate(),
            Err(SpecError::DuplicateInterface(_))
        ));
        let mut s = sample();
        s.ports[1].subnet_id = "subnet-z".into();
        assert!(matches!(s.validate(), Err(SpecError::UnknownSubnet { .. })));
    }

    #[test]
    fn route_checks() {
        let mut s = sample();
        s.subnets[0].routes.push(Route {
            dest: n("10.0.5.0/24"),
            target: RouteTarget::Internet,
        });
        assert!(matches!(s.validate(), Err(SpecError::BadRoute { .. })));
        let mut s = sample();
        s.subnets[0].routes[0].target = RouteTarget::Nat {
            nat_id: "nat-x".into(),
        };
        assert!(matches!(s.validate(), Err(SpecError::BadRoute { .. })));
        let mut s = sample();
        s.subnets[0].routes[0].target = RouteTarget::Address { ip: ip("10.0.9.9") };
        assert!(matches!(s.validate(), Err(SpecError::BadRoute { .. })));
        let mut s = sample();
        s.subnets[0].routes[0].target = RouteTarget::Address {
            ip: ip("10.0.2.10"),
        };
        s.validate().unwrap();
    }

    #[test]
    fn public_ip_checks() {
        let mut s = sample();
        s.public_ips[0].private_ip = ip("10.0.1.99");
        assert!(matches!(
            s.validate(),
            Err(SpecError::UnknownPrivateIp { .. })
        ));
        let mut s = sample();
        s.public_ips[0].public_ip = ip("198.51.100.9");
        assert_eq!(
            s.validate(),
            Err(SpecError::DuplicatePublicIp(ip("198.51.100.9")))
        );
        let mut s = sample();
        s.public_ips[0].public_ip = ip("10.0.200.1");
        assert!(matches!(s.validate(), Err(SpecError::PublicIpInsideNet(_))));
        let mut s = sample();
        s.uplink.as_mut().unwrap().net_ip = ip("100.64.0.1");
        assert!(matches!(s.validate(), Err(SpecError::BadUplink { .. })));
    }

    #[test]
    fn serde_shape() {
        let mut j = serde_json::to_value(sample()).unwrap();
        // Defaults: no rules, source/dest check on.
        j["ports"][1]
            .as_object_mut()
            .unwrap()
            .remove("source_dest_check");
        assert_eq!(j["subnets"][1]["routes"][0]["target"]["type"], "nat");
        assert_eq!(j["ports"][0]["inbound"][0]["protocol"], "tcp");
        let back: NetSpec = serde_json::from_value(j).unwrap();
        assert_eq!(back, sample());
    }
}

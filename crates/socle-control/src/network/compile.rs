//! The network compiler: from database rows to each host's share of every
//! network: a `socle_net::NetSpec` with the ports of the VMs on that host,
//! and the metadata documents of those VMs.
//!
//! A network is wired while at least one of its NICs is linked to a VM,
//! and on the hosts of those VMs.
//! Two kinds exist: a tenant Net (`vpc-…`, its subnets and routes), and the
//! public-cloud network of an account (`pub-<account>`, one subnet
//! covering [`public_cloud_range`], always with an uplink) that VMs launched
//! without a subnet join. Security-group rules are resolved here: a group
//! named as a peer becomes the addresses of its member NICs in the same
//! network.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;

use socle_net::{IcmpMatch, Ipv4Net, NatServiceSpec, NetSpec, PortSpec, Protocol, PublicIpMapping, Route, RouteTarget, Rule, SubnetSpec, UplinkSpec};
use socle_store::nics::{self as nic_store, NicRow};
use socle_store::security_groups::{self as sg_store, RuleRow};
use socle_store::{internet_services, nat_services, nets as net_store, public_ips, route_tables, uplinks, vms as vm_store, Conn};
use socle_types::ids::{HostId, NetId, NicId, SecurityGroupId, SubnetId, VmId};
use socle_types::ApiError;

use socle_agent_api::GuestMetadata;

use super::guests;
use crate::config::NetworkConfig;
use crate::ops::nic_alloc::public_cloud_range;

/// The one subnet of a public-cloud network.
pub(crate) const PUBLIC_SUBNET: &str = "subnet-public";

/// Keys of public-cloud networks: this prefix and the account id.
const PUBLIC_KEY_PREFIX: &str = "pub-";

/// The network a NIC belongs to: its Net, or its account's public cloud.
pub(crate) fn net_key(nic: &NicRow) -> String {
    match &nic.net_id {
        Some(n) => n.to_string(),
        None => format!("{PUBLIC_KEY_PREFIX}{}", nic.account_id),
    }
}

/// The tap of a NIC on its VM's host: the prefix and the NIC's hex digits
/// (at most 14 bytes, unique per cloud, so per host with distinct prefixes).
pub(crate) fn tap_name(prefix: &str, nic: &NicId) -> String {
    let hex = nic.as_str().rsplit('-').next().unwrap_or_default();
    format!("{prefix}{hex}")
}

/// A host's share of a network: the spec its agent applies, the metadata
/// documents it serves.
pub(crate) type Share = (NetSpec, Vec<GuestMetadata>);

/// Every network to wire, by host and key (a VM without a host is on
/// `local`, the host of rows older than hosts; not wired without one). Takes uplink slots for new
/// networks and frees those of networks neither wired nor in `on_hosts`
/// (the networks the hosts have; None when some host did not say, and then
/// no slot is freed), so it runs in a write transaction.
pub(crate) fn compile(
    conn: &Conn,
    cfg: &NetworkConfig,
    region: &str,
    local: Option<&HostId>,
    on_hosts: Option<&BTreeSet<String>>,
) -> Result<BTreeMap<HostId, BTreeMap<String, Share>>, ApiError> {
    let mut by_net: BTreeMap<String, Vec<NicRow>> = BTreeMap::new();
    for nic in nic_store::linked(conn)? {
        by_net.entry(net_key(&nic)).or_default().push(nic);
    }
    // A slot is held while its network is wired or has anything left on
    // the host (its veth may still carry the addresses). Freeing the others
    // here, before any slot is taken, rather than right after each removal,
    // means no slot is lost to a crash between a removal and its release,
    // nor to a network that took one but never reached the host.
    if let Some(on_hosts) = on_hosts {
        let keep: BTreeSet<String> = by_net.keys().chain(on_hosts).cloned().collect();
        let freed = uplinks::release_all_but(conn, &keep)?;
        if !freed.is_empty() {
            tracing::info!(nets = ?freed, "uplink slots freed");
        }
    }
    let mut hosts = VmHosts::default();
    let mut addresses = Addresses::default();
    let mut out: BTreeMap<HostId, BTreeMap<String, Share>> = BTreeMap::new();
    for (key, nics) in by_net {
        let first = &nics[0];
        let (ip_range, subnets, uplink) = match &first.net_id {
            Some(net_id) => {
                let Some(net) = net_store::get_net_any(conn, net_id)? else { continue };
                let range: Ipv4Net = parse(&net.ip_range)?;
                let mut subnets = vec![];
                for s in net_store::subnets_of(conn, net_id)? {
                    let routes = routes_of(conn, net_id, &s.subnet_id, &mut addresses)?;
                    subnets.push(SubnetSpec { subnet_id: s.subnet_id.to_string(), ip_range: parse(&s.ip_range)?, routes });
                }
                let uplink = match internet_services::linked_to_net(conn, net_id)? {
                    Some(_) => Some(uplink_of(conn, cfg, &key)?),
                    None => None,
                };
                (range, subnets, uplink)
            }
            None => {
                let range = public_cloud_range();
                let internet = Route { dest: "0.0.0.0/0".parse().expect("valid"), target: RouteTarget::Internet };
                let subnet = SubnetSpec { subnet_id: PUBLIC_SUBNET.into(), ip_range: range, routes: vec![internet] };
                (range, vec![subnet], Some(uplink_of(conn, cfg, &key)?))
            }
        };
        let mut ports = Vec::with_capacity(nics.len());
        for nic in &nics {
            let groups = nic_store::groups_of(conn, &nic.nic_id)?;
            let rules = sg_store::rules_of(conn, &groups)?;
            let (inbound, outbound) = resolve_rules(conn, &key, &rules, &mut addresses)?;
            ports.push(PortSpec {
                nic_id: nic.nic_id.to_string(),
                ifname: tap_name(&cfg.prefix, &nic.nic_id),
                mac: nic.mac.parse().map_err(|e| ApiError::internal(format!("stored MAC of {}: {e}", nic.nic_id)))?,
                subnet_id: nic.subnet_id.as_ref().map(|s| s.to_string()).unwrap_or_else(|| PUBLIC_SUBNET.into()),
                private_ips: addresses.of_nic(conn, &nic.nic_id)?,
                inbound,
                outbound,
                source_dest_check: nic.source_dest_check,
            });
        }
        let public_ips = public_ips_of(conn, &nics)?;
        let nat_services = match &first.net_id {
            Some(net_id) => nat_services::of_net(conn, net_id)?
                .into_iter()
                .map(|n| Ok(NatServiceSpec { nat_id: n.nat_service_id.to_string(), public_ip: ip(&n.public_ip)? }))
                .collect::<Result<Vec<_>, ApiError>>()?,
            None => vec![],
        };
        let whole = NetSpec { net_id: key.clone(), ip_range, subnets, ports: vec![], uplink, public_ips, nat_services };
        for (nic, port) in nics.iter().zip(ports) {
            let Some(host) = hosts.of(conn, nic, local)? else { continue };
            let share: &mut Share = out.entry(host).or_default().entry(key.clone()).or_insert_with(|| (whole.clone(), vec![]));
            if let Some(doc) = guests::document(conn, nic, &port.private_ips, region)? {
                share.1.push(doc);
            }
            share.0.ports.push(port);
        }
    }
    Ok(out)
}

/// The host of each NIC's VM, read once per VM.
#[derive(Default)]
struct VmHosts(HashMap<VmId, Option<HostId>>);

impl VmHosts {
    fn of(&mut self, conn: &Conn, nic: &NicRow, local: Option<&HostId>) -> Result<Option<HostId>, ApiError> {
        let Some(vm_id) = &nic.vm_id else { return Ok(local.cloned()) };
        if let Some(h) = self.0.get(vm_id) {
            return Ok(h.clone());
        }
        let host = vm_store::get_any(conn, vm_id)?.and_then(|v| v.host_id).or_else(|| local.cloned());
        self.0.insert(vm_id.clone(), host.clone());
        Ok(host)
    }
}

fn ip(s: &str) -> Result<Ipv4Addr, ApiError> {
    s.parse().map_err(|e| ApiError::internal(format!("stored address {s}: {e}")))
}

/// The subnet's route table (explicit link, else the Net's main table),
/// without the local route and without routes whose target is gone.
fn routes_of(conn: &Conn, net: &NetId, subnet: &SubnetId, addresses: &mut Addresses) -> Result<Vec<Route>, ApiError> {
    let mut out = vec![];
    for r in route_tables::effective_routes(conn, net, subnet)? {
        if r.blackhole {
            continue;
        }
        let target = match (&r.gateway_id, &r.nat_service_id, &r.nic_id) {
            (Some(_), _, _) => RouteTarget::Internet,
            (_, Some(nat), _) => RouteTarget::Nat { nat_id: nat.to_string() },
            (_, _, Some(nic)) => match addresses.of_nic(conn, nic)?.first() {
                Some(ip) => RouteTarget::Address { ip: *ip },
                None => continue,
            },
            _ => continue,
        };
        out.push(Route { dest: parse(&r.destination)?, target });
    }
    Ok(out)
}

/// 1:1 NAT of the public IPs linked to the network's NICs.
fn public_ips_of(conn: &Conn, nics: &[NicRow]) -> Result<Vec<PublicIpMapping>, ApiError> {
    let mut out = vec![];
    for nic in nics {
        for p in public_ips::of_nic(conn, &nic.nic_id)? {
            if let Some(private) = &p.private_ip {
                out.push(PublicIpMapping { public_ip: ip(&p.public_ip)?, private_ip: ip(private)? });
            }
        }
    }
    Ok(out)
}

fn parse(cidr: &str) -> Result<Ipv4Net, ApiError> {
    cidr.parse().map_err(|e| ApiError::internal(format!("stored range {cidr}: {e}")))
}

/// The uplink address pair of a network: its slot's /31 in the uplink range.
fn uplink_of(conn: &Conn, cfg: &NetworkConfig, key: &str) -> Result<UplinkSpec, ApiError> {
    let slot = uplinks::slot_of(conn, key)?;
    let pair = |i: i64| u32::try_from(2 * slot + i).ok().and_then(|n| cfg.uplink_range.nth(n));
    match (pair(0), pair(1)) {
        (Some(root_ip), Some(net_ip)) => Ok(UplinkSpec { root_ip, net_ip }),
        _ => Err(ApiError::internal(format!("the uplink range {} is full (slot {slot} for {key})", cfg.uplink_range))),
    }
}

/// Addresses of NICs and of groups' members, read once per compilation.
#[derive(Default)]
struct Addresses {
    nics: HashMap<NicId, Vec<Ipv4Addr>>,
    /// (network key, group) → member addresses in that network.
    members: HashMap<(String, SecurityGroupId), Vec<Ipv4Net>>,
}

impl Addresses {
    fn of_nic(&mut self, conn: &Conn, nic: &NicId) -> Result<Vec<Ipv4Addr>, ApiError> {
        if let Some(ips) = self.nics.get(nic) {
            return Ok(ips.clone());
        }
        let ips: Vec<Ipv4Addr> = nic_store::ips_of(conn, nic)?.iter().filter_map(|p| p.ip.parse().ok()).collect();
        self.nics.insert(nic.clone(), ips.clone());
        Ok(ips)
    }

    /// The addresses of `group`'s members that are in network `key` (a
    /// member elsewhere is unreachable from here anyway).
    fn of_group(&mut self, conn: &Conn, key: &str, group: &SecurityGroupId) -> Result<Vec<Ipv4Net>, ApiError> {
        let k = (key.to_string(), group.clone());
        if let Some(v) = self.members.get(&k) {
            return Ok(v.clone());
        }
        let mut out = vec![];
        for nic_id in nic_store::members_of_group(conn, group)? {
            let Some(nic) = nic_store::get_any(conn, &nic_id)? else { continue };
            if net_key(&nic) == key {
                out.extend(self.of_nic(conn, &nic_id)?.into_iter().map(Ipv4Net::host));
            }
        }
        self.members.insert(k, out.clone());
        Ok(out)
    }
}

/// A port's (inbound, outbound) allow rules.
fn resolve_rules(
    conn: &Conn,
    key: &str,
    rules: &[RuleRow],
    addresses: &mut Addresses,
) -> Result<(Vec<Rule>, Vec<Rule>), ApiError> {
    let (mut inbound, mut outbound) = (vec![], vec![]);
    for r in rules {
        let peers = match (&r.ip_range, &r.peer_group_id) {
            (Some(range), _) => vec![parse(range)?],
            (None, Some(g)) => addresses.of_group(conn, key, g)?,
            (None, None) => vec![],
        };
        let protocol = match r.protocol.as_str() {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            "icmp" => Protocol::Icmp,
            _ => Protocol::Any,
        };
        let ports = match (protocol, r.from_port, r.to_port) {
            (Protocol::Tcp | Protocol::Udp, Some(from), Some(to)) => Some((port(from)?, port(to)?)),
            _ => None,
        };
        // ICMP: FromPortRange is the type, ToPortRange the code (-1: any).
        let icmp = match (protocol, r.from_port, r.to_port) {
            (Protocol::Icmp, Some(kind), code) if kind >= 0 => {
                Some(IcmpMatch { kind: icmp_field(kind)?, code: code.filter(|c| *c >= 0).map(icmp_field).transpose()? })
            }
            _ => None,
        };
        let rule = Rule { protocol, ports, icmp, peers };
        if r.flow == "inbound" {
            inbound.push(rule);
        } else {
            outbound.push(rule);
        }
    }
    Ok((inbound, outbound))
}

fn icmp_field(v: i64) -> Result<u8, ApiError> {
    u8::try_from(v).map_err(|_| ApiError::internal(format!("stored ICMP type or code {v} out of range")))
}

fn port(p: i64) -> Result<u16, ApiError> {
    u16::try_from(p).map_err(|_| ApiError::internal(format!("stored port {p} out of range")))
}

//! The one error type of the network driver. Spec problems are a separate,
//! matchable enum ([`SpecError`]) because the control plane turns them into
//! API errors, while the rest are host failures an operator has to look at
//! (every message names the Net, interface or command involved, and for a
//! failing external program the tail of its stderr).

use std::net::Ipv4Addr;
use std::path::PathBuf;

use crate::cidr::Ipv4Net;

pub type Result<T, E = NetError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("invalid Net {net_id}: {source}")]
    Spec {
        net_id: String,
        #[source]
        source: SpecError,
    },

    #[error("invalid name prefix {0:?}: expected 1-6 characters from [a-z0-9], starting with a letter (interface names are limited to 15 characters)")]
    InvalidPrefix(String),

    #[error("invalid Net id {0:?}: expected 1-48 characters from [A-Za-z0-9-]")]
    InvalidNetId(String),

    #[error("invalid interface name {0:?}: expected 1-15 characters from [A-Za-z0-9_.-]")]
    InvalidInterfaceName(String),

    #[error("Net {0} is not present on this host (no network namespace)")]
    NetNotFound(String),

    #[error("interface {name} exists but is a {kind}, not a tap")]
    NotATap { name: String, kind: String },

    #[error("{what} {}: {source}", path.display())]
    Io {
        what: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot run `{program}`: {source}{hint}")]
    Spawn {
        program: String,
        hint: &'static str,
        #[source]
        source: std::io::Error,
    },

    #[error("`{command}` failed ({status}){}", stderr_suffix(stderr))]
    Command {
        command: String,
        status: String,
        stderr: String,
    },

    #[error("cannot parse the output of `{command}`: {detail}")]
    Parse { command: String, detail: String },

    #[error("cannot enter network namespace {ns}: {source}")]
    Setns {
        ns: String,
        #[source]
        source: std::io::Error,
    },

    #[error("in network namespace {ns}: {what}: {source}")]
    InNamespace {
        ns: String,
        what: String,
        #[source]
        source: std::io::Error,
    },

    #[error("interface {name} belongs to {owner}, not to Net {net_id} (hash clash of names; rename the Net or change the prefix)")]
    NameClash {
        name: String,
        owner: String,
        net_id: String,
    },

    #[error("dnsmasq of Net {net_id}: {detail}")]
    Dhcp { net_id: String, detail: String },
}

fn stderr_suffix(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!(": {stderr}")
    }
}

/// What is wrong with a [`crate::NetSpec`]. Checked before anything on the
/// host is touched, so a rejected spec leaves the host as it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("Net range {0} is too small (at most /28)")]
    NetRangeTooSmall(Ipv4Net),

    #[error("invalid subnet id {0:?}: expected 1-64 characters from [A-Za-z0-9_.-]")]
    InvalidSubnetId(String),

    #[error("subnet id {0} appears twice")]
    DuplicateSubnet(String),

    #[error("subnet {subnet_id} ({range}) is not inside the Net range {net_range}")]
    SubnetOutsideNet {
        subnet_id: String,
        range: Ipv4Net,
        net_range: Ipv4Net,
    },

    #[error("subnet {subnet_id} ({range}) is too small: at least /29 (network, gateway, hosts, broadcast)")]
    SubnetTooSmall { subnet_id: String, range: Ipv4Net },

    #[error("subnets {a} and {b} overlap")]
    SubnetsOverlap { a: String, b: String },

    #[error("subnet ids {a} and {b} map to the same bridge name; rename one")]
    BridgeNameClash { a: String, b: String },

    #[error("subnet {subnet_id}: route {dest}: {reason}")]
    BadRoute {
        subnet_id: String,
        dest: Ipv4Net,
        reason: String,
    },

    #[error("invalid NIC id {0:?}: expected 1-64 characters from [A-Za-z0-9_.-]")]
    InvalidNicId(String),

    #[error("NIC id {0} appears twice")]
    DuplicateNic(String),

    #[error("NIC {nic_id}: interface name {ifname:?} is invalid or reserved by the driver (1-15 characters from [A-Za-z0-9_.-]; not lo, uplink or sn + 8 hex digits)")]
    BadInterfaceName { nic_id: String, ifname: String },

    #[error("interface {0} is used by two NICs")]
    DuplicateInterface(String),

    #[error("NIC {nic_id}: MAC {mac} must be a unicast address")]
    BadMac { nic_id: String, mac: crate::MacAddr },

    #[error("MAC {0} is used by two NICs")]
    DuplicateMac(crate::MacAddr),

    #[error("NIC {nic_id}: unknown subnet {subnet_id}")]
    UnknownSubnet { nic_id: String, subnet_id: String },

    #[error("NIC {nic_id} has no private IP")]
    NoPrivateIp { nic_id: String },

    #[error("NIC {nic_id}: private IP {ip} is not a host address of subnet {subnet_id} ({range}; network, gateway and broadcast are reserved)")]
    IpOutsideSubnet {
        nic_id: String,
        ip: Ipv4Addr,
        subnet_id: String,
        range: Ipv4Net,
    },

    #[error("private IP {0} is used twice")]
    DuplicateIp(Ipv4Addr),

    #[error(
        "NIC {nic_id}: {direction} rule: port range {from}-{to} is invalid (from must be <= to)"
    )]
    BadPortRange {
        nic_id: String,
        direction: &'static str,
        from: u16,
        to: u16,
    },

    #[error("NIC {nic_id}: {direction} rule: a port range needs protocol tcp or udp")]
    PortsWithoutTcpUdp {
        nic_id: String,
        direction: &'static str,
    },

    #[error("NIC {nic_id}: {direction} rule: an ICMP type needs protocol icmp")]
    IcmpWithoutIcmp {
        nic_id: String,
        direction: &'static str,
    },

    #[error("public IP {public_ip} maps to {private_ip}, which is no NIC's private IP")]
    UnknownPrivateIp {
        public_ip: Ipv4Addr,
        private_ip: Ipv4Addr,
    },

    #[error("public IP {0} is used twice (public IP mappings and NAT services)")]
    DuplicatePublicIp(Ipv4Addr),

    #[error("private IP {0} has two public IPs")]
    PrivateIpMappedTwice(Ipv4Addr),

    #[error("public IP {0} lies inside the Net range")]
    PublicIpInsideNet(Ipv4Addr),

    #[error("invalid NAT service id {0:?}: expected 1-64 characters from [A-Za-z0-9_.-], once")]
    BadNatId(String),

    #[error("uplink addresses must be two different addresses outside the Net range (got {root_ip} and {net_ip})")]
    BadUplink { root_ip: Ipv4Addr, net_ip: Ipv4Addr },
}

//! Host network driver of Socle: makes one host's kernel match declarative
//! descriptions of tenant networks ("Nets", like AWS VPCs).
//!
//! See README.md next to this crate's Cargo.toml for the design. In short:
//! one network namespace per Net, one Linux bridge per subnet inside it,
//! VM taps moved in and enslaved, nftables for anti-spoofing, security
//! groups and NAT, one dnsmasq per Net for static DHCP, a veth uplink to the
//! root namespace for Nets with an internet gateway.
//!
//! The API is synchronous (it runs `ip`, `nft` and `dnsmasq`); call it from
//! `spawn_blocking`. It needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN for
//! namespaces).

mod cidr;
mod cmd;
mod dhcp;
mod driver;
mod error;
mod host;
pub mod host_ranges;
mod naming;
mod nft;
mod spec;

pub use cidr::{Ipv4Net, MacAddr, ParseMacError, ParseNetError};
pub use driver::{ApplyReport, NetDriver};
pub use error::{NetError, Result, SpecError};
pub use spec::{
    IcmpMatch, NatServiceSpec, NetSpec, PortSpec, Protocol, PublicIpMapping, Route, RouteTarget, Rule,
    SubnetSpec, UplinkSpec,
};

/// The metadata service address guests use (on `lo` of every Net).
pub const METADATA_IP: std::net::Ipv4Addr = naming::METADATA_IP;

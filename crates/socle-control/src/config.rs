//! Control-plane settings, with defaults that make `socle up` work as is.

use std::path::PathBuf;
use std::time::Duration;

pub use socle_net::Ipv4Net;

#[derive(Debug, Clone)]
pub struct CloudConfig {
    pub data_dir: PathBuf,
    /// A PostgreSQL URL; None: SQLite in the data dir.
    pub database: Option<String>,
    /// The region this cloud calls itself (`eu-west-2` by default, as the
    /// official clients default to it).
    pub region: String,
    /// The subregion of this server's own agent (`a` → `eu-west-2a`).
    pub subregion_letters: Vec<char>,
    /// The public API URL, ending in `/api/v1` (written to credentials.json).
    pub endpoint: String,
    /// How long a graceful (ACPI) stop may take before the VM is powered off.
    pub stop_timeout: Duration,
    /// How long terminated VMs stay visible in ReadVms.
    pub terminated_retention: Duration,
    /// Period of the reconciler's health pass over running VMs.
    pub health_interval: Duration,
    /// Size of the storage pool: the sum of all volume and snapshot sizes
    /// may not exceed it (GiB, provisioned sizes).
    pub storage_capacity_gib: i64,
    /// How many vCPUs of guests a host's logical CPU carries, and how much
    /// guest memory a MiB of its memory (VMs are placed within them).
    pub overcommit: Overcommit,
    /// The operator's public addresses, handed out by CreatePublicIp
    /// lowest first, in the order of the ranges (network and broadcast
    /// addresses of ranges wider than /31 excluded).
    pub public_ip_pool: Vec<Ipv4Net>,
    /// Host networking; None where the host cannot do it (not root): VMs
    /// then run without NICs (their NIC rows still exist).
    pub network: Option<NetworkConfig>,
}

#[derive(Debug, Clone)]
pub struct NetworkConfig {
    /// Prefix of every namespace, tap, veth and nftables table this cloud
    /// creates (1–6 lowercase letters or digits): two clouds on one host
    /// need different prefixes.
    pub prefix: String,
    /// Where the uplinks of wired networks take their address pairs (a /31
    /// each): must not be used elsewhere on the host.
    pub uplink_range: socle_net::Ipv4Net,
}

/// Overcommit ratios: what a host may promise its guests, per unit it has.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Overcommit {
    pub vcpus: f64,
    pub memory: f64,
}

impl Default for Overcommit {
    /// 16 vCPUs per CPU (an idle guest costs little; OpenStack's long-time
    /// default) and 1.5 times the memory (guests touch their memory
    /// lazily; beyond that the host swaps).
    fn default() -> Self {
        Overcommit { vcpus: 16.0, memory: 1.5 }
    }
}

impl Overcommit {
    /// What a host of `capacity` may hold.
    pub fn apply(&self, capacity: socle_agent_api::HostCapacity) -> (i64, i64) {
        ((f64::from(capacity.vcpus) * self.vcpus) as i64, (capacity.memory_mib as f64 * self.memory) as i64)
    }
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            prefix: "socle".into(),
            uplink_range: "169.254.0.0/17".parse().expect("valid range"),
        }
    }
}

/// The default public IP pool: 198.18.0.0/24, of the RFC 2544 benchmark
/// range, never routed on the internet, so a cloud nobody configured
/// cannot hijack real addresses.
pub fn default_public_ip_pool() -> Vec<Ipv4Net> {
    vec!["198.18.0.0/24".parse().expect("a valid range")]
}

impl CloudConfig {
    pub fn new(data_dir: PathBuf, endpoint: String) -> CloudConfig {
        CloudConfig {
            data_dir,
            database: None,
            region: "eu-west-2".into(),
            subregion_letters: vec!['a'],
            endpoint,
            stop_timeout: Duration::from_secs(30),
            terminated_retention: Duration::from_secs(3600),
            health_interval: Duration::from_secs(2),
            storage_capacity_gib: 1024,
            overcommit: Overcommit::default(),
            network: Some(NetworkConfig::default()),
            public_ip_pool: default_public_ip_pool(),
        }
    }

    pub fn subregions(&self) -> Vec<String> {
        self.subregion_letters.iter().map(|l| format!("{}{}", self.region, l)).collect()
    }

    pub fn default_subregion(&self) -> String {
        self.subregions().into_iter().next().expect("at least one subregion")
    }
}

//! [`NetDriver`]: makes the host match a [`NetSpec`], idempotently.
//!
//! Every step of [`NetDriver::apply`] reads what is there and changes only
//! what differs, so an apply converges from any partial state: a previous
//! apply that crashed halfway, pieces deleted by hand, a killed dnsmasq.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{SocketAddrV4, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use crate::cidr::Ipv4Net;
use crate::cmd::{self, ip, ip_batch};
use crate::dhcp;
use crate::error::{NetError, Result};
use crate::host;
use crate::naming::{self, METADATA_IP, NS_TABLE, UPLINK};
use crate::nft;
use crate::spec::{NetSpec, RouteTarget};

/// Preference of the ip rule that keeps the Net's own range local.
const RULE_PREF_LOCAL: u32 = 500;
/// Subnet `i` (in subnet-id order) routes with table and rule preference
/// `SUBNET_TABLE_BASE + i`.
const SUBNET_TABLE_BASE: u32 = 1000;
const SUBNET_TABLE_END: u32 = 2000;

/// What an apply could not do without failing: ports of the spec whose
/// interface exists nowhere yet (the VM is not started). Their rules and
/// DHCP lease are in place; the interface is attached by the next apply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// NIC ids whose interface was found neither in the root namespace nor
    /// in the Net's.
    pub missing_ports: Vec<String>,
    /// Interfaces that were in the Net's namespace without being a port of
    /// the spec, moved back to the root namespace.
    pub released: Vec<String>,
}

/// The host network driver for one host. Cheap to share (`Arc`); calls on
/// the same Net are serialised, calls on different Nets run in parallel.
/// One process per state directory and prefix.
#[derive(Debug)]
pub struct NetDriver {
    state_dir: PathBuf,
    prefix: String,
    locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    checkpoint: fn(&str),
}

pub(crate) fn write_atomic(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let io = |what: &str, source| NetError::Io {
        what: what.to_string(),
        path: path.to_path_buf(),
        source,
    };
    std::fs::write(&tmp, text).map_err(|e| io("cannot write", e))?;
    std::fs::rename(&tmp, path).map_err(|e| io("cannot rename into place", e))
}

fn nft_load(ns: Option<&str>, script: &str) -> Result<()> {
    match ns {
        Some(ns) => {
            let (mut c, _f) = cmd::command_in_ns(ns, "nft")?;
            c.args(["-f", "-"]);
            cmd::run_input(&mut c, Some(script))?;
        }
        None => {
            cmd::run_input(Command::new("nft").args(["-f", "-"]), Some(script))?;
        }
    }
    Ok(())
}

impl NetDriver {
    /// `state_dir` holds one directory per Net (dnsmasq configuration and
    /// pid file); `prefix` (1-6 characters, `socle` in production) starts
    /// every name the driver gives to host objects, so drivers with
    /// different prefixes never touch each other's Nets.
    pub fn new(state_dir: PathBuf, prefix: &str) -> Result<Self> {
        if !naming::valid_prefix(prefix) {
            return Err(NetError::InvalidPrefix(prefix.to_string()));
        }
        std::fs::create_dir_all(&state_dir).map_err(|source| NetError::Io {
            what: "cannot create the network state directory".into(),
            path: state_dir.clone(),
            source,
        })?;
        Ok(NetDriver {
            state_dir,
            prefix: prefix.to_string(),
            locks: Mutex::new(HashMap::new()),
            checkpoint: |_| {},
        })
    }

    /// Has `hook` called with the name of each checkpoint the driver passes
    /// in the middle of a multi-step operation, for crash tests to abort
    /// there (the embedding process decides how; the driver stays free of
    /// test switches). Checkpoints: `net-half-destroyed` (in
    /// [`NetDriver::destroy`]: dnsmasq, links, nft tables and the root
    /// table gone, the namespace and state directory still there).
    pub fn with_checkpoint(mut self, hook: fn(&str)) -> Self {
        self.checkpoint = hook;
        self
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The network namespace holding a Net (`ip netns exec NAME …`).
    pub fn namespace(&self, net_id: &str) -> String {
        naming::namespace(&self.prefix, net_id)
    }

    /// The root-namespace end of a Net's uplink veth.
    pub fn uplink_interface(&self, net_id: &str) -> String {
        naming::root_veth(&self.prefix, net_id)
    }

    /// The Net's nftables table (family inet) in the root namespace.
    pub fn root_table(&self, net_id: &str) -> String {
        naming::root_table(&self.prefix, net_id)
    }

    fn net_dir(&self, net_id: &str) -> PathBuf {
        self.state_dir.join(net_id)
    }

    fn lock(&self, net_id: &str) -> Arc<Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(net_id.to_string()).or_default().clone()
    }

    fn check_net_id(net_id: &str) -> Result<()> {
        if naming::valid_net_id(net_id) {
            Ok(())
        } else {
            Err(NetError::InvalidNetId(net_id.to_string()))
        }
    }

    /// Makes the host match `net`. Idempotent; converges from any partial
    /// state. Ports whose interface does not exist yet are reported, not an
    /// error.
    ///
    /// Order matters for safety: the firewall is loaded before any port is
    /// attached, and the root namespace's per-Net table before any public IP
    /// is routed to the Net.
    pub fn apply(&self, net: &NetSpec) -> Result<ApplyReport> {
        Self::check_net_id(&net.net_id)?;
        net.validate().map_err(|source| NetError::Spec {
            net_id: net.net_id.clone(),
            source,
        })?;
        let lock = self.lock(&net.net_id);
        let _guard = lock.lock().unwrap_or_else(|p| p.into_inner());
        let started = std::time::Instant::now();

        let ns = self.namespace(&net.net_id);
        let dir = self.net_dir(&net.net_id);
        std::fs::create_dir_all(&dir).map_err(|source| NetError::Io {
            what: "cannot create the Net's state directory".into(),
            path: dir.clone(),
            source,
        })?;

        self.ensure_namespace(&ns)?;
        nft_load(Some(&ns), &nft::ns_ruleset(net))?;
        self.ensure_bridges(&ns, net)?;
        self.ensure_uplink(&ns, net)?;
        let report = self.ensure_ports(&ns, net)?;
        self.ensure_routing(&ns, net)?;
        dhcp::ensure(&net.net_id, &ns, &dir, dhcp::config(net, &dir).as_deref())?;

        tracing::info!(
            net_id = %net.net_id,
            ms = started.elapsed().as_millis() as u64,
            missing = ?report.missing_ports,
            "net applied"
        );
        Ok(report)
    }

    /// A namespace with lo up, forwarding on, the metadata address, and
    /// bridged IPv4 passed through the inet hooks (the stateful security
    /// groups rely on it).
    fn ensure_namespace(&self, ns: &str) -> Result<()> {
        let path = cmd::ns_path(ns);
        if path.exists() && ip(Some(ns), &["link", "show", "lo"]).is_err() {
            // A leftover mount point without a live namespace behind it
            // (e.g. a crash inside `ip netns add`): start over.
            tracing::warn!(ns, "broken network namespace, recreating");
            let _ = cmd::run(Command::new("ip").args(["netns", "delete", ns]));
            let _ = std::fs::remove_file(&path);
        }
        if !path.exists() {
            cmd::run(Command::new("ip").args(["netns", "add", ns]))?;
        }
        cmd::sysctls_in_ns(
            ns,
            &[
                ("net/ipv4/ip_forward", "1"),
                ("net/bridge/bridge-nf-call-iptables", "1"),
                // Next-hop routes inside one subnet must not teach guests
                // to bypass the router.
                ("net/ipv4/conf/all/send_redirects", "0"),
                ("net/ipv4/conf/default/send_redirects", "0"),
                // New namespaces inherit the host's IPv4 settings; a strict
                // reverse-path filter would second-guess the policy routing
                // (anti-spoofing is nftables' job, per port).
                ("net/ipv4/conf/all/rp_filter", "0"),
                ("net/ipv4/conf/default/rp_filter", "0"),
                // IPv4 only: no IPv6 on any device of the namespace.
                ("net/ipv6/conf/all/disable_ipv6", "1"),
                ("net/ipv6/conf/default/disable_ipv6", "1"),
            ],
        )?;
        ip_batch(
            Some(ns),
            &[
                "link set lo up".to_string(),
                format!("addr replace {METADATA_IP}/32 dev lo"),
            ],
        )
    }

    fn ensure_bridges(&self, ns: &str, net: &NetSpec) -> Result<()> {
        let links = host::links_by_name(Some(ns))?;
        let addrs = host::ipv4_addrs(Some(ns))?;
        let mut batch = Vec::new();
        let wanted: BTreeMap<String, &crate::spec::SubnetSpec> = net
            .subnets
            .iter()
            .map(|s| (naming::bridge(&s.subnet_id), s))
            .collect();
        for (name, l) in &links {
            if naming::is_bridge_name(name)
                && !wanted.contains_key(name)
                && l.kind() == Some("bridge")
            {
                batch.push(format!("link del {name}"));
            }
        }
        for (name, s) in &wanted {
            let mac = naming::bridge_mac(&s.subnet_id).to_string();
            match links.get(name) {
                Some(l) if l.kind() == Some("bridge") => {
                    if l.address.as_deref() != Some(mac.as_str()) {
                        batch.push(format!("link set {name} address {mac}"));
                    }
                }
                Some(_) => {
                    batch.push(format!("link del {name}"));
                    batch.push(format!(
                        "link add {name} address {mac} type bridge stp_state 0"
                    ));
                }
                None => batch.push(format!(
                    "link add {name} address {mac} type bridge stp_state 0"
                )),
            }
            let want = vec![format!("{}/{}", s.gateway(), s.ip_range.prefix_len())];
            if addrs.get(name) != Some(&want) {
                batch.push(format!("addr flush dev {name}"));
                batch.push(format!("addr add {} dev {name}", want[0]));
            }
            if !links
                .get(name)
                .is_some_and(|l| l.is_up() && l.kind() == Some("bridge"))
            {
                batch.push(format!("link set {name} up"));
            }
        }
        ip_batch(Some(ns), &batch)
    }

    fn ensure_uplink(&self, ns: &str, net: &NetSpec) -> Result<()> {
        let veth = self.uplink_interface(&net.net_id);
        let table = self.root_table(&net.net_id);
        let root_links = host::links_by_name(None)?;
        let ns_links = host::links_by_name(Some(ns))?;
        let alias = uplink_alias(&net.net_id);
        let root_has = root_links.get(&veth).map(|l| l.kind() == Some("veth"));
        let ns_has = ns_links.contains_key(UPLINK);

        let Some(up) = net.uplink else {
            // No internet gateway: no veth, no routes, no root table.
            if root_has.is_some() && owned_by(root_links.get(&veth), &alias) {
                ip(None, &["link", "del", &veth])?;
            }
            if ns_has {
                let _ = ip(Some(ns), &["link", "del", UPLINK]);
            }
            return nft_load(None, &nft::delete_table_script("inet", &table));
        };

        // The root name is a hash of the Net id: the alias says whose it is,
        // so a clash is an error instead of another Net's uplink deleted.
        if let Some(owner) = root_links.get(&veth).and_then(|l| l.ifalias.as_deref()) {
            if owner != alias {
                return Err(NetError::NameClash {
                    name: veth,
                    owner: owner.to_string(),
                    net_id: net.net_id.clone(),
                });
            }
        }
        // A veth pair lives and dies as a pair, so half of one means someone
        // else's interface or an orphaned end: remove and recreate.
        if root_has == Some(false) || (root_has == Some(true) && !ns_has) {
            ip(None, &["link", "del", &veth])?;
        }
        if root_has != Some(true) && ns_has {
            ip(Some(ns), &["link", "del", UPLINK])?;
        }
        if root_has != Some(true) || !ns_has {
            ip(
                None,
                &[
                    "link", "add", &veth, "type", "veth", "peer", "name", UPLINK, "netns", ns,
                ],
            )?;
        }
        // The root end carries only IPv4 to public addresses.
        let _ = cmd::write_sysctl(&format!("net/ipv6/conf/{veth}/disable_ipv6"), "1");

        // Root-namespace filter before any public IP is routed here.
        if let Some(script) = nft::root_ruleset(&table, &veth, net) {
            nft_load(None, &script)?;
        }

        let root_addrs = host::ipv4_addrs(None)?;
        let want_root = vec![format!("{} peer {}", up.root_ip, up.net_ip)];
        let mut batch = Vec::new();
        if root_addrs.get(&veth) != Some(&want_root) {
            batch.push(format!("addr flush dev {veth}"));
            batch.push(format!(
                "addr add {} peer {} dev {veth}",
                up.root_ip, up.net_ip
            ));
        }
        batch.push(format!("link set {veth} alias {alias}"));
        batch.push(format!("link set {veth} up"));
        // Public IPs of the Net (1:1 and NAT services) are routed to it.
        let wanted: BTreeSet<Ipv4Net> = net
            .public_addresses()
            .into_iter()
            .map(Ipv4Net::host)
            .collect();
        for r in host::routes(None, &["dev", &veth])? {
            let Some(dest) = r.dest() else { continue };
            if r.protocol.as_deref() == Some("kernel") {
                continue;
            }
            if !wanted.contains(&dest) {
                batch.push(format!("route del {dest} dev {veth}"));
            }
        }
        for d in &wanted {
            batch.push(format!("route replace {d} via {} dev {veth}", up.net_ip));
        }
        ip_batch(None, &batch)?;

        let ns_addrs = host::ipv4_addrs(Some(ns))?;
        let want_ns = vec![format!("{} peer {}", up.net_ip, up.root_ip)];
        let mut batch = Vec::new();
        if ns_addrs.get(UPLINK) != Some(&want_ns) {
            batch.push(format!("addr flush dev {UPLINK}"));
            batch.push(format!(
                "addr add {} peer {} dev {UPLINK}",
                up.net_ip, up.root_ip
            ));
        }
        batch.push(format!("link set {UPLINK} up"));
        ip_batch(Some(ns), &batch)?;

        // Routing between the host's interfaces; the only global setting the
        // driver changes.
        cmd::write_sysctl("net/ipv4/ip_forward", "1").map_err(|source| NetError::Io {
            what: "cannot enable IPv4 forwarding".into(),
            path: "/proc/sys/net/ipv4/ip_forward".into(),
            source,
        })
    }

    fn ensure_ports(&self, ns: &str, net: &NetSpec) -> Result<ApplyReport> {
        let mut report = ApplyReport::default();
        let ns_links = host::links_by_name(Some(ns))?;
        let wanted: BTreeMap<&str, &crate::spec::PortSpec> =
            net.ports.iter().map(|p| (p.ifname.as_str(), p)).collect();

        // Interfaces that are no (longer a) port go back to the root
        // namespace, where their owner (the agent, for taps) finds them.
        let me = std::process::id().to_string();
        for name in ns_links.keys() {
            if is_port_candidate(name) && !wanted.contains_key(name.as_str()) {
                tracing::info!(ns, ifname = %name, "releasing interface to the root namespace");
                ip_batch(
                    Some(ns),
                    &[
                        format!("link set {name} nomaster"),
                        format!("link set {name} down"),
                        format!("link set {name} netns {me}"),
                    ],
                )?;
                report.released.push(name.clone());
            }
        }

        let root_links = host::links_by_name(None)?;
        let mut batch = Vec::new();
        for (name, p) in &wanted {
            let in_ns = ns_links.get(*name);
            if in_ns.is_none() {
                if root_links.contains_key(*name) {
                    ip(None, &["link", "set", name, "netns", ns])?;
                } else {
                    report.missing_ports.push(p.nic_id.clone());
                    continue;
                }
            }
            let br = naming::bridge(&p.subnet_id);
            if in_ns.and_then(|l| l.master.as_deref()) != Some(br.as_str()) {
                batch.push(format!("link set {name} master {br}"));
            }
            if !in_ns.is_some_and(|l| l.is_up()) {
                batch.push(format!("link set {name} up"));
            }
        }
        ip_batch(Some(ns), &batch)?;
        Ok(report)
    }

    /// Policy routing: the Net's range is always local (and unreachable where
    /// no subnet is); each subnet's own table holds its routes, so a subnet
    /// without a route to the uplink has no way out.
    fn ensure_routing(&self, ns: &str, net: &NetSpec) -> Result<()> {
        const UNREACHABLE_METRIC: u32 = 65535;
        let mut subnets: Vec<_> = net.subnets.iter().collect();
        subnets.sort_by(|a, b| a.subnet_id.cmp(&b.subnet_id));

        // Desired rules and routes.
        let mut want_rules: Vec<(u32, String, String)> = vec![(
            RULE_PREF_LOCAL,
            format!("from all to {} lookup 254", net.ip_range),
            format!("to {} lookup main", net.ip_range),
        )];
        // (table, dest) -> `ip route replace` arguments.
        let mut want_routes: BTreeMap<(u32, Ipv4Net), String> = BTreeMap::new();
        for (i, s) in subnets.iter().enumerate() {
            let table = SUBNET_TABLE_BASE + i as u32;
            want_rules.push((
                table,
                format!("from {} to all lookup {table}", s.ip_range),
                format!("from {} lookup {table}", s.ip_range),
            ));
            for r in &s.routes {
                let via = match (&r.target, &net.uplink) {
                    (RouteTarget::Internet | RouteTarget::Nat { .. }, Some(up)) => {
                        format!("via {} dev {UPLINK} onlink", up.root_ip)
                    }
                    (RouteTarget::Internet | RouteTarget::Nat { .. }, None) => continue,
                    (RouteTarget::Address { ip }, _) => match net.subnet_of(*ip) {
                        Some(t) => format!("via {ip} dev {} onlink", naming::bridge(&t.subnet_id)),
                        None => continue,
                    },
                };
                want_routes.insert((table, r.dest), format!("{} {via} table {table}", r.dest));
            }
        }

        let mut batch = Vec::new();
        let existing_rules = host::rules(Some(ns))?;
        let mut have = BTreeSet::new();
        for r in &existing_rules {
            let ours = r.priority == RULE_PREF_LOCAL
                || (SUBNET_TABLE_BASE..SUBNET_TABLE_END).contains(&r.priority);
            if !ours {
                continue;
            }
            let rendered = r.render();
            if want_rules
                .iter()
                .any(|(p, shape, _)| format!("pref {p} {shape}") == rendered)
                && have.insert(r.priority)
            {
                continue;
            }
            batch.push(format!("rule del pref {}", r.priority));
        }
        for (p, _, args) in &want_rules {
            if !have.contains(p) {
                batch.push(format!("rule add pref {p} {args}"));
            }
        }

        for r in host::routes(Some(ns), &["table", "all"])? {
            let (Some(t), Some(d)) = (r.table_id(), r.dest()) else {
                continue;
            };
            if (SUBNET_TABLE_BASE..SUBNET_TABLE_END).contains(&t)
                && !want_routes.contains_key(&(t, d))
            {
                batch.push(format!("route del {d} table {t}"));
            }
            if t == 254 && r.kind.as_deref() == Some("unreachable") && d != net.ip_range {
                batch.push(format!("route del unreachable {d}"));
            }
        }
        // Behind every subnet's connected route (metric 0), not instead of
        // it: a subnet may cover the whole Net range.
        batch.push(format!("route replace unreachable {} metric {UNREACHABLE_METRIC}", net.ip_range));
        for args in want_routes.values() {
            batch.push(format!("route replace {args}"));
        }
        ip_batch(Some(ns), &batch)
    }

    /// Removes everything of a Net from the host: dnsmasq, the uplink veth
    /// (and with it the root routes), the root table, the namespace (with
    /// its bridges and nft tables) and the state directory. Port interfaces
    /// still attached are first moved back to the root namespace (they
    /// belong to the agent). Idempotent.
    ///
    /// A listener from [`NetDriver::listen_tcp_in`] keeps the namespace
    /// object alive until it is closed, but it is then empty and
    /// unreachable: the driver removes the links explicitly rather than
    /// relying on the namespace's end.
    pub fn destroy(&self, net_id: &str) -> Result<()> {
        Self::check_net_id(net_id)?;
        let lock = self.lock(net_id);
        let _guard = lock.lock().unwrap_or_else(|p| p.into_inner());
        let ns = self.namespace(net_id);
        let dir = self.net_dir(net_id);

        for r in dhcp::running(&dir) {
            dhcp::stop(r.pid);
        }
        let ns_exists = cmd::ns_path(&ns).exists();
        if ns_exists {
            if let Ok(links) = host::links_by_name(Some(&ns)) {
                let me = std::process::id().to_string();
                for name in links.keys().filter(|n| is_port_candidate(n)) {
                    let _ = ip_batch(
                        Some(&ns),
                        &[
                            format!("link set {name} nomaster"),
                            format!("link set {name} down"),
                            format!("link set {name} netns {me}"),
                        ],
                    );
                }
                if links.contains_key(UPLINK) {
                    let _ = ip(Some(&ns), &["link", "del", UPLINK]);
                }
                for name in links.keys().filter(|n| naming::is_bridge_name(n)) {
                    let _ = ip(Some(&ns), &["link", "del", name]);
                }
            }
            let _ = nft_load(
                Some(&ns),
                &format!(
                    "{}{}",
                    nft::delete_table_script("bridge", NS_TABLE),
                    nft::delete_table_script("inet", NS_TABLE)
                ),
            );
        }
        let veth = self.uplink_interface(net_id);
        let root_links = host::links_by_name(None)?;
        if root_links.contains_key(&veth) && owned_by(root_links.get(&veth), &uplink_alias(net_id))
        {
            ip(None, &["link", "del", &veth])?;
        }
        nft_load(
            None,
            &nft::delete_table_script("inet", &self.root_table(net_id)),
        )?;
        (self.checkpoint)("net-half-destroyed");
        if ns_exists {
            cmd::run(Command::new("ip").args(["netns", "delete", &ns]))?;
        }
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|source| NetError::Io {
                what: "cannot remove the Net's state directory".into(),
                path: dir.clone(),
                source,
            })?;
        }
        tracing::info!(net_id, "net destroyed");
        Ok(())
    }

    /// Nets with anything on this host under this prefix: a namespace, a
    /// root table or a state directory. Compared with the database, this
    /// finds the orphans to [`NetDriver::destroy`].
    pub fn list_nets(&self) -> Result<Vec<String>> {
        let mut nets = BTreeSet::new();
        for ns in self.namespaces()? {
            if let Some(id) = naming::net_of_namespace(&self.prefix, &ns) {
                nets.insert(id.to_string());
            }
        }
        let out = cmd::run(Command::new("nft").args(["list", "tables", "inet"]))?;
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some(name) = line.trim().strip_prefix("table inet ") {
                if let Some(id) = naming::net_of_root_table(&self.prefix, name.trim()) {
                    nets.insert(id.to_string());
                }
            }
        }
        if let Ok(entries) = std::fs::read_dir(&self.state_dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if e.path().is_dir() && naming::valid_net_id(&name) {
                    nets.insert(name);
                }
            }
        }
        Ok(nets.into_iter().collect())
    }

    /// Names of the namespaces under this prefix.
    fn namespaces(&self) -> Result<Vec<String>> {
        let mut v = Vec::new();
        let entries = match std::fs::read_dir(cmd::NETNS_DIR) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(v),
            Err(source) => {
                return Err(NetError::Io {
                    what: "cannot list network namespaces".into(),
                    path: cmd::NETNS_DIR.into(),
                    source,
                })
            }
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if naming::net_of_namespace(&self.prefix, &name).is_some() {
                v.push(name);
            }
        }
        v.sort();
        Ok(v)
    }

    /// Ensures a persistent tap `tap` exists in the root namespace, up and
    /// attached to nothing, for QEMU to open with
    /// `-netdev tap,ifname=TAP,script=no,downscript=no`. A tap of that name
    /// left inside one of this driver's Nets (a VM that died while
    /// attached) is removed first.
    ///
    /// Order with [`NetDriver::apply`]: QEMU must open the tap while it is
    /// still in the root namespace (a tap is opened by name in the opener's
    /// namespace); the following apply moves it into the Net, and QEMU's
    /// file descriptor keeps working there.
    pub fn prepare_tap(&self, tap: &str) -> Result<()> {
        if !naming::valid_port_ifname(tap) {
            return Err(NetError::InvalidInterfaceName(tap.to_string()));
        }
        self.remove_tap_from_nets(tap)?;
        let root = host::links_by_name(None)?;
        match root.get(tap) {
            Some(l) if l.is_tap() => {
                if l.master.is_some() {
                    ip(None, &["link", "set", tap, "nomaster"])?;
                }
            }
            Some(l) => {
                return Err(NetError::NotATap {
                    name: tap.to_string(),
                    kind: l.kind().unwrap_or("device").to_string(),
                })
            }
            None => {
                ip(None, &["tuntap", "add", "dev", tap, "mode", "tap"])?;
            }
        }
        ip(None, &["link", "set", tap, "up"])?;
        Ok(())
    }

    /// Deletes the tap `tap`, in the root namespace or in any Net of this
    /// driver. Idempotent; interfaces of that name that are not taps are
    /// left alone.
    pub fn remove_tap(&self, tap: &str) -> Result<()> {
        if !naming::valid_port_ifname(tap) {
            return Err(NetError::InvalidInterfaceName(tap.to_string()));
        }
        self.remove_tap_from_nets(tap)?;
        if host::links_by_name(None)?
            .get(tap)
            .is_some_and(|l| l.is_tap())
        {
            ip(None, &["link", "del", tap])?;
        }
        Ok(())
    }

    fn remove_tap_from_nets(&self, tap: &str) -> Result<()> {
        for ns in self.namespaces()? {
            let Ok(links) = host::links_by_name(Some(&ns)) else {
                continue;
            };
            if links.get(tap).is_some_and(|l| l.is_tap()) {
                tracing::info!(ns, tap, "removing a tap left in a Net");
                ip(Some(&ns), &["link", "del", tap])?;
            }
        }
        Ok(())
    }

    /// A TCP listener bound to `addr` inside the Net's namespace, usable
    /// from any thread (the socket stays in the namespace it was created
    /// in). For the metadata service: `169.254.169.254:80` is on the
    /// namespace's `lo`, guests reach it through their gateway, and the
    /// peer address of an accepted connection is the guest's private IP,
    /// which anti-spoofing makes trustworthy within the Net.
    pub fn listen_tcp_in(&self, net_id: &str, addr: SocketAddrV4) -> Result<TcpListener> {
        Self::check_net_id(net_id)?;
        let ns = self.namespace(net_id);
        if !cmd::ns_path(&ns).exists() {
            return Err(NetError::NetNotFound(net_id.to_string()));
        }
        cmd::in_netns(&ns, &format!("cannot listen on {addr}"), move || {
            TcpListener::bind(addr)
        })
    }
}

/// Interfaces of a Net namespace that are not the driver's own (lo,
/// uplink, subnet bridges): the ports.
fn is_port_candidate(name: &str) -> bool {
    name != "lo" && name != UPLINK && !naming::is_bridge_name(name)
}

/// The alias of a Net's root-namespace veth (no spaces: it goes through
/// `ip -batch`).
fn uplink_alias(net_id: &str) -> String {
    format!("socle-net:{net_id}")
}

/// An interface carries no owner tag (created before the tag was set, e.g.
/// by an apply that crashed) or carries ours.
fn owned_by(link: Option<&host::Link>, alias: &str) -> bool {
    link.and_then(|l| l.ifalias.as_deref())
        .is_none_or(|a| a == alias)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_is_shareable_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<NetDriver>();
    }

    #[test]
    fn constructor_checks_the_prefix() {
        let dir = std::env::temp_dir().join(format!("socle-net-unit-{}", std::process::id()));
        assert!(matches!(
            NetDriver::new(dir.clone(), "toolong1"),
            Err(NetError::InvalidPrefix(_))
        ));
        let d = NetDriver::new(dir.clone(), "socle").unwrap();
        assert_eq!(d.namespace("vpc-1"), "socle-vpc-1");
        assert_eq!(d.root_table("vpc-1"), "socle_vpc-1");
        assert!(d.uplink_interface("vpc-1").len() <= 15);
        assert!(matches!(
            d.destroy("bad/id"),
            Err(NetError::InvalidNetId(_))
        ));
        let _ = std::fs::remove_dir_all(dir);
    }
}

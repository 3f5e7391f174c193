//! Test lab for the network driver on the real kernel: network namespaces
//! play the VMs (a veth pair per NIC, the VM end inside a "vm" namespace,
//! the other end given to the driver as the port interface) and the
//! outside world (a namespace routed through the root namespace).
//!
//! Every lab gets a unique short prefix, so tests run in parallel, and its
//! Drop removes everything it created, also when the test fails.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::Duration;

use socle_net::*;

/// Every command of the lab ends within this, or fails its test by name.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

trait OutputWithin {
    fn output_within(&mut self) -> std::io::Result<std::process::Output>;
}

impl OutputWithin for Command {
    fn output_within(&mut self) -> std::io::Result<std::process::Output> {
        socle_testkit::try_output_within(self, COMMAND_TIMEOUT).map_err(std::io::Error::other)
    }
}

pub fn require_tools() {
    for (bin, arg) in [
        ("ip", "-V"),
        ("nft", "--version"),
        ("dnsmasq", "--version"),
        ("busybox", "--help"),
    ] {
        let ok = Command::new(bin)
            .arg(arg)
            .output_within()
            .map(|o| o.status.success())
            .unwrap_or(false);
        assert!(ok, "`{bin}` is missing: run scripts/install-deps.sh (iproute2 nftables dnsmasq-base busybox)");
    }
    assert!(
        unsafe { libc::geteuid() } == 0,
        "the socle-net tests need root (network namespaces)"
    );
}

pub fn sh(cmdline: &str) -> std::process::Output {
    Command::new("sh")
        .args(["-c", cmdline])
        .output_within()
        .expect("sh")
}

pub fn sh_ok(cmdline: &str) -> String {
    let out = sh(cmdline);
    assert!(
        out.status.success(),
        "`{cmdline}` failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn n(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}
pub fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

/// Runs `f` in a thread that entered the namespace `ns`.
pub fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let file = std::fs::File::open(format!("/run/netns/{ns}")).expect("open netns");
    std::thread::spawn(move || {
        let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .unwrap()
}

pub fn ns_exists(ns: &str) -> bool {
    std::path::Path::new("/run/netns").join(ns).exists()
}

pub fn link_exists(ns: Option<&str>, name: &str) -> bool {
    let mut c = Command::new("ip");
    if let Some(ns) = ns {
        c.args(["-n", ns]);
    }
    c.args(["link", "show", "dev", name])
        .output_within()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// A connection attempt from inside `ns`; `None` when refused, dropped or
/// timed out.
pub fn connect_from(ns: &str, to: SocketAddrV4, timeout: Duration) -> Option<TcpStream> {
    in_ns(ns, move || {
        TcpStream::connect_timeout(&SocketAddr::V4(to), timeout).ok()
    })
}

/// Reads what a server sends on a fresh connection from `ns` (the
/// `peer_echo` servers send the address they see and close).
pub fn fetch_from(ns: &str, to: SocketAddrV4) -> Option<String> {
    let mut s = connect_from(ns, to, Duration::from_millis(1200))?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    Some(buf)
}

/// Serves, on every connection, the peer's IP address as text, then closes.
pub fn peer_echo(listener: TcpListener) {
    std::thread::spawn(move || {
        for c in listener.incoming() {
            let Ok(mut c) = c else { return };
            let peer = c
                .peer_addr()
                .map(|a| a.ip().to_string())
                .unwrap_or_default();
            let _ = c.write_all(peer.as_bytes());
        }
    });
}

/// A TCP listener inside `ns`.
pub fn listen_in(ns: &str, addr: SocketAddrV4) -> TcpListener {
    in_ns(ns, move || TcpListener::bind(addr).expect("bind in ns"))
}

/// One ping from `ns` (busybox), true when answered within a second.
pub fn ping(ns: &str, to: Ipv4Addr) -> bool {
    Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "busybox",
            "ping",
            "-c",
            "1",
            "-W",
            "1",
            &to.to_string(),
        ])
        .output_within()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

const UDHCPC_SCRIPT: &str = r#"#!/bin/sh
# udhcpc event script for the socle-net tests: configure like a guest would.
case "$1" in
    deconfig) ip addr flush dev "$interface" ;;
    bound|renew)
        ip addr flush dev "$interface"
        ip addr add "$ip/${mask:-$subnet}" dev "$interface"
        if [ -n "$router" ]; then
            ip route replace default via "${router%% *}" dev "$interface"
        fi
        echo "$ip ${router%% *}" > "$UDHCPC_OUT"
        ;;
esac
exit 0
"#;

/// A fake VM: a namespace with `eth0`, the other end of the veth in the
/// root namespace as the port interface.
pub struct Vm {
    pub ns: String,
    /// The root-namespace end, to put in a PortSpec.
    pub port_if: String,
    pub mac: MacAddr,
}

impl Vm {
    /// Gets an address by DHCP (busybox udhcpc); returns (ip, router) as
    /// handed out, and configures eth0 and the default route with them.
    pub fn dhcp(&self, dir: &std::path::Path) -> Option<(Ipv4Addr, Ipv4Addr)> {
        let script = dir.join("udhcpc.sh");
        if !script.exists() {
            std::fs::write(&script, UDHCPC_SCRIPT).unwrap();
            sh_ok(&format!("chmod +x {}", script.display()));
        }
        let out = dir.join(format!("{}.lease", self.ns));
        let _ = std::fs::remove_file(&out);
        let o = Command::new("ip")
            .args([
                "netns", "exec", &self.ns, "busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-f",
                "-t", "5", "-T", "1", "-A", "1", "-s",
            ])
            .arg(&script)
            .env("UDHCPC_OUT", &out)
            .output_within()
            .unwrap();
        if !o.status.success() {
            eprintln!(
                "udhcpc in {}: {}",
                self.ns,
                String::from_utf8_lossy(&o.stderr)
            );
            return None;
        }
        let text = std::fs::read_to_string(&out).ok()?;
        let mut it = text.split_whitespace();
        Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
    }

    /// Static configuration, where DHCP is not the point of the test.
    pub fn set_static(&self, addr: Ipv4Addr, subnet: Ipv4Net, gw: Ipv4Addr) {
        sh_ok(&format!(
            "ip -n {ns} addr flush dev eth0 && ip -n {ns} addr add {addr}/{p} dev eth0 && ip -n {ns} route replace default via {gw} dev eth0",
            ns = self.ns,
            p = subnet.prefix_len()
        ));
    }

    pub fn ping(&self, to: Ipv4Addr) -> bool {
        ping(&self.ns, to)
    }

    pub fn fetch(&self, to: SocketAddrV4) -> Option<String> {
        fetch_from(&self.ns, to)
    }

    pub fn connect(&self, to: SocketAddrV4) -> Option<TcpStream> {
        connect_from(&self.ns, to, Duration::from_millis(1200))
    }

    pub fn listen(&self, port: u16) -> TcpListener {
        listen_in(&self.ns, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port))
    }

    /// Starts a server that tells each client its address.
    pub fn serve_peer_echo(&self, port: u16) {
        peer_echo(self.listen(port));
    }
}

/// An "outside" host: a namespace reached from the root namespace through
/// a veth (the /30 of the lab's slot), with a route to the lab's public IPs
/// through the root namespace.
pub struct Outside {
    pub ns: String,
    pub root_if: String,
    pub root_ip: Ipv4Addr,
    pub ip: Ipv4Addr,
}

pub struct Lab {
    pub prefix: String,
    /// The lab's marker on the host (see socle-testkit): its prefix, its
    /// addresses, its files; dropped after the lab's own cleanup, its sweep
    /// removes whatever that missed, also when the test process dies.
    pub slot: socle_testkit::Slot,
    pub dir: std::path::PathBuf,
    pub driver: NetDriver,
    vms: Vec<String>,
    /// Root-namespace links deleted on Drop.
    pub root_links: Vec<String>,
    nets: Vec<String>,
    extra_ns: Vec<String>,
}

impl Lab {
    pub fn new() -> Lab {
        require_tools();
        let slot = socle_testkit::Slot::claim();
        let prefix = slot.net_prefix();
        let dir = slot.subdir("lab");
        let driver = NetDriver::new(dir.join("net"), &prefix).unwrap();
        Lab {
            prefix,
            slot,
            dir,
            driver,
            vms: Vec::new(),
            root_links: Vec::new(),
            nets: Vec::new(),
            extra_ns: Vec::new(),
        }
    }

    /// The lab's slot number: distinct among labs and clouds that run at once.
    pub fn index(&self) -> u32 {
        self.slot.index()
    }

    /// A public address of this lab (eight of them, from a range the host
    /// does not route).
    pub fn public_ip(&self, k: u32) -> Ipv4Addr {
        assert!(k < 8);
        self.slot.lab_public_ips().addr(k)
    }

    /// Uplink link addresses unique to this lab (`k`: which Net).
    pub fn uplink(&self, k: u8) -> UplinkSpec {
        let block = self.slot.lab_uplinks();
        UplinkSpec {
            root_ip: block.addr(4 * u32::from(k) + 1),
            net_ip: block.addr(4 * u32::from(k) + 2),
        }
    }

    /// Registers a Net id so Drop destroys it.
    pub fn net_id(&mut self, name: &str) -> String {
        let id = format!("vpc-{name}");
        self.nets.push(id.clone());
        id
    }

    pub fn apply(&self, spec: &NetSpec) -> ApplyReport {
        self.driver
            .apply(spec)
            .unwrap_or_else(|e| panic!("apply {}: {e}", spec.net_id))
    }

    /// A fake VM with MAC 02:aa:00:00:<lab>:<k>.
    pub fn vm(&mut self, k: u8) -> Vm {
        let ns = format!("{}vm{k}", self.prefix);
        let port_if = format!("{}p{k}", self.prefix);
        let mac = MacAddr([0x02, 0xaa, 0, 0, self.index() as u8, k]);
        let _ = sh(&format!(
            "ip netns del {ns} 2>/dev/null; ip link del {port_if} 2>/dev/null"
        ));
        sh_ok(&format!("ip netns add {ns}"));
        self.vms.push(ns.clone());
        self.root_links.push(port_if.clone());
        sh_ok(&format!(
            "ip link add {port_if} type veth peer name eth0 netns {ns} && \
             ip -n {ns} link set eth0 address {mac} && ip -n {ns} link set eth0 up && ip -n {ns} link set lo up && \
             ip netns exec {ns} sysctl -qw net.ipv6.conf.all.disable_ipv6=1"
        ));
        Vm { ns, port_if, mac }
    }

    /// The outside world for this lab, routing the lab's public IPs and
    /// uplinks to the root namespace.
    pub fn outside(&mut self) -> Outside {
        let ns = format!("{}out", self.prefix);
        let root_if = format!("{}o", self.prefix);
        let link = self.slot.outside_link();
        let (root_ip, ip) = (link.addr(1), link.addr(2));
        let (public, uplinks) = (self.slot.lab_public_ips(), self.slot.lab_uplinks());
        let _ = sh(&format!(
            "ip netns del {ns} 2>/dev/null; ip link del {root_if} 2>/dev/null"
        ));
        sh_ok(&format!("ip netns add {ns}"));
        self.extra_ns.push(ns.clone());
        self.root_links.push(root_if.clone());
        sh_ok(&format!(
            "ip link add {root_if} type veth peer name eth0 netns {ns} && \
             ip addr add {root_ip}/30 dev {root_if} && ip link set {root_if} up && \
             ip -n {ns} addr add {ip}/30 dev eth0 && ip -n {ns} link set eth0 up && ip -n {ns} link set lo up && \
             ip -n {ns} route add {public} via {root_ip} && \
             ip -n {ns} route add {uplinks} via {root_ip}"
        ));
        Outside {
            ns,
            root_if,
            root_ip,
            ip,
        }
    }

    /// A port of `vm` in `subnet_id` with these IPs and rules.
    pub fn port(
        &self,
        nic: &str,
        vm: &Vm,
        subnet_id: &str,
        ips: &[&str],
        inbound: Vec<Rule>,
        outbound: Vec<Rule>,
    ) -> PortSpec {
        PortSpec {
            nic_id: nic.to_string(),
            ifname: vm.port_if.clone(),
            mac: vm.mac,
            subnet_id: subnet_id.to_string(),
            private_ips: ips.iter().map(|s| ip(s)).collect(),
            inbound,
            outbound,
            source_dest_check: true,
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for net in &self.nets {
            if let Err(e) = self.driver.destroy(net) {
                eprintln!("cleanup: destroy {net}: {e}");
            }
        }
        for ns in self.vms.iter().chain(&self.extra_ns) {
            let _ = sh(&format!("ip netns del {ns} 2>/dev/null"));
        }
        for l in &self.root_links {
            let _ = sh(&format!("ip link del {l} 2>/dev/null"));
        }
    }
}

pub fn allow_all() -> Vec<Rule> {
    vec![Rule {
        protocol: Protocol::Any,
        ports: None,
        icmp: None,
        peers: vec![Ipv4Net::ANY],
    }]
}

pub fn icmp_from(peers: &[&str]) -> Rule {
    Rule {
        protocol: Protocol::Icmp,
        ports: None,
        icmp: None,
        peers: peers.iter().map(|p| n(p)).collect(),
    }
}

pub fn tcp_from(port: u16, peers: &[&str]) -> Rule {
    Rule {
        protocol: Protocol::Tcp,
        ports: Some((port, port)),
        icmp: None,
        peers: peers.iter().map(|p| n(p)).collect(),
    }
}

/// A one-subnet Net without uplink.
pub fn simple_net(net_id: &str, range: &str, subnet: &str, ports: Vec<PortSpec>) -> NetSpec {
    NetSpec {
        net_id: net_id.to_string(),
        ip_range: n(range),
        subnets: vec![SubnetSpec {
            subnet_id: "subnet-a".into(),
            ip_range: n(subnet),
            routes: vec![],
        }],
        ports,
        uplink: None,
        public_ips: vec![],
        nat_services: vec![],
    }
}

pub fn sa(ip_s: &str, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(ip(ip_s), port)
}

/// Serves a fixed text on every connection, then closes.
pub fn serve_text(listener: TcpListener, text: &'static str) {
    std::thread::spawn(move || {
        for c in listener.incoming() {
            let Ok(mut c) = c else { return };
            let _ = c.write_all(text.as_bytes());
        }
    });
}

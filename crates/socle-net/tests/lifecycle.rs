//! Lifecycle on the real kernel: destroy leaves nothing, apply converges
//! from broken states, list_nets finds leftovers, the metadata listener,
//! and taps (including one held open like QEMU holds it).

mod common;

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use socle_net::*;

/// A Net with two subnets, an uplink, a public IP and a NAT service.
fn full_net(lab: &Lab, net_id: &str, a: &Vm, b: &Vm) -> NetSpec {
    NetSpec {
        net_id: net_id.to_string(),
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
            lab.port(
                "eni-a",
                a,
                "subnet-a",
                &["10.0.1.10"],
                allow_all(),
                allow_all(),
            ),
            lab.port(
                "eni-b",
                b,
                "subnet-b",
                &["10.0.2.10"],
                allow_all(),
                allow_all(),
            ),
        ],
        uplink: Some(lab.uplink(0)),
        public_ips: vec![PublicIpMapping {
            public_ip: lab.public_ip(0),
            private_ip: ip("10.0.1.10"),
        }],
        nat_services: vec![NatServiceSpec {
            nat_id: "nat-1".into(),
            public_ip: lab.public_ip(1),
        }],
    }
}

/// PIDs of processes whose command line mentions `needle`.
fn pids_with(needle: &str) -> Vec<i32> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if let Ok(c) = std::fs::read(e.path().join("cmdline")) {
            if String::from_utf8_lossy(&c).contains(needle) {
                v.push(pid);
            }
        }
    }
    v
}

fn dir_is_empty(p: &Path) -> bool {
    std::fs::read_dir(p)
        .map(|mut d| d.next().is_none())
        .unwrap_or(true)
}

/// Everything works (leases, the way out, between subnets).
fn assert_net_works(lab: &Lab, a: &Vm, b: &Vm, web: std::net::SocketAddrV4) {
    assert_eq!(a.dhcp(lab.dir.as_path()).map(|l| l.0), Some(ip("10.0.1.10")));
    assert_eq!(b.dhcp(lab.dir.as_path()).map(|l| l.0), Some(ip("10.0.2.10")));
    assert!(a.ping(ip("10.0.2.10")), "between subnets");
    assert_eq!(
        a.fetch(web),
        Some(lab.public_ip(0).to_string()),
        "out with the public IP"
    );
    assert_eq!(
        b.fetch(web),
        Some(lab.public_ip(1).to_string()),
        "out through the NAT"
    );
}

/// destroy removes the namespace, the uplink veth (with the root routes),
/// the root table, dnsmasq and the state files, gives the port interfaces
/// back to the root namespace, and is idempotent — even while a metadata
/// listener still pins the namespace.
#[test]
fn destroy_leaves_nothing() {
    let mut lab = Lab::new();
    let net_id = lab.net_id("gone");
    let out = lab.outside();
    let (a, b) = (lab.vm(1), lab.vm(2));
    lab.apply(&full_net(&lab, &net_id, &a, &b));
    assert_net_works(
        &lab,
        &a,
        &b,
        std::net::SocketAddrV4::new(out.ip, 80).tap_serve(&out),
    );
    let listener = lab
        .driver
        .listen_tcp_in(&net_id, sa("169.254.169.254", 80))
        .unwrap();

    let ns = lab.driver.namespace(&net_id);
    let veth = lab.driver.uplink_interface(&net_id);
    let state = lab.dir.as_path().join("net");
    let conf_needle = format!("--conf-file={}/{net_id}/", state.display());
    assert!(ns_exists(&ns) && link_exists(None, &veth));
    assert_eq!(pids_with(&conf_needle).len(), 1, "one dnsmasq");
    assert_eq!(lab.driver.list_nets().unwrap(), vec![net_id.clone()]);

    lab.driver.destroy(&net_id).unwrap();
    assert!(!ns_exists(&ns), "namespace");
    assert!(
        !link_exists(None, &veth),
        "uplink veth, although a listener pins the namespace"
    );
    let routes = sh_ok("ip -4 route show");
    for p in [lab.public_ip(0), lab.public_ip(1)] {
        assert!(
            !routes.contains(&format!("{p} ")),
            "root route to {p}: {routes}"
        );
    }
    assert!(
        !sh_ok("nft list tables").contains(&lab.prefix),
        "root table"
    );
    assert!(pids_with(&conf_needle).is_empty(), "dnsmasq");
    assert!(
        dir_is_empty(&state),
        "state dir: {:?}",
        std::fs::read_dir(&state).unwrap().collect::<Vec<_>>()
    );
    for vm in [&a, &b] {
        let l = sh_ok(&format!("ip -d link show dev {}", vm.port_if));
        assert!(!l.contains("master"), "port {} released: {l}", vm.port_if);
    }
    assert!(lab.driver.list_nets().unwrap().is_empty());
    drop(listener);

    lab.driver.destroy(&net_id).expect("destroy is idempotent");
}

/// A destroy interrupted at its `net-half-destroyed` checkpoint (as by a
/// crash: dnsmasq, the uplink and the root table gone, the namespace and
/// state directory not yet) still shows in list_nets, so the next pass
/// finds it, and a second destroy finishes the job.
#[test]
fn destroy_interrupted_halfway_is_found_and_finished() {
    let mut lab = Lab::new();
    let net_id = lab.net_id("half");
    let (a, b) = (lab.vm(1), lab.vm(2));
    lab.apply(&full_net(&lab, &net_id, &a, &b));
    let (ns, veth) = (lab.driver.namespace(&net_id), lab.driver.uplink_interface(&net_id));
    let state = lab.dir.as_path().join("net");
    let conf_needle = format!("--conf-file={}/{net_id}/", state.display());
    assert_eq!(pids_with(&conf_needle).len(), 1, "one dnsmasq");

    let crashing = NetDriver::new(state.clone(), &lab.prefix)
        .unwrap()
        .with_checkpoint(|name| {
            if name == "net-half-destroyed" {
                panic!("crash at {name}");
            }
        });
    let crashed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| crashing.destroy(&net_id)));
    assert!(crashed.is_err(), "the checkpoint was not reached");
    assert!(ns_exists(&ns) && state.join(&net_id).exists(), "not yet removed");
    assert!(pids_with(&conf_needle).is_empty(), "dnsmasq stopped");
    assert!(!link_exists(None, &veth), "uplink removed");
    assert!(!sh_ok("nft list tables").contains(&lab.prefix), "root table removed");
    assert_eq!(lab.driver.list_nets().unwrap(), vec![net_id.clone()], "still found");

    lab.driver.destroy(&net_id).unwrap();
    assert!(!ns_exists(&ns), "namespace");
    assert!(dir_is_empty(&state), "state dir");
    assert!(lab.driver.list_nets().unwrap().is_empty());
}

trait Serve {
    fn tap_serve(self, out: &Outside) -> Self;
}
impl Serve for std::net::SocketAddrV4 {
    /// Starts the outside "web server" on this address and returns it.
    fn tap_serve(self, out: &Outside) -> Self {
        peer_echo(listen_in(&out.ns, self));
        self
    }
}

/// apply converges from broken states: pieces deleted by hand, dnsmasq
/// killed, a port pulled out, rules and routes gone, a stale configuration.
#[test]
fn apply_converges_from_partial_state() {
    let mut lab = Lab::new();
    let net_id = lab.net_id("heal");
    let out = lab.outside();
    let web = std::net::SocketAddrV4::new(out.ip, 80).tap_serve(&out);
    let (a, b) = (lab.vm(1), lab.vm(2));
    let spec = full_net(&lab, &net_id, &a, &b);
    let ns = lab.driver.namespace(&net_id);
    let veth = lab.driver.uplink_interface(&net_id);
    let state = lab.dir.as_path().join("net").join(&net_id);
    let conf_needle = format!("--conf-file={}/", state.display());

    // A previous apply that died right after creating the namespace, with
    // a stale dnsmasq configuration in the state directory.
    sh_ok(&format!("ip netns add {ns}"));
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("dnsmasq-00000000.conf"), "stale").unwrap();
    let report = lab.apply(&spec);
    assert!(report.missing_ports.is_empty());
    assert!(
        !state.join("dnsmasq-00000000.conf").exists(),
        "stale configuration removed"
    );
    assert_net_works(&lab, &a, &b, web);

    // Break nearly everything.
    let bridge_a = sh_ok(&format!("ip -n {ns} -o link show type bridge"))
        .lines()
        .next()
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_string())
        .unwrap();
    for pid in pids_with(&conf_needle) {
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    sh_ok(&format!("ip -n {ns} link del {bridge_a}"));
    sh_ok(&format!("ip link del {veth}"));
    sh_ok(&format!("ip netns exec {ns} nft delete table bridge socle"));
    sh_ok(&format!(
        "nft delete table inet {}",
        lab.driver.root_table(&net_id)
    ));
    sh_ok(&format!("ip -n {ns} rule del pref 1000"));
    sh_ok(&format!("ip -n {ns} route flush table 1001"));
    sh_ok(&format!("ip -n {ns} link set {} netns 1", b.port_if));
    // Let the kernel reap the killed dnsmasq.
    let t = Instant::now();
    while !pids_with(&conf_needle).is_empty() && t.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(a.fetch(web).is_none(), "really broken");

    let t = Instant::now();
    lab.apply(&spec);
    eprintln!("converging apply took {:?}", t.elapsed());
    assert_eq!(pids_with(&conf_needle).len(), 1, "dnsmasq restarted");
    assert_net_works(&lab, &a, &b, web);

    // A second apply of the same spec changes nothing and keeps dnsmasq.
    let pid = pids_with(&conf_needle);
    lab.apply(&spec);
    assert_eq!(pids_with(&conf_needle), pid, "unchanged spec: same dnsmasq");
    assert_net_works(&lab, &a, &b, web);

    // A changed spec (a port removed) restarts dnsmasq with the new
    // configuration and releases the port's interface.
    let mut smaller = spec.clone();
    smaller.ports.pop();
    let report = lab.apply(&smaller);
    assert_eq!(report.released, vec![b.port_if.clone()]);
    let now = pids_with(&conf_needle);
    assert_eq!(now.len(), 1);
    assert_ne!(now, pid);
    assert!(
        link_exists(None, &b.port_if),
        "released to the root namespace"
    );
}

/// list_nets reports every Net with anything left on the host under the
/// prefix (namespace, root table or state directory), and destroy clears
/// each kind of leftover.
#[test]
fn list_nets_finds_leftovers() {
    let mut lab = Lab::new();
    let (real, orphan_ns, orphan_table, orphan_dir) = (
        lab.net_id("real"),
        lab.net_id("orph-ns"),
        lab.net_id("orph-tb"),
        lab.net_id("orph-dir"),
    );
    let a = lab.vm(1);
    let port = lab.port("eni-a", &a, "subnet-a", &["10.0.1.10"], vec![], vec![]);
    lab.apply(&simple_net(&real, "10.0.0.0/16", "10.0.1.0/24", vec![port]));
    sh_ok(&format!(
        "ip netns add {}",
        lab.driver.namespace(&orphan_ns)
    ));
    sh_ok(&format!(
        "nft add table inet {}",
        lab.driver.root_table(&orphan_table)
    ));
    std::fs::create_dir_all(lab.dir.as_path().join("net").join(&orphan_dir)).unwrap();
    // Something of another driver (another prefix) is not ours.
    let other = NetDriver::new(lab.dir.as_path().join("other"), "zz").unwrap();
    assert!(!other
        .list_nets()
        .unwrap()
        .iter()
        .any(|n| n.contains("orph")));

    let mut want = vec![
        real.clone(),
        orphan_ns.clone(),
        orphan_table.clone(),
        orphan_dir.clone(),
    ];
    want.sort();
    assert_eq!(lab.driver.list_nets().unwrap(), want);
    for id in &want {
        lab.driver.destroy(id).unwrap();
    }
    assert!(lab.driver.list_nets().unwrap().is_empty());
}

/// A guest fetches an HTTP answer from 169.254.169.254:80, served by a
/// thread holding the listener from listen_tcp_in, which sees the guest's
/// private IP as the source — even for a port without any outbound rule.
#[test]
fn metadata_listener_in_the_net() {
    let mut lab = Lab::new();
    let net_id = lab.net_id("meta");
    let a = lab.vm(1);
    let port = lab.port("eni-a", &a, "subnet-a", &["10.0.1.10"], vec![], vec![]);
    lab.apply(&simple_net(
        &net_id,
        "10.0.0.0/16",
        "10.0.1.0/24",
        vec![port],
    ));
    assert!(matches!(
        lab.driver
            .listen_tcp_in("vpc-nosuch", sa("169.254.169.254", 80)),
        Err(NetError::NetNotFound(_))
    ));
    let listener = lab
        .driver
        .listen_tcp_in(&net_id, sa("169.254.169.254", 80))
        .unwrap();
    let server = std::thread::spawn(move || {
        let (mut c, peer) = listener.accept().unwrap();
        let mut req = [0u8; 1024];
        let n = c.read(&mut req).unwrap();
        let first = String::from_utf8_lossy(&req[..n])
            .lines()
            .next()
            .unwrap_or("")
            .to_string();
        let body = format!("{}\n", peer.ip());
        let _ = write!(
            c,
            "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        first
    });
    assert_eq!(a.dhcp(lab.dir.as_path()).map(|l| l.0), Some(ip("10.0.1.10")));
    let got = sh_ok(&format!(
        // (busybox 1.35 wget crashes with -T: coreutils timeout instead)
        "timeout 5 ip netns exec {} busybox wget -q -O - http://169.254.169.254/latest/meta-data/",
        a.ns
    ));
    assert_eq!(got.trim(), "10.0.1.10");
    assert_eq!(server.join().unwrap(), "GET /latest/meta-data/ HTTP/1.1");
}

/// Opens a tap like QEMU does (TUNSETIFF on /dev/net/tun).
fn open_tap(name: &str) -> OwnedFd {
    const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
    let fd = unsafe { libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR | libc::O_NONBLOCK) };
    assert!(
        fd >= 0,
        "open /dev/net/tun: {}",
        std::io::Error::last_os_error()
    );
    let mut ifr = [0u8; 40];
    ifr[..name.len()].copy_from_slice(name.as_bytes());
    let flags: u16 = 0x0002 | 0x1000; // IFF_TAP | IFF_NO_PI
    ifr[16..18].copy_from_slice(&flags.to_ne_bytes());
    let r = unsafe { libc::ioctl(fd, TUNSETIFF as _, ifr.as_mut_ptr()) };
    assert_eq!(r, 0, "TUNSETIFF: {}", std::io::Error::last_os_error());
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn arp_request(mac: MacAddr, sender: std::net::Ipv4Addr, target: std::net::Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&mac.0);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&mac.0);
    f.extend_from_slice(&sender.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target.octets());
    f
}

/// Waits up to `timeout` for an ARP reply from `from` on the tap.
fn arp_reply_seen(tap: &mut std::fs::File, from: std::net::Ipv4Addr, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline {
        let mut pfd = libc::pollfd {
            fd: tap.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        unsafe { libc::poll(&mut pfd, 1, 50) };
        while let Ok(n) = tap.read(&mut buf) {
            let f = &buf[..n];
            if n >= 42
                && f[12..14] == [0x08, 0x06]
                && f[20..22] == [0, 2]
                && f[28..32] == from.octets()
            {
                return true;
            }
        }
    }
    false
}

/// prepare_tap makes a persistent root-namespace tap; a tap held open
/// (as by QEMU) is moved into the Net by apply and its file descriptor
/// keeps working there (ARP with the gateway through the fd, spoofed ARP
/// unanswered); prepare_tap after a VM death pulls the tap out of the Net;
/// remove_tap deletes it wherever it is.
#[test]
fn taps_prepare_move_and_remove() {
    let mut lab = Lab::new();
    let net_id = lab.net_id("tap");
    let tap = format!("{}tap", lab.prefix);
    let ns = lab.driver.namespace(&net_id);
    lab.driver.prepare_tap(&tap).unwrap();
    lab.driver
        .prepare_tap(&tap)
        .expect("prepare_tap is idempotent");
    let info = sh_ok(&format!("ip -d link show dev {tap}"));
    assert!(
        info.contains("tap") && info.contains("persist") && !info.contains("master"),
        "{info}"
    );
    assert!(matches!(
        lab.driver.prepare_tap("lo"),
        Err(NetError::InvalidInterfaceName(_))
    ));

    let mut fd = std::fs::File::from(open_tap(&tap));
    let mac: MacAddr = "02:aa:00:00:00:77".parse().unwrap();
    let spec = simple_net(
        &net_id,
        "10.0.0.0/16",
        "10.0.1.0/24",
        vec![PortSpec {
            nic_id: "eni-t".into(),
            ifname: tap.clone(),
            mac,
            subnet_id: "subnet-a".into(),
            private_ips: vec![ip("10.0.1.10")],
            inbound: vec![],
            outbound: vec![],
            source_dest_check: true,
        }],
    );
    let report = lab.apply(&spec);
    assert!(report.missing_ports.is_empty());
    assert!(
        !link_exists(None, &tap) && link_exists(Some(&ns), &tap),
        "moved into the Net"
    );

    fd.write_all(&arp_request(mac, ip("10.0.1.10"), ip("10.0.1.1")))
        .unwrap();
    assert!(
        arp_reply_seen(&mut fd, ip("10.0.1.1"), Duration::from_secs(2)),
        "gateway answers through the moved tap"
    );
    fd.write_all(&arp_request(mac, ip("10.0.1.66"), ip("10.0.1.1")))
        .unwrap();
    assert!(
        !arp_reply_seen(&mut fd, ip("10.0.1.1"), Duration::from_millis(500)),
        "spoofed ARP sender"
    );
    drop(fd);

    // The VM died; the agent prepares the tap for a new QEMU.
    lab.driver.prepare_tap(&tap).unwrap();
    assert!(link_exists(None, &tap) && !link_exists(Some(&ns), &tap));
    // A port whose interface is nowhere is reported, not an error.
    lab.driver.remove_tap(&tap).unwrap();
    let report = lab.apply(&spec);
    assert_eq!(report.missing_ports, vec!["eni-t".to_string()]);

    // remove_tap works wherever the tap is, and twice.
    lab.driver.prepare_tap(&tap).unwrap();
    lab.apply(&spec);
    assert!(link_exists(Some(&ns), &tap));
    lab.driver.remove_tap(&tap).unwrap();
    lab.driver.remove_tap(&tap).unwrap();
    assert!(!link_exists(None, &tap) && !link_exists(Some(&ns), &tap));
}

/// The root end of the uplink is named after a hash of the Net id; an
/// interface of that name owned by another Net (a hash clash) makes apply
/// fail with NameClash, and neither apply nor destroy touches it.
#[test]
fn uplink_name_clash_is_an_error_not_a_deletion() {
    let mut lab = Lab::new();
    let net_id = lab.net_id("clash");
    let veth = lab.driver.uplink_interface(&net_id);
    lab.root_links.push(veth.clone());
    // (this kernel has no dummy interfaces: a veth pair stands in)
    sh_ok(&format!(
        "ip link add {veth} type veth peer name {}cp && ip link set {veth} alias socle-net:vpc-other",
        lab.prefix
    ));
    let mut spec = simple_net(&net_id, "10.0.0.0/16", "10.0.1.0/24", vec![]);
    spec.uplink = Some(lab.uplink(0));
    let err = lab.driver.apply(&spec).unwrap_err();
    assert!(
        matches!(err, NetError::NameClash { ref owner, .. } if owner == "socle-net:vpc-other"),
        "{err}"
    );
    spec.uplink = None;
    lab.apply(&spec);
    lab.driver.destroy(&net_id).unwrap();
    assert!(
        link_exists(None, &veth),
        "another Net's interface is left alone"
    );
    sh_ok(&format!("ip link del {veth}"));
}

//! Isolation between Nets, the way out (public IPs, NAT services), routing
//! between subnets and to a next-hop VM, on the real kernel.

mod common;

use common::*;
use socle_net::*;

fn one_subnet_net(
    lab: &Lab,
    net_id: &str,
    k: u8,
    vms: &[&Vm],
    public: std::net::Ipv4Addr,
) -> NetSpec {
    let ips = ["10.0.1.10", "10.0.1.20"];
    let ports = vms
        .iter()
        .zip(ips)
        .enumerate()
        .map(|(i, (vm, ip_s))| {
            lab.port(
                &format!("eni-{i}"),
                vm,
                "subnet-a",
                &[ip_s],
                allow_all(),
                allow_all(),
            )
        })
        .collect();
    let mut spec = simple_net(net_id, "10.0.0.0/16", "10.0.1.0/24", ports);
    spec.subnets[0].routes = vec![Route {
        dest: Ipv4Net::ANY,
        target: RouteTarget::Internet,
    }];
    spec.uplink = Some(lab.uplink(k));
    spec.public_ips = vec![PublicIpMapping {
        public_ip: public,
        private_ip: ip("10.0.1.10"),
    }];
    spec
}

/// Two Nets with the same range and the same addresses work side by side
/// and nothing crosses between them: each VM reaches its own neighbour,
/// not the other Net's uplink or the host, and a Net reaches the other only
/// the way the Internet would (through the public IP, seen with its own
/// public IP as source).
#[test]
fn two_nets_same_range_are_isolated() {
    let mut lab = Lab::new();
    let (id_a, id_b) = (lab.net_id("iso-a"), lab.net_id("iso-b"));
    let (a1, a2, b1, b2) = (lab.vm(1), lab.vm(2), lab.vm(3), lab.vm(4));
    let (pub_a, pub_b) = (lab.public_ip(0), lab.public_ip(1));
    let spec_a = one_subnet_net(&lab, &id_a, 0, &[&a1, &a2], pub_a);
    let spec_b = one_subnet_net(&lab, &id_b, 1, &[&b1, &b2], pub_b);
    lab.apply(&spec_a);
    lab.apply(&spec_b);

    for (vm, want) in [
        (&a1, "10.0.1.10"),
        (&a2, "10.0.1.20"),
        (&b1, "10.0.1.10"),
        (&b2, "10.0.1.20"),
    ] {
        assert_eq!(
            vm.dhcp(lab.dir.as_path()).map(|l| l.0),
            Some(ip(want)),
            "lease of {}",
            vm.ns
        );
    }
    serve_text(a1.listen(9000), "in net a");
    serve_text(b1.listen(9000), "in net b");
    assert_eq!(a2.fetch(sa("10.0.1.10", 9000)).as_deref(), Some("in net a"));
    assert_eq!(b2.fetch(sa("10.0.1.10", 9000)).as_deref(), Some("in net b"));
    assert!(a2.ping(ip("10.0.1.10")) && b2.ping(ip("10.0.1.10")));

    // The other Net's uplink, both ends, and the host's end of our own.
    let (up_a, up_b) = (lab.uplink(0), lab.uplink(1));
    for target in [up_b.net_ip, up_b.root_ip, up_a.root_ip] {
        assert!(!a1.ping(target), "a1 must not reach {target}");
        assert_eq!(a1.fetch(std::net::SocketAddrV4::new(target, 9000)), None);
    }

    // Through the public IPs, like over the Internet: b1 sees a1's public IP.
    b1.serve_peer_echo(9001);
    assert_eq!(
        a1.fetch(std::net::SocketAddrV4::new(pub_b, 9001)),
        Some(pub_a.to_string())
    );
}

/// The way out: 1:1 public IPs both ways (the port is seen with its public
/// IP; the outside reaches it through it), no way out without a public IP,
/// a private subnet out through a NAT service only (seen as the NAT's IP,
/// and the NAT's IP leads nowhere inbound), a subnet without a route has no
/// way out, and the root namespace drops anything else leaving the Net.
/// Removing the uplink removes the way out and the root-namespace pieces.
#[test]
fn public_ips_nat_and_no_way_out() {
    let mut lab = Lab::new();
    let net_id = lab.net_id("out");
    let out = lab.outside();
    let (p1, p2, p3, p4) = (lab.vm(1), lab.vm(2), lab.vm(3), lab.vm(4));
    let (pub1, pub_nat) = (lab.public_ip(0), lab.public_ip(1));
    let spec = NetSpec {
        net_id: net_id.clone(),
        ip_range: n("10.0.0.0/16"),
        subnets: vec![
            SubnetSpec {
                subnet_id: "subnet-pub".into(),
                ip_range: n("10.0.1.0/24"),
                routes: vec![Route {
                    dest: Ipv4Net::ANY,
                    target: RouteTarget::Internet,
                }],
            },
            SubnetSpec {
                subnet_id: "subnet-priv".into(),
                ip_range: n("10.0.2.0/24"),
                routes: vec![Route {
                    dest: Ipv4Net::ANY,
                    target: RouteTarget::Nat {
                        nat_id: "nat-1".into(),
                    },
                }],
            },
            SubnetSpec {
                subnet_id: "subnet-iso".into(),
                ip_range: n("10.0.3.0/24"),
                routes: vec![],
            },
        ],
        ports: vec![
            lab.port(
                "eni-1",
                &p1,
                "subnet-pub",
                &["10.0.1.10"],
                allow_all(),
                allow_all(),
            ),
            lab.port(
                "eni-2",
                &p2,
                "subnet-pub",
                &["10.0.1.20"],
                allow_all(),
                allow_all(),
            ),
            lab.port(
                "eni-3",
                &p3,
                "subnet-priv",
                &["10.0.2.10"],
                allow_all(),
                allow_all(),
            ),
            lab.port(
                "eni-4",
                &p4,
                "subnet-iso",
                &["10.0.3.10"],
                allow_all(),
                allow_all(),
            ),
        ],
        uplink: Some(lab.uplink(0)),
        public_ips: vec![PublicIpMapping {
            public_ip: pub1,
            private_ip: ip("10.0.1.10"),
        }],
        nat_services: vec![NatServiceSpec {
            nat_id: "nat-1".into(),
            public_ip: pub_nat,
        }],
    };
    lab.apply(&spec);
    for vm in [&p1, &p2, &p3, &p4] {
        assert!(vm.dhcp(lab.dir.as_path()).is_some(), "lease of {}", vm.ns);
    }
    peer_echo(listen_in(&out.ns, sa("0.0.0.0", 80)));
    let web = std::net::SocketAddrV4::new(out.ip, 80);

    assert_eq!(
        p1.fetch(web),
        Some(pub1.to_string()),
        "1:1 NAT: seen with its public IP"
    );
    assert_eq!(p2.fetch(web), None, "no public IP: no way out");
    assert_eq!(
        p3.fetch(web),
        Some(pub_nat.to_string()),
        "through the NAT service"
    );
    assert_eq!(p4.fetch(web), None, "no route: no way out");

    // Inbound through the public IP, source preserved; nothing through the NAT's IP.
    p1.serve_peer_echo(9000);
    p3.serve_peer_echo(9000);
    assert_eq!(
        fetch_from(&out.ns, std::net::SocketAddrV4::new(pub1, 9000)),
        Some(out.ip.to_string())
    );
    assert_eq!(
        fetch_from(&out.ns, std::net::SocketAddrV4::new(pub_nat, 9000)),
        None
    );
    // Nothing reaches the uplink's Net side from outside either.
    assert_eq!(
        fetch_from(
            &out.ns,
            std::net::SocketAddrV4::new(lab.uplink(0).net_ip, 9000)
        ),
        None
    );

    // The root namespace's table drops what leaves the Net with a source
    // that is not one of its public IPs (here: the Net namespace itself,
    // as if the tenant had taken it over).
    let ns = lab.driver.namespace(&net_id);
    assert_eq!(
        fetch_from(&ns, web),
        None,
        "non-public source leaving the Net"
    );
    let veth = lab.driver.uplink_interface(&net_id);
    let routes = sh_ok(&format!("ip -4 route show dev {veth}"));
    assert!(
        routes.contains(&format!("{pub1} via")) && routes.contains(&format!("{pub_nat} via")),
        "{routes}"
    );

    // Unlink the internet gateway: no way out any more, and the root
    // namespace keeps nothing of the Net.
    let mut no_uplink = spec.clone();
    no_uplink.uplink = None;
    lab.apply(&no_uplink);
    assert_eq!(p1.fetch(web), None);
    assert_eq!(p3.fetch(web), None);
    assert!(!link_exists(None, &veth));
    assert!(!sh_ok("ip -4 route show").contains(&pub1.to_string()));
    assert!(!sh_ok("nft list tables").contains(&lab.driver.root_table(&net_id)));

    // And relinking brings everything back.
    lab.apply(&spec);
    assert_eq!(p1.fetch(web), Some(pub1.to_string()));
    assert_eq!(p3.fetch(web), Some(pub_nat.to_string()));
}

/// Subnets of one Net reach each other through their gateways, and a route
/// can send a destination outside the Net to a VM acting as a router (with
/// its source/dest check off; with it on, the router gets nothing).
#[test]
fn subnets_route_to_each_other_and_to_a_next_hop_vm() {
    let mut lab = Lab::new();
    let net_id = lab.net_id("rt");
    let (a, b, r) = (lab.vm(1), lab.vm(2), lab.vm(3));
    let mut router = lab.port(
        "eni-r",
        &r,
        "subnet-b",
        &["10.0.2.30"],
        allow_all(),
        allow_all(),
    );
    router.source_dest_check = false;
    let mut spec = NetSpec {
        net_id: net_id.clone(),
        ip_range: n("10.0.0.0/16"),
        subnets: vec![
            SubnetSpec {
                subnet_id: "subnet-a".into(),
                ip_range: n("10.0.1.0/24"),
                routes: vec![Route {
                    dest: n("192.168.50.0/24"),
                    target: RouteTarget::Address {
                        ip: ip("10.0.2.30"),
                    },
                }],
            },
            SubnetSpec {
                subnet_id: "subnet-b".into(),
                ip_range: n("10.0.2.0/24"),
                routes: vec![],
            },
        ],
        ports: vec![
            lab.port(
                "eni-a",
                &a,
                "subnet-a",
                &["10.0.1.10"],
                allow_all(),
                allow_all(),
            ),
            lab.port(
                "eni-b",
                &b,
                "subnet-b",
                &["10.0.2.20"],
                vec![icmp_from(&["10.0.1.0/24"])],
                allow_all(),
            ),
            router,
        ],
        uplink: None,
        public_ips: vec![],
        nat_services: vec![],
    };
    lab.apply(&spec);
    assert_eq!(
        a.dhcp(lab.dir.as_path()),
        Some((ip("10.0.1.10"), ip("10.0.1.1")))
    );
    assert_eq!(
        b.dhcp(lab.dir.as_path()),
        Some((ip("10.0.2.20"), ip("10.0.2.1")))
    );
    assert!(r.dhcp(lab.dir.as_path()).is_some());

    assert!(a.ping(ip("10.0.2.20")), "subnet a -> subnet b");
    a.serve_peer_echo(9000);
    assert_eq!(
        b.fetch(sa("10.0.1.10", 9000)).as_deref(),
        Some("10.0.2.20"),
        "b -> a, routed, source kept"
    );
    assert!(!a.ping(ip("10.0.2.99")), "an unused address of the Net");

    // The router VM owns 192.168.50.1 and serves there.
    // Like any router VM behind ARP anti-spoofing, it announces only its
    // interface's own address in ARP (Linux's default arp_announce=0 would
    // use 192.168.50.1 as ARP sender for its replies, which is dropped).
    sh_ok(&format!("ip -n {} addr add 192.168.50.1/32 dev lo", r.ns));
    sh_ok(&format!(
        "ip netns exec {} sysctl -qw net.ipv4.conf.all.arp_announce=2",
        r.ns
    ));
    sh_ok(&format!("ip -n {} neigh flush dev eth0", r.ns));
    r.serve_peer_echo(9100);
    assert_eq!(
        a.fetch(sa("192.168.50.1", 9100)).as_deref(),
        Some("10.0.1.10"),
        "via the next hop"
    );
    assert_eq!(
        b.fetch(sa("192.168.50.1", 9100)),
        None,
        "subnet b has no such route"
    );

    // With the check on, the router may neither receive nor answer for
    // addresses that are not its own.
    spec.ports[2].source_dest_check = true;
    lab.apply(&spec);
    assert_eq!(a.fetch(sa("192.168.50.1", 9100)), None);
}

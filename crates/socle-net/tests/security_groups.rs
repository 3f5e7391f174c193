//! Security groups, DHCP and anti-spoofing inside one subnet, on the real
//! kernel (fake VMs are network namespaces).

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::*;
use socle_net::{IcmpMatch, Rule};

/// DHCP gives each port exactly its address; ICMP and TCP pass only where
/// a rule allows them; peers lists (a security group resolved to member
/// IPs) admit members and no one else.
#[test]
fn dhcp_icmp_tcp_and_peer_lists() {
    let mut lab = Lab::new();
    let net_id = lab.net_id("sg");
    let (a, b, c) = (lab.vm(1), lab.vm(2), lab.vm(3));
    // a: ICMP from everyone in the subnet, TCP 8080 only from b (the
    //    "security group" {b}); b and c: nothing inbound. All may send.
    let ports = vec![
        lab.port(
            "eni-a",
            &a,
            "subnet-a",
            &["10.0.1.10"],
            vec![
                icmp_from(&["10.0.1.0/24"]),
                tcp_from(8080, &["10.0.1.20/32"]),
            ],
            allow_all(),
        ),
        lab.port("eni-b", &b, "subnet-a", &["10.0.1.20"], vec![], allow_all()),
        lab.port("eni-c", &c, "subnet-a", &["10.0.1.30"], vec![], allow_all()),
    ];
    let spec = simple_net(&net_id, "10.0.0.0/16", "10.0.1.0/24", ports);
    let report = lab.apply(&spec);
    assert!(report.missing_ports.is_empty(), "{report:?}");

    for (vm, want) in [(&a, "10.0.1.10"), (&b, "10.0.1.20"), (&c, "10.0.1.30")] {
        let got = vm.dhcp(lab.dir.as_path()).expect("DHCP lease");
        assert_eq!(got, (ip(want), ip("10.0.1.1")), "lease of {}", vm.ns);
    }

    // ICMP: b and c may ping a; nobody may ping b or c.
    assert!(b.ping(ip("10.0.1.10")), "b -> a allowed by a's ICMP rule");
    assert!(c.ping(ip("10.0.1.10")), "c -> a allowed by a's ICMP rule");
    assert!(!a.ping(ip("10.0.1.20")), "a -> b: b has no inbound rule");
    assert!(!c.ping(ip("10.0.1.20")), "c -> b: b has no inbound rule");

    // TCP 8080 on a: b is in the peer list, c is not; port 8081 is closed to all.
    a.serve_peer_echo(8080);
    a.serve_peer_echo(8081);
    assert_eq!(b.fetch(sa("10.0.1.10", 8080)).as_deref(), Some("10.0.1.20"));
    assert_eq!(
        c.fetch(sa("10.0.1.10", 8080)),
        None,
        "c is not in the peer list"
    );
    assert_eq!(b.fetch(sa("10.0.1.10", 8081)), None, "no rule for 8081");

    // The gateway answers pings from ports whose outbound rules allow it.
    assert!(a.ping(ip("10.0.1.1")));
}

/// Changing rules applies at once (well within a second) and a TCP flow
/// that was allowed keeps working across the change, even when the change
/// removes the rule that allowed it (conntrack survives the atomic
/// replacement).
#[test]
fn rule_change_is_atomic_and_keeps_established_flows() {
    let mut lab = Lab::new();
    let net_id = lab.net_id("chg");
    let (a, b) = (lab.vm(1), lab.vm(2));
    let port_a = |inbound| {
        lab.port(
            "eni-a",
            &a,
            "subnet-a",
            &["10.0.1.10"],
            inbound,
            allow_all(),
        )
    };
    let port_b = lab.port("eni-b", &b, "subnet-a", &["10.0.1.20"], vec![], allow_all());
    let mut spec = simple_net(
        &net_id,
        "10.0.0.0/16",
        "10.0.1.0/24",
        vec![
            port_a(vec![tcp_from(7000, &["10.0.1.20/32"])]),
            port_b.clone(),
        ],
    );
    lab.apply(&spec);
    a.set_static(ip("10.0.1.10"), n("10.0.1.0/24"), ip("10.0.1.1"));
    b.set_static(ip("10.0.1.20"), n("10.0.1.0/24"), ip("10.0.1.1"));

    // An echo server on a (port 7000 allowed, 7001 not yet).
    for port in [7000u16, 7001] {
        let l = a.listen(port);
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(mut conn) = conn else { return };
                std::thread::spawn(move || {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = conn.read(&mut buf) {
                        if n == 0 || conn.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
    }
    let mut flow = b.connect(sa("10.0.1.10", 7000)).expect("7000 allowed");
    flow.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let echo = |s: &mut std::net::TcpStream, msg: &[u8]| -> bool {
        let mut buf = vec![0u8; msg.len()];
        s.write_all(msg).is_ok() && s.read_exact(&mut buf).is_ok() && buf == msg
    };
    assert!(echo(&mut flow, b"before"));
    assert!(
        b.connect(sa("10.0.1.10", 7001)).is_none(),
        "7001 not allowed yet"
    );

    // Swap the rule: 7001 allowed, 7000 no longer.
    spec.ports[0] = port_a(vec![tcp_from(7001, &["10.0.1.20/32"])]);
    let t = Instant::now();
    lab.apply(&spec);
    let took = t.elapsed();
    assert!(took < Duration::from_secs(1), "apply took {took:?}");

    assert!(
        echo(&mut flow, b"after"),
        "the established flow survives the change"
    );
    assert!(
        b.connect(sa("10.0.1.10", 7001)).is_some(),
        "new rule effective at once"
    );
    assert!(
        b.connect(sa("10.0.1.10", 7000)).is_none(),
        "old rule gone for new flows"
    );
    assert!(echo(&mut flow, b"still"), "and the old flow still works");
}

/// A fake VM that changes its IP or its MAC can send nothing anywhere:
/// not to another VM, not to the gateway, not to the metadata service.
#[test]
fn anti_spoofing() {
    let mut lab = Lab::new();
    let net_id = lab.net_id("spoof");
    let (a, b) = (lab.vm(1), lab.vm(2));
    let ports = vec![
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
            "subnet-a",
            &["10.0.1.20"],
            allow_all(),
            allow_all(),
        ),
    ];
    lab.apply(&simple_net(&net_id, "10.0.0.0/16", "10.0.1.0/24", ports));
    let meta = lab
        .driver
        .listen_tcp_in(&net_id, sa("169.254.169.254", 80))
        .unwrap();
    peer_echo(meta);
    a.set_static(ip("10.0.1.10"), n("10.0.1.0/24"), ip("10.0.1.1"));
    b.set_static(ip("10.0.1.20"), n("10.0.1.0/24"), ip("10.0.1.1"));
    b.serve_peer_echo(9000);

    // Baseline: everything works with the real identity.
    assert!(a.ping(ip("10.0.1.20")));
    assert!(a.ping(ip("10.0.1.1")));
    assert_eq!(a.fetch(sa("10.0.1.20", 9000)).as_deref(), Some("10.0.1.10"));
    assert_eq!(
        a.fetch(sa("169.254.169.254", 80)).as_deref(),
        Some("10.0.1.10")
    );

    // Another IP (b's neighbour .99, not a's): nothing gets through.
    a.set_static(ip("10.0.1.99"), n("10.0.1.0/24"), ip("10.0.1.1"));
    sh_ok(&format!("ip -n {} neigh flush dev eth0", a.ns));
    assert!(!a.ping(ip("10.0.1.20")), "spoofed IP -> VM");
    assert!(!a.ping(ip("10.0.1.1")), "spoofed IP -> gateway");
    assert_eq!(a.fetch(sa("10.0.1.20", 9000)), None);
    assert_eq!(
        a.fetch(sa("169.254.169.254", 80)),
        None,
        "spoofed IP -> metadata"
    );
    // Taking b's address is not better (and b is unharmed).
    a.set_static(ip("10.0.1.20"), n("10.0.1.0/24"), ip("10.0.1.1"));
    assert!(!a.ping(ip("10.0.1.1")), "stolen IP -> gateway");
    assert_eq!(
        a.fetch(sa("169.254.169.254", 80)),
        None,
        "stolen IP -> metadata"
    );
    assert!(b.ping(ip("10.0.1.1")));

    // Back to its IP but with another MAC: nothing either.
    a.set_static(ip("10.0.1.10"), n("10.0.1.0/24"), ip("10.0.1.1"));
    sh_ok(&format!(
        "ip -n {} link set eth0 address 02:bb:00:00:00:01",
        a.ns
    ));
    sh_ok(&format!("ip -n {} neigh flush dev eth0", a.ns));
    assert!(!a.ping(ip("10.0.1.20")), "spoofed MAC -> VM");
    assert!(!a.ping(ip("10.0.1.1")), "spoofed MAC -> gateway");
    assert_eq!(
        a.fetch(sa("169.254.169.254", 80)),
        None,
        "spoofed MAC -> metadata"
    );
    assert!(
        a.dhcp(lab.dir.as_path()).is_none(),
        "no lease for an unknown MAC"
    );

    // Restoring the identity restores the service.
    sh_ok(&format!("ip -n {} link set eth0 address {}", a.ns, a.mac));
    sh_ok(&format!("ip -n {} neigh flush dev eth0", a.ns));
    a.set_static(ip("10.0.1.10"), n("10.0.1.0/24"), ip("10.0.1.1"));
    assert!(a.ping(ip("10.0.1.20")));
    assert_eq!(
        a.fetch(sa("169.254.169.254", 80)).as_deref(),
        Some("10.0.1.10")
    );
}

/// An ICMP rule allows its type (and code, when given) only: echo requests
/// (type 8, code 0) pass a rule for type 8 or for 8/0, not one for another
/// type or another code.
#[test]
fn icmp_rules_match_their_type_and_code() {
    let mut lab = Lab::new();
    let net_id = lab.net_id("icmp");
    let (a, b) = (lab.vm(1), lab.vm(2));
    let with_rule = |lab: &Lab, icmp: Option<IcmpMatch>| {
        let rule = Rule { icmp, ..icmp_from(&["10.0.1.0/24"]) };
        let ports = vec![
            lab.port("eni-a", &a, "subnet-a", &["10.0.1.10"], vec![rule], allow_all()),
            lab.port("eni-b", &b, "subnet-a", &["10.0.1.20"], vec![], allow_all()),
        ];
        simple_net(&net_id, "10.0.0.0/16", "10.0.1.0/24", ports)
    };
    for (icmp, passes) in [
        (Some(IcmpMatch { kind: 13, code: None }), false),
        (Some(IcmpMatch { kind: 8, code: None }), true),
        (Some(IcmpMatch { kind: 8, code: Some(1) }), false),
        (Some(IcmpMatch { kind: 8, code: Some(0) }), true),
        (None, true),
    ] {
        lab.apply(&with_rule(&lab, icmp));
        a.set_static(ip("10.0.1.10"), n("10.0.1.0/24"), ip("10.0.1.1"));
        b.set_static(ip("10.0.1.20"), n("10.0.1.0/24"), ip("10.0.1.1"));
        assert_eq!(b.ping(ip("10.0.1.10")), passes, "ping under an ICMP rule {icmp:?}");
    }
}

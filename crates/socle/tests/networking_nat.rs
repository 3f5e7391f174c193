//! The way out of a private subnet, with a real guest, through the API: a
//! guest in a private subnet reaches the outside only through a NAT
//! service, and is seen there with the NAT service's public IP. Needs root
//! (namespaces, taps, nftables) and QEMU.
//!
//! The outside is a namespace routed through the root namespace (see
//! `common::Outside`), not the host itself: socle-net's root-namespace
//! table drops every connection a Net opens towards the host (the uplink's
//! root end included), so a listener on the host could never prove egress.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

const T: Duration = Duration::from_secs(120);
const PORT: u16 = 9000;

#[test]
fn a_private_guest_goes_out_only_through_its_nat_service() {
    assert!(unsafe { libc::geteuid() } == 0, "this test needs root (network namespaces, taps, nftables)");
    let started = std::time::Instant::now();
    // Its public IPs are its slot's pool (each public IP is routed in the
    // root namespace, which all clouds of the host share).
    let cloud = TestCloud::start();
    let outside = Outside::new(&cloud, &cloud.public_ip_pool());
    let seen = outside.serve_peer_echo(PORT);
    let c = cloud.creds.clone();
    let image = cloud.tiny_image();

    // Net 10.0.0.0/16: a public subnet routed to the internet service, the
    // NAT service in it; a private subnet with its own route table, no
    // route out yet.
    let net_id = create(&c, "CreateNet", json!({"IpRange": "10.0.0.0/16"}), "Net")["NetId"].as_str().unwrap().to_string();
    let subnet = |range: &str| create(&c, "CreateSubnet", json!({"NetId": net_id, "IpRange": range}), "Subnet")["SubnetId"].as_str().unwrap().to_string();
    let (public_subnet, private_subnet) = (subnet("10.0.1.0/24"), subnet("10.0.2.0/24"));
    let igw = create(&c, "CreateInternetService", json!({}), "InternetService")["InternetServiceId"].as_str().unwrap().to_string();
    call(&c, "LinkInternetService", json!({"InternetServiceId": igw, "NetId": net_id})).ok();
    route_table(&c, &net_id, &public_subnet, Some(json!({"GatewayId": igw})));
    let nat_ip = create(&c, "CreatePublicIp", json!({}), "PublicIp");
    let nat_addr = nat_ip["PublicIp"].as_str().unwrap().to_string();
    let nat = create(&c, "CreateNatService", json!({"SubnetId": public_subnet, "PublicIpId": nat_ip["PublicIpId"]}), "NatService");
    let private_rtb = route_table(&c, &net_id, &private_subnet, None);

    let guest = vm_in(&c, &image, Some(&private_subnet), None, &[], &prober_script(&outside.ip.to_string(), &[PORT]));
    let id = guest["VmId"].as_str().unwrap();
    wait_console(&c, id, "socle-guest: net eth0 10.0.2.", 1, T);
    eprintln!("guest has its address after {:?}", started.elapsed());

    // (b) No route out: nothing reaches the outside.
    wait_console(&c, id, &format!("probe {PORT} closed"), 1, T);
    wait_console(&c, id, "probe ping blocked", 1, T);
    assert!(seen.lock().unwrap().is_empty(), "reached the outside without a route: {:?}", seen.lock().unwrap());

    // (a) A route to the NAT service: out, seen as the NAT's public IP.
    default_route(&c, &private_rtb, json!({"NatServiceId": nat["NatServiceId"]}));
    let routed = std::time::Instant::now();
    wait_console(&c, id, &format!("probe {PORT} open {nat_addr}"), 1, T);
    wait_console(&c, id, "probe ping ok", 1, T);
    eprintln!("out through the NAT service {:?} after the route", routed.elapsed());
    let sources = seen.lock().unwrap().clone();
    assert!(!sources.is_empty() && sources.iter().all(|s| s.to_string() == nat_addr), "sources seen outside: {sources:?}, NAT IP {nat_addr}");

    // (b) DeleteRoute: no way out again.
    call(&c, "DeleteRoute", json!({"RouteTableId": private_rtb, "DestinationIpRange": "0.0.0.0/0"})).ok();
    let text = wait_console(&c, id, &format!("probe {PORT} closed"), 2, T);
    wait_console(&c, id, "probe ping blocked", 2, T);
    let after = seen.lock().unwrap().len();
    // Long enough for a few more probes (one every ~3 s when blocked).
    std::thread::sleep(Duration::from_secs(8));
    assert_eq!(seen.lock().unwrap().len(), after, "reached the outside after DeleteRoute:\n{text}");
    let text = console(&c, id);
    let since_closed = text.rsplit_once(&format!("probe {PORT} closed")).map(|(_, rest)| rest).unwrap_or_default();
    assert!(!since_closed.contains(&format!("probe {PORT} open")), "{text}");
    eprintln!("whole test {:?}", started.elapsed());
}

//! NICs of real guests on a real tenant network (socle-net): the guest
//! configures its NIC by DHCP, two guests talk over TCP and ICMP, a NIC is
//! hot-plugged into a running guest and gets an address, then unplugged.
//! Needs root (network namespaces) and QEMU.

mod common;

use std::time::Duration;

use common::*;
use socle_agent::VmNic;
use socle_net::{NetDriver, NetSpec, PortSpec, Protocol, Rule, SubnetSpec};

const BOOT: Duration = Duration::from_secs(120);

/// Removes the test Net and the taps even when the test fails.
struct NetGuard {
    driver: NetDriver,
    net_id: String,
    taps: Vec<String>,
}

impl Drop for NetGuard {
    fn drop(&mut self) {
        let _ = self.driver.destroy(&self.net_id);
        for t in &self.taps {
            let _ = self.driver.remove_tap(t);
        }
    }
}

fn port(nic: &str, tap: &str, mac: &str, ip: &str) -> PortSpec {
    let everything = Rule { protocol: Protocol::Any, ports: None, icmp: None, peers: vec!["0.0.0.0/0".parse().unwrap()] };
    PortSpec {
        nic_id: nic.into(),
        ifname: tap.into(),
        mac: mac.parse().unwrap(),
        subnet_id: "subnet-1".into(),
        private_ips: vec![ip.parse().unwrap()],
        inbound: vec![everything.clone()],
        outbound: vec![everything],
        source_dest_check: true,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guests_get_their_address_by_dhcp_talk_and_take_a_hot_plugged_nic() {
    assert!(unsafe { libc::geteuid() } == 0, "this test needs root (network namespaces, taps)");
    let dir = socle_testkit::Slot::claim();
    let agent = tcg_agent(&dir.path().join("agent")).await;
    let prefix = dir.net_prefix();
    let driver = NetDriver::new(dir.path().join("net"), &prefix).unwrap();
    let taps: Vec<String> = (0..3).map(|i| format!("{prefix}t{i}")).collect();
    let guard = NetGuard { driver, net_id: "vpc-agentnic".into(), taps: taps.clone() };
    let driver = &guard.driver;
    let image = agent.build_tiny_image().await.unwrap();

    let server = "i-00000a01";
    let client = "i-00000a02";
    let macs = ["aa:fc:00:00:0a:01", "aa:fc:00:00:0a:02", "aa:fc:00:00:0a:03"];
    let mut s = spec(server, &image);
    s.user_data = Some(
        b"#!/bin/sh\nwhile [ ! -s /run/socle/ip-eth0 ]; do sleep 1; done\n\
          mkdir -p /www && echo hello-from-server > /www/index.html\n\
          httpd -p 8080 -h /www && echo httpd-started\n"
            .to_vec(),
    );
    let mut c = spec(client, &image);
    c.user_data = Some(
        b"#!/bin/sh\nwhile [ ! -s /run/socle/ip-eth0 ]; do sleep 1; done\n\
          i=0; while [ $i -lt 60 ]; do\n\
            out=$(wget -q -O - http://10.9.1.10:8080/ 2>/dev/null) && { echo \"fetched $out\"; break; }\n\
            sleep 1; i=$((i+1)); done\n\
          ping -c 1 -W 5 10.9.1.10 > /dev/null && echo ping-ok\n"
            .to_vec(),
    );
    for (vm, sp, tap, mac) in [(server, &s, &taps[0], macs[0]), (client, &c, &taps[1], macs[1])] {
        driver.prepare_tap(tap).unwrap();
        agent.define_vm(sp).await.unwrap();
        agent.link_nic(vm, &VmNic { ifname: tap.clone(), mac: mac.into() }).await.unwrap();
        agent.start_vm(vm).await.unwrap();
    }
    let mut net = NetSpec {
        net_id: guard.net_id.clone(),
        ip_range: "10.9.0.0/16".parse().unwrap(),
        subnets: vec![SubnetSpec { subnet_id: "subnet-1".into(), ip_range: "10.9.1.0/24".parse().unwrap(), routes: vec![] }],
        ports: vec![port("eni-1", &taps[0], macs[0], "10.9.1.10"), port("eni-2", &taps[1], macs[1], "10.9.1.11")],
        uplink: None,
        public_ips: vec![],
        nat_services: vec![],
    };
    let report = driver.apply(&net).unwrap();
    assert!(report.missing_ports.is_empty(), "{report:?}");

    wait_console(&agent, server, "socle-guest: net eth0 10.9.1.10/24 gw 10.9.1.1", 1, BOOT).await;
    wait_console(&agent, client, "socle-guest: net eth0 10.9.1.11/24 gw 10.9.1.1", 1, BOOT).await;
    wait_console(&agent, client, "fetched hello-from-server", 1, BOOT).await;
    wait_console(&agent, client, "ping-ok", 1, BOOT).await;

    // Hot-plug a second NIC into the running client: the guest sees eth1
    // and gets its address by DHCP.
    driver.prepare_tap(&taps[2]).unwrap();
    let second = VmNic { ifname: taps[2].clone(), mac: macs[2].into() };
    agent.link_nic(client, &second).await.unwrap();
    agent.link_nic(client, &second).await.unwrap(); // idempotent
    net.ports.push(port("eni-3", &taps[2], macs[2], "10.9.1.12"));
    driver.apply(&net).unwrap();
    wait_console(&agent, client, "socle-guest: nic added eth1 mac=aa:fc:00:00:0a:03", 1, BOOT).await;
    wait_console(&agent, client, "socle-guest: net eth1 10.9.1.12/24", 1, BOOT).await;
    assert_eq!(agent.vm_nics(client).await.unwrap().len(), 2);

    agent.unlink_nic(client, &taps[2]).await.unwrap();
    wait_console(&agent, client, "socle-guest: nic removed eth1", 1, BOOT).await;
    assert_eq!(agent.vm_nics(client).await.unwrap(), vec![VmNic { ifname: taps[1].clone(), mac: macs[1].into() }]);

    for vm in [server, client] {
        agent.destroy_vm(vm).await.unwrap();
    }
}

//! Crash safety of the network pass, with real guests: the server is made
//! to abort right after wiring a network and before recording it, halfway
//! through removing one (dnsmasq, uplink and tables gone; namespace and
//! state files not yet), and right after removing one before its uplink
//! slot is freed. After each restart the host converges: a wired network
//! works (address, metadata), a removed one leaves no namespace, dnsmasq,
//! state (lease) file, tap, veth or nftables table, and its uplink slot is
//! free for the next network. And the NIC reconciler: aborted right after
//! hot-plugging a NIC into a running guest (before the NIC is recorded
//! `in-use`), and right after unplugging one (before it is `available`):
//! after each restart the NIC is settled, the guest has it (or not) and is
//! reached on it (or not), and its tap exists once (or not at all). Needs
//! root (namespaces, taps, nftables) and QEMU.

mod common;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const T: Duration = Duration::from_secs(120);
/// Well under the periodic network pass (30 s): a crash step that takes
/// longer means the change waited for it instead of making a pass at once.
const PROMPT: Duration = Duration::from_secs(20);

/// A Net 10.0.0.0/16 with one subnet 10.0.1.0/24 routed to a linked
/// internet service (so, once wired, an uplink). Returns (Net, subnet).
fn internet_net(c: &Creds) -> (String, String) {
    let net = create(c, "CreateNet", json!({"IpRange": "10.0.0.0/16"}), "Net")["NetId"].as_str().unwrap().to_string();
    let subnet = create(c, "CreateSubnet", json!({"NetId": net, "IpRange": "10.0.1.0/24"}), "Subnet")["SubnetId"].as_str().unwrap().to_string();
    let igw = create(c, "CreateInternetService", json!({}), "InternetService")["InternetServiceId"].as_str().unwrap().to_string();
    call(c, "LinkInternetService", json!({"InternetServiceId": igw, "NetId": net})).ok();
    route_table(c, &net, &subnet, Some(json!({"GatewayId": igw})));
    (net, subnet)
}

/// A guest in `subnet` that only boots (DHCP and metadata are socle-tiny's own).
fn guest(c: &Creds, image: &str, subnet: &str) -> String {
    vm_in(c, image, Some(subnet), None, &[], "#!/bin/sh\ntrue\n")["VmId"].as_str().unwrap().to_string()
}

/// Waits until the guest has its address and its identity from the
/// metadata service: the network works.
fn wait_wired(c: &Creds, vm: &str) {
    wait_console(c, vm, "socle-guest: net eth0 10.0.1.", 1, T);
    wait_console(c, vm, &format!("socle-guest: metadata instance-id {vm}"), 1, T);
}

fn delete_vm(c: &Creds, vm: &str) {
    call(c, "DeleteVms", json!({"VmIds": [vm]})).ok();
}

fn sh(cmdline: &str) -> String {
    let out = std::process::Command::new("sh").args(["-c", cmdline]).output_within(CLI_TIMEOUT);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The dnsmasq processes serving network `net` of `cloud`.
fn dnsmasqs(cloud: &TestCloud, net: &str) -> usize {
    let needle = format!("--conf-file={}/", cloud.data_dir().join("net").join(net).display());
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).contains(&needle)))
        .count()
}

/// What network `net` of `cloud` left on the host. The cloud must have no
/// other network wired: every root-namespace interface of its prefix counts.
fn leftovers(cloud: &TestCloud, net: &str) -> Vec<String> {
    let driver = cloud.net_driver().unwrap();
    let prefix = cloud.net_prefix();
    let mut left = vec![];
    if namespaces(&prefix).contains(&driver.namespace(net)) {
        left.push(format!("namespace {}", driver.namespace(net)));
    }
    if dnsmasqs(cloud, net) > 0 {
        left.push("dnsmasq".into());
    }
    let state = cloud.data_dir().join("net").join(net);
    if state.exists() {
        left.push(format!("state files (configuration, leases) {:?}", files_under(&state)));
    }
    for line in sh("ip -o link show").lines() {
        let name = line.split(':').nth(1).unwrap_or_default().trim().split('@').next().unwrap_or_default();
        if name.starts_with(&prefix) {
            left.push(format!("root interface {name}"));
        }
    }
    if sh("nft list tables").lines().any(|l| l.trim() == format!("table inet {}", driver.root_table(net))) {
        left.push(format!("nftables table {}", driver.root_table(net)));
    }
    left
}

/// Waits until network `net` left nothing on the host.
fn wait_gone(cloud: &TestCloud, net: &str) {
    let deadline = Instant::now() + T;
    loop {
        let left = leftovers(cloud, net);
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "network {net} left on the host: {left:?}\nlog:\n{}", cloud.log_tail());
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The root-namespace end of `net`'s uplink is the first pair of the
/// cloud's uplink range: the network holds slot 0, so no slot leaked.
fn assert_first_uplink_slot(cloud: &TestCloud, net: &str) {
    let range = cloud.uplink_range();
    let base: Ipv4Addr = range.split('/').next().unwrap().parse().unwrap();
    let want = format!("inet {base} peer {}/32", Ipv4Addr::from(u32::from(base) + 1));
    let veth = cloud.net_driver().unwrap().uplink_interface(net);
    let addr = sh(&format!("ip -o -4 addr show dev {veth}"));
    assert!(addr.contains(&want), "uplink {veth} of {net}: want {want} (slot 0 of {range}), got {addr:?}");
}

/// `TestCloud::crash_at`, checking that the fault was reached promptly:
/// the change made by `act` started a pass at once, even if one was
/// running (the restarted server's first pass usually is).
fn crash_promptly(cloud: &mut TestCloud, point: &str, act: impl FnOnce(&Creds)) {
    let t = Instant::now();
    cloud.crash_at(point, act);
    assert!(t.elapsed() < PROMPT, "{point} reached after {:?}: the change waited for a periodic pass", t.elapsed());
}

#[test]
fn a_crash_while_wiring_or_removing_a_network_is_repaired_at_restart() {
    assert!(unsafe { libc::geteuid() } == 0, "this test needs root (network namespaces, taps, nftables)");
    let started = Instant::now();
    let mut cloud = TestCloud::start();
    let c = cloud.creds.clone();
    let image = cloud.tiny_image();
    let lap = |what: &str| eprintln!("{what}: {:?}", started.elapsed());

    // 1. Abort right after the first apply of A, before the pass records
    // it (and before its metadata service starts): after the restart the
    // network is applied again and works.
    let (a, subnet_a) = internet_net(&c);
    let mut vm = String::new();
    crash_promptly(&mut cloud, "network-applied", |c| vm = guest(c, &image, &subnet_a));
    wait_wired(&c, &vm);
    assert_eq!(dnsmasqs(&cloud, &a), 1, "one dnsmasq for {a}");
    assert_first_uplink_slot(&cloud, &a);
    lap("crash after apply repaired");

    // 2. Abort halfway through removing A: the restart finishes the job.
    crash_promptly(&mut cloud, "net-half-destroyed", |c| delete_vm(c, &vm));
    wait_state(&c, std::slice::from_ref(&vm), "terminated", T);
    wait_gone(&cloud, &a);
    lap("crash halfway through a removal repaired");

    // 3. A new Net B gets the first uplink slot (A's was freed). Abort
    // right after B is removed from the host, before its slot is freed.
    let (b, subnet_b) = internet_net(&c);
    let vm_b = guest(&c, &image, &subnet_b);
    wait_wired(&c, &vm_b);
    assert_first_uplink_slot(&cloud, &b);
    crash_promptly(&mut cloud, "network-destroyed", |c| delete_vm(c, &vm_b));
    wait_state(&c, std::slice::from_ref(&vm_b), "terminated", T);
    wait_gone(&cloud, &b);
    lap("crash between a removal and the slot release repaired");

    // 4. B's slot was freed as well: A, wired again, takes slot 0 and works.
    let vm = guest(&c, &image, &subnet_a);
    wait_wired(&c, &vm);
    assert_first_uplink_slot(&cloud, &a);
    delete_vm(&c, &vm);
    wait_state(&c, std::slice::from_ref(&vm), "terminated", T);
    wait_gone(&cloud, &a);
    lap("whole test");
}

/// The state of NIC `nic` once it is one of `states`.
fn wait_nic(c: &Creds, nic: &str, state: &str) -> serde_json::Value {
    let deadline = Instant::now() + T;
    loop {
        let n = call(c, "ReadNics", json!({"Filters": {"NicIds": [nic]}})).ok()["Nics"][0].clone();
        if n["State"] == state {
            return n;
        }
        assert!(Instant::now() < deadline, "NIC {nic} never became {state}: {n}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn a_crash_while_hot_plugging_or_unplugging_a_nic_is_repaired_at_restart() {
    assert!(unsafe { libc::geteuid() } == 0, "this test needs root (network namespaces, taps, nftables)");
    let mut cloud = TestCloud::start();
    let c = cloud.creds.clone();
    let image = cloud.tiny_image();
    let net = create(&c, "CreateNet", json!({"IpRange": "10.0.0.0/16"}), "Net")["NetId"].as_str().unwrap().to_string();
    let subnet = |range: &str| create(&c, "CreateSubnet", json!({"NetId": net, "IpRange": range}), "Subnet")["SubnetId"].as_str().unwrap().to_string();
    // As in networking.rs: the extra NIC and the prober share a subnet the
    // server's primary NIC is not in.
    let (front, back) = (subnet("10.0.1.0/24"), subnet("10.0.2.0/24"));
    let server = vm_in(&c, &image, Some(&front), None, &[], &server_script("hello-eth1", &[8080]))["VmId"].as_str().unwrap().to_string();
    let prober = vm_in(&c, &image, Some(&back), None, &[], &prober_script("10.0.2.50", &[8080]))["VmId"].as_str().unwrap().to_string();
    wait_console(&c, &server, "servers-started", 1, T);
    wait_console(&c, &prober, "probe 8080 closed", 1, T);
    let nic = create(&c, "CreateNic", json!({"SubnetId": back, "PrivateIps": [{"PrivateIp": "10.0.2.50"}]}), "Nic");
    let nic_id = nic["NicId"].as_str().unwrap().to_string();
    let tap = cloud.tap_of(&nic_id);

    // 1. Abort right after the hot-plug, before the NIC is recorded: after
    // the restart it is in use, the guest got it once and is reached on it.
    let mut link = String::new();
    cloud.crash_at("nic-hot-plugged", |c| {
        link = call(c, "LinkNic", json!({"NicId": nic_id, "VmId": server, "DeviceNumber": 1})).ok()["LinkNicId"].as_str().unwrap().to_string();
    });
    wait_nic(&c, &nic_id, "in-use");
    wait_console(&c, &server, "socle-guest: net eth1 10.0.2.50/24", 1, T);
    wait_console(&c, &prober, "probe 8080 open hello-eth1", 1, T);
    let out = console(&c, &server);
    assert_eq!(out.matches("socle-guest: nic added eth").count(), 2, "eth0 and one eth1:\n{out}");
    assert_eq!(interfaces_named(&tap), 1, "the tap {tap} exists once");

    // 2. Abort right after the unplug, before the NIC is available: after
    // the restart it is available, gone from the guest and the host.
    cloud.crash_at("nic-unplugged", |c| {
        call(c, "UnlinkNic", json!({"LinkNicId": link})).ok();
    });
    let n = wait_nic(&c, &nic_id, "available");
    assert!(n["LinkNic"].is_null(), "{n}");
    wait_console(&c, &server, "socle-guest: nic removed eth1", 1, T);
    wait_console(&c, &prober, "probe 8080 closed", 2, T);
    assert_eq!(interfaces_named(&tap), 0, "the tap {tap} of the unlinked NIC is gone");
    call(&c, "DeleteNic", json!({"NicId": nic_id})).ok();
}

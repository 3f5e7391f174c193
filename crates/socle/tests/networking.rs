//! Tenant networks with real guests, through the API: VMs in a subnet get
//! their address by DHCP and read their identity from the metadata
//! service; security groups decide which ports answer, and a rule added on
//! running VMs takes effect; two accounts use the same range and the same
//! addresses without a packet crossing; a VM without subnet lands on its
//! account's public-cloud network; deleting everything leaves nothing on
//! the host. Needs root (namespaces, taps, nftables) and QEMU.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

const T: Duration = Duration::from_secs(180);

#[test]
fn guests_get_addresses_and_metadata_security_groups_filter_and_accounts_are_isolated() {
    assert!(unsafe { libc::geteuid() } == 0, "this test needs root (network namespaces, taps, nftables)");
    let cloud = TestCloud::start();
    let image = cloud.tiny_image();
    let a = cloud.creds.clone();
    let b = cloud.new_account("net-b");

    // The same range, subnet and server address in two accounts.
    let mut servers = vec![];
    for (who, c) in [("a", &a), ("b", &b)] {
        let net = create(c, "CreateNet", json!({"IpRange": "10.0.0.0/16"}), "Net");
        let net_id = net["NetId"].as_str().unwrap().to_string();
        let subnet = create(c, "CreateSubnet", json!({"NetId": net_id, "IpRange": "10.0.1.0/24"}), "Subnet");
        let subnet_id = subnet["SubnetId"].as_str().unwrap().to_string();
        // "web": 8080 open to the Net; 9090 and ICMP not (yet).
        let web = create(c, "CreateSecurityGroup", json!({"NetId": net_id, "SecurityGroupName": "web", "Description": "web"}), "SecurityGroup");
        let web_id = web["SecurityGroupId"].as_str().unwrap().to_string();
        call(c, "CreateSecurityGroupRule", json!({"SecurityGroupId": web_id, "Flow": "Inbound", "IpProtocol": "tcp", "FromPortRange": 8080, "ToPortRange": 8080, "IpRange": "10.0.0.0/16"})).ok();
        let server = vm_in(c, &image, Some(&subnet_id), Some("10.0.1.10"), &[&web_id], &server_script(&format!("hello-from-{who}"), &[8080, 9090]));
        assert_eq!(server["PrivateIp"], "10.0.1.10", "{server}");
        assert_eq!((server["SubnetId"].as_str(), server["NetId"].as_str()), (Some(subnet_id.as_str()), Some(net_id.as_str())));
        assert_eq!(server["SecurityGroups"][0]["SecurityGroupId"], web_id.as_str());
        assert_eq!(server["Nics"][0]["PrivateIps"][0]["PrivateIp"], "10.0.1.10");
        let prober = vm_in(c, &image, Some(&subnet_id), None, &[], &prober_script("10.0.1.10", &[8080, 9090]));
        assert_eq!(prober["PrivateIp"], "10.0.1.4", "the lowest free address: {prober}");
        servers.push((c.clone(), net_id, subnet_id, web_id, server, prober));
    }
    // A VM without a subnet: the account's public-cloud network.
    let public = vm_in(&a, &image, None, None, &[], "#!/bin/sh\ntrue\n");
    assert_eq!(public["PrivateIp"], "10.0.0.4", "{public}");
    assert!(public["SubnetId"].is_null() && public["NetId"].is_null(), "{public}");

    for (c, _, _, _, server, prober) in &servers {
        for vm in [server, prober] {
            let id = vm["VmId"].as_str().unwrap();
            let ip = vm["PrivateIp"].as_str().unwrap();
            wait_console(c, id, &format!("socle-guest: net eth0 {ip}/24 gw 10.0.1.1"), 1, T);
            // The metadata service answers each guest with its own identity.
            wait_console(c, id, &format!("socle-guest: metadata instance-id {id}"), 1, T);
        }
    }
    let public_id = public["VmId"].as_str().unwrap();
    wait_console(&a, public_id, "socle-guest: net eth0 10.0.0.4/16 gw 10.0.0.1", 1, T);
    wait_console(&a, public_id, &format!("socle-guest: metadata instance-id {public_id}"), 1, T);

    for (who, (c, _, _, web_id, _, prober)) in ["a", "b"].iter().zip(&servers) {
        let id = prober["VmId"].as_str().unwrap();
        // Same address in both Nets: each prober reaches its own account's server.
        wait_console(c, id, &format!("probe 8080 open hello-from-{who}"), 1, T);
        let out = wait_console(c, id, "probe 9090 closed", 1, T);
        wait_console(c, id, "probe ping blocked", 1, T);
        let other = if *who == "a" { "b" } else { "a" };
        assert!(!out.contains(&format!("hello-from-{other}")), "a packet crossed accounts:\n{out}");

        // A rule added while both VMs run opens 9090 and ICMP.
        call(c, "CreateSecurityGroupRule", json!({"SecurityGroupId": web_id, "Flow": "Inbound", "Rules": [
            {"IpProtocol": "tcp", "FromPortRange": 9090, "ToPortRange": 9090, "IpRanges": ["10.0.1.0/24"]},
            {"IpProtocol": "icmp", "FromPortRange": -1, "ToPortRange": -1, "IpRanges": ["10.0.1.0/24"]}]})).ok();
        wait_console(c, id, &format!("probe 9090 open hello-from-{who}"), 1, T);
        wait_console(c, id, "probe ping ok", 1, T);
        // 8080 stayed open throughout the rule change.
        let log = console(c, id);
        let since_open = log.split_once("probe 8080 open").map(|(_, rest)| rest).unwrap_or_default();
        assert!(!since_open.contains("probe 8080 closed"), "{log}");
    }

    // Deleting the VMs unwires every network: no namespace is left.
    let prefix = cloud.net_prefix();
    assert_eq!(namespaces(&prefix).len(), 3, "two Nets and a public-cloud network: {:?}", namespaces(&prefix));
    for (c, net_id, subnet_id, web_id, server, prober) in &servers {
        let ids = [server["VmId"].as_str().unwrap().to_string(), prober["VmId"].as_str().unwrap().to_string()];
        call(c, "DeleteVms", json!({"VmIds": ids})).ok();
        wait_state(c, &ids, "terminated", T);
        call(c, "DeleteSecurityGroup", json!({"SecurityGroupId": web_id})).ok();
        call(c, "DeleteSubnet", json!({"SubnetId": subnet_id})).ok();
        call(c, "DeleteNet", json!({"NetId": net_id})).ok();
    }
    call(&a, "DeleteVms", json!({"VmIds": [public_id]})).ok();
    wait_state(&a, &[public_id.to_string()], "terminated", T);
    let deadline = std::time::Instant::now() + T;
    while !namespaces(&prefix).is_empty() {
        assert!(std::time::Instant::now() < deadline, "networks left on the host: {:?}", namespaces(&prefix));
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn a_public_ip_lets_the_outside_in_and_only_to_its_guest() {
    assert!(unsafe { libc::geteuid() } == 0, "this test needs root (network namespaces, taps, nftables)");
    let cloud = TestCloud::start();
    let c = cloud.creds.clone();
    let image = cloud.tiny_image();
    let net_id = create(&c, "CreateNet", json!({"IpRange": "10.0.0.0/16"}), "Net")["NetId"].as_str().unwrap().to_string();
    let subnet = |range: &str| create(&c, "CreateSubnet", json!({"NetId": net_id, "IpRange": range}), "Subnet")["SubnetId"].as_str().unwrap().to_string();
    let public_subnet = subnet("10.0.1.0/24");
    let igw = create(&c, "CreateInternetService", json!({}), "InternetService")["InternetServiceId"].as_str().unwrap().to_string();
    call(&c, "LinkInternetService", json!({"InternetServiceId": igw, "NetId": net_id})).ok();
    route_table(&c, &net_id, &public_subnet, Some(json!({"GatewayId": igw})));
    let open = create(&c, "CreateSecurityGroup", json!({"NetId": net_id, "SecurityGroupName": "open", "Description": "8080 from anywhere"}), "SecurityGroup");
    let open_id = open["SecurityGroupId"].as_str().unwrap().to_string();
    call(&c, "CreateSecurityGroupRule", json!({"SecurityGroupId": open_id, "Flow": "Inbound", "IpProtocol": "tcp", "FromPortRange": 8080, "ToPortRange": 8080, "IpRange": "0.0.0.0/0"})).ok();

    let web = vm_in(&c, &image, Some(&public_subnet), None, &[&open_id], &server_script("hello-public", &[8080]));
    let web_id = web["VmId"].as_str().unwrap().to_string();
    let hidden = vm_in(&c, &image, Some(&public_subnet), None, &[&open_id], &server_script("hello-hidden", &[8080]));
    let web_ip = create(&c, "CreatePublicIp", json!({}), "PublicIp");
    call(&c, "LinkPublicIp", json!({"PublicIpId": web_ip["PublicIpId"], "VmId": web_id})).ok();
    let public_addr = web_ip["PublicIp"].as_str().unwrap().to_string();
    wait_console(&c, &web_id, "servers-started", 1, T);
    wait_console(&c, hidden["VmId"].as_str().unwrap(), "servers-started", 1, T);
    let vm = &wait_state(&c, std::slice::from_ref(&web_id), "running", T)[0];
    assert_eq!(vm["PublicIp"].as_str(), Some(public_addr.as_str()), "{vm}");

    // In: the host reaches the guest through its public IP.
    let get = |addr: &str| {
        std::process::Command::new("busybox").args(["wget", "-q", "-O", "-", &format!("http://{addr}:8080/")]).output_within(Duration::from_secs(30))
    };
    let deadline = std::time::Instant::now() + T;
    loop {
        let out = get(&public_addr);
        if String::from_utf8_lossy(&out.stdout).contains("hello-public") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{public_addr}:8080 never answered: {}", String::from_utf8_lossy(&out.stderr));
        std::thread::sleep(Duration::from_millis(500));
    }
    // The guest without a public IP is not reachable from outside at all.
    let hidden_ip = hidden["PrivateIp"].as_str().unwrap();
    assert!(!String::from_utf8_lossy(&get(hidden_ip).stdout).contains("hello-hidden"));
}

#[test]
fn a_nic_hot_plugged_into_a_running_guest_gets_its_address_answers_and_leaves() {
    assert!(unsafe { libc::geteuid() } == 0, "this test needs root (network namespaces, taps, nftables)");
    let cloud = TestCloud::start();
    let c = cloud.creds.clone();
    let image = cloud.tiny_image();
    let net_id = create(&c, "CreateNet", json!({"IpRange": "10.0.0.0/16"}), "Net")["NetId"].as_str().unwrap().to_string();
    let subnet = |range: &str| create(&c, "CreateSubnet", json!({"NetId": net_id, "IpRange": range}), "Subnet")["SubnetId"].as_str().unwrap().to_string();
    // The server's primary NIC in one subnet; the prober and the extra NIC
    // in another, so the prober reaches the extra NIC on its own link (the
    // guest routes only eth0's subnet through its gateway).
    let (front, back) = (subnet("10.0.1.0/24"), subnet("10.0.2.0/24"));
    // The server also watches what the metadata service says of eth1's
    // addresses (EC2's network/interfaces/macs/MAC/local-ipv4s).
    let watch_eth1 = "while [ ! -s /run/socle/ip-eth1 ]; do sleep 1; done\nmac=$(cat /sys/class/net/eth1/address); last=\n\
        while [ -e /sys/class/net/eth1 ]; do\n  ips=$(socle-net fetch latest/meta-data/network/interfaces/macs/$mac/local-ipv4s | tr '\\n' ,)\n\
          [ \"$ips\" = \"$last\" ] || echo \"meta eth1 $ips\"; last=$ips; sleep 1\ndone\n";
    let server = vm_in(&c, &image, Some(&front), None, &[], &(server_script("hello-eth1", &[8080]) + watch_eth1));
    let server_id = server["VmId"].as_str().unwrap().to_string();
    let prober = vm_in(&c, &image, Some(&back), None, &[], &prober_script("10.0.2.50", &[8080]));
    let prober_id = prober["VmId"].as_str().unwrap().to_string();
    wait_console(&c, &server_id, "servers-started", 1, T);
    wait_console(&c, &prober_id, "probe 8080 closed", 1, T);

    // Made while the server runs, linked to it: the guest sees eth1 and
    // takes the NIC's address by DHCP; the prober reaches it (both are in
    // the Net's default group, which lets its members in).
    let nic = create(&c, "CreateNic", json!({"SubnetId": back, "PrivateIps": [{"PrivateIp": "10.0.2.50"}]}), "Nic");
    let nic_id = nic["NicId"].as_str().unwrap().to_string();
    let mac = nic["MacAddress"].as_str().unwrap().to_string();
    let link = call(&c, "LinkNic", json!({"NicId": nic_id, "VmId": server_id, "DeviceNumber": 1})).ok()["LinkNicId"].as_str().unwrap().to_string();
    wait_console(&c, &server_id, &format!("socle-guest: nic added eth1 mac={mac}"), 1, T);
    wait_console(&c, &server_id, "socle-guest: net eth1 10.0.2.50/24", 1, T);
    wait_console(&c, &prober_id, "probe 8080 open hello-eth1", 1, T);
    wait_console(&c, &prober_id, "probe ping ok", 1, T);
    // A secondary address shows in the guest's metadata.
    wait_console(&c, &server_id, "meta eth1 10.0.2.50", 1, T);
    call(&c, "LinkPrivateIps", json!({"NicId": nic_id, "PrivateIps": ["10.0.2.51"]})).ok();
    wait_console(&c, &server_id, "meta eth1 10.0.2.50,10.0.2.51", 1, T);
    let read = call(&c, "ReadNics", json!({"Filters": {"NicIds": [nic_id]}})).ok();
    assert_eq!(read["Nics"][0]["State"], "in-use", "{read}");
    assert_eq!(read["Nics"][0]["LinkNic"]["VmId"], server_id.as_str(), "{read}");
    let tap = cloud.tap_of(&nic_id);
    assert_eq!(interfaces_named(&tap), 1, "the NIC's tap {tap} exists once");

    // Unlinked: the guest releases it, the prober loses it, the tap goes,
    // and the NIC is available for another VM.
    call(&c, "UnlinkNic", json!({"LinkNicId": link})).ok();
    wait_console(&c, &server_id, "socle-guest: nic removed eth1", 1, T);
    wait_console(&c, &prober_id, "probe 8080 closed", 2, T);
    let deadline = std::time::Instant::now() + T;
    loop {
        let nic = call(&c, "ReadNics", json!({"Filters": {"NicIds": [nic_id]}})).ok()["Nics"][0].clone();
        if nic["State"] == "available" {
            assert!(nic["LinkNic"].is_null(), "{nic}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the NIC never became available: {nic}");
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(interfaces_named(&tap), 0, "the tap {tap} of the unlinked NIC is gone");
    call(&c, "DeleteNic", json!({"NicId": nic_id})).ok();
}

/// A guest that, once it reaches `server`:8080, tries again under another
/// identity — an address that is not its own, then its own address with
/// another MAC — then as itself again, printing "spoof STEP open BODY" or
/// "spoof STEP closed" for each. DHCP is stopped first so that nothing
/// gives it its address back behind the test's back.
fn spoofer_script(server: &str) -> String {
    format!(
        r#"#!/bin/sh
while [ ! -s /run/socle/ip-eth0 ]; do sleep 1; done
ip=$(cat /run/socle/ip-eth0); mac=$(cat /sys/class/net/eth0/address)
get() {{ printf 'GET / HTTP/1.0\r\n\r\n' | timeout 5 nc -w 2 {server} 8080 2>/dev/null | tail -n 1; }}
probe() {{ body=$(get); if [ -n "$body" ]; then echo "spoof $1 open $body"; else echo "spoof $1 closed"; fi; }}
until [ -n "$(get)" ]; do sleep 1; done
kill $(cat /run/socle/udhcpc-eth0.pid)
probe real
ip addr flush dev eth0; ip addr add 10.0.1.99/24 dev eth0; ip neigh flush dev eth0
probe other-ip
ip addr flush dev eth0; ip addr add $ip/24 dev eth0
ip link set eth0 down; ip link set eth0 address 02:bb:00:00:00:01; ip link set eth0 up; ip neigh flush dev eth0
probe other-mac
ip link set eth0 down; ip link set eth0 address $mac; ip link set eth0 up; ip neigh flush dev eth0
probe real-again
echo spoof-done
"#
    )
}

#[test]
fn a_guest_cannot_pass_for_another_address_or_mac() {
    assert!(unsafe { libc::geteuid() } == 0, "this test needs root (network namespaces, taps, nftables)");
    let cloud = TestCloud::start();
    let c = cloud.creds.clone();
    let image = cloud.tiny_image();
    let net = create(&c, "CreateNet", json!({"IpRange": "10.0.0.0/16"}), "Net")["NetId"].as_str().unwrap().to_string();
    let subnet = create(&c, "CreateSubnet", json!({"NetId": net, "IpRange": "10.0.1.0/24"}), "Subnet")["SubnetId"].as_str().unwrap().to_string();
    // The server lets the whole Net in on 8080: only anti-spoofing stands
    // between a spoofed packet and an answer.
    let open = create(&c, "CreateSecurityGroup", json!({"NetId": net, "SecurityGroupName": "open", "Description": "8080 from the Net"}), "SecurityGroup");
    let open_id = open["SecurityGroupId"].as_str().unwrap().to_string();
    call(&c, "CreateSecurityGroupRule", json!({"SecurityGroupId": open_id, "Flow": "Inbound", "IpProtocol": "tcp", "FromPortRange": 8080, "ToPortRange": 8080, "IpRange": "10.0.0.0/16"})).ok();
    vm_in(&c, &image, Some(&subnet), Some("10.0.1.10"), &[&open_id], &server_script("hello-real", &[8080]));
    let spoofer = vm_in(&c, &image, Some(&subnet), None, &[], &spoofer_script("10.0.1.10"))["VmId"].as_str().unwrap().to_string();
    let out = wait_console(&c, &spoofer, "spoof-done", 1, T);
    for (step, want) in [("real", "open hello-real"), ("other-ip", "closed"), ("other-mac", "closed"), ("real-again", "open hello-real")] {
        assert!(out.contains(&format!("spoof {step} {want}")), "step {step}: want {want:?}:\n{out}");
    }
}

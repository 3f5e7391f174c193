//! `socle down` leaves the machine as it was (issue 12, point 5): after a
//! cloud ran a guest on a Net with an internet service (namespace, dnsmasq,
//! tap, veth, uplink, nftables tables) and `socle up` was stopped — its
//! guests and networks live on by design —, `socle down` shuts the guest
//! down and removes every host object of the cloud: the objects named by
//! its prefix and the processes naming its data dir are what they were
//! before `socle up`. Refused while the server runs; `--purge --yes` also
//! deletes the data dir. Needs root (namespaces, taps, nftables) and QEMU.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use serde_json::json;

const T: Duration = Duration::from_secs(120);

fn sh(cmdline: &str) -> String {
    let out = std::process::Command::new("sh").args(["-c", cmdline]).output_within(CLI_TIMEOUT);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The host objects named by `prefix`: namespaces, links, nftables tables;
/// and the processes whose command line names `dir`.
fn host_objects(prefix: &str, dir: &std::path::Path) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for ns in sh("ip netns list").lines().filter_map(|l| l.split_whitespace().next()) {
        if ns.starts_with(prefix) {
            seen.insert(format!("netns {ns}"));
        }
    }
    for link in std::fs::read_dir("/sys/class/net").unwrap() {
        let name = link.unwrap().file_name().to_string_lossy().into_owned();
        if name.starts_with(prefix) {
            seen.insert(format!("link {name}"));
        }
    }
    for table in sh("nft list tables").lines() {
        if table.split_whitespace().last().is_some_and(|t| t.starts_with(prefix)) {
            seen.insert(format!("nft {table}"));
        }
    }
    let dir = dir.display().to_string();
    for proc in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmd) = std::fs::read(proc.path().join("cmdline")) else { continue };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(&dir) {
            seen.insert(format!("process {}", cmd.split(' ').next().unwrap_or_default()));
        }
    }
    seen
}

#[test]
fn socle_down_leaves_the_machine_as_it_was() {
    let mut cloud = TestCloud::start();
    let prefix = cloud.net_prefix();
    let data_dir = cloud.data_dir().to_path_buf();
    // Before: the server itself (it names its data dir) and nothing else.
    let server = format!("process {}", socle_bin().display());
    let before: BTreeSet<String> = host_objects(&prefix, &data_dir).into_iter().filter(|o| *o != server).collect();
    assert!(before.is_empty(), "objects of this slot before the test: {before:?}");

    let c = &cloud.creds;
    let image = cloud.tiny_image();
    let net = create(c, "CreateNet", json!({"IpRange": "10.0.0.0/16"}), "Net")["NetId"].as_str().unwrap().to_string();
    let subnet = create(c, "CreateSubnet", json!({"NetId": net, "IpRange": "10.0.1.0/24"}), "Subnet")["SubnetId"].as_str().unwrap().to_string();
    let igw = create(c, "CreateInternetService", json!({}), "InternetService")["InternetServiceId"].as_str().unwrap().to_string();
    call(c, "LinkInternetService", json!({"InternetServiceId": igw, "NetId": net})).ok();
    route_table(c, &net, &subnet, Some(json!({"GatewayId": igw})));
    let vm = vm_in(c, &image, Some(&subnet), None, &[], "#!/bin/sh\ntrue\n")["VmId"].as_str().unwrap().to_string();
    wait_console(c, &vm, "socle-guest: net eth0 10.0.1.", 1, T);

    // Refused while the server runs: it would start the VM again.
    let out = cloud.socle().args(["down", "--data-dir"]).arg(&data_dir).args(["--net-prefix", &prefix]).output_within(CLI_TIMEOUT);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("stop it first"), "{out:?}");

    // Stopped: the guest and its network live on.
    cloud.stop_clean();
    let running = host_objects(&prefix, &data_dir);
    assert!(running.iter().any(|o| o.starts_with("netns ")), "no namespace of the cloud: {running:?}");
    assert!(running.iter().any(|o| o.starts_with("nft ")), "no nftables table of the cloud: {running:?}");
    assert!(running.iter().any(|o| o.contains("qemu-system")), "the guest did not outlive socle up: {running:?}");
    assert!(running.iter().any(|o| o.contains("dnsmasq")), "no dnsmasq: {running:?}");

    let out = cloud
        .socle()
        .args(["down", "--timeout", "10", "--data-dir"])
        .arg(&data_dir)
        .args(["--net-prefix", &prefix])
        .output_within(Duration::from_secs(120));
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "socle down failed: {said}");
    assert!(said.contains("stopped 1 VM(s)") && said.contains("removed 1 network(s)"), "{said}");
    assert_eq!(host_objects(&prefix, &data_dir), before, "socle down left these behind");
    assert!(data_dir.join("master.key").exists(), "without --purge the data dir stays");

    // Again: nothing to do, and it says so.
    let out = cloud.socle().args(["down", "--data-dir"]).arg(&data_dir).args(["--net-prefix", &prefix]).output_within(CLI_TIMEOUT);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success() && said.contains("stopped 0 VM(s)") && said.contains("removed 0 network(s)"), "{out:?}");

    let out = cloud
        .socle()
        .args(["down", "--purge", "--yes", "--data-dir"])
        .arg(&data_dir)
        .args(["--net-prefix", &prefix])
        .output_within(CLI_TIMEOUT);
    assert!(out.status.success(), "{out:?}");
    assert!(!data_dir.exists(), "--purge left the data dir");
}

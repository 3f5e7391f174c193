//! A host joins a cloud once, with a one-time token, and is from then on
//! reached over mutual TLS: the cloud sees it `ready`, `unreachable` when
//! its agent stops answering and `ready` again when it is back; a forged or
//! spent token is refused; a revoked host stays revoked. VMs are placed on
//! the hosts: in the subregion asked for, within each host's capacity,
//! alone on a host with dedicated tenancy, never on a cordoned host. A VM
//! on another host gets its Net there: that host's agent wires it and
//! serves the guest its metadata. An image made on one host boots VMs on
//! another: its snapshot is copied there (encrypted) and kept by ID.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

struct Hosts<'a> {
    cloud: &'a TestCloud,
}

impl Hosts<'_> {
    fn run(&self, args: &[&str]) -> Output {
        let mut cmd = self.cloud.socle();
        cmd.args(["host"]).args(args).arg("--data-dir").arg(self.cloud.data_dir());
        cmd.output_within(CLI_TIMEOUT)
    }

    fn token(&self, subregion: &str) -> String {
        let out = self.run(&["token", "--subregion", subregion]);
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// Every host, the cloud's own (its agent on a Unix socket) included.
    fn all(&self) -> Vec<Value> {
        let out = self.run(&["list", "--json"]);
        assert!(out.status.success(), "{}", text(&out));
        serde_json::from_slice::<Value>(&out.stdout).unwrap().as_array().unwrap().clone()
    }

    /// The hosts that joined.
    fn list(&self) -> Vec<Value> {
        self.all().into_iter().filter(|h| !h["Endpoint"].as_str().unwrap().starts_with("unix:")).collect()
    }

    /// Waits until the one joined host is `state` and `check` holds for it.
    fn wait(&self, state: &str, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let list = self.list();
            if list.len() == 1 && list[0]["State"] == state && check(&list[0]) {
                return list[0].clone();
            }
            assert!(Instant::now() < deadline, "the host never became {state}: {list:?}");
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

/// An agent in the root namespace, under the slot's network prefix (it
/// makes no network here: no VM of these tests runs on it).
fn agent(cloud: &TestCloud, dir: &std::path::Path, listen: &str, join: Option<(&str, &str)>) -> Command {
    let mut cmd = Command::new(socle_bin());
    socle_testkit::die_with_parent(&mut cmd);
    cmd.args(["agent", "--data-dir"]).arg(dir).args(["--accel", "tcg", "--listen", listen, "--net-prefix", &cloud.net_prefix()]).env("RUST_LOG", "info");
    if let Some((url, token)) = join {
        cmd.args(["--join", url, "--token", token]);
    }
    cmd
}

fn spawn(mut cmd: Command, log: &std::path::Path) -> KillOnDrop {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    KillOnDrop(cmd.stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log).spawn().expect("spawn socle agent"))
}

#[test]
fn a_host_joins_once_is_watched_over_mutual_tls_and_can_be_revoked() {
    let cloud = TestCloud::start();
    let hosts = Hosts { cloud: &cloud };
    let url = cloud.creds.endpoint.clone();

    let bad = hosts.run(&["token", "--subregion", "west"]);
    assert!(!bad.status.success() && text(&bad).contains("subregion"), "{}", text(&bad));
    let token = hosts.token("eu-west-2b");
    let (token_id, _) = token.split_once('.').unwrap();

    let host_dir = cloud.slot.subdir("host");
    let listen = format!("127.0.0.1:{}", free_port());
    // A token with the wrong secret: refused, nothing recorded, nothing spent.
    let forged = format!("{token_id}.{}", "0".repeat(48));
    let out = agent(&cloud, &host_dir, &listen, Some((&url, &forged))).output_within(CLI_TIMEOUT);
    assert!(!out.status.success() && text(&out).contains("refused"), "{}", text(&out));
    assert!(hosts.list().is_empty());
    assert!(!&host_dir.join("tls/host.json").exists());
    // Listening on every address without --advertise: servers could not
    // reach that; refused, and the token is not spent.
    let out = agent(&cloud, &host_dir, &format!("0.0.0.0:{}", free_port()), Some((&url, &token))).output_within(CLI_TIMEOUT);
    assert!(!out.status.success() && text(&out).contains("unspecified address"), "{}", text(&out));
    assert!(hosts.list().is_empty());

    // The real one: the host joins and the cloud reaches it over mutual TLS.
    let log = &host_dir.join("agent.log");
    let child = spawn(agent(&cloud, &host_dir, &listen, Some((&url, &token))), &log);
    let joined = hosts.wait("ready", |h| !h["SeenAt"].is_null());
    assert_eq!(joined["Subregion"], "eu-west-2b");
    assert_eq!(joined["Endpoint"], listen.as_str());
    let host_id = joined["HostId"].as_str().unwrap().to_string();
    let key_mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&host_dir.join("tls/host.key")).unwrap().permissions());
    assert_eq!(key_mode & 0o777, 0o600, "the host's key is private");

    // The token is spent: another machine cannot join with it.
    let other = cloud.slot.subdir("other-host");
    let out = agent(&cloud, &other, &format!("127.0.0.1:{}", free_port()), Some((&url, &token))).output_within(CLI_TIMEOUT);
    assert!(!out.status.success() && text(&out).contains("refused"), "{}", text(&out));
    assert_eq!(hosts.list().len(), 1);

    // Its agent dies: unreachable. Started again with its data dir alone: ready.
    drop(child);
    hosts.wait("unreachable", |_| true);
    let seen = hosts.list()[0]["SeenAt"].as_str().unwrap().to_string();
    let _child = spawn(agent(&cloud, &host_dir, &listen, None), &log);
    hosts.wait("ready", |h| h["SeenAt"].as_str().is_some_and(|s| s > seen.as_str()));

    // Revoked: it stays so although it answers.
    let out = hosts.run(&["revoke", &host_id]);
    assert!(out.status.success(), "{}", text(&out));
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(hosts.list()[0]["State"], "revoked");
    let out = hosts.run(&["revoke", "h-00000000"]);
    assert!(!out.status.success() && text(&out).contains("no host"), "{}", text(&out));

    // Nothing lives there: it can be removed for good.
    let out = hosts.run(&["remove", &host_id]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(hosts.list().is_empty(), "{:?}", hosts.list());
    let out = hosts.run(&["remove", &host_id]);
    assert!(!out.status.success() && text(&out).contains("no host"), "{}", text(&out));
}

fn subregions(creds: &Creds) -> Vec<String> {
    let out = call(creds, "ReadSubregions", serde_json::json!({})).ok();
    out["Subregions"].as_array().unwrap().iter().map(|s| s["SubregionName"].as_str().unwrap().to_string()).collect()
}

fn create_vms(creds: &Creds, body: Value) -> Answer {
    let mut body = body;
    body["ImageId"] = Value::from(creds_image(creds));
    call(creds, "CreateVms", body)
}

fn creds_image(creds: &Creds) -> String {
    let images = call(creds, "ReadImages", serde_json::json!({"Filters": {"ImageNames": ["socle-tiny"]}})).ok();
    images["Images"][0]["ImageId"].as_str().unwrap().to_string()
}

fn vm_ids(answer: Value) -> Vec<String> {
    answer["Vms"].as_array().unwrap().iter().map(|v| v["VmId"].as_str().unwrap().to_string()).collect()
}

/// Host capacity as `socle host list` shows it, by host ID: (used, total) vCPUs.
fn vcpus(hosts: &Hosts, host_id: &str) -> (i64, i64) {
    let h = hosts.all().into_iter().find(|h| h["HostId"] == host_id).unwrap();
    (h["UsedVcpus"].as_i64().unwrap(), h["Vcpus"].as_i64().unwrap())
}

#[test]
fn vms_are_placed_by_subregion_capacity_and_tenancy() {
    // One vCPU per CPU: each host (2 CPUs here) takes 2 vCPUs of VMs.
    let (cloud, mut lab) = TestCloud::start_with_hosts(1, &["--cpu-overcommit", "1"]);
    let hosts = Hosts { cloud: &cloud };
    let creds = &cloud.creds;
    let local = hosts.all();
    assert_eq!(local.len(), 1, "the cloud's own agent is a host: {local:?}");
    assert_eq!(local[0]["Subregion"], "eu-west-2a");
    let cpus = local[0]["Vcpus"].as_i64().unwrap();
    assert!(cpus >= 2, "{local:?}");
    assert_eq!(subregions(creds), vec!["eu-west-2a"]);
    let err = create_vms(creds, serde_json::json!({"Placement": {"SubregionName": "eu-west-2b"}})).expect_error(400, "4047");
    assert!(err.to_string().contains("eu-west-2b"), "{err}");

    // A host joins in eu-west-2b: its subregion appears once its capacity is known.
    let token = hosts.token("eu-west-2b");
    lab[0].start_agent(Some((&creds.endpoint, &token)));
    let host_dir = lab[0].dir.clone();
    let b = hosts.wait("ready", |h| h["Vcpus"].as_i64().unwrap() > 0);
    let b_id = b["HostId"].as_str().unwrap().to_string();
    assert_eq!(subregions(creds), vec!["eu-west-2a", "eu-west-2b"]);

    // A VM asked in eu-west-2b runs on that host's agent.
    let vm = vm_ids(create_vms(creds, serde_json::json!({"Placement": {"SubregionName": "eu-west-2b"}, "VmType": "tinav5.c1r1p2"})).ok());
    wait_state(creds, &vm, "running", Duration::from_secs(120));
    assert!(host_dir.join("agent/vms").join(&vm[0]).is_dir(), "the VM is on the joined host");
    assert_eq!(vcpus(&hosts, &b_id).0, 1);
    let shown = call(creds, "ReadVms", serde_json::json!({"Filters": {"VmIds": [vm[0]]}})).ok();
    assert_eq!(shown["Vms"][0]["Placement"]["SubregionName"], "eu-west-2b");
    call(creds, "ReadConsoleOutput", serde_json::json!({"VmId": vm[0]})).ok();

    // No host has room for more vCPUs than it has: Outscale's capacity
    // error, nothing made. Between Min and Max, as many as fit.
    let big = format!("tinav5.c{}r1p2", cpus + 1);
    create_vms(creds, serde_json::json!({"VmType": big, "BootOnCreation": false})).expect_error(503, "10001");
    let some = create_vms(creds, serde_json::json!({"VmType": "tinav5.c1r1p2", "BootOnCreation": false, "MinVmsCount": 1, "MaxVmsCount": 2 * cpus}));
    let filled = vm_ids(some.ok());
    assert_eq!(filled.len() as i64, 2 * cpus - 1, "every free vCPU of both hosts, no more");
    assert_eq!(vcpus(&hosts, &b_id), (cpus, cpus));
    create_vms(creds, serde_json::json!({"VmType": "tinav5.c1r1p2", "BootOnCreation": false})).expect_error(503, "10001");
    let read = call(creds, "ReadVms", serde_json::json!({})).ok();
    assert_eq!(read["Vms"].as_array().unwrap().len() as i64, 2 * cpus, "the refused creates left no VM");

    // Deleted VMs give their room back.
    call(creds, "DeleteVms", serde_json::json!({"VmIds": filled})).ok();
    call(creds, "DeleteVms", serde_json::json!({"VmIds": vm})).ok();
    let deadline = Instant::now() + Duration::from_secs(60);
    while vcpus(&hosts, &b_id).0 != 0 || vcpus(&hosts, local[0]["HostId"].as_str().unwrap()).0 != 0 {
        assert!(Instant::now() < deadline, "capacity never released: {:?}", hosts.all());
        std::thread::sleep(Duration::from_millis(300));
    }

    // Dedicated tenancy: the host takes no other account's VM while it holds one.
    let other = cloud.new_account("tenant-b");
    let dedicated = vm_ids(
        create_vms(
            creds,
            serde_json::json!({"Placement": {"SubregionName": "eu-west-2b", "Tenancy": "dedicated"}, "BootOnCreation": false, "VmType": "tinav5.c1r1p2"}),
        )
        .ok(),
    );
    let shown = call(creds, "ReadVms", serde_json::json!({"Filters": {"VmIds": dedicated}})).ok();
    assert_eq!(shown["Vms"][0]["Placement"]["Tenancy"], "dedicated");
    create_vms(&other, serde_json::json!({"Placement": {"SubregionName": "eu-west-2b"}, "BootOnCreation": false, "VmType": "tinav5.c1r1p2"}))
        .expect_error(503, "10001");
    let elsewhere = vm_ids(create_vms(&other, serde_json::json!({"BootOnCreation": false, "VmType": "tinav5.c1r1p2"})).ok());
    let shown = call(&other, "ReadVms", serde_json::json!({"Filters": {"VmIds": elsewhere}})).ok();
    assert_eq!(shown["Vms"][0]["Placement"]["SubregionName"], "eu-west-2a");
    let err = create_vms(creds, serde_json::json!({"Placement": {"Tenancy": "host"}})).expect_error(400, "4047");
    assert!(err.to_string().contains("Tenancy"), "{err}");

    // Cordoned: no new VM there, and its subregion is not offered.
    call(creds, "DeleteVms", serde_json::json!({"VmIds": dedicated})).ok();
    let out = hosts.run(&["cordon", &b_id]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(subregions(creds), vec!["eu-west-2a"]);
    create_vms(&other, serde_json::json!({"Placement": {"SubregionName": "eu-west-2b"}, "BootOnCreation": false, "VmType": "tinav5.c1r1p2"}))
        .expect_error(503, "10001");
    let out = hosts.run(&["uncordon", &b_id]);
    assert!(out.status.success(), "{}", text(&out));
    // Once the dedicated VM is gone, the host is anyone's.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let a = create_vms(&other, serde_json::json!({"Placement": {"SubregionName": "eu-west-2b"}, "BootOnCreation": false, "VmType": "tinav5.c1r1p2"}));
        if a.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the host stayed dedicated: {:?}", hosts.all());
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn a_vm_on_another_host_gets_its_net_and_metadata_from_that_host() {
    assert!(unsafe { libc::geteuid() } == 0, "this test needs root (network namespaces, taps, nftables)");
    let (cloud, mut lab) = TestCloud::start_with_hosts(1, &[]);
    let hosts = Hosts { cloud: &cloud };
    let c = &cloud.creds;
    let token = hosts.token("eu-west-2b");
    lab[0].start_agent(Some((&c.endpoint, &token)));
    hosts.wait("ready", |h| h["Vcpus"].as_i64().unwrap() > 0);
    let image = cloud.tiny_image();

    // One Net, a subnet and a VM in each subregion: one on each host.
    let net = create(c, "CreateNet", serde_json::json!({"IpRange": "10.0.0.0/16"}), "Net");
    let net_id = net["NetId"].as_str().unwrap().to_string();
    let mut vms = vec![];
    for (subregion, range) in [("eu-west-2b", "10.0.1.0/24"), ("eu-west-2a", "10.0.2.0/24")] {
        let subnet = create(c, "CreateSubnet", serde_json::json!({"NetId": net_id, "IpRange": range, "SubregionName": subregion}), "Subnet");
        let body = serde_json::json!({"ImageId": image, "VmType": SMALL, "SubnetId": subnet["SubnetId"]});
        let vm = call(c, "CreateVms", body).ok()["Vms"][0].clone();
        assert_eq!(vm["Placement"]["SubregionName"], subregion, "a VM goes to its subnet's subregion: {vm}");
        vms.push(vm);
    }
    let (there, here) = (vms[0]["VmId"].as_str().unwrap().to_string(), vms[1]["VmId"].as_str().unwrap().to_string());
    for vm in &vms {
        let (id, ip) = (vm["VmId"].as_str().unwrap(), vm["PrivateIp"].as_str().unwrap());
        let gateway = ip.rsplit_once('.').unwrap().0.to_string() + ".1";
        wait_console(c, id, &format!("socle-guest: net eth0 {ip}/24 gw {gateway}"), 1, Duration::from_secs(240));
        wait_console(c, id, &format!("socle-guest: metadata instance-id {id}"), 1, Duration::from_secs(60));
    }
    assert!(lab[0].dir.join("agent/vms").join(&there).is_dir(), "the VM is on the joined host");
    // Each host wired its share of the Net, on its own.
    let prefix = cloud.net_prefix();
    let wired = format!("{prefix}-{net_id}");
    assert_eq!(namespaces(&prefix), vec![wired.clone()], "this machine's share");
    assert!(lab[0].sh("ip netns list").contains(&wired), "the other host's share: {}", lab[0].sh("ip netns list"));
    let taps = lab[0].sh(&format!("ip netns exec {wired} ip -o link show"));
    let nic = vms[0]["Nics"][0]["NicId"].as_str().unwrap();
    assert!(taps.contains(&cloud.tap_of(nic)), "the remote VM's tap is in its Net there: {taps}");
    assert!(!taps.contains(&cloud.tap_of(vms[1]["Nics"][0]["NicId"].as_str().unwrap())), "only its own VMs' ports: {taps}");

    // The host's agent restarts: the guest keeps running, and the new
    // agent gets the Net's metadata again (the guest reads it at reboot).
    lab[0].kill_agent();
    hosts.wait("unreachable", |_| true);
    let reason = |vm: &str| call(c, "ReadVms", serde_json::json!({"Filters": {"VmIds": [vm]}})).ok()["Vms"][0]["StateReason"].clone();
    assert!(reason(&there).as_str().unwrap().starts_with("Server.HostUnreachable"), "{}", reason(&there));
    assert!(!reason(&here).as_str().unwrap_or_default().contains("Unreachable"), "{}", reason(&here));
    lab[0].start_agent(None);
    hosts.wait("ready", |_| true);
    assert!(!reason(&there).as_str().unwrap_or_default().contains("Unreachable"), "{}", reason(&there));
    call(c, "RebootVms", serde_json::json!({"VmIds": [there]})).ok();
    wait_console(c, &there, &format!("socle-guest: metadata instance-id {there}"), 2, Duration::from_secs(240));

    // An image of the VM here (its snapshot kept on this machine) boots a
    // VM there: the snapshot is copied to that host, and deleted with it.
    let image2 = call(c, "CreateImage", serde_json::json!({"VmId": here, "ImageName": "made-here"})).ok()["Image"].clone();
    let image2_id = image2["ImageId"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(120);
    let snapshot = loop {
        let shown = call(c, "ReadImages", serde_json::json!({"Filters": {"ImageIds": [image2_id]}})).ok()["Images"][0].clone();
        if shown["State"] == "available" {
            break shown["BlockDeviceMappings"][0]["Bsu"]["SnapshotId"].as_str().unwrap().to_string();
        }
        assert!(Instant::now() < deadline, "the image never became available: {shown}");
        std::thread::sleep(Duration::from_millis(300));
    };
    let copy = lab[0].dir.join("agent/snapshots").join(format!("{snapshot}.qcow2"));
    assert!(!copy.exists(), "the snapshot is made here");
    let subnet_there = vms[0]["SubnetId"].as_str().unwrap();
    let body = serde_json::json!({"ImageId": image2_id, "VmType": SMALL, "SubnetId": subnet_there});
    let from_image = call(c, "CreateVms", body).ok()["Vms"][0]["VmId"].as_str().unwrap().to_string();
    wait_console(c, &from_image, &format!("socle-guest: metadata instance-id {from_image}"), 1, Duration::from_secs(240));
    assert!(lab[0].dir.join("agent/vms").join(&from_image).is_dir(), "the VM is on the other host");
    assert!(copy.is_file(), "the snapshot was copied there");
    let here_file = cloud.data_dir().join("agent/snapshots").join(format!("{snapshot}.qcow2"));
    assert_eq!(std::fs::read(&copy).unwrap(), std::fs::read(&here_file).unwrap(), "the same encrypted file");
    call(c, "DeleteVms", serde_json::json!({"VmIds": [from_image]})).ok();
    wait_state(c, &[from_image], "terminated", Duration::from_secs(120));
    call(c, "DeleteImage", serde_json::json!({"ImageId": image2_id})).ok();
    call(c, "DeleteSnapshot", serde_json::json!({"SnapshotId": snapshot})).ok();
    let deadline = Instant::now() + Duration::from_secs(60);
    while copy.exists() || here_file.exists() {
        assert!(Instant::now() < deadline, "the snapshot or its copy stayed:\n{}", cloud.log_tail());
        std::thread::sleep(Duration::from_millis(300));
    }

    // The VM gone, its host drops the Net; this one keeps its share.
    call(c, "DeleteVms", serde_json::json!({"VmIds": [there]})).ok();
    wait_state(c, &[there], "terminated", Duration::from_secs(120));
    let deadline = Instant::now() + Duration::from_secs(60);
    while lab[0].sh("ip netns list").contains(&wired) {
        assert!(Instant::now() < deadline, "the Net stayed on the other host:\n{}", lab[0].log_tail());
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(namespaces(&prefix), vec![wired], "this machine's share stays");
    call(c, "DeleteVms", serde_json::json!({"VmIds": [here]})).ok();
}

#[test]
fn a_server_without_an_agent_runs_vms_on_the_hosts_that_joined() {
    assert!(unsafe { libc::geteuid() } == 0, "this test needs root (network namespaces, taps, nftables)");
    let (cloud, mut lab) = TestCloud::start_server_with_hosts(1, &[]);
    let hosts = Hosts { cloud: &cloud };
    let c = &cloud.creds;
    // No host yet: no subregion, and no room anywhere (nothing made).
    assert!(hosts.all().is_empty(), "socle server is no host: {:?}", hosts.all());
    assert!(subregions(c).is_empty());
    let image = cloud.tiny_image();
    create_vms(c, serde_json::json!({"ImageId": image, "VmType": SMALL})).expect_error(503, "10001");
    assert!(call(c, "ReadVms", serde_json::json!({})).ok()["Vms"].as_array().unwrap().is_empty());

    let token = hosts.token("eu-west-2a");
    lab[0].start_agent(Some((&c.endpoint, &token)));
    hosts.wait("ready", |h| h["Vcpus"].as_i64().unwrap() > 0);
    assert_eq!(subregions(c), vec!["eu-west-2a"]);

    // A VM of the public cloud: made, booted and wired on the host.
    let vm = call(c, "CreateVms", serde_json::json!({"ImageId": image, "VmType": SMALL})).ok()["Vms"][0].clone();
    let (id, ip) = (vm["VmId"].as_str().unwrap(), vm["PrivateIp"].as_str().unwrap());
    wait_console(c, id, &format!("socle-guest: net eth0 {ip}/16 gw 10.0.0.1"), 1, Duration::from_secs(240));
    wait_console(c, id, &format!("socle-guest: metadata instance-id {id}"), 1, Duration::from_secs(60));
    assert!(lab[0].dir.join("agent/vms").join(id).is_dir());
    assert!(!cloud.data_dir().join("agent").exists(), "the server ran no agent");

    // An upload travels to the host, which inspects it there: a file that
    // is no disk is refused by the host, and nothing of it stays.
    let disk = cloud.slot.subdir("upload").join("disk.raw");
    std::fs::write(&disk, vec![0u8; (5 << 20) + 7]).unwrap();
    let out = cloud.socle().args(["image", "import"]).arg(&disk).args(["--name", "refused", "--data-dir"]).arg(cloud.data_dir()).output_within(CLI_TIMEOUT);
    assert!(!out.status.success() && text(&out).contains("not a disk image"), "{}", text(&out));
    assert!(files_under(&lab[0].dir.join("agent/uploads")).is_empty(), "{:?}", files_under(&lab[0].dir.join("agent/uploads")));
    assert!(files_under(&cloud.data_dir().join("uploads")).is_empty());
    // A disk (a boot signature is all a raw disk needs to be taken) becomes
    // an encrypted snapshot on that host.
    let mut bytes = vec![0u8; 1 << 20];
    bytes[510..512].copy_from_slice(&[0x55, 0xaa]);
    std::fs::write(&disk, &bytes).unwrap();
    let out = cloud.socle().args(["image", "import"]).arg(&disk).args(["--name", "taken", "--json", "--data-dir"]).arg(cloud.data_dir()).output_within(CLI_TIMEOUT);
    assert!(out.status.success(), "{}", text(&out));
    let image: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(image["State"], "available", "{image}");
    let snapshot = image["BlockDeviceMappings"][0]["Bsu"]["SnapshotId"].as_str().unwrap();
    assert!(lab[0].dir.join("agent/snapshots").join(format!("{snapshot}.qcow2")).is_file());
    let deadline = Instant::now() + Duration::from_secs(60);
    while !files_under(&lab[0].dir.join("agent/uploads")).is_empty() {
        assert!(Instant::now() < deadline, "the upload stayed on the host once imported");
        std::thread::sleep(Duration::from_millis(300));
    }

    call(c, "DeleteVms", serde_json::json!({"VmIds": [id]})).ok();
    wait_state(c, &[id.to_string()], "terminated", Duration::from_secs(120));
    // The host still keeps the image's snapshot: it is not removed.
    let host_id = hosts.list()[0]["HostId"].as_str().unwrap().to_string();
    let out = hosts.run(&["remove", &host_id]);
    // (The VM's root volume may still be on its way out.)
    assert!(!out.status.success() && text(&out).contains("0 VM(s)") && text(&out).contains("and 1 snapshot(s)"), "{}", text(&out));
    assert_eq!(hosts.list().len(), 1);
}

//! The test harness itself: a test run SIGKILLed while a test's cloud runs
//! a guest on a Net leaves no process, namespace, link, nftables table or
//! file behind once the test's slot is swept (by the watcher the slot started,
//! then by the sweep a next run does first), and neither sweep touches a
//! `socle up` of the user's own, started outside the suite with the
//! default network prefix.

mod common;

use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const T: Duration = Duration::from_secs(300);
/// Where the child test writes its slot once its guest runs.
const CHILD_REPORT: &str = "SOCLE_HARNESS_CHILD_REPORT";

#[test]
#[ignore = "the child that a_test_killed_with_a_running_guest_leaves_nothing_behind starts and SIGKILLs"]
fn child_cloud_with_a_guest_on_a_net() {
    let report = std::env::var(CHILD_REPORT).expect("started by a_test_killed_with_a_running_guest_leaves_nothing_behind");
    let cloud = TestCloud::start();
    let c = &cloud.creds;
    let net = create(c, "CreateNet", json!({"IpRange": "10.0.0.0/16"}), "Net")["NetId"].as_str().unwrap().to_string();
    let subnet = create(c, "CreateSubnet", json!({"NetId": net, "IpRange": "10.0.1.0/24"}), "Subnet")["SubnetId"].as_str().unwrap().to_string();
    let vm = vm_in(c, &cloud.tiny_image(), Some(&subnet), None, &[], "#!/bin/sh\necho child-guest-up\n");
    wait_console(c, vm["VmId"].as_str().unwrap(), "child-guest-up", 1, T);
    std::fs::write(&report, cloud.slot.index().to_string()).unwrap();
    // Until killed.
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
fn a_test_killed_with_a_running_guest_leaves_nothing_behind() {
    let work = tempfile::tempdir().unwrap();
    let users_cloud = users_own_cloud(work.path());

    let report = work.path().join("child-slot");
    let log = std::fs::File::create(work.path().join("child.log")).unwrap();
    // A runner (as nextest is) whose test is the child: the runner is what
    // gets SIGKILLed, as when a run is killed, and the test process, in a
    // process group of its own as nextest puts it, must not run on.
    let mut cmd = Command::new("sh");
    socle_testkit::die_with_parent(&mut cmd);
    let mut runner = cmd
        .args(["-c", "setsid \"$0\" --exact child_cloud_with_a_guest_on_a_net --ignored --nocapture & wait"])
        .arg(std::env::current_exe().unwrap())
        .env(CHILD_REPORT, &report)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let child_log = || std::fs::read_to_string(work.path().join("child.log")).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(600);
    while !report.exists() {
        if let Some(status) = runner.try_wait().unwrap() {
            panic!("the child test ended ({status}) before its guest ran:\n{}", child_log());
        }
        assert!(Instant::now() < deadline, "the child's guest did not run within 10 minutes:\n{}", child_log());
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(100));
    let index: u32 = std::fs::read_to_string(&report).unwrap().trim().parse().unwrap();
    let slot_dir = socle_testkit::test_root().join(format!("slot-{index:02}"));
    let prefix = format!("ts{index:02x}");
    // What there is to leave behind: a guest, dnsmasq, a namespace, tables.
    assert!(!processes_naming(&slot_dir).is_empty(), "the child's cloud runs nothing?");
    assert!(!net_objects(&prefix).is_empty(), "the child's cloud wired no network?");

    runner.kill().unwrap();
    runner.wait().unwrap();
    // The slot's watcher sweeps at once; the slot is free when it is done.
    let deadline = Instant::now() + Duration::from_secs(120);
    while !slot_is_free(index) {
        assert!(Instant::now() < deadline, "slot {index} still held 2 minutes after its test was killed");
        std::thread::sleep(Duration::from_millis(100));
    }
    // And what a next run does first.
    let out = socle_testkit::output_within(
        Command::new("bash").arg(socle_testkit::sweep_script()).arg("--stale"),
        Duration::from_secs(120),
    );
    assert!(out.status.success(), "sweep.sh --stale: {}", String::from_utf8_lossy(&out.stderr));

    assert_eq!(processes_naming(&slot_dir), Vec::<String>::new(), "processes of the killed test remain");
    assert_eq!(net_objects(&prefix), Vec::<String>::new(), "network objects of the killed test remain");
    assert!(!slot_dir.exists(), "{} remains", slot_dir.display());

    if let Some(mut users_cloud) = users_cloud {
        assert!(users_cloud.0.try_wait().unwrap().is_none(), "the sweeps ended the user's own socle up");
    }
}

/// A `socle up` as a user would start it, outside the suite: the default
/// network prefix, a data dir of its own. None, with the reason printed,
/// when the host already has networks of the default prefix (a real cloud
/// of the user's: a second one with that prefix would tidy its networks).
fn users_own_cloud(work: &Path) -> Option<KillOnDrop> {
    if !net_objects("socle").is_empty() {
        println!("not starting a socle up of the default prefix: this host has networks of a real one ({:?})", net_objects("socle"));
        return None;
    }
    let dir = work.join("users-own-cloud");
    let port = free_port();
    let mut cmd = Command::new(socle_bin());
    socle_testkit::die_with_parent(&mut cmd);
    let log = std::fs::File::create(work.join("users-own-cloud.log")).unwrap();
    let child = cmd
        .args(["up", "--data-dir"])
        .arg(&dir)
        .args(["--listen", &format!("127.0.0.1:{port}"), "--accel", "tcg"])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let endpoint = format!("http://127.0.0.1:{port}/api/v1");
    let deadline = Instant::now() + Duration::from_secs(600);
    while !try_raw_call(&endpoint, None, "ReadRegions", b"{}", &[]).is_ok_and(|a| a.status == 200) {
        assert!(child.0.try_wait().unwrap().is_none(), "the user's socle up exited: {}", std::fs::read_to_string(work.join("users-own-cloud.log")).unwrap_or_default());
        assert!(Instant::now() < deadline, "the user's socle up never answered");
        std::thread::sleep(Duration::from_millis(200));
    }
    Some(child)
}

/// Command lines of the processes that name `dir`.
fn processes_naming(dir: &Path) -> Vec<String> {
    let needle = dir.to_string_lossy().to_string();
    let mut found = vec![];
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if entry.file_name().to_string_lossy().parse::<u32>().is_err() {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(&format!("{needle}/")) || cmdline.contains(&format!("{needle} ")) {
            found.push(cmdline);
        }
    }
    found
}

/// Namespaces, root-namespace links and nftables tables named `prefix…`.
fn net_objects(prefix: &str) -> Vec<String> {
    let run = |args: &[&str]| {
        let out = socle_testkit::output_within(Command::new(args[0]).args(&args[1..]), Duration::from_secs(30));
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let mut found = vec![];
    for ns in run(&["ip", "netns", "list"]).lines().filter_map(|l| l.split_whitespace().next()) {
        if ns.starts_with(prefix) {
            found.push(format!("namespace {ns}"));
        }
    }
    for line in run(&["ip", "-o", "link", "show"]).lines() {
        let name = line.split(':').nth(1).unwrap_or_default().trim().split('@').next().unwrap_or_default();
        if name.starts_with(prefix) {
            found.push(format!("link {name}"));
        }
    }
    for line in run(&["nft", "list", "tables"]).lines() {
        if line.split_whitespace().nth(2).is_some_and(|t| t.starts_with(prefix)) {
            found.push(line.to_string());
        }
    }
    found
}

fn slot_is_free(index: u32) -> bool {
    let lock = std::fs::File::open(socle_testkit::test_root().join(format!("slot-{index:02}.lock"))).unwrap();
    // SAFETY: flock on a file we own; the lock goes with the file.
    unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

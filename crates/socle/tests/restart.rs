//! VMs outlive the control plane: SIGKILL `socle up`, start it again, and
//! every guest is re-attached — none lost, none duplicated.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

#[test]
fn sigkill_and_restart_reattaches_guests() {
    let mut cloud = TestCloud::start();
    let c = cloud.creds.clone();
    let image = cloud.tiny_image();
    let out = call(&c, "CreateVms", json!({"ImageId": image, "VmType": SMALL, "MinVmsCount": 2, "MaxVmsCount": 2})).ok();
    let vms = ids(&out["Vms"]);
    wait_state(&c, &vms, "running", Duration::from_secs(120));
    for vm in &vms {
        wait_console(&c, vm, "socle-guest: ready", 1, Duration::from_secs(120));
    }
    let pids = cloud.qemu_pids();
    assert_eq!(pids.len(), 2);
    let b = cloud.new_account("bob");
    call(&b, "CreateKeypair", json!({"KeypairName": "k"})).ok();

    cloud.kill_hard();
    // The guests did not notice.
    assert_eq!(cloud.qemu_pids(), pids, "guests died with the control plane");

    cloud.launch(&[]);
    assert_eq!(cloud.creds.access_key, c.access_key, "credentials changed across restart");
    let states = wait_state(&c, &vms, "running", Duration::from_secs(30));
    assert_eq!(states.len(), 2);
    assert_eq!(cloud.qemu_pids(), pids, "restart started duplicates or lost a guest");
    // Accounts and keys survive.
    let keys = call(&b, "ReadKeypairs", json!({})).ok();
    assert_eq!(keys["Keypairs"][0]["KeypairName"], "k");
    // The re-attached guests are fully controllable.
    call(&c, "RebootVms", json!({"VmIds": [vms[0]]})).ok();
    wait_console(&c, &vms[0], "socle-guest: ready", 2, Duration::from_secs(120));
    call(&c, "StopVms", json!({"VmIds": [vms[0]]})).ok();
    wait_state(&c, &vms[..1], "stopped", Duration::from_secs(60));
    assert_eq!(cloud.qemu_pids().len(), 1);

    // A clean stop (SIGTERM) keeps everything too.
    cloud.stop_clean();
    assert_eq!(cloud.qemu_pids().len(), 1, "SIGTERM must not stop guests");
    cloud.launch(&[]);
    wait_state(&c, &vms[1..], "running", Duration::from_secs(30));
    let out = call(&c, "ReadVms", json!({"Filters": {"VmIds": [vms[0]]}})).ok();
    assert_eq!(out["Vms"][0]["State"], "stopped");

    call(&c, "DeleteVms", json!({"VmIds": vms})).ok();
    wait_state(&c, &vms, "terminated", Duration::from_secs(30));
    assert!(cloud.qemu_pids().is_empty());
}

#[test]
fn restart_with_a_dead_guest_starts_it_again_and_removes_orphans() {
    let mut cloud = TestCloud::start();
    let c = cloud.creds.clone();
    let image = cloud.tiny_image();
    let out = call(&c, "CreateVms", json!({"ImageId": image, "VmType": SMALL})).ok();
    let vms = ids(&out["Vms"]);
    wait_state(&c, &vms, "running", Duration::from_secs(120));
    wait_console(&c, &vms[0], "socle-guest: ready", 1, Duration::from_secs(120));
    cloud.kill_hard();
    // Simulate a host reboot for this guest: its QEMU is gone.
    for pid in cloud.qemu_pids() {
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    // And a crash that left a VM directory the database never committed.
    let orphan = cloud.data_dir().join("agent/vms/i-0badc0de");
    std::fs::create_dir_all(&orphan).unwrap();
    std::fs::write(orphan.join("spec.json"), "{}").unwrap();
    std::thread::sleep(Duration::from_millis(300));

    cloud.launch(&[]);
    wait_state(&c, &vms, "running", Duration::from_secs(120));
    wait_console(&c, &vms[0], "socle-guest: ready", 2, Duration::from_secs(120));
    assert_eq!(cloud.qemu_pids().len(), 1);
    assert!(!orphan.exists(), "orphan VM directory survived the restart");
}

/// The agent as a process of its own (`socle agent`, as on every host of a
/// multi-host cloud), driven by `socle up --agent`. SIGKILLed, its guest
/// keeps running; while it is down, what needs the host answers 503 code 6
/// (retry) and the state is untouched; started again on its state dir, it
/// takes the guest back — no duplicate — and the cloud drives it as before.
#[test]
fn an_agent_killed_and_started_again_keeps_its_guests() {
    const T: Duration = Duration::from_secs(120);
    let mut cloud = TestCloud::start_with_separate_agent();
    let c = cloud.creds.clone();
    let image = cloud.tiny_image();
    let vms = ids(&call(&c, "CreateVms", json!({"ImageId": image, "VmType": SMALL})).ok()["Vms"]);
    wait_state(&c, &vms, "running", T);
    wait_console(&c, &vms[0], "socle-guest: ready", 1, T);
    let pids = cloud.qemu_pids();
    assert_eq!(pids.len(), 1);

    cloud.kill_agent();
    assert_eq!(cloud.qemu_pids(), pids, "the guest died with its agent");
    call(&c, "ReadConsoleOutput", json!({"VmId": vms[0]})).expect_error(503, "6");
    // A VM asked for while the host is away waits for it, it does not fail.
    let later = ids(&call(&c, "CreateVms", json!({"ImageId": image, "VmType": SMALL})).ok()["Vms"]);
    std::thread::sleep(Duration::from_secs(3));
    let out = call(&c, "ReadVms", json!({"Filters": {"VmIds": [vms[0].clone(), later[0].clone()]}})).ok();
    for vm in out["Vms"].as_array().unwrap() {
        let want = if vm["VmId"] == vms[0].as_str() { "running" } else { "pending" };
        assert_eq!(vm["State"], want, "{vm}");
    }

    cloud.start_agent();
    wait_state(&c, &later, "running", T);
    let now = cloud.qemu_pids();
    assert_eq!(now.len(), 2, "one guest kept, one started: {now:?}");
    assert!(now.contains(&pids[0]), "the first guest was started again instead of kept");
    call(&c, "RebootVms", json!({"VmIds": vms})).ok();
    wait_console(&c, &vms[0], "socle-guest: ready", 2, T);
    let all = [vms, later].concat();
    call(&c, "DeleteVms", json!({"VmIds": all})).ok();
    wait_state(&c, &all, "terminated", T);
    assert!(cloud.qemu_pids().is_empty());
}

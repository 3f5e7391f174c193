//! A VM's whole life through the API, on a real QEMU guest.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const BOOT: Duration = Duration::from_secs(120);

fn qemu_cmdline(cloud: &TestCloud) -> String {
    let pids = cloud.qemu_pids();
    assert_eq!(pids.len(), 1, "expected exactly one QEMU, found {pids:?}");
    String::from_utf8_lossy(&std::fs::read(format!("/proc/{}/cmdline", pids[0])).unwrap()).replace('\0', " ")
}

#[test]
fn vm_lifecycle_end_to_end() {
    let cloud = TestCloud::start();
    let c = &cloud.creds;
    let image = cloud.tiny_image();

    // Create: answered at once with a pending VM.
    let out = call(c, "CreateVms", json!({"ImageId": image, "VmType": SMALL, "UserData": "aGVsbG8="})).ok();
    let vm = out["Vms"][0].clone();
    assert_eq!(vm["State"], "pending");
    assert_eq!(vm["VmType"], SMALL);
    assert_eq!(vm["Placement"]["SubregionName"], "eu-west-2a");
    let id = vm["VmId"].as_str().unwrap().to_string();
    assert!(id.starts_with("i-") && id.len() == 10);
    let vms = wait_state(c, std::slice::from_ref(&id), "running", BOOT);
    assert_eq!(vms[0]["ReservationId"], vm["ReservationId"]);
    // Its root disk is an encrypted volume of its own, deleted with it.
    let root = &vms[0]["BlockDeviceMappings"][0];
    assert_eq!(root["DeviceName"], "/dev/sda1");
    assert_eq!(root["Bsu"]["DeleteOnVmDeletion"], true);
    let root_id = root["Bsu"]["VolumeId"].as_str().unwrap().to_string();
    let vols = call(c, "ReadVolumes", json!({"Filters": {"LinkVolumeVmIds": [id]}})).ok();
    assert_eq!(vols["Volumes"][0]["VolumeId"], root_id.as_str());
    assert_eq!(vols["Volumes"][0]["State"], "in-use");
    call(c, "UnlinkVolume", json!({"VolumeId": root_id})).expect_error(400, "6007");
    // "running" means QEMU runs the guest: its console reaches userspace.
    let text = wait_console(c, &id, "socle-guest: ready", 1, BOOT);
    assert!(text.contains(&format!("socle-guest: vm-id {id}")), "{text}");
    assert!(qemu_cmdline(&cloud).contains("-m 1024M"), "tinav5.c1r1p2 has 1 GiB");

    let states = call(c, "ReadVmsState", json!({})).ok();
    assert_eq!(states["VmStates"][0]["VmState"], "running");

    // Reboot: the guest comes up a second time, same process.
    let pid = cloud.qemu_pids();
    call(c, "RebootVms", json!({"VmIds": [id]})).ok();
    wait_console(c, &id, "socle-guest: ready", 2, BOOT);
    assert_eq!(cloud.qemu_pids(), pid);

    // Type changes need a stopped VM.
    call(c, "UpdateVm", json!({"VmId": id, "VmType": "tinav5.c2r2p2"})).expect_error(400, "6006");

    // Graceful stop: the guest runs its shutdown, QEMU exits.
    let started = Instant::now();
    let out = call(c, "StopVms", json!({"VmIds": [id]})).ok();
    assert_eq!(out["Vms"][0]["PreviousState"], "running");
    assert_eq!(out["Vms"][0]["CurrentState"], "stopping");
    wait_state(c, std::slice::from_ref(&id), "stopped", Duration::from_secs(60));
    assert!(started.elapsed() < Duration::from_secs(20), "graceful stop hit the 20 s timeout");
    assert!(console(c, &id).contains("socle-guest: shutting down"), "no guest shutdown on the console");
    assert!(cloud.qemu_pids().is_empty());

    // Resize while stopped, start, and the new shape is what QEMU runs.
    let out = call(c, "UpdateVm", json!({"VmId": id, "VmType": "tinav5.c2r2p2", "DeletionProtection": true})).ok();
    assert_eq!(out["Vm"]["VmType"], "tinav5.c2r2p2");
    call(c, "StartVms", json!({"VmIds": [id]})).ok();
    wait_state(c, std::slice::from_ref(&id), "running", BOOT);
    let cmd = qemu_cmdline(&cloud);
    assert!(cmd.contains("-smp 2") && cmd.contains("-m 2048M"), "{cmd}");
    wait_console(c, &id, "socle-guest: ready", 3, BOOT);

    // Forced stop then start again.
    call(c, "StopVms", json!({"VmIds": [id], "ForceStop": true})).ok();
    wait_state(c, std::slice::from_ref(&id), "stopped", Duration::from_secs(30));
    call(c, "StartVms", json!({"VmIds": [id]})).ok();
    wait_state(c, std::slice::from_ref(&id), "running", BOOT);

    // Deletion protection holds until turned off.
    call(c, "DeleteVms", json!({"VmIds": [id]})).expect_error(400, "9029");
    call(c, "UpdateVm", json!({"VmId": id, "DeletionProtection": false})).ok();
    let out = call(c, "DeleteVms", json!({"VmIds": [id]})).ok();
    assert_eq!(out["Vms"][0]["CurrentState"], "shutting-down");
    wait_state(c, std::slice::from_ref(&id), "terminated", Duration::from_secs(30));
    assert!(cloud.qemu_pids().is_empty(), "QEMU left after termination");
    assert!(
        !cloud.data_dir().join("agent/vms").join(&id).exists(),
        "VM files left after termination"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !call(c, "ReadVolumes", json!({})).ok()["Volumes"].as_array().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "root volume not deleted with its VM");
        std::thread::sleep(Duration::from_millis(300));
    }
    // Terminated VMs stay visible for a while, and free the quota.
    let out = call(c, "ReadVms", json!({"Filters": {"VmStateNames": ["terminated"]}})).ok();
    assert_eq!(ids(&out["Vms"]), vec![id.clone()]);
    call(c, "StartVms", json!({"VmIds": [id]})).expect_error(400, "6006");
    let quotas = call(c, "ReadQuotas", json!({})).ok();
    let vm_quota = quotas["QuotaTypes"][0]["Quotas"].as_array().unwrap().iter().find(|q| q["Name"] == "vm_limit").unwrap().clone();
    assert_eq!(vm_quota["UsedValue"], 0);
}

#[test]
fn several_vms_from_one_call_with_client_token() {
    let cloud = TestCloud::start();
    let c = &cloud.creds;
    let image = cloud.tiny_image();
    let req = json!({"ImageId": image, "VmType": SMALL, "MinVmsCount": 2, "MaxVmsCount": 2, "ClientToken": "tok-1"});
    let first = call(c, "CreateVms", req.clone()).ok();
    let again = call(c, "CreateVms", req).ok();
    let (a, b) = (ids(&first["Vms"]), ids(&again["Vms"]));
    assert_eq!(a.len(), 2);
    assert_eq!(a, b, "same ClientToken must return the same VMs");
    // Same token, different parameters: refused.
    call(c, "CreateVms", json!({"ImageId": image, "VmType": SMALL, "ClientToken": "tok-1"})).expect_error(400, "4047");
    let all = call(c, "ReadVms", json!({})).ok();
    assert_eq!(all["Vms"].as_array().unwrap().len(), 2);
    wait_state(c, &a, "running", BOOT);
    for id in &a {
        wait_console(c, id, "socle-guest: ready", 1, BOOT);
    }
    assert_eq!(cloud.qemu_pids().len(), 2);
    call(c, "DeleteVms", json!({"VmIds": a})).ok();
    wait_state(c, &a, "terminated", Duration::from_secs(30));
    assert!(cloud.qemu_pids().is_empty());
}

//! Images made from VMs: the root disk's content travels into new VMs, and
//! launch permissions decide who can see and use an image.

mod common;

use std::time::Duration;

use base64::Engine;
use common::*;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(120);

fn user_data(script: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(script)
}

fn wait_image(c: &Creds, id: &str, state: &str) -> Value {
    let deadline = std::time::Instant::now() + T;
    loop {
        let out = call(c, "ReadImages", json!({"Filters": {"ImageIds": [id]}})).ok();
        if out["Images"][0]["State"] == state {
            return out["Images"][0].clone();
        }
        assert!(std::time::Instant::now() < deadline, "image {id} not {state}: {out}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn an_image_from_a_vm_carries_its_root_disk_to_other_accounts_it_is_shared_with() {
    let mut cloud = TestCloud::start();
    let a = cloud.creds.clone();
    let b = cloud.new_account("bob");
    let tiny = cloud.tiny_image();

    // A writes a pattern on its VM's root disk (the pattern is assembled in the guest).
    let writer = "#!/bin/sh\np=\"SOCLE\"\"IMG$((6*7))\"\necho \"$p\" | dd of=/dev/vda bs=1M seek=64 conv=fsync 2>/dev/null && sync && echo socle-test: wrote\n";
    let vm = call(&a, "CreateVms", json!({"ImageId": tiny, "VmType": SMALL, "UserData": user_data(writer)})).ok()["Vms"][0]["VmId"].as_str().unwrap().to_string();
    wait_state(&a, std::slice::from_ref(&vm), "running", T);
    wait_console(&a, &vm, "socle-test: wrote", 1, T);

    // Bad inputs.
    call(&a, "CreateImage", json!({"VmId": vm})).expect_error(400, "7000");
    call(&a, "CreateImage", json!({"VmId": vm, "ImageName": "x"})).expect_error(400, "4106");
    call(&a, "CreateImage", json!({"ImageName": "no-vm"})).expect_error(400, "7000");
    call(&b, "CreateImage", json!({"VmId": vm, "ImageName": "stolen"})).expect_error(400, "5063");
    call(&a, "CreateImage", json!({"VmId": vm, "ImageName": "src", "SourceImageId": tiny})).expect_error(400, "4047");

    let out = call(&a, "CreateImage", json!({"VmId": vm, "ImageName": "golden-1", "Description": "with pattern"})).ok();
    let image = out["Image"]["ImageId"].as_str().unwrap().to_string();
    assert_eq!(out["Image"]["State"], "pending");
    let img = wait_image(&a, &image, "available");
    assert_eq!(img["AccountId"], call(&a, "ReadQuotas", json!({})).ok()["QuotaTypes"][0]["Quotas"][0]["AccountId"]);
    let snap = img["BlockDeviceMappings"][0]["Bsu"]["SnapshotId"].as_str().unwrap().to_string();
    call(&a, "CreateImage", json!({"VmId": vm, "ImageName": "golden-1"})).expect_error(400, "4047");
    // Its snapshot cannot go while the image uses it.
    call(&a, "DeleteSnapshot", json!({"SnapshotId": snap})).expect_error(400, "6003");

    // B neither sees nor launches it…
    assert!(call(&b, "ReadImages", json!({"Filters": {"ImageIds": [image]}})).ok()["Images"].as_array().unwrap().is_empty());
    call(&b, "CreateVms", json!({"ImageId": image})).expect_error(400, "5023");
    call(&b, "UpdateImage", json!({"ImageId": image, "Description": "mine now"})).expect_error(400, "5023");
    // …until A shares it.
    let b_id = call(&b, "ReadQuotas", json!({})).ok()["QuotaTypes"][0]["Quotas"][0]["AccountId"].as_str().unwrap().to_string();
    let shared = call(&a, "UpdateImage", json!({"ImageId": image, "PermissionsToLaunch": {"Additions": {"AccountIds": [b_id]}}})).ok();
    assert_eq!(shared["Image"]["PermissionsToLaunch"]["AccountIds"][0], b_id.as_str());
    let seen = call(&b, "ReadImages", json!({"Filters": {"ImageIds": [image]}})).ok();
    assert!(seen["Images"][0]["PermissionsToLaunch"]["AccountIds"].as_array().unwrap().is_empty(), "B sees A's share list");

    // B's VM from it reads A's pattern from its own root disk.
    let reader = "#!/bin/sh\necho \"socle-test: found $(dd if=/dev/vda bs=1M skip=64 count=1 2>/dev/null | head -c 14)\"\n";
    let vm_b = call(&b, "CreateVms", json!({"ImageId": image, "VmType": SMALL, "UserData": user_data(reader)})).ok()["Vms"][0]["VmId"].as_str().unwrap().to_string();
    wait_state(&b, std::slice::from_ref(&vm_b), "running", T);
    let text = wait_console(&b, &vm_b, "socle-test: found", 1, T);
    assert!(text.contains("socle-test: found SOCLEIMG42"), "{text}");

    // Only the owner deletes; the VM made from it lives on, and restarts.
    call(&b, "DeleteImage", json!({"ImageId": image})).expect_error(400, "5023");
    call(&a, "DeleteImage", json!({"ImageId": image})).ok();
    assert!(call(&b, "ReadImages", json!({"Filters": {"ImageIds": [image]}})).ok()["Images"].as_array().unwrap().is_empty());
    call(&b, "StopVms", json!({"VmIds": [vm_b], "ForceStop": true})).ok();
    wait_state(&b, std::slice::from_ref(&vm_b), "stopped", T);
    call(&b, "StartVms", json!({"VmIds": [vm_b]})).ok();
    wait_state(&b, std::slice::from_ref(&vm_b), "running", T);
    wait_console(&b, &vm_b, "socle-test: found SOCLEIMG42", 2, T);
    // Now the snapshot can go.
    call(&a, "DeleteSnapshot", json!({"SnapshotId": snap})).ok();

    // Everything survives a restart of the control plane.
    cloud.stop_clean();
    cloud.launch(&[]);
    call(&a, "DeleteVms", json!({"VmIds": [vm]})).ok();
    call(&b, "DeleteVms", json!({"VmIds": [vm_b]})).ok();
    wait_state(&a, &[vm], "terminated", T);
    wait_state(&b, &[vm_b], "terminated", T);
}

//! Block storage through the API with real guests: data written inside a
//! guest survives snapshot → new volume → another VM, is encrypted at rest,
//! and every operation checks the caller's account.

mod common;

use std::time::Duration;

use base64::Engine;
use common::*;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(120);

fn user_data(script: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(script)
}

fn wait_volume(c: &Creds, id: &str, state: &str) -> Value {
    let deadline = std::time::Instant::now() + T;
    loop {
        let out = call(c, "ReadVolumes", json!({"Filters": {"VolumeIds": [id]}})).ok();
        let v = out["Volumes"][0].clone();
        if v["State"] == state && (v["LinkedVolumes"].as_array().is_none_or(|l| l.iter().all(|x| x["State"] != "attaching" && x["State"] != "detaching"))) {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "volume {id} not {state}: {out}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn wait_snapshot(c: &Creds, id: &str) -> Value {
    let deadline = std::time::Instant::now() + T;
    loop {
        let out = call(c, "ReadSnapshots", json!({"Filters": {"SnapshotIds": [id]}})).ok();
        if out["Snapshots"][0]["State"] == "completed" {
            return out["Snapshots"][0].clone();
        }
        assert!(std::time::Instant::now() < deadline, "snapshot {id} not completed: {out}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn create_volume(c: &Creds, body: Value) -> String {
    let out = call(c, "CreateVolume", body).ok();
    assert_eq!(out["Volume"]["State"], "creating");
    let id = out["Volume"]["VolumeId"].as_str().unwrap().to_string();
    wait_volume(c, &id, "available");
    id
}

fn vm_with(c: &Creds, image: &str, script: &str) -> String {
    let out = call(c, "CreateVms", json!({"ImageId": image, "VmType": SMALL, "UserData": user_data(script)})).ok();
    let id = out["Vms"][0]["VmId"].as_str().unwrap().to_string();
    wait_state(c, std::slice::from_ref(&id), "running", T);
    id
}

#[test]
fn data_survives_snapshot_and_new_volume_and_is_encrypted_at_rest() {
    let cloud = TestCloud::start();
    let c = &cloud.creds;
    let image = cloud.tiny_image();
    let vol = create_volume(c, json!({"SubregionName": "eu-west-2a", "Size": 1, "VolumeType": "gp2"}));
    // The pattern is assembled in the guest so that it appears nowhere in
    // clear on the host except where the guest wrote it (the volume).
    let writer = format!(
        "#!/bin/sh\ndev=$(socle-disks wait {vol} 120) || exit 1\np=\"SOCLE\"\"PATTERN$((6*7))\"\n\
         i=0; while [ $i -lt 2000 ]; do echo \"$p-$i\"; i=$((i+1)); done > /tmp/data\n\
         dd if=/tmp/data of=$dev bs=4096 conv=fsync 2>/dev/null && sync && echo \"socle-test: wrote $(md5sum < /tmp/data | cut -c1-32)\"\n"
    );
    let vm1 = vm_with(c, &image, &writer);
    call(c, "LinkVolume", json!({"VmId": vm1, "VolumeId": vol, "DeviceName": "/dev/xvdb"})).ok();
    let v = wait_volume(c, &vol, "in-use");
    assert_eq!(v["LinkedVolumes"][0]["VmId"], vm1.as_str());
    assert_eq!(v["LinkedVolumes"][0]["State"], "attached");
    let text = wait_console(c, &vm1, "socle-test: wrote", 1, T);
    let sum = text.split("socle-test: wrote ").nth(1).unwrap()[..32].to_string();
    let vms = call(c, "ReadVms", json!({"Filters": {"VmIds": [vm1]}})).ok();
    // After the root disk (/dev/sda1) comes the linked volume.
    let mapping = &vms["Vms"][0]["BlockDeviceMappings"][1];
    assert_eq!((mapping["DeviceName"].as_str(), mapping["Bsu"]["VolumeId"].as_str()), (Some("/dev/xvdb"), Some(vol.as_str())));

    // Snapshot while linked to the running VM.
    let snap = call(c, "CreateSnapshot", json!({"VolumeId": vol, "Description": "round trip"})).ok();
    let snap_id = snap["Snapshot"]["SnapshotId"].as_str().unwrap().to_string();
    let s = wait_snapshot(c, &snap_id);
    assert_eq!((s["Progress"].as_i64(), s["VolumeSize"].as_i64()), (Some(100), Some(1)));
    let vol2 = create_volume(c, json!({"SubregionName": "eu-west-2a", "SnapshotId": snap_id, "Size": 2}));

    // A second VM reads the pattern back from the copy.
    let reader = format!(
        "#!/bin/sh\ndev=$(socle-disks wait {vol2} 120) || exit 1\n\
         n=$(head -c 1000000 $dev | grep -c PATTERN42)\n\
         echo \"socle-test: read $(head -c {len} $dev | md5sum | cut -c1-32) lines=$n\"\n",
        len = (0..2000).map(|i| format!("SOCLEPATTERN42-{i}\n").len()).sum::<usize>()
    );
    let vm2 = vm_with(c, &image, &reader);
    call(c, "LinkVolume", json!({"VmId": vm2, "VolumeId": vol2, "DeviceName": "/dev/xvdc"})).ok();
    let text = wait_console(c, &vm2, "socle-test: read", 1, T);
    assert!(text.contains(&format!("socle-test: read {sum} lines=2000")), "pattern not read back intact:\n{text}");

    // Nothing under the data dir holds the pattern in clear.
    let mut all = vec![];
    all.extend(files_under(cloud.data_dir()));
    for f in &all {
        let bytes = std::fs::read(f).unwrap_or_default();
        assert!(!bytes.windows(14).any(|w| w == b"SOCLEPATTERN42"), "plaintext found in {}", f.display());
    }

    // Unlink (hot), then delete everything: no file left.
    call(c, "UnlinkVolume", json!({"VolumeId": vol})).ok();
    wait_volume(c, &vol, "available");
    wait_console(c, &vm1, &format!("disk removed vdb serial={vol}"), 1, T);
    call(c, "DeleteVolume", json!({"VolumeId": vol2})).expect_error(400, "6007"); // still linked
    call(c, "DeleteVms", json!({"VmIds": [vm1, vm2]})).ok();
    wait_state(c, &[vm1, vm2], "terminated", T);
    wait_volume(c, &vol2, "available");
    for v in [&vol, &vol2] {
        call(c, "DeleteVolume", json!({"VolumeId": v})).ok();
    }
    call(c, "DeleteSnapshot", json!({"SnapshotId": snap_id})).ok();
    let deadline = std::time::Instant::now() + T;
    loop {
        let vols = call(c, "ReadVolumes", json!({})).ok();
        let snaps = call(c, "ReadSnapshots", json!({})).ok();
        if vols["Volumes"].as_array().unwrap().is_empty() && snaps["Snapshots"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not deleted: {vols} {snaps}");
        std::thread::sleep(Duration::from_millis(300));
    }
    let mut left = vec![];
    for d in ["agent/volumes", "agent/snapshots"] {
        left.extend(files_under(&cloud.data_dir().join(d)));
    }
    assert!(left.is_empty(), "files left: {left:?}");
}

#[test]
fn volumes_check_accounts_inputs_and_capacity() {
    let mut cloud = TestCloud::start();
    cloud.stop_clean();
    cloud.launch(&["--storage-capacity-gib", "20"]);
    let a = cloud.creds.clone();
    let b = cloud.new_account("bob");
    let image = cloud.tiny_image();

    // Bad inputs change nothing.
    let bad = [
        (json!({"SubregionName": "eu-west-2a", "Size": 0}), "4078"),
        (json!({"SubregionName": "eu-west-2a", "Size": 1, "VolumeType": "io1"}), "7000"),
        (json!({"SubregionName": "eu-west-2a", "Size": 1, "VolumeType": "gp2", "Iops": 100}), "4029"),
        (json!({"SubregionName": "eu-west-2z", "Size": 1}), "4047"),
        (json!({"SubregionName": "eu-west-2a"}), "7000"),
        (json!({"Size": 1}), "7000"),
        (json!({"SubregionName": "eu-west-2a", "Size": 1, "SnapshotId": "snap-12345678"}), "5054"),
        (json!({"SubregionName": "eu-west-2a", "Size": 21}), "10024"),
    ];
    for (body, code) in bad {
        call(&a, "CreateVolume", body.clone()).expect_error(400, code);
    }
    assert!(call(&a, "ReadVolumes", json!({})).ok()["Volumes"].as_array().unwrap().is_empty());

    let vol = create_volume(&a, json!({"SubregionName": "eu-west-2a", "Size": 4}));
    call(&a, "CreateVolume", json!({"SubregionName": "eu-west-2a", "Size": 17})).expect_error(400, "10024");
    let out = call(&a, "CreateVms", json!({"ImageId": image, "VmType": SMALL, "BootOnCreation": false})).ok();
    let vm = out["Vms"][0]["VmId"].as_str().unwrap().to_string();
    let out = call(&b, "CreateVms", json!({"ImageId": image, "VmType": SMALL, "BootOnCreation": false})).ok();
    let vm_b = out["Vms"][0]["VmId"].as_str().unwrap().to_string();

    // Another account sees nothing and touches nothing (B sees only its VM's root disk).
    let seen_by_b = call(&b, "ReadVolumes", json!({})).ok();
    assert!(seen_by_b["Volumes"].as_array().unwrap().iter().all(|v| v["LinkedVolumes"][0]["VmId"] == vm_b.as_str()), "{seen_by_b}");
    for (op, body) in [
        ("UpdateVolume", json!({"VolumeId": vol, "Size": 5})),
        ("DeleteVolume", json!({"VolumeId": vol})),
        ("UnlinkVolume", json!({"VolumeId": vol})),
        ("CreateSnapshot", json!({"VolumeId": vol})),
        ("LinkVolume", json!({"VolumeId": vol, "VmId": vm_b, "DeviceName": "/dev/xvdb"})),
    ] {
        call(&b, op, body).expect_error(400, "5064");
    }
    call(&b, "CreateTags", json!({"ResourceIds": [vol], "Tags": [{"Key": "k", "Value": "v"}]})).expect_error(400, "5064");
    // A's volume onto B's VM through A: B's VM is "not found" for A.
    call(&a, "LinkVolume", json!({"VolumeId": vol, "VmId": vm_b, "DeviceName": "/dev/xvdb"})).expect_error(400, "5063");

    // Linking rules (cold link to a stopped VM).
    call(&a, "LinkVolume", json!({"VolumeId": vol, "VmId": vm, "DeviceName": "/dev/xvda"})).expect_error(400, "4019");
    call(&a, "UnlinkVolume", json!({"VolumeId": vol})).expect_error(400, "9063");
    call(&a, "LinkVolume", json!({"VolumeId": vol, "VmId": vm, "DeviceName": "/dev/xvdb"})).ok();
    wait_volume(&a, &vol, "in-use");
    call(&a, "DeleteVolume", json!({"VolumeId": vol})).expect_error(400, "6007");
    let vol2 = create_volume(&a, json!({"SubregionName": "eu-west-2a", "Size": 1}));
    call(&a, "LinkVolume", json!({"VolumeId": vol2, "VmId": vm, "DeviceName": "/dev/sdb"})).expect_error(400, "9004");

    // Grow only.
    call(&a, "UpdateVolume", json!({"VolumeId": vol2, "Size": 1})).ok();
    call(&a, "UpdateVolume", json!({"VolumeId": vol2, "Size": 2})).ok();
    let v = wait_volume(&a, &vol2, "available");
    assert_eq!(v["Size"], 2);
    call(&a, "UpdateVolume", json!({"VolumeId": vol2, "Size": 1})).expect_error(400, "4078");

    // Snapshot sharing: B can use A's snapshot only once shared.
    let snap = call(&a, "CreateSnapshot", json!({"VolumeId": vol2})).ok()["Snapshot"]["SnapshotId"].as_str().unwrap().to_string();
    wait_snapshot(&a, &snap);
    call(&b, "CreateVolume", json!({"SubregionName": "eu-west-2a", "SnapshotId": snap})).expect_error(400, "5054");
    assert!(call(&b, "ReadSnapshots", json!({})).ok()["Snapshots"].as_array().unwrap().is_empty());
    call(&b, "UpdateSnapshot", json!({"SnapshotId": snap, "PermissionsToCreateVolume": {"Additions": {"AccountIds": ["123456789012"]}}})).expect_error(400, "5054");
    let b_id = call(&b, "ReadQuotas", json!({})).ok()["QuotaTypes"][0]["Quotas"][0]["AccountId"].as_str().unwrap().to_string();
    let shared = call(&a, "UpdateSnapshot", json!({"SnapshotId": snap, "PermissionsToCreateVolume": {"Additions": {"AccountIds": [b_id]}}})).ok();
    assert_eq!(shared["Snapshot"]["PermissionsToCreateVolume"]["AccountIds"][0], b_id.as_str());
    let seen = call(&b, "ReadSnapshots", json!({})).ok();
    assert_eq!(seen["Snapshots"][0]["SnapshotId"], snap.as_str());
    assert!(seen["Snapshots"][0]["PermissionsToCreateVolume"]["AccountIds"].as_array().unwrap().is_empty(), "B must not see A's share list");
    call(&b, "DeleteSnapshot", json!({"SnapshotId": snap})).expect_error(400, "5054");
    let vol_b = create_volume(&b, json!({"SubregionName": "eu-west-2a", "SnapshotId": snap}));
    assert!(call(&a, "ReadVolumes", json!({"Filters": {"VolumeIds": [vol_b]}})).ok()["Volumes"].as_array().unwrap().is_empty());
    // Unshared again: B keeps its copy but cannot make new ones.
    call(&a, "UpdateSnapshot", json!({"SnapshotId": snap, "PermissionsToCreateVolume": {"Removals": {"AccountIds": [b_id]}}})).ok();
    call(&b, "CreateVolume", json!({"SubregionName": "eu-west-2a", "SnapshotId": snap})).expect_error(400, "5054");
    call(&b, "DeleteVolume", json!({"VolumeId": vol_b})).ok();
}

#[test]
fn io1_volume_is_throttled_near_its_iops() {
    let cloud = TestCloud::start();
    let c = &cloud.creds;
    let image = cloud.tiny_image();
    let vol = create_volume(c, json!({"SubregionName": "eu-west-2a", "Size": 1, "VolumeType": "io1", "Iops": 100}));
    let script = format!(
        "#!/bin/sh\ndev=$(socle-disks wait {vol} 120) || exit 1\necho \"socle-test: $(socle-disks iops $dev 300)\"\n"
    );
    let vm = vm_with(c, &image, &script);
    call(c, "LinkVolume", json!({"VmId": vm, "VolumeId": vol, "DeviceName": "/dev/xvdb"})).ok();
    let text = wait_console(c, &vm, "socle-test: iops=", 1, Duration::from_secs(180));
    let iops: f64 = text.split("socle-test: iops=").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
    eprintln!("io1 100 IOPS volume measured {iops} IOPS in the guest");
    assert!((60.0..=130.0).contains(&iops), "io1 at 100 IOPS measured {iops}");
    call(c, "DeleteVms", json!({"VmIds": [vm]})).ok();
    wait_state(c, &[vm], "terminated", T);
}

#[test]
fn block_device_mappings_at_launch() {
    let cloud = TestCloud::start();
    let c = &cloud.creds;
    let image = cloud.tiny_image();
    let script = "#!/bin/sh\necho \"socle-test: root=$(cat /sys/block/vda/size) disks=$(ls /sys/block | tr '\\n' ' ')\"\n";
    let out = call(c, "CreateVms", json!({
        "ImageId": image, "VmType": SMALL, "UserData": user_data(script),
        "BlockDeviceMappings": [
            {"DeviceName": "/dev/sda1", "Bsu": {"VolumeSize": 3, "VolumeType": "gp2"}},
            {"DeviceName": "/dev/xvdb", "Bsu": {"VolumeSize": 2, "DeleteOnVmDeletion": false}},
            {"DeviceName": "/dev/xvdc", "Bsu": {"VolumeSize": 1, "VolumeType": "io1", "Iops": 200}},
        ],
    })).ok();
    let vm = out["Vms"][0]["VmId"].as_str().unwrap().to_string();
    let vms = wait_state(c, std::slice::from_ref(&vm), "running", T);
    let mappings = vms[0]["BlockDeviceMappings"].as_array().unwrap().clone();
    let devices: Vec<&str> = mappings.iter().map(|m| m["DeviceName"].as_str().unwrap()).collect();
    assert_eq!(devices, ["/dev/sda1", "/dev/xvdb", "/dev/xvdc"]);
    let text = wait_console(c, &vm, "socle-test: root=", 1, T);
    // 3 GiB root = 6291456 sectors; three disks in the guest.
    assert!(text.contains("socle-test: root=6291456 disks=vda vdb vdc"), "{text}");
    let kept = mappings[1]["Bsu"]["VolumeId"].as_str().unwrap().to_string();
    let vol = call(c, "ReadVolumes", json!({"Filters": {"VolumeIds": [kept]}})).ok();
    assert_eq!((vol["Volumes"][0]["Size"].as_i64(), vol["Volumes"][0]["State"].as_str()), (Some(2), Some("in-use")));

    // Bad mappings are refused and create nothing.
    for (bdm, code) in [
        (json!([{"DeviceName": "/dev/sda1", "Bsu": {"VolumeSize": 0}}]), "4078"),
        (json!([{"DeviceName": "/dev/xvdb", "Bsu": {}}]), "7000"),
        (json!([{"DeviceName": "/dev/xvdb", "Bsu": {"VolumeSize": 1}}, {"DeviceName": "/dev/sdb", "Bsu": {"VolumeSize": 1}}]), "9004"),
        (json!([{"DeviceName": "/dev/xvdb", "Bsu": {"SnapshotId": "snap-12345678"}}]), "5054"),
        (json!([{"DeviceName": "/dev/xvdb", "Bsu": {"VolumeSize": 5000}}]), "10024"),
    ] {
        call(c, "CreateVms", json!({"ImageId": image, "VmType": SMALL, "BlockDeviceMappings": bdm})).expect_error(400, code);
    }
    assert_eq!(call(c, "ReadVms", json!({})).ok()["Vms"].as_array().unwrap().len(), 1);
    assert_eq!(call(c, "ReadVolumes", json!({})).ok()["Volumes"].as_array().unwrap().len(), 3);

    // Deleting the VM deletes the volumes marked so, and frees the other.
    call(c, "DeleteVms", json!({"VmIds": [vm]})).ok();
    wait_state(c, &[vm], "terminated", T);
    let deadline = std::time::Instant::now() + T;
    loop {
        let vols = call(c, "ReadVolumes", json!({})).ok()["Volumes"].as_array().unwrap().clone();
        if vols.len() == 1 && vols[0]["VolumeId"] == kept.as_str() && vols[0]["State"] == "available" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "volumes after VM deletion: {vols:?}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

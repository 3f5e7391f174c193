//! Crash safety of block storage: the server is made to abort right after
//! each piece of host work and before the database records it (the worst
//! moment); after a restart the operation completes, with no orphan file, no
//! half-linked disk and no stale state.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(120);

fn ids_in(dir: &std::path::Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_suffix(".qcow2")).map(String::from))
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default()
}

/// The files on the host are exactly the volumes and snapshots the API shows.
fn assert_no_orphans(cloud: &TestCloud) {
    let c = &cloud.creds;
    let vols: BTreeSet<String> = call(c, "ReadVolumes", json!({})).ok()["Volumes"]
        .as_array().unwrap().iter().map(|v| v["VolumeId"].as_str().unwrap().to_string()).collect();
    let snaps: BTreeSet<String> = call(c, "ReadSnapshots", json!({})).ok()["Snapshots"]
        .as_array().unwrap().iter().map(|v| v["SnapshotId"].as_str().unwrap().to_string()).collect();
    assert_eq!(ids_in(&cloud.data_dir().join("agent/volumes")), vols, "volume files vs volumes");
    assert_eq!(ids_in(&cloud.data_dir().join("agent/snapshots")), snaps, "snapshot files vs snapshots");
}

fn poll(c: &Creds, op: &str, body: Value, key: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + T;
    loop {
        let out = call(c, op, body.clone()).ok();
        if done(&out[key]) {
            return out;
        }
        assert!(std::time::Instant::now() < deadline, "{op} never converged: {out}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn every_storage_step_survives_a_crash_right_after_host_work() {
    let mut cloud = TestCloud::start();
    let c = cloud.creds.clone();
    let image = cloud.tiny_image();
    let vm = call(&c, "CreateVms", json!({"ImageId": image, "VmType": SMALL})).ok()["Vms"][0]["VmId"].as_str().unwrap().to_string();
    wait_state(&c, std::slice::from_ref(&vm), "running", T);
    wait_console(&c, &vm, "socle-guest: ready", 1, T);

    // Create: the file exists, the row still says creating.
    let mut vol = String::new();
    cloud.crash_at("volume-created", |c| {
        vol = call(c, "CreateVolume", json!({"SubregionName": "eu-west-2a", "Size": 1})).ok()["Volume"]["VolumeId"].as_str().unwrap().to_string();
    });
    let one = json!({"Filters": {"VolumeIds": [vol]}});
    poll(&c, "ReadVolumes", one.clone(), "Volumes", |v| v[0]["State"] == "available");
    assert_no_orphans(&cloud);

    // Link: plugged into the guest, the row still says attaching.
    cloud.crash_at("volume-linked", |c| {
        call(c, "LinkVolume", json!({"VmId": vm, "VolumeId": vol, "DeviceName": "/dev/xvdb"})).ok();
    });
    poll(&c, "ReadVolumes", one.clone(), "Volumes", |v| v[0]["LinkedVolumes"][0]["State"] == "attached");
    wait_console(&c, &vm, &format!("serial={vol}"), 1, T);
    let text = console(&c, &vm);
    assert_eq!(text.matches(&format!("disk added vdb serial={vol}")).count(), 1, "plugged twice?\n{text}");

    // Snapshot: the file is complete, the row still says pending.
    let mut snap = String::new();
    cloud.crash_at("snapshot-taken", |c| {
        snap = call(c, "CreateSnapshot", json!({"VolumeId": vol})).ok()["Snapshot"]["SnapshotId"].as_str().unwrap().to_string();
    });
    poll(&c, "ReadSnapshots", json!({"Filters": {"SnapshotIds": [snap]}}), "Snapshots", |s| s[0]["State"] == "completed");
    assert_no_orphans(&cloud);

    // Unlink: gone from the guest, the row still says detaching.
    cloud.crash_at("volume-unlinked", |c| {
        call(c, "UnlinkVolume", json!({"VolumeId": vol})).ok();
    });
    poll(&c, "ReadVolumes", one.clone(), "Volumes", |v| v[0]["State"] == "available");
    wait_console(&c, &vm, &format!("disk removed vdb serial={vol}"), 1, T);

    // Delete snapshot and volume: files gone, rows still there.
    cloud.crash_at("snapshot-deleted", |c| {
        call(c, "DeleteSnapshot", json!({"SnapshotId": snap})).ok();
    });
    poll(&c, "ReadSnapshots", json!({}), "Snapshots", |s| s.as_array().unwrap().is_empty());
    cloud.crash_at("volume-deleted", |c| {
        call(c, "DeleteVolume", json!({"VolumeId": vol})).ok();
    });
    poll(&c, "ReadVolumes", one, "Volumes", |v| v.as_array().unwrap().is_empty());
    assert_no_orphans(&cloud);

    // A file the database never heard of (an older database restored) is removed at start.
    std::fs::write(cloud.data_dir().join("agent/volumes/vol-0badc0de.qcow2"), b"junk").unwrap();
    cloud.stop_clean();
    cloud.launch(&[]);
    assert_no_orphans(&cloud);

    // Import: the encrypted snapshot is written, the row still says pending
    // and the upload is still on the host; after the restart it completes
    // and the upload goes. Leftover uploads (a .part of an interrupted
    // transfer to the server, an upload on the host no import refers to)
    // are removed at start.
    let work = tempfile::tempdir().unwrap();
    let raw = work.path().join("disk.raw");
    let dir = cloud.data_dir().to_path_buf();
    let mut disk = vec![0u8; 1 << 20];
    disk[510] = 0x55;
    disk[511] = 0xaa;
    std::fs::write(&raw, &disk).unwrap();
    let mut import = cloud.socle();
    import.args(["image", "import", raw.to_str().unwrap(), "--name", "crashy", "--no-wait", "--data-dir"]).arg(&dir);
    cloud.crash_at("snapshot-imported", |_| {
        let out = import.output_within(CLI_TIMEOUT);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    });
    poll(&c, "ReadImages", json!({"Filters": {"ImageNames": ["crashy"]}}), "Images", |i| i[0]["State"] == "available");
    assert_no_orphans(&cloud);
    let deadline = std::time::Instant::now() + T;
    while !files_under(&cloud.data_dir().join("agent/uploads")).is_empty() {
        assert!(std::time::Instant::now() < deadline, "the upload stayed on the host");
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    assert!(files_under(&cloud.data_dir().join("uploads")).is_empty());
    std::fs::write(cloud.data_dir().join("uploads/0123.part"), b"junk").unwrap();
    std::fs::write(cloud.data_dir().join("agent/uploads/snap-0badc0de.img"), b"junk").unwrap();
    cloud.stop_clean();
    cloud.launch(&[]);
    assert!(files_under(&cloud.data_dir().join("uploads")).is_empty());
    let deadline = std::time::Instant::now() + T;
    while !files_under(&cloud.data_dir().join("agent/uploads")).is_empty() {
        assert!(std::time::Instant::now() < deadline, "an upload no import waits for stayed on the host");
        std::thread::sleep(std::time::Duration::from_millis(300));
    }

    call(&c, "DeleteVms", json!({"VmIds": [vm]})).ok();
    wait_state(&c, &[vm], "terminated", T);
}

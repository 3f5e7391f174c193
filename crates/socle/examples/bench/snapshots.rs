//! CreateSnapshot and CreateVolume-from-snapshot time vs volume size,
//! through the API, on volumes a guest filled with data.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::*;
use crate::{b64, ms};

pub const SIZES_GIB: [u64; 3] = [1, 2, 4];
const POLL: Duration = Duration::from_millis(100);
const STEP_TIMEOUT: Duration = Duration::from_secs(600);
const ZONE: &str = "eu-west-2a";

pub struct Row {
    pub gib: u64,
    /// Guest fill rate (MiB/s) of the whole volume.
    pub fill_mibs: f64,
    /// CreateSnapshot → completed, volume linked to a running VM (blockdev-backup).
    pub snap_online_ms: f64,
    /// CreateVolume(SnapshotId) → available (qemu-img convert).
    pub from_snap_ms: f64,
    /// CreateSnapshot → completed, volume not linked (qemu-img convert).
    pub snap_offline_ms: f64,
    /// Bytes the volume file takes on the host after the fill.
    pub allocated: u64,
}

/// Fills every data disk (vdb, vdc, …) entirely, O_DIRECT, with a 16 MiB
/// random pattern repeated: not zeros, so that no copy can skip them
/// (qemu-img convert skips zero blocks of its source).
fn fill_script() -> String {
    r#"#!/bin/sh
cs() { read -r up _ < /proc/uptime; w=${up%.*}; f=${up#*.}; echo $((w * 100 + 1$f - 100)); }
fail() { echo "socle-bench: error $*"; exit 1; }
dd if=/dev/urandom of=/tmp/pattern bs=1M count=16 2>/dev/null || fail "cannot make the pattern"
for d in $(ls /sys/block | grep '^vd' | grep -v '^vda$'); do
  read -r serial < /sys/block/$d/serial
  read -r sectors < /sys/block/$d/size
  mib=$((sectors / 2048))
  t0=$(cs)
  while cat /tmp/pattern; do :; done | dd of=/dev/$d bs=1M count=$mib iflag=fullblock oflag=direct 2>/dev/null || fail "fill of $d ($serial)"
  t1=$(cs)
  echo "socle-bench: filled serial=$serial mib=$mib cs=$((t1 - t0))"
done
echo "socle-bench: fill done"
"#
    .to_string()
}

fn read_one(c: &Creds, op: &str, filter: &str, list: &str, id: &str) -> Option<Value> {
    let out = call(c, op, json!({"Filters": {filter: [id]}})).ok();
    out[list].as_array().and_then(|a| a.first().cloned())
}

/// Polls every 100 ms until `id` reaches `state`; panics on "error" or after
/// the timeout. Returns the time from `t0`.
fn wait_until(c: &Creds, kind: &str, id: &str, state: &str, t0: Instant) -> Duration {
    let (op, filter, list) = match kind {
        "snapshot" => ("ReadSnapshots", "SnapshotIds", "Snapshots"),
        _ => ("ReadVolumes", "VolumeIds", "Volumes"),
    };
    loop {
        let v = read_one(c, op, filter, list, id).unwrap_or_else(|| panic!("{kind} {id} vanished"));
        if v["State"] == state {
            return t0.elapsed();
        }
        assert!(v["State"] != "error", "{kind} {id} went to error: {v}");
        assert!(t0.elapsed() < STEP_TIMEOUT, "{kind} {id} not {state} after {STEP_TIMEOUT:?}: {v}");
        std::thread::sleep(POLL);
    }
}

/// Deletes and waits until the resource is gone (its file removed), so that
/// the next measurement does not share the disk with a deletion.
fn delete_and_wait(c: &Creds, kind: &str, id: &str) {
    let (del, key, op, filter, list) = match kind {
        "snapshot" => ("DeleteSnapshot", "SnapshotId", "ReadSnapshots", "SnapshotIds", "Snapshots"),
        _ => ("DeleteVolume", "VolumeId", "ReadVolumes", "VolumeIds", "Volumes"),
    };
    call(c, del, json!({key: id})).ok();
    let t0 = Instant::now();
    while read_one(c, op, filter, list, id).is_some() {
        assert!(t0.elapsed() < STEP_TIMEOUT, "{kind} {id} not deleted");
        std::thread::sleep(POLL);
    }
}

fn snapshot(c: &Creds, volume: &str) -> (String, f64) {
    let t0 = Instant::now();
    let out = call(c, "CreateSnapshot", json!({"VolumeId": volume, "Description": "bench"})).ok();
    let id = out["Snapshot"]["SnapshotId"].as_str().unwrap().to_string();
    let t = wait_until(c, "snapshot", &id, "completed", t0);
    (id, ms(t))
}

fn allocated_bytes(cloud: &TestCloud, volume: &str) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let p = cloud.data_dir().join(format!("agent/volumes/{volume}.qcow2"));
    std::fs::metadata(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).blocks() * 512
}

pub fn run(cloud: &TestCloud, image: &str) -> Vec<Row> {
    let c = &cloud.creds;
    // One VM with a volume of each size (io1 at the highest IOPS allowed,
    // 300 per GiB, so that the fill is throttled as little as possible),
    // kept after the VM for the offline snapshots.
    let bdm: Vec<Value> = SIZES_GIB
        .iter()
        .enumerate()
        .map(|(i, gib)| json!({
            "DeviceName": format!("/dev/xvd{}", (b'b' + i as u8) as char),
            "Bsu": {"VolumeSize": gib, "VolumeType": "io1", "Iops": 300 * gib, "DeleteOnVmDeletion": false},
        }))
        .collect();
    let out = call(c, "CreateVms", json!({"ImageId": image, "VmType": SMALL, "UserData": b64(&fill_script()), "BlockDeviceMappings": bdm})).ok();
    let vm = out["Vms"][0]["VmId"].as_str().unwrap().to_string();
    let vms = wait_state(c, std::slice::from_ref(&vm), "running", Duration::from_secs(120));
    let volumes: Vec<String> = vms[0]["BlockDeviceMappings"].as_array().unwrap()[1..]
        .iter()
        .map(|m| m["Bsu"]["VolumeId"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(volumes.len(), SIZES_GIB.len(), "{vms:?}");
    let t0 = Instant::now();
    let text = loop {
        let text = console(c, &vm);
        if text.contains("socle-bench: fill done") {
            break text;
        }
        assert!(!text.contains("socle-bench: error") && !text.contains("user-data script exited"), "the fill script failed:\n{text}");
        assert!(t0.elapsed() < Duration::from_secs(900), "the fill did not finish in 15 minutes:\n{text}");
        std::thread::sleep(Duration::from_millis(500));
    };
    eprintln!("snapshots: guest filled {} GiB in {:.0} s", SIZES_GIB.iter().sum::<u64>(), t0.elapsed().as_secs_f64());
    let fill = |vol: &str, gib: u64| -> f64 {
        let line = text.lines().find_map(|l| l.split(&format!("socle-bench: filled serial={vol} ")).nth(1)).unwrap_or_else(|| panic!("no fill line for {vol}:\n{text}"));
        let kv: std::collections::HashMap<&str, &str> = line.split_whitespace().filter_map(|w| w.split_once('=')).collect();
        let mib: f64 = kv["mib"].parse().unwrap();
        assert_eq!(mib as u64, gib * 1024, "fill of {vol}: {line}");
        mib / (kv["cs"].parse::<f64>().unwrap().max(1.0) / 100.0)
    };

    let mut rows = vec![];
    for (vol, gib) in volumes.iter().zip(SIZES_GIB) {
        let allocated = allocated_bytes(cloud, vol);
        assert!(allocated >= gib << 30, "{vol} ({gib} GiB) takes only {allocated} bytes after the fill");
        let (snap, snap_online_ms) = snapshot(c, vol);
        let t0 = Instant::now();
        let out = call(c, "CreateVolume", json!({"SubregionName": ZONE, "SnapshotId": snap})).ok();
        let copy = out["Volume"]["VolumeId"].as_str().unwrap().to_string();
        let from_snap_ms = ms(wait_until(c, "volume", &copy, "available", t0));
        eprintln!("snapshots: {gib} GiB: snapshot (linked) {snap_online_ms:.0} ms, volume from it {from_snap_ms:.0} ms");
        delete_and_wait(c, "volume", &copy);
        delete_and_wait(c, "snapshot", &snap);
        rows.push(Row { gib, fill_mibs: fill(vol, gib), snap_online_ms, from_snap_ms, snap_offline_ms: 0.0, allocated });
    }
    call(c, "DeleteVms", json!({"VmIds": [vm]})).ok();
    wait_state(c, &[vm], "terminated", Duration::from_secs(120));
    for (row, vol) in rows.iter_mut().zip(&volumes) {
        wait_until(c, "volume", vol, "available", Instant::now());
        let (snap, t) = snapshot(c, vol);
        row.snap_offline_ms = t;
        eprintln!("snapshots: {} GiB: snapshot (not linked) {t:.0} ms", row.gib);
        delete_and_wait(c, "snapshot", &snap);
        delete_and_wait(c, "volume", vol);
    }
    rows
}

/// Least-squares line through (GiB, ms): (intercept ms, ms per GiB).
pub fn fit(points: &[(f64, f64)]) -> (f64, f64) {
    let n = points.len() as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let slope = sxy / sxx;
    (my - slope * mx, slope)
}

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

/// One timed API step.
#[derive(Default, Clone)]
pub struct Step {
    /// Call → state reached (ms).
    pub ms: f64,
    /// The agent's own duration (its log's `secs=`), if found.
    pub agent_ms: Option<f64>,
    /// Unix time of the call.
    called: f64,
    snapshot: String,
    log_msg: String,
    log_id: String,
}

pub struct Row {
    pub gib: u64,
    /// Guest fill rate (MiB/s) of the whole volume.
    pub fill_mibs: f64,
    /// CreateSnapshot → completed, volume linked to a running VM (blockdev-backup).
    pub online: Step,
    /// Call → the agent's "blockdev-backup started" (the encrypted target made).
    pub online_job_ms: Option<f64>,
    /// CreateVolume(SnapshotId) → available (qemu-img convert).
    pub from_snap: Step,
    /// CreateSnapshot → completed, volume not linked (qemu-img convert).
    pub offline: Step,
    /// Bytes the volume file takes on the host after the fill.
    pub allocated: u64,
}

fn unix_now() -> f64 {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos() as f64 / 1e9
}

/// server.log (tracing's format, ANSI colours removed): (unix time, line).
struct Log(Vec<(f64, String)>);

impl Log {
    fn read(cloud: &TestCloud) -> Log {
        let text = std::fs::read_to_string(cloud.data_dir().join("server.log")).unwrap_or_default();
        let mut lines = vec![];
        for raw in text.lines() {
            let mut line = String::with_capacity(raw.len());
            let mut chars = raw.chars();
            while let Some(ch) = chars.next() {
                if ch == '\u{1b}' {
                    for c in chars.by_ref() {
                        if c.is_ascii_alphabetic() {
                            break;
                        }
                    }
                } else {
                    line.push(ch);
                }
            }
            let Some(stamp) = line.split_whitespace().next() else { continue };
            let Ok(t) = time::OffsetDateTime::parse(stamp, &time::format_description::well_known::Rfc3339) else { continue };
            lines.push((t.unix_timestamp_nanos() as f64 / 1e9, line));
        }
        Log(lines)
    }

    fn find(&self, msg: &str, id: &str) -> Option<&(f64, String)> {
        let quoted = format!("\"{id}\"");
        let found = self.0.iter().find(|(_, l)| l.contains(msg) && l.contains(&quoted));
        if found.is_none() {
            eprintln!("warning: no {msg:?} line for {id} in server.log");
        }
        found
    }

    fn time_of(&self, msg: &str, id: &str) -> Option<f64> {
        self.find(msg, id).map(|(t, _)| *t)
    }

    fn secs_field(&self, msg: &str, id: &str) -> Option<f64> {
        let (_, line) = self.find(msg, id)?;
        line.split_whitespace().find_map(|w| w.strip_prefix("secs=")).and_then(|v| v.parse().ok())
    }
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

fn snapshot(c: &Creds, volume: &str) -> Step {
    let (called, t0) = (unix_now(), Instant::now());
    let out = call(c, "CreateSnapshot", json!({"VolumeId": volume, "Description": "bench"})).ok();
    let id = out["Snapshot"]["SnapshotId"].as_str().unwrap().to_string();
    let t = wait_until(c, "snapshot", &id, "completed", t0);
    Step { ms: ms(t), agent_ms: None, called, snapshot: id.clone(), log_msg: "snapshot taken".into(), log_id: id }
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
        let online = snapshot(c, vol);
        let snap = online.snapshot.clone();
        let (called, t0) = (unix_now(), Instant::now());
        let out = call(c, "CreateVolume", json!({"SubregionName": ZONE, "SnapshotId": snap})).ok();
        let copy = out["Volume"]["VolumeId"].as_str().unwrap().to_string();
        let t = ms(wait_until(c, "volume", &copy, "available", t0));
        let from_snap = Step { ms: t, agent_ms: None, called, snapshot: snap.clone(), log_msg: "volume created".into(), log_id: copy.clone() };
        eprintln!("snapshots: {gib} GiB: snapshot (linked) {:.0} ms, volume from it {:.0} ms", online.ms, from_snap.ms);
        delete_and_wait(c, "volume", &copy);
        delete_and_wait(c, "snapshot", &snap);
        rows.push(Row { gib, fill_mibs: fill(vol, gib), online, online_job_ms: None, from_snap, offline: Step::default(), allocated });
    }
    call(c, "DeleteVms", json!({"VmIds": [vm]})).ok();
    wait_state(c, &[vm], "terminated", Duration::from_secs(120));
    for (row, vol) in rows.iter_mut().zip(&volumes) {
        wait_until(c, "volume", vol, "available", Instant::now());
        row.offline = snapshot(c, vol);
        eprintln!("snapshots: {} GiB: snapshot (not linked) {:.0} ms", row.gib, row.offline.ms);
        delete_and_wait(c, "snapshot", &row.offline.snapshot);
        delete_and_wait(c, "volume", vol);
    }
    // Host-side times from the agent's log.
    let log = Log::read(cloud);
    for r in &mut rows {
        r.online_job_ms = log.time_of("blockdev-backup started", &r.online.snapshot).map(|t| (t - r.online.called) * 1000.0);
        for step in [&mut r.online, &mut r.offline, &mut r.from_snap] {
            step.agent_ms = log.secs_field(&step.log_msg, &step.log_id).map(|x| x * 1000.0);
        }
    }
    rows
}

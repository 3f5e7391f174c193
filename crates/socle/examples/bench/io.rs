//! Guest I/O on an encrypted (qcow2+LUKS) vs an unencrypted (plain qcow2)
//! disk. Volumes made by the platform are always encrypted, so the baseline
//! needs a VM started by hand: the agent's exact QEMU command line (from a VM
//! launched with one data volume), whose data volume is replaced by two 1 GiB
//! disks of the very same shape (file → qcow2 → throttle → virtio-blk-pci
//! with a serial, unlimited throttle group), one with LUKS, one without, and
//! a UserData script that measures both from inside the guest.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::*;
use crate::hand::{create_encrypted, create_plain, HandVm};
use crate::qemu_cmdline;

pub const ROUNDS: usize = 5;
/// MiB written then read per disk and round: the whole 1 GiB disk (the
/// guest clock ticks in centiseconds; a plain read takes only tenths).
pub const MIB: u64 = 1024;
/// Repetitions of the host-side (qemu-io) measurement.
pub const HOST_RUNS: usize = 3;
const LUKS: &str = "bench-luks";
const PLAIN: &str = "bench-plain";

/// Figures of one disk, one entry per round.
#[derive(Default, Debug)]
pub struct Disk {
    pub write_mibs: Vec<f64>,
    pub read_mibs: Vec<f64>,
    pub iops: Vec<f64>,
    pub iops_reads: Vec<u64>,
}

pub struct IoResult {
    pub luks: Disk,
    pub plain: Disk,
    /// qemu-img create of the empty encrypted 1 GiB disk (PBKDF calibration).
    pub luks_create: Duration,
    pub plain_create: Duration,
    /// QEMU's block layer alone on the host (qemu-io, no guest): MiB/s of a
    /// 1 GiB write and read in one request, per run.
    pub host_luks: Disk,
    pub host_plain: Disk,
}

/// MiB/s from a qemu-io summary line "1 GiB, 1 ops; 0:00:02.56 (399.768 MiB/sec and 0.39 ops/sec)".
fn qemu_io_rate(line: &str) -> f64 {
    let inner = line.split('(').nth(1).and_then(|r| r.split(" and").next()).unwrap_or_else(|| panic!("qemu-io line {line:?}"));
    let (num, unit) = inner.split_once(' ').unwrap_or_else(|| panic!("qemu-io line {line:?}"));
    let x: f64 = num.parse().unwrap_or_else(|_| panic!("qemu-io line {line:?}"));
    x * match unit {
        "bytes/sec" => 1.0 / (1u64 << 20) as f64,
        "KiB/sec" => 1.0 / 1024.0,
        "MiB/sec" => 1.0,
        "GiB/sec" => 1024.0,
        "TiB/sec" => 1024.0 * 1024.0,
        _ => panic!("qemu-io unit in {line:?}"),
    }
}

/// One 1 GiB write then read of the whole disk by qemu-io (QEMU's block
/// layer, same cache mode as the VM, no guest); returns (write, read) MiB/s.
fn host_io(path: &str, key_file: Option<&str>) -> (f64, f64) {
    let mut cmd = std::process::Command::new("qemu-io");
    match key_file {
        Some(k) => cmd.args(["--object", &format!("secret,id=k0,file={k}"), "--image-opts", &format!("driver=qcow2,file.filename={path},encrypt.key-secret=k0")]),
        None => cmd.args(["--image-opts", &format!("driver=qcow2,file.filename={path}")]),
    };
    let out = cmd.args(["-c", "write -P 90 0 1G", "-c", "read -P 90 0 1G"]).output().expect("run qemu-io");
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !text.contains("fail") && !text.contains("error"), "qemu-io on {path} failed: {text}");
    let rates: Vec<f64> = text.lines().filter(|l| l.contains("ops;")).map(qemu_io_rate).collect();
    assert_eq!(rates.len(), 2, "qemu-io on {path}: {text}");
    (rates[0], rates[1])
}

/// The guest side: for ROUNDS rounds, each disk in turn (alternating, so that
/// a change of host load hits both alike): O_DIRECT sequential write of MIB
/// MiB from /dev/zero, O_DIRECT sequential read of them back, then the 4 KiB
/// QD1 read probe of `socle-disks iops`. busybox dd prints no time (and its
/// `date` has no %N), so the clock is /proc/uptime in centiseconds.
fn script() -> String {
    format!(
        r#"#!/bin/sh
cs() {{ read -r up _ < /proc/uptime; w=${{up%.*}}; f=${{up#*.}}; echo $((w * 100 + 1$f - 100)); }}
fail() {{ echo "socle-bench: error $*"; exit 1; }}
for r in $(seq 1 {ROUNDS}); do
  for s in {LUKS} {PLAIN}; do
    dev=$(socle-disks wait $s 120) || fail "no disk with serial $s"
    t0=$(cs)
    dd if=/dev/zero of=$dev bs=1M count={MIB} oflag=direct 2>/dev/null || fail "write to $s ($dev)"
    t1=$(cs)
    sync; echo 3 > /proc/sys/vm/drop_caches
    t2=$(cs)
    dd if=$dev of=/dev/null bs=1M count={MIB} iflag=direct 2>/dev/null || fail "read from $s ($dev)"
    t3=$(cs)
    io=$(socle-disks iops $dev) || fail "iops probe of $s ($dev)"
    echo "socle-bench: io round=$r disk=$s write_cs=$((t1 - t0)) read_cs=$((t3 - t2)) $io"
  done
done
echo "socle-bench: io done"
"#
    )
}

/// The command-line arguments (flag + JSON value pairs) that mention
/// `volume_id`, removed from `args` and returned in order.
fn take_volume_args(args: &mut Vec<String>, volume_id: &str) -> Vec<(String, Value)> {
    let mut taken = vec![];
    let mut kept = vec![];
    let mut i = 0;
    while i < args.len() {
        if args[i].starts_with('-') && i + 1 < args.len() && args[i + 1].contains(volume_id) {
            let v: Value = serde_json::from_str(&args[i + 1])
                .unwrap_or_else(|e| panic!("volume argument {} {} is not JSON: {e}", args[i], args[i + 1]));
            taken.push((args[i].clone(), v));
            i += 2;
        } else {
            kept.push(args[i].clone());
            i += 1;
        }
    }
    *args = kept;
    taken
}

/// A copy of the agent's volume arguments `template` for a disk `serial`
/// at `path` in PCI slot `slot`: unlimited throttle group; without LUKS
/// (no secret object, no `encrypt`) when `encrypted` is false.
fn clone_volume_args(template: &[(String, Value)], volume_id: &str, volume_path: &str, serial: &str, path: &str, slot: u8, encrypted: bool) -> Vec<String> {
    let mut out = vec![];
    for (flag, v) in template {
        let text = v.to_string().replace(volume_path, path).replace(volume_id, serial);
        let mut v: Value = serde_json::from_str(&text).unwrap();
        match (v["qom-type"].as_str(), v["driver"].as_str()) {
            (Some("secret"), _) if !encrypted => continue,
            (Some("throttle-group"), _) => {
                let limits = v["limits"].as_object_mut().expect("throttle group has limits");
                for x in limits.values_mut() {
                    *x = json!(0);
                }
            }
            (_, Some("qcow2")) => {
                assert!(v.get("encrypt").is_some(), "the agent's qcow2 node is not encrypted: {v}");
                if !encrypted {
                    v.as_object_mut().unwrap().remove("encrypt");
                }
            }
            (_, Some("virtio-blk-pci")) => {
                assert_eq!(v["serial"], serial, "device serial");
                v["addr"] = json!(format!("0x{slot:x}"));
            }
            _ => {}
        }
        out.push(flag.clone());
        out.push(v.to_string());
    }
    out
}

pub fn run(cloud: &TestCloud, image: &str) -> IoResult {
    let c = &cloud.creds;
    // 1. The agent's command line for a VM with one data volume on it.
    let out = call(c, "CreateVms", json!({
        "ImageId": image, "VmType": SMALL,
        "BlockDeviceMappings": [{"DeviceName": "/dev/xvdb", "Bsu": {"VolumeSize": 1}}],
    })).ok();
    let vm = out["Vms"][0]["VmId"].as_str().unwrap().to_string();
    let vms = wait_state(c, std::slice::from_ref(&vm), "running", Duration::from_secs(120));
    let data_vol = vms[0]["BlockDeviceMappings"].as_array().unwrap().iter()
        .find(|m| m["DeviceName"] == "/dev/xvdb")
        .and_then(|m| m["Bsu"]["VolumeId"].as_str())
        .expect("the data volume is in BlockDeviceMappings")
        .to_string();
    let pids = cloud.qemu_pids();
    assert_eq!(pids.len(), 1, "one QEMU expected, found {pids:?}");
    let cmdline = qemu_cmdline(pids[0]);
    call(c, "DeleteVms", json!({"VmIds": [vm]})).ok();
    wait_state(c, &[vm], "terminated", Duration::from_secs(60));
    let vm_dir = crate::vm_dir_of(&cmdline);
    let volume_path = cmdline.iter()
        .find_map(|a| a.split('"').find(|p| p.ends_with(&format!("/volumes/{data_vol}.qcow2"))).map(String::from))
        .expect("the data volume's file is on the QEMU command line");

    // 2. The same command line by hand, the data volume replaced by two disks.
    let mut hand = HandVm::new(&cmdline, &vm_dir);
    let template = take_volume_args(&mut hand.args, &data_vol);
    let kinds: Vec<&str> = template.iter().map(|(f, v)| v["driver"].as_str().or(v["qom-type"].as_str()).map(|k| if f == "-device" { "device" } else { k }).unwrap_or("?")).collect();
    assert_eq!(kinds, ["secret", "file", "qcow2", "throttle-group", "throttle", "device"], "unexpected volume arguments: {template:?}");
    let slot = u8::from_str_radix(template[5].1["addr"].as_str().expect("data volume has a PCI addr").trim_start_matches("0x"), 16).unwrap();
    hand.create_root().expect("the VM boots from a root volume");
    let (luks_path, plain_path) = (format!("{}/luks.qcow2", hand.dir), format!("{}/plain.qcow2", hand.dir));
    let luks_create = create_encrypted(&luks_path, "1G", &hand.key_file);
    let plain_create = create_plain(&plain_path, "1G");
    // QEMU alone first (this also writes both disks whole, so no guest
    // round allocates clusters: every round overwrites).
    let (mut host_luks, mut host_plain) = (Disk::default(), Disk::default());
    for _ in 0..HOST_RUNS {
        for (d, key) in [(&mut host_luks, Some(hand.key_file.as_str())), (&mut host_plain, None)] {
            let (w, r) = host_io(if key.is_some() { &luks_path } else { &plain_path }, key);
            d.write_mibs.push(w);
            d.read_mibs.push(r);
        }
    }
    let extra = [
        clone_volume_args(&template, &data_vol, &volume_path, LUKS, &luks_path, slot, true),
        clone_volume_args(&template, &data_vol, &volume_path, PLAIN, &plain_path, slot + 1, false),
    ]
    .concat();
    hand.args.extend(extra);
    let ud = format!("{}/user-data", hand.dir);
    std::fs::write(&ud, script()).unwrap();
    hand.args.extend(["-fw_cfg".to_string(), format!("name=opt/socle/user-data,file={ud}")]);
    eprintln!("io: hand-started QEMU: {}", hand.args.join(" "));
    let t0 = Instant::now();
    hand.start();
    let text = loop {
        let text = hand.wait_console("socle-guest: ready", Duration::from_secs(120));
        if text.contains("socle-bench: io done") {
            break text;
        }
        assert!(!text.contains("socle-bench: error") && !text.contains("user-data script exited"), "the I/O script failed:\n{text}");
        assert!(t0.elapsed() < Duration::from_secs(600), "the I/O script did not finish in 10 minutes:\n{text}");
        std::thread::sleep(Duration::from_millis(500));
    };
    hand.kill();
    eprintln!("io: guest script done in {:.0} s", t0.elapsed().as_secs_f64());

    // 3. Parse "socle-bench: io round=R disk=S write_cs=W read_cs=R iops=I reads=N centisecs=T".
    let mut luks = Disk::default();
    let mut plain = Disk::default();
    let bytes = (MIB << 20) as f64;
    for line in text.lines().filter_map(|l| l.split("socle-bench: io round=").nth(1)) {
        let kv: HashMap<&str, &str> = line.split_whitespace().filter_map(|w| w.split_once('=')).collect();
        let num = |k: &str| -> f64 { kv.get(k).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("no {k}= in {line:?}")) };
        let d = match kv.get("disk") {
            Some(&LUKS) => &mut luks,
            Some(&PLAIN) => &mut plain,
            _ => panic!("bad line {line:?}"),
        };
        // Centisecond clock: a zero would be a failed step, not a fast one.
        assert!(num("write_cs") > 0.0 && num("read_cs") > 0.0, "implausible timing {line:?}");
        d.write_mibs.push(bytes / (1 << 20) as f64 / (num("write_cs") / 100.0));
        d.read_mibs.push(bytes / (1 << 20) as f64 / (num("read_cs") / 100.0));
        d.iops.push(num("iops"));
        let reads = num("reads") as u64;
        // The probe must read data the round wrote (never unallocated clusters,
        // which qcow2 answers without touching LUKS).
        assert!(reads * 4096 <= MIB << 20, "the iops probe read past the written area: {line:?}");
        d.iops_reads.push(reads);
    }
    assert_eq!((luks.write_mibs.len(), plain.write_mibs.len()), (ROUNDS, ROUNDS), "missing rounds:\n{text}");
    IoResult { luks, plain, luks_create, plain_create, host_luks, host_plain }
}

//! Benchmarks (not tests): writes docs/BENCHMARKS.md.
//!
//! Run with `scripts/bench.sh`. Measures, on this machine:
//! 1. the time from the CreateVms call to the guest's `socle-guest: ready`
//!    console line, next to the very same QEMU command line started by hand
//!    (the orchestration overhead as a ratio);
//! 2. ReadVms latency with 1,000 VMs recorded in one account.

#[path = "../tests/common/mod.rs"]
mod common;

use std::fmt::Write as _;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const BOOT_RUNS: usize = 5;
const READ_RUNS: usize = 30;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// CreateVms → ready line, through the whole platform. Returns the time and
/// the QEMU command line the agent used.
fn boot_through_api(cloud: &TestCloud, image: &str) -> (Duration, Vec<String>) {
    let c = &cloud.creds;
    let t0 = Instant::now();
    let out = call(c, "CreateVms", json!({"ImageId": image, "VmType": SMALL})).ok();
    let id = out["Vms"][0]["VmId"].as_str().unwrap().to_string();
    loop {
        if console(c, &id).contains("socle-guest: ready") {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(120), "guest not ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    let elapsed = t0.elapsed();
    let pid = cloud.qemu_pids()[0];
    let cmdline: Vec<String> = String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap())
        .split('\0')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    call(c, "DeleteVms", json!({"VmIds": [id]})).ok();
    wait_state(c, &[id], "terminated", Duration::from_secs(60));
    (elapsed, cmdline)
}

/// The same command line by hand: the same work a person would do — an
/// encrypted root disk made with qemu-img (same LUKS settings), the key in a
/// file instead of the agent's memfd, a scratch VM dir — then QEMU started
/// with the agent's exact arguments, the console polled for the ready line.
fn boot_by_hand(cmdline: &[String], vm_dir: &str) -> Duration {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().to_string_lossy().to_string();
    let key_file = format!("{dir}/key");
    std::fs::write(&key_file, "c29jbGUtYmVuY2gta2V5LW5vdC1hLXNlY3JldC0wMDA=").unwrap();
    let root_volume = cmdline
        .iter()
        .find_map(|a| a.split('"').find(|p| p.contains("/volumes/vol-") && p.ends_with(".qcow2")).map(String::from));
    let args: Vec<String> = cmdline[1..]
        .iter()
        .map(|a| {
            let mut a = a.replace(vm_dir, &dir);
            if let Some(root) = &root_volume {
                a = a.replace(root.as_str(), &format!("{dir}/root.qcow2"));
            }
            // The agent hands keys over as /dev/fd/N (a memfd); by hand, a file.
            while let Some(i) = a.find("/dev/fd/") {
                let end = a[i + 8..].find(|c: char| !c.is_ascii_digit()).map(|e| i + 8 + e).unwrap_or(a.len());
                a.replace_range(i..end, &key_file);
            }
            a
        })
        .collect();
    let t0 = Instant::now();
    if root_volume.is_some() {
        // QEMU 7.2's PBKDF calibration sometimes fails ("Unable to get accurate
        // CPU usage"); the agent retries, so does a person.
        let ok = (0..10).any(|_| {
            Command::new("qemu-img")
                .args(["create", "-q", "-f", "qcow2", "--object", &format!("secret,id=k0,file={key_file}")])
                .args(["-o", "encrypt.format=luks,encrypt.key-secret=k0,encrypt.iter-time=10"])
                .arg(format!("{dir}/root.qcow2"))
                .arg("1G")
                .status()
                .is_ok_and(|s| s.success())
        });
        assert!(ok, "qemu-img create of the encrypted root failed 10 times");
    }
    let st = Command::new(&cmdline[0]).args(&args).status().unwrap();
    assert!(st.success(), "hand-started QEMU failed: {args:?}");
    let console = format!("{dir}/console.log");
    while !std::fs::read_to_string(&console).unwrap_or_default().contains("socle-guest: ready") {
        assert!(t0.elapsed() < Duration::from_secs(120));
        std::thread::sleep(Duration::from_millis(20));
    }
    let elapsed = t0.elapsed();
    let pid: i32 = std::fs::read_to_string(format!("{dir}/qemu.pid")).unwrap().trim().parse().unwrap();
    unsafe { libc::kill(pid, libc::SIGKILL) };
    elapsed
}

fn main() {
    let out_path = std::env::args().nth(1).unwrap_or_else(|| "docs/BENCHMARKS.md".into());
    let cloud = TestCloud::start();
    let image = cloud.tiny_image();
    let log = std::fs::read_to_string(cloud.data_dir().join("server.log")).unwrap_or_default();
    let accel = if log.contains("accel=kvm") { "KVM" } else { "TCG" };

    // 1. Boot: platform vs hand.
    let mut api = vec![];
    let mut hand = vec![];
    for i in 0..BOOT_RUNS {
        let (t, cmdline) = boot_through_api(&cloud, &image);
        let vm_dir = cmdline
            .iter()
            .find(|a| a.ends_with("/qemu.pid"))
            .map(|p| p.trim_end_matches("/qemu.pid").to_string())
            .expect("the pidfile path (in the VM dir) is on the QEMU command line");
        api.push(ms(t));
        hand.push(ms(boot_by_hand(&cmdline, &vm_dir)));
        eprintln!("boot run {}: api {:.0} ms, hand {:.0} ms", i + 1, api[i], hand[i]);
    }

    // 2. ReadVms with 1,000 VMs recorded (created stopped: records, not guests).
    let b = cloud.new_account("bench");
    cloud.set_quota("bench", &["--max-vms", "2000", "--max-vcpus", "4000", "--max-memory-gib", "8000"]);
    for _ in 0..10 {
        call(&b, "CreateVms", json!({"ImageId": image, "VmType": SMALL, "MinVmsCount": 100, "MaxVmsCount": 100, "BootOnCreation": false})).ok();
    }
    let mut page_default = vec![];
    let mut page_all = vec![];
    let mut by_id = vec![];
    let some_id = call(&b, "ReadVms", json!({"ResultsPerPage": 1})).ok()["Vms"][0]["VmId"].as_str().unwrap().to_string();
    for _ in 0..READ_RUNS {
        let t = Instant::now();
        let out = call(&b, "ReadVms", json!({})).ok();
        page_default.push(ms(t.elapsed()));
        assert_eq!(out["Vms"].as_array().unwrap().len(), 100);
        let t = Instant::now();
        let out = call(&b, "ReadVms", json!({"ResultsPerPage": 1000})).ok();
        page_all.push(ms(t.elapsed()));
        assert_eq!(out["Vms"].as_array().unwrap().len(), 1000);
        let t = Instant::now();
        call(&b, "ReadVms", json!({"Filters": {"VmIds": [some_id]}})).ok();
        by_id.push(ms(t.elapsed()));
    }

    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("MemTotal"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map(|kb| kb / 1024.0 / 1024.0)
        .unwrap_or(0.0);
    let qemu = String::from_utf8_lossy(&Command::new("qemu-system-x86_64").arg("--version").output().unwrap().stdout)
        .lines()
        .next()
        .unwrap_or("")
        .to_string();
    let date = time::OffsetDateTime::now_utc().date();
    let (a, h) = (median(api.clone()), median(hand.clone()));
    let mut md = String::new();
    writeln!(md, "# Benchmarks\n").unwrap();
    writeln!(md, "Reproduce with `scripts/bench.sh` (release build; it rewrites this file). Figures are medians.\n").unwrap();
    writeln!(md, "Machine: {cpu}, {cores} cores, {mem_gib:.0} GiB RAM; {qemu}; accelerator **{accel}**; measured {date}.\n").unwrap();
    writeln!(md, "## VM boot: CreateVms call → `socle-guest: ready` on the console\n").unwrap();
    writeln!(md, "`socle-tiny` image, type `{SMALL}`, {BOOT_RUNS} runs each. Both paths make an encrypted (qcow2+LUKS) root disk. \"By hand\" creates it with qemu-img and starts the exact QEMU command line the agent used (key in a file instead of the agent's memfd), without the API, the database, the key custody or the reconciler.\n").unwrap();
    writeln!(md, "| path | median | runs (ms) |\n|---|---|---|").unwrap();
    writeln!(md, "| through Socle (API → reconciler → agent → QEMU) | {a:.0} ms | {} |", api.iter().map(|x| format!("{x:.0}")).collect::<Vec<_>>().join(", ")).unwrap();
    writeln!(md, "| same QEMU command line by hand | {h:.0} ms | {} |", hand.iter().map(|x| format!("{x:.0}")).collect::<Vec<_>>().join(", ")).unwrap();
    writeln!(md, "\nOrchestration overhead: **×{:.2}** ({:+.0} ms).\n", a / h, a - h).unwrap();
    writeln!(md, "## ReadVms latency, 1,000 VMs recorded in one account\n").unwrap();
    writeln!(md, "{READ_RUNS} calls each, signed requests over loopback from one client, server built in release mode.\n").unwrap();
    writeln!(md, "| request | median |\n|---|---|").unwrap();
    writeln!(md, "| `ReadVms {{}}` (first page, 100 VMs) | {:.1} ms |", median(page_default)).unwrap();
    writeln!(md, "| `ReadVms {{\"ResultsPerPage\": 1000}}` (all 1,000 VMs) | {:.1} ms |", median(page_all)).unwrap();
    writeln!(md, "| `ReadVms {{\"Filters\": {{\"VmIds\": [one]}}}}` | {:.1} ms |", median(by_id)).unwrap();
    std::fs::write(&out_path, md).unwrap();
    eprintln!("wrote {out_path}");
}

//! Benchmarks (not tests): writes docs/BENCHMARKS.md.
//!
//! Run with `scripts/bench.sh`. Measures, on this machine:
//! 1. the time from the CreateVms call to the guest's `socle-guest: ready`
//!    console line, next to the very same QEMU command line started by hand
//!    (the orchestration overhead as a ratio);
//! 2. ReadVms latency with 10,000 VMs recorded in one account, with the
//!    cloud's state in SQLite and in PostgreSQL (`bench/read.rs`);
//! 3. guest I/O on an encrypted (qcow2+LUKS) vs a plain qcow2 disk, in a VM
//!    started by hand from the agent's command line (`bench/io.rs`);
//! 4. CreateSnapshot and CreateVolume-from-snapshot time vs volume size,
//!    through the API (`bench/snapshots.rs`);
//! 5. guest-to-guest TCP throughput and latency in a Net, and the delay of a
//!    security-group rule change on real traffic (`bench/network.rs`).
//!
//! It asserts nothing about timings, but panics as soon as a step fails.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "bench/hand.rs"]
mod hand;
#[path = "bench/io.rs"]
mod io;
#[path = "bench/network.rs"]
mod network;
#[path = "bench/read.rs"]
mod read;
#[path = "bench/snapshots.rs"]
mod snapshots;

use std::fmt::Write as _;
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine;
use common::*;
use hand::HandVm;
use serde_json::json;

const BOOT_RUNS: usize = 5;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn list(v: &[f64], decimals: usize) -> String {
    v.iter().map(|x| format!("{x:.decimals$}")).collect::<Vec<_>>().join(", ")
}

/// The command line of a running process.
fn qemu_cmdline(pid: i32) -> Vec<String> {
    String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap())
        .split('\0')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// The VM directory of an agent-made QEMU command line (its pidfile is there).
fn vm_dir_of(cmdline: &[String]) -> String {
    cmdline
        .iter()
        .find(|a| a.ends_with("/qemu.pid"))
        .map(|p| p.trim_end_matches("/qemu.pid").to_string())
        .expect("the pidfile path (in the VM dir) is on the QEMU command line")
}

/// 1-minute load average.
fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg").ok().and_then(|s| s.split_whitespace().next()?.parse().ok()).unwrap_or(0.0)
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
    let cmdline = qemu_cmdline(cloud.qemu_pids()[0]);
    call(c, "DeleteVms", json!({"VmIds": [id]})).ok();
    wait_state(c, &[id], "terminated", Duration::from_secs(60));
    (elapsed, cmdline)
}

/// The same command line by hand: the same work a person would do — an
/// encrypted root disk made with qemu-img (same LUKS settings), the key in a
/// file instead of the agent's memfd, a scratch VM dir — then QEMU started
/// with the agent's exact arguments, the console polled for the ready line.
/// Returns the time and how long qemu-img took to make the root disk.
fn boot_by_hand(cmdline: &[String], vm_dir: &str) -> (Duration, Option<Duration>) {
    let mut vm = HandVm::new(cmdline, vm_dir);
    let t0 = Instant::now();
    let create = vm.create_root();
    vm.start();
    vm.wait_console("socle-guest: ready", Duration::from_secs(120));
    let elapsed = t0.elapsed();
    vm.kill();
    (elapsed, create)
}

/// The heading of the section scripts/test.sh's figures are recorded under.
const SUITE_SECTION: &str = "## The test suite's own duration";

fn main() {
    let out_path = std::env::args().nth(1).unwrap_or_else(|| "docs/BENCHMARKS.md".into());
    // For development only: SOCLE_BENCH_ONLY=boot,io,snapshots,read runs (and
    // writes) only those sections.
    let only = std::env::var("SOCLE_BENCH_ONLY").ok();
    let want = |s: &str| only.as_deref().is_none_or(|o| o.split(',').any(|x| x == s));
    let load_before = loadavg();
    let started = Instant::now();
    let cloud = TestCloud::start();
    let image = cloud.tiny_image();
    let log = std::fs::read_to_string(cloud.data_dir().join("server.log")).unwrap_or_default();
    let accel = if log.contains("accel=kvm") { "KVM" } else { "TCG" };

    // 1. Boot: platform vs hand.
    let mut api = vec![];
    let mut hand = vec![];
    let mut root_creates = vec![];
    for i in 0..if want("boot") { BOOT_RUNS } else { 0 } {
        let (t, cmdline) = boot_through_api(&cloud, &image);
        let vm_dir = vm_dir_of(&cmdline);
        api.push(ms(t));
        let (t, create) = boot_by_hand(&cmdline, &vm_dir);
        hand.push(ms(t));
        root_creates.extend(create.map(ms));
        eprintln!("boot run {}: api {:.0} ms, hand {:.0} ms", i + 1, api[i], hand[i]);
    }

    // 3. Guest I/O, encrypted vs plain (a VM started by hand).
    let io = want("io").then(|| io::run(&cloud, &image));
    // 4. Snapshot and volume-from-snapshot time vs size (through the API).
    let snaps = want("snapshots").then(|| snapshots::run(&cloud, &image));
    // 5. Networking (needs root: namespaces, taps, nftables).
    let net = want("network").then(|| network::run(&cloud, &image));

    // 2. ReadVms with 10,000 VMs recorded, on each engine. Last: the other
    // sections run on an account-free, quiet control plane.
    let mut reads = vec![];
    if want("read") {
        reads.push(read::run(&cloud, &image, "SQLite"));
        let cluster = socle_store::testing::PgCluster::shared().unwrap_or_else(|e| panic!("the read section needs PostgreSQL: {e}"));
        let pg = TestCloud::start_on(Some(cluster.new_database().unwrap()), &[]);
        reads.push(read::run(&pg, &pg.tiny_image(), "PostgreSQL"));
    }
    let load_after = loadavg();
    let total = started.elapsed();

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
    let mut md = String::new();
    writeln!(md, "# Benchmarks\n").unwrap();
    writeln!(md, "Reproduce with `scripts/bench.sh` (release build; it rewrites this file), i.e. `cargo build --release -p socle --bin socle --example bench && target/release/examples/bench docs/BENCHMARKS.md`. Figures are medians unless said otherwise.\n").unwrap();
    writeln!(md, "Machine: {cpu}, {cores} cores, {mem_gib:.0} GiB RAM; {qemu}; accelerator **{accel}**; measured {date}, whole run {:.0} s.\n", total.as_secs_f64()).unwrap();
    // Before the run the load is other people's work; after, it includes ours.
    if load_before >= 0.5 {
        writeln!(md, "**The machine was not quiet**: its 1-minute load average was {load_before:.2} before the run started ({load_after:.2} at the end) on {cores} cores — other work shared the CPUs, so every figure here is slower and noisier than on an idle machine; compare ratios (measured side by side, interleaved) rather than absolute values.\n").unwrap();
    } else {
        writeln!(md, "The machine was quiet: 1-minute load average {load_before:.2} before the run ({load_after:.2} at the end, the benchmark's own work).\n").unwrap();
    }
    if let Some(o) = &only {
        writeln!(md, "**Partial run** (`SOCLE_BENCH_ONLY={o}`).\n").unwrap();
    }
    if !api.is_empty() {
        let (a, h) = (median(api.clone()), median(hand.clone()));
        writeln!(md, "## VM boot: CreateVms call → `socle-guest: ready` on the console\n").unwrap();
        writeln!(md, "`socle-tiny` image, type `{SMALL}`, {BOOT_RUNS} runs each. Both paths make an encrypted (qcow2+LUKS) root disk. \"By hand\" creates it with qemu-img and starts the exact QEMU command line the agent used (key in a file instead of the agent's memfd), without the API, the database, the key custody or the reconciler.\n").unwrap();
        writeln!(md, "| path | median | runs (ms) |\n|---|---|---|").unwrap();
        writeln!(md, "| through Socle (API → reconciler → agent → QEMU) | {a:.0} ms | {} |", list(&api, 0)).unwrap();
        writeln!(md, "| same QEMU command line by hand | {h:.0} ms | {} |", list(&hand, 0)).unwrap();
        writeln!(md, "\nOrchestration overhead: **×{:.2}** ({:+.0} ms). Of the hand path, making the empty encrypted root disk with qemu-img took {:.0} ms (median; runs {} ms): QEMU's PBKDF calibration, see the snapshot section.\n", a / h, a - h, median(root_creates.clone()), list(&root_creates, 0)).unwrap();
    }
    if !reads.is_empty() {
        read::write(&mut md, &reads);
    }
    if let Some(r) = &io {
        write_io(&mut md, r, accel);
    }
    if let Some(rows) = &snaps {
        write_snapshots(&mut md, rows, &root_creates, io.as_ref());
    }
    if let Some(r) = &net {
        write_network(&mut md, r, accel);
    }
    // The test suite's timings are measured by scripts/test.sh, not here:
    // that section of the old file is kept as it was.
    let old = std::fs::read_to_string(&out_path).unwrap_or_default();
    if let Some(start) = old.find(&format!("\n{SUITE_SECTION}")) {
        let rest = &old[start + 1..];
        let end = rest[SUITE_SECTION.len()..].find("\n## ").map_or(rest.len(), |i| i + SUITE_SECTION.len() + 1);
        md.push('\n');
        md.push_str(rest[..end].trim_end());
        md.push('\n');
    }
    std::fs::write(&out_path, md.trim_end().to_string() + "\n").unwrap();
    eprintln!("wrote {out_path} (run took {:.0} s)", total.as_secs_f64());
}

fn write_io(md: &mut String, r: &io::IoResult, accel: &str) {
    let (rounds, mib) = (io::ROUNDS, io::MIB);
    writeln!(md, "## Guest I/O: encrypted (qcow2+LUKS) vs unencrypted (plain qcow2) disk\n").unwrap();
    writeln!(md, "Volumes made by the platform are always encrypted, so the baseline needs a VM started by hand: the exact QEMU command line the agent used for a `{SMALL}` VM launched with one data volume (key in a file, scratch VM dir, as for the boot above), its data volume replaced by two 1 GiB disks built from the agent's own arguments for it — `file` → `qcow2` → `throttle` (throttle group with every limit 0, i.e. unlimited) → `virtio-blk-pci` with a serial — one qcow2+LUKS (the agent's settings: aes-256-xts, plain64, sha256), one plain qcow2 (the same minus the secret and `encrypt`). Host page cache on, as the agent runs QEMU.\n").unwrap();
    writeln!(md, "Inside the guest a UserData script (run by `socle-tiny` at boot), for {rounds} rounds, each disk in turn: `dd if=/dev/zero of=$dev bs=1M count={mib} oflag=direct` (timed), `dd if=$dev of=/dev/null bs=1M count={mib} iflag=direct` (timed), then `socle-disks iops $dev` (4 KiB `O_DIRECT` reads at queue depth 1, batches grown until one lasts ≥ 0.5 s). busybox `dd` prints no time, so the clock is the guest's `/proc/uptime` (centiseconds). Medians of the {rounds} rounds; both disks had been written whole beforehand (by the host-side measurement below), so every round overwrites allocated clusters.\n").unwrap();
    let row = |name: &str, e: &[f64], p: &[f64], dec: usize| {
        let (me, mp) = (median(e.to_vec()), median(p.to_vec()));
        format!("| {name} | {me:.dec$} | {mp:.dec$} | **{:.2}** | {} / {} |", me / mp, list(e, dec), list(p, dec))
    };
    writeln!(md, "| in the guest | encrypted | plain | encrypted / plain | rounds (encrypted / plain) |\n|---|---|---|---|---|").unwrap();
    writeln!(md, "{}", row("sequential write, 1 MiB blocks (MiB/s)", &r.luks.write_mibs, &r.plain.write_mibs, 0)).unwrap();
    writeln!(md, "{}", row("sequential read, 1 MiB blocks (MiB/s)", &r.luks.read_mibs, &r.plain.read_mibs, 0)).unwrap();
    writeln!(md, "{}", row("4 KiB reads, queue depth 1 (IOPS)", &r.luks.iops, &r.plain.iops, 0)).unwrap();
    writeln!(md, "{}", row("*host side, no guest:* `qemu-io`, 1 GiB written in one request (MiB/s)", &r.host_luks.write_mibs, &r.host_plain.write_mibs, 0)).unwrap();
    writeln!(md, "{}", row("*host side, no guest:* `qemu-io`, 1 GiB read in one request (MiB/s)", &r.host_luks.read_mibs, &r.host_plain.read_mibs, 0)).unwrap();
    writeln!(md).unwrap();
    writeln!(md, "Notes: `socle-disks iops` reads consecutive 4 KiB blocks (busybox has no random-offset reader that stays in one process, and a `dd` per request would measure `fork`); at queue depth 1 with the data in the host page cache and qcow2's L2 cache covering the whole 1 GiB disk, a request costs the same wherever it lands, so this is the per-request cost a random 4 KiB read would pay, not a disk seek. Under {accel}{} the guest's own CPU work per request weighs heavily, which narrows the gap that AES-XTS (done by QEMU's worker threads on the host, AES-NI when the CPU has it) would show. Making the empty encrypted disk with qemu-img took {:.0} ms, the plain one {:.0} ms.\n",
        if accel == "TCG" { " (every guest instruction emulated)" } else { "" },
        ms(r.luks_create), ms(r.plain_create)).unwrap();
}

fn write_snapshots(md: &mut String, rows: &[snapshots::Row], root_creates: &[f64], io: Option<&io::IoResult>) {
    writeln!(md, "## CreateSnapshot and CreateVolume from a snapshot: time vs size\n").unwrap();
    writeln!(md, "Through the API, one run per size. Volumes of {} GiB (io1 at the most IOPS allowed, 300 per GiB, so the fill is throttled little) launched with one `{SMALL}` VM, whose UserData script fills each one completely with `dd … bs=1M oflag=direct` from a 16 MiB random pattern repeated (not zeros: `qemu-img convert` skips zero blocks, and LUKS output is never sparse anyway, so every volume file really holds its size). Then, for each volume: `CreateSnapshot` while it is linked to the running VM (a `blockdev-backup` job inside the VM's QEMU) → `State` `completed`; `CreateVolume` with that `SnapshotId` → `State` `available` (`qemu-img convert`, snapshot key → new volume key); and, after the VM is deleted, `CreateSnapshot` of the now unlinked volume (`qemu-img convert`). Each time runs from the call to the state, polling `ReadSnapshots`/`ReadVolumes` every 100 ms; every copy was deleted (and gone) before the next step.\n",
        rows.iter().map(|r| r.gib.to_string()).collect::<Vec<_>>().join(", ")).unwrap();
    let opt = |x: Option<f64>| x.map(|v| format!("{v:.0} ms")).unwrap_or_else(|| "n/a".into());
    writeln!(md, "| volume | guest fill | CreateSnapshot, linked | … of which before the copy starts | CreateSnapshot, not linked | CreateVolume from the snapshot |\n|---|---|---|---|---|---|").unwrap();
    for r in rows {
        writeln!(md, "| {} GiB ({:.2} GiB on disk) | {:.0} MiB/s | {:.0} ms | {} | {:.0} ms | {:.0} ms |", r.gib, r.allocated as f64 / (1u64 << 30) as f64, r.fill_mibs, r.online.ms, opt(r.online_job_ms), r.offline.ms, r.from_snap.ms).unwrap();
    }
    let mut creates: Vec<f64> = root_creates.to_vec();
    if let Some(io) = io {
        creates.push(ms(io.luks_create));
    }
    let fixed_ms = (!creates.is_empty()).then(|| median(creates.clone()));
    // Copy speed once the fixed part is taken off: the linked snapshot's own
    // job start, else the run's median qemu-img create.
    let rate = |gib: u64, total: f64, fixed: Option<f64>| match fixed {
        Some(f) if total > f => format!("{:.0} MiB/s", gib as f64 * 1024.0 / ((total - f) / 1000.0)),
        _ => "n/a".into(),
    };
    writeln!(md, "\nCopy speed implied, size ÷ (time − fixed part), the fixed part being the linked snapshot's own copy-job start, else the median `qemu-img create` below:\n").unwrap();
    writeln!(md, "| volume | CreateSnapshot, linked | CreateSnapshot, not linked | CreateVolume from the snapshot |\n|---|---|---|---|").unwrap();
    for r in rows {
        writeln!(md, "| {} GiB | {} | {} | {} |", r.gib, rate(r.gib, r.online.ms, r.online_job_ms), rate(r.gib, r.offline.ms, fixed_ms), rate(r.gib, r.from_snap.ms, fixed_ms)).unwrap();
    }
    writeln!(md).unwrap();
    let fixed = if creates.is_empty() {
        "not measured in this run".to_string()
    } else {
        format!("{:.1} s on this run (median of {} `qemu-img create` of an empty encrypted disk made elsewhere in it: {} ms)", median(creates.clone()) / 1000.0, creates.len(), list(&creates, 0))
    };
    let jobs: Vec<f64> = rows.iter().filter_map(|r| r.online_job_ms).collect();
    let overhead: Vec<f64> = rows.iter().flat_map(|r| [&r.online, &r.offline, &r.from_snap]).filter_map(|s| s.agent_ms.map(|a| s.ms - a)).collect();
    writeln!(md, "What dominates:\n").unwrap();
    writeln!(md, "- **A fixed cost per encrypted file created**, the same for 1 GiB or 1 TiB: every one of these operations creates one new qcow2+LUKS file, and QEMU 7.2, before writing a LUKS header, calibrates PBKDF2 — `qcrypto_pbkdf2_count_iters` repeats PBKDF2 until one sample takes more than 500 ms of CPU, once for the master-key digest and once for the key slot — whatever `encrypt.iter-time` asks (Socle asks for 10 ms: the passphrase is a random 256-bit key, stretching it buys nothing, but the calibration still runs). That is {fixed}; it is CPU time, so a loaded machine stretches it.{}", if jobs.is_empty() { String::new() } else { format!(" The linked snapshots show it directly: their copy job started {} ms after the call.", list(&jobs, 0)) }).unwrap();
    writeln!(md, "- **Then the copy**, which grows with the size: every byte is read, decrypted, re-encrypted under the new disk's key (AES-256-XTS) and written, then the file is fsynced. The linked snapshot copies inside the VM's QEMU (`blockdev-backup`), the other two with `qemu-img convert -W`. The copy runs on the same CPUs as everything else (and, for a linked snapshot, next to the guest), so on a busy machine it slows down with it.").unwrap();
    if !overhead.is_empty() {
        writeln!(md, "- **Not the platform**: the agent's own durations (the `secs=` of its \"snapshot taken\" / \"volume created\" log lines) account for all but {:.0}–{:.0} ms of each figure above; the API, the reconciler, unwrapping the data keys and the 100 ms polling add next to nothing.", overhead.iter().cloned().fold(f64::INFINITY, f64::min), overhead.iter().cloned().fold(0.0, f64::max)).unwrap();
    }
}

fn write_network(md: &mut String, r: &network::NetResult, accel: &str) {
    use network::*;
    writeln!(md, "## Networking: guest to guest in a Net, and security-group rule changes\n").unwrap();
    writeln!(md, "Through the API: one Net (10.0.0.0/16, one subnet), two `{SMALL}` VMs in it whose group lets the Net in; the server also has a public IP and a second group, initially without rules. Every packet crosses the platform's data path: tap → bridge in the Net's namespace, nftables per port (anti-spoofing, security groups) → tap.\n").unwrap();
    writeln!(md, "| guest to guest | median | runs |\n|---|---|---|").unwrap();
    writeln!(md, "| TCP throughput, client → server, {TCP_MIB} MiB per run (busybox `dd \\| nc`, timed in the guest with `/proc/uptime`) | {:.0} MiB/s | {} |", median(r.tcp_mibs.clone()), list(&r.tcp_mibs, 0)).unwrap();
    writeln!(md, "| the same transfer to the client's own loopback (no network: the ceiling of `dd \\| nc` in such a guest) | {:.0} MiB/s | {} |", median(r.loopback_mibs.clone()), list(&r.loopback_mibs, 0)).unwrap();
    writeln!(md, "| ICMP round trip, {PINGS} pings 0.2 s apart (busybox `ping`, min / avg / max) | {:.2} ms avg | {:.2} / {:.2} / {:.2} ms |\n", r.ping.1, r.ping.0, r.ping.1, r.ping.2).unwrap();
    writeln!(md, "Network / loopback: **{:.2}**. Under {accel}{} the guests' own CPU (busybox `nc` and `wc`, the guest TCP stack, virtio-net emulated by QEMU) bounds these figures: the loopback transfer shows what the tool alone reaches in such a guest.\n", median(r.tcp_mibs.clone()) / median(r.loopback_mibs.clone()), if accel == "TCG" { " (every guest instruction emulated)" } else { "" }).unwrap();
    writeln!(md, "Rule change → effect on traffic, seen from the host on the server's public IP, port 8080 (busybox `httpd` in the guest): from the `CreateSecurityGroupRule` call (inbound tcp 8080 from 0.0.0.0/0 on the second group) to the start of the first TCP connect that succeeds, and from the `DeleteSecurityGroupRule` call to the start of the first new connect that fails. Connects follow each other with a {} ms timeout (a dropped SYN never answers) or 5 ms apart after a success, so each figure is an upper bound, late by at most that spacing: the attempt before it met the old rules. {RULE_ROUNDS} rounds each, 0.5 s apart.\n", CONNECT_TIMEOUT.as_millis()).unwrap();
    writeln!(md, "| change | median | runs (ms) |\n|---|---|---|").unwrap();
    writeln!(md, "| rule added → port open | {:.0} ms | {} |", median(r.open_ms.clone()), list(&r.open_ms, 0)).unwrap();
    writeln!(md, "| rule deleted → new connections refused | {:.0} ms | {} |", median(r.close_ms.clone()), list(&r.close_ms, 0)).unwrap();
    writeln!(md, "| (the API call itself, both kinds) | {:.1} ms | {} |\n", median(r.call_ms.clone()), list(&r.call_ms, 1)).unwrap();
    writeln!(md, "What a rule change does: the call commits the rule and wakes the network reconciler, whose pass recompiles the Net's spec and replaces the namespace's nftables ruleset in one atomic `nft -f`; established flows stay (conntrack). The issue's bound is one second.\n").unwrap();
}

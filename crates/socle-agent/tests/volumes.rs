//! Block storage against real QEMU (TCG) guests: encrypted volume files,
//! hot-plug/unplug seen by the guest, snapshots (offline and while the guest
//! writes), restore into another VM, I/O limits measured inside the guest,
//! restarts with linked volumes, wrong keys. No mocks; fails (never skips)
//! when QEMU is missing.

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use socle_agent::{
    Agent, AgentError, IoLimits, RootDisk, VmRuntime, VolumeKey, VolumeSource, READY_MARKER,
};

const BOOT_TIMEOUT: Duration = Duration::from_secs(90);
const GUEST_TIMEOUT: Duration = Duration::from_secs(120);
const GIB: u64 = 1 << 30;

// ----- helpers ---------------------------------------------------------------

/// Waits for a console line containing `needle`; returns the first such line.
async fn wait_line(agent: &Agent, vm: &str, needle: &str, timeout: Duration) -> String {
    wait_nth_line(agent, vm, needle, 1, timeout).await
}

/// Waits for `n` console lines containing `needle`; returns the n-th.
async fn wait_nth_line(
    agent: &Agent,
    vm: &str,
    needle: &str,
    n: usize,
    timeout: Duration,
) -> String {
    let started = Instant::now();
    loop {
        let text = console(agent, vm);
        if let Some(l) = text.lines().filter(|l| l.contains(needle)).nth(n - 1) {
            return l.trim_end_matches('\r').to_string();
        }
        if started.elapsed() > timeout {
            panic!(
                "{vm}: console line {needle:?} (#{n}) not seen within {timeout:?}; console:\n{text}"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn field<'a>(line: &'a str, name: &str) -> &'a str {
    let pat = format!("{name}=");
    let i = line
        .find(&pat)
        .unwrap_or_else(|| panic!("no {name}= in {line:?}"));
    line[i + pat.len()..]
        .split_whitespace()
        .next()
        .unwrap_or("")
}

/// The 4 MiB the writer guest puts on its volume: 65536 lines of 64 bytes.
fn canary_pattern() -> Vec<u8> {
    let mut v = Vec::with_capacity(4 << 20);
    for i in 0..65536u32 {
        let line = format!("socle plaintext canary {i:010} {}\n", "x".repeat(29));
        assert_eq!(line.len(), 64);
        v.extend_from_slice(line.as_bytes());
    }
    v
}

const CANARY_AWK: &str = r#"awk 'BEGIN { for (i = 0; i < 65536; i++) printf "socle plaintext canary %010d xxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n", i }'"#;

/// Deterministic pseudo-random bytes (xorshift64*): incompressible data for
/// timing copies. Any prefix of a longer run is the shorter run.
fn random_bytes(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut v = vec![0u8; len];
    for c in v.chunks_mut(8) {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let b = x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
        c.copy_from_slice(&b[..c.len()]);
    }
    v
}

fn random_file(path: &Path, len: u64) {
    std::fs::write(path, random_bytes(len as usize)).unwrap();
}

// ----- tests -----------------------------------------------------------------

/// Volume files without any VM: encryption at rest, idempotence, resize,
/// snapshot and restore offline, wrong keys, in-use protection; and the
/// copy throughput figures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_volume_files_offline() {
    let tmp = socle_testkit::Slot::claim();
    let agent = tcg_agent(&tmp.path().join("state")).await;
    let image = agent.build_tiny_image().await.unwrap();
    let work = tmp.path();
    let key = VolumeKey::generate().unwrap();
    let wrong = VolumeKey::generate().unwrap();

    // A plain image holding the canary, turned into an encrypted volume.
    let canary = canary_pattern();
    let raw = work.join("canary.raw");
    std::fs::write(&raw, &canary).unwrap();
    let t0 = Instant::now();
    let info = agent
        .create_volume(
            "vol-0000000a",
            1,
            &key,
            Some(VolumeSource::Image { disk: raw.clone() }),
        )
        .await
        .expect("create from image");
    eprintln!(
        "create_volume (1 GiB, 4 MiB of data): {:.2} s",
        t0.elapsed().as_secs_f64()
    );
    assert_eq!(info.size_bytes, GIB);
    assert!(info.encrypted);
    assert!(info.attachment.is_none());
    assert_eq!(
        info.path,
        agent.state_dir().join("volumes/vol-0000000a.qcow2")
    );
    assert_eq!(agent.list_volumes().await.unwrap(), vec!["vol-0000000a"]);
    // LUKS parameters as promised.
    let out = std::process::Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(&info.path)
        .output_within(COMMAND_TIMEOUT);
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let enc = &meta["format-specific"]["data"]["encrypt"];
    assert_eq!(enc["format"], "luks", "{meta}");
    assert_eq!(enc["cipher-alg"], "aes-256");
    assert_eq!(enc["cipher-mode"], "xts");
    // Plaintext nowhere in the file; readable with the key.
    let file = std::fs::read(&info.path).unwrap();
    assert!(
        !contains(&file, b"plaintext canary"),
        "plaintext found in the volume file"
    );
    assert_eq!(
        plaintext(&info.path, &key, work, canary.len() as u64),
        canary
    );
    // No temporary file left, nothing in the command lines (no process left).
    let names: Vec<String> = std::fs::read_dir(agent.state_dir().join("volumes"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["vol-0000000a.qcow2"]);

    // Idempotent create; conflicting size; wrong key.
    agent
        .create_volume("vol-0000000a", 1, &key, None)
        .await
        .expect("same again");
    assert!(matches!(
        agent.create_volume("vol-0000000a", 2, &key, None).await,
        Err(AgentError::VolumeConflict { .. })
    ));
    let err = agent
        .create_volume("vol-0000000a", 1, &wrong, None)
        .await
        .unwrap_err();
    assert!(matches!(err, AgentError::WrongKey { .. }), "{err}");

    // Resize: grow offline, same size is a no-op, shrink and wrong key refused.
    let err = agent
        .resize_volume("vol-0000000a", 2, &wrong)
        .await
        .unwrap_err();
    assert!(matches!(err, AgentError::WrongKey { .. }), "{err}");
    eprintln!("wrong key on resize: {err}");
    let info = agent.resize_volume("vol-0000000a", 2, &key).await.unwrap();
    assert_eq!(info.size_bytes, 2 * GIB);
    agent.resize_volume("vol-0000000a", 2, &key).await.unwrap();
    assert!(matches!(
        agent.resize_volume("vol-0000000a", 1, &key).await,
        Err(AgentError::VolumeConflict { .. })
    ));
    assert_eq!(
        plaintext(&info.path, &key, work, canary.len() as u64),
        canary
    );

    // Offline snapshot under its own key, with progress.
    let snap_key = VolumeKey::generate().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let err = agent
        .snapshot_volume("vol-0000000a", "snap-0000000a", &wrong, &snap_key)
        .await
        .unwrap_err();
    assert!(matches!(err, AgentError::WrongKey { .. }), "{err}");
    let snap = agent
        .snapshot_volume_with_progress("vol-0000000a", "snap-0000000a", &key, &snap_key, move |p| {
            s2.lock().unwrap().push(p)
        })
        .await
        .expect("snapshot");
    assert_eq!(snap.size_bytes, 2 * GIB);
    assert!(seen.lock().unwrap().last().unwrap().done == 2 * GIB);
    assert!(agent.snapshot_progress("snap-0000000a").is_none());
    assert_eq!(agent.list_snapshots().await.unwrap(), vec!["snap-0000000a"]);
    let sfile = std::fs::read(&snap.path).unwrap();
    assert!(!contains(&sfile, b"plaintext canary"));
    assert_eq!(
        plaintext(&snap.path, &snap_key, work, canary.len() as u64),
        canary
    );
    // The volume key does not open the snapshot.
    agent
        .snapshot_volume("vol-0000000a", "snap-0000000a", &key, &snap_key)
        .await
        .expect("snapshot is idempotent");

    // Restore into a new, larger volume; wrong snapshot key leaves nothing.
    let k2 = VolumeKey::generate().unwrap();
    let err = agent
        .create_volume(
            "vol-0000000b",
            3,
            &k2,
            Some(VolumeSource::Snapshot {
                snapshot_id: "snap-0000000a".into(),
                key: key.clone(),
            }),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, AgentError::WrongKey { .. }), "{err}");
    eprintln!("wrong snapshot key: {err}");
    assert!(!agent.volume_path("vol-0000000b").exists());
    assert!(matches!(
        agent
            .create_volume(
                "vol-0000000b",
                1,
                &k2,
                Some(VolumeSource::Snapshot {
                    snapshot_id: "snap-0000000a".into(),
                    key: snap_key.clone()
                }),
            )
            .await,
        Err(AgentError::InvalidArgument(_))
    ));
    let b = agent
        .create_volume(
            "vol-0000000b",
            3,
            &k2,
            Some(VolumeSource::Snapshot {
                snapshot_id: "snap-0000000a".into(),
                key: snap_key.clone(),
            }),
        )
        .await
        .expect("volume from snapshot");
    assert_eq!(b.size_bytes, 3 * GIB);
    assert_eq!(plaintext(&b.path, &k2, work, canary.len() as u64), canary);

    // In use: a (stopped) VM with the volume linked, and one booting from a root volume.
    agent.define_vm(&spec("i-offline01", &image)).await.unwrap();
    let err = agent
        .link_volume(
            "i-offline01",
            "vol-0000000b",
            &wrong,
            "/dev/xvdb",
            IoLimits::iops(100),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, AgentError::WrongKey { .. }), "{err}");
    agent
        .link_volume(
            "i-offline01",
            "vol-0000000b",
            &k2,
            "/dev/xvdb",
            IoLimits::iops(100),
        )
        .await
        .unwrap();
    agent
        .link_volume(
            "i-offline01",
            "vol-0000000b",
            &k2,
            "/dev/xvdb",
            IoLimits::iops(200),
        )
        .await
        .expect("link is idempotent");
    let att = agent
        .volume_info("vol-0000000b")
        .await
        .unwrap()
        .attachment
        .unwrap();
    assert_eq!(att.vm_id, "i-offline01");
    assert_eq!(att.device_name.as_deref(), Some("/dev/xvdb"));
    assert_eq!(att.limits, IoLimits::iops(200));
    assert!(matches!(
        agent
            .link_volume(
                "i-offline01",
                "vol-0000000a",
                &key,
                "/dev/xvdb",
                IoLimits::default()
            )
            .await,
        Err(AgentError::VolumeConflict { .. })
    ));
    assert!(matches!(
        agent
            .link_volume(
                "i-offline01",
                "vol-0000000b",
                &k2,
                "/dev/xvdc",
                IoLimits::default()
            )
            .await,
        Err(AgentError::VolumeConflict { .. })
    ));
    assert!(matches!(
        agent
            .link_volume(
                "i-offline01",
                "vol-0000000a",
                &key,
                "/dev/xvda",
                IoLimits::default()
            )
            .await,
        Err(AgentError::InvalidArgument(_))
    ));
    let err = agent.delete_volume("vol-0000000b").await.unwrap_err();
    assert!(matches!(err, AgentError::VolumeConflict { .. }), "{err}");
    // Redefining the VM keeps its volumes.
    agent.define_vm(&spec("i-offline01", &image)).await.unwrap();
    assert_eq!(agent.vm_volumes("i-offline01").await.unwrap().len(), 1);
    let err = agent.start_vm("i-offline01").await.unwrap_err();
    assert!(matches!(err, AgentError::MissingVolumeKey { .. }), "{err}");
    assert_eq!(
        agent.vm_runtime("i-offline01").await.unwrap(),
        VmRuntime::NotRunning
    );
    agent
        .unlink_volume("i-offline01", "vol-0000000b")
        .await
        .unwrap();
    agent
        .unlink_volume("i-offline01", "vol-0000000b")
        .await
        .expect("unlink is idempotent");
    assert!(agent.vm_volumes("i-offline01").await.unwrap().is_empty());
    agent
        .define_vm_with_root(
            &spec("i-offline02", &image),
            &RootDisk::Volume("vol-0000000b".into()),
        )
        .await
        .unwrap();
    assert!(matches!(
        agent
            .define_vm_with_root(
                &spec("i-offline03", &image),
                &RootDisk::Volume("vol-0000000b".into())
            )
            .await,
        Err(AgentError::VolumeConflict { .. })
    ));
    assert!(matches!(
        agent.define_vm(&spec("i-offline02", &image)).await,
        Err(AgentError::Conflict { .. })
    ));
    assert!(matches!(
        agent.delete_volume("vol-0000000b").await,
        Err(AgentError::VolumeConflict { .. })
    ));
    agent.destroy_vm("i-offline02").await.unwrap();
    assert!(
        agent.volume_path("vol-0000000b").exists(),
        "a root volume outlives its VM"
    );

    // Deletes are idempotent.
    for _ in 0..2 {
        agent.delete_volume("vol-0000000b").await.unwrap();
        agent.delete_snapshot("snap-0000000a").await.unwrap();
    }
    assert!(matches!(
        agent.volume_info("vol-0000000b").await,
        Err(AgentError::VolumeNotFound(_))
    ));
    assert!(matches!(
        agent.create_volume("../x", 1, &key, None).await,
        Err(AgentError::InvalidId { .. })
    ));

    // Throughput: 1 GiB of incompressible data, encrypted in, snapshot, out.
    let big = work.join("random.raw");
    random_file(&big, GIB);
    let t0 = Instant::now();
    agent
        .create_volume(
            "vol-0000000c",
            1,
            &key,
            Some(VolumeSource::Image { disk: big.clone() }),
        )
        .await
        .unwrap();
    let t_create = t0.elapsed().as_secs_f64();
    std::fs::remove_file(&big).unwrap();
    let t0 = Instant::now();
    agent
        .snapshot_volume("vol-0000000c", "snap-0000000c", &key, &snap_key)
        .await
        .unwrap();
    let t_snap = t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    agent
        .create_volume(
            "vol-0000000d",
            0,
            &k2,
            Some(VolumeSource::Snapshot {
                snapshot_id: "snap-0000000c".into(),
                key: snap_key.clone(),
            }),
        )
        .await
        .unwrap();
    let t_restore = t0.elapsed().as_secs_f64();
    eprintln!(
        "FIGURES 1 GiB full of data: import into an encrypted volume {t_create:.2} s, \
         offline snapshot (qemu-img convert, decrypt + re-encrypt) {t_snap:.2} s, \
         volume from snapshot {t_restore:.2} s (each includes ~2 s of LUKS header creation)"
    );
    for v in ["vol-0000000a", "vol-0000000c", "vol-0000000d"] {
        agent.delete_volume(v).await.unwrap();
    }
    agent.delete_snapshot("snap-0000000c").await.unwrap();
    agent.destroy_vm("i-offline01").await.unwrap();
}

/// Hot-plug into a running guest, write from the guest, resize online,
/// unlink, snapshot, restore into a second VM that reads the data back,
/// restart with the volume linked, wrong keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hotplug_write_snapshot_restore_in_another_vm() {
    let tmp = socle_testkit::Slot::claim();
    let agent = tcg_agent(&tmp.path().join("state")).await;
    let image = agent.build_tiny_image().await.unwrap();
    let (a, b) = ("i-writer01", "i-reader01");
    let (va, vb) = ("vol-0a1b2c3d", "vol-0b1b2c3d");

    let mut sa = spec(a, &image);
    sa.user_data = Some(
        format!(
            "#!/bin/sh\n\
             dev=$(socle-disks wait {va} 120) || exit 1\n\
             {CANARY_AWK} > /tmp/pattern\n\
             dd if=/tmp/pattern of=$dev bs=1M oflag=direct conv=fsync 2>/dev/null\n\
             sync\n\
             echo \"pattern written md5=$(dd if=$dev bs=1M count=4 iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)\"\n"
        )
        .into_bytes(),
    );
    let mut sb = spec(b, &image);
    sb.user_data = Some(
        format!(
            "#!/bin/sh\n\
             dev=$(socle-disks wait {vb} 120) || exit 1\n\
             echo \"pattern read md5=$(dd if=$dev bs=1M count=4 iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)\"\n"
        )
        .into_bytes(),
    );
    agent.define_vm(&sa).await.unwrap();
    agent.define_vm(&sb).await.unwrap();
    agent.start_vm(a).await.unwrap();
    agent.start_vm(b).await.unwrap();
    let ka = VolumeKey::generate().unwrap();
    agent.create_volume(va, 1, &ka, None).await.unwrap();
    wait_line(&agent, a, READY_MARKER, BOOT_TIMEOUT).await;
    assert!(console(&agent, a).contains("socle-guest: disk present vda serial= size=1073741824"));

    // Hot-plug: the guest sees it, with its serial, and writes the pattern.
    let t0 = Instant::now();
    agent
        .link_volume(a, va, &ka, "/dev/xvdb", IoLimits::unlimited())
        .await
        .expect("hot-plug");
    let line = wait_line(
        &agent,
        a,
        &format!("disk added vdb serial={va}"),
        GUEST_TIMEOUT,
    )
    .await;
    eprintln!(
        "hot-plug seen by the guest after {:.2} s: {line}",
        t0.elapsed().as_secs_f64()
    );
    assert!(line.ends_with("size=1073741824"), "{line}");
    let written = wait_line(&agent, a, "pattern written md5=", GUEST_TIMEOUT).await;
    let md5_a = field(&written, "md5").to_string();
    assert_eq!(md5_a.len(), 32, "{written}");
    // The key never appears on a command line.
    let pass = ka.luks_passphrase();
    for pid in qemu_pids_mentioning(&format!("socle-{a}")) {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        assert!(!contains(&cmdline, pass.as_bytes()));
    }

    // Online resize: the guest sees the new capacity.
    let info = agent
        .resize_volume(va, 2, &ka)
        .await
        .expect("online resize");
    assert_eq!(info.size_bytes, 2 * GIB);
    wait_line(
        &agent,
        a,
        &format!("disk resized vdb serial={va} size=2147483648"),
        GUEST_TIMEOUT,
    )
    .await;

    // Unlink: the guest releases it.
    let t0 = Instant::now();
    agent.unlink_volume(a, va).await.expect("unlink");
    eprintln!(
        "unlink (device_del to DEVICE_DELETED): {:.2} s",
        t0.elapsed().as_secs_f64()
    );
    wait_line(
        &agent,
        a,
        &format!("disk removed vdb serial={va}"),
        GUEST_TIMEOUT,
    )
    .await;
    assert!(agent.vm_volumes(a).await.unwrap().is_empty());
    assert!(agent.volume_info(va).await.unwrap().attachment.is_none());
    let file = std::fs::read(agent.volume_path(va)).unwrap();
    assert!(
        !contains(&file, b"plaintext canary"),
        "guest data in clear in the volume file"
    );
    let canary = canary_pattern();
    assert_eq!(
        plaintext(&agent.volume_path(va), &ka, tmp.path(), canary.len() as u64),
        canary
    );

    // Snapshot (offline now), new volume from it, linked to the other VM.
    let ks = VolumeKey::generate().unwrap();
    let snap = agent
        .snapshot_volume(va, "snap-0a1b2c3d", &ka, &ks)
        .await
        .unwrap();
    assert!(!contains(
        &std::fs::read(&snap.path).unwrap(),
        b"plaintext canary"
    ));
    let kb = VolumeKey::generate().unwrap();
    agent
        .create_volume(
            vb,
            4,
            &kb,
            Some(VolumeSource::Snapshot {
                snapshot_id: "snap-0a1b2c3d".into(),
                key: ks.clone(),
            }),
        )
        .await
        .unwrap();
    wait_line(&agent, b, READY_MARKER, BOOT_TIMEOUT).await;
    agent
        .link_volume(b, vb, &kb, "/dev/xvdc", IoLimits::unlimited())
        .await
        .unwrap();
    wait_line(
        &agent,
        b,
        &format!("disk added vdb serial={vb} size=4294967296"),
        GUEST_TIMEOUT,
    )
    .await;
    let read = wait_line(&agent, b, "pattern read md5=", GUEST_TIMEOUT).await;
    assert_eq!(
        field(&read, "md5"),
        md5_a,
        "the restored volume reads back differently"
    );
    eprintln!("restored in {b}: {read}");

    // Wrong key on a hot-plug: clear error, the guest goes on, nothing left behind.
    let wrong = VolumeKey::generate().unwrap();
    let err = agent
        .link_volume(b, va, &wrong, "/dev/xvdd", IoLimits::unlimited())
        .await
        .unwrap_err();
    eprintln!("wrong key on hot-plug: {err}");
    assert!(matches!(err, AgentError::WrongKey { .. }), "{err}");
    assert_eq!(agent.vm_runtime(b).await.unwrap(), VmRuntime::Running);
    assert_eq!(agent.vm_volumes(b).await.unwrap().len(), 1);
    // The same volume with the right key plugs fine afterwards (no leftover nodes).
    agent
        .link_volume(b, va, &ka, "/dev/xvdd", IoLimits::unlimited())
        .await
        .unwrap();
    wait_line(
        &agent,
        b,
        &format!("serial={va} size=2147483648"),
        GUEST_TIMEOUT,
    )
    .await;
    agent.unlink_volume(b, va).await.unwrap();

    // Restart: the linked volume comes back (keys needed), the script reads again.
    agent.stop_vm(b, true, Duration::ZERO).await.unwrap();
    let err = agent.start_vm(b).await.unwrap_err();
    assert!(matches!(err, AgentError::MissingVolumeKey { .. }), "{err}");
    let err = agent
        .start_vm_with(b, &keys(&[(vb, &wrong)]))
        .await
        .unwrap_err();
    eprintln!("wrong key at start: {err}");
    assert!(matches!(err, AgentError::WrongKey { .. }), "{err}");
    assert!(err.to_string().contains(vb), "{err}");
    assert_eq!(agent.vm_runtime(b).await.unwrap(), VmRuntime::NotRunning);
    assert!(qemu_pids_mentioning(&format!("socle-{b}")).is_empty());
    agent
        .start_vm_with(b, &keys(&[(vb, &kb)]))
        .await
        .expect("restart with keys");
    let pids = qemu_pids_mentioning(&format!("socle-{b}"));
    assert_eq!(pids.len(), 1);
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", pids[0])).unwrap();
    assert!(!contains(&cmdline, kb.luks_passphrase().as_bytes()));
    assert!(contains(&cmdline, b"/dev/fd/"));
    // The memfd QEMU inherited was emptied once QEMU had read it.
    let mut memfds = 0;
    for fd in std::fs::read_dir(format!("/proc/{}/fd", pids[0]))
        .unwrap()
        .flatten()
    {
        let target = std::fs::read_link(fd.path()).unwrap_or_default();
        if target
            .to_string_lossy()
            .contains("memfd:socle-volume-secret")
        {
            memfds += 1;
            assert_eq!(std::fs::metadata(fd.path()).unwrap().len(), 0);
        }
    }
    assert_eq!(
        memfds, 1,
        "QEMU should hold exactly the (emptied) memfd of its one volume"
    );
    wait_nth_line(
        &agent,
        b,
        &format!("disk present vdb serial={vb} size=4294967296"),
        1,
        BOOT_TIMEOUT,
    )
    .await;
    let again = wait_nth_line(&agent, b, "pattern read md5=", 2, GUEST_TIMEOUT).await;
    assert_eq!(field(&again, "md5"), md5_a);

    // Cleanup; a linked volume cannot be deleted.
    assert!(matches!(
        agent.delete_volume(vb).await,
        Err(AgentError::VolumeConflict { .. })
    ));
    agent.destroy_vm(a).await.unwrap();
    agent.destroy_vm(b).await.unwrap();
    agent.delete_volume(va).await.unwrap();
    agent.delete_volume(vb).await.unwrap();
    agent.delete_snapshot("snap-0a1b2c3d").await.unwrap();
}

/// One 16 KiB block of the writer's pattern: 32 sectors of
/// "gGGGGGG bBBBBBB sSS " + 491 dots + "\n".
fn writer_block(gen: u32, block: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity(16384);
    for s in 0..32 {
        v.extend_from_slice(format!("g{gen:06} b{block:06} s{s:02} ").as_bytes());
        v.extend(std::iter::repeat_n(b'.', 491));
        v.push(b'\n');
    }
    v
}

const WRITER_BLOCKS: u32 = 1024;

/// A root volume, a data volume linked while the VM is stopped, and a
/// snapshot taken while the guest overwrites its data in sequence: the
/// snapshot must hold exactly a prefix of that sequence, no torn block.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_while_the_guest_writes_is_point_in_time() {
    let tmp = socle_testkit::Slot::claim();
    let agent = tcg_agent(&tmp.path().join("state")).await;
    let image = agent.build_tiny_image().await.unwrap();
    let vm = "i-seqwrite1";
    let (root, data) = ("vol-root0001", "vol-seq00001");
    let (kr, kd, ks) = (
        VolumeKey::generate().unwrap(),
        VolumeKey::generate().unwrap(),
        VolumeKey::generate().unwrap(),
    );

    // Root disk = a volume made from the image's base disk.
    agent
        .create_volume(
            root,
            0,
            &kr,
            Some(VolumeSource::Image {
                disk: image.disk.clone(),
            }),
        )
        .await
        .unwrap();
    // Data volume full of incompressible data, so that the snapshot copies
    // real data (and its time per GiB means something).
    let big = tmp.path().join("random.raw");
    random_file(&big, GIB);
    agent
        .create_volume(
            data,
            1,
            &kd,
            Some(VolumeSource::Image { disk: big.clone() }),
        )
        .await
        .unwrap();
    std::fs::remove_file(&big).unwrap();

    // Generation g writes blocks 0..1023 (16 KiB each, O_DIRECT, queue depth
    // 1, in order), then g+1 starts over: the write sequence number of block b
    // in generation g is (g-1)*1024+b.
    let mut s = spec(vm, &image);
    s.user_data = Some(
        format!(
            "#!/bin/sh\n\
             dev=$(socle-disks wait {data} 120) || exit 1\n\
             g=1\n\
             while [ $g -le 200 ]; do\n\
               awk -v g=$g 'BEGIN {{ pad = sprintf(\"%491s\", \"\"); gsub(/ /, \".\", pad); for (b = 0; b < {WRITER_BLOCKS}; b++) for (s = 0; s < 32; s++) printf \"g%06d b%06d s%02d %s\\n\", g, b, s, pad }}' | dd of=$dev bs=16384 iflag=fullblock oflag=direct 2>/dev/null\n\
               echo \"writer gen $g done\"\n\
               g=$((g + 1))\n\
             done\n"
        )
        .into_bytes(),
    );
    agent
        .define_vm_with_root(&s, &RootDisk::Volume(root.into()))
        .await
        .unwrap();
    assert_eq!(
        agent.vm_root_volume(vm).await.unwrap().as_deref(),
        Some(root)
    );
    // Linked while stopped: on the command line at start.
    agent
        .link_volume(vm, data, &kd, "/dev/xvdf", IoLimits::unlimited())
        .await
        .unwrap();
    let err = agent
        .start_vm_with(vm, &keys(&[(data, &kd)]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, AgentError::MissingVolumeKey { ref volume_id, .. } if volume_id == root),
        "{err}"
    );
    agent
        .start_vm_with(vm, &keys(&[(root, &kr), (data, &kd)]))
        .await
        .unwrap();
    wait_line(&agent, vm, READY_MARKER, BOOT_TIMEOUT).await;
    let text = console(&agent, vm);
    assert!(
        text.contains(&format!("disk present vda serial={root} size=1073741824")),
        "{text}"
    );
    assert!(
        text.contains(&format!("disk present vdb serial={data} size=1073741824")),
        "{text}"
    );

    let first = wait_line(&agent, vm, "writer gen 1 done", GUEST_TIMEOUT).await;
    let t_first = Instant::now();
    wait_line(&agent, vm, "writer gen 2 done", GUEST_TIMEOUT).await;
    eprintln!(
        "guest writer: one generation (16 MiB, 1024 x 16 KiB O_DIRECT writes) in {:.2} s ({first})",
        t_first.elapsed().as_secs_f64()
    );
    let gens_before = console(&agent, vm).matches("writer gen ").count() as u32;

    // Snapshot while it writes, with progress; polled progress too.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let t0 = Instant::now();
    let poller = {
        let agent = agent.clone();
        tokio::spawn(async move {
            let mut polled = 0;
            while t0.elapsed() < Duration::from_secs(60) {
                if agent.snapshot_progress("snap-seq00001").is_some() {
                    polled += 1;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                if polled > 0 && agent.snapshot_progress("snap-seq00001").is_none() {
                    break;
                }
            }
            polled
        })
    };
    let snap = agent
        .snapshot_volume_with_progress(data, "snap-seq00001", &kd, &ks, move |p| {
            s2.lock().unwrap().push((Instant::now(), p))
        })
        .await
        .expect("online snapshot");
    let took = t0.elapsed().as_secs_f64();
    let polled = poller.await.unwrap();
    let progress = seen.lock().unwrap().clone();
    // Reports with total = the volume size come from query-block-jobs.
    let job: Vec<_> = progress.iter().filter(|(_, p)| p.total == GIB).collect();
    let job_secs = job.last().unwrap().0.duration_since(job[0].0).as_secs_f64() + 0.2;
    eprintln!(
        "FIGURES online snapshot (blockdev-backup) of a 1 GiB volume full of data, guest writing: \
         {took:.2} s in all, block job ~{job_secs:.2} s ({} job progress reports: {:?}; polled {polled} times)",
        job.len(),
        job.iter().map(|(_, p)| format!("{:.0}%", p.percent())).collect::<Vec<_>>()
    );
    assert_eq!(progress.last().unwrap().1.done, GIB);
    assert!(polled > 0);
    assert_eq!(agent.vm_runtime(vm).await.unwrap(), VmRuntime::Running);

    // The snapshot holds a prefix of the write sequence, without torn blocks.
    let written = WRITER_BLOCKS as usize * 16384;
    let plain = plaintext(&snap.path, &ks, tmp.path(), written as u64 + (1 << 20));
    // Beyond the writer's 16 MiB, the original data is intact.
    assert!(
        plain[written..] == random_bytes(written + (1 << 20))[written..],
        "the data after the writer's area changed"
    );
    let mut gens = Vec::new();
    for (b, blk) in plain[..written].chunks(16384).enumerate() {
        let g: u32 = std::str::from_utf8(&blk[1..7])
            .ok()
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "block {b} does not hold the pattern: {:?}",
                    String::from_utf8_lossy(&blk[..40])
                )
            });
        assert!(
            blk == writer_block(g, b as u32).as_slice(),
            "block {b} is torn or foreign (starts {:?})",
            String::from_utf8_lossy(&blk[..40])
        );
        gens.push(g);
    }
    let (gmax, gmin) = (gens[0], *gens.last().unwrap());
    let cut = gens.iter().take_while(|g| **g == gmax).count();
    assert!(
        gens[cut..].iter().all(|g| *g == gmax - 1) || cut == gens.len(),
        "not a prefix of the write sequence: generations by block {gens:?}"
    );
    assert!(gmin + 1 >= gmax);
    assert!(
        gmin >= gens_before && gmin >= 2,
        "snapshot older than writes that had completed ({gmin} < {gens_before})"
    );
    eprintln!(
        "snapshot point: generation {gmax} up to block {cut} of {WRITER_BLOCKS} (sequence number {})",
        (gmax - 1) * WRITER_BLOCKS + cut as u32
    );
    // The writer went on after the snapshot point.
    wait_line(
        &agent,
        vm,
        &format!("writer gen {} done", gmax + 1),
        GUEST_TIMEOUT,
    )
    .await;

    // Online snapshot of the root volume too.
    let rs = agent
        .snapshot_volume(root, "snap-root0001", &kr, &ks)
        .await
        .expect("root volume snapshot");
    assert_eq!(rs.size_bytes, GIB);

    // Restart keeps both volumes.
    agent.stop_vm(vm, true, Duration::ZERO).await.unwrap();
    agent
        .start_vm_with(vm, &keys(&[(root, &kr), (data, &kd)]))
        .await
        .unwrap();
    wait_nth_line(
        &agent,
        vm,
        &format!("disk present vdb serial={data}"),
        2,
        BOOT_TIMEOUT,
    )
    .await;
    agent.destroy_vm(vm).await.unwrap();
    for v in [root, data] {
        agent.delete_volume(v).await.unwrap();
    }
    for sn in ["snap-seq00001", "snap-root0001"] {
        agent.delete_snapshot(sn).await.unwrap();
    }
}

/// I/O limits measured inside the guest: unthrottled, then capped at 100
/// IOPS, then raised to 250, live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_volume_is_capped_near_its_iops() {
    let tmp = socle_testkit::Slot::claim();
    let agent = tcg_agent(&tmp.path().join("state")).await;
    let image = agent.build_tiny_image().await.unwrap();
    let vm = "i-iops0001";
    let vol = "vol-iops0001";
    let key = VolumeKey::generate().unwrap();
    let mut s = spec(vm, &image);
    s.user_data = Some(
        format!(
            "#!/bin/sh\n\
             dev=$(socle-disks wait {vol} 120) || exit 1\n\
             r=1\n\
             while [ $r -le 200 ]; do echo \"probe $r $(socle-disks iops $dev 200)\"; r=$((r + 1)); done\n"
        )
        .into_bytes(),
    );
    agent.define_vm(&s).await.unwrap();
    agent.start_vm(vm).await.unwrap();
    // 64 MiB of data at its start: the probe reads (and decrypts) real data.
    let raw = tmp.path().join("data.raw");
    random_file(&raw, 64 << 20);
    agent
        .create_volume(vol, 1, &key, Some(VolumeSource::Image { disk: raw }))
        .await
        .unwrap();
    wait_line(&agent, vm, READY_MARKER, BOOT_TIMEOUT).await;
    agent
        .link_volume(vm, vol, &key, "/dev/xvdb", IoLimits::unlimited())
        .await
        .unwrap();

    let rounds = |agent: &Agent| console(agent, vm).matches("probe ").count();
    // Median of three full rounds after `after`.
    async fn figure(agent: &Agent, vm: &str, after: usize) -> u64 {
        let mut v = Vec::new();
        for r in after + 1..=after + 3 {
            let l = wait_line(agent, vm, &format!("probe {r} iops="), GUEST_TIMEOUT).await;
            v.push(field(&l, "iops").parse::<u64>().unwrap());
        }
        v.sort();
        v[1]
    }
    let free = figure(&agent, vm, 1).await;
    eprintln!(
        "unthrottled probe: {}",
        wait_line(&agent, vm, "probe 3 ", GUEST_TIMEOUT).await
    );

    agent
        .set_volume_limits(vol, IoLimits::iops(100))
        .await
        .unwrap();
    let now = rounds(&agent);
    let capped = figure(&agent, vm, now + 1).await; // skip the round in flight

    agent
        .set_volume_limits(vol, IoLimits::iops(250))
        .await
        .unwrap();
    let now = rounds(&agent);
    let capped250 = figure(&agent, vm, now + 1).await;
    eprintln!(
        "FIGURES guest read IOPS (4 KiB O_DIRECT, QD1, TCG): unthrottled {free}, cap 100 -> {capped}, cap 250 -> {capped250}"
    );
    assert!((70..=130).contains(&capped), "cap 100 measured {capped}");
    if free > 400 {
        assert!(
            (175..=325).contains(&capped250),
            "cap 250 measured {capped250}"
        );
    }
    assert!(free > capped * 2, "unthrottled {free} vs capped {capped}");
    let att = agent.volume_info(vol).await.unwrap().attachment.unwrap();
    assert_eq!(att.limits, IoLimits::iops(250));
    agent.destroy_vm(vm).await.unwrap();
    agent.delete_volume(vol).await.unwrap();
}

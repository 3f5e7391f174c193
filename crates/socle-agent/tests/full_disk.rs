//! Full-disk images booted through the BIOS (SeaBIOS → MBR → SYSLINUX →
//! kernel), and imported user images (raw/qcow2 uploads turned into
//! encrypted snapshots), against real QEMU (TCG) guests. No mocks; fails
//! (never skips) when QEMU or the full-disk tools are missing.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;
use socle_agent::{
    Agent, AgentError, ImageFiles, ImportRefusal, IoLimits, RootDisk, UploadFormat, VmRuntime,
    VolumeKey, VolumeSource, BOOTING_MARKER, READY_MARKER,
};

/// BIOS boots read 17 MB through int 13h under TCG: slower than -kernel.
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
const GIB: u64 = 1 << 30;
/// Printed by SYSLINUX on the serial console (SERIAL directive).
const SYSLINUX_BANNER: &str = "SYSLINUX 6";

fn qemu_cmdline(vm: &str) -> String {
    let pids = qemu_pids_mentioning(&format!("socle-{vm}"));
    assert_eq!(pids.len(), 1, "one QEMU for {vm}");
    String::from_utf8_lossy(&std::fs::read(format!("/proc/{}/cmdline", pids[0])).unwrap())
        .replace('\0', " ")
}

/// Asserts the running VM booted through the BIOS: no -kernel, root disk
/// first in the boot order, SYSLINUX on the console, then the guest's lines.
async fn assert_bios_boot(agent: &Agent, vm: &str, boots: usize) -> Duration {
    let t = wait_console(agent, vm, READY_MARKER, boots, BOOT_TIMEOUT).await;
    let cmd = qemu_cmdline(vm);
    assert!(
        !cmd.contains("-kernel") && !cmd.contains("-initrd"),
        "{cmd}"
    );
    assert!(cmd.contains("bootindex"), "{cmd}");
    let text = console(agent, vm);
    assert_eq!(text.matches(SYSLINUX_BANNER).count(), boots, "{text}");
    assert_eq!(text.matches(BOOTING_MARKER).count(), boots, "{text}");
    assert!(text.contains(&format!("socle-guest: vm-id {vm}")), "{text}");
    t
}

fn qemu_img(args: &[&str]) {
    let mut out = std::process::Command::new("qemu-img")
        .args(args)
        .output_within(COMMAND_TIMEOUT);
    // qemu-img's PBKDF2 benchmark fails on a 0 ms clock sample: retry (as the agent does).
    for _ in 0..10 {
        if out.status.success()
            || !String::from_utf8_lossy(&out.stderr).contains("Unable to get accurate CPU usage")
        {
            break;
        }
        out = std::process::Command::new("qemu-img")
            .args(args)
            .output_within(COMMAND_TIMEOUT);
    }
    assert!(
        out.status.success(),
        "qemu-img {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Files in the snapshots directory (hidden temporaries included).
fn snapshot_dir_entries(agent: &Agent) -> Vec<String> {
    let dir = agent.state_dir().join("snapshots");
    let mut v: Vec<String> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

// ----- tests -----------------------------------------------------------------

/// The full-disk socle-tiny boots through SeaBIOS, on an overlay (stop/start,
/// re-attach by a fresh agent) and on an encrypted root volume (hot-plug, an
/// online snapshot of the root volume, a second VM booted from that snapshot).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_image_boots_through_the_bios() {
    let tmp = socle_testkit::Slot::claim();
    let state = tmp.path().join("state");
    let agent = tcg_agent(&state).await;
    let t0 = Instant::now();
    let image = agent
        .build_tiny_disk_image()
        .await
        .expect("full-disk image");
    eprintln!(
        "full-disk image (cached or built): {:.2} s",
        t0.elapsed().as_secs_f64()
    );
    assert_eq!(image.kernel, None);
    assert_eq!(image.initrd, None);

    // An initrd without a kernel makes no sense.
    let mut bad = spec("i-bad00001", &image);
    bad.image.initrd = Some(image.disk.clone());
    assert!(matches!(
        agent.define_vm(&bad).await,
        Err(AgentError::InvalidArgument(_))
    ));

    // 1. Overlay root disk.
    let vm = "i-bios0001";
    let mut s = spec(vm, &image);
    s.user_data = Some(b"#!/bin/sh\necho user-data ran on a BIOS boot\n".to_vec());
    agent.define_vm(&s).await.unwrap();
    agent.define_vm(&s).await.expect("idempotent");
    let t0 = Instant::now();
    agent.start_vm(vm).await.unwrap();
    let t = assert_bios_boot(&agent, vm, 1).await;
    eprintln!(
        "BIOS boot to ready (overlay): {:.2} s",
        (t0.elapsed().max(t)).as_secs_f64()
    );
    wait_console(
        &agent,
        vm,
        "user-data ran on a BIOS boot",
        1,
        Duration::from_secs(60),
    )
    .await;
    assert!(console(&agent, vm).contains("disk present vda serial= size=1073741824"));
    // The stored spec keeps the boot mode.
    assert!(agent.vm_spec(vm).await.unwrap().image.boots_from_disk());

    // A fresh agent on the same state dir re-attaches to the running guest.
    let agent2 = tcg_agent(&state).await;
    assert_eq!(agent2.vm_runtime(vm).await.unwrap(), VmRuntime::Running);
    let t0 = Instant::now();
    agent2
        .stop_vm(vm, false, Duration::from_secs(60))
        .await
        .unwrap();
    eprintln!("graceful stop (ACPI): {:.2} s", t0.elapsed().as_secs_f64());
    assert!(console(&agent, vm).contains("reboot: Power down"));
    assert_eq!(agent.vm_runtime(vm).await.unwrap(), VmRuntime::NotRunning);
    let t0 = Instant::now();
    agent.start_vm(vm).await.unwrap();
    assert_bios_boot(&agent, vm, 2).await;
    eprintln!(
        "BIOS boot to ready (restart): {:.2} s",
        t0.elapsed().as_secs_f64()
    );
    agent.destroy_vm(vm).await.unwrap();

    // 2. Encrypted root volume made from the full disk.
    let (vm, root, data) = ("i-bios0002", "vol-bios-root1", "vol-bios-data1");
    let (kr, kd, ks) = (
        VolumeKey::generate().unwrap(),
        VolumeKey::generate().unwrap(),
        VolumeKey::generate().unwrap(),
    );
    let info = agent
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
    assert_eq!(info.size_bytes, GIB);
    assert!(info.encrypted);
    let file = std::fs::read(agent.volume_path(root)).unwrap();
    assert!(
        !contains(&file, b"SYSLINUX") && !contains(&file, b"socle-guest"),
        "boot disk content in clear in the encrypted root volume"
    );
    agent.create_volume(data, 1, &kd, None).await.unwrap();
    agent
        .define_vm_with_root(&spec(vm, &image), &RootDisk::Volume(root.into()))
        .await
        .unwrap();
    let err = agent.start_vm(vm).await.unwrap_err();
    assert!(matches!(err, AgentError::MissingVolumeKey { .. }), "{err}");
    let t0 = Instant::now();
    agent
        .start_vm_with(vm, &keys(&[(root, &kr)]))
        .await
        .unwrap();
    assert_bios_boot(&agent, vm, 1).await;
    eprintln!(
        "BIOS boot to ready (encrypted root volume): {:.2} s",
        t0.elapsed().as_secs_f64()
    );
    assert!(
        console(&agent, vm).contains(&format!("disk present vda serial={root} size=1073741824")),
        "{}",
        console(&agent, vm)
    );
    // Hot-plug a data volume into the BIOS-booted guest.
    agent
        .link_volume(vm, data, &kd, "/dev/xvdb", IoLimits::unlimited())
        .await
        .unwrap();
    wait_console(
        &agent,
        vm,
        &format!("disk added vdb serial={data}"),
        1,
        Duration::from_secs(60),
    )
    .await;
    // Online snapshot of the root volume, then a second VM booted from it.
    let snap = agent
        .snapshot_volume(root, "snap-bios-root1", &kr, &ks)
        .await
        .expect("online root snapshot");
    assert_eq!(snap.size_bytes, GIB);
    // Restart with both volumes on the command line: the root disk still
    // boots (the data volume has no boot sector, and is not in the boot order).
    agent.stop_vm(vm, true, Duration::ZERO).await.unwrap();
    agent
        .start_vm_with(vm, &keys(&[(root, &kr), (data, &kd)]))
        .await
        .unwrap();
    assert_bios_boot(&agent, vm, 2).await;
    assert!(console(&agent, vm).contains(&format!("disk present vdb serial={data}")));

    let (vm2, root2) = ("i-bios0003", "vol-bios-root2");
    let kr2 = VolumeKey::generate().unwrap();
    agent
        .create_volume(
            root2,
            0,
            &kr2,
            Some(VolumeSource::Snapshot {
                snapshot_id: "snap-bios-root1".into(),
                key: ks.clone(),
            }),
        )
        .await
        .unwrap();
    agent
        .define_vm_with_root(&spec(vm2, &image), &RootDisk::Volume(root2.into()))
        .await
        .unwrap();
    agent
        .start_vm_with(vm2, &keys(&[(root2, &kr2)]))
        .await
        .unwrap();
    assert_bios_boot(&agent, vm2, 1).await;

    for v in [vm, vm2] {
        agent.destroy_vm(v).await.unwrap();
    }
    for v in [root, data, root2] {
        agent.delete_volume(v).await.unwrap();
    }
    agent.delete_snapshot("snap-bios-root1").await.unwrap();
}

/// Raw and qcow2 uploads of a bootable disk become encrypted snapshots (the
/// plaintext is absent from the files, present after decryption), and a VM
/// boots through the BIOS from a root volume made of the imported snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_images_become_encrypted_snapshots_and_boot() {
    let tmp = socle_testkit::Slot::claim();
    let agent = tcg_agent(&tmp.path().join("state")).await;
    let image = agent.build_tiny_disk_image().await.unwrap();
    let work = tmp.path().join("uploads");
    std::fs::create_dir_all(&work).unwrap();

    // A user's raw disk: the full disk plus a canary in its free space.
    let raw = work.join("user disk: raw.img"); // ' ' and ':' in the name
    qemu_img(&[
        "convert",
        "-f",
        "qcow2",
        "-O",
        "raw",
        image.disk.to_str().unwrap(),
        raw.to_str().unwrap(),
    ]);
    let canary: Vec<u8> = (0..4096)
        .flat_map(|i| format!("import plaintext canary {i:08}\n").into_bytes())
        .collect();
    let canary_at: u64 = 512 << 20;
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&raw).unwrap();
        f.write_all_at(&canary, canary_at).unwrap();
    }
    let qcow = work.join("user-disk.qcow2");
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "qcow2",
        raw.to_str().unwrap(),
        qcow.to_str().unwrap(),
    ]);

    let ri = agent.inspect_upload(&raw).await.unwrap();
    assert_eq!(ri.format, UploadFormat::Raw);
    assert_eq!(ri.virtual_size_bytes, GIB);
    let qi = agent.inspect_upload(&qcow).await.unwrap();
    assert_eq!(qi.format, UploadFormat::Qcow2);
    assert_eq!(qi.virtual_size_bytes, GIB);
    assert!(qi.file_size_bytes < GIB / 4, "{qi:?}");

    // Declared format must match.
    let k = VolumeKey::generate().unwrap();
    match agent
        .import_as_encrypted_snapshot(&raw, Some(UploadFormat::Qcow2), "snap-mismatch", &k)
        .await
    {
        Err(AgentError::ImportRefused {
            reason: ImportRefusal::FormatMismatch { .. },
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    assert!(snapshot_dir_entries(&agent).is_empty());

    let (kraw, kq) = (
        VolumeKey::generate().unwrap(),
        VolumeKey::generate().unwrap(),
    );
    for (src, fmt, id, key) in [
        (&raw, UploadFormat::Raw, "snap-imp-raw", &kraw),
        (&qcow, UploadFormat::Qcow2, "snap-imp-qcow2", &kq),
    ] {
        let t0 = Instant::now();
        let snap = agent
            .import_as_encrypted_snapshot(src, Some(fmt), id, key)
            .await
            .unwrap_or_else(|e| panic!("import {fmt}: {e}"));
        eprintln!(
            "import of a 1 GiB {fmt} upload ({} bytes on disk): {:.2} s",
            std::fs::metadata(src).unwrap().len(),
            t0.elapsed().as_secs_f64()
        );
        assert_eq!(snap.size_bytes, GIB);
        assert_eq!(agent.snapshot_info(id).await.unwrap(), snap);
        let file = std::fs::read(&snap.path).unwrap();
        assert!(
            !contains(&file, b"import plaintext canary"),
            "{fmt}: canary in clear"
        );
        assert!(!contains(&file, b"SYSLINUX"), "{fmt}: boot loader in clear");
        let plain = plaintext(&snap.path, key, &work, u64::MAX);
        assert_eq!(plain.len() as u64, GIB);
        assert_eq!(
            &plain[canary_at as usize..canary_at as usize + canary.len()],
            &canary[..]
        );
        assert_eq!(&plain[510..512], &[0x55, 0xaa]);
        // Idempotent with the right key, WrongKey otherwise.
        agent
            .import_as_encrypted_snapshot(src, Some(fmt), id, key)
            .await
            .unwrap();
        let other = VolumeKey::generate().unwrap();
        assert!(matches!(
            agent
                .import_as_encrypted_snapshot(src, Some(fmt), id, &other)
                .await,
            Err(AgentError::WrongKey { .. })
        ));
    }
    assert_eq!(
        snapshot_dir_entries(&agent),
        vec!["snap-imp-qcow2.qcow2", "snap-imp-raw.qcow2"]
    );

    // A VM whose root volume comes from the imported qcow2 boots through the BIOS.
    let (vm, root) = ("i-import01", "vol-import-root1");
    let kr = VolumeKey::generate().unwrap();
    agent
        .create_volume(
            root,
            0,
            &kr,
            Some(VolumeSource::Snapshot {
                snapshot_id: "snap-imp-qcow2".into(),
                key: kq.clone(),
            }),
        )
        .await
        .unwrap();
    // The image of an imported VM is its root volume: no kernel, and a disk
    // that is never opened (the root volume replaces it).
    let imported = ImageFiles::full_disk(PathBuf::from("/nonexistent/imported"));
    agent
        .define_vm_with_root(&spec(vm, &imported), &RootDisk::Volume(root.into()))
        .await
        .unwrap();
    let t0 = Instant::now();
    agent
        .start_vm_with(vm, &keys(&[(root, &kr)]))
        .await
        .unwrap();
    assert_bios_boot(&agent, vm, 1).await;
    eprintln!(
        "BIOS boot to ready from an imported image: {:.2} s",
        t0.elapsed().as_secs_f64()
    );
    agent.destroy_vm(vm).await.unwrap();
    agent.delete_volume(root).await.unwrap();
    for id in ["snap-imp-raw", "snap-imp-qcow2"] {
        agent.delete_snapshot(id).await.unwrap();
    }
    // The uploads are left as they were.
    assert!(raw.is_file() && qcow.is_file());
}

/// Hostile or useless uploads are refused with a typed reason, qemu-img never
/// reads what they point at, and no snapshot file is left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_uploads_are_refused_and_leave_nothing() {
    let tmp = socle_testkit::Slot::claim();
    let agent = tcg_agent(&tmp.path().join("state")).await;
    let w = tmp.path().join("uploads");
    std::fs::create_dir_all(&w).unwrap();
    let p = |n: &str| w.join(n);
    let s = |p: &PathBuf| p.to_str().unwrap().to_string();

    // qcow2 pointing at a host file as its backing file.
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-F",
        "raw",
        "-b",
        "/etc/hostname",
        &s(&p("backing.qcow2")),
    ]);
    // qcow2 whose data lives in an external (host) file.
    let ext = p("external-data.raw");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        &format!("data_file={},data_file_raw=on", s(&ext)),
        &s(&p("datafile.qcow2")),
        "1M",
    ]);
    // (qemu-img create zeroes the data file: fill it afterwards.)
    std::fs::write(&ext, vec![0x5a; 1 << 20]).unwrap();
    // Encrypted qcow2 (LUKS).
    let pass = p("pass");
    std::fs::write(&pass, "hunter2").unwrap();
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "--object",
        &format!("secret,id=s,file={}", s(&pass)),
        "-o",
        "encrypt.format=luks,encrypt.key-secret=s,encrypt.iter-time=10",
        &s(&p("encrypted.qcow2")),
        "1M",
    ]);
    // Other formats.
    qemu_img(&["create", "-q", "-f", "vmdk", &s(&p("sparse.vmdk")), "1M"]);
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "vmdk",
        "-o",
        "subformat=monolithicFlat",
        &s(&p("flat.vmdk")),
        "1M",
    ]);
    qemu_img(&["create", "-q", "-f", "vdi", &s(&p("disk.vdi")), "1M"]);
    // Too big: a sparse qcow2 of 17 TiB.
    qemu_img(&["create", "-q", "-f", "qcow2", &s(&p("huge.qcow2")), "17T"]);
    std::fs::write(p("garbage.bin"), b"this is not a disk image\n".repeat(4000)).unwrap();
    std::fs::write(p("empty.img"), b"").unwrap();

    type Expect = fn(&ImportRefusal) -> bool;
    let cases: Vec<(&str, UploadFormat, Expect)> = vec![
        (
            "backing.qcow2",
            UploadFormat::Qcow2,
            |r| matches!(r, ImportRefusal::BackingFile(b) if b == "/etc/hostname"),
        ),
        ("datafile.qcow2", UploadFormat::Qcow2, |r| {
            matches!(r, ImportRefusal::ExternalDataFile(_))
        }),
        ("encrypted.qcow2", UploadFormat::Qcow2, |r| {
            matches!(r, ImportRefusal::Encrypted)
        }),
        (
            "sparse.vmdk",
            UploadFormat::Raw,
            |r| matches!(r, ImportRefusal::UnsupportedFormat(f) if f == "vmdk"),
        ),
        (
            "flat.vmdk",
            UploadFormat::Raw,
            |r| matches!(r, ImportRefusal::UnsupportedFormat(f) if f == "vmdk"),
        ),
        (
            "disk.vdi",
            UploadFormat::Raw,
            |r| matches!(r, ImportRefusal::UnsupportedFormat(f) if f == "vdi"),
        ),
        (
            "huge.qcow2",
            UploadFormat::Qcow2,
            |r| matches!(r, ImportRefusal::TooBig { virtual_size_bytes, .. } if *virtual_size_bytes == 17 << 40),
        ),
        ("garbage.bin", UploadFormat::Raw, |r| {
            matches!(r, ImportRefusal::NotADiskImage(_))
        }),
        ("empty.img", UploadFormat::Raw, |r| {
            matches!(r, ImportRefusal::Empty)
        }),
    ];
    let key = VolumeKey::generate().unwrap();
    for (i, (name, fmt, expected)) in cases.iter().enumerate() {
        let path = p(name);
        let before = std::fs::read(&path).unwrap();
        let err = agent.inspect_upload(&path).await.unwrap_err();
        match &err {
            AgentError::ImportRefused { reason, path: ep } => {
                assert!(expected(reason), "{name}: unexpected refusal {reason:?}");
                assert_eq!(ep, &path);
                eprintln!("{name}: {err}");
            }
            other => panic!("{name}: expected ImportRefused, got {other}"),
        }
        let id = format!("snap-bad{i:02}");
        match agent
            .import_as_encrypted_snapshot(&path, Some(*fmt), &id, &key)
            .await
        {
            Err(AgentError::ImportRefused { reason, .. }) => {
                assert!(expected(&reason), "{name}: import refused with {reason:?}")
            }
            other => panic!("{name}: import gave {other:?}"),
        }
        assert!(
            snapshot_dir_entries(&agent).is_empty(),
            "{name}: left {:?}",
            snapshot_dir_entries(&agent)
        );
        assert!(
            std::fs::read(&path).unwrap() == before,
            "{name} was modified"
        );
    }
    // The host files they point at were not touched either.
    assert!(
        std::fs::read(&ext).unwrap() == vec![0x5a; 1 << 20],
        "the external data file was modified"
    );
    // A directory is not an upload.
    assert!(matches!(
        agent.inspect_upload(&w).await,
        Err(AgentError::ImportRefused {
            reason: ImportRefusal::NotAFile,
            ..
        })
    ));
    // A missing file is an I/O error, not a refusal.
    assert!(matches!(
        agent.inspect_upload(&p("missing.img")).await,
        Err(AgentError::Io { .. })
    ));
}

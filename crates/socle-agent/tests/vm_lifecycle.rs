//! Real QEMU (TCG) guests: boot, reboot, graceful and forced stop, re-attach,
//! destroy. No mocks. Fails (never skips) when QEMU is missing.

mod common;

use std::time::{Duration, Instant};

use common::*;
use socle_agent::{Accel, AgentError, VmRuntime, BOOTING_MARKER, READY_MARKER};

const BOOT_TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boot_reboot_and_graceful_stop() {
    let tmp = socle_testkit::Slot::claim();
    let agent = tcg_agent(tmp.path()).await;
    assert_eq!(agent.accel(), Accel::Tcg);
    let image = agent.build_tiny_image().await.expect("build image");

    let id = "i-0a1b2c3d";
    let mut spec = spec(id, &image);
    spec.user_data = Some(b"#!/bin/sh\necho hello\n".to_vec());
    agent.define_vm(&spec).await.unwrap();
    agent.define_vm(&spec).await.expect("define is idempotent");
    assert_eq!(agent.vm_runtime(id).await.unwrap(), VmRuntime::NotRunning);
    assert!(agent.console_output(id, 4096).unwrap().is_empty());

    let t0 = Instant::now();
    agent.start_vm(id).await.expect("start");
    let t_running = t0.elapsed();
    assert_eq!(agent.vm_runtime(id).await.unwrap(), VmRuntime::Running);
    let ready = wait_console(&agent, id, READY_MARKER, 1, BOOT_TIMEOUT).await + t_running;
    eprintln!(
        "boot-to-ready: {:.2} s (start_vm returned after {:.2} s)",
        ready.as_secs_f64(),
        t_running.as_secs_f64()
    );

    let out = agent.console_output(id, 1 << 20).unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains(BOOTING_MARKER), "{text}");
    assert!(
        text.contains(&format!("socle-guest: vm-id {id}")),
        "fw_cfg vm-id missing:\n{text}"
    );
    assert!(
        text.contains("socle-guest: user-data 21 bytes"),
        "fw_cfg user-data missing:\n{text}"
    );
    // console_output returns the tail.
    let tail = agent.console_output(id, 10).unwrap();
    assert_eq!(tail.len(), 10);
    assert!(out.ends_with(&tail));

    // Idempotent start, no second QEMU.
    agent.start_vm(id).await.expect("second start");
    assert_eq!(qemu_pids_mentioning(&format!("socle-{id}")).len(), 1);

    // The definition cannot change under a running VM.
    let err = agent.update_vm(id, 2, 512).await.unwrap_err();
    assert!(matches!(err, AgentError::VmRunning { .. }), "{err}");

    // Reboot: a second boot on the same console.
    agent.reboot_vm(id).await.expect("reboot");
    let t = wait_console(&agent, id, READY_MARKER, 2, BOOT_TIMEOUT).await;
    eprintln!("reset-to-ready: {:.2} s", t.as_secs_f64());
    let out = agent.console_output(id, 1 << 20).unwrap();
    assert_eq!(count(&out, BOOTING_MARKER), 2);

    // Graceful stop: the guest powers itself off through ACPI.
    let timeout = Duration::from_secs(60);
    let t0 = Instant::now();
    agent.stop_vm(id, false, timeout).await.expect("stop");
    let took = t0.elapsed();
    eprintln!("graceful stop: {:.2} s", took.as_secs_f64());
    assert!(
        took < Duration::from_secs(30),
        "graceful stop took {took:?}: it was a kill, not a power-off"
    );
    let text = String::from_utf8_lossy(&agent.console_output(id, 1 << 20).unwrap()).into_owned();
    assert!(
        text.contains("socle-guest: ACPI power button pressed"),
        "{text}"
    );
    assert!(text.contains("socle-guest: shutting down"), "{text}");
    assert!(text.contains("reboot: Power down"), "{text}");
    assert_eq!(agent.vm_runtime(id).await.unwrap(), VmRuntime::NotRunning);
    assert!(qemu_pids_mentioning(&format!("socle-{id}")).is_empty());
    agent
        .stop_vm(id, false, timeout)
        .await
        .expect("stop is idempotent");

    // Resize while stopped, boot again with the new size.
    agent
        .update_vm(id, 2, 384)
        .await
        .expect("update while stopped");
    let s = agent.vm_spec(id).await.unwrap();
    assert_eq!((s.vcpus, s.memory_mib), (2, 384));
    assert_eq!(
        s.user_data.as_deref(),
        Some(&b"#!/bin/sh\necho hello\n"[..])
    );
    agent.start_vm(id).await.expect("restart");
    wait_console(&agent, id, READY_MARKER, 3, BOOT_TIMEOUT).await;
    agent.destroy_vm(id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_stop_destroy_and_long_paths() {
    // A state dir deep enough that <vmdir>/qmp.sock exceeds the 108-byte
    // sockaddr_un limit: exercises the relative-socket path.
    let tmp = socle_testkit::Slot::claim();
    let deep = tmp
        .path()
        .join("a-rather-long-directory-name-for-testing")
        .join("another-long-path-component-here");
    let agent = tcg_agent(&deep).await;
    let image = agent.build_tiny_image().await.unwrap();
    let id = "i-forcestop0";
    let sock = agent.state_dir().join("vms").join(id).join("qmp.sock");
    assert!(sock.as_os_str().len() > 108, "{}", sock.display());

    agent.define_vm(&spec(id, &image)).await.unwrap();
    agent
        .start_vm(id)
        .await
        .expect("start with a long socket path");
    assert_eq!(agent.vm_runtime(id).await.unwrap(), VmRuntime::Running);
    wait_console(&agent, id, READY_MARKER, 1, BOOT_TIMEOUT).await;

    let t0 = Instant::now();
    agent
        .stop_vm(id, true, Duration::from_secs(60))
        .await
        .expect("force stop");
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(5), "force stop took {took:?}");
    let text = String::from_utf8_lossy(&agent.console_output(id, 1 << 20).unwrap()).into_owned();
    assert!(
        !text.contains("socle-guest: shutting down"),
        "force stop must not go through the guest:\n{text}"
    );
    assert_eq!(agent.vm_runtime(id).await.unwrap(), VmRuntime::NotRunning);
    assert!(qemu_pids_mentioning(&format!("socle-{id}")).is_empty());

    // Destroy a running VM: no process, no file left.
    agent.start_vm(id).await.unwrap();
    let pids = qemu_pids_mentioning(&format!("socle-{id}"));
    assert_eq!(pids.len(), 1);
    agent.destroy_vm(id).await.expect("destroy");
    assert!(qemu_pids_mentioning(&format!("socle-{id}")).is_empty());
    assert!(
        !std::path::Path::new(&format!("/proc/{}", pids[0])).exists() || {
            let stat =
                std::fs::read_to_string(format!("/proc/{}/stat", pids[0])).unwrap_or_default();
            stat.contains(") Z")
        }
    );
    assert!(!agent.state_dir().join("vms").join(id).exists());
    assert!(agent.list_vms().await.unwrap().is_empty());
    agent.destroy_vm(id).await.expect("destroy is idempotent");

    // Unknown VMs.
    assert!(matches!(
        agent.vm_runtime(id).await,
        Err(AgentError::VmNotFound(_))
    ));
    assert!(matches!(
        agent.start_vm(id).await,
        Err(AgentError::VmNotFound(_))
    ));
    assert!(matches!(
        agent.vm_runtime("../etc").await,
        Err(AgentError::InvalidVmId(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reattach_after_agent_drop() {
    let tmp = socle_testkit::Slot::claim();
    let id = "i-reattach1";
    let pid_before = {
        let agent = tcg_agent(tmp.path()).await;
        let image = agent.build_tiny_image().await.unwrap();
        agent.define_vm(&spec(id, &image)).await.unwrap();
        agent.start_vm(id).await.unwrap();
        wait_console(&agent, id, READY_MARKER, 1, BOOT_TIMEOUT).await;
        let pids = qemu_pids_mentioning(&format!("socle-{id}"));
        assert_eq!(pids.len(), 1);
        pids[0]
    }; // agent dropped here

    let agent = tcg_agent(tmp.path()).await;
    assert_eq!(agent.list_vms().await.unwrap(), vec![id.to_string()]);
    assert_eq!(agent.vm_runtime(id).await.unwrap(), VmRuntime::Running);
    agent
        .start_vm(id)
        .await
        .expect("start on a re-attached VM is a no-op");
    assert_eq!(
        qemu_pids_mentioning(&format!("socle-{id}")),
        vec![pid_before],
        "no duplicate QEMU"
    );
    let t0 = Instant::now();
    agent
        .stop_vm(id, false, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(t0.elapsed() < Duration::from_secs(30));
    assert_eq!(agent.vm_runtime(id).await.unwrap(), VmRuntime::NotRunning);
    agent.destroy_vm(id).await.unwrap();
}

/// The QEMU must outlive an agent process that is SIGKILLed: a child process
/// (this test binary, running the ignored helper below) starts the VM and is
/// killed; a new agent then finds the guest still running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_survives_sigkilled_agent_process() {
    require_qemu();
    let tmp = socle_testkit::Slot::claim();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "helper_start_vm_then_hang",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SOCLE_AGENT_HELPER_STATE", tmp.path())
        .env("SOCLE_IMAGE_CACHE", image_cache())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The helper creates this file once start_vm returned.
    let flag = tmp.path().join("helper-started");
    let t0 = Instant::now();
    while !flag.exists() {
        if let Ok(Some(st)) = child.try_wait() {
            panic!("helper exited early: {st}");
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "helper did not start the VM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let agent = tcg_agent(tmp.path()).await;
    let id = "i-orphan01";
    wait_console(&agent, id, READY_MARKER, 1, BOOT_TIMEOUT).await;
    assert_eq!(agent.vm_runtime(id).await.unwrap(), VmRuntime::Running);
    agent.destroy_vm(id).await.unwrap();
    assert!(qemu_pids_mentioning(&format!("socle-{id}")).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "helper run by guest_survives_sigkilled_agent_process"]
async fn helper_start_vm_then_hang() {
    let Some(dir) = std::env::var_os("SOCLE_AGENT_HELPER_STATE") else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    let agent = tcg_agent(&dir).await;
    let image = agent.build_tiny_image().await.unwrap();
    agent.define_vm(&spec("i-orphan01", &image)).await.unwrap();
    agent.start_vm("i-orphan01").await.unwrap();
    std::fs::write(dir.join("helper-started"), b"").unwrap();
    tokio::time::sleep(Duration::from_secs(600)).await;
}

/// A guest that does not power off within the timeout (here: still booting,
/// so nothing listens to the power button yet) is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_stop_times_out_then_kills() {
    let tmp = socle_testkit::Slot::claim();
    let agent = tcg_agent(tmp.path()).await;
    let image = agent.build_tiny_image().await.unwrap();
    let id = "i-slowstop1";
    agent.define_vm(&spec(id, &image)).await.unwrap();
    agent.start_vm(id).await.unwrap();
    let t0 = Instant::now();
    agent
        .stop_vm(id, false, Duration::from_millis(500))
        .await
        .expect("stop");
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(8),
        "{took:?}"
    );
    assert_eq!(agent.vm_runtime(id).await.unwrap(), VmRuntime::NotRunning);
    let text = String::from_utf8_lossy(&agent.console_output(id, 1 << 20).unwrap()).into_owned();
    assert!(
        !text.contains(READY_MARKER),
        "the guest was expected to be still booting:\n{text}"
    );
    agent.destroy_vm(id).await.unwrap();
}

//! Accelerator probe and socle-tiny image builder, against real QEMU and apt.

mod common;

use std::time::{Duration, Instant};

use common::*;
use socle_agent::{Accel, AccelChoice, Agent, AgentConfig};

/// On this CI machine /dev/kvm is PVM and cannot run a stock guest: the Auto
/// probe must end in TCG (and cache its verdict). On a real KVM host, set
/// SOCLE_EXPECT_ACCEL=kvm.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_probe_picks_tcg_here_and_is_cached() {
    require_qemu();
    let expected = match std::env::var("SOCLE_EXPECT_ACCEL").as_deref() {
        Ok("kvm") => Accel::Kvm,
        _ => Accel::Tcg,
    };
    let tmp = socle_testkit::Slot::claim();
    let t0 = Instant::now();
    let agent = Agent::new(config(tmp.path(), AccelChoice::Auto))
        .await
        .expect("Agent::new(Auto)");
    eprintln!(
        "auto accelerator: {} after {:.1} s ({})",
        agent.accel(),
        t0.elapsed().as_secs_f64(),
        agent.accel_reason()
    );
    assert_eq!(agent.accel(), expected);

    let probe = tmp.path().join("accel-probe.json");
    if std::path::Path::new("/dev/kvm").exists() {
        let rec: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&probe).expect("probe cache written")).unwrap();
        assert_eq!(rec["accel"], expected.as_str());
        assert!(rec["key"]["qemu_version"]
            .as_str()
            .unwrap()
            .contains("QEMU"));
        assert!(!rec["reason"].as_str().unwrap().is_empty());
        // Second agent: the cached verdict, no new probe.
        let t0 = Instant::now();
        let again = Agent::new(config(tmp.path(), AccelChoice::Auto))
            .await
            .unwrap();
        assert_eq!(again.accel(), expected);
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "cached probe took {:?}",
            t0.elapsed()
        );
    }
    // The probe leaves no QEMU behind.
    assert!(qemu_pids_mentioning(&tmp.path().to_string_lossy()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_choices() {
    require_qemu();
    let tmp = socle_testkit::Slot::claim();
    let agent = Agent::new(config(tmp.path(), AccelChoice::Tcg))
        .await
        .unwrap();
    assert_eq!(agent.accel(), Accel::Tcg);
    assert!(
        agent.qemu_version().contains("QEMU"),
        "{}",
        agent.qemu_version()
    );

    let mut cfg = AgentConfig::new(tmp.path());
    cfg.accel = AccelChoice::Tcg;
    cfg.qemu_binary = "/nonexistent/qemu-system-x86_64".into();
    let err = Agent::new(cfg).await.unwrap_err().to_string();
    assert!(
        err.contains("/nonexistent/qemu-system-x86_64") && err.contains("qemu-system-x86"),
        "{err}"
    );
}

/// Builds the image from an empty cache twice (two caches) and checks the
/// result is byte-identical, then that a second call on a warm cache is instant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiny_image_from_clean_cache_is_reproducible_and_cached() {
    require_qemu();
    let state = socle_testkit::Slot::claim();
    let mut initrds = Vec::new();
    for _ in 0..2 {
        let cache = socle_testkit::Slot::claim();
        let mut cfg = config(state.path(), AccelChoice::Tcg);
        cfg.image_cache_dir = cache.path().join("images");
        // A clean image cache, but the packages of the run's cache: no
        // download in tests (the first build of the run fetched them).
        cfg.deb_cache_dir = Some(image_cache().join("debs"));
        let agent = Agent::new(cfg).await.unwrap();
        let t0 = Instant::now();
        let img = agent
            .build_tiny_image()
            .await
            .expect("build from a clean cache");
        eprintln!("clean build: {:.2} s", t0.elapsed().as_secs_f64());
        let kernel = img.kernel.clone().expect("direct-kernel image");
        let initrd = img.initrd.clone().expect("direct-kernel image");
        for f in [&kernel, &initrd, &img.disk] {
            assert!(f.is_file(), "{}", f.display());
            assert!(f.starts_with(cache.path()));
        }
        let t0 = Instant::now();
        let again = agent.build_tiny_image().await.unwrap();
        assert_eq!(again, img);
        assert!(
            t0.elapsed() < Duration::from_millis(200),
            "cached build took {:?}",
            t0.elapsed()
        );
        // The full-disk variant: built on first use next to the same files,
        // then cached.
        let t0 = Instant::now();
        let full = agent.build_tiny_disk_image().await.expect("full disk");
        eprintln!("full-disk build: {:.2} s", t0.elapsed().as_secs_f64());
        assert!(full.boots_from_disk() && full.initrd.is_none());
        assert_eq!(full.disk.parent(), kernel.parent());
        let t0 = Instant::now();
        assert_eq!(agent.build_tiny_disk_image().await.unwrap(), full);
        assert!(t0.elapsed() < Duration::from_millis(200));
        let info = std::process::Command::new("qemu-img")
            .args(["info", "-U", "--output=json"])
            .arg(&full.disk)
            .output_within(COMMAND_TIMEOUT);
        let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
        assert_eq!(info["format"], "qcow2");
        assert_eq!(info["virtual-size"], 1u64 << 30);
        assert!(info.get("backing-filename").is_none());
        // Only the finished image directory is left (no build leftovers).
        let entries: Vec<_> = std::fs::read_dir(cache.path().join("images"))
            .unwrap()
            .flatten()
            .collect();
        assert_eq!(entries.len(), 1, "{entries:?}");
        let manifest =
            std::fs::read_to_string(kernel.parent().unwrap().join("manifest.json")).unwrap();
        assert!(manifest.contains("cloud-amd64"), "{manifest}");
        initrds.push(std::fs::read(&initrd).unwrap());
    }
    assert!(
        initrds[0] == initrds[1],
        "initramfs differs between two clean builds"
    );
}

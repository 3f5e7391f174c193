//! Shared helpers for the real-QEMU integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use std::collections::HashMap;

use socle_agent::{AccelChoice, Agent, AgentConfig, ImageFiles, VmSpec, VolumeKey};
pub use socle_testkit::CommandWithin;

/// How long a tool a test runs (qemu-img, ...) may take.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// Fails the test (never skips it) when QEMU is not installed.
pub fn require_qemu() {
    for bin in ["qemu-system-x86_64", "qemu-img"] {
        let ok = std::process::Command::new(bin)
            .arg("--version")
            .try_output_within(COMMAND_TIMEOUT).is_ok_and(|o| o.status.success());
        assert!(
            ok,
            "`{bin}` is not installed or does not run: these tests boot real QEMU guests. \
             Install it with scripts/install-agent-deps.sh (Debian: qemu-system-x86 + qemu-utils)."
        );
    }
}

/// Image cache shared by all test runs of this workspace (SOCLE_IMAGE_CACHE wins).
pub fn image_cache() -> PathBuf {
    match std::env::var_os("SOCLE_IMAGE_CACHE") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("socle-images"),
    }
}

pub fn config(state_dir: &Path, accel: AccelChoice) -> AgentConfig {
    let mut cfg = AgentConfig::new(state_dir);
    cfg.accel = accel;
    cfg.image_cache_dir = image_cache();
    cfg
}

pub async fn tcg_agent(state_dir: &Path) -> Agent {
    require_qemu();
    Agent::new(config(state_dir, AccelChoice::Tcg))
        .await
        .expect("Agent::new")
}

pub fn spec(vm_id: &str, image: &ImageFiles) -> VmSpec {
    VmSpec {
        vm_id: vm_id.to_string(),
        vcpus: 1,
        memory_mib: 256,
        image: image.clone(),
        user_data: None,
        kernel_cmdline: None,
    }
}

pub fn count(hay: &[u8], needle: &str) -> usize {
    let n = needle.as_bytes();
    hay.windows(n.len()).filter(|w| *w == n).count()
}

/// Waits until `marker` appears `times` times on the console; returns the wait.
pub async fn wait_console(
    agent: &Agent,
    vm_id: &str,
    marker: &str,
    times: usize,
    timeout: Duration,
) -> Duration {
    let started = Instant::now();
    loop {
        let out = agent
            .console_output(vm_id, 1 << 20)
            .expect("console_output");
        if count(&out, marker) >= times {
            return started.elapsed();
        }
        if started.elapsed() > timeout {
            panic!(
                "{vm_id}: {marker:?} x{times} not seen within {timeout:?}; console:\n{}",
                String::from_utf8_lossy(&out)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Pids of live QEMU processes whose command line mentions `needle`.
pub fn qemu_pids_mentioning(needle: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd);
        if cmd.contains("qemu-system") && cmd.contains(needle) {
            pids.push(pid);
        }
    }
    pids
}

/// The VM's console log so far (up to 4 MiB).
pub fn console(agent: &Agent, vm: &str) -> String {
    String::from_utf8_lossy(&agent.console_output(vm, 4 << 20).unwrap()).into_owned()
}

pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Volume keys by volume ID.
pub fn keys(list: &[(&str, &VolumeKey)]) -> HashMap<String, VolumeKey> {
    list.iter()
        .map(|(id, k)| (id.to_string(), (*k).clone()))
        .collect()
}

/// Reads the plaintext of an encrypted qcow2 (volume or snapshot) through
/// qemu-img, as an operator's recovery tool would (passphrase in a 0600 file):
/// its first `len` bytes (`u64::MAX`: all).
pub fn plaintext(path: &Path, key: &VolumeKey, work: &Path, len: u64) -> Vec<u8> {
    use std::os::unix::fs::OpenOptionsExt;
    let pass = work.join(format!("pass-{}", std::process::id()));
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&pass)
            .unwrap();
        f.write_all(key.luks_passphrase().as_bytes()).unwrap();
    }
    let raw = work.join(format!(
        "plain-{}.raw",
        path.file_name().unwrap().to_string_lossy()
    ));
    let out = std::process::Command::new("qemu-img")
        .args(["convert", "-U", "--object"])
        .arg(format!("secret,id=k,file={}", pass.display()))
        .arg("--image-opts")
        .arg(format!(
            "driver=qcow2,file.filename={},encrypt.key-secret=k",
            path.display()
        ))
        .args(["-O", "raw"])
        .arg(&raw)
        .output_within(COMMAND_TIMEOUT);
    std::fs::remove_file(&pass).unwrap();
    assert!(
        out.status.success(),
        "qemu-img convert: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    use std::io::Read;
    let mut buf = Vec::new();
    std::fs::File::open(&raw)
        .unwrap()
        .take(len)
        .read_to_end(&mut buf)
        .unwrap();
    std::fs::remove_file(&raw).unwrap();
    buf
}


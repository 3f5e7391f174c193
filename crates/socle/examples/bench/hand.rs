//! Starting the agent's exact QEMU command line by hand: the key in a file
//! instead of the agent's memfd, a scratch directory instead of the VM dir,
//! a fresh encrypted root disk made with qemu-img.

use std::process::Command;
use std::time::{Duration, Instant};

/// The passphrase of every disk made by hand (not a secret: a benchmark key).
const BENCH_KEY: &str = "c29jbGUtYmVuY2gta2V5LW5vdC1hLXNlY3JldC0wMDA=";

/// The agent's LUKS settings (`socle-agent/src/volume.rs`, `create_encrypted`).
pub const LUKS_OPTS: &str = "encrypt.format=luks,encrypt.key-secret=k0,encrypt.cipher-alg=aes-256,\
     encrypt.cipher-mode=xts,encrypt.ivgen-alg=plain64,encrypt.hash-alg=sha256,encrypt.iter-time=10";

/// Creates an empty qcow2+LUKS file of `size` (qemu-img syntax) with the
/// agent's settings and the passphrase in `key_file`; returns how long the
/// successful attempt took. QEMU 7.2's PBKDF calibration sometimes fails
/// ("Unable to get accurate CPU usage"); the agent retries, so does a person.
pub fn create_encrypted(path: &str, size: &str, key_file: &str) -> Duration {
    let mut last = String::new();
    for _ in 0..10 {
        let _ = std::fs::remove_file(path);
        let t = Instant::now();
        let out = Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "--object", &format!("secret,id=k0,file={key_file}")])
            .args(["-o", LUKS_OPTS])
            .args([path, size])
            .output()
            .expect("run qemu-img");
        if out.status.success() {
            return t.elapsed();
        }
        last = String::from_utf8_lossy(&out.stderr).to_string();
    }
    panic!("qemu-img create of the encrypted {path} failed 10 times; last error: {last}");
}

/// Creates an empty plain qcow2 file; returns how long it took.
pub fn create_plain(path: &str, size: &str) -> Duration {
    let t = Instant::now();
    let out = Command::new("qemu-img").args(["create", "-q", "-f", "qcow2", path, size]).output().expect("run qemu-img");
    assert!(out.status.success(), "qemu-img create of {path} failed: {}", String::from_utf8_lossy(&out.stderr));
    t.elapsed()
}

/// One VM started by hand from an agent-made command line. Dropping it kills
/// its QEMU (by its pid) and removes the scratch directory.
pub struct HandVm {
    scratch: tempfile::TempDir,
    pub dir: String,
    pub key_file: String,
    qemu: String,
    /// The agent's arguments, with keys, VM dir and root volume rewritten.
    pub args: Vec<String>,
    root_volume: Option<String>,
    pid: Option<i32>,
}

impl HandVm {
    /// `cmdline`: the agent's QEMU command line (from /proc/PID/cmdline);
    /// `vm_dir`: that VM's directory (where its pidfile was).
    pub fn new(cmdline: &[String], vm_dir: &str) -> HandVm {
        let scratch = tempfile::tempdir().unwrap();
        let dir = scratch.path().to_string_lossy().to_string();
        let key_file = format!("{dir}/key");
        std::fs::write(&key_file, BENCH_KEY).unwrap();
        // The root volume is the first volume on the command line.
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
        HandVm { scratch, dir, key_file, qemu: cmdline[0].clone(), args, root_volume, pid: None }
    }

    /// Makes the encrypted root disk if the command line boots from a root
    /// volume; returns how long qemu-img took (None: no root volume).
    pub fn create_root(&self) -> Option<Duration> {
        self.root_volume.as_ref()?;
        Some(create_encrypted(&format!("{}/root.qcow2", self.dir), "1G", &self.key_file))
    }

    /// Starts QEMU (it daemonizes) with the arguments.
    pub fn start(&mut self) {
        let out = Command::new(&self.qemu).args(&self.args).current_dir(self.scratch.path()).output().unwrap();
        assert!(
            out.status.success(),
            "hand-started QEMU failed ({}): {}\nargs: {:?}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.args
        );
        let pid: i32 = std::fs::read_to_string(format!("{}/qemu.pid", self.dir)).unwrap().trim().parse().unwrap();
        self.pid = Some(pid);
    }

    pub fn console(&self) -> String {
        std::fs::read_to_string(format!("{}/console.log", self.dir)).unwrap_or_default()
    }

    /// Polls the console (every 20 ms) until it contains `needle`; panics
    /// after `timeout` or if QEMU died.
    pub fn wait_console(&self, needle: &str, timeout: Duration) -> String {
        let t0 = Instant::now();
        loop {
            let text = self.console();
            if text.contains(needle) {
                return text;
            }
            if let Some(pid) = self.pid {
                assert!(unsafe { libc::kill(pid, 0) } == 0, "hand-started QEMU (pid {pid}) died; console:\n{text}");
            }
            assert!(t0.elapsed() < timeout, "console lacks {needle:?} after {timeout:?}:\n{text}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill(&mut self) {
        if let Some(pid) = self.pid.take() {
            unsafe { libc::kill(pid, libc::SIGKILL) };
            // Wait for it to go (it is not our child: poll).
            for _ in 0..500 {
                if unsafe { libc::kill(pid, 0) } != 0 {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

impl Drop for HandVm {
    fn drop(&mut self) {
        self.kill();
    }
}

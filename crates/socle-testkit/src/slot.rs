//! Slots: one of [`SLOTS`] places on the host that a test holds while it
//! runs, by an advisory lock (`flock`) on `ROOT/slot-NN.lock`.
//!
//! A slot names everything its test makes, so that whatever a dead test
//! left is found exactly, and nothing else is touched:
//! * files under `ROOT/slot-NN/` — data dirs, hence the command lines of
//!   `socle up`, `socle agent`, QEMU and dnsmasq, which all name them;
//! * network objects whose name starts with `tsNN` (namespaces, links,
//!   nftables tables): all test prefixes have that one length, so no
//!   prefix is the beginning of another;
//! * addresses from the slot's share of ranges the host does not route.
//!
//! The kernel drops the lock when its holder dies, however it dies. The
//! next holder sweeps the slot before using it, and a watcher process
//! started with the slot (`scripts/sweep.sh --slot NN --on-eof`, in its own
//! session so that a timeout killing the test's process group spares it)
//! sweeps it as soon as the test process is gone: its stdin is a pipe the
//! test holds, and it inherits the lock, so nobody takes the slot before
//! it has swept. `scripts/sweep.sh --stale` sweeps every slot nobody holds.

use std::fs::File;
use std::io::Write as _;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::host_routes::{first_free, Ipv4Range};

/// How many tests may hold a slot at once on one host.
pub const SLOTS: u32 = 64;

/// Where slots live: `$SOCLE_TEST_ROOT`, else `/tmp/socle-tests`.
pub fn test_root() -> PathBuf {
    match std::env::var_os("SOCLE_TEST_ROOT") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from("/tmp/socle-tests"),
    }
}

/// `scripts/sweep.sh` of this checkout.
pub fn sweep_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/sweep.sh")
}

/// A slot held by this process (see the module documentation). Dropping
/// it sweeps it: processes naming its directory are killed, its network
/// objects and its directory removed.
pub struct Slot {
    index: u32,
    dir: PathBuf,
    /// The watcher's stdin: closing it (by Drop, or by the kernel when
    /// this process dies) starts the sweep.
    watcher: Option<Child>,
    _lock: File,
}

impl Slot {
    /// Takes a free slot, sweeping what an earlier holder left in it.
    pub fn claim() -> Slot {
        end_with_the_runner();
        let root = test_root();
        std::fs::create_dir_all(&root).unwrap_or_else(|e| panic!("cannot create the test root {}: {e}", root.display()));
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        // Start at a varying slot: a freed slot is not taken again at once,
        // which keeps logs of consecutive tests apart.
        let start = (std::process::id() ^ nanos) % SLOTS;
        for i in 0..SLOTS {
            let index = (start + i) % SLOTS;
            let path = root.join(format!("slot-{index:02}.lock"));
            let lock = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
            // SAFETY: flock on a file descriptor we own.
            if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Slot::take(index, lock, &root);
            }
        }
        panic!("all {SLOTS} test slots under {} are held by live processes", root.display());
    }

    fn take(index: u32, lock: File, root: &Path) -> Slot {
        let out = crate::output_within(
            Command::new("bash").arg(sweep_script()).args(["--slot", &index.to_string()]).env("SOCLE_TEST_ROOT", root),
            Duration::from_secs(120),
        );
        assert!(out.status.success(), "sweeping slot {index} failed: {}", String::from_utf8_lossy(&out.stderr));
        let said = String::from_utf8_lossy(&out.stdout);
        if !said.trim().is_empty() {
            eprintln!("slot {index}: removed what an earlier test left:\n{said}");
        }
        let dir = root.join(format!("slot-{index:02}"));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let mut slot = Slot { index, dir, watcher: None, _lock: lock };
        slot.watcher = Some(slot.spawn_watcher(root));
        slot
    }

    fn spawn_watcher(&self, root: &Path) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(root.join(format!("slot-{:02}.sweep.log", self.index)))
            .expect("the slot's sweep log");
        let lock_fd = self._lock.as_raw_fd();
        let mut cmd = Command::new("bash");
        cmd.arg(sweep_script())
            .args(["--slot", &self.index.to_string(), "--on-eof"])
            .env("SOCLE_TEST_ROOT", root)
            .stdin(Stdio::piped())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        // SAFETY: setsid, dup2 and fcntl are async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                // Its own session: a timeout that kills the test's process
                // group must not kill the one that cleans up after it.
                libc::setsid();
                // It holds the slot's lock (as fd 9) until it has swept.
                let held = if lock_fd == 9 { libc::fcntl(9, libc::F_SETFD, 0) } else { libc::dup2(lock_fd, 9) };
                if held < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd.spawn().unwrap_or_else(|e| panic!("cannot start the sweep watcher of slot {}: {e}", self.index))
    }

    pub fn index(&self) -> u32 {
        self.index
    }

    /// `ROOT/slot-NN`: put everything the test writes under it.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// A fresh directory under the slot's (the slot sweeps it).
    pub fn subdir(&self, name: &str) -> PathBuf {
        let d = self.dir.join(name);
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("cannot create {}: {e}", d.display()));
        d
    }

    /// `tsNN`: the start of every network object name of this test
    /// (`--net-prefix` of its cloud, a lab's namespaces and links).
    pub fn net_prefix(&self) -> String {
        format!("ts{:02x}", self.index)
    }

    /// A /26 for a cloud's uplinks (`--uplink-range`).
    pub fn uplink_range(&self) -> Ipv4Range {
        block("uplink ranges", &["169.254.128.0/20", "100.72.0.0/20"]).nth(26, self.index)
    }

    /// A /27 for a cloud's public IPs (`--public-ip-pool`).
    pub fn public_ip_pool(&self) -> Ipv4Range {
        block("public IP pools", &["198.19.0.0/21", "100.73.0.0/21"]).nth(27, self.index)
    }

    /// A /30 for a veth between the root namespace and a namespace playing
    /// a host outside the cloud: .1 the root end, .2 the outside host.
    pub fn outside_link(&self) -> Ipv4Range {
        block("outside links", &["192.0.2.0/24", "203.0.113.0/24", "198.51.100.0/24"]).nth(30, self.index)
    }

    /// Eight public addresses for a network lab, routed in the root namespace.
    pub fn lab_public_ips(&self) -> Ipv4Range {
        block("lab public IPs", &["198.18.192.0/23", "100.74.0.0/23"]).nth(29, self.index)
    }

    /// A /26 for the links of a cloud's hosts played by namespaces: sixteen
    /// /30s, host `i` on the `i`-th (.1 the root end, .2 the host).
    pub fn host_links(&self) -> Ipv4Range {
        block("host links", &["172.31.0.0/20", "100.75.0.0/20"]).nth(26, self.index)
    }

    /// A /24 for a network lab's uplink links.
    pub fn lab_uplinks(&self) -> Ipv4Range {
        block("lab uplinks", &["100.64.0.0/18", "100.80.0.0/18"]).nth(24, self.index)
    }
}

/// Ends this test process when the process that started it (nextest,
/// cargo, a shell) is gone: nextest runs each test in a process group of
/// its own, so a runner killed with SIGKILL would leave its tests running,
/// unbounded, with their slots held. A thread watches for the process
/// being given another parent, then exits at once (the slot's watcher,
/// seeing its pipe close, sweeps).
fn end_with_the_runner() {
    static WATCHING: std::sync::Once = std::sync::Once::new();
    WATCHING.call_once(|| {
        // SAFETY: getppid cannot fail.
        let runner = unsafe { libc::getppid() };
        let _ = std::thread::Builder::new().name("runner-watch".into()).spawn(move || loop {
            std::thread::sleep(Duration::from_millis(500));
            // SAFETY: getppid cannot fail; _exit ends the process at once.
            if unsafe { libc::getppid() } != runner {
                let _ = writeln!(std::io::stderr(), "the test runner (pid {runner}) is gone: ending this test");
                unsafe { libc::_exit(101) };
            }
        });
    });
}

/// The first of `candidates` the host does not route, chosen once per
/// process (every process makes the same choice, the host's routes being
/// the same for all).
fn block(what: &'static str, candidates: &'static [&'static str]) -> Ipv4Range {
    static CHOSEN: OnceLock<std::sync::Mutex<Vec<(&'static str, Ipv4Range)>>> = OnceLock::new();
    let chosen = CHOSEN.get_or_init(Default::default);
    let mut chosen = chosen.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, r)) = chosen.iter().find(|(w, _)| *w == what) {
        return *r;
    }
    let r = first_free(what, candidates);
    chosen.push((what, r));
    r
}

impl Drop for Slot {
    fn drop(&mut self) {
        let Some(mut watcher) = self.watcher.take() else { return };
        // EOF on its stdin: the watcher sweeps, then exits.
        drop(watcher.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            match watcher.try_wait() {
                Ok(Some(status)) if status.success() => return,
                Ok(Some(status)) => {
                    let _ = writeln!(std::io::stderr(), "the sweep of slot {} ended with {status}: see {}", self.index, test_root().join(format!("slot-{:02}.sweep.log", self.index)).display());
                    return;
                }
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                _ => {
                    let _ = watcher.kill();
                    let _ = writeln!(std::io::stderr(), "the sweep of slot {} took over 2 minutes: killed", self.index);
                    return;
                }
            }
        }
    }
}

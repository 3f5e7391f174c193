//! Hosts of a test cloud as other machines would be, on this one: each
//! `socle agent` runs in a network namespace of its own (a veth to the root
//! namespace, its own address, a default route through the root end), and
//! in a mount namespace of its own whose `/run/netns` is private, so that
//! the namespaces, taps, bridges and nftables tables its driver makes are
//! its alone — two hosts may hold the same Net under the same names, as two
//! machines do. Both namespaces are held by a process of their own (the
//! host's "init"), so that they outlive the agent as a machine's do: an
//! agent started again finds the Nets its predecessor made. Everything is named by the test's slot: the slot's sweep
//! removes what a killed test left (the host's namespace and link by their
//! prefix, its processes by their data dir). Drop removes it at once.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use super::{free_port, sh, socle_bin, KillOnDrop};

pub struct LabHost {
    /// `<slot prefix>h<i>`: the host's network namespace.
    pub ns: String,
    /// The root-namespace end of its link.
    pub root_if: String,
    pub root_ip: Ipv4Addr,
    /// The host's own address.
    pub ip: Ipv4Addr,
    /// Its data dir, in the slot.
    pub dir: PathBuf,
    /// Where its agent serves the protocol (`ip:port`).
    pub listen: String,
    /// The cloud's network prefix, which every host of a cloud uses.
    prefix: String,
    /// Holds the host's namespaces.
    init: Option<KillOnDrop>,
    agent: Option<KillOnDrop>,
}

impl LabHost {
    /// Host `i` (1..=16) of the cloud holding `slot`: its namespace and link.
    pub fn new(slot: &socle_testkit::Slot, i: u32) -> LabHost {
        let prefix = slot.net_prefix();
        let link = slot.host_links().nth(30, i - 1);
        let mut host = LabHost {
            ns: format!("{prefix}h{i}"),
            root_if: format!("{prefix}h{i}r"),
            root_ip: link.addr(1),
            ip: link.addr(2),
            dir: slot.subdir(&format!("host-{i}")),
            listen: format!("{}:{}", link.addr(2), free_port()),
            prefix,
            init: None,
            agent: None,
        };
        host.remove();
        // From here on Drop cleans up, whatever fails below.
        super::linked_namespace(&host.ns, &host.root_if, host.root_ip, host.ip, "default");
        let ns = &host.ns;
        // `ip netns exec` enters the network namespace; unshare makes the
        // mount namespace, where a fresh /run/netns hides the other hosts'
        // namespaces. Each exec keeps the parent-death signal.
        let mut init = Command::new("ip");
        socle_testkit::die_with_parent(&mut init);
        init.args(["netns", "exec", ns, "unshare", "--mount", "--propagation", "private", "sh", "-c"])
            .arg("mount -t tmpfs -o mode=0755 tmpfs /run/netns && echo ready && exec sleep infinity")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut init = KillOnDrop(init.spawn().expect("spawn the host's init"));
        let mut ready = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(init.0.stdout.take().unwrap()), &mut ready).unwrap();
        assert_eq!(ready.trim(), "ready", "the namespaces of {ns} could not be made");
        host.init = Some(init);
        host
    }

    /// `socle agent` on this host (joining with `join`: the API's URL and a
    /// token), in its namespaces; its log is `agent.log` in its data dir.
    pub fn start_agent(&mut self, join: Option<(&str, &str)>) {
        assert!(self.agent.is_none(), "the agent of {} runs already", self.ns);
        let mut cmd = Command::new("nsenter");
        socle_testkit::die_with_parent(&mut cmd);
        cmd.args(["-t", &self.init_pid().to_string(), "-m", "-n", "--"])
            .arg(socle_bin())
            .args(["agent", "--data-dir"])
            .arg(&self.dir)
            .args(["--accel", "tcg", "--listen", &self.listen, "--net-prefix", &self.prefix])
            .env("RUST_LOG", "info");
        if let Some((url, token)) = join {
            cmd.args(["--join", url, "--token", token]);
        }
        std::fs::create_dir_all(&self.dir).unwrap();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("agent.log")).unwrap();
        let child = cmd.stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log).spawn().expect("spawn socle agent");
        self.agent = Some(KillOnDrop(child));
    }

    /// SIGKILL of the agent (its guests keep running, as on a host whose
    /// agent crashed).
    pub fn kill_agent(&mut self) {
        self.agent = None;
    }

    /// The last lines of the agent's log.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Runs `cmdline` as the host sees things: in the agent's network and
    /// mount namespaces (e.g. `ip netns list` lists the host's Nets).
    pub fn sh(&self, cmdline: &str) -> String {
        let out = sh(&format!("nsenter -t {} -m -n sh -c '{cmdline}'", self.init_pid()));
        assert!(out.status.success(), "`{cmdline}` on {} failed: {}", self.ns, String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn init_pid(&self) -> u32 {
        self.init.as_ref().expect("the host's init runs").0.id()
    }

    fn remove(&self) {
        let _ = sh(&format!("ip netns del {} 2>/dev/null; ip link del {} 2>/dev/null", self.ns, self.root_if));
    }
}

impl Drop for LabHost {
    fn drop(&mut self) {
        self.agent = None;
        self.init = None;
        self.remove();
    }
}

//! Test harness: runs the real `socle up` binary on a temp data dir and
//! talks to it over HTTP with signed requests, as a client would.
#![allow(dead_code)]

mod guests;
mod lab_hosts;
mod outside;
#[allow(unused_imports)] // only the networking and host tests use them
pub use {guests::*, lab_hosts::*, outside::*};

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The `socle` binary: Cargo's for integration tests; for the benchmark
/// example, `$SOCLE_BIN` or the `socle` next to `target/<profile>/examples/`.
pub fn socle_bin() -> std::path::PathBuf {
    if let Some(p) = option_env!("CARGO_BIN_EXE_socle") {
        return p.into();
    }
    std::env::var_os("SOCLE_BIN").map(Into::into).unwrap_or_else(|| {
        let exe = std::env::current_exe().unwrap();
        exe.parent().and_then(|p| p.parent()).unwrap().join("socle")
    })
}
pub const SMALL: &str = "tinav5.c1r1p2";

/// How long an operator command of the CLI may take in a test.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(120);

pub use socle_testkit::CommandWithin;

/// Credentials of one account.
#[derive(Clone, Debug)]
pub struct Creds {
    pub access_key: String,
    pub secret_key: String,
    pub region: String,
    pub endpoint: String,
}

impl Creds {
    fn from_json(v: &Value) -> Creds {
        Creds {
            access_key: v["AccessKey"].as_str().unwrap().into(),
            secret_key: v["SecretKey"].as_str().unwrap().into(),
            region: v["Region"].as_str().unwrap().into(),
            endpoint: v["Endpoint"].as_str().unwrap().into(),
        }
    }
}

/// An answer: HTTP status and JSON body.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl Answer {
    pub fn ok(self) -> Value {
        assert_eq!(self.status, 200, "expected success, got {}", self.body);
        self.body
    }
    pub fn code(&self) -> &str {
        self.body["Errors"][0]["Code"].as_str().unwrap_or("<none>")
    }
    pub fn expect_error(self, status: u16, code: &str) -> Value {
        assert_eq!((self.status, self.code()), (status, code), "unexpected answer {}", self.body);
        assert!(self.body["ResponseContext"]["RequestId"].is_string(), "no RequestId in {}", self.body);
        self.body
    }
}

/// Sends `body` (raw bytes) to `operation`, signed with `creds` unless None.
pub fn raw_call(endpoint: &str, creds: Option<&Creds>, operation: &str, body: &[u8], extra: &[(&str, &str)]) -> Answer {
    try_raw_call(endpoint, creds, operation, body, extra).unwrap_or_else(|e| panic!("{e}"))
}

pub fn try_raw_call(
    endpoint: &str,
    creds: Option<&Creds>,
    operation: &str,
    body: &[u8],
    extra: &[(&str, &str)],
) -> Result<Answer, String> {
    let url = format!("{}/{}", endpoint.trim_end_matches('/'), operation);
    let rest = url.split_once("://").unwrap().1;
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let mut req = ureq::post(&url).timeout(Duration::from_secs(120));
    if let Some(c) = creds {
        for (k, v) in socle_auth::sign_osc4(&c.access_key, &c.secret_key, &c.region, host, path, body, time::OffsetDateTime::now_utc()) {
            req = req.set(&k, &v);
        }
    } else {
        req = req.set("Content-Type", "application/json");
    }
    for (k, v) in extra {
        req = req.set(k, v);
    }
    match req.send_bytes(body) {
        Ok(r) => Ok(Answer { status: r.status(), body: r.into_json().unwrap_or(Value::Null) }),
        Err(ureq::Error::Status(status, r)) => Ok(Answer { status, body: r.into_json().unwrap_or(Value::Null) }),
        Err(e) => Err(format!("transport error calling {operation}: {e}")),
    }
}

pub fn call(creds: &Creds, operation: &str, body: Value) -> Answer {
    raw_call(&creds.endpoint, Some(creds), operation, &serde_json::to_vec(&body).unwrap(), &[])
}

/// A running `socle up` on its own data dir. Dropping it kills the server
/// and every QEMU started under its data dir.
///
/// With `SOCLE_TEST_DATABASE=postgres` its state is a fresh database of a
/// PostgreSQL cluster the test process starts (`--database`), else SQLite
/// in the data dir.
pub struct TestCloud {
    /// Its marker on the host: the data dir is the slot's directory, its
    /// network prefix and address ranges the slot's (see socle-testkit).
    /// Dropped last: its sweep ends whatever the cloud left running.
    pub slot: socle_testkit::Slot,
    pub port: u16,
    child: Option<Child>,
    pub creds: Creds,
    /// The PostgreSQL URL of its state, if not SQLite.
    pub database: Option<String>,
    /// A `socle agent` process of its own, when the cloud was started with
    /// [`TestCloud::start_with_separate_agent`] (else `socle up` runs the
    /// agent inside).
    agent: Option<Child>,
    separate_agent: bool,
    /// Where the API listens (port `port`): loopback, unless hosts in
    /// namespaces must reach it (see [`TestCloud::start_with_hosts`]).
    listen_ip: std::net::Ipv4Addr,
    /// `socle server` (no host agent of its own) rather than `socle up`.
    server_only: bool,
}

/// The database of a new test cloud: None (SQLite) unless
/// `SOCLE_TEST_DATABASE=postgres` asks for PostgreSQL.
fn test_database() -> Option<String> {
    match std::env::var("SOCLE_TEST_DATABASE").as_deref() {
        Err(_) | Ok("sqlite") => None,
        Ok("postgres") => {
            let cluster = socle_store::testing::PgCluster::shared()
                .unwrap_or_else(|e| panic!("SOCLE_TEST_DATABASE=postgres but no PostgreSQL: {e}"));
            Some(cluster.new_database().expect("a test database"))
        }
        Ok(other) => panic!("SOCLE_TEST_DATABASE must be sqlite or postgres, not {other:?}"),
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl TestCloud {
    pub fn start() -> TestCloud {
        Self::start_with(&[])
    }

    /// A cloud started with extra `socle up` options.
    pub fn start_with(extra: &[&str]) -> TestCloud {
        Self::start_on(test_database(), extra)
    }

    /// A cloud whose state is `database` (PostgreSQL URL; None: SQLite).
    pub fn start_on(database: Option<String>, extra: &[&str]) -> TestCloud {
        let mut cloud = Self::unlaunched(database, false);
        cloud.launch(extra);
        cloud
    }

    /// A fresh data dir and port, nothing running yet.
    fn unlaunched(database: Option<String>, separate_agent: bool) -> TestCloud {
        let slot = socle_testkit::Slot::claim();
        let port = free_port();
        let creds = Creds { access_key: String::new(), secret_key: String::new(), region: String::new(), endpoint: String::new() };
        TestCloud { slot, port, child: None, creds, database, agent: None, separate_agent, listen_ip: std::net::Ipv4Addr::LOCALHOST, server_only: false }
    }

    /// A cloud with `hosts` more hosts, each played by a namespace of its
    /// own (see [`LabHost`]), none joined yet; the API listens on the root
    /// end of the first host's link, where every host reaches it.
    pub fn start_with_hosts(hosts: u32, extra: &[&str]) -> (TestCloud, Vec<LabHost>) {
        Self::with_hosts(hosts, false, extra)
    }

    /// [`TestCloud::start_with_hosts`] served by `socle server`: no host
    /// agent of its own, every VM on a host that joined.
    pub fn start_server_with_hosts(hosts: u32, extra: &[&str]) -> (TestCloud, Vec<LabHost>) {
        Self::with_hosts(hosts, true, extra)
    }

    fn with_hosts(hosts: u32, server_only: bool, extra: &[&str]) -> (TestCloud, Vec<LabHost>) {
        let mut cloud = Self::unlaunched(test_database(), false);
        cloud.server_only = server_only;
        let lab: Vec<LabHost> = (1..=hosts).map(|i| LabHost::new(&cloud.slot, i)).collect();
        cloud.listen_ip = lab[0].root_ip;
        cloud.launch(extra);
        (cloud, lab)
    }

    /// A cloud whose host agent is a `socle agent` process of its own, which
    /// `socle up --agent` drives over the agent socket.
    pub fn start_with_separate_agent() -> TestCloud {
        Self::start_with_agent_on(test_database())
    }

    /// [`TestCloud::start_with_separate_agent`] with its state in `database`.
    pub fn start_with_agent_on(database: Option<String>) -> TestCloud {
        let mut cloud = Self::unlaunched(database, true);
        cloud.start_agent();
        cloud.launch(&[]);
        cloud
    }

    /// Another server of this cloud: `socle up` on the same data dir (its
    /// keys), database and agent, listening on `port`; its log is
    /// `server-PORT.log`. Returns once it answers.
    pub fn spawn_server(&self, port: u16) -> KillOnDrop {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.slot.path().join(format!("server-{port}.log"))).unwrap();
        let mut cmd = self.up_command(port);
        cmd.stdout(log.try_clone().unwrap()).stderr(log);
        let mut child = cmd.spawn().expect("spawn socle up");
        let endpoint = format!("http://127.0.0.1:{port}/api/v1");
        let deadline = Instant::now() + Duration::from_secs(120);
        while !try_raw_call(&endpoint, None, "ReadRegions", b"{}", &[]).is_ok_and(|a| a.status == 200) {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("the second server exited early ({status})");
            }
            assert!(Instant::now() < deadline, "the second server never answered");
            std::thread::sleep(Duration::from_millis(200));
        }
        KillOnDrop(child)
    }

    pub fn agent_socket(&self) -> std::path::PathBuf {
        self.slot.path().join("agent.sock")
    }

    /// Starts `socle agent` on this data dir and waits until its socket answers.
    pub fn start_agent(&mut self) {
        assert!(self.agent.is_none(), "agent already running");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.slot.path().join("agent.log")).unwrap();
        let mut cmd = Command::new(socle_bin());
        socle_testkit::die_with_parent(&mut cmd);
        let child = cmd
            .args(["agent", "--data-dir"])
            .arg(self.slot.path())
            .args(["--accel", "tcg"])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn socle agent");
        self.agent = Some(child);
        let deadline = Instant::now() + Duration::from_secs(600);
        while std::os::unix::net::UnixStream::connect(self.agent_socket()).is_err() {
            if let Some(status) = self.agent.as_mut().unwrap().try_wait().unwrap() {
                panic!("socle agent exited early ({status}); log:\n{}", std::fs::read_to_string(self.slot.path().join("agent.log")).unwrap_or_default());
            }
            assert!(Instant::now() < deadline, "socle agent not listening after 10 minutes");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILL of the agent process, as in a crash.
    pub fn kill_agent(&mut self) {
        if let Some(mut a) = self.agent.take() {
            a.kill().unwrap();
            a.wait().unwrap();
        }
    }

    pub fn data_dir(&self) -> &Path {
        self.slot.path()
    }

    /// A `socle` command on this cloud's state (its database, when
    /// PostgreSQL, through `SOCLE_DATABASE`); the caller adds `--data-dir`.
    pub fn socle(&self) -> Command {
        let mut cmd = Command::new(socle_bin());
        if let Some(db) = &self.database {
            cmd.env("SOCLE_DATABASE", db);
        }
        cmd
    }

    /// The slot's: the prefix of its namespaces, taps and tables.
    pub fn net_prefix(&self) -> String {
        self.slot.net_prefix()
    }

    /// The slot's /26 for this cloud's uplinks (32 networks).
    pub fn uplink_range(&self) -> String {
        self.slot.uplink_range().to_string()
    }

    /// The tap of NIC `nic_id` (`eni-…`) on this host: the prefix and the
    /// NIC's hex digits, as the control plane names it.
    pub fn tap_of(&self, nic_id: &str) -> String {
        format!("{}{}", self.net_prefix(), nic_id.trim_start_matches("eni-"))
    }

    /// The slot's /27 for this cloud's public IPs (VMs of the public cloud
    /// get one at launch, and the host routes each to its cloud): distinct
    /// from other running test clouds, and from the 198.18.x pools tests
    /// choose themselves. An explicit `--public-ip-pool` wins.
    pub fn public_ip_pool(&self) -> String {
        self.slot.public_ip_pool().to_string()
    }

    /// Starts the server process on this data dir and waits until it answers.
    pub fn launch(&mut self, extra: &[&str]) {
        self.launch_env(extra, &[]);
    }

    /// Like `launch`, with extra environment variables for the server.
    pub fn launch_env(&mut self, extra: &[&str], env: &[(&str, &str)]) {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.slot.path().join("server.log")).unwrap();
        let mut cmd = self.up_command(self.port);
        cmd.args(extra)
            .envs(env.iter().copied())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        self.child = Some(cmd.spawn().expect("spawn socle up"));
        let deadline = Instant::now() + Duration::from_secs(600);
        let creds_path = self.slot.path().join("credentials.json");
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("socle up exited early ({status}); log:\n{}", self.log_tail());
            }
            if creds_path.exists() {
                if let Ok(Ok(v)) = std::fs::read(&creds_path).map(|b| serde_json::from_slice::<Value>(&b)) {
                    let creds = Creds::from_json(&v);
                    let a = try_raw_call(&creds.endpoint, None, "ReadRegions", b"{}", &[]);
                    if a.is_ok_and(|a| a.status == 200) {
                        self.creds = creds;
                        return;
                    }
                }
            }
            assert!(Instant::now() < deadline, "socle up not ready after 10 minutes; log:\n{}", self.log_tail());
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `socle up` of this cloud, listening on `port`.
    fn up_command(&self, port: u16) -> Command {
        let mut cmd = self.socle();
        // Ends with the test, even a killed one (QEMU, daemonized, is the
        // slot's sweep's).
        socle_testkit::die_with_parent(&mut cmd);
        cmd.arg(if self.server_only { "server" } else { "up" }).arg("--data-dir").arg(self.slot.path());
        if self.separate_agent {
            cmd.arg("--agent").arg(format!("unix:{}", self.agent_socket().display()));
        }
        if !self.server_only {
            cmd.args(["--accel", "tcg"]);
        }
        cmd.args(["--listen", &format!("{}:{port}", self.listen_ip), "--stop-timeout", "20"])
            .args(["--net-prefix", &self.net_prefix(), "--uplink-range", &self.uplink_range()])
            .env("SOCLE_PUBLIC_IP_POOL", self.public_ip_pool())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null());
        cmd
    }

    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.slot.path().join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    /// SIGKILL: no cleanup at all, as in a crash.
    pub fn kill_hard(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// Waits for the server to die by itself (an injected fault) and checks
    /// that it did abort.
    pub fn wait_abort(&mut self, timeout: Duration) {
        use std::os::unix::process::ExitStatusExt;
        let mut c = self.child.take().expect("server running");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                assert_eq!(status.signal(), Some(libc::SIGABRT), "server exited with {status}, not at the fault; log:\n{}", self.log_tail());
                return;
            }
            assert!(Instant::now() < deadline, "the injected fault never fired; log:\n{}", self.log_tail());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Crash test of one step: restarts the server (started without extra
    /// options) set to abort at the fault point `point` (`SOCLE_FAULT`),
    /// runs `act`, waits for the abort, and starts the server again without
    /// the fault.
    pub fn crash_at(&mut self, point: &str, act: impl FnOnce(&Creds)) {
        self.stop_clean();
        self.launch_env(&[], &[("SOCLE_FAULT", point)]);
        act(&self.creds.clone());
        self.wait_abort(Duration::from_secs(120));
        self.launch(&[]);
    }

    /// A network driver with this cloud's prefix and state directory, to
    /// name and remove what the cloud wired.
    pub fn net_driver(&self) -> Result<socle_net::NetDriver, socle_net::NetError> {
        socle_net::NetDriver::new(self.slot.path().join("net"), &self.net_prefix())
    }

    /// SIGTERM and wait: a clean stop.
    pub fn stop_clean(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Some(status) = c.try_wait().unwrap() {
                    assert!(status.success(), "socle up exited with {status} on SIGTERM; log:\n{}", self.log_tail());
                    return;
                }
                assert!(Instant::now() < deadline, "socle up ignored SIGTERM");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    pub fn new_account(&self, name: &str) -> Creds {
        let out = self.socle()
            .args(["account", "create", name, "--data-dir"])
            .arg(self.slot.path())
            .output_within(CLI_TIMEOUT);
        assert!(out.status.success(), "account create failed: {}", String::from_utf8_lossy(&out.stderr));
        Creds::from_json(&serde_json::from_slice(&out.stdout).unwrap())
    }

    pub fn set_quota(&self, name: &str, args: &[&str]) {
        let out = self.socle()
            .args(["account", "quota", name, "--data-dir"])
            .arg(self.slot.path())
            .args(args)
            .output_within(CLI_TIMEOUT);
        assert!(out.status.success(), "account quota failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// PIDs of QEMU processes whose command line mentions this data dir.
    pub fn qemu_pids(&self) -> Vec<i32> {
        qemu_pids_under(self.slot.path())
    }

    pub fn tiny_image(&self) -> String {
        let out = call(&self.creds, "ReadImages", json!({"Filters": {"ImageNames": ["socle-tiny"]}})).ok();
        out["Images"][0]["ImageId"].as_str().expect("socle-tiny is registered").to_string()
    }
}

pub fn qemu_pids_under(dir: &Path) -> Vec<i32> {
    let needle = dir.to_string_lossy().to_string();
    let mut pids = vec![];
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        // Zombies have an empty cmdline and are already dead.
        if cmdline.starts_with("qemu-system") && cmdline.contains(&needle) {
            pids.push(pid);
        }
    }
    pids.sort();
    pids
}

/// Runs a shell command line (bounded: 60 s).
pub fn sh(cmdline: &str) -> std::process::Output {
    socle_testkit::output_within(Command::new("sh").args(["-c", cmdline]), Duration::from_secs(60))
}

pub fn sh_ok(cmdline: &str) {
    let out = sh(cmdline);
    assert!(out.status.success(), "`{cmdline}` failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// A network namespace `ns` joined to the root namespace by a veth:
/// `root_if` with `root_ip`/30 in the root namespace, `eth0` with `ip`/30
/// inside, which routes `route` (`default`, a range) through the root end.
pub fn linked_namespace(ns: &str, root_if: &str, root_ip: std::net::Ipv4Addr, ip: std::net::Ipv4Addr, route: &str) {
    sh_ok(&format!("ip netns add {ns}"));
    sh_ok(&format!(
        "ip link add {root_if} type veth peer name eth0 netns {ns} && \
         ip addr add {root_ip}/30 dev {root_if} && ip link set {root_if} up && \
         ip -n {ns} addr add {ip}/30 dev eth0 && ip -n {ns} link set eth0 up && ip -n {ns} link set lo up && \
         ip -n {ns} route add {route} via {root_ip}"
    ));
}

/// A process of a test, SIGKILLed and reaped when dropped: a test that
/// fails half-way leaves nothing running behind it.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for TestCloud {
    /// The servers and the agent first, so that nothing restarts a guest;
    /// then the slot's sweep (a field, dropped after this) ends the guests
    /// and dnsmasq and removes the networks and the data dir.
    fn drop(&mut self) {
        self.kill_hard();
        self.kill_agent();
    }
}

/// Polls ReadVms until every VM in `ids` is in `state` (panics with the
/// last answer after `timeout`).
pub fn wait_state(creds: &Creds, ids: &[String], state: &str, timeout: Duration) -> Vec<Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let out = call(creds, "ReadVms", json!({"Filters": {"VmIds": ids}})).ok();
        let vms = out["Vms"].as_array().unwrap().clone();
        if vms.len() == ids.len() && vms.iter().all(|v| v["State"] == state) {
            return vms;
        }
        assert!(Instant::now() < deadline, "VMs not {state} after {timeout:?}: {out}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

pub fn console(creds: &Creds, vm: &str) -> String {
    use base64::Engine;
    let out = call(creds, "ReadConsoleOutput", json!({"VmId": vm})).ok();
    let bytes = base64::engine::general_purpose::STANDARD.decode(out["ConsoleOutput"].as_str().unwrap()).unwrap();
    String::from_utf8_lossy(&bytes).to_string()
}

/// Waits until `vm`'s console contains `needle` `times` times.
pub fn wait_console(creds: &Creds, vm: &str, needle: &str, times: usize, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let text = console(creds, vm);
        if text.matches(needle).count() >= times {
            return text;
        }
        assert!(Instant::now() < deadline, "console of {vm} lacks {times}x {needle:?}:\n{text}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

pub fn ids(vms: &Value) -> Vec<String> {
    vms.as_array().unwrap().iter().map(|v| v["VmId"].as_str().unwrap().to_string()).collect()
}

/// Every file under `dir`, recursively (none if it does not exist).
pub fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else if p.is_file() {
            out.push(p);
        }
    }
    out
}

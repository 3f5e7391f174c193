//! A throwaway PostgreSQL cluster for tests: Debian's server binaries,
//! a data directory in the temp dir, a Unix socket only (no TCP port to
//! collide on), fsync off (a commit reaches the OS, not the disk: it
//! survives a server crash, not a power cut). One cluster serves a whole test process
//! ([`PgCluster::shared`]); each test takes a fresh database of it
//! ([`PgCluster::new_database`]). A test that stops and restarts the server
//! has a cluster of its own ([`PgCluster::private`]).
//!
//! The server dies with the test process (parent-death signal), and the
//! data directories of dead processes are removed by the next start.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub struct PgCluster {
    dir: PathBuf,
    bin: PathBuf,
    owner: Option<(u32, u32)>,
    /// The postmaster's pid, 0 while stopped.
    pid: AtomicI32,
    next_db: AtomicUsize,
    /// A TCP port on 127.0.0.1 too (TLS needs TCP: PostgreSQL does not
    /// encrypt Unix sockets).
    port: Option<u16>,
}

/// A server certificate and its key (PEM), for [`PgCluster::private_tls`].
pub struct ServerTls {
    pub cert_pem: String,
    pub key_pem: String,
}

const DIR_PREFIX: &str = "socle-pg-";
static NEXT_CLUSTER: AtomicUsize = AtomicUsize::new(0);

impl PgCluster {
    /// The process's cluster, started on first use. Err says why there is
    /// none (PostgreSQL not installed, failed to start): tests print it.
    pub fn shared() -> Result<&'static PgCluster, String> {
        static CLUSTER: OnceLock<Result<PgCluster, String>> = OnceLock::new();
        CLUSTER.get_or_init(PgCluster::private).as_ref().map_err(Clone::clone)
    }

    /// A cluster of the caller's own, stopped and removed when dropped.
    pub fn private() -> Result<PgCluster, String> {
        Self::private_with(None)
    }

    /// A cluster of the caller's own that also listens on `127.0.0.1:port`
    /// (see [`PgCluster::port`]) and offers TLS there with `tls`.
    pub fn private_tls(tls: ServerTls) -> Result<PgCluster, String> {
        Self::private_with(Some(tls))
    }

    /// The TCP port of a cluster made with [`PgCluster::private_tls`].
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    fn private_with(tls: Option<ServerTls>) -> Result<PgCluster, String> {
        let bin = server_bin_dir().ok_or("PostgreSQL server binaries not found under /usr/lib/postgresql (apt-get install postgresql)")?;
        remove_stale_dirs();
        let n = NEXT_CLUSTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("{DIR_PREFIX}{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let owner = server_user()?;
        if let Some((uid, gid)) = owner {
            chown(&dir, uid, gid)?;
        }
        let mut initdb = as_owner(Command::new(bin.join("initdb")), owner);
        initdb
            .args(["--auth=trust", "--no-sync", "--locale=C", "--encoding=UTF8", "--username=postgres", "-D"])
            .arg(dir.join("data"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let out = output_within(initdb, Duration::from_secs(120)).map_err(|e| format!("initdb: {e}"))?;
        if !out.status.success() {
            return Err(format!("initdb failed: {}", String::from_utf8_lossy(&out.stderr)));
        }
        let mut port = None;
        if let Some(tls) = tls {
            let data = dir.join("data");
            for (name, text, mode) in [("server.crt", &tls.cert_pem, 0o644), ("server.key", &tls.key_pem, 0o600)] {
                let path = data.join(name);
                std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
                std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(mode)).map_err(|e| e.to_string())?;
                if let Some((uid, gid)) = owner {
                    chown(&path, uid, gid)?;
                }
            }
            let conf = data.join("postgresql.conf");
            let mut text = std::fs::read_to_string(&conf).map_err(|e| e.to_string())?;
            text.push_str("\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
            std::fs::write(&conf, text).map_err(|e| e.to_string())?;
            let free = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(|e| e.to_string())?;
            port = Some(free.port());
        }
        let cluster = PgCluster { dir, bin, owner, pid: AtomicI32::new(0), next_db: AtomicUsize::new(0), port };
        cluster.start()?;
        Ok(cluster)
    }

    /// Starts the server (again) and waits until it accepts connections.
    pub fn start(&self) -> Result<(), String> {
        // The server runs as a child of a thread that lives as long as the
        // process, so the parent-death signal fires only when the process
        // ends (it fires when the spawning *thread* exits).
        let (tx, rx) = std::sync::mpsc::channel();
        let (bin, dir, owner) = (self.bin.clone(), self.dir.clone(), self.owner);
        let listen = match self.port {
            Some(port) => vec!["-c".to_string(), "listen_addresses=127.0.0.1".into(), "-c".into(), format!("port={port}")],
            None => vec!["-c".to_string(), "listen_addresses=".into()],
        };
        std::thread::Builder::new()
            .name("postgres-parent".into())
            .spawn(move || {
                let mut cmd = Command::new(bin.join("postgres"));
                cmd.arg("-D")
                    .arg(dir.join("data"))
                    .arg("-k")
                    .arg(&dir)
                    .args(&listen)
                    .args(["-c", "fsync=off"])
                    .args(["-c", "full_page_writes=off", "-c", "max_connections=400"])
                    .stdout(Stdio::null())
                    .stderr(
                        std::fs::OpenOptions::new()
                            .create(true)
                            .append(true)
                            .open(dir.join("server.log"))
                            .map(Stdio::from)
                            .unwrap_or(Stdio::null()),
                    );
                let spawned = as_owner(cmd, owner).die_with_parent().spawn();
                let _ = tx.send(spawned.map(|c| c.id() as i32).map_err(|e| format!("postgres: {e}")));
                loop {
                    std::thread::park();
                }
            })
            .map_err(|e| e.to_string())?;
        let pid = rx.recv().map_err(|e| e.to_string())??;
        self.pid.store(pid, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match postgres::Client::connect(&self.url("postgres"), postgres::NoTls) {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() > deadline => {
                    let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
                    return Err(format!("PostgreSQL did not start: {e}\n{log}"));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// Stops the server at once, as a crash would (immediate shutdown:
    /// clients are cut off, the next start replays the WAL).
    pub fn stop(&self) {
        let pid = self.pid.swap(0, Ordering::SeqCst);
        if pid == 0 {
            return;
        }
        // SAFETY: signalling and reaping our own child.
        unsafe {
            libc::kill(pid, libc::SIGQUIT);
            // Immediate shutdown takes milliseconds; a server that ignores
            // it for 30 s is killed.
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut status = 0;
            while libc::waitpid(pid, &mut status, libc::WNOHANG) == 0 {
                if Instant::now() >= deadline {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, &mut status, 0);
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    /// The URL of database `name` of this cluster.
    pub fn url(&self, name: &str) -> String {
        match self.port {
            Some(port) => format!("postgresql:///{name}?host={}&port={port}&user=postgres", self.dir.display()),
            None => format!("postgresql:///{name}?host={}&user=postgres", self.dir.display()),
        }
    }

    /// Creates an empty database and returns its URL.
    pub fn new_database(&self) -> Result<String, String> {
        let name = format!("t{}", self.next_db.fetch_add(1, Ordering::Relaxed));
        let mut admin = postgres::Client::connect(&self.url("postgres"), postgres::NoTls).map_err(|e| e.to_string())?;
        admin.batch_execute(&format!("CREATE DATABASE {name}")).map_err(|e| e.to_string())?;
        Ok(self.url(&name))
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn server_bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin): &(u32, PathBuf)| bin.join("postgres").exists())
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// PostgreSQL refuses to run as root: as root, the server runs as the
/// `postgres` user the Debian package creates.
fn server_user() -> Result<Option<(u32, u32)>, String> {
    // SAFETY: plain libc calls; getpwnam's result is read at once.
    unsafe {
        if libc::geteuid() != 0 {
            return Ok(None);
        }
        let pw = libc::getpwnam(c"postgres".as_ptr());
        if pw.is_null() {
            return Err("running as root and there is no postgres user to run PostgreSQL as".into());
        }
        Ok(Some(((*pw).pw_uid, (*pw).pw_gid)))
    }
}

fn chown(path: &Path, uid: u32, gid: u32) -> Result<(), String> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(|e| format!("chown {}: {e}", path.display()))
}

trait DieWithParent {
    fn die_with_parent(&mut self) -> &mut Self;
}

impl DieWithParent for Command {
    /// SIGQUIT (PostgreSQL's immediate shutdown) when the parent thread dies.
    fn die_with_parent(&mut self) -> &mut Self {
        // SAFETY: prctl is async-signal-safe. std runs pre_exec hooks after
        // its setuid, which would otherwise clear the setting.
        unsafe {
            self.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            })
        }
    }
}

/// `cmd.output()`, killed past `limit` (initdb takes seconds).
fn output_within(mut cmd: Command, limit: Duration) -> Result<std::process::Output, String> {
    let mut child = cmd.spawn().map_err(|e| e.to_string())?;
    let deadline = Instant::now() + limit;
    while child.try_wait().map_err(|e| e.to_string())?.is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("still running after {} s: killed", limit.as_secs()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().map_err(|e| e.to_string())
}

/// Runs `cmd` as `owner` (std drops root's supplementary groups itself).
fn as_owner(mut cmd: Command, owner: Option<(u32, u32)>) -> Command {
    if let Some((uid, gid)) = owner {
        cmd.uid(uid).gid(gid);
    }
    cmd
}

/// Data directories of test processes that are gone.
fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return };
    for e in entries.filter_map(|e| e.ok()) {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(DIR_PREFIX))
            .and_then(|p| p.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

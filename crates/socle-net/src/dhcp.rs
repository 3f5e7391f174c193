//! DHCP for a Net: one dnsmasq per Net, inside its namespace, static leases
//! only (a MAC gets its NIC's primary IP, nobody else gets anything).
//!
//! The configuration, leases included, is one file whose name carries a hash
//! of its content (`dnsmasq-<hash>.conf`). dnsmasq reads it as root before it
//! drops privileges, so the state directory needs no permissions for the
//! unprivileged user, and the command line of a running dnsmasq says which
//! configuration it serves: after a crash between writing a new file and
//! restarting, the next apply still sees the mismatch and restarts. A change
//! restarts dnsmasq (a few milliseconds; guests retry DHCP anyway).

use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::cmd;
use crate::error::{NetError, Result};
use crate::naming;
use crate::spec::NetSpec;

/// How long leases last; renewals are cheap and keep a guest that was moved
/// or changed from holding stale options for long.
const LEASE_TIME: &str = "1h";

const CONF_PREFIX: &str = "dnsmasq-";
const PID_FILE: &str = "dnsmasq.pid";

/// The dnsmasq configuration of a Net, `None` when it has no subnet (then
/// no dnsmasq runs).
pub fn config(spec: &NetSpec, dir: &Path) -> Option<String> {
    if spec.subnets.is_empty() {
        return None;
    }
    let mut c = String::new();
    let _ = writeln!(c, "# socle-net: DHCP of Net {} (generated)", spec.net_id);
    // DHCP only: no DNS server (port 0 also keeps dnsmasq from offering
    // itself as DNS server), no host files, no lease database.
    for line in [
        "port=0",
        "no-resolv",
        "no-hosts",
        "no-poll",
        "leasefile-ro",
        "dhcp-authoritative",
    ] {
        let _ = writeln!(c, "{line}");
    }
    let _ = writeln!(c, "pid-file={}", dir.join(PID_FILE).display());
    let mut subnets: Vec<_> = spec.subnets.iter().collect();
    subnets.sort_by(|a, b| a.subnet_id.cmp(&b.subnet_id));
    for s in &subnets {
        let br = naming::bridge(&s.subnet_id);
        let _ = writeln!(c, "# subnet {} ({})", s.subnet_id, s.ip_range);
        let _ = writeln!(c, "interface={br}");
        let _ = writeln!(
            c,
            "dhcp-range=set:{br},{},static,{},{LEASE_TIME}",
            s.ip_range.network(),
            s.ip_range.netmask()
        );
        let _ = writeln!(c, "dhcp-option=tag:{br},option:router,{}", s.gateway());
    }
    let mut ports: Vec<_> = spec.ports.iter().collect();
    ports.sort_by(|a, b| a.nic_id.cmp(&b.nic_id));
    for p in ports {
        if let Some(ip) = p.primary_ip() {
            let _ = writeln!(c, "dhcp-host={},{ip}", p.mac);
        }
    }
    Some(c)
}

/// The versioned file name of a configuration.
pub fn conf_file_name(conf: &str) -> String {
    format!("{CONF_PREFIX}{:08x}.conf", naming::hash32(conf))
}

/// A running dnsmasq of one Net.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Running {
    pub pid: i32,
    /// The configuration file it was started with.
    pub conf: PathBuf,
}

/// Every dnsmasq serving a configuration under `dir`, found through /proc
/// (not the pid file, which a crash or a kill -9 can leave stale). The
/// `--conf-file=` argument ties a process to its Net.
pub fn running(dir: &Path) -> Vec<Running> {
    let needle = format!("--conf-file={}/{CONF_PREFIX}", dir.display());
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        // Zombies have an empty cmdline, so they never match.
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        for arg in cmdline.split(|b| *b == 0) {
            let arg = String::from_utf8_lossy(arg);
            if arg.starts_with(&needle) {
                found.push(Running {
                    pid,
                    conf: PathBuf::from(&arg["--conf-file=".len()..]),
                });
            }
        }
    }
    found
}

fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the field after the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X']))
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// SIGTERM, then SIGKILL after a grace period; returns when the process is
/// gone (so its DHCP socket is free for a successor).
pub fn stop(pid: i32) {
    // SAFETY: plain kill(2).
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(2);
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    if alive(pid) {
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let deadline = Instant::now() + Duration::from_secs(2);
        while alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Makes the Net's dnsmasq run `conf` (or not run, for `None`): writes the
/// file, stops processes with another configuration, starts one if none is
/// left, removes old configuration files.
pub fn ensure(net_id: &str, ns: &str, dir: &Path, conf: Option<&str>) -> Result<()> {
    let wanted = conf.map(|c| dir.join(conf_file_name(c)));
    if let (Some(path), Some(text)) = (&wanted, conf) {
        if std::fs::read_to_string(path).ok().as_deref() != Some(text) {
            crate::driver::write_atomic(path, text)?;
        }
    }
    let mut ok = false;
    for r in running(dir) {
        if Some(&r.conf) == wanted.as_ref() && !ok {
            ok = true;
        } else {
            tracing::info!(net_id, pid = r.pid, conf = %r.conf.display(), "stopping dnsmasq");
            stop(r.pid);
        }
    }
    if let (Some(path), false) = (&wanted, ok) {
        tracing::info!(net_id, conf = %path.display(), "starting dnsmasq");
        let (mut c, _ns_file) = cmd::command_in_ns(ns, "dnsmasq")?;
        c.arg(format!("--conf-file={}", path.display()));
        // dnsmasq forks into the background and exits; its exit status and
        // stderr report configuration errors.
        cmd::run(&mut c).map_err(|e| NetError::Dhcp {
            net_id: net_id.to_string(),
            detail: e.to_string(),
        })?;
    }
    // Old configurations (and the pid file when nothing runs).
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            let stale_conf = name.starts_with(CONF_PREFIX)
                && name.ends_with(".conf")
                && Some(e.path()) != wanted;
            let stale_pid = name == PID_FILE && wanted.is_none();
            if stale_conf || stale_pid {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::tests::sample;

    #[test]
    fn config_has_static_leases_and_routers() {
        let s = sample();
        let c = config(&s, Path::new("/state/vpc-1")).unwrap();
        let br_a = naming::bridge("subnet-a");
        assert!(c.contains("port=0\n"));
        assert!(c.contains("leasefile-ro\n"));
        assert!(c.contains("pid-file=/state/vpc-1/dnsmasq.pid\n"));
        assert!(c.contains(&format!("interface={br_a}\n")));
        assert!(c.contains(&format!(
            "dhcp-range=set:{br_a},10.0.1.0,static,255.255.255.0,1h\n"
        )));
        assert!(c.contains(&format!("dhcp-option=tag:{br_a},option:router,10.0.1.1\n")));
        // Primary IP only.
        assert!(c.contains("dhcp-host=02:00:00:00:00:01,10.0.1.10\n"));
        assert!(!c.contains("10.0.1.11"));
        assert!(c.contains("dhcp-host=02:00:00:00:00:02,10.0.2.10\n"));
    }

    #[test]
    fn config_is_deterministic_and_versioned() {
        let mut s = sample();
        let a = config(&s, Path::new("/d")).unwrap();
        s.ports.reverse();
        s.subnets.reverse();
        let b = config(&s, Path::new("/d")).unwrap();
        assert_eq!(a, b, "order of the spec lists does not matter");
        assert_eq!(conf_file_name(&a), conf_file_name(&b));
        s.ports.pop();
        let c = config(&s, Path::new("/d")).unwrap();
        assert_ne!(conf_file_name(&a), conf_file_name(&c));
        s.subnets.clear();
        assert_eq!(config(&s, Path::new("/d")), None);
    }
}

//! Running `ip`, `nft` and `dnsmasq` with useful errors, and entering a Net's
//! network namespace (for a child process, or for one short-lived thread).
//!
//! The driver shells out on purpose: iproute2, nftables and dnsmasq are the
//! real components an operator debugs with, and their text interfaces are
//! stable.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::error::{NetError, Result};

/// Where iproute2 keeps named namespaces (bind mounts of nsfs files).
pub const NETNS_DIR: &str = "/run/netns";

pub fn ns_path(ns: &str) -> PathBuf {
    PathBuf::from(NETNS_DIR).join(ns)
}

/// Human-readable rendering of a command line, for errors and logs.
pub fn render(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        let a = a.to_string_lossy();
        if a.contains(' ') || a.is_empty() {
            s.push_str(&format!(" '{a}'"));
        } else {
            s.push(' ');
            s.push_str(&a);
        }
    }
    s
}

fn install_hint(program: &str) -> &'static str {
    match program {
        "ip" => " (install the Debian package iproute2; see scripts/install-deps.sh)",
        "nft" => " (install the Debian package nftables; see scripts/install-deps.sh)",
        "dnsmasq" => " (install the Debian package dnsmasq-base; see scripts/install-deps.sh)",
        _ => "",
    }
}

/// The last lines of a program's output, enough to act on.
pub fn tail_text(bytes: &[u8], lines: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let all: Vec<&str> = text.trim_end().lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Runs `cmd` to completion with `input` on stdin (or nothing), output
/// captured. A non-zero exit becomes [`NetError::Command`].
pub fn run_input(cmd: &mut Command, input: Option<&str>) -> Result<Output> {
    let rendered = render(cmd);
    let program = cmd.get_program().to_string_lossy().into_owned();
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    tracing::debug!(command = %rendered, "run");
    let mut child = cmd.spawn().map_err(|source| NetError::Spawn {
        hint: install_hint(&program),
        program: program.clone(),
        source,
    })?;
    if let Some(text) = input {
        // Small inputs (rulesets of a few KiB), so writing before reading
        // cannot deadlock on a full stdout pipe in practice; take() closes
        // stdin afterwards so the program sees EOF.
        let mut stdin = child.stdin.take().expect("stdin piped");
        stdin
            .write_all(text.as_bytes())
            .map_err(|source| NetError::Spawn {
                hint: "",
                program: program.clone(),
                source,
            })?;
    }
    let out = wait_bounded(child, COMMAND_TIMEOUT).map_err(|e| match e {
        Waited::Io(source) => NetError::Spawn { program, hint: "", source },
        Waited::TimedOut => NetError::Command {
            command: rendered.clone(),
            status: format!("still running after {} s: killed", COMMAND_TIMEOUT.as_secs()),
            stderr: String::new(),
        },
    })?;
    if !out.status.success() {
        let mut stderr = tail_text(&out.stderr, 15);
        if stderr.is_empty() {
            stderr = tail_text(&out.stdout, 15);
        }
        return Err(NetError::Command {
            command: rendered,
            status: out.status.to_string(),
            stderr,
        });
    }
    Ok(out)
}

/// No `ip`, `nft` or `dnsmasq` call takes this long unless the kernel or the
/// tool is stuck: the call is then killed and fails, instead of holding the
/// driver's lock (and every caller behind it) for ever.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

enum Waited {
    Io(std::io::Error),
    TimedOut,
}

/// `wait_with_output` with a deadline: the output is read on two threads
/// (a full pipe must not block the child), the child polled until it exits
/// or the deadline passes, and killed then.
fn wait_bounded(mut child: Child, limit: Duration) -> std::result::Result<Output, Waited> {
    fn reader(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    }
    let stdout = reader(child.stdout.take());
    let stderr = reader(child.stderr.take());
    let deadline = Instant::now() + limit;
    let mut pause = Duration::from_millis(1);
    let status = loop {
        match child.try_wait().map_err(Waited::Io)? {
            Some(status) => break status,
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Waited::TimedOut);
            }
            // Most calls end within milliseconds: poll fast, then slower.
            None => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
        }
    };
    Ok(Output { status, stdout: stdout.join().unwrap_or_default(), stderr: stderr.join().unwrap_or_default() })
}

pub fn run(cmd: &mut Command) -> Result<Output> {
    run_input(cmd, None)
}

/// `ip ARGS` in the namespace `ns` (`None`: the driver's own namespace).
pub fn ip(ns: Option<&str>, args: &[&str]) -> Result<Output> {
    let mut c = Command::new("ip");
    if let Some(ns) = ns {
        c.args(["-n", ns]);
    }
    c.args(args);
    run(&mut c)
}

/// Like [`ip`] but returns parsed JSON (`ip -j`).
pub fn ip_json<T: serde::de::DeserializeOwned>(ns: Option<&str>, args: &[&str]) -> Result<T> {
    let mut c = Command::new("ip");
    if let Some(ns) = ns {
        c.args(["-n", ns]);
    }
    c.arg("-j").args(args);
    let rendered = render(&c);
    let out = run(&mut c)?;
    // Some iproute2 versions print nothing instead of `[]` for an empty list.
    let text = String::from_utf8_lossy(&out.stdout);
    let text = if text.trim().is_empty() {
        "[]"
    } else {
        text.trim()
    };
    serde_json::from_str(text).map_err(|e| NetError::Parse {
        command: rendered,
        detail: e.to_string(),
    })
}

/// Several `ip` commands in one process (`ip -batch -`), stopping at the
/// first failure. Saves a fork per command on applies that change a lot.
pub fn ip_batch(ns: Option<&str>, lines: &[String]) -> Result<()> {
    if lines.is_empty() {
        return Ok(());
    }
    let mut c = Command::new("ip");
    if let Some(ns) = ns {
        c.args(["-n", ns]);
    }
    c.args(["-batch", "-"]);
    let mut input = lines.join("\n");
    input.push('\n');
    run_input(&mut c, Some(&input)).map(|_| ())
}

/// Opens a named namespace; the file is what `setns` takes.
pub fn open_ns(ns: &str) -> Result<File> {
    let path = ns_path(ns);
    File::open(&path).map_err(|source| NetError::Io {
        what: "cannot open network namespace".into(),
        path,
        source,
    })
}

fn setns(file: &File) -> std::io::Result<()> {
    // SAFETY: plain syscall on a valid fd.
    let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A command that will run inside `ns`. Cheaper than `ip netns exec` (no
/// mount namespace, no /sys remount), which the programs we run don't need.
pub fn command_in_ns(ns: &str, program: &str) -> Result<(Command, File)> {
    let file = open_ns(ns)?;
    let fd = file.as_raw_fd();
    let mut c = Command::new(program);
    // SAFETY: setns is async-signal-safe; the fd stays open because the
    // caller keeps the returned File until the child has been spawned.
    unsafe {
        c.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok((c, file))
}

/// Runs `f` on a fresh thread that has entered `ns`. The thread then ends,
/// so no thread of the caller's pool is ever left in a tenant namespace;
/// sockets and files created by `f` stay tied to `ns` wherever they are used.
pub fn in_netns<T, F>(ns: &str, what: &str, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> std::io::Result<T> + Send + 'static,
{
    let file = open_ns(ns)?;
    let ns_name = ns.to_string();
    let handle = std::thread::Builder::new()
        .name("socle-net-setns".into())
        .spawn(move || -> Result<T> {
            setns(&file).map_err(|source| NetError::Setns {
                ns: ns_name.clone(),
                source,
            })?;
            f().map_err(|source| NetError::InNamespace {
                ns: ns_name,
                what: String::new(),
                source,
            })
        })
        .map_err(|source| NetError::Spawn {
            program: "thread".into(),
            hint: "",
            source,
        })?;
    match handle.join() {
        Ok(r) => r.map_err(|e| match e {
            NetError::InNamespace { ns, source, .. } => NetError::InNamespace {
                ns,
                what: what.to_string(),
                source,
            },
            other => other,
        }),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Writes sysctls (`net/ipv4/ip_forward` style paths under /proc/sys) inside
/// `ns`, all on one thread. /proc/sys/net is resolved against the calling
/// thread's namespace, which is why this runs through [`in_netns`].
pub fn sysctls_in_ns(ns: &str, settings: &[(&str, &str)]) -> Result<()> {
    let owned: Vec<(String, String)> = settings
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    in_netns(ns, "setting sysctls", move || {
        for (k, v) in owned {
            write_sysctl(&k, &v)?;
        }
        Ok(())
    })
}

/// Writes one sysctl in the calling thread's namespace, skipping the write
/// when the value is already right (writing `ip_forward` resets per-device
/// settings, and unchanged values should cost nothing).
pub fn write_sysctl(key: &str, value: &str) -> std::io::Result<()> {
    let path = PathBuf::from("/proc/sys").join(key);
    match std::fs::read_to_string(&path) {
        Ok(cur) if cur.trim() == value => return Ok(()),
        _ => {}
    }
    std::fs::write(&path, value)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_quotes_spaces() {
        let mut c = Command::new("ip");
        c.args(["link", "set", "a b", ""]);
        assert_eq!(render(&c), "ip link set 'a b' ''");
    }

    #[test]
    fn tail() {
        assert_eq!(tail_text(b"a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail_text(b"", 2), "");
    }
}

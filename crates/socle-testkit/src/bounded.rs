//! External commands with a deadline: a tool that hangs fails its test by
//! name, with what it printed, instead of hanging the suite.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs `cmd` to its end, its output captured; panics, saying what ran and
/// what it printed, when it is still running after `limit` (it is then
/// killed).
pub fn output_within(cmd: &mut Command, limit: Duration) -> Output {
    try_output_within(cmd, limit).unwrap_or_else(|e| panic!("{e}"))
}

/// [`output_within`], the failure as a message.
pub fn try_output_within(cmd: &mut Command, limit: Duration) -> Result<Output, String> {
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    // Readers on their own threads: a child that fills a pipe must not
    // block on it while we wait for it to exit.
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out.read_to_end(&mut buf);
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err.read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() >= deadline => break None,
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("waiting for {shown}: {e}")),
        }
    };
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        // The readers end once the child (and whatever inherited its pipes)
        // is gone; do not wait for grandchildren that keep them open.
        let out = join_within(out_reader, Duration::from_secs(2));
        let err = join_within(err_reader, Duration::from_secs(2));
        return Err(format!(
            "{shown} still running after {limit:?}: killed\n--- stdout ---\n{}\n--- stderr ---\n{}",
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(&err)
        ));
    };
    let stdout = join_within(out_reader, Duration::from_secs(10));
    let stderr = join_within(err_reader, Duration::from_secs(10));
    Ok(Output { status, stdout, stderr })
}

/// [`output_within`] and [`try_output_within`] as methods of a command.
pub trait CommandWithin {
    /// `output()`, killed and failing the test past `limit`.
    fn output_within(&mut self, limit: Duration) -> Output;
    /// `output()`, killed past `limit`, the failure as a message.
    fn try_output_within(&mut self, limit: Duration) -> Result<Output, String>;
}

impl CommandWithin for Command {
    fn output_within(&mut self, limit: Duration) -> Output {
        output_within(self, limit)
    }
    fn try_output_within(&mut self, limit: Duration) -> Result<Output, String> {
        try_output_within(self, limit)
    }
}

fn join_within(reader: std::thread::JoinHandle<Vec<u8>>, limit: Duration) -> Vec<u8> {
    let deadline = Instant::now() + limit;
    while !reader.is_finished() {
        if Instant::now() >= deadline {
            return b"(output still held open by a process the command left behind)".to_vec();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    reader.join().unwrap_or_default()
}

/// The child gets SIGKILL when the thread that spawns it ends (the kernel's
/// parent-death signal follows the spawning *thread*): spawn it from the
/// test's own thread, or from a thread that lives as long as it must.
pub fn die_with_parent(cmd: &mut Command) -> &mut Command {
    // SAFETY: prctl is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_past_its_deadline_is_killed_and_named() {
        let started = Instant::now();
        let e = try_output_within(Command::new("sleep").arg("30"), Duration::from_millis(300)).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
        assert!(e.contains("\"sleep\"") && e.contains("still running"), "{e}");
    }

    #[test]
    fn a_quick_command_gives_its_output() {
        let out = output_within(Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]), Duration::from_secs(10));
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(out.stderr, b"err\n");
    }
}

//! Minimal QMP (QEMU Machine Protocol) client over a unix socket.
//!
//! The protocol is line-oriented JSON:
//!   1. on connect QEMU sends a greeting `{"QMP": {...}}`;
//!   2. the client must send `{"execute": "qmp_capabilities"}` to leave
//!      capabilities-negotiation mode, QEMU answers `{"return": {}}`;
//!   3. then each `{"execute": CMD, "arguments": {...}, "id": N}` gets exactly one
//!      `{"return": ...}` or `{"error": {"class", "desc"}}` carrying the same id.
//!
//! QEMU may interleave asynchronous events (`{"event": ...}`, e.g. RESET,
//! POWERDOWN, DEVICE_DELETED) at any time; they are kept aside for
//! [`Qmp::wait_event`]. A QEMU monitor serves one client at a time, so callers
//! keep connections short (connect, a few commands, drop): an event that fires
//! while nobody is connected is lost, so waiters also poll the state it reports.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

/// Upper bound for one connect + negotiate, and for one command round trip.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest path `sockaddr_un.sun_path` can hold (108 bytes including the NUL).
const SUN_PATH_MAX: usize = 107;

pub(crate) struct Qmp {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    next_id: u64,
    /// Events received so far and not yet consumed by `wait_event`.
    events: Vec<Value>,
    /// Bytes of a line not yet complete.
    partial: Vec<u8>,
}

impl Qmp {
    /// Connects to `socket` and completes capabilities negotiation.
    ///
    /// Socket paths longer than the kernel's 107-byte limit are reached through
    /// `/proc/self/fd/<dirfd>/<name>`, which is always short.
    pub(crate) async fn connect(socket: &Path) -> Result<Qmp, String> {
        let stream = tokio::time::timeout(IO_TIMEOUT, connect_unix(socket))
            .await
            .map_err(|_| "timed out connecting".to_string())?
            .map_err(|e| format!("cannot connect: {e}"))?;
        let (r, w) = stream.into_split();
        let mut qmp = Qmp {
            reader: BufReader::new(r),
            writer: w,
            next_id: 1,
            events: Vec::new(),
            partial: Vec::new(),
        };
        let greeting = tokio::time::timeout(IO_TIMEOUT, qmp.read_message())
            .await
            .map_err(|_| "timed out waiting for the QMP greeting".to_string())??;
        if greeting.get("QMP").is_none() {
            return Err(format!("unexpected greeting: {greeting}"));
        }
        qmp.execute("qmp_capabilities", None).await?;
        Ok(qmp)
    }

    /// Runs one command and returns its `return` value, or the QMP error text.
    pub(crate) async fn execute(
        &mut self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<Value, String> {
        tokio::time::timeout(IO_TIMEOUT, self.execute_inner(command, arguments))
            .await
            .map_err(|_| format!("timed out waiting for the reply to {command}"))?
    }

    async fn execute_inner(
        &mut self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<Value, String> {
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = json!({ "execute": command, "id": id });
        if let Some(args) = arguments {
            msg["arguments"] = args;
        }
        let mut line = msg.to_string();
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .await
            .map_err(|e| format!("cannot send {command}: {e}"))?;
        loop {
            let reply = self.read_message().await?;
            if reply.get("event").is_some() {
                self.keep_event(reply);
                continue;
            }
            if reply.get("id").and_then(Value::as_u64) != Some(id) {
                continue; // reply to an earlier, abandoned command
            }
            if let Some(ret) = reply.get("return") {
                return Ok(ret.clone());
            }
            if let Some(err) = reply.get("error") {
                let class = err.get("class").and_then(Value::as_str).unwrap_or("?");
                let desc = err.get("desc").and_then(Value::as_str).unwrap_or("?");
                return Err(format!("{command}: {class}: {desc}"));
            }
            return Err(format!("unexpected reply to {command}: {reply}"));
        }
    }

    fn keep_event(&mut self, event: Value) {
        if self.events.len() >= 256 {
            self.events.remove(0);
        }
        self.events.push(event);
    }

    /// Runs one command; the QMP error text is returned as is (callers map it).
    /// Same as `execute`, named for call sites that pass arguments.
    pub(crate) async fn call(&mut self, command: &str, arguments: Value) -> Result<Value, String> {
        self.execute(command, Some(arguments)).await
    }

    /// Waits up to `timeout` for an event named `name` whose `data` satisfies
    /// `pred`, consuming it (events received earlier on this connection count).
    /// Returns None on timeout.
    pub(crate) async fn wait_event(
        &mut self,
        name: &str,
        pred: impl Fn(&Value) -> bool,
        timeout: Duration,
    ) -> Result<Option<Value>, String> {
        let matches = |e: &Value| {
            e.get("event").and_then(Value::as_str) == Some(name)
                && pred(e.get("data").unwrap_or(&Value::Null))
        };
        if let Some(i) = self.events.iter().position(matches) {
            return Ok(Some(self.events.remove(i)));
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let msg = match tokio::time::timeout_at(deadline, self.read_message()).await {
                Err(_) => return Ok(None),
                Ok(m) => m?,
            };
            if msg.get("event").is_none() {
                continue; // a late reply to an abandoned command
            }
            if matches(&msg) {
                return Ok(Some(msg));
            }
            self.keep_event(msg);
        }
    }

    /// Reads one JSON message (QEMU sends one per line). Cancel-safe: bytes of
    /// a partly received line stay in `self.partial` for the next call.
    async fn read_message(&mut self) -> Result<Value, String> {
        loop {
            let n = self
                .reader
                .read_until(b'\n', &mut self.partial)
                .await
                .map_err(|e| format!("read error: {e}"))?;
            if n == 0 && !self.partial.ends_with(b"\n") {
                return Err("QEMU closed the QMP connection".into());
            }
            if !self.partial.ends_with(b"\n") {
                continue;
            }
            let line = std::mem::take(&mut self.partial);
            let text = String::from_utf8_lossy(&line);
            if !text.trim().is_empty() {
                return serde_json::from_str(text.trim())
                    .map_err(|e| format!("bad JSON from QEMU ({e}): {}", text.trim()));
            }
        }
    }

    /// `query-status` → the run state string ("running", "paused", "shutdown", ...).
    pub(crate) async fn query_status(&mut self) -> Result<String, String> {
        let v = self.execute("query-status", None).await?;
        v.get("status")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| format!("query-status without status: {v}"))
    }
}

/// `UnixStream::connect` that also works for paths over the sun_path limit.
async fn connect_unix(path: &Path) -> std::io::Result<UnixStream> {
    if path.as_os_str().len() <= SUN_PATH_MAX {
        return UnixStream::connect(path).await;
    }
    // Open the directory and name the socket relative to the fd through /proc.
    let (dir, name) = match (path.parent(), path.file_name()) {
        (Some(d), Some(n)) => (d, n),
        _ => return UnixStream::connect(path).await,
    };
    let dir_file = std::fs::File::open(dir)?;
    use std::os::fd::AsRawFd;
    let short: PathBuf =
        PathBuf::from(format!("/proc/self/fd/{}", dir_file.as_raw_fd())).join(name);
    let res = UnixStream::connect(&short).await;
    drop(dir_file); // connect() has resolved the path; the fd can go
    res
}

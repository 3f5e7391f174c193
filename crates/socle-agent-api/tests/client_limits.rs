//! A stuck or hostile agent cannot hold or exhaust the control plane: every
//! call has a deadline, and every answer a size cap (issue 21, finding 3).
//! The "agents" here are bare sockets that misbehave on purpose.

use std::time::{Duration, Instant};

use socle_agent_api::{answer_cap, Host, HostClient, HostErrorKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;

/// Reads one request's head (the client sends its whole request at once).
async fn read_request(stream: &mut tokio::net::UnixStream) {
    let mut buf = vec![0u8; 64 * 1024];
    let _ = stream.read(&mut buf).await;
}

#[tokio::test]
async fn an_agent_that_never_answers_fails_the_call_at_its_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("silent.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    tokio::spawn(async move {
        let mut held = vec![];
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            read_request(&mut stream).await;
            held.push(stream); // kept open, never answered
        }
    });
    let client = HostClient::unix(&socket).with_max_deadline(Duration::from_secs(1));
    let t0 = Instant::now();
    let err = client.host_info().await.expect_err("a silent agent cannot answer");
    assert_eq!(err.kind, HostErrorKind::Unreachable, "{err}");
    assert!(err.message.contains("no answer within 1 s"), "{err}");
    assert!(t0.elapsed() < Duration::from_secs(3), "ended after {:?}", t0.elapsed());
}

/// VmHWM: the peak resident memory of this process, in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn an_endless_answer_is_refused_at_its_cap_and_memory_stays_flat() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("flood.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    // Answers 200 with a chunked body of up to 1 GiB.
    let sent = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        read_request(&mut stream).await;
        stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n").await.unwrap();
        let chunk = format!("{:x}\r\n{}\r\n", 1 << 20, "9".repeat(1 << 20));
        let mut sent = 0u64;
        while sent < 1 << 30 {
            if stream.write_all(chunk.as_bytes()).await.is_err() {
                break;
            }
            sent += 1 << 20;
        }
        sent
    });
    let before = peak_rss_kib();
    let t0 = Instant::now();
    let err = HostClient::unix(&socket).list_vms().await.expect_err("a 1 GiB answer must be refused");
    assert_eq!(err.kind, HostErrorKind::Unreachable, "{err}");
    assert!(err.message.contains(&format!("larger than {} bytes", answer_cap("list_vms"))), "{err}");
    assert!(t0.elapsed() < Duration::from_secs(30), "took {:?}", t0.elapsed());
    let sent = tokio::time::timeout(Duration::from_secs(10), sent).await.expect("the flood stops once refused").unwrap();
    assert!(sent < 1 << 30, "the client read the whole GiB");
    let grew_mib = (peak_rss_kib() - before) / 1024;
    assert!(grew_mib < 100, "memory grew by {grew_mib} MiB for a refused answer");
}

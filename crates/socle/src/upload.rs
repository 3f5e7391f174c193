//! One HTTP/1.1 POST with `Expect: 100-continue` (RFC 9110 §10.1.1), for
//! uploads: the body is sent only once the server said it wants it, so an
//! early refusal is read as an answer. ureq 2 cannot do this.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// How long to wait for `100 Continue` before sending the body anyway (a
/// server that ignores `Expect` must still get it).
const CONTINUE_WAIT: Duration = Duration::from_secs(5);
/// How long the server may take to answer once the body is sent.
const ANSWER_WAIT: Duration = Duration::from_secs(300);

/// Sends `body` (`length` bytes) to `http://host/path` with `headers`;
/// returns the final status and body.
pub fn post_with_continue(
    host: &str,
    path: &str,
    headers: &[(String, String)],
    mut body: impl Read,
    length: u64,
) -> std::io::Result<(u16, Vec<u8>)> {
    let addr = if host.contains(':') { host.to_string() } else { format!("{host}:80") };
    let mut stream = TcpStream::connect(&addr)?;
    let mut head = format!("POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {length}\r\nExpect: 100-continue\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    let mut reader = BufReader::new(stream.try_clone()?);
    stream.set_read_timeout(Some(CONTINUE_WAIT))?;
    let first = match read_status(&mut reader) {
        Ok(s) => Some(s),
        Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => None,
        Err(e) => return Err(e),
    };
    stream.set_read_timeout(Some(ANSWER_WAIT))?;
    match first {
        // Refused before the body: this is the answer.
        Some(status) if status != 100 => return read_rest(&mut reader, status),
        Some(_) => {
            skip_headers(&mut reader)?;
        }
        None => {}
    }
    let sent = std::io::copy(&mut body.by_ref().take(length), &mut stream)?;
    if sent != length {
        return Err(std::io::Error::other(format!("the source ended after {sent} of {length} bytes")));
    }
    stream.flush()?;
    let status = read_status(&mut reader)?;
    read_rest(&mut reader, status)
}

fn read_status(reader: &mut impl BufRead) -> std::io::Result<u16> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the server closed the connection"));
    }
    line.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP status line: {line:?}")))
}

/// Reads headers up to the blank line; returns Content-Length if given.
fn skip_headers(reader: &mut impl BufRead) -> std::io::Result<Option<usize>> {
    let mut length = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            return Ok(length);
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.trim().eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().ok();
            }
        }
    }
}

fn read_rest(reader: &mut impl BufRead, status: u16) -> std::io::Result<(u16, Vec<u8>)> {
    let length = skip_headers(reader)?;
    let mut body = vec![];
    match length {
        Some(n) => {
            body.resize(n, 0);
            reader.read_exact(&mut body)?;
        }
        None => {
            reader.read_to_end(&mut body)?;
        }
    }
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that refuses at once never gets the body; one that accepts
    /// gets all of it after its 100 Continue.
    #[test]
    fn waits_for_continue_and_reads_early_refusals() {
        for accept in [false, true] {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let host = listener.local_addr().unwrap().to_string();
            let server = std::thread::spawn(move || {
                let (stream, _) = listener.accept().unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut stream = stream;
                read_status_line_and_headers(&mut reader);
                if !accept {
                    stream.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 7\r\n\r\nrefused").unwrap();
                    return 0;
                }
                stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").unwrap();
                let mut got = vec![0u8; 5];
                reader.read_exact(&mut got).unwrap();
                assert_eq!(got, b"hello");
                stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}").unwrap();
                got.len()
            });
            let (status, body) = post_with_continue(&host, "/x", &[], &b"hello"[..], 5).unwrap();
            let received = server.join().unwrap();
            if accept {
                assert_eq!((status, body.as_slice(), received), (200, &b"{}"[..], 5));
            } else {
                assert_eq!((status, body.as_slice(), received), (400, &b"refused"[..], 0));
            }
        }
    }

    fn read_status_line_and_headers(reader: &mut impl BufRead) {
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" {
                return;
            }
        }
    }
}

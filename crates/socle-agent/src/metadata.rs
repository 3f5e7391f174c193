//! The metadata service at `http://169.254.169.254/`, EC2 layout (what
//! cloud-init's EC2 datasource and Outscale guests read).
//!
//! One listener per wired network, bound inside its namespace, answering
//! from the documents the control plane pushed with the network (see
//! [`GuestMetadata`]) and from the VM's own user data on this host. The
//! caller is identified by the source address of the connection:
//! anti-spoofing makes it one of the guest's own private IPs within that
//! network, so a guest only ever sees its own data. Plain HTTP/1.0-style:
//! one GET per connection, answered and closed.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use socle_agent_api::GuestMetadata;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::metadata_interfaces;

/// A request line and headers bigger than this are refused.
const MAX_REQUEST: usize = 8 * 1024;
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The documents of one network's guests, replaced at each apply.
pub(crate) type Guests = Arc<RwLock<Vec<GuestMetadata>>>;

/// Serves `listener` (inside network `net`) until the task is aborted;
/// user data is read from `vms_dir/<vm_id>/user-data`.
pub(crate) async fn serve(net: String, listener: std::net::TcpListener, guests: Guests, vms_dir: PathBuf) {
    let listener = match listener.set_nonblocking(true).and_then(|_| TcpListener::from_std(listener)) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(net = %net, error = %e, "metadata listener unusable");
            return;
        }
    };
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(net = %net, error = %e, "metadata accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let std::net::IpAddr::V4(ip) = peer.ip() else { continue };
        let doc = guests.read().expect("metadata documents lock").iter().find(|g| g.addresses.contains(&ip)).cloned();
        let (net, vms_dir) = (net.clone(), vms_dir.clone());
        tokio::spawn(async move {
            if let Err(e) = answer(doc, &vms_dir, stream).await {
                tracing::debug!(net = %net, peer = %ip, error = %e, "metadata request failed");
            }
        });
    }
}

async fn answer(doc: Option<GuestMetadata>, vms_dir: &std::path::Path, mut stream: TcpStream) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(512);
    let read = tokio::time::timeout(READ_TIMEOUT, async {
        let mut chunk = [0u8; 1024];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < MAX_REQUEST {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
    if !matches!(read, Ok(Ok(()))) {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&buf);
    let mut words = text.lines().next().unwrap_or_default().split_whitespace();
    let (status, body) = match (words.next(), words.next()) {
        (Some("GET"), Some(path)) => {
            let body = match &doc {
                Some(doc) if is_user_data(path) => user_data(vms_dir, &doc.vm_id).await,
                Some(doc) => lookup(doc, path).map(String::into_bytes),
                None => None,
            };
            match body {
                Some(body) => ("200 OK", body),
                None => ("404 Not Found", b"Not Found\n".to_vec()),
            }
        }
        _ => ("405 Method Not Allowed", b"Method Not Allowed\n".to_vec()),
    };
    let head = format!(
        "HTTP/1.0 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(&body).await?;
    stream.shutdown().await
}

/// The request path without its query and trailing slashes.
fn clean(path: &str) -> &str {
    path.split('?').next().unwrap_or_default().trim_end_matches('/')
}

fn is_user_data(path: &str) -> bool {
    clean(path) == "/latest/user-data"
}

/// The VM's user data as it was defined on this host (None: it has none).
async fn user_data(vms_dir: &std::path::Path, vm_id: &str) -> Option<Vec<u8>> {
    crate::validate_vm_id(vm_id).ok()?;
    let data = tokio::fs::read(vms_dir.join(vm_id).join("user-data")).await.ok()?;
    (!data.is_empty()).then_some(data)
}

/// The body for `path` as seen by the guest of `doc` (None: 404). User
/// data is answered by the caller.
fn lookup(doc: &GuestMetadata, path: &str) -> Option<String> {
    let path = clean(path);
    let md = |s: &str| format!("/latest/meta-data/{s}");
    let keypair = doc.public_key.as_ref();
    match path {
        "" => Some("latest\n".into()),
        "/latest" => Some("meta-data/\nuser-data\n".into()),
        "/latest/meta-data" => {
            let mut entries = vec![
                "ami-id", "hostname", "instance-id", "instance-type", "local-hostname", "local-ipv4", "mac", "network/",
                "placement/", "reservation-id", "security-groups",
            ];
            if keypair.is_some() {
                entries.push("public-keys/");
            }
            if doc.public_ipv4.is_some() {
                entries.push("public-ipv4");
            }
            entries.sort_unstable();
            Some(entries.join("\n") + "\n")
        }
        p if p == md("instance-id") => Some(doc.vm_id.clone()),
        p if p == md("ami-id") => Some(doc.image_id.clone()),
        p if p == md("instance-type") => Some(doc.vm_type.clone()),
        p if p == md("reservation-id") => Some(doc.reservation_id.clone()),
        p if p == md("local-ipv4") => Some(doc.local_ipv4.clone()),
        p if p == md("public-ipv4") => doc.public_ipv4.clone(),
        p if p == md("hostname") || p == md("local-hostname") => Some(doc.hostname.clone()),
        p if p == md("mac") => Some(doc.mac.clone()),
        p if p == md("security-groups") => Some(doc.security_groups.join("\n")),
        p if p == md("placement") => Some("availability-zone\n".into()),
        p if p == md("network") => Some("interfaces/\n".into()),
        p if p == md("network/interfaces") => Some("macs/\n".into()),
        p if p.starts_with(&md("network/interfaces/macs")) => {
            let rest = &p[md("network/interfaces/macs").len()..];
            if !(rest.is_empty() || rest.starts_with('/')) {
                return None;
            }
            metadata_interfaces::answer(&doc.interfaces, rest)
        }
        p if p == md("placement/availability-zone") => Some(doc.subregion.clone()),
        p if p == md("public-keys") => keypair.map(|k| format!("0={}\n", k.name)),
        p if p == md("public-keys/0") => keypair.map(|_| "openssh-key\n".into()),
        p if p == md("public-keys/0/openssh-key") => keypair.map(|k| format!("{}\n", k.public_key.trim_end())),
        _ => None,
    }
}

/// The addresses `guests` claim more than once in one network: a document
/// must name its guest unambiguously, or a guest could read another's.
pub(crate) fn ambiguous(guests: &[GuestMetadata]) -> Vec<Ipv4Addr> {
    let mut seen = std::collections::HashMap::new();
    for g in guests {
        for a in &g.addresses {
            *seen.entry(*a).or_insert(0) += 1;
        }
    }
    let mut out: Vec<Ipv4Addr> = seen.into_iter().filter(|(_, n)| *n > 1).map(|(a, _)| a).collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use socle_agent_api::GuestKey;

    fn doc() -> GuestMetadata {
        GuestMetadata {
            addresses: vec!["10.0.1.4".parse().unwrap()],
            vm_id: "i-00000001".into(),
            image_id: "ami-00000001".into(),
            vm_type: "tinav5.c1r1p2".into(),
            reservation_id: "r-00000001".into(),
            local_ipv4: "10.0.1.4".into(),
            hostname: "ip-10-0-1-4.eu-west-2.compute.internal".into(),
            mac: "aa:fc:00:00:00:01".into(),
            security_groups: vec!["default".into(), "web".into()],
            subregion: "eu-west-2a".into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_guest_reads_its_own_document_in_the_ec2_layout() {
        let mut d = doc();
        assert_eq!(lookup(&d, "/latest/meta-data/instance-id/").as_deref(), Some("i-00000001"));
        assert_eq!(lookup(&d, "/latest/meta-data/security-groups?x=1").as_deref(), Some("default\nweb"));
        assert_eq!(lookup(&d, "/latest/meta-data/placement/availability-zone").as_deref(), Some("eu-west-2a"));
        let listing = lookup(&d, "/latest/meta-data").unwrap();
        assert!(!listing.contains("public-keys") && !listing.contains("public-ipv4"), "{listing}");
        assert_eq!(lookup(&d, "/latest/meta-data/public-ipv4"), None);
        assert_eq!(lookup(&d, "/latest/meta-data/public-keys/0/openssh-key"), None);
        d.public_ipv4 = Some("198.18.0.7".into());
        d.public_key = Some(GuestKey { name: "mine".into(), public_key: "ssh-ed25519 AAAA me\n".into() });
        let listing = lookup(&d, "/latest/meta-data/").unwrap();
        assert!(listing.contains("public-keys/\n") && listing.contains("public-ipv4\n"), "{listing}");
        assert_eq!(lookup(&d, "/latest/meta-data/public-keys").as_deref(), Some("0=mine\n"));
        assert_eq!(lookup(&d, "/latest/meta-data/public-keys/0/openssh-key").as_deref(), Some("ssh-ed25519 AAAA me\n"));
        assert_eq!(lookup(&d, "/latest/meta-data/network/interfacesX"), None);
        assert_eq!(lookup(&d, "/latest/meta-data/nothing"), None);
        assert!(is_user_data("/latest/user-data/") && !is_user_data("/latest/user-data/x"));
    }

    #[test]
    fn an_address_claimed_twice_is_reported() {
        let (a, mut b) = (doc(), doc());
        assert!(ambiguous(&[a.clone(), b.clone()]) == vec!["10.0.1.4".parse::<Ipv4Addr>().unwrap()]);
        b.addresses = vec!["10.0.1.5".parse().unwrap()];
        assert!(ambiguous(&[a, b]).is_empty());
    }
}

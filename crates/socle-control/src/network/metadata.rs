//! The metadata service at `http://169.254.169.254/`, EC2 layout (what
//! cloud-init's EC2 datasource and Outscale guests read).
//!
//! One listener per wired network, bound inside its namespace. The caller
//! is identified by the source address of the connection: anti-spoofing
//! makes it the guest's own private IP within that network, so a guest
//! only ever sees its own data. Plain HTTP/1.0-style: one GET per
//! connection, answered and closed.

use std::sync::{Arc, Weak};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use socle_store::nics::{self as nic_store, NicRow};
use socle_store::{keypairs as keypair_store, security_groups as sg_store, vms as vm_store, Conn};
use socle_types::ApiError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::compile::{net_key, space_of};
use super::metadata_interfaces;
use crate::ops::vm_network::private_dns_name;
use crate::Cloud;

/// A request line and headers bigger than this are refused.
const MAX_REQUEST: usize = 8 * 1024;
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves `listener` (inside network `key`) until the task is aborted.
pub(crate) async fn serve(cloud: Weak<Cloud>, key: String, listener: std::net::TcpListener) {
    let listener = match listener.set_nonblocking(true).and_then(|_| TcpListener::from_std(listener)) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(net = %key, error = %e, "metadata listener unusable");
            return;
        }
    };
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(net = %key, error = %e, "metadata accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(cloud) = cloud.upgrade() else { return };
        let key = key.clone();
        tokio::spawn(async move {
            let std::net::IpAddr::V4(ip) = peer.ip() else { return };
            if let Err(e) = answer(&cloud, &key, &ip.to_string(), stream).await {
                tracing::debug!(net = %key, peer = %ip, error = %e, "metadata request failed");
            }
        });
    }
}

async fn answer(cloud: &Arc<Cloud>, key: &str, peer: &str, mut stream: TcpStream) -> std::io::Result<()> {
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
            let (key, peer, path) = (key.to_string(), peer.to_string(), path.to_string());
            let region = cloud.config.region.clone();
            match cloud.store.read(move |c| lookup(c, &key, &peer, &path, &region)).await {
                Ok(Some(body)) => ("200 OK", body),
                Ok(None) => ("404 Not Found", b"Not Found\n".to_vec()),
                Err(e) => {
                    tracing::error!(error = ?e.internal, "metadata lookup failed");
                    ("500 Internal Server Error", b"Internal Server Error\n".to_vec())
                }
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

/// The linked NIC of network `key` holding `ip`, if any.
fn caller_nic(conn: &Conn, key: &str, ip: &str) -> Result<Option<NicRow>, ApiError> {
    let Ok(addr) = ip.parse() else { return Ok(None) };
    let Some(space) = space_of(conn, key, addr)? else { return Ok(None) };
    let Some(id) = nic_store::nic_with_ip(conn, &space, ip)? else { return Ok(None) };
    Ok(nic_store::get_any(conn, &id)?.filter(|n| n.vm_id.is_some() && net_key(n) == key))
}

/// The body for `path` as seen by the VM owning `ip` in network `key`
/// (None: 404).
fn lookup(conn: &Conn, key: &str, ip: &str, path: &str, region: &str) -> Result<Option<Vec<u8>>, ApiError> {
    let Some(nic) = caller_nic(conn, key, ip)? else { return Ok(None) };
    let Some(vm_id) = &nic.vm_id else { return Ok(None) };
    let Some(vm) = vm_store::get_any(conn, vm_id)? else { return Ok(None) };
    let primary = nic_store::of_vm(conn, vm_id)?.into_iter().next().unwrap_or(nic);
    let local_ip = nic_store::ips_of(conn, &primary.nic_id)?.into_iter().find(|p| p.is_primary).map(|p| p.ip).unwrap_or_default();
    let keypair = match &vm.keypair_name {
        Some(name) => keypair_store::get_by_name(conn, &vm.account_id, name)?,
        None => None,
    };
    let groups: Vec<String> = nic_store::groups_of(conn, &primary.nic_id)?
        .iter()
        .map(|g| Ok(sg_store::get(conn, &vm.account_id, g)?.map(|g| g.name).unwrap_or_default()))
        .collect::<Result<_, ApiError>>()?;
    let hostname = private_dns_name(&local_ip, region);
    let public_ip = socle_store::public_ips::of_nic(conn, &primary.nic_id)?
        .into_iter()
        .find(|p| p.private_ip.as_deref() == Some(local_ip.as_str()))
        .map(|p| p.public_ip);
    let path = path.split('?').next().unwrap_or_default().trim_end_matches('/');
    let md = |s: &str| format!("/latest/meta-data/{s}");
    let text = |s: String| Ok(Some(s.into_bytes()));
    match path {
        "" => text("latest\n".into()),
        "/latest" => text("meta-data/\nuser-data\n".into()),
        "/latest/user-data" => {
            let data = STANDARD.decode(&vm.user_data).unwrap_or_default();
            Ok((!data.is_empty()).then_some(data))
        }
        "/latest/meta-data" => {
            let mut entries = vec![
                "ami-id", "hostname", "instance-id", "instance-type", "local-hostname", "local-ipv4", "mac", "network/",
                "placement/", "reservation-id", "security-groups",
            ];
            if keypair.is_some() {
                entries.push("public-keys/");
            }
            if public_ip.is_some() {
                entries.push("public-ipv4");
            }
            entries.sort_unstable();
            text(entries.join("\n") + "\n")
        }
        p if p == md("instance-id") => text(vm.vm_id.to_string()),
        p if p == md("ami-id") => text(vm.image_id.to_string()),
        p if p == md("instance-type") => text(vm.vm_type.clone()),
        p if p == md("reservation-id") => text(vm.reservation_id.to_string()),
        p if p == md("local-ipv4") => text(local_ip),
        p if p == md("public-ipv4") => Ok(public_ip.map(String::into_bytes)),
        p if p == md("hostname") || p == md("local-hostname") => text(hostname),
        p if p == md("mac") => text(primary.mac.clone()),
        p if p == md("security-groups") => text(groups.join("\n")),
        p if p == md("placement") => text("availability-zone\n".into()),
        p if p == md("network") => text("interfaces/\n".into()),
        p if p == md("network/interfaces") => text("macs/\n".into()),
        p if p.starts_with(&md("network/interfaces/macs")) => {
            let rest = &p[md("network/interfaces/macs").len()..];
            if !(rest.is_empty() || rest.starts_with('/')) {
                return Ok(None);
            }
            let nics = metadata_interfaces::nics_of(conn, &nic_store::of_vm(conn, &vm.vm_id)?)?;
            Ok(metadata_interfaces::answer(&nics, rest).map(String::into_bytes))
        }
        p if p == md("placement/availability-zone") => text(vm.subregion.clone()),
        p if p == md("public-keys") => Ok(keypair.map(|k| format!("0={}\n", k.name).into_bytes())),
        p if p == md("public-keys/0") => Ok(keypair.map(|_| b"openssh-key\n".to_vec())),
        p if p == md("public-keys/0/openssh-key") => Ok(keypair.map(|k| format!("{}\n", k.public_key.trim_end()).into_bytes())),
        _ => Ok(None),
    }
}

//! The agent behind the agent protocol: a real agent served on a Unix
//! socket and driven only through `HostClient`, as the control plane drives
//! every host. Proves that the calls, their arguments (keys and user data
//! included), their answers and their typed errors cross the wire intact.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use socle_agent_api::{Host, HostClient, HostErrorKind, PlatformImage, RootDisk, VmRuntime, VmSpec, VolumeKey, VolumeSource};

async fn served(dir: &std::path::Path) -> (HostClient, socle_agent::Agent) {
    let agent = tcg_agent(&dir.join("agent")).await;
    let socket = dir.join("agent.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let served = agent.clone();
    tokio::spawn(async move { socle_agent_api::server::serve_unix(Arc::new(served), listener).await });
    (HostClient::unix(socket), agent)
}

async fn wait_console(host: &HostClient, vm: &str, marker: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let out = String::from_utf8_lossy(&host.console_output(vm.into(), 1 << 20).await.unwrap().0).into_owned();
        if out.contains(marker) {
            return out;
        }
        assert!(Instant::now() < deadline, "console of {vm} lacks {marker:?}:\n{out}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_with_an_encrypted_root_volume_runs_through_the_protocol_alone() {
    let dir = socle_testkit::Slot::claim();
    let (host, _agent) = served(dir.path()).await;

    let info = host.host_info().await.unwrap();
    assert_eq!(info.protocol_version, socle_agent_api::PROTOCOL_VERSION);
    assert_eq!(info.accel, "tcg");

    // Unknown things come back as typed errors, not as strings to parse.
    let e = host.vm_runtime("i-nothere".into()).await.unwrap_err();
    assert_eq!(e.kind, HostErrorKind::VmNotFound { vm_id: "i-nothere".into() }, "{e}");
    let e = host.delete_snapshot("../etc".into()).await.unwrap_err();
    assert_eq!(e.kind, HostErrorKind::InvalidArgument, "{e}");

    // Images travel by name; the host prepares their files itself, once.
    host.prepare_platform_image(PlatformImage::SocleTiny).await.unwrap();
    host.prepare_platform_image(PlatformImage::SocleTiny).await.expect("preparing again is idempotent");
    let key = VolumeKey::generate().unwrap();
    let image = Some(VolumeSource::Platform { image: PlatformImage::SocleTiny });
    let root = host.create_volume("vol-root".into(), 1, key.clone(), image).await.unwrap();
    assert!(root.encrypted, "{root:?}");
    let spec = VmSpec {
        vm_id: "i-proto".into(),
        vcpus: 1,
        memory_mib: 256,
        kernel: Some(PlatformImage::SocleTiny),
        user_data: Some(b"#!/bin/sh\necho user-data-crossed-the-wire\n".to_vec()),
        kernel_cmdline: None,
    };
    host.define_vm(spec.clone(), RootDisk::Volume("vol-root".into())).await.unwrap();
    host.define_vm(spec.clone(), RootDisk::Volume("vol-root".into())).await.expect("defining again is idempotent");
    assert_eq!(host.vm_spec("i-proto".into()).await.unwrap(), spec);

    // A start without the root volume's key names the volume it lacks.
    let e = host.start_vm("i-proto".into(), HashMap::new()).await.unwrap_err();
    assert!(matches!(e.kind, HostErrorKind::MissingVolumeKey { ref volume_id, .. } if volume_id == "vol-root"), "{e}");
    // The wrong key is refused as such.
    let e = host.start_vm("i-proto".into(), HashMap::from([("vol-root".to_string(), VolumeKey::generate().unwrap())])).await.unwrap_err();
    assert_eq!(e.kind, HostErrorKind::WrongKey, "{e}");

    host.start_vm("i-proto".into(), HashMap::from([("vol-root".to_string(), key)])).await.unwrap();
    assert_eq!(host.vm_runtime("i-proto".into()).await.unwrap(), VmRuntime::Running);
    wait_console(&host, "i-proto", "socle-guest: ready").await;
    wait_console(&host, "i-proto", "user-data-crossed-the-wire").await;
    assert_eq!(host.list_vms().await.unwrap(), vec!["i-proto".to_string()]);

    host.stop_vm("i-proto".into(), true, 0).await.unwrap();
    assert_eq!(host.vm_runtime("i-proto".into()).await.unwrap(), VmRuntime::NotRunning);
    host.destroy_vm("i-proto".into()).await.unwrap();
    host.delete_volume("vol-root".into()).await.unwrap();
    assert!(host.list_vms().await.unwrap().is_empty());
    assert!(host.list_volumes().await.unwrap().is_empty());
}

#[tokio::test]
async fn an_agent_that_does_not_listen_is_unreachable_not_an_internal_error() {
    let dir = socle_testkit::Slot::claim();
    let host = HostClient::unix(dir.path().join("nobody.sock"));
    let e = host.list_vms().await.unwrap_err();
    assert_eq!(e.kind, HostErrorKind::Unreachable, "{e}");
    assert!(e.message.contains("nobody.sock"), "the message names the endpoint: {e}");
}

/// Over TCP, mutual TLS with the cloud's own CA: the control plane's
/// certificate reaches the host it names; a wrong host name, a host's own
/// certificate used as a client, and another CA's certificate are refused
/// at the handshake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tcp_only_the_control_plane_of_the_cloud_reaches_the_host_it_names() {
    use socle_agent_api::pki::{host_key_and_request, Ca};
    use socle_agent_api::tls::{client_config, server_config, TlsIdentity};

    let dir = socle_testkit::Slot::claim();
    let agent = tcg_agent(&dir.path().join("agent")).await;
    let ca = Ca::generate("test").unwrap();
    // The host makes its key; only the request travels.
    let (host_key, request) = host_key_and_request().unwrap();
    let host_cert = ca.sign_host(&request, "h-1").unwrap();
    let server = server_config(TlsIdentity::from_pem(&host_cert, &host_key).unwrap(), &ca.cert_pem).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(socle_agent_api::server::serve_tls(Arc::new(agent), listener, server));

    let (cert, key) = ca.issue_control().unwrap();
    let control = client_config(TlsIdentity::from_pem(&cert, &key).unwrap(), &ca.cert_pem).unwrap();
    let info = HostClient::tls(addr.clone(), "h-1", control.clone()).host_info().await.unwrap();
    assert_eq!(info.protocol_version, socle_agent_api::PROTOCOL_VERSION);

    let refused = |what: &str, e: socle_agent_api::HostError| {
        assert_eq!(e.kind, HostErrorKind::Unreachable, "{what}: {e}");
    };
    // The certificate names h-1: it cannot answer for h-2.
    refused("wrong host", HostClient::tls(addr.clone(), "h-2", control.clone()).host_info().await.unwrap_err());
    // A host's certificate is for serving only.
    let as_host = client_config(TlsIdentity::from_pem(&host_cert, &host_key).unwrap(), &ca.cert_pem).unwrap();
    refused("host cert as client", HostClient::tls(addr.clone(), "h-1", as_host).list_vms().await.unwrap_err());
    // Another cloud's control plane.
    let other = Ca::generate("other").unwrap();
    let (ocert, okey) = other.issue_control().unwrap();
    let stranger = client_config(TlsIdentity::from_pem(&ocert, &okey).unwrap(), &ca.cert_pem).unwrap();
    refused("other CA", HostClient::tls(addr.clone(), "h-1", stranger).list_vms().await.unwrap_err());
    // Pinned to the certificate recorded at its join: served; pinned to
    // another one the CA issued under the same name: refused.
    let recorded = socle_agent_api::pki::cert_fingerprint(&host_cert);
    let pinned = HostClient::tls(addr.clone(), "h-1", control.clone()).pinned_to(recorded);
    assert!(pinned.list_vms().await.unwrap().is_empty());
    let (_, request) = host_key_and_request().unwrap();
    let other_copy = socle_agent_api::pki::cert_fingerprint(&ca.sign_host(&request, "h-1").unwrap());
    let e = HostClient::tls(addr.clone(), "h-1", control.clone()).pinned_to(other_copy).list_vms().await.unwrap_err();
    refused("another certificate of h-1", e.clone());
    assert!(e.message.contains("another certificate"), "{e}");
    // And the control plane still gets in after all that.
    assert!(HostClient::tls(addr, "h-1", control).list_vms().await.unwrap().is_empty());
}

/// A snapshot crosses from one host to another through the protocol, piece
/// by piece: the destination takes it only when whole and unchanged, a
/// piece out of place or a different file is refused, and finishing again
/// is harmless.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_is_copied_between_hosts_only_whole_and_unchanged() {
    let dir = socle_testkit::Slot::claim();
    let (from, from_agent) = served(&dir.subdir("from")).await;
    let (to, _) = served(&dir.subdir("to")).await;
    // A snapshot's file, as the source keeps it (its bytes are opaque here).
    let data: Vec<u8> = (0..(9u32 << 20) + 12345).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    std::fs::create_dir_all(from_agent.snapshot_path("snap-1").parent().unwrap()).unwrap();
    std::fs::write(from_agent.snapshot_path("snap-1"), &data).unwrap();

    let file = from.snapshot_file("snap-1".into()).await.unwrap();
    assert_eq!(file.size, data.len() as u64);
    let e = from.snapshot_file("snap-none".into()).await.unwrap_err();
    assert_eq!(e.kind, HostErrorKind::SnapshotNotFound { snapshot_id: "snap-none".into() }, "{e}");

    // A piece ahead of the copy is refused; so is finishing a copy that differs.
    let first = from.read_snapshot("snap-1".into(), 0, 1 << 20).await.unwrap();
    let e = to.receive_snapshot("snap-1".into(), 1 << 20, first.clone()).await.unwrap_err();
    assert_eq!(e.kind, HostErrorKind::InvalidArgument, "{e}");
    to.receive_snapshot("snap-1".into(), 0, first).await.unwrap();
    let e = to.finish_snapshot("snap-1".into(), file.clone()).await.unwrap_err();
    assert_eq!(e.kind, HostErrorKind::InvalidArgument, "a part is not the whole: {e}");
    assert!(!to.list_snapshots().await.unwrap().contains(&"snap-1".to_string()));

    // The whole, in pieces of at most 8 MiB (a piece sent twice is harmless).
    let mut offset = 0;
    while offset < file.size {
        let piece = from.read_snapshot("snap-1".into(), offset, 64 << 20).await.unwrap();
        assert!(!piece.0.is_empty() && piece.0.len() <= 8 << 20, "{}", piece.0.len());
        to.receive_snapshot("snap-1".into(), offset, piece.clone()).await.unwrap();
        to.receive_snapshot("snap-1".into(), offset, piece.clone()).await.unwrap();
        offset += piece.0.len() as u64;
    }
    to.finish_snapshot("snap-1".into(), file.clone()).await.unwrap();
    to.finish_snapshot("snap-1".into(), file.clone()).await.expect("finishing again is idempotent");
    assert_eq!(to.list_snapshots().await.unwrap(), vec!["snap-1".to_string()]);
    assert_eq!(to.snapshot_file("snap-1".into()).await.unwrap(), file);
    // Once there, it is not overwritten by another copy.
    let e = to.receive_snapshot("snap-1".into(), 0, socle_agent_api::Blob(vec![0; 10])).await.unwrap_err();
    assert_eq!(e.kind, HostErrorKind::Conflict, "{e}");
}

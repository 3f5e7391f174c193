//! Snapshots on the hosts that need them. A snapshot is kept on the host
//! where it was taken or imported (its row's host); a volume made from it
//! on another host — a VM placed elsewhere, a volume in another subregion
//! — needs the file there first. The control plane copies it, piece by
//! piece, from the host that has it to the one that needs it (the file is
//! the snapshot's qcow2, encrypted under the snapshot's key, which never
//! travels with it); the destination takes it only if its size and SHA-256
//! are those the source declared, and keeps it by ID for later volumes.
//! Deleting the snapshot deletes its copies too.

use std::sync::Arc;

use socle_agent_api::{Host, HostErrorKind};
use socle_store::snapshots::SnapshotRow;
use socle_types::ids::HostId;

use crate::storage_reconciler::StorageError;
use crate::Cloud;

/// What one request carries: 4 MiB (5.3 MiB as base64, under the
/// protocol's 16 MiB).
pub(crate) const PIECE: u64 = 4 << 20;

/// Makes sure `to` (host `to_id`) has the snapshot's file, copying it from
/// the snapshot's host if not.
pub(crate) async fn bring(cloud: &Arc<Cloud>, snap: &SnapshotRow, to_id: Option<&HostId>, to: &dyn Host) -> Result<(), StorageError> {
    let local = cloud.hosts.local_id();
    if snap.host_id.as_ref().or(local) == to_id.or(local) {
        return Ok(());
    }
    let sid = snap.snapshot_id.to_string();
    if to.list_snapshots().await?.contains(&sid) {
        return Ok(());
    }
    let from = cloud.host(snap.host_id.as_ref()).await?;
    let started = std::time::Instant::now();
    let file = from.snapshot_file(sid.clone()).await?;
    let mut offset = 0;
    loop {
        let piece = from.read_snapshot(sid.clone(), offset, PIECE).await?;
        let n = piece.0.len() as u64;
        if n == 0 && offset < file.size {
            return Err(StorageError::Key(socle_types::ApiError::internal(format!("snapshot {sid} ended at {offset} of {} bytes while copied", file.size))));
        }
        // Offset 0 is sent even for an empty file: it starts the copy.
        if n > 0 || offset == 0 {
            to.receive_snapshot(sid.clone(), offset, piece).await?;
        }
        offset += n;
        if offset >= file.size {
            break;
        }
    }
    to.finish_snapshot(sid.clone(), file.clone()).await?;
    tracing::info!(snapshot = %sid, from = ?snap.host_id, to = ?to_id, bytes = file.size, ms = started.elapsed().as_millis() as u64, "snapshot copied between hosts");
    Ok(())
}

/// Deletes the copies of a snapshot on every host but its own (a host that
/// does not answer keeps its copy until its next recovery sweeps it).
pub(crate) async fn delete_copies(cloud: &Arc<Cloud>, snap: &SnapshotRow) -> Result<(), StorageError> {
    let hosts = cloud.store.read(socle_store::hosts::list).await?;
    let own = snap.host_id.as_ref().or(cloud.hosts.local_id());
    for host in hosts.into_iter().filter(|h| h.state != "revoked" && Some(&h.host_id) != own) {
        let agent = cloud.hosts.client(&host)?;
        match agent.delete_snapshot(snap.snapshot_id.to_string()).await {
            Ok(()) => {}
            Err(e) if e.kind == HostErrorKind::Unreachable => {
                tracing::warn!(host = %host.host_id, snapshot = %snap.snapshot_id, error = %e, "a copy of a deleted snapshot stays on a host that does not answer, until it is recovered");
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

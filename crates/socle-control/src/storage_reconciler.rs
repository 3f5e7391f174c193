//! Host work for volumes and snapshots, run by the reconciler.
//!
//! Each step re-reads its row, does one idempotent agent call, and records
//! the outcome; a crash between the two is repaired by doing the step again.
//! Data keys are unwrapped just before use and handed to the agent, which
//! gives them to qemu-img/QEMU without writing them anywhere.

use std::sync::Arc;

use socle_agent_api::{Host, HostError, HostErrorKind, IoLimits, PlatformImage, VolumeKey, VolumeSource};
use socle_store::snapshots::{self as snapshot_store, SnapshotRow};
use socle_store::volumes::{self as volume_store, VolumeRow};
use socle_store::{tags as tag_store, StoreError};
use socle_types::ids::{SnapshotId, VolumeId};
use socle_types::ApiError;

use crate::{custody, faults, Cloud};

/// How often the progress of a snapshot copy is asked for.
const PROGRESS_POLL: std::time::Duration = std::time::Duration::from_millis(500);

/// Who the audit trail names for host work.
const ACTOR: &str = "reconciler";

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("host agent: {0}")]
    Agent(#[from] HostError),
    #[error("{0}")]
    Key(ApiError),
}

impl From<ApiError> for StorageError {
    fn from(e: ApiError) -> Self {
        StorageError::Key(e)
    }
}

/// The I/O limits a volume type sets (QEMU throttling). io1 gets what was
/// provisioned; gp2 3 IOPS per GiB within [100, 16000]; standard 200.
pub fn limits_for(volume_type: &str, size_gib: i64, iops: Option<i64>) -> IoLimits {
    let total = match volume_type {
        "io1" => iops.unwrap_or(100),
        "gp2" => (3 * size_gib).clamp(100, 16_000),
        _ => 200,
    };
    IoLimits::iops(total as u64)
}

/// Unwraps the data key stored in `wrapped` for `resource` (owned by `account`).
async fn volume_key(cloud: &Arc<Cloud>, account: &socle_types::ids::AccountId, resource: &str, wrapped: Option<String>) -> Result<VolumeKey, StorageError> {
    let wrapped = wrapped.ok_or_else(|| ApiError::internal(format!("{resource} has no data key")))?;
    let (cloud2, account, resource) = (cloud.clone(), account.clone(), resource.to_string());
    let dek = cloud
        .store
        .write(move |c| custody::unwrap_key(&cloud2, c, &account, ACTOR, &resource, &wrapped))
        .await?;
    Ok(VolumeKey::from_bytes(*dek.expose_secret()))
}

/// Records the outcome of one step, unless the volume was saved since it
/// was read — the user changed their wish while the host worked (see
/// `update_if_unchanged`): the next pass acts on the row as it now is.
/// Every step is safe to do again.
async fn save_volume(cloud: &Arc<Cloud>, v: VolumeRow) -> Result<(), StorageError> {
    let saved = cloud.store.write(move |c| -> Result<bool, StoreError> { Ok(volume_store::update_if_unchanged(c, &v)?) }).await?;
    if !saved {
        tracing::info!("volume changed while the host worked; the next pass takes the new wish");
    }
    Ok(())
}

/// One step for one volume.
pub async fn work_volume(cloud: &Arc<Cloud>, id: &VolumeId) -> Result<(), StorageError> {
    let lookup = id.clone();
    let Some(mut v) = cloud.store.read(move |c| volume_store::get_any(c, &lookup)).await? else {
        return Ok(());
    };
    let vid = v.volume_id.to_string();
    let host = cloud.host(v.host_id.as_ref()).await?;
    match v.pending.as_str() {
        "create" => {
            let result = async {
                let key = volume_key(cloud, &v.account_id, &vid, v.wrapped_key.clone()).await?;
                let source = match (&v.snapshot_id, &v.source_image_id) {
                    (None, Some(image_id)) => {
                        let iid = socle_types::ids::ImageId::from_trusted(image_id.clone());
                        let image = cloud
                            .store
                            .read(move |c| socle_store::images::get(c, &iid))
                            .await?
                            .ok_or_else(|| ApiError::internal(format!("source image {image_id} is gone")))?;
                        let base = image.base_image.as_deref().and_then(PlatformImage::from_name);
                        let image = base.ok_or_else(|| ApiError::internal(format!("image {image_id} has no platform base disk")))?;
                        Some(VolumeSource::Platform { image })
                    }
                    (None, None) => None,
                    (Some(sid), _) => {
                        let sid2 = SnapshotId::from_trusted(sid.clone());
                        let snap = cloud
                            .store
                            .read(move |c| snapshot_store::get_any(c, &sid2))
                            .await?
                            .ok_or_else(|| ApiError::internal(format!("source snapshot {sid} is gone")))?;
                        crate::snapshot_copies::bring(cloud, &snap, v.host_id.as_ref(), &*host).await?;
                        let snap_key = volume_key(cloud, &snap.account_id, sid, snap.wrapped_key.clone()).await?;
                        Some(VolumeSource::Snapshot { snapshot_id: sid.clone(), key: snap_key })
                    }
                };
                host.create_volume(vid.clone(), v.size_gib as u64, key, source).await?;
                faults::point("volume-created");
                Ok::<_, StorageError>(())
            }
            .await;
            let result = retry_if_host_away(result)?;
            v.pending.clear();
            match result {
                // Volumes made at VM launch are linked from the start.
                Ok(()) => v.state = if v.vm_id.is_some() { "in-use" } else { "available" }.into(),
                Err(e) => {
                    tracing::error!(volume = %vid, error = %e, "volume creation failed");
                    v.state = "error".into();
                    v.state_reason = user_reason(&e);
                }
            }
            save_volume(cloud, v).await
        }
        "delete" => {
            host.delete_volume(vid.clone()).await?;
            faults::point("volume-deleted");
            let id = v.volume_id.clone();
            forget(cloud, &v.account_id, id.to_string(), v.wrapped_key.clone(), move |tx| volume_store::delete(tx, &id)).await
        }
        "resize" => {
            let key = volume_key(cloud, &v.account_id, &vid, v.wrapped_key.clone()).await?;
            host.resize_volume(vid.clone(), v.size_gib as u64, key).await?;
            host.set_volume_limits(vid.clone(), limits_for(&v.volume_type, v.size_gib, v.iops)).await?;
            v.pending.clear();
            v.state = if v.vm_id.is_some() { "in-use" } else { "available" }.into();
            save_volume(cloud, v).await
        }
        "limits" => {
            host.set_volume_limits(vid.clone(), limits_for(&v.volume_type, v.size_gib, v.iops)).await?;
            v.pending.clear();
            save_volume(cloud, v).await
        }
        _ => match (v.link_state.as_deref(), v.vm_id.clone()) {
            (Some("attaching"), Some(vm)) => {
                let key = match volume_key(cloud, &v.account_id, &vid, v.wrapped_key.clone()).await {
                    Ok(k) => k,
                    // The key went away after LinkVolume accepted: give up the
                    // link (the volume stays available) and say why.
                    Err(StorageError::Key(api)) if api.internal.is_none() => {
                        v.vm_id = None;
                        v.device_name = None;
                        v.link_state = None;
                        v.linked_at = None;
                        v.state = "available".into();
                        v.state_reason = format!("Client.KeyUnavailable: {}", api.details);
                        return save_volume(cloud, v).await;
                    }
                    Err(e) => return Err(e),
                };
                let device = v.device_name.clone().unwrap_or_default();
                let limits = limits_for(&v.volume_type, v.size_gib, v.iops);
                match host.link_volume(vm.to_string(), vid.clone(), key, device, limits).await {
                    // A VM that never ran has nothing on the host yet: it gets
                    // the volume when it starts (the reconciler links it then).
                    Ok(()) | Err(HostError { kind: HostErrorKind::VmNotFound { .. }, .. }) => {}
                    Err(e) => return Err(e.into()),
                }
                faults::point("volume-linked");
                v.link_state = Some("attached".into());
                save_volume(cloud, v).await
            }
            (Some("detaching"), Some(vm)) => {
                host.unlink_volume(vm.to_string(), vid.clone()).await?;
                faults::point("volume-unlinked");
                v.vm_id = None;
                v.device_name = None;
                v.link_state = None;
                v.linked_at = None;
                v.delete_on_vm_deletion = false;
                v.state = "available".into();
                save_volume(cloud, v).await
            }
            _ => Ok(()),
        },
    }
}

/// One step for one snapshot.
pub async fn work_snapshot(cloud: &Arc<Cloud>, id: &SnapshotId) -> Result<(), StorageError> {
    let lookup = id.clone();
    let Some(s) = cloud.store.read(move |c| snapshot_store::get_any(c, &lookup)).await? else {
        return Ok(());
    };
    let sid = s.snapshot_id.to_string();
    let host = cloud.host(s.host_id.as_ref()).await?;
    match s.pending.as_str() {
        "create" => {
            let result = take_snapshot(cloud, &*host, &s).await;
            faults::point("snapshot-taken");
            record_snapshot_outcome(cloud, s, result, "snapshot failed").await
        }
        "import" => {
            // The upload (held by the host under the snapshot's ID) stays
            // until the outcome is recorded: a crash before that converts it
            // again (the agent overwrites a partial file).
            let result = async {
                let key = volume_key(cloud, &s.account_id, &sid, s.wrapped_key.clone()).await?;
                // The agent inspects the upload again before converting it.
                host.import_snapshot(sid.clone(), None, sid.clone(), key).await?;
                faults::point("snapshot-imported");
                Ok::<_, StorageError>(())
            }
            .await;
            record_snapshot_outcome(cloud, s, result, "image import failed").await?;
            host.delete_upload(sid).await?;
            Ok(())
        }
        "delete" => {
            host.delete_snapshot(sid.clone()).await?;
            crate::snapshot_copies::delete_copies(cloud, &s).await?;
            faults::point("snapshot-deleted");
            let id = s.snapshot_id.clone();
            forget(cloud, &s.account_id, id.to_string(), s.wrapped_key.clone(), move |tx| snapshot_store::delete(tx, &id)).await
        }
        _ => Ok(()),
    }
}

/// Records how a snapshot's host work ended (completed, or error with the
/// cause in the operator log), on the latest row so that permission changes
/// made meanwhile are kept.
async fn record_snapshot_outcome(cloud: &Arc<Cloud>, s: SnapshotRow, result: Result<(), StorageError>, what: &str) -> Result<(), StorageError> {
    let result = retry_if_host_away(result)?;
    let id = s.snapshot_id.clone();
    let mut s = cloud.store.read(move |c| snapshot_store::get_any(c, &id)).await?.unwrap_or(s);
    s.pending.clear();
    match result {
        Ok(()) => {
            s.state = "completed".into();
            s.progress = 100;
        }
        Err(e) => {
            tracing::error!(snapshot = %s.snapshot_id, error = %e, "{what}");
            s.state = "error".into();
        }
    }
    cloud.store.write(move |c| snapshot_store::update(c, &s)).await?;
    Ok(())
}

/// Once a disk's file is gone: erases its row, its tags and the only wrapped
/// copy of its data key (recorded in the key audit) in one transaction.
/// Erasing that key is what makes the data unrecoverable, whatever copies of
/// the encrypted file may remain on the disks.
async fn forget(
    cloud: &Arc<Cloud>,
    account: &socle_types::ids::AccountId,
    id: String,
    wrapped: Option<String>,
    delete_row: impl Fn(&socle_store::Conn) -> Result<(), StoreError> + Send + 'static,
) -> Result<(), StorageError> {
    let account = account.clone();
    cloud
        .store
        .write(move |c| -> Result<(), ApiError> {
            if let Some(w) = &wrapped {
                custody::record_destroyed(c, &account, ACTOR, &id, w)?;
            }
            tag_store::delete_all_for_resource(c, &id)?;
            delete_row(c)?;
            Ok(())
        })
        .await?;
    Ok(())
}

async fn take_snapshot(cloud: &Arc<Cloud>, host: &dyn Host, s: &SnapshotRow) -> Result<(), StorageError> {
    let vid = s.volume_id.clone().ok_or_else(|| ApiError::internal("snapshot without a source volume"))?;
    let vid2 = VolumeId::from_trusted(vid.clone());
    let volume = cloud
        .store
        .read(move |c| volume_store::get_any(c, &vid2))
        .await?
        .ok_or_else(|| ApiError::internal(format!("source volume {vid} is gone")))?;
    let key = volume_key(cloud, &volume.account_id, &vid, volume.wrapped_key.clone()).await?;
    let snap_key = volume_key(cloud, &s.account_id, s.snapshot_id.as_str(), s.wrapped_key.clone()).await?;
    let copy = host.snapshot_volume(vid, s.snapshot_id.to_string(), key, snap_key);
    tokio::pin!(copy);
    // Progress is informative: while the copy runs, ask the agent how far
    // it is and record each new 10% step.
    let mut poll = tokio::time::interval(PROGRESS_POLL);
    let mut recorded = -1i64;
    loop {
        tokio::select! {
            done = &mut copy => {
                done?;
                return Ok(());
            }
            _ = poll.tick() => {
                let Ok(Some(p)) = host.snapshot_progress(s.snapshot_id.to_string()).await else { continue };
                let pct = (p.percent() as i64 / 10) * 10;
                if pct > recorded && pct < 100 {
                    recorded = pct;
                    let id = s.snapshot_id.clone();
                    let written = cloud
                        .store
                        .write(move |c| -> Result<(), StoreError> {
                            c.execute("UPDATE snapshots SET progress = ?2 WHERE snapshot_id = ?1 AND state = 'pending'", (id.as_str(), pct))?;
                            Ok(())
                        })
                        .await;
                    if let Err(e) = written {
                        tracing::debug!(snapshot = %s.snapshot_id, error = %e, "snapshot progress not recorded");
                    }
                }
            }
        }
    }
}

/// An outcome to record, or — when the host did not answer — the error
/// itself, so that the step stays pending and the next pass tries again
/// (an unreachable host says nothing about the disk).
fn retry_if_host_away(result: Result<(), StorageError>) -> Result<Result<(), StorageError>, StorageError> {
    match result {
        Err(StorageError::Agent(e)) if e.kind == HostErrorKind::Unreachable => Err(StorageError::Agent(e)),
        other => Ok(other),
    }
}

/// What a user may read about a failure (StateReason): key problems are
/// theirs to know; the rest is in the operator log.
fn user_reason(e: &StorageError) -> String {
    match e {
        StorageError::Key(api) if api.internal.is_none() => format!("Client.KeyUnavailable: {}", api.details),
        _ => "Server.InternalError: the operator log has details".into(),
    }
}

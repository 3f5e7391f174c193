//! Importing a disk image a user uploads (`socle image import FILE|URL`):
//! a raw or qcow2 disk becomes an image of theirs that boots as a full disk
//! through the BIOS, as cloud images do.
//!
//! The upload lands in `DATA/uploads/<random>.part` while it arrives (the
//! HTTP layer streams it there and checks its hash), is sent in pieces to
//! the host that will keep its snapshot (this server's own, else the least
//! loaded ready host), which holds it by ID (the snapshot's) and inspects
//! it (format allow-list, no backing file); it is then recorded as an
//! image whose root snapshot is pending `import` on that host. The
//! reconciler has the host convert it into an encrypted snapshot, then
//! delete the upload. A crash at any point leaves either rows the
//! reconciler finishes, or files that `remove_stale_uploads` (here, at the
//! next start) and the host sweep (on the hosts) delete.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use socle_agent_api::{Blob, Host, HostErrorKind};
use socle_store::hosts::{self as host_store, HostRow};
use socle_store::images::{self as image_store, ImageRow};
use socle_store::snapshots::{self as snapshot_store, SnapshotRow};
use socle_store::{now_iso, StoreError};
use socle_types::ids::{HostId, ImageId, SnapshotId};
use socle_types::osc::CreateImageResponse;
use socle_types::{ApiError, ErrorCode};

use super::images::{account_image_row, check_image_name, check_name_free, image_view};
use super::write;
use crate::{custody, Caller, Cloud};

const GIB: u64 = 1 << 30;

/// What the uploader says about the image (signed request headers).
#[derive(Debug, Clone)]
pub struct ImportParams {
    pub name: String,
    pub description: String,
}

fn uploads_dir(cloud: &Cloud) -> PathBuf {
    cloud.config.data_dir.join("uploads")
}

/// Checks made before a byte of the body is read: the name, and the
/// declared size against the free space of the storage pool (the virtual
/// size is checked again once the image is inspected).
pub async fn check_import(cloud: &Arc<Cloud>, caller: &Caller, params: &ImportParams, declared_bytes: u64) -> Result<(), ApiError> {
    upload_host(cloud).await?;
    check_image_name(&params.name)?;
    if params.description.len() > 255 {
        return Err(ApiError::new(socle_types::error::ErrorCode::InvalidParameterValueLength, "Description is limited to 255 characters"));
    }
    let (account, name, capacity) = (caller.account_id.clone(), params.name.clone(), cloud.config.storage_capacity_gib);
    cloud
        .store
        .write(move |c| {
            check_name_free(c, &account, &name)?;
            super::volumes::ensure_room(c, gib_ceil(declared_bytes), capacity)
        })
        .await
}

fn gib_ceil(bytes: u64) -> i64 {
    bytes.div_ceil(GIB).max(1) as i64
}

/// A new file for an upload in progress, readable by nobody else.
pub fn new_upload_file(cloud: &Cloud) -> Result<(PathBuf, std::fs::File), ApiError> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = uploads_dir(cloud);
    std::fs::create_dir_all(&dir).map_err(|e| ApiError::internal(format!("cannot create {}: {e}", dir.display())))?;
    let path = dir.join(format!("{}.part", hex::encode(rand::random::<[u8; 16]>())));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| ApiError::internal(format!("cannot create {}: {e}", path.display())))?;
    Ok((path, file))
}

/// Once the whole body arrived (hash checked): inspects it and records the
/// image. The `.part` file is consumed: renamed for the reconciler, or
/// removed if anything refuses it.
pub async fn finish_import(cloud: &Arc<Cloud>, caller: &Caller, params: ImportParams, part: PathBuf) -> Result<CreateImageResponse, ApiError> {
    let result = accept(cloud, caller, params, &part).await;
    let _ = std::fs::remove_file(&part); // gone already when accepted (renamed)
    let row = result?;
    cloud.wake_reconciler();
    Ok(CreateImageResponse { image: Some(image_view(&row, vec![], vec![], "pending", &caller.account_id)), ..Default::default() })
}

/// The host an upload goes to (its snapshot is kept there): this server's
/// own, else the least loaded ready host of the cloud.
async fn upload_host(cloud: &Arc<Cloud>) -> Result<(HostId, Arc<dyn Host>), ApiError> {
    if let (Some(id), Ok(agent)) = (cloud.hosts.local_id(), cloud.hosts.local()) {
        return Ok((id.clone(), agent.clone()));
    }
    let row = cloud
        .store
        .read(|c| -> Result<Option<HostRow>, StoreError> {
            for subregion in host_store::subregions(c, true)? {
                if let Some(id) = host_store::least_loaded_in(c, &subregion)? {
                    return host_store::get(c, &id);
                }
            }
            Ok(None)
        })
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::Unavailable, "no host of the cloud can take an upload at the moment; retry later"))?;
    let agent = cloud.hosts.client(&row).map_err(|e| crate::host_api_error("reaching the host of an upload", e))?;
    Ok((row.host_id, agent))
}

/// Sends the upload at `part` to `host` as upload `upload_id`, in pieces.
async fn send_upload(host: &dyn Host, upload_id: &str, part: &Path) -> Result<(), ApiError> {
    use tokio::io::AsyncReadExt;
    let failed = |e: std::io::Error| ApiError::internal(format!("cannot read the upload {}: {e}", part.display()));
    let mut file = tokio::fs::File::open(part).await.map_err(failed)?;
    let mut offset = 0u64;
    loop {
        let mut piece = Vec::with_capacity(crate::snapshot_copies::PIECE as usize);
        (&mut file).take(crate::snapshot_copies::PIECE).read_to_end(&mut piece).await.map_err(failed)?;
        let n = piece.len() as u64;
        if n == 0 && offset > 0 {
            return Ok(());
        }
        host.receive_upload(upload_id.to_string(), offset, Blob(piece))
            .await
            .map_err(|e| crate::host_api_error("sending an upload to its host", e))?;
        offset += n;
        if n < crate::snapshot_copies::PIECE {
            return Ok(());
        }
    }
}

async fn accept(cloud: &Arc<Cloud>, caller: &Caller, params: ImportParams, part: &Path) -> Result<ImageRow, ApiError> {
    let (host_id, host) = upload_host(cloud).await?;
    let snapshot_id = SnapshotId::generate();
    let sid = snapshot_id.to_string();
    let result = record_upload(cloud, caller, params, part, host_id, &*host, snapshot_id).await;
    if result.is_err() {
        // Refused or not recorded: the host keeps nothing of it.
        if let Err(e) = host.delete_upload(sid.clone()).await {
            tracing::warn!(upload = %sid, error = %e, "a refused upload stays on its host until its next sweep");
        }
    }
    result
}

async fn record_upload(
    cloud: &Arc<Cloud>,
    caller: &Caller,
    params: ImportParams,
    part: &Path,
    host_id: HostId,
    host: &dyn Host,
    snapshot_id: SnapshotId,
) -> Result<ImageRow, ApiError> {
    send_upload(host, snapshot_id.as_str(), part).await?;
    let info = host.inspect_upload(snapshot_id.to_string()).await.map_err(|e| match e.kind {
        HostErrorKind::ImportRefused { reason } => ApiError::invalid_value(format!("the upload is refused: {reason}")),
        _ => crate::host_api_error("inspecting an upload", e),
    })?;
    let size_gib = gib_ceil(info.virtual_size_bytes);
    let (account, actor, cloud2) = (caller.account_id.clone(), caller.actor(), cloud.clone());
    write(cloud, None, move |tx| {
        check_name_free(tx, &account, &params.name)?;
        super::volumes::ensure_room(tx, size_gib, cloud2.config.storage_capacity_gib)?;
        let image_id = ImageId::generate();
        let wrapped = custody::wrap_new_key(&cloud2, tx, &account, &actor, snapshot_id.as_str())?;
        let now = now_iso();
        snapshot_store::insert(
            tx,
            &SnapshotRow {
                snapshot_id: snapshot_id.clone(),
                account_id: account.clone(),
                volume_id: None,
                volume_size: size_gib,
                description: format!("Imported ({}) for {image_id}", info.format),
                client_token: None,
                state: "pending".into(),
                progress: 0,
                wrapped_key: Some(wrapped),
                is_public: false,
                pending: "import".into(),
                created_at: now.clone(),
                host_id: Some(host_id.clone()),
            },
        )?;
        // A whole disk with its own bootloader: BIOS boot.
        let row = ImageRow {
            name: params.name.clone(),
            description: params.description.clone(),
            ..account_image_row(image_id, &account, None, size_gib, &snapshot_id, now)
        };
        image_store::insert(tx, &row)?;
        Ok(row)
    })
    .await
}

/// At start: no upload is arriving, so every file of the server's uploads
/// directory is a leftover of one cut short.
pub async fn remove_stale_uploads(cloud: &Arc<Cloud>) -> Result<(), ApiError> {
    let dir = uploads_dir(cloud);
    let Ok(entries) = std::fs::read_dir(&dir) else { return Ok(()) };
    for entry in entries.flatten() {
        tracing::warn!(file = %entry.file_name().to_string_lossy(), "removing an upload left by an interrupted import");
        let _ = std::fs::remove_file(entry.path());
    }
    Ok(())
}

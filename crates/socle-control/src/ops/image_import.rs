//! Importing a disk image a user uploads (`socle image import FILE|URL`):
//! a raw or qcow2 disk becomes an image of theirs that boots as a full disk
//! through the BIOS, as cloud images do.
//!
//! The upload lands in `DATA/uploads/<random>.part` while it arrives (the
//! HTTP layer streams it there and checks its hash), is inspected (format
//! allow-list, no backing file), then renamed `<snapshot-id>.upload` and
//! recorded as an image whose root snapshot is pending `import`. The
//! reconciler converts it into an encrypted snapshot and removes the upload.
//! A crash at any point leaves either rows the reconciler finishes, or
//! files `remove_stale_uploads` deletes at the next start.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use socle_store::images::{self as image_store, ImageRow};
use socle_store::snapshots::{self as snapshot_store, SnapshotRow};
use socle_store::now_iso;
use socle_types::ids::{HostId, ImageId, SnapshotId};
use socle_types::osc::CreateImageResponse;
use socle_types::ApiError;

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

/// Where an accepted upload waits for the reconciler.
pub(crate) fn upload_path(cloud: &Cloud, snapshot_id: &str) -> PathBuf {
    uploads_dir(cloud).join(format!("{snapshot_id}.upload"))
}

/// Checks made before a byte of the body is read: the name, and the
/// declared size against the free space of the storage pool (the virtual
/// size is checked again once the image is inspected).
pub async fn check_import(cloud: &Arc<Cloud>, caller: &Caller, params: &ImportParams, declared_bytes: u64) -> Result<(), ApiError> {
    uploading_host(cloud)?;
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

/// Uploads land in this server's data dir: its own agent imports them
/// (until uploads cross to any host by ID, a server without an agent of
/// its own takes none).
fn uploading_host(cloud: &Cloud) -> Result<(&Arc<dyn socle_agent_api::Host>, &HostId), ApiError> {
    match (cloud.hosts.local(), cloud.hosts.local_id()) {
        (Ok(agent), Some(id)) => Ok((agent, id)),
        _ => Err(ApiError::new(
            socle_types::ErrorCode::Unavailable,
            "this server has no host agent on its machine (socle server), and image uploads land on the server's own host: send the upload to a server of the cloud started with socle up",
        )),
    }
}

async fn accept(cloud: &Arc<Cloud>, caller: &Caller, params: ImportParams, part: &Path) -> Result<ImageRow, ApiError> {
    let (agent, host_id) = uploading_host(cloud)?;
    let host_id = host_id.clone();
    let info = agent.inspect_upload(part.to_path_buf()).await.map_err(|e| match e.kind {
        socle_agent_api::HostErrorKind::ImportRefused { reason } => ApiError::invalid_value(format!("the upload is refused: {reason}")),
        _ => crate::host_api_error("inspecting an upload", e),
    })?;
    let size_gib = gib_ceil(info.virtual_size_bytes);
    let snapshot_id = SnapshotId::generate();
    let upload = upload_path(cloud, snapshot_id.as_str());
    std::fs::rename(part, &upload).map_err(|e| ApiError::internal(format!("cannot move the upload into place: {e}")))?;
    let (account, actor, cloud2) = (caller.account_id.clone(), caller.actor(), cloud.clone());
    let row = write(cloud, None, move |tx| {
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
    .await;
    if row.is_err() {
        let _ = std::fs::remove_file(&upload);
    }
    row
}

/// At start: no upload is in progress, so every `.part` file is a leftover,
/// and an `.upload` file no pending import refers to is an orphan (a crash
/// between its rename and the database write).
pub async fn remove_stale_uploads(cloud: &Arc<Cloud>) -> Result<(), ApiError> {
    let dir = uploads_dir(cloud);
    let Ok(entries) = std::fs::read_dir(&dir) else { return Ok(()) };
    let pending: Vec<String> = cloud
        .store
        .read(|c| snapshot_store::list_unsettled(c))
        .await?
        .into_iter()
        .filter(|s| s.pending == "import")
        .map(|s| s.snapshot_id.to_string())
        .collect();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let keep = name.strip_suffix(".upload").is_some_and(|id| pending.iter().any(|p| p == id));
        if !keep {
            tracing::warn!(file = %name, "removing an upload left by an interrupted import");
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(())
}

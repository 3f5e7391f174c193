//! Snapshots that travel between hosts: a volume made on one host from a
//! snapshot kept on another needs the snapshot's file there first. The
//! control plane reads it from the host that has it, piece by piece
//! ([`Agent::read_snapshot`]), and hands the pieces to the host that needs
//! it ([`Agent::receive_snapshot`]), which takes the file only once its
//! size and SHA-256 are those the source declared
//! ([`Agent::finish_snapshot`]). The file is the snapshot's qcow2 as kept:
//! encrypted under the snapshot's key, which never travels with it.
//!
//! A copy in progress is `snapshots/.<id>.qcow2.tmp`: invisible to
//! `list_snapshots`, removed at the agent's start (a copy cut by a crash
//! starts over from offset 0).

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use sha2::{Digest, Sha256};
use socle_agent_api::{Blob, SnapshotFile};

use crate::volume::{sync_dir_of, validate_snapshot_id};
use crate::{Agent, AgentError};

/// The most one piece may carry (the protocol's requests are capped at
/// 16 MiB, and a piece travels as base64).
pub const MAX_PIECE: u64 = 8 << 20;

fn digest_of(path: &Path) -> Result<SnapshotFile, AgentError> {
    let mut file = std::fs::File::open(path).map_err(|e| AgentError::io("cannot open", path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(|e| AgentError::io("cannot read", path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok(SnapshotFile { size, sha256: hex::encode(hasher.finalize()) })
}

/// Writes `data` at `offset` of the file at `path`, a copy arriving in
/// pieces: offset 0 starts it over; any other offset must be at most where
/// the copy stands (a piece sent again after a lost answer is written
/// again, and the file cut after it). Private to this user.
pub(crate) async fn write_piece(path: std::path::PathBuf, offset: u64, data: Blob, what: String) -> Result<(), AgentError> {
    if data.0.len() as u64 > MAX_PIECE {
        return Err(AgentError::InvalidArgument(format!("{what}: a piece is at most {MAX_PIECE} bytes")));
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| AgentError::io("cannot create", dir, e))?;
    }
    blocking(move || {
        let mut file = std::fs::OpenOptions::new().create(true).write(true).truncate(false).open(&path).map_err(|e| AgentError::io("cannot open", &path, e))?;
        crate::util::set_mode(&path, 0o600)?;
        let have = file.metadata().map_err(|e| AgentError::io("cannot stat", &path, e))?.len();
        if offset > have {
            return Err(AgentError::InvalidArgument(format!("{what}: a piece at {offset} but the copy here stands at {have}; start over from 0")));
        }
        file.set_len(offset).map_err(|e| AgentError::io("cannot truncate", &path, e))?;
        file.seek(SeekFrom::Start(offset)).map_err(|e| AgentError::io("cannot seek", &path, e))?;
        file.write_all(&data.0).map_err(|e| AgentError::io("cannot write", &path, e))?;
        Ok(())
    })
    .await
}

/// Runs file work off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, AgentError> + Send + 'static) -> Result<T, AgentError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| AgentError::InvalidArgument(format!("snapshot copy task failed: {e}")))?
}

impl Agent {
    fn incoming_path(&self, snapshot_id: &str) -> std::path::PathBuf {
        self.snapshots_dir().join(format!(".{snapshot_id}.qcow2.tmp"))
    }

    /// Size and SHA-256 of a snapshot's file.
    pub async fn snapshot_file(&self, snapshot_id: &str) -> Result<SnapshotFile, AgentError> {
        validate_snapshot_id(snapshot_id)?;
        let path = self.snapshot_path(snapshot_id);
        if !path.is_file() {
            return Err(AgentError::SnapshotNotFound(snapshot_id.into()));
        }
        blocking(move || digest_of(&path)).await
    }

    /// Up to `len` bytes (at most [`MAX_PIECE`]) of a snapshot's file from
    /// `offset`; fewer at its end.
    pub async fn read_snapshot(&self, snapshot_id: &str, offset: u64, len: u64) -> Result<Blob, AgentError> {
        validate_snapshot_id(snapshot_id)?;
        let path = self.snapshot_path(snapshot_id);
        let (snapshot_id, len) = (snapshot_id.to_string(), len.min(MAX_PIECE));
        blocking(move || {
            let mut file = match std::fs::File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(AgentError::SnapshotNotFound(snapshot_id)),
                Err(e) => return Err(AgentError::io("cannot open", &path, e)),
            };
            file.seek(SeekFrom::Start(offset)).map_err(|e| AgentError::io("cannot seek", &path, e))?;
            let mut out = Vec::with_capacity(len as usize);
            file.take(len).read_to_end(&mut out).map_err(|e| AgentError::io("cannot read", &path, e))?;
            Ok(Blob(out))
        })
        .await
    }

    /// Writes a piece of a snapshot being copied here. `offset` 0 starts
    /// the copy over; any other offset must be where the copy stands (a
    /// piece sent again after a lost answer is written again).
    pub async fn receive_snapshot(&self, snapshot_id: &str, offset: u64, data: Blob) -> Result<(), AgentError> {
        validate_snapshot_id(snapshot_id)?;
        let _g = self.lock_snapshot(snapshot_id).await;
        if self.snapshot_path(snapshot_id).is_file() {
            return Err(AgentError::VolumeConflict { volume_id: snapshot_id.into(), what: "this host has the snapshot already".into() });
        }
        write_piece(self.incoming_path(snapshot_id), offset, data, format!("snapshot {snapshot_id}")).await
    }

    /// Takes the copied file as the snapshot once it is exactly `expected`
    /// (else the copy is dropped). Idempotent: a host that has the
    /// snapshot with that content answers Ok.
    pub async fn finish_snapshot(&self, snapshot_id: &str, expected: SnapshotFile) -> Result<(), AgentError> {
        validate_snapshot_id(snapshot_id)?;
        let _g = self.lock_snapshot(snapshot_id).await;
        let (incoming, target) = (self.incoming_path(snapshot_id), self.snapshot_path(snapshot_id));
        let snapshot_id = snapshot_id.to_string();
        blocking(move || {
            if target.is_file() && !incoming.exists() {
                let have = digest_of(&target)?;
                return if have == expected {
                    Ok(())
                } else {
                    Err(AgentError::VolumeConflict { volume_id: snapshot_id, what: "this host has another snapshot of that ID".into() })
                };
            }
            let got = digest_of(&incoming)?;
            if got != expected {
                crate::util::remove_file_quiet(&incoming);
                return Err(AgentError::InvalidArgument(format!(
                    "snapshot {snapshot_id}: the copy is {} bytes with SHA-256 {}, not {} bytes with {}; dropped",
                    got.size, got.sha256, expected.size, expected.sha256
                )));
            }
            std::fs::File::open(&incoming).and_then(|f| f.sync_all()).map_err(|e| AgentError::io("cannot sync", &incoming, e))?;
            std::fs::rename(&incoming, &target).map_err(|e| AgentError::io("cannot rename", &incoming, e))?;
            sync_dir_of(&target);
            tracing::info!(snapshot = %snapshot_id, bytes = got.size, "snapshot copied to this host");
            Ok(())
        })
        .await
    }
}

//! Disk images uploaded by users, held on this host by ID until imported.
//! The control plane receives an upload (`ImportImage`), sends it here in
//! pieces ([`Agent::receive_upload`], offsets as for snapshot copies), asks
//! for it to be inspected and imported by ID (the protocol's
//! `inspect_upload` and `import_snapshot` name uploads, never paths), and
//! deletes it once the import is recorded. `uploads/<id>.img`, 0600.

use socle_agent_api::Blob;

use crate::snapshot_copy::write_piece;
use crate::volume::validate_snapshot_id;
use crate::{Agent, AgentError};

impl Agent {
    fn uploads_dir(&self) -> std::path::PathBuf {
        self.state_dir().join("uploads")
    }

    /// The file of upload `upload_id` (checked: an ID, not a path).
    pub fn upload_path(&self, upload_id: &str) -> Result<std::path::PathBuf, AgentError> {
        validate_snapshot_id(upload_id)?;
        Ok(self.uploads_dir().join(format!("{upload_id}.img")))
    }

    /// Writes a piece of an upload arriving here (offset 0 starts it over).
    pub async fn receive_upload(&self, upload_id: &str, offset: u64, data: Blob) -> Result<(), AgentError> {
        let path = self.upload_path(upload_id)?;
        write_piece(path, offset, data, format!("upload {upload_id}")).await
    }

    /// The IDs of the uploads held here, sorted.
    pub fn list_uploads(&self) -> Result<Vec<String>, AgentError> {
        let dir = self.uploads_dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(AgentError::io("cannot list", &dir, e)),
        };
        let mut ids: Vec<String> = entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.strip_suffix(".img").map(str::to_string))
            .filter(|id| validate_snapshot_id(id).is_ok())
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Deletes an upload (gone already is fine).
    pub fn delete_upload(&self, upload_id: &str) -> Result<(), AgentError> {
        let path = self.upload_path(upload_id)?;
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(AgentError::io("cannot delete", &path, e)),
        }
    }
}

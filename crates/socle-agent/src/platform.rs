//! The platform images this host holds, by name: their files live in the
//! agent's state dir (`images/<name>/`), copied there once from the image
//! cache, so that a later rebuild of the cache (a newer kernel package)
//! never changes the base disk under a VM's overlay.

use std::path::{Path, PathBuf};

use socle_agent_api::PlatformImage;

use crate::spec::ImageFiles;
use crate::{Agent, AgentError};

const KERNEL: &str = "vmlinuz";
const INITRD: &str = "initrd.img";
const DISK: &str = "disk.qcow2";

impl Agent {
    /// The files of `image` on this host, made the first time it is asked
    /// for (built from Debian packages, or taken from the image cache).
    pub async fn platform_image(&self, image: PlatformImage) -> Result<ImageFiles, AgentError> {
        let dir = self.images_dir().join(image.name());
        if dir.is_dir() {
            return Ok(files_in(&dir, image));
        }
        let _g = self.inner.platform_lock.lock().await;
        if dir.is_dir() {
            return Ok(files_in(&dir, image));
        }
        let built = match image {
            PlatformImage::SocleTiny => self.build_tiny_image().await?,
            PlatformImage::SocleTinyDisk => self.build_tiny_disk_image().await?,
        };
        // Filled under a temporary name, then renamed: the directory exists
        // only once complete.
        let parent = self.images_dir();
        std::fs::create_dir_all(&parent).map_err(|e| AgentError::io("cannot create", &parent, e))?;
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{}-", image.name()))
            .tempdir_in(&parent)
            .map_err(|e| AgentError::io("cannot create a temporary directory in", &parent, e))?;
        let copy = |from: &Path, name: &str| -> Result<(), AgentError> {
            let to = tmp.path().join(name);
            std::fs::copy(from, &to).map_err(|e| AgentError::io("cannot copy the image file to", &to, e))?;
            // Base files are never written: read-only protects every overlay on them.
            crate::util::set_mode(&to, 0o444)
        };
        if let Some(kernel) = &built.kernel {
            copy(kernel, KERNEL)?;
        }
        if let Some(initrd) = &built.initrd {
            copy(initrd, INITRD)?;
        }
        copy(&built.disk, DISK)?;
        let tmp = tmp.keep();
        std::fs::rename(&tmp, &dir).map_err(|e| AgentError::io("cannot move the image files to", &dir, e))?;
        tracing::info!(image = image.name(), dir = %dir.display(), "platform image ready");
        Ok(files_in(&dir, image))
    }

    fn images_dir(&self) -> PathBuf {
        self.inner.cfg.state_dir.join("images")
    }
}

fn files_in(dir: &Path, image: PlatformImage) -> ImageFiles {
    let kernel = image.has_kernel().then(|| dir.join(KERNEL));
    let initrd = image.has_kernel().then(|| dir.join(INITRD));
    ImageFiles { kernel, initrd, disk: dir.join(DISK), platform: Some(image) }
}

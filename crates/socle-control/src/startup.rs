//! Bringing a cloud up on a data dir: the store, the sealing key, the host
//! agent, the platform image and the default account.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use socle_agent_api::{Host, HostError, HostInfo, PlatformImage, PROTOCOL_VERSION};
use socle_store::hosts as host_store;
use socle_store::placement;
use socle_store::accounts::{self, Quotas};
use socle_store::images::{self as image_store, ImageRow};
use socle_store::{now_iso, Store};
use socle_types::ids::{AccountId, HostId, ImageId};

use crate::identity::{self, NewCredentials};
use crate::ops::images::PLATFORM_ACCOUNT;
use crate::secrets::SecretBox;
use crate::{Cloud, CloudConfig};

pub const DEFAULT_ACCOUNT: &str = "default";

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("data dir {path}: {source}")]
    DataDir { path: String, source: std::io::Error },
    #[error(transparent)]
    Store(#[from] socle_store::StoreError),
    #[error(transparent)]
    Secrets(#[from] crate::secrets::SecretError),
    #[error(transparent)]
    Agent(#[from] HostError),
    #[error("the host agent calls itself {0:?}, which is not a host ID (h-…)")]
    AgentIdentity(String),
    #[error("the host agent speaks protocol v{found}; this control plane speaks v{PROTOCOL_VERSION}")]
    AgentVersion { found: u32 },
    #[error(transparent)]
    Identity(#[from] identity::IdentityError),
    #[error(transparent)]
    Reconcile(#[from] crate::reconciler::ReconcileError),
    #[error("key custody: {0}")]
    Hsm(#[from] crate::hsm::HsmError),
    #[error("the cloud's CA: {0}")]
    Ca(String),
}

fn data_dir_err(path: &Path) -> impl Fn(std::io::Error) -> StartupError + '_ {
    move |source| StartupError::DataDir { path: path.display().to_string(), source }
}

/// The state and keys of a data dir, without the host agent: enough for
/// admin commands such as `socle account create`. The database is
/// `database` (PostgreSQL) when given, else SQLite in the data dir.
pub fn open_identity(data_dir: &Path, database: Option<&str>) -> Result<(Store, SecretBox), StartupError> {
    fs::DirBuilder::new().recursive(true).mode(0o700).create(data_dir).map_err(data_dir_err(data_dir))?;
    let store = match database {
        Some(url) => Store::connect(url)?,
        None => Store::open(&data_dir.join("socle.db"))?,
    };
    let secrets = SecretBox::load_or_create(&data_dir.join("master.key"))?;
    Ok((store, secrets))
}

/// Opens everything a server needs, with `agent` (reached at its endpoint,
/// `unix:PATH`) as its own host — `socle up` — or none: `socle server`,
/// whose hosts all joined.
pub async fn open_cloud(config: CloudConfig, agent: Option<(Arc<dyn Host>, String)>) -> Result<Arc<Cloud>, StartupError> {
    let (store, secrets) = open_identity(&config.data_dir, config.database.as_deref())?;
    // A server with another CA than the cloud's, or none while it has one,
    // refuses to start rather than fail every host call later.
    let dir = config.data_dir.clone();
    store
        .write(move |c| crate::hosts::cloud_ca(c, &dir, false).map(|_| ()))
        .await
        .map_err(|e: socle_types::ApiError| StartupError::Ca(e.internal.unwrap_or(e.details)))?;
    let local = match agent {
        Some((agent, endpoint)) => {
            let info = agent.host_info().await?;
            if info.protocol_version != PROTOCOL_VERSION {
                return Err(StartupError::AgentVersion { found: info.protocol_version });
            }
            tracing::info!(accel = %info.accel, qemu = %info.qemu_version, host = %info.host_id, "host agent ready");
            let local_host = register_local_host(&store, &config, &info, &endpoint).await?;
            for image in PlatformImage::ALL {
                // Built now rather than at the first VM (each host builds its own).
                agent.prepare_platform_image(image).await?;
            }
            Some((local_host, agent))
        }
        None => {
            tracing::info!("no host agent in this server: VMs go to the hosts that joined");
            None
        }
    };
    register_platform_images(&store).await?;
    let keystores = crate::hsm::Keystores::open(&config.data_dir)?;
    let network = match &config.network {
        Some(cfg) => Some(crate::network::Network::new(cfg.clone())),
        None => {
            tracing::warn!("host networking is off: VMs run without NICs");
            None
        }
    };
    let cloud = Cloud::new(config, store, secrets, local, keystores, network);
    // What a crash left is repaired by the server that holds the lease of
    // background work, not by every server that starts.
    crate::reconciler::recover_at_start(&cloud).await?;
    Ok(cloud)
}

/// Records this server's own agent as a host of the cloud (in the first
/// subregion, ready unless an operator cordoned it), with its capacity;
/// what was made before hosts existed becomes its.
async fn register_local_host(store: &Store, config: &CloudConfig, info: &HostInfo, endpoint: &str) -> Result<HostId, StartupError> {
    let host_id = HostId::parse(&info.host_id).map_err(|_| StartupError::AgentIdentity(info.host_id.clone()))?;
    let (vcpus, memory_mib) = config.overcommit.apply(info.capacity);
    let (id, subregion, endpoint) = (host_id.clone(), config.default_subregion(), endpoint.to_string());
    let adopted = store
        .write(move |c| -> Result<usize, socle_store::StoreError> {
            host_store::ensure_local(c, &id, &subregion, &endpoint, &now_iso())?;
            host_store::record_capacity(c, &id, vcpus, memory_mib)?;
            placement::adopt_unplaced(c, &id)
        })
        .await?;
    if adopted > 0 {
        tracing::info!(host = %host_id, rows = adopted, "VMs, volumes and snapshots made before hosts existed are this host's");
    }
    Ok(host_id)
}

/// The platform's public images: socle-tiny booted with a direct kernel,
/// and the same system as a full disk with a bootloader, booted through the
/// BIOS as cloud images are. The local agent prepares their files (other
/// hosts prepare theirs on first use); the catalogue names them.
async fn register_platform_images(store: &Store) -> Result<(), StartupError> {
    for image in PlatformImage::ALL {
        let (owner, name) = (AccountId::from_trusted(PLATFORM_ACCOUNT.to_string()), image.name());
        if store.read(move |c| image_store::get_by_owner_and_name(c, &owner, name)).await?.is_some() {
            continue;
        }
        let row = ImageRow {
            image_id: ImageId::generate(),
            account_id: AccountId::from_trusted(PLATFORM_ACCOUNT.to_string()),
            name: image.name().into(),
            description: platform_description(image).into(),
            state: "available".into(),
            architecture: "x86_64".into(),
            boot_kernel: image.has_kernel().then(|| image.name().to_string()),
            base_image: Some(image.name().to_string()),
            is_public: true,
            created_at: now_iso(),
            // The agent builds socle-tiny's disks at 1 GiB.
            size_gib: 1,
            root_snapshot_id: None,
        };
        store.write(move |c| image_store::insert(c, &row)).await?;
    }
    Ok(())
}

fn platform_description(image: PlatformImage) -> &'static str {
    match image {
        PlatformImage::SocleTiny => "Debian cloud kernel with a busybox userspace; prints 'socle-guest: ready' on its console",
        PlatformImage::SocleTinyDisk => {
            "socle-tiny as a full disk (MBR, SYSLINUX, kernel and initramfs on a FAT partition), booted through the BIOS"
        }
    }
}

/// What `credentials.json` holds.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CredentialsFile {
    #[serde(rename = "AccessKey")]
    pub access_key: String,
    #[serde(rename = "SecretKey")]
    pub secret_key: String,
    #[serde(rename = "Region")]
    pub region: String,
    #[serde(rename = "Endpoint")]
    pub endpoint: String,
}

/// Ensures the default account exists and `credentials.json` holds a valid
/// key for it; returns the file's path. An existing file whose key still
/// works is kept (only its endpoint is refreshed), so restarting never
/// changes a user's credentials.
pub fn ensure_default_credentials(cloud: &Cloud) -> Result<PathBuf, StartupError> {
    let path = cloud.config.data_dir.join("credentials.json");
    let current: Option<CredentialsFile> =
        fs::read(&path).ok().and_then(|b| serde_json::from_slice(&b).ok());
    let still_valid = current.as_ref().is_some_and(|c| {
        cloud
            .store
            .read_sync(|conn| identity::key_for_auth(conn, &cloud.secrets, &c.access_key).map_err(socle_types::ApiError::internal))
            .ok()
            .flatten()
            .is_some_and(|k| k.active && k.secret == c.secret_key)
    });
    let creds = match current {
        Some(c) if still_valid => CredentialsFile { endpoint: cloud.config.endpoint.clone(), ..c },
        _ => {
            let new: NewCredentials = cloud.store.write_sync(|conn| -> Result<_, StartupError> {
                match accounts::get_by_name(conn, DEFAULT_ACCOUNT)? {
                    None => Ok(identity::create_account(conn, &cloud.secrets, DEFAULT_ACCOUNT, Quotas::default())?),
                    Some(acct) => {
                        let (row, secret) = identity::new_access_key(&acct.account_id, &cloud.secrets, None, None);
                        socle_store::access_keys::insert(conn, &row)?;
                        Ok(NewCredentials {
                            account_id: acct.account_id.to_string(),
                            access_key: row.access_key_id.to_string(),
                            secret_key: secret,
                        })
                    }
                }
            })?;
            CredentialsFile {
                access_key: new.access_key,
                secret_key: new.secret_key,
                region: cloud.config.region.clone(),
                endpoint: cloud.config.endpoint.clone(),
            }
        }
    };
    write_private_json(&path, &creds).map_err(data_dir_err(&path))?;
    Ok(path)
}

/// Writes `value` as JSON to `path` with mode 0600, atomically.
pub fn write_private_json<T: serde::Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value).expect("serialisable");
    bytes.push(b'\n');
    write_atomic(path, &bytes, 0o600)
}

/// Writes `bytes` to `path` atomically: into `PATH.tmp`, created with mode
/// `mode` and synced, then renamed over `path`. A crash leaves the old file
/// or the new one, never half of it.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let tmp = written_aside(path, bytes, mode)?;
    fs::rename(&tmp, path).inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })
}

/// Writes `bytes` to a new file beside `path`, named for this writer alone
/// (two processes writing the same file never share a temp file), synced.
pub fn written_aside(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<PathBuf> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.{:016x}.tmp", std::process::id(), rand::random::<u64>()));
    let tmp = PathBuf::from(tmp);
    let mut f = fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
    f.write_all(bytes).and_then(|_| f.sync_all()).inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })?;
    Ok(tmp)
}

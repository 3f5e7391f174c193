//! The embedded keystore: KEKs as files sealed by a master key.
//!
//! ```text
//! DIR/                 0700
//! DIR/master.key       32 random bytes, 0600, created on first open
//! DIR/keks/<id>.kek    0x01 ‖ nonce ‖ AES-256-GCM(master, KEK, aad = "socle-kms/kek/v1\0" ‖ id), 0600
//! ```
//!
//! Why files in the keystore's own directory rather than a sealed blob the
//! caller stores in the database: a [`KekRef`] stays a plain name, the same
//! for both keystores; revocation is "the key object is gone", as on a token
//! (delete the file); and a copy of the database alone holds only wrapped
//! DEKs, not even sealed KEKs. The id is bound as associated data, so a KEK
//! file copied or renamed onto another id does not open. Nothing is cached:
//! every operation reads the file, so a destroyed KEK is refused at once (also
//! by other processes sharing the directory).
//!
//! Back up `master.key` and `keks/` together (and apart from the database):
//! losing either loses the data.

use std::fs;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rand::RngCore;
use zeroize::Zeroizing;

use crate::{
    check_context, dek_aad, gcm_open, gcm_seal, join_blob, random_nonce, split_blob, to_key32,
    DataKey, KekRef, Keystore, KeystoreId, KmsError, WrappedKey, BLOB_LEN, FORMAT_V1, NONCE_LEN,
};

const MASTER: &str = "master.key";
const KEKS: &str = "keks";

pub struct SoftwareKeystore {
    dir: PathBuf,
    master: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for SoftwareKeystore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftwareKeystore").field("dir", &self.dir).finish_non_exhaustive()
    }
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> KmsError + 'a {
    move |source| KmsError::Io { action, path: path.to_path_buf(), source }
}

fn sync_dir(dir: &Path) -> Result<(), KmsError> {
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io("sync", dir))
}

/// KEK ids are file names: `[A-Za-z0-9][A-Za-z0-9._-]{0,63}`.
fn check_id(id: &str) -> Result<(), KmsError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id.as_bytes()[0].is_ascii_alphanumeric()
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(KmsError::Invalid {
            what: "software KEK id",
            reason: format!("{id:?} must be 1-64 of [A-Za-z0-9._-], starting alphanumeric"),
        })
    }
}

fn kek_aad(id: &str) -> Vec<u8> {
    let mut aad = b"socle-kms/kek/v1\0".to_vec();
    aad.extend_from_slice(id.as_bytes());
    aad
}

impl SoftwareKeystore {
    /// Opens (creating if needed) the keystore in `dir`, a directory of its
    /// own (made 0700). Creates the master key
    /// only when there are no sealed KEKs yet: a missing master key next to
    /// existing KEKs is an error (restore it from backup), not a fresh start.
    pub fn open(dir: &Path) -> Result<SoftwareKeystore, KmsError> {
        let keks = dir.join(KEKS);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&keks)
            .map_err(io("create directory", &keks))?;
        // The directory is the keystore's own: tighten it even if it existed.
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(io("chmod 700", dir))?;
        let path = dir.join(MASTER);
        if !path.exists() {
            let sealed = fs::read_dir(&keks)
                .map_err(io("list", &keks))?
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".kek"))
                .count();
            if sealed > 0 {
                return Err(KmsError::Invalid {
                    what: "software keystore",
                    reason: format!(
                        "{} is missing but {sealed} sealed KEK(s) exist in {}: restore the master \
                         key from backup (a new one would not open them)",
                        path.display(),
                        keks.display()
                    ),
                });
            }
            let mut key = Zeroizing::new([0u8; 32]);
            rand::rngs::OsRng.fill_bytes(key.as_mut());
            // create_new: of two processes racing to create it, one wins and
            // the other reads the winner's key below.
            match fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path) {
                Ok(mut f) => {
                    f.write_all(key.as_ref()).map_err(io("write", &path))?;
                    f.sync_all().map_err(io("sync", &path))?;
                    sync_dir(dir)?;
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io("create", &path)(e)),
            }
        }
        let mode = fs::metadata(&path).map_err(io("stat", &path))?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(KmsError::Invalid {
                what: "software keystore",
                reason: format!(
                    "{} is accessible to group or others (mode {:o}); chmod 600 it",
                    path.display(),
                    mode & 0o777
                ),
            });
        }
        let bytes = Zeroizing::new(fs::read(&path).map_err(io("read", &path))?);
        let master = to_key32(&bytes).ok_or_else(|| KmsError::Invalid {
            what: "software keystore",
            reason: format!("{} is not a 32-byte key: damaged or not a Socle key", path.display()),
        })?;
        Ok(SoftwareKeystore { dir: dir.to_path_buf(), master })
    }

    fn kek_path(&self, id: &str) -> PathBuf {
        self.dir.join(KEKS).join(format!("{id}.kek"))
    }

    fn id_of<'a>(&self, kek: &'a KekRef) -> Result<&'a str, KmsError> {
        match kek {
            KekRef::Software { id } => {
                check_id(id)?;
                Ok(id)
            }
            other => Err(KmsError::NoKeystore {
                keystore: other.keystore().to_string(),
                kek: other.to_string(),
            }),
        }
    }

    fn load_kek(&self, id: &str) -> Result<Zeroizing<[u8; 32]>, KmsError> {
        let path = self.kek_path(id);
        let kek = format!("software:{id}");
        let sealed = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(KmsError::KeyRevoked {
                    kek,
                    reason: format!(
                        "{} does not exist (destroyed or never created)",
                        path.display()
                    ),
                })
            }
            Err(e) => return Err(io("read", &path)(e)),
        };
        let broken = || KmsError::IntegrityFailure {
            kek: kek.clone(),
            what: format!("sealed key file {}", path.display()),
        };
        if sealed.len() != BLOB_LEN || sealed[0] != FORMAT_V1 {
            return Err(broken());
        }
        gcm_open(&self.master, &sealed[1..1 + NONCE_LEN], &kek_aad(id), &sealed[1 + NONCE_LEN..])
            .ok_or_else(broken)
    }
}

impl Keystore for SoftwareKeystore {
    fn id(&self) -> KeystoreId {
        KeystoreId::Software
    }

    fn create_kek(&self, label: &str) -> Result<KekRef, KmsError> {
        check_id(label)?;
        let kek_ref = KekRef::Software { id: label.to_string() };
        let path = self.kek_path(label);
        let mut kek = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(kek.as_mut());
        let nonce = random_nonce();
        let sealed =
            join_blob(&nonce, &gcm_seal(&self.master, &nonce, &kek_aad(label), kek.as_ref()));
        // Write a temporary file, then hard-link it into place: the link
        // fails if the id is taken (no overwrite of a live KEK, even by a
        // concurrent create), and the KEK file is never seen half-written.
        let tmp = self.dir.join(KEKS).join(format!(".{label}.{}.tmp", hex8()));
        let write = || -> Result<(), KmsError> {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io("create", &tmp))?;
            f.write_all(&sealed).map_err(io("write", &tmp))?;
            f.sync_all().map_err(io("sync", &tmp))
        };
        let linked = write().and_then(|()| match fs::hard_link(&tmp, &path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                Err(KmsError::KeyExists { kek: kek_ref.to_string() })
            }
            Err(e) => Err(io("link", &path)(e)),
        });
        let _ = fs::remove_file(&tmp);
        linked?;
        sync_dir(&self.dir.join(KEKS))?;
        Ok(kek_ref)
    }

    fn probe(&self, kek: &KekRef) -> Result<(), KmsError> {
        self.load_kek(self.id_of(kek)?).map(drop)
    }

    fn wrap(&self, kek: &KekRef, dek: &DataKey, context: &str) -> Result<WrappedKey, KmsError> {
        check_context(context)?;
        let key = self.load_kek(self.id_of(kek)?)?;
        let nonce = random_nonce();
        let ct = gcm_seal(&key, &nonce, &dek_aad(context), dek.expose_secret());
        Ok(WrappedKey {
            kek: kek.clone(),
            context: context.to_string(),
            blob: join_blob(&nonce, &ct),
        })
    }

    fn unwrap(&self, wrapped: &WrappedKey, context: &str) -> Result<DataKey, KmsError> {
        let (nonce, ct) = split_blob(wrapped, context)?;
        let key = self.load_kek(self.id_of(&wrapped.kek)?)?;
        gcm_open(&key, nonce, &dek_aad(context), ct).map(DataKey::from_bytes).ok_or_else(|| {
            KmsError::IntegrityFailure {
                kek: wrapped.kek.to_string(),
                what: format!("the wrapped key of '{context}'"),
            }
        })
    }

    /// Overwrites the sealed file with zeros before unlinking it (best effort
    /// against recovery of the blocks; not a guarantee on copy-on-write file
    /// systems or SSDs, where only destroying the master key too is final).
    /// Destroying an absent key succeeds: revocation is idempotent.
    fn destroy_kek(&self, kek: &KekRef) -> Result<(), KmsError> {
        let path = self.kek_path(self.id_of(kek)?);
        match fs::OpenOptions::new().write(true).open(&path) {
            Ok(mut f) => {
                f.write_all(&[0u8; BLOB_LEN]).map_err(io("overwrite", &path))?;
                f.sync_all().map_err(io("sync", &path))?;
            }
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io("open", &path)(e)),
        }
        fs::remove_file(&path).map_err(io("remove", &path))?;
        sync_dir(&self.dir.join(KEKS))
    }
}

fn hex8() -> String {
    format!("{:08x}", rand::rngs::OsRng.next_u32())
}

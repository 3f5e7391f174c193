//! KEKs inside a PKCS#11 token (HSM; SoftHSM2 in tests).
//!
//! The KEK is an AES-256 key object (`CKA_TOKEN`, `CKA_PRIVATE`,
//! `CKA_SENSITIVE=true`, `CKA_EXTRACTABLE=false`, only `CKA_ENCRYPT` and
//! `CKA_DECRYPT`) found by its `CKA_LABEL`. DEKs are sealed with `CKM_AES_GCM`
//! through `C_Encrypt`/`C_Decrypt`, in the format described in the crate
//! docs; the disk ID is the GCM associated data, checked inside the token.
//!
//! Sessions: the module is loaded and `C_Initialize`d once per process (a
//! second `C_Initialize` of the same library fails), but every operation
//! looks the token up by label, opens a fresh session, logs in, finds the key
//! and closes the session. Nothing survives between calls that could go
//! stale: a token re-plugged into another slot, a key destroyed or disabled
//! by the customer (from any process), a PIN changed. Closing the last
//! session logs the application out, so the key is usable only during an
//! operation. The cost is a login per operation (a few milliseconds on
//! SoftHSM2), negligible next to attaching a disk.
//!
//! Some modules (SoftHSM2 among them) enumerate tokens only at
//! `C_Initialize`: a token that vanished and came back, or was created by
//! another process, stays invisible. So when a token is not found, the
//! module is re-initialised (at most every 10 s by default, or on demand with
//! [`Pkcs11Keystore::rescan`]). That is safe precisely because no session
//! outlives an operation: a read-write gate lets the re-initialisation wait
//! for the operations in flight.
//!
//! Customer-held keys: the customer generates 32 random bytes outside Socle,
//! keeps them as their backup, and imports them ([`Pkcs11Keystore::import_kek`]
//! or their own tool, e.g. `pkcs11-tool --write-object key.bin --type secrkey
//! --key-type AES:32 --usage-decrypt --sensitive`, never `--extractable`).
//! Revoking = destroying the object (or clearing `CKA_DECRYPT`); restoring =
//! importing the same bytes under the same label (or setting `CKA_DECRYPT`
//! again). A key generated inside the token by [`Keystore::create_kek`] has
//! no backup by design: destroying it is final.

use std::cell::Cell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use zeroize::Zeroize;

use crate::{
    check_context, dek_aad, join_blob, random_nonce, split_blob, to_key32, DataKey, KekRef,
    Keystore, KeystoreId, KmsError, WrappedKey, TAG_LEN,
};

const DEFAULT_RESCAN_INTERVAL: Duration = Duration::from_secs(10);

/// A loaded module: one per module file per process, never unloaded.
struct Module {
    ctx: Pkcs11,
    /// Held shared by every operation for as long as its session lives, and
    /// exclusively to re-initialise the module (see [`Module::rescan`]).
    gate: RwLock<()>,
    last_rescan: Mutex<Instant>,
}

thread_local! {
    /// How many `gate` read guards this thread holds: a thread holding one
    /// must not wait for the write lock (it would wait for itself). Exact
    /// because the guards are `!Send`.
    static GATES_HELD: Cell<usize> = const { Cell::new(0) };
}

/// A shared hold on a module's gate.
struct Gate {
    _shared: RwLockReadGuard<'static, ()>,
}

impl Gate {
    fn enter(m: &'static Module) -> Gate {
        let g = m.gate.read().unwrap_or_else(|p| p.into_inner());
        GATES_HELD.with(|c| c.set(c.get() + 1));
        Gate { _shared: g }
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        GATES_HELD.with(|c| c.set(c.get() - 1));
    }
}

impl Module {
    /// Re-initialises the module (`C_Finalize` + `C_Initialize`) so that it
    /// enumerates its tokens again. Some modules, SoftHSM2 among them, build
    /// their slot list once: a token that vanished (unplugged, directory
    /// moved, network HSM down) is not seen again, nor is a token created by
    /// another process, until then. This is safe only because no session
    /// outlives an operation: the exclusive gate waits for the operations in
    /// flight, and there is nothing else to invalidate. Called when a token
    /// is not found, at most once per `interval`; returns whether it ran.
    fn rescan(&'static self, interval: Duration) -> bool {
        if GATES_HELD.with(Cell::get) > 0 {
            return false;
        }
        let mut last = self.last_rescan.lock().unwrap_or_else(|p| p.into_inner());
        if last.elapsed() < interval {
            return false;
        }
        let _excl = self.gate.write().unwrap_or_else(|p| p.into_inner());
        *last = Instant::now();
        let _ = self.ctx.clone().finalize();
        if let Err(e) = self.ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            // The next operation reports CKR_CRYPTOKI_NOT_INITIALIZED as
            // TokenUnavailable, and the next rescan tries again.
            tracing::warn!("PKCS#11 module re-initialisation failed: {e}");
        }
        true
    }
}

fn load_module(path: &Path) -> Result<&'static Module, KmsError> {
    static MODULES: OnceLock<Mutex<HashMap<PathBuf, &'static Module>>> = OnceLock::new();
    let bad = |reason: String| KmsError::Invalid {
        what: "PKCS#11 module",
        reason: format!("cannot load {}: {reason}", path.display()),
    };
    let canon = std::fs::canonicalize(path).map_err(|e| bad(e.to_string()))?;
    let mut modules =
        MODULES.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
    if let Some(m) = modules.get(&canon) {
        return Ok(m);
    }
    let ctx = Pkcs11::new(&canon).map_err(|e| bad(e.to_string()))?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        // Already initialised by another user of the library in this process.
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(bad(format!("C_Initialize: {e}"))),
    }
    let m: &'static Module = Box::leak(Box::new(Module {
        ctx,
        gate: RwLock::new(()),
        last_rescan: Mutex::new(Instant::now()),
    }));
    modules.insert(canon, m);
    Ok(m)
}

/// A logged-in session on the token. Derefs to [`cryptoki::session::Session`];
/// closed (and the application logged out of the token if it was the last
/// one) on drop. Keep it short-lived: it delays module re-initialisation.
pub struct TokenSession {
    // Field order matters: the session closes before the gate opens.
    session: Session,
    _gate: Gate,
}

impl std::ops::Deref for TokenSession {
    type Target = Session;
    fn deref(&self) -> &Session {
        &self.session
    }
}

/// The keystore of one token. The PIN lives only here (zeroed on drop) and
/// never in a [`KekRef`], an error or `Debug` output.
///
/// Use one keystore per token per process ([`crate::Kms::add`] refuses a
/// second one for the same token label):
/// PKCS#11 login state belongs to the application, not the session, so a
/// second keystore with another PIN would ride on the first one's login.
pub struct Pkcs11Keystore {
    module: &'static Module,
    module_path: PathBuf,
    token_label: String,
    pin: AuthPin,
    rescan_interval: Duration,
}

impl std::fmt::Debug for Pkcs11Keystore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Keystore")
            .field("module", &self.module_path)
            .field("token_label", &self.token_label)
            .field("pin", &"<redacted>")
            .field("rescan_interval", &self.rescan_interval)
            .finish()
    }
}

fn check_label(what: &'static str, label: &str, max: usize) -> Result<(), KmsError> {
    if label.is_empty() || label.len() > max || label.chars().any(char::is_control) {
        return Err(KmsError::Invalid {
            what,
            reason: format!("{label:?} must be 1 to {max} bytes without control characters"),
        });
    }
    Ok(())
}

impl Pkcs11Keystore {
    /// Loads `module` (once per process) for the token labelled `token_label`.
    /// The token need not be present yet: it is looked up at each operation,
    /// so an unreachable customer HSM fails that customer's operations
    /// ([`KmsError::TokenUnavailable`]) without stopping start-up. Read the
    /// PIN from configuration (a 0600 file or a secret manager), not a
    /// command-line argument.
    pub fn open(
        module: &Path,
        token_label: &str,
        user_pin: &str,
    ) -> Result<Pkcs11Keystore, KmsError> {
        check_label("PKCS#11 token label", token_label, 32)?;
        Ok(Pkcs11Keystore {
            module: load_module(module)?,
            module_path: module.to_path_buf(),
            token_label: token_label.to_string(),
            pin: AuthPin::from(user_pin.to_string()),
            rescan_interval: DEFAULT_RESCAN_INTERVAL,
        })
    }

    /// Makes the module enumerate its tokens again now (e.g. after an
    /// operator replaced or reconnected an HSM, or as part of a health
    /// check). Waits for the operations in flight on this module; does
    /// nothing and returns false if this thread holds a [`TokenSession`].
    pub fn rescan(&self) -> bool {
        self.module.rescan(Duration::ZERO)
    }

    /// How often, at most, a missing token makes the module re-enumerate its
    /// tokens (default 10 s). Re-initialising briefly pauses every operation
    /// on the module, so keep this well above the module's `C_Initialize` time.
    pub fn with_rescan_interval(mut self, interval: Duration) -> Pkcs11Keystore {
        self.rescan_interval = interval;
        self
    }

    pub fn token_label(&self) -> &str {
        &self.token_label
    }

    /// The reference of the key labelled `key_label` on this token.
    pub fn kek_ref(&self, key_label: &str) -> KekRef {
        KekRef::Pkcs11 { token_label: self.token_label.clone(), key_label: key_label.to_string() }
    }

    fn name(&self) -> String {
        self.id().to_string()
    }

    /// Maps a PKCS#11 failure to what it means for the caller.
    fn err(&self, op: &'static str, kek: Option<&KekRef>, e: CkError) -> KmsError {
        let keystore = self.name();
        let CkError::Pkcs11(rv, _) = e else {
            return KmsError::Pkcs11 { keystore, op, rv: e.to_string() };
        };
        let reason = format!("{op}: {rv:?}");
        match (rv, kek) {
            (
                RvError::DeviceRemoved
                | RvError::DeviceError
                | RvError::DeviceMemory
                | RvError::TokenNotPresent
                | RvError::TokenNotRecognized
                | RvError::SlotIdInvalid
                | RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::CryptokiNotInitialized,
                _,
            ) => KmsError::TokenUnavailable { keystore, reason },
            (
                RvError::PinIncorrect
                | RvError::PinInvalid
                | RvError::PinLenRange
                | RvError::PinExpired
                | RvError::PinLocked
                | RvError::UserPinNotInitialized,
                _,
            ) => KmsError::AuthFailed { keystore, reason },
            (
                RvError::KeyFunctionNotPermitted
                | RvError::KeyHandleInvalid
                | RvError::ObjectHandleInvalid,
                Some(kek),
            ) => KmsError::KeyRevoked {
                kek: kek.to_string(),
                reason: format!("the key is disabled or gone ({reason})"),
            },
            _ => KmsError::Pkcs11 { keystore, op, rv: format!("{rv:?}") },
        }
    }

    /// A new session on this token, logged in as the user, for
    /// administration and tests (the keystore operations open their own).
    pub fn session(&self) -> Result<TokenSession, KmsError> {
        self.open_session(true)
    }

    fn open_session(&self, rw: bool) -> Result<TokenSession, KmsError> {
        let m = self.module;
        let mut rescanned = false;
        loop {
            let gate = Gate::enter(m);
            let slots =
                m.ctx.get_slots_with_token().map_err(|e| self.err("C_GetSlotList", None, e))?;
            let slot = slots.into_iter().find(|s| {
                m.ctx
                    .get_token_info(*s)
                    .map(|t| t.label().trim_end() == self.token_label)
                    .unwrap_or(false)
            });
            let Some(slot) = slot else {
                drop(gate);
                if !rescanned && m.rescan(self.rescan_interval) {
                    rescanned = true;
                    continue;
                }
                return Err(KmsError::TokenUnavailable {
                    keystore: self.name(),
                    reason: format!("no token with this label in {}", self.module_path.display()),
                });
            };
            let session =
                if rw { m.ctx.open_rw_session(slot) } else { m.ctx.open_ro_session(slot) }
                    .map_err(|e| self.err("C_OpenSession", None, e))?;
            return match session.login(UserType::User, Some(&self.pin)) {
                // Login state is per application and token: another thread's
                // session may already be logged in.
                Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {
                    Ok(TokenSession { session, _gate: gate })
                }
                Err(e) => Err(self.err("C_Login", None, e)),
            };
        }
    }

    fn key_label<'a>(&self, kek: &'a KekRef) -> Result<&'a str, KmsError> {
        match kek {
            KekRef::Pkcs11 { token_label, key_label } if *token_label == self.token_label => {
                check_label("PKCS#11 key label", key_label, 128)?;
                Ok(key_label)
            }
            other => Err(KmsError::NoKeystore {
                keystore: other.keystore().to_string(),
                kek: other.to_string(),
            }),
        }
    }

    fn find_all(&self, session: &Session, label: &str) -> Result<Vec<ObjectHandle>, KmsError> {
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Label(label.as_bytes().to_vec()),
        ];
        session.find_objects(&template).map_err(|e| self.err("C_FindObjects", None, e))
    }

    fn find_key(&self, session: &Session, kek: &KekRef) -> Result<ObjectHandle, KmsError> {
        let label = self.key_label(kek)?;
        let mut found = self.find_all(session, label)?;
        match found.len() {
            1 => Ok(found.remove(0)),
            0 => Err(KmsError::KeyRevoked {
                kek: kek.to_string(),
                reason: "no AES key with this label on the token (destroyed or not imported)"
                    .into(),
            }),
            n => Err(KmsError::Invalid {
                what: "PKCS#11 key label",
                reason: format!(
                    "{n} AES keys are labelled {label:?} on {}: labels must be unique",
                    self.name()
                ),
            }),
        }
    }

    /// Refuses a key that could leave the token, is not AES-256, or is
    /// disabled (`CKA_ENCRYPT`/`CKA_DECRYPT` false).
    fn check_policy(
        &self,
        session: &Session,
        key: ObjectHandle,
        kek: &KekRef,
    ) -> Result<(), KmsError> {
        let attrs = session
            .get_attributes(
                key,
                &[
                    AttributeType::Extractable,
                    AttributeType::Sensitive,
                    AttributeType::ValueLen,
                    AttributeType::Encrypt,
                    AttributeType::Decrypt,
                ],
            )
            .map_err(|e| self.err("C_GetAttributeValue", Some(kek), e))?;
        let (mut extractable, mut sensitive, mut len, mut enc, mut dec) =
            (true, false, 0u64, false, false);
        for a in attrs {
            match a {
                Attribute::Extractable(v) => extractable = v,
                Attribute::Sensitive(v) => sensitive = v,
                Attribute::ValueLen(v) => len = v.into(),
                Attribute::Encrypt(v) => enc = v,
                Attribute::Decrypt(v) => dec = v,
                _ => {}
            }
        }
        if extractable || !sensitive {
            return Err(KmsError::Invalid {
                what: "PKCS#11 key",
                reason: format!(
                    "{kek} can leave the token (CKA_EXTRACTABLE={extractable}, CKA_SENSITIVE={sensitive}); \
                     a KEK must be sensitive and non-extractable"
                ),
            });
        }
        if len != 32 {
            return Err(KmsError::Invalid {
                what: "PKCS#11 key",
                reason: format!("{kek} is {len} bytes long; a KEK must be AES-256"),
            });
        }
        if !enc || !dec {
            return Err(KmsError::KeyRevoked {
                kek: kek.to_string(),
                reason: format!("disabled on the token (CKA_ENCRYPT={enc}, CKA_DECRYPT={dec})"),
            });
        }
        Ok(())
    }

    fn key_template(label: &str) -> Vec<Attribute> {
        vec![
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::Wrap(false),
            Attribute::Unwrap(false),
            Attribute::Sign(false),
            Attribute::Verify(false),
            Attribute::Derive(false),
        ]
    }

    fn create(&self, label: &str, material: Option<&[u8; 32]>) -> Result<KekRef, KmsError> {
        check_label("PKCS#11 key label", label, 128)?;
        let kek = self.kek_ref(label);
        let session = self.open_session(true)?;
        // Not atomic against a concurrent create of the same label; a
        // duplicate is then reported by find_key instead of being used.
        if !self.find_all(&session, label)?.is_empty() {
            return Err(KmsError::KeyExists { kek: kek.to_string() });
        }
        let mut template = Self::key_template(label);
        let result = match material {
            None => {
                template.push(Attribute::ValueLen(32u64.into()));
                session.generate_key(&Mechanism::AesKeyGen, &template)
            }
            Some(m) => {
                template.push(Attribute::Value(m.to_vec()));
                session.create_object(&template)
            }
        };
        for a in template.iter_mut() {
            if let Attribute::Value(v) = a {
                v.zeroize();
            }
        }
        result.map_err(|e| {
            self.err(if material.is_some() { "C_CreateObject" } else { "C_GenerateKey" }, None, e)
        })?;
        Ok(kek)
    }

    /// Imports customer-held key material as a non-extractable KEK labelled
    /// `label` (the restore path after a revocation, or the first binding of
    /// a customer key). Fails if the label is taken.
    pub fn import_kek(&self, label: &str, material: &[u8; 32]) -> Result<KekRef, KmsError> {
        self.create(label, Some(material))
    }
}

impl Keystore for Pkcs11Keystore {
    fn id(&self) -> KeystoreId {
        KeystoreId::Pkcs11 { token_label: self.token_label.clone() }
    }

    /// Generates the key inside the token: it never exists anywhere else and
    /// has no backup.
    fn create_kek(&self, label: &str) -> Result<KekRef, KmsError> {
        self.create(label, None)
    }

    fn probe(&self, kek: &KekRef) -> Result<(), KmsError> {
        let session = self.open_session(false)?;
        let key = self.find_key(&session, kek)?;
        self.check_policy(&session, key, kek)
    }

    fn wrap(&self, kek: &KekRef, dek: &DataKey, context: &str) -> Result<WrappedKey, KmsError> {
        check_context(context)?;
        let session = self.open_session(false)?;
        let key = self.find_key(&session, kek)?;
        // New wrapped keys only under a key that satisfies the policy;
        // unwrap does not re-check, so old data stays reachable.
        self.check_policy(&session, key, kek)?;
        let nonce = random_nonce();
        let mut iv = nonce;
        let aad = dek_aad(context);
        let params = GcmParams::new(&mut iv, &aad, (TAG_LEN as u64 * 8).into())
            .map_err(|e| self.err("GCM parameters", Some(kek), e))?;
        let ct = session
            .encrypt(&Mechanism::AesGcm(params), key, dek.expose_secret())
            .map_err(|e| self.err("C_Encrypt", Some(kek), e))?;
        if ct.len() != 32 + TAG_LEN {
            return Err(KmsError::Pkcs11 {
                keystore: self.name(),
                op: "C_Encrypt",
                rv: format!("AES-GCM returned {} bytes, expected {}", ct.len(), 32 + TAG_LEN),
            });
        }
        Ok(WrappedKey {
            kek: kek.clone(),
            context: context.to_string(),
            blob: join_blob(&nonce, &ct),
        })
    }

    fn unwrap(&self, wrapped: &WrappedKey, context: &str) -> Result<DataKey, KmsError> {
        let (nonce, ct) = split_blob(wrapped, context)?;
        let kek = &wrapped.kek;
        self.key_label(kek)?;
        let session = self.open_session(false)?;
        let key = self.find_key(&session, kek)?;
        let mut iv = nonce.to_vec();
        let aad = dek_aad(context);
        let params = GcmParams::new(&mut iv, &aad, (TAG_LEN as u64 * 8).into())
            .map_err(|e| self.err("GCM parameters", Some(kek), e))?;
        let integrity = || KmsError::IntegrityFailure {
            kek: kek.to_string(),
            what: format!("the wrapped key of '{context}'"),
        };
        let mut pt = match session.decrypt(&Mechanism::AesGcm(params), key, ct) {
            Ok(pt) => pt,
            // A GCM tag mismatch. The standard answer is
            // CKR_ENCRYPTED_DATA_INVALID (or _LEN_RANGE); SoftHSM2 2.6 says
            // CKR_GENERAL_ERROR (its OpenSSL EVP_DecryptFinal failed). The key
            // was just found and the session works, so a general error here
            // is taken as "does not authenticate".
            Err(CkError::Pkcs11(
                RvError::EncryptedDataInvalid
                | RvError::EncryptedDataLenRange
                | RvError::GeneralError,
                _,
            )) => return Err(integrity()),
            Err(e) => return Err(self.err("C_Decrypt", Some(kek), e)),
        };
        let dek = to_key32(&pt).map(DataKey::from_bytes).ok_or_else(integrity);
        pt.zeroize();
        dek
    }

    /// Destroys every AES key with the KEK's label on the token. Succeeds if
    /// there is none (revocation is idempotent).
    fn destroy_kek(&self, kek: &KekRef) -> Result<(), KmsError> {
        let label = self.key_label(kek)?;
        let session = self.open_session(true)?;
        for key in self.find_all(&session, label)? {
            session.destroy_object(key).map_err(|e| self.err("C_DestroyObject", Some(kek), e))?;
        }
        Ok(())
    }
}

//! The PKCS#11 keystore against a real SoftHSM2 token (fixture: `common`).
//!
//! Tests run in parallel without a lock: each uses its own key labels, and
//! the wrong-PIN test has a token to itself, because PKCS#11 login state is
//! per application and token, not per session. Tests that make a whole
//! token vanish live in `token_loss.rs`, another process: SoftHSM2 answers
//! CKR_GENERAL_ERROR to operations on *other* tokens while a token directory
//! disappears under it.

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};

use socle_kms::cryptoki::mechanism::Mechanism;
use socle_kms::cryptoki::object::{
    Attribute, AttributeInfo, AttributeType, KeyType, ObjectClass, ObjectHandle,
};
use socle_kms::cryptoki::session::Session;
use socle_kms::{
    AuditSink, DataKey, KekRef, KeyEvent, KeyOp, Keystore, KeystoreId, Kms, KmsError,
    Pkcs11Keystore, SoftwareKeystore,
};

mod common;
use common::{assert_no_secret, customer_backup, CommandWithin, Hsm, COMMAND_TIMEOUT};

const TOKEN_A: (&str, &str) = ("socle-a", "pin-a-123456");
const TOKEN_B: (&str, &str) = ("socle-b", "pin-b-654321");
const TOKEN_PIN: (&str, &str) = ("socle-pin", "pin-right-2222");

/// The tests share one token directory, and one of them changes it from
/// another process (pkcs11-tool): SoftHSM2 then answers CKR_GENERAL_ERROR to
/// a concurrent C_GenerateKey now and then. One test at a time.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn hsm() -> &'static Hsm {
    static HSM: OnceLock<Hsm> = OnceLock::new();
    HSM.get_or_init(|| Hsm::new("softhsm2-main", &[TOKEN_A, TOKEN_B, TOKEN_PIN]))
}

fn store(token: (&str, &str)) -> Arc<Pkcs11Keystore> {
    let h = hsm();
    Arc::new(Pkcs11Keystore::open(&h.module, token.0, token.1).unwrap())
}

fn find(session: &Session, label: &str) -> Vec<ObjectHandle> {
    session
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .unwrap()
}

/// What a customer does on their own token: delete the key object.
fn destroy_on_token(ks: &Pkcs11Keystore, label: &str) {
    let s = ks.session().unwrap();
    let keys = find(&s, label);
    assert_eq!(keys.len(), 1, "one key labelled {label}");
    s.destroy_object(keys[0]).unwrap();
}

#[test]
fn round_trip_wrong_context_and_tampering() {
    let _serial = serial();
    let ks = store(TOKEN_A);
    let kek = ks.create_kek("rt-generated").unwrap();
    assert_eq!(
        kek,
        KekRef::Pkcs11 { token_label: "socle-a".into(), key_label: "rt-generated".into() }
    );
    assert!(matches!(ks.create_kek("rt-generated"), Err(KmsError::KeyExists { .. })));
    ks.probe(&kek).unwrap();

    let dek = DataKey::generate();
    let w = ks.wrap(&kek, &dek, "vol-1").unwrap();
    assert_eq!(w.blob.len(), 61);
    assert!(!w.blob.windows(32).any(|x| x == dek.expose_secret()));
    assert_eq!(ks.unwrap(&w, "vol-1").unwrap(), dek);

    let e = ks.unwrap(&w, "vol-2").unwrap_err();
    assert!(matches!(e, KmsError::WrongContext { .. }), "{e}");
    // The context is checked by the token too (GCM associated data).
    let mut moved = w.clone();
    moved.context = "vol-2".into();
    let e = ks.unwrap(&moved, "vol-2").unwrap_err();
    assert!(matches!(e, KmsError::IntegrityFailure { .. }), "{e}");

    for i in [1, 12, 13, 40, 60] {
        let mut t = w.clone();
        t.blob[i] ^= 0x80;
        let e = ks.unwrap(&t, "vol-1").unwrap_err();
        assert!(matches!(e, KmsError::IntegrityFailure { .. }), "byte {i}: {e}");
    }
}

#[test]
fn kek_never_leaves_the_token() {
    let _serial = serial();
    let ks = store(TOKEN_A);
    let kek_gen = ks.create_kek("nx-generated").unwrap();
    let backup = customer_backup();
    let kek_imp = ks.import_kek("nx-imported", &backup).unwrap();
    let s = ks.session().unwrap();
    for label in ["nx-generated", "nx-imported"] {
        let key = find(&s, label)[0];
        // C_GetAttributeValue(CKA_VALUE) is refused: CKR_ATTRIBUTE_SENSITIVE.
        let info = s.get_attribute_info(key, &[AttributeType::Value]).unwrap();
        assert!(matches!(info[..], [AttributeInfo::Sensitive]), "{label}: {info:?}");
        let got = s.get_attributes(key, &[AttributeType::Value]).unwrap();
        assert!(!got.iter().any(|a| matches!(a, Attribute::Value(_))), "{label}: value readable");
        let flags = s
            .get_attributes(
                key,
                &[AttributeType::Extractable, AttributeType::Sensitive, AttributeType::Token],
            )
            .unwrap();
        assert_eq!(
            flags,
            vec![Attribute::Extractable(false), Attribute::Sensitive(true), Attribute::Token(true)]
        );
        // The token refuses to relax the policy afterwards.
        assert!(s.update_attributes(key, &[Attribute::Extractable(true)]).is_err(), "{label}");
        assert!(s.update_attributes(key, &[Attribute::Sensitive(false)]).is_err(), "{label}");
        // And refuses to wrap it out under a key we control.
        let wrapper = s
            .generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::Token(false),
                    Attribute::ValueLen(32u64.into()),
                    Attribute::Wrap(true),
                    Attribute::Extractable(true),
                ],
            )
            .unwrap();
        let e = s.wrap_key(&Mechanism::AesKeyWrapPad, wrapper, key).unwrap_err();
        assert!(
            e.to_string().contains("KeyUnextractable")
                || format!("{e:?}").contains("KeyUnextractable"),
            "{e:?}"
        );
    }
    drop(s);
    ks.probe(&kek_gen).unwrap();
    ks.probe(&kek_imp).unwrap();
}

#[test]
fn revoke_by_destroy_then_restore_from_customer_backup() {
    let _serial = serial();
    let ks = store(TOKEN_A);
    let backup = customer_backup();
    let kek = ks.import_kek("cust-1", &backup).unwrap();
    let (d1, d2) = (DataKey::generate(), DataKey::generate());
    let w1 = ks.wrap(&kek, &d1, "vol-1").unwrap();
    let w2 = ks.wrap(&kek, &d2, "vol-2").unwrap();

    // Revocation: the customer deletes the key on their token.
    destroy_on_token(&ks, "cust-1");
    for (w, ctx) in [(&w1, "vol-1"), (&w2, "vol-2")] {
        let e = ks.unwrap(w, ctx).unwrap_err();
        assert!(matches!(e, KmsError::KeyRevoked { .. }), "{e}");
        assert!(e.to_string().starts_with("key pkcs11:socle-a/cust-1 is revoked"), "{e}");
    }
    assert!(matches!(ks.wrap(&kek, &d1, "vol-3"), Err(KmsError::KeyRevoked { .. })));
    assert!(matches!(ks.probe(&kek), Err(KmsError::KeyRevoked { .. })));

    // Other material under the same label is not a restoration.
    ks.import_kek("cust-1", &customer_backup()).unwrap();
    let e = ks.unwrap(&w1, "vol-1").unwrap_err();
    assert!(matches!(e, KmsError::IntegrityFailure { .. }), "{e}");
    ks.destroy_kek(&kek).unwrap();
    ks.destroy_kek(&kek).unwrap(); // idempotent

    // Restoration: the customer re-imports their backup.
    assert_eq!(ks.import_kek("cust-1", &backup).unwrap(), kek);
    assert_eq!(ks.unwrap(&w1, "vol-1").unwrap(), d1);
    assert_eq!(ks.unwrap(&w2, "vol-2").unwrap(), d2);
}

#[test]
fn disable_then_reenable_on_the_token() {
    let _serial = serial();
    let ks = store(TOKEN_A);
    let kek = ks.create_kek("toggle").unwrap();
    let dek = DataKey::generate();
    let w = ks.wrap(&kek, &dek, "vol-1").unwrap();
    let set = |on: bool| {
        let s = ks.session().unwrap();
        let key = find(&s, "toggle")[0];
        s.update_attributes(key, &[Attribute::Encrypt(on), Attribute::Decrypt(on)]).unwrap();
    };
    set(false);
    let e = ks.unwrap(&w, "vol-1").unwrap_err();
    assert!(matches!(e, KmsError::KeyRevoked { .. }), "{e}");
    let e = ks.wrap(&kek, &dek, "vol-2").unwrap_err();
    assert!(matches!(e, KmsError::KeyRevoked { .. }), "{e}");
    assert!(e.to_string().contains("CKA_DECRYPT=false"), "{e}");
    set(true);
    assert_eq!(ks.unwrap(&w, "vol-1").unwrap(), dek);
}

#[test]
fn customer_backup_alone_opens_the_wrapped_keys() {
    let _serial = serial();
    use aes_gcm::aead::{Aead, KeyInit, Payload};
    let ks = store(TOKEN_A);
    let backup = customer_backup();
    let kek = ks.import_kek("escrow", &backup).unwrap();
    let dek = DataKey::generate();
    let w = ks.wrap(&kek, &dek, "vol-9").unwrap();
    // The documented format, with any AES-GCM: no Socle, no token.
    assert_eq!(w.blob[0], 1);
    let pt = aes_gcm::Aes256Gcm::new(backup.as_ref().into())
        .decrypt(
            aes_gcm::Nonce::from_slice(&w.blob[1..13]),
            Payload { msg: &w.blob[13..], aad: b"socle-kms/dek/v1\0vol-9" },
        )
        .unwrap();
    assert_eq!(&pt[..], &dek.expose_secret()[..]);
}

#[test]
fn two_accounts_on_two_keys_are_independent() {
    let _serial = serial();
    let (a, b) = (store(TOKEN_A), store(TOKEN_B));
    let kek1 = a.import_kek("acc-1", &customer_backup()).unwrap();
    let kek2 = b.import_kek("acc-2", &customer_backup()).unwrap();
    let (d1, d2) = (DataKey::generate(), DataKey::generate());
    let w1 = a.wrap(&kek1, &d1, "vol-1").unwrap();
    let w2 = b.wrap(&kek2, &d2, "vol-2").unwrap();
    // One account's wrapped key does not open with the other's KEK.
    let mut stolen = w1.clone();
    stolen.kek = kek2.clone();
    stolen.context = "vol-1".into();
    assert!(matches!(b.unwrap(&stolen, "vol-1"), Err(KmsError::IntegrityFailure { .. })));
    // A store only serves its own token.
    assert!(matches!(a.unwrap(&w2, "vol-2"), Err(KmsError::NoKeystore { .. })));

    destroy_on_token(&a, "acc-1");
    assert!(matches!(a.unwrap(&w1, "vol-1"), Err(KmsError::KeyRevoked { .. })));
    assert_eq!(b.unwrap(&w2, "vol-2").unwrap(), d2, "the other account is untouched");
    assert_eq!(b.wrap(&kek2, &d2, "vol-3").map(|w| w.context).unwrap(), "vol-3");
}

fn pkcs11_tool(args: &[&str]) {
    let h = hsm();
    let out = Command::new("pkcs11-tool")
        .arg("--module")
        .arg(&h.module)
        .args(args)
        .env("SOFTHSM2_CONF", &h.conf)
        .try_output_within(COMMAND_TIMEOUT).unwrap_or_else(|e| panic!("{e}: apt-get install -y opensc"));
    assert!(
        out.status.success(),
        "pkcs11-tool {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The customer manages their key with their own tool, in another process;
/// Socle, running all along, follows at the next operation.
#[test]
fn revocation_and_restoration_from_another_process() {
    let _serial = serial();
    let ks = store(TOKEN_B);
    let dir = tempfile::tempdir().unwrap();
    let backup = customer_backup();
    let key_file = dir.path().join("customer.key");
    std::fs::write(&key_file, backup.as_ref()).unwrap();
    let key_file = key_file.to_str().unwrap();
    let import = [
        "--token-label",
        TOKEN_B.0,
        "--login",
        "--pin",
        TOKEN_B.1,
        "--write-object",
        key_file,
        "--type",
        "secrkey",
        "--key-type",
        "AES:32",
        "--label",
        "ext-1",
        "--usage-decrypt",
        "--sensitive",
        "--private",
    ];
    pkcs11_tool(&import);
    let kek = ks.kek_ref("ext-1");
    ks.probe(&kek).unwrap(); // sensitive, not extractable, encrypt+decrypt
    let dek = DataKey::generate();
    let w = ks.wrap(&kek, &dek, "vol-1").unwrap();

    pkcs11_tool(&[
        "--token-label",
        TOKEN_B.0,
        "--login",
        "--pin",
        TOKEN_B.1,
        "--delete-object",
        "--type",
        "secrkey",
        "--label",
        "ext-1",
    ]);
    let e = ks.unwrap(&w, "vol-1").unwrap_err();
    assert!(matches!(e, KmsError::KeyRevoked { .. }), "{e}");

    pkcs11_tool(&import);
    assert_eq!(ks.unwrap(&w, "vol-1").unwrap(), dek);
}

#[test]
fn unknown_token_and_wrong_pin() {
    let _serial = serial();
    let h = hsm();
    let nowhere = Pkcs11Keystore::open(&h.module, "no-such-token", "x").unwrap();
    let kek = nowhere.kek_ref("k");
    let e = nowhere.wrap(&kek, &DataKey::generate(), "vol-1").unwrap_err();
    assert!(matches!(e, KmsError::TokenUnavailable { .. }), "{e}");

    let right = store(TOKEN_PIN);
    let kek = right.create_kek("k").unwrap();
    let w = right.wrap(&kek, &DataKey::generate(), "vol-1").unwrap();
    drop(right); // no session of ours stays open: the next login is a real one

    let secret_pin = "wrong-pin-987654";
    let wrong = Pkcs11Keystore::open(&h.module, TOKEN_PIN.0, secret_pin).unwrap();
    let e = wrong.unwrap(&w, "vol-1").unwrap_err();
    assert!(matches!(e, KmsError::AuthFailed { .. }), "{e}");
    assert!(e.to_string().contains("PinIncorrect"), "{e}");
    for text in [e.to_string(), format!("{e:?}"), format!("{wrong:?}")] {
        assert!(!text.contains(secret_pin), "PIN shown in {text:?}");
        assert!(!text.contains(TOKEN_PIN.1), "PIN shown in {text:?}");
    }
    assert!(format!("{wrong:?}").contains("<redacted>"));

    let e = Pkcs11Keystore::open(Path::new("/nonexistent/libpkcs11.so"), "t", "p").unwrap_err();
    assert!(e.to_string().contains("/nonexistent/libpkcs11.so"), "{e}");
}

#[derive(Default)]
struct Collect(Mutex<Vec<KeyEvent>>);
impl AuditSink for Collect {
    fn record(&self, e: &KeyEvent) {
        self.0.lock().unwrap().push(e.clone());
    }
}

#[test]
fn kms_routes_and_audits_without_secrets() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let audit = Arc::new(Collect::default());
    let mut kms = Kms::new(audit.clone());
    kms.add(Arc::new(SoftwareKeystore::open(dir.path()).unwrap())).unwrap();
    kms.add(store(TOKEN_A)).unwrap();
    let e = kms.add(store(TOKEN_A)).unwrap_err();
    assert!(e.to_string().contains("configured twice"), "{e}");

    let soft = kms.create_kek(&KeystoreId::Software, "acc-1", "admin:alice").unwrap();
    let (dek, w) = kms.new_data_key(&soft, "vol-1", "acc-1").unwrap();
    assert_eq!(kms.unwrap(&w, "vol-1", "acc-1").unwrap(), dek);
    assert!(kms.unwrap(&w, "vol-9", "acc-1").is_err());

    // The account moves to its own key on the token; a snapshot shares the
    // volume's bytes, hence its DEK, under its own context.
    let hsm_kek = kms
        .create_kek(
            &KeystoreId::Pkcs11 { token_label: TOKEN_A.0.into() },
            "kms-acc-1",
            "admin:alice",
        )
        .unwrap();
    kms.probe(&hsm_kek, "admin:alice").unwrap();
    let snap = kms.rewrap(&w, "vol-1", &hsm_kek, "snap-1", "acc-1").unwrap();
    assert_eq!(kms.unwrap(&snap, "snap-1", "acc-1").unwrap(), dek);

    let stray = KekRef::Pkcs11 { token_label: "elsewhere".into(), key_label: "k".into() };
    let e = kms.wrap(&stray, &dek, "vol-2", "acc-1").unwrap_err();
    assert!(matches!(e, KmsError::NoKeystore { .. }), "{e}");
    kms.destroy_kek(&hsm_kek, "admin:alice").unwrap();
    assert!(matches!(kms.unwrap(&snap, "snap-1", "acc-1"), Err(KmsError::KeyRevoked { .. })));

    let events = audit.0.lock().unwrap().clone();
    let summary: Vec<_> = events
        .iter()
        .map(|e| (e.op, e.actor.as_str(), e.kek.as_str(), e.context.as_deref(), e.error.is_some()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (KeyOp::CreateKek, "admin:alice", "software:acc-1", None, false),
            (KeyOp::Wrap, "acc-1", "software:acc-1", Some("vol-1"), false),
            (KeyOp::Unwrap, "acc-1", "software:acc-1", Some("vol-1"), false),
            (KeyOp::Unwrap, "acc-1", "software:acc-1", Some("vol-9"), true),
            (KeyOp::CreateKek, "admin:alice", "pkcs11:socle-a/kms-acc-1", None, false),
            (KeyOp::Probe, "admin:alice", "pkcs11:socle-a/kms-acc-1", None, false),
            (KeyOp::Unwrap, "acc-1", "software:acc-1", Some("vol-1"), false),
            (KeyOp::Wrap, "acc-1", "pkcs11:socle-a/kms-acc-1", Some("snap-1"), false),
            (KeyOp::Unwrap, "acc-1", "pkcs11:socle-a/kms-acc-1", Some("snap-1"), false),
            (KeyOp::Wrap, "acc-1", "pkcs11:elsewhere/k", Some("vol-2"), true),
            (KeyOp::DestroyKek, "admin:alice", "pkcs11:socle-a/kms-acc-1", None, false),
            (KeyOp::Unwrap, "acc-1", "pkcs11:socle-a/kms-acc-1", Some("snap-1"), true),
        ]
    );
    assert!(events.iter().all(|e| e.unix_ms > 1_700_000_000_000));
    assert_eq!(
        events[3].error.as_deref(),
        Some("the wrapped key belongs to 'vol-1', not to 'vol-9'")
    );
    let json = serde_json::to_string(&events).unwrap();
    assert!(json.contains(r#""op":"unwrap""#), "{json}");
    let master = std::fs::read(dir.path().join("master.key")).unwrap();
    for text in [json, format!("{events:?}"), format!("{kms:?}")] {
        assert_no_secret(&text, dek.expose_secret());
        assert_no_secret(&text, &master);
        assert!(!text.contains(TOKEN_A.1), "PIN in {text}");
    }
}

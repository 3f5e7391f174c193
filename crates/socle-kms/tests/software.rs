//! The software keystore, on a real directory.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use socle_kms::{DataKey, KekRef, Keystore, KmsError, SoftwareKeystore};

mod common;
use common::assert_no_secret;

fn mode(p: &std::path::Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn round_trip_and_bindings() {
    let dir = tempfile::tempdir().unwrap();
    let ks = SoftwareKeystore::open(dir.path()).unwrap();
    let kek = ks.create_kek("acc-1").unwrap();
    assert_eq!(kek, KekRef::Software { id: "acc-1".into() });
    ks.probe(&kek).unwrap();

    let dek = DataKey::generate();
    let w = ks.wrap(&kek, &dek, "vol-1").unwrap();
    assert_eq!(w.blob.len(), 61);
    assert!(!w.blob.windows(32).any(|x| x == dek.expose_secret()), "DEK in clear in the blob");
    assert_eq!(ks.unwrap(&w, "vol-1").unwrap(), dek);
    // Two wraps of one DEK differ (fresh nonce).
    assert_ne!(ks.wrap(&kek, &dek, "vol-1").unwrap().blob, w.blob);

    // Wrong context: reported as such...
    let e = ks.unwrap(&w, "vol-2").unwrap_err();
    assert!(matches!(e, KmsError::WrongContext { .. }), "{e}");
    assert_eq!(e.to_string(), "the wrapped key belongs to 'vol-1', not to 'vol-2'");
    // ...and editing the stored context does not help: it is in the AAD.
    let mut moved = w.clone();
    moved.context = "vol-2".into();
    let e = ks.unwrap(&moved, "vol-2").unwrap_err();
    assert!(matches!(e, KmsError::IntegrityFailure { .. }), "{e}");

    // Any flipped bit (version, nonce, ciphertext, tag) is refused.
    for i in [0, 1, 12, 13, 40, 60] {
        let mut t = w.clone();
        t.blob[i] ^= 0x01;
        let e = ks.unwrap(&t, "vol-1").unwrap_err();
        assert!(matches!(e, KmsError::IntegrityFailure { .. }), "byte {i}: {e}");
    }
    let mut short = w.clone();
    short.blob.pop();
    assert!(matches!(ks.unwrap(&short, "vol-1"), Err(KmsError::IntegrityFailure { .. })));

    // Another KEK of the same store does not open it.
    let other = ks.create_kek("acc-2").unwrap();
    let mut swapped = w.clone();
    swapped.kek = other;
    let e = ks.unwrap(&swapped, "vol-1").unwrap_err();
    assert!(matches!(e, KmsError::IntegrityFailure { .. }), "{e}");
    assert!(e.to_string().contains("software:acc-2"), "{e}");
}

#[test]
fn sealed_kek_survives_reopen_and_needs_the_master_key() {
    let dir = tempfile::tempdir().unwrap();
    let dek = DataKey::generate();
    let (kek, w) = {
        let ks = SoftwareKeystore::open(dir.path()).unwrap();
        let kek = ks.create_kek("acc-1").unwrap();
        let w = ks.wrap(&kek, &dek, "vol-1").unwrap();
        (kek, w)
    };
    let master = dir.path().join("master.key");
    let file = dir.path().join("keks/acc-1.kek");
    assert_eq!(mode(dir.path()), 0o700);
    assert_eq!(mode(&master), 0o600);
    assert_eq!(mode(&file), 0o600);
    assert_eq!(fs::read(&master).unwrap().len(), 32);
    assert_eq!(fs::read(&file).unwrap().len(), 61);
    // Only our own file is left (no temporary from the atomic create).
    assert_eq!(fs::read_dir(dir.path().join("keks")).unwrap().count(), 1);

    // Reopened (new process in real life): same result.
    let ks = SoftwareKeystore::open(dir.path()).unwrap();
    assert_eq!(ks.unwrap(&w, "vol-1").unwrap(), dek);
    drop(ks);

    // The sealed KEK file moved onto another id does not open (id is the AAD).
    fs::copy(&file, dir.path().join("keks/acc-9.kek")).unwrap();
    let ks = SoftwareKeystore::open(dir.path()).unwrap();
    let e = ks.probe(&KekRef::Software { id: "acc-9".into() }).unwrap_err();
    assert!(matches!(e, KmsError::IntegrityFailure { .. }), "{e}");
    drop(ks);

    // Without the master key, the keystore refuses to start afresh...
    let saved = fs::read(&master).unwrap();
    fs::remove_file(&master).unwrap();
    let e = SoftwareKeystore::open(dir.path()).unwrap_err();
    assert!(e.to_string().contains("restore the master key"), "{e}");

    // ...and another master key cannot read the sealed KEK.
    fs::write(&master, [7u8; 32]).unwrap();
    fs::set_permissions(&master, fs::Permissions::from_mode(0o600)).unwrap();
    let ks = SoftwareKeystore::open(dir.path()).unwrap();
    let e = ks.unwrap(&w, "vol-1").unwrap_err();
    assert!(matches!(e, KmsError::IntegrityFailure { .. }), "{e}");
    assert!(e.to_string().contains("sealed key file"), "{e}");
    drop(ks);

    // A master key readable by others is refused.
    fs::write(&master, &saved).unwrap();
    fs::set_permissions(&master, fs::Permissions::from_mode(0o644)).unwrap();
    let e = SoftwareKeystore::open(dir.path()).unwrap_err();
    assert!(e.to_string().contains("chmod 600"), "{e}");
    fs::set_permissions(&master, fs::Permissions::from_mode(0o600)).unwrap();
    let ks = SoftwareKeystore::open(dir.path()).unwrap();
    assert_eq!(ks.unwrap(&w, "vol-1").unwrap(), dek, "the original master key still works");
    let _ = kek;
}

#[test]
fn destroy_revokes_and_labels_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let ks = SoftwareKeystore::open(dir.path()).unwrap();
    let kek = ks.create_kek("acc-1").unwrap();
    let e = ks.create_kek("acc-1").unwrap_err();
    assert!(matches!(e, KmsError::KeyExists { .. }), "{e}");
    let dek = DataKey::generate();
    let w = ks.wrap(&kek, &dek, "vol-1").unwrap();

    ks.destroy_kek(&kek).unwrap();
    assert!(!dir.path().join("keks/acc-1.kek").exists());
    let e = ks.unwrap(&w, "vol-1").unwrap_err();
    assert!(matches!(e, KmsError::KeyRevoked { .. }), "{e}");
    assert!(e.to_string().starts_with("key software:acc-1 is revoked"), "{e}");
    assert!(matches!(ks.wrap(&kek, &dek, "vol-2"), Err(KmsError::KeyRevoked { .. })));
    ks.destroy_kek(&kek).unwrap(); // idempotent

    // A new key under the old name does not resurrect the data.
    let again = ks.create_kek("acc-1").unwrap();
    assert!(matches!(ks.unwrap(&w, "vol-1"), Err(KmsError::IntegrityFailure { .. })));
    assert_eq!(again, kek);

    for bad in ["", "../x", "a/b", ".hidden", "x y", &"a".repeat(65)] {
        let e = ks.create_kek(bad).unwrap_err();
        assert!(matches!(e, KmsError::Invalid { .. }), "{bad:?}: {e}");
        let e = ks.probe(&KekRef::Software { id: bad.to_string() }).unwrap_err();
        assert!(matches!(e, KmsError::Invalid { .. }), "{bad:?}: {e}");
    }
    let e = ks.wrap(&kek, &dek, "").unwrap_err();
    assert!(matches!(e, KmsError::Invalid { what: "context", .. }), "{e}");
    let e =
        ks.probe(&KekRef::Pkcs11 { token_label: "t".into(), key_label: "k".into() }).unwrap_err();
    assert!(matches!(e, KmsError::NoKeystore { .. }), "{e}");
}

#[test]
fn no_key_bytes_in_debug_or_errors() {
    let dir = tempfile::tempdir().unwrap();
    let ks = SoftwareKeystore::open(dir.path()).unwrap();
    let kek = ks.create_kek("acc-1").unwrap();
    let dek = DataKey::generate();
    let w = ks.wrap(&kek, &dek, "vol-1").unwrap();
    let master = fs::read(dir.path().join("master.key")).unwrap();

    let mut texts = vec![
        format!("{dek:?}"),
        format!("{ks:?}"),
        format!("{w:?}"),
        serde_json::to_string(&w).unwrap(),
    ];
    let mut t = w.clone();
    t.blob[20] ^= 1;
    for e in [
        ks.unwrap(&w, "vol-2").unwrap_err(),
        ks.unwrap(&t, "vol-1").unwrap_err(),
        ks.create_kek("acc-1").unwrap_err(),
    ] {
        texts.push(e.to_string());
        texts.push(format!("{e:?}"));
    }
    fs::write(dir.path().join("keks/acc-1.kek"), b"garbage").unwrap();
    let e = ks.unwrap(&w, "vol-1").unwrap_err();
    texts.push(e.to_string());
    texts.push(format!("{e:?}"));
    for text in &texts {
        assert_no_secret(text, dek.expose_secret());
        assert_no_secret(text, &master);
    }
    assert!(!format!("{ks:?}").contains("master:"), "{ks:?}");
}

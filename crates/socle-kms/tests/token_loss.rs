//! A whole token becomes unreachable, then comes back: its own process and
//! token directory, because SoftHSM2 disturbs operations on other tokens
//! while a token directory disappears under it.
//!
//! SoftHSM2 enumerates tokens at `C_Initialize` and does not notice by
//! itself that a token's directory vanished (a real HSM answers
//! CKR_DEVICE_REMOVED / CKR_TOKEN_NOT_PRESENT, also mapped to
//! TokenUnavailable), so the test asks for a re-enumeration with
//! `rescan()`. The way back needs no help: a token that is not found makes
//! the keystore re-enumerate (here at once, by default at most every 10 s).

use std::sync::OnceLock;
use std::time::Duration;

use socle_kms::{DataKey, Keystore, KmsError, Pkcs11Keystore};

mod common;
use common::{customer_backup, init_token, softhsm2_util, Hsm};

const TOKEN: (&str, &str) = ("socle-gone", "pin-gone-1111");
const OTHER: (&str, &str) = ("socle-stays", "pin-stays-2222");

fn hsm() -> &'static Hsm {
    static HSM: OnceLock<Hsm> = OnceLock::new();
    HSM.get_or_init(|| Hsm::new("softhsm2-token-loss", &[TOKEN, OTHER]))
}

/// The directory holding one SoftHSM2 token (`tokens/<uuid>/`).
fn token_dir(label: &str) -> std::path::PathBuf {
    let mut found: Vec<_> = std::fs::read_dir(&hsm().tokens)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|d| {
            let obj = std::fs::read(d.join("token.object")).unwrap_or_default();
            obj.windows(label.len()).any(|w| w == label.as_bytes())
        })
        .collect();
    assert_eq!(found.len(), 1, "one token directory for {label}");
    found.remove(0)
}

/// One test, in steps: they share the token and must not interleave.
#[test]
fn token_unreachable_then_back_then_replaced() {
    let h = hsm();
    let ks = Pkcs11Keystore::open(&h.module, TOKEN.0, TOKEN.1)
        .unwrap()
        .with_rescan_interval(Duration::ZERO);
    let other = Pkcs11Keystore::open(&h.module, OTHER.0, OTHER.1).unwrap();
    let backup = customer_backup();
    let kek = ks.import_kek("k", &backup).unwrap();
    let other_kek = other.create_kek("k").unwrap();
    let dek = DataKey::generate();
    let w = ks.wrap(&kek, &dek, "vol-1").unwrap();
    let w_other = other.wrap(&other_kek, &dek, "vol-2").unwrap();

    // 1. Unplugged (the token's directory moves away).
    let dir = token_dir(TOKEN.0);
    // Out of the token directory: SoftHSM2 loads any directory in it.
    let away = h.tokens.parent().unwrap().join("unplugged");
    std::fs::rename(&dir, &away).unwrap();
    assert!(ks.rescan());
    let e = ks.unwrap(&w, "vol-1").unwrap_err();
    assert!(matches!(e, KmsError::TokenUnavailable { .. }), "{e}");
    assert_eq!(
        e.to_string(),
        format!(
            "PKCS#11 token 'socle-gone' is unavailable: no token with this label in {}",
            h.module.display()
        )
    );
    assert!(matches!(ks.probe(&kek), Err(KmsError::TokenUnavailable { .. })));
    assert_eq!(other.unwrap(&w_other, "vol-2").unwrap(), dek, "other tokens keep working");

    // 2. Plugged back: found again without anyone calling rescan().
    std::fs::rename(&away, &dir).unwrap();
    assert_eq!(ks.unwrap(&w, "vol-1").unwrap(), dek);

    // 3. Destroyed (another process deletes the token), then replaced by a
    //    new token under the same label, also from another process: the
    //    key is absent until the customer re-imports their backup.
    softhsm2_util(&h.conf, &["--delete-token", "--token", TOKEN.0]);
    assert!(ks.rescan());
    assert!(matches!(ks.unwrap(&w, "vol-1"), Err(KmsError::TokenUnavailable { .. })));
    init_token(&h.conf, TOKEN);
    let e = ks.unwrap(&w, "vol-1").unwrap_err();
    assert!(matches!(e, KmsError::KeyRevoked { .. }), "new token, key not restored yet: {e}");
    ks.import_kek("k", &backup).unwrap();
    assert_eq!(ks.unwrap(&w, "vol-1").unwrap(), dek);
    assert_eq!(other.unwrap(&w_other, "vol-2").unwrap(), dek);

    // 4. Re-initialising while other threads work on the module: the gate
    //    waits for their operations, none fails.
    std::thread::scope(|scope| {
        for t in 0..4 {
            let (other, other_kek, dek) = (&other, &other_kek, &dek);
            scope.spawn(move || {
                for i in 0..25 {
                    let ctx = format!("vol-{t}-{i}");
                    let w = other.wrap(other_kek, dek, &ctx).unwrap();
                    assert_eq!(&other.unwrap(&w, &ctx).unwrap(), dek);
                }
            });
        }
        for _ in 0..10 {
            assert!(ks.rescan());
            std::thread::sleep(Duration::from_millis(5));
        }
    });

    // A thread holding a session cannot re-initialise (it would wait for
    // itself); other threads wait for that session to close.
    let s = other.session().unwrap();
    assert!(!ks.rescan());
    drop(s);
    assert!(ks.rescan());
}

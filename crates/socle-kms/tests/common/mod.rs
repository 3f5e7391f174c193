//! A SoftHSM2 token directory for one test binary.
//!
//! SoftHSM2 reads `SOFTHSM2_CONF` when the module is initialised, and every
//! test of a binary shares one process, hence one module. So each binary
//! builds one token directory (under `CARGO_TARGET_TMPDIR`, named per binary
//! and wiped at start), creates its tokens with `softhsm2-util`, sets the
//! variable, and only then may a test load the module: call `Hsm::new` from
//! a `OnceLock` that every test goes through first. Cargo runs test binaries
//! one after another, so binaries never share a token directory.
//!
//! A missing SoftHSM2 is a failure with instructions, never a skip.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use socle_kms::DataKey;
pub use socle_testkit::CommandWithin;

/// How long softhsm2-util or pkcs11-tool may take.
pub const COMMAND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
use zeroize::Zeroizing;

pub const DEFAULT_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
pub const SO_PIN: &str = "so-pin-0000";

pub struct Hsm {
    pub module: PathBuf,
    pub conf: PathBuf,
    pub tokens: PathBuf,
}

impl Hsm {
    /// `tokens`: (label, user PIN) of the tokens to create.
    pub fn new(name: &str, tokens: &[(&str, &str)]) -> Hsm {
        let module = PathBuf::from(
            std::env::var("SOCLE_TEST_PKCS11_MODULE").unwrap_or(DEFAULT_MODULE.into()),
        );
        assert!(
            module.exists(),
            "the SoftHSM2 PKCS#11 module {} is missing: these tests need a real token. \
             Install it with `apt-get install -y softhsm2` (scripts/install-deps.sh does), \
             or point SOCLE_TEST_PKCS11_MODULE at another module",
            module.display()
        );
        // One directory per process: test runners such as nextest run each
        // test in a process of its own, at the same time as others.
        let dir = std::env::temp_dir().join(format!("socle-kms-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let tokens_dir = dir.join("tokens");
        std::fs::create_dir_all(&tokens_dir).unwrap();
        let conf = dir.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
                tokens_dir.display()
            ),
        )
        .unwrap();
        for t in tokens {
            init_token(&conf, *t);
        }
        std::env::set_var("SOFTHSM2_CONF", &conf);
        Hsm { module, conf, tokens: tokens_dir }
    }
}

pub fn softhsm2_util(conf: &Path, args: &[&str]) {
    let out = Command::new("softhsm2-util")
        .args(args)
        .env("SOFTHSM2_CONF", conf)
        .try_output_within(COMMAND_TIMEOUT).unwrap_or_else(|e| panic!("{e}: apt-get install -y softhsm2"));
    assert!(
        out.status.success(),
        "softhsm2-util {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn init_token(conf: &Path, (label, pin): (&str, &str)) {
    softhsm2_util(
        conf,
        &["--init-token", "--free", "--label", label, "--so-pin", SO_PIN, "--pin", pin],
    );
}

/// Key material a customer generates outside Socle and keeps as backup.
pub fn customer_backup() -> Zeroizing<[u8; 32]> {
    let mut k = Zeroizing::new([0u8; 32]);
    k.copy_from_slice(DataKey::generate().expose_secret());
    k
}

/// No form of `secret` (hex, base64, a `Debug` byte list) appears in `text`.
pub fn assert_no_secret(text: &str, secret: &[u8]) {
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let b64 = base64::engine::general_purpose::STANDARD.encode(secret);
    let list = format!("{:?}", &secret[..8]);
    assert!(!text.to_lowercase().contains(&hex), "hex key bytes in {text:?}");
    assert!(!text.contains(&b64[..20]), "base64 key bytes in {text:?}");
    assert!(!text.contains(list.trim_end_matches(']')), "key bytes as a list in {text:?}");
}

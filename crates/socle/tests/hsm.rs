//! Customer-held keys in a real PKCS#11 token (SoftHSM2): binding an account
//! re-wraps its data keys under the customer's key; revoking that key on the
//! token makes the account's disks unusable (crypto-shredding) while other
//! accounts run on; re-importing it from the customer's backup restores them.
//!
//! Its own test binary: SOFTHSM2_CONF is process-wide.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const TOKEN: &str = "customer";
const PIN: &str = "5678";
const KEY: &str = "acme-kek";
const T: Duration = Duration::from_secs(120);

fn run(cmd: &mut Command) -> String {
    let out = socle_testkit::try_output_within(cmd, CLI_TIMEOUT).unwrap_or_else(|e| panic!("{e} (apt-get install softhsm2 opensc)"));
    assert!(out.status.success(), "{cmd:?} failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn pkcs11_tool(args: &[&str]) {
    run(Command::new("pkcs11-tool").args(["--module", MODULE, "--token-label", TOKEN, "--login", "--pin", PIN]).args(args));
}

/// The customer imports their key material (kept in their backup) into the token.
fn import_customer_key(backup: &Path) {
    pkcs11_tool(&[
        "--write-object", backup.to_str().unwrap(), "--type", "secrkey", "--key-type", "AES:32",
        "--label", KEY, "--usage-decrypt", "--sensitive",
    ]);
}

fn revoke_customer_key() {
    pkcs11_tool(&["--delete-object", "--type", "secrkey", "--label", KEY]);
}

fn socle(cloud: &TestCloud, args: &[&str]) -> String {
    run(cloud.socle().args(args).arg("--data-dir").arg(cloud.data_dir()))
}

fn volume(c: &Creds, id: &str) -> Value {
    call(c, "ReadVolumes", json!({"Filters": {"VolumeIds": [id]}})).ok()["Volumes"][0].clone()
}

fn wait_volume(c: &Creds, id: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + T;
    loop {
        let v = volume(c, id);
        if pred(&v) {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "volume {id} never reached the expected state: {v}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn available(v: &Value) -> bool {
    v["State"] == "available"
}

fn attached(v: &Value) -> bool {
    v["State"] == "in-use" && v["LinkedVolumes"][0]["State"] == "attached"
}

#[test]
fn revoking_the_customer_key_shreds_only_that_account() {
    assert!(Path::new(MODULE).exists(), "SoftHSM2 is missing: apt-get install softhsm2 opensc");
    // A token of our own, before the server loads the module.
    let hsm = tempfile::tempdir().unwrap();
    let tokens = hsm.path().join("tokens");
    std::fs::create_dir(&tokens).unwrap();
    let conf = hsm.path().join("softhsm2.conf");
    std::fs::write(&conf, format!("directories.tokendir = {}\nobjectstore.backend = file\n", tokens.display())).unwrap();
    std::env::set_var("SOFTHSM2_CONF", &conf);
    run(Command::new("softhsm2-util").args(["--init-token", "--free", "--label", TOKEN, "--so-pin", "1234", "--pin", PIN]));
    let backup = hsm.path().join("customer-key.bin");
    std::fs::write(&backup, (0..32u8).map(|i| i.wrapping_mul(37).wrapping_add(11)).collect::<Vec<u8>>()).unwrap();
    import_customer_key(&backup);
    let pin_file = hsm.path().join("pin");
    std::fs::write(&pin_file, PIN).unwrap();

    let cloud = TestCloud::start();
    let other = cloud.creds.clone();
    let acme = cloud.new_account("acme");
    let image = cloud.tiny_image();

    // A volume made before the binding (software KEK) is re-wrapped by it.
    let early = call(&acme, "CreateVolume", json!({"SubregionName": "eu-west-2a", "Size": 1})).ok()["Volume"]["VolumeId"].as_str().unwrap().to_string();
    wait_volume(&acme, &early, available);
    socle(&cloud, &["account", "register-token", "--label", TOKEN, "--module", MODULE, "--pin-file", pin_file.to_str().unwrap()]);
    let bound = socle(&cloud, &["account", "bind-key", "acme", "--token", TOKEN, "--key-label", KEY]);
    assert!(bound.contains("1 data keys re-wrapped"), "{bound}");

    // Bound: new volumes, links and boots work through the HSM.
    let vol = call(&acme, "CreateVolume", json!({"SubregionName": "eu-west-2a", "Size": 1})).ok()["Volume"]["VolumeId"].as_str().unwrap().to_string();
    wait_volume(&acme, &vol, available);
    let vm = call(&acme, "CreateVms", json!({"ImageId": image, "VmType": SMALL})).ok()["Vms"][0]["VmId"].as_str().unwrap().to_string();
    wait_state(&acme, std::slice::from_ref(&vm), "running", T);
    call(&acme, "LinkVolume", json!({"VmId": vm, "VolumeId": vol, "DeviceName": "/dev/xvdb"})).ok();
    wait_volume(&acme, &vol, attached);
    wait_console(&acme, &vm, &format!("vdb serial={vol}"), 1, T);
    let other_vol = call(&other, "CreateVolume", json!({"SubregionName": "eu-west-2a", "Size": 1})).ok()["Volume"]["VolumeId"].as_str().unwrap().to_string();
    wait_volume(&other, &other_vol, available);

    // Revoked: acme's disks are unusable, with a clear error.
    revoke_customer_key();
    call(&acme, "StopVms", json!({"VmIds": [vm]})).ok();
    wait_state(&acme, std::slice::from_ref(&vm), "stopped", T);
    call(&acme, "StartVms", json!({"VmIds": [vm]})).ok();
    let stopped = wait_state(&acme, std::slice::from_ref(&vm), "stopped", T);
    assert!(stopped[0]["StateReason"].as_str().unwrap().contains("KeyUnavailable"), "{}", stopped[0]);
    let err = call(&acme, "LinkVolume", json!({"VmId": vm, "VolumeId": early, "DeviceName": "/dev/xvdc"})).expect_error(400, "6003");
    assert!(err["Errors"][0]["Details"].as_str().unwrap().contains("unavailable"), "{err}");
    call(&acme, "CreateVolume", json!({"SubregionName": "eu-west-2a", "Size": 1})).expect_error(400, "6003");
    assert_eq!(volume(&acme, &early)["State"], "available", "a refused link changed the volume");

    // The rest of the cloud runs on.
    let other_vm = call(&other, "CreateVms", json!({"ImageId": image, "VmType": SMALL})).ok()["Vms"][0]["VmId"].as_str().unwrap().to_string();
    wait_state(&other, std::slice::from_ref(&other_vm), "running", T);
    call(&other, "LinkVolume", json!({"VmId": other_vm, "VolumeId": other_vol, "DeviceName": "/dev/xvdb"})).ok();
    wait_volume(&other, &other_vol, attached);

    // Restored from the customer's backup: everything works again.
    import_customer_key(&backup);
    call(&acme, "StartVms", json!({"VmIds": [vm]})).ok();
    wait_state(&acme, std::slice::from_ref(&vm), "running", T);
    wait_volume(&acme, &vol, attached);
    call(&acme, "LinkVolume", json!({"VmId": vm, "VolumeId": early, "DeviceName": "/dev/xvdc"})).ok();
    wait_volume(&acme, &early, attached);
    wait_console(&acme, &vm, &format!("serial={early}"), 1, T);

    for (c, v) in [(&acme, &vm), (&other, &other_vm)] {
        call(c, "DeleteVms", json!({"VmIds": [v]})).ok();
    }
    wait_state(&acme, &[vm], "terminated", T);
    wait_state(&other, &[other_vm], "terminated", T);
}

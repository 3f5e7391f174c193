//! Accounts, keys and secrets: secrets are sealed at rest and never logged;
//! terminated VMs are forgotten after the retention period.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

fn file_contains(path: &std::path::Path, needle: &str) -> bool {
    let bytes = std::fs::read(path).unwrap_or_default();
    bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn secrets_are_sealed_at_rest_and_never_logged() {
    let mut cloud = TestCloud::start();
    let c = cloud.creds.clone();
    let alice = cloud.new_account("alice");
    let created = call(&alice, "CreateAccessKey", json!({"Tag": "ci"})).ok();
    let second = Creds {
        access_key: created["AccessKey"]["AccessKeyId"].as_str().unwrap().into(),
        secret_key: created["AccessKey"]["SecretKey"].as_str().unwrap().into(),
        ..alice.clone()
    };
    assert_eq!(second.secret_key.len(), 40);
    // The new key works; a wrong secret and an unknown key do not.
    call(&second, "ReadVms", json!({})).ok();
    let wrong = Creds { secret_key: "x".repeat(40), ..second.clone() };
    call(&wrong, "ReadVms", json!({})).expect_error(401, "1");
    let unknown = Creds { access_key: "A".repeat(20), ..second.clone() };
    call(&unknown, "ReadVms", json!({})).expect_error(401, "1");
    // Stop cleanly so the WAL is checkpointed into the database file, then look.
    cloud.stop_clean();
    let dir = cloud.data_dir();
    let secrets = [&c.secret_key, &alice.secret_key, &second.secret_key];
    for secret in secrets {
        for file in ["socle.db", "socle.db-wal", "server.log"] {
            assert!(!file_contains(&dir.join(file), secret), "a secret key is readable in {file}");
        }
    }
    match &cloud.database {
        // The access key IDs are there (sealed secrets are bound to them).
        None => assert!(file_contains(&dir.join("socle.db"), &second.access_key) || file_contains(&dir.join("socle.db-wal"), &second.access_key)),
        // PostgreSQL: what the database holds, as its own client reads it.
        Some(url) => {
            let store = socle_store::Store::connect(url).unwrap();
            let rows = store
                .read_sync(|c| {
                    c.query_map("SELECT access_key_id, secret_sealed FROM access_keys", (), |r| {
                        Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
                    })
                })
                .unwrap();
            assert!(rows.iter().any(|(id, _)| *id == second.access_key));
            for (_, sealed) in &rows {
                for secret in secrets {
                    assert!(!sealed.windows(secret.len()).any(|w| w == secret.as_bytes()), "a secret key is stored in clear");
                }
            }
        }
    }
    use std::os::unix::fs::PermissionsExt;
    for file in ["master.key", "credentials.json"] {
        let mode = std::fs::metadata(dir.join(file)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{file} must be private");
    }
}

#[test]
fn terminated_vms_disappear_after_the_retention() {
    let mut cloud = TestCloud::start();
    cloud.stop_clean();
    cloud.launch(&["--terminated-retention", "2"]);
    let c = cloud.creds.clone();
    let image = cloud.tiny_image();
    let out = call(&c, "CreateVms", json!({"ImageId": image, "BootOnCreation": false})).ok();
    let id = ids(&out["Vms"]);
    assert_eq!(out["Vms"][0]["State"], "stopped");
    call(&c, "CreateTags", json!({"ResourceIds": id, "Tags": [{"Key": "k", "Value": "v"}]})).ok();
    call(&c, "DeleteVms", json!({"VmIds": id})).ok();
    wait_state(&c, &id, "terminated", Duration::from_secs(30));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = call(&c, "ReadVms", json!({"Filters": {"VmIds": id}})).ok();
        if out["Vms"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "terminated VM still listed after 30 s with a 2 s retention");
        std::thread::sleep(Duration::from_millis(500));
    }
    let tags = call(&c, "ReadTags", json!({})).ok();
    assert!(tags["Tags"].as_array().unwrap().is_empty(), "tags of a purged VM remain: {tags}");
    // A purged VM is simply unknown.
    call(&c, "StartVms", json!({"VmIds": id})).expect_error(400, "5063");
}

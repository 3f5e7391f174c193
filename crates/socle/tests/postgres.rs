//! PostgreSQL as the cloud's state: while the database is down (a crash, a
//! restart), requests fail with the retryable error (HTTP 503, code 6) and
//! change nothing; once it is back, the same running `socle up` serves
//! again, with nothing half-written.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use socle_store::testing::PgCluster;

#[test]
fn a_database_restart_fails_requests_retryably_then_heals() {
    let cluster = PgCluster::private().unwrap_or_else(|e| panic!("this test needs PostgreSQL: {e}"));
    let cloud = TestCloud::start_on(Some(cluster.new_database().unwrap()), &[]);
    let c = cloud.new_account("pg");
    let image = cloud.tiny_image();
    let stopped = json!({"ImageId": image, "VmType": SMALL, "BootOnCreation": false});
    let first = ids(&call(&c, "CreateVms", stopped.clone()).ok()["Vms"]);

    cluster.stop();
    for (operation, body) in [
        ("ReadVms", json!({})),
        ("CreateVms", stopped.clone()),
        ("CreateTags", json!({"ResourceIds": first, "Tags": [{"Key": "k", "Value": "v"}]})),
        ("DeleteVms", json!({"VmIds": first})),
    ] {
        let a = call(&c, operation, body);
        assert_eq!((a.status, a.code()), (503, "6"), "{operation} while the database is down: {}", a.body);
        assert!(a.body["ResponseContext"]["RequestId"].is_string(), "{}", a.body);
    }

    cluster.start().unwrap();
    // The first call after the restart already succeeds: the pool replaces
    // the sessions the restart closed.
    let vms = call(&c, "ReadVms", json!({})).ok();
    assert_eq!(ids(&vms["Vms"]), first, "nothing of the refused calls was written");
    assert!(vms["Vms"][0]["Tags"].as_array().unwrap().is_empty(), "{vms}");
    assert_eq!(vms["Vms"][0]["State"], "stopped");
    let second = ids(&call(&c, "CreateVms", stopped).ok()["Vms"]);
    let all: Vec<String> = first.iter().chain(&second).cloned().collect();
    call(&c, "DeleteVms", json!({"VmIds": all})).ok();
    wait_state(&c, &all, "terminated", Duration::from_secs(60));
}

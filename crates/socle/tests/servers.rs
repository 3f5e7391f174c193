//! Several servers, one cloud: two `socle up` on one PostgreSQL database
//! and one host agent. Both answer the API; only the holder of the lease of
//! background work acts on what users ask; when it is SIGKILLed, the other
//! takes over within seconds, keeps the running guest and starts new ones.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const T: Duration = Duration::from_secs(120);

#[test]
fn the_second_server_takes_over_background_work_when_the_first_dies() {
    let cluster = socle_store::testing::PgCluster::shared().unwrap_or_else(|e| panic!("this test needs PostgreSQL (scripts/install-deps.sh installs it): {e}"));
    let mut cloud = TestCloud::start_with_agent_on(Some(cluster.new_database().expect("a database")));
    let port_b = free_port();
    let b = cloud.spawn_server(port_b);
    let a_creds = cloud.creds.clone();
    let b_creds = Creds { endpoint: format!("http://127.0.0.1:{port_b}/api/v1"), ..a_creds.clone() };
    let image = cloud.tiny_image();
    let log_b = cloud.data_dir().join(format!("server-{port_b}.log"));
    let holds = |log: &str| log.contains("this server holds the lease of background work");

    // Asked through B, done by A, which holds the lease.
    let first = ids(&call(&b_creds, "CreateVms", json!({"ImageId": image, "VmType": SMALL})).ok()["Vms"]);
    wait_state(&a_creds, &first, "running", T);
    wait_console(&b_creds, &first[0], "socle-guest: ready", 1, T);
    let log_a = std::fs::read_to_string(cloud.data_dir().join("server.log")).unwrap();
    assert!(holds(&log_a), "the first server should hold the lease:\n{}", cloud.log_tail());
    assert!(!holds(&std::fs::read_to_string(&log_b).unwrap()), "two servers hold the lease at once");
    let pids = cloud.qemu_pids();
    assert_eq!(pids.len(), 1);

    // A dies. B takes the lease once it expires and does what is asked of it.
    cloud.kill_hard();
    let killed = Instant::now();
    let second = ids(&call(&b_creds, "CreateVms", json!({"ImageId": image, "VmType": SMALL})).ok()["Vms"]);
    wait_state(&b_creds, &second, "running", T);
    let took = killed.elapsed();
    assert!(holds(&std::fs::read_to_string(&log_b).unwrap()));
    assert!(took < Duration::from_secs(60), "the take-over took {took:?}");
    wait_console(&b_creds, &second[0], "socle-guest: ready", 1, T);
    // The first guest was kept, not started again.
    let now = cloud.qemu_pids();
    assert_eq!(now.len(), 2, "{now:?}");
    assert!(now.contains(&pids[0]), "the first guest was restarted by the new holder");
    let out = call(&b_creds, "ReadVms", json!({"Filters": {"VmIds": first}})).ok();
    assert_eq!(out["Vms"][0]["State"], "running", "{out}");

    let all = [first, second].concat();
    call(&b_creds, "DeleteVms", json!({"VmIds": all})).ok();
    wait_state(&b_creds, &all, "terminated", T);
    assert!(cloud.qemu_pids().is_empty());
    drop(b);
}

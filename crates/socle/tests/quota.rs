//! Quotas hold under concurrency: the check and the insert are one
//! transaction, so 50 parallel CreateVms calls cannot overshoot.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

#[test]
fn fifty_concurrent_creates_never_exceed_the_quota() {
    let cloud = TestCloud::start();
    let c = cloud.new_account("racer");
    cloud.set_quota("racer", &["--max-vms", "3"]);
    let image = cloud.tiny_image();
    let handles: Vec<_> = (0..50)
        .map(|_| {
            let (c, image) = (c.clone(), image.clone());
            std::thread::spawn(move || call(&c, "CreateVms", json!({"ImageId": image, "VmType": SMALL})))
        })
        .collect();
    let answers: Vec<Answer> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let ok = answers.iter().filter(|a| a.status == 200).count();
    let refused = answers.iter().filter(|a| a.status == 400 && a.code() == "10010").count();
    assert_eq!((ok, refused), (3, 47), "answers: {:?}", answers.iter().map(|a| (a.status, a.code().to_string())).collect::<Vec<_>>());
    let all = call(&c, "ReadVms", json!({})).ok();
    let vms = ids(&all["Vms"]);
    assert_eq!(vms.len(), 3);
    let quotas = call(&c, "ReadQuotas", json!({"Filters": {"QuotaNames": ["vm_limit"]}})).ok();
    assert_eq!(quotas["QuotaTypes"][0]["Quotas"][0]["UsedValue"], 3);
    assert_eq!(quotas["QuotaTypes"][0]["Quotas"][0]["MaxValue"], 3);

    // vCPU and memory quotas too, and MinVmsCount/MaxVmsCount launches what fits.
    cloud.set_quota("racer", &["--max-vms", "10", "--max-vcpus", "5"]);
    call(&c, "CreateVms", json!({"ImageId": image, "VmType": "tinav5.c4r1p2"})).expect_error(400, "10029");
    let out = call(&c, "CreateVms", json!({"ImageId": image, "VmType": SMALL, "MinVmsCount": 1, "MaxVmsCount": 5, "BootOnCreation": false})).ok();
    assert_eq!(out["Vms"].as_array().unwrap().len(), 2, "only 2 more vCPUs fit");
    cloud.set_quota("racer", &["--max-vcpus", "40", "--max-memory-gib", "6"]);
    call(&c, "CreateVms", json!({"ImageId": image, "VmType": "tinav5.c1r2p2", "BootOnCreation": false})).expect_error(400, "10042");

    let everything = ids(&call(&c, "ReadVms", json!({})).ok()["Vms"]);
    wait_state(&c, &vms, "running", Duration::from_secs(180));
    call(&c, "DeleteVms", json!({"VmIds": everything})).ok();
    wait_state(&c, &everything, "terminated", Duration::from_secs(60));
    assert!(cloud.qemu_pids().is_empty());
}

//! `socle up` never takes addresses of a network the host uses: an explicit
//! `--public-ip-pool` or `--uplink-range` that overlaps one of the host's
//! routes is refused, naming the route; a default that does is replaced by
//! a free range of its size, and `socle up` says which.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

fn up(slot: &socle_testkit::Slot, dir: &str, port: u16) -> Command {
    let mut cmd = Command::new(socle_bin());
    socle_testkit::die_with_parent(&mut cmd);
    cmd.args(["up", "--data-dir"])
        .arg(slot.subdir(dir))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--accel", "tcg", "--net-prefix", &slot.net_prefix()])
        .env_remove("SOCLE_PUBLIC_IP_POOL")
        .stdin(Stdio::null());
    cmd
}

#[test]
fn explicit_ranges_the_host_routes_are_refused() {
    let slot = socle_testkit::Slot::claim();
    // 127.0.0.0/8 is routed on every host (table local).
    for (flag, range, shown) in [
        ("--public-ip-pool", "198.51.100.0/28,127.0.0.5", "--public-ip-pool 127.0.0.5/32 overlaps this host's route `local 127.0.0.0/8 dev lo table local`"),
        ("--uplink-range", "127.1.0.0/24", "--uplink-range 127.1.0.0/24 overlaps this host's route `local 127.0.0.0/8 dev lo table local`"),
    ] {
        let out = up(&slot, "refused", free_port()).args([flag, range]).output_within(CLI_TIMEOUT);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "socle up {flag} {range} started");
        assert!(stderr.contains(shown), "{flag} {range}: {stderr}");
        assert!(!slot.path().join("refused").join("credentials.json").exists(), "a refused start wrote credentials");
    }
}

#[test]
fn a_default_range_the_host_routes_is_replaced_by_a_free_one() {
    let slot = socle_testkit::Slot::claim();
    // The host's own network in 198.18.0.0/24: a veth of another
    // slot (so that it is swept like any test object) with that route.
    let host = socle_testkit::Slot::claim();
    let dummy = format!("{}h", host.net_prefix());
    let routes = socle_testkit::host_routes();
    if let Some(r) = routes.iter().find(|r| r.to.overlaps(&socle_testkit::Ipv4Range::parse("198.18.0.0/23").unwrap())) {
        panic!("this host already routes part of 198.18.0.0/23 ({}): the test needs it free", r.line);
    }
    let out = socle_testkit::output_within(
        Command::new("sh").args(["-c", &format!("ip link add {dummy} type veth peer name {dummy}2 && ip link set {dummy} up && ip link set {dummy}2 up && ip route add 198.18.0.0/24 dev {dummy}")]),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let port = free_port();
    let log = slot.path().join("up.log");
    let mut cmd = up(&slot, "cloud", port);
    cmd.args(["--uplink-range", &slot.uplink_range().to_string()])
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::options().append(true).open(&log).unwrap());
    let mut server = KillOnDrop(cmd.spawn().unwrap());
    let creds_path = slot.path().join("cloud/credentials.json");
    let deadline = Instant::now() + Duration::from_secs(600);
    let creds = loop {
        assert!(server.0.try_wait().unwrap().is_none(), "socle up exited: {}", std::fs::read_to_string(&log).unwrap_or_default());
        assert!(Instant::now() < deadline, "socle up not ready: {}", std::fs::read_to_string(&log).unwrap_or_default());
        if let Ok(Ok(v)) = std::fs::read(&creds_path).map(|b| serde_json::from_slice::<Value>(&b)) {
            let endpoint = v["Endpoint"].as_str().unwrap().to_string();
            if try_raw_call(&endpoint, None, "ReadRegions", b"{}", &[]).is_ok_and(|a| a.status == 200) {
                break Creds {
                    access_key: v["AccessKey"].as_str().unwrap().into(),
                    secret_key: v["SecretKey"].as_str().unwrap().into(),
                    region: v["Region"].as_str().unwrap().into(),
                    endpoint,
                };
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(
        said.contains(&format!("the default --public-ip-pool 198.18.0.0/24 overlaps this host's route `198.18.0.0/24 dev {dummy}`: using 198.18.1.0/24 instead")),
        "{said}"
    );
    let ip = call(&creds, "CreatePublicIp", json!({})).ok()["PublicIp"]["PublicIp"].as_str().unwrap().to_string();
    assert!(ip.starts_with("198.18.1."), "{ip} is not of the free range");
}

//! ReadVms with many VMs in one account, on each state engine.
//!
//! The VMs are stopped records (not guests): one made through the API,
//! copied in the store (see `run`). Measured: the first
//! page (100 VMs), one VM by ID, and every VM paged through 1,000 at a time;
//! then requests per second under load as a new user would measure them:
//! `wrk` (2 threads, 32 connections, 10 s) replaying one pre-signed request.

use std::time::Instant;

use serde_json::json;

use crate::common::*;
use crate::{median, ms};

pub const VMS: usize = 10_000;
const RUNS: usize = 30;
const WALKS: usize = 5;

pub struct ReadResult {
    pub engine: &'static str,
    pub create_s: f64,
    pub first_page: Vec<f64>,
    pub by_id: Vec<f64>,
    pub walk_all: Vec<f64>,
    /// Requests per second under wrk: ReadVms by ID, ReadKeypairs (signed),
    /// ReadRegions (unsigned: the HTTP stack alone). None without wrk.
    pub rps: Option<[f64; 3]>,
}

pub fn run(cloud: &TestCloud, image: &str, engine: &'static str) -> ReadResult {
    let b = cloud.new_account("reader");
    let (vms, vcpus, mem) = (VMS.to_string(), (VMS * 2).to_string(), (VMS * 2).to_string());
    cloud.set_quota("reader", &["--max-vms", &vms, "--max-vcpus", &vcpus, "--max-memory-gib", &mem]);
    // One VM made through the API (stopped, in a subnet: a VM of the public
    // cloud would take a public IP), then copied in the store: 10,000 calls
    // would each make an encrypted root volume, hours of PBKDF on this
    // machine. The copies have no NIC and no volume, so a page of them is a
    // little lighter to answer than a page of real VMs; the by-ID and
    // first-page costs as the account grows are what this measures.
    let net = call(&b, "CreateNet", json!({"IpRange": "10.0.0.0/16"})).ok()["Net"]["NetId"].clone();
    let subnet = call(&b, "CreateSubnet", json!({"NetId": net, "IpRange": "10.0.0.0/18"})).ok()["Subnet"]["SubnetId"].clone();
    let template = call(&b, "CreateVms", json!({"ImageId": image, "VmType": SMALL, "SubnetId": subnet, "BootOnCreation": false})).ok()["Vms"][0]["VmId"]
        .as_str()
        .unwrap()
        .to_string();
    let t = Instant::now();
    let store = match &cloud.database {
        Some(url) => socle_store::Store::connect(url).unwrap(),
        None => socle_store::Store::open(&cloud.data_dir().join("socle.db")).unwrap(),
    };
    let template = socle_types::ids::VmId::from_trusted(template);
    // With the template, VMS in all. IDs have 32 random bits: among 10,000
    // a repeat is likely enough (about 1 run in 100) to be avoided here.
    let mut taken = std::collections::HashSet::from([template.to_string()]);
    let mut left = VMS - 1;
    while left > 0 {
        let n = left.min(500);
        left -= n;
        let template = template.clone();
        let ids: Vec<_> = std::iter::repeat_with(socle_types::ids::VmId::generate).filter(|id| taken.insert(id.to_string())).take(n).collect();
        store
            .write_sync(move |c| -> Result<(), socle_store::StoreError> {
                let row = socle_store::vms::get_any(c, &template)?.expect("the template VM");
                let quotas = socle_store::accounts::Quotas { max_vms: i64::MAX, max_vcpus: i64::MAX, max_memory_mib: i64::MAX, ..Default::default() };
                let copies: Vec<_> = ids
                    .iter()
                    .map(|id| socle_store::vms::VmRow { vm_id: id.clone(), created_at: socle_store::now_iso(), ..row.clone() })
                    .collect();
                socle_store::vms::insert_within_quota(c, &row.account_id, &quotas, &copies)?.expect("no quota");
                Ok(())
            })
            .unwrap();
        if left % 2000 == 0 {
            eprintln!("{engine}: {} VMs recorded", VMS - left);
        }
    }
    let create_s = t.elapsed().as_secs_f64();
    let some_id = call(&b, "ReadVms", json!({"ResultsPerPage": 1})).ok()["Vms"][0]["VmId"].as_str().unwrap().to_string();
    let (mut first_page, mut by_id, mut walk_all) = (vec![], vec![], vec![]);
    for _ in 0..RUNS {
        let t = Instant::now();
        let out = call(&b, "ReadVms", json!({})).ok();
        first_page.push(ms(t.elapsed()));
        assert_eq!(out["Vms"].as_array().unwrap().len(), 100);
        let t = Instant::now();
        let out = call(&b, "ReadVms", json!({"Filters": {"VmIds": [some_id]}})).ok();
        by_id.push(ms(t.elapsed()));
        assert_eq!(out["Vms"].as_array().unwrap().len(), 1);
    }
    for _ in 0..WALKS {
        let t = Instant::now();
        let (mut seen, mut token) = (0, None::<String>);
        loop {
            let mut req = json!({"ResultsPerPage": 1000});
            if let Some(tok) = &token {
                req["NextPageToken"] = json!(tok);
            }
            let out = call(&b, "ReadVms", req).ok();
            seen += out["Vms"].as_array().unwrap().len();
            match out["NextPageToken"].as_str() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => break,
            }
        }
        walk_all.push(ms(t.elapsed()));
        assert_eq!(seen, VMS);
    }
    let rps = wrk_available().then(|| {
        let endpoint = &b.endpoint;
        [
            wrk(endpoint, "ReadVms", &json!({"Filters": {"VmIds": [some_id]}}).to_string(), Some(&b)),
            wrk(endpoint, "ReadKeypairs", "{}", Some(&b)),
            wrk(endpoint, "ReadRegions", "{}", None),
        ]
    });
    ReadResult { engine, create_s, first_page, by_id, walk_all, rps }
}

fn wrk_available() -> bool {
    std::process::Command::new("wrk").arg("--version").output().is_ok()
}

/// Requests per second wrk gets replaying one request (signed once by
/// `creds` when given: a signature stays valid five minutes).
fn wrk(endpoint: &str, operation: &str, body: &str, creds: Option<&Creds>) -> f64 {
    let url = format!("{endpoint}/{operation}");
    let rest = url.split_once("://").unwrap().1;
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let mut headers = vec![("Content-Type".to_string(), "application/json".to_string())];
    if let Some(c) = creds {
        headers = socle_auth::sign_osc4(&c.access_key, &c.secret_key, &c.region, host, path, body.as_bytes(), time::OffsetDateTime::now_utc());
    }
    let lua_str = |s: &str| format!("{s:?}");
    let mut script = format!("wrk.method = \"POST\"\nwrk.body = {}\n", lua_str(body));
    for (k, v) in &headers {
        script.push_str(&format!("wrk.headers[{}] = {}\n", lua_str(k), lua_str(v)));
    }
    let file = std::env::temp_dir().join(format!("socle-bench-{operation}.lua"));
    std::fs::write(&file, script).unwrap();
    let out = std::process::Command::new("wrk")
        .args(["-t2", "-c32", "-d10s", "-s"])
        .arg(&file)
        .arg(&url)
        .output()
        .expect("run wrk");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("Non-2xx"), "{operation} under wrk got errors:\n{text}");
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Requests/sec in wrk's output:\n{text}"))
}

pub fn write(md: &mut String, results: &[ReadResult]) {
    use std::fmt::Write as _;
    writeln!(md, "## ReadVms with {VMS} VMs in one account\n").unwrap();
    writeln!(md, "Signed requests over loopback from one client, server built in release mode; {RUNS} calls each (the walk: {WALKS} times). The VMs are stopped records: one made by CreateVms in a subnet, the others copies of its row made in the store (10,000 CreateVms would each make an encrypted root volume, hours of key derivation on this machine), so they have no NIC or volume and a page of them is a little lighter than a page of real VMs. Filters and pages are answered in SQL (docs/ARCHITECTURE.md, \"State\").\n").unwrap();
    let engines: Vec<&str> = results.iter().map(|r| r.engine).collect();
    writeln!(md, "| request | {} | goal |", engines.join(" | ")).unwrap();
    writeln!(md, "|---|{}---|", "---|".repeat(engines.len())).unwrap();
    let row = |md: &mut String, name: &str, f: &dyn Fn(&ReadResult) -> f64, goal: &str| {
        let cells: Vec<String> = results.iter().map(|r| format!("{:.1} ms", f(r))).collect();
        writeln!(md, "| {name} | {} | {goal} |", cells.join(" | ")).unwrap();
    };
    row(md, "`ReadVms {\"Filters\": {\"VmIds\": [one]}}` (p50)", &|r| median(r.by_id.clone()), "< 2 ms");
    row(md, "`ReadVms {}` (first page, 100 VMs, p50)", &|r| median(r.first_page.clone()), "< 10 ms");
    row(md, "all VMs, pages of 1,000 (p50 of the whole walk)", &|r| median(r.walk_all.clone()), "< 500 ms");
    let cells: Vec<String> = results.iter().map(|r| format!("{:.0} s", r.create_s)).collect();
    writeln!(md, "| recording the {VMS} VMs (one CreateVms, copied in the store in transactions of 500) | {} | |\n", cells.join(" | ")).unwrap();
    if results.iter().all(|r| r.rps.is_some()) {
        writeln!(md, "Under load, as a new user would measure it: `wrk -t2 -c32 -d10s` replaying one pre-signed request, on the same {} cores as the server.\n", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)).unwrap();
        writeln!(md, "| requests per second | {} | goal |", engines.join(" | ")).unwrap();
        writeln!(md, "|---|{}---|", "---|".repeat(engines.len())).unwrap();
        let rps = |i: usize| results.iter().map(|r| format!("{:.0}", r.rps.unwrap()[i])).collect::<Vec<_>>().join(" | ");
        writeln!(md, "| signed `ReadVms` by one VmId, {VMS} VMs in the account | {} | ≥ 5,000 |", rps(0)).unwrap();
        writeln!(md, "| signed `ReadKeypairs` | {} | |", rps(1)).unwrap();
        writeln!(md, "| unsigned `ReadRegions` (the HTTP stack alone) | {} | |", rps(2)).unwrap();
        let ratio = results.iter().map(|r| { let v = r.rps.unwrap(); format!("{:.2}", v[1] / v[2]) }).collect::<Vec<_>>().join(" | ");
        writeln!(md, "| ratio ReadKeypairs / ReadRegions | {ratio} | ≥ 0.5 |\n").unwrap();
    }
}

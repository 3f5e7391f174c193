//! Tenant networking: guest-to-guest TCP throughput and ICMP latency on one
//! host, and how long a security-group rule change takes to act on real
//! traffic, all through the API.
//!
//! One Net (10.0.0.0/16, subnet 10.0.1.0/24) with an internet service and a
//! public IP on the server VM. The client VM (same subnet) pings the server
//! and pushes data to it with busybox `nc`, timing itself with
//! `/proc/uptime`. The rule change is observed from the host, on the
//! server's public IP: a TCP connect every few milliseconds (short timeout,
//! since a dropped SYN never answers) from the moment of the
//! CreateSecurityGroupRule call until one succeeds, and from the
//! DeleteSecurityGroupRule call until one fails.

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::*;
use crate::{b64, ms};

pub const TCP_ROUNDS: usize = 5;
pub const TCP_MIB: u64 = 32;
pub const PINGS: usize = 30;
pub const RULE_ROUNDS: usize = 5;
/// A connect that did not succeed within this is taken as blocked.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(30);
const T: Duration = Duration::from_secs(300);
const SERVER_IP: &str = "10.0.1.10";

pub struct NetResult {
    /// Client → server, MiB/s per round.
    pub tcp_mibs: Vec<f64>,
    /// The same transfer to the client's own loopback, MiB/s per round.
    pub loopback_mibs: Vec<f64>,
    /// busybox ping's `round-trip min/avg/max` (ms).
    pub ping: (f64, f64, f64),
    /// CreateSecurityGroupRule call → start of the first connect that succeeded (ms).
    pub open_ms: Vec<f64>,
    /// DeleteSecurityGroupRule call → start of the first connect that failed (ms).
    pub close_ms: Vec<f64>,
    /// The API calls' own durations (ms), both kinds.
    pub call_ms: Vec<f64>,
}

/// A byte counter listening on `port`. busybox's small `nc` quits when its
/// stdin ends, so the listener does not read the data itself: `-e` hands
/// each connection to a script that counts the bytes until the client
/// closes and prints `bench got N` on the console.
fn counter(port: u16) -> String {
    format!(
        "printf '#!/bin/sh\\necho \"bench got $(wc -c)\" > /dev/console\\n' > /bin/bench-count && chmod +x /bin/bench-count\n\
         (while :; do nc -l -p {port} -e /bin/bench-count; done) &\n"
    )
}

const WAIT_ADDRESS: &str = "#!/bin/sh\nwhile [ ! -s /run/socle/ip-eth0 ]; do sleep 1; done\n";

fn server_script() -> String {
    format!("{WAIT_ADDRESS}mkdir -p /www && echo bench > /www/index.html\nhttpd -p 8080 -h /www\n{}echo bench-server-ready\n", counter(5001))
}

/// Pings the server, then per round sends the same bytes to the server and
/// to a counter on its own loopback (the ceiling of `dd | nc` in such a
/// guest, no network involved), each timed with `/proc/uptime`.
fn client_script() -> String {
    let bytes = TCP_MIB << 20;
    let count = bytes / 65536;
    format!(
        "{WAIT_ADDRESS}{}until ping -c 1 -W 1 {SERVER_IP} >/dev/null 2>&1; do sleep 1; done\nsleep 1\n\
         echo \"bench ping $(ping -c {PINGS} -i 0.2 {SERVER_IP} | grep round-trip)\"\n\
         centis() {{ read -r up _ < /proc/uptime; echo \"${{up%.*}}${{up#*.}}\"; }}\n\
         send() {{ while :; do t0=$(centis); dd if=/dev/zero bs=65536 count={count} 2>/dev/null | nc $1 $2 && break; sleep 1; done; t1=$(centis); echo \"bench $3 $r {bytes} $((t1 - t0))\"; sleep 1; }}\n\
         for r in $(seq {TCP_ROUNDS}); do send {SERVER_IP} 5001 tcp; send 127.0.0.1 5002 lo; done\necho bench-client-done\n",
        counter(5002)
    )
}

/// MiB/s of the `bench KIND ROUND BYTES CENTISECONDS` lines of a console.
fn rates(out: &str, kind: &str) -> Vec<f64> {
    let rates: Vec<f64> = out
        .lines()
        .filter_map(|l| l.split(&format!("bench {kind} ")).nth(1))
        .map(|rest| {
            let f: Vec<f64> = rest.split_whitespace().filter_map(|x| x.parse().ok()).collect();
            assert!(f.len() == 3 && f[2] > 0.0, "bad {kind} line: {rest}");
            f[1] / (1u64 << 20) as f64 / (f[2] / 100.0)
        })
        .collect();
    assert_eq!(rates.len(), TCP_ROUNDS, "{out}");
    rates
}

/// Every connection to the counter of `vm` brought all the bytes.
fn check_counted(c: &Creds, vm: &str) {
    let out = wait_console(c, vm, "bench got", TCP_ROUNDS, T);
    let got: Vec<&str> = out.lines().filter_map(|l| l.split("bench got ").nth(1)).map(str::trim).collect();
    assert_eq!(got, vec![(TCP_MIB << 20).to_string(); TCP_ROUNDS], "bytes received per connection:\n{out}");
}

fn id(v: &Value, key: &str) -> String {
    v[key].as_str().unwrap_or_else(|| panic!("no {key} in {v}")).to_string()
}

/// Connects until `want` (connected or not) holds; returns when the
/// attempt that showed it started (its SYN met the rules as they were then,
/// and the attempt before it, at most one timeout earlier, did not).
fn until_connect(addr: SocketAddr, want: bool, since: Instant) -> Duration {
    loop {
        let started = since.elapsed();
        let ok = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).is_ok();
        if ok == want {
            return started;
        }
        assert!(since.elapsed() < Duration::from_secs(30), "the rule change never showed (wanted connect {want})");
        if !ok {
            continue; // the timeout was the wait
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub fn run(cloud: &TestCloud, image: &str) -> NetResult {
    let c = &cloud.creds;
    let net = id(&call(c, "CreateNet", json!({"IpRange": "10.0.0.0/16"})).ok()["Net"], "NetId");
    let subnet = id(&call(c, "CreateSubnet", json!({"NetId": net, "IpRange": "10.0.1.0/24"})).ok()["Subnet"], "SubnetId");
    let igw = id(&call(c, "CreateInternetService", json!({})).ok()["InternetService"], "InternetServiceId");
    call(c, "LinkInternetService", json!({"InternetServiceId": igw, "NetId": net})).ok();
    let rtb = id(&call(c, "CreateRouteTable", json!({"NetId": net})).ok()["RouteTable"], "RouteTableId");
    call(c, "CreateRoute", json!({"RouteTableId": rtb, "DestinationIpRange": "0.0.0.0/0", "GatewayId": igw})).ok();
    call(c, "LinkRouteTable", json!({"RouteTableId": rtb, "SubnetId": subnet})).ok();
    let group = |name: &str| {
        id(&call(c, "CreateSecurityGroup", json!({"NetId": net, "SecurityGroupName": name, "Description": name})).ok()["SecurityGroup"], "SecurityGroupId")
    };
    // "inside": everything from the Net; "edge": the group whose rule the
    // host toggles (no rule at first: the public IP's port 8080 is closed).
    let inside = group("inside");
    call(c, "CreateSecurityGroupRule", json!({"SecurityGroupId": inside, "Flow": "Inbound", "IpProtocol": "-1", "IpRange": "10.0.0.0/16"})).ok();
    let edge = group("edge");
    let vm = |ip: Option<&str>, groups: Vec<&str>, script: String| {
        let mut body = json!({"ImageId": image, "VmType": SMALL, "SubnetId": subnet, "SecurityGroupIds": groups, "UserData": b64(&script)});
        if let Some(ip) = ip {
            body["PrivateIps"] = json!([ip]);
        }
        id(&call(c, "CreateVms", body).ok()["Vms"][0], "VmId")
    };
    let server = vm(Some(SERVER_IP), vec![&inside, &edge], server_script());
    let public = call(c, "CreatePublicIp", json!({})).ok()["PublicIp"].clone();
    call(c, "LinkPublicIp", json!({"PublicIpId": public["PublicIpId"], "VmId": server})).ok();
    let addr: SocketAddr = format!("{}:8080", public["PublicIp"].as_str().unwrap()).parse().unwrap();
    wait_console(c, &server, "bench-server-ready", 1, T);
    let client = vm(None, vec![&inside], client_script());
    let out = wait_console(c, &client, "bench-client-done", 1, T);

    let ping = out
        .lines()
        .find_map(|l| l.split("round-trip min/avg/max = ").nth(1))
        .and_then(|s| {
            let v: Vec<f64> = s.trim_end_matches(" ms").split('/').filter_map(|x| x.trim().parse().ok()).collect();
            (v.len() == 3).then(|| (v[0], v[1], v[2]))
        })
        .unwrap_or_else(|| panic!("no ping summary in the client's console:\n{out}"));
    let (tcp_mibs, loopback_mibs) = (rates(&out, "tcp"), rates(&out, "lo"));
    check_counted(c, &server);
    check_counted(c, &client);

    // Rule changes, seen on real traffic from the host.
    assert!(TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err(), "8080 open before any rule");
    let (mut open_ms, mut close_ms, mut call_ms) = (vec![], vec![], vec![]);
    let rule = json!({"SecurityGroupId": edge, "Flow": "Inbound", "IpProtocol": "tcp", "FromPortRange": 8080, "ToPortRange": 8080, "IpRange": "0.0.0.0/0"});
    for _ in 0..RULE_ROUNDS {
        let t0 = Instant::now();
        call(c, "CreateSecurityGroupRule", rule.clone()).ok();
        call_ms.push(ms(t0.elapsed()));
        open_ms.push(ms(until_connect(addr, true, t0)));
        std::thread::sleep(Duration::from_millis(500));
        let t0 = Instant::now();
        call(c, "DeleteSecurityGroupRule", rule.clone()).ok();
        call_ms.push(ms(t0.elapsed()));
        close_ms.push(ms(until_connect(addr, false, t0)));
        std::thread::sleep(Duration::from_millis(500));
    }

    call(c, "DeleteVms", json!({"VmIds": [server, client]})).ok();
    wait_state(c, &[server.clone(), client.clone()], "terminated", T);
    NetResult { tcp_mibs, loopback_mibs, ping, open_ms, close_ms, call_ms }
}

//! Real guests on tenant networks, through the API: VMs with a user-data
//! script (socle-tiny runs it at boot, its output on the console) that
//! serve or probe, and the host namespaces a cloud's networks occupy.

use base64::Engine;
use serde_json::{json, Value};

use super::{call, CommandWithin, Creds, SMALL};

pub fn user_data(script: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(script)
}

/// Calls `op` and returns the `key` member of its answer.
pub fn create(c: &Creds, op: &str, body: Value, key: &str) -> Value {
    call(c, op, body).ok()[key].clone()
}

/// A guest that serves `body` over HTTP on every port of `ports`.
pub fn server_script(body: &str, ports: &[u16]) -> String {
    let mut s = format!(
        "#!/bin/sh\nwhile [ ! -s /run/socle/ip-eth0 ]; do sleep 1; done\nmkdir -p /www && echo {body} > /www/index.html\n"
    );
    for p in ports {
        s.push_str(&format!("httpd -p {p} -h /www\n"));
    }
    s.push_str("echo servers-started\n");
    s
}

/// A guest that probes `ip` on each port (HTTP through nc, 2 s connect
/// timeout; busybox's nc has no read timeout, so `timeout 5` ends a probe
/// whose server vanished mid-connection) and with ping every second for at most 10 minutes,
/// printing a line whenever the outcome changes: "probe PORT open BODY" / "probe PORT closed",
/// "probe ping ok|blocked". BODY is the last line the server sent.
pub fn prober_script(ip: &str, ports: &[u16]) -> String {
    let mut s = String::from("#!/bin/sh\nwhile [ ! -s /run/socle/ip-eth0 ]; do sleep 1; done\n");
    s.push_str("report() { eval \"old=\\$last_$1\"; [ \"$old\" = \"$2\" ] || { echo \"probe $1 $2\"; eval \"last_$1='$2'\"; }; }\n");
    // Bounded: a guest its test left behind stops probing (and burning a
    // TCG core) after 10 minutes.
    s.push_str("end=$(($(date +%s) + 600))\nwhile [ \"$(date +%s)\" -lt \"$end\" ]; do\n");
    for p in ports {
        s.push_str(&format!(
            "  body=$(printf 'GET / HTTP/1.0\\r\\n\\r\\n' | timeout 5 nc -w 2 {ip} {p} 2>/dev/null | tail -n 1)\n  if [ -n \"$body\" ]; then report {p} \"open $body\"; else report {p} closed; fi\n"
        ));
    }
    s.push_str(&format!("  if ping -c 1 -W 2 {ip} >/dev/null 2>&1; then report ping ok; else report ping blocked; fi\n"));
    s.push_str("  sleep 1\ndone\n");
    s
}

/// CreateVms of one socle-tiny VM running `script`, in `subnet` (else the
/// account's public cloud), with a chosen private IP and groups if given.
pub fn vm_in(c: &Creds, image: &str, subnet: Option<&str>, ip: Option<&str>, groups: &[&str], script: &str) -> Value {
    let mut body = json!({"ImageId": image, "VmType": SMALL, "UserData": user_data(script)});
    if let Some(s) = subnet {
        body["SubnetId"] = json!(s);
    }
    if let Some(ip) = ip {
        body["PrivateIps"] = json!([ip]);
    }
    if !groups.is_empty() {
        body["SecurityGroupIds"] = json!(groups);
    }
    call(c, "CreateVms", body).ok()["Vms"][0].clone()
}

/// The network namespaces of the networks a cloud with this net prefix
/// wired (`<prefix>-<network key>`).
pub fn namespaces(prefix: &str) -> Vec<String> {
    let out = std::process::Command::new("ip").args(["netns", "list"]).output_within(super::CLI_TIMEOUT);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&format!("{prefix}-")))
        .map(String::from)
        .collect()
}

/// A route table of `net` linked to `subnet`, with a route to 0.0.0.0/0
/// through `target` (e.g. `{"GatewayId": …}` or `{"NatServiceId": …}`) if
/// given. Returns its id.
pub fn route_table(c: &Creds, net: &str, subnet: &str, target: Option<Value>) -> String {
    let rtb = create(c, "CreateRouteTable", json!({"NetId": net}), "RouteTable")["RouteTableId"].as_str().unwrap().to_string();
    if let Some(target) = target {
        default_route(c, &rtb, target);
    }
    call(c, "LinkRouteTable", json!({"RouteTableId": rtb, "SubnetId": subnet})).ok();
    rtb
}

/// CreateRoute 0.0.0.0/0 → `target` in the route table `rtb`.
pub fn default_route(c: &Creds, rtb: &str, target: Value) {
    let mut route = json!({"RouteTableId": rtb, "DestinationIpRange": "0.0.0.0/0"});
    route.as_object_mut().unwrap().extend(target.as_object().unwrap().clone());
    call(c, "CreateRoute", route).ok();
}

/// The interfaces named `name` in the root namespace and in every namespace.
pub fn interfaces_named(name: &str) -> usize {
    let mut places = vec![vec!["link".to_string(), "show".into(), name.into()]];
    let out = std::process::Command::new("ip").args(["netns", "list"]).output_within(super::CLI_TIMEOUT);
    for ns in String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.split_whitespace().next()) {
        places.push(vec!["-n".into(), ns.into(), "link".into(), "show".into(), name.into()]);
    }
    places.iter().filter(|args| std::process::Command::new("ip").args(args.iter()).output_within(super::CLI_TIMEOUT).status.success()).count()
}

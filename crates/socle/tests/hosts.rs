//! A host joins a cloud once, with a one-time token, and is from then on
//! reached over mutual TLS: the cloud sees it `ready`, `unreachable` when
//! its agent stops answering and `ready` again when it is back; a forged or
//! spent token is refused; a revoked host stays revoked.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

struct Hosts<'a> {
    cloud: &'a TestCloud,
}

impl Hosts<'_> {
    fn run(&self, args: &[&str]) -> Output {
        let mut cmd = self.cloud.socle();
        cmd.args(["host"]).args(args).arg("--data-dir").arg(self.cloud.data_dir());
        cmd.output_within(CLI_TIMEOUT)
    }

    fn token(&self, subregion: &str) -> String {
        let out = self.run(&["token", "--subregion", subregion]);
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    fn list(&self) -> Vec<Value> {
        let out = self.run(&["list", "--json"]);
        assert!(out.status.success(), "{}", text(&out));
        serde_json::from_slice::<Value>(&out.stdout).unwrap().as_array().unwrap().clone()
    }

    /// Waits until the one host is `state` and `check` holds for it.
    fn wait(&self, state: &str, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let list = self.list();
            if list.len() == 1 && list[0]["State"] == state && check(&list[0]) {
                return list[0].clone();
            }
            assert!(Instant::now() < deadline, "the host never became {state}: {list:?}");
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

fn agent(dir: &std::path::Path, listen: &str, join: Option<(&str, &str)>) -> Command {
    let mut cmd = Command::new(socle_bin());
    socle_testkit::die_with_parent(&mut cmd);
    cmd.args(["agent", "--data-dir"]).arg(dir).args(["--accel", "tcg", "--listen", listen]).env("RUST_LOG", "info");
    if let Some((url, token)) = join {
        cmd.args(["--join", url, "--token", token]);
    }
    cmd
}

fn spawn(mut cmd: Command, log: &std::path::Path) -> KillOnDrop {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    KillOnDrop(cmd.stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log).spawn().expect("spawn socle agent"))
}

#[test]
fn a_host_joins_once_is_watched_over_mutual_tls_and_can_be_revoked() {
    let cloud = TestCloud::start();
    let hosts = Hosts { cloud: &cloud };
    let url = cloud.creds.endpoint.clone();

    let bad = hosts.run(&["token", "--subregion", "west"]);
    assert!(!bad.status.success() && text(&bad).contains("subregion"), "{}", text(&bad));
    let token = hosts.token("eu-west-2b");
    let (token_id, _) = token.split_once('.').unwrap();

    let host_dir = cloud.slot.subdir("host");
    let listen = format!("127.0.0.1:{}", free_port());
    // A token with the wrong secret: refused, nothing recorded, nothing spent.
    let forged = format!("{token_id}.{}", "0".repeat(48));
    let out = agent(&host_dir, &listen, Some((&url, &forged))).output_within(CLI_TIMEOUT);
    assert!(!out.status.success() && text(&out).contains("refused"), "{}", text(&out));
    assert!(hosts.list().is_empty());
    assert!(!&host_dir.join("tls/host.json").exists());

    // The real one: the host joins and the cloud reaches it over mutual TLS.
    let log = &host_dir.join("agent.log");
    let child = spawn(agent(&host_dir, &listen, Some((&url, &token))), &log);
    let joined = hosts.wait("ready", |h| !h["SeenAt"].is_null());
    assert_eq!(joined["Subregion"], "eu-west-2b");
    assert_eq!(joined["Endpoint"], listen.as_str());
    let host_id = joined["HostId"].as_str().unwrap().to_string();
    let key_mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&host_dir.join("tls/host.key")).unwrap().permissions());
    assert_eq!(key_mode & 0o777, 0o600, "the host's key is private");

    // The token is spent: another machine cannot join with it.
    let other = cloud.slot.subdir("other-host");
    let out = agent(&other, &format!("127.0.0.1:{}", free_port()), Some((&url, &token))).output_within(CLI_TIMEOUT);
    assert!(!out.status.success() && text(&out).contains("refused"), "{}", text(&out));
    assert_eq!(hosts.list().len(), 1);

    // Its agent dies: unreachable. Started again with its data dir alone: ready.
    drop(child);
    hosts.wait("unreachable", |_| true);
    let seen = hosts.list()[0]["SeenAt"].as_str().unwrap().to_string();
    let _child = spawn(agent(&host_dir, &listen, None), &log);
    hosts.wait("ready", |h| h["SeenAt"].as_str().is_some_and(|s| s > seen.as_str()));

    // Revoked: it stays so although it answers.
    let out = hosts.run(&["revoke", &host_id]);
    assert!(out.status.success(), "{}", text(&out));
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(hosts.list()[0]["State"], "revoked");
    let out = hosts.run(&["revoke", "h-00000000"]);
    assert!(!out.status.success() && text(&out).contains("no host"), "{}", text(&out));
}

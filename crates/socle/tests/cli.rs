//! The people-facing CLI, run as a user would, against a real cloud.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;

fn socle(cloud: &TestCloud, args: &[&str]) -> String {
    let out = cloud.socle()
        .args(args)
        .arg("--data-dir")
        .arg(cloud.data_dir())
        .env_remove("OSC_ACCESS_KEY")
        .output_within(CLI_TIMEOUT);
    assert!(out.status.success(), "socle {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// What bash offers for the last of `words` (possibly empty: a new word)
/// after `socle`, with the generated completions.
fn bash_completes(words: &[&str]) -> Vec<String> {
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let line = format!("socle {}", words.join(" "));
    let script = format!(
        "source <('{}' completions bash) && COMP_WORDS=(socle {}) && COMP_CWORD={} && COMP_LINE='{line}' && \
         COMP_POINT=${{#COMP_LINE}} && _socle socle && printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        socle_bin().display(),
        quoted.join(" "),
        words.len()
    );
    let out = Command::new("bash").args(["-c", &script]).output_within(CLI_TIMEOUT);
    assert!(out.status.success(), "bash: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(str::to_string).collect()
}

#[test]
fn shell_completions_offer_the_commands_and_their_options() {
    assert!(bash_completes(&["d"]).contains(&"down".to_string()), "{:?}", bash_completes(&["d"]));
    let vm = bash_completes(&["vm", ""]);
    for sub in ["create", "list", "stop", "delete"] {
        assert!(vm.contains(&sub.to_string()), "socle vm <TAB>: {vm:?}");
    }
    assert!(bash_completes(&["down", "--p"]).contains(&"--purge".to_string()), "{:?}", bash_completes(&["down", "--p"]));
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let out = Command::new(socle_bin()).args(["completions", shell]).output_within(CLI_TIMEOUT);
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && script.contains("down") && script.contains("--purge"), "{shell}: {script:.300}");
    }
}

/// The unit files in contrib/systemd are what systemd accepts, and the
/// commands they run are what the binary accepts.
#[test]
fn the_systemd_units_are_valid() {
    let dir = tempfile::tempdir().unwrap();
    let contrib = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../contrib/systemd");
    for unit in ["socle-server.service", "socle-agent.service"] {
        let text = std::fs::read_to_string(contrib.join(unit)).unwrap();
        let exec = text.lines().find_map(|l| l.strip_prefix("ExecStart=")).expect("an ExecStart");
        // The binary takes the command (`--help` after it: nothing runs).
        let words: Vec<&str> = exec.split_whitespace().skip(1).collect();
        let out = Command::new(socle_bin()).args(&words).arg("--help").output_within(CLI_TIMEOUT);
        assert!(out.status.success(), "{unit}: {exec}: {}", String::from_utf8_lossy(&out.stderr));
        let local = dir.path().join(unit);
        std::fs::write(&local, text.replace("/usr/local/bin/socle", &socle_bin().to_string_lossy())).unwrap();
        let out = Command::new("systemd-analyze").arg("verify").arg(&local).output_within(CLI_TIMEOUT);
        let said = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && said.trim().is_empty(), "systemd-analyze verify {unit}: {said}");
    }
}

#[test]
fn vm_commands_drive_a_vm_through_its_life() {
    let cloud = TestCloud::start();
    let out = cloud
        .socle()
        .args(["vm", "create", "--name", "web", "--wait", "--json", "--data-dir"])
        .arg(cloud.data_dir())
        .env_remove("OSC_ACCESS_KEY")
        .output_within(CLI_TIMEOUT);
    assert!(out.status.success(), "socle vm create failed: {}", String::from_utf8_lossy(&out.stderr));
    let created: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = created[0]["VmId"].as_str().unwrap().to_string();
    assert_eq!(created[0]["State"], "running");
    // --wait says how it goes, on stderr (stdout stays the JSON).
    let progress = String::from_utf8_lossy(&out.stderr);
    assert!(progress.contains(&format!("{id}: running (")), "{progress}");

    let table = socle(&cloud, &["vm", "list"]);
    assert!(table.contains(&id) && table.contains("web") && table.contains("running"), "{table}");
    let shown = socle(&cloud, &["vm", "show", &id]);
    assert!(shown.contains("tinav5.c1r1p2") && shown.contains("Tag Name"), "{shown}");
    wait_console(&cloud.creds, &id, "socle-guest: ready", 1, Duration::from_secs(120));
    assert!(socle(&cloud, &["vm", "console", &id]).contains("socle-guest: ready"));

    let stopped = socle(&cloud, &["vm", "stop", &id]);
    assert!(stopped.contains("stopping"), "{stopped}");
    wait_state(&cloud.creds, std::slice::from_ref(&id), "stopped", Duration::from_secs(60));

    // `socle api` with the standard OSC_* environment instead of the data dir.
    let c = &cloud.creds;
    let out = Command::new(socle_bin())
        .args(["api", "ReadVms", &format!(r#"{{"Filters":{{"VmIds":["{id}"]}}}}"#)])
        .env("OSC_ACCESS_KEY", &c.access_key)
        .env("OSC_SECRET_KEY", &c.secret_key)
        .env("OSC_REGION", &c.region)
        .env("OSC_ENDPOINT_API", &c.endpoint)
        .env("SOCLE_DATA_DIR", "/nonexistent")
        .output_within(CLI_TIMEOUT);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["Vms"][0]["State"], "stopped");

    // Errors are printed with their OSC code and a failing exit status.
    let out = Command::new(socle_bin())
        .args(["vm", "start", "i-00000000", "--data-dir"])
        .arg(cloud.data_dir())
        .output_within(CLI_TIMEOUT);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("5063"), "{}", String::from_utf8_lossy(&out.stderr));

    socle(&cloud, &["vm", "delete", &id]);
    wait_state(&cloud.creds, &[id], "terminated", Duration::from_secs(30));

    // Admin commands.
    let accounts = socle(&cloud, &["account", "list"]);
    assert!(accounts.contains("default"), "{accounts}");
    let out = cloud.socle().args(["account", "create", "default", "--data-dir"]).arg(cloud.data_dir()).output_within(CLI_TIMEOUT);
    assert!(!out.status.success(), "duplicate account name accepted");
}

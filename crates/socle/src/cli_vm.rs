//! `socle vm …` and `socle api …`: people-friendly commands over the API.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};

use crate::client::{Client, ClientArgs};

#[derive(clap::Subcommand)]
pub enum VmCommand {
    /// Create VMs (default image socle-tiny, type tinav5.c1r1p2).
    Create {
        #[command(flatten)]
        client: ClientArgs,
        /// Image name or ID.
        #[arg(long, default_value = "socle-tiny")]
        image: String,
        #[arg(long = "type", default_value = "tinav5.c1r1p2")]
        vm_type: String,
        #[arg(long, default_value_t = 1)]
        count: i64,
        #[arg(long)]
        keypair: Option<String>,
        /// File whose content becomes the VM's user data.
        #[arg(long)]
        user_data_file: Option<std::path::PathBuf>,
        /// A Name tag.
        #[arg(long)]
        name: Option<String>,
        /// Wait until the VMs are running.
        #[arg(long)]
        wait: bool,
    },
    /// List your VMs.
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show one VM.
    Show {
        #[command(flatten)]
        client: ClientArgs,
        vm_id: String,
    },
    /// Stop VMs (graceful ACPI shutdown; --force powers off at once).
    Stop {
        #[command(flatten)]
        client: ClientArgs,
        #[arg(required = true)]
        vm_ids: Vec<String>,
        #[arg(long)]
        force: bool,
    },
    /// Start stopped VMs.
    Start {
        #[command(flatten)]
        client: ClientArgs,
        #[arg(required = true)]
        vm_ids: Vec<String>,
    },
    /// Reboot running VMs.
    Reboot {
        #[command(flatten)]
        client: ClientArgs,
        #[arg(required = true)]
        vm_ids: Vec<String>,
    },
    /// Terminate VMs.
    Delete {
        #[command(flatten)]
        client: ClientArgs,
        #[arg(required = true)]
        vm_ids: Vec<String>,
    },
    /// Print a VM's serial console.
    Console {
        #[command(flatten)]
        client: ClientArgs,
        vm_id: String,
    },
}

#[derive(clap::Args)]
pub struct ApiArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Operation name, e.g. ReadVms.
    operation: String,
    /// JSON body (default `{}`).
    body: Option<String>,
}

pub fn run_api(args: ApiArgs) -> anyhow::Result<()> {
    let client = Client::from_args(&args.client)?;
    let body: Value = match &args.body {
        Some(b) => serde_json::from_str(b).map_err(|e| anyhow!("the body is not valid JSON: {e}"))?,
        None => json!({}),
    };
    let out = client.call(&args.operation, &body)?;
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

fn print_json(v: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn tag<'a>(vm: &'a Value, key: &str) -> &'a str {
    vm["Tags"]
        .as_array()
        .and_then(|tags| tags.iter().find(|t| t["Key"] == key))
        .and_then(|t| t["Value"].as_str())
        .unwrap_or("")
}

fn vm_table(vms: &[Value]) -> comfy_table::Table {
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::NOTHING);
    table.set_header(["VM ID", "NAME", "STATE", "TYPE", "IMAGE", "SUBREGION", "CREATED"]);
    for vm in vms {
        let s = |k: &str| vm[k].as_str().unwrap_or("").to_string();
        table.add_row([
            s("VmId"),
            tag(vm, "Name").to_string(),
            s("State"),
            s("VmType"),
            s("ImageId"),
            vm["Placement"]["SubregionName"].as_str().unwrap_or("").to_string(),
            s("CreationDate"),
        ]);
    }
    table
}

fn state_table(states: &Value) -> comfy_table::Table {
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::NOTHING);
    table.set_header(["VM ID", "PREVIOUS", "CURRENT"]);
    for s in states.as_array().into_iter().flatten() {
        table.add_row([
            s["VmId"].as_str().unwrap_or(""),
            s["PreviousState"].as_str().unwrap_or(""),
            s["CurrentState"].as_str().unwrap_or(""),
        ]);
    }
    table
}

fn image_id(client: &Client, image: &str) -> anyhow::Result<String> {
    if image.starts_with("ami-") {
        return Ok(image.to_string());
    }
    let out = client.call("ReadImages", &json!({"Filters": {"ImageNames": [image]}}))?;
    out["Images"][0]["ImageId"]
        .as_str()
        .map(String::from)
        .ok_or_else(|| anyhow!("no image named {image:?} (see `socle api ReadImages`)"))
}

/// Waits until every VM runs, saying on stderr each state a VM reaches
/// (with the seconds since the call) and, once it runs, the last line its
/// console printed: the boot is seen as it goes.
fn wait_running(client: &Client, ids: &[String]) -> anyhow::Result<Vec<Value>> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(300);
    let mut said: std::collections::HashMap<String, String> = Default::default();
    loop {
        let out = client.call("ReadVms", &json!({"Filters": {"VmIds": ids}}))?;
        let vms = out["Vms"].as_array().cloned().unwrap_or_default();
        for v in &vms {
            let (id, state) = (v["VmId"].as_str().unwrap_or_default(), v["State"].as_str().unwrap_or_default());
            if said.get(id).map(String::as_str) != Some(state) {
                eprintln!("{id}: {state} ({} s)", started.elapsed().as_secs());
                said.insert(id.to_string(), state.to_string());
            }
        }
        if vms.iter().all(|v| v["State"] == "running") {
            for id in ids {
                if let Some(line) = last_console_line(client, id) {
                    eprintln!("{id}: console: {line}");
                }
            }
            return Ok(vms);
        }
        if let Some(v) = vms.iter().find(|v| v["State"] == "stopped" || v["State"] == "terminated") {
            bail!("VM {} ended {}: {}", v["VmId"], v["State"], v["StateReason"]);
        }
        if Instant::now() > deadline {
            bail!("VMs not running after 5 minutes");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The last non-empty line of a VM's console, if it printed any yet.
fn last_console_line(client: &Client, id: &str) -> Option<String> {
    let out = client.call("ReadConsoleOutput", &json!({"VmId": id})).ok()?;
    let text = STANDARD.decode(out["ConsoleOutput"].as_str()?).ok()?;
    String::from_utf8_lossy(&text).lines().rev().map(str::trim).find(|l| !l.is_empty()).map(|l| l.chars().filter(|c| !c.is_control()).take(160).collect())
}

pub fn run_vm(cmd: VmCommand) -> anyhow::Result<()> {
    match cmd {
        VmCommand::Create { client: args, image, vm_type, count, keypair, user_data_file, name, wait } => {
            let client = Client::from_args(&args)?;
            let mut body = json!({
                "ImageId": image_id(&client, &image)?,
                "VmType": vm_type,
                "MinVmsCount": count,
                "MaxVmsCount": count,
            });
            if let Some(k) = keypair {
                body["KeypairName"] = json!(k);
            }
            if let Some(f) = user_data_file {
                body["UserData"] = json!(STANDARD.encode(std::fs::read(&f)?));
            }
            let out = client.call("CreateVms", &body)?;
            let mut vms = out["Vms"].as_array().cloned().unwrap_or_default();
            let ids: Vec<String> = vms.iter().filter_map(|v| v["VmId"].as_str().map(String::from)).collect();
            if let Some(n) = name {
                client.call("CreateTags", &json!({"ResourceIds": ids, "Tags": [{"Key": "Name", "Value": n}]}))?;
            }
            if wait {
                vms = wait_running(&client, &ids)?;
            }
            if args.json {
                return print_json(&json!(vms));
            }
            println!("{}", vm_table(&vms));
            Ok(())
        }
        VmCommand::List { client: args } => {
            let client = Client::from_args(&args)?;
            let mut vms = vec![];
            let mut token: Option<String> = None;
            loop {
                let mut body = json!({"ResultsPerPage": 1000});
                if let Some(t) = &token {
                    body["NextPageToken"] = json!(t);
                }
                let out = client.call("ReadVms", &body)?;
                vms.extend(out["Vms"].as_array().cloned().unwrap_or_default());
                match out["NextPageToken"].as_str() {
                    Some(t) => token = Some(t.to_string()),
                    None => break,
                }
            }
            if args.json {
                return print_json(&json!(vms));
            }
            println!("{}", vm_table(&vms));
            Ok(())
        }
        VmCommand::Show { client: args, vm_id } => {
            let client = Client::from_args(&args)?;
            let out = client.call("ReadVms", &json!({"Filters": {"VmIds": [vm_id]}}))?;
            let vm = out["Vms"].get(0).ok_or_else(|| anyhow!("no VM {vm_id}"))?;
            if args.json {
                return print_json(vm);
            }
            let mut table = comfy_table::Table::new();
            table.load_preset(comfy_table::presets::NOTHING);
            for key in ["VmId", "State", "StateReason", "VmType", "Performance", "ImageId", "KeypairName", "ReservationId", "CreationDate", "DeletionProtection"] {
                let v = &vm[key];
                table.add_row([key.to_string(), v.as_str().map(String::from).unwrap_or_else(|| v.to_string())]);
            }
            table.add_row(["Subregion".to_string(), vm["Placement"]["SubregionName"].as_str().unwrap_or("").to_string()]);
            for t in vm["Tags"].as_array().into_iter().flatten() {
                table.add_row([format!("Tag {}", t["Key"].as_str().unwrap_or("")), t["Value"].as_str().unwrap_or("").to_string()]);
            }
            println!("{table}");
            Ok(())
        }
        VmCommand::Stop { client: args, vm_ids, force } => {
            lifecycle(&args, "StopVms", json!({"VmIds": vm_ids, "ForceStop": force}))
        }
        VmCommand::Start { client: args, vm_ids } => lifecycle(&args, "StartVms", json!({"VmIds": vm_ids})),
        VmCommand::Delete { client: args, vm_ids } => lifecycle(&args, "DeleteVms", json!({"VmIds": vm_ids})),
        VmCommand::Reboot { client: args, vm_ids } => {
            let client = Client::from_args(&args)?;
            let out = client.call("RebootVms", &json!({"VmIds": vm_ids}))?;
            if args.json {
                return print_json(&out);
            }
            println!("rebooting {}", vm_ids.join(" "));
            Ok(())
        }
        VmCommand::Console { client: args, vm_id } => {
            let client = Client::from_args(&args)?;
            let out = client.call("ReadConsoleOutput", &json!({"VmId": vm_id}))?;
            if args.json {
                return print_json(&out);
            }
            let text = STANDARD.decode(out["ConsoleOutput"].as_str().unwrap_or(""))?;
            print!("{}", String::from_utf8_lossy(&text));
            Ok(())
        }
    }
}

fn lifecycle(args: &ClientArgs, operation: &str, body: Value) -> anyhow::Result<()> {
    let client = Client::from_args(args)?;
    let out = client.call(operation, &body)?;
    if args.json {
        return print_json(&out["Vms"]);
    }
    println!("{}", state_table(&out["Vms"]));
    Ok(())
}

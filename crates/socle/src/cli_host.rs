//! `socle host …`: the hosts of a cloud, on its data dir and database (like
//! `socle account …`, it works while the cloud runs).

use std::time::Duration;

use socle_control::hosts;
use socle_control::startup::open_identity;
use socle_store::hosts as host_store;
use socle_types::ids::HostId;

use crate::StateArgs;

#[derive(clap::Subcommand)]
pub enum HostCommand {
    /// Print a one-time token with which a new host joins this cloud:
    /// `socle agent --join URL --token TOKEN …` on that host.
    Token {
        #[command(flatten)]
        state: StateArgs,
        /// The subregion (availability zone) of the host, e.g. eu-west-2b.
        #[arg(long)]
        subregion: String,
        /// Minutes the token stays valid.
        #[arg(long, default_value_t = 60)]
        ttl_minutes: u64,
    },
    /// List the hosts: subregion, state (ready, unreachable, revoked; cordoned),
    /// vCPUs and memory reserved by VMs out of what the host may carry
    /// (after overcommit), tenancy, agent endpoint.
    List {
        #[command(flatten)]
        state: StateArgs,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Cordon a host: no new VM is placed there (its VMs keep running).
    Cordon {
        host_id: String,
        #[command(flatten)]
        state: StateArgs,
    },
    /// Lift a host's cordon: new VMs may be placed there again.
    Uncordon {
        host_id: String,
        #[command(flatten)]
        state: StateArgs,
    },
    /// Revoke a host: the cloud never reaches its agent again (it must join
    /// anew, with a new token, to come back).
    Revoke {
        host_id: String,
        #[command(flatten)]
        state: StateArgs,
    },
    /// Remove a host from the cloud for good, once no VM, volume or snapshot
    /// lives there any more (delete them first: moving them comes with
    /// drain). To use the machine again, it joins anew.
    Remove {
        host_id: String,
        #[command(flatten)]
        state: StateArgs,
    },
}

pub fn run(cmd: HostCommand) -> anyhow::Result<()> {
    match cmd {
        HostCommand::Token { state, subregion, ttl_minutes } => {
            let dir = state.dir.resolve();
            let (store, secrets) = open_identity(&dir, state.database.as_deref())?;
            // The CA exists before the first host asks for a certificate.
            let ca_dir = dir.clone();
            store
                .write_sync(move |c| hosts::cloud_ca(c, &ca_dir, true))
                .map_err(|e: socle_types::ApiError| anyhow::anyhow!("{}", e.internal.unwrap_or(e.details)))?;
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let ttl = Duration::from_secs(ttl_minutes.max(1) * 60);
            let token = runtime
                .block_on(hosts::issue_token(&store, &secrets, &subregion, ttl))
                .map_err(|e| anyhow::anyhow!("{}", e.details))?;
            println!("{token}");
            Ok(())
        }
        HostCommand::List { state, json } => {
            let (store, _) = open_identity(&state.dir.resolve(), state.database.as_deref())?;
            let list = store.read_sync(host_store::list)?;
            if json {
                let rows: Vec<_> = list
                    .iter()
                    .map(|h| {
                        serde_json::json!({
                            "HostId": h.host_id, "Subregion": h.subregion, "State": h.state, "Cordoned": h.cordoned,
                            "Vcpus": h.vcpus, "UsedVcpus": h.used_vcpus, "MemoryMib": h.memory_mib, "UsedMemoryMib": h.used_memory_mib,
                            "DedicatedTo": h.dedicated_to,
                            "Endpoint": h.endpoint, "JoinedAt": h.joined_at, "SeenAt": h.seen_at,
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&rows)?);
                return Ok(());
            }
            let mut table = comfy_table::Table::new();
            table
                .load_preset(comfy_table::presets::NOTHING)
                .set_header(["HOST", "SUBREGION", "STATE", "VCPUS", "MEMORY (GiB)", "DEDICATED TO", "ENDPOINT", "SEEN"]);
            for h in list {
                let state = if h.cordoned { format!("{},cordoned", h.state) } else { h.state };
                table.add_row([
                    h.host_id.to_string(),
                    h.subregion,
                    state,
                    format!("{}/{}", h.used_vcpus, h.vcpus),
                    format!("{:.1}/{:.1}", h.used_memory_mib as f64 / 1024.0, h.memory_mib as f64 / 1024.0),
                    h.dedicated_to.unwrap_or_default(),
                    h.endpoint,
                    h.seen_at.unwrap_or_default(),
                ]);
            }
            println!("{table}");
            Ok(())
        }
        HostCommand::Cordon { host_id, state } => set_cordoned(&host_id, &state, true),
        HostCommand::Uncordon { host_id, state } => set_cordoned(&host_id, &state, false),
        HostCommand::Remove { host_id, state } => remove(&host_id, &state),
        HostCommand::Revoke { host_id, state } => {
            let host_id = HostId::parse(&host_id).map_err(|e| anyhow::anyhow!("{}", e.details))?;
            let (store, _) = open_identity(&state.dir.resolve(), state.database.as_deref())?;
            let id = host_id.clone();
            let changed = store.write_sync(move |c| host_store::set_state(c, &id, "revoked"))?;
            anyhow::ensure!(changed || store.read_sync(|c| host_store::get(c, &host_id))?.is_some(), "no host {host_id}");
            println!("{host_id} is revoked");
            Ok(())
        }
    }
}

fn remove(host_id: &str, state: &StateArgs) -> anyhow::Result<()> {
    let host_id = HostId::parse(host_id).map_err(|e| anyhow::anyhow!("{}", e.details))?;
    let (store, _) = open_identity(&state.dir.resolve(), state.database.as_deref())?;
    let id = host_id.clone();
    let holds = store.write_sync(move |c| host_store::remove(c, &id))?.ok_or_else(|| anyhow::anyhow!("no host {host_id}"))?;
    anyhow::ensure!(
        holds.is_empty(),
        "{host_id} still holds {} VM(s), {} volume(s) and {} snapshot(s): delete them first; it is not removed",
        holds.vms,
        holds.volumes,
        holds.snapshots
    );
    println!("{host_id} is removed from the cloud");
    Ok(())
}

fn set_cordoned(host_id: &str, state: &StateArgs, cordoned: bool) -> anyhow::Result<()> {
    let host_id = HostId::parse(host_id).map_err(|e| anyhow::anyhow!("{}", e.details))?;
    let (store, _) = open_identity(&state.dir.resolve(), state.database.as_deref())?;
    let id = host_id.clone();
    let changed = store.write_sync(move |c| host_store::set_cordoned(c, &id, cordoned))?;
    anyhow::ensure!(changed, "no host {host_id}");
    println!("{host_id} is {}", if cordoned { "cordoned: no new VM goes there" } else { "schedulable again" });
    Ok(())
}

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
    /// List the hosts: subregion, state (ready, cordoned, unreachable, revoked), agent endpoint.
    List {
        #[command(flatten)]
        state: StateArgs,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a host: the cloud never reaches its agent again (it must join
    /// anew, with a new token, to come back).
    Revoke {
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
            hosts::load_or_create_ca(&dir).map_err(|e| anyhow::anyhow!("{}", e.details))?;
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
                            "HostId": h.host_id, "Subregion": h.subregion, "State": h.state,
                            "Endpoint": h.endpoint, "JoinedAt": h.joined_at, "SeenAt": h.seen_at,
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&rows)?);
                return Ok(());
            }
            let mut table = comfy_table::Table::new();
            table.load_preset(comfy_table::presets::NOTHING).set_header(["HOST", "SUBREGION", "STATE", "ENDPOINT", "JOINED", "SEEN"]);
            for h in list {
                table.add_row([h.host_id.to_string(), h.subregion, h.state, h.endpoint, h.joined_at, h.seen_at.unwrap_or_default()]);
            }
            println!("{table}");
            Ok(())
        }
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

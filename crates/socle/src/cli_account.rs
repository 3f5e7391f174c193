//! `socle account …`: admin commands on a cloud's data dir and database. They
//! work while the cloud runs (SQLite allows one writer at a time and both
//! wait; PostgreSQL serialises the transactions).

use anyhow::Context;
use socle_control::{hsm, identity};
use socle_control::startup::open_identity;
use socle_store::accounts::{self, Quotas};

use crate::StateArgs;

#[derive(clap::Subcommand)]
pub enum AccountCommand {
    /// Create an account and print its first credentials (JSON).
    Create {
        name: String,
        #[command(flatten)]
        state: StateArgs,
        /// The endpoint written into the printed credentials.
        #[arg(long, default_value = "http://127.0.0.1:8700/api/v1")]
        endpoint: String,
        #[arg(long, default_value = "eu-west-2")]
        region: String,
    },
    /// List accounts and their quotas.
    List {
        #[command(flatten)]
        state: StateArgs,
    },
    /// Register a PKCS#11 token (HSM) this cloud may use for customer-held keys.
    RegisterToken {
        #[command(flatten)]
        state: StateArgs,
        /// The token's label.
        #[arg(long)]
        label: String,
        /// The PKCS#11 module, e.g. /usr/lib/softhsm/libsofthsm2.so.
        #[arg(long)]
        module: std::path::PathBuf,
        /// A file (mode 0600) holding the token's user PIN.
        #[arg(long)]
        pin_file: std::path::PathBuf,
    },
    /// Bind an account to a key on a registered token (customer-held key):
    /// every data key of the account is re-wrapped under it. Revoking that
    /// key on the token then makes all the account's disks unreadable.
    BindKey {
        name: String,
        #[command(flatten)]
        state: StateArgs,
        /// The label of a registered token.
        #[arg(long)]
        token: String,
        /// The label (CKA_LABEL) of the AES-256 key on that token.
        #[arg(long)]
        key_label: String,
    },
    /// Change an account's quotas.
    Quota {
        name: String,
        #[command(flatten)]
        state: StateArgs,
        #[arg(long)]
        max_vms: Option<i64>,
        #[arg(long)]
        max_vcpus: Option<i64>,
        #[arg(long)]
        max_memory_gib: Option<i64>,
        /// Public IPs the account may hold (CreatePublicIp).
        #[arg(long)]
        max_public_ips: Option<i64>,
    },
}

/// The endpoint of the cloud running on this data dir, when known.
fn local_endpoint(data_dir: &std::path::Path) -> Option<String> {
    let bytes = std::fs::read(data_dir.join("credentials.json")).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v["Endpoint"].as_str().map(String::from)
}

pub fn run(cmd: AccountCommand) -> anyhow::Result<()> {
    match cmd {
        AccountCommand::Create { name, state, endpoint, region } => {
            let dir = state.dir.resolve();
            let (store, secrets) = open_identity(&dir, state.database.as_deref())?;
            let creds = store
                .write_sync(|c| identity::create_account(c, &secrets, &name, Quotas::default()))
                .with_context(|| format!("cannot create account {name:?}"))?;
            let endpoint = local_endpoint(&dir).unwrap_or(endpoint);
            let out = serde_json::json!({
                "AccountId": creds.account_id,
                "AccessKey": creds.access_key,
                "SecretKey": creds.secret_key,
                "Region": region,
                "Endpoint": endpoint,
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(())
        }
        AccountCommand::RegisterToken { state, label, module, pin_file } => {
            let dir = state.dir.resolve();
            let token = hsm::TokenConfig { token_label: label.clone(), module, pin_file };
            // Open it once now: a wrong module, label or PIN fails here, not at first use.
            let mut kms = socle_kms::Kms::new(std::sync::Arc::new(socle_kms::TracingAudit));
            let pin = std::fs::read_to_string(&token.pin_file)
                .with_context(|| format!("cannot read {}", token.pin_file.display()))?;
            kms.add(std::sync::Arc::new(socle_kms::Pkcs11Keystore::open(&token.module, &label, pin.trim_end())?))?;
            hsm::register_token(&dir, token)?;
            println!("token {label:?} registered");
            Ok(())
        }
        AccountCommand::BindKey { name, state, token, key_label } => {
            let dir = state.dir.resolve();
            let (store, _) = open_identity(&dir, state.database.as_deref())?;
            let keystores = hsm::Keystores::open(&dir)?;
            let kek = socle_kms::KekRef::Pkcs11 { token_label: token, key_label };
            let n = store.write_sync(|c| hsm::bind_account(c, &keystores, &name, &kek, "admin"))?;
            println!("{name} is bound to {kek}; {n} data keys re-wrapped");
            Ok(())
        }
        AccountCommand::List { state } => {
            let (store, _) = open_identity(&state.dir.resolve(), state.database.as_deref())?;
            let list = store.read_sync(|c| accounts::list(c))?;
            let mut table = comfy_table::Table::new();
            table.load_preset(comfy_table::presets::NOTHING).set_header(["NAME", "ACCOUNT ID", "MAX VMS", "MAX VCPUS", "MAX MEMORY GiB", "CREATED"]);
            for a in list {
                table.add_row([
                    a.name,
                    a.account_id.to_string(),
                    a.quotas.max_vms.to_string(),
                    a.quotas.max_vcpus.to_string(),
                    (a.quotas.max_memory_mib / 1024).to_string(),
                    a.created_at,
                ]);
            }
            println!("{table}");
            Ok(())
        }
        AccountCommand::Quota { name, state, max_vms, max_vcpus, max_memory_gib, max_public_ips } => {
            for (flag, v) in [
                ("--max-vms", max_vms),
                ("--max-vcpus", max_vcpus),
                ("--max-memory-gib", max_memory_gib),
                ("--max-public-ips", max_public_ips),
            ] {
                if v.is_some_and(|v| v < 0) {
                    anyhow::bail!("{flag} must not be negative");
                }
            }
            let (store, _) = open_identity(&state.dir.resolve(), state.database.as_deref())?;
            let account = store.write_sync(|c| {
                identity::set_quotas(c, &name, |q| {
                    if let Some(v) = max_vms {
                        q.max_vms = v;
                    }
                    if let Some(v) = max_vcpus {
                        q.max_vcpus = v;
                    }
                    if let Some(v) = max_memory_gib {
                        q.max_memory_mib = v * 1024;
                    }
                    if let Some(v) = max_public_ips {
                        q.max_public_ips = v;
                    }
                })
            })?;
            println!(
                "{}: max {} VMs, {} vCPUs, {} GiB, {} public IPs",
                account.name,
                account.quotas.max_vms,
                account.quotas.max_vcpus,
                account.quotas.max_memory_mib / 1024,
                account.quotas.max_public_ips
            );
            Ok(())
        }
    }
}

//! `socle`: one binary for the whole cloud.
//!
//! - `socle up`: an all-in-one cloud on this machine (API, host agent, SQLite
//!   or PostgreSQL).
//! - `socle agent`: the host agent alone, for a control plane to drive.
//! - `socle account …`: admin commands working on a data dir and its database.
//! - `socle vm …`, `socle api …`: a client of any Socle (or Outscale) endpoint.

mod client;
mod upload;
mod cli_account;
mod cli_host;
mod cli_image;
mod cli_vm;
mod join;
mod agent;
mod up;
mod down;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "socle", version, about = "Socle — a sovereign IaaS cloud with an OUTSCALE-compatible API")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where a cloud keeps its state: `--data-dir`, else `$SOCLE_DATA_DIR`, else
/// `~/.local/share/socle`.
#[derive(clap::Args, Clone)]
pub struct DataDirArg {
    #[arg(long, env = "SOCLE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

impl DataDirArg {
    pub fn resolve(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(|| {
            let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/var/lib"));
            home.join(".local/share/socle")
        })
    }
}

/// Where a cloud keeps its state: its data dir (sealing key, credentials,
/// disks) and its database — SQLite in the data dir unless `--database` (or
/// `$SOCLE_DATABASE`) names a PostgreSQL one (`postgres://…`).
#[derive(clap::Args, Clone)]
pub struct StateArgs {
    #[command(flatten)]
    pub dir: DataDirArg,
    /// PostgreSQL URL of the cloud's database, e.g. postgres://socle@db1/socle
    /// (default: SQLite, DATA/socle.db).
    #[arg(long, env = "SOCLE_DATABASE")]
    pub database: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Run an all-in-one cloud on this machine, in the foreground.
    Up(up::UpArgs),
    /// Run the API and control plane of a cloud whose hosts all joined (`socle agent --join`), without a host agent of its own; several may serve one PostgreSQL database.
    Server(up::ServerArgs),
    /// End the cloud of a data dir on this machine (after `socle up` is stopped): shut its VMs down and remove its networks; --purge also deletes the data dir.
    Down(down::DownArgs),
    /// Run the host agent alone, in the foreground: for `socle up --agent` on this machine, or as a host joined to a cloud (`--join`).
    Agent(agent::AgentArgs),
    /// Manage accounts of a local cloud (works on its data dir).
    #[command(subcommand)]
    Account(cli_account::AccountCommand),
    /// The hosts of a cloud: join tokens, list, revoke (works on its data dir and database).
    #[command(subcommand)]
    Host(cli_host::HostCommand),
    /// Manage your virtual machines.
    #[command(subcommand)]
    Vm(cli_vm::VmCommand),
    /// List images; import a disk image from a file or a URL.
    #[command(subcommand)]
    Image(cli_image::ImageCommand),
    /// Call any API operation: `socle api ReadVms '{"Filters":{"VmStateNames":["running"]}}'`.
    Api(cli_vm::ApiArgs),
    /// Print the shell completion script: `source <(socle completions bash)`, or keep it where your shell loads completions from.
    Completions {
        shell: clap_complete::Shell,
    },
}

/// Logs to stderr, `info` unless RUST_LOG says otherwise.
pub fn init_logs() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
}

/// Keys pass through the memory of `socle up` and `socle agent` (volume
/// data keys, the master key, TLS keys): no core dump may carry them, and
/// no other process of the same user may read that memory (ptrace,
/// /proc/PID/mem). QEMU, started by exec, is not affected.
fn keep_out_of_core_dumps() -> anyhow::Result<()> {
    // SAFETY: PR_SET_DUMPABLE takes a plain integer and touches no memory.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        anyhow::bail!("cannot keep this process out of core dumps: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Up(args) => keep_out_of_core_dumps().and_then(|()| up::run(args)),
        Command::Server(args) => keep_out_of_core_dumps().and_then(|()| up::run_server(args)),
        Command::Agent(args) => keep_out_of_core_dumps().and_then(|()| agent::run(args)),
        Command::Down(args) => down::run(args),
        Command::Account(cmd) => cli_account::run(cmd),
        Command::Host(cmd) => cli_host::run(cmd),
        Command::Vm(cmd) => cli_vm::run_vm(cmd),
        Command::Image(cmd) => cli_image::run(cmd),
        Command::Api(args) => cli_vm::run_api(args),
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut <Cli as clap::CommandFactory>::command(), "socle", &mut script);
            match std::io::Write::write_all(&mut std::io::stdout(), &script) {
                // `socle completions bash | head`: the reader has enough.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
                other => other.map_err(anyhow::Error::from),
            }
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn servers_and_agents_stay_out_of_core_dumps() {
        // SAFETY: PR_GET_DUMPABLE reads a flag of this process.
        assert_eq!(unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) }, 1, "dumpable before");
        super::keep_out_of_core_dumps().unwrap();
        assert_eq!(unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) }, 0);
    }
}

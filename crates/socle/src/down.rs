//! `socle down`: ends a cloud on this machine. VMs and their networks
//! outlive `socle up` by design (a restart re-attaches them); this is how a
//! user ends them: every VM of the data dir is shut down (ACPI, then killed
//! after a timeout), then every network object of the cloud's prefix goes —
//! namespaces with their dnsmasq, veths, bridges, taps, nftables tables.
//! The data dir stays (a later `socle up` starts the VMs and networks
//! again) unless `--purge` removes it too.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use socle_agent::AccelChoice;
use socle_net::NetDriver;

use crate::DataDirArg;

#[derive(clap::Args)]
pub struct DownArgs {
    #[command(flatten)]
    dir: DataDirArg,
    /// The prefix the cloud was started with (`socle up --net-prefix`).
    #[arg(long, default_value = "socle", env = "SOCLE_NET_PREFIX")]
    net_prefix: String,
    /// Seconds a VM has to shut down by itself before it is powered off.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// Also delete the data dir: every VM disk, volume, snapshot, key and
    /// credential of the cloud. Asks first, unless --yes.
    #[arg(long)]
    purge: bool,
    /// With --purge: do not ask.
    #[arg(long)]
    yes: bool,
}

pub fn run(args: DownArgs) -> anyhow::Result<()> {
    let data_dir = args.dir.resolve();
    anyhow::ensure!(
        data_dir.join("master.key").exists(),
        "no cloud in {} (no master.key): give its --data-dir",
        data_dir.display()
    );
    // A server still running would start the VMs again.
    let socket = data_dir.join("agent.sock");
    if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
        anyhow::bail!(
            "a `socle up` (or `socle agent`) still runs on {} ({} answers): stop it first (Ctrl-C), then run socle down",
            data_dir.display(),
            socket.display()
        );
    }
    if args.purge && !args.yes && !confirmed(&data_dir)? {
        anyhow::bail!("nothing done");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let stopped = runtime.block_on(stop_vms(&data_dir, Duration::from_secs(args.timeout)))?;
    println!("stopped {stopped} VM(s)");
    let removed = remove_networks(&data_dir, &args.net_prefix)?;
    println!("removed {removed} network(s) and their taps, namespaces, dnsmasq and nftables tables");
    if args.purge {
        std::fs::remove_dir_all(&data_dir).with_context(|| format!("cannot remove {}", data_dir.display()))?;
        println!("removed {}", data_dir.display());
    }
    Ok(())
}

fn confirmed(data_dir: &Path) -> anyhow::Result<bool> {
    print!("Delete {} and every disk, volume, snapshot and key in it? Type yes: ", data_dir.display());
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(answer.trim() == "yes")
}

/// Shuts down every VM the data dir's agent defined, all at once: each gets
/// an ACPI shutdown and `timeout` before it is powered off.
async fn stop_vms(data_dir: &Path, timeout: Duration) -> anyhow::Result<usize> {
    let agent = std::sync::Arc::new(crate::agent::start(data_dir, AccelChoice::Auto, None).await?);
    let vms = agent.list_vms().await.context("cannot list the VMs")?;
    let mut stops = tokio::task::JoinSet::new();
    for vm in vms {
        let agent = agent.clone();
        stops.spawn(async move {
            let running = agent.vm_runtime(&vm).await.map(|r| r != socle_agent_api::VmRuntime::NotRunning);
            match running {
                Ok(true) => agent.stop_vm(&vm, false, timeout).await.map(|()| true),
                other => other,
            }
            .with_context(|| format!("cannot stop {vm}"))
        });
    }
    let mut stopped = 0;
    while let Some(done) = stops.join_next().await {
        stopped += usize::from(done??);
    }
    Ok(stopped)
}

/// Removes every network of the prefix (the driver finds them by their
/// namespaces and nftables tables) and the taps of its VMs left in the root
/// namespace (`<prefix>` and 8 hex digits: no other prefix can match).
fn remove_networks(data_dir: &Path, prefix: &str) -> anyhow::Result<usize> {
    let driver = NetDriver::new(PathBuf::from(data_dir).join("net"), prefix)?;
    let nets = driver.list_nets()?;
    for net in &nets {
        driver.destroy(net).with_context(|| format!("cannot remove the network {net}"))?;
    }
    for link in std::fs::read_dir("/sys/class/net").context("cannot list the host's links")? {
        let name = link?.file_name().to_string_lossy().into_owned();
        if is_tap_of(prefix, &name) {
            driver.remove_tap(&name).with_context(|| format!("cannot remove the tap {name}"))?;
        }
    }
    Ok(nets.len())
}

fn is_tap_of(prefix: &str, link: &str) -> bool {
    link.strip_prefix(prefix).is_some_and(|hex| hex.len() == 8 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn taps_of_a_prefix_and_no_other() {
        assert!(super::is_tap_of("socle", "socle0a1b2c3d"));
        assert!(!super::is_tap_of("socle", "socle10a1b2c3d"), "the tap of prefix socle1");
        assert!(!super::is_tap_of("socle", "socle-0a1b2c3d"), "a root veth: its network's");
        assert!(!super::is_tap_of("socle", "socle0A1B2C3D"));
        assert!(!super::is_tap_of("socle", "eth0"));
    }
}

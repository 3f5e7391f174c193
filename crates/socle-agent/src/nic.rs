//! A VM's network ports: virtio-net devices backed by taps that the host
//! network driver (socle-net) prepared in the root namespace.
//!
//! The agent never creates or wires a tap: it only opens the one it is
//! given, by name, when QEMU starts (`-netdev tap,ifname=…`) or when the NIC
//! is hot-plugged (QMP `netdev_add`). Like linked volumes, the links are
//! recorded in the VM's spec so that a restart brings them back.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::{Agent, AgentError};
use socle_agent_api::VmNic;

/// How long an unlink waits for the guest to release the device.
const UNLINK_TIMEOUT: Duration = Duration::from_secs(30);

/// How the agent wires a [`VmNic`] into QEMU.
pub(crate) trait VmNicExt {
    fn validate(&self) -> Result<(), AgentError>;
    fn netdev_id(&self) -> String;
    fn device_id(&self) -> String;
    fn qemu_args(&self) -> Vec<String>;
}

impl VmNicExt for VmNic {
    fn validate(&self) -> Result<(), AgentError> {
        let name_ok = (1..=15).contains(&self.ifname.len())
            && self.ifname.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        let mac_ok = self.mac.len() == 17
            && self.mac.split(':').count() == 6
            && self.mac.split(':').all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()));
        if name_ok && mac_ok {
            Ok(())
        } else {
            Err(AgentError::InvalidArgument(format!("bad NIC: tap {:?}, MAC {:?}", self.ifname, self.mac)))
        }
    }

    fn netdev_id(&self) -> String {
        format!("net-{}", self.ifname)
    }

    fn device_id(&self) -> String {
        format!("nic-{}", self.ifname)
    }

    /// QEMU command-line arguments for a NIC present at start. No option
    /// ROM (`romfile=`): guests never boot from the network, and the ROM
    /// file may not be installed.
    fn qemu_args(&self) -> Vec<String> {
        vec![
            "-netdev".into(),
            format!("tap,id={},ifname={},script=no,downscript=no", self.netdev_id(), self.ifname),
            "-device".into(),
            format!("virtio-net-pci,netdev={},id={},mac={},romfile=", self.netdev_id(), self.device_id(), self.mac),
        ]
    }
}

impl Agent {
    /// Links a NIC to a VM: recorded in its spec (used at every start) and,
    /// on a running VM, hot-plugged at once — the tap must then exist in
    /// the root namespace. Idempotent (same tap, same MAC).
    pub async fn link_nic(&self, vm_id: &str, nic: &VmNic) -> Result<(), AgentError> {
        crate::validate_vm_id(vm_id)?;
        nic.validate()?;
        self.existing_vm_dir(vm_id)?;
        let _g = self.lock_vm(vm_id).await;
        let mut spec = self.load_spec(vm_id)?;
        if let Some(other) = spec.nics.iter().find(|n| n.ifname == nic.ifname && n.mac != nic.mac) {
            return Err(AgentError::Conflict {
                vm_id: vm_id.into(),
                what: format!("already has tap {} with MAC {}", other.ifname, other.mac),
            });
        }
        if self.running_pid(vm_id).is_some() {
            self.plug_nic(vm_id, nic).await?;
        }
        if !spec.nics.contains(nic) {
            spec.nics.push(nic.clone());
            self.save_spec(&spec)?;
            tracing::info!(vm = vm_id, tap = %nic.ifname, mac = %nic.mac, "NIC linked");
        }
        Ok(())
    }

    /// Unlinks the NIC on tap `ifname`. On a running VM: `device_del`, then
    /// waits until the guest released the device, then removes the netdev
    /// (QEMU closes the tap). Idempotent.
    pub async fn unlink_nic(&self, vm_id: &str, ifname: &str) -> Result<(), AgentError> {
        crate::validate_vm_id(vm_id)?;
        let _g = self.lock_vm(vm_id).await;
        let mut spec = match self.load_spec(vm_id) {
            Ok(s) => s,
            Err(AgentError::VmNotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        let Some(nic) = spec.nics.iter().find(|n| n.ifname == ifname).cloned() else {
            return Ok(());
        };
        if self.running_pid(vm_id).is_some() {
            self.unplug_nic(vm_id, &nic).await?;
        }
        spec.nics.retain(|n| n.ifname != ifname);
        self.save_spec(&spec)?;
        tracing::info!(vm = vm_id, tap = ifname, "NIC unlinked");
        Ok(())
    }

    /// The NICs recorded for a VM, in link order (the first is the guest's eth0).
    pub async fn vm_nics(&self, vm_id: &str) -> Result<Vec<VmNic>, AgentError> {
        Ok(self.load_spec(vm_id)?.nics)
    }

    /// Whether the NIC's device is in the running QEMU of the VM (false
    /// when the VM does not run). A plugged NIC's tap is held by QEMU: it
    /// must not be prepared (re-created) again.
    pub async fn nic_plugged(&self, vm_id: &str, ifname: &str) -> Result<bool, AgentError> {
        crate::validate_vm_id(vm_id)?;
        self.existing_vm_dir(vm_id)?;
        let _g = self.lock_vm(vm_id).await;
        if self.running_pid(vm_id).is_none() {
            return Ok(false);
        }
        let nic = VmNic { ifname: ifname.into(), mac: String::new() };
        let mut q = self.qmp(vm_id).await?;
        Ok(q.call("qom-list", json!({"path": format!("/machine/peripheral/{}", nic.device_id())})).await.is_ok())
    }

    async fn plug_nic(&self, vm_id: &str, nic: &VmNic) -> Result<(), AgentError> {
        let mut q = self.qmp(vm_id).await?;
        let err = |detail: String| AgentError::Nic { vm_id: vm_id.into(), ifname: nic.ifname.clone(), detail };
        let path = format!("/machine/peripheral/{}", nic.device_id());
        if q.call("qom-list", json!({"path": path})).await.is_ok() {
            return Ok(()); // plugged already (a repeated call)
        }
        // No device: a backend left by an interrupted plug may hold a tap
        // that was re-created since; drop it so the new one opens the
        // current tap. (QEMU 7.2 has no query-netdev to look first.)
        if let Err(d) = q.call("netdev_del", json!({"id": nic.netdev_id()})).await {
            if !d.contains("not found") {
                return Err(err(format!("netdev_del: {d}")));
            }
        }
        q.call(
            "netdev_add",
            json!({"type": "tap", "id": nic.netdev_id(), "ifname": nic.ifname, "script": "no", "downscript": "no"}),
        )
        .await
        .map_err(|d| err(format!("netdev_add: {d}")))?;
        q.call(
            "device_add",
            json!({"driver": "virtio-net-pci", "id": nic.device_id(), "netdev": nic.netdev_id(), "mac": nic.mac, "romfile": ""}),
        )
        .await
        .map_err(|d| err(format!("device_add: {d}")))?;
        tracing::info!(vm = vm_id, tap = %nic.ifname, "NIC hot-plugged");
        Ok(())
    }

    async fn unplug_nic(&self, vm_id: &str, nic: &VmNic) -> Result<(), AgentError> {
        let err = |detail: String| AgentError::Nic { vm_id: vm_id.into(), ifname: nic.ifname.clone(), detail };
        let started = Instant::now();
        let what = format!("NIC {}", nic.ifname);
        let mut q = self.release_device(vm_id, &nic.device_id(), &what, UNLINK_TIMEOUT, err).await?;
        // The device is gone: drop the backend (closes the tap).
        if let Err(d) = q.call("netdev_del", json!({"id": nic.netdev_id()})).await {
            if !d.contains("not found") {
                return Err(err(format!("netdev_del: {d}")));
            }
        }
        tracing::info!(vm = vm_id, tap = %nic.ifname, secs = started.elapsed().as_secs_f64(), "NIC hot-unplugged");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_args_name_the_tap_and_mac_and_skip_the_option_rom() {
        let n = VmNic { ifname: "sct1a2b3c4d".into(), mac: "aa:fc:00:11:22:33".into() };
        n.validate().unwrap();
        assert_eq!(
            n.qemu_args(),
            [
                "-netdev",
                "tap,id=net-sct1a2b3c4d,ifname=sct1a2b3c4d,script=no,downscript=no",
                "-device",
                "virtio-net-pci,netdev=net-sct1a2b3c4d,id=nic-sct1a2b3c4d,mac=aa:fc:00:11:22:33,romfile="
            ]
        );
        for bad in [
            VmNic { ifname: "a,b".into(), mac: n.mac.clone() },
            VmNic { ifname: "x".repeat(16), mac: n.mac.clone() },
            VmNic { ifname: "t0".into(), mac: "aa:fc:00:11:22".into() },
            VmNic { ifname: "t0".into(), mac: "aa:fc:00:11:22:3,".into() },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}

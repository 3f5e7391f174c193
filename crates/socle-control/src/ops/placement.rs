//! Subregions and hosts as operations see them: which subregions exist,
//! where a VM or a volume goes, and the errors a user reads when there is
//! no room (see `socle_store::placement` for how a host is reserved).

use socle_store::hosts as host_store;
use socle_store::placement::{self, Demand, Placed};
use socle_store::Conn;
use socle_types::error::ErrorCode;
use socle_types::ids::HostId;
use socle_types::ApiError;

/// Refuses a subregion no host of the cloud is in.
pub(crate) fn check_subregion(tx: &Conn, name: &str) -> Result<(), ApiError> {
    let known = host_store::subregions(tx, false)?;
    if known.iter().any(|s| s == name) {
        return Ok(());
    }
    Err(ApiError::invalid_value(format!("no subregion named {name:?}; this cloud has {}", known.join(", "))))
}

/// Reserves a host for one VM, or says why none fits.
pub(crate) fn place_vm(tx: &Conn, demand: &Demand) -> Result<Placed, ApiError> {
    if let Some(s) = demand.subregion {
        check_subregion(tx, s)?;
    }
    placement::reserve(tx, demand)?.ok_or_else(|| {
        let place = demand.subregion.map(|s| format!(" in {s}")).unwrap_or_default();
        let tenancy = if demand.dedicated { " with dedicated tenancy" } else { "" };
        ApiError::new(
            ErrorCode::InsufficientCapacity,
            format!(
                "no host{place} has room for a VM of {} vCPUs and {} MiB{tenancy} at the moment; retry later or in another subregion",
                demand.vcpus, demand.memory_mib
            ),
        )
    })
}

/// The host a new volume of `subregion` goes to: the host of the snapshot
/// it is made from if it is a ready host of that subregion (no copy), else
/// the least loaded ready host of the subregion (the snapshot is copied
/// there before the volume is made).
pub(crate) fn volume_host(tx: &Conn, subregion: &str, snapshot_host: Option<&HostId>) -> Result<HostId, ApiError> {
    check_subregion(tx, subregion)?;
    if let Some(h) = snapshot_host {
        if host_store::get(tx, h)?.is_some_and(|host| host.subregion == subregion && host.state == "ready" && !host.cordoned) {
            return Ok(h.clone());
        }
    }
    host_store::least_loaded_in(tx, subregion)?.ok_or_else(|| {
        ApiError::new(ErrorCode::InsufficientCapacity, format!("no host of {subregion} can take a volume at the moment; retry later"))
    })
}

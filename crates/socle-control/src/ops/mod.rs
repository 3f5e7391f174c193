//! One module per resource; each public fn is one OSC operation.
//!
//! Conventions: validate everything first, then honour `DryRun` (answer with
//! an empty success and change nothing), then act. Lookups are always scoped
//! to the caller's account, so another account's resource answers exactly
//! like an absent one.

pub mod access_keys;
pub mod catalog;
pub mod images;
pub mod keypairs;
pub mod quotas;
pub mod tags;
pub mod vm_lifecycle;
pub mod vms;

use socle_store::tags as tag_store;
use socle_store::Connection;
use socle_types::osc::ResourceTag;

use crate::db_err;
use socle_types::ApiError;

pub(crate) fn is_dry_run(flag: Option<bool>) -> bool {
    flag == Some(true)
}

/// The tags of one resource, as OSC `ResourceTag`s.
pub(crate) fn resource_tags(conn: &Connection, resource_id: &str) -> Result<Vec<ResourceTag>, ApiError> {
    Ok(tag_store::for_resource(conn, resource_id)
        .map_err(db_err)?
        .into_iter()
        .map(|t| ResourceTag { key: t.key, value: t.value })
        .collect())
}

/// Tags as (key, value) pairs for filter matching.
pub(crate) fn tag_pairs(tags: &[ResourceTag]) -> Vec<(String, String)> {
    tags.iter().map(|t| (t.key.clone(), t.value.clone())).collect()
}

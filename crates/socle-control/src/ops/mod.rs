//! One module per resource; each public fn is one OSC operation.
//!
//! Conventions: validate everything first, then honour `DryRun` (answer with
//! an empty success and change nothing), then act. Lookups are always scoped
//! to the caller's account, so another account's resource answers exactly
//! like an absent one.

pub mod access_keys;
mod block_devices;
pub mod catalog;
pub mod image_import;
pub mod images;
pub mod internet_services;
pub mod keypairs;
mod launch_nics;
pub mod nat_services;
mod net_usage;
pub mod nets;
pub(crate) mod nic_alloc;
pub mod nic_links;
pub mod nics;
mod placement;
pub mod public_ips;
pub mod route_tables;
pub mod security_groups;
pub mod subnets;
pub mod quotas;
pub mod tags;
pub mod vm_lifecycle;
pub(crate) mod vm_network;
pub mod vms;
pub mod snapshots;
pub mod volumes;

use std::collections::HashMap;
use std::sync::Arc;

use socle_store::tags as tag_store;
use socle_store::listing::{After, Listing};
use socle_store::Conn;
use socle_types::ids::AccountId;
use socle_types::osc::ResourceTag;
use socle_types::ApiError;

use crate::paging::{created_key, finish_page};
use crate::Cloud;

pub(crate) fn is_dry_run(flag: Option<bool>) -> bool {
    flag == Some(true)
}

/// The tags of one resource, as OSC `ResourceTag`s.
pub(crate) fn resource_tags(conn: &Conn, resource_id: &str) -> Result<Vec<ResourceTag>, ApiError> {
    Ok(tag_store::for_resource(conn, resource_id)
        ?
        .into_iter()
        .map(|t| ResourceTag { key: t.key, value: t.value })
        .collect())
}

/// Runs `f` in one write transaction and commits it, unless `dry_run`: then
/// the transaction is rolled back, so a dry run checks exactly what a real
/// call would (existence, ownership, quotas) and changes nothing.
pub(crate) async fn write<T, F>(cloud: &Arc<Cloud>, dry_run: Option<bool>, f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnMut(&Conn) -> Result<T, ApiError> + Send + 'static,
{
    cloud.store.write_or_dry_run(is_dry_run(dry_run), f).await
}

/// [`write`], then, once committed, tells the network reconciler that a
/// Net's data plane changed (links, routes, public IPs, NAT services).
pub(crate) async fn write_network<T, F>(cloud: &Arc<Cloud>, dry_run: Option<bool>, f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnMut(&Conn) -> Result<T, ApiError> + Send + 'static,
{
    let out = write(cloud, dry_run, f).await?;
    if !is_dry_run(dry_run) {
        cloud.network_changed();
    }
    Ok(out)
}

/// The caller's tags on `ids` (the resources of one page), by resource.
pub(crate) fn tags_by_resource(conn: &Conn, account: &AccountId, ids: &[&str]) -> Result<HashMap<String, Vec<ResourceTag>>, ApiError> {
    let mut by_resource: HashMap<String, Vec<ResourceTag>> = HashMap::new();
    for t in tag_store::for_resources(conn, account, ids)? {
        by_resource.entry(t.resource_id).or_default().push(ResourceTag { key: t.key, value: t.value });
    }
    Ok(by_resource)
}

/// Pairs each row with the caller's tags on it (one query for all tags).
pub(crate) fn with_tags<R>(
    conn: &Conn,
    account: &AccountId,
    rows: Vec<R>,
    id: impl Fn(&R) -> &str,
) -> Result<Vec<(R, Vec<ResourceTag>)>, ApiError> {
    let mut by_resource: HashMap<String, Vec<ResourceTag>> = HashMap::new();
    for t in tag_store::list(conn, account)? {
        by_resource.entry(t.resource_id).or_default().push(ResourceTag { key: t.key, value: t.value });
    }
    Ok(rows
        .into_iter()
        .map(|r| {
            let tags = by_resource.remove(id(&r)).unwrap_or_default();
            (r, tags)
        })
        .collect())
}

/// Every row `list` gives for the caller, each with its tags: what a Read*
/// operation filters and pages.
pub(crate) async fn list_with_tags<R: Send + 'static>(
    cloud: &Arc<Cloud>,
    account: &AccountId,
    list: fn(&Conn, &AccountId) -> socle_store::Result<Vec<R>>,
    id: fn(&R) -> &str,
) -> Result<Vec<(R, Vec<ResourceTag>)>, ApiError> {
    let account = account.clone();
    cloud.store.read(move |c| with_tags(c, &account, list(c, &account)?, id)).await
}

/// One Read* page that `listing` selects, read in one transaction: `page`
/// reads the rows (see [`socle_store::listing`]), `keys` gives a row's ID
/// and creation date, and `view` makes what the caller sees of a row from
/// it and the caller's tags on it (reading more if it needs to); with the
/// next page's token.
pub(crate) async fn read_page<R: 'static, V: Send + 'static>(
    cloud: &Arc<Cloud>,
    account: &AccountId,
    listing: Listing,
    page: fn(&Conn, &Listing, Option<&After>, i64) -> socle_store::Result<Vec<R>>,
    (after, per_page): (Option<After>, i64),
    keys: fn(&R) -> (&str, &str),
    view: impl Fn(&Conn, R, Vec<ResourceTag>) -> Result<V, ApiError> + Send + 'static,
) -> Result<(Vec<V>, Option<String>), ApiError> {
    let account = account.clone();
    cloud
        .store
        .read(move |c| {
            let rows = page(c, &listing, after.as_ref(), per_page + 1)?;
            let (rows, next) = finish_page(rows, per_page, |r| {
                let (id, created_at) = keys(r);
                created_key(created_at, id)
            });
            let ids: Vec<&str> = rows.iter().map(|r| keys(r).0).collect();
            let mut tags = tags_by_resource(c, &account, &ids)?;
            let views = rows
                .into_iter()
                .map(|r| {
                    let t = tags.remove(keys(&r).0).unwrap_or_default();
                    view(c, r, t)
                })
                .collect::<Result<Vec<_>, ApiError>>()?;
            Ok((views, next))
        })
        .await
}

/// Tags as (key, value) pairs for filter matching.
pub(crate) fn tag_pairs(tags: &[ResourceTag]) -> Vec<(String, String)> {
    tags.iter().map(|t| (t.key.clone(), t.value.clone())).collect()
}

/// A change of who may use a resource (OSC `PermissionsOnResourceCreation`,
/// used by UpdateImage and UpdateSnapshot), with its account IDs checked.
pub(crate) struct ShareChange {
    additions: socle_types::osc::PermissionsOnResource,
    removals: socle_types::osc::PermissionsOnResource,
}

impl ShareChange {
    /// Account IDs must be 12 digits. Whether such an account exists is not
    /// revealed: sharing with an unknown one is harmless.
    pub(crate) fn parse(p: Option<socle_types::osc::PermissionsOnResourceCreation>) -> Result<ShareChange, ApiError> {
        let p = p.unwrap_or_default();
        let change = ShareChange { additions: p.additions.unwrap_or_default(), removals: p.removals.unwrap_or_default() };
        for id in change.additions.account_ids.iter().chain(change.removals.account_ids.iter()).flatten() {
            if id.len() != 12 || !id.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ApiError::invalid_value(format!("{id:?} is not an account ID (12 digits)")));
            }
        }
        Ok(change)
    }

    /// Applies the change: shares through `add`/`remove`, the public flag in
    /// place (a removal of the global permission wins over its addition).
    pub(crate) fn apply(
        &self,
        is_public: &mut bool,
        mut add: impl FnMut(&str) -> Result<(), socle_store::StoreError>,
        mut remove: impl FnMut(&str) -> Result<(), socle_store::StoreError>,
    ) -> Result<(), ApiError> {
        for a in self.additions.account_ids.iter().flatten() {
            add(a)?;
        }
        for a in self.removals.account_ids.iter().flatten() {
            remove(a)?;
        }
        if self.additions.global_permission == Some(true) {
            *is_public = true;
        }
        if self.removals.global_permission == Some(true) {
            *is_public = false;
        }
        Ok(())
    }
}

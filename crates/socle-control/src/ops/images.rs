//! Machine images (read side; creating images arrives with block storage).

use std::sync::Arc;

use socle_store::images::{self as image_store, ImageRow};
use socle_types::osc::*;
use socle_types::ApiError;

use super::{tag_pairs, with_tags};
use crate::paging::{created_key, matches, paginate, reject_unsupported_filters, tags_match};
use crate::{Caller, Cloud};

/// The account that owns platform images such as `socle-tiny`.
pub const PLATFORM_ACCOUNT: &str = "000000000000";

pub(crate) fn image_view(row: &ImageRow, tags: Vec<ResourceTag>) -> Image {
    Image {
        account_id: Some(row.account_id.to_string()),
        account_alias: Some(if row.account_id.as_str() == PLATFORM_ACCOUNT { "socle".into() } else { String::new() }),
        architecture: Some(row.architecture.clone()),
        block_device_mappings: Some(vec![]),
        boot_modes: Some(vec!["legacy".into()]),
        creation_date: Some(row.created_at.clone()),
        description: Some(row.description.clone()),
        file_location: Some(format!("socle/{}", row.name)),
        image_id: Some(row.image_id.to_string()),
        image_name: Some(row.name.clone()),
        image_type: Some("machine".into()),
        permissions_to_launch: Some(PermissionsOnResource {
            account_ids: Some(vec![]),
            global_permission: Some(row.is_public),
        }),
        product_codes: Some(vec!["0001".into()]),
        root_device_name: Some("/dev/sda1".into()),
        root_device_type: Some("bsu".into()),
        secure_boot: Some(false),
        state: Some(row.state.clone()),
        state_comment: Some(StateComment::default()),
        tags: Some(tags),
        tpm_mandatory: Some(false),
    }
}

pub async fn read_images(cloud: &Arc<Cloud>, caller: &Caller, req: ReadImagesRequest) -> Result<ReadImagesResponse, ApiError> {
    reject_unsupported_filters(
        &req.filters,
        &["ImageIds", "ImageNames", "AccountIds", "States", "Architectures", "TagKeys", "TagValues", "Tags", "PermissionsToLaunchGlobalPermission"],
    )?;
    let f = req.filters.unwrap_or_default();
    let account = caller.account_id.clone();
    let rows = cloud
        .store
        .run(move |conn| {
            let rows = image_store::list_visible(conn, &account)?;
            with_tags(conn, &account, rows, |r| r.image_id.as_str())
        })
        .await?;
    let items: Vec<Image> = rows
        .into_iter()
        .filter(|(r, tags)| {
            matches(&f.image_ids, r.image_id.as_str())
                && matches(&f.image_names, &r.name)
                && matches(&f.account_ids, r.account_id.as_str())
                && matches(&f.states, &r.state)
                && matches(&f.architectures, &r.architecture)
                && f.permissions_to_launch_global_permission.is_none_or(|g| g == r.is_public)
                && tags_match(&tag_pairs(tags), &f.tag_keys, &f.tag_values, &f.tags)
        })
        .map(|(r, tags)| image_view(&r, tags))
        .collect();
    let (page, next) = paginate(items, req.next_page_token.as_deref(), req.results_per_page, |i| {
        created_key(i.creation_date.as_deref().unwrap_or(""), i.image_id.as_deref().unwrap_or(""))
    })?;
    Ok(ReadImagesResponse { images: Some(page), next_page_token: next, ..Default::default() })
}

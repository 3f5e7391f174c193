//! Access keys of the caller's account. The secret is shown once, at
//! creation; it is stored sealed with the data dir's master key.

use std::sync::Arc;

use socle_store::access_keys::{self as key_store, AccessKeyRow};
use socle_store::{format_iso, now_iso};
use socle_types::error::ErrorCode;
use socle_types::osc::*;
use socle_types::ApiError;

use super::{is_dry_run, write};
use crate::identity::new_access_key;
use crate::paging::{matches, reject_unsupported_fields, reject_unsupported_filters};
use crate::{Caller, Cloud};

/// As on Outscale: at most 10 access keys per account.
const MAX_KEYS: usize = 10;

/// Parses an ISO 8601 date or date-time that must lie in the future.
fn parse_expiration(s: &str) -> Result<String, ApiError> {
    use time::format_description::well_known::Rfc3339;
    let bad = || ApiError::invalid_value(format!("ExpirationDate {s:?} is not an ISO 8601 date such as 2030-06-14 or 2030-06-14T00:00:00.000Z"));
    let t = if s.len() == 10 {
        time::OffsetDateTime::parse(&format!("{s}T00:00:00Z"), &Rfc3339).map_err(|_| bad())?
    } else {
        time::OffsetDateTime::parse(s, &Rfc3339).map_err(|_| bad())?
    };
    if t <= time::OffsetDateTime::now_utc() {
        return Err(ApiError::invalid_value("ExpirationDate must be in the future"));
    }
    Ok(format_iso(t))
}

fn view(k: &AccessKeyRow) -> AccessKey {
    AccessKey {
        access_key_id: Some(k.access_key_id.to_string()),
        creation_date: Some(k.created_at.clone()),
        expiration_date: k.expiration_date.clone(),
        last_modification_date: Some(k.updated_at.clone()),
        state: Some(k.state.clone()),
        tag: k.tag.clone(),
    }
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(ErrorCode::NoSuchAccessKey, "access key", id)
}

pub async fn create_access_key(
    cloud: &Arc<Cloud>,
    caller: &Caller,
    req: CreateAccessKeyRequest,
) -> Result<CreateAccessKeyResponse, ApiError> {
    reject_unsupported_fields(&req, &["UserName"])?;
    let expiration = req.expiration_date.as_deref().map(parse_expiration).transpose()?;
    let account = caller.account_id.clone();
    let cloud2 = cloud.clone();
    let (row, secret) = write(cloud, req.dry_run, move |tx| {
        if key_store::list_for_account(tx, &account)?.len() >= MAX_KEYS {
            return Err(ApiError::new(
                ErrorCode::TooManyAccessKeys,
                format!("an account may have at most {MAX_KEYS} access keys"),
            ));
        }
        let (row, secret) = new_access_key(&account, &cloud2.secrets, req.tag.clone(), expiration.clone());
        key_store::insert(tx, &row)?;
        Ok((row, secret))
    })
    .await?;
    if is_dry_run(req.dry_run) {
        return Ok(CreateAccessKeyResponse::default());
    }
    let v = view(&row);
    Ok(CreateAccessKeyResponse {
        access_key: Some(AccessKeySecretKey {
            access_key_id: v.access_key_id,
            creation_date: v.creation_date,
            expiration_date: v.expiration_date,
            last_modification_date: v.last_modification_date,
            secret_key: Some(secret),
            state: v.state,
            tag: v.tag,
        }),
        ..Default::default()
    })
}

pub async fn read_access_keys(
    cloud: &Arc<Cloud>,
    caller: &Caller,
    req: ReadAccessKeysRequest,
) -> Result<ReadAccessKeysResponse, ApiError> {
    reject_unsupported_fields(&req, &["UserName", "Tag"])?;
    reject_unsupported_filters(&req.filters, &["AccessKeyIds", "States"])?;
    let f = req.filters.unwrap_or_default();
    let account = caller.account_id.clone();
    let rows = cloud.store.read(move |conn| key_store::list_for_account(conn, &account).map_err(ApiError::from)).await?;
    Ok(ReadAccessKeysResponse {
        access_keys: Some(
            rows.iter()
                .filter(|k| matches(&f.access_key_ids, k.access_key_id.as_str()) && matches(&f.states, &k.state))
                .map(view)
                .collect(),
        ),
        ..Default::default()
    })
}

pub async fn update_access_key(
    cloud: &Arc<Cloud>,
    caller: &Caller,
    req: UpdateAccessKeyRequest,
) -> Result<UpdateAccessKeyResponse, ApiError> {
    reject_unsupported_fields(&req, &["UserName"])?;
    if let Some(state) = &req.state {
        if state != "ACTIVE" && state != "INACTIVE" {
            return Err(ApiError::invalid_value(format!("State must be ACTIVE or INACTIVE, got {state:?}")));
        }
    }
    let expiration = match (&req.expiration_date, req.clear_expiration_date) {
        (_, Some(true)) => Some(None),
        (Some(d), _) => Some(Some(parse_expiration(d)?)),
        (None, _) => None,
    };
    let account = caller.account_id.clone();
    let updated = write(cloud, req.dry_run, move |tx| {
        let mut key = key_store::get(tx, &req.access_key_id)?
            .filter(|k| k.account_id == account)
            .ok_or_else(|| not_found(&req.access_key_id))?;
        if let Some(state) = req.state.clone() {
            key.state = state;
        }
        if req.clear_tag == Some(true) {
            key.tag = None;
        } else if let Some(tag) = req.tag.clone() {
            key.tag = Some(tag);
        }
        if let Some(exp) = expiration.clone() {
            key.expiration_date = exp;
        }
        key.updated_at = now_iso();
        key_store::update(tx, &account, &key)?;
        Ok(key)
    })
    .await?;
    if is_dry_run(req.dry_run) {
        return Ok(UpdateAccessKeyResponse::default());
    }
    Ok(UpdateAccessKeyResponse { access_key: Some(view(&updated)), ..Default::default() })
}

pub async fn delete_access_key(
    cloud: &Arc<Cloud>,
    caller: &Caller,
    req: DeleteAccessKeyRequest,
) -> Result<DeleteAccessKeyResponse, ApiError> {
    reject_unsupported_fields(&req, &["UserName"])?;
    let account = caller.account_id.clone();
    write(cloud, req.dry_run, move |tx| {
        let keys = key_store::list_for_account(tx, &account)?;
        if !keys.iter().any(|k| k.access_key_id.as_str() == req.access_key_id) {
            return Err(not_found(&req.access_key_id));
        }
        // Deleting the last key would lock the account out of the API.
        if keys.len() == 1 {
            return Err(ApiError::new(
                ErrorCode::ResourceConflict,
                "this is the account's last access key; create another one before deleting it",
            ));
        }
        key_store::delete(tx, &account, &req.access_key_id)?;
        Ok(())
    })
    .await?;
    Ok(DeleteAccessKeyResponse::default())
}

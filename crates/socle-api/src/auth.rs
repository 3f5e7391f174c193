//! Request authentication: from headers to the calling account.

use std::sync::Arc;

use axum::http::HeaderMap;
use socle_auth::{hex_sha256, parse_request_auth, verify_signature_for_hash, AuthError, RequestAuth};
use socle_control::{identity, is_anonymous_operation, Caller, Cloud};
use socle_types::error::ErrorCode;
use socle_types::ApiError;

fn denied(details: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::AccessDenied, details)
}

fn from_auth_error(e: AuthError) -> ApiError {
    match e {
        AuthError::RequestExpired { .. } => ApiError::new(ErrorCode::RequestExpired, e.to_string()),
        other => denied(other.to_string()),
    }
}

/// Returns the caller, or None for an unsigned call to an anonymous
/// operation. Any failure is a 401 that changes nothing.
pub async fn authenticate(
    cloud: &Arc<Cloud>,
    operation: &str,
    headers: &HeaderMap,
    path: &str,
    body: &[u8],
) -> Result<Option<Caller>, ApiError> {
    authenticate_for_hash(cloud, operation, headers, path, &hex_sha256(body), &[]).await
}

/// Authenticates a request whose body has not been read: `body_sha256_hex`
/// is the hash the client declared, and each of `must_sign` must be among
/// the signed headers (so nobody on the way can change it).
pub async fn authenticate_for_hash(
    cloud: &Arc<Cloud>,
    operation: &str,
    headers: &HeaderMap,
    path: &str,
    body_sha256_hex: &str,
    must_sign: &[&str],
) -> Result<Option<Caller>, ApiError> {
    let sig = match parse_request_auth(headers).map_err(from_auth_error)? {
        RequestAuth::Anonymous if is_anonymous_operation(operation) => return Ok(None),
        RequestAuth::Anonymous => {
            return Err(denied(format!(
                "{operation} requires a signed request (Authorization header with an access key signature)"
            )))
        }
        RequestAuth::Basic { .. } => {
            return Err(denied("Basic authentication is not enabled on this cloud; sign requests with an access key"))
        }
        RequestAuth::Signed(sig) => sig,
    };
    if let Some(name) = must_sign.iter().find(|n| !sig.signed_headers.iter().any(|s| s == *n)) {
        return Err(denied(format!("{operation} requires the {name} header to be signed")));
    }
    if sig.region != cloud.config.region {
        return Err(denied(format!(
            "the request is signed for region {:?} but this endpoint serves {:?}",
            sig.region, cloud.config.region
        )));
    }
    let access_key_id = sig.access_key_id.clone();
    let cloud2 = cloud.clone();
    let key = cloud
        .store
        .read(move |conn| {
            identity::key_for_auth(conn, &cloud2.secrets, &access_key_id).map_err(ApiError::internal)
        })
        .await?;
    // An unknown key and a wrong signature give the same answer: nothing
    // tells a prober which access key IDs exist.
    let Some(key) = key else {
        return Err(denied("the request signature does not match (unknown access key or wrong secret)"));
    };
    verify_signature_for_hash(&sig, "POST", path, headers, body_sha256_hex, &key.secret, time::OffsetDateTime::now_utc())
        .map_err(|e| match e {
            AuthError::SignatureMismatch => {
                denied("the request signature does not match (unknown access key or wrong secret)")
            }
            other => from_auth_error(other),
        })?;
    if !key.active {
        return Err(denied(format!("the access key {} is INACTIVE", sig.access_key_id)));
    }
    if let Some(exp) = &key.expiration_date {
        if *exp <= socle_control::now_iso() {
            return Err(denied(format!("the access key {} expired on {exp}", sig.access_key_id)));
        }
    }
    Ok(Some(Caller { account_id: key.account_id, access_key_id: Some(sig.access_key_id) }))
}

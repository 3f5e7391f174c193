//! `POST /api/v1/ImportImage`: a disk image streamed as the raw body (not
//! JSON), for `socle image import`. The signature covers a declared body
//! hash (`X-Osc-Content-Sha256`, signed), so the caller is known before a
//! byte is stored; the body is then written to disk while hashed, and
//! refused if it does not match. Parameters come in signed headers:
//! `X-Socle-Image-Name` (required) and `X-Socle-Image-Description`.

use std::io::Write;
use std::sync::Arc;

use axum::body::Body;
use axum::http::HeaderMap;
use http_body_util::BodyExt;
use sha2::{Digest, Sha256};
use socle_control::image_import::{self, ImportParams};
use socle_control::{Caller, Cloud};
use socle_types::error::ErrorCode;
use socle_types::ApiError;

pub const OPERATION: &str = "ImportImage";
const HASH_HEADER: &str = "x-osc-content-sha256";
const NAME_HEADER: &str = "x-socle-image-name";
const DESCRIPTION_HEADER: &str = "x-socle-image-description";

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ApiError> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v.to_str().map(Some).map_err(|_| ApiError::invalid_value(format!("the {name} header is not text"))),
    }
}

pub async fn serve(cloud: &Arc<Cloud>, headers: &HeaderMap, path: &str, body: Body) -> Result<(Caller, serde_json::Value), ApiError> {
    let declared = header(headers, HASH_HEADER)?.ok_or_else(|| ApiError::missing("X-Osc-Content-Sha256 (the hex SHA-256 of the body)"))?;
    if declared.len() != 64 || !declared.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::invalid_value("X-Osc-Content-Sha256 must be 64 hex digits"));
    }
    let declared = declared.to_ascii_lowercase();
    let mut must_sign = vec![HASH_HEADER, NAME_HEADER];
    if headers.contains_key(DESCRIPTION_HEADER) {
        must_sign.push(DESCRIPTION_HEADER);
    }
    let caller = crate::auth::authenticate_for_hash(cloud, OPERATION, headers, path, &declared, &must_sign)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::AccessDenied, "ImportImage requires a signed request"))?;
    let params = ImportParams {
        name: header(headers, NAME_HEADER)?.ok_or_else(|| ApiError::missing("X-Socle-Image-Name"))?.to_string(),
        description: header(headers, DESCRIPTION_HEADER)?.unwrap_or_default().to_string(),
    };
    let length: u64 = header(headers, "content-length")?
        .ok_or_else(|| ApiError::missing("Content-Length (the size of the image)"))?
        .parse()
        .map_err(|_| ApiError::invalid_value("Content-Length is not a number"))?;
    if length == 0 {
        return Err(ApiError::invalid_value("the image is empty"));
    }
    image_import::check_import(cloud, &caller, &params, length).await?;
    let (part, file) = image_import::new_upload_file(cloud)?;
    if let Err(e) = receive(body, file, length, &declared).await {
        let _ = std::fs::remove_file(&part);
        return Err(e);
    }
    let response = image_import::finish_import(cloud, &caller, params, part).await?;
    let value = serde_json::to_value(response).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok((caller, value))
}

/// Writes the body to `file`, checking its length and hash.
async fn receive(mut body: Body, file: std::fs::File, length: u64, declared: &str) -> Result<(), ApiError> {
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    let mut hasher = Sha256::new();
    let mut received: u64 = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ApiError::invalid_value(format!("the upload was interrupted: {e}")))?;
        let Ok(data) = frame.into_data() else { continue };
        received += data.len() as u64;
        if received > length {
            return Err(ApiError::invalid_value("the body is longer than its Content-Length"));
        }
        hasher.update(&data);
        // Blocking writes of 1 MiB at most: short enough for a runtime thread.
        tokio::task::block_in_place(|| out.write_all(&data)).map_err(|e| ApiError::internal(format!("cannot store the upload: {e}")))?;
    }
    if received != length {
        return Err(ApiError::invalid_value(format!("the upload stopped after {received} of {length} bytes")));
    }
    if hex::encode(hasher.finalize()) != declared {
        return Err(ApiError::invalid_value("the body does not match X-Osc-Content-Sha256; nothing was stored"));
    }
    let file = out.into_inner().map_err(|e| ApiError::internal(format!("cannot store the upload: {e}")))?;
    tokio::task::block_in_place(|| file.sync_all()).map_err(|e| ApiError::internal(format!("cannot store the upload: {e}")))?;
    Ok(())
}

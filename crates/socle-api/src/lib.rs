//! The HTTP face of Socle: `POST /api/v1/{Operation}` (and `/api/latest/…`,
//! which osc-cli calls) with a JSON body, answered with
//! `{Operation}Response` JSON or an OSC error.
//!
//! This layer owns three things and nothing else: reading the body within
//! its size limit, authenticating the request (signature → account), and
//! shaping the answer (`ResponseContext.RequestId`, error JSON, HTTP status).
//! What an operation does is the control plane's business.

mod auth;
mod import;

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use socle_control::{Caller, Cloud};
use socle_types::error::{error_body, ErrorCode};
use socle_types::ApiError;

/// Largest request body accepted (UserData may be 500 KiB once decoded).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// What `socle up` serves: the router behind a rewrite of the path, as
/// Outscale's gateway does before routing and verifying signatures.
pub type Service = axum::routing::IntoMakeService<tower::util::MapRequest<Router, fn(axum::extract::Request) -> axum::extract::Request>>;

pub fn service(cloud: Arc<Cloud>) -> Service {
    let rewrite: fn(axum::extract::Request) -> axum::extract::Request = collapse_slashes;
    axum::ServiceExt::<axum::extract::Request>::into_make_service(tower::util::MapRequest::new(router(cloud), rewrite))
}

/// `//api/latest/ReadVms` is `/api/latest/ReadVms`: osc-cli 1.11 joins its
/// endpoint and `/api/latest/…` with a slash of its own, and signs the path
/// without it. The signature is then checked against the collapsed path.
fn collapse_slashes(mut req: axum::extract::Request) -> axum::extract::Request {
    let uri = req.uri();
    if !uri.path().contains("//") {
        return req;
    }
    let mut path = String::with_capacity(uri.path().len());
    for c in uri.path().chars() {
        if !(c == '/' && path.ends_with('/')) {
            path.push(c);
        }
    }
    if let Some(q) = uri.query() {
        path = format!("{path}?{q}");
    }
    if let Ok(collapsed) = path.parse::<http::uri::PathAndQuery>() {
        let mut parts = uri.clone().into_parts();
        parts.path_and_query = Some(collapsed);
        if let Ok(new) = http::Uri::from_parts(parts) {
            *req.uri_mut() = new;
        }
    }
    req
}

fn router(cloud: Arc<Cloud>) -> Router {
    Router::new()
        .route("/api/{version}/{operation}", post(handle))
        .route(&format!("/api/{{version}}/{}", import::OPERATION), post(handle_import))
        .route(socle_agent_api::join::JOIN_PATH, post(handle_join))
        .method_not_allowed_fallback(not_found)
        .fallback(not_found)
        .with_state(cloud)
}

async fn not_found(uri: axum::http::Uri) -> Response {
    let err = ApiError::new(
        ErrorCode::NoSuchOperation,
        format!("nothing is served at {}; the API is POST /api/v1/<Operation>", uri.path()),
    );
    let mut resp = error_response(&err, &new_request_id());
    *resp.status_mut() = StatusCode::NOT_FOUND;
    resp
}

fn new_request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> Response {
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec(body).expect("JSON values serialise"),
    )
        .into_response()
}

fn error_response(err: &ApiError, request_id: &str) -> Response {
    let status = StatusCode::from_u16(err.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(status, &error_body(err, request_id))
}

/// A host joining the cloud (`socle agent --join`): authorised by its
/// one-time token's proof, not by an account's signature.
async fn handle_join(State(cloud): State<Arc<Cloud>>, body: axum::body::Bytes) -> Response {
    let request_id = new_request_id();
    // A join request is a certificate request and a few names: anything
    // much bigger is not one, and is not read further.
    const MAX_JOIN: usize = 16 * 1024;
    let result = if body.len() > MAX_JOIN {
        Err(ApiError::new(ErrorCode::BodyTooLarge, format!("a join request is at most {MAX_JOIN} bytes")))
    } else {
        match serde_json::from_slice::<socle_agent_api::join::JoinRequest>(&body) {
            Ok(req) => socle_control::hosts::join(&cloud, req).await,
            Err(e) => Err(ApiError::new(ErrorCode::InvalidJson, format!("not a join request: {e}"))),
        }
    };
    match result {
        Ok(answer) => json_response(StatusCode::OK, &serde_json::to_value(answer).expect("JSON values serialise")),
        Err(e) => {
            tracing::warn!(request_id = %request_id, code = e.code(), details = %e.details, "join refused");
            error_response(&e, &request_id)
        }
    }
}

async fn handle(
    State(cloud): State<Arc<Cloud>>,
    Path((version, operation)): Path<(String, String)>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    body: Body,
) -> Response {
    let started = Instant::now();
    let request_id = new_request_id();
    let result = serve(&cloud, &version, &operation, &headers, uri.path(), body).await;
    respond(result, &request_id, &operation, started)
}

/// The answer to a call: its JSON with `ResponseContext`, or the OSC error;
/// one log line either way.
fn respond(result: Result<(Option<Caller>, serde_json::Value), ApiError>, request_id: &str, operation: &str, started: Instant) -> Response {
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    match result {
        Ok((caller, mut value)) => {
            if let Some(obj) = value.as_object_mut() {
                obj.insert("ResponseContext".into(), serde_json::json!({ "RequestId": request_id }));
            }
            tracing::info!(
                request_id, operation, account = caller.as_ref().map(|c| c.account_id.as_str()).unwrap_or("-"),
                status = 200, ms = elapsed_ms, "request"
            );
            json_response(StatusCode::OK, &value)
        }
        Err(err) => {
            if let Some(internal) = &err.internal {
                tracing::error!(request_id, operation, detail = %internal, "internal error");
            }
            tracing::info!(request_id, operation, status = err.code.http_status(), code = err.code(), ms = elapsed_ms, "request failed");
            error_response(&err, request_id)
        }
    }
}

async fn handle_import(
    State(cloud): State<Arc<Cloud>>,
    Path(version): Path<String>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    body: Body,
) -> Response {
    let started = Instant::now();
    let request_id = new_request_id();
    let result = match check_version(&version) {
        Err(e) => Err(e),
        Ok(()) => import::serve(&cloud, &headers, uri.path(), body).await.map(|(c, v)| (Some(c), v)),
    };
    respond(result, &request_id, import::OPERATION, started)
}

/// `/api/v1/…` and `/api/latest/…` (which osc-cli calls) are served.
fn check_version(version: &str) -> Result<(), ApiError> {
    if version != "v1" && version != "latest" {
        return Err(ApiError::new(ErrorCode::NoSuchOperation, format!("unknown API version {version:?}; use v1")));
    }
    Ok(())
}

async fn serve(
    cloud: &Arc<Cloud>,
    version: &str,
    operation: &str,
    headers: &HeaderMap,
    path: &str,
    body: Body,
) -> Result<(Option<Caller>, serde_json::Value), ApiError> {
    check_version(version)?;
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES).await.map_err(|_| {
        ApiError::new(ErrorCode::BodyTooLarge, format!("the request body exceeds {MAX_BODY_BYTES} bytes"))
    })?;
    let caller = auth::authenticate(cloud, operation, headers, path, &bytes).await?;
    let json = parse_body(&bytes)?;
    let value = cloud.call(caller.as_ref(), operation, json).await?;
    Ok((caller, value))
}

/// The body as a JSON object. An empty body and the literal `null` (sent by
/// the Rust SDK when there are no parameters) mean `{}`.
fn parse_body(bytes: &[u8]) -> Result<serde_json::Value, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(serde_json::json!({}));
    }
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        let msg = e.to_string();
        ApiError::new(ErrorCode::InvalidJson, format!("the request body is not valid JSON: {msg}"))
    })?;
    match value {
        serde_json::Value::Null => Ok(serde_json::json!({})),
        serde_json::Value::Object(_) => Ok(value),
        _ => Err(ApiError::new(ErrorCode::InvalidJson, "the request body must be a JSON object")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies() {
        assert_eq!(parse_body(b"").unwrap(), serde_json::json!({}));
        assert_eq!(parse_body(b"null").unwrap(), serde_json::json!({}));
        assert_eq!(parse_body(b"{\"A\":1}").unwrap(), serde_json::json!({"A": 1}));
        assert_eq!(parse_body(b"[1]").unwrap_err().code(), "4110");
        assert_eq!(parse_body(b"{").unwrap_err().code(), "4110");
    }
}

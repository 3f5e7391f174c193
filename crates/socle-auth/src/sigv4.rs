//! The OSC4 / AWS4 signature: canonical request, string to sign, key derivation,
//! verification (server) and signing (client).

use hmac::{Hmac, Mac};
use http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use time::{Duration, OffsetDateTime};

use crate::error::AuthError;
use crate::parse::{format_amz_date, Algorithm, SignatureV4Header};

/// How far the request date may be from the server clock, either way.
pub const MAX_CLOCK_SKEW: Duration = Duration::minutes(5);

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

pub fn hex_sha256(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Canonical request: `METHOD\npath\n\n` (the query string is always empty in this API),
/// one `name:value\n` per signed header in the given order, a blank line, the signed
/// header list, and the hex SHA-256 of the body.
pub(crate) fn canonical_request(
    method: &str,
    path: &str,
    signed: &[(&str, &str)],
    body_sha256_hex: &str,
) -> String {
    let mut out = format!("{method}\n{path}\n\n");
    for (name, value) in signed {
        out.push_str(name);
        out.push(':');
        out.push_str(value);
        out.push('\n');
    }
    out.push('\n');
    let names: Vec<&str> = signed.iter().map(|(name, _)| *name).collect();
    out.push_str(&names.join(";"));
    out.push('\n');
    out.push_str(body_sha256_hex);
    out
}

/// String to sign: `ALG\ndate\nscope\nhex(sha256(canonical request))`.
pub(crate) fn string_to_sign(
    algorithm: Algorithm,
    request_date: &str,
    scope: &str,
    canonical_request: &str,
) -> String {
    format!(
        "{}\n{request_date}\n{scope}\n{}",
        algorithm.as_str(),
        hex_sha256(canonical_request.as_bytes())
    )
}

/// Signing key: HMAC chain seeded with `prefix + secret` over the scope's date, region,
/// service and terminator, exactly as the client put them in the scope.
pub(crate) fn signing_key(
    algorithm: Algorithm,
    secret_key: &str,
    date: &str,
    region: &str,
    service: &str,
    terminator: &str,
) -> [u8; 32] {
    let seed = format!("{}{secret_key}", algorithm.key_prefix());
    let k = hmac(seed.as_bytes(), date.as_bytes());
    let k = hmac(&k, region.as_bytes());
    let k = hmac(&k, service.as_bytes());
    hmac(&k, terminator.as_bytes())
}

/// Returns the host with its `:port` removed, or `None` when it has no port.
/// Handles bracketed IPv6 (`[::1]:8080` → `[::1]`).
pub(crate) fn strip_port(host: &str) -> Option<&str> {
    let (name, port) = host.rsplit_once(':')?;
    let port_ok = !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit());
    let name_ok = !name.is_empty() && (!name.starts_with('[') || name.ends_with(']'));
    (port_ok && name_ok).then_some(name)
}

/// Checks a signed request (step 2 of verification, once the secret of
/// `sig.access_key_id` is known).
///
/// `path` is the request path without query string (e.g. `/api/v1/ReadVms`), `body` the
/// raw body bytes as received.
pub fn verify_signature(
    sig: &SignatureV4Header,
    method: &str,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
    secret_key: &str,
    now: OffsetDateTime,
) -> Result<(), AuthError> {
    verify_signature_for_hash(sig, method, path, headers, &hex_sha256(body), secret_key, now)
}

/// Like [`verify_signature`], for a body not read yet: `body_sha256_hex` is
/// the hash the client declared (a signed `x-osc-content-sha256` header, as
/// S3 does). The caller must then check that the body it reads has that hash.
pub fn verify_signature_for_hash(
    sig: &SignatureV4Header,
    method: &str,
    path: &str,
    headers: &HeaderMap,
    body_sha256_hex: &str,
    secret_key: &str,
    now: OffsetDateTime,
) -> Result<(), AuthError> {
    // Freshness first: it is cheap, and it bounds how long a captured request can be replayed.
    if (now - sig.request_time).abs() > MAX_CLOCK_SKEW {
        return Err(AuthError::RequestExpired {
            request_date: sig.request_date.clone(),
            server_time: format_amz_date(now),
        });
    }
    if sig.request_date.get(..8) != Some(sig.scope_date.as_str()) {
        return Err(AuthError::ScopeDateMismatch {
            scope_date: sig.scope_date.clone(),
            request_date: sig.request_date.clone(),
        });
    }
    // The fields are public, so do not trust that `signature` went through the parser.
    let provided = match hex::decode(&sig.signature) {
        Ok(bytes) if bytes.len() == 32 => bytes,
        _ => {
            return Err(AuthError::MalformedAuthorization(
                "Signature must be 64 hex digits".into(),
            ))
        }
    };

    // Values of the signed headers, in the listed order; repeated headers are joined with ','.
    let mut values: Vec<String> = Vec::with_capacity(sig.signed_headers.len());
    for name in &sig.signed_headers {
        let mut parts = Vec::new();
        for value in headers.get_all(name.as_str()) {
            let value = value
                .to_str()
                .map_err(|_| AuthError::InvalidHeaderValue(name.clone()))?;
            parts.push(value.trim());
        }
        if parts.is_empty() {
            return Err(AuthError::MissingSignedHeader(name.clone()));
        }
        values.push(parts.join(","));
    }

    let key = signing_key(
        sig.algorithm,
        secret_key,
        &sig.scope_date,
        &sig.region,
        &sig.service,
        &sig.terminator,
    );
    let scope = sig.scope();
    let body_hash = body_sha256_hex;
    let matches = |values: &[String]| -> bool {
        let signed: Vec<(&str, &str)> = sig
            .signed_headers
            .iter()
            .map(String::as_str)
            .zip(values.iter().map(String::as_str))
            .collect();
        let canonical = canonical_request(method, path, &signed, body_hash);
        let sts = string_to_sign(sig.algorithm, &sig.request_date, &scope, &canonical);
        let expected = hmac(&key, sts.as_bytes());
        bool::from(expected.as_slice().ct_eq(&provided))
    };

    if matches(&values) {
        return Ok(());
    }
    // osc-sdk-python signs the host *without* the port while sending `Host: h:port`
    // (osc-cli and the AWS4 clients sign it with the port). So when the first try fails
    // and the signed Host has a port, try once more with the port stripped.
    if let Some(i) = sig.signed_headers.iter().position(|n| n == "host") {
        if let Some(bare) = strip_port(&values[i]) {
            values[i] = bare.to_owned();
            if matches(&values) {
                return Ok(());
            }
        }
    }
    Err(AuthError::SignatureMismatch)
}

/// Signs an API call the way osc-sdk-python does (`OSC4-HMAC-SHA256`, scope
/// `date/region/api/osc4_request`, signed headers `content-type;host;x-osc-date`, host
/// signed without its port: a `:port` in `host` is stripped before signing).
///
/// The method is `POST` (every API call is). Returns the headers to add to the request:
/// `Content-Type`, `X-Osc-Date`, `Authorization`. The HTTP client sets `Host` itself (with
/// the port if any); the verifier accepts that through its port-stripping retry.
pub fn sign_osc4(
    access_key: &str,
    secret_key: &str,
    region: &str,
    host: &str,
    path: &str,
    body: &[u8],
    now: OffsetDateTime,
) -> Vec<(String, String)> {
    let creds = Credentials { access_key, secret_key, region };
    sign_osc4_with(&creds, host, path, "application/json; charset=utf-8", &[], &hex_sha256(body), now)
}

/// Who signs: an access key, its secret and the region it signs for.
pub struct Credentials<'a> {
    pub access_key: &'a str,
    pub secret_key: &'a str,
    pub region: &'a str,
}

/// Signs a request whose body is not in memory (a disk image upload): the
/// body hash is given, sent in `X-Osc-Content-Sha256` and signed, so the
/// server can check the signature before reading the body. `extra` headers
/// (lowercase names) are signed too.
pub fn sign_osc4_streaming(
    creds: &Credentials<'_>,
    host: &str,
    path: &str,
    extra: &[(&str, &str)],
    body_sha256_hex: &str,
    now: OffsetDateTime,
) -> Vec<(String, String)> {
    let mut headers: Vec<(&str, &str)> = extra.to_vec();
    headers.push(("x-osc-content-sha256", body_sha256_hex));
    let mut out = sign_osc4_with(creds, host, path, "application/octet-stream", &headers, body_sha256_hex, now);
    out.extend(headers.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    out
}

fn sign_osc4_with(
    creds: &Credentials<'_>,
    host: &str,
    path: &str,
    content_type: &str,
    extra: &[(&str, &str)],
    body_sha256_hex: &str,
    now: OffsetDateTime,
) -> Vec<(String, String)> {
    let Credentials { access_key, secret_key, region } = *creds;
    const SERVICE: &str = "api";
    const TERMINATOR: &str = "osc4_request";
    let algorithm = Algorithm::Osc4HmacSha256;

    let date = format_amz_date(now);
    let day = &date[..8];
    let host = strip_port(host).unwrap_or(host);
    // Signed headers go in lexical order, as the canonical request wants.
    let mut signed: Vec<(&str, &str)> = vec![("content-type", content_type), ("host", host), ("x-osc-date", date.as_str())];
    signed.extend_from_slice(extra);
    signed.sort_by(|a, b| a.0.cmp(b.0));
    let canonical = canonical_request("POST", path, &signed, body_sha256_hex);
    let names: Vec<&str> = signed.iter().map(|(n, _)| *n).collect();
    let names = names.join(";");
    let scope = format!("{day}/{region}/{SERVICE}/{TERMINATOR}");
    let sts = string_to_sign(algorithm, &date, &scope, &canonical);
    let key = signing_key(algorithm, secret_key, day, region, SERVICE, TERMINATOR);
    let signature = hex::encode(hmac(&key, sts.as_bytes()));
    let authorization = format!(
        "{} Credential={access_key}/{scope}, SignedHeaders={names}, Signature={signature}",
        algorithm.as_str()
    );
    vec![
        ("Content-Type".to_owned(), content_type.to_owned()),
        ("X-Osc-Date".to_owned(), date),
        ("Authorization".to_owned(), authorization),
    ]
}

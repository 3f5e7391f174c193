//! Parsing of the `Authorization` header (step 1 of verification).

use std::fmt;

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use http::header::{HeaderName, AUTHORIZATION};
use http::HeaderMap;
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time};

use crate::error::{quote, AuthError};

/// Signature algorithm named at the start of the `Authorization` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// `OSC4-HMAC-SHA256` (osc-sdk-python, osc-cli): key prefix `OSC4`.
    Osc4HmacSha256,
    /// `AWS4-HMAC-SHA256` (Rust crate outscale_api, osc-sdk-go): key prefix `AWS4`.
    Aws4HmacSha256,
}

impl Algorithm {
    /// The name as written in the `Authorization` header and the string to sign.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Osc4HmacSha256 => "OSC4-HMAC-SHA256",
            Algorithm::Aws4HmacSha256 => "AWS4-HMAC-SHA256",
        }
    }

    /// What is put before the secret key to seed the HMAC key chain.
    pub fn key_prefix(self) -> &'static str {
        match self {
            Algorithm::Osc4HmacSha256 => "OSC4",
            Algorithm::Aws4HmacSha256 => "AWS4",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        match name {
            "OSC4-HMAC-SHA256" => Some(Algorithm::Osc4HmacSha256),
            "AWS4-HMAC-SHA256" => Some(Algorithm::Aws4HmacSha256),
            _ => None,
        }
    }
}

/// A parsed `ALG Credential=AK/date/region/service/term, SignedHeaders=…, Signature=…`
/// header, plus the request date it refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureV4Header {
    pub algorithm: Algorithm,
    pub access_key_id: String,
    /// Scope date, `YYYYMMDD`.
    pub scope_date: String,
    pub region: String,
    /// `api` for OSC4 clients, `oapi` for AWS4 clients; used as given.
    pub service: String,
    /// `osc4_request` / `aws4_request`; used as given.
    pub terminator: String,
    /// Signed header names, lower-case, in the order the client listed them.
    pub signed_headers: Vec<String>,
    /// The client's signature, 64 lower-case hex digits.
    pub signature: String,
    /// The date header exactly as sent (`YYYYMMDDTHHMMSSZ`): it goes into the string to sign.
    pub request_date: String,
    /// `request_date` parsed (UTC).
    pub request_time: OffsetDateTime,
}

impl SignatureV4Header {
    /// The credential scope `date/region/service/terminator`.
    pub fn scope(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            self.scope_date, self.region, self.service, self.terminator
        )
    }
}

/// How a request claims to be authenticated.
#[derive(Clone, PartialEq, Eq)]
pub enum RequestAuth {
    /// OSC4 or AWS4 signature: look up the secret of `access_key_id`, then call
    /// [`crate::verify_signature`].
    Signed(SignatureV4Header),
    /// `Authorization: Basic base64(login:password)`.
    Basic { login: String, password: String },
    /// No `Authorization` header at all.
    Anonymous,
}

// Hand-written so that logging a `RequestAuth` never prints a password.
impl fmt::Debug for RequestAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestAuth::Signed(sig) => f.debug_tuple("Signed").field(sig).finish(),
            RequestAuth::Basic { login, .. } => f
                .debug_struct("Basic")
                .field("login", login)
                .field("password", &"<redacted>")
                .finish(),
            RequestAuth::Anonymous => f.write_str("Anonymous"),
        }
    }
}

fn malformed(msg: impl Into<String>) -> AuthError {
    AuthError::MalformedAuthorization(msg.into())
}

/// Reads the `Authorization` header (and, for signed requests, `X-Osc-Date` /
/// `X-Amz-Date`). Never panics, whatever the header bytes.
pub fn parse_request_auth(headers: &HeaderMap) -> Result<RequestAuth, AuthError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(RequestAuth::Anonymous);
    };
    if values.next().is_some() {
        return Err(malformed("more than one Authorization header"));
    }
    let value = value
        .to_str()
        .map_err(|_| malformed("the header is not visible ASCII"))?
        .trim();
    if value.is_empty() {
        return Err(malformed("the header is empty"));
    }
    let (scheme, rest) = match value.split_once([' ', '\t']) {
        Some((scheme, rest)) => (scheme, rest.trim()),
        None => (value, ""),
    };
    // Auth schemes are case-insensitive (RFC 9110); signature algorithm names are not.
    if scheme.eq_ignore_ascii_case("Basic") {
        return parse_basic(rest);
    }
    let algorithm = Algorithm::from_name(scheme)
        .ok_or_else(|| AuthError::UnsupportedAlgorithm(quote(scheme)))?;
    parse_signed(algorithm, rest, headers).map(RequestAuth::Signed)
}

fn parse_basic(token: &str) -> Result<RequestAuth, AuthError> {
    // osc-cli encodes with the URL-safe alphabet, most others with the standard one;
    // padding is optional in both.
    const CONFIG: GeneralPurposeConfig =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    const STANDARD: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, CONFIG);
    const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, CONFIG);

    if token.is_empty() {
        return Err(malformed("Basic without credentials"));
    }
    let bytes = STANDARD
        .decode(token)
        .or_else(|_| URL_SAFE.decode(token))
        .map_err(|_| malformed("Basic credentials are not valid base64"))?;
    let text =
        String::from_utf8(bytes).map_err(|_| malformed("Basic credentials are not UTF-8"))?;
    // The login cannot contain ':' (RFC 7617); the password can.
    let (login, password) = text
        .split_once(':')
        .ok_or_else(|| malformed("Basic credentials lack the ':' between login and password"))?;
    if login.is_empty() {
        return Err(malformed("Basic credentials have an empty login"));
    }
    Ok(RequestAuth::Basic {
        login: login.to_owned(),
        password: password.to_owned(),
    })
}

fn parse_signed(
    algorithm: Algorithm,
    params: &str,
    headers: &HeaderMap,
) -> Result<SignatureV4Header, AuthError> {
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for part in params.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = part
            .split_once('=')
            .ok_or_else(|| malformed(format!("expected key=value, got {:?}", quote(part))))?;
        let slot = match key.trim() {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed_headers,
            "Signature" => &mut signature,
            other => return Err(malformed(format!("unknown component {:?}", quote(other)))),
        };
        if slot.replace(value.trim()).is_some() {
            return Err(malformed(format!("{} given twice", key.trim())));
        }
    }
    let credential = credential.ok_or_else(|| malformed("missing Credential="))?;
    let signed_headers = signed_headers.ok_or_else(|| malformed("missing SignedHeaders="))?;
    let signature = signature.ok_or_else(|| malformed("missing Signature="))?;

    // Credential=AK/YYYYMMDD/region/service/terminator
    let parts: Vec<&str> = credential.split('/').collect();
    let [access_key_id, scope_date, region, service, terminator] = parts[..] else {
        return Err(malformed(
            "Credential must be AccessKeyId/YYYYMMDD/region/service/terminator",
        ));
    };
    if [access_key_id, region, service, terminator]
        .iter()
        .any(|p| p.is_empty())
    {
        return Err(malformed("Credential has an empty component"));
    }
    if scope_date.len() != 8 || !scope_date.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed("Credential scope date must be YYYYMMDD"));
    }

    let signed_headers: Vec<String> = signed_headers
        .split(';')
        .map(|name| {
            HeaderName::from_bytes(name.as_bytes())
                .map(|n| n.as_str().to_owned()) // lower-cases
                .map_err(|_| malformed(format!("invalid name in SignedHeaders: {:?}", quote(name))))
        })
        .collect::<Result<_, _>>()?;

    if signature.len() != 64 || !signature.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(malformed("Signature must be 64 hex digits"));
    }

    let (request_date, request_time) = request_date(algorithm, headers)?;
    Ok(SignatureV4Header {
        algorithm,
        access_key_id: access_key_id.to_owned(),
        scope_date: scope_date.to_owned(),
        region: region.to_owned(),
        service: service.to_owned(),
        terminator: terminator.to_owned(),
        signed_headers,
        signature: signature.to_ascii_lowercase(),
        request_date,
        request_time,
    })
}

/// The date header of a signed request: the algorithm's own header first
/// (`X-Osc-Date` for OSC4, `X-Amz-Date` for AWS4), the other one as a fallback.
fn request_date(
    algorithm: Algorithm,
    headers: &HeaderMap,
) -> Result<(String, OffsetDateTime), AuthError> {
    let order = match algorithm {
        Algorithm::Osc4HmacSha256 => ["x-osc-date", "x-amz-date"],
        Algorithm::Aws4HmacSha256 => ["x-amz-date", "x-osc-date"],
    };
    let value = order
        .iter()
        .find_map(|name| headers.get(*name))
        .ok_or(AuthError::MissingDate)?;
    let text = value
        .to_str()
        .map_err(|_| AuthError::MalformedDate("<not visible ASCII>".into()))?
        .trim();
    let time = parse_amz_date(text).ok_or_else(|| AuthError::MalformedDate(quote(text)))?;
    Ok((text.to_owned(), time))
}

/// Parses `YYYYMMDDTHHMMSSZ` (UTC).
pub(crate) fn parse_amz_date(s: &str) -> Option<OffsetDateTime> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<u32> {
        let digits = &b[range];
        if !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(digits.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0')))
    };
    let month = Month::try_from(num(4..6)? as u8).ok()?;
    let date = Date::from_calendar_date(num(0..4)? as i32, month, num(6..8)? as u8).ok()?;
    let time = Time::from_hms(num(9..11)? as u8, num(11..13)? as u8, num(13..15)? as u8).ok()?;
    Some(PrimitiveDateTime::new(date, time).assume_utc())
}

/// Formats a time as `YYYYMMDDTHHMMSSZ` in UTC.
pub(crate) fn format_amz_date(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

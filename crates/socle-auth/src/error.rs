/// Why a request could not be authenticated.
///
/// Every message is safe to send back to the client: none contains the secret key, the
/// derived key or the expected signature (only values the client sent itself, truncated).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// A signed request carries neither `X-Osc-Date` nor `X-Amz-Date`.
    #[error("missing X-Osc-Date (or X-Amz-Date) header on a signed request")]
    MissingDate,

    /// The date header is not of the form `YYYYMMDDTHHMMSSZ`.
    #[error("malformed date header {0:?}: expected YYYYMMDDTHHMMSSZ (UTC)")]
    MalformedDate(String),

    /// The `Authorization` header cannot be parsed (the string says what is wrong).
    #[error("malformed Authorization header: {0}")]
    MalformedAuthorization(String),

    /// The `Authorization` scheme is neither a supported signature algorithm nor Basic.
    #[error(
        "unsupported authorization algorithm {0:?}: expected OSC4-HMAC-SHA256, AWS4-HMAC-SHA256 or Basic"
    )]
    UnsupportedAlgorithm(String),

    /// The request date is more than [`crate::MAX_CLOCK_SKEW`] away from the server clock
    /// (a replayed request, or a client whose clock is wrong).
    #[error(
        "request expired or clock skewed: request date {request_date} is more than 5 minutes from server time {server_time}"
    )]
    RequestExpired {
        request_date: String,
        server_time: String,
    },

    /// The date in the credential scope is not the day of the request date.
    #[error("credential scope date {scope_date} does not match the request date {request_date}")]
    ScopeDateMismatch {
        scope_date: String,
        request_date: String,
    },

    /// A header listed in `SignedHeaders` is absent from the request.
    #[error("header {0:?} is listed in SignedHeaders but absent from the request")]
    MissingSignedHeader(String),

    /// A signed header has a value that is not visible ASCII, so it cannot be canonicalised.
    #[error("signed header {0:?} has a value that is not visible ASCII")]
    InvalidHeaderValue(String),

    /// The signature does not match (wrong secret key, tampered request, or a client that
    /// signs differently).
    #[error(
        "the request signature does not match: check the secret key, the region and the endpoint"
    )]
    SignatureMismatch,
}

/// Client-supplied text quoted in an error message: at most 64 characters, so a huge
/// header cannot make a huge message.
pub(crate) fn quote(s: &str) -> String {
    const MAX: usize = 64;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

//! Request authentication for Socle's OUTSCALE-compatible API.
//!
//! Pure library: no I/O, no async, no clock (the caller passes `now`).
//!
//! Server side, verification happens in two steps because the secret key has to be
//! looked up by access key id in between:
//!
//! 1. [`parse_request_auth`] reads the `Authorization` header (and the date header) and
//!    tells whether the request is signed (OSC4 / AWS4), uses Basic auth, or is anonymous.
//! 2. [`verify_signature`] checks a signed request against the secret key.
//!
//! Client side, [`sign_osc4`] produces the headers to send, signed the way osc-sdk-python
//! signs them.
//!
//! The verifier checks freshness, scope date and the signature only. Whether the scope's
//! region/service are the ones this endpoint serves, and whether the access key is
//! active, is policy for the caller (fields of [`SignatureV4Header`]).

mod error;
mod parse;
mod sigv4;

#[cfg(test)]
mod tests;

pub use error::AuthError;
pub use parse::{parse_request_auth, Algorithm, RequestAuth, SignatureV4Header};
pub use sigv4::{hex_sha256, sign_osc4, sign_osc4_streaming, verify_signature, verify_signature_for_hash, Credentials, MAX_CLOCK_SKEW};

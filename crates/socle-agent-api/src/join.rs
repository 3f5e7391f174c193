//! How a host joins a cloud, once: `POST /agent/v1/join` to the control
//! plane's API endpoint, authorised by a one-time, expiring token that the
//! operator made (`socle host token`).
//!
//! The token (`<token_id>.<secret>`) never crosses the network: the host
//! proves it holds the secret with an HMAC of its request, and the control
//! plane proves it too with an HMAC of its answer. So a man in the middle of
//! the (possibly plain HTTP) API connection can neither join with a token
//! it saw pass nor hand the host a CA of its own. The host makes its key
//! itself and sends only a certificate signing request.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// The path of the join endpoint on the control plane's API listener.
pub const JOIN_PATH: &str = "/agent/v1/join";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinRequest {
    pub token_id: String,
    /// The host's certificate signing request (PEM).
    pub csr_pem: String,
    /// host:port where the host's agent will serve the agent protocol.
    pub endpoint: String,
    /// HMAC-SHA256 (hex) under the token's secret of [`JoinRequest::signed_text`].
    pub proof: String,
}

impl JoinRequest {
    pub fn signed_text(&self) -> String {
        format!("join-request\n{}\n{}\n{}", self.token_id, self.endpoint, self.csr_pem)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinAnswer {
    pub host_id: String,
    pub subregion: String,
    /// The host's certificate (PEM), signed by the cloud's CA.
    pub cert_pem: String,
    /// The cloud's CA certificate (PEM).
    pub ca_pem: String,
    /// HMAC-SHA256 (hex) under the token's secret of [`JoinAnswer::signed_text`].
    pub proof: String,
}

impl JoinAnswer {
    pub fn signed_text(&self) -> String {
        format!("join-answer\n{}\n{}\n{}\n{}", self.host_id, self.subregion, self.cert_pem, self.ca_pem)
    }
}

/// A token as the operator copies it: `<token_id>.<secret>`.
pub fn split_token(token: &str) -> Option<(&str, &str)> {
    let (id, secret) = token.trim().split_once('.')?;
    (!id.is_empty() && !secret.is_empty()).then_some((id, secret))
}

/// The HMAC-SHA256 of `text` under `secret`, hex.
pub fn proof(secret: &str, text: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(text.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Whether `claimed` is the proof of `text` under `secret` (constant time).
pub fn proof_holds(secret: &str, text: &str, claimed: &str) -> bool {
    let Ok(claimed) = hex::decode(claimed) else { return false };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(text.as_bytes());
    mac.verify_slice(&claimed).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proof_holds_only_for_its_secret_and_text() {
        let p = proof("s3cret", "hello");
        assert!(proof_holds("s3cret", "hello", &p));
        assert!(!proof_holds("other", "hello", &p));
        assert!(!proof_holds("s3cret", "hello!", &p));
        assert!(!proof_holds("s3cret", "hello", "zz"));
        assert_eq!(split_token(" jt-1.abc \n"), Some(("jt-1", "abc")));
        assert_eq!(split_token("jt-1"), None);
        assert_eq!(split_token(".abc"), None);
    }
}

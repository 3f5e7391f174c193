//! The host's side of joining a cloud (see `socle_agent_api::join`): the
//! host makes its key, sends a signed request for a certificate, checks that
//! the answer comes from the holder of the token, and keeps what it got in
//! `DATA/tls/`: `host.key` (0600), `host.pem`, `ca.pem`, `host.json`.

use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use socle_control::startup::write_atomic;
use socle_agent_api::join::{proof, proof_holds, split_token, JoinAnswer, JoinRequest, JOIN_PATH};

/// Who this host is in its cloud.
#[derive(Debug, Serialize, Deserialize)]
pub struct Joined {
    pub host_id: String,
    pub subregion: String,
}

/// The host's identity, if it has joined.
pub fn joined(tls_dir: &Path) -> anyhow::Result<Option<Joined>> {
    let path = tls_dir.join("host.json");
    match std::fs::read(&path) {
        Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).with_context(|| format!("corrupt {}", path.display()))?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

fn write(path: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    write_atomic(path, text.as_bytes(), mode).with_context(|| format!("cannot write {}", path.display()))
}

/// Joins the cloud whose API is at `url` with `token`; the agent will be
/// reached at `endpoint` (host:port).
pub fn join(url: &str, token: &str, endpoint: &str, tls_dir: &Path) -> anyhow::Result<Joined> {
    let (token_id, secret) = split_token(token).context("a join token looks like jt-…….……; copy it whole from `socle host token`")?;
    let (key_pem, csr_pem) = socle_agent_api::pki::host_key_and_request().map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut req = JoinRequest { token_id: token_id.to_string(), csr_pem, endpoint: endpoint.to_string(), proof: String::new() };
    req.proof = proof(secret, &req.signed_text());
    let base = url.trim_end_matches('/').trim_end_matches("/api/v1").trim_end_matches("/api/latest");
    let answer: JoinAnswer = match ureq::post(&format!("{base}{JOIN_PATH}")).timeout(std::time::Duration::from_secs(30)).send_json(&req) {
        Ok(resp) => resp.into_json().context("the cloud's answer is not a join answer")?,
        Err(ureq::Error::Status(status, resp)) => {
            let body: serde_json::Value = resp.into_json().unwrap_or_default();
            let details = body["Errors"][0]["Details"].as_str().unwrap_or("no details").to_string();
            anyhow::bail!("the cloud refused to let this host join (HTTP {status}): {details}");
        }
        Err(e) => return Err(e).with_context(|| format!("cannot reach the cloud at {base}")),
    };
    // Only the holder of the token's secret can have made this answer.
    anyhow::ensure!(
        proof_holds(secret, &answer.signed_text(), &answer.proof),
        "the answer to the join is not signed with the token: {base} is not the cloud that made it"
    );
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(tls_dir).with_context(|| format!("cannot create {}", tls_dir.display()))?;
    write(&tls_dir.join("host.key"), &key_pem, 0o600)?;
    write(&tls_dir.join("host.pem"), &answer.cert_pem, 0o644)?;
    write(&tls_dir.join("ca.pem"), &answer.ca_pem, 0o644)?;
    let host = Joined { host_id: answer.host_id, subregion: answer.subregion };
    // Last: its presence says the host has joined.
    write(&tls_dir.join("host.json"), &serde_json::to_string_pretty(&host)?, 0o644)?;
    Ok(host)
}

/// The TLS server configuration of a joined host.
pub fn server_tls(tls_dir: &Path) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let read = |name: &str| std::fs::read_to_string(tls_dir.join(name)).with_context(|| format!("cannot read {}", tls_dir.join(name).display()));
    let identity = socle_agent_api::tls::TlsIdentity::from_pem(&read("host.pem")?, &read("host.key")?).map_err(|e| anyhow::anyhow!("{e}"))?;
    socle_agent_api::tls::server_config(identity, &read("ca.pem")?).map_err(|e| anyhow::anyhow!("{e}"))
}

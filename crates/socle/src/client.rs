//! A small signed client of the OSC API (used by `socle vm` and `socle api`).

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use socle_control::startup::CredentialsFile;

use crate::DataDirArg;

/// Where to find credentials: `--credentials FILE`, else the standard
/// `OSC_ACCESS_KEY`/`OSC_SECRET_KEY`/`OSC_REGION`/`OSC_ENDPOINT_API`
/// environment, else the local cloud's `credentials.json`.
#[derive(clap::Args, Clone)]
pub struct ClientArgs {
    #[arg(long, global = true)]
    pub credentials: Option<PathBuf>,
    #[command(flatten)]
    pub data_dir: DataDirArg,
    /// Print raw JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
}

pub struct Client {
    creds: CredentialsFile,
    agent: ureq::Agent,
}

/// An API error as the server sent it.
#[derive(Debug)]
pub struct ApiFailure {
    pub status: u16,
    pub body: serde_json::Value,
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.body["Errors"].get(0) {
            Some(e) => write!(
                f,
                "HTTP {}: {} {}: {}",
                self.status,
                e["Code"].as_str().unwrap_or("?"),
                e["Type"].as_str().unwrap_or("?"),
                e["Details"].as_str().unwrap_or("")
            ),
            None => write!(f, "HTTP {}: {}", self.status, self.body),
        }
    }
}

impl std::error::Error for ApiFailure {}

fn load_file(path: &Path) -> anyhow::Result<CredentialsFile> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read credentials from {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("{} is not a Socle credentials file", path.display()))
}

impl Client {
    pub fn from_args(args: &ClientArgs) -> anyhow::Result<Client> {
        let creds = if let Some(path) = &args.credentials {
            load_file(path)?
        } else if let (Ok(ak), Ok(sk)) = (std::env::var("OSC_ACCESS_KEY"), std::env::var("OSC_SECRET_KEY")) {
            CredentialsFile {
                access_key: ak,
                secret_key: sk,
                region: std::env::var("OSC_REGION").unwrap_or_else(|_| "eu-west-2".into()),
                endpoint: std::env::var("OSC_ENDPOINT_API")
                    .map_err(|_| anyhow!("OSC_ACCESS_KEY is set but OSC_ENDPOINT_API is not"))?,
            }
        } else {
            load_file(&args.data_dir.resolve().join("credentials.json")).context(
                "no credentials: pass --credentials FILE, set OSC_ACCESS_KEY/OSC_SECRET_KEY/OSC_ENDPOINT_API, or run `socle up` first",
            )?
        };
        Ok(Client { creds, agent: ureq::AgentBuilder::new().timeout(std::time::Duration::from_secs(120)).build() })
    }

}

/// `operation`'s URL at the endpoint, and the host and path it signs.
fn url_of(endpoint: &str, operation: &str) -> (String, String, String) {
    let url = format!("{}/{operation}", endpoint.trim_end_matches('/'));
    let path_start = url.find("://").map(|i| i + 3).unwrap_or(0);
    let after_scheme = &url[path_start..];
    let (host, path) = after_scheme.split_at(after_scheme.find('/').unwrap_or(after_scheme.len()));
    (host.to_string(), path.to_string(), url.clone())
}

fn answer(url: &str, result: Result<ureq::Response, ureq::Error>) -> anyhow::Result<serde_json::Value> {
    match result {
        Ok(resp) => Ok(resp.into_json()?),
        Err(ureq::Error::Status(status, resp)) => {
            let body = resp.into_json().unwrap_or(serde_json::Value::Null);
            Err(ApiFailure { status, body }.into())
        }
        Err(e) => Err(anyhow!("cannot reach {url}: {e}")),
    }
}

impl Client {
    /// Streams `body` (`length` bytes whose SHA-256 is `sha256_hex`) to an
    /// operation that takes a raw body (ImportImage); `headers` (lowercase
    /// names) are signed with it.
    ///
    /// Sent with `Expect: 100-continue`, so a refusal the server can give
    /// before reading (bad name, no room, bad signature) arrives as an
    /// answer instead of a broken pipe halfway through gigabytes.
    pub fn upload(
        &self,
        operation: &str,
        headers: &[(&str, &str)],
        body: impl std::io::Read,
        length: u64,
        sha256_hex: &str,
    ) -> anyhow::Result<serde_json::Value> {
        let (host, path, url) = url_of(&self.creds.endpoint, operation);
        if !url.starts_with("http://") {
            return Err(anyhow!("uploads go to an http:// endpoint; {url} is not one"));
        }
        let creds = socle_auth::Credentials {
            access_key: &self.creds.access_key,
            secret_key: &self.creds.secret_key,
            region: &self.creds.region,
        };
        let signed = socle_auth::sign_osc4_streaming(&creds, &host, &path, headers, sha256_hex, time::OffsetDateTime::now_utc());
        let (status, answer) = crate::upload::post_with_continue(&host, &path, &signed, body, length)
            .map_err(|e| anyhow!("upload to {url} failed: {e}"))?;
        let body: serde_json::Value = serde_json::from_slice(&answer).unwrap_or(serde_json::Value::Null);
        if status == 200 {
            Ok(body)
        } else {
            Err(ApiFailure { status, body }.into())
        }
    }

    /// Calls `operation` with `body`; Ok is the 200 answer, Err the OSC error.
    pub fn call(&self, operation: &str, body: &serde_json::Value) -> anyhow::Result<serde_json::Value> {
        let (host, path, url) = url_of(&self.creds.endpoint, operation);
        let (host, path) = (host.as_str(), path.as_str());
        let payload = serde_json::to_vec(body)?;
        let headers = socle_auth::sign_osc4(
            &self.creds.access_key,
            &self.creds.secret_key,
            &self.creds.region,
            host,
            path,
            &payload,
            time::OffsetDateTime::now_utc(),
        );
        let mut req = self.agent.post(&url);
        for (k, v) in &headers {
            req = req.set(k, v);
        }
        answer(&url, req.send_bytes(&payload))
    }
}

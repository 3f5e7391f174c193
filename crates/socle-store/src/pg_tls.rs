//! TLS to PostgreSQL, with rustls (no OpenSSL in the binary).
//!
//! The database URL says it as libpq does: `sslmode=verify-full` with
//! `sslrootcert=/path/to/ca.pem` encrypts every session and checks that the
//! server's certificate chains to that CA and names the host connected to.
//! Nothing weaker is taken silently: `require` and `verify-ca` (encrypted,
//! but the server is not, or not fully, checked: anyone on the path could
//! answer) and `prefer`/`allow` (clear text when the server declines) are
//! refused with an explanation. Without `sslmode` (or with `disable`) the
//! sessions are in clear — for a Unix socket or a trusted network.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::{Result, StoreError};

/// How sessions to the database are opened.
pub(crate) struct PgConnector(Option<MakeRustlsConnect>);

impl PgConnector {
    pub(crate) fn connect(&self, config: &postgres::Config) -> std::result::Result<postgres::Client, postgres::Error> {
        match &self.0 {
            None => config.connect(postgres::NoTls),
            Some(tls) => config.connect(tls.clone()),
        }
    }

    pub(crate) fn encrypted(&self) -> bool {
        self.0.is_some()
    }
}

fn refused(why: String) -> StoreError {
    StoreError::Config(why)
}

/// Splits Socle's TLS settings out of `url` (a `postgres://` URL or a
/// `key=value` string): the configuration the driver parses (with
/// `sslmode=require` where TLS is verified by Socle) and the connector.
pub(crate) fn prepare(url: &str) -> Result<(postgres::Config, PgConnector)> {
    let (mut sslmode, mut rootcert) = (None::<String>, None::<String>);
    let kept = if let Some((base, query)) = url.split_once('?').filter(|_| url.contains("://")) {
        let mut kept = vec![];
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("sslmode", v)) => sslmode = Some(v.to_string()),
                Some(("sslrootcert", v)) => rootcert = Some(percent_decode(v)),
                _ => kept.push(pair.to_string()),
            }
        }
        if kept.is_empty() { base.to_string() } else { format!("{base}?{}", kept.join("&")) }
    } else {
        let mut kept = vec![];
        for word in url.split_whitespace() {
            match word.split_once('=') {
                Some(("sslmode", v)) => sslmode = Some(v.to_string()),
                Some(("sslrootcert", v)) => rootcert = Some(v.to_string()),
                _ => kept.push(word.to_string()),
            }
        }
        kept.join(" ")
    };
    let connector = match sslmode.as_deref() {
        None | Some("disable") => {
            if rootcert.is_some() {
                return Err(refused("sslrootcert is given but sslmode is not verify-full: say sslmode=verify-full to use it".into()));
            }
            PgConnector(None)
        }
        Some("verify-full") => {
            let path = rootcert.ok_or_else(|| refused("sslmode=verify-full needs sslrootcert=PATH: the CA that signed the server's certificate".into()))?;
            PgConnector(Some(MakeRustlsConnect::new(client_config(&path)?)))
        }
        Some(mode @ ("require" | "verify-ca" | "prefer" | "allow")) => {
            return Err(refused(format!(
                "sslmode={mode} is refused: it either runs in clear when the server declines TLS or does not check that the server is the one named; \
                 use sslmode=verify-full with sslrootcert=CA-FILE (or sslmode=disable on a Unix socket or a trusted network)"
            )));
        }
        Some(other) => return Err(refused(format!("unknown sslmode {other:?}: use verify-full (with sslrootcert) or disable"))),
    };
    let mut config: postgres::Config = kept.parse()?;
    config.ssl_mode(if connector.encrypted() { postgres::config::SslMode::Require } else { postgres::config::SslMode::Disable });
    Ok((config, connector))
}

/// Trusts the CA certificates of the PEM file at `path`, and no other.
fn client_config(path: &str) -> Result<rustls::ClientConfig> {
    let pem = std::fs::read(path).map_err(|e| refused(format!("sslrootcert {path}: {e}")))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| refused(format!("sslrootcert {path}: {e}")))?;
        roots.add(cert).map_err(|e| refused(format!("sslrootcert {path}: {e}")))?;
    }
    if roots.is_empty() {
        return Err(refused(format!("sslrootcert {path} holds no certificate")));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| refused(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// `%2F` and friends in a URL's query value (paths often carry them).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weak_or_unknown_modes_are_refused_and_clear_text_is_said() {
        for mode in ["require", "verify-ca", "prefer", "allow", "bogus"] {
            let err = prepare(&format!("postgres://u@db.example/socle?sslmode={mode}")).err().expect(mode).to_string();
            assert!(err.contains("verify-full"), "{mode}: {err}");
        }
        let err = prepare("postgres://u@db.example/socle?sslmode=verify-full").err().unwrap().to_string();
        assert!(err.contains("sslrootcert"), "{err}");
        let err = prepare("host=db.example sslrootcert=/x.pem").err().unwrap().to_string();
        assert!(err.contains("verify-full"), "{err}");
        let (config, tls) = prepare("postgresql:///socle?host=/run/postgresql&user=postgres").unwrap();
        assert!(!tls.encrypted());
        assert_eq!(config.get_dbname(), Some("socle"));
        let err = prepare("postgres://u@db.example/socle?sslmode=verify-full&sslrootcert=%2Fnowhere%2Fca.pem").err().unwrap().to_string();
        assert!(err.contains("/nowhere/ca.pem"), "{err}");
    }
}

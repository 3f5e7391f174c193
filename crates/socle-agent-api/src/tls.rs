//! Mutual TLS between the control plane and the agents of other machines
//! (rustls with the ring provider: no OpenSSL in the binary).
//!
//! Trust: the cloud's own CA ([`crate::pki::Ca`], made by the control plane)
//! signs two kinds of certificates, and nothing else is trusted:
//! * a host's: SAN `<host-id>.hosts.socle`, extended key usage *serverAuth*
//!   only — the agent proves it is that host;
//! * the control plane's: SAN `control.socle`, *clientAuth* only — only the
//!   control plane can call an agent.
//!
//! A host's certificate cannot act as a client, so one compromised host
//! cannot drive another; and the control plane checks the name of the host
//! it meant to reach, so a host cannot answer for another.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::error::HostError;

/// The name in the certificate of the control plane.
pub const CONTROL_NAME: &str = "control.socle";

/// The name in the certificate of host `host_id`.
pub fn host_name(host_id: &str) -> String {
    format!("{host_id}.hosts.socle")
}

/// A certificate chain and its private key.
pub struct TlsIdentity {
    pub cert_chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl TlsIdentity {
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<TlsIdentity, HostError> {
        let cert_chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| HostError::internal(format!("bad certificate PEM: {e}")))?;
        if cert_chain.is_empty() {
            return Err(HostError::internal("no certificate in the PEM"));
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| HostError::internal(format!("bad private key PEM: {e}")))?;
        Ok(TlsIdentity { cert_chain, key })
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca_pem: &str) -> Result<Arc<RootCertStore>, HostError> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| HostError::internal(format!("bad CA PEM: {e}")))?;
        roots.add(cert).map_err(|e| HostError::internal(format!("bad CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(HostError::internal("no CA certificate in the PEM"));
    }
    Ok(Arc::new(roots))
}

/// An agent's server: its host certificate, and clients must show a
/// certificate of the cloud's CA valid for client authentication.
pub fn server_config(identity: TlsIdentity, ca_pem: &str) -> Result<Arc<ServerConfig>, HostError> {
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots(ca_pem)?, provider())
        .build()
        .map_err(|e| HostError::internal(format!("client verifier: {e}")))?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| HostError::internal(format!("TLS versions: {e}")))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.cert_chain, identity.key)
        .map_err(|e| HostError::internal(format!("the host certificate: {e}")))?;
    Ok(Arc::new(config))
}

/// The control plane's client: its certificate, and servers must show a
/// certificate of the cloud's CA (the host's name is checked per connection).
pub fn client_config(identity: TlsIdentity, ca_pem: &str) -> Result<Arc<ClientConfig>, HostError> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| HostError::internal(format!("TLS versions: {e}")))?
        .with_root_certificates(roots(ca_pem)?)
        .with_client_auth_cert(identity.cert_chain, identity.key)
        .map_err(|e| HostError::internal(format!("the control plane's certificate: {e}")))?;
    Ok(Arc::new(config))
}

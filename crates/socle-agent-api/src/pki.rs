//! The cloud's certificate authority and what it signs (see [`crate::tls`]
//! for the trust model). The CA's key stays with the control plane; a host
//! makes its own key and sends only a certificate signing request, so no
//! private key ever crosses the network.

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, SanType,
};

use crate::error::{HostError, HostErrorKind};
use crate::tls::{host_name, CONTROL_NAME};

/// How long the CA, a host's and the control plane's certificates are valid.
const CA_YEARS: i64 = 20;
const LEAF_DAYS: i64 = 825;

fn pki_err(what: &str) -> impl Fn(rcgen::Error) -> HostError + '_ {
    move |e| HostError::internal(format!("{what}: {e}"))
}

/// The CA: its certificate (public, given to every host) and its key
/// (the control plane's secret, a file of mode 0600).
pub struct Ca {
    pub cert_pem: String,
    pub key_pem: String,
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    // A little slack for clocks that are not quite in step.
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(days);
}

impl Ca {
    /// A new CA named after the cloud.
    pub fn generate(cloud: &str) -> Result<Ca, HostError> {
        let key = KeyPair::generate().map_err(pki_err("CA key"))?;
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, format!("Socle CA of {cloud}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        validity(&mut params, CA_YEARS * 365);
        let cert = params.self_signed(&key).map_err(pki_err("CA certificate"))?;
        Ok(Ca { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    fn issuer(&self) -> Result<Issuer<'static, KeyPair>, HostError> {
        let key = KeyPair::from_pem(&self.key_pem).map_err(pki_err("CA key"))?;
        Issuer::from_ca_cert_pem(&self.cert_pem, key).map_err(pki_err("CA certificate"))
    }

    /// Signs host `host_id`'s request: a server certificate for its name,
    /// whatever name or usage the request asked for.
    pub fn sign_host(&self, csr_pem: &str, host_id: &str) -> Result<String, HostError> {
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| HostError::new(HostErrorKind::InvalidArgument, format!("bad certificate signing request: {e}")))?;
        let name = host_name(host_id);
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name.clone());
        params.subject_alt_names = vec![SanType::DnsName(name.try_into().map_err(pki_err("host name"))?)];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        validity(&mut params, LEAF_DAYS);
        csr.params = params;
        Ok(csr.signed_by(&self.issuer()?).map_err(pki_err("host certificate"))?.pem())
    }

    /// A client certificate for the control plane, and its key.
    pub fn issue_control(&self) -> Result<(String, String), HostError> {
        let key = KeyPair::generate().map_err(pki_err("control key"))?;
        let mut params = CertificateParams::new(vec![CONTROL_NAME.to_string()]).map_err(pki_err("control name"))?;
        params.distinguished_name.push(DnType::CommonName, CONTROL_NAME);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        validity(&mut params, LEAF_DAYS);
        let cert = params.signed_by(&key, &self.issuer()?).map_err(pki_err("control certificate"))?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

/// A host's new key and its certificate signing request (PEM both).
pub fn host_key_and_request() -> Result<(String, String), HostError> {
    let key = KeyPair::generate().map_err(pki_err("host key"))?;
    let csr = CertificateParams::default().serialize_request(&key).map_err(pki_err("signing request"))?;
    Ok((key.serialize_pem(), csr.pem().map_err(pki_err("signing request"))?))
}

/// What the cloud records of a host's certificate when it joins: the
/// SHA-256 (hex) of its PEM text as the CA issued it.
pub fn cert_fingerprint(cert_pem: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(cert_pem.as_bytes()))
}

/// The same fingerprint from the DER a TLS handshake presents: the PEM
/// text is rebuilt exactly as the CA wrote it (rcgen: 64 base64 characters
/// a line, LF endings).
pub fn der_fingerprint(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    cert_fingerprint(&pem)
}

#[cfg(test)]
mod fingerprint_tests {
    use super::*;

    #[test]
    fn a_presented_certificate_has_the_fingerprint_recorded_at_its_join() {
        let ca = Ca::generate("test").unwrap();
        for host in ["h-1", "h-0a1b2c3d"] {
            let (_, request) = host_key_and_request().unwrap();
            let pem = ca.sign_host(&request, host).unwrap();
            use rustls::pki_types::pem::PemObject;
            let der = rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
            assert_eq!(der_fingerprint(&der), cert_fingerprint(&pem), "{pem}");
        }
    }
}

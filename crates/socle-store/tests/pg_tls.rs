//! The store on a PostgreSQL server that offers TLS: with
//! `sslmode=verify-full` and the CA that signed the server's certificate,
//! every session is encrypted (the server says so); with another CA, or a
//! name the certificate does not carry, nothing connects.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use socle_store::testing::{PgCluster, ServerTls};
use socle_store::Store;

struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn new_ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    let pem = cert.pem();
    Ca { issuer: Issuer::from_ca_cert_pem(&pem, key).unwrap(), pem }
}

#[test]
fn sessions_are_encrypted_to_the_server_the_ca_vouches_for_and_no_other() {
    let ca = new_ca("database CA");
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_string()]).unwrap().signed_by(&key, &ca.issuer).unwrap();
    let cluster = PgCluster::private_tls(ServerTls { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
        .unwrap_or_else(|e| panic!("this test needs PostgreSQL: {e}"));
    let port = cluster.port().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (good, other) = (dir.path().join("ca.pem"), dir.path().join("other.pem"));
    std::fs::write(&good, &ca.pem).unwrap();
    std::fs::write(&other, new_ca("someone else").pem).unwrap();
    let url = |host: &str, root: &std::path::Path| {
        format!("postgres://postgres@{host}:{port}/postgres?sslmode=verify-full&sslrootcert={}", root.display())
    };

    let store = Store::connect(&url("localhost", &good)).expect("verified TLS");
    let encrypted: bool = store
        .read_sync(|c| c.query_row("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", [], |r| r.get(0)))
        .unwrap();
    assert!(encrypted, "the server sees this session in clear");

    for (host, root, why) in [("localhost", &other, "another CA"), ("127.0.0.1", &good, "a name the certificate lacks")] {
        let err = Store::connect(&url(host, root)).err().unwrap_or_else(|| panic!("connected with {why}")).to_string();
        assert!(err.to_lowercase().contains("certificate") || err.contains("tls") || err.contains("TLS"), "{why}: {err}");
    }
    let err = Store::connect(&format!("postgres://postgres@localhost:{port}/postgres?sslmode=require")).err().unwrap().to_string();
    assert!(err.contains("verify-full"), "{err}");
}

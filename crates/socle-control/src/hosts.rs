//! The hosts of a cloud: its certificate authority, the tokens with which
//! a host joins, joining itself, and the health check that tells ready
//! hosts from unreachable ones.
//!
//! The CA lives in `DATA/ca/` (`ca.key` 0600 never leaves it); the control
//! plane's own client certificate for reaching agents sits beside it. See
//! `socle_agent_api::tls` for what each certificate may do and
//! `socle_agent_api::join` for the join exchange.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rand::RngCore;
use socle_types::ids::{HostId, JoinTokenId};
use socle_agent_api::join::{proof, proof_holds, JoinAnswer, JoinRequest};
use socle_agent_api::pki::Ca;
use socle_agent_api::tls::{client_config, TlsIdentity};
use socle_store::hosts::{self as host_store, HostRow, HostTokenRow};
use socle_store::{format_iso, now_iso, Store};
use socle_types::error::ErrorCode;
use socle_types::ApiError;

use crate::secrets::SecretBox;
use crate::startup::{write_atomic, written_aside};
use crate::Cloud;

/// A token is good for this long unless the operator says otherwise.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(3600);
/// How often the health check asks each host's agent, and how long it waits.
const CHECK_EVERY: Duration = Duration::from_secs(3);
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

fn internal(what: &str) -> impl Fn(String) -> ApiError + '_ {
    move |e| ApiError::internal(format!("{what}: {e}"))
}

/// The certificate (`NAME.pem`) and key (`NAME.key`, 0600) kept in
/// `DATA/ca/`, made by `make` when there is none yet.
///
/// Made once even when several servers share the data dir and start
/// together: the key is put in place with `link`, which fails if the file
/// exists, so exactly one maker's key lands; that maker then writes its
/// certificate, and every other waits for it. A pair is never one
/// server's key with another's certificate.
fn kept_pair(data_dir: &Path, name: &str, make: impl FnOnce() -> Result<(String, String), String>) -> Result<(String, String), ApiError> {
    let dir = data_dir.join("ca");
    let (cert, key) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
    let failed = |e: String| ApiError::internal(format!("{}: {e}", cert.display()));
    if !key.exists() {
        fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir).map_err(|e| failed(e.to_string()))?;
        let (cert_pem, key_pem) = make().map_err(failed)?;
        let aside = written_aside(&key, key_pem.as_bytes(), 0o600).map_err(|e| failed(e.to_string()))?;
        let linked = fs::hard_link(&aside, &key);
        let _ = fs::remove_file(&aside);
        match linked {
            Ok(()) => {
                write_atomic(&cert, cert_pem.as_bytes(), 0o644).map_err(|e| failed(e.to_string()))?;
                tracing::info!(cert = %cert.display(), "made a certificate");
            }
            // Another server made the pair first: its certificate follows.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(failed(e.to_string())),
        }
    }
    wait_for(&cert).map_err(failed)?;
    let read = |p: &Path| fs::read_to_string(p).map_err(|e| ApiError::internal(format!("{}: {e}", p.display())));
    Ok((read(&cert)?, read(&key)?))
}

/// Waits (10 s at most) for the certificate of a key another server just
/// put in place.
fn wait_for(cert: &Path) -> Result<(), String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !cert.exists() {
        if std::time::Instant::now() > deadline {
            return Err("its key exists but the certificate never came: remove the key to make a new pair".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// The cloud's CA, checked against the database's record of it: the first
/// server to use a CA records its certificate's SHA-256; a server whose
/// data dir holds another CA, or none while one is recorded, refuses
/// (its certificates would be trusted by no host, or it would trust hosts
/// no other server issued). With `create`, a CA is made when there is
/// none anywhere yet.
pub fn cloud_ca(conn: &socle_store::Conn, data_dir: &Path, create: bool) -> Result<Option<Ca>, ApiError> {
    let recorded = host_store::recorded_ca(conn)?;
    let here = data_dir.join("ca").join("ca.pem");
    if !here.exists() {
        if let Some(sha) = &recorded {
            return Err(ApiError::internal(format!(
                "this server's data dir has no CA ({}) but the cloud's database records one (SHA-256 {sha}): \
                 give every server of the cloud the same DATA/ca/ (ca.pem and ca.key)",
                here.display()
            )));
        }
        if !create {
            return Ok(None);
        }
    }
    let ca = load_or_create_ca(data_dir)?;
    let sha = socle_agent_api::pki::cert_fingerprint(&ca.cert_pem);
    let kept = host_store::record_ca(conn, &sha, &now_iso())?;
    if kept != sha {
        return Err(ApiError::internal(format!(
            "the CA in {} (SHA-256 {sha}) is not the cloud's (SHA-256 {kept}, recorded in its database): \
             give every server of the cloud the same DATA/ca/ (ca.pem and ca.key)",
            here.display()
        )));
    }
    Ok(Some(ca))
}

/// The cloud's CA, made at its first use.
pub fn load_or_create_ca(data_dir: &Path) -> Result<Ca, ApiError> {
    let (cert_pem, key_pem) = kept_pair(data_dir, "ca", || {
        let ca = Ca::generate(&data_dir.display().to_string()).map_err(|e| e.to_string())?;
        Ok((ca.cert_pem, ca.key_pem))
    })?;
    Ok(Ca { cert_pem, key_pem })
}

/// The control plane's TLS client configuration for reaching agents (its
/// certificate is issued once by the CA and kept beside it).
pub fn control_tls(data_dir: &Path) -> Result<Arc<rustls::ClientConfig>, ApiError> {
    let ca = load_or_create_ca(data_dir)?;
    let (cert_pem, key_pem) = kept_pair(data_dir, "control", || ca.issue_control().map_err(|e| e.to_string()))?;
    let identity = TlsIdentity::from_pem(&cert_pem, &key_pem).map_err(|e| ApiError::internal(format!("control certificate: {e}")))?;
    client_config(identity, &ca.cert_pem).map_err(|e| ApiError::internal(format!("control TLS: {e}")))
}

/// A host's advertised endpoint: `host:port` that servers can reach — not
/// an unspecified address (`0.0.0.0`, `[::]`), nothing but printable ASCII
/// (it is shown by `socle host list` and written to logs).
fn check_endpoint(endpoint: &str) -> Result<(), &'static str> {
    if endpoint.len() > 255 || !endpoint.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("only printable ASCII without spaces, at most 255 bytes");
    }
    let Some((host, port)) = endpoint.rsplit_once(':') else { return Err("expected host:port where the agent listens") };
    if host.is_empty() || !port.parse::<u16>().is_ok_and(|p| p > 0) {
        return Err("expected host:port where the agent listens");
    }
    let ip = host.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>();
    if ip.is_ok_and(|ip| ip.is_unspecified()) {
        return Err("an unspecified address is where an agent listens, not where servers reach it: give the host's address");
    }
    Ok(())
}

/// `eu-west-2a`: a region name and one letter.
fn valid_subregion(name: &str) -> bool {
    let Some(letter) = name.chars().last() else { return false };
    let region = &name[..name.len() - letter.len_utf8()];
    letter.is_ascii_lowercase()
        && region.split('-').count() == 3
        && region.split('-').all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
        && region.ends_with(|c: char| c.is_ascii_digit())
}

/// A new one-time join token for a host of `subregion`, valid for `ttl`:
/// `<token_id>.<secret>`, to hand to `socle agent --join … --token`.
pub async fn issue_token(store: &Store, secrets: &SecretBox, subregion: &str, ttl: Duration) -> Result<String, ApiError> {
    if !valid_subregion(subregion) {
        return Err(ApiError::invalid_value(format!("subregion {subregion:?}: expected a region name and a letter, e.g. eu-west-2a")));
    }
    let token_id = JoinTokenId::generate();
    let mut secret = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut secret);
    let secret = hex::encode(secret);
    let expires = time::OffsetDateTime::now_utc() + time::Duration::seconds(ttl.as_secs() as i64);
    let row = HostTokenRow {
        token_id: token_id.clone(),
        subregion: subregion.to_string(),
        secret_sealed: secrets.seal(token_id.as_str(), secret.as_bytes()),
        expires_at: format_iso(expires),
        used_by: None,
    };
    store.write(move |c| host_store::insert_token(c, &row)).await?;
    Ok(format!("{token_id}.{secret}"))
}

/// A host joins with a token: its request is signed, its certificate
/// issued and the host recorded, `ready`, in one step; the token is spent.
pub async fn join(cloud: &Arc<Cloud>, req: JoinRequest) -> Result<JoinAnswer, ApiError> {
    // One answer for every token problem: a prober learns nothing.
    let denied = || ApiError::new(ErrorCode::AccessDenied, "the join token is unknown, expired, already used, or the request is not signed with it");
    let token_id = JoinTokenId::parse(&req.token_id).map_err(|_| denied())?;
    let token = cloud.store.read(move |c| host_store::get_token(c, &token_id)).await?.ok_or_else(denied)?;
    let secret = cloud.secrets.open(token.token_id.as_str(), &token.secret_sealed).map_err(|e| internal("join token")(e.to_string()))?;
    let secret = String::from_utf8(secret).map_err(|e| internal("join token")(e.to_string()))?;
    if token.used_by.is_some() || token.expires_at < now_iso() || !proof_holds(&secret, &req.signed_text(), &req.proof) {
        tracing::warn!(token = %token.token_id, "join refused");
        return Err(denied());
    }
    if let Err(why) = check_endpoint(&req.endpoint) {
        let shown: String = req.endpoint.chars().take(80).collect();
        return Err(ApiError::invalid_value(format!("endpoint {shown:?}: {why}")));
    }
    let host_id = HostId::generate();
    let dir = cloud.config.data_dir.clone();
    let ca = cloud.store.write(move |c| cloud_ca(c, &dir, true)).await?.ok_or_else(|| ApiError::internal("no CA"))?;
    let cert_pem = ca.sign_host(&req.csr_pem, host_id.as_str()).map_err(|e| ApiError::invalid_value(e.message))?;
    // Its capacity is known at the first health check, seconds later:
    // until then no VM is placed there.
    let row = HostRow::joining(
        host_id.clone(),
        token.subregion.clone(),
        req.endpoint.clone(),
        socle_agent_api::pki::cert_fingerprint(&cert_pem),
        now_iso(),
    );
    let token_id = token.token_id.clone();
    cloud
        .store
        .write(move |c| -> Result<(), ApiError> {
            // Two joins racing with one token: the second finds it spent.
            if !host_store::use_token(c, &token_id, &row.host_id)? {
                return Err(denied());
            }
            host_store::insert(c, &row)?;
            Ok(())
        })
        .await?;
    tracing::info!(host = %host_id, subregion = %token.subregion, endpoint = %req.endpoint, "a host joined");
    let mut answer = JoinAnswer { host_id: host_id.to_string(), subregion: token.subregion, cert_pem, ca_pem: ca.cert_pem, proof: String::new() };
    answer.proof = proof(&secret, &answer.signed_text());
    Ok(answer)
}

/// Asks every host's agent, for ever (while this server holds the lease of
/// background work), whether it answers and what it has: a host that does
/// not becomes `unreachable`, and `ready` again when it does.
pub async fn watch(cloud: Arc<Cloud>) {
    loop {
        crate::lease::wait_held(&cloud).await;
        match cloud.store.read(host_store::list).await {
            Ok(hosts) => {
                // All at once: a host that does not answer (for up to
                // CHECK_TIMEOUT) never delays the verdict on the others.
                let mut checks = tokio::task::JoinSet::new();
                for host in hosts.into_iter().filter(|h| h.state != "revoked") {
                    let cloud = cloud.clone();
                    checks.spawn(async move { check(&cloud, host).await });
                }
                while checks.join_next().await.is_some() {}
            }
            Err(e) => tracing::error!(error = %e, "cannot read the hosts"),
        }
        tokio::time::sleep(CHECK_EVERY).await;
    }
}

async fn check(cloud: &Arc<Cloud>, host: HostRow) {
    let info = match cloud.hosts.client(&host) {
        Ok(client) => match tokio::time::timeout(CHECK_TIMEOUT, client.host_info()).await {
            Ok(Ok(info)) => Some(info),
            _ => None,
        },
        Err(e) => {
            tracing::error!(host = %host.host_id, error = %e, "cannot reach hosts");
            None
        }
    };
    if info.is_none() && host.state != "unreachable" {
        tracing::warn!(host = %host.host_id, endpoint = %host.endpoint, "host does not answer");
    }
    if info.as_ref().is_some_and(|i| cloud.hosts.note_boot(&host.host_id, &i.boot_id)) {
        tracing::info!(host = %host.host_id, "the host's agent restarted; its networks are applied again");
        cloud.network_changed();
    }
    let capacity = info.map(|i| cloud.config.overcommit.apply(i.capacity));
    let (id, now) = (host.host_id.clone(), now_iso());
    let recorded = cloud
        .store
        .write(move |c| {
            host_store::record_check(c, &id, capacity.is_some(), &now)?;
            match capacity {
                Some((vcpus, memory_mib)) => host_store::record_capacity(c, &id, vcpus, memory_mib),
                None => Ok(()),
            }
        })
        .await;
    if let Err(e) = recorded {
        tracing::error!(host = %host.host_id, error = %e, "cannot record the host's health");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_starting_together_on_a_fresh_data_dir_make_one_ca() {
        let dir = tempfile::tempdir().unwrap();
        let pairs: Vec<(String, String)> = std::thread::scope(|s| {
            let makers: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        let ca = load_or_create_ca(dir.path()).unwrap();
                        (ca.cert_pem, ca.key_pem)
                    })
                })
                .collect();
            makers.into_iter().map(|m| m.join().unwrap()).collect()
        });
        assert!(pairs.windows(2).all(|w| w[0] == w[1]), "servers disagree on the CA");
        let on_disk = (fs::read_to_string(dir.path().join("ca/ca.pem")).unwrap(), fs::read_to_string(dir.path().join("ca/ca.key")).unwrap());
        assert_eq!(on_disk, pairs[0]);
        let mut left: Vec<String> = fs::read_dir(dir.path().join("ca")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        left.sort();
        assert_eq!(left, ["ca.key", "ca.pem"], "temp files left behind");
    }

    #[test]
    fn a_server_without_the_clouds_ca_refuses() {
        let db = tempfile::tempdir().unwrap();
        let store = Store::open(&db.path().join("t.db")).unwrap();
        let (first, bare, other) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let check = |dir: &Path, create: bool| {
            let dir = dir.to_path_buf();
            store.write_sync(move |c| cloud_ca(c, &dir, create).map(|ca| ca.is_some()))
        };
        assert!(!check(first.path(), false).unwrap(), "no CA anywhere: none made at start");
        assert!(check(first.path(), true).unwrap(), "made and recorded at first use");
        assert!(check(first.path(), false).unwrap(), "the same CA again");
        for create in [false, true] {
            let e = check(bare.path(), create).unwrap_err();
            assert!(e.internal.as_deref().unwrap_or_default().contains("has no CA"), "{e:?}");
            assert!(!bare.path().join("ca").exists(), "no CA of its own is made");
        }
        load_or_create_ca(other.path()).unwrap();
        let e = check(other.path(), false).unwrap_err();
        assert!(e.internal.as_deref().unwrap_or_default().contains("is not the cloud's"), "{e:?}");
    }

    #[test]
    fn advertised_endpoints() {
        for good in ["10.0.0.12:8701", "host-b.example:8701", "[fd00::12]:8701"] {
            assert_eq!(check_endpoint(good), Ok(()), "{good}");
        }
        for bad in ["0.0.0.0:8701", "[::]:8701", "10.0.0.12", "10.0.0.12:0", ":8701", "h\x1b[31m:8701", "h b:8701", "10.0.0.12:99999"] {
            assert!(check_endpoint(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn subregion_names() {
        for good in ["eu-west-2a", "eu-west-2c", "us-east-2b"] {
            assert!(super::valid_subregion(good), "{good}");
        }
        for bad in ["", "a", "eu-west-2", "eu-west-2A", "eu-west-a", "eu--2a", "cloudgouv-eu-west-1a", "eu-west-2é"] {
            assert!(!super::valid_subregion(bad), "{bad}");
        }
    }
}

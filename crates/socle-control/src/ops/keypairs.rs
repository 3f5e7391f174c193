//! SSH keypairs: generated (ed25519; the private key is returned once and
//! never stored) or imported (OpenSSH public keys: ed25519, RSA, ECDSA).

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use md5::{Digest, Md5};
use socle_store::keypairs::{self as keypair_store, KeypairRow};
use socle_store::listing::Listing;
use socle_store::{now_iso, tags as tag_store};
use socle_types::error::ErrorCode;
use socle_types::ids::KeypairId;
use socle_types::osc::*;
use socle_types::ApiError;

use super::{is_dry_run, read_page, write};
use crate::paging::{page_request, reject_unsupported_filters};
use crate::{Caller, Cloud};

fn validate_name(name: &str) -> Result<(), ApiError> {
    if name.is_empty() || name.len() > 255 || !name.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(ApiError::new(
            ErrorCode::InvalidParameterValue,
            "KeypairName must be 1 to 255 printable ASCII characters",
        ));
    }
    Ok(())
}

/// RFC 4716 section 4 fingerprint: MD5 of the key blob, colon-separated hex.
fn fingerprint(key: &ssh_key::PublicKey) -> Result<String, ApiError> {
    let blob = key.to_bytes().map_err(|e| ApiError::internal(e.to_string()))?;
    let digest = Md5::digest(&blob);
    Ok(digest.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":"))
}

/// Decodes `PublicKey` (base64 of an OpenSSH public key line).
fn parse_imported(b64: &str) -> Result<ssh_key::PublicKey, ApiError> {
    let bad = |why: &str| ApiError::invalid_value(format!("PublicKey is not usable: {why}"));
    let raw = STANDARD.decode(b64.trim()).map_err(|_| bad("it must be the Base64 encoding of an OpenSSH public key"))?;
    let text = String::from_utf8(raw).map_err(|_| bad("not text"))?;
    let key = ssh_key::PublicKey::from_openssh(text.trim())
        .map_err(|_| bad("expected an OpenSSH public key line such as 'ssh-ed25519 AAAA… comment'"))?;
    match key.algorithm() {
        ssh_key::Algorithm::Ed25519 | ssh_key::Algorithm::Rsa { .. } | ssh_key::Algorithm::Ecdsa { .. } => Ok(key),
        other => Err(bad(&format!("key type {} is not accepted (use ed25519, RSA or ECDSA)", other.as_str()))),
    }
}

fn keypair_view(row: &KeypairRow, tags: Vec<ResourceTag>) -> Keypair {
    Keypair {
        keypair_fingerprint: Some(row.fingerprint.clone()),
        keypair_id: Some(row.keypair_id.to_string()),
        keypair_name: Some(row.name.clone()),
        keypair_type: Some(row.key_type.clone()),
        tags: Some(tags),
    }
}

pub async fn create_keypair(
    cloud: &Arc<Cloud>,
    caller: &Caller,
    req: CreateKeypairRequest,
) -> Result<CreateKeypairResponse, ApiError> {
    validate_name(&req.keypair_name)?;
    let (public, private_pem) = match &req.public_key {
        Some(b64) => (parse_imported(b64)?, None),
        None => {
            let private = ssh_key::PrivateKey::random(&mut rand::rngs::OsRng, ssh_key::Algorithm::Ed25519)
                .map_err(|e| ApiError::internal(format!("key generation: {e}")))?;
            let pem = private
                .to_openssh(ssh_key::LineEnding::LF)
                .map_err(|e| ApiError::internal(format!("key encoding: {e}")))?;
            (private.public_key().clone(), Some(pem.to_string()))
        }
    };
    let row = KeypairRow {
        keypair_id: KeypairId::generate(),
        account_id: caller.account_id.clone(),
        name: req.keypair_name.clone(),
        key_type: public.algorithm().as_str().to_string(),
        fingerprint: fingerprint(&public)?,
        public_key: public.to_openssh().map_err(|e| ApiError::internal(e.to_string()))?,
        created_at: now_iso(),
    };
    let stored = row.clone();
    write(cloud, req.dry_run, move |tx| {
        let duplicate = || {
            ApiError::new(
                ErrorCode::DuplicateKey,
                format!("a keypair named {:?} already exists in this account", stored.name),
            )
        };
        if keypair_store::get_by_name(tx, &stored.account_id, &stored.name)?.is_some() {
            return Err(duplicate());
        }
        keypair_store::insert(tx, &stored).map_err(|e| if e.is_unique_violation() { duplicate() } else { e.into() })
    })
    .await?;
    if is_dry_run(req.dry_run) {
        return Ok(CreateKeypairResponse::default());
    }
    Ok(CreateKeypairResponse {
        keypair: Some(KeypairCreated {
            keypair_fingerprint: Some(row.fingerprint),
            keypair_id: Some(row.keypair_id.to_string()),
            keypair_name: Some(row.name),
            keypair_type: Some(row.key_type),
            private_key: private_pem,
            tags: Some(vec![]),
        }),
        ..Default::default()
    })
}

pub async fn read_keypairs(
    cloud: &Arc<Cloud>,
    caller: &Caller,
    req: ReadKeypairsRequest,
) -> Result<ReadKeypairsResponse, ApiError> {
    reject_unsupported_filters(
        &req.filters,
        &["KeypairFingerprints", "KeypairIds", "KeypairNames", "KeypairTypes", "TagKeys", "TagValues", "Tags"],
    )?;
    let f = req.filters.unwrap_or_default();
    let mut listing = Listing::new("keypairs", "keypair_id", caller.account_id.as_str());
    listing
        .any_of("fingerprint", f.keypair_fingerprints.as_deref())
        .any_of("keypair_id", f.keypair_ids.as_deref())
        .any_of("name", f.keypair_names.as_deref())
        .any_of("key_type", f.keypair_types.as_deref())
        .tags(f.tag_keys.as_deref(), f.tag_values.as_deref(), f.tags.as_deref());
    let page = page_request(req.next_page_token.as_deref(), req.results_per_page)?;
    let (keypairs, next) = read_page(cloud, &caller.account_id, listing, keypair_store::page, page, |r| (r.keypair_id.as_str(), &r.created_at), |_, r, t| {
        Ok(keypair_view(&r, t))
    })
    .await?;
    Ok(ReadKeypairsResponse {
        keypairs: Some(keypairs),
        next_page_token: next,
        ..Default::default()
    })
}

pub async fn delete_keypair(
    cloud: &Arc<Cloud>,
    caller: &Caller,
    req: DeleteKeypairRequest,
) -> Result<DeleteKeypairResponse, ApiError> {
    let id = req.keypair_id.as_deref().map(KeypairId::parse).transpose()?;
    if id.is_none() && req.keypair_name.is_none() {
        return Err(ApiError::missing("KeypairName or KeypairId"));
    }
    let name = req.keypair_name.clone();
    let account = caller.account_id.clone();
    write(cloud, req.dry_run, move |tx| {
        let found = match (&id, &name) {
            (Some(id), _) => keypair_store::get(tx, &account, id)?,
            (None, Some(name)) => keypair_store::get_by_name(tx, &account, name)?,
            (None, None) => None,
        };
        let shown = id.as_ref().map(|i| i.to_string()).or(name.clone()).unwrap_or_default();
        let row = found
            .filter(|r| name.as_ref().is_none_or(|n| *n == r.name))
            .ok_or_else(|| ApiError::not_found(ErrorCode::NoSuchKeypair, "keypair", &shown))?;
        keypair_store::delete(tx, &account, &row.keypair_id)?;
        tag_store::delete_all_for_resource(tx, row.keypair_id.as_str())?;
        Ok(())
    })
    .await?;
    Ok(DeleteKeypairResponse::default())
}

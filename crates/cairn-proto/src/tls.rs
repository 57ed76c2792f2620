//! TLS 1.3 (rustls, aws-lc) on every connection between Cairn processes.
//!
//! The cluster's CA is derived from the cluster secret: its Ed25519 key is
//! made from a key derived from the secret, so every meta and storage node
//! has the same CA without copying files, and each issues itself a
//! certificate for [`SERVER_NAME`] with a fresh key at start. Clients hold
//! the CA's certificate (in their credential file, written by meta and by
//! `cairn key create --native`) and accept only servers it signed. Clients
//! carry no certificate: they prove themselves inside the encrypted
//! channel with the challenge-response of the handshake.

use crate::auth::ClusterSecret;
use cairn_types::{Error, Result};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// The name every cluster server's certificate carries: servers are
/// reached by address, and every holder of the cluster secret is equally
/// trusted, so the name only says "a server of this cluster".
pub const SERVER_NAME: &str = "cluster.cairn";

/// Whether this process speaks TLS: 0 not decided yet, 1 on, 2 off.
/// `--tls off` (or `CAIRN_TLS=off` in the environment, which embedders
/// such as the Python package read too) turns it off, for a trusted
/// network; both ends must agree.
static STATE: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

pub fn set_enabled(on: bool) {
    STATE.store(if on { 1 } else { 2 }, std::sync::atomic::Ordering::Relaxed);
}

pub fn enabled() -> bool {
    match STATE.load(std::sync::atomic::Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => {
            let on = std::env::var("CAIRN_TLS").map_or(true, |v| !v.eq_ignore_ascii_case("off"));
            set_enabled(on);
            on
        }
    }
}

/// aws-lc with AES-128-GCM first: 10 AES rounds instead of 14, about a
/// third less CPU per byte than AES-256-GCM, and as strong as TLS needs.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    use rustls::crypto::aws_lc_rs::cipher_suite;
    let mut p = rustls::crypto::aws_lc_rs::default_provider();
    p.cipher_suites = vec![
        cipher_suite::TLS13_AES_128_GCM_SHA256,
        cipher_suite::TLS13_AES_256_GCM_SHA384,
        cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
    ];
    Arc::new(p)
}

fn tls_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::internal(format!("{what}: {e}"))
}

fn ca_key(secret: &ClusterSecret) -> Result<rcgen::KeyPair> {
    // PKCS#8 v1 of an Ed25519 key (RFC 8410): a fixed prefix, the seed.
    let seed = blake3::derive_key("cairn 2026 cluster CA key v1", &secret.bytes());
    let mut der = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    der.extend_from_slice(&seed);
    rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
        &PrivatePkcs8KeyDer::from(der),
        &rcgen::PKCS_ED25519,
    )
    .map_err(|e| tls_err("cluster CA key", e))
}

fn ca_params() -> rcgen::CertificateParams {
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "Cairn cluster CA");
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    p.serial_number = Some(rcgen::SerialNumber::from(1u64));
    p
}

/// The CA certificate of the cluster with this secret (DER), the one its
/// clients trust.
pub fn ca_cert(secret: &ClusterSecret) -> Result<Vec<u8>> {
    static CACHE: OnceLock<Mutex<HashMap<[u8; 32], Vec<u8>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let fp = secret.fingerprint();
    if let Some(der) = cache.lock().unwrap().get(&fp) {
        return Ok(der.clone());
    }
    let cert = ca_params()
        .self_signed(&ca_key(secret)?)
        .map_err(|e| tls_err("cluster CA certificate", e))?;
    let der = cert.der().to_vec();
    cache.lock().unwrap().insert(fp, der.clone());
    Ok(der)
}

/// The server side of this process: a certificate for [`SERVER_NAME`]
/// with a fresh key, signed by the cluster CA.
pub fn server_config(secret: &ClusterSecret) -> Result<Arc<rustls::ServerConfig>> {
    let leaf_key =
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).map_err(|e| tls_err("server key", e))?;
    let mut params = rcgen::CertificateParams::new(vec![SERVER_NAME.to_string()])
        .map_err(|e| tls_err("server certificate", e))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, SERVER_NAME);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let ca_key = ca_key(secret)?;
    let issuer = rcgen::Issuer::new(ca_params(), ca_key);
    let leaf = params
        .signed_by(&leaf_key, &issuer)
        .map_err(|e| tls_err("server certificate", e))?;
    let chain = vec![leaf.der().clone(), CertificateDer::from(ca_cert(secret)?)];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| tls_err("TLS", e))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| tls_err("server certificate", e))?;
    Ok(Arc::new(cfg))
}

/// A client of the cluster whose CA certificate is `ca` (DER).
pub fn client_config(ca: &[u8]) -> Result<Arc<rustls::ClientConfig>> {
    static CACHE: OnceLock<Mutex<HashMap<Vec<u8>, Arc<rustls::ClientConfig>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(c) = cache.lock().unwrap().get(ca) {
        return Ok(c.clone());
    }
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(ca.to_vec()))
        .map_err(|e| Error::invalid(format!("the cluster CA certificate is not valid: {e}")))?;
    let cfg = Arc::new(
        rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| tls_err("TLS", e))?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let mut c = cache.lock().unwrap();
    if c.len() > 64 {
        c.clear();
    }
    c.insert(ca.to_vec(), cfg.clone());
    Ok(cfg)
}

pub fn server_name() -> ServerName<'static> {
    ServerName::try_from(SERVER_NAME).expect("a valid DNS name")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_follows_from_the_secret() {
        let s = ClusterSecret::generate();
        let a = ca_key(&s).unwrap().public_key_raw().to_vec();
        let b = ca_key(&s).unwrap().public_key_raw().to_vec();
        assert_eq!(a, b);
        let other = ca_key(&ClusterSecret::generate())
            .unwrap()
            .public_key_raw()
            .to_vec();
        assert_ne!(a, other);
        assert!(server_config(&s).is_ok());
        assert!(client_config(&ca_cert(&s).unwrap()).is_ok());
        assert!(client_config(b"not a certificate").is_err());
    }
}

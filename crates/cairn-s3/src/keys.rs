//! Access keys. Each key is a small JSON file `/.cairn/s3/keys/<access-key>`
//! in the namespace itself, so every gateway of a cluster sees the same keys
//! and a key made with `cairn key create` works at once (within the cache
//! lifetime for changes to an existing key).

use crate::names::{is_bucket_name, SYSTEM_DIR};
use cairn_client::{Client, PutOptions};
use cairn_types::{CairnPath, ErrorKind, Result, Version};
use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::{S3Auth, SecretKey};
use s3s::{s3_error, S3Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a looked-up key (or its absence) is trusted.
const CACHE_TTL: Duration = Duration::from_secs(5);

/// One access key as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRecord {
    pub name: String,
    pub access_key: String,
    pub secret_key: String,
    #[serde(default)]
    pub read_only: bool,
    /// Only this bucket, when set.
    #[serde(default)]
    pub bucket: Option<String>,
}

impl KeyRecord {
    /// Whether this key may run `op` (an S3 operation name) on `bucket`.
    pub fn allows(&self, op: &str, bucket: Option<&str>) -> bool {
        let reads = ["Get", "Head", "List"].iter().any(|p| op.starts_with(p));
        if self.read_only && !reads {
            return false;
        }
        match (&self.bucket, bucket) {
            (Some(only), Some(b)) => only == b,
            // Restricted keys may list buckets (they see only theirs) but
            // not create or drop any other.
            (Some(_), None) => op == "ListBuckets",
            (None, _) => true,
        }
    }
}

pub fn keys_dir() -> CairnPath {
    CairnPath::parse(&format!("/{SYSTEM_DIR}/s3/keys")).expect("valid path")
}

fn key_path(access_key: &str) -> Result<CairnPath> {
    keys_dir().join(access_key)
}

/// Random characters from the OS's CSPRNG (secrets must not be guessable).
fn random_string(len: usize, alphabet: &[u8]) -> Result<String> {
    let mut bytes = vec![0u8; len];
    getrandom::getrandom(&mut bytes)
        .map_err(|e| cairn_types::Error::internal(format!("no randomness from the OS: {e}")))?;
    Ok(bytes
        .iter()
        .map(|b| alphabet[*b as usize % alphabet.len()] as char)
        .collect())
}

/// Make a new key and store it. The access key is `CK` + 18 upper-case
/// letters and digits, the secret 40 characters, as AWS's look.
pub async fn create_key(
    client: &Client,
    name: &str,
    read_only: bool,
    bucket: Option<String>,
) -> Result<KeyRecord> {
    if let Some(b) = &bucket {
        if !is_bucket_name(b) {
            return Err(cairn_types::Error::invalid(format!(
                "{b:?} is not a valid bucket name"
            )));
        }
    }
    let rec = KeyRecord {
        name: name.to_string(),
        access_key: format!(
            "CK{}",
            random_string(18, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")?
        ),
        secret_key: random_string(
            40,
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
        )?,
        read_only,
        bucket,
    };
    client.mkdir(&keys_dir(), true).await?;
    let json = serde_json::to_vec_pretty(&rec).expect("serialisable");
    let opts = PutOptions {
        expected: Some(Version(0)),
        mode: Some(0o600),
        ..PutOptions::default()
    };
    client
        .put_bytes(&key_path(&rec.access_key)?, &json, opts)
        .await?;
    Ok(rec)
}

/// Every S3 key of the cluster.
pub async fn list_keys(client: &Client) -> Result<Vec<KeyRecord>> {
    let entries = match client.list_all(&keys_dir()).await {
        Ok(e) => e,
        Err(e) if e.kind == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        let path = keys_dir().join(&e.name)?;
        let bytes = client.get_bytes(&path).await?;
        out.push(serde_json::from_slice::<KeyRecord>(&bytes).map_err(|e| {
            cairn_types::Error::corrupt(format!("key file {path} is not valid: {e}"))
        })?);
    }
    Ok(out)
}

/// Remove the S3 keys named `name` (or whose access key it is); returns
/// those removed. Gateways refuse them once their cache of the key lapses.
pub async fn delete_keys(client: &Client, name: &str) -> Result<Vec<KeyRecord>> {
    let mut gone = Vec::new();
    for k in list_keys(client).await? {
        if k.name == name || k.access_key == name {
            client.remove(&key_path(&k.access_key)?, false).await?;
            gone.push(k);
        }
    }
    Ok(gone)
}

/// Looks keys up in the namespace, with a short cache.
pub struct KeyStore {
    client: Client,
    cache: Mutex<HashMap<String, (Instant, Option<KeyRecord>)>>,
}

impl KeyStore {
    pub fn new(client: Client) -> KeyStore {
        KeyStore {
            client,
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub async fn get(&self, access_key: &str) -> Result<Option<KeyRecord>> {
        if let Some((at, rec)) = self.cache.lock().unwrap().get(access_key) {
            if at.elapsed() < CACHE_TTL {
                return Ok(rec.clone());
            }
        }
        let rec = match key_path(access_key) {
            Err(_) => None,
            Ok(path) => match self.client.get_bytes(&path).await {
                Ok(bytes) => Some(serde_json::from_slice::<KeyRecord>(&bytes).map_err(|e| {
                    cairn_types::Error::corrupt(format!("key file {path} is not valid: {e}"))
                })?),
                Err(e) if e.kind == ErrorKind::NotFound => None,
                Err(e) => return Err(e),
            },
        };
        let mut cache = self.cache.lock().unwrap();
        if cache.len() > 10_000 {
            cache.clear();
        }
        cache.insert(access_key.to_string(), (Instant::now(), rec.clone()));
        Ok(rec)
    }
}

/// The key store as s3s's authentication and access-control provider.
pub struct Auth(pub std::sync::Arc<KeyStore>);

#[async_trait::async_trait]
impl S3Auth for Auth {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        match self.0.get(access_key).await {
            Ok(Some(rec)) => Ok(SecretKey::from(rec.secret_key)),
            Ok(None) => Err(s3_error!(
                InvalidAccessKeyId,
                "the access key does not exist; make one with 'cairn key create NAME'"
            )),
            Err(e) => Err(crate::error::s3_err(e, crate::error::Missing::Key)),
        }
    }
}

#[async_trait::async_trait]
impl S3Access for Auth {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        let Some(creds) = cx.credentials() else {
            return Err(s3_error!(
                AccessDenied,
                "anonymous requests are not allowed"
            ));
        };
        let rec = match self.0.get(&creds.access_key).await {
            Ok(Some(rec)) => rec,
            Ok(None) => return Err(s3_error!(InvalidAccessKeyId)),
            Err(e) => return Err(crate::error::s3_err(e, crate::error::Missing::Key)),
        };
        let op = cx.s3_op().name().to_string();
        let bucket = cx.s3_path().get_bucket_name().map(str::to_string);
        if !rec.allows(&op, bucket.as_deref()) {
            return Err(s3_error!(
                AccessDenied,
                "key {:?} may not {op}{}",
                rec.name,
                bucket
                    .map(|b| format!(" in bucket {b}"))
                    .unwrap_or_default()
            ));
        }
        cx.extensions_mut().insert(rec);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rights() {
        let mut k = KeyRecord {
            name: "k".into(),
            access_key: "a".into(),
            secret_key: "s".into(),
            read_only: true,
            bucket: None,
        };
        assert!(k.allows("GetObject", Some("b")));
        assert!(k.allows("ListBuckets", None));
        assert!(!k.allows("PutObject", Some("b")));
        k.read_only = false;
        k.bucket = Some("b".into());
        assert!(k.allows("PutObject", Some("b")));
        assert!(!k.allows("PutObject", Some("c")));
        assert!(!k.allows("CreateBucket", None));
    }
}

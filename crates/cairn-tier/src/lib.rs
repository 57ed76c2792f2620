//! Remote stores: S3-compatible buckets that hold offloaded chunks (the
//! `tier=remote:NAME` and `cold_after=` cues), through OpenDAL's S3 service.
//!
//! A store is named on meta's and every node's command line as
//! `NAME=s3://BUCKET/PREFIX?endpoint=URL&region=R&creds=FILE`. Each
//! offloaded chunk is one object, `PREFIX/chunks/<chunk id in hex>`, holding
//! the chunk's bytes exactly: whole chunks rather than blocks or shards, so a
//! read-through is one GET and an object store's own redundancy is not paid
//! for twice (an erasure-coded stripe would go as its decoded bytes).
//!
//! The store is not trusted: every object read back is checked against the
//! chunk's block checksums by the caller before a byte of it is served or
//! kept.

use bytes::Bytes;
use cairn_types::{ChunkId, Error, ErrorKind, Result};
use opendal::Operator;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// One request to a remote store waits this long at most.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Where objects of offloaded chunks go under a store's prefix.
const CHUNKS_DIR: &str = "chunks/";

/// A remote store as given on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TierSpec {
    pub name: String,
    pub bucket: String,
    /// Key prefix inside the bucket, without leading or trailing `/`.
    pub prefix: String,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// A file with `access_key_id=` and `secret_access_key=` lines (the
    /// AWS environment variables otherwise).
    pub creds: Option<PathBuf>,
}

impl std::str::FromStr for TierSpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<TierSpec> {
        let usage = || {
            Error::invalid(format!(
                "--tier {s:?}: use NAME=s3://BUCKET[/PREFIX][?endpoint=URL&region=R&creds=FILE]"
            ))
        };
        let (name, url) = s.split_once('=').ok_or_else(usage)?;
        let name = cairn_types::check_tier_name(name.trim())?.to_string();
        let rest = url.trim().strip_prefix("s3://").ok_or_else(usage)?;
        let (loc, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (bucket, prefix) = loc.split_once('/').unwrap_or((loc, ""));
        if bucket.is_empty() {
            return Err(usage());
        }
        let mut spec = TierSpec {
            name,
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
            endpoint: None,
            region: None,
            creds: None,
        };
        for kv in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = kv.split_once('=').ok_or_else(usage)?;
            match k {
                "endpoint" => spec.endpoint = Some(v.to_string()),
                "region" => spec.region = Some(v.to_string()),
                "creds" => spec.creds = Some(PathBuf::from(v)),
                _ => {
                    return Err(Error::invalid(format!(
                        "--tier {s:?}: unknown setting {k:?} (endpoint, region, creds)"
                    )))
                }
            }
        }
        Ok(spec)
    }
}

impl std::fmt::Display for TierSpec {
    /// Where the store is, for messages (never the credentials).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (s3://{}/{}", self.name, self.bucket, self.prefix)?;
        if let Some(e) = &self.endpoint {
            write!(f, " at {e}")?;
        }
        f.write_str(")")
    }
}

/// Access keys from a `creds=` file: `access_key_id=…` and
/// `secret_access_key=…` lines (`aws_` prefixes and `:` accepted).
fn read_creds(path: &std::path::Path) -> Result<(String, String)> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::from(e).context(format!("reading tier credentials {}", path.display()))
    })?;
    let (mut id, mut secret) = (None, None);
    for line in text.lines() {
        let Some((k, v)) = line.split_once(['=', ':']) else {
            continue;
        };
        let k = k.trim().to_ascii_lowercase();
        let v = v.trim().to_string();
        match k.trim_start_matches("aws_") {
            "access_key_id" => id = Some(v),
            "secret_access_key" => secret = Some(v),
            _ => {}
        }
    }
    match (id, secret) {
        (Some(i), Some(s)) => Ok((i, s)),
        _ => Err(Error::invalid(format!(
            "tier credentials {}: need access_key_id= and secret_access_key= lines",
            path.display()
        ))),
    }
}

/// A connected remote store.
pub struct RemoteStore {
    pub spec: TierSpec,
    op: Operator,
}

impl RemoteStore {
    /// Build the store's client (no request is sent: see [`Self::check`]).
    pub fn new(spec: TierSpec) -> Result<RemoteStore> {
        // The process-wide HTTP client (reqwest, rustls); idempotent.
        opendal::install_default();
        let mut b = opendal::services::S3::default()
            .bucket(&spec.bucket)
            .root(&format!("/{}", spec.prefix))
            .region(spec.region.as_deref().unwrap_or("us-east-1"))
            // Only what the command line and the environment say: no
            // profile files, no instance metadata probes.
            .disable_config_load();
        if let Some(e) = &spec.endpoint {
            b = b.endpoint(e);
        }
        let keys = match &spec.creds {
            Some(p) => Some(read_creds(p)?),
            None => match (
                std::env::var("AWS_ACCESS_KEY_ID"),
                std::env::var("AWS_SECRET_ACCESS_KEY"),
            ) {
                (Ok(i), Ok(s)) => Some((i, s)),
                _ => None,
            },
        };
        b = match &keys {
            Some((id, secret)) => b.access_key_id(id).secret_access_key(secret),
            None => b.skip_signature(),
        };
        if spec.creds.is_none() {
            if let Ok(t) = std::env::var("AWS_SESSION_TOKEN") {
                b = b.session_token(&t);
            }
        }
        let op =
            Operator::new(b).map_err(|e| Error::invalid(format!("remote store {spec}: {e}")))?;
        Ok(RemoteStore { spec, op })
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    fn key(chunk: ChunkId) -> String {
        format!("{CHUNKS_DIR}{chunk}")
    }

    fn err(&self, what: &str, e: opendal::Error) -> Error {
        let kind = match e.kind() {
            opendal::ErrorKind::NotFound => ErrorKind::NotFound,
            opendal::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
            opendal::ErrorKind::ConfigInvalid => ErrorKind::InvalidInput,
            _ => ErrorKind::Unavailable,
        };
        Error::new(kind, format!("remote store {}: {what}: {e}", self.spec))
    }

    async fn timed<T>(
        &self,
        what: &str,
        f: impl std::future::Future<Output = opendal::Result<T>>,
    ) -> Result<T> {
        match tokio::time::timeout(REQUEST_TIMEOUT, f).await {
            Ok(r) => r.map_err(|e| self.err(what, e)),
            Err(_) => Err(Error::unavailable(format!(
                "remote store {}: {what}: no answer within {}s",
                self.spec,
                REQUEST_TIMEOUT.as_secs()
            ))),
        }
    }

    /// Whether the store answers and the credentials are taken: lists the
    /// chunks directory (one page).
    pub async fn check(&self) -> Result<()> {
        self.timed("checking access", async {
            self.op.list_with(CHUNKS_DIR).limit(1).await.map(|_| ())
        })
        .await
    }

    pub async fn put(&self, chunk: ChunkId, data: Bytes) -> Result<()> {
        let what = format!("storing chunk {chunk}");
        self.timed(&what, async {
            self.op.write(&Self::key(chunk), data).await.map(|_| ())
        })
        .await
    }

    /// The whole object of `chunk`: NotFound if the store has none.
    pub async fn get(&self, chunk: ChunkId) -> Result<Bytes> {
        let what = format!("reading chunk {chunk}");
        let buf = self
            .timed(&what, async { self.op.read(&Self::key(chunk)).await })
            .await?;
        Ok(buf.to_bytes())
    }

    /// Delete the object of `chunk` (gone already is fine).
    pub async fn delete(&self, chunk: ChunkId) -> Result<()> {
        let what = format!("deleting chunk {chunk}");
        self.timed(&what, async { self.op.delete(&Self::key(chunk)).await })
            .await
    }

    /// Every chunk object in the store, with its size; objects under the
    /// chunks directory whose names are not chunk ids are listed apart.
    pub async fn list(&self) -> Result<(BTreeMap<ChunkId, u64>, Vec<String>)> {
        let entries = self
            .timed("listing chunks", async {
                self.op.list_with(CHUNKS_DIR).recursive(true).await
            })
            .await?;
        let (mut chunks, mut other) = (BTreeMap::new(), Vec::new());
        for e in entries {
            if e.metadata().is_dir() {
                continue;
            }
            let name = e.path().strip_prefix(CHUNKS_DIR).unwrap_or(e.path());
            match name.parse::<ChunkId>() {
                Ok(c) if name.len() == 32 => {
                    chunks.insert(c, e.metadata().content_length());
                }
                _ => other.push(e.path().to_string()),
            }
        }
        Ok((chunks, other))
    }
}

/// The remote stores a process knows, by name; the first given is the
/// default for `cold_after=` without `tier=remote:NAME`.
#[derive(Clone, Default)]
pub struct Tiers {
    stores: BTreeMap<String, Arc<RemoteStore>>,
    first: Option<String>,
}

impl std::fmt::Debug for Tiers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.stores.values().map(|s| s.spec.to_string()))
            .finish()
    }
}

impl Tiers {
    pub fn new(specs: Vec<TierSpec>) -> Result<Tiers> {
        let mut t = Tiers::default();
        for s in specs {
            if t.stores.contains_key(&s.name) {
                return Err(Error::invalid(format!("--tier {} is given twice", s.name)));
            }
            t.first.get_or_insert_with(|| s.name.clone());
            t.stores
                .insert(s.name.clone(), Arc::new(RemoteStore::new(s)?));
        }
        Ok(t)
    }

    pub fn is_empty(&self) -> bool {
        self.stores.is_empty()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.stores.keys().map(String::as_str)
    }

    pub fn default_name(&self) -> Option<&str> {
        self.first.as_deref()
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<RemoteStore>> {
        self.stores.values()
    }

    /// The store `name`, or a clear error naming the ones there are.
    pub fn get(&self, name: &str) -> Result<&Arc<RemoteStore>> {
        self.stores.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.names().collect();
            Error::not_found(format!(
                "no remote store {name:?} here (given with --tier: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ))
        })
    }

    /// Check every store once; each failure is returned with its store.
    pub async fn check_all(&self) -> Vec<(String, Error)> {
        let mut bad = Vec::new();
        for s in self.stores.values() {
            if let Err(e) = s.check().await {
                bad.push((s.name().to_string(), e));
            }
        }
        bad
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_bad_ones_say_why() {
        let s: TierSpec = "cold=s3://bkt/some/prefix/?endpoint=http://127.0.0.1:9000&region=eu-1"
            .parse()
            .unwrap();
        assert_eq!(
            (s.name.as_str(), s.bucket.as_str(), s.prefix.as_str()),
            ("cold", "bkt", "some/prefix")
        );
        assert_eq!(s.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(s.region.as_deref(), Some("eu-1"));
        let bare: TierSpec = "a=s3://b".parse().unwrap();
        assert_eq!((bare.prefix.as_str(), bare.endpoint.as_deref()), ("", None));
        for bad in [
            "cold",
            "cold=http://b",
            "cold=s3://",
            "c/d=s3://b",
            "cold=s3://b?color=red",
        ] {
            let e = bad.parse::<TierSpec>().unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidInput, "{bad}: {e}");
        }
        let twice = Tiers::new(vec![bare.clone(), bare]).err().unwrap();
        assert!(twice.message.contains("twice"), "{twice}");
    }

    #[test]
    fn creds_files_are_read_and_incomplete_ones_refused() {
        let d = std::env::temp_dir().join(format!("cairn-tier-creds-{}", std::process::id()));
        std::fs::write(&d, "# keys\naws_access_key_id = AK\nsecret_access_key=SK\n").unwrap();
        assert_eq!(read_creds(&d).unwrap(), ("AK".into(), "SK".into()));
        std::fs::write(&d, "access_key_id=AK\n").unwrap();
        assert_eq!(read_creds(&d).unwrap_err().kind, ErrorKind::InvalidInput);
        std::fs::remove_file(&d).unwrap();
        let e = read_creds(&d).unwrap_err();
        assert!(e.message.contains("tier credentials"), "{e}");
    }
}

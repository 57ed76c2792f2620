//! Which [`MetaStore`] a meta server runs on: the embedded redb file in its
//! data directory (the default), or an etcd cluster shared by several meta
//! servers. Parsed from `--store`.

use crate::store::MetaStore;
use crate::store_etcd::{EtcdConfig, EtcdStore};
use crate::store_redb::RedbStore;
use cairn_types::{Error, Result};
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

/// File name of the embedded store inside meta's data directory.
pub const EMBEDDED_FILE: &str = "meta.redb";

#[derive(Clone, Debug, Default)]
pub enum StoreSpec {
    /// redb at `DATA/meta.redb`.
    #[default]
    Embedded,
    /// `etcd://HOST:PORT[,HOST:PORT...][/prefix]`.
    Etcd(EtcdConfig),
}

impl StoreSpec {
    /// Open the store; `data_dir` is where the embedded one lives.
    pub async fn open(&self, data_dir: &Path) -> Result<Arc<dyn MetaStore>> {
        Ok(match self {
            StoreSpec::Embedded => {
                let db = data_dir.join(EMBEDDED_FILE);
                std::fs::create_dir_all(data_dir).map_err(|e| {
                    Error::from(e).context(format!("creating {}", data_dir.display()))
                })?;
                let store = tokio::task::spawn_blocking(move || {
                    RedbStore::open(&db)
                        .map_err(|e| e.context(format!("opening metadata store {}", db.display())))
                })
                .await
                .map_err(|e| Error::internal(format!("opening the metadata store: {e}")))??;
                Arc::new(store)
            }
            StoreSpec::Etcd(cfg) => Arc::new(EtcdStore::connect(cfg.clone()).await?),
        })
    }
}

impl FromStr for StoreSpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<StoreSpec> {
        if s.is_empty() || s == "embedded" {
            return Ok(StoreSpec::Embedded);
        }
        let Some(rest) = s.strip_prefix("etcd://") else {
            return Err(Error::invalid(format!(
                "unknown metadata store '{s}': use 'embedded' or \
                 etcd://HOST:PORT[,HOST:PORT...][/prefix]"
            )));
        };
        let (hosts, path) = match rest.split_once('/') {
            Some((h, p)) => (h, p),
            None => (rest, ""),
        };
        let endpoints: Vec<String> = hosts
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(str::to_string)
            .collect();
        if endpoints.is_empty() {
            return Err(Error::invalid(format!(
                "'{s}' names no etcd endpoint: use etcd://HOST:PORT[,HOST:PORT...][/prefix]"
            )));
        }
        if let Some(bad) = endpoints.iter().find(|h| !h.contains(':')) {
            return Err(Error::invalid(format!(
                "etcd endpoint '{bad}' has no port (etcd's client port is usually 2379)"
            )));
        }
        let path = path.trim_matches('/');
        let prefix = if path.is_empty() {
            EtcdConfig::DEFAULT_PREFIX.to_string()
        } else {
            format!("/{path}/")
        };
        Ok(StoreSpec::Etcd(EtcdConfig::new(endpoints, prefix)))
    }
}

impl fmt::Display for StoreSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreSpec::Embedded => f.write_str("embedded"),
            StoreSpec::Etcd(c) => write!(
                f,
                "etcd://{}{}",
                c.endpoints.join(","),
                String::from_utf8_lossy(&c.prefix).trim_end_matches('/')
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_store_urls() {
        assert!(matches!("".parse::<StoreSpec>(), Ok(StoreSpec::Embedded)));
        assert!(matches!(
            "embedded".parse::<StoreSpec>(),
            Ok(StoreSpec::Embedded)
        ));
        let StoreSpec::Etcd(c) = "etcd://a:2379,b:2379/prod/ns".parse().unwrap() else {
            panic!()
        };
        assert_eq!(c.endpoints, vec!["a:2379", "b:2379"]);
        assert_eq!(c.prefix, b"/prod/ns/");
        let StoreSpec::Etcd(c) = "etcd://10.0.0.1:2379".parse().unwrap() else {
            panic!()
        };
        assert_eq!(c.prefix, b"/cairn/");
        assert_eq!(StoreSpec::Etcd(c).to_string(), "etcd://10.0.0.1:2379/cairn");
        assert!("etcd://".parse::<StoreSpec>().is_err());
        assert!("etcd://host".parse::<StoreSpec>().is_err());
        assert!("redis://x:1".parse::<StoreSpec>().is_err());
    }
}

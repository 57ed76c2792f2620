//! How the CLI finds a cluster: flags, then `CAIRN_META` / `CAIRN_SECRET_FILE`,
//! then the client config `cairn server` writes for this user, then the
//! defaults of a local `cairn server` in `./cairn-data`.

use anyhow::{Context, Result};
use cairn_proto::Credentials;
use std::path::{Path, PathBuf};

pub const DEFAULT_META: &str = "127.0.0.1:7420";
pub const DEFAULT_DATA: &str = "cairn-data";

/// `~/.config/cairn/client.conf`: `meta = ADDR` and `secret_file = PATH`
/// lines. Plain `key = value` so that shells and people can read it.
pub fn client_conf_path() -> Option<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME") {
        return Some(PathBuf::from(x).join("cairn/client.conf"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config/cairn/client.conf"))
}

fn read_conf(path: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('"').to_string()))
        .collect()
}

pub fn write_client_conf(meta: &str, secret_file: &Path) -> Result<PathBuf> {
    let path =
        client_conf_path().context("no HOME or XDG_CONFIG_HOME to write the client config to")?;
    std::fs::create_dir_all(path.parent().unwrap())?;
    let abs = std::fs::canonicalize(secret_file).unwrap_or_else(|_| secret_file.to_path_buf());
    let text = format!(
        "# Written by 'cairn server'; the CLI reads it when --meta/CAIRN_META are not given.\nmeta = \"{meta}\"\nsecret_file = \"{}\"\n",
        abs.display()
    );
    std::fs::write(&path, text)?;
    Ok(path)
}

/// Meta addresses and credentials for a client command.
pub fn resolve(
    meta_flag: Option<String>,
    secret_flag: Option<PathBuf>,
) -> Result<(Vec<String>, Credentials)> {
    let conf = client_conf_path()
        .map(|p| read_conf(&p))
        .unwrap_or_default();
    let from_conf = |k: &str| conf.iter().find(|(ck, _)| ck == k).map(|(_, v)| v.clone());
    let meta = meta_flag
        .or_else(|| std::env::var("CAIRN_META").ok())
        .or_else(|| from_conf("meta"))
        .unwrap_or_else(|| DEFAULT_META.to_string());
    let secret = secret_flag
        .or_else(|| std::env::var_os("CAIRN_SECRET_FILE").map(PathBuf::from))
        .or_else(|| from_conf("secret_file").map(PathBuf::from))
        .unwrap_or_else(|| {
            Path::new(DEFAULT_DATA)
                .join("meta")
                .join(cairn_meta::server::CLIENT_KEY_FILE)
        });
    let creds = Credentials::load(&secret).map_err(|e| {
        anyhow::anyhow!(
            "{e}\nhint: pass --secret-file or set CAIRN_SECRET_FILE to the cluster's client.key \
             (a 'cairn server' writes it to DATA/meta/client.key)"
        )
    })?;
    let addrs = meta
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    Ok((addrs, creds))
}

use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Longest file name, in bytes, as in POSIX `NAME_MAX`.
pub const MAX_NAME_LEN: usize = 255;
/// Longest path, in bytes, as in POSIX `PATH_MAX`.
pub const MAX_PATH_LEN: usize = 4096;

/// A validated absolute path in the Cairn namespace: `/` or `/a/b/c`, no empty,
/// `.` or `..` components, no NUL, names of at most 255 bytes, at most 4096 bytes
/// in all. A single trailing `/` is accepted and dropped, and a missing leading
/// `/` is implied, because users type `data/x` as often as `/data/x`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CairnPath(String);

impl CairnPath {
    pub fn root() -> CairnPath {
        CairnPath("/".into())
    }

    pub fn parse(raw: &str) -> Result<CairnPath> {
        if raw.is_empty() {
            return Err(Error::invalid("empty path; use '/' for the root"));
        }
        if raw.len() > MAX_PATH_LEN {
            return Err(Error::invalid(format!(
                "path is {} bytes long; the limit is {MAX_PATH_LEN}",
                raw.len()
            )));
        }
        if raw.contains('\0') {
            return Err(Error::invalid(format!("path {raw:?} contains a NUL byte")));
        }
        let trimmed = raw.strip_prefix('/').unwrap_or(raw);
        let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
        if trimmed.is_empty() {
            return Ok(CairnPath::root());
        }
        for name in trimmed.split('/') {
            validate_name(name).map_err(|e| e.context(format!("path {raw:?}")))?;
        }
        Ok(CairnPath(format!("/{trimmed}")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_root(&self) -> bool {
        self.0 == "/"
    }

    /// The names from the root down; empty for the root.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/').filter(|c| !c.is_empty())
    }

    /// The parent directory and the last name; `None` for the root.
    pub fn split_last(&self) -> Option<(CairnPath, &str)> {
        if self.is_root() {
            return None;
        }
        let idx = self.0.rfind('/').expect("validated paths start with /");
        let parent = if idx == 0 {
            "/".to_string()
        } else {
            self.0[..idx].to_string()
        };
        Some((CairnPath(parent), &self.0[idx + 1..]))
    }

    pub fn join(&self, name: &str) -> Result<CairnPath> {
        validate_name(name)?;
        let joined = if self.is_root() {
            format!("/{name}")
        } else {
            format!("{}/{name}", self.0)
        };
        if joined.len() > MAX_PATH_LEN {
            return Err(Error::invalid(format!(
                "path {joined:?} is longer than {MAX_PATH_LEN} bytes"
            )));
        }
        Ok(CairnPath(joined))
    }

    /// Whether `self` is `other` or lies below it.
    pub fn starts_with(&self, other: &CairnPath) -> bool {
        other.is_root()
            || self.0 == other.0
            || (self.0.starts_with(&other.0) && self.0.as_bytes().get(other.0.len()) == Some(&b'/'))
    }
}

/// Check one directory-entry name.
pub fn validate_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::invalid("empty name (two '/' in a row?)"));
    }
    if name == "." || name == ".." {
        return Err(Error::invalid(format!("'{name}' is not allowed as a name")));
    }
    if name.contains('/') || name.contains('\0') {
        return Err(Error::invalid(format!("name {name:?} contains '/' or NUL")));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(Error::invalid(format!(
            "name is {} bytes long; the limit is {MAX_NAME_LEN}",
            name.len()
        )));
    }
    Ok(())
}

impl fmt::Display for CairnPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for CairnPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl std::str::FromStr for CairnPath {
    type Err = Error;
    fn from_str(s: &str) -> Result<CairnPath> {
        CairnPath::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_and_normalises() {
        assert_eq!(CairnPath::parse("/").unwrap().as_str(), "/");
        assert_eq!(CairnPath::parse("a/b").unwrap().as_str(), "/a/b");
        assert_eq!(CairnPath::parse("/a/b/").unwrap().as_str(), "/a/b");
        let p = CairnPath::parse("/a/b/c").unwrap();
        let (parent, name) = p.split_last().unwrap();
        assert_eq!((parent.as_str(), name), ("/a/b", "c"));
        assert_eq!(
            CairnPath::parse("/a")
                .unwrap()
                .split_last()
                .unwrap()
                .0
                .as_str(),
            "/"
        );
        assert!(p.starts_with(&CairnPath::parse("/a").unwrap()));
        assert!(!CairnPath::parse("/ab")
            .unwrap()
            .starts_with(&CairnPath::parse("/a").unwrap()));
    }

    #[test]
    fn refuses_bad_paths() {
        for bad in ["", "/a//b", "/a/./b", "/a/../b", "/..", "a\0b"] {
            let e = CairnPath::parse(bad).unwrap_err();
            assert_eq!(e.kind, crate::ErrorKind::InvalidInput, "{bad:?}");
        }
        assert!(CairnPath::parse(&format!("/{}", "x".repeat(256))).is_err());
        assert!(CairnPath::parse(&format!("/{}", "x".repeat(255))).is_ok());
        let long = "/abcdefgh".repeat(460);
        assert!(long.len() > MAX_PATH_LEN);
        assert!(CairnPath::parse(&long).is_err());
    }

    proptest! {
        #[test]
        fn parse_is_idempotent(names in proptest::collection::vec("[a-zA-Z0-9 ._-]{1,20}", 0..8)) {
            let raw = format!("/{}", names.join("/"));
            if let Ok(p) = CairnPath::parse(&raw) {
                prop_assert_eq!(CairnPath::parse(p.as_str()).unwrap(), p.clone());
                prop_assert_eq!(p.components().count(), names.len());
            } else {
                prop_assert!(names.iter().any(|n| n == "." || n == ".."));
            }
        }
    }
}

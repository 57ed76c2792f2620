//! Bucket names and object keys to Cairn paths. A bucket is a top-level
//! directory; a key `a/b/c` is the file `/<bucket>/a/b/c`. Keys that have no
//! faithful path (empty components as in `a//b`, `.` or `..` components, a
//! trailing `/`, a leading `/`) are refused, never rewritten.

use cairn_types::{CairnPath, Cues};
use s3s::{s3_error, S3Result};

/// Top-level directory the gateway keeps its own state in (keys, uploads).
/// Its name is not a valid bucket name, so it is never listed as one.
pub use cairn_types::SYSTEM_DIR;

/// Where uploads are staged before they are moved to their key.
pub fn staging_dir() -> CairnPath {
    CairnPath::parse(&format!("/{SYSTEM_DIR}/s3/staging")).expect("valid path")
}

pub fn bucket_path(bucket: &str) -> S3Result<CairnPath> {
    if !s3s::path::check_bucket_name(bucket) || bucket.starts_with('.') {
        return Err(s3_error!(
            InvalidBucketName,
            "{bucket:?} is not a valid bucket name"
        ));
    }
    CairnPath::root()
        .join(bucket)
        .map_err(|e| s3_error!(InvalidBucketName, "{e}"))
}

/// Whether a top-level directory name is shown as a bucket.
pub fn is_bucket_name(name: &str) -> bool {
    s3s::path::check_bucket_name(name) && !name.starts_with('.')
}

/// The file an object key names. Cue components in the key
/// (`logs/.cue/rep=2/x`, `.maxtime=250/x`) are checked and dropped: they
/// address the same object as the key without them (see [`object_cues`]).
pub fn object_path(bucket: &str, key: &str) -> S3Result<CairnPath> {
    Ok(object_path_cued(bucket, key)?.0)
}

/// [`object_path`] and the cues written in the key.
pub fn object_path_cued(bucket: &str, key: &str) -> S3Result<(CairnPath, Cues)> {
    check_key(key)?;
    let (clean, cues) = cairn_types::split_path_cues(&format!("/{key}"))
        .map_err(|e| s3_error!(InvalidArgument, "key {key:?}: {}", e.message))?;
    if clean.is_root() {
        return Err(s3_error!(
            InvalidArgument,
            "key {key:?} is only cues; it names no object"
        ));
    }
    let mut p = bucket_path(bucket)?;
    for c in clean.components() {
        p = p
            .join(c)
            .map_err(|e| s3_error!(InvalidArgument, "key {key:?}: {e}"))?;
    }
    Ok((p, cues))
}

/// User metadata (`x-amz-meta-cairn-cues: rep=2,place=buddy`) carrying cues
/// for a write.
pub const CUES_META: &str = "cairn-cues";

/// Refuse keys that would not round-trip through a path.
pub fn check_key(key: &str) -> S3Result<()> {
    if key.len() > 1024 {
        return Err(s3_error!(KeyTooLongError));
    }
    if key.is_empty() {
        return Err(s3_error!(InvalidArgument, "empty object key"));
    }
    if key.ends_with('/') {
        return Err(s3_error!(
            InvalidArgument,
            "key {key:?} ends with '/': Cairn stores objects as files and prefixes as directories, so folder-marker objects are not supported"
        ));
    }
    for c in key.split('/') {
        CairnPath::root().join(c).map_err(|e| {
            s3_error!(
                InvalidArgument,
                "key {key:?} has no file-system path ({e}); Cairn refuses keys with empty, '.' or '..' components"
            )
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_or_are_refused() {
        assert_eq!(
            object_path("bkt", "a/b.txt").unwrap().as_str(),
            "/bkt/a/b.txt"
        );
        let (p, c) = object_path_cued("bkt", "a/.cue/rep=2,lax/b.txt").unwrap();
        assert_eq!(p.as_str(), "/bkt/a/b.txt");
        assert_eq!(c.rep, Some(2));
        assert!(object_path_cued("bkt", "a/.cue/colour=red/b").is_err());
        assert!(object_path_cued("bkt", ".cue/rep=2").is_err());
        assert_eq!(
            object_path("bkt", "a/b.txt").unwrap().as_str(),
            "/bkt/a/b.txt"
        );
        for bad in ["", "a//b", "a/../b", "./a", "a/", "/a", "a/./b", ".."] {
            assert!(object_path("bkt", bad).is_err(), "{bad:?}");
        }
        assert!(bucket_path(".cairn").is_err());
        assert!(bucket_path("Bad_Bucket").is_err());
        assert!(!is_bucket_name(SYSTEM_DIR));
    }
}

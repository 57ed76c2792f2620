//! S3 object attributes kept in the file's extended attributes, committed
//! atomically with the content: `s3.etag`, `s3.content-type`, the other
//! standard headers as `s3.<header>`, user metadata as `s3.meta.<name>`.

use cairn_types::{Inode, Xattrs};
use s3s::dto::{ETag, Metadata, Timestamp, TimestampFormat};
use std::time::{Duration, SystemTime};

pub const ETAG: &str = "s3.etag";
pub const CONTENT_TYPE: &str = "s3.content-type";
pub const CACHE_CONTROL: &str = "s3.cache-control";
pub const CONTENT_DISPOSITION: &str = "s3.content-disposition";
pub const CONTENT_ENCODING: &str = "s3.content-encoding";
pub const CONTENT_LANGUAGE: &str = "s3.content-language";
pub const EXPIRES: &str = "s3.expires";
pub const META_PREFIX: &str = "s3.meta.";
/// Parts count of an object made by multipart upload.
pub const PARTS: &str = "s3.parts";
/// Each part's size, comma-separated, for GET and HEAD by `partNumber`.
pub const PART_SIZES: &str = "s3.part-sizes";

/// The headers of an object as a PUT, copy or multipart create gives them.
#[derive(Clone, Debug, Default)]
pub struct Headers {
    pub content_type: Option<String>,
    pub cache_control: Option<String>,
    pub content_disposition: Option<String>,
    pub content_encoding: Option<String>,
    pub content_language: Option<String>,
    pub expires: Option<Timestamp>,
    pub metadata: Option<Metadata>,
}

impl Headers {
    /// As extended attributes, without the ETag.
    pub fn to_xattrs(&self) -> Xattrs {
        let mut x = Xattrs::new();
        let mut set = |k: &str, v: &Option<String>| {
            if let Some(v) = v {
                x.insert(k.to_string(), v.as_bytes().to_vec());
            }
        };
        set(CONTENT_TYPE, &self.content_type);
        set(CACHE_CONTROL, &self.cache_control);
        set(CONTENT_DISPOSITION, &self.content_disposition);
        set(CONTENT_ENCODING, &self.content_encoding);
        set(CONTENT_LANGUAGE, &self.content_language);
        if let Some(t) = &self.expires {
            let mut buf = Vec::new();
            if t.format(TimestampFormat::HttpDate, &mut buf).is_ok() {
                x.insert(EXPIRES.to_string(), buf);
            }
        }
        for (k, v) in self.metadata.iter().flatten() {
            x.insert(
                format!("{META_PREFIX}{}", k.to_ascii_lowercase()),
                v.as_bytes().to_vec(),
            );
        }
        x
    }

    pub fn from_xattrs(x: &Xattrs) -> Headers {
        let get = |k: &str| x.get(k).map(|v| String::from_utf8_lossy(v).into_owned());
        let metadata: Metadata = x
            .iter()
            .filter_map(|(k, v)| {
                k.strip_prefix(META_PREFIX)
                    .map(|name| (name.to_string(), String::from_utf8_lossy(v).into_owned()))
            })
            .collect();
        Headers {
            content_type: get(CONTENT_TYPE),
            cache_control: get(CACHE_CONTROL),
            content_disposition: get(CONTENT_DISPOSITION),
            content_encoding: get(CONTENT_ENCODING),
            content_language: get(CONTENT_LANGUAGE),
            expires: get(EXPIRES)
                .and_then(|s| Timestamp::parse(TimestampFormat::HttpDate, &s).ok()),
            metadata: (!metadata.is_empty()).then_some(metadata),
        }
    }
}

/// The ETag of a file, without quotes: the stored one, or for a file written
/// by other means than S3 a stable stand-in from its inode and version.
pub fn etag_of(inode: &Inode) -> String {
    match inode.xattrs.get(ETAG) {
        Some(v) => String::from_utf8_lossy(v).into_owned(),
        None => format!("{:016x}{:016x}", inode.id.0, inode.version.0),
    }
}

pub fn etag(inode: &Inode) -> ETag {
    ETag::Strong(etag_of(inode))
}

pub fn last_modified(inode: &Inode) -> Timestamp {
    Timestamp::from(SystemTime::UNIX_EPOCH + Duration::from_millis(inode.mtime_ms()))
}

/// Last-Modified to the second, as HTTP dates compare.
pub fn mtime_secs(inode: &Inode) -> i64 {
    (inode.mtime_ms() / 1000) as i64
}

/// How many parts a multipart object was completed from (None: not one).
pub fn parts_count(inode: &Inode) -> Option<i32> {
    inode
        .xattrs
        .get(PARTS)
        .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
}

/// Bytes `[start, end)` of part `n` (from 1) of an object: of a multipart
/// object the part as uploaded, of any other object part 1 is the whole.
/// Past the last part: `InvalidPartNumber`, as AWS answers.
pub fn part_range(inode: &Inode, n: i32) -> s3s::S3Result<(u64, u64)> {
    let sizes: Vec<u64> = inode
        .xattrs
        .get(PART_SIZES)
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(|v| v.split(',').filter_map(|s| s.parse().ok()).collect())
        .unwrap_or_else(|| vec![inode.size]);
    let i = usize::try_from(n)
        .ok()
        .filter(|i| (1..=sizes.len()).contains(i));
    let Some(i) = i else {
        let mut e = s3s::S3Error::with_message(
            s3s::S3ErrorCode::Custom("InvalidPartNumber".into()),
            "The requested partnumber is not satisfiable",
        );
        e.set_status_code(hyper::StatusCode::RANGE_NOT_SATISFIABLE);
        return Err(e);
    };
    let start: u64 = sizes[..i - 1].iter().sum();
    Ok((start, (start + sizes[i - 1]).min(inode.size)))
}

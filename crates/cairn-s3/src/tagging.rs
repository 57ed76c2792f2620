//! Object tags: up to 10 key/value pairs per object, kept in the file's
//! `s3.tags` extended attribute as the URL-encoded query string S3 itself
//! uses in `x-amz-tagging` (`k1=v1&k2=v2`). Setting or removing tags
//! changes the object's attributes, not its content or version, as on
//! AWS.

use cairn_types::Xattrs;
use s3s::dto::{Tag, TagSet};
use s3s::{s3_error, S3Error, S3ErrorCode, S3Result};

pub const TAGS: &str = "s3.tags";
/// AWS's limits: tags per object, and characters of a key and a value.
const MAX_TAGS: usize = 10;
const MAX_KEY: usize = 128;
const MAX_VALUE: usize = 256;

/// An object's tags, in the order they were given.
pub type Tags = Vec<(String, String)>;

/// Refuse a tag set AWS would refuse, with AWS's codes and messages.
fn check(tags: &Tags) -> S3Result<()> {
    if tags.len() > MAX_TAGS {
        let mut e = S3Error::with_message(
            S3ErrorCode::Custom("BadRequest".into()),
            format!("Object tags cannot be greater than {MAX_TAGS}"),
        );
        e.set_status_code(hyper::StatusCode::BAD_REQUEST);
        return Err(e);
    }
    for (i, (k, v)) in tags.iter().enumerate() {
        if k.is_empty() || k.chars().count() > MAX_KEY {
            return Err(s3_error!(
                InvalidTag,
                "The TagKey you have provided is invalid: 1 to {MAX_KEY} characters"
            ));
        }
        if v.chars().count() > MAX_VALUE {
            return Err(s3_error!(
                InvalidTag,
                "The TagValue you have provided is too long, max {MAX_VALUE}"
            ));
        }
        if k.starts_with("aws:") {
            return Err(s3_error!(
                InvalidTag,
                "System tags cannot be added/updated by requester"
            ));
        }
        if tags[..i].iter().any(|(other, _)| other == k) {
            return Err(s3_error!(
                InvalidTag,
                "Cannot provide multiple Tags with the same key"
            ));
        }
    }
    Ok(())
}

/// The tags of an `x-amz-tagging` header (a URL query string), checked.
pub fn from_header(h: &str) -> S3Result<Tags> {
    let tags: Tags = form_urlencoded::parse(h.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    check(&tags)?;
    Ok(tags)
}

/// The tags of a PutObjectTagging body, checked.
pub fn from_tag_set(set: TagSet) -> S3Result<Tags> {
    let tags: Tags = set
        .into_iter()
        .map(|t| (t.key.unwrap_or_default(), t.value.unwrap_or_default()))
        .collect();
    check(&tags)?;
    Ok(tags)
}

/// The stored form: the same query string as the header.
pub fn encode(tags: &Tags) -> Vec<u8> {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(tags.iter())
        .finish()
        .into_bytes()
}

/// An object's tags, from its extended attributes.
pub fn of(x: &Xattrs) -> Tags {
    x.get(TAGS)
        .map(|v| {
            form_urlencoded::parse(v)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// Put `tags` into `x` (none: no attribute).
pub fn set(x: &mut Xattrs, tags: &Tags) {
    match tags.is_empty() {
        true => x.remove(TAGS),
        false => x.insert(TAGS.to_string(), encode(tags)),
    };
}

pub fn tag_set(tags: Tags) -> TagSet {
    tags.into_iter()
        .map(|(k, v)| Tag {
            key: Some(k),
            value: Some(v),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_limits_are_aws_s() {
        let t = from_header("project=cairn&team=fleet%20ops&empty=").unwrap();
        assert_eq!(
            t,
            [
                ("project".to_string(), "cairn".to_string()),
                ("team".into(), "fleet ops".into()),
                ("empty".into(), "".into())
            ]
        );
        let mut x = Xattrs::new();
        set(&mut x, &t);
        assert_eq!(of(&x), t);
        set(&mut x, &Vec::new());
        assert!(!x.contains_key(TAGS));

        let code = |h: &str| from_header(h).unwrap_err().code().as_str().to_string();
        let eleven: Vec<String> = (0..11).map(|i| format!("k{i}=v")).collect();
        assert_eq!(code(&eleven.join("&")), "BadRequest");
        let e = from_header(&eleven.join("&")).unwrap_err();
        assert_eq!(e.status_code(), Some(hyper::StatusCode::BAD_REQUEST));
        assert_eq!(code(&format!("{}=v", "k".repeat(129))), "InvalidTag");
        assert_eq!(code(&format!("k={}", "v".repeat(257))), "InvalidTag");
        assert_eq!(code("a=1&a=2"), "InvalidTag");
        assert_eq!(code("aws:x=1"), "InvalidTag");
        assert_eq!(code("=v"), "InvalidTag");
        // Limits count characters, not bytes.
        from_header(&format!("k={}", "é".repeat(256))).unwrap();
    }
}

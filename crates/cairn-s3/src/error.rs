//! Cairn errors to S3 errors: the only place S3 error codes are chosen for
//! failures that come from the cluster.

use cairn_types::{Error, ErrorKind};
use s3s::{S3Error, S3ErrorCode};

/// What a missing path means for the request at hand.
#[derive(Clone, Copy, Debug)]
pub enum Missing {
    Bucket,
    Key,
    Upload,
}

/// Map a cluster error. `missing` names the S3 error a `NotFound` becomes.
pub fn s3_err(e: Error, missing: Missing) -> S3Error {
    let code = match e.kind {
        ErrorKind::NotFound | ErrorKind::NotADirectory | ErrorKind::IsADirectory => match missing {
            Missing::Bucket => S3ErrorCode::NoSuchBucket,
            Missing::Key => S3ErrorCode::NoSuchKey,
            Missing::Upload => S3ErrorCode::NoSuchUpload,
        },
        ErrorKind::AlreadyExists => S3ErrorCode::BucketAlreadyOwnedByYou,
        ErrorKind::DirectoryNotEmpty => S3ErrorCode::BucketNotEmpty,
        ErrorKind::InvalidInput => S3ErrorCode::InvalidArgument,
        ErrorKind::PermissionDenied => S3ErrorCode::AccessDenied,
        ErrorKind::Conflict => S3ErrorCode::PreconditionFailed,
        ErrorKind::Unavailable | ErrorKind::Timeout | ErrorKind::NoSpace => {
            S3ErrorCode::ServiceUnavailable
        }
        ErrorKind::Corrupt | ErrorKind::Internal => S3ErrorCode::InternalError,
        ErrorKind::TooLarge => S3ErrorCode::EntityTooLarge,
    };
    S3Error::with_message(code, public_message(&e.message))
}

/// `msg` with the gateway's own paths (`/.cairn/s3/uploads/ID/part-00002`,
/// `/.cairn/s3/keys/...`) said in S3's terms (`part 2 of upload ID`), so
/// that no error shows a client where the gateway keeps its state.
pub fn public_message(msg: &str) -> String {
    const UPLOADS: &str = "/.cairn/s3/uploads/";
    const SYSTEM: &str = "/.cairn/";
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    while let Some(at) = rest.find(SYSTEM) {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        // The path runs to the next space or punctuation that ends it.
        let end = tail
            .find(|c: char| c.is_whitespace() || matches!(c, ',' | ';' | ')' | '"' | '\''))
            .unwrap_or(tail.len());
        let path = tail[..end].trim_end_matches(['.', ':']);
        let said = match path.strip_prefix(UPLOADS) {
            Some(up) => {
                let mut parts = up.split('/');
                let id = parts.next().unwrap_or_default();
                match parts.next().and_then(|p| p.strip_prefix("part-")) {
                    Some(n) => format!(
                        "part {} of upload {id}",
                        n.trim_start_matches('0').parse::<u32>().unwrap_or(0)
                    ),
                    None if id.is_empty() => "the multipart uploads".to_string(),
                    None => format!("upload {id}"),
                }
            }
            None => "the gateway's records".to_string(),
        };
        out.push_str(&said);
        rest = &tail[path.len()..];
    }
    out.push_str(rest);
    out
}

/// An internal failure of the gateway itself.
pub fn internal(msg: impl Into<String>) -> S3Error {
    S3Error::with_message(S3ErrorCode::InternalError, public_message(&msg.into()))
}

#[cfg(test)]
mod tests {
    use super::public_message;

    #[test]
    fn internal_paths_are_said_in_s3_terms() {
        assert_eq!(
            public_message("/.cairn/s3/uploads/abc123/part-00002 does not exist"),
            "part 2 of upload abc123 does not exist"
        );
        assert_eq!(
            public_message("compose /b/k: /.cairn/s3/uploads/u9/upload is a directory."),
            "compose /b/k: upload u9 is a directory."
        );
        assert_eq!(
            public_message("cannot read /.cairn/s3/keys/AKIA1 (x)"),
            "cannot read the gateway's records (x)"
        );
        assert_eq!(public_message("/b/k does not exist"), "/b/k does not exist");
        assert!(!public_message("a /.cairn/x and /.cairn/s3/uploads/q/part-1").contains(".cairn"));
    }
}

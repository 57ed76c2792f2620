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
    S3Error::with_message(code, e.message)
}

/// An internal failure of the gateway itself.
pub fn internal(msg: impl Into<String>) -> S3Error {
    S3Error::with_message(S3ErrorCode::InternalError, msg.into())
}

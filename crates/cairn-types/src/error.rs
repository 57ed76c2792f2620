use serde::{Deserialize, Serialize};
use std::fmt;

/// What went wrong, independent of where. Survives RPC so that a client can
/// decide whether to retry and front ends can map it to errno or S3 codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    NotFound,
    AlreadyExists,
    NotADirectory,
    IsADirectory,
    DirectoryNotEmpty,
    InvalidInput,
    PermissionDenied,
    /// An optimistic transaction lost a race; retrying can help.
    Conflict,
    /// Not enough live nodes, a node went away, a store is down.
    Unavailable,
    /// A checksum did not match.
    Corrupt,
    Timeout,
    /// Disk full on a storage node, or no capacity anywhere.
    NoSpace,
    /// A bug or an unexpected I/O failure.
    Internal,
    /// Larger than a file (or a value) may be here: a size past what the
    /// file system under a staged copy takes (`EFBIG`). Last, so older
    /// peers' kinds keep their numbers.
    TooLarge,
}

impl ErrorKind {
    /// The kind's name in metrics and logs (`not_found`).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not_found",
            ErrorKind::AlreadyExists => "already_exists",
            ErrorKind::NotADirectory => "not_a_directory",
            ErrorKind::IsADirectory => "is_a_directory",
            ErrorKind::DirectoryNotEmpty => "directory_not_empty",
            ErrorKind::InvalidInput => "invalid_input",
            ErrorKind::PermissionDenied => "permission_denied",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Corrupt => "corrupt",
            ErrorKind::Timeout => "timeout",
            ErrorKind::NoSpace => "no_space",
            ErrorKind::Internal => "internal",
            ErrorKind::TooLarge => "too_large",
        }
    }

    /// Whether trying the same operation again (perhaps elsewhere) can succeed.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorKind::Conflict | ErrorKind::Unavailable | ErrorKind::Timeout | ErrorKind::Corrupt
        )
    }
}

/// An error with a kind and a message a person can act on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

macro_rules! ctor {
    ($name:ident, $kind:ident) => {
        pub fn $name(msg: impl Into<String>) -> Error {
            Error::new(ErrorKind::$kind, msg)
        }
    };
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
        }
    }
    ctor!(not_found, NotFound);
    ctor!(exists, AlreadyExists);
    ctor!(not_dir, NotADirectory);
    ctor!(is_dir, IsADirectory);
    ctor!(not_empty, DirectoryNotEmpty);
    ctor!(invalid, InvalidInput);
    ctor!(denied, PermissionDenied);
    ctor!(conflict, Conflict);
    ctor!(unavailable, Unavailable);
    ctor!(corrupt, Corrupt);
    ctor!(timeout, Timeout);
    ctor!(no_space, NoSpace);
    ctor!(internal, Internal);
    ctor!(too_large, TooLarge);

    /// Prefix the message with where it happened, keeping the kind.
    pub fn context(mut self, ctx: impl fmt::Display) -> Error {
        self.message = format!("{ctx}: {}", self.message);
        self
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Error {
        use std::io::ErrorKind as K;
        let kind = match e.kind() {
            K::NotFound => ErrorKind::NotFound,
            K::AlreadyExists => ErrorKind::AlreadyExists,
            K::PermissionDenied => ErrorKind::PermissionDenied,
            K::TimedOut => ErrorKind::Timeout,
            K::InvalidInput | K::InvalidData => ErrorKind::InvalidInput,
            K::ConnectionRefused
            | K::ConnectionReset
            | K::ConnectionAborted
            | K::BrokenPipe
            | K::UnexpectedEof
            | K::NotConnected
            | K::AddrNotAvailable => ErrorKind::Unavailable,
            _ if e.raw_os_error() == Some(28) => ErrorKind::NoSpace, // ENOSPC
            _ if e.raw_os_error() == Some(27) => ErrorKind::TooLarge, // EFBIG
            _ => ErrorKind::Internal,
        };
        Error::new(kind, e.to_string())
    }
}

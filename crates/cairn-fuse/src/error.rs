//! The one place where Cairn error kinds become errno values.

use cairn_types::{Error, ErrorKind, MAX_NAME_LEN};
use libc::c_int;
use std::ffi::OsStr;

/// Why a mount could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("cache directory {path}: {source}")]
    CacheDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(
        "mounting {path}: {source} (is the `fusermount3` program installed (Debian: fuse3) and /dev/fuse present?)"
    )]
    Mount {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// The errno for an error from the client.
///
/// `Conflict` (an expected version did not match: someone else changed the
/// file or directory meanwhile) becomes `ESTALE`, not `EAGAIN`: programs do
/// not retry ordinary file calls on `EAGAIN`, while `ESTALE` says what
/// happened and makes the kernel redo path-based calls with a fresh lookup.
/// Handlers where a conflict has a precise POSIX meaning (an exclusive
/// create, `RENAME_NOREPLACE`) map it themselves.
pub fn errno(e: &Error) -> c_int {
    match e.kind {
        ErrorKind::NotFound => libc::ENOENT,
        ErrorKind::AlreadyExists => libc::EEXIST,
        ErrorKind::NotADirectory => libc::ENOTDIR,
        ErrorKind::IsADirectory => libc::EISDIR,
        ErrorKind::DirectoryNotEmpty => libc::ENOTEMPTY,
        ErrorKind::InvalidInput if e.message.contains("limit is") => libc::ENAMETOOLONG,
        ErrorKind::InvalidInput => libc::EINVAL,
        ErrorKind::PermissionDenied => libc::EACCES,
        ErrorKind::Conflict => libc::ESTALE,
        ErrorKind::NoSpace => libc::ENOSPC,
        ErrorKind::TooLarge => libc::EFBIG,
        ErrorKind::Unavailable | ErrorKind::Timeout | ErrorKind::Corrupt | ErrorKind::Internal => {
            libc::EIO
        }
    }
}

/// A name from the kernel as a Cairn name: `ENAMETOOLONG` over 255 bytes,
/// `EINVAL` when it is not UTF-8 (Cairn names are strings).
pub fn check_name(name: &OsStr) -> Result<&str, c_int> {
    if name.len() > MAX_NAME_LEN {
        return Err(libc::ENAMETOOLONG);
    }
    name.to_str().ok_or(libc::EINVAL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_precise_errnos() {
        assert_eq!(errno(&Error::not_found("x")), libc::ENOENT);
        assert_eq!(errno(&Error::not_empty("x")), libc::ENOTEMPTY);
        assert_eq!(errno(&Error::unavailable("x")), libc::EIO);
        let long = "n".repeat(300);
        let e = cairn_types::CairnPath::parse(&format!("/{long}")).unwrap_err();
        assert_eq!(errno(&e), libc::ENAMETOOLONG, "{e}");
        assert_eq!(errno(&Error::invalid("bad")), libc::EINVAL);
        assert_eq!(check_name(OsStr::new(&long)), Err(libc::ENAMETOOLONG));
    }
}

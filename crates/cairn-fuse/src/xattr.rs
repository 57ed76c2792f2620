//! Extended attributes as the mount shows them.
//!
//! Only the `user.` namespace is the mount's: `user.NAME` is stored under
//! that same key in [`cairn_types::Inode::xattrs`], next to the keys other
//! front ends keep there (`s3.*` of the S3 gateway, `cairn.*`), which the
//! mount neither lists nor lets anyone read or write. Other namespaces
//! (`security.`, `system.`, `trusted.`) hold nothing here: reading one is
//! `ENODATA`, writing one `ENOTSUP`.
//!
//! One name is not stored as an attribute: [`CUES`], the path's semantic
//! cues. Reading it gives the effective cues (own over inherited), writing
//! it replaces the path's own cues (`setfattr -n user.cairn.cues -v
//! rep=2,place=spread DIR`), removing it clears them. It is never listed
//! (every file has cues fixed at creation, and tools that copy all listed
//! attributes, `cp -a` or `rsync -X`, should not copy policy along).

use cairn_types::{Error, ErrorKind, Inode, XattrWhen};
use libc::c_int;
use std::ffi::OsStr;

const USER: &str = "user.";

/// The attribute that shows and sets a path's cues.
pub const CUES: &str = "user.cairn.cues";

/// The stored key of `name` if it is one the mount keeps, else the errno
/// for `writing` or reading it.
pub fn key(name: &OsStr, writing: bool) -> Result<String, c_int> {
    let name = name.to_str().ok_or(libc::EINVAL)?;
    if name.len() > cairn_types::MAX_NAME_LEN {
        return Err(libc::ERANGE);
    }
    match name.strip_prefix(USER) {
        Some(rest) if !rest.is_empty() => Ok(name.to_string()),
        Some(_) => Err(libc::EINVAL),
        None if writing => Err(libc::ENOTSUP),
        None => Err(libc::ENODATA),
    }
}

/// `setxattr`'s flags as a precondition.
pub fn when(flags: i32) -> Result<XattrWhen, c_int> {
    match flags {
        0 => Ok(XattrWhen::Always),
        libc::XATTR_CREATE => Ok(XattrWhen::Create),
        libc::XATTR_REPLACE => Ok(XattrWhen::Replace),
        _ => Err(libc::EINVAL),
    }
}

/// `listxattr`'s answer: the names the mount shows, each NUL-terminated.
pub fn list(inode: &Inode) -> Vec<u8> {
    let mut out = Vec::new();
    for name in inode.xattrs.keys().filter(|k| k.starts_with(USER)) {
        out.extend_from_slice(name.as_bytes());
        out.push(0);
    }
    out
}

/// How a reply of `len` bytes answers a buffer of `size`: the length alone
/// for a size probe (0), `ERANGE` when it does not fit.
pub enum Fit {
    Size(u32),
    Data,
}

pub fn fit(len: usize, size: u32) -> Result<Fit, c_int> {
    if size == 0 {
        return u32::try_from(len).map(Fit::Size).map_err(|_| libc::E2BIG);
    }
    if len > size as usize {
        return Err(libc::ERANGE);
    }
    Ok(Fit::Data)
}

/// The errno of a failed attribute change: a value or name over the limits
/// is `E2BIG`/`ERANGE` here (not `ENAMETOOLONG`), the rest as usual.
/// `NotFound` is ambiguous (the file or the attribute): callers tell them
/// apart.
pub fn errno(e: &Error) -> c_int {
    match e.kind {
        ErrorKind::InvalidInput if e.message.contains("name") => libc::ERANGE,
        ErrorKind::InvalidInput => libc::E2BIG,
        _ => crate::error::errno(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_user_names_are_kept() {
        assert_eq!(key(OsStr::new("user.a"), true), Ok("user.a".to_string()));
        assert_eq!(key(OsStr::new("user."), true), Err(libc::EINVAL));
        assert_eq!(key(OsStr::new("s3.etag"), false), Err(libc::ENODATA));
        assert_eq!(key(OsStr::new("s3.etag"), true), Err(libc::ENOTSUP));
        assert_eq!(key(OsStr::new("cairn.x"), true), Err(libc::ENOTSUP));
        assert_eq!(
            key(OsStr::new("security.capability"), false),
            Err(libc::ENODATA)
        );
        assert!(matches!(fit(10, 0), Ok(Fit::Size(10))));
        assert!(matches!(fit(10, 10), Ok(Fit::Data)));
        assert!(matches!(fit(10, 9), Err(libc::ERANGE)));
        assert_eq!(when(libc::XATTR_CREATE), Ok(XattrWhen::Create));
        assert_eq!(when(7), Err(libc::EINVAL));
    }

    #[test]
    fn listing_hides_other_front_ends_keys() {
        let mut xattrs = cairn_types::Xattrs::new();
        xattrs.insert("s3.etag".into(), b"x".to_vec());
        xattrs.insert("cairn.y".into(), b"x".to_vec());
        xattrs.insert("user.b".into(), b"1".to_vec());
        xattrs.insert("user.a".into(), vec![]);
        let inode = Inode {
            id: cairn_types::InodeId(5),
            kind: cairn_types::InodeKind::File,
            size: 0,
            version: cairn_types::Version(1),
            mtime_ns: 0,
            ctime_ns: 0,
            atime_ns: 0,
            mode: 0o644,
            extents: vec![],
            chunk_size: 0,
            xattrs,
            uid: None,
            gid: None,
            target: None,
            cues: Default::default(),
            nlink: 1,
            inline: None,
            rdev: 0,
        };
        assert_eq!(list(&inode), b"user.a\0user.b\0");
    }
}

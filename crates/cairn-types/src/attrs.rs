//! Attribute changes and node creations, as the mount sends them to meta.

use serde::{Deserialize, Serialize};

/// Longest symbolic link target, in bytes (Linux's `PATH_MAX` less the NUL).
pub const MAX_TARGET_LEN: usize = 4095;
/// Largest value of one extended attribute (Linux's `XATTR_SIZE_MAX`).
pub const MAX_XATTR_VALUE_LEN: usize = 64 * 1024;
/// Largest total of names and values of one inode's extended attributes:
/// they live in its directory entry, which every listing reads.
pub const MAX_XATTRS_LEN: usize = 256 * 1024;

/// What to create with [`NewNode`]: an empty file, a directory, a symlink,
/// or a special file (FIFO, socket, device node: a name and attributes, no
/// content; what it stands for is the local kernel's).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NewNode {
    File,
    Directory,
    Symlink {
        target: String,
    },
    /// `kind` is one of the special kinds ([`crate::InodeKind::is_special`]);
    /// `rdev` the device number of a device node (0 for the others).
    Special {
        kind: crate::InodeKind,
        rdev: u32,
    },
}

/// When an extended attribute may be set (`setxattr`'s flags).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum XattrWhen {
    Always,
    /// Only if it is not set yet (`XATTR_CREATE`); else `AlreadyExists`.
    Create,
    /// Only if it is set already (`XATTR_REPLACE`); else `NotFound`.
    Replace,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum XattrOp {
    Set {
        name: String,
        value: Vec<u8>,
        when: XattrWhen,
    },
    /// `NotFound` if it is not set.
    Remove { name: String },
}

/// Changes to an inode's attributes, applied together or not at all. None
/// leaves a field as it is. The content and its version do not change.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttrChanges {
    /// Permission bits (`0o7777`); the file type never changes.
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Nanoseconds since the Unix epoch, stored exactly (`utimensat`).
    pub mtime_ns: Option<u64>,
    pub atime_ns: Option<u64>,
    pub xattrs: Vec<XattrOp>,
    /// `atime_ns` is a read's access time (which reads record, `relatime`
    /// or every one, is the mount's choice): it leaves ctime alone, never
    /// moves atime back, and may be lost in a meta crash.
    pub accessed: bool,
}

//! Layouts of [`Inode`] and [`cairn_types::Cues`] that earlier versions
//! wrote, frozen: postcard records carry no field names, so each is
//! decoded by its own struct and converted to the current one (see the
//! key layout in the parent module).

#[cfg(doc)]
use cairn_types::Inode;

/// Records before nanosecond times kept milliseconds.
const NS_PER_MS: u64 = 1_000_000;

/// Cues before `hot=GROUP`: the layout v1 to v3 records embed.
pub(super) mod cues_v1 {
    use cairn_types::{Consistency, PlaceScheme, VersionPolicy, Writability};
    use serde::{Deserialize, Serialize};

    #[derive(Default, Serialize, Deserialize)]
    pub struct Cues {
        pub rep: Option<u8>,
        pub sync: Option<u8>,
        pub place: Option<PlaceScheme>,
        pub site: Option<String>,
        pub rep_sites: Option<u8>,
        pub keep_together: Option<bool>,
        pub consistency: Option<Consistency>,
        pub version: Option<VersionPolicy>,
        pub maxtime_ms: Option<u64>,
        pub writability: Option<Writability>,
        pub wholefile: Option<bool>,
        pub hotspot: Option<bool>,
    }

    impl From<Cues> for cairn_types::Cues {
        fn from(c: Cues) -> cairn_types::Cues {
            cairn_types::Cues {
                rep: c.rep,
                sync: c.sync,
                place: c.place,
                site: c.site,
                rep_sites: c.rep_sites,
                keep_together: c.keep_together,
                consistency: c.consistency,
                version: c.version,
                maxtime_ms: c.maxtime_ms,
                writability: c.writability,
                wholefile: c.wholefile,
                hotspot: c.hotspot,
                hot: None,
                inline: None,
                ec: None,
                tier: None,
                cold_after_ms: None,
                versions: None,
            }
        }
    }
}

/// Cues before `inline=`: the layout v4 records embed.
pub(super) mod cues_v2 {
    use cairn_types::{Consistency, PlaceScheme, VersionPolicy, Writability};
    use serde::{Deserialize, Serialize};

    #[derive(Default, Serialize, Deserialize)]
    pub struct Cues {
        pub rep: Option<u8>,
        pub sync: Option<u8>,
        pub place: Option<PlaceScheme>,
        pub site: Option<String>,
        pub rep_sites: Option<u8>,
        pub keep_together: Option<bool>,
        pub consistency: Option<Consistency>,
        pub version: Option<VersionPolicy>,
        pub maxtime_ms: Option<u64>,
        pub writability: Option<Writability>,
        pub wholefile: Option<bool>,
        pub hotspot: Option<bool>,
        pub hot: Option<String>,
    }

    impl From<Cues> for cairn_types::Cues {
        fn from(c: Cues) -> cairn_types::Cues {
            cairn_types::Cues {
                rep: c.rep,
                sync: c.sync,
                place: c.place,
                site: c.site,
                rep_sites: c.rep_sites,
                keep_together: c.keep_together,
                consistency: c.consistency,
                version: c.version,
                maxtime_ms: c.maxtime_ms,
                writability: c.writability,
                wholefile: c.wholefile,
                hotspot: c.hotspot,
                hot: c.hot,
                inline: None,
                ec: None,
                tier: None,
                cold_after_ms: None,
                versions: None,
            }
        }
    }
}

/// Extents before erasure coding: every node held a whole copy.
pub(super) mod extent_v1 {
    use cairn_types::{ChunkId, NodeId};
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize)]
    pub struct Extent {
        pub chunk: ChunkId,
        pub len: u64,
        pub crc: u32,
        pub nodes: Vec<NodeId>,
    }

    impl From<Extent> for cairn_types::Extent {
        fn from(e: Extent) -> cairn_types::Extent {
            cairn_types::Extent::replicated(e.chunk, e.len, e.crc, e.nodes)
        }
    }
}

/// Cues before `ec=K+M`: the layout v5 records embed.
pub(super) mod cues_v3 {
    use cairn_types::{Consistency, PlaceScheme, VersionPolicy, Writability};
    use serde::{Deserialize, Serialize};

    #[derive(Default, Serialize, Deserialize)]
    pub struct Cues {
        pub rep: Option<u8>,
        pub sync: Option<u8>,
        pub place: Option<PlaceScheme>,
        pub site: Option<String>,
        pub rep_sites: Option<u8>,
        pub keep_together: Option<bool>,
        pub consistency: Option<Consistency>,
        pub version: Option<VersionPolicy>,
        pub maxtime_ms: Option<u64>,
        pub writability: Option<Writability>,
        pub wholefile: Option<bool>,
        pub hotspot: Option<bool>,
        pub hot: Option<String>,
        pub inline: Option<u32>,
    }

    impl From<Cues> for cairn_types::Cues {
        fn from(c: Cues) -> cairn_types::Cues {
            cairn_types::Cues {
                rep: c.rep,
                sync: c.sync,
                place: c.place,
                site: c.site,
                rep_sites: c.rep_sites,
                keep_together: c.keep_together,
                consistency: c.consistency,
                version: c.version,
                maxtime_ms: c.maxtime_ms,
                writability: c.writability,
                wholefile: c.wholefile,
                hotspot: c.hotspot,
                hot: c.hot,
                inline: c.inline,
                ec: None,
                tier: None,
                cold_after_ms: None,
                versions: None,
            }
        }
    }
}

/// Before the remote tier: the v5 layout with the erasure-coding fields
/// after its last (the `ec` cue, the shard layout of each erasure-coded
/// extent by index). The current encoding adds the tier fields after
/// these, so a v6 record never decodes as a current one.
pub(super) mod v6 {
    use cairn_types::{EcScheme, EcShards};
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize)]
    pub struct Inode {
        pub v5: super::v5::Inode,
        pub ec: Option<EcScheme>,
        pub stripes: Vec<(u32, EcShards)>,
    }

    impl From<Inode> for cairn_types::Inode {
        fn from(o: Inode) -> cairn_types::Inode {
            let mut i: cairn_types::Inode = o.v5.into();
            i.cues.ec = o.ec;
            for (n, ec) in o.stripes {
                if let Some(e) = i.extents.get_mut(n as usize) {
                    e.ec = Some(ec);
                }
            }
            i
        }
    }
}

/// Before erasure coding: inline files and special files, with extents
/// and cues of their time. The current encoding is this one with the
/// erasure-coding fields after the last (see `cairn_types::Inode`), so a
/// v5 record never decodes as a current one.
pub(super) mod v5 {
    use super::cues_v3::Cues;
    use super::extent_v1::Extent;
    use super::NS_PER_MS;
    use cairn_types::{InodeId, InodeKind, Version, Xattrs};
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize)]
    pub struct Inode {
        pub id: InodeId,
        pub kind: InodeKind,
        pub size: u64,
        pub version: Version,
        pub mtime_ms: u64,
        pub ctime_ms: u64,
        pub mode: u32,
        pub extents: Vec<Extent>,
        pub chunk_size: u64,
        pub xattrs: Xattrs,
        pub uid: Option<u32>,
        pub gid: Option<u32>,
        pub target: Option<String>,
        pub cues: Cues,
        pub nlink: u32,
        pub inline: Option<Vec<u8>>,
        pub rdev: u32,
    }

    impl From<Inode> for cairn_types::Inode {
        fn from(o: Inode) -> cairn_types::Inode {
            cairn_types::Inode {
                id: o.id,
                kind: o.kind,
                size: o.size,
                version: o.version,
                mtime_ns: o.mtime_ms.saturating_mul(NS_PER_MS),
                ctime_ns: o.ctime_ms.saturating_mul(NS_PER_MS),
                atime_ns: o.mtime_ms.saturating_mul(NS_PER_MS),
                mode: o.mode,
                extents: o.extents.into_iter().map(Into::into).collect(),
                chunk_size: o.chunk_size,
                xattrs: o.xattrs,
                uid: o.uid,
                gid: o.gid,
                target: o.target,
                cues: o.cues.into(),
                nlink: o.nlink,
                inline: o.inline,
                rdev: o.rdev,
            }
        }
    }
}

/// Before inline files: the v5 layout without `inline` and `rdev`, with
/// the cues before `inline=`.
pub(super) mod v4 {
    use super::cues_v2::Cues;
    use super::extent_v1::Extent;
    use super::NS_PER_MS;
    use cairn_types::{InodeId, InodeKind, Version, Xattrs};
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize)]
    pub struct Inode {
        pub id: InodeId,
        pub kind: InodeKind,
        pub size: u64,
        pub version: Version,
        pub mtime_ms: u64,
        pub ctime_ms: u64,
        pub mode: u32,
        pub extents: Vec<Extent>,
        pub chunk_size: u64,
        pub xattrs: Xattrs,
        pub uid: Option<u32>,
        pub gid: Option<u32>,
        pub target: Option<String>,
        pub cues: Cues,
        pub nlink: u32,
    }

    impl From<Inode> for cairn_types::Inode {
        fn from(o: Inode) -> cairn_types::Inode {
            cairn_types::Inode {
                id: o.id,
                kind: o.kind,
                size: o.size,
                version: o.version,
                mtime_ns: o.mtime_ms.saturating_mul(NS_PER_MS),
                ctime_ns: o.ctime_ms.saturating_mul(NS_PER_MS),
                atime_ns: o.mtime_ms.saturating_mul(NS_PER_MS),
                mode: o.mode,
                extents: o.extents.into_iter().map(Into::into).collect(),
                chunk_size: o.chunk_size,
                xattrs: o.xattrs,
                uid: o.uid,
                gid: o.gid,
                target: o.target,
                cues: o.cues.into(),
                nlink: o.nlink,
                inline: None,
                rdev: 0,
            }
        }
    }
}

/// Before the `hot=GROUP` cue: the v4 layout with older cues.
pub(super) mod v3 {
    use super::cues_v1::Cues;
    use super::extent_v1::Extent;
    use super::NS_PER_MS;
    use cairn_types::{InodeId, InodeKind, Version, Xattrs};
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize)]
    pub struct Inode {
        pub id: InodeId,
        pub kind: InodeKind,
        pub size: u64,
        pub version: Version,
        pub mtime_ms: u64,
        pub ctime_ms: u64,
        pub mode: u32,
        pub extents: Vec<Extent>,
        pub chunk_size: u64,
        pub xattrs: Xattrs,
        pub uid: Option<u32>,
        pub gid: Option<u32>,
        pub target: Option<String>,
        pub cues: Cues,
        pub nlink: u32,
    }

    impl From<Inode> for cairn_types::Inode {
        fn from(o: Inode) -> cairn_types::Inode {
            cairn_types::Inode {
                id: o.id,
                kind: o.kind,
                size: o.size,
                version: o.version,
                mtime_ns: o.mtime_ms.saturating_mul(NS_PER_MS),
                ctime_ns: o.ctime_ms.saturating_mul(NS_PER_MS),
                atime_ns: o.mtime_ms.saturating_mul(NS_PER_MS),
                mode: o.mode,
                extents: o.extents.into_iter().map(Into::into).collect(),
                chunk_size: o.chunk_size,
                xattrs: o.xattrs,
                uid: o.uid,
                gid: o.gid,
                target: o.target,
                cues: o.cues.into(),
                nlink: o.nlink,
                inline: None,
                rdev: 0,
            }
        }
    }
}

/// Before hard links: every file had one name (`nlink` 1).
pub(super) mod v2 {
    use super::cues_v1::Cues;
    use super::extent_v1::Extent;
    use super::NS_PER_MS;
    use cairn_types::{InodeId, InodeKind, Version, Xattrs};
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize)]
    pub struct Inode {
        pub id: InodeId,
        pub kind: InodeKind,
        pub size: u64,
        pub version: Version,
        pub mtime_ms: u64,
        pub ctime_ms: u64,
        pub mode: u32,
        pub extents: Vec<Extent>,
        pub chunk_size: u64,
        pub xattrs: Xattrs,
        pub uid: Option<u32>,
        pub gid: Option<u32>,
        pub target: Option<String>,
        pub cues: Cues,
    }

    impl From<Inode> for cairn_types::Inode {
        fn from(o: Inode) -> cairn_types::Inode {
            cairn_types::Inode {
                id: o.id,
                kind: o.kind,
                size: o.size,
                version: o.version,
                mtime_ns: o.mtime_ms.saturating_mul(NS_PER_MS),
                ctime_ns: o.ctime_ms.saturating_mul(NS_PER_MS),
                atime_ns: o.mtime_ms.saturating_mul(NS_PER_MS),
                mode: o.mode,
                extents: o.extents.into_iter().map(Into::into).collect(),
                chunk_size: o.chunk_size,
                xattrs: o.xattrs,
                uid: o.uid,
                gid: o.gid,
                target: o.target,
                cues: o.cues.into(),
                nlink: 1,
                inline: None,
                rdev: 0,
            }
        }
    }
}

/// Layouts of [`Inode`] written by earlier versions.
pub(super) mod v1 {
    use super::extent_v1::Extent;
    use cairn_types::{InodeId, InodeKind, Version, Xattrs};
    use serde::{Deserialize, Serialize};

    /// Before owners, symlinks and cues: `InodeKind` had only `File` and
    /// `Directory`, which keep their numbers.
    #[derive(Serialize, Deserialize)]
    pub struct Inode {
        pub id: InodeId,
        pub kind: InodeKind,
        pub size: u64,
        pub version: Version,
        pub mtime_ms: u64,
        pub ctime_ms: u64,
        pub mode: u32,
        pub extents: Vec<Extent>,
        pub chunk_size: u64,
        pub xattrs: Xattrs,
    }

    /// Read as v2 (no owner, target or cues), which reads as the current.
    impl From<Inode> for super::v2::Inode {
        fn from(o: Inode) -> super::v2::Inode {
            super::v2::Inode {
                id: o.id,
                kind: o.kind,
                size: o.size,
                version: o.version,
                mtime_ms: o.mtime_ms,
                ctime_ms: o.ctime_ms,
                mode: o.mode,
                extents: o.extents,
                chunk_size: o.chunk_size,
                xattrs: o.xattrs,
                uid: None,
                gid: None,
                target: None,
                cues: super::cues_v1::Cues::default(),
            }
        }
    }
}

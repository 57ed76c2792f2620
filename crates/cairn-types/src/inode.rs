use crate::{ChunkId, EcScheme, InodeId, NodeId, Version};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum InodeKind {
    File,
    Directory,
    /// A symbolic link; its target is [`Inode::target`].
    Symlink,
    /// Special files: names with attributes and no content, which the
    /// mount shows as what they are (the kernel serves a FIFO or socket
    /// locally). Device nodes carry [`Inode::rdev`]. New kinds go last, so
    /// older records keep their meaning.
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
}

impl InodeKind {
    /// Its name in listings and JSON: `file`, `directory`, `symlink`,
    /// `fifo`, `socket`, `char-device`, `block-device`.
    pub fn as_str(self) -> &'static str {
        match self {
            InodeKind::File => "file",
            InodeKind::Directory => "directory",
            InodeKind::Symlink => "symlink",
            InodeKind::Fifo => "fifo",
            InodeKind::Socket => "socket",
            InodeKind::CharDevice => "char-device",
            InodeKind::BlockDevice => "block-device",
        }
    }

    /// A FIFO, socket or device node.
    pub fn is_special(self) -> bool {
        matches!(
            self,
            InodeKind::Fifo | InodeKind::Socket | InodeKind::CharDevice | InodeKind::BlockDevice
        )
    }
}

/// One chunk of a file: it holds file bytes `[sum of earlier lens, + len)`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extent {
    pub chunk: ChunkId,
    pub len: u64,
    /// [`crate::BlockCrcs::summary`] of the chunk.
    pub crc: u32,
    /// Storage nodes holding a copy; for an erasure-coded chunk, the
    /// node of each shard, in shard order.
    pub nodes: Vec<NodeId>,
    /// Erasure-coded (`ec=K+M`): how the shards are laid out. None: every
    /// node of `nodes` holds the whole chunk.
    pub ec: Option<EcShards>,
    /// Offloaded to this remote store (`tier=`, `cold_after=`): the store
    /// holds the chunk's bytes as one object, and `nodes` is empty (copies
    /// left on nodes are cache copies). None: on storage nodes only.
    pub remote: Option<String>,
}

/// The shards of an erasure-coded chunk: shard `i` (data for `i < k`,
/// parity after) is chunk [`ChunkId::shard`]`(i)` on `nodes[i]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EcShards {
    pub scheme: EcScheme,
    /// Bytes of every shard ([`EcScheme::shard_len`] of the chunk's).
    pub shard_len: u64,
    /// [`crate::BlockCrcs::summary`] of each shard, in shard order.
    pub crcs: Vec<u32>,
}

impl Extent {
    /// A chunk with a whole copy on each of `nodes`.
    pub fn replicated(chunk: ChunkId, len: u64, crc: u32, nodes: Vec<NodeId>) -> Extent {
        Extent {
            chunk,
            len,
            crc,
            nodes,
            ec: None,
            remote: None,
        }
    }

    /// What the storage nodes hold of this chunk: (stored chunk, node)
    /// for every copy or shard.
    pub fn stored(&self) -> Vec<(ChunkId, NodeId)> {
        match &self.ec {
            None => self.nodes.iter().map(|n| (self.chunk, *n)).collect(),
            Some(_) => self
                .nodes
                .iter()
                .enumerate()
                .map(|(i, n)| (self.chunk.shard(i), *n))
                .collect(),
        }
    }

    /// This chunk's entries for garbage collection: the chunk on its nodes,
    /// or each shard on its node.
    pub fn garbage(&self) -> Vec<GarbageChunk> {
        match &self.ec {
            None => vec![GarbageChunk {
                chunk: self.chunk,
                nodes: self.nodes.clone(),
            }],
            Some(_) => self
                .stored()
                .into_iter()
                .map(|(chunk, n)| GarbageChunk {
                    chunk,
                    nodes: vec![n],
                })
                .collect(),
        }
    }

    /// Bytes the chunk takes on storage nodes, all copies or shards.
    pub fn stored_bytes(&self) -> u64 {
        match &self.ec {
            None => self.len * self.nodes.len() as u64,
            Some(ec) => ec.shard_len * self.nodes.len() as u64,
        }
    }
}

/// A file or directory as meta records it.
///
/// Its encoding (on the wire and in meta's store) keeps every field in the
/// order records had before erasure coding, and puts what erasure coding
/// added (the `ec` cue, the shard layouts of its extents) after them all,
/// then what the remote tier added (its cues, the offloaded extents'
/// stores), then the sub-millisecond times and atime, then the `versions`
/// cue: a record written before ends exactly where those begin, so it
/// can never be read as a newer one (see [`InodeRecord`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inode {
    pub id: InodeId,
    pub kind: InodeKind,
    pub size: u64,
    pub version: Version,
    /// Last content change, last change of the inode (content, attributes,
    /// names, links) and last access (`relatime`, as the mount keeps it),
    /// in nanoseconds since the Unix epoch. A directory's mtime and ctime
    /// move with its entries; meta keeps those in a record of their own
    /// and fills them in here.
    pub mtime_ns: u64,
    pub ctime_ns: u64,
    pub atime_ns: u64,
    /// Permission bits (`0o7777`). 0 means none were given (a directory
    /// made through S3 or the CLI): the kind's default applies. Permission
    /// bits given as 0 (`chmod 000`) are kept as [`Inode::MODE_ZERO`].
    pub mode: u32,
    /// Empty for directories.
    pub extents: Vec<Extent>,
    pub chunk_size: u64,
    /// Extended attributes: user metadata of S3 objects (`s3.meta.*`,
    /// `s3.content-type`, `s3.etag`), xattrs of the mount.
    pub xattrs: Xattrs,
    /// Owner and group as the mount reports them; None (written by the CLI
    /// or S3) shows as the mounting user.
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Where a symbolic link points; None for files and directories.
    pub target: Option<String>,
    /// Cues set on this path: on a directory, inherited by everything below;
    /// on a file, its persistent cues fixed at creation plus any set since.
    pub cues: crate::Cues,
    /// Names of this file or symlink (hard links). For a directory, 2 plus
    /// its subdirectories, as on ext4 (1 for directories made before meta
    /// counted them: "unknown", as `find` reads it). Meta never hands out a
    /// record with 0: that marks, inside meta only, a directory entry whose
    /// record is shared by several names.
    pub nlink: u32,
    /// A small file's bytes, kept in this record instead of chunks
    /// (`extents` is then empty): see the `inline=` cue. Listings leave
    /// them out (a listed record has `None` and its `size`); opening the
    /// file brings them. Last, so records written before it end where it
    /// begins.
    pub inline: Option<Vec<u8>>,
    /// The device number of a device node; 0 for everything else.
    pub rdev: u32,
}

impl Inode {
    /// [`Inode::mode`] of permission bits explicitly 0: a bit outside
    /// `0o7777`, so masking with it reads 0.
    pub const MODE_ZERO: u32 = 0o10000;

    /// How to keep permission bits `mode` (of `0o7777`; others dropped).
    pub fn stored_mode(mode: u32) -> u32 {
        match mode & 0o7777 {
            0 => Self::MODE_ZERO,
            m => m,
        }
    }

    /// The permission bits, None if none were ever given.
    pub fn perm(&self) -> Option<u32> {
        (self.mode != 0).then_some(self.mode & 0o7777)
    }

    /// mtime in milliseconds, what S3, the CLI and `sync` show and compare.
    pub fn mtime_ms(&self) -> u64 {
        self.mtime_ns / NS_PER_MS
    }

    pub fn ctime_ms(&self) -> u64 {
        self.ctime_ns / NS_PER_MS
    }

    /// Whether a read at `now_ns` changes the atime by `relatime`'s rule:
    /// the atime is not after the last change, or is a day old.
    pub fn relatime_due(&self, now_ns: u64) -> bool {
        const DAY_NS: u64 = 24 * 3600 * 1_000_000_000;
        self.atime_ns <= self.mtime_ns.max(self.ctime_ns)
            || now_ns.saturating_sub(self.atime_ns) >= DAY_NS
    }

    /// Whether the file's bytes live in its metadata record, even when
    /// this copy of the record (from a listing) leaves them out.
    pub fn is_inline(&self) -> bool {
        self.kind == InodeKind::File && self.extents.is_empty() && self.size > 0
    }

    /// How the file's chunks are kept; None without chunks (empty or
    /// inline).
    pub fn layout(&self) -> Option<Layout> {
        let mut kinds = self.extents.iter().map(|e| match &e.ec {
            Some(ec) => Layout::Ec(ec.scheme),
            None => Layout::Rep(self.cues.rep.unwrap_or(e.nodes.len() as u8)),
        });
        let first = kinds.next()?;
        Some(if kinds.all(|k| k == first) {
            first
        } else {
            Layout::Mixed
        })
    }
}

/// How a file's chunks are kept: what `cairn convert` and meta's
/// conversion worker compare with what its directory asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    Rep(u8),
    Ec(EcScheme),
    /// Some chunks one way, some another (a file composed of others).
    Mixed,
}

impl Layout {
    /// The layout the effective cues `eff` of a directory ask for, with
    /// `default_rep` where they name none.
    pub fn wanted(eff: &crate::Cues, default_rep: u8) -> Layout {
        match eff.ec {
            Some(ec) => Layout::Ec(ec),
            None => Layout::Rep(eff.rep.unwrap_or(default_rep)),
        }
    }

    /// Whether a file kept as `self` is as the effective cues `eff` of its
    /// directory ask: their layout, or the cold policy's
    /// (`tier=ec:K+M`), which a file reaches once cold.
    pub fn satisfies(self, eff: &crate::Cues, default_rep: u8) -> bool {
        self == Layout::wanted(eff, default_rep)
            || matches!(&eff.tier, Some(crate::Tier::Ec(s)) if self == Layout::Ec(*s))
    }

    /// The cues that write a file in this layout (Mixed: none).
    pub fn cues(self) -> crate::Cues {
        match self {
            Layout::Rep(n) => crate::Cues {
                rep: Some(n),
                ..Default::default()
            },
            Layout::Ec(e) => crate::Cues {
                ec: Some(e),
                ..Default::default()
            },
            Layout::Mixed => crate::Cues::default(),
        }
    }
}

impl std::fmt::Display for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Layout::Rep(n) => write!(f, "rep={n}"),
            Layout::Ec(e) => write!(f, "ec={e}"),
            Layout::Mixed => f.write_str("mixed"),
        }
    }
}

/// Extended attributes by name.
pub type Xattrs = std::collections::BTreeMap<String, Vec<u8>>;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirEntry {
    pub name: String,
    pub inode: Inode,
}

/// A chunk no committed version references any more, to delete from `nodes`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GarbageChunk {
    pub chunk: ChunkId,
    pub nodes: Vec<NodeId>,
}

/// The encoding of an [`Inode`]: the fields as records had them before
/// erasure coding, the extents without their shard layouts and the cues
/// without `ec`; then those two; then the tier cues and the remote store of
/// each offloaded extent; then [`TimesRecord`]; then, last, the `versions`
/// cue. Serialized from borrows (no copy of the record), deserialized
/// owned.
#[derive(Serialize, Deserialize)]
struct InodeRecord<X, C, Xa, T, B, S, R, N, V> {
    id: InodeId,
    kind: InodeKind,
    size: u64,
    version: Version,
    mtime_ms: u64,
    ctime_ms: u64,
    mode: u32,
    extents: X,
    chunk_size: u64,
    xattrs: Xa,
    uid: Option<u32>,
    gid: Option<u32>,
    target: T,
    cues: C,
    nlink: u32,
    inline: B,
    rdev: u32,
    /// Added with erasure coding: the `ec` cue, and the layout of each
    /// erasure-coded extent by its index.
    ec: Option<EcScheme>,
    stripes: S,
    /// Added with the remote tier: the `tier` and `cold_after` cues, and
    /// the remote store of each offloaded extent by its index.
    tier: Option<crate::Tier>,
    cold_after_ms: Option<u64>,
    remote: R,
    /// Added with nanosecond times: [`TimesRecord`] (`()`, no bytes, in
    /// records written before).
    times: N,
    /// Added with kept versions: the `versions` cue (`()`, no bytes, in
    /// records written before).
    versions: V,
}

/// What nanosecond times added to a record: the part of mtime and ctime
/// below the millisecond (the record keeps their milliseconds where it
/// always had them), and atime.
#[derive(Clone, Copy, Serialize, Deserialize)]
struct TimesRecord {
    mtime_sub_ns: u32,
    ctime_sub_ns: u32,
    atime_ns: u64,
}

const NS_PER_MS: u64 = 1_000_000;

/// A file's extents encoded as [`ExtentRecord`]s, straight from the slice.
struct ExtentsOut<'a>(&'a [Extent]);

impl Serialize for ExtentsOut<'_> {
    fn serialize<Se: serde::Serializer>(&self, s: Se) -> Result<Se::Ok, Se::Error> {
        s.collect_seq(self.0.iter().map(|e| ExtentRecord {
            chunk: e.chunk,
            len: e.len,
            crc: e.crc,
            nodes: e.nodes.as_slice(),
        }))
    }
}

/// An extent as records have always encoded it.
#[derive(Serialize, Deserialize)]
struct ExtentRecord<N> {
    chunk: ChunkId,
    len: u64,
    crc: u32,
    nodes: N,
}

/// Cues as records encoded them before `ec` (which goes last).
#[derive(Serialize, Deserialize)]
struct CuesRecord<S> {
    rep: Option<u8>,
    sync: Option<u8>,
    place: Option<crate::PlaceScheme>,
    site: S,
    rep_sites: Option<u8>,
    keep_together: Option<bool>,
    consistency: Option<crate::Consistency>,
    version: Option<crate::VersionPolicy>,
    maxtime_ms: Option<u64>,
    writability: Option<crate::Writability>,
    wholefile: Option<bool>,
    hotspot: Option<bool>,
    hot: S,
    inline: Option<u32>,
}

impl Serialize for Inode {
    fn serialize<Se: serde::Serializer>(&self, s: Se) -> Result<Se::Ok, Se::Error> {
        let c = &self.cues;
        InodeRecord {
            id: self.id,
            kind: self.kind,
            size: self.size,
            version: self.version,
            mtime_ms: self.mtime_ns / NS_PER_MS,
            ctime_ms: self.ctime_ns / NS_PER_MS,
            mode: self.mode,
            extents: ExtentsOut(&self.extents),
            chunk_size: self.chunk_size,
            xattrs: &self.xattrs,
            uid: self.uid,
            gid: self.gid,
            target: &self.target,
            cues: CuesRecord {
                rep: c.rep,
                sync: c.sync,
                place: c.place,
                site: &c.site,
                rep_sites: c.rep_sites,
                keep_together: c.keep_together,
                consistency: c.consistency,
                version: c.version,
                maxtime_ms: c.maxtime_ms,
                writability: c.writability,
                wholefile: c.wholefile,
                hotspot: c.hotspot,
                hot: &c.hot,
                inline: c.inline,
            },
            nlink: self.nlink,
            inline: &self.inline,
            rdev: self.rdev,
            ec: c.ec,
            // Empty (no allocation) for a replicated file.
            stripes: self
                .extents
                .iter()
                .enumerate()
                .filter_map(|(i, e)| e.ec.as_ref().map(|ec| (i as u32, ec)))
                .collect::<Vec<_>>(),
            tier: c.tier.clone(),
            cold_after_ms: c.cold_after_ms,
            remote: self
                .extents
                .iter()
                .enumerate()
                .filter_map(|(i, e)| e.remote.as_deref().map(|r| (i as u32, r)))
                .collect::<Vec<_>>(),
            times: TimesRecord {
                mtime_sub_ns: (self.mtime_ns % NS_PER_MS) as u32,
                ctime_sub_ns: (self.ctime_ns % NS_PER_MS) as u32,
                atime_ns: self.atime_ns,
            },
            versions: c.versions,
        }
        .serialize(s)
    }
}

type OwnedRecord<N, V> = InodeRecord<
    Vec<ExtentRecord<Vec<NodeId>>>,
    CuesRecord<Option<String>>,
    Xattrs,
    Option<String>,
    Option<Vec<u8>>,
    Vec<(u32, EcShards)>,
    Vec<(u32, String)>,
    N,
    V,
>;

impl Inode {
    /// Decode a record of the layout before nanosecond times (its times
    /// end at the millisecond, and atime is its mtime).
    pub fn deserialize_before_times<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Inode, D::Error> {
        let r = OwnedRecord::<(), ()>::deserialize(d)?;
        let times = TimesRecord {
            mtime_sub_ns: 0,
            ctime_sub_ns: 0,
            atime_ns: r.mtime_ms.saturating_mul(NS_PER_MS),
        };
        from_record(r, times, None)
    }

    /// Decode a record of the layout before kept versions (no `versions`
    /// cue).
    pub fn deserialize_before_versions<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Inode, D::Error> {
        let r = OwnedRecord::<TimesRecord, ()>::deserialize(d)?;
        let times = r.times;
        from_record(r, times, None)
    }
}

impl<'de> Deserialize<'de> for Inode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Inode, D::Error> {
        let r = OwnedRecord::<TimesRecord, Option<u32>>::deserialize(d)?;
        let (times, versions) = (r.times, r.versions);
        from_record(r, times, versions)
    }
}

fn from_record<E: serde::de::Error, N, V>(
    r: OwnedRecord<N, V>,
    times: TimesRecord,
    versions: Option<u32>,
) -> Result<Inode, E> {
    let mut extents: Vec<Extent> = r
        .extents
        .into_iter()
        .map(|e| Extent::replicated(e.chunk, e.len, e.crc, e.nodes))
        .collect();
    for (i, ec) in r.stripes {
        let e = extents
            .get_mut(i as usize)
            .ok_or_else(|| E::custom(format!("shard layout of extent {i}, past the end")))?;
        e.ec = Some(ec);
    }
    for (i, tier) in r.remote {
        let e = extents
            .get_mut(i as usize)
            .ok_or_else(|| E::custom(format!("remote store of extent {i}, past the end")))?;
        e.remote = Some(tier);
    }
    let c = r.cues;
    Ok(Inode {
        id: r.id,
        kind: r.kind,
        size: r.size,
        version: r.version,
        mtime_ns: r
            .mtime_ms
            .saturating_mul(NS_PER_MS)
            .saturating_add(u64::from(times.mtime_sub_ns)),
        ctime_ns: r
            .ctime_ms
            .saturating_mul(NS_PER_MS)
            .saturating_add(u64::from(times.ctime_sub_ns)),
        atime_ns: times.atime_ns,
        mode: r.mode,
        extents,
        chunk_size: r.chunk_size,
        xattrs: r.xattrs,
        uid: r.uid,
        gid: r.gid,
        target: r.target,
        cues: crate::Cues {
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
            ec: r.ec,
            tier: r.tier,
            cold_after_ms: r.cold_after_ms,
            versions,
        },
        nlink: r.nlink,
        inline: r.inline,
        rdev: r.rdev,
    })
}

//! A storage node's disk as the lab sees it from outside: its segment files
//! read record by record (to corrupt one copy of a chunk on purpose, or to
//! count the good copies of a chunk independently of what meta believes), a
//! tmpfs of fixed size per node, and a filler file that makes it full.
//!
//! The record layout is the one `cairn-storage`'s `chunk_store.rs` documents:
//! a 64-byte header (magic `CRNS`, kind, abort marker at byte 5, sequence
//! number at 8, chunk id at 16, data length at 32, CRC count at 40, CRC-list
//! checksum at 44, header checksum at 60), then 4 bytes of CRC32C per 64 KiB
//! block, then the data.

use cairn_types::{ChunkId, BLOCK_SIZE};
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const HDR: u64 = 64;
const KIND_CHUNK: u8 = 1;
const KIND_TOMBSTONE: u8 = 2;
const ABORTED: u8 = 0xA5;
/// Temp dirs of labs are named `cairn-lab-<pid>-…`; the sweep reads the pid.
pub(crate) const TEMP_PREFIX: &str = "cairn-lab-";

/// One record of a segment file.
#[derive(Clone, Debug)]
pub struct Record {
    pub segment: PathBuf,
    pub offset: u64,
    pub seq: u64,
    pub chunk: ChunkId,
    pub tombstone: bool,
    pub len: u64,
    pub crc_count: u32,
    /// Checksum of the CRC list: the chunk's `Extent::crc`.
    pub summary: u32,
}

impl Record {
    pub fn data_offset(&self) -> u64 {
        self.offset + HDR + 4 * self.crc_count as u64
    }
}

/// Segment files of a node's data directory, oldest first.
pub fn segment_files(node_dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(node_dir.join("chunks"))
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.retain(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("seg-") && n.ends_with(".log"))
    });
    v.sort();
    v
}

/// Every complete, valid record of one segment, stopping at a torn tail as
/// the store itself does. Aborted records are left out.
pub fn read_segment(path: &Path) -> Vec<Record> {
    let Ok(file) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut out = Vec::new();
    let mut off = 0u64;
    let mut h = [0u8; HDR as usize];
    while off + HDR <= size {
        if file.read_exact_at(&mut h, off).is_err() || &h[0..4] != b"CRNS" {
            break;
        }
        let mut check = h;
        check[5] = 0;
        let want = u32::from_le_bytes(h[60..64].try_into().unwrap());
        if crc32c::crc32c(&check[..60]) != want {
            break;
        }
        let rec = Record {
            segment: path.to_path_buf(),
            offset: off,
            seq: u64::from_le_bytes(h[8..16].try_into().unwrap()),
            chunk: ChunkId(u128::from_le_bytes(h[16..32].try_into().unwrap())),
            tombstone: h[4] == KIND_TOMBSTONE,
            len: u64::from_le_bytes(h[32..40].try_into().unwrap()),
            crc_count: u32::from_le_bytes(h[40..44].try_into().unwrap()),
            summary: u32::from_le_bytes(h[44..48].try_into().unwrap()),
        };
        let end = rec.data_offset() + if rec.tombstone { 0 } else { rec.len };
        if end > size {
            break;
        }
        if h[5] != ABORTED && (h[4] == KIND_CHUNK || rec.tombstone) {
            out.push(rec);
        }
        off = end;
    }
    out
}

/// The live copy of each chunk a node holds: for one chunk id the record
/// with the highest sequence number wins, a tombstone winning a tie.
pub fn live_chunks(node_dir: &Path) -> HashMap<ChunkId, Record> {
    let mut best: HashMap<ChunkId, Record> = HashMap::new();
    for seg in segment_files(node_dir) {
        for r in read_segment(&seg) {
            let replace = match best.get(&r.chunk) {
                None => true,
                Some(b) => r.seq > b.seq || (r.seq == b.seq && r.tombstone),
            };
            if replace {
                best.insert(r.chunk, r);
            }
        }
    }
    best.retain(|_, r| !r.tombstone);
    best
}

/// Whether a record's bytes match its CRC list and the CRC list matches
/// `want_summary` (the checksum meta recorded for the chunk).
pub fn copy_is_good(r: &Record, want_len: u64, want_summary: u32) -> bool {
    if r.len != want_len || r.summary != want_summary {
        return false;
    }
    let Ok(file) = std::fs::File::open(&r.segment) else {
        return false;
    };
    let mut crcs = vec![0u8; 4 * r.crc_count as usize];
    if file.read_exact_at(&mut crcs, r.offset + HDR).is_err() || crc32c::crc32c(&crcs) != r.summary
    {
        return false;
    }
    let mut block = vec![0u8; BLOCK_SIZE];
    let mut pos = 0u64;
    for want in crcs.chunks(4) {
        let n = (r.len - pos).min(BLOCK_SIZE as u64) as usize;
        if file
            .read_exact_at(&mut block[..n], r.data_offset() + pos)
            .is_err()
        {
            return false;
        }
        if crc32c::crc32c(&block[..n]) != u32::from_le_bytes(want.try_into().unwrap()) {
            return false;
        }
        pos += n as u64;
    }
    pos == r.len
}

/// Flip one byte in the middle of the data of `r` (bit rot in one copy).
pub fn corrupt(r: &Record) -> std::io::Result<()> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .read(true)
        .open(&r.segment)?;
    let at = r.data_offset() + r.len / 2;
    let mut b = [0u8; 1];
    file.read_exact_at(&mut b, at)?;
    b[0] ^= 0x5A;
    file.write_all_at(&b, at)
}

/// Delete the data of a node: every segment file (a lost disk).
pub fn wipe_segments(node_dir: &Path) -> usize {
    let segs = segment_files(node_dir);
    for s in &segs {
        let _ = std::fs::remove_file(s);
    }
    segs.len()
}

/// Mount a tmpfs of `size` bytes on `dir`.
pub fn mount_tmpfs(dir: &Path, size: u64) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    crate::net::run(
        "mount",
        &[
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size},mode=0700"),
            "tmpfs",
            dir.to_str().expect("utf-8 path"),
        ],
    )
    .map(|_| ())
}

pub fn unmount(dir: &Path) {
    // Lazy: a process we failed to kill must not make cleanup fail.
    let _ = crate::net::run("umount", &["-l", dir.to_str().unwrap_or("")]);
}

/// Free and total bytes of the file system holding `dir`.
pub fn fs_space(dir: &Path) -> (u64, u64) {
    let c = std::ffi::CString::new(dir.to_str().unwrap_or("/")).unwrap();
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return (0, 0);
    }
    (
        s.f_bavail as u64 * s.f_frsize as u64,
        s.f_blocks as u64 * s.f_frsize as u64,
    )
}

/// Allocate a filler file in `dir` so that only `leave` bytes stay free.
pub fn fill(dir: &Path, leave: u64) -> std::io::Result<u64> {
    use std::os::unix::io::AsRawFd;
    let (free, _) = fs_space(dir);
    let want = free.saturating_sub(leave);
    let path = dir.join("lab-filler");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)?;
    let start = f.metadata()?.len();
    if want > 0 {
        let r = unsafe { libc::fallocate(f.as_raw_fd(), 0, start as i64, want as i64) };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(want)
}

pub fn unfill(dir: &Path) {
    let _ = std::fs::remove_file(dir.join("lab-filler"));
}

/// Unmount tmpfs mounts of labs whose process is gone.
pub(crate) fn sweep_mounts() {
    let mut mounts = String::new();
    if std::fs::File::open("/proc/self/mounts")
        .and_then(|mut f| f.read_to_string(&mut mounts))
        .is_err()
    {
        return;
    }
    let mut dirs: BTreeMap<usize, (String, PathBuf)> = BTreeMap::new();
    for line in mounts.lines() {
        let mut parts = line.split_whitespace();
        let (Some(_), Some(target)) = (parts.next(), parts.next()) else {
            continue;
        };
        let Some(idx) = target.find(&format!("/{TEMP_PREFIX}")) else {
            continue;
        };
        let rest = &target[idx + 1 + TEMP_PREFIX.len()..];
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        if unsafe { libc::kill(pid, 0) } == 0 {
            continue;
        }
        let root = target[..idx + 1 + TEMP_PREFIX.len() + rest.find('/').unwrap_or(rest.len())]
            .to_string();
        dirs.insert(dirs.len(), (target.to_string(), PathBuf::from(root)));
    }
    // Deepest first, then the temp dirs themselves.
    for (target, _) in dirs.values().rev() {
        unmount(Path::new(target));
    }
    for (_, root) in dirs.values() {
        let _ = std::fs::remove_dir_all(root);
    }
}

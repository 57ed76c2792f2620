//! FUSE inode numbers to Cairn paths.
//!
//! The ino the kernel sees is the file's stable [`cairn_types::InodeId`]
//! (the root is 1 on both sides), so an ino survives renames and new
//! versions. The kernel names files by ino, Cairn by path: this table keeps
//! the path of every ino the kernel holds a lookup reference on, and drops
//! it when the kernel forgets the ino.

use cairn_types::CairnPath;
use std::collections::HashMap;

pub const ROOT_INO: u64 = 1;

struct Entry {
    /// None once this mount unlinked it: open handles keep working, lookups
    /// by ino fail.
    path: Option<CairnPath>,
    nlookup: u64,
}

pub struct InodeTable {
    entries: HashMap<u64, Entry>,
}

impl InodeTable {
    pub fn new() -> InodeTable {
        let mut entries = HashMap::new();
        entries.insert(
            ROOT_INO,
            Entry {
                path: Some(CairnPath::root()),
                nlookup: 1,
            },
        );
        InodeTable { entries }
    }

    pub fn path(&self, ino: u64) -> Option<CairnPath> {
        self.entries.get(&ino).and_then(|e| e.path.clone())
    }

    /// The kernel got `ino` for `path` (lookup, create, mkdir): one more
    /// reference it will `forget` later.
    pub fn remember(&mut self, ino: u64, path: CairnPath) {
        let e = self.entries.entry(ino).or_insert(Entry {
            path: None,
            nlookup: 0,
        });
        e.path = Some(path);
        e.nlookup += 1;
    }

    pub fn forget(&mut self, ino: u64, n: u64) {
        if ino == ROOT_INO {
            return;
        }
        if let Some(e) = self.entries.get_mut(&ino) {
            e.nlookup = e.nlookup.saturating_sub(n);
            if e.nlookup == 0 {
                self.entries.remove(&ino);
            }
        }
    }

    pub fn unlinked(&mut self, path: &CairnPath) {
        for e in self.entries.values_mut() {
            if e.path.as_ref() == Some(path) {
                e.path = None;
            }
        }
    }

    /// `src` is now `dst`: move it and everything below it. Whatever `dst`
    /// named before is gone.
    pub fn renamed(&mut self, src: &CairnPath, dst: &CairnPath) {
        self.unlinked(dst);
        let prefix = format!("{}/", src.as_str());
        for e in self.entries.values_mut() {
            let Some(p) = &e.path else { continue };
            if p == src {
                e.path = Some(dst.clone());
            } else if let Some(rest) = p.as_str().strip_prefix(&prefix) {
                e.path = CairnPath::parse(&format!("{}/{rest}", dst.as_str())).ok();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> CairnPath {
        CairnPath::parse(s).unwrap()
    }

    #[test]
    fn rename_moves_descendants_and_forget_drops() {
        let mut t = InodeTable::new();
        t.remember(10, p("/a"));
        t.remember(11, p("/a/x"));
        t.remember(12, p("/ab"));
        t.remember(13, p("/b"));
        t.renamed(&p("/a"), &p("/b"));
        assert_eq!(t.path(10), Some(p("/b")));
        assert_eq!(t.path(11), Some(p("/b/x")));
        assert_eq!(t.path(12), Some(p("/ab")));
        assert_eq!(t.path(13), None);
        t.forget(11, 1);
        assert_eq!(t.path(11), None);
        t.forget(ROOT_INO, 5);
        assert_eq!(t.path(ROOT_INO), Some(CairnPath::root()));
    }
}

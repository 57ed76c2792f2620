//! FUSE inode numbers to Cairn paths.
//!
//! The ino the kernel sees is the file's stable [`cairn_types::InodeId`]
//! (the root is 1 on both sides), so an ino survives renames and new
//! versions. The kernel names files by ino, Cairn by path: this table keeps
//! the path of every ino the kernel holds a lookup reference on, and drops
//! it when the kernel forgets the ino.
//!
//! Entries reached through cue components (`/data/.cue/rep=1/f`,
//! `/data/.lax/f`) get inos of their own, so cues stay per access: the
//! kernel caches attributes, pages and dentries by ino, and the cued entry
//! must not share them with the plain one (nor may one directory ino appear
//! at two places, which the kernel refuses). Such an ino is a hash of where
//! the kernel found it (parent ino, name, Cairn inode). Meta's inode ids are
//! uniform over all of u64, so no range is free for them: a hash that hits
//! a live entry is probed past, and a Cairn inode whose id is a live cued
//! ino cannot be looked up until the kernel forgets that one (a 2^-64
//! chance per pair). Like every entry, cued ones go when the kernel forgets
//! them, so the table holds no more than the kernel does.

use cairn_types::{CairnPath, Cues};
use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

pub const ROOT_INO: u64 = 1;

/// How an entry reached through cue components is accessed.
#[derive(Clone, Debug, PartialEq)]
pub struct Access {
    /// The Cairn inode id behind it.
    pub real: u64,
    /// The cues of every cue component on the way, later ones winning.
    pub cues: Cues,
    /// A `.cue` directory: the only names in it are cue lists.
    pub cue_dir: bool,
}

struct Entry {
    /// The names it was found by, the latest first; none once this mount
    /// unlinked them all: open handles keep working, lookups by ino fail.
    paths: Vec<CairnPath>,
    nlookup: u64,
    /// For a cued entry: how it is accessed and where the kernel found it
    /// (parent ino, name).
    cued: Option<(Access, u64, String)>,
    /// The file version whose attributes the kernel was last given.
    shown: Option<u64>,
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
                paths: vec![CairnPath::root()],
                nlookup: 1,
                cued: None,
                shown: None,
            },
        );
        InodeTable { entries }
    }

    pub fn path(&self, ino: u64) -> Option<CairnPath> {
        self.entries
            .get(&ino)
            .and_then(|e| e.paths.first().cloned())
    }

    /// The kernel was given the attributes of `ino` at file `version`.
    pub fn shown(&mut self, ino: u64, version: u64) {
        if let Some(e) = self.entries.get_mut(&ino) {
            e.shown = Some(version);
        }
    }

    pub fn shown_version(&self, ino: u64) -> Option<u64> {
        self.entries.get(&ino).and_then(|e| e.shown)
    }

    /// Every name `ino` was found by, the latest first.
    pub fn paths(&self, ino: u64) -> Vec<CairnPath> {
        self.entries
            .get(&ino)
            .map(|e| e.paths.clone())
            .unwrap_or_default()
    }

    /// `path` no longer leads to `ino` (another name of it may).
    pub fn unlinked_from(&mut self, ino: u64, path: &CairnPath) {
        if let Some(e) = self.entries.get_mut(&ino) {
            e.paths.retain(|p| p != path);
        }
    }

    /// How `ino` is accessed when it was reached through cue components.
    pub fn access(&self, ino: u64) -> Option<Access> {
        self.entries
            .get(&ino)
            .and_then(|e| e.cued.as_ref().map(|c| c.0.clone()))
    }

    /// The directory `dir` as the kernel knows it (its ino), and the names
    /// in it the kernel holds entries for (cued entries left out).
    pub fn known_children(&self, dir: &CairnPath) -> Option<(u64, Vec<String>)> {
        let plain = |e: &&Entry| e.cued.is_none();
        let (&dir_ino, _) = (self.entries.iter())
            .filter(|(_, e)| plain(e))
            .find(|(_, e)| e.paths.contains(dir))?;
        let names = (self.entries.values())
            .filter(plain)
            .flat_map(|e| e.paths.iter())
            .filter_map(|p| {
                let (parent, name) = p.split_last()?;
                (parent == *dir).then(|| name.to_string())
            })
            .collect();
        Some((dir_ino, names))
    }

    /// The Cairn inode id behind `ino`.
    pub fn real(&self, ino: u64) -> u64 {
        self.access(ino).map_or(ino, |a| a.real)
    }

    /// The kernel got `ino` for `path` (lookup, create, mkdir): one more
    /// reference it will `forget` later. False when `ino` is taken by a
    /// cued entry.
    #[must_use]
    pub fn remember(&mut self, ino: u64, path: CairnPath) -> bool {
        let e = self.entries.entry(ino).or_insert(Entry {
            paths: Vec::new(),
            nlookup: 0,
            cued: None,
            shown: None,
        });
        if e.cued.is_some() {
            return false;
        }
        e.paths.retain(|p| *p != path);
        e.paths.insert(0, path);
        e.nlookup += 1;
        true
    }

    /// The kernel got the entry `name` in `parent`, reached through cue
    /// components: one more reference to its own ino, which is returned.
    pub fn remember_cued(
        &mut self,
        parent: u64,
        name: &str,
        path: CairnPath,
        access: Access,
    ) -> u64 {
        let mut h = DefaultHasher::new();
        (parent, name, access.real).hash(&mut h);
        let mut ino = h.finish();
        loop {
            if ino <= ROOT_INO {
                ino = ROOT_INO + 1;
            }
            match self.entries.get_mut(&ino) {
                None => {
                    self.entries.insert(
                        ino,
                        Entry {
                            paths: vec![path],
                            nlookup: 1,
                            cued: Some((access, parent, name.to_string())),
                            shown: None,
                        },
                    );
                    return ino;
                }
                Some(e)
                    if e.cued.as_ref().is_some_and(|(a, p, n)| {
                        a.real == access.real && *p == parent && n == name
                    }) =>
                {
                    e.paths = vec![path];
                    e.cued = Some((access, parent, name.to_string()));
                    e.nlookup += 1;
                    return ino;
                }
                Some(_) => ino = ino.wrapping_add(1),
            }
        }
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
            e.paths.retain(|p| p != path);
        }
    }

    /// `src` is now `dst`: move it and everything below it. Whatever `dst`
    /// named before is gone.
    pub fn renamed(&mut self, src: &CairnPath, dst: &CairnPath) {
        self.unlinked(dst);
        let prefix = format!("{}/", src.as_str());
        for e in self.entries.values_mut() {
            for p in e.paths.iter_mut() {
                if p == src {
                    *p = dst.clone();
                } else if let Some(rest) = p.as_str().strip_prefix(&prefix) {
                    if let Ok(moved) = CairnPath::parse(&format!("{}/{rest}", dst.as_str())) {
                        *p = moved;
                    }
                }
            }
        }
    }

    /// `a` and `b` swapped places (`RENAME_EXCHANGE`), with everything
    /// below them.
    pub fn exchanged(&mut self, a: &CairnPath, b: &CairnPath) {
        let swap = |p: &CairnPath| -> Option<CairnPath> {
            for (from, to) in [(a, b), (b, a)] {
                if p == from {
                    return Some(to.clone());
                }
                let below = p.as_str().strip_prefix(from.as_str());
                if let Some(rest) = below.and_then(|r| r.strip_prefix('/')) {
                    return CairnPath::parse(&format!("{}/{rest}", to.as_str())).ok();
                }
            }
            None
        };
        for e in self.entries.values_mut() {
            for p in e.paths.iter_mut() {
                if let Some(q) = swap(p) {
                    *p = q;
                }
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
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
        assert!(t.remember(10, p("/a")));
        assert!(t.remember(11, p("/a/x")));
        assert!(t.remember(12, p("/ab")));
        assert!(t.remember(13, p("/b")));
        t.renamed(&p("/a"), &p("/b"));
        assert_eq!(t.path(10), Some(p("/b")));
        assert_eq!(t.path(11), Some(p("/b/x")));
        assert_eq!(t.path(12), Some(p("/ab")));
        assert_eq!(t.path(13), None);
        t.forget(11, 1);
        assert_eq!(t.path(11), None);
        assert!(t.remember(15, p("/c")));
        assert!(t.remember(14, p("/c/y")));
        assert_eq!(
            t.known_children(&p("/c")),
            Some((15, vec!["y".to_string()]))
        );
        assert_eq!(t.known_children(&p("/nowhere")), None);
        t.exchanged(&p("/b"), &p("/c"));
        assert_eq!(t.path(10), Some(p("/c")));
        assert_eq!(t.path(14), Some(p("/b/y")));
        assert_eq!(t.path(15), Some(p("/b")));
        assert_eq!(t.path(12), Some(p("/ab")));
        t.forget(ROOT_INO, 5);
        assert_eq!(t.path(ROOT_INO), Some(CairnPath::root()));
    }

    #[test]
    fn a_hard_linked_file_keeps_every_name_it_was_found_by() {
        let mut t = InodeTable::new();
        assert!(t.remember(20, p("/a")));
        assert!(t.remember(20, p("/d/b")));
        assert_eq!(t.path(20), Some(p("/d/b")));
        assert_eq!(t.paths(20), vec![p("/d/b"), p("/a")]);
        t.unlinked(&p("/d/b"));
        assert_eq!(t.path(20), Some(p("/a")));
        assert!(t.remember(20, p("/e")));
        t.unlinked_from(20, &p("/e"));
        assert_eq!(t.path(20), Some(p("/a")));
        t.renamed(&p("/a"), &p("/c"));
        assert_eq!(t.path(20), Some(p("/c")));
        t.unlinked(&p("/c"));
        assert_eq!(t.path(20), None);
        t.forget(20, 3);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn cued_entries_have_their_own_inos_and_go_when_forgotten() {
        let mut t = InodeTable::new();
        assert!(t.remember(10, p("/d")));
        let access = |real, rep| Access {
            real,
            cues: Cues {
                rep: Some(rep),
                ..Cues::default()
            },
            cue_dir: false,
        };
        let a = t.remember_cued(10, "f", p("/d/f"), access(11, 1));
        assert_ne!(a, 11);
        assert_eq!(t.path(a), Some(p("/d/f")));
        assert_eq!(t.real(a), 11);
        assert_eq!(t.real(10), 10);
        assert!(t.access(10).is_none());
        // Found again at the same place: the same ino, one more reference.
        assert_eq!(t.remember_cued(10, "f", p("/d/f"), access(11, 1)), a);
        // Elsewhere, or another file under the name: another ino.
        let b = t.remember_cued(12, "f", p("/d/f"), access(11, 1));
        assert_ne!(a, b);
        assert_ne!(a, t.remember_cued(10, "f", p("/d/f"), access(13, 1)));
        // A plain ino that a cued entry holds is refused, not confused.
        assert!(!t.remember(a, p("/elsewhere")));
        assert_eq!(t.access(a), Some(access(11, 1)));
        t.renamed(&p("/d"), &p("/e"));
        assert_eq!(t.path(a), Some(p("/e/f")));
        t.forget(a, 2);
        assert_eq!(t.path(a), None);
        assert_eq!(t.len(), 4, "root, /d, and the two other cued entries");
    }
}

//! What the checker knows about each path: the set of values it may hold,
//! given every operation the client saw acknowledged, refused, or end with
//! no answer.
//!
//! Every path belongs to one workload task, which runs one operation at a
//! time on its paths; so a path's history is sequential and the model is a
//! set of possible values per path. An operation whose outcome is unknown
//! (an error, a meta that died mid-request) may or may not have happened:
//! its effect is added to the set rather than replacing it, so the checker
//! never calls a loss what was only an unanswered request.
//!
//! An operation abandoned on a timeout is worse: the server may still apply
//! it later, after operations the model already ordered after it. Its paths
//! are *tainted*: at the end they are only checked for integrity (the bytes
//! are exactly some value the workload wrote, or absent), and counted apart.

use std::collections::{BTreeMap, BTreeSet};

/// A value a path can hold. File contents are generated from a seed, so a
/// value is small and its bytes can be regenerated to compare.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Val {
    Absent,
    Data { seed: u64, len: u32 },
}

impl Val {
    pub fn bytes(&self) -> Option<Vec<u8>> {
        match *self {
            Val::Absent => None,
            Val::Data { seed, len } => Some(pattern(len as usize, seed)),
        }
    }

    pub fn byte_len(&self) -> Option<u64> {
        match *self {
            Val::Absent => None,
            Val::Data { len, .. } => Some(len as u64),
        }
    }
}

/// Deterministic pseudo-random bytes for a seed (xorshift).
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let take = (len - out.len()).min(8);
        out.extend_from_slice(&x.to_le_bytes()[..take]);
    }
    out
}

#[derive(Clone, Debug)]
pub struct PathState {
    pub possible: BTreeSet<Val>,
    pub tainted: bool,
}

impl Default for PathState {
    fn default() -> PathState {
        PathState {
            possible: [Val::Absent].into(),
            tainted: false,
        }
    }
}

/// How an operation ended, as the client saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged: it happened.
    Ok,
    /// It may or may not have happened, before the client heard back.
    Unknown,
    /// Abandoned on a timeout: it may still happen at any later moment.
    TimedOut,
}

/// The model of one task's paths.
#[derive(Clone, Debug, Default)]
pub struct Model {
    pub paths: BTreeMap<String, PathState>,
    /// Every value ever written, for the integrity check of tainted paths.
    pub written: BTreeSet<Val>,
}

impl Model {
    pub fn new(paths: &[String]) -> Model {
        Model {
            paths: paths
                .iter()
                .map(|p| (p.clone(), PathState::default()))
                .collect(),
            written: BTreeSet::new(),
        }
    }

    fn state(&mut self, p: &str) -> &mut PathState {
        self.paths.entry(p.to_string()).or_default()
    }

    pub fn put(&mut self, p: &str, v: Val, o: Outcome) {
        self.written.insert(v);
        let s = self.state(p);
        match o {
            Outcome::Ok => s.possible = [v].into(),
            Outcome::Unknown => {
                s.possible.insert(v);
            }
            Outcome::TimedOut => {
                s.possible.insert(v);
                s.tainted = true;
            }
        }
    }

    pub fn delete(&mut self, p: &str, o: Outcome) {
        let s = self.state(p);
        match o {
            Outcome::Ok => s.possible = [Val::Absent].into(),
            Outcome::Unknown => {
                s.possible.insert(Val::Absent);
            }
            Outcome::TimedOut => {
                s.possible.insert(Val::Absent);
                s.tainted = true;
            }
        }
    }

    pub fn rename(&mut self, src: &str, dst: &str, o: Outcome) {
        let moved: BTreeSet<Val> = self
            .state(src)
            .possible
            .iter()
            .copied()
            .filter(|v| *v != Val::Absent)
            .collect();
        let src_tainted = self.state(src).tainted;
        match o {
            Outcome::Ok => {
                // It succeeded, so src held one of its non-absent values.
                self.state(dst).possible = moved;
                self.state(dst).tainted |= src_tainted;
                self.state(src).possible = [Val::Absent].into();
            }
            Outcome::Unknown | Outcome::TimedOut => {
                let d = self.state(dst);
                d.possible.extend(moved);
                d.tainted |= src_tainted || o == Outcome::TimedOut;
                let s = self.state(src);
                s.possible.insert(Val::Absent);
                s.tainted |= o == Outcome::TimedOut;
            }
        }
    }

    /// Whether `seen` (read back from the cluster) is allowed at `p`.
    pub fn allows(&self, p: &str, seen: &Val) -> bool {
        match self.paths.get(p) {
            None => *seen == Val::Absent,
            Some(s) if s.tainted => *seen == Val::Absent || self.written.contains(seen),
            Some(s) => s.possible.contains(seen),
        }
    }

    /// The values `p` may hold, for matching bytes read back.
    pub fn candidates(&self, p: &str) -> Vec<Val> {
        match self.paths.get(p) {
            Some(s) if s.tainted => self.written.iter().copied().collect(),
            Some(s) => s.possible.iter().copied().collect(),
            None => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(seed: u64) -> Val {
        Val::Data { seed, len: 10 }
    }

    #[test]
    fn acknowledged_operations_replace_and_unknown_ones_add() {
        let mut m = Model::new(&["/a".into(), "/b".into()]);
        m.put("/a", d(1), Outcome::Ok);
        m.put("/a", d(2), Outcome::Unknown);
        assert!(m.allows("/a", &d(1)) && m.allows("/a", &d(2)));
        assert!(!m.allows("/a", &Val::Absent));
        m.rename("/a", "/b", Outcome::Ok);
        assert!(m.allows("/a", &Val::Absent) && !m.allows("/a", &d(1)));
        assert!(m.allows("/b", &d(1)) && m.allows("/b", &d(2)));
        assert!(!m.allows("/b", &Val::Absent));
        m.delete("/b", Outcome::Unknown);
        assert!(m.allows("/b", &Val::Absent) && m.allows("/b", &d(2)));
        m.put("/b", d(3), Outcome::Ok);
        assert!(!m.allows("/b", &d(2)));
        m.put("/b", d(4), Outcome::TimedOut);
        m.put("/b", d(5), Outcome::Ok);
        // Tainted: any written value, but not bytes nobody wrote.
        assert!(m.allows("/b", &d(1)) && !m.allows("/b", &d(9)));
    }

    #[test]
    fn pattern_is_deterministic_and_seed_dependent() {
        assert_eq!(pattern(1000, 7), pattern(1000, 7));
        assert_ne!(pattern(1000, 7), pattern(1000, 8));
        assert_eq!(pattern(13, 7).len(), 13);
    }
}

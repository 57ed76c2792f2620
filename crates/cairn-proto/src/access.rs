//! Who may send which meta request: the rights of a client identity and
//! what each request needs, in one place. Meta checks [`MetaRequest::needs`]
//! against the caller's [`Rights`] before any handler runs; the audit log
//! names the same paths.

use crate::auth::IdentityId;
use crate::messages::{LockKind, MetaRequest};
use cairn_types::{CairnPath, SYSTEM_DIR};
use serde::{Deserialize, Serialize};

/// One path prefix an identity may use: the path and everything below it,
/// for reading, or for reading and writing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathRight {
    pub path: CairnPath,
    pub write: bool,
}

/// What a client identity may do. The admin client key and storage nodes
/// hold every right; identities hold these.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rights {
    /// Cluster operations (drain, groups, key management, tiers, cues on
    /// `/`) and every path.
    pub admin: bool,
    pub prefixes: Vec<PathRight>,
}

/// A client identity as meta keeps it. Its key is never stored: meta
/// derives it from the cluster secret and the id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityInfo {
    pub name: String,
    pub id: IdentityId,
    pub rights: Rights,
    pub created_ms: u64,
}

/// What one request needs of its sender.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need<'a> {
    /// Any authenticated client.
    Any,
    /// Storage nodes only.
    Node,
    /// Admin identities (and the admin key).
    Admin,
    /// Read `path`.
    Read(&'a CairnPath),
    /// Read `path`, or `path` is a directory on the way to one of the
    /// caller's prefixes (stat and list it; a listing shows only the names
    /// on the way).
    Traverse(&'a CairnPath),
    /// Change `path`.
    Write(&'a CairnPath),
}

impl<'a> Need<'a> {
    pub fn path(&self) -> Option<&'a CairnPath> {
        match *self {
            Need::Read(p) | Need::Traverse(p) | Need::Write(p) => Some(p),
            _ => None,
        }
    }
}

/// Whether `path` is meta's and the gateways' own (`/.cairn`): covered by
/// a prefix only when the prefix itself lies there, so that a right on
/// `/` does not reach S3 secrets.
fn is_system(path: &CairnPath) -> bool {
    path.components().next() == Some(SYSTEM_DIR)
}

impl Rights {
    pub fn all() -> Rights {
        Rights {
            admin: true,
            prefixes: Vec::new(),
        }
    }

    fn covers(right: &PathRight, path: &CairnPath) -> bool {
        path.starts_with(&right.path) && (!is_system(path) || is_system(&right.path))
    }

    /// Whether these rights allow reading (`write` false) or changing `path`.
    pub fn allows(&self, path: &CairnPath, write: bool) -> bool {
        self.admin
            || self
                .prefixes
                .iter()
                .any(|r| (r.write || !write) && Self::covers(r, path))
    }

    /// Whether `path` is a directory strictly above one of the prefixes.
    pub fn leads_to(&self, path: &CairnPath) -> bool {
        self.prefixes
            .iter()
            .any(|r| r.path != *path && r.path.starts_with(path))
    }

    /// Whether the name `name` in the directory `dir` (which the caller
    /// only traverses) is shown: it leads to or is one of the prefixes.
    pub fn shows(&self, dir: &CairnPath, name: &str) -> bool {
        dir.join(name)
            .is_ok_and(|p| self.allows(&p, false) || self.leads_to(&p))
    }

    /// Check `need`; the error says what was refused.
    pub fn check(&self, need: &Need<'_>, who: &str, op: &str) -> cairn_types::Result<()> {
        let ok = match need {
            Need::Any => true,
            Need::Node => false,
            Need::Admin => self.admin,
            Need::Read(p) => self.allows(p, false),
            Need::Traverse(p) => self.allows(p, false) || self.leads_to(p),
            Need::Write(p) => self.allows(p, true),
        };
        if ok {
            return Ok(());
        }
        let what = match need {
            Need::Node => "only storage nodes may".to_string(),
            Need::Admin => "needs an admin identity to".to_string(),
            Need::Read(p) | Need::Traverse(p) => format!("may not read {p} to"),
            Need::Write(p) => format!("may not change {p} to"),
            Need::Any => unreachable!("always allowed"),
        };
        Err(cairn_types::Error::denied(format!(
            "identity {who} {what} {op} (see `cairn key list`)"
        )))
    }
}

impl MetaRequest {
    /// What this request needs of its sender, every item of it. Envelopes
    /// (`As`, `Once`) need what the request inside them needs.
    pub fn needs(&self) -> Vec<Need<'_>> {
        use MetaRequest as R;
        match self {
            R::Register { .. } | R::Heartbeat { .. } | R::CacheReport { .. } => vec![Need::Node],
            R::Config
            | R::ClusterStatus
            | R::Groups
            | R::PrefetchStatus { .. }
            | R::LockSession { .. }
            | R::LockKeepalive { .. }
            | R::LockEnd { .. }
            | R::TierStatus
            // Meta checks that the chunks are the caller's own.
            | R::Discard { .. }
            // Meta verifies a report before acting on it.
            | R::ReportCorrupt { .. }
            | R::ReportMissing { .. } => vec![Need::Any],
            R::Drain { .. }
            | R::SetGroup { .. }
            | R::TierVerify { .. }
            | R::IdentityCreate { .. }
            | R::IdentityList
            | R::IdentityRevoke { .. } => vec![Need::Admin],
            R::Stat { path } | R::List { path, .. } => vec![Need::Traverse(path)],
            R::Open { path, .. }
            | R::OpenVersion { path, .. }
            | R::Versions { path }
            | R::GetCues { path } => vec![Need::Read(path)],
            R::Prefetch { paths, .. } => paths.iter().map(Need::Read).collect(),
            R::Lock { lock, .. } => vec![match lock.kind {
                LockKind::Exclusive => Need::Write(&lock.path),
                LockKind::Shared | LockKind::Unlock => Need::Read(&lock.path),
            }],
            R::LockCancel { lock } | R::TestLock { lock } => vec![Need::Read(&lock.path)],
            R::SetCues { path, .. } if path.is_root() => vec![Need::Admin],
            R::Mkdir { path, .. }
            | R::Remove { path, .. }
            | R::Unlink { path, .. }
            | R::AllocChunk { path, .. }
            | R::CommitFile { path, .. }
            | R::CommitInline { path, .. }
            | R::SetCues { path, .. }
            | R::MakeNode { path, .. }
            | R::SetAttr { path, .. }
            | R::TierRecall { path } => vec![Need::Write(path)],
            R::Rename { src, dst } | R::RenameNoReplace { src, dst } | R::Link { src, dst } => {
                vec![Need::Write(src), Need::Write(dst)]
            }
            R::RenameExchange { a, b } => vec![Need::Write(a), Need::Write(b)],
            R::Compose { dst, sources, .. } => std::iter::once(Need::Write(dst))
                .chain(sources.iter().map(Need::Write))
                .collect(),
            R::As { req, .. } | R::Once { req, .. } => req.needs(),
        }
    }

    /// The paths this request names, in order.
    pub fn paths(&self) -> Vec<&CairnPath> {
        self.needs().iter().filter_map(Need::path).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> CairnPath {
        CairnPath::parse(s).unwrap()
    }

    #[test]
    fn prefixes() {
        let r = Rights {
            admin: false,
            prefixes: vec![
                PathRight {
                    path: p("/fleet/car42"),
                    write: true,
                },
                PathRight {
                    path: p("/datasets"),
                    write: false,
                },
            ],
        };
        assert!(r.allows(&p("/fleet/car42"), true));
        assert!(r.allows(&p("/fleet/car42/logs/a"), true));
        assert!(!r.allows(&p("/fleet/car421"), false));
        assert!(!r.allows(&p("/fleet"), false));
        assert!(r.allows(&p("/datasets/x"), false));
        assert!(!r.allows(&p("/datasets/x"), true));
        assert!(r.leads_to(&p("/")));
        assert!(r.leads_to(&p("/fleet")));
        assert!(!r.leads_to(&p("/fleet/car42")));
        assert!(!r.leads_to(&p("/other")));
        assert!(r.shows(&p("/"), "fleet"));
        assert!(r.shows(&p("/"), "datasets"));
        assert!(!r.shows(&p("/"), "other"));
        assert!(r.shows(&p("/fleet"), "car42"));
        assert!(!r.shows(&p("/fleet"), "car41"));
        let stat = MetaRequest::Stat { path: p("/fleet") };
        assert!(r.check(&stat.needs()[0], "car42", "stat").is_ok());
        let rm = MetaRequest::Remove {
            path: p("/fleet"),
            recursive: true,
        };
        let e = r.check(&rm.needs()[0], "car42", "remove").unwrap_err();
        assert_eq!(e.kind, cairn_types::ErrorKind::PermissionDenied);
        assert!(e.message.contains("car42"), "{e}");
    }

    #[test]
    fn system_paths_need_their_own_prefix() {
        let everything = Rights {
            admin: false,
            prefixes: vec![PathRight {
                path: CairnPath::root(),
                write: true,
            }],
        };
        assert!(everything.allows(&p("/anything/at/all"), true));
        assert!(!everything.allows(&p("/.cairn/s3/keys/CK1"), false));
        assert!(!everything.shows(&CairnPath::root(), ".cairn"));
        let gateway = Rights {
            admin: false,
            prefixes: vec![PathRight {
                path: p("/.cairn/s3"),
                write: true,
            }],
        };
        assert!(gateway.allows(&p("/.cairn/s3/keys/CK1"), false));
        assert!(Rights::all().allows(&p("/.cairn/s3/keys/CK1"), true));
    }

    #[test]
    fn cluster_operations_need_admin() {
        let r = Rights::default();
        for req in [
            MetaRequest::IdentityList,
            MetaRequest::SetCues {
                path: CairnPath::root(),
                cues: Default::default(),
                replace: false,
            },
        ] {
            assert_eq!(req.needs(), vec![Need::Admin]);
            assert!(r.check(&req.needs()[0], "x", "op").is_err());
            assert!(Rights::all().check(&req.needs()[0], "x", "op").is_ok());
        }
        let hb = MetaRequest::Heartbeat {
            node: cairn_types::NodeId(1),
            stats: Default::default(),
        };
        assert!(Rights::all().check(&hb.needs()[0], "x", "op").is_err());
    }
}

//! Semantic cues: the policy of a path, after WheelFS.
//!
//! A [`Cues`] value holds any subset of the cue families; `None` means "not
//! said here, inherit". Cues attach to directories (inherited by everything
//! below), to files, and to single accesses, written inside a path:
//! `/data/.cue/rep=2,lax/logs/run1.bin` or `/data/.maxtime=250,anyversion/f`
//! (see [`split_path_cues`]). WheelFS's names (`.RepLevel=2`, `.EventualConsistency`,
//! ...) are accepted as aliases. Parsing is strict: an unknown name or a bad
//! value is an error, never ignored.
//!
//! Placement, redundancy and writability cues are *persistent*: fixed on a
//! file when it is created ([`Cues::persistent`]). Consistency, timing and read
//! cues apply per operation, from the path or from directories.

use crate::{parse_duration, CairnPath, Error, Result};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Most copies a cue may ask for.
pub const MAX_REP: u8 = 16;

/// How the copies of a chunk are spread over storage nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PlaceScheme {
    /// `rep` distinct live nodes, uniformly at random.
    Random,
    /// Nodes are cut into fixed sets of `rep` in join order; all copies of a
    /// chunk go to one set.
    Buddy,
    /// Each copy to the least-loaded live node (bytes stored, then node id).
    MinCopy,
    /// Copysets: random permutations cut into groups of `rep`.
    Copyset,
    /// Copies in as many different zones as possible.
    Spread,
    /// First copy on the writer's own host, the rest at random.
    Local,
}

impl PlaceScheme {
    pub const ALL: [PlaceScheme; 6] = [
        PlaceScheme::Random,
        PlaceScheme::Buddy,
        PlaceScheme::MinCopy,
        PlaceScheme::Copyset,
        PlaceScheme::Spread,
        PlaceScheme::Local,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PlaceScheme::Random => "random",
            PlaceScheme::Buddy => "buddy",
            PlaceScheme::MinCopy => "min_copy",
            PlaceScheme::Copyset => "copyset",
            PlaceScheme::Spread => "spread",
            PlaceScheme::Local => "local",
        }
    }

    pub fn parse(s: &str) -> Result<PlaceScheme> {
        let norm = normalize(s);
        PlaceScheme::ALL
            .into_iter()
            .find(|p| normalize(p.name()) == norm)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "unknown placement scheme {s:?}; one of random, buddy, min_copy, copyset, spread, local"
                ))
            })
    }
}

impl fmt::Display for PlaceScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether metadata may be served from a client's cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Consistency {
    /// Every open sees the newest committed version.
    Strict,
    /// Cached metadata may be used for up to `maxtime` (or a few seconds).
    Lax,
}

/// Which version a read returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum VersionPolicy {
    /// The newest committed version, asking meta.
    Latest,
    /// Any version this client has, without asking meta if it has one.
    AnyVersion,
    /// The newest version reachable within `maxtime`.
    BestVersion,
}

/// Whether a file may change after it is created.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Writability {
    /// Created once, never modified; cacheable forever.
    WriteOnce,
    WriteMany,
}

/// A set of cues; `None` fields are not set here and come from the parent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Cues {
    /// Copies per chunk.
    pub rep: Option<u8>,
    /// Copies durable before a write is acknowledged; the rest follow in the
    /// background. Under `ec`, shards (K+1 to K+M; see [`crate::EcScheme::sync`]).
    pub sync: Option<u8>,
    pub place: Option<PlaceScheme>,
    /// Keep all copies in this zone.
    pub site: Option<String>,
    /// Spread copies over this many zones.
    pub rep_sites: Option<u8>,
    /// All chunks of a file (or of a directory subtree) on one node set.
    pub keep_together: Option<bool>,
    pub consistency: Option<Consistency>,
    pub version: Option<VersionPolicy>,
    /// How long an operation waits on unreachable nodes, in milliseconds.
    pub maxtime_ms: Option<u64>,
    pub writability: Option<Writability>,
    /// Fetch the whole file on first read.
    pub wholefile: Option<bool>,
    /// Cooperative reads (WheelFS `.Hotspot`): a reader on a host with a
    /// storage node reads through that node, which keeps a cache copy and
    /// serves it on to every later reader.
    pub hotspot: Option<bool>,
    /// `hot=GROUP`: every committed version is prefetched to every node of
    /// the group (a cache copy of each chunk). Last, so records written
    /// before it end where it begins.
    pub hot: Option<String>,
    /// `inline=SIZE`: a file of at most this many bytes keeps them in its
    /// metadata record instead of chunks (one meta transaction to write,
    /// none to a storage node); 0 turns it off. Unset: the cluster's
    /// default. At most [`MAX_INLINE`]. Last, so records written before it
    /// end where it begins.
    pub inline: Option<u32>,
    /// `ec=K+M`: chunks are erasure-coded into K data and M parity shards
    /// on K+M distinct nodes instead of replicated; exclusive with `rep`
    /// (setting one clears the other where cues are merged). Last; in an
    /// inode record, after every older field of the inode (see
    /// [`crate::Inode`]).
    pub ec: Option<crate::EcScheme>,
    /// `tier=local` (stay on storage nodes) or `tier=remote:NAME` (the
    /// bytes live in remote store NAME; copies on nodes are cache). Last,
    /// with `cold_after`, in an inode record.
    pub tier: Option<Tier>,
    /// `cold_after=DURATION`: a file neither read nor written for this long
    /// moves to the remote store (`tier=remote:NAME`, else the cluster's
    /// first). `tier=local` pins a file whatever this says.
    pub cold_after_ms: Option<u64>,
    /// `versions=N`: a file replaced by a new version keeps its N newest
    /// older versions, readable by number until a newer one pushes them
    /// out (`versions=all`: every one, [`KEEP_ALL_VERSIONS`]); 0 or unset:
    /// a replaced version is collected after the gc delay. Removing the
    /// file removes them with it. Not fixed on a file at creation: a
    /// directory's applies to the files below it as it is now (S3
    /// versioning turned on for a bucket of existing objects); set on a
    /// file, it overrides. Last, in an inode record.
    pub versions: Option<u32>,
}

/// `versions=all`: no older version of a file is ever pushed out.
pub const KEEP_ALL_VERSIONS: u32 = u32::MAX;

/// Where a file's bytes live: the `tier=` cue.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Tier {
    /// On storage nodes, never offloaded.
    Local,
    /// In the named remote store; node copies are cache.
    Remote(String),
    /// On storage nodes, erasure-coded with this scheme once cold (the
    /// cold policy with `cold_after=`: replicated while hot).
    Ec(crate::EcScheme),
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tier::Local => f.write_str("local"),
            Tier::Remote(n) => write!(f, "remote:{n}"),
            Tier::Ec(e) => write!(f, "ec:{e}"),
        }
    }
}

impl std::str::FromStr for Tier {
    type Err = Error;
    fn from_str(s: &str) -> Result<Tier> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("local") {
            return Ok(Tier::Local);
        }
        match s.split_once(':') {
            Some((r, name)) if r.eq_ignore_ascii_case("remote") => Ok(Tier::Remote(
                crate::check_tier_name(name.trim())?.to_string(),
            )),
            Some((e, scheme)) if e.eq_ignore_ascii_case("ec") => Ok(Tier::Ec(scheme.parse()?)),
            _ => Err(Error::invalid(format!(
                "cue tier={s}: use tier=local, tier=remote:NAME (NAME a store given to meta with \
                 --tier) or tier=ec:K+M (erasure-coded once cold_after= has passed)"
            ))),
        }
    }
}

/// The largest `inline=` a path may ask for: small enough that meta's store
/// (etcd's request limit above all) and a listing page stay small.
pub const MAX_INLINE: u32 = 64 * 1024;

/// Canonical cue names, for error messages and help.
pub const CUE_NAMES: &str = "rep=N, sync=N, place=random|buddy|min_copy|copyset|spread|local, \
site=ZONE, rep_sites=N, keep_together, strict, lax, latest, anyversion, bestversion, \
maxtime=MS, writeonce, writemany, wholefile, hotspot, hot=GROUP, inline=SIZE, ec=K+M, \
tier=local|remote:NAME, cold_after=DURATION, versions=N|all \
(WheelFS aliases: .RepLevel, .SyncLevel, .Site, .KeepTogether, .RepSites, \
.EventualConsistency, .MaxTime, .WholeFile, .Hotspot, .WriteOnce, .AnyVersion, .BestVersion, .Lax)";

/// Lower case without `_`, `-` or a leading `.`, so `.RepLevel`, `rep_level`
/// and `replevel` compare equal.
fn normalize(s: &str) -> String {
    s.trim()
        .trim_start_matches('.')
        .chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

/// The canonical name a (normalized) cue name stands for.
fn canonical(norm: &str) -> Option<&'static str> {
    Some(match norm {
        "rep" | "replevel" => "rep",
        "sync" | "synclevel" => "sync",
        "place" | "placement" => "place",
        "site" => "site",
        "repsites" => "rep_sites",
        "keeptogether" => "keep_together",
        "strict" | "strictconsistency" => "strict",
        "lax" | "eventualconsistency" => "lax",
        "latest" | "latestversion" => "latest",
        "anyversion" => "anyversion",
        "bestversion" => "bestversion",
        "maxtime" => "maxtime",
        "writeonce" => "writeonce",
        "writemany" => "writemany",
        "wholefile" => "wholefile",
        "hotspot" => "hotspot",
        // Bare `hot` stays the old alias of hotspot; `hot=GROUP` names a group.
        "hot" => "hot",
        "inline" => "inline",
        "ec" | "erasure" => "ec",
        "tier" => "tier",
        "coldafter" => "cold_after",
        "versions" | "keepversions" => "versions",
        _ => return None,
    })
}

/// Whether `item` (`name` or `name=value`) names a known cue.
fn is_cue_item(item: &str) -> bool {
    let name = item.split_once('=').map_or(item, |(n, _)| n);
    canonical(&normalize(name)).is_some()
}

fn parse_count(name: &str, v: Option<&str>) -> Result<u8> {
    let v = v.ok_or_else(|| Error::invalid(format!("cue {name} needs a value, as {name}=2")))?;
    match v.trim().parse::<u8>() {
        Ok(n) if (1..=MAX_REP).contains(&n) => Ok(n),
        _ => Err(Error::invalid(format!(
            "cue {name}={v}: expected a whole number from 1 to {MAX_REP}"
        ))),
    }
}

fn parse_flag(name: &str, v: Option<&str>) -> Result<bool> {
    match v.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
        None | Some("true") | Some("1") | Some("yes") => Ok(true),
        Some("false") | Some("0") | Some("no") => Ok(false),
        Some(other) => Err(Error::invalid(format!(
            "cue {name}={other}: a flag takes no value, or true/false"
        ))),
    }
}

fn no_value(name: &str, v: Option<&str>) -> Result<()> {
    match v {
        None => Ok(()),
        Some(v) => Err(Error::invalid(format!(
            "cue {name} takes no value (got {name}={v})"
        ))),
    }
}

impl Cues {
    /// Parse a comma-separated cue list: `rep=2,place=buddy,lax`. Items may
    /// carry WheelFS's leading dot. Empty items are ignored; the empty string
    /// is no cues. Later items override earlier ones.
    pub fn parse(list: &str) -> Result<Cues> {
        let mut c = Cues::default();
        for item in list.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            c.apply_item(item)?;
        }
        Ok(c)
    }

    fn apply_item(&mut self, item: &str) -> Result<()> {
        let (name, value) = match item.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (item, None),
        };
        let Some(canon) = canonical(&normalize(name)) else {
            return Err(Error::invalid(format!(
                "unknown cue {name:?}; known cues: {CUE_NAMES}"
            )));
        };
        match canon {
            "rep" => {
                self.rep = Some(parse_count(canon, value)?);
                self.ec = None;
            }
            "ec" => {
                let v = value.ok_or_else(|| Error::invalid("cue ec needs a value, as ec=4+2"))?;
                self.ec = Some(v.parse()?);
                self.rep = None;
            }
            "tier" => {
                let v = value.ok_or_else(|| {
                    Error::invalid("cue tier needs a value, as tier=local or tier=remote:NAME")
                })?;
                self.tier = Some(v.parse()?);
            }
            "cold_after" => {
                let v = value.map(str::trim).ok_or_else(|| {
                    Error::invalid("cue cold_after needs a duration, as cold_after=7d")
                })?;
                let d = parse_duration(v).map_err(|e| e.context(format!("cue cold_after={v}")))?;
                self.cold_after_ms = Some(d.as_millis() as u64);
            }
            "versions" => {
                let v = value.map(str::trim).ok_or_else(|| {
                    Error::invalid("cue versions needs a count, as versions=10 or versions=all")
                })?;
                self.versions = Some(if v.eq_ignore_ascii_case("all") {
                    KEEP_ALL_VERSIONS
                } else {
                    match v.parse::<u32>() {
                        Ok(n) if n < KEEP_ALL_VERSIONS => n,
                        _ => {
                            return Err(Error::invalid(format!(
                                "cue versions={v}: give how many older versions to keep \
                                 (0 for none), or all"
                            )))
                        }
                    }
                });
            }
            "sync" => self.sync = Some(parse_count(canon, value)?),
            "rep_sites" => self.rep_sites = Some(parse_count(canon, value)?),
            "place" => {
                let v = value
                    .ok_or_else(|| Error::invalid("cue place needs a value, as place=buddy"))?;
                self.place = Some(PlaceScheme::parse(v)?);
            }
            "site" => {
                let v = value.map(str::trim).unwrap_or("");
                if v.is_empty() || v.contains(['/', ',', '=']) {
                    return Err(Error::invalid(format!(
                        "cue site needs a zone name without '/', ',' or '=', as site=rack1 (got {item:?})"
                    )));
                }
                self.site = Some(v.to_string());
            }
            "keep_together" => self.keep_together = Some(parse_flag(canon, value)?),
            "wholefile" => self.wholefile = Some(parse_flag(canon, value)?),
            "hotspot" => self.hotspot = Some(parse_flag(canon, value)?),
            "hot" => match value.map(str::trim) {
                None => self.hotspot = Some(true),
                Some(g) => self.hot = Some(crate::check_group_name(g)?.to_string()),
            },
            "strict" | "lax" => {
                no_value(canon, value)?;
                self.consistency = Some(if canon == "strict" {
                    Consistency::Strict
                } else {
                    Consistency::Lax
                });
            }
            "latest" | "anyversion" | "bestversion" => {
                no_value(canon, value)?;
                self.version = Some(match canon {
                    "latest" => VersionPolicy::Latest,
                    "anyversion" => VersionPolicy::AnyVersion,
                    _ => VersionPolicy::BestVersion,
                });
            }
            "writeonce" | "writemany" => {
                no_value(canon, value)?;
                self.writability = Some(if canon == "writeonce" {
                    Writability::WriteOnce
                } else {
                    Writability::WriteMany
                });
            }
            "inline" => {
                let v = value.map(str::trim).ok_or_else(|| {
                    Error::invalid("cue inline needs a size, as inline=4KiB (0 turns it off)")
                })?;
                let n = crate::parse_size(v).map_err(|e| e.context(format!("cue inline={v}")))?;
                if n > MAX_INLINE as u64 {
                    return Err(Error::invalid(format!(
                        "cue inline={v}: at most {MAX_INLINE} bytes (64KiB) are kept in metadata"
                    )));
                }
                self.inline = Some(n as u32);
            }
            "maxtime" => {
                let v = value.map(str::trim).ok_or_else(|| {
                    Error::invalid("cue maxtime needs a value, as maxtime=250 (ms) or maxtime=2s")
                })?;
                let ms = match v.parse::<u64>() {
                    Ok(ms) => ms,
                    Err(_) => parse_duration(v)
                        .map_err(|e| e.context(format!("cue maxtime={v}")))?
                        .as_millis() as u64,
                };
                if ms == 0 {
                    return Err(Error::invalid("cue maxtime must be more than 0 ms"));
                }
                self.maxtime_ms = Some(ms);
            }
            _ => unreachable!("every canonical name is handled"),
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        *self == Cues::default()
    }

    /// `self` overridden by whatever `child` sets.
    pub fn merge(&self, child: &Cues) -> Cues {
        Cues {
            // Redundancy is one choice: whichever the child makes wins.
            rep: if child.ec.is_some() && child.rep.is_none() {
                None
            } else {
                child.rep.or(self.rep)
            },
            sync: child.sync.or(self.sync),
            place: child.place.or(self.place),
            site: child.site.clone().or_else(|| self.site.clone()),
            rep_sites: child.rep_sites.or(self.rep_sites),
            keep_together: child.keep_together.or(self.keep_together),
            consistency: child.consistency.or(self.consistency),
            version: child.version.or(self.version),
            maxtime_ms: child.maxtime_ms.or(self.maxtime_ms),
            writability: child.writability.or(self.writability),
            wholefile: child.wholefile.or(self.wholefile),
            hotspot: child.hotspot.or(self.hotspot),
            hot: child.hot.clone().or_else(|| self.hot.clone()),
            inline: child.inline.or(self.inline),
            ec: match (child.rep, child.ec) {
                (Some(_), None) => None,
                (_, ec) => ec.or(self.ec),
            },
            tier: child.tier.clone().or_else(|| self.tier.clone()),
            cold_after_ms: child.cold_after_ms.or(self.cold_after_ms),
            versions: child.versions.or(self.versions),
        }
    }

    /// The cues fixed on a file when it is created: redundancy, durability,
    /// placement and writability.
    pub fn persistent(&self) -> Cues {
        Cues {
            rep: self.rep,
            sync: self.sync,
            place: self.place,
            site: self.site.clone(),
            rep_sites: self.rep_sites,
            keep_together: self.keep_together,
            writability: self.writability,
            hot: self.hot.clone(),
            ec: self.ec,
            tier: self.tier.clone(),
            cold_after_ms: self.cold_after_ms,
            ..Cues::default()
        }
    }

    /// The cues that apply per operation: consistency, timing, reading,
    /// and whether this write may be kept inline (a directory's `inline=`
    /// applies to every write below it; a writer's to its own write).
    pub fn per_operation(&self) -> Cues {
        Cues {
            inline: self.inline,
            consistency: self.consistency,
            version: self.version,
            maxtime_ms: self.maxtime_ms,
            wholefile: self.wholefile,
            hotspot: self.hotspot,
            ..Cues::default()
        }
    }

    /// Whether this set is self-consistent once `default_rep` fills an unset
    /// `rep`: `sync` no more than `rep` (no more than K+M under `ec`).
    pub fn check(&self, default_rep: u8) -> Result<()> {
        if let (Some(rep), Some(ec)) = (self.rep, self.ec) {
            return Err(Error::invalid(format!(
                "cues rep={rep} and ec={ec} contradict: a chunk is replicated or erasure-coded"
            )));
        }
        if let (Some(Tier::Ec(e)), None) = (&self.tier, self.cold_after_ms) {
            return Err(Error::invalid(format!(
                "cue tier=ec:{e} is a cold policy: give cold_after= too (or ec={e} for every file)"
            )));
        }
        let rep = self.rep.unwrap_or(default_rep);
        // Under `ec`, `sync` counts shards: K+1 to K+M (one below K+1 is
        // raised to it, see EcScheme::sync).
        if let (Some(sync), Some(ec)) = (self.sync, self.ec) {
            if sync as usize > ec.shards() {
                return Err(Error::invalid(format!(
                    "cue sync={sync} asks for more durable shards than ec={ec} makes ({})",
                    ec.shards()
                )));
            }
        }
        if let Some(sync) = self.sync.filter(|_| self.ec.is_none()) {
            if sync > rep {
                return Err(Error::invalid(format!(
                    "cue sync={sync} asks for more durable copies than rep={rep}"
                )));
            }
        }
        if let (Some(sites), Some(site)) = (self.rep_sites, &self.site) {
            if sites > 1 {
                return Err(Error::invalid(format!(
                    "cues site={site} and rep_sites={sites} contradict: one zone cannot be {sites} zones"
                )));
            }
        }
        Ok(())
    }

    /// Whether these cues say where a file's bytes must be (a zone, zones,
    /// a placement scheme): such a file stays on storage nodes, never
    /// inline in meta's record.
    pub fn pins_placement(&self) -> bool {
        self.site.is_some() || self.rep_sites.is_some() || self.place.is_some()
    }

    pub fn is_write_once(&self) -> bool {
        self.writability == Some(Writability::WriteOnce)
    }
}

impl fmt::Display for Cues {
    /// The canonical list, `rep=2,place=buddy,lax`; empty for no cues.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut items: Vec<String> = Vec::new();
        let flag = |name: &str, v: Option<bool>| match v {
            Some(true) => Some(name.to_string()),
            Some(false) => Some(format!("{name}=false")),
            None => None,
        };
        if let Some(n) = self.rep {
            items.push(format!("rep={n}"));
        }
        if let Some(n) = self.sync {
            items.push(format!("sync={n}"));
        }
        if let Some(p) = self.place {
            items.push(format!("place={p}"));
        }
        if let Some(s) = &self.site {
            items.push(format!("site={s}"));
        }
        if let Some(n) = self.rep_sites {
            items.push(format!("rep_sites={n}"));
        }
        items.extend(flag("keep_together", self.keep_together));
        if let Some(c) = self.consistency {
            items.push(match c {
                Consistency::Strict => "strict".into(),
                Consistency::Lax => "lax".into(),
            });
        }
        if let Some(v) = self.version {
            items.push(match v {
                VersionPolicy::Latest => "latest".into(),
                VersionPolicy::AnyVersion => "anyversion".into(),
                VersionPolicy::BestVersion => "bestversion".into(),
            });
        }
        if let Some(ms) = self.maxtime_ms {
            items.push(format!("maxtime={ms}"));
        }
        if let Some(w) = self.writability {
            items.push(match w {
                Writability::WriteOnce => "writeonce".into(),
                Writability::WriteMany => "writemany".into(),
            });
        }
        items.extend(flag("wholefile", self.wholefile));
        items.extend(flag("hotspot", self.hotspot));
        if let Some(g) = &self.hot {
            items.push(format!("hot={g}"));
        }
        if let Some(n) = self.inline {
            items.push(format!("inline={n}"));
        }
        if let Some(ec) = self.ec {
            items.push(format!("ec={ec}"));
        }
        if let Some(t) = &self.tier {
            items.push(format!("tier={t}"));
        }
        if let Some(ms) = self.cold_after_ms {
            items.push(format!("cold_after={}", crate::format_duration_ms(ms)));
        }
        match self.versions {
            Some(KEEP_ALL_VERSIONS) => items.push("versions=all".into()),
            Some(n) => items.push(format!("versions={n}")),
            None => {}
        }
        f.write_str(&items.join(","))
    }
}

/// The path component that introduces a cue list: `/data/.cue/rep=2/f`.
pub const CUE_DIR: &str = ".cue";

/// The cues of one path component when it is a cue component of its own:
/// one that starts with `.` and whose first item names a known cue
/// (`.maxtime=250,anyversion`, `.RepLevel=2`). `None` for ordinary names
/// (`.git`, `.bashrc`, `data`) and for [`CUE_DIR`], which introduces the
/// next component instead; `Some(Err)` when the list is malformed.
pub fn component_cues(part: &str) -> Option<Result<Cues>> {
    (part != CUE_DIR
        && part.starts_with('.')
        && part.len() > 1
        && is_cue_item(part.split(',').next().unwrap_or("")))
    .then(|| Cues::parse(part))
}

/// Split the cue components out of a raw path: `.cue/LIST` (the component
/// after `.cue` is a cue list) or a component that starts with `.` and whose
/// first item names a known cue (`.maxtime=250,anyversion`, `.RepLevel=2`).
/// Returns the path without them and the cues, later components overriding
/// earlier ones. Other dot names (`.git`, `.bashrc`) are ordinary names; a
/// file literally named like a cue (`.lax`) cannot be addressed by path.
pub fn split_path_cues(raw: &str) -> Result<(CairnPath, Cues)> {
    let mut cues = Cues::default();
    let mut kept: Vec<&str> = Vec::new();
    let mut parts = raw.split('/');
    while let Some(part) = parts.next() {
        if part == CUE_DIR {
            let list = parts.next().filter(|l| !l.is_empty()).ok_or_else(|| {
                Error::invalid(format!(
                    "path {raw:?}: '.cue' must be followed by a cue list, as /data/.cue/rep=2,lax/file"
                ))
            })?;
            let c = Cues::parse(list).map_err(|e| e.context(format!("path {raw:?}")))?;
            cues = cues.merge(&c);
        } else if let Some(c) = component_cues(part) {
            let c = c.map_err(|e| e.context(format!("path {raw:?}")))?;
            cues = cues.merge(&c);
        } else {
            kept.push(part);
        }
    }
    let joined = kept.join("/");
    let path = if joined.is_empty() || joined.chars().all(|c| c == '/') {
        CairnPath::root()
    } else {
        CairnPath::parse(&joined)?
    };
    Ok((path, cues))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ec_and_rep_are_one_choice() {
        let c = Cues::parse("ec=4+2").unwrap();
        assert_eq!(c.ec, Some(crate::EcScheme { k: 4, m: 2 }));
        assert_eq!(c.to_string(), "ec=4+2");
        // Later items win within a list, the child over its parent.
        assert_eq!(Cues::parse("ec=4+2,rep=3").unwrap().ec, None);
        assert_eq!(Cues::parse("rep=3,ec=4+2").unwrap().rep, None);
        let dir = Cues::parse("ec=8+3").unwrap();
        let file = dir.merge(&Cues::parse("rep=2").unwrap());
        assert_eq!((file.rep, file.ec), (Some(2), None));
        let back = file.merge(&Cues::parse("ec=4+2").unwrap());
        assert_eq!(
            (back.rep, back.ec.map(|e| e.to_string())),
            (None, Some("4+2".into()))
        );
        assert_eq!(dir.merge(&Cues::parse("lax").unwrap()).ec, dir.ec);
        assert_eq!(
            Cues::parse("ec=4+2").unwrap().persistent().ec,
            dir.ec.map(|_| crate::EcScheme { k: 4, m: 2 })
        );
        let both = Cues {
            rep: Some(2),
            ..Cues::parse("ec=4+2").unwrap()
        };
        assert!(both.check(3).unwrap_err().message.contains("contradict"));
        Cues::parse("ec=4+2,sync=5").unwrap().check(3).unwrap();
        let e = Cues::parse("ec=4+2,sync=7").unwrap().check(3).unwrap_err();
        assert!(e.message.contains("more durable shards"), "{e}");
        let scheme = crate::EcScheme::new(4, 2).unwrap();
        assert_eq!(scheme.sync(None), 6);
        assert_eq!(scheme.sync(Some(5)), 5);
        assert_eq!(scheme.sync(Some(2)), 5, "raised to K+1");
        for bad in ["ec", "ec=3+0", "ec=40+10", "ec=4"] {
            let e = Cues::parse(bad).unwrap_err();
            assert_eq!(e.kind, crate::ErrorKind::InvalidInput, "{bad}: {e}");
        }
    }

    #[test]
    fn inline_takes_a_size_up_to_the_cap() {
        assert_eq!(Cues::parse("inline=4KiB").unwrap().inline, Some(4096));
        assert_eq!(Cues::parse("inline=0").unwrap().inline, Some(0));
        assert_eq!(
            Cues::parse("inline=65536").unwrap().inline,
            Some(MAX_INLINE)
        );
        for bad in ["inline", "inline=65537", "inline=1MiB", "inline=lots"] {
            let e = Cues::parse(bad).unwrap_err();
            assert_eq!(e.kind, crate::ErrorKind::InvalidInput, "{bad}: {e}");
        }
        assert_eq!(
            Cues::parse("inline=4KiB").unwrap().to_string(),
            "inline=4096"
        );
    }

    #[test]
    fn tier_cues_parse_and_reject_bad_values() {
        let c = Cues::parse("tier=remote:cold,cold_after=7d").unwrap();
        assert_eq!(c.tier, Some(Tier::Remote("cold".into())));
        assert_eq!(c.cold_after_ms, Some(7 * 86_400_000));
        assert_eq!(c.to_string(), "tier=remote:cold,cold_after=7d");
        assert_eq!(Cues::parse("tier=local").unwrap().tier, Some(Tier::Local));
        let cold = Cues::parse("cold_after=30d,tier=ec:8+3").unwrap();
        assert_eq!(cold.tier, Some(Tier::Ec(crate::EcScheme { k: 8, m: 3 })));
        assert_eq!(cold.to_string(), "tier=ec:8+3,cold_after=30d");
        assert!(cold.check(3).is_ok());
        let e = Cues::parse("tier=ec:4+2").unwrap().check(3).unwrap_err();
        assert!(e.message.contains("cold_after"), "{e}");
        assert!(Cues::parse("tier=ec:4+0").is_err());
        // Both are fixed on a file at creation, like rep.
        assert_eq!(c.persistent(), c);
        for bad in [
            "tier",
            "tier=far",
            "tier=remote:",
            "tier=remote:a/b",
            "cold_after",
            "cold_after=soon",
        ] {
            let e = Cues::parse(bad).unwrap_err();
            assert_eq!(e.kind, crate::ErrorKind::InvalidInput, "{bad}");
        }
    }

    #[test]
    fn parses_canonical_names_and_aliases() {
        let c = Cues::parse("rep=2,place=buddy,lax,maxtime=250").unwrap();
        assert_eq!(c.rep, Some(2));
        assert_eq!(c.place, Some(PlaceScheme::Buddy));
        assert_eq!(c.consistency, Some(Consistency::Lax));
        assert_eq!(c.maxtime_ms, Some(250));
        let w = Cues::parse(
            ".RepLevel=3,.SyncLevel=2,.Site=rack1,.KeepTogether,.EventualConsistency,.MaxTime=1s,.WholeFile,.Hotspot,.WriteOnce,.AnyVersion",
        )
        .unwrap();
        assert_eq!(w.rep, Some(3));
        assert_eq!(w.sync, Some(2));
        assert_eq!(w.site.as_deref(), Some("rack1"));
        assert_eq!(w.keep_together, Some(true));
        assert_eq!(w.consistency, Some(Consistency::Lax));
        assert_eq!(w.maxtime_ms, Some(1000));
        assert_eq!(w.wholefile, Some(true));
        assert_eq!(w.hotspot, Some(true));
        assert!(w.is_write_once());
        assert_eq!(w.version, Some(VersionPolicy::AnyVersion));
        assert_eq!(
            Cues::parse(".RepSites=2,.BestVersion").unwrap().rep_sites,
            Some(2)
        );
        assert_eq!(
            Cues::parse("place=MinCopy").unwrap().place,
            Some(PlaceScheme::MinCopy)
        );
        assert!(Cues::parse("").unwrap().is_empty());
    }

    #[test]
    fn rejects_bad_cues_with_a_reason() {
        for (bad, says) in [
            ("rep=0", "1 to 16"),
            ("rep=17", "1 to 16"),
            ("rep=two", "whole number"),
            ("rep", "needs a value"),
            ("place=nearest", "unknown placement scheme"),
            ("colour=red", "unknown cue"),
            ("lax=1", "takes no value"),
            ("maxtime=soon", "maxtime"),
            ("maxtime=0", "more than 0"),
            ("keep_together=maybe", "true/false"),
            ("site=", "zone name"),
        ] {
            let e = Cues::parse(bad).unwrap_err();
            assert!(e.message.contains(says), "{bad}: {e}");
        }
        assert!(Cues::parse("rep=2,sync=3").unwrap().check(3).is_err());
        assert!(Cues::parse("sync=3").unwrap().check(2).is_err());
        assert!(Cues::parse("sync=2").unwrap().check(3).is_ok());
        assert!(Cues::parse("site=a,rep_sites=2").unwrap().check(3).is_err());
    }

    #[test]
    fn path_cues_are_stripped_and_collected() {
        let (p, c) = split_path_cues("/data/.cue/rep=2,lax/logs/run1.bin").unwrap();
        assert_eq!(p.as_str(), "/data/logs/run1.bin");
        assert_eq!(c.rep, Some(2));
        assert_eq!(c.consistency, Some(Consistency::Lax));
        let (p, c) = split_path_cues("/data/.maxtime=250,anyversion/file").unwrap();
        assert_eq!(p.as_str(), "/data/file");
        assert_eq!(c.maxtime_ms, Some(250));
        assert_eq!(c.version, Some(VersionPolicy::AnyVersion));
        let (p, c) = split_path_cues("/w/.EventualConsistency/.MaxTime=100/.git/x").unwrap();
        assert_eq!(p.as_str(), "/w/.git/x");
        assert_eq!(c.consistency, Some(Consistency::Lax));
        assert_eq!(c.maxtime_ms, Some(100));
        let (p, c) = split_path_cues("/.cue/rep=1/").unwrap();
        assert!(p.is_root());
        assert_eq!(c.rep, Some(1));
        // Later components override earlier ones.
        let (_, c) = split_path_cues("/.cue/rep=1/a/.RepLevel=3/b").unwrap();
        assert_eq!(c.rep, Some(3));
        assert!(split_path_cues("/data/.cue/").is_err());
        assert!(split_path_cues("/data/.cue").is_err());
        let e = split_path_cues("/data/.cue/rep=2,colour=red/f").unwrap_err();
        assert!(e.message.contains("unknown cue"), "{e}");
        assert!(e.message.contains("/data/.cue/"), "{e}");
        assert!(split_path_cues("/data/.maxtime=soon/f").is_err());
        assert!(component_cues(".git").is_none());
        assert!(component_cues(".cue").is_none());
        assert!(component_cues("lax").is_none());
        assert_eq!(
            component_cues(".RepLevel=2,lax").unwrap().unwrap().rep,
            Some(2)
        );
        assert!(component_cues(".maxtime=soon").unwrap().is_err());
        let (p, c) = split_path_cues("/home/.bashrc").unwrap();
        assert_eq!(p.as_str(), "/home/.bashrc");
        assert!(c.is_empty());
    }

    fn arb_cues() -> impl Strategy<Value = Cues> {
        let count = proptest::option::of(1u8..=MAX_REP);
        (
            (
                count.clone(),
                count.clone(),
                proptest::option::of(0usize..6),
            ),
            (
                proptest::option::of("[a-z][a-z0-9]{0,6}"),
                count,
                proptest::option::of(any::<bool>()),
            ),
            (
                proptest::option::of(any::<bool>()),
                proptest::option::of(0u8..3),
                proptest::option::of(1u64..100_000),
            ),
            (
                proptest::option::of(any::<bool>()),
                proptest::option::of(any::<bool>()),
                proptest::option::of(any::<bool>()),
            ),
        )
            .prop_map(
                |((rep, sync, place), (site, rep_sites, kt), (strict, ver, mt), (wo, wf, hs))| {
                    Cues {
                        rep,
                        sync,
                        place: place.map(|i| PlaceScheme::ALL[i]),
                        site,
                        rep_sites,
                        keep_together: kt,
                        consistency: strict.map(|s| {
                            if s {
                                Consistency::Strict
                            } else {
                                Consistency::Lax
                            }
                        }),
                        version: ver.map(|v| match v {
                            0 => VersionPolicy::Latest,
                            1 => VersionPolicy::AnyVersion,
                            _ => VersionPolicy::BestVersion,
                        }),
                        maxtime_ms: mt,
                        writability: wo.map(|w| {
                            if w {
                                Writability::WriteOnce
                            } else {
                                Writability::WriteMany
                            }
                        }),
                        wholefile: wf,
                        hotspot: hs,
                        hot: hs.filter(|h| *h).map(|_| "gpu-1.a_b".to_string()),
                        inline: mt.map(|m| (m % (MAX_INLINE as u64 + 1)) as u32),
                        // Exclusive with rep: only where rep is unset.
                        ec: kt.filter(|_| rep.is_none()).map(|t| crate::EcScheme {
                            k: if t { 4 } else { 8 },
                            m: if t { 2 } else { 3 },
                        }),
                        tier: wf.map(|w| match (w, hs) {
                            (true, _) => Tier::Local,
                            (false, Some(true)) => Tier::Ec(crate::EcScheme { k: 6, m: 3 }),
                            (false, _) => Tier::Remote("cold-1".into()),
                        }),
                        cold_after_ms: mt.map(|m| m * 1000),
                        versions: rep_sites.map(|n| match n {
                            1 => KEEP_ALL_VERSIONS,
                            n => u32::from(n) - 2,
                        }),
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn display_parses_back(c in arb_cues()) {
            prop_assert_eq!(Cues::parse(&c.to_string()).unwrap(), c);
        }

        #[test]
        fn merge_is_override_and_associative(a in arb_cues(), b in arb_cues(), c in arb_cues()) {
            // Child values win; unset child values inherit.
            let m = a.merge(&b);
            // ... and redundancy is one choice, rep or ec.
            let (rep, ec) = if b.rep.is_some() || b.ec.is_some() { (b.rep, b.ec) } else { (a.rep, a.ec) };
            prop_assert_eq!((m.rep, m.ec), (rep, ec));
            prop_assert_eq!(&m.site, &b.site.clone().or(a.site.clone()));
            prop_assert_eq!(a.merge(&b).merge(&c), a.merge(&b.merge(&c)));
            prop_assert_eq!(Cues::default().merge(&a), a.clone());
            prop_assert_eq!(a.merge(&Cues::default()), a.clone());
            // The two halves together are the whole, but for `versions`,
            // which is neither: meta reads it where it is set.
            let whole = Cues { versions: None, ..a.clone() };
            prop_assert_eq!(a.persistent().merge(&a.per_operation()), whole);
        }

        #[test]
        fn path_cue_components_never_change_the_path(c in arb_cues(), dirs in proptest::collection::vec("[a-z]{1,8}", 1..4)) {
            let plain = format!("/{}", dirs.join("/"));
            let with = if c.is_empty() {
                plain.clone()
            } else {
                format!("/{}/.cue/{}/{}", dirs[0], c, dirs[1..].join("/"))
            };
            let (p, got) = split_path_cues(&with).unwrap();
            prop_assert_eq!(p.as_str(), plain.as_str());
            prop_assert_eq!(got, c);
        }
    }
}

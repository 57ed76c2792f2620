//! Object listing in S3 order over a tree of directories.
//!
//! S3 lists keys in byte order; a depth-first walk in name order is not
//! that order, because a directory `d` holds keys `d/...` that sort after
//! its siblings `d-x` or `d.txt` ('-' and '.' sort before '/'). So each
//! directory found is held back until the walk passes `d/`, on a small
//! stack per level (bounded by the name length). Listing from a key (a
//! continuation token, `start-after`, `marker`) seeks to it: it never
//! re-walks what came before.

use crate::error::{s3_err, Missing};
use cairn_client::Client;
use cairn_types::{CairnPath, DirEntry, ErrorKind, Inode, InodeKind, Result};
use s3s::S3Result;
use std::collections::VecDeque;

const PAGE: u32 = 1000;

/// What to list.
pub struct Query {
    pub prefix: String,
    pub delimiter: Option<String>,
    /// List only keys (and common prefixes) after this one.
    pub after: Option<String>,
    pub max_keys: usize,
}

#[derive(Default, Debug)]
pub struct Listing {
    pub objects: Vec<(String, Inode)>,
    pub prefixes: Vec<String>,
    pub truncated: bool,
    /// The last key or common prefix returned, to resume after.
    pub last: Option<String>,
}

enum Item {
    Object(String, Box<Inode>),
    Prefix(String),
}

struct Level {
    dir: CairnPath,
    /// Key of this directory with a trailing '/', or "" for the bucket.
    key_prefix: String,
    first: Option<DirEntry>,
    buf: VecDeque<DirEntry>,
    cursor: Option<String>,
    exhausted: bool,
    /// Directories seen but not yet walked; the top sorts first.
    pending: Vec<String>,
    /// Only names starting with this (the part of the prefix past the last '/').
    leaf: Option<String>,
}

impl Level {
    fn new(dir: CairnPath, key_prefix: String) -> Level {
        Level {
            dir,
            key_prefix,
            first: None,
            buf: VecDeque::new(),
            cursor: None,
            exhausted: false,
            pending: Vec::new(),
            leaf: None,
        }
    }

    async fn peek(&mut self, client: &Client) -> Result<Option<&DirEntry>> {
        loop {
            if self.first.is_none() && self.buf.is_empty() && !self.exhausted {
                let page = match client.list_page(&self.dir, self.cursor.clone(), PAGE).await {
                    Ok(p) => p,
                    // Removed while we walk it: nothing more here.
                    Err(e) if matches!(e.kind, ErrorKind::NotFound | ErrorKind::NotADirectory) => {
                        Vec::new()
                    }
                    Err(e) => return Err(e),
                };
                self.exhausted = page.len() < PAGE as usize;
                if let Some(last) = page.last() {
                    self.cursor = Some(last.name.clone());
                }
                self.buf.extend(page);
            }
            let next = self.first.as_ref().or(self.buf.front());
            let Some(e) = next else { return Ok(None) };
            if let Some(leaf) = &self.leaf {
                if !e.name.starts_with(leaf.as_str()) {
                    if e.name.as_str() > leaf.as_str() {
                        // Names with the leaf as prefix are contiguous: done.
                        self.first = None;
                        self.buf.clear();
                        self.exhausted = true;
                        return Ok(None);
                    }
                    self.pop();
                    continue;
                }
            }
            return Ok(self.first.as_ref().or(self.buf.front()));
        }
    }

    fn pop(&mut self) -> Option<DirEntry> {
        self.first.take().or_else(|| self.buf.pop_front())
    }
}

fn sort_name(e: &DirEntry) -> String {
    match e.inode.kind {
        InodeKind::Directory => format!("{}/", e.name),
        _ => e.name.clone(),
    }
}

struct Walker<'a> {
    client: &'a Client,
    levels: Vec<Level>,
    /// Walk directories (false: report them as common prefixes, for '/').
    descend: bool,
}

impl Walker<'_> {
    async fn next(&mut self) -> Result<Option<Item>> {
        loop {
            let Some(top) = self.levels.last_mut() else {
                return Ok(None);
            };
            let cand = top.peek(self.client).await?.map(sort_name);
            let top = self.levels.last_mut().expect("still there");
            if let Some(d) = top.pending.last() {
                let held = format!("{d}/");
                if cand.as_ref().is_none_or(|c| *c > held) {
                    top.pending.pop();
                    let dir = top.dir.join(&held[..held.len() - 1])?;
                    let key_prefix = format!("{}{held}", top.key_prefix);
                    if self.descend {
                        self.levels.push(Level::new(dir, key_prefix));
                        continue;
                    }
                    return Ok(Some(Item::Prefix(key_prefix)));
                }
            }
            let Some(_) = cand else {
                self.levels.pop();
                continue;
            };
            let e = top.pop().expect("peeked");
            match e.inode.kind {
                InodeKind::File => {
                    return Ok(Some(Item::Object(
                        format!("{}{}", top.key_prefix, e.name),
                        Box::new(e.inode),
                    )))
                }
                InodeKind::Directory => top.pending.push(e.name),
                // A symlink or special file of the mount is no object: S3
                // has neither.
                _ => {}
            }
        }
    }
}

async fn stat(client: &Client, p: &CairnPath) -> Result<Option<Inode>> {
    match client.stat(p).await {
        Ok(i) => Ok(Some(i)),
        Err(e) if matches!(e.kind, ErrorKind::NotFound | ErrorKind::NotADirectory) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Names that are proper prefixes of `name` whose keys as directories
/// (`n/...`) sort after `name`: cut where the next byte sorts before '/'.
fn held_prefixes(name: &str) -> impl Iterator<Item = &str> {
    name.char_indices()
        .filter(|(i, c)| *i > 0 && (*c as u32) < '/' as u32)
        .map(move |(i, _)| &name[..i])
}

/// Set up the walk of `bucket` for `q`.
async fn start<'a>(client: &'a Client, bucket: &CairnPath, q: &Query) -> Result<Walker<'a>> {
    let descend = q.delimiter.as_deref() != Some("/");
    let (dir_key, leaf) = match q.prefix.rfind('/') {
        Some(i) => (&q.prefix[..=i], &q.prefix[i + 1..]),
        None => ("", q.prefix.as_str()),
    };
    let mut w = Walker {
        client,
        levels: Vec::new(),
        descend,
    };
    let mut dir = bucket.clone();
    for c in dir_key.split('/').filter(|c| !c.is_empty()) {
        dir = match dir.join(c) {
            Ok(d) => d,
            Err(_) => return Ok(w), // no such path can hold keys
        };
    }
    if dir_key.contains("//") || dir_key.starts_with('/') {
        return Ok(w); // no directory has that name
    }
    match stat(client, &dir).await? {
        Some(i) if i.kind == InodeKind::Directory => {}
        _ => return Ok(w),
    }
    let mut level = Level::new(dir, dir_key.to_string());
    if !leaf.is_empty() {
        level.leaf = Some(leaf.to_string());
    }
    // Seek: to just after `after` when it lies in this directory's range,
    // else to the first name starting with the leaf.
    let after_rel = q
        .after
        .as_deref()
        .filter(|a| *a >= q.prefix.as_str())
        .and_then(|a| a.strip_prefix(dir_key));
    if let Some(rel) = after_rel {
        let mut comps = rel.split('/');
        let mut level_ref = level;
        let mut c = comps.next().unwrap_or("");
        loop {
            for held in held_prefixes(c) {
                if let Some(i) = stat(client, &level_ref.dir.join(held)?).await? {
                    if i.kind == InodeKind::Directory
                        && level_ref
                            .leaf
                            .as_deref()
                            .is_none_or(|l| held.starts_with(l))
                    {
                        level_ref.pending.push(held.to_string());
                    }
                }
            }
            if c.is_empty() {
                w.levels.push(level_ref);
                break;
            }
            level_ref.cursor = Some(c.to_string());
            let rest = comps.next();
            match rest {
                Some(next) if descend => {
                    let sub = level_ref.dir.join(c);
                    let key_prefix = format!("{}{c}/", level_ref.key_prefix);
                    w.levels.push(level_ref);
                    let Ok(sub) = sub else { break };
                    match stat(client, &sub).await? {
                        Some(i) if i.kind == InodeKind::Directory => {}
                        _ => break,
                    }
                    level_ref = Level::new(sub, key_prefix);
                    c = next;
                }
                _ => {
                    w.levels.push(level_ref);
                    break;
                }
            }
        }
    } else {
        if !leaf.is_empty() {
            if let Ok(p) = level.dir.join(leaf) {
                if let Some(inode) = stat(client, &p).await? {
                    level.first = Some(DirEntry {
                        name: leaf.to_string(),
                        inode,
                    });
                }
                level.cursor = Some(leaf.to_string());
            }
        }
        w.levels.push(level);
    }
    Ok(w)
}

/// List `bucket` (whose directory must exist) as S3 would.
pub async fn list(client: &Client, bucket: &CairnPath, q: &Query) -> S3Result<Listing> {
    let mut out = Listing::default();
    if q.max_keys == 0 {
        return Ok(out);
    }
    let mut w = start(client, bucket, q)
        .await
        .map_err(|e| s3_err(e, Missing::Bucket))?;
    let delim = q.delimiter.as_deref().filter(|d| !d.is_empty());
    let after = q.after.as_deref();
    let mut last_prefix: Option<String> = None;
    let mut count = 0;
    while let Some(item) = w.next().await.map_err(|e| s3_err(e, Missing::Bucket))? {
        let (key, obj) = match item {
            Item::Object(k, i) => (k, Some(*i)),
            Item::Prefix(p) => (p, None),
        };
        if !key.starts_with(&q.prefix) {
            continue;
        }
        if let Some(a) = after {
            let inside_done_prefix = delim.is_some_and(|d| a.ends_with(d) && key.starts_with(a));
            if key.as_str() <= a || inside_done_prefix {
                continue;
            }
        }
        // Roll keys up into their common prefix.
        let rolled = match (delim, &obj) {
            (Some(d), Some(_)) => key[q.prefix.len()..]
                .find(d)
                .map(|i| key[..q.prefix.len() + i + d.len()].to_string()),
            (_, None) => Some(key.clone()),
            (None, Some(_)) => None,
        };
        if let Some(p) = &rolled {
            if last_prefix.as_ref() == Some(p) {
                continue;
            }
        }
        if count == q.max_keys {
            out.truncated = true;
            break;
        }
        count += 1;
        match rolled {
            Some(p) => {
                out.last = Some(p.clone());
                last_prefix = Some(p.clone());
                out.prefixes.push(p);
            }
            None => {
                out.last = Some(key.clone());
                out.objects.push((key, obj.expect("an object")));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::held_prefixes;

    #[test]
    fn held_prefixes_cut_before_low_bytes() {
        let got: Vec<_> = held_prefixes("d-x.y").collect();
        assert_eq!(got, vec!["d", "d-x"]);
        assert_eq!(held_prefixes("abc").count(), 0);
    }
}

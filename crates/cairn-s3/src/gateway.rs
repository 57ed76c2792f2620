//! The S3 operations over the namespace: buckets are top-level
//! directories, objects files below them (see [`crate::names`]).

use crate::attrs::{self, Headers};
use crate::body::{self, Hashing};
use crate::error::{s3_err, Missing};
use crate::keys::KeyRecord;
use crate::listing::{self, Query};
use crate::names::{bucket_path, is_bucket_name, object_path, object_path_cued, CUES_META};
use crate::tagging;
use cairn_client::{Client, PutOptions};
use cairn_types::{
    AttrChanges, CairnPath, Cues, Error, ErrorKind, Inode, InodeKind, Version, XattrOp, XattrWhen,
    Xattrs,
};
use s3s::dto::*;
use s3s::{s3_error, S3Error, S3Request, S3Response, S3Result, S3};

/// Attempts at a write whose parent directory a concurrent delete removed.
const WRITE_ATTEMPTS: usize = 3;

/// The gateway's S3 service; cheap to clone.
#[derive(Clone)]
pub struct CairnS3 {
    pub(crate) client: Client,
    staging_ready: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl CairnS3 {
    pub fn new(client: Client) -> CairnS3 {
        CairnS3 {
            client,
            staging_ready: Default::default(),
        }
    }

    pub(crate) async fn require_bucket(&self, bucket: &str) -> S3Result<CairnPath> {
        let p = bucket_path(bucket)?;
        match self.client.stat(&p).await {
            Ok(i) if i.kind == InodeKind::Directory => Ok(p),
            Ok(_) => Err(s3_error!(NoSuchBucket)),
            Err(e) => Err(s3_err(e, Missing::Bucket)),
        }
    }

    /// The file of an object; a directory (a prefix) is no object.
    pub(crate) async fn stat_object(&self, path: &CairnPath) -> S3Result<Inode> {
        match self.client.stat(path).await {
            Ok(i) if i.kind == InodeKind::File => Ok(i),
            Ok(_) => Err(s3_error!(NoSuchKey)),
            Err(e) => Err(s3_err(e, Missing::Key)),
        }
    }

    /// The object `key` of `bucket`; when it is missing, `NoSuchBucket` if
    /// the bucket is missing too (HEAD and GetObjectAttributes).
    async fn object_or_bucket_error(&self, bucket: &str, key: &str) -> S3Result<Inode> {
        let path = object_path(bucket, key)?;
        match self.stat_object(&path).await {
            Ok(i) => Ok(i),
            Err(e) => {
                self.require_bucket(bucket).await?;
                Err(e)
            }
        }
    }

    /// Replace an object's tags (none: remove them), as one change of its
    /// attributes: its content and version stay.
    async fn set_tags(&self, bucket: &str, key: &str, tags: &tagging::Tags) -> S3Result<()> {
        self.require_bucket(bucket).await?;
        let path = object_path(bucket, key)?;
        let inode = self.stat_object(&path).await?;
        let op = match tags.is_empty() {
            true if !inode.xattrs.contains_key(tagging::TAGS) => return Ok(()),
            true => XattrOp::Remove {
                name: tagging::TAGS.into(),
            },
            false => XattrOp::Set {
                name: tagging::TAGS.into(),
                value: tagging::encode(tags),
                when: XattrWhen::Always,
            },
        };
        let changes = AttrChanges {
            xattrs: vec![op],
            ..Default::default()
        };
        self.client
            .set_attr(&path, Some(inode.id), changes)
            .await
            .map_err(|e| s3_err(e, Missing::Key))?;
        Ok(())
    }

    /// Stream `src` into `path` as a new version whose xattrs are `x` plus
    /// the MD5 ETag, creating the key's directories. `expected` as in
    /// [`PutOptions`]; a lost condition is `PreconditionFailed`. `cues`: the
    /// request's (from the key or the `cairn-cues` metadata), over the
    /// bucket's and its directories'.
    pub(crate) async fn write<R>(
        &self,
        bucket: &CairnPath,
        path: &CairnPath,
        src: R,
        expected: Option<Version>,
        what: Written,
    ) -> S3Result<Inode>
    where
        R: tokio::io::AsyncRead + Unpin + Send,
    {
        let Written { x, cues, md5 } = what;
        let (reader, hash) = Hashing::expecting(src, md5);
        let check = hash.clone();
        let failed = move |e: Error| match check.mismatched() {
            true => body::bad_digest(),
            false => write_err(e, path),
        };
        let finish = move || {
            let mut x = x;
            x.insert(attrs::ETAG.into(), body::hex(&hash.digest().0).into_bytes());
            x
        };
        let (parent, _) = path.split_last().expect("objects are below buckets");
        if &parent == bucket {
            let opts = PutOptions {
                expected,
                cues,
                ..PutOptions::default()
            };
            return self
                .client
                .put_with_attrs(path, reader, opts, finish)
                .await
                .map_err(failed);
        }
        // A key below a prefix: a concurrent delete may prune the key's
        // directory while the body streams in, and a body cannot be read
        // twice. So stream into a staging file, then move it into place
        // (with the write's condition) in one metadata step that can be
        // repeated after making the directory again.
        let tmp = self.staging_file().await?;
        // The staging file's chunks are placed as the key's will be: by the
        // cues of the bucket (the key's directories may not exist yet) under
        // the request's.
        let inherited = match self.client.cues(bucket).await {
            Ok(c) => c.effective.persistent(),
            Err(e) => return Err(write_err(e, path)),
        };
        let opts = PutOptions {
            cues: inherited.merge(&cues),
            ..PutOptions::default()
        };
        let staged = self
            .client
            .put_with_attrs(&tmp, reader, opts, finish)
            .await
            .map_err(failed)?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let r = match self.make_parents(bucket, path).await {
                Ok(()) => {
                    self.client
                        .compose(
                            path,
                            vec![tmp.clone()],
                            expected,
                            0o644,
                            Some(staged.xattrs.clone()),
                        )
                        .await
                }
                Err(e) => {
                    let _ = self.client.remove(&tmp, false).await;
                    return Err(e);
                }
            };
            match r {
                Ok(i) => return Ok(i),
                Err(e) if e.kind == ErrorKind::NotFound && attempt < WRITE_ATTEMPTS => {}
                Err(e) => {
                    let _ = self.client.remove(&tmp, false).await;
                    return Err(write_err(e, path));
                }
            }
        }
    }

    /// A fresh path in the staging directory.
    async fn staging_file(&self) -> S3Result<CairnPath> {
        let dir = crate::names::staging_dir();
        if !self
            .staging_ready
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            self.client
                .mkdir(&dir, true)
                .await
                .map_err(|e| s3_err(e, Missing::Key))?;
            self.staging_ready
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        let mut b = [0u8; 16];
        getrandom::getrandom(&mut b).map_err(|e| crate::error::internal(e.to_string()))?;
        Ok(dir.join(&body::hex(&b)).expect("valid name"))
    }

    /// `mkdir -p` of the directories between the bucket and the key.
    pub(crate) async fn make_parents(&self, bucket: &CairnPath, path: &CairnPath) -> S3Result<()> {
        let (parent, _) = path.split_last().expect("objects are below buckets");
        if &parent == bucket {
            return Ok(());
        }
        let mut last = None;
        for _ in 0..WRITE_ATTEMPTS {
            match self.client.mkdir(&parent, true).await {
                Ok(_) => return Ok(()),
                Err(e) if e.kind == ErrorKind::Conflict => last = Some(e),
                Err(e) => return Err(write_err(e, path)),
            }
        }
        Err(write_err(last.expect("attempted"), path))
    }

    /// After a delete: drop the key's directories that became empty, up to
    /// the bucket. Best effort; a concurrent write wins.
    pub(crate) async fn prune(&self, bucket: &CairnPath, path: &CairnPath) {
        let mut cur = path.clone();
        while let Some((parent, _)) = cur.split_last() {
            if &parent == bucket || parent.is_root() {
                break;
            }
            if self.client.remove(&parent, false).await.is_err() {
                break;
            }
            cur = parent;
        }
    }

    fn key_record<T>(req: &S3Request<T>) -> Option<KeyRecord> {
        req.extensions.get::<KeyRecord>().cloned()
    }

    /// The expected version for a conditional write, after checking what
    /// can be checked before the body is read.
    pub(crate) async fn write_condition(
        &self,
        path: &CairnPath,
        if_match: Option<&ETagCondition>,
        if_none_match: Option<&ETagCondition>,
    ) -> S3Result<Option<Version>> {
        if let Some(c) = if_none_match {
            if !c.is_any() {
                return Err(s3_error!(
                    NotImplemented,
                    "If-None-Match on writes supports only '*'"
                ));
            }
            if let Ok(i) = self.stat_object(path).await {
                return Err(s3_error!(
                    PreconditionFailed,
                    "the key exists (ETag {})",
                    attrs::etag_of(&i)
                ));
            }
            return Ok(Some(Version(0)));
        }
        if let Some(c) = if_match {
            let cur = self.stat_object(path).await?;
            if let Some(want) = c.as_etag() {
                if want.value() != attrs::etag_of(&cur) {
                    return Err(s3_error!(PreconditionFailed, "the ETag differs"));
                }
            }
            return Ok(Some(cur.version));
        }
        Ok(None)
    }
}

/// A write failure as S3 sees it.
pub(crate) fn write_err(e: Error, path: &CairnPath) -> S3Error {
    match e.kind {
        ErrorKind::Conflict => S3Error::with_message(
            s3s::S3ErrorCode::PreconditionFailed,
            format!("a concurrent write won: {}", e.message),
        ),
        ErrorKind::IsADirectory | ErrorKind::NotADirectory | ErrorKind::AlreadyExists => {
            S3Error::with_message(
                s3s::S3ErrorCode::InvalidRequest,
                format!(
                    "{path}: an object key cannot also be a prefix of other keys in Cairn ({})",
                    e.message
                ),
            )
        }
        ErrorKind::NotFound => s3_err(e, Missing::Bucket),
        _ => s3_err(e, Missing::Key),
    }
}

/// What an object is written with beside its bytes: its attributes (the
/// ETag is added), the request's cues, and the MD5 its `Content-MD5`
/// promised (a body that differs is `BadDigest`, and nothing is stored).
pub(crate) struct Written {
    pub x: Xattrs,
    pub cues: Cues,
    pub md5: Option<[u8; 16]>,
}

fn headers_of_put(i: &PutObjectInput) -> Headers {
    Headers {
        content_type: i.content_type.clone(),
        cache_control: i.cache_control.clone(),
        content_disposition: i.content_disposition.clone(),
        content_encoding: i.content_encoding.clone(),
        content_language: i.content_language.clone(),
        expires: i.expires.clone(),
        metadata: i.metadata.clone(),
    }
}

/// Whether a conditional read lets the object through: Err is the answer
/// (412 or 304) to send instead.
fn read_conditions(
    inode: &Inode,
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
    if_modified_since: Option<&Timestamp>,
    if_unmodified_since: Option<&Timestamp>,
) -> S3Result<()> {
    let etag = attrs::etag_of(inode);
    let matches = |c: &ETagCondition| c.is_any() || c.as_etag().is_some_and(|t| t.value() == etag);
    let secs = attrs::mtime_secs(inode);
    let ts = |t: &Timestamp| time::OffsetDateTime::from(t.clone()).unix_timestamp();
    if let Some(c) = if_match {
        if !matches(c) {
            return Err(s3_error!(PreconditionFailed));
        }
    } else if let Some(t) = if_unmodified_since {
        if secs > ts(t) {
            return Err(s3_error!(PreconditionFailed));
        }
    }
    if let Some(c) = if_none_match {
        if matches(c) {
            return Err(not_modified(inode));
        }
    } else if let Some(t) = if_modified_since {
        if secs <= ts(t) {
            return Err(not_modified(inode));
        }
    }
    Ok(())
}

/// 304, with the ETag and Last-Modified a cache revalidates against (as
/// HTTP asks of a 304 and AWS sends).
fn not_modified(inode: &Inode) -> S3Error {
    use hyper::header::{HeaderMap, HeaderValue, ETAG, LAST_MODIFIED};
    let mut e = s3_error!(NotModified);
    let mut h = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", attrs::etag_of(inode))) {
        h.insert(ETAG, v);
    }
    let mut date = Vec::new();
    if attrs::last_modified(inode)
        .format(TimestampFormat::HttpDate, &mut date)
        .is_ok()
    {
        if let Ok(v) = HeaderValue::from_bytes(&date) {
            h.insert(LAST_MODIFIED, v);
        }
    }
    e.set_headers(h);
    e
}

fn encode_if(url: bool, s: String) -> String {
    if url {
        urlencoding::encode(&s).into_owned()
    } else {
        s
    }
}

fn to_object(url: bool, key: String, inode: &Inode) -> Object {
    Object {
        key: Some(encode_if(url, key)),
        e_tag: Some(attrs::etag(inode)),
        last_modified: Some(attrs::last_modified(inode)),
        size: Some(inode.size as i64),
        storage_class: Some(ObjectStorageClass::from_static(
            ObjectStorageClass::STANDARD,
        )),
        ..Default::default()
    }
}

/// Cairn buckets are unversioned (S3's sense): each key's one version is
/// `null`. Any other version id names nothing.
const NULL_VERSION: &str = "null";

fn check_version(id: &Option<ObjectVersionId>) -> S3Result<()> {
    match id.as_deref() {
        None | Some(NULL_VERSION) => Ok(()),
        Some(other) => Err(s3_error!(
            NoSuchVersion,
            "version {other:?} does not exist: this bucket is unversioned, its objects' only version is \"null\""
        )),
    }
}

fn token_encode(s: &str) -> String {
    body::hex(s.as_bytes())
}

fn token_decode(t: &str) -> S3Result<String> {
    let bad = || s3_error!(InvalidArgument, "the continuation token is not valid");
    if !t.len().is_multiple_of(2) {
        return Err(bad());
    }
    let bytes = (0..t.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(t.get(i..i + 2).ok_or_else(bad)?, 16).map_err(|_| bad()))
        .collect::<S3Result<Vec<u8>>>()?;
    String::from_utf8(bytes).map_err(|_| bad())
}

fn max_keys(m: Option<i32>) -> S3Result<usize> {
    match m {
        None => Ok(1000),
        Some(n) if n < 0 => Err(s3_error!(InvalidArgument, "max-keys must not be negative")),
        Some(n) => Ok((n as usize).min(1000)),
    }
}

#[async_trait::async_trait]
impl S3 for CairnS3 {
    async fn list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        let only = Self::key_record(&req).and_then(|k| k.bucket);
        let mut buckets = Vec::new();
        let mut after = None;
        loop {
            let page = self
                .client
                .list_page(&CairnPath::root(), after.clone(), 1000)
                .await
                .map_err(|e| s3_err(e, Missing::Bucket))?;
            let n = page.len();
            for e in page {
                after = Some(e.name.clone());
                if e.inode.kind != InodeKind::Directory || !is_bucket_name(&e.name) {
                    continue;
                }
                if only.as_ref().is_some_and(|b| *b != e.name) {
                    continue;
                }
                buckets.push(Bucket {
                    name: Some(e.name),
                    creation_date: Some(attrs::last_modified(&e.inode)),
                    ..Default::default()
                });
            }
            if n < 1000 {
                break;
            }
        }
        Ok(S3Response::new(ListBucketsOutput {
            buckets: Some(buckets),
            owner: Some(Owner {
                display_name: Some("cairn".into()),
                id: Some("cairn".into()),
            }),
            ..Default::default()
        }))
    }

    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        let p = bucket_path(&req.input.bucket)?;
        match self.client.mkdir(&p, false).await {
            Ok(_) => Ok(S3Response::new(CreateBucketOutput {
                location: Some(format!("/{}", req.input.bucket)),
            })),
            Err(e) if e.kind == ErrorKind::AlreadyExists => Err(s3_error!(BucketAlreadyOwnedByYou)),
            Err(e) => Err(s3_err(e, Missing::Bucket)),
        }
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        let p = self.require_bucket(&req.input.bucket).await?;
        match self.client.remove(&p, false).await {
            Ok(()) => Ok(S3Response::new(DeleteBucketOutput {})),
            Err(e) if e.kind == ErrorKind::DirectoryNotEmpty => Err(s3_error!(
                BucketNotEmpty,
                "bucket {} still holds objects; delete them first",
                req.input.bucket
            )),
            Err(e) => Err(s3_err(e, Missing::Bucket)),
        }
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.require_bucket(&req.input.bucket).await?;
        Ok(S3Response::new(HeadBucketOutput::default()))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.require_bucket(&req.input.bucket).await?;
        Ok(S3Response::new(GetBucketLocationOutput::default()))
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let mut input = req.input;
        let early = async {
            let (path, mut cues) = object_path_cued(&input.bucket, &input.key)?;
            if let Some(list) = input.metadata.as_ref().and_then(|m| m.get(CUES_META)) {
                let c = Cues::parse(list).map_err(|e| {
                    s3_error!(InvalidArgument, "x-amz-meta-{CUES_META}: {}", e.message)
                })?;
                cues = cues.merge(&c);
            }
            let tags = match &input.tagging {
                Some(h) => tagging::from_header(h)?,
                None => Vec::new(),
            };
            let md5 = body::content_md5(input.content_md5.as_deref())?;
            let bucket = self.require_bucket(&input.bucket).await?;
            let expected = self
                .write_condition(&path, input.if_match.as_ref(), input.if_none_match.as_ref())
                .await?;
            Ok::<_, S3Error>((path, bucket, expected, cues, tags, md5))
        };
        let (path, bucket, expected, cues, tags, md5) = match early.await {
            Ok(x) => x,
            Err(e) => {
                body::drain(input.body.take()).await;
                return Err(e);
            }
        };
        let mut x = headers_of_put(&input).to_xattrs();
        tagging::set(&mut x, &tags);
        let inode = match input.body {
            Some(b) => {
                let what = Written { x, cues, md5 };
                self.write(&bucket, &path, body::blob_reader(b), expected, what)
                    .await?
            }
            None => {
                let what = Written { x, cues, md5 };
                self.write(&bucket, &path, &[][..], expected, what).await?
            }
        };
        Ok(S3Response::new(PutObjectOutput {
            e_tag: Some(attrs::etag(&inode)),
            ..Default::default()
        }))
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let input = req.input;
        check_version(&input.version_id)?;
        let (path, cues) = object_path_cued(&input.bucket, &input.key)?;
        if input.part_number.is_some() && input.range.is_some() {
            return Err(s3_error!(
                InvalidRequest,
                "Cannot specify both Range header and partNumber query parameter"
            ));
        }
        let reader = match self.client.open_cued(&path, &cues).await {
            Ok(r) if r.inode().kind == InodeKind::File => r,
            Ok(_) => return Err(s3_error!(NoSuchKey)),
            Err(e) => {
                return Err(match e.kind {
                    ErrorKind::NotFound if self.require_bucket(&input.bucket).await.is_err() => {
                        s3_error!(NoSuchBucket)
                    }
                    _ => s3_err(e, Missing::Key),
                })
            }
        };
        let inode = reader.inode().clone();
        read_conditions(
            &inode,
            input.if_match.as_ref(),
            input.if_none_match.as_ref(),
            input.if_modified_since.as_ref(),
            input.if_unmodified_since.as_ref(),
        )?;
        let size = inode.size;
        let (start, end, content_range) = match (input.range, input.part_number) {
            (None, Some(n)) => {
                let (a, b) = attrs::part_range(&inode, n)?;
                let whole = a == 0 && b == size;
                let range = (!whole).then(|| format!("bytes {a}-{}/{size}", b.saturating_sub(1)));
                (a, b, range)
            }
            (None, None) => (0, size, None),
            (Some(r), _) => {
                let rr = r.check(size)?;
                (
                    rr.start,
                    rr.end,
                    Some(format!(
                        "bytes {}-{}/{size}",
                        rr.start,
                        rr.end.saturating_sub(1)
                    )),
                )
            }
        };
        let h = Headers::from_xattrs(&inode.xattrs);
        let parts = attrs::parts_count(&inode);
        Ok(S3Response::new(GetObjectOutput {
            body: Some(body::download(reader, start, end)),
            content_length: Some((end - start) as i64),
            content_range,
            accept_ranges: Some("bytes".into()),
            e_tag: Some(attrs::etag(&inode)),
            last_modified: Some(attrs::last_modified(&inode)),
            content_type: input
                .response_content_type
                .or(h.content_type)
                .or(Some("binary/octet-stream".into())),
            cache_control: input.response_cache_control.or(h.cache_control),
            content_disposition: input.response_content_disposition.or(h.content_disposition),
            content_encoding: input.response_content_encoding.or(h.content_encoding),
            content_language: input.response_content_language.or(h.content_language),
            expires: input.response_expires.or(h.expires),
            metadata: h.metadata,
            parts_count: parts,
            tag_count: Some(tagging::of(&inode.xattrs).len() as i32).filter(|n| *n > 0),
            ..Default::default()
        }))
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let input = req.input;
        check_version(&input.version_id)?;
        let inode = self
            .object_or_bucket_error(&input.bucket, &input.key)
            .await?;
        read_conditions(
            &inode,
            input.if_match.as_ref(),
            input.if_none_match.as_ref(),
            input.if_modified_since.as_ref(),
            input.if_unmodified_since.as_ref(),
        )?;
        let h = Headers::from_xattrs(&inode.xattrs);
        let parts = attrs::parts_count(&inode);
        let (a, b) = match input.part_number {
            Some(n) => attrs::part_range(&inode, n)?,
            None => (0, inode.size),
        };
        Ok(S3Response::new(HeadObjectOutput {
            content_length: Some((b - a) as i64),
            accept_ranges: Some("bytes".into()),
            e_tag: Some(attrs::etag(&inode)),
            last_modified: Some(attrs::last_modified(&inode)),
            content_type: h.content_type.or(Some("binary/octet-stream".into())),
            cache_control: h.cache_control,
            content_disposition: h.content_disposition,
            content_encoding: h.content_encoding,
            content_language: h.content_language,
            expires: h.expires,
            metadata: h.metadata,
            parts_count: parts,
            ..Default::default()
        }))
    }

    async fn get_object_attributes(
        &self,
        req: S3Request<GetObjectAttributesInput>,
    ) -> S3Result<S3Response<GetObjectAttributesOutput>> {
        let input = req.input;
        check_version(&input.version_id)?;
        let inode = self
            .object_or_bucket_error(&input.bucket, &input.key)
            .await?;
        // One header, comma-separated: s3s may hand it over whole.
        let wants = |a: &str| {
            input
                .object_attributes
                .iter()
                .flat_map(|x| x.as_str().split(','))
                .any(|x| x.trim() == a)
        };
        // Parts as multipart completion recorded them; Cairn keeps no
        // per-part checksums, so (as AWS does without them) the count
        // alone is returned, not the list.
        let parts = attrs::parts_count(&inode);
        let out = GetObjectAttributesOutput {
            e_tag: wants(ObjectAttributes::ETAG).then(|| attrs::etag(&inode)),
            object_size: wants(ObjectAttributes::OBJECT_SIZE).then_some(inode.size as i64),
            storage_class: wants(ObjectAttributes::STORAGE_CLASS)
                .then(|| StorageClass::from_static(StorageClass::STANDARD)),
            object_parts: parts
                .filter(|_| wants(ObjectAttributes::OBJECT_PARTS))
                .map(|n| GetObjectAttributesParts {
                    total_parts_count: Some(n),
                    ..Default::default()
                }),
            last_modified: Some(attrs::last_modified(&inode)),
            ..Default::default()
        };
        Ok(S3Response::new(out))
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let input = req.input;
        check_version(&input.version_id)?;
        let bucket = self.require_bucket(&input.bucket).await?;
        let path = object_path(&input.bucket, &input.key)?;
        self.delete_one(&bucket, &path).await?;
        Ok(S3Response::new(DeleteObjectOutput {
            version_id: input.version_id,
            ..Default::default()
        }))
    }

    /// Buckets are never versioned (S3's sense): no status, as for a
    /// bucket on which versioning was never enabled.
    async fn get_bucket_versioning(
        &self,
        req: S3Request<GetBucketVersioningInput>,
    ) -> S3Result<S3Response<GetBucketVersioningOutput>> {
        self.require_bucket(&req.input.bucket).await?;
        Ok(S3Response::new(GetBucketVersioningOutput::default()))
    }

    /// An unversioned bucket's versions: every current object, as its
    /// `null` version (what backup tools enumerate a bucket with).
    async fn list_object_versions(
        &self,
        req: S3Request<ListObjectVersionsInput>,
    ) -> S3Result<S3Response<ListObjectVersionsOutput>> {
        let input = req.input;
        let bucket = self.require_bucket(&input.bucket).await?;
        let url = input
            .encoding_type
            .as_ref()
            .is_some_and(|e| e.as_str() == EncodingType::URL);
        if input
            .version_id_marker
            .as_deref()
            .is_some_and(|v| !v.is_empty())
            && input.key_marker.as_deref().unwrap_or("").is_empty()
        {
            return Err(s3_error!(
                InvalidArgument,
                "a version-id-marker cannot be specified without a key-marker"
            ));
        }
        check_version(&input.version_id_marker.clone().filter(|v| !v.is_empty()))?;
        // The key marker's only version is `null`, so the listing resumes
        // after the key whether or not a version marker came with it.
        let q = Query {
            prefix: input.prefix.clone().unwrap_or_default(),
            delimiter: input.delimiter.clone(),
            after: input.key_marker.clone().filter(|m| !m.is_empty()),
            max_keys: max_keys(input.max_keys)?,
        };
        let l = listing::list(&self.client, &bucket, &q).await?;
        let next = l.truncated.then(|| l.last.clone()).flatten();
        Ok(S3Response::new(ListObjectVersionsOutput {
            name: Some(input.bucket),
            prefix: Some(encode_if(url, q.prefix)),
            key_marker: input.key_marker.map(|m| encode_if(url, m)),
            version_id_marker: input.version_id_marker,
            delimiter: input
                .delimiter
                .filter(|d| !d.is_empty())
                .map(|d| encode_if(url, d)),
            max_keys: Some(q.max_keys as i32),
            is_truncated: Some(l.truncated),
            next_version_id_marker: next.as_ref().map(|_| NULL_VERSION.to_string()),
            next_key_marker: next.map(|m| encode_if(url, m)),
            versions: Some(
                l.objects
                    .into_iter()
                    .map(|(k, i)| ObjectVersion {
                        key: Some(encode_if(url, k)),
                        version_id: Some(NULL_VERSION.to_string()),
                        is_latest: Some(true),
                        e_tag: Some(attrs::etag(&i)),
                        last_modified: Some(attrs::last_modified(&i)),
                        size: Some(i.size as i64),
                        storage_class: Some(ObjectVersionStorageClass::from_static(
                            ObjectVersionStorageClass::STANDARD,
                        )),
                        ..Default::default()
                    })
                    .collect(),
            ),
            common_prefixes: Some(
                l.prefixes
                    .into_iter()
                    .map(|p| CommonPrefix {
                        prefix: Some(encode_if(url, p)),
                    })
                    .collect(),
            ),
            encoding_type: input.encoding_type,
            ..Default::default()
        }))
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let input = req.input;
        let bucket = self.require_bucket(&input.bucket).await?;
        let quiet = input.delete.quiet.unwrap_or(false);
        let mut deleted = Vec::new();
        let mut errors = Vec::new();
        for o in input.delete.objects {
            let r = match check_version(&o.version_id)
                .and_then(|()| object_path(&input.bucket, &o.key))
            {
                Ok(p) => self.delete_one(&bucket, &p).await,
                Err(e) => Err(e),
            };
            match r {
                Ok(()) if quiet => {}
                Ok(()) => deleted.push(DeletedObject {
                    key: Some(o.key),
                    version_id: o.version_id,
                    ..Default::default()
                }),
                Err(e) => errors.push(s3s::dto::Error {
                    code: Some(e.code().as_str().to_string()),
                    key: Some(o.key),
                    message: e.message().map(str::to_string),
                    ..Default::default()
                }),
            }
        }
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted: Some(deleted),
            errors: Some(errors),
            ..Default::default()
        }))
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        let key = Self::key_record(&req);
        let input = req.input;
        let (sb, sk) = match &input.copy_source {
            CopySource::Bucket { bucket, key, .. } => (bucket.to_string(), key.to_string()),
            _ => return Err(s3_error!(NotImplemented, "access-point copy sources")),
        };
        if key.is_some_and(|k| !k.allows("GetObject", Some(&sb))) {
            return Err(s3_error!(AccessDenied, "this key may not read bucket {sb}"));
        }
        let src = object_path(&sb, &sk)?;
        let dst = object_path(&input.bucket, &input.key)?;
        let bucket = self.require_bucket(&input.bucket).await?;
        let reader = self.open_source(&sb, &src).await?;
        let sinode = reader.inode().clone();
        read_conditions(
            &sinode,
            input.copy_source_if_match.as_ref(),
            input.copy_source_if_none_match.as_ref(),
            input.copy_source_if_modified_since.as_ref(),
            input.copy_source_if_unmodified_since.as_ref(),
        )
        .map_err(|_| s3_error!(PreconditionFailed, "a copy-source condition failed"))?;
        let replace = input
            .metadata_directive
            .as_ref()
            .is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
        if src == dst && !replace {
            return Err(s3_error!(
                InvalidRequest,
                "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata, storage class, website redirect location or encryption attributes."
            ));
        }
        let mut x = if replace {
            Headers {
                content_type: input.content_type,
                cache_control: input.cache_control,
                content_disposition: input.content_disposition,
                content_encoding: input.content_encoding,
                content_language: input.content_language,
                expires: input.expires,
                metadata: input.metadata,
            }
            .to_xattrs()
        } else {
            Headers::from_xattrs(&sinode.xattrs).to_xattrs()
        };
        let replace_tags = input
            .tagging_directive
            .as_ref()
            .is_some_and(|d| d.as_str() == TaggingDirective::REPLACE);
        let tags = match (replace_tags, &input.tagging) {
            (true, Some(h)) => tagging::from_header(h)?,
            (true, None) => Vec::new(),
            (false, _) => tagging::of(&sinode.xattrs),
        };
        tagging::set(&mut x, &tags);
        let size = sinode.size;
        let src_body = body::blob_reader(body::download(reader, 0, size));
        let inode = self
            .write(
                &bucket,
                &dst,
                src_body,
                None,
                Written {
                    x,
                    cues: Cues::default(),
                    md5: None,
                },
            )
            .await?;
        Ok(S3Response::new(CopyObjectOutput {
            copy_object_result: Some(CopyObjectResult {
                e_tag: Some(attrs::etag(&inode)),
                last_modified: Some(attrs::last_modified(&inode)),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn put_object_tagging(
        &self,
        req: S3Request<PutObjectTaggingInput>,
    ) -> S3Result<S3Response<PutObjectTaggingOutput>> {
        let input = req.input;
        check_version(&input.version_id)?;
        let tags = tagging::from_tag_set(input.tagging.tag_set)?;
        self.set_tags(&input.bucket, &input.key, &tags).await?;
        Ok(S3Response::new(PutObjectTaggingOutput {
            version_id: input.version_id,
        }))
    }

    async fn get_object_tagging(
        &self,
        req: S3Request<GetObjectTaggingInput>,
    ) -> S3Result<S3Response<GetObjectTaggingOutput>> {
        let input = req.input;
        check_version(&input.version_id)?;
        self.require_bucket(&input.bucket).await?;
        let inode = self
            .stat_object(&object_path(&input.bucket, &input.key)?)
            .await?;
        Ok(S3Response::new(GetObjectTaggingOutput {
            tag_set: tagging::tag_set(tagging::of(&inode.xattrs)),
            version_id: input.version_id,
        }))
    }

    async fn delete_object_tagging(
        &self,
        req: S3Request<DeleteObjectTaggingInput>,
    ) -> S3Result<S3Response<DeleteObjectTaggingOutput>> {
        let input = req.input;
        check_version(&input.version_id)?;
        self.set_tags(&input.bucket, &input.key, &Vec::new())
            .await?;
        Ok(S3Response::new(DeleteObjectTaggingOutput {
            version_id: input.version_id,
        }))
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        let input = req.input;
        let bucket = self.require_bucket(&input.bucket).await?;
        let url = input
            .encoding_type
            .as_ref()
            .is_some_and(|e| e.as_str() == EncodingType::URL);
        let q = Query {
            prefix: input.prefix.clone().unwrap_or_default(),
            delimiter: input.delimiter.clone(),
            after: input.marker.clone().filter(|m| !m.is_empty()),
            max_keys: max_keys(input.max_keys)?,
        };
        let l = listing::list(&self.client, &bucket, &q).await?;
        let next_marker = l.truncated.then(|| l.last.clone()).flatten();
        Ok(S3Response::new(ListObjectsOutput {
            name: Some(input.bucket),
            prefix: Some(encode_if(url, q.prefix)),
            marker: input.marker.map(|m| encode_if(url, m)),
            delimiter: input
                .delimiter
                .filter(|d| !d.is_empty())
                .map(|d| encode_if(url, d)),
            max_keys: Some(q.max_keys as i32),
            is_truncated: Some(l.truncated),
            next_marker: next_marker.map(|m| encode_if(url, m)),
            contents: Some(
                l.objects
                    .into_iter()
                    .map(|(k, i)| to_object(url, k, &i))
                    .collect(),
            ),
            common_prefixes: Some(
                l.prefixes
                    .into_iter()
                    .map(|p| CommonPrefix {
                        prefix: Some(encode_if(url, p)),
                    })
                    .collect(),
            ),
            encoding_type: input.encoding_type,
            ..Default::default()
        }))
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let input = req.input;
        let bucket = self.require_bucket(&input.bucket).await?;
        let url = input
            .encoding_type
            .as_ref()
            .is_some_and(|e| e.as_str() == EncodingType::URL);
        let after = match &input.continuation_token {
            Some(t) => Some(token_decode(t)?),
            None => input.start_after.clone().filter(|s| !s.is_empty()),
        };
        let q = Query {
            prefix: input.prefix.clone().unwrap_or_default(),
            delimiter: input.delimiter.clone(),
            after,
            max_keys: max_keys(input.max_keys)?,
        };
        let l = listing::list(&self.client, &bucket, &q).await?;
        let key_count = (l.objects.len() + l.prefixes.len()) as i32;
        let next = l
            .truncated
            .then(|| l.last.as_deref().map(token_encode))
            .flatten();
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(input.bucket),
            prefix: Some(encode_if(url, q.prefix)),
            delimiter: input
                .delimiter
                .filter(|d| !d.is_empty())
                .map(|d| encode_if(url, d)),
            max_keys: Some(q.max_keys as i32),
            key_count: Some(key_count),
            continuation_token: input.continuation_token,
            next_continuation_token: next,
            start_after: input.start_after.map(|s| encode_if(url, s)),
            is_truncated: Some(l.truncated),
            contents: Some(
                l.objects
                    .into_iter()
                    .map(|(k, i)| to_object(url, k, &i))
                    .collect(),
            ),
            common_prefixes: Some(
                l.prefixes
                    .into_iter()
                    .map(|p| CommonPrefix {
                        prefix: Some(encode_if(url, p)),
                    })
                    .collect(),
            ),
            encoding_type: input.encoding_type,
            ..Default::default()
        }))
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        crate::multipart::create(self, req).await
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        crate::multipart::upload_part(self, req).await
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        crate::multipart::upload_part_copy(self, req).await
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        crate::multipart::complete(self, req).await
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        crate::multipart::abort(self, req).await
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        crate::multipart::list_parts(self, req).await
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        crate::multipart::list_uploads(self, req).await
    }
}

impl CairnS3 {
    async fn delete_one(&self, bucket: &CairnPath, path: &CairnPath) -> S3Result<()> {
        match self.client.stat(path).await {
            Ok(i) if i.kind == InodeKind::File => {}
            // Deleting what does not exist succeeds, as in S3.
            Ok(_) => return Ok(()),
            Err(e) if matches!(e.kind, ErrorKind::NotFound | ErrorKind::NotADirectory) => {
                return Ok(())
            }
            Err(e) => return Err(s3_err(e, Missing::Key)),
        }
        match self.client.remove(path, false).await {
            Ok(()) => {}
            Err(e) if matches!(e.kind, ErrorKind::NotFound | ErrorKind::NotADirectory) => {}
            Err(e) => return Err(s3_err(e, Missing::Key)),
        }
        self.prune(bucket, path).await;
        Ok(())
    }

    /// Open the source of a copy: NoSuchBucket or NoSuchKey when missing.
    pub(crate) async fn open_source(
        &self,
        bucket: &str,
        path: &CairnPath,
    ) -> S3Result<cairn_client::FileReader> {
        match self.client.open(path).await {
            Ok(r) if r.inode().kind == InodeKind::File => Ok(r),
            Ok(_) => Err(s3_error!(NoSuchKey)),
            Err(e) => {
                self.require_bucket(bucket).await?;
                Err(s3_err(e, Missing::Key))
            }
        }
    }
}

//! Multipart uploads. An upload is a directory
//! `/.cairn/s3/uploads/<upload-id>/` holding `upload` (an empty file whose
//! xattrs carry the bucket, key and headers) and one file per part,
//! `part-00001` ..., each streamed like any object. Completing composes the
//! parts into the object in one metadata transaction: their chunks become
//! the object's, no byte is copied again.

use crate::attrs::{self, Headers};
use crate::body::{self, Hashing};
use crate::error::{s3_err, Missing};
use crate::gateway::{write_err, CairnS3};
use crate::names::{object_path, SYSTEM_DIR};
use cairn_client::PutOptions;
use cairn_types::{CairnPath, ErrorKind, Inode, InodeKind, Xattrs};
use md5::{Digest, Md5};
use s3s::dto::*;
use s3s::{s3_error, S3Request, S3Response, S3Result};

const BUCKET: &str = "s3.upload.bucket";
const KEY: &str = "s3.upload.key";
const INFO: &str = "upload";
/// Smallest part but the last, as in S3.
const MIN_PART: u64 = 5 << 20;
const MAX_PARTS: i32 = 10_000;

pub fn uploads_dir() -> CairnPath {
    CairnPath::parse(&format!("/{SYSTEM_DIR}/s3/uploads")).expect("valid path")
}

fn upload_dir(id: &str) -> S3Result<CairnPath> {
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(s3_error!(NoSuchUpload));
    }
    uploads_dir().join(id).map_err(|_| s3_error!(NoSuchUpload))
}

fn part_name(n: i32) -> String {
    format!("part-{n:05}")
}

fn check_part_number(n: i32) -> S3Result<()> {
    if !(1..=MAX_PARTS).contains(&n) {
        return Err(s3_error!(
            InvalidArgument,
            "part number must be an integer between 1 and {MAX_PARTS}"
        ));
    }
    Ok(())
}

/// The upload's record; NoSuchUpload unless it exists for this bucket and key.
async fn load(s3: &CairnS3, id: &str, bucket: &str, key: &str) -> S3Result<(CairnPath, Inode)> {
    let dir = upload_dir(id)?;
    let info = s3
        .client
        .stat(&dir.join(INFO).expect("valid name"))
        .await
        .map_err(|e| s3_err(e, Missing::Upload))?;
    let same = info.xattrs.get(BUCKET).map(Vec::as_slice) == Some(bucket.as_bytes())
        && info.xattrs.get(KEY).map(Vec::as_slice) == Some(key.as_bytes());
    if !same {
        return Err(s3_error!(NoSuchUpload, "upload {id} is for another object"));
    }
    Ok((dir, info))
}

fn random_id() -> S3Result<String> {
    let mut b = [0u8; 16];
    getrandom::getrandom(&mut b).map_err(|e| crate::error::internal(e.to_string()))?;
    Ok(body::hex(&b))
}

pub async fn create(
    s3: &CairnS3,
    req: S3Request<CreateMultipartUploadInput>,
) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
    let i = req.input;
    object_path(&i.bucket, &i.key)?;
    s3.require_bucket(&i.bucket).await?;
    let id = random_id()?;
    let dir = upload_dir(&id)?;
    s3.client
        .mkdir(&dir, true)
        .await
        .map_err(|e| s3_err(e, Missing::Upload))?;
    let mut x = Headers {
        content_type: i.content_type,
        cache_control: i.cache_control,
        content_disposition: i.content_disposition,
        content_encoding: i.content_encoding,
        content_language: i.content_language,
        expires: i.expires,
        metadata: i.metadata,
    }
    .to_xattrs();
    if let Some(h) = &i.tagging {
        crate::tagging::set(&mut x, &crate::tagging::from_header(h)?);
    }
    x.insert(BUCKET.into(), i.bucket.clone().into_bytes());
    x.insert(KEY.into(), i.key.clone().into_bytes());
    let opts = PutOptions {
        xattrs: Some(x),
        ..PutOptions::default()
    };
    s3.client
        .put_bytes(&dir.join(INFO).expect("valid name"), b"", opts)
        .await
        .map_err(|e| s3_err(e, Missing::Upload))?;
    Ok(S3Response::new(CreateMultipartUploadOutput {
        bucket: Some(i.bucket),
        key: Some(i.key),
        upload_id: Some(id),
        ..Default::default()
    }))
}

async fn put_part<R>(
    s3: &CairnS3,
    path: &CairnPath,
    src: R,
    content_md5: Option<[u8; 16]>,
) -> S3Result<Inode>
where
    R: tokio::io::AsyncRead + Unpin + Send,
{
    let (reader, hash) = Hashing::expecting(src, content_md5);
    let check = hash.clone();
    // Parts are always chunks: completing composes them, and meta cannot
    // join bytes kept in a record (a small last part) to chunks.
    let opts = PutOptions {
        cues: cairn_types::Cues {
            inline: Some(0),
            ..Default::default()
        },
        ..PutOptions::default()
    };
    s3.client
        .put_with_attrs(path, reader, opts, move || {
            let mut x = Xattrs::new();
            x.insert(attrs::ETAG.into(), body::hex(&hash.digest().0).into_bytes());
            x
        })
        .await
        .map_err(|e| match check.mismatched() {
            true => body::bad_digest(),
            false => s3_err(e, Missing::Upload),
        })
}

pub async fn upload_part(
    s3: &CairnS3,
    req: S3Request<UploadPartInput>,
) -> S3Result<S3Response<UploadPartOutput>> {
    let i = req.input;
    check_part_number(i.part_number)?;
    let (dir, _) = load(s3, &i.upload_id, &i.bucket, &i.key).await?;
    let path = dir.join(&part_name(i.part_number)).expect("valid name");
    let md5 = body::content_md5(i.content_md5.as_deref())?;
    let inode = match i.body {
        Some(b) => put_part(s3, &path, body::blob_reader(b), md5).await?,
        None => put_part(s3, &path, &[][..], md5).await?,
    };
    Ok(S3Response::new(UploadPartOutput {
        e_tag: Some(attrs::etag(&inode)),
        ..Default::default()
    }))
}

pub async fn upload_part_copy(
    s3: &CairnS3,
    req: S3Request<UploadPartCopyInput>,
) -> S3Result<S3Response<UploadPartCopyOutput>> {
    let key = req.extensions.get::<crate::keys::KeyRecord>().cloned();
    let i = req.input;
    check_part_number(i.part_number)?;
    let (sb, sk) = match &i.copy_source {
        CopySource::Bucket { bucket, key, .. } => (bucket.to_string(), key.to_string()),
        _ => return Err(s3_error!(NotImplemented, "access-point copy sources")),
    };
    if key.is_some_and(|k| !k.allows("GetObject", Some(&sb))) {
        return Err(s3_error!(AccessDenied, "this key may not read bucket {sb}"));
    }
    let (dir, _) = load(s3, &i.upload_id, &i.bucket, &i.key).await?;
    let reader = s3.open_source(&sb, &object_path(&sb, &sk)?).await?;
    let size = reader.size();
    let (start, end) = match &i.copy_source_range {
        None => (0, size),
        Some(r) => {
            let bad = || {
                s3_error!(
                    InvalidArgument,
                    "x-amz-copy-source-range must be bytes=first-last"
                )
            };
            let (a, b) = r
                .strip_prefix("bytes=")
                .and_then(|s| s.split_once('-'))
                .ok_or_else(bad)?;
            let a: u64 = a.parse().map_err(|_| bad())?;
            let b: u64 = b.parse().map_err(|_| bad())?;
            if a > b || b >= size {
                return Err(s3_error!(InvalidRange));
            }
            (a, b + 1)
        }
    };
    let path = dir.join(&part_name(i.part_number)).expect("valid name");
    let inode = put_part(
        s3,
        &path,
        body::blob_reader(body::download(reader, start, end)),
        None,
    )
    .await?;
    Ok(S3Response::new(UploadPartCopyOutput {
        copy_part_result: Some(CopyPartResult {
            e_tag: Some(attrs::etag(&inode)),
            last_modified: Some(attrs::last_modified(&inode)),
            ..Default::default()
        }),
        ..Default::default()
    }))
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

pub async fn complete(
    s3: &CairnS3,
    req: S3Request<CompleteMultipartUploadInput>,
) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
    let i = req.input;
    let dst = object_path(&i.bucket, &i.key)?;
    let (dir, info) = load(s3, &i.upload_id, &i.bucket, &i.key).await?;
    let bucket = s3.require_bucket(&i.bucket).await?;
    let wanted = i.multipart_upload.and_then(|m| m.parts).unwrap_or_default();
    if wanted.is_empty() {
        return Err(s3_error!(
            MalformedXML,
            "CompleteMultipartUpload needs at least one part"
        ));
    }
    let mut prev = 0;
    for p in &wanted {
        let n = p.part_number.ok_or_else(|| s3_error!(InvalidPart))?;
        if n <= prev {
            return Err(s3_error!(InvalidPartOrder));
        }
        prev = n;
        check_part_number(n)?;
    }
    let mut sources = Vec::with_capacity(wanted.len());
    let mut sizes = Vec::with_capacity(wanted.len());
    let mut md5 = Md5::new();
    for (idx, p) in wanted.iter().enumerate() {
        let n = p.part_number.unwrap_or_default();
        let path = dir.join(&part_name(n)).expect("valid name");
        let part = match s3.client.stat(&path).await {
            Ok(i) if i.kind == InodeKind::File => i,
            _ => return Err(s3_error!(InvalidPart, "part {n} was not uploaded")),
        };
        let etag = attrs::etag_of(&part);
        if p.e_tag.as_ref().is_some_and(|t| t.value() != etag) {
            return Err(s3_error!(InvalidPart, "part {n} has another ETag"));
        }
        if idx + 1 < wanted.len() && part.size < MIN_PART {
            return Err(s3_error!(
                EntityTooSmall,
                "part {n} is {} bytes; every part but the last must be at least 5 MiB",
                part.size
            ));
        }
        md5.update(unhex(&etag).unwrap_or_default());
        sizes.push(part.size.to_string());
        sources.push(path);
    }
    let etag = format!("{}-{}", body::hex(&md5.finalize()), wanted.len());
    let expected = s3
        .write_condition(&dst, i.if_match.as_ref(), i.if_none_match.as_ref())
        .await?;
    let mut x = Headers::from_xattrs(&info.xattrs).to_xattrs();
    crate::tagging::set(&mut x, &crate::tagging::of(&info.xattrs));
    x.insert(attrs::ETAG.into(), etag.clone().into_bytes());
    x.insert(attrs::PARTS.into(), wanted.len().to_string().into_bytes());
    x.insert(attrs::PART_SIZES.into(), sizes.join(",").into_bytes());
    let mut attempt = 0;
    let inode = loop {
        attempt += 1;
        s3.make_parents(&bucket, &dst).await?;
        match s3
            .client
            .compose(&dst, sources.clone(), expected, 0o644, Some(x.clone()))
            .await
        {
            Ok(i) => break i,
            // A concurrent delete pruned the key's directory: make it again.
            Err(e) if e.kind == ErrorKind::NotFound && attempt < 3 => {
                if s3.client.stat(&dir).await.is_err() {
                    return Err(s3_error!(NoSuchUpload));
                }
            }
            Err(e) => return Err(write_err(e, &dst)),
        }
    };
    if let Err(e) = s3.client.remove(&dir, true).await {
        tracing::warn!("could not remove finished upload {}: {e}", i.upload_id);
    }
    Ok(S3Response::new(CompleteMultipartUploadOutput {
        bucket: Some(i.bucket.clone()),
        key: Some(i.key.clone()),
        location: Some(format!("/{}/{}", i.bucket, i.key)),
        e_tag: Some(attrs::etag(&inode)),
        ..Default::default()
    }))
}

pub async fn abort(
    s3: &CairnS3,
    req: S3Request<AbortMultipartUploadInput>,
) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
    let i = req.input;
    let (dir, _) = load(s3, &i.upload_id, &i.bucket, &i.key).await?;
    s3.client
        .remove(&dir, true)
        .await
        .map_err(|e| s3_err(e, Missing::Upload))?;
    Ok(S3Response::new(AbortMultipartUploadOutput::default()))
}

pub async fn list_parts(
    s3: &CairnS3,
    req: S3Request<ListPartsInput>,
) -> S3Result<S3Response<ListPartsOutput>> {
    let i = req.input;
    let (dir, _) = load(s3, &i.upload_id, &i.bucket, &i.key).await?;
    let max = i.max_parts.unwrap_or(1000).clamp(0, 1000) as usize;
    let after = i
        .part_number_marker
        .filter(|n| *n > 0)
        .map(part_name)
        .unwrap_or_else(|| "part-".into());
    let page = s3
        .client
        .list_page(&dir, Some(after), max as u32 + 1)
        .await
        .map_err(|e| s3_err(e, Missing::Upload))?;
    let mut parts: Vec<Part> = page
        .iter()
        .filter_map(|e| {
            let n: i32 = e.name.strip_prefix("part-")?.parse().ok()?;
            Some(Part {
                part_number: Some(n),
                e_tag: Some(attrs::etag(&e.inode)),
                size: Some(e.inode.size as i64),
                last_modified: Some(attrs::last_modified(&e.inode)),
                ..Default::default()
            })
        })
        .collect();
    let truncated = parts.len() > max;
    parts.truncate(max);
    let next = parts.last().and_then(|p| p.part_number);
    Ok(S3Response::new(ListPartsOutput {
        bucket: Some(i.bucket),
        key: Some(i.key),
        upload_id: Some(i.upload_id),
        max_parts: Some(max as i32),
        is_truncated: Some(truncated),
        part_number_marker: i.part_number_marker,
        next_part_number_marker: next,
        parts: Some(parts),
        ..Default::default()
    }))
}

pub async fn list_uploads(
    s3: &CairnS3,
    req: S3Request<ListMultipartUploadsInput>,
) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
    let i = req.input;
    s3.require_bucket(&i.bucket).await?;
    let prefix = i.prefix.clone().unwrap_or_default();
    let mut all: Vec<(String, String, Inode)> = Vec::new();
    let root = uploads_dir();
    let mut after = None;
    loop {
        let page = match s3.client.list_page(&root, after.clone(), 1000).await {
            Ok(p) => p,
            Err(e) if e.kind == ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(s3_err(e, Missing::Upload)),
        };
        let n = page.len();
        for e in page {
            after = Some(e.name.clone());
            let Ok(info) = s3
                .client
                .stat(
                    &root
                        .join(&e.name)
                        .and_then(|d| d.join(INFO))
                        .map_err(|e| s3_err(e, Missing::Upload))?,
                )
                .await
            else {
                continue;
            };
            let get = |k: &str| {
                info.xattrs
                    .get(k)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            };
            if get(BUCKET).as_deref() != Some(i.bucket.as_str()) {
                continue;
            }
            let Some(key) = get(KEY) else { continue };
            if key.starts_with(&prefix) {
                all.push((key, e.name, info));
            }
        }
        if n < 1000 {
            break;
        }
    }
    all.sort_by(|a, b| (&a.0, a.2.mtime_ms()).cmp(&(&b.0, b.2.mtime_ms())));
    if let Some(m) = i.key_marker.as_deref().filter(|m| !m.is_empty()) {
        all.retain(|(k, _, _)| k.as_str() > m);
    }
    let max = i.max_uploads.unwrap_or(1000).clamp(0, 1000) as usize;
    let truncated = all.len() > max;
    all.truncate(max);
    let next_key = all.last().map(|u| u.0.clone());
    let next_id = all.last().map(|u| u.1.clone());
    let uploads = all
        .into_iter()
        .map(|(key, id, info)| MultipartUpload {
            key: Some(key),
            upload_id: Some(id),
            initiated: Some(attrs::last_modified(&info)),
            ..Default::default()
        })
        .collect();
    Ok(S3Response::new(ListMultipartUploadsOutput {
        bucket: Some(i.bucket),
        prefix: i.prefix,
        key_marker: i.key_marker,
        max_uploads: Some(max as i32),
        is_truncated: Some(truncated),
        next_key_marker: truncated.then_some(next_key).flatten(),
        next_upload_id_marker: truncated.then_some(next_id).flatten(),
        uploads: Some(uploads),
        ..Default::default()
    }))
}

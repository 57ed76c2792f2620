"""boto3 against the Cairn gateway: objects, metadata, listing semantics,
ranges, conditions, copies, multipart, presigned URLs, errors."""
import hashlib
import os
import threading
import urllib.request

from boto3.s3.transfer import TransferConfig
from common import ENDPOINT, client, code, expect_error
from botocore.exceptions import ClientError

s3 = client()
B = "boto"
s3.create_bucket(Bucket=B)
assert B in [b["Name"] for b in s3.list_buckets()["Buckets"]]
assert ".cairn" not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
expect_error("BucketAlreadyOwnedByYou", s3.create_bucket, Bucket=B)
s3.head_bucket(Bucket=B)

# Put, get, head: ETag is the MD5, headers and metadata round-trip.
body = os.urandom(300_000)
r = s3.put_object(
    Bucket=B, Key="dir/obj.bin", Body=body, ContentType="application/x-test",
    Metadata={"Color": "blue", "n": "1"}, CacheControl="max-age=60",
    ContentDisposition="attachment", ContentLanguage="en",
)
md5 = hashlib.md5(body).hexdigest()
assert r["ETag"] == f'"{md5}"', r["ETag"]
g = s3.get_object(Bucket=B, Key="dir/obj.bin")
assert g["Body"].read() == body
assert g["ContentType"] == "application/x-test"
assert g["Metadata"] == {"color": "blue", "n": "1"}, g["Metadata"]
assert g["CacheControl"] == "max-age=60"
assert g["ContentDisposition"] == "attachment"
assert g["ContentLength"] == len(body)
h = s3.head_object(Bucket=B, Key="dir/obj.bin")
assert h["ETag"] == f'"{md5}"' and h["ContentLength"] == len(body)

# Content-MD5 is checked: a body that differs is BadDigest and nothing is
# stored; a malformed one is InvalidDigest; the right one is fine.
import base64
good = base64.b64encode(hashlib.md5(b"checked").digest()).decode()
wrong = base64.b64encode(hashlib.md5(b"other").digest()).decode()
s3.put_object(Bucket=B, Key="md5/ok", Body=b"checked", ContentMD5=good)
assert s3.get_object(Bucket=B, Key="md5/ok")["Body"].read() == b"checked"
expect_error("BadDigest", s3.put_object, Bucket=B, Key="md5/ok", Body=b"tampered", ContentMD5=good)
assert s3.get_object(Bucket=B, Key="md5/ok")["Body"].read() == b"checked", "a bad digest changed the object"
expect_error("BadDigest", s3.put_object, Bucket=B, Key="md5top", Body=b"checked", ContentMD5=wrong)
expect_error("NoSuchKey", s3.get_object, Bucket=B, Key="md5top")
expect_error("InvalidDigest", s3.put_object, Bucket=B, Key="md5top", Body=b"x", ContentMD5="not-base64!")
up = s3.create_multipart_upload(Bucket=B, Key="md5/mp")["UploadId"]
expect_error("BadDigest", s3.upload_part, Bucket=B, Key="md5/mp", UploadId=up, PartNumber=1,
             Body=b"part", ContentMD5=wrong)
assert not s3.list_parts(Bucket=B, Key="md5/mp", UploadId=up).get("Parts")
s3.upload_part(Bucket=B, Key="md5/mp", UploadId=up, PartNumber=1, Body=b"checked", ContentMD5=good)
s3.abort_multipart_upload(Bucket=B, Key="md5/mp", UploadId=up)
s3.delete_object(Bucket=B, Key="md5/ok")

# Ranges.
assert s3.get_object(Bucket=B, Key="dir/obj.bin", Range="bytes=10-19")["Body"].read() == body[10:20]
r = s3.get_object(Bucket=B, Key="dir/obj.bin", Range="bytes=-100")
assert r["Body"].read() == body[-100:] and r["ContentRange"] == f"bytes {len(body)-100}-{len(body)-1}/{len(body)}"
assert s3.get_object(Bucket=B, Key="dir/obj.bin", Range="bytes=299990-")["Body"].read() == body[299990:]
expect_error("InvalidRange", s3.get_object, Bucket=B, Key="dir/obj.bin", Range="bytes=400000-")

# A small object (kept in meta, inline): the same headers, ranges and ETag.
# Its bucket stays, for the test to look at how the objects are stored.
S = "smallbkt"
s3.create_bucket(Bucket=S)
small = os.urandom(1500)
r = s3.put_object(Bucket=S, Key="small/obj", Body=small, ContentType="text/x-small",
                  Metadata={"k": "v"})
assert r["ETag"] == f'"{hashlib.md5(small).hexdigest()}"', r["ETag"]
g = s3.get_object(Bucket=S, Key="small/obj")
assert g["Body"].read() == small and g["ContentType"] == "text/x-small"
assert g["Metadata"] == {"k": "v"} and g["ContentLength"] == 1500
assert s3.get_object(Bucket=S, Key="small/obj", Range="bytes=100-199")["Body"].read() == small[100:200]
assert s3.get_object(Bucket=S, Key="small/obj", Range="bytes=-10")["Body"].read() == small[-10:]
expect_error("InvalidRange", s3.get_object, Bucket=S, Key="small/obj", Range="bytes=1500-")
s3.copy_object(Bucket=S, Key="small/copy", CopySource={"Bucket": S, "Key": "small/obj"})
assert s3.get_object(Bucket=S, Key="small/copy")["Body"].read() == small
# Overwritten with a larger body it is chunks; back to small, inline again.
s3.put_object(Bucket=S, Key="small/grows", Body=b"a" * 10)
s3.put_object(Bucket=S, Key="small/grows", Body=b"b" * 100_000)
assert s3.get_object(Bucket=S, Key="small/grows")["Body"].read() == b"b" * 100_000
s3.put_object(Bucket=S, Key="small/grows", Body=b"c" * 20)
assert s3.get_object(Bucket=S, Key="small/grows")["Body"].read() == b"c" * 20

# Conditional GETs.
etag = f'"{md5}"'
s3.get_object(Bucket=B, Key="dir/obj.bin", IfMatch=etag)
expect_error("PreconditionFailed", s3.get_object, Bucket=B, Key="dir/obj.bin", IfMatch='"nope"')
e = expect_error("304", s3.get_object, Bucket=B, Key="dir/obj.bin", IfNoneMatch=etag)
# A 304 carries what a cache revalidates against.
assert e.response["ResponseMetadata"]["HTTPHeaders"]["etag"] == etag, e.response
assert "last-modified" in e.response["ResponseMetadata"]["HTTPHeaders"], e.response
lm = h["LastModified"]
expect_error("304", s3.get_object, Bucket=B, Key="dir/obj.bin", IfModifiedSince=lm)
import datetime
s3.get_object(Bucket=B, Key="dir/obj.bin", IfModifiedSince=lm - datetime.timedelta(days=1))

# Missing things.
expect_error("NoSuchKey", s3.get_object, Bucket=B, Key="nope")
expect_error("NoSuchKey", s3.get_object, Bucket=B, Key="dir")  # a prefix is no object
expect_error("NoSuchBucket", s3.get_object, Bucket="no-such-bucket", Key="x")
expect_error("NoSuchBucket", s3.list_objects_v2, Bucket="no-such-bucket")
expect_error("404", s3.head_object, Bucket=B, Key="nope")
# Every answer names its request (x-amz-request-id), an error's body too.
e = expect_error("NoSuchKey", s3.get_object, Bucket=B, Key="nope")
rid = e.response["ResponseMetadata"]["RequestId"]
assert len(rid) == 16 and e.response["Error"].get("RequestId", rid) == rid, e.response
assert s3.head_object(Bucket=B, Key="dir/obj.bin")["ResponseMetadata"]["RequestId"]
try:
    urllib.request.urlopen(f"{ENDPOINT}/{B}/dir/obj.bin")
    raise AssertionError("an anonymous GET worked")
except urllib.error.HTTPError as e:
    page = e.read().decode()
    assert e.code == 403 and "<RequestId>" + e.headers["x-amz-request-id"] + "</RequestId>" in page, page

# Keys without a faithful path are refused, not mangled.
for bad in ["a//b", "a/../b", "trailing/", "./x"]:
    expect_error("InvalidArgument", s3.put_object, Bucket=B, Key=bad, Body=b"x")

# CopyObject with both metadata directives.
c = s3.copy_object(Bucket=B, Key="copy1", CopySource={"Bucket": B, "Key": "dir/obj.bin"})
assert c["CopyObjectResult"]["ETag"] == etag
h = s3.head_object(Bucket=B, Key="copy1")
assert h["Metadata"] == {"color": "blue", "n": "1"} and h["ContentType"] == "application/x-test"
s3.copy_object(Bucket=B, Key="copy2", CopySource={"Bucket": B, "Key": "dir/obj.bin"},
               MetadataDirective="REPLACE", Metadata={"k": "v"}, ContentType="text/plain")
h = s3.head_object(Bucket=B, Key="copy2")
assert h["Metadata"] == {"k": "v"} and h["ContentType"] == "text/plain"
assert s3.get_object(Bucket=B, Key="copy2")["Body"].read() == body
expect_error("InvalidRequest", s3.copy_object, Bucket=B, Key="copy1", CopySource={"Bucket": B, "Key": "copy1"})
s3.copy_object(Bucket=B, Key="copy1", CopySource={"Bucket": B, "Key": "copy1"},
               MetadataDirective="REPLACE", Metadata={"x": "y"})
assert s3.head_object(Bucket=B, Key="copy1")["Metadata"] == {"x": "y"}

# Listing semantics (v1 and v2) on a bucket of its own.
L = "listing"
s3.create_bucket(Bucket=L)
keys = ["a-b", "a.txt", "a/b", "a/c/d", "a/c/e", "a0", "b/x", "b/y/z", "c"]
for k in keys:
    s3.put_object(Bucket=L, Key=k, Body=k.encode())
r = s3.list_objects_v2(Bucket=L)
assert [o["Key"] for o in r["Contents"]] == sorted(keys), [o["Key"] for o in r["Contents"]]
assert r["KeyCount"] == len(keys) and not r["IsTruncated"]
r = s3.list_objects_v2(Bucket=L, Delimiter="/")
assert [o["Key"] for o in r["Contents"]] == ["a-b", "a.txt", "a0", "c"]
assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["a/", "b/"]
r = s3.list_objects_v2(Bucket=L, Prefix="a/", Delimiter="/")
assert [o["Key"] for o in r["Contents"]] == ["a/b"] and [p["Prefix"] for p in r["CommonPrefixes"]] == ["a/c/"]
r = s3.list_objects_v2(Bucket=L, Prefix="a")
assert [o["Key"] for o in r["Contents"]] == [k for k in sorted(keys) if k.startswith("a")]
r = s3.list_objects_v2(Bucket=L, Prefix="a/c/")
assert [o["Key"] for o in r["Contents"]] == ["a/c/d", "a/c/e"]
r = s3.list_objects_v2(Bucket=L, StartAfter="a/b")
assert [o["Key"] for o in r["Contents"]] == [k for k in sorted(keys) if k > "a/b"]
# An empty delimiter is no delimiter, and is not echoed (as on AWS).
r = s3.list_objects_v2(Bucket=L, Delimiter="")
assert "Delimiter" not in r and len(r["Contents"]) == len(keys), r
r = s3.list_objects_v2(Bucket=L, Delimiter="-")
assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["a-"], r.get("CommonPrefixes")
# A key cannot be both an object and a prefix of others in a file system.
expect_error("InvalidRequest", s3.put_object, Bucket=L, Key="a", Body=b"x")
expect_error("InvalidRequest", s3.put_object, Bucket=L, Key="c/d", Body=b"x")
r = s3.list_objects_v2(Bucket=L, MaxKeys=0)
assert r["KeyCount"] == 0
# Paging with continuation tokens, with and without a delimiter.
for delim in [None, "/"]:
    seen, token = [], None
    while True:
        kw = {"Bucket": L, "MaxKeys": 2}
        if delim:
            kw["Delimiter"] = delim
        if token:
            kw["ContinuationToken"] = token
        r = s3.list_objects_v2(**kw)
        assert r["KeyCount"] <= 2
        seen += [o["Key"] for o in r.get("Contents", [])] + [p["Prefix"] for p in r.get("CommonPrefixes", [])]
        if not r["IsTruncated"]:
            break
        token = r["NextContinuationToken"]
    want = sorted(keys) if not delim else sorted(["a-b", "a.txt", "a0", "c", "a/", "b/"])
    assert sorted(seen) == want and len(seen) == len(want), (delim, seen)
# v1 with markers.
seen, marker = [], ""
while True:
    r = s3.list_objects(Bucket=L, MaxKeys=3, Marker=marker)
    seen += [o["Key"] for o in r.get("Contents", [])]
    if not r["IsTruncated"]:
        break
    marker = r.get("NextMarker") or r["Contents"][-1]["Key"]
assert seen == sorted(keys), seen
r = s3.list_objects(Bucket=L, Delimiter="/", Prefix="b/")
assert [o["Key"] for o in r["Contents"]] == ["b/x"] and [p["Prefix"] for p in r["CommonPrefixes"]] == ["b/y/"]

# DeleteObjects, then BucketNotEmpty / delete bucket.
expect_error("BucketNotEmpty", s3.delete_bucket, Bucket=L)
r = s3.delete_objects(Bucket=L, Delete={"Objects": [{"Key": k} for k in keys]})
assert len(r["Deleted"]) == len(keys) and not r.get("Errors")
assert s3.list_objects_v2(Bucket=L)["KeyCount"] == 0
s3.delete_bucket(Bucket=L)
expect_error("NoSuchBucket", s3.head_bucket, Bucket=L) if False else None
try:
    s3.head_bucket(Bucket=L)
    raise AssertionError("bucket still there")
except ClientError as e:
    assert code(e) in ("404", "NoSuchBucket")

# Conditional writes: of racing writers exactly one wins.
def race(n, tag, **kw):
    results = []
    def put(i):
        try:
            s3.put_object(Bucket=B, Key="race", Body=f"{tag} writer {i}".encode() * 1000, **kw)
            results.append("ok")
        except ClientError as e:
            results.append(code(e))
    ts = [threading.Thread(target=put, args=(i,)) for i in range(n)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    return results
res = race(4, "create", IfNoneMatch="*")
assert res.count("ok") == 1 and res.count("PreconditionFailed") == 3, res
cur = s3.head_object(Bucket=B, Key="race")["ETag"]
res = race(4, "replace", IfMatch=cur)
assert res.count("ok") == 1 and res.count("PreconditionFailed") == 3, res
expect_error("PreconditionFailed", s3.put_object, Bucket=B, Key="race", Body=b"x", IfMatch=cur)
expect_error("PreconditionFailed", s3.put_object, Bucket=B, Key="race", Body=b"x", IfNoneMatch="*")
# The same under a prefix (the staged write path).
expect_error("PreconditionFailed", s3.put_object, Bucket=B, Key="dir/obj.bin", Body=b"x", IfNoneMatch="*")
s3.put_object(Bucket=B, Key="dir/new", Body=b"x", IfNoneMatch="*")

# Multipart through upload_file with a small threshold: ETag is "-N".
path = "/tmp/cairn-boto-mp-%d" % os.getpid()
data = os.urandom(12 * 1024 * 1024 + 12345)
with open(path, "wb") as f:
    f.write(data)
cfg = TransferConfig(multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024, max_concurrency=3)
s3.upload_file(path, B, "mp/big.bin", Config=cfg, ExtraArgs={"Metadata": {"m": "1"}, "ContentType": "video/x"})
h = s3.head_object(Bucket=B, Key="mp/big.bin")
assert h["ETag"].endswith('-3"'), h["ETag"]
parts = [hashlib.md5(data[i:i + 5 * 1024 * 1024]).digest() for i in range(0, len(data), 5 * 1024 * 1024)]
assert h["ETag"] == '"%s-3"' % hashlib.md5(b"".join(parts)).hexdigest()
assert h["Metadata"] == {"m": "1"} and h["ContentType"] == "video/x" and h["ContentLength"] == len(data)
s3.download_file(B, "mp/big.bin", path + ".out", Config=cfg)
assert open(path + ".out", "rb").read() == data
os.remove(path)
os.remove(path + ".out")

# Multipart by hand: list parts and uploads, part copy, abort, too-small parts.
up = s3.create_multipart_upload(Bucket=B, Key="mp/manual")["UploadId"]
assert up in [u["UploadId"] for u in s3.list_multipart_uploads(Bucket=B)["Uploads"]]
p1 = s3.upload_part(Bucket=B, Key="mp/manual", UploadId=up, PartNumber=1, Body=data[: 5 * 1024 * 1024])
p2 = s3.upload_part_copy(Bucket=B, Key="mp/manual", UploadId=up, PartNumber=2,
                         CopySource={"Bucket": B, "Key": "dir/obj.bin"}, CopySourceRange="bytes=0-999")
lp = s3.list_parts(Bucket=B, Key="mp/manual", UploadId=up)
assert [p["PartNumber"] for p in lp["Parts"]] == [1, 2] and lp["Parts"][1]["Size"] == 1000
parts = [{"PartNumber": 1, "ETag": p1["ETag"]}, {"PartNumber": 2, "ETag": p2["CopyPartResult"]["ETag"]}]
expect_error("InvalidPartOrder", s3.complete_multipart_upload, Bucket=B, Key="mp/manual", UploadId=up,
             MultipartUpload={"Parts": parts[::-1]})
s3.complete_multipart_upload(Bucket=B, Key="mp/manual", UploadId=up, MultipartUpload={"Parts": parts})
assert s3.get_object(Bucket=B, Key="mp/manual")["Body"].read() == data[: 5 * 1024 * 1024] + body[:1000]
# GET and HEAD by part number: each part as uploaded, with the parts count.
g = s3.get_object(Bucket=B, Key="mp/manual", PartNumber=2)
assert g["Body"].read() == body[:1000] and g["PartsCount"] == 2, g
assert g["ContentRange"] == f"bytes {5 * 1024 * 1024}-{5 * 1024 * 1024 + 999}/{5 * 1024 * 1024 + 1000}", g
h = s3.head_object(Bucket=B, Key="mp/manual", PartNumber=1)
assert h["ContentLength"] == 5 * 1024 * 1024 and h["PartsCount"] == 2, h
expect_error("InvalidPartNumber", s3.get_object, Bucket=B, Key="mp/manual", PartNumber=3)
expect_error("InvalidRequest", s3.get_object, Bucket=B, Key="mp/manual", PartNumber=1, Range="bytes=0-1")
# An object not made by multipart is its own part 1.
assert s3.get_object(Bucket=B, Key="dir/obj.bin", PartNumber=1)["Body"].read() == body
# GetObjectAttributes: what was asked for; a multipart object's parts count.
a = s3.get_object_attributes(Bucket=B, Key="mp/manual",
                             ObjectAttributes=["ETag", "ObjectSize", "StorageClass", "ObjectParts"])
assert a["ObjectSize"] == 5 * 1024 * 1024 + 1000 and a["StorageClass"] == "STANDARD", a
assert a["ETag"].strip('"') == s3.head_object(Bucket=B, Key="mp/manual")["ETag"].strip('"'), a
assert a["ObjectParts"]["TotalPartsCount"] == 2 and "LastModified" in a, a
a = s3.get_object_attributes(Bucket=B, Key="dir/obj.bin", ObjectAttributes=["ObjectSize"])
assert a["ObjectSize"] == len(body) and "ETag" not in a and "ObjectParts" not in a, a
expect_error("NoSuchKey", s3.get_object_attributes, Bucket=B, Key="mp/none", ObjectAttributes=["ETag"])
expect_error("NoSuchBucket", s3.get_object_attributes, Bucket="no-such-bucket-x", Key="k",
             ObjectAttributes=["ETag"])
expect_error("NoSuchUpload", s3.list_parts, Bucket=B, Key="mp/manual", UploadId=up)
up = s3.create_multipart_upload(Bucket=B, Key="mp/small")["UploadId"]
a = s3.upload_part(Bucket=B, Key="mp/small", UploadId=up, PartNumber=1, Body=b"tiny")
b = s3.upload_part(Bucket=B, Key="mp/small", UploadId=up, PartNumber=2, Body=b"tiny")
expect_error("EntityTooSmall", s3.complete_multipart_upload, Bucket=B, Key="mp/small", UploadId=up,
             MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": a["ETag"]}, {"PartNumber": 2, "ETag": b["ETag"]}]})
s3.abort_multipart_upload(Bucket=B, Key="mp/small", UploadId=up)
expect_error("NoSuchUpload", s3.abort_multipart_upload, Bucket=B, Key="mp/small", UploadId=up)
# A completion with If-None-Match on an existing key loses.
up = s3.create_multipart_upload(Bucket=B, Key="dir/obj.bin")["UploadId"]
a = s3.upload_part(Bucket=B, Key="dir/obj.bin", UploadId=up, PartNumber=1, Body=b"x")
expect_error("PreconditionFailed", s3.complete_multipart_upload, Bucket=B, Key="dir/obj.bin", UploadId=up,
             IfNoneMatch="*", MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": a["ETag"]}]})
s3.abort_multipart_upload(Bucket=B, Key="dir/obj.bin", UploadId=up)

# Presigned URLs (SigV4; botocore's default for presigning is still SigV2).
v4 = client(signature_version="s3v4")
url = v4.generate_presigned_url("get_object", Params={"Bucket": B, "Key": "dir/obj.bin"}, ExpiresIn=60)
assert urllib.request.urlopen(url).read() == body
assert "X-Amz-Signature=" in url
url = v4.generate_presigned_url("put_object", Params={"Bucket": B, "Key": "presigned"}, ExpiresIn=60)
assert "X-Amz-Signature=" in url.rsplit("&", 1)[1]
req = urllib.request.Request(url, data=b"via presigned put", method="PUT")
urllib.request.urlopen(req).read()
assert s3.get_object(Bucket=B, Key="presigned")["Body"].read() == b"via presigned put"
bad = url[:-1] + ("0" if url[-1] != "0" else "1")  # the signature ends the URL
try:
    urllib.request.urlopen(urllib.request.Request(bad, data=b"x", method="PUT"))
    raise AssertionError("a tampered presigned URL worked")
except urllib.error.HTTPError as e:
    assert e.code == 403, e.code

# Virtual-hosted style is refused politely without a domain; path style is the default.
# Authentication and rights.
expect_error("SignatureDoesNotMatch", client(sk="wrong" * 8).list_buckets)
expect_error("InvalidAccessKeyId", client(ak="CKNOSUCHKEY000000000", sk="x" * 40).list_buckets)
ro = client(os.environ["S3_RO_AK"], os.environ["S3_RO_SK"])
assert ro.get_object(Bucket=B, Key="dir/obj.bin")["Body"].read() == body
expect_error("AccessDenied", ro.put_object, Bucket=B, Key="ro", Body=b"x")
expect_error("AccessDenied", ro.delete_object, Bucket=B, Key="dir/obj.bin")
expect_error("AccessDenied", ro.create_bucket, Bucket="ro-bucket")
expect_error("AccessDenied", ro.put_object_tagging, Bucket=B, Key="dir/obj.bin",
             Tagging={"TagSet": [{"Key": "k", "Value": "v"}]})
assert ro.get_object_tagging(Bucket=B, Key="dir/obj.bin")["TagSet"] == []
only = client(os.environ["S3_ONE_AK"], os.environ["S3_ONE_SK"])
assert [b["Name"] for b in only.list_buckets()["Buckets"]] == [B]
only.put_object(Bucket=B, Key="only", Body=b"x")
s3.create_bucket(Bucket="other")
expect_error("AccessDenied", only.list_objects_v2, Bucket="other")
expect_error("AccessDenied", only.copy_object, Bucket=B, Key="c", CopySource={"Bucket": "other", "Key": "x"})
s3.delete_bucket(Bucket="other")

# An unversioned bucket: each object's only version is "null"; backup
# tools enumerate a bucket with ListObjectVersions.
s3.create_bucket(Bucket="vers")
for k in ["a/1", "a/2", "b", "c/d/e"]:
    s3.put_object(Bucket="vers", Key=k, Body=k.encode())
assert "Status" not in s3.get_bucket_versioning(Bucket="vers")
v = s3.list_object_versions(Bucket="vers")
assert [(x["Key"], x["VersionId"], x["IsLatest"]) for x in v["Versions"]] == [
    ("a/1", "null", True), ("a/2", "null", True), ("b", "null", True), ("c/d/e", "null", True)], v
assert v["Versions"][1]["Size"] == 3 and v["Versions"][1]["ETag"] == s3.head_object(Bucket="vers", Key="a/2")["ETag"]
assert not v.get("DeleteMarkers") and not v["IsTruncated"]
v = s3.list_object_versions(Bucket="vers", Delimiter="/", Prefix="")
assert [x["Key"] for x in v["Versions"]] == ["b"] and [p["Prefix"] for p in v["CommonPrefixes"]] == ["a/", "c/"], v
# Paging with key and version markers.
seen, km, vm = [], None, None
while True:
    kw = {"KeyMarker": km, "VersionIdMarker": vm} if km else {}
    page = s3.list_object_versions(Bucket="vers", MaxKeys=1, **kw)
    seen += [x["Key"] for x in page["Versions"]]
    if not page["IsTruncated"]:
        break
    km, vm = page["NextKeyMarker"], page["NextVersionIdMarker"]
    assert vm == "null"
assert seen == ["a/1", "a/2", "b", "c/d/e"], seen
paginated = [x["Key"] for p in s3.get_paginator("list_object_versions").paginate(Bucket="vers", PaginationConfig={"PageSize": 2}) for x in p.get("Versions", [])]
assert paginated == seen, paginated
# versionId=null names the object; any other id names nothing.
assert s3.get_object(Bucket="vers", Key="b", VersionId="null")["Body"].read() == b"b"
s3.head_object(Bucket="vers", Key="b", VersionId="null")
expect_error("NoSuchVersion", s3.get_object, Bucket="vers", Key="b", VersionId="3HL4kqtJlcpXroDTDmJ")
expect_error("NoSuchVersion", s3.delete_object, Bucket="vers", Key="b", VersionId="3HL4kqtJlcpXroDTDmJ")
assert s3.get_object(Bucket="vers", Key="b")["Body"].read() == b"b"
# The usual "empty a bucket" loop of backup tools: delete every version.
r = s3.delete_objects(Bucket="vers", Delete={"Objects": [
    {"Key": x["Key"], "VersionId": x["VersionId"]} for x in s3.list_object_versions(Bucket="vers")["Versions"]]})
assert len(r["Deleted"]) == 4 and not r.get("Errors"), r
assert not s3.list_object_versions(Bucket="vers").get("Versions")
s3.delete_bucket(Bucket="vers")

# Object tags: on PUT (x-amz-tagging), by PutObjectTagging, counted on GET,
# kept or replaced by a copy, kept by multipart; changing them is not a new
# version (the ETag and body stay); AWS's limits and codes.
T = "tags"
s3.create_bucket(Bucket=T)
s3.put_object(Bucket=T, Key="run/1.bin", Body=b"one", Tagging="project=cairn&team=fleet%20ops")
tagset = lambda k: {t["Key"]: t["Value"] for t in s3.get_object_tagging(Bucket=T, Key=k)["TagSet"]}
assert tagset("run/1.bin") == {"project": "cairn", "team": "fleet ops"}, tagset("run/1.bin")
g = s3.get_object(Bucket=T, Key="run/1.bin")
assert g["TagCount"] == 2 and g["Body"].read() == b"one", g
etag = g["ETag"]
s3.put_object_tagging(Bucket=T, Key="run/1.bin", Tagging={"TagSet": [{"Key": "stage", "Value": "raw"}]})
assert tagset("run/1.bin") == {"stage": "raw"}
g = s3.get_object(Bucket=T, Key="run/1.bin")
assert g["ETag"] == etag and g["Body"].read() == b"one" and g["TagCount"] == 1
s3.copy_object(Bucket=T, Key="run/copy", CopySource={"Bucket": T, "Key": "run/1.bin"})
assert tagset("run/copy") == {"stage": "raw"}
s3.copy_object(Bucket=T, Key="run/copy2", CopySource={"Bucket": T, "Key": "run/1.bin"},
               TaggingDirective="REPLACE", Tagging="k=v")
assert tagset("run/copy2") == {"k": "v"}
s3.delete_object_tagging(Bucket=T, Key="run/1.bin")
assert tagset("run/1.bin") == {} and "TagCount" not in s3.get_object(Bucket=T, Key="run/1.bin")
mp = s3.create_multipart_upload(Bucket=T, Key="run/mp", Tagging="parts=2")
part = s3.upload_part(Bucket=T, Key="run/mp", UploadId=mp["UploadId"], PartNumber=1, Body=b"m" * 100)
s3.complete_multipart_upload(Bucket=T, Key="run/mp", UploadId=mp["UploadId"],
                             MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
assert tagset("run/mp") == {"parts": "2"}
many = {"TagSet": [{"Key": f"k{i}", "Value": "v"} for i in range(11)]}
expect_error("BadRequest", s3.put_object_tagging, Bucket=T, Key="run/1.bin", Tagging=many)
expect_error("InvalidTag", s3.put_object_tagging, Bucket=T, Key="run/1.bin",
             Tagging={"TagSet": [{"Key": "k" * 129, "Value": "v"}]})
expect_error("InvalidTag", s3.put_object_tagging, Bucket=T, Key="run/1.bin",
             Tagging={"TagSet": [{"Key": "k", "Value": "v" * 257}]})
expect_error("InvalidTag", s3.put_object_tagging, Bucket=T, Key="run/1.bin",
             Tagging={"TagSet": [{"Key": "a", "Value": "1"}, {"Key": "a", "Value": "2"}]})
expect_error("InvalidTag", s3.put_object, Bucket=T, Key="run/bad", Body=b"x", Tagging="aws:x=1")
expect_error("404", s3.head_object, Bucket=T, Key="run/bad")
expect_error("NoSuchKey", s3.get_object_tagging, Bucket=T, Key="run/none")
expect_error("NoSuchKey", s3.put_object_tagging, Bucket=T, Key="run/none", Tagging={"TagSet": []})
assert tagset("run/1.bin") == {}, "a refused tagging changed nothing"
s3.delete_objects(Bucket=T, Delete={"Objects": [{"Key": k} for k in ["run/1.bin", "run/copy", "run/copy2", "run/mp"]]})
s3.delete_bucket(Bucket=T)

# Clean up everything; the bucket goes.
keys = [o["Key"] for o in s3.list_objects_v2(Bucket=B)["Contents"]]
s3.delete_objects(Bucket=B, Delete={"Objects": [{"Key": k} for k in keys]})
s3.delete_bucket(Bucket=B)
print("boto3 suite passed")

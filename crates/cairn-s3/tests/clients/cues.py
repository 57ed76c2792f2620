"""Cues through S3: in the key (`a/.cue/rep=1/x`), in the `cairn-cues`
metadata, and from the bucket's directory (set by the test beforehand)."""
from common import client, expect_error

s3 = client()
B = "cuebkt"
body = b"x" * 3_000_000  # three 1 MiB chunks

s3.create_bucket(Bucket=B)
# A cue component addresses the same object as the key without it.
s3.put_object(Bucket=B, Key="a/.cue/rep=1/in-key", Body=body)
assert s3.get_object(Bucket=B, Key="a/in-key")["Body"].read() == body
assert s3.get_object(Bucket=B, Key="a/.maxtime=5000,lax/in-key")["Body"].read() == body
s3.put_object(Bucket=B, Key="meta", Body=body, Metadata={"cairn-cues": "rep=1"})
s3.put_object(Bucket=B, Key="plain", Body=body)
keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=B)["Contents"])
assert keys == ["a/in-key", "meta", "plain"], keys
# Bad cues are refused and store nothing.
expect_error("InvalidArgument", s3.put_object, Bucket=B, Key="a/.cue/colour=red/bad", Body=b"1")
expect_error("InvalidArgument", s3.put_object, Bucket=B, Key="bad2", Body=b"1",
             Metadata={"cairn-cues": "rep=zero"})
expect_error("NoSuchKey", s3.get_object, Bucket=B, Key="bad2")
# The bucket "onecopy" was made with rep=1 by the test: its objects inherit it.
s3.put_object(Bucket="onecopy", Key="deep/inherits", Body=body)
# hot=GROUP in the key: the object is prefetched to the group on commit
# (the test put both nodes in group "actor" and checks the cache copies).
s3.create_bucket(Bucket="hotbkt")
s3.put_object(Bucket="hotbkt", Key=".cue/hot=actor,rep=1/model.bin", Body=body)
assert s3.get_object(Bucket="hotbkt", Key="model.bin")["Body"].read() == body
print("ok")

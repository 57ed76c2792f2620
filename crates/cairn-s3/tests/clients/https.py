"""HTTPS: boto3 against a gateway serving a certificate the Rust test made
for 127.0.0.1. With that certificate in AWS_CA_BUNDLE the client trusts
the gateway; without it the client refuses the connection."""
import os

from botocore.exceptions import SSLError

import common

assert common.ENDPOINT.startswith("https://"), common.ENDPOINT
s3 = common.client()
s3.create_bucket(Bucket="tlsbkt")
s3.put_object(Bucket="tlsbkt", Key="a/b", Body=b"over https" * 1000)
got = s3.get_object(Bucket="tlsbkt", Key="a/b")["Body"].read()
assert got == b"over https" * 1000
assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == ["tlsbkt"]

os.environ.pop("AWS_CA_BUNDLE")
untrusting = common.client()
try:
    untrusting.list_buckets()
    raise AssertionError("a client without the certificate trusted the gateway")
except SSLError:
    pass
print("https ok")

"""Virtual-hosted-style addressing (bucket.DOMAIN) with boto3: the gateway
runs with --domain s3.test; names under it resolve to the gateway here."""
import os
import socket
from urllib.parse import urlparse

import boto3
from botocore.config import Config

gw = urlparse(os.environ["S3_ENDPOINT"])
_real = socket.getaddrinfo


def resolve(host, *a, **kw):
    if host == "s3.test" or str(host).endswith(".s3.test"):
        host = gw.hostname
    return _real(host, *a, **kw)


socket.getaddrinfo = resolve

s3 = boto3.client(
    "s3",
    endpoint_url=f"http://s3.test:{gw.port}",
    aws_access_key_id=os.environ["S3_AK"],
    aws_secret_access_key=os.environ["S3_SK"],
    region_name="us-east-1",
    config=Config(s3={"addressing_style": "virtual"}, retries={"max_attempts": 1}),
)
seen = []
s3.meta.events.register("before-send.s3", lambda request, **kw: seen.append(urlparse(request.url).hostname))

s3.create_bucket(Bucket="vhost")
s3.put_object(Bucket="vhost", Key="dir/a.txt", Body=b"virtual hosted", ContentType="text/plain")
got = s3.get_object(Bucket="vhost", Key="dir/a.txt")
assert got["Body"].read() == b"virtual hosted"
assert got["ContentType"] == "text/plain"
keys = [o["Key"] for o in s3.list_objects_v2(Bucket="vhost")["Contents"]]
assert keys == ["dir/a.txt"], keys
s3.delete_object(Bucket="vhost", Key="dir/a.txt")
s3.delete_bucket(Bucket="vhost")
assert seen and all(h == "vhost.s3.test" for h in seen[1:]), seen
print("virtual-hosted style: ok", sorted(set(seen)))

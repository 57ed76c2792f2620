"""s3fs / fsspec against the gateway: a create/upload/list/download/compare/delete round trip."""
import os

import s3fs

fs = s3fs.S3FileSystem(
    key=os.environ["S3_AK"],
    secret=os.environ["S3_SK"],
    client_kwargs={"endpoint_url": os.environ["S3_ENDPOINT"], "region_name": "us-east-1"},
    config_kwargs={"s3": {"addressing_style": "path"}},
)
fs.mkdir("fsspec")
data = os.urandom(200_000)
fs.pipe("fsspec/dir/a.bin", data)
with fs.open("fsspec/dir/b.txt", "wb") as f:
    f.write(b"written through a file object")
assert sorted(fs.ls("fsspec/dir", detail=False)) == ["fsspec/dir/a.bin", "fsspec/dir/b.txt"]
assert fs.ls("fsspec", detail=False) == ["fsspec/dir"]
assert fs.cat("fsspec/dir/a.bin") == data
with fs.open("fsspec/dir/a.bin", "rb") as f:
    f.seek(1000)
    assert f.read(100) == data[1000:1100]
assert fs.info("fsspec/dir/a.bin")["size"] == len(data)
assert fs.find("fsspec") == ["fsspec/dir/a.bin", "fsspec/dir/b.txt"]
fs.rm("fsspec/dir", recursive=True)
fs.invalidate_cache()
assert fs.ls("fsspec", detail=False) == []
fs.rmdir("fsspec")
print("s3fs round trip passed")

"""cairn:// through fsspec, pandas and pyarrow."""

from __future__ import annotations

import fsspec
import pytest

import cairn
from cairn.fsspec import CairnFileSystem
from conftest import Cluster, pattern


@pytest.fixture
def fs(cluster: Cluster) -> CairnFileSystem:
    return fsspec.filesystem("cairn", meta=cluster.meta, secret_file=cluster.key)


def test_entry_point_registers_the_protocol() -> None:
    assert fsspec.get_filesystem_class("cairn") is CairnFileSystem


def test_basic_operations(fs: CairnFileSystem, d: str) -> None:
    data = pattern(3 << 20, 5)
    with fs.open(f"cairn://{d}/x.bin", "wb") as f:
        f.write(data)
    assert fs.cat(f"cairn://{d}/x.bin") == data
    assert fs.cat_file(f"{d}/x.bin", start=10, end=20) == data[10:20]
    assert fs.cat_file(f"{d}/x.bin", start=-5) == data[-5:]
    info = fs.info(f"cairn://{d}/x.bin")
    assert info["size"] == len(data) and info["type"] == "file" and info["version"] == 1
    assert info["name"] == f"{d}/x.bin"
    with fs.open(f"{d}/x.bin", "rb") as f:
        f.seek((1 << 20) - 3)
        assert f.read(6) == data[(1 << 20) - 3:(1 << 20) + 3]
        assert f.version == 1
    fs.mkdir(f"{d}/sub/deeper")
    fs.pipe_file(f"{d}/sub/p", b"piped")
    assert sorted(fs.ls(d, detail=False)) == [f"{d}/sub", f"{d}/x.bin"]
    assert {e["name"]: e["type"] for e in fs.ls(f"cairn://{d}")} == {f"{d}/sub": "directory", f"{d}/x.bin": "file"}
    assert fs.isdir(f"{d}/sub") and fs.isfile(f"{d}/x.bin") and not fs.exists(f"{d}/nope")
    assert sorted(fs.find(d)) == [f"{d}/sub/p", f"{d}/x.bin"]
    assert fs.glob(f"{d}/*.bin") == [f"{d}/x.bin"]
    fs.mv(f"{d}/x.bin", f"{d}/y.bin")
    assert not fs.exists(f"{d}/x.bin") and fs.size(f"{d}/y.bin") == len(data)
    fs.cp(f"{d}/y.bin", f"{d}/z.bin")
    assert fs.cat(f"{d}/z.bin") == data
    assert fs.modified(f"{d}/z.bin").year >= 2024
    fs.rm(f"{d}/sub", recursive=True)
    assert not fs.exists(f"{d}/sub")
    with pytest.raises(FileNotFoundError):
        fs.info(f"{d}/nope")
    with pytest.raises(FileNotFoundError):
        fs.open(f"{d}/nope", "rb")


def test_put_get_local_files(fs: CairnFileSystem, d: str, tmp_path) -> None:
    src = tmp_path / "a.bin"
    src.write_bytes(pattern(100_000, 1))
    fs.put(str(src), f"cairn://{d}/a.bin")
    out = tmp_path / "b.bin"
    fs.get(f"cairn://{d}/a.bin", str(out))
    assert out.read_bytes() == src.read_bytes()


def test_failed_write_commits_nothing(fs: CairnFileSystem, d: str) -> None:
    fs.pipe_file(f"{d}/k", b"old")
    with pytest.raises(RuntimeError):
        with fs.open(f"{d}/k", "wb") as f:
            f.write(b"new" * 1000)
            raise RuntimeError("boom")
    assert fs.cat(f"{d}/k") == b"old"


def test_fsspec_open_url_with_env(cluster: Cluster, monkeypatch: pytest.MonkeyPatch, client: cairn.Client, d: str) -> None:
    monkeypatch.setenv("CAIRN_META", cluster.meta)
    monkeypatch.setenv("CAIRN_SECRET_FILE", cluster.key)
    client.put(f"{d}/hello", b"hello fsspec")
    with fsspec.open(f"cairn://{d}/hello", "rb") as f:
        assert f.read() == b"hello fsspec"
    with fsspec.open(f"cairn://{d}/t.txt", "w") as f:  # text mode through fsspec
        f.write("text ✓\n")
    assert client.get(f"{d}/t.txt") == "text ✓\n".encode()


def test_pandas_pyarrow_parquet_roundtrip(cluster: Cluster, d: str) -> None:
    pd = pytest.importorskip("pandas")
    pa = pytest.importorskip("pyarrow")
    import pyarrow.dataset as pads
    import pyarrow.parquet as pq

    opts = {"meta": cluster.meta, "secret_file": cluster.key}
    n = 200_000
    df = pd.DataFrame({"i": range(n), "x": [i * 0.5 for i in range(n)], "s": [f"row{i % 977}" for i in range(n)]})
    url = f"cairn://{d}/table.parquet"
    df.to_parquet(url, storage_options=opts, row_group_size=20_000)
    back = pd.read_parquet(url, storage_options=opts)
    pd.testing.assert_frame_equal(back, df)
    # column projection and row-group reads are ranged reads
    part = pd.read_parquet(url, storage_options=opts, columns=["x"])
    assert part["x"].sum() == df["x"].sum()
    fs = fsspec.filesystem("cairn", **opts)
    with fs.open(f"{d}/table.parquet", "rb") as f:
        assert pq.ParquetFile(f).metadata.num_row_groups == n // 20_000
    # a pyarrow dataset over a directory of files
    for k in range(3):
        pq.write_table(pa.table({"k": [k] * 10, "v": list(range(10))}), f"{d}/ds/part-{k}.parquet", filesystem=fs)
    table = pads.dataset(f"{d}/ds", filesystem=fs, format="parquet").to_table()
    assert table.num_rows == 30 and sorted(set(table.column("k").to_pylist())) == [0, 1, 2]

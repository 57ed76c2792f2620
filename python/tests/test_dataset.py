"""cairn.data.FileDataset, in one process and in DataLoader-style pools of
forked and spawned workers."""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os

import pytest

import _workers
import cairn
from cairn.data import FileDataset
from conftest import pattern


@pytest.fixture
def files(client: cairn.Client, d: str) -> dict[str, bytes]:
    out = {}
    for i in range(40):
        data = pattern(20_000 + 37 * i, i)
        name = f"{d}/s{i:03d}.bin"
        client.put(name, data)
        out[name] = data
    client.put(f"{d}/README.txt", b"not a sample")
    client.mkdir(f"{d}/subdir")
    client.put(f"{d}/subdir/s999.bin", b"nested")
    return out


def test_dataset_lists_filters_and_transforms(client: cairn.Client, d: str, files) -> None:
    ds = FileDataset(client, d, pattern="*.bin")
    assert len(ds) == 40
    names = sorted(files)
    assert [ds.path(i) for i in range(len(ds))] == names
    assert ds[0] == files[names[0]] and ds[-1] == files[names[-1]]
    with pytest.raises(IndexError):
        ds[40]
    t = FileDataset(client, d, pattern="*.bin", transform=len)
    assert list(t) == [len(files[n]) for n in names]
    assert len(FileDataset(client, d, pattern="*.bin", recursive=True)) == 41
    assert len(FileDataset(client, d)) == 41  # README too, not the directory


def test_dataset_shards_cover_everything_once(client: cairn.Client, d: str, files) -> None:
    ds = FileDataset(client, d, pattern="*.bin")
    shards = [ds.shard(r, 3) for r in range(3)]
    got = [p for s in shards for p in s.files]
    assert sorted(got) == sorted(files) and len(got) == len(set(got))
    assert FileDataset(client, d, pattern="*.bin", rank=1, world_size=3).files == shards[1].files
    with pytest.raises(ValueError):
        FileDataset(client, d, rank=3, world_size=3)


def test_read_ahead_serves_strided_access(client: cairn.Client, d: str, files) -> None:
    ds = FileDataset(client, d, pattern="*.bin", read_ahead=4)
    names = sorted(files)
    for i in range(0, 40, 3):  # a stride, as one of several DataLoader workers walks
        assert ds[i] == files[names[i]]
    for i in (39, 5, 17):  # random access still right
        assert ds[i] == files[names[i]]
    assert ds.__getitems__([1, 2, 3]) == [files[names[i]] for i in (1, 2, 3)]


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_multiprocess_pool_reads(client: cairn.Client, d: str, files, method: str) -> None:
    # Use the client in the parent first: a forked child must not reuse its runtime.
    ds = FileDataset(client, d, pattern="*.bin", read_ahead=2)
    names = sorted(files)
    assert ds[0] == files[names[0]]
    want = {i: hashlib.sha256(files[n]).hexdigest() for i, n in enumerate(names)}
    ctx = mp.get_context(method)
    batches = [list(range(i, min(i + 5, 40))) for i in range(0, 40, 5)]
    with ctx.Pool(4, initializer=_workers.init, initargs=(ds,)) as pool:
        got = [r for b in pool.map(_workers.digest_items, batches, chunksize=1) for r in b]
        got += [r for b in pool.map(_workers.digest_batch, batches, chunksize=1) for r in b]
    assert {i: h for i, h, _ in got} == want
    assert all(pid != os.getpid() for _, _, pid in got)
    # And the parent's client still works after its children.
    assert ds[1] == files[names[1]]


def test_fork_after_use_gets_fresh_connections(client: cairn.Client, d: str) -> None:
    client.put(f"{d}/f", b"forked")
    assert client.get(f"{d}/f") == b"forked"
    ctx = mp.get_context("fork")
    with ctx.Pool(2) as pool:
        assert pool.map(_workers.client_get, [(client, f"{d}/f")] * 4) == [b"forked"] * 4
    # A file opened before the fork refuses to be used in the child.
    f = client.open(f"{d}/f")
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            f.raw.read(1)
        except ValueError as e:
            code = 0 if "before a fork" in str(e) else 2
        except BaseException:
            code = 3
        try:
            if client.get(f"{d}/f") != b"forked":
                code = 4
        except BaseException:
            code = 5
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert f.read() == b"forked"
    f.close()


def test_torch_dataloader_when_torch_exists(client: cairn.Client, d: str, files) -> None:
    torch = pytest.importorskip("torch")
    ds = FileDataset(client, d, pattern="*.bin", transform=len)
    dl = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2)
    total = sum(int(b.sum()) for b in dl)
    assert total == sum(len(v) for v in files.values())

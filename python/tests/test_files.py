"""Every file call of cairn.Client against a real 3-node server."""

from __future__ import annotations

import errno
import os
import pickle
from pathlib import Path

import pytest

import cairn
from conftest import Cluster, pattern


def test_client_finds_the_local_server_like_the_cli(cluster: Cluster, monkeypatch: pytest.MonkeyPatch, d: str) -> None:
    # The server wrote client.conf under its XDG_CONFIG_HOME; no arguments needed.
    monkeypatch.setenv("XDG_CONFIG_HOME", cluster.env["XDG_CONFIG_HOME"])
    monkeypatch.delenv("CAIRN_META", raising=False)
    monkeypatch.delenv("CAIRN_SECRET_FILE", raising=False)
    c = cairn.Client()
    c.put(f"{d}/conf", b"x")
    # The environment wins over the file, as in the CLI.
    monkeypatch.setenv("CAIRN_META", cluster.meta)
    monkeypatch.setenv("CAIRN_SECRET_FILE", cluster.key)
    monkeypatch.setenv("XDG_CONFIG_HOME", "/nonexistent")
    assert cairn.Client().get(f"{d}/conf") == b"x"
    assert cairn.Client().meta == [cluster.meta]


def test_bad_key_and_dead_meta_are_clear_errors(cluster: Cluster, tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="secret"):
        cairn.Client(cluster.meta, str(tmp_path / "missing.key"))
    with pytest.raises(OSError):
        cairn.Client("127.0.0.1:1", cluster.key)


def test_put_get_roundtrip_and_versions(client: cairn.Client, d: str) -> None:
    data = pattern(3 * (1 << 20) + 123, 1)  # several 1 MiB chunks
    st = client.put(f"{d}/a.bin", data)
    assert st.size == len(data) and st.version == 1 and st.type == "file"
    assert client.get(f"{d}/a.bin") == data
    st2 = client.put(f"{d}/a.bin", bytearray(b"v2"))
    assert st2.version == 2 and st2.inode == st.inode
    assert client.stat(f"{d}/a.bin").version == 2
    assert client.get(f"{d}/a.bin") == b"v2"
    # memoryview slices and empty files
    client.put(f"{d}/mv", memoryview(data)[10:20])
    assert client.get(f"{d}/mv") == data[10:20]
    client.put(f"{d}/empty", b"")
    assert client.get(f"{d}/empty") == b""
    assert client.stat(f"{d}/empty").size == 0


def test_get_into_buffers_without_a_copy(client: cairn.Client, d: str) -> None:
    data = pattern(2_500_000, 2)
    client.put(f"{d}/x", data)
    buf = bytearray(len(data) + 10)
    assert client.get(f"{d}/x", into=buf) == len(data)
    assert buf[: len(data)] == data
    mv = memoryview(bytearray(len(data)))
    assert client.get(f"{d}/x", into=mv) == len(data)
    assert mv.tobytes() == data
    with pytest.raises(ValueError, match="buffer holds only"):
        client.get(f"{d}/x", into=bytearray(10))
    with pytest.raises(TypeError):
        client.get(f"{d}/x", into=b"readonly")


def test_put_from_local_file_and_file_object_and_download(client: cairn.Client, d: str, tmp_path) -> None:
    data = pattern(1_700_000, 3)
    local = tmp_path / "in.bin"
    local.write_bytes(data)
    assert client.put(f"{d}/f1", str(local)).size == len(data)
    assert client.put(f"{d}/f2", local).size == len(data)  # PathLike
    with open(local, "rb") as f:
        assert client.put(f"{d}/f3", f).size == len(data)
    for n in ("f1", "f2", "f3"):
        assert client.get(f"{d}/{n}") == data
    out = tmp_path / "out.bin"
    assert client.download(f"{d}/f1", out) == len(data)
    assert out.read_bytes() == data
    assert not (tmp_path / "out.bin.cairn-part").exists()
    assert client.upload(local, f"{d}/f4").size == len(data)


def test_put_and_open_make_missing_parents(client: cairn.Client, d: str) -> None:
    client.put(f"{d}/deep/er/file", b"1")
    assert client.stat(f"{d}/deep/er").is_dir
    with client.open(f"{d}/other/new/file", "wb") as f:
        f.write(b"2")
    assert client.get(f"{d}/other/new/file") == b"2"
    client.put(f"{d}/afile", b"")
    with pytest.raises(NotADirectoryError):
        client.put(f"{d}/afile/below", b"x")


def test_ls_stat_exists_mkdir_rm_mv_ln(client: cairn.Client, d: str) -> None:
    client.put(f"{d}/b", b"bb")
    client.put(f"{d}/a", b"a")
    client.mkdir(f"{d}/sub")
    assert client.ls(d) == ["a", "b", "sub"]
    detail = client.ls(d, detail=True)
    assert [(s.name, s.type, s.size) for s in detail] == [("a", "file", 1), ("b", "file", 2), ("sub", "directory", 0)]
    assert detail[0].path == f"{d}/a"
    assert client.ls(f"{d}/a") == ["a"]
    assert client.exists(f"{d}/a") and not client.exists(f"{d}/nope")
    assert client.isdir(f"{d}/sub") and not client.isdir(f"{d}/a")
    with pytest.raises(FileExistsError):
        client.mkdir(f"{d}/sub")
    client.mkdir(f"{d}/sub", exist_ok=True)
    client.mkdir(f"{d}/sub", parents=True)  # -p accepts an existing directory
    with pytest.raises(FileNotFoundError):
        client.mkdir(f"{d}/x/y")
    client.mkdir(f"{d}/x/y", parents=True)
    walk = list(client.walk(d))
    assert walk[0] == (d, ["sub", "x"], ["a", "b"])
    # mv replaces a file; replace=False refuses
    client.mv(f"{d}/a", f"{d}/b")
    assert client.get(f"{d}/b") == b"a" and not client.exists(f"{d}/a")
    client.put(f"{d}/c", b"c")
    with pytest.raises(FileExistsError):
        client.mv(f"{d}/c", f"{d}/b", replace=False)
    before = client.stat(f"{d}/sub")
    client.mv(f"{d}/x", f"{d}/sub/x")  # a subtree
    assert client.isdir(f"{d}/sub/x/y")
    # Directories count their subdirectories and change with their entries,
    # to the nanosecond.
    after = client.stat(f"{d}/sub")
    assert (before.nlink, after.nlink) == (2, 3)
    assert after.mtime_ns > before.mtime_ns and after.mtime_ms == after.mtime_ns // 1_000_000
    assert after.mtime == after.mtime_ns / 1e9
    # ln: two names, one file
    st = client.ln(f"{d}/b", f"{d}/b2")
    assert st.nlink == 2
    client.put(f"{d}/b", b"changed")
    assert client.get(f"{d}/b2") == b"changed"
    client.rm(f"{d}/b")
    assert client.get(f"{d}/b2") == b"changed"
    # rm: files, empty dirs, recursive
    with pytest.raises(OSError) as e:
        client.rm(f"{d}/sub")
    assert e.value.errno == errno.ENOTEMPTY
    client.rm(f"{d}/sub", recursive=True)
    assert not client.exists(f"{d}/sub")
    with pytest.raises(FileNotFoundError):
        client.rm(f"{d}/sub")


def test_locate_shows_every_chunk_on_its_nodes(client: cairn.Client, d: str) -> None:
    data = pattern(2 * (1 << 20) + 5, 4)
    client.put(f"{d}/l", data)
    loc = client.locate(f"{d}/l")
    assert loc["size"] == len(data) and loc["version"] == 1
    assert [c["size"] for c in loc["chunks"]] == [1 << 20, 1 << 20, 5]
    assert [c["offset"] for c in loc["chunks"]] == [0, 1 << 20, 2 << 20]
    for c in loc["chunks"]:
        assert len(c["nodes"]) == 3 and all(":" in n["addr"] for n in c["nodes"])


def test_cues_set_get_clear_and_in_path(client: cairn.Client, d: str) -> None:
    client.mkdir(f"{d}/c")
    st = client.set_cues(f"{d}/c", "rep=2,lax")
    assert "rep=2" in st.cues
    cues = client.cues(f"{d}/c")
    assert "rep=2" in cues["own"] and "lax" in cues["effective"]
    client.set_cues(f"{d}/c", {"place": "spread"})  # merged over the own cues
    own = client.cues(f"{d}/c")["own"]
    assert "rep=2" in own and "place=spread" in own
    # inherited by a new file
    client.put(f"{d}/c/f", pattern(10, 5))
    assert "rep=2" in client.cues(f"{d}/c/f")["effective"]
    assert all(len(c["nodes"]) == 2 for c in client.locate(f"{d}/c/f")["chunks"])
    # in-path cues: a write with one copy, a read with read cues
    client.put(f"{d}/.cue/rep=1/one", b"1")
    assert client.get(f"{d}/one") == b"1"
    assert all(len(c["nodes"]) == 1 for c in client.locate(f"{d}/one")["chunks"])
    assert client.get(f"{d}/.maxtime=5000,anyversion/one") == b"1"
    assert client.ls(f"{d}/.cue/lax") == ["c", "one"]
    # the cues= argument
    client.put(f"{d}/two", b"2", cues="rep=1")
    assert all(len(c["nodes"]) == 1 for c in client.locate(f"{d}/two")["chunks"])
    client.clear_cues(f"{d}/c")
    assert client.cues(f"{d}/c")["own"] in (None, "")
    with pytest.raises(ValueError, match="unknown cue"):
        client.put(f"{d}/.cue/colour=red/x", b"")
    with pytest.raises(cairn.InvalidInput):
        client.set_cues(f"{d}/c", "rep=zero")


def test_errors_are_the_python_exceptions_expected(client: cairn.Client, d: str) -> None:
    client.put(f"{d}/file", b"x")
    client.mkdir(f"{d}/dir")
    with pytest.raises(FileNotFoundError) as e:
        client.get(f"{d}/missing")
    assert e.value.errno == errno.ENOENT and "missing" in str(e.value)
    assert getattr(e.value, "kind") == "NotFound"
    with pytest.raises(IsADirectoryError):
        client.get(f"{d}/dir")
    with pytest.raises(IsADirectoryError):
        client.put(f"{d}/dir", b"x")
    with pytest.raises(NotADirectoryError):
        client.ls(f"{d}/file/x")
    with pytest.raises(FileExistsError):
        client.put(f"{d}/file", b"y", expected_version=0)
    with pytest.raises(cairn.Conflict) as c:
        client.put(f"{d}/file", b"y", expected_version=7)
    assert isinstance(c.value, OSError) and c.value.kind == "Conflict"
    assert client.put(f"{d}/file", b"y", expected_version=1).version == 2
    with pytest.raises(cairn.InvalidInput):
        client.put(f"{d}/" + "n" * 300, b"")  # a name over the limit
    with pytest.raises(cairn.InvalidInput):
        client.get_object("../../etc/passwd")
    with pytest.raises(cairn.InvalidInput):
        client.open(f"{d}/file", "rt")  # text mode
    # write-once files refuse a new version: PermissionError
    client.put(f"{d}/.cue/writeonce/wo", b"once")
    with pytest.raises(PermissionError):
        client.put(f"{d}/wo", b"twice")


def test_no_space_is_enospc() -> None:
    e = cairn.errors.from_native("NoSpace", "disk full on every node")
    assert isinstance(e, OSError) and e.errno == errno.ENOSPC and isinstance(e, cairn.NoSpace)
    u = cairn.errors.from_native("Unavailable", "0 of 3 live")
    assert isinstance(u, cairn.Unavailable) and isinstance(u, ConnectionError)
    assert str(u).endswith("0 of 3 live")


def test_unavailable_when_the_cluster_is_gone(tmp_cluster_root) -> None:
    from conftest import start_server

    c = start_server(tmp_cluster_root, 1)
    try:
        client = c.client()
        client.put("/x", b"x")
    finally:
        c.stop()
    with pytest.raises(cairn.Unavailable):
        client.get("/x")


def test_client_pickles_to_a_client_of_the_same_cluster(client: cairn.Client, d: str) -> None:
    client.put(f"{d}/p", b"pickled")
    c2 = pickle.loads(pickle.dumps(client))
    assert c2.meta == client.meta
    assert c2.get(f"{d}/p") == b"pickled"


def test_get_many(client: cairn.Client, d: str) -> None:
    datas = [pattern(1000 + i, i) for i in range(20)]
    for i, x in enumerate(datas):
        client.put(f"{d}/{i}", x)
    assert client.get_many([f"{d}/{i}" for i in range(20)], concurrency=4) == datas
    with pytest.raises(FileNotFoundError):
        client.get_many([f"{d}/0", f"{d}/nope"])


def test_gil_is_released_during_io(client: cairn.Client, d: str) -> None:
    import threading
    import time

    client.put(f"{d}/big", pattern(8 << 20, 9))
    ticks = 0
    done = threading.Event()

    def spin() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            time.sleep(0)

    t = threading.Thread(target=spin)
    t.start()
    try:
        for _ in range(3):
            client.get(f"{d}/big")
    finally:
        done.set()
        t.join()
    assert ticks > 10, "a Python thread could not run while Cairn read"


def test_threads_share_one_client(client: cairn.Client, d: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def work(i: int) -> bool:
        data = pattern(50_000 + i, 100 + i)
        client.put(f"{d}/t{i}", data)
        return client.get(f"{d}/t{i}") == data

    with ThreadPoolExecutor(16) as ex:
        assert all(ex.map(work, range(64)))
    assert len(client.ls(d)) == 64


def test_small_files_are_kept_in_meta_and_grow_into_chunks(client, d):
    p = f"{d}/small"
    client.put(p, b"tiny")
    st = client.stat(p)
    assert st.inline and st.chunks == 0 and st.size == 4
    assert client.locate(p)["inline"] and client.locate(p)["chunks"] == []
    assert client.get(p) == b"tiny"
    buf = bytearray(4)
    assert client.get(p, into=buf) == 4 and bytes(buf) == b"tiny"
    with client.open(p, "rb") as f:
        f.seek(1)
        assert f.read(2) == b"in"
    with client.open(p, "ab") as f:
        f.write(b"x" * 10_000)
    st = client.stat(p)
    assert not st.inline and st.chunks == 1 and st.size == 10_004
    assert client.get(p) == b"tiny" + b"x" * 10_000
    # Listings carry sizes, not bytes.
    [entry] = [e for e in client.ls(d, detail=True) if e.name == "small"]
    assert entry.size == 10_004


def test_older_versions_read_by_number_while_kept(client: cairn.Client, d: str, tmp_path: Path) -> None:
    client.mkdir(f"{d}/k")
    client.set_cues(f"{d}/k", "versions=2")
    bodies = [pattern(1_500_000, 11), b"tiny", pattern(300_000, 13), pattern(2_000_000, 14)]
    for b in bodies:
        client.put(f"{d}/k/f", b)
    vs = client.versions(f"{d}/k/f")
    assert [v.version for v in vs] == [4, 3, 2]
    assert [v.size for v in vs] == [len(bodies[3]), len(bodies[2]), len(bodies[1])]
    assert client.get(f"{d}/k/f", version=2) == b"tiny"
    assert client.get(f"{d}/k/f", version=3) == bodies[2]
    buf = bytearray(len(bodies[2]))
    assert client.get(f"{d}/k/f", into=buf, version=3) == len(bodies[2])
    assert bytes(buf) == bodies[2]
    with client.open(f"{d}/k/f", version=3) as f:
        f.seek(1000)
        assert f.read(5000) == bodies[2][1000:6000]
    out = tmp_path / "v3"
    assert client.download(f"{d}/k/f", out, version=3) == len(bodies[2])
    assert out.read_bytes() == bodies[2]
    with pytest.raises(FileNotFoundError, match="no version 1"):
        client.get(f"{d}/k/f", version=1)
    with pytest.raises(cairn.InvalidInput):
        client.open(f"{d}/k/f", "wb", version=3)
    # Without the cue there is only the current version.
    client.put(f"{d}/plain", b"a")
    client.put(f"{d}/plain", b"b")
    assert [v.version for v in client.versions(f"{d}/plain")] == [2]
    client.rm(f"{d}/k/f")
    with pytest.raises(FileNotFoundError):
        client.versions(f"{d}/k/f")

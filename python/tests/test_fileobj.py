"""Binary file objects against io.BytesIO as the model."""

from __future__ import annotations

import io
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cairn
from conftest import pattern

SIZE = 3 * (1 << 20) + 4321  # four 1 MiB chunks, the last partial


def content() -> bytes:
    data = bytearray(pattern(SIZE, 42))
    # Lines of many lengths, some across chunk boundaries.
    for off in range(0, SIZE, 7919):
        data[off] = 0x0A
    return bytes(data)


DATA = content()


@pytest.fixture(scope="module")
def model_file(client: cairn.Client) -> str:
    path = "/t/fileobj-model.bin"
    client.put(path, DATA)
    return path


ops = st.one_of(
    st.tuples(st.just("read"), st.integers(-1, 3 << 20)),
    st.tuples(st.just("readinto"), st.integers(0, 2 << 20)),
    st.tuples(st.just("readline"), st.integers(-1, 10_000)),
    st.tuples(st.just("seek"), st.integers(-SIZE - 10, 2 * SIZE), st.sampled_from([0, 1, 2])),
    st.tuples(st.just("tell")),
    st.tuples(st.just("peek")),
)


def apply(f, op):
    name = op[0]
    try:
        if name == "read":
            return f.read(op[1])
        if name == "read1":
            return f.read1(op[1])
        if name == "readinto":
            b = bytearray(op[1])
            n = f.readinto(b)
            return n, bytes(b[:n])
        if name == "readline":
            return f.readline(op[1])
        if name == "seek":
            return f.seek(op[1], op[2])
        if name == "tell":
            return f.tell()
    except (OSError, ValueError) as e:
        return type(e).__name__.replace("OSError", "ValueError")


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(seq=st.lists(ops, min_size=1, max_size=12), buffer_size=st.sampled_from([1, 4096, 1 << 20]))
def test_reader_matches_bytesio(client: cairn.Client, model_file, seq, buffer_size) -> None:
    path = model_file
    model = io.BytesIO(DATA)
    with client.open(path, "rb", buffer_size=buffer_size) as f:
        for op in seq:
            if op[0] == "seek":
                base = {0: 0, 1: model.tell(), 2: SIZE}[op[2]]
                if base + op[1] < 0:
                    continue  # BytesIO clamps, files refuse: not modelled
            if op[0] == "peek":
                # What peek returns is up to the buffer; it must not move the position.
                at = f.tell()
                assert (len(f.peek(1)) > 0) == (at < SIZE) and f.tell() == at
                continue
            got, want = apply(f, op), apply(model, op)
            assert got == want, f"{op}: {got!r:.80} != {want!r:.80}"


def test_reader_is_a_real_binary_file(client: cairn.Client, d: str) -> None:
    data = b"".join(b"line %d\n" % i for i in range(1000)) + b"no newline"
    client.put(f"{d}/lines", data)
    with client.open(f"{d}/lines") as f:
        assert isinstance(f, io.BufferedIOBase)
        assert f.readable() and f.seekable() and not f.writable()
        assert f.size == len(data) and f.version == 1
        assert f.name == f"{d}/lines"
        lines = list(f)
        assert lines == io.BytesIO(data).readlines()
        f.seek(-10, io.SEEK_END)
        assert f.read() == b"no newline"
        assert f.stat().size == len(data)
    assert f.closed
    with pytest.raises(ValueError):
        f.read()


def test_open_reader_keeps_reading_its_version(client: cairn.Client, d: str) -> None:
    old = pattern(2 << 20, 1)
    client.put(f"{d}/v", old)
    with client.open(f"{d}/v") as f:
        assert f.read(100) == old[:100]
        client.put(f"{d}/v", b"new")  # replaced while open
        assert f.version == 1
        assert f.read() == old[100:]  # the older version, while it is kept
    assert client.get(f"{d}/v") == b"new"


@settings(max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(writes=st.lists(st.one_of(st.binary(max_size=5000), st.integers(0, 3 << 20)), max_size=8))
def test_writer_matches_bytesio(client: cairn.Client, writes) -> None:
    model = io.BytesIO()
    path = "/t/fileobj-writer.bin"
    with client.open(path, "wb", buffer_size=64 << 10) as f:
        for i, w in enumerate(writes):
            b = w if isinstance(w, bytes) else pattern(w, i)
            assert f.write(b) == model.write(b)
            assert f.tell() == model.tell()
    assert f.stat is not None and f.stat.size == model.tell()
    assert client.get(path) == model.getvalue()


def test_writes_commit_on_close_and_never_before(client: cairn.Client, d: str) -> None:
    client.put(f"{d}/w", b"old")
    f = client.open(f"{d}/w", "wb")
    assert f.writable() and not f.readable() and not f.seekable()
    f.write(pattern(3 << 20, 7))
    f.flush()
    assert client.get(f"{d}/w") == b"old"  # not visible before close
    f.close()
    assert client.get(f"{d}/w") == pattern(3 << 20, 7)
    assert client.stat(f"{d}/w").version == 2
    with pytest.raises(ValueError):
        f.write(b"after close")


def test_exception_in_with_block_discards_the_write(client: cairn.Client, d: str) -> None:
    client.put(f"{d}/keep", b"old")
    with pytest.raises(RuntimeError):
        with client.open(f"{d}/keep", "wb") as f:
            f.write(pattern(2 << 20, 1))
            raise RuntimeError("boom")
    assert client.get(f"{d}/keep") == b"old"
    assert client.stat(f"{d}/keep").version == 1
    f = client.open(f"{d}/keep", "wb")
    f.write(b"nope")
    f.abort()
    assert f.closed and client.get(f"{d}/keep") == b"old"


def test_append_and_exclusive_modes(client: cairn.Client, d: str) -> None:
    base = pattern((1 << 20) + 17, 3)
    with client.open(f"{d}/a", "ab") as f:  # a missing file: created
        f.write(base)
    with client.open(f"{d}/a", "ab") as f:
        f.write(b"tail")
    assert client.get(f"{d}/a") == base + b"tail"
    assert client.stat(f"{d}/a").version == 2
    # someone else changes the file while it is open for append: Conflict at close
    f = client.open(f"{d}/a", "ab")
    f.write(b"mine")
    client.put(f"{d}/a", b"theirs")
    with pytest.raises(cairn.Conflict):
        f.close()
    assert client.get(f"{d}/a") == b"theirs"
    with client.open(f"{d}/x", "xb") as f:
        f.write(b"1")
    with pytest.raises(FileExistsError):
        with client.open(f"{d}/x", "xb") as f:
            f.write(b"2")
    assert client.get(f"{d}/x") == b"1"


def test_big_streaming_write_and_read(client: cairn.Client, d: str) -> None:
    n = 40  # 40 MiB through a writer with bounded memory
    with client.open(f"{d}/big", "wb") as f:
        for i in range(n):
            f.write(pattern(1 << 20, i))
    with client.open(f"{d}/big") as f:
        for i in range(n):
            assert f.read(1 << 20) == pattern(1 << 20, i)
        assert f.read() == b""


def test_large_writes_are_read_in_place_and_let_go_of_on_return(client: cairn.Client, d: str) -> None:
    # Writes from 64 KiB up are read by the put straight from the caller's
    # buffer, read-only ones included (no copy); write() returns only once
    # they are copied, so the caller may reuse the buffer at once.
    want = pattern(5 << 20, 9)
    buf = bytearray(want)
    with client.open(f"{d}/lent", "wb") as f:
        assert f.write(buf) == len(buf)
        buf.extend(b"!")  # a resize: raises BufferError if still exported
        buf[:] = bytes(len(buf))
        assert f.write(memoryview(want)[1:(3 << 20) + 1]) == 3 << 20
        assert f.write(b"small" * 10) == 50  # copied
    assert client.get(f"{d}/lent") == want + want[1:(3 << 20) + 1] + b"small" * 10
    # The same through put(): a read-only slice, not copied first.
    client.put(f"{d}/slice", memoryview(want)[7:(2 << 20) + 7])
    assert client.get(f"{d}/slice") == want[7:(2 << 20) + 7]


def test_a_put_that_fails_fails_the_large_write_in_progress(client: cairn.Client, d: str) -> None:
    # The put stops reading a lent buffer when it fails: the write raises
    # the put's error instead of waiting for a reader that is gone.
    client.mkdir(f"{d}/gone")
    with pytest.raises(FileNotFoundError):
        with client.open(f"{d}/gone/f", "wb") as f:
            client.rm(f"{d}/gone", recursive=True)  # meta now refuses its chunks
            f.write(pattern(8 << 20, 3))
            f.flush()
    assert not client.exists(f"{d}/gone")


def test_concurrent_writers_of_one_path_never_mix(client: cairn.Client, d: str) -> None:
    path = f"{d}/contended"
    versions = {i: pattern((2 << 20) + i * 1000, 500 + i) for i in range(6)}
    client.put(path, versions[0])
    stop = threading.Event()
    seen: list[bytes] = []
    errors: list[BaseException] = []

    def writer(i: int) -> None:
        try:
            for _ in range(3):
                if i % 2:
                    client.put(path, versions[i])
                else:
                    with client.open(path, "wb") as f:
                        for off in range(0, len(versions[i]), 300_000):
                            f.write(versions[i][off:off + 300_000])
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    def reader() -> None:
        try:
            while not stop.is_set():
                seen.append(client.get(path))
                with client.open(path) as f:
                    seen.append(f.read())
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    readers = [threading.Thread(target=reader) for _ in range(2)]
    writers = [threading.Thread(target=writer, args=(i,)) for i in range(1, 6)]
    for t in readers + writers:
        t.start()
    for t in writers:
        t.join(timeout=300)
    stop.set()
    for t in readers:
        t.join(timeout=300)
    assert not errors, errors
    valid = set(versions.values())
    assert seen and all(s in valid for s in seen), "a read saw a mix of versions"
    assert client.get(path) in valid

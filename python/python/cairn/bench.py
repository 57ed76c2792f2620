"""``python -m cairn.bench``: throughput of the Python package, printed as JSON.

Against temporary ``cairn server --nodes 3`` clusters (under ``--dir``,
else the system's temporary directory):

- sequential put and get of a large file (1 GiB) from Python (``put`` of
  ``bytes`` and of a local file, ``open(path, "wb")`` written 1 MiB at a
  time; ``get`` as ``bytes``, into a buffer, to a local file), and the same
  with the ``cairn`` CLI (``cairn put``, ``cairn cat > /dev/null``, ``cairn
  get``), with the ratio. Each run has a cluster of its own, on a fresh
  data directory: nothing is deleted while it runs, so no chunk collection
  or segment compaction lands in a measurement (a run stores four copies of
  the file, times the redundancy, in ``--dir``). Each step also reports the
  CPU seconds of the client and of the server, which a busy machine
  disturbs less than wall time;
- 16 KiB objects from 16 threads: ``put_object``/``get_object`` against
  boto3's ``put_object``/``get_object`` through Cairn's own S3 gateway;
- ``FileDataset`` reading 10,000 files of 64 KiB in a DataLoader-style pool
  of 4 processes (forked), item by item and in batches.

Benchmarks report; nothing here asserts a figure.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Optional

import cairn
from cairn.data import FileDataset

MiB = 1 << 20


def _size(s: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    s = s.strip().lower().removesuffix("ib").removesuffix("b")
    if s and s[-1] in units:
        return int(float(s[:-1]) * units[s[-1]])
    return int(s)


class Server:
    """A temporary ``cairn server --nodes N`` (in a new directory under
    ``parent``), with S3 on a free port unless ``s3`` is false."""

    def __init__(self, binary: str, nodes: int, parent: Optional[str] = None, s3: bool = True) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="cairn-bench-py-", dir=parent))
        env = dict(os.environ, RUST_LOG="error", XDG_CONFIG_HOME=str(self.dir / "config"))
        self.p = subprocess.Popen(
            [binary, "server", "--data", str(self.dir / "data"), "--nodes", str(nodes),
             "--listen", "127.0.0.1:0", "--s3-listen", "127.0.0.1:0" if s3 else "off",
             "--no-client-conf"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, env=env,
            start_new_session=True,
        )
        self.meta = self.key = self.s3 = ""
        deadline = time.monotonic() + 120
        assert self.p.stdout is not None
        for raw in self.p.stdout:
            line = raw.decode().strip()
            if line.startswith("meta "):
                self.meta = line.split()[1]
            elif line.startswith("client key "):
                self.key = line.split()[2]
            elif line.startswith("s3 "):
                self.s3 = line.split()[1]
            if line.startswith("try:") or time.monotonic() > deadline:
                break
        if not self.meta:
            self.stop()
            raise RuntimeError("cairn server did not start")
        threading.Thread(target=lambda: [None for _ in self.p.stdout], daemon=True).start()  # type: ignore[union-attr]
        self.key = self.key or str(self.dir / "data" / "meta" / "client.key")

    def cli(self, binary: str) -> Callable[..., subprocess.CompletedProcess]:
        """Run ``binary`` (the ``cairn`` CLI) against this cluster."""
        env = dict(os.environ, CAIRN_META=self.meta, CAIRN_SECRET_FILE=self.key, RUST_LOG="error")

        def cli(*args: str, stdout: Any = subprocess.DEVNULL) -> subprocess.CompletedProcess:
            r = subprocess.run([binary, *args], env=env, stdout=stdout, stderr=subprocess.PIPE)
            if r.returncode != 0:
                raise RuntimeError(f"cairn {' '.join(args)} failed: {r.stderr.decode(errors='replace')}")
            return r

        return cli

    def cpu_seconds(self) -> float:
        """User and system CPU seconds of the server process so far."""
        with open(f"/proc/{self.p.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        try:
            os.killpg(self.p.pid, signal.SIGTERM)
            self.p.wait(timeout=60)
        except Exception:  # noqa: BLE001
            self.p.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def timed(f: Callable[[], Any]) -> float:
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def rate(nbytes: int, secs: float) -> float:
    return round(nbytes / MiB / secs, 1)


def _self_cpu() -> float:
    """CPU seconds of this process and of its waited-for children (the CLI)."""
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def large(binary: str, nodes: int, size: int, runs: int, work: Path) -> dict:
    local = work / "large.bin"
    with open(local, "wb") as f:
        left = size
        while left:
            n = min(left, 64 * MiB)
            f.write(os.urandom(n))
            left -= n
    data = local.read_bytes()
    names = ("cli_put", "python_put_bytes", "python_put_file", "python_write_1mib",
             "cli_cat", "python_get_bytes", "python_get_into", "cli_get", "python_download",
             "fresh_bytes")
    res: dict[str, list[float]] = {k: [] for k in names}
    cpu: dict[str, list[tuple[float, float]]] = {k: [] for k in names}
    # A buffer already in memory (as a training loop reuses one): get(into=)
    # then measures the read, not the kernel handing out fresh pages.
    buf = bytearray(size)

    def settle() -> None:
        # Flush what earlier steps left dirty in the page cache, so no step
        # pays for another's writeback.
        os.sync()

    def write(client: cairn.Client, path: str) -> None:
        mv = memoryview(data)
        with client.open(path, "wb") as f:
            for at in range(0, size, MiB):
                f.write(mv[at:at + MiB])

    out: list[Any] = []
    for r in range(runs):
        # A cluster of this run's own: what earlier runs stored, and its
        # collection, is gone with theirs.
        srv = Server(binary, nodes, parent=str(work), s3=False)
        try:
            client = cairn.Client(srv.meta, srv.key)
            cli = srv.cli(binary)
            client.mkdir("/bench", parents=True)  # `cairn put` wants its directory
            steps_put = [
                ("cli_put", lambda: cli("put", str(local), "/bench/cli.bin")),
                ("python_put_bytes", lambda: client.put("/bench/py.bin", data)),
                ("python_put_file", lambda: client.put("/bench/pyf.bin", local)),
                ("python_write_1mib", lambda: write(client, "/bench/pyw.bin")),
            ]
            steps_get = [
                ("cli_cat", lambda: cli("cat", "/bench/cli.bin")),
                ("python_get_bytes", lambda: out.append(client.get("/bench/cli.bin"))),
                ("python_get_into", lambda: client.get("/bench/cli.bin", into=buf)),
                ("cli_get", lambda: cli("get", "/bench/py.bin", str(work / "cli-out.bin"))),
                ("python_download", lambda: client.download("/bench/py.bin", work / "py-out.bin")),
                # The machine's price of a new object of the file's size
                # (the kernel handing out fresh pages, here filled), which
                # a get as bytes pays and `cairn cat` never does.
                ("fresh_bytes", lambda: b"\1" * size),
            ]
            # Writes first, then reads, so that no read shares the machine
            # with the writeback of a put (2 cores); each side goes first in
            # turn.
            for steps in (steps_put, steps_get):
                for name, step in (steps if r % 2 == 0 else list(reversed(steps))):
                    settle()
                    c0, s0 = _self_cpu(), srv.cpu_seconds()
                    res[name].append(rate(size, timed(step)))
                    cpu[name].append((round(_self_cpu() - c0, 2), round(srv.cpu_seconds() - s0, 2)))
                    if out:
                        assert out.pop() == data
            for p in ("cli-out.bin", "py-out.bin"):
                (work / p).unlink()
            assert client.get("/bench/pyw.bin") == data
            del client
        finally:
            srv.stop()
    assert buf == data
    del data, buf
    local.unlink()
    med = {k: statistics.median(v) for k, v in res.items()}

    def ratio(a: str, b: str) -> float:
        return round(med[a] / med[b], 2)

    return {
        "size_bytes": size,
        "runs": runs,
        "mib_per_s": res,
        "median_mib_per_s": med,
        # Per step: (client, server) CPU seconds; the client is this process
        # or the CLI's.
        "cpu_s_client_server": cpu,
        "median_client_cpu_s": {k: round(statistics.median(c for c, _ in v), 2) for k, v in cpu.items()},
        "median_server_cpu_s": {k: round(statistics.median(s for _, s in v), 2) for k, v in cpu.items()},
        "ratio_put_python_bytes_vs_cli": ratio("python_put_bytes", "cli_put"),
        "ratio_put_python_file_vs_cli": ratio("python_put_file", "cli_put"),
        "ratio_put_python_write_vs_cli": ratio("python_write_1mib", "cli_put"),
        "ratio_get_python_bytes_vs_cli_cat": ratio("python_get_bytes", "cli_cat"),
        # Against a CLI that also had to fill a new object of that size:
        # the time of `cairn cat` plus that of `bytes(size)`.
        "ratio_get_python_bytes_vs_cli_cat_plus_fresh_memory": round(
            med["python_get_bytes"] * (1 / med["cli_cat"] + 1 / med["fresh_bytes"]), 2),
        "ratio_get_python_into_vs_cli_cat": ratio("python_get_into", "cli_cat"),
        "ratio_get_python_download_vs_cli_get": ratio("python_download", "cli_get"),
    }


def small(client: cairn.Client, srv_s3: str, cli: Callable[..., Any], count: int, threads: int) -> dict:
    payload = os.urandom(16 << 10)
    out: dict[str, Any] = {"object_bytes": len(payload), "count": count, "threads": threads}
    with ThreadPoolExecutor(threads) as ex:
        refs: list[str] = []
        t = timed(lambda: refs.extend(ex.map(lambda _: client.put_object(payload), range(count))))
        out["python_put_ops_per_s"] = round(count / t)
        t = timed(lambda: list(ex.map(client.get_object, refs)))
        out["python_get_ops_per_s"] = round(count / t)
        try:
            import boto3
            from botocore.config import Config
        except ImportError:
            out["boto3"] = "not installed (pip install boto3)"
            return out
        key = json.loads(cli("key", "create", "bench-py", "--json", stdout=subprocess.PIPE).stdout)
        s3 = boto3.client(
            "s3", endpoint_url=srv_s3, region_name="us-east-1",
            aws_access_key_id=key["access_key"], aws_secret_access_key=key["secret_key"],
            config=Config(max_pool_connections=threads * 2, retries={"max_attempts": 2}),
        )
        s3.create_bucket(Bucket="bench-py-s3")
        names = [f"o/{i:06d}" for i in range(count)]
        t = timed(lambda: list(ex.map(lambda k: s3.put_object(Bucket="bench-py-s3", Key=k, Body=payload), names)))
        out["boto3_put_ops_per_s"] = round(count / t)
        t = timed(lambda: list(ex.map(lambda k: s3.get_object(Bucket="bench-py-s3", Key=k)["Body"].read(), names)))
        out["boto3_get_ops_per_s"] = round(count / t)
    out["ratio_put_python_vs_boto3"] = round(out["python_put_ops_per_s"] / out["boto3_put_ops_per_s"], 1)
    out["ratio_get_python_vs_boto3"] = round(out["python_get_ops_per_s"] / out["boto3_get_ops_per_s"], 1)
    return out


_ds: Optional[FileDataset] = None


def _init(ds: FileDataset) -> None:
    global _ds
    _ds = ds


def _items(idx: list[int]) -> int:
    assert _ds is not None
    return sum(len(_ds[i]) for i in idx)


def _batch(idx: list[int]) -> int:
    assert _ds is not None
    return sum(len(b) for b in _ds.__getitems__(idx))


def dataset(client: cairn.Client, files: int, size: int, workers: int, batch: int) -> dict:
    d = "/bench/dataset"
    payload = os.urandom(size)
    with ThreadPoolExecutor(16) as ex:
        t = timed(lambda: list(ex.map(lambda i: client.put(f"{d}/{i:06d}.bin", payload), range(files))))
    out: dict[str, Any] = {"files": files, "file_bytes": size, "workers": workers, "batch": batch,
                           "write_files_per_s_16_threads": round(files / t)}
    ds = FileDataset(client, d, pattern="*.bin", read_ahead=4)
    assert len(ds) == files
    batches = [list(range(i, min(i + batch, files))) for i in range(0, files, batch)]
    ctx = mp.get_context("fork")
    with ctx.Pool(workers, initializer=_init, initargs=(ds,)) as pool:
        pool.map(_items, [[0]] * workers)  # warm up: each worker connects
        for name, fn in (("per_item_read_ahead_4", _items), ("batched", _batch)):
            total: list[int] = []
            t = timed(lambda: total.append(sum(pool.map(fn, batches, chunksize=1))))
            assert total[0] == files * size
            out[name] = {"files_per_s": round(files / t), "mib_per_s": rate(files * size, t)}
    return out


def main(argv: Optional[list[str]] = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m cairn.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default=os.environ.get("CAIRN_BIN") or shutil.which("cairn") or "cairn",
                    help="the cairn binary (default: $CAIRN_BIN, else cairn on PATH)")
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--size", default="1GiB", help="large file size")
    ap.add_argument("--runs", type=int, default=3, help="large-file runs (medians are reported)")
    ap.add_argument("--small-count", type=int, default=5000)
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--file-size", default="64KiB")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--skip", default="", help="comma-separated: large,small,dataset")
    ap.add_argument("--dir", default=None,
                    help="where the temporary clusters and local files go (default: the system's "
                         "temporary directory); a tmpfs such as /dev/shm takes the disks out")
    a = ap.parse_args(argv)
    skip = set(filter(None, a.skip.split(",")))
    srv = Server(a.bin, a.nodes, parent=a.dir)
    work = Path(tempfile.mkdtemp(prefix="cairn-bench-py-work-", dir=a.dir))
    try:
        client = cairn.Client(srv.meta, srv.key)
        cli = srv.cli(a.bin)
        report: dict[str, Any] = {"cluster": {"nodes": a.nodes, "rep": client.cluster_config()["default_rep"],
                                              "chunk_size": client.cluster_config()["chunk_size"],
                                              "cpus": os.cpu_count()}}
        if "large" not in skip:
            report["large"] = large(a.bin, a.nodes, _size(a.size), a.runs, work)
        if "small" not in skip:
            report["small_objects"] = small(client, srv.s3, cli, a.small_count, a.threads)
        if "dataset" not in skip:
            report["dataset"] = dataset(client, a.files, _size(a.file_size), a.workers, a.batch)
        json.dump(report, sys.stdout, indent=2)
        print()
    finally:
        srv.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

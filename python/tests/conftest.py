"""Real `cairn` processes for the tests, on free ports in temp directories.

The binary is ``$CAIRN_BIN`` or the workspace's ``target/debug/cairn``
(``cargo build -p cairn-cli``). Every process is killed at teardown, whatever
the test did; every wait has a deadline.
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator, Optional

import pytest

import cairn

ROOT = Path(__file__).resolve().parents[2]
START_DEADLINE = 90.0  # seconds; a loaded 2-core CI machine is slow to start a server


def cairn_bin() -> str:
    b = os.environ.get("CAIRN_BIN") or str(ROOT / "target" / "debug" / "cairn")
    if not os.path.exists(b):
        pytest.exit(f"no cairn binary at {b}: run 'cargo build -p cairn-cli' or set CAIRN_BIN", 2)
    return b


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the test process dies, so even
    a killed pytest leaves no server behind (Linux prctl PR_SET_PDEATHSIG)."""
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
    except Exception:  # noqa: BLE001 - best effort
        pass


def wait_until(what: str, cond: Callable[[], bool], limit: float = 60.0) -> None:
    end = time.monotonic() + limit
    delay = 0.02
    while not cond():
        if time.monotonic() > end:
            raise TimeoutError(f"{what} did not happen within {limit} s")
        time.sleep(delay)
        delay = min(delay * 2, 0.5)


class Proc:
    """A `cairn` child process; its stdout is read on a thread (so it never
    blocks on a full pipe) and its first lines kept as the banner."""

    def __init__(self, args: list[str], ready: str, env: dict[str, str], log: Path) -> None:
        self.args = args
        self.log = open(log, "ab")
        self.p = subprocess.Popen(
            [cairn_bin(), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self.log,
            env=env,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        self.banner: list[str] = []
        lines: "queue.Queue[Optional[str]]" = queue.Queue()

        def pump() -> None:
            assert self.p.stdout is not None
            for raw in self.p.stdout:
                lines.put(raw.decode(errors="replace").rstrip("\n"))
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        end = time.monotonic() + START_DEADLINE
        while True:
            try:
                line = lines.get(timeout=max(0.0, end - time.monotonic()))
            except queue.Empty:
                self.kill()
                raise TimeoutError(f"cairn {args} did not print {ready!r}; printed {self.banner}")
            if line is None:
                self.kill()
                raise RuntimeError(f"cairn {args} exited ({self.p.wait()}); printed {self.banner}; log {log}")
            self.banner.append(line)
            if ready in line:
                return

    def field(self, marker: str) -> str:
        """The word after ``marker`` on the banner line that has it."""
        for line in self.banner:
            if line.strip().startswith(marker + " "):
                return line.strip()[len(marker):].split()[0]
        for line in self.banner:
            if marker in line:
                return line.split(marker, 1)[1].split()[0]
        raise KeyError(f"{marker!r} not in banner {self.banner}")

    def kill(self) -> None:
        if self.p.poll() is None:
            try:
                os.killpg(self.p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        self.log.close()


class Cluster:
    """Processes of one cluster and how to reach it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: list[Proc] = []
        self.meta = ""
        self.key = ""
        self.s3 = ""
        self.env = dict(os.environ)
        self.env.update(
            XDG_CONFIG_HOME=str(root / "config"),
            CAIRN_S3_LISTEN="127.0.0.1:0",
            RUST_LOG="warn",
        )
        self.env.pop("CAIRN_META", None)
        self.env.pop("CAIRN_SECRET_FILE", None)

    def spawn(self, args: list[str], ready: str, name: str) -> Proc:
        p = Proc(args, ready, self.env, self.root / f"{name}.log")
        self.procs.append(p)
        return p

    def client(self, **kw) -> cairn.Client:
        return cairn.Client(self.meta, self.key, **kw)

    def cli(self, *args: str, input: Optional[bytes] = None, check: bool = True) -> subprocess.CompletedProcess:
        env = dict(self.env, CAIRN_META=self.meta, CAIRN_SECRET_FILE=self.key, RUST_LOG="error")
        return subprocess.run([cairn_bin(), *args], input=input, capture_output=True, env=env, check=check, timeout=300)

    def stop(self) -> None:
        for p in self.procs:
            p.kill()


def start_server(root: Path, nodes: int = 3, extra: tuple[str, ...] = ()) -> Cluster:
    """`cairn server --nodes N`: meta, N storage nodes and S3 in one process."""
    c = Cluster(root)
    s = c.spawn(
        ["server", "--data", str(root / "data"), "--nodes", str(nodes), "--listen", "127.0.0.1:0", *extra],
        "try:",
        "server",
    )
    c.meta = s.field("meta")
    c.key = s.field("client key")
    c.s3 = s.field("s3")
    return c


def start_separate(root: Path, nodes: int = 3, extra_meta: tuple[str, ...] = ()) -> Cluster:
    """`cairn meta` and N `cairn storage` processes, so one node can be killed."""
    c = Cluster(root)
    m = c.spawn(
        ["meta", "--data", str(root / "meta"), "--listen", "127.0.0.1:0", *extra_meta],
        "listening on",
        "meta",
    )
    c.meta = m.field("listening on")
    c.key = str(root / "meta" / "client.key")
    for i in range(nodes):
        c.spawn(
            [
                "storage",
                "--data",
                str(root / f"node-{i}"),
                "--meta",
                c.meta,
                "--listen",
                "127.0.0.1:0",
                "--secret-file",
                str(root / "meta" / "cluster.secret"),
                "--reserve",
                "0",
            ],
            "listening on",
            f"node-{i}",
        )
    client = c.client()
    wait_until(f"{nodes} live storage nodes", lambda: sum(n["state"] == "live" for n in client.nodes()) == nodes)
    return c


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """One `cairn server --nodes 3` for the session (1 MiB chunks, so small
    files have several); each test works in a directory of its own."""
    root = Path(tempfile.mkdtemp(prefix="cairn-py-"))
    c = None
    try:
        c = start_server(root, 3, ("--chunk-size", "1MiB"))
        yield c
    finally:
        if c is not None:
            c.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def client(cluster: Cluster) -> cairn.Client:
    return cluster.client()


@pytest.fixture
def d(client: cairn.Client, request: pytest.FixtureRequest) -> str:
    """A fresh directory for one test."""
    name = request.node.name.replace("[", "-").replace("]", "").replace("/", "-")[:60]
    path = f"/t/{name}-{uuid.uuid4().hex[:8]}"
    client.mkdir(path, parents=True)
    return path


@pytest.fixture
def tmp_cluster_root() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="cairn-py-own-"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def pattern(n: int, seed: int) -> bytes:
    """Deterministic bytes that differ at every offset between seeds."""
    import random

    return random.Random(seed).randbytes(n)

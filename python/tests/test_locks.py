"""Advisory locks: the same table as every mount's flock/fcntl and `cairn lock`."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import cairn
from conftest import Cluster


def test_exclusive_shared_and_nonblocking(client: cairn.Client, d: str) -> None:
    path = f"{d}/sub/job.lock"
    a = client.lock(path)
    b = client.lock(path)
    assert client.stat(path).size == 0  # made, with its parents
    with a:
        assert a.locked()
        assert not b.acquire(blocking=False)
        assert not b.acquire(timeout=0.3)
    assert b.acquire(blocking=False)
    b.release()
    r1, r2, w = client.lock(path, shared=True), client.lock(path, shared=True), client.lock(path)
    assert r1.acquire(blocking=False) and r2.acquire(blocking=False)
    assert not w.acquire(blocking=False)
    r1.release()
    r2.release()
    assert w.acquire(blocking=False)
    w.close()
    for lk in (a, b, r1, r2):
        lk.close()


def test_blocked_waiter_is_woken_in_order(client: cairn.Client, d: str) -> None:
    path = f"{d}/q.lock"
    holder = client.lock(path)
    assert holder.acquire()
    order: list[int] = []

    def wait(i: int) -> None:
        lk = client.lock(path)
        with lk:
            order.append(i)
            time.sleep(0.05)
        lk.close()

    threads = []
    for i in range(3):
        t = threading.Thread(target=wait, args=(i,))
        t.start()
        threads.append(t)
        time.sleep(0.4)  # each queues before the next
    assert order == []
    holder.release()
    for t in threads:
        t.join(60)
    assert order == [0, 1, 2]
    holder.close()


def test_cli_lock_and_python_lock_exclude_each_other(cluster: Cluster, client: cairn.Client, d: str) -> None:
    path = f"{d}/cli.lock"
    lk = client.lock(path)
    assert lk.acquire()
    r = cluster.cli("lock", "-n", path, "--", "true", check=False)
    assert r.returncode == 1, r
    lk.release()
    r = cluster.cli("lock", "-n", path, "--", sys.executable, "-c", "raise SystemExit(5)", check=False)
    assert r.returncode == 5, r
    lk.close()


def test_a_dead_holders_lock_goes_after_its_lease(cluster: Cluster, client: cairn.Client, d: str) -> None:
    path = f"{d}/dead.lock"
    script = (
        "import cairn, os, sys, time\n"
        f"c = cairn.Client({cluster.meta!r}, {cluster.key!r})\n"
        f"lk = c.lock({path!r}, lease=1.5)\n"
        "assert lk.acquire()\n"
        "print('locked', flush=True)\n"
        "time.sleep(600)\n"
    )
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "locked"
        mine = client.lock(path)
        assert not mine.acquire(blocking=False)
        p.kill()
        p.wait(30)
        # Waiting, it gets the lock once the dead holder's lease runs out.
        assert mine.acquire(timeout=30)
        mine.close()
    finally:
        p.kill()

"""Functions the multi-process tests run in worker processes (importable by
`spawn` children)."""

from __future__ import annotations

import hashlib
import os
from typing import Any

_ds: Any = None


def init(ds: Any) -> None:
    global _ds
    _ds = ds


def digest_items(indices: list[int]) -> list[tuple[int, str, int]]:
    """Like a DataLoader worker: fetch a batch of items, return their hashes."""
    assert _ds is not None
    out = []
    for i in indices:
        out.append((i, hashlib.sha256(_ds[i]).hexdigest(), os.getpid()))
    return out


def digest_batch(indices: list[int]) -> list[tuple[int, str, int]]:
    assert _ds is not None
    return [(i, hashlib.sha256(b).hexdigest(), os.getpid()) for i, b in zip(indices, _ds.__getitems__(indices))]


def count_bytes(indices: list[int]) -> int:
    assert _ds is not None
    return sum(len(b) for b in _ds.__getitems__(indices))


def client_get(args: tuple[Any, str]) -> bytes:
    client, path = args
    return client.get(path)

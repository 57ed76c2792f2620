"""Datasets over Cairn directories, for training loops.

``FileDataset(client, "/datasets/run42/", pattern="*.bin")`` is a map-style
dataset (``len``, ``ds[i]``) over the files of a directory, in name order:
``ds[i]`` is the file's bytes, or ``transform(bytes)``. It works with
``torch.utils.data.DataLoader`` when torch is installed (it has the
``__getitem__``/``__len__``/``__getitems__`` a DataLoader uses) and needs no
torch otherwise. Workers may be forked or spawned: the client rebuilds its
I/O threads and connections in each process, and pickles by address.

Sharding: ``rank``/``world_size`` (or :meth:`shard`) keep every
``world_size``-th file starting at ``rank``, for one shard per trainer.
Read-ahead: with ``read_ahead=N`` an access to item ``i`` also fetches the
next ``N`` items in the same stride in the background, so a worker that
walks its indices finds them already in memory.
"""

from __future__ import annotations

import fnmatch
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Optional, Sequence

import cairn

__all__ = ["FileDataset"]


class FileDataset:
    def __init__(
        self,
        client: "cairn.Client",
        directory: str,
        pattern: str = "*",
        transform: Optional[Callable[[bytes], Any]] = None,
        *,
        rank: int = 0,
        world_size: int = 1,
        read_ahead: int = 0,
        recursive: bool = False,
        files: Optional[Sequence[str]] = None,
    ) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} of world_size {world_size}: need 0 <= rank < world_size")
        self.client = client
        self.directory = "/" + directory.strip("/") if directory.strip("/") else "/"
        self.pattern = pattern
        self.transform = transform
        self.rank = rank
        self.world_size = world_size
        self.read_ahead = max(0, read_ahead)
        if files is None:
            files = self._list(self.directory, recursive)
        self._all = list(files)
        self.files = self._all[rank::world_size]
        self._pool_pid: Optional[int] = None
        self._pool: Optional[ThreadPoolExecutor] = None
        self._ahead: dict[int, Future] = {}
        self._last: Optional[int] = None
        self._lock = threading.Lock()

    def _list(self, d: str, recursive: bool) -> list[str]:
        out: list[str] = []
        for st in self.client.ls(d, detail=True):
            if st.is_dir:  # type: ignore[union-attr]
                if recursive:
                    out.extend(self._list(st.path, True))  # type: ignore[union-attr]
            elif st.is_file and fnmatch.fnmatchcase(st.name, self.pattern):  # type: ignore[union-attr]
                out.append(st.path)  # type: ignore[union-attr]
        out.sort()
        return out

    def shard(self, rank: int, world_size: int) -> "FileDataset":
        """The ``rank``-th of ``world_size`` shards of this dataset."""
        return FileDataset(
            self.client,
            self.directory,
            self.pattern,
            self.transform,
            rank=rank,
            world_size=world_size,
            read_ahead=self.read_ahead,
            files=self._all,
        )

    def __len__(self) -> int:
        return len(self.files)

    def path(self, i: int) -> str:
        return self.files[i]

    def _apply(self, data: bytes) -> Any:
        return self.transform(data) if self.transform is not None else data

    def __getitem__(self, i: int) -> Any:
        if i < 0:
            i += len(self.files)
        if not 0 <= i < len(self.files):
            raise IndexError(f"index {i} out of range for {len(self.files)} files")
        if self.read_ahead == 0:
            return self._apply(self.client.get(self.files[i]))  # type: ignore[arg-type]
        with self._lock:
            fut = self._ahead.pop(i, None)
            stride = 1 if self._last is None or i == self._last else i - self._last
            self._last = i
            pool = self._executor()
            for k in range(1, self.read_ahead + 1):
                j = i + k * stride
                if 0 <= j < len(self.files) and j not in self._ahead:
                    self._ahead[j] = pool.submit(self.client.get, self.files[j])
            # Items not reached in a while (the reader jumped) are dropped.
            if len(self._ahead) > 4 * self.read_ahead:
                for j in sorted(self._ahead, key=lambda j: abs(j - i))[4 * self.read_ahead:]:
                    self._ahead.pop(j).cancel()
        data = fut.result() if fut is not None else self.client.get(self.files[i])
        return self._apply(data)  # type: ignore[arg-type]

    def __getitems__(self, indices: Sequence[int]) -> list:
        """A batch at once, fetched concurrently (a DataLoader's batched fetch)."""
        paths = [self.files[i] for i in indices]
        return [self._apply(d) for d in self.client.get_many(paths)]

    def _executor(self) -> ThreadPoolExecutor:
        # Threads do not survive a fork: each process makes its own pool.
        if self._pool is None or self._pool_pid != os.getpid():
            self._pool = ThreadPoolExecutor(max_workers=max(1, self.read_ahead), thread_name_prefix="cairn-ahead")
            self._pool_pid = os.getpid()
            self._ahead = {}
        return self._pool

    def __iter__(self) -> Any:
        for i in range(len(self)):
            yield self[i]

    def __getstate__(self) -> dict:
        s = self.__dict__.copy()
        for k in ("_pool", "_pool_pid", "_lock"):
            s.pop(k, None)
        s["_ahead"] = {}
        s["_last"] = None
        return s

    def __setstate__(self, s: dict) -> None:
        self.__dict__.update(s)
        self._pool = None
        self._pool_pid = None
        self._lock = threading.Lock()

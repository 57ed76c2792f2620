"""Cairn from Python: files, objects by reference, fsspec, datasets; no mount needed.

>>> import cairn
>>> c = cairn.Client()                     # finds the local `cairn server` like the CLI
>>> c.put("/data/hello.txt", b"hello")     # missing parents are made
>>> c.get("/data/hello.txt")
b'hello'
>>> with c.open("/data/log.bin", "wb") as f:   # committed as a new version on close
...     f.write(b"...")
>>> ref = c.put_object(b"tensor bytes", prefetch_group="actors")
>>> c.get_object(ref)

Paths are Cairn paths (``/a/b``) and may carry cues, as in the CLI:
``/data/.cue/rep=2,lax/file`` or ``/data/.maxtime=250,anyversion/file``.
The native module releases the GIL during I/O; a client is thread-safe and
safe across ``fork`` (each process gets its own I/O threads and connections)
and pickles (for ``spawn`` workers) into a client of the same cluster.
"""

from __future__ import annotations

import errno
import os
import re
import uuid
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping, Optional, Sequence, Union

from . import _buf, _config, _native
from ._files import RawReader, RawWriter, Reader, Writer
from .errors import (
    CairnError,
    Conflict,
    Corrupt,
    InvalidInput,
    NoSpace,
    Timeout,
    Unavailable,
    Unsupported,
)

__all__ = [
    "Client",
    "Stat",
    "Reader",
    "Writer",
    "Lock",
    "OBJECTS_DIR",
    "CairnError",
    "Conflict",
    "Corrupt",
    "InvalidInput",
    "NoSpace",
    "Timeout",
    "Unavailable",
    "Unsupported",
]

#: Where objects put by reference live: ``/cairn-objects/<ref>``. An ordinary
#: directory, so the CLI, the mount and S3 (bucket ``cairn-objects``) see them.
OBJECTS_DIR = "/cairn-objects"
_REF = re.compile(r"^[0-9a-f]{32}$")
#: Where an object's prefetch group is kept when this Cairn has no ``hot=`` cue.
PREFETCH_XATTR = "cairn.prefetch_group"
_HOT: Optional[bool] = None


def hot_cue_supported() -> bool:
    """Whether this Cairn knows the ``hot=GROUP`` cue (prefetch groups)."""
    global _HOT
    if _HOT is None:
        try:
            _HOT = _native.parse_cues("hot=g").startswith("hot=")
        except ValueError:
            _HOT = False
    return _HOT

Cues = Union[str, Mapping[str, Any], None]
Data = Union[bytes, bytearray, memoryview]


def _cue_list(cues: Cues) -> Optional[str]:
    """``"rep=2,lax"`` or ``{"rep": 2, "lax": True}`` as a cue list."""
    if cues is None or isinstance(cues, str):
        return cues or None
    items = []
    for k, v in cues.items():
        if v is True or v is None:
            items.append(k)
        elif v is False:
            continue
        else:
            items.append(f"{k}={v}")
    return ",".join(items) or None


@dataclass(frozen=True)
class Stat:
    """A file's or directory's attributes, as ``cairn stat`` shows them."""

    path: str
    type: str  # "file" | "directory" | "symlink" | "fifo" | "socket" | "char-device" | "block-device"
    size: int
    version: int
    inode: int
    mode: int
    mtime_ms: int
    ctime_ms: int
    #: The same times to the nanosecond, and the last recorded read.
    mtime_ns: int
    ctime_ns: int
    atime_ns: int
    chunk_size: int
    chunks: int
    cues: str
    nlink: int
    target: Optional[str] = None
    uid: Optional[int] = None
    gid: Optional[int] = None
    #: The file's bytes are kept in its metadata record (a small file, see
    #: the ``inline=`` cue), not in chunks.
    inline: bool = False

    @property
    def name(self) -> str:
        return self.path.rstrip("/").rsplit("/", 1)[-1] or "/"

    @property
    def is_dir(self) -> bool:
        return self.type == "directory"

    @property
    def is_file(self) -> bool:
        return self.type == "file"

    @property
    def mtime(self) -> float:
        """Modification time, seconds since the epoch."""
        return self.mtime_ns / 1e9

    @classmethod
    def _from(cls, path: str, d: Mapping[str, Any]) -> "Stat":
        return cls(path=path, **d)


def _join(parent: str, name: str) -> str:
    return parent.rstrip("/") + "/" + name


class Client:
    """A handle on a Cairn cluster.

    ``Client()`` finds the cluster like the CLI: ``CAIRN_META`` /
    ``CAIRN_SECRET_FILE``, else the ``~/.config/cairn/client.conf`` a local
    ``cairn server`` writes, else ``127.0.0.1:7420`` with
    ``./cairn-data/meta/client.key``. Or name it: ``Client(meta="a:7420,b:7420",
    secret_file="/etc/cairn/client.key")``.

    ``threads``: I/O threads per process (default: cores, 2 to 8);
    ``cache_bytes``: the in-memory chunk cache (default 64 MiB);
    ``read_ahead_bytes``: bytes a sequential read fetches ahead (default 64 MiB).
    """

    def __init__(
        self,
        meta: Union[str, Sequence[str], None] = None,
        secret_file: Union[str, os.PathLike, None] = None,
        *,
        threads: Optional[int] = None,
        cache_bytes: Optional[int] = None,
        read_ahead_bytes: Optional[int] = None,
    ) -> None:
        addrs, secret = _config.resolve(meta, secret_file)
        self._args = (addrs, secret, threads, cache_bytes, read_ahead_bytes)
        self._native = _native.NativeClient(addrs, secret, threads, cache_bytes, read_ahead_bytes)

    def __reduce__(self) -> Any:
        addrs, secret, threads, cache_bytes, read_ahead_bytes = self._args
        return (_rebuild, (addrs, secret, threads, cache_bytes, read_ahead_bytes))

    def __repr__(self) -> str:
        return f"cairn.Client(meta={','.join(self._args[0])!r})"

    @property
    def meta(self) -> list[str]:
        return list(self._args[0])

    @property
    def secret_file(self) -> str:
        return self._args[1]

    def cluster_config(self) -> dict:
        """``{"chunk_size": ..., "default_rep": ...}``."""
        return self._native.cluster_config()

    def nodes(self) -> list[dict]:
        """Storage nodes: ``id``, ``addr``, ``zone``, ``host``, ``state``."""
        return self._native.nodes()

    # ---- files -------------------------------------------------------------

    def put(
        self,
        path: str,
        data: Union[Data, str, os.PathLike, Any],
        cues: Cues = None,
        *,
        expected_version: Optional[int] = None,
    ) -> Stat:
        """Write ``data`` as the next version of ``path`` and return its stat.

        ``data``: bytes-like (written as is), a local file path (``str`` or
        ``os.PathLike``), or a binary file object (streamed). Missing parent
        directories are made. ``expected_version``: 0 only creates, N only
        replaces version N (else :class:`cairn.Conflict`).
        """
        cl = _cue_list(cues)
        if isinstance(data, (str, os.PathLike)):
            d = self._native.put_file(path, os.fspath(data), cl, expected_version)
        elif hasattr(data, "read") and not isinstance(data, (bytes, bytearray, memoryview)):
            if expected_version not in (None, 0):
                raise InvalidInput(22, "expected_version with a file object: use 0 or None")
            mode = "xb" if expected_version == 0 else "wb"
            with self.open(path, mode, cues=cues) as f:
                while True:
                    block = data.read(4 << 20)
                    if not block:
                        break
                    f.write(block)
            return f.stat
        else:
            keep, arg = _buf.readable(data)
            d = self._native.put(path, arg, cl, expected_version)
            del keep
        return Stat._from(path, d)

    def get(
        self,
        path: str,
        into: Optional[Union[bytearray, memoryview, Any]] = None,
        *,
        cues: Cues = None,
        version: Optional[int] = None,
    ) -> Union[bytes, int]:
        """The whole file as ``bytes``; with ``into`` (a writable buffer at
        least as large as the file) read into it with no extra copy and
        return the size. ``version``: read that version (see
        :meth:`versions`) instead of the current one."""
        cl = _cue_list(cues)
        if into is not None:
            keep, arg = _buf.writable(into)
            n = self._native.get_into(path, arg, cl, version)
            del keep
            return n
        return self._native.get(path, cl, version)

    def versions(self, path: str) -> list[Stat]:
        """Every version of a file that can be read, newest first: the
        current one, then the older ones its ``versions=N`` cue keeps (set
        it on a directory with :meth:`set_cues`; without it a replaced
        version is collected)."""
        return [Stat._from(path, d) for d in self._native.versions(path)]

    def get_many(self, paths: Iterable[str], concurrency: int = 16) -> list[bytes]:
        """Several whole files, ``concurrency`` fetched at once."""
        return self._native.get_many(list(paths), concurrency)

    def download(
        self,
        path: str,
        local: Union[str, os.PathLike],
        *,
        cues: Cues = None,
        version: Optional[int] = None,
    ) -> int:
        """Copy ``path`` (or its ``version``) to a local file (atomically,
        like ``cairn get``)."""
        return self._native.get_file(path, os.fspath(local), _cue_list(cues), version)

    def upload(self, local: Union[str, os.PathLike], path: str, cues: Cues = None) -> Stat:
        """Copy a local file to ``path`` (like ``cairn put``)."""
        return self.put(path, os.fspath(local), cues)

    def open(
        self,
        path: str,
        mode: str = "rb",
        *,
        cues: Cues = None,
        buffer_size: int = 1 << 20,
        version: Optional[int] = None,
    ) -> Union[Reader, Writer]:
        """A binary file object: ``"rb"`` reads one version with ranged
        reads (the current one, or ``version``); ``"wb"`` (replace),
        ``"xb"`` (create only) and ``"ab"`` (append) write a new version,
        committed on ``close()``."""
        m = mode.replace("b", "")
        if "t" in mode or m not in ("r", "w", "x", "a"):
            raise InvalidInput(22, f"mode {mode!r}: Cairn files are binary: rb, wb, xb or ab")
        cl = _cue_list(cues)
        if m == "r":
            native = self._native.open_reader(path, cl, version)
            return Reader(RawReader(native, path), buffer_size)
        if version is not None:
            raise InvalidInput(22, f"mode {mode!r}: only a read names a version")
        native = self._native.open_writer(path, m, cl)
        return Writer(RawWriter(native, path, m + "b"), buffer_size)

    def stat(self, path: str) -> Stat:
        """Attributes of ``path``, with its ``version``."""
        return Stat._from(path, self._native.stat(path))

    def exists(self, path: str) -> bool:
        try:
            self._native.stat(path)
            return True
        except FileNotFoundError:
            return False

    def isdir(self, path: str) -> bool:
        try:
            return self._native.stat(path)["type"] == "directory"
        except FileNotFoundError:
            return False

    def ls(self, path: str = "/", detail: bool = False) -> Union[list[str], list[Stat]]:
        """Names in a directory (in order), or their :class:`Stat` with
        ``detail``; a file lists as itself."""
        st = self._native.stat(path)
        if st["type"] != "directory":
            return [Stat._from(path, st)] if detail else [path.rstrip("/").rsplit("/", 1)[-1]]
        entries = self._native.list(path)
        if detail:
            return [Stat._from(_join(path, n), d) for n, d in entries]
        return [n for n, _ in entries]

    def walk(self, path: str = "/") -> Iterator[tuple[str, list[str], list[str]]]:
        """Like ``os.walk``: ``(dir, subdirs, files)`` top-down."""
        entries = self._native.list(path)
        dirs = [n for n, d in entries if d["type"] == "directory"]
        files = [n for n, d in entries if d["type"] != "directory"]
        yield path, dirs, files
        for d in dirs:
            yield from self.walk(_join(path, d))

    def mkdir(self, path: str, parents: bool = False, exist_ok: bool = False) -> Stat:
        """Make a directory; ``parents`` makes missing ancestors and accepts
        an existing directory (``mkdir -p``)."""
        try:
            return Stat._from(path, self._native.mkdir(path, parents))
        except FileExistsError:
            if exist_ok and self.isdir(path):
                return self.stat(path)
            raise

    def makedirs(self, path: str, exist_ok: bool = True) -> Stat:
        return self.mkdir(path, parents=True, exist_ok=exist_ok)

    def rm(self, path: str, recursive: bool = False) -> None:
        """Remove a file or an empty directory (anything, with ``recursive``)."""
        self._native.remove(path, recursive)

    def mv(self, src: str, dst: str, *, replace: bool = True) -> None:
        """Rename atomically; an existing ``dst`` file is replaced unless
        ``replace=False`` (then :class:`FileExistsError`)."""
        self._native.rename(src, dst, replace)

    def ln(self, src: str, dst: str) -> Stat:
        """Give the file ``src`` the further name ``dst`` (a hard link)."""
        return Stat._from(dst, self._native.link(src, dst))

    def locate(self, path: str) -> dict:
        """Each chunk of a file: id, offset, size, CRC32C and the nodes holding it."""
        return self._native.locate(path)

    def cues(self, path: str) -> dict:
        """``{"own": str | None, "inherited": str, "effective": str}``."""
        return self._native.cues(path)

    def set_cues(self, path: str, cues: Cues, *, replace: bool = False) -> Stat:
        """Merge ``cues`` over the path's own (or replace them); ``None`` or
        ``""`` with ``replace=True`` clears them."""
        return Stat._from(path, self._native.set_cues(path, _cue_list(cues) or "", replace))

    def clear_cues(self, path: str) -> Stat:
        return self.set_cues(path, None, replace=True)

    # ---- locks -------------------------------------------------------------

    def lock(self, path: str, *, shared: bool = False, lease: float = 5.0) -> "Lock":
        """An advisory whole-file lock on ``path`` (made, empty, if missing)
        in the table every mount's ``flock``/``fcntl`` locks and ``cairn
        lock`` use: ``with client.lock("/jobs/q.lock"): ...``. ``shared``:
        a reader lock. It outlives this process by at most ``lease``
        seconds if the process dies or loses meta."""
        return Lock(self._native.lock(path, shared, float(lease)), path)

    # ---- objects by reference (the DI-store API) ------------------------------

    @staticmethod
    def object_path(ref: str) -> str:
        """Where the object ``ref`` lives in the namespace."""
        if not isinstance(ref, str) or not _REF.match(ref):
            raise InvalidInput(22, f"not an object reference: {ref!r}")
        return f"{OBJECTS_DIR}/{ref}"

    def put_object(
        self, data: Data, prefetch_group: Optional[str] = None, cues: Cues = None
    ) -> str:
        """Store ``data`` under a new reference and return it (a stable string).

        ``prefetch_group``: spread the object's data to every node of that
        group ahead of reads, as the ``hot=GROUP`` cue on its path.
        """
        ref = uuid.uuid4().hex
        cl = _cue_list(cues)
        xattrs = None
        if prefetch_group is not None:
            if not re.match(r"^[A-Za-z0-9_.-]+$", prefetch_group):
                raise InvalidInput(22, f"prefetch group {prefetch_group!r}: use letters, digits, _ . -")
            if hot_cue_supported():
                hot = f"hot={prefetch_group}"
                cl = f"{cl},{hot}" if cl else hot
            else:
                # A Cairn without groups: keep the wish with the object, for
                # a prefetch by hand (`cairn prefetch`) or a later upgrade.
                xattrs = {PREFETCH_XATTR: prefetch_group.encode()}
        keep, arg = _buf.readable(data)
        self._native.put(self.object_path(ref), arg, cl, 0, xattrs)
        del keep
        return ref

    def get_object(self, ref: str, into: Any = None) -> Union[bytes, int]:
        """The object's bytes (or read into ``into``)."""
        return self.get(self.object_path(ref), into)

    def delete_object(self, ref: str) -> None:
        self._native.remove(self.object_path(ref), False)

    def object_exists(self, ref: str) -> bool:
        return self.exists(self.object_path(ref))

    def register_group(self, group: str, *, host: Optional[str] = None) -> list[str]:
        """Join this host's storage node(s) to the prefetch group ``group``
        (objects put with ``prefetch_group=group`` are then spread to them).
        Returns the node ids joined. ``host``: another host's nodes instead
        (default: this machine's name, ``CAIRN_HOST`` overriding it)."""
        host = host or _native.NativeClient.local_host()
        if not hasattr(self._native, "set_group"):  # pragma: no cover - an older native module
            raise Unsupported(95, f"cannot register group {group!r}: groups are not supported by this server")
        mine = [n["id"] for n in self._native.nodes() if n["host"] == host]
        if not mine:
            raise CairnError(
                errno.ENODEV,
                f"no storage node runs on host {host!r}, so none can join group {group!r}; "
                "start one here ('cairn storage --group ...') or pass host=",
            )
        for node in mine:
            self._native.set_group(node, group, True)
        return mine

    def unregister_group(self, group: str, *, host: Optional[str] = None) -> list[str]:
        """Take this host's storage node(s) out of ``group``."""
        host = host or _native.NativeClient.local_host()
        mine = [n["id"] for n in self._native.nodes() if n["host"] == host]
        for node in mine:
            self._native.set_group(node, group, False)
        return mine

    def groups(self) -> dict[str, list[str]]:
        """Every prefetch group and its member node ids."""
        return {g["name"]: g["nodes"] for g in self._native.groups()}


def _rebuild(addrs: list[str], secret: str, threads: Any, cache_bytes: Any, read_ahead_bytes: Any) -> Client:
    return Client(addrs, secret, threads=threads, cache_bytes=cache_bytes, read_ahead_bytes=read_ahead_bytes)


class Lock:
    """A whole-file advisory lock (``Client.lock``), like ``threading.Lock``:
    ``acquire(blocking=True, timeout=None) -> bool``, ``release()``, and a
    context manager that waits for it. One owner: this object."""

    def __init__(self, native: Any, path: str) -> None:
        self._native = native
        self.path = path

    def acquire(self, blocking: bool = True, timeout: Optional[float] = None) -> bool:
        """Take the lock; with ``blocking``, wait (up to ``timeout`` seconds)
        in the queue of waiters, first come first served. Ctrl-C gives up."""
        if timeout is not None and timeout < 0:
            timeout = None
        return self._native.acquire(blocking, timeout)

    def release(self) -> None:
        self._native.release()

    def locked(self) -> bool:
        """Whether this object holds the lock (False once its lease lapsed:
        another holder may have it now)."""
        return self._native.held

    def close(self) -> None:
        """Release the lock and end its session."""
        self._native.close()

    def __enter__(self) -> "Lock":
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"cairn.Lock({self.path!r}, held={self.locked()})"

"""Binary file objects over Cairn files.

``Client.open(path, "rb")`` gives a :class:`Reader`, an ``io.BufferedReader``
over :class:`RawReader`, whose reads are ranged reads of one *version* of the
file (the one current at open): it keeps reading that version even if the
file is replaced meanwhile, until meta collects the old chunks (its
``--gc-delay``). Sequential reads are served from read-ahead windows.

``"wb"``, ``"xb"`` and ``"ab"`` give a :class:`Writer`: the bytes stream to
storage nodes as they are written (memory stays bounded whatever the size)
and ``close()`` commits them as the file's new version, atomically: readers
see the old content or the new, never a mix. Leaving a ``with`` block by an
exception discards the write instead. ``"ab"`` writes the current content
followed by the new bytes as the next version, and fails with
:class:`cairn.Conflict` at close if someone else changed the file meanwhile.
"""

from __future__ import annotations

import io
from typing import Any, Optional

from . import _buf, _native

DEFAULT_BUFFER = 1 << 20


class RawReader(io.RawIOBase):
    """Unbuffered, seekable reads of one version of a Cairn file."""

    def __init__(self, native: "_native.NativeReader", name: str) -> None:
        super().__init__()
        self._native = native
        self._pos = 0
        self._size: int = native.size
        self.name = name
        self.mode = "rb"

    @property
    def version(self) -> int:
        return self._native.version

    @property
    def size(self) -> int:
        return self._size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._checkClosed()
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self._size + offset
        else:
            raise ValueError(f"invalid whence ({whence}, should be 0, 1 or 2)")
        if pos < 0:
            raise OSError(22, f"negative seek position {pos}")
        self._pos = pos
        return pos

    def tell(self) -> int:
        self._checkClosed()
        return self._pos

    def readinto(self, b: Any) -> int:
        self._checkClosed()
        if self._pos >= self._size:
            return 0
        keep, arg = _buf.writable(b)
        n = self._native.readinto(self._pos, arg)
        del keep
        self._pos += n
        return n

    def read(self, size: int = -1) -> bytes:
        self._checkClosed()
        if size is None or size < 0:
            return self.readall()
        if self._pos >= self._size or size == 0:
            return b""
        data = self._native.read(self._pos, size)
        self._pos += len(data)
        return data

    def readall(self) -> bytes:
        self._checkClosed()
        left = self._size - self._pos
        if left <= 0:
            return b""
        data = self._native.read(self._pos, left)
        self._pos += len(data)
        return data


class Reader(io.BufferedReader):
    """A buffered binary reader (``read``, ``readinto``, ``readline``,
    iteration, ``seek``/``tell``) with the file's ``version`` and ``size``."""

    raw: RawReader

    def __init__(self, raw: RawReader, buffer_size: int = DEFAULT_BUFFER) -> None:
        super().__init__(raw, buffer_size)

    @property
    def version(self) -> int:
        return self.raw.version

    @property
    def size(self) -> int:
        return self.raw.size

    def stat(self) -> Any:
        from . import Stat

        return Stat._from(self.raw.name, self.raw._native.stat())


class RawWriter(io.RawIOBase):
    """Unbuffered writes streaming into a new version, committed on close."""

    def __init__(self, native: "_native.NativeWriter", name: str, mode: str) -> None:
        super().__init__()
        self._native = native
        self._pos = 0
        self._aborted = False
        self.name = name
        self.mode = mode
        self.result: Optional[dict] = None

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def tell(self) -> int:
        self._checkClosed()
        return self._pos

    def write(self, b: Any) -> int:
        self._checkClosed()
        keep, arg = _buf.readable(b)
        try:
            n = self._native.write(arg)
        finally:
            del keep  # the buffer is not read after the call returns
        self._pos += n
        return n

    def abort(self) -> None:
        """Discard everything written; nothing is committed."""
        if not self.closed:
            self._aborted = True
            self._native.abort()
            super().close()

    def close(self) -> None:
        if self.closed:
            return
        try:
            if not self._aborted:
                self.result = self._native.close()
        finally:
            super().close()


class Writer(io.BufferedWriter):
    """A buffered binary writer; ``close()`` commits the new version (its
    :class:`cairn.Stat` is then :attr:`stat`), an exception leaving a
    ``with`` block discards it."""

    raw: RawWriter

    def __init__(self, raw: RawWriter, buffer_size: int = DEFAULT_BUFFER) -> None:
        super().__init__(raw, buffer_size)

    def abort(self) -> None:
        """Discard what was written (buffered or sent); nothing is committed."""
        if self.closed:
            return
        self.raw.abort()
        # The raw file is closed: closing the buffer drops what it holds.
        try:
            super().close()
        except (ValueError, OSError):
            pass

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            self.abort()
        else:
            self.close()

    @property
    def stat(self) -> Any:
        """The committed version's stat, after close."""
        from . import Stat

        r = self.raw.result
        return None if r is None else Stat._from(self.raw.name, r)

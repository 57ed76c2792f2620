"""Cairn errors as the Python exceptions a Python user expects.

Every error keeps the kind it had in Cairn (``exc.kind``, e.g. ``"NotFound"``)
and the server's message. File-system kinds are the builtin ``OSError``
subclasses with their ``errno``; the rest are :class:`CairnError` subclasses,
which are ``OSError`` too (with ``EIO``-like errnos), so ``except OSError``
catches every Cairn failure.
"""

from __future__ import annotations

import errno

__all__ = [
    "CairnError",
    "Unavailable",
    "Conflict",
    "Corrupt",
    "Timeout",
    "NoSpace",
    "InvalidInput",
    "Unsupported",
    "from_native",
]


class CairnError(OSError):
    """A Cairn failure that has no builtin exception of its own."""

    kind = "Internal"


class Unavailable(CairnError, ConnectionError):
    """Not enough live nodes, a node went away, meta cannot be reached. Retrying can help."""

    kind = "Unavailable"


class Conflict(CairnError):
    """A concurrent change won (an expected version did not match). Retrying can help."""

    kind = "Conflict"


class Corrupt(CairnError):
    """No copy of some data passed its checksum."""

    kind = "Corrupt"


class Timeout(CairnError, TimeoutError):
    """An operation ran past its deadline (``maxtime`` or the client's own)."""

    kind = "Timeout"


class NoSpace(CairnError):
    """No storage node has room (``errno.ENOSPC``)."""

    kind = "NoSpace"


class InvalidInput(CairnError, ValueError):
    """A malformed path, cue list or argument."""

    kind = "InvalidInput"


class Unsupported(CairnError, NotImplementedError):
    """The server does not offer this operation."""

    kind = "Unsupported"


# kind -> (exception class, errno)
_TABLE: dict[str, tuple[type[OSError], int]] = {
    "NotFound": (FileNotFoundError, errno.ENOENT),
    "AlreadyExists": (FileExistsError, errno.EEXIST),
    "NotADirectory": (NotADirectoryError, errno.ENOTDIR),
    "IsADirectory": (IsADirectoryError, errno.EISDIR),
    "DirectoryNotEmpty": (OSError, errno.ENOTEMPTY),
    "PermissionDenied": (PermissionError, errno.EACCES),
    "InvalidInput": (InvalidInput, errno.EINVAL),
    "Conflict": (Conflict, errno.EAGAIN),
    "Unavailable": (Unavailable, errno.EHOSTUNREACH),
    "Corrupt": (Corrupt, errno.EIO),
    "Timeout": (Timeout, errno.ETIMEDOUT),
    "NoSpace": (NoSpace, errno.ENOSPC),
    "Internal": (CairnError, errno.EIO),
    "TooLarge": (InvalidInput, errno.EFBIG),
}


def from_native(kind: str, message: str) -> OSError:
    """The exception for a Cairn error of ``kind`` (called by the native module)."""
    cls, code = _TABLE.get(kind, (CairnError, errno.EIO))
    exc = cls(code, message)
    try:
        exc.kind = kind  # type: ignore[attr-defined]
    except AttributeError:  # pragma: no cover - builtins accept attributes
        pass
    return exc

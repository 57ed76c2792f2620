"""Buffers for the native module without the buffer protocol of the stable
ABI (absent before CPython 3.11): a writable buffer is pinned through ctypes
and passed as ``(address, length)``; the returned keeper must stay alive
until the native call returns (it also keeps the buffer exported, so a
``bytearray`` cannot be resized meanwhile)."""

from __future__ import annotations

import ctypes
from typing import Any, Tuple, Union

Pinned = Tuple[Any, Union[bytes, Tuple[int, int]]]


def writable(obj: Any) -> Pinned:
    """``(keeper, (address, length))`` of a writable C-contiguous buffer."""
    mv = memoryview(obj)
    if mv.readonly:
        raise TypeError("a writable buffer is needed (bytearray, writable memoryview, numpy array)")
    if not mv.c_contiguous:
        raise ValueError("the buffer must be C-contiguous")
    mv = mv.cast("B")
    n = mv.nbytes
    if n == 0:
        return mv, (0, 0)
    c = (ctypes.c_char * n).from_buffer(mv)
    return (mv, c), (ctypes.addressof(c), n)


def readable(obj: Any) -> Pinned:
    """What the native module reads: ``bytes`` as is, a writable buffer
    pinned, anything else bytes-like copied into ``bytes``."""
    if isinstance(obj, bytes):
        return obj, obj
    mv = memoryview(obj)
    if mv.readonly or not mv.c_contiguous:
        b = mv.tobytes()
        return b, b
    return writable(mv)

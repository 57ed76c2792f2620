"""Buffers for the native module without the buffer protocol of the stable
ABI (absent before CPython 3.11): a buffer is pinned through ctypes and
passed as ``(address, length)``; the returned keeper must stay alive until
the native call returns (it also keeps the buffer exported, so a
``bytearray`` cannot be resized meanwhile). A read-only buffer (a slice of
``bytes``, the memoryview ``io.BufferedWriter`` hands its raw file) is
exported with ``PyObject_GetBuffer`` called through ``ctypes.pythonapi``,
so it is not copied either."""

from __future__ import annotations

import ctypes
from typing import Any, Optional, Tuple, Union

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


class _PyBuffer(ctypes.Structure):
    """CPython's ``Py_buffer`` (this layout since 3.3; in the stable ABI
    from 3.11)."""

    _fields_ = [
        ("buf", ctypes.c_void_p),
        ("obj", ctypes.c_void_p),
        ("len", ctypes.c_ssize_t),
        ("itemsize", ctypes.c_ssize_t),
        ("readonly", ctypes.c_int),
        ("ndim", ctypes.c_int),
        ("format", ctypes.c_char_p),
        ("shape", ctypes.c_void_p),
        ("strides", ctypes.c_void_p),
        ("suboffsets", ctypes.c_void_p),
        ("internal", ctypes.c_void_p),
    ]


try:
    _get_buffer = ctypes.pythonapi.PyObject_GetBuffer
    _get_buffer.argtypes = [ctypes.py_object, ctypes.POINTER(_PyBuffer), ctypes.c_int]
    _get_buffer.restype = ctypes.c_int
    _release_buffer = ctypes.pythonapi.PyBuffer_Release
    _release_buffer.argtypes = [ctypes.POINTER(_PyBuffer)]
    _release_buffer.restype = None
    _EXPORT = True
except (AttributeError, OSError):  # not CPython: read-only buffers are copied
    _EXPORT = False


class _Exported:
    """A buffer exported until this is released (or collected)."""

    __slots__ = ("_view",)

    def __init__(self, mv: memoryview) -> None:
        view = _PyBuffer()
        # PyBUF_SIMPLE: contiguous bytes; raises (BufferError) otherwise.
        _get_buffer(mv, ctypes.byref(view), 0)
        self._view: Optional[_PyBuffer] = view

    def arg(self) -> Tuple[int, int]:
        assert self._view is not None
        return (self._view.buf or 0, self._view.len)

    def release(self) -> None:
        view, self._view = self._view, None
        if view is not None:
            _release_buffer(ctypes.byref(view))

    def __del__(self) -> None:
        self.release()


def readable(obj: Any) -> Pinned:
    """What the native module reads: ``bytes`` as is, any C-contiguous
    buffer pinned, a non-contiguous one copied into ``bytes``."""
    if isinstance(obj, bytes):
        return obj, obj
    mv = memoryview(obj)
    if not mv.c_contiguous:
        b = mv.tobytes()
        return b, b
    if not mv.readonly:
        return writable(mv)
    mv = mv.cast("B")
    if mv.nbytes == 0:
        return mv, (0, 0)
    if not _EXPORT:
        b = mv.tobytes()
        return b, b
    e = _Exported(mv)
    return (mv, e), e.arg()

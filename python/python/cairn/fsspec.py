"""``cairn://`` for fsspec, and so for pandas, pyarrow, Dask and Hugging Face
``datasets``: ``pandas.read_parquet("cairn:///data/x.parquet")``.

Registered through the ``fsspec.specs`` entry point when the package is
installed. URLs are ``cairn:///absolute/path`` (the cluster comes from the
storage options ``meta=`` / ``secret_file=`` / ``client=``, else it is found
like ``cairn.Client()`` finds it). Reads are ranged reads of the version
current at open; writes stream and commit a new version at close (an
exception inside ``with`` discards them). Listing and ``info`` are Cairn's
``ls`` and ``stat``; ``info`` carries the file's ``version``.
"""

from __future__ import annotations

import os
from typing import Any, Optional

from fsspec.spec import AbstractBufferedFile, AbstractFileSystem

import cairn


class CairnFileSystem(AbstractFileSystem):
    protocol = ("cairn",)
    root_marker = "/"
    # Clients are cheap to share and fork-safe: one per cluster and process.
    cachable = True

    def __init__(
        self,
        meta: Any = None,
        secret_file: Optional[str] = None,
        client: Optional["cairn.Client"] = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.client = client if client is not None else cairn.Client(meta, secret_file)

    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        if isinstance(path, (list, tuple)):
            return type(path)(cls._strip_protocol(p) for p in path)
        path = os.fspath(path) if not isinstance(path, str) else path
        for p in ("cairn://", "cairn::"):
            if path.startswith(p):
                path = path[len(p):]
                break
        path = "/" + path.lstrip("/")
        return path.rstrip("/") or "/"

    def unstrip_protocol(self, name: str) -> str:
        return "cairn://" + self._strip_protocol(name)

    @staticmethod
    def _info(st: "cairn.Stat") -> dict:
        return {
            "name": st.path if st.path == "/" else st.path.rstrip("/"),
            "size": st.size if st.type == "file" else 0,
            "type": "directory" if st.type == "directory" else "file",
            "version": st.version,
            "mtime": st.mtime,
            "mode": st.mode,
            "nlink": st.nlink,
            "cues": st.cues,
            "islink": st.type == "symlink",
        }

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list:
        path = self._strip_protocol(path)
        entries = self.client.ls(path, detail=True)
        infos = [self._info(s) for s in entries]  # type: ignore[arg-type]
        return infos if detail else [i["name"] for i in infos]

    def info(self, path: str, **kwargs: Any) -> dict:
        path = self._strip_protocol(path)
        return self._info(self.client.stat(path))

    def exists(self, path: str, **kwargs: Any) -> bool:
        return self.client.exists(self._strip_protocol(path))

    def mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        self.client.mkdir(self._strip_protocol(path), parents=create_parents)

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        path = self._strip_protocol(path)
        if not exist_ok and self.client.exists(path):
            raise FileExistsError(path)
        self.client.mkdir(path, parents=True)

    def rmdir(self, path: str) -> None:
        self.client.rm(self._strip_protocol(path))

    def rm_file(self, path: str) -> None:
        self.client.rm(self._strip_protocol(path))

    def _rm(self, path: str) -> None:
        self.client.rm(self._strip_protocol(path))

    def rm(self, path: Any, recursive: bool = False, maxdepth: Optional[int] = None) -> None:
        paths = path if isinstance(path, (list, tuple)) else [path]
        for p in paths:
            p = self._strip_protocol(p)
            if maxdepth is None:
                self.client.rm(p, recursive=recursive)
            else:
                super().rm(p, recursive=recursive, maxdepth=maxdepth)

    def mv(self, path1: str, path2: str, recursive: bool = False, maxdepth: Any = None, **kwargs: Any) -> None:
        # A Cairn rename moves a whole subtree atomically.
        self.client.mv(self._strip_protocol(path1), self._strip_protocol(path2))

    def cp_file(self, path1: str, path2: str, **kwargs: Any) -> None:
        src, dst = self._strip_protocol(path1), self._strip_protocol(path2)
        with self.client.open(src, "rb") as fi, self.client.open(dst, "wb") as fo:
            while True:
                block = fi.read(8 << 20)
                if not block:
                    break
                fo.write(block)

    def cat_file(self, path: str, start: Optional[int] = None, end: Optional[int] = None, **kwargs: Any) -> bytes:
        path = self._strip_protocol(path)
        if start is None and end is None:
            return self.client.get(path)  # type: ignore[return-value]
        with self.client.open(path, "rb", buffer_size=1) as f:
            size = f.size
            s = 0 if start is None else (start if start >= 0 else max(0, size + start))
            e = size if end is None else (end if end >= 0 else max(0, size + end))
            if e <= s:
                return b""
            f.seek(s)
            return f.raw.read(e - s)

    def pipe_file(self, path: str, value: bytes, mode: str = "overwrite", **kwargs: Any) -> None:
        expected = 0 if mode == "create" else None
        self.client.put(self._strip_protocol(path), value, expected_version=expected)

    def put_file(self, lpath: str, rpath: str, callback: Any = None, mode: str = "overwrite", **kwargs: Any) -> None:
        if os.path.isdir(lpath):
            self.client.mkdir(self._strip_protocol(rpath), parents=True)
            return
        self.client.put(self._strip_protocol(rpath), os.fspath(lpath))

    def get_file(self, rpath: str, lpath: str, callback: Any = None, outfile: Any = None, **kwargs: Any) -> None:
        rpath = self._strip_protocol(rpath)
        if self.client.isdir(rpath):
            os.makedirs(lpath, exist_ok=True)
            return
        if outfile is not None:
            with self.client.open(rpath, "rb") as f:
                while True:
                    block = f.read(8 << 20)
                    if not block:
                        break
                    outfile.write(block)
            return
        self.client.download(rpath, lpath)

    def created(self, path: str) -> Any:
        import datetime

        st = self.client.stat(self._strip_protocol(path))
        return datetime.datetime.fromtimestamp(st.ctime_ms / 1000, tz=datetime.timezone.utc)

    def modified(self, path: str) -> Any:
        import datetime

        st = self.client.stat(self._strip_protocol(path))
        return datetime.datetime.fromtimestamp(st.mtime_ms / 1000, tz=datetime.timezone.utc)

    def ukey(self, path: str) -> str:
        st = self.client.stat(self._strip_protocol(path))
        return f"{st.inode}:{st.version}"

    def _open(
        self,
        path: str,
        mode: str = "rb",
        block_size: Any = None,
        autocommit: bool = True,
        cache_options: Optional[dict] = None,
        **kwargs: Any,
    ) -> "CairnFile":
        if not autocommit:
            raise NotImplementedError("cairn:// commits each file on close; transactions are not supported")
        return CairnFile(
            self,
            self._strip_protocol(path),
            mode=mode,
            block_size=block_size,
            cache_options=cache_options,
            **kwargs,
        )


class CairnFile(AbstractBufferedFile):
    """An fsspec file: ranged reads of one version, or a streaming write."""

    DEFAULT_BLOCK_SIZE = 4 * 2**20

    def __init__(self, fs: CairnFileSystem, path: str, mode: str = "rb", **kwargs: Any) -> None:
        self._reader = None
        self._writer = None
        if mode == "rb":
            # Pin the version now; its size spares fsspec a stat.
            self._reader = fs.client._native.open_reader(path, None)
            kwargs["size"] = self._reader.size
        kwargs.setdefault("cache_type", "readahead")
        super().__init__(fs, path, mode=mode, **kwargs)
        if mode in ("wb", "xb", "ab"):
            self._writer = fs.client._native.open_writer(path, mode[0], None)
            if mode == "ab":
                self.loc = 0

    @property
    def version(self) -> Optional[int]:
        return None if self._reader is None else self._reader.version

    def _fetch_range(self, start: int, end: int) -> bytes:
        assert self._reader is not None
        if end <= start:
            return b""
        return self._reader.read(start, end - start)

    def _initiate_upload(self) -> None:
        pass

    def _upload_chunk(self, final: bool = False) -> bool:
        assert self._writer is not None
        data = self.buffer.getvalue()
        if data:
            from . import _buf

            keep, arg = _buf.readable(data)
            self._writer.write(arg)
            del keep
        if final and self.autocommit:
            self.commit()
        return True

    def commit(self) -> None:
        if self._writer is not None:
            self._writer.close()

    def discard(self) -> None:
        if self._writer is not None:
            self._writer.abort()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None and self._writer is not None and not self.closed:
            self.discard()
            self.closed = True
            return
        self.close()

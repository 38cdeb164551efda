"""Durable, atomic file operations on a local folder or an fsspec URI (the build's OUT).

Local writes go to a unique ``name.tmp-{pid}-{random}`` file, are flushed and fsync'd, then renamed over the final
name and the folder fsync'd: a reader (or a re-run after SIGKILL) sees the old state or the new one, never half a
file. On object stores (gs://, s3://) an object appears only when its upload completes, so the same protocol holds
with ``fs.mv``.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import uuid
from collections.abc import Iterator
from typing import IO, Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

TMP_MARK = ".tmp-"


def join(root: str, *parts: str) -> str:
    """Join path parts under a local path or a URI (keeping ``scheme://``)."""
    if "://" in root:
        return "/".join([root.rstrip("/"), *parts])
    return os.path.join(root, *parts)


class Store:
    """File operations under one root (local or fsspec)."""

    def __init__(self, root: str):
        self.root = root
        self.fs, _ = fsspec.core.url_to_fs(root)
        self.local = isinstance(self.fs, LocalFileSystem)

    def path(self, *parts: str) -> str:
        return join(self.root, *parts)

    def _p(self, path: str) -> str:
        return path if self.local else self.fs._strip_protocol(path)

    def exists(self, path: str) -> bool:
        return os.path.exists(path) if self.local else self.fs.exists(self._p(path))

    def makedirs(self, path: str) -> None:
        if self.local:
            os.makedirs(path, exist_ok=True)
        else:
            self.fs.makedirs(self._p(path), exist_ok=True)

    def listdir(self, path: str) -> list[str]:
        """Base names in a folder (empty when it does not exist)."""
        if self.local:
            try:
                return sorted(os.listdir(path))
            except FileNotFoundError:
                return []
        if not self.fs.exists(self._p(path)):
            return []
        return sorted(posixpath.basename(p.rstrip("/")) for p in self.fs.ls(self._p(path), detail=False))

    def open_read(self, path: str) -> IO[bytes]:
        return open(path, "rb") if self.local else self.fs.open(self._p(path), "rb")

    def read_json(self, path: str) -> Any:
        with self.open_read(path) as handle:
            return json.load(handle)

    def remove(self, path: str) -> None:
        if self.local:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
        elif self.fs.exists(self._p(path)):
            self.fs.rm(self._p(path), recursive=True)

    def rmtree(self, path: str) -> None:
        if self.local:
            import shutil

            shutil.rmtree(path, ignore_errors=True)
        elif self.fs.exists(self._p(path)):
            self.fs.rm(self._p(path), recursive=True)

    def rename(self, src: str, dst: str) -> None:
        """Atomic replace (local, then the folder is fsync'd); ``fs.mv`` elsewhere."""
        if self.local:
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            os.replace(src, dst)
            _fsync_dir(os.path.dirname(dst))
        else:
            self.fs.mv(self._p(src), self._p(dst))

    @contextlib.contextmanager
    def atomic_writer(self, path: str) -> Iterator[IO[bytes]]:
        """Write ``path`` all-or-nothing: the body goes to a unique tmp file that is renamed only on success."""
        tmp = f"{path}{TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.makedirs(os.path.dirname(path) if self.local else posixpath.dirname(path))
        handle = open(tmp, "wb") if self.local else self.fs.open(self._p(tmp), "wb")
        try:
            yield handle
            if self.local:
                handle.flush()
                os.fsync(handle.fileno())
            handle.close()
            self.rename(tmp, path)
        except BaseException:
            handle.close()
            self.remove(tmp)
            raise

    def write_bytes(self, path: str, data: bytes) -> None:
        with self.atomic_writer(path) as handle:
            handle.write(data)

    def write_json(self, path: str, obj: Any) -> None:
        """Deterministic JSON (sorted keys), written atomically."""
        self.write_bytes(path, (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode("utf-8"))

    def remove_tmp_files(self, folder: str) -> int:
        """Delete leftovers of interrupted writes (``*.tmp-*``) in a folder; returns how many."""
        stale = [name for name in self.listdir(folder) if TMP_MARK in name]
        for name in stale:
            self.remove(join(folder, name))
        return len(stale)


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path or ".", os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

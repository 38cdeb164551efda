"""Files on a local disk or behind an fsspec URI (``gs://``, ``s3://``, ``memory://``): atomic writes, reads, listing,
removal and moves. Every job reads and writes its artifacts through this one layer.

Atomic writes (docs/architecture.md section 3): the body goes to a unique sibling ``{name}.tmp-{pid}-{random}``
(:data:`TMP_MARK`), is flushed and fsync'd, then renamed over the final name and the folder fsync'd, so a reader -- or
a re-run after SIGKILL -- sees the old file or the new one, never half of one. On object stores an object appears only
when its upload completes, so the same protocol holds with ``fs.mv``. Leftovers of interrupted writes keep the mark and
:meth:`Store.remove_tmp_files` deletes them.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import shutil
import uuid
from collections.abc import Iterator
from typing import IO, Any
from urllib.parse import urlsplit

TMP_MARK = ".tmp-"


def is_remote(path: str) -> bool:
    """True for ``scheme://`` URIs (http, s3, gs, memory, ...); False for local paths and ``file://``."""
    scheme = urlsplit(str(path)).scheme.lower()
    return len(scheme) > 1 and scheme != "file"


def join(root: str, *parts: str) -> str:
    """Join path parts under a local path or a URI (a URI keeps its ``scheme://`` and forward slashes)."""
    if is_remote(root):
        return "/".join([root.rstrip("/"), *parts])
    return os.path.join(root, *parts)


def parent(path: str) -> str:
    """The folder holding ``path`` (a URI keeps its scheme)."""
    return posixpath.dirname(path.rstrip("/")) if is_remote(path) else os.path.dirname(path)


class Store:
    """File operations on paths under one root: a local folder (``os`` calls, fsync) or an fsspec URI.

    Every method takes full paths (``store.path(...)`` builds them under the root); the root only picks the
    filesystem.
    """

    def __init__(self, root: str):
        import fsspec  # here, not at import: ``n2m --help`` and jobs on local paths never need fsspec
        from fsspec.implementations.local import LocalFileSystem

        self.root = str(root)
        self.fs, _ = fsspec.core.url_to_fs(self.root)
        self.local = isinstance(self.fs, LocalFileSystem)

    def path(self, *parts: str) -> str:
        return join(self.root, *parts)

    def _p(self, path: str) -> str:
        """The filesystem's own form of ``path`` (no scheme; a local ``file://`` path loses its prefix)."""
        return self.fs._strip_protocol(path) if (not self.local or str(path).startswith("file://")) else path

    # -- reading ------------------------------------------------------------------------------------------------------

    def exists(self, path: str) -> bool:
        return os.path.exists(self._p(path)) if self.local else self.fs.exists(self._p(path))

    def listdir(self, path: str) -> list[str]:
        """Sorted base names in a folder (empty when it does not exist)."""
        if self.local:
            try:
                return sorted(os.listdir(self._p(path)))
            except (FileNotFoundError, NotADirectoryError):
                return []
        if not self.fs.exists(self._p(path)):
            return []
        return sorted(posixpath.basename(p.rstrip("/")) for p in self.fs.ls(self._p(path), detail=False))

    def glob(self, pattern: str) -> list[str]:
        """Sorted paths matching a glob; URIs come back with their scheme."""
        found = self.fs.glob(self._p(pattern))
        return sorted(found if self.local else (self.fs.unstrip_protocol(p) for p in found))

    def open_read(self, path: str) -> IO[bytes]:
        return open(self._p(path), "rb") if self.local else self.fs.open(self._p(path), "rb")

    def read_bytes(self, path: str) -> bytes:
        with self.open_read(path) as handle:
            return handle.read()

    def read_json(self, path: str) -> Any:
        with self.open_read(path) as handle:
            return json.load(handle)

    def size(self, path: str) -> int:
        return os.path.getsize(self._p(path)) if self.local else int(self.fs.size(self._p(path)))

    # -- writing ------------------------------------------------------------------------------------------------------

    def makedirs(self, path: str) -> None:
        if self.local:
            os.makedirs(self._p(path), exist_ok=True)
        else:
            self.fs.makedirs(self._p(path), exist_ok=True)

    @contextlib.contextmanager
    def atomic_writer(self, path: str) -> Iterator[IO[bytes]]:
        """Write ``path`` all-or-nothing: the body goes to a unique tmp file that is renamed only on success."""
        tmp = f"{path}{TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.makedirs(parent(path))
        handle = open(self._p(tmp), "wb") if self.local else self.fs.open(self._p(tmp), "wb")
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

    def write_json(self, path: str, obj: Any, indent: int = 2) -> None:
        """Deterministic JSON (sorted keys; objects JSON lacks, such as paths, as their text), written atomically."""
        text = json.dumps(obj, indent=indent, sort_keys=True, default=str) + "\n"
        self.write_bytes(path, text.encode("utf-8"))

    # -- removing and moving ------------------------------------------------------------------------------------------

    def remove(self, path: str) -> None:
        """Delete a file (nothing when it is gone)."""
        if self.local:
            with contextlib.suppress(FileNotFoundError):
                os.remove(self._p(path))
        elif self.fs.exists(self._p(path)):
            self.fs.rm(self._p(path), recursive=True)

    def rmtree(self, path: str) -> None:
        """Delete a folder and everything in it (nothing when it is gone)."""
        if self.local:
            shutil.rmtree(self._p(path), ignore_errors=True)
        elif self.fs.exists(self._p(path)):
            self.fs.rm(self._p(path), recursive=True)

    def rename(self, src: str, dst: str) -> None:
        """Atomic replace of a file (local, then the folder is fsync'd); ``fs.mv`` elsewhere."""
        if self.local:
            os.makedirs(os.path.dirname(self._p(dst)), exist_ok=True)
            os.replace(self._p(src), self._p(dst))
            _fsync_dir(os.path.dirname(self._p(dst)))
        else:
            self.fs.mv(self._p(src), self._p(dst))

    def move_dir(self, src: str, dst: str) -> None:
        """Rename a folder: one ``rename`` on a local disk, a copy-and-delete of its files on object stores."""
        if self.local:
            os.replace(self._p(src), self._p(dst))
            _fsync_dir(os.path.dirname(self._p(dst)))
        else:
            self.fs.mv(self._p(src), self._p(dst), recursive=True)

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


# ---------------------------------------------------------------------------------------------------------------------
# One-path helpers (each resolves the filesystem of the path it is given)


def exists(path: str) -> bool:
    return Store(path).exists(path)


def read_bytes(path: str) -> bytes:
    return Store(path).read_bytes(path)


def read_json(path: str) -> Any:
    return Store(path).read_json(path)


def glob(pattern: str) -> list[str]:
    """Sorted matches of a glob (URIs keep their scheme)."""
    return Store(pattern).glob(pattern)


def write_bytes_atomic(path: str, data: bytes) -> None:
    """Write ``data`` so that readers see the old file or the new one, never a partial one (see the module docstring)."""
    Store(path).write_bytes(path, data)


def write_json(path: str, obj: Any, indent: int = 2) -> None:
    """Write JSON atomically (sorted keys, ``indent``) to a local path or an fsspec URI."""
    Store(path).write_json(path, obj, indent)

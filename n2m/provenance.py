"""What every artifact records about itself: package versions, content hashes, time, and atomic JSON writes."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import uuid
from importlib import metadata
from pathlib import Path
from typing import Any

_PACKAGES = ("n2m", "numpy", "torch", "apache-beam", "pyarrow", "webdataset", "transformers", "lightning", "soundfile",
             "soxr", "librosa")


def versions(extra: tuple[str, ...] = ()) -> dict[str, str]:
    """Installed versions of the packages that shape n2m's outputs (``"missing"`` when not installed)."""
    out = {"python": platform.python_version()}
    for name in (*_PACKAGES, *extra):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "missing"
    return out


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def sha1_bytes(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def file_hash(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-1 of a file's content."""
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def dir_hash(path: str | os.PathLike) -> str:
    """SHA-1 over the relative names and contents of every file under a directory (a model's identity)."""
    root = Path(path)
    if root.is_file():
        return file_hash(root)
    digest = hashlib.sha1()
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(root)).encode())
        digest.update(file_hash(file).encode())
    return digest.hexdigest()


def write_bytes_atomic(path: str, data: bytes) -> None:
    """Write ``data`` so that readers see the old file or the new one, never a partial one: local paths by tmp + fsync
    + rename, fsspec URIs in one upload (object stores publish an object only when its upload completes)."""
    if "://" in str(path):
        import fsspec

        with fsspec.open(str(path), "wb") as handle:
            handle.write(data)
        return
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, target)


def write_json(path: str, obj: Any) -> None:
    """Write JSON atomically (tmp + rename) to a local path or an fsspec URI."""
    text = json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n"
    if "://" in str(path):
        import fsspec

        with fsspec.open(str(path), "w") as handle:
            handle.write(text)
        return
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, target)


def read_json(path: str) -> Any:
    if "://" in str(path):
        import fsspec

        with fsspec.open(str(path), "r") as handle:
            return json.load(handle)
    return json.loads(Path(path).read_text())

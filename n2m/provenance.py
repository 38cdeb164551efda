"""What every artifact records about itself: package versions, content hashes and time. (The atomic writers and JSON
readers are :mod:`n2m.storage`'s.)
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import BinaryIO

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


def stream_hash(handle: BinaryIO, algorithm: str = "sha1", chunk: int = 1 << 20) -> str:
    """Hex digest of what an open binary stream holds from its position on, read in ``chunk``-byte blocks."""
    digest = hashlib.new(algorithm)
    while block := handle.read(chunk):
        digest.update(block)
    return digest.hexdigest()


def file_hash(path: str | os.PathLike, algorithm: str = "sha1") -> str:
    """Hex digest of a local file's content. ``algorithm`` is a :func:`hashlib.new` name: SHA-1 for n2m's own content
    ids, ``"sha256"`` where a pin or a record asks for it (model wheels, the files of a fetched model, the audio prompts
    a sample's sidecar names)."""
    with open(path, "rb") as handle:
        return stream_hash(handle, algorithm)


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

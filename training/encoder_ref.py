"""Where a model's frozen text encoder lives: recorded by content, found again from any folder.

Training records the encoder as ``KIND:/absolute/dir`` plus the SHA-1 of the directory's content
(:func:`n2m.provenance.dir_hash`) in the run's config and lineage (docs/architecture.md section 3: every consumer records a
model's content hash, never a working-directory-relative path). Loading resolves the record in this order:

1. the recorded directory, when it exists and holds the recorded content (a relative path, as older runs stored it,
   is taken from the working directory);
2. else a directory with the recorded content and the same folder name found near the model: under each folder
   that contains the model file (its parent, grandparent, ...), under the working directory and in the folder
   ``n2m models fetch`` fills (:func:`n2m.models.models_dir`), so a project folder that was moved or copied elsewhere,
   or a fetched model installed on another machine, still works;
3. else a one-line error that names the encoder and its hash and says to pass ``--text-encoder``.

A directory that exists but holds other content is never used silently: the model was trained on the token states of
the recorded encoder, so another one gives meaningless conditioning. Without a recorded hash (runs made before the
hash was recorded) the recorded path is used as it is.
"""

from __future__ import annotations

import logging
from pathlib import Path

from n2m.errors import UserError
from n2m.provenance import dir_hash
from n2m.training.text import parse_spec

log = logging.getLogger(__name__)

SEARCH_LEVELS = 6  # how many folders above the model file are searched
_HASHES: dict[tuple, str] = {}  # (resolved dir, (name, size, mtime_ns) of every file) -> content hash


def split_spec(spec: str) -> tuple[str, str]:
    """``"KIND:DIR"`` -> ``(kind, dir)`` without checking that the directory exists."""
    kind, sep, path = spec.partition(":")
    if not sep or not kind or not path:
        raise UserError(f"text encoder spec must be KIND:DIR, got {spec!r}")
    return kind, path


def content_hash(path: str | Path) -> str:
    """SHA-1 of a model directory's content; computed again only when a file's name, size or mtime changed."""
    root = Path(path).resolve()
    files = sorted((str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns)
                   for p in root.rglob("*") if p.is_file())
    key = (str(root), tuple(files))
    if key not in _HASHES:
        _HASHES[key] = dir_hash(root)
    return _HASHES[key]


def absolute(spec: str) -> str:
    """``KIND:DIR`` with ``DIR`` made absolute (the directory must exist and hold a config.json)."""
    kind, path = parse_spec(spec)
    return f"{kind}:{Path(path).resolve()}"


def record(spec: str) -> dict[str, str]:
    """What a run records about its encoder: ``text_encoder`` (``KIND:/absolute/dir``) and ``text_encoder_sha1``."""
    spec = absolute(spec)
    return {"text_encoder": spec, "text_encoder_sha1": content_hash(split_spec(spec)[1])}


def _holds(path: Path, sha1: str) -> bool:
    return (path / "config.json").is_file() and content_hash(path) == sha1


def _candidates(name: str, near: Path | None) -> list[Path]:
    from n2m.models import models_dir

    roots = [Path.cwd(), models_dir()]
    if near is not None:
        roots = [*list(near.resolve().parents)[:SEARCH_LEVELS], *roots]
    seen, out = set(), []
    for root in roots:
        candidate = (root / name).resolve()
        if candidate not in seen and candidate.is_dir():
            seen.add(candidate)
            out.append(candidate)
    return out


def resolve(spec: str, sha1: str | None, near: str | Path | None = None, what: str = "text encoder",
            hint: str | None = None) -> str:
    """A loadable ``KIND:DIR`` for the recorded encoder ``spec`` with content ``sha1`` (rules in the module docstring);
    ``near`` is the model's file or directory. ``what`` and ``hint`` word the error (another recorded model, e.g. the
    joint model of :mod:`n2m.training.conditioning`, is found by the same rules)."""
    kind, path = split_spec(spec)
    recorded = Path(path)
    if not sha1:
        return spec
    if (recorded / "config.json").is_file():
        if content_hash(recorded) == sha1:
            return f"{kind}:{recorded.resolve()}"
        changed = f"{recorded} holds other content than the {what} the model was trained with"
    else:
        changed = f"{recorded} does not exist"
    for candidate in _candidates(recorded.name, Path(near) if near is not None else None):
        if _holds(candidate, sha1):
            log.info("%s %s found by its content hash at %s", what, spec, candidate)
            return f"{kind}:{candidate}"
    raise UserError(f"{what} {spec} (sha1 {sha1[:12]}) not found: {changed}, and no folder named "
                    f"{recorded.name!r} near the model holds it; {hint or f'pass --text-encoder {kind}:DIR'}")

"""Short-form aspect vocabulary: the built-in curated list (``data/aspects.tsv``) plus the user's own lists.

Noise2Music (arXiv 2302.03917, section 3.2) used 23,906 short aspect tags written by raters (Rater-SF, from MusicCaps).
n2m ships a smaller curated list of descriptors, each with its aspect category, and reads extra lists with ``--extra``:

- ``.txt`` / ``.tsv``: one descriptor per line, optionally ``text<TAB>aspect`` (a ``text aspect`` header is skipped);
- ``.csv``: a ``text`` column (and optional ``aspect``), or MusicCaps' ``aspect_list`` column of Python-style lists;
- ``.jsonl``: objects with ``text`` and optional ``aspect``.

Entries without a category get ``extra`` (``musiccaps`` for ``aspect_list``). ``--only-aspects`` / ``--skip-aspects``
keep or leave out whole categories before duplicates are removed, so that one aspect can become its own vocabulary: the
label job takes its top-K per vocabulary, as Noise2Music did per caption set, and an aspect whose words score below the
others' (moods against genres and instruments) then still gets captions. Duplicates are removed by the near-duplicate
key of :func:`n2m.labeling.vocab.clean.near_key` (the first occurrence wins, built-in first). The ``n2m vocab aspects``
job is :func:`run_aspects` of :class:`AspectsSettings` (the command line: :mod:`n2m.labeling.vocab.cli`).
"""

from __future__ import annotations

import ast
import csv
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from n2m.config import require, resolved
from n2m.errors import UserError
from n2m.labeling.vocab.clean import near_key
from n2m.provenance import file_hash, now_iso, sha1_bytes, versions
from n2m.schema import text_id

CATEGORIES = ("genre", "subgenre", "mood", "instrument", "vocal", "tempo", "rhythm", "era", "production", "harmony",
              "performance", "usage")


def _tsv_lines(text: str) -> list[tuple[str, str] | None]:
    out: list[tuple[str, str] | None] = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        cells = [c.strip() for c in line.split("\t")]
        if [c.lower() for c in cells[:2]] == ["text", "aspect"]:
            continue
        if len(cells) > 2 or not cells[0]:
            out.append(None)
            continue
        out.append((cells[0], cells[1] if len(cells) == 2 and cells[1] else "extra"))
    return out


def _builtin_text() -> str:
    return resources.files("n2m.labeling.vocab.data").joinpath("aspects.tsv").read_text(encoding="utf-8")


def builtin_aspects() -> list[tuple[str, str]]:
    """The curated list as ``(text, aspect)`` pairs, in file order."""
    return [entry for entry in _tsv_lines(_builtin_text()) if entry is not None]


def _csv_entries(path: Path) -> list[tuple[str, str] | None]:
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        columns = set(reader.fieldnames or [])
        if "aspect_list" in columns:
            out: list[tuple[str, str] | None] = []
            for row in reader:
                try:
                    items = ast.literal_eval(row["aspect_list"] or "[]")
                except (ValueError, SyntaxError):
                    out.append(None)
                    continue
                out.extend((str(i).strip(), "musiccaps") if str(i).strip() else None for i in items)
            return out
        if "text" not in columns:
            raise UserError(f"--extra {path}: a CSV needs a 'text' or an 'aspect_list' column")
        return [(row["text"].strip(), (row.get("aspect") or "extra").strip()) if (row["text"] or "").strip() else None
                for row in reader]


def _jsonl_entries(path: Path) -> list[tuple[str, str] | None]:
    out: list[tuple[str, str] | None] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            out.append((str(row["text"]).strip(), str(row.get("aspect") or "extra")) if str(row["text"]).strip() else None)
        except (json.JSONDecodeError, KeyError, TypeError):
            out.append(None)
    return out


_EXTRA_READERS = {
    ".txt": lambda p: _tsv_lines(p.read_text(encoding="utf-8")),
    ".tsv": lambda p: _tsv_lines(p.read_text(encoding="utf-8")),
    ".csv": _csv_entries,
    ".jsonl": _jsonl_entries,
}


def read_extra(path: str) -> list[tuple[str, str] | None]:
    """The entries of one ``--extra`` file (``None`` for an unreadable line)."""
    source = Path(path)
    if not source.is_file():
        raise UserError(f"--extra {path}: no such file")
    reader = _EXTRA_READERS.get(source.suffix.lower())
    if reader is None:
        raise UserError(f"--extra {path}: unknown list type {source.suffix!r} (use {', '.join(_EXTRA_READERS)})")
    try:
        return reader(source)
    except (UnicodeDecodeError, csv.Error) as err:
        raise UserError(f"--extra {path}: cannot read it: {err}") from err


@dataclass
class AspectSet:
    """Deduplicated short-form rows (``VOCAB_SCHEMA`` order) and what was dropped, per source."""

    rows: list[dict[str, str]] = field(default_factory=list)
    sources: list[dict[str, object]] = field(default_factory=list)
    duplicates: int = 0
    keep: Callable[[str], bool] = lambda aspect: True
    seen_aspects: set[str] = field(default_factory=set)
    _seen: set[str] = field(default_factory=set)

    def add(self, entries: list[tuple[str, str] | None], backend: str, model: str, sha1: str) -> None:
        stats = Counter({"read": len(entries), "kept": 0, "duplicate": 0, "bad_line": 0, "other_aspect": 0})
        for entry in entries:
            if entry is None:
                stats["bad_line"] += 1
                continue
            text, aspect = " ".join(entry[0].split()), entry[1].strip().lower() or "extra"
            key = near_key(text)
            if not key:
                stats["bad_line"] += 1
                continue
            self.seen_aspects.add(aspect)
            if not self.keep(aspect):
                stats["other_aspect"] += 1
                continue
            if key in self._seen:
                stats["duplicate"] += 1
                self.duplicates += 1
                continue
            self._seen.add(key)
            stats["kept"] += 1
            self.rows.append({"id": text_id(text), "text": text, "kind": "short", "aspect": aspect, "track_id": "",
                              "backend": backend, "model": model, "prompt_id": ""})
        self.sources.append({"source": model, "sha1": sha1, **stats})


def build_aspects(extra: list[str], *, builtin: bool = True, only: list[str] | None = None,
                  skip: list[str] | None = None) -> AspectSet:
    """The built-in list (unless ``builtin=False``) followed by each ``--extra`` file, deduplicated; with ``only``, the
    entries of those aspects alone, with ``skip``, all but those. A named aspect no entry has is a one-line error."""
    if only and skip:
        raise UserError("--only-aspects and --skip-aspects exclude each other: give one")
    chosen = set(only or skip or ())
    out = AspectSet(keep=(lambda aspect: aspect in chosen) if only else (lambda aspect: aspect not in chosen))
    if builtin:
        out.add(list(builtin_aspects()), "builtin", "labeling/vocab/data/aspects.tsv", sha1_bytes(_builtin_text().encode()))
    for path in extra:
        out.add(read_extra(path), "file", str(path), file_hash(path))
    unknown = sorted(chosen - out.seen_aspects)
    if unknown:
        flag = "--only-aspects" if only else "--skip-aspects"
        raise UserError(f"{flag}: no entry has the aspect {', '.join(unknown)} (the entries' aspects: "
                        f"{', '.join(sorted(out.seen_aspects))})")
    if not out.rows:
        raise UserError("the aspect vocabulary is empty (--no-builtin, --skip-aspects or --only-aspects left no "
                        "usable entries)")
    return out


# ---------------------------------------------------------------------------------------------------------------------
# The job


@dataclass(frozen=True, kw_only=True)
class AspectsSettings:
    """What ``n2m vocab aspects`` writes: ``out`` (required), the vocabulary table; ``extra``, the user's lists;
    ``no_builtin`` leaves the built-in list out; ``only_aspects`` / ``skip_aspects`` (comma-separated names) keep or drop
    whole categories."""

    out: str | None = None
    extra: list[str] | None = None
    no_builtin: bool = False
    only_aspects: str | None = None
    skip_aspects: str | None = None

    def __post_init__(self) -> None:
        require(self, "out")


def _name_list(names: str | None) -> list[str] | None:
    """``"mood,genre"`` (as :func:`n2m.labeling.vocab.cli.aspect_names` wrote it) -> ``["mood", "genre"]``; None stays."""
    return names.split(",") if names else None


def run_aspects(settings: AspectsSettings) -> int:
    """Write the short-form vocabulary (built-in list plus ``extra``) and its summary; print the summary."""
    from n2m.labeling.vocab.io import check_out, write_vocab
    from n2m.labeling.vocab.show import summary_lines

    started = time.monotonic()
    out = check_out(settings.out)
    aspects = build_aspects(settings.extra or [], builtin=not settings.no_builtin,
                            only=_name_list(settings.only_aspects), skip=_name_list(settings.skip_aspects))
    summary = {
        "name": out.stem, "kind": "short", "created": now_iso(), "backend": "aspects", "model": "",
        "sources": aspects.sources,
        "counts": {"entries": len(aspects.rows), "duplicates_removed": aspects.duplicates},
        "aspects": dict(sorted({a: sum(r["aspect"] == a for r in aspects.rows)
                                for a in {r["aspect"] for r in aspects.rows}}.items())),
        "config": resolved(settings), "versions": versions(),
        "timings_s": {"total": round(time.monotonic() - started, 3)},
    }
    written = write_vocab(out, aspects.rows, summary)
    print("\n".join(summary_lines(written, path=str(out))))
    return 0

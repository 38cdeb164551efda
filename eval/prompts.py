"""``n2m eval prompts``: an evaluation set from a track manifest (e.g. n2m synth's ``manifest.jsonl``; any format
:mod:`n2m.manifest` reads).

Writes the inputs the other eval jobs pair by id: ``--out`` JSON lines ``{"id", "text"}`` (what ``n2m sample
--prompts-file``, ``n2m eval clap-score --prompts`` and ``n2m eval musiccaps --captions`` read) and, optionally,
``--reference-list`` (one audio path a line, what ``n2m eval fad --reference`` and ``clap-score --reference`` read). A track's id is its audio file's stem, the name
``n2m sample`` gives the clip it generates for that prompt, so generated and reference audio pair by file stem.
``--holdout-only`` keeps the rows marked ``"holdout": true`` (tracks the models were kept away from).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from n2m.errors import UserError
from n2m.manifest import is_holdout, read_rows
from n2m.names import check_name
from n2m.storage import write_bytes_atomic


def evaluation_set(rows: list[dict], root: Path, caption_column: str, holdout_only: bool) -> list[tuple[str, str, str]]:
    """``(id, text, audio path)`` per kept row; relative paths are taken from the manifest's folder."""
    out, seen = [], {}
    for row in rows:
        if holdout_only and not is_holdout(row):
            continue
        path, text = row.get("path"), str(row.get(caption_column) or "").strip()
        if not path or not text:
            raise UserError(f"manifest row {row.get('track_id', '?')} lacks 'path' or '{caption_column}'")
        audio = Path(path) if Path(path).is_absolute() else root / path
        ident = check_name(audio.stem, f"prompt id (file stem of {audio})")
        if ident in seen:
            raise UserError(f"two tracks share the file stem {ident!r} ({seen[ident]}, {audio}): ids must be unique")
        seen[ident] = audio
        out.append((ident, text, str(audio)))
    return out


@dataclass(frozen=True, kw_only=True)
class PromptsSettings:
    """``n2m eval prompts``: the track ``manifest``, the prompts file to write (``out``), the optional
    ``reference_list`` to write, the ``caption_column``, ``holdout_only``."""

    manifest: str
    out: str
    reference_list: str | None = None
    caption_column: str = "caption"
    holdout_only: bool = False


def run_prompts(settings: PromptsSettings) -> int:
    """Write the prompts file (and the reference list) of the manifest's tracks that have their audio."""
    manifest = Path(settings.manifest)
    items = evaluation_set(read_rows(manifest), manifest.parent, settings.caption_column, settings.holdout_only)
    if not items:
        raise UserError(f"no tracks selected from {manifest}"
                        + (" (none is marked holdout)" if settings.holdout_only else ""))
    missing = [path for _, _, path in items if not Path(path).is_file()]
    if missing:
        raise UserError(f"{len(missing)} reference file(s) missing, e.g. {missing[0]}")
    write_bytes_atomic(settings.out, "".join(json.dumps({"id": i, "text": t}) + "\n" for i, t, _ in items).encode())
    print(f"n2m eval prompts: {len(items)} prompts -> {settings.out}")
    if settings.reference_list:
        write_bytes_atomic(settings.reference_list, "".join(f"{Path(p).resolve()}\n" for _, _, p in items).encode())
        print(f"  reference audio list -> {settings.reference_list}")
    return 0

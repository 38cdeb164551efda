"""``n2m eval prompts``: an evaluation set from a track manifest (e.g. n2m synth's ``manifest.jsonl``; any format
:mod:`n2m.manifest` reads).

Writes the inputs the other eval jobs pair by id: ``--out`` JSON lines ``{"id", "text"}`` (what ``n2m sample
--prompts-file``, ``n2m eval clap-score --prompts`` and ``n2m eval musiccaps --captions`` read) and, optionally,
``--reference-list`` (one audio path a line, what ``n2m eval fad --reference`` and ``clap-score --reference`` read). A track's id is its audio file's stem, the name
``n2m sample`` gives the clip it generates for that prompt, so generated and reference audio pair by file stem.
``--holdout-only`` keeps the rows marked ``"holdout": true`` (tracks the models were kept away from).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from n2m.config import leaf
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


def run(args: argparse.Namespace) -> int:
    manifest = Path(args.manifest)
    items = evaluation_set(read_rows(manifest), manifest.parent, args.caption_column, args.holdout_only)
    if not items:
        raise UserError(f"no tracks selected from {manifest}" + (" (none is marked holdout)" if args.holdout_only else ""))
    missing = [path for _, _, path in items if not Path(path).is_file()]
    if missing:
        raise UserError(f"{len(missing)} reference file(s) missing, e.g. {missing[0]}")
    write_bytes_atomic(args.out, "".join(json.dumps({"id": i, "text": t}) + "\n" for i, t, _ in items).encode())
    print(f"n2m eval prompts: {len(items)} prompts -> {args.out}")
    if args.reference_list:
        write_bytes_atomic(args.reference_list, "".join(f"{Path(p).resolve()}\n" for _, _, p in items).encode())
        print(f"  reference audio list -> {args.reference_list}")
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--manifest", required=True, help="track manifest (JSON lines, CSV/TSV or Parquet) with 'path' and "
                                                     "a caption column (n2m synth's manifest.jsonl)")
    p.add_argument("--out", required=True, help="prompts file to write: JSON lines with 'id' (audio file stem) and 'text'")
    p.add_argument("--reference-list", help="also write the kept tracks' audio paths, one a line, to this text file")
    p.add_argument("--caption-column", default="caption", help="column holding the prompt text (default %(default)s)")
    p.add_argument("--holdout-only", action="store_true", help="keep only rows marked \"holdout\": true")
    leaf(p, run)

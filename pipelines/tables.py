"""The build's tables, assembled from the committed shards' markers: index.parquet, sources.parquet, build.json.

Markers are read one at a time (split order, then shard index) and their rows streamed into Parquet writers, so the
tables cost no more memory than one shard's rows. A source retried by ``--retry-failed`` appears in several shards;
only its latest attempt (the highest shard index of its split) is kept.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from n2m.layout import BuildLayout, committed_shards
from n2m.schema import INDEX_SCHEMA, SOURCE_STATUSES, SOURCES_SCHEMA
from n2m.storage import Store

ROW_GROUP = 65536  # rows buffered before a Parquet row group is written


@dataclass
class Totals:
    """Counts over the whole build (every committed shard)."""

    sources: int = 0
    by_status: Counter = field(default_factory=Counter)
    by_reason: Counter = field(default_factory=Counter)  # "status/reason"
    clips_by_split: Counter = field(default_factory=Counter)
    shards_by_split: Counter = field(default_factory=Counter)
    silent_clips: int = 0
    padded_clips: int = 0
    seconds_in: float = 0.0  # decoded audio of every source that decoded
    seconds_out: float = 0.0  # audio in the shards, padding included
    seconds_out_content: float = 0.0  # the same without padding

    def to_json(self) -> dict[str, Any]:
        return {
            "sources": self.sources,
            "by_status": {s: self.by_status.get(s, 0) for s in SOURCE_STATUSES},
            "by_reason": dict(sorted(self.by_reason.items())),
            "clips": sum(self.clips_by_split.values()),
            "clips_by_split": dict(sorted(self.clips_by_split.items())),
            "shards_by_split": dict(sorted(self.shards_by_split.items())),
            "silent_clips_filtered": self.silent_clips,
            "padded_clips": self.padded_clips,
            "hours_in": self.seconds_in / 3600.0,
            "hours_out": self.seconds_out / 3600.0,
            "hours_out_content": self.seconds_out_content / 3600.0,
        }


def iter_markers(out: str) -> Iterator[dict[str, Any]]:
    """The markers of the committed shards (:func:`n2m.layout.committed_shards`), one at a time, in their order."""
    store = Store(out)
    for shard in committed_shards(out):
        yield store.read_json(shard.marker)


def _latest_attempts(out: str) -> dict[str, int]:
    """source id -> shard index of its latest attempt, for sources that were retried."""
    latest: dict[str, int] = {}
    for marker in iter_markers(out):
        if marker.get("retry"):
            for row in marker["sources"]:
                latest[row["source_id"]] = max(latest.get(row["source_id"], -1), marker["index"])
    return latest


def iter_current(out: str) -> Iterator[tuple[dict[str, Any], list[dict], list[dict]]]:
    """``(marker, source rows, clip rows)`` per committed shard, without rows superseded by a later retry."""
    latest = _latest_attempts(out)
    for marker in iter_markers(out):
        index = marker["index"]
        rows = [r for r in marker["sources"] if latest.get(r["source_id"], index) == index]
        clip_rows = [c for c in marker["clips"] if latest.get(c["source_id"], index) == index]
        yield marker, rows, clip_rows


def write_tables(out: str, clip_s: float, notes: Mapping[str, str] | None = None) -> Totals:
    """Write index.parquet and sources.parquet from the markers (atomically); return the totals.

    ``clip_s``: the build's clip length (every stored clip has it, padding included). ``notes``: source id -> a note
    the listing made after the source's shard was planned (a repeat with other captions), appended to its message.
    """
    notes = notes or {}
    store, layout = Store(out), BuildLayout(out)
    totals = Totals()
    index_rows: list[dict] = []
    source_rows: list[dict] = []
    with (
        store.atomic_writer(layout.index) as index_handle,
        store.atomic_writer(layout.sources) as sources_handle,
        pq.ParquetWriter(index_handle, INDEX_SCHEMA) as index_writer,
        pq.ParquetWriter(sources_handle, SOURCES_SCHEMA) as sources_writer,
    ):
        for marker, rows, clip_rows in iter_current(out):
            totals.shards_by_split[marker["split"]] += 1
            for row in rows:
                totals.sources += 1
                totals.by_status[row["status"]] += 1
                if row["reason"]:
                    totals.by_reason[f"{row['status']}/{row['reason']}"] += 1
                totals.silent_clips += row.get("silent_clips", 0)
                if row["status"] != "failed":
                    totals.seconds_in += row["duration_s"]
            for clip in clip_rows:
                totals.clips_by_split[clip["split"]] += 1
                totals.padded_clips += bool(clip["padded"])
                totals.seconds_out_content += clip["duration_s"]
            totals.seconds_out += clip_s * len(clip_rows)
            index_rows += clip_rows
            source_rows += [_with_note({k: r.get(k) for k in SOURCES_SCHEMA.names}, notes) for r in rows]
            if len(index_rows) + len(source_rows) >= ROW_GROUP:
                _flush(index_writer, index_rows, INDEX_SCHEMA)
                _flush(sources_writer, source_rows, SOURCES_SCHEMA)
        _flush(index_writer, index_rows, INDEX_SCHEMA)
        _flush(sources_writer, source_rows, SOURCES_SCHEMA)
    return totals


def _with_note(row: dict[str, Any], notes: Mapping[str, str]) -> dict[str, Any]:
    note = notes.get(row["source_id"])
    if note:
        row["message"] = "; ".join(p for p in (row["message"], note) if p)
    return row


def _flush(writer: pq.ParquetWriter, rows: list[dict], schema: pa.Schema) -> None:
    """Write buffered rows as one row group (also when empty, so the file always has its schema) and clear them."""
    writer.write_table(pa.Table.from_pylist(rows, schema=schema))
    rows.clear()


def format_summary(build: dict[str, Any]) -> str:
    """The table printed at the end of ``n2m build`` (from build.json's content)."""
    counts, run = build["counts"], build["run"]
    shards = sum(counts["shards_by_split"].values())
    lines = [f"n2m build {build['build_id']}: {counts['sources']} sources -> {counts['clips']} clips in {shards} shards",
             f"  {'status':<10} {'sources':>8}  reasons"]
    for status in SOURCE_STATUSES:
        reasons = ", ".join(f"{key.split('/', 1)[1]} {n}" for key, n in counts["by_reason"].items()
                            if key.startswith(status + "/"))
        lines.append(f"  {status:<10} {counts['by_status'][status]:>8}  {reasons}")
    per_split = ", ".join(f"{split} {n}" for split, n in counts["clips_by_split"].items()) or "none"
    lines.append(f"  clips by split: {per_split}; {counts['silent_clips_filtered']} silent clips filtered, "
                 f"{counts['padded_clips']} padded")
    lines.append(f"  audio: {counts['hours_in']:.3f} h in, {counts['hours_out']:.3f} h out")
    speed = f", {run['x_realtime_per_core']:g}x realtime per core" if run.get("x_realtime_per_core") else ""
    lines.append(f"  this run ({run['mode']}): {run['shards_processed']} shards built, "
                 f"{run['shards_already_committed']} already committed, {run['wall_s']:.1f} s on "
                 f"{run['workers'] or 'runner-managed'} workers{speed}")
    return "\n".join(lines)

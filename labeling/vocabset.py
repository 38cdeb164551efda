"""The vocabularies a label set scores against: ``VOCAB_SCHEMA`` Parquet files, one kind (long | short) each.

A file holding both kinds becomes two vocabularies, ``{stem}-long`` and ``{stem}-short``. Entries keep file order; the
``index`` of an entry is its row among the usable entries of its kind. Unusable entries are left out and counted by
reason (:data:`DROP_REASONS`): no text (null), blank or white-space-only text, no id, or an id seen before in the same
kind (the first one is kept). Texts and ids are held as Arrow arrays (compact, no
Python string per entry), so millions of entries fit in a worker.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from n2m.errors import UserError
from n2m.provenance import file_hash

KINDS = ("long", "short")
REQUIRED = ("id", "text", "kind")


DROP_REASONS = {
    "null_text": "the entry has no text (null)",
    "blank_text": "the text is empty or white space only",
    "null_id": "the entry has no id (null)",
    "duplicate_id": "an earlier entry of the same kind has the same id",
}


def usable_entries(table: pa.Table) -> tuple[pa.Table, dict[str, int]]:
    """The rows of ``table`` (``id``, ``text``, ... of one kind) that can be scored, in order, and the number left out
    per reason of :data:`DROP_REASONS` (a row counts under its first reason)."""
    text, ids = table["text"], table["id"]
    null_text = pc.is_null(text)
    blank = pc.and_(pc.invert(null_text), pc.equal(pc.utf8_trim_whitespace(pc.fill_null(text, "")), ""))
    null_id = pc.and_(pc.invert(pc.or_(null_text, blank)), pc.is_null(ids))
    ok = pc.invert(pc.or_(pc.or_(null_text, blank), pc.is_null(ids)))
    rows = pa.table({"id": ids, "row": pa.array(range(table.num_rows), pa.int64())}).filter(ok)
    first = rows.group_by("id", use_threads=False).aggregate([("row", "min")])["row_min"]
    keep = pc.is_in(pa.array(range(table.num_rows), pa.int64()), value_set=first)
    counts = {"null_text": pc.sum(null_text).as_py() or 0, "blank_text": pc.sum(blank).as_py() or 0,
              "null_id": pc.sum(null_id).as_py() or 0,
              "duplicate_id": rows.num_rows - len(first)}
    return table.filter(keep), {reason: n for reason, n in counts.items() if n}


@dataclass(frozen=True)
class Vocabulary:
    """One scored vocabulary: where it comes from (``path``, ``sha1``), its ``kind``, its usable size, and how many
    entries were left out per reason (``dropped``, pairs of :data:`DROP_REASONS` keys and counts)."""

    name: str
    path: str
    sha1: str
    kind: str
    size: int
    dropped: tuple[tuple[str, int], ...] = ()

    @property
    def cache_id(self) -> str:
        """Identity of its entries (file content + kind), used to name text embedding caches."""
        return f"{self.sha1[:16]}-{self.kind}"

    def table(self, columns: tuple[str, ...] = ("id", "text")) -> pa.Table:
        """The usable entries of this kind, in file order."""
        return entries_of(self.path, self.kind, columns)

    def to_json(self) -> dict:
        return {"name": self.name, "path": str(Path(self.path).resolve()), "sha1": self.sha1, "kind": self.kind,
                "entries": self.size, "dropped": dict(self.dropped)}


def entries_of(path: str, kind: str, columns: tuple[str, ...] = ("id", "text")) -> pa.Table:
    """The usable entries of one kind of a vocabulary file, in file order (row ``i`` is entry index ``i``)."""
    table = pq.read_table(path, columns=[*dict.fromkeys((*columns, "id", "text", "kind"))])
    table, _ = usable_entries(table.filter(pc.equal(table["kind"], kind)))
    return table.select(list(columns))


def open_vocabularies(paths: list[str]) -> list[Vocabulary]:
    """Validate and describe the ``--vocab`` files (one-line errors for missing files, bad schemas, columns that are
    not text, empty files)."""
    out: list[Vocabulary] = []
    for path in paths:
        if not Path(path).is_file():
            raise UserError(f"--vocab {path}: no such file")
        try:
            schema = pq.read_schema(path)
        except (pa.ArrowInvalid, OSError) as err:
            raise UserError(f"--vocab {path}: not a Parquet file ({err})") from err
        missing = [c for c in REQUIRED if c not in schema.names]
        if missing:
            raise UserError(f"--vocab {path}: missing column(s) {', '.join(missing)} (see n2m.schema.VOCAB_SCHEMA)")
        for column in REQUIRED:
            kind_of = schema.field(column).type
            values = kind_of.value_type if pa.types.is_dictionary(kind_of) else kind_of  # pandas' category dtype
            if not (pa.types.is_string(values) or pa.types.is_large_string(values)):
                raise UserError(f"--vocab {path}: column {column!r} holds {kind_of}, not text "
                                "(see n2m.schema.VOCAB_SCHEMA)")
        kinds = pq.read_table(path, columns=["kind"])["kind"].value_counts().to_pylist()
        counts = {item["values"]: item["counts"] for item in kinds}
        unknown = sorted(set(counts) - set(KINDS), key=str)
        if unknown:
            raise UserError(f"--vocab {path}: unknown kind(s) {unknown}; expected long or short")
        if not counts:
            raise UserError(f"--vocab {path}: holds no entries")
        sha1 = file_hash(path)
        stem = Path(path).stem
        table = pq.read_table(path, columns=["id", "text", "kind"])
        for kind in (k for k in KINDS if counts.get(k)):
            kept, dropped = usable_entries(table.filter(pc.equal(table["kind"], kind)))
            if not kept.num_rows:
                raise UserError(f"--vocab {path}: none of its {counts[kind]} {kind} entries is usable "
                                f"({', '.join(f'{r}: {n}' for r, n in dropped.items())})")
            name = stem if len(counts) == 1 else f"{stem}-{kind}"
            out.append(Vocabulary(name, str(path), sha1, kind, kept.num_rows, tuple(sorted(dropped.items()))))
    names = [v.name for v in out]
    if len(set(names)) != len(names):
        raise UserError(f"--vocab: two vocabularies share a name ({', '.join(names)}); rename a file")
    return out

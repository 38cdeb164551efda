"""The vocabularies a label set scores against: ``VOCAB_SCHEMA`` Parquet files, one kind (long | short) each.

A file holding both kinds becomes two vocabularies, ``{stem}-long`` and ``{stem}-short``. Entries keep file order; the
``index`` of an entry is its row among the entries of its kind. Texts and ids are held as Arrow arrays (compact, no
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


@dataclass(frozen=True)
class Vocabulary:
    """One scored vocabulary: where it comes from (``path``, ``sha1``), its ``kind`` and size."""

    name: str
    path: str
    sha1: str
    kind: str
    size: int

    @property
    def cache_id(self) -> str:
        """Identity of its entries (file content + kind), used to name text embedding caches."""
        return f"{self.sha1[:16]}-{self.kind}"

    def table(self, columns: tuple[str, ...] = ("id", "text")) -> pa.Table:
        """The entries of this kind, in file order."""
        table = pq.read_table(self.path, columns=[*dict.fromkeys((*columns, "kind"))])
        table = table.filter(pc.equal(table["kind"], self.kind))
        return table.select(list(columns))

    def to_json(self) -> dict:
        return {"name": self.name, "path": str(Path(self.path).resolve()), "sha1": self.sha1, "kind": self.kind,
                "entries": self.size}


def open_vocabularies(paths: list[str]) -> list[Vocabulary]:
    """Validate and describe the ``--vocab`` files (one-line errors for missing files, bad schemas, empty files)."""
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
        kinds = pq.read_table(path, columns=["kind"])["kind"].value_counts().to_pylist()
        counts = {item["values"]: item["counts"] for item in kinds}
        unknown = sorted(set(counts) - set(KINDS), key=str)
        if unknown:
            raise UserError(f"--vocab {path}: unknown kind(s) {unknown}; expected long or short")
        if not counts:
            raise UserError(f"--vocab {path}: holds no entries")
        sha1 = file_hash(path)
        stem = Path(path).stem
        for kind in (k for k in KINDS if counts.get(k)):
            name = stem if len(counts) == 1 else f"{stem}-{kind}"
            out.append(Vocabulary(name, str(path), sha1, kind, int(counts[kind])))
    names = [v.name for v in out]
    if len(set(names)) != len(names):
        raise UserError(f"--vocab: two vocabularies share a name ({', '.join(names)}); rename a file")
    return out

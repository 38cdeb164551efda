"""``n2m vocab show``: size, kinds, aspects, examples, duplicates removed and rejections by reason of a vocabulary
(the job :func:`run_show` of :class:`ShowSettings`; the command line: :mod:`n2m.labeling.vocab.cli`)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from n2m.labeling.vocab.io import read_vocab


def _counts(counter: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))) or "none"


def summary_lines(meta: dict[str, Any], path: str) -> list[str]:
    """What the JSON sidecar says: provenance, request counts, cleaning outcome."""
    lines = [f"{path}: {meta.get('entries', '?')} {meta.get('kind', '?')}-form entries ({meta.get('created', '?')})"]
    if meta.get("kind") == "short":
        for source in meta.get("sources", []):
            stats = {k: v for k, v in source.items() if k not in ("source", "sha1")}
            lines.append(f"  from {source.get('source')}: " + ", ".join(f"{k} {v}" for k, v in stats.items()))
        lines.append(f"  duplicates removed: {meta.get('counts', {}).get('duplicates_removed', 0)}")
        return lines
    info = meta.get("backend_info", {})
    nature = "a language model" if info.get("is_llm", True) else "NOT a language model: " + info.get("note", "")
    lines.append(f"  backend {meta.get('backend')} ({nature}), model {meta.get('model')}")
    source = meta.get("input", {})
    lines.append(f"  from {source.get('path')}: {source.get('tracks')} tracks (skipped: {_counts(source.get('skipped', {}))})")
    prompts = meta.get("prompts", {})
    lines.append(f"  prompts: {', '.join(prompts.get('ids', []))} (template hash {str(prompts.get('hash', ''))[:12]})")
    r = meta.get("requests", {})
    lines.append(f"  requests: {r.get('total')} total, {r.get('cached')} cached, {r.get('generated')} generated, "
                 f"{r.get('failed')} failed, {r.get('retries')} retries")
    c, d = meta.get("counts", {}), meta.get("duplicates", {})
    lines.append(f"  sentences: {c.get('sentences')} split, {c.get('kept')} kept, {c.get('rejected')} rejected, "
                 f"{c.get('duplicates_removed')} duplicates removed (exact {d.get('exact', 0)}, near {d.get('near', 0)})")
    lines.append(f"  rejected by reason: {_counts(meta.get('rejected', {}))}")
    return lines


def table_lines(table: pa.Table, examples: int) -> list[str]:
    """What the table holds: entries per kind and aspect, and evenly spaced examples."""
    kinds = Counter(table["kind"].to_pylist())
    lines = [f"  kinds: {_counts(kinds)}"]
    aspects = Counter(a for a, k in zip(table["aspect"].to_pylist(), table["kind"].to_pylist()) if k == "short")
    if aspects:
        lines.append(f"  aspects: {_counts(aspects)}")
    if examples > 0 and table.num_rows:
        texts, kinds_col, aspect_col = table["text"].to_pylist(), table["kind"].to_pylist(), table["aspect"].to_pylist()
        step = max(1, table.num_rows // examples)
        lines.append("  examples:")
        for i in list(range(0, table.num_rows, step))[:examples]:
            label = f"{kinds_col[i]}/{aspect_col[i]}" if aspect_col[i] else kinds_col[i]
            lines.append(f"    [{label}] {texts[i]}")
    return lines


@dataclass(frozen=True, kw_only=True)
class ShowSettings:
    """``path``: the vocabulary table; ``examples``: evenly spaced entries to print; ``rejected``: also print example
    rejected sentences per reason."""

    path: str
    examples: int = 8
    rejected: bool = False


def run_show(settings: ShowSettings) -> int:
    """Print the vocabulary's summary, its rejections (with ``rejected``) and example entries."""
    table, meta = read_vocab(settings.path)
    if meta is None:
        lines = [f"{settings.path}: {table.num_rows} entries (no JSON sidecar: provenance and rejections unknown)"]
    else:
        lines = summary_lines(meta, settings.path)
        for reason, texts in meta.get("rejected_examples", {}).items():
            if settings.rejected:
                lines += [f"    rejected ({reason}): {t}" for t in texts]
    lines += table_lines(table, settings.examples)
    print("\n".join(lines))
    return 0

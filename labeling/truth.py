"""Known captions and ground truth of a build's sources, joined from a manifest (``n2m synth``'s ``manifest.jsonl``,
read by :func:`n2m.manifest.read_rows`).

A manifest row names its audio by ``path`` (relative to the manifest's folder, or absolute) or ``url``. The build
records each source's canonical ``source_uri`` and its manifest columns (``meta_json``); a row matches a source when
its resolved path or URL equals the source URI (with or without ``file://``), or when its ``track_id``/``path`` equals
the one in the source's metadata.
"""

from __future__ import annotations

import json
from pathlib import Path

from n2m.manifest import read_rows
from n2m.schema import read_sources, source_id_of_key


def _uri_forms(value: str, base: Path) -> set[str]:
    if "://" in value and not value.startswith("file://"):
        return {value}
    raw = value[len("file://"):] if value.startswith("file://") else value
    resolved = str((base / raw).resolve()) if not Path(raw).is_absolute() else str(Path(raw).resolve())
    return {resolved, "file://" + resolved, value}


def join_sources(build: str, manifest_path: str) -> dict[str, dict]:
    """``{source_id: manifest row}`` for the build's ``ok`` sources that the manifest describes."""
    sources = read_sources(build, ["source_id", "source_uri", "status", "meta_json"]).to_pylist()
    rows = read_rows(manifest_path)
    base = Path(manifest_path).resolve().parent
    by_uri: dict[str, dict] = {}
    by_ident: dict[tuple[str, str], dict] = {}
    for row in rows:
        for field in ("path", "url", "uri"):
            if row.get(field):
                for form in _uri_forms(str(row[field]), base):
                    by_uri[form] = row
        for field in ("track_id", "path"):
            if row.get(field):
                by_ident[(field, str(row[field]))] = row
    out: dict[str, dict] = {}
    for src in sources:
        if src["status"] != "ok":
            continue
        row = next((by_uri[f] for f in _uri_forms(src["source_uri"], base) if f in by_uri), None)
        if row is None and src["meta_json"]:
            meta = json.loads(src["meta_json"])
            row = next((by_ident[(f, str(meta[f]))] for f in ("track_id", "path")
                        if meta.get(f) is not None and (f, str(meta[f])) in by_ident), None)
        if row is not None:
            out[src["source_id"]] = row
    return out


def truth_of_keys(keys, by_source: dict[str, dict]) -> dict[str, dict]:
    """``{clip key: manifest row}`` for the keys whose source the manifest describes."""
    return {k: by_source[source_id_of_key(k)] for k in keys if source_id_of_key(k) in by_source}


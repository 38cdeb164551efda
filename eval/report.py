"""``reports/NAME/report.json`` (every figure, n, settings, model hashes, lineage) and ``report.html`` (one
self-contained page: inline CSS, inline SVG, audio as base64 data URIs; nothing is fetched from elsewhere).

A report dict carries ``metrics``: ``{name: {"value", "n", "low", "high", "unit", "note"}}`` (the headline table that
``n2m eval compare`` lines up), and optional sections the page draws when present: ``fad[model]["fad_inf"]``,
``fad[model]["per_song"]``, ``clap_score``, ``adherence`` (musicnn tag agreement and probe), ``flatness`` (spectral
flatness of both sets; a banner at the top when the generated clips are flatter than every reference), ``samples``
(audio players; ``{side}_tags``: the clip's top musicnn tags, ``{side}_flatness``: its spectral flatness).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from n2m import audio
from n2m.audio import AudioError
from n2m.eval import svg
from n2m.eval.flatness import NOISE
from n2m.provenance import now_iso, versions
from n2m.storage import write_bytes_atomic, write_json

# Keys of a generated file's JSON sidecar (``n2m sample`` writes them) that say where the audio came from.
LINEAGE_KEYS = ("cascade", "stages", "lineage", "sampler_settings", "run_seed", "seconds", "sample_rate",
                "checkpoint", "checkpoints", "label_set", "build")
SAMPLE_RATE = 16000
SAMPLE_SECONDS = 10.0
MAX_SAMPLE_BYTES = 6 * 1024 * 1024

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1180px;
color:#1d1d1f;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:4px 10px;text-align:left;
vertical-align:top}th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
.meta{color:#666}.warn{color:#a23a00}.plots{display:flex;flex-wrap:wrap;gap:12px}
.alarm{background:#fbe3e0;border:1px solid #d9534f;padding:8px 12px;font-weight:600}
svg text{font:11px system-ui,sans-serif;fill:#333}svg text.t{font-size:13px;font-weight:600}
audio{width:260px;height:32px}.tags{font-size:12px;color:#555;margin-top:2px}details{margin:6px 0}pre{background:#f6f6f6;padding:8px;overflow:auto;font-size:12px}
"""


# ---------------------------------------------------------------------------------------------------------------------
# Building blocks


def metric(value: float | None, n: int | None = None, low: float | None = None, high: float | None = None,
           unit: str = "", note: str = "") -> dict[str, Any]:
    """One row of the headline table."""
    return {"value": value, "n": n, "low": low, "high": high, "unit": unit, "note": note}


def base_report(kind: str, name: str, config: dict[str, Any]) -> dict[str, Any]:
    """The fields every report has: kind, name, creation time, versions and the resolved config."""
    return {"kind": kind, "name": name, "created": now_iso(), "versions": versions(("scipy", "torchmetrics")),
            "config": config, "metrics": {}}


def lineage(paths: Sequence[str | Path]) -> dict[str, Any]:
    """What the JSON sidecars next to generated files (``x.wav`` -> ``x.json``) say about their origin: how many files
    have one, and the distinct values of each lineage key."""
    found = 0
    values: dict[str, list[Any]] = {}
    unreadable: list[str] = []
    for path in paths:
        sidecar = Path(path).with_suffix(".json")
        if not sidecar.is_file():
            continue
        try:
            data = json.loads(sidecar.read_text())
        except (OSError, ValueError):
            unreadable.append(str(sidecar))
            continue
        if not isinstance(data, dict):
            unreadable.append(str(sidecar))
            continue
        found += 1
        for key in LINEAGE_KEYS:
            if key in data and data[key] not in values.setdefault(key, []):
                values[key].append(data[key])
    return {"files": len(paths), "with_sidecar": found, "unreadable_sidecars": unreadable,
            "values": {k: v for k, v in values.items() if v}}


def audio_data_uri(path: str | Path, seconds: float = SAMPLE_SECONDS) -> str | None:
    """The middle ``seconds`` of a file as mono 16 kHz Ogg Vorbis in a ``data:`` URI; None for unreadable audio."""
    try:
        decoded = audio.decode(str(path))
    except AudioError:
        return None
    mono = audio.downmix(decoded.samples)
    keep = int(seconds * decoded.sample_rate)
    if mono.shape[1] > keep:
        start = (mono.shape[1] - keep) // 2
        mono = mono[:, start:start + keep]
    data = audio.encode(audio.resample(mono, decoded.sample_rate, SAMPLE_RATE), SAMPLE_RATE, "OGG")
    return "data:audio/ogg;base64," + base64.b64encode(data).decode("ascii")


def attach_samples(report: dict[str, Any], items: Sequence[dict[str, Any]], count: int, seed: int = 0,
                   max_bytes: int = MAX_SAMPLE_BYTES) -> None:
    """Pick ``count`` items (seeded) of ``{"id", "prompt", "generated", "reference"}`` and embed their audio until
    ``max_bytes`` of data URIs are used; the JSON keeps only ids and paths (``samples``), the page the audio."""
    if not items or count <= 0:
        return
    rng = np.random.default_rng(seed)
    chosen = [items[i] for i in sorted(rng.choice(len(items), size=min(count, len(items)), replace=False))]
    used = 0
    samples = []
    for item in chosen:
        entry = dict(item)
        for side in ("generated", "reference"):
            uri = audio_data_uri(item[side]) if item.get(side) else None
            if uri is not None and used + len(uri) > max_bytes:
                entry[f"{side}_note"] = "left out: the page's audio size cap was reached"
                uri = None
            if uri is not None:
                used += len(uri)
                entry[f"{side}_uri"] = uri
        samples.append(entry)
    report["samples"] = samples
    report["samples_bytes"] = used


# ---------------------------------------------------------------------------------------------------------------------
# Text and HTML


def fmt_number(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        if v == 0 or 1e-3 <= abs(v) < 1e4:
            return f"{v:.4f}"
        return f"{v:.4g}"
    return str(v)


def metric_rows(metrics: dict[str, dict[str, Any]]) -> list[list[str]]:
    rows = []
    for name, m in metrics.items():
        interval = f"[{fmt_number(m.get('low'))}, {fmt_number(m.get('high'))}]" if m.get("low") is not None else ""
        rows.append([name, fmt_number(m.get("value")), interval, fmt_number(m.get("n")), m.get("note", "")])
    return rows


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain fixed-width table for the terminal."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)) for row in rows]
    return "\n".join(lines)


def html_table(header: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[int] = ()) -> str:
    head = "".join(f"<th>{escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f'<td{" class=num" if i in numeric else ""}>{escape(str(c))}</td>' for i, c in enumerate(r))
        + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def page(title: str, body: str) -> str:
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{escape(title)}</title>"
            f"<style>{CSS}</style></head><body>{body}</body></html>")


def _plots(report: dict[str, Any]) -> str:
    out = []
    for model, section in report.get("fad", {}).items():
        fit = section.get("fad_inf")
        if fit:
            points = [(1.0 / n, v) for n, v in fit["points"]]
            out.append(svg.scatter_fit(points, fit["value"], fit["slope"], f"FAD-inf ({model}): FAD vs 1/n",
                                       "1 / n (embeddings in the subset)", "FAD"))
        per_song = section.get("per_song")
        if per_song:
            out.append(svg.histogram({"songs": [s["fad"] for s in per_song]}, f"Per-song FAD ({model})", "FAD"))
    scores = report.get("clap_score", {})
    series = {}
    if scores.get("text"):
        series["audio vs own prompt"] = list(scores["text"].get("per_item", {}).values())
        series["audio vs shuffled prompt"] = scores["text"].get("shuffled_values", [])
    if scores.get("reference_text"):
        series["reference vs prompt"] = list(scores["reference_text"].get("per_item", {}).values())
    if scores.get("gt_audio"):
        series["audio vs reference audio"] = list(scores["gt_audio"].get("per_item", {}).values())
    if series:
        out.append(svg.histogram(series, "CLAP score distributions", "cosine similarity"))
    return f'<div class=plots>{"".join(out)}</div>' if out else ""


def _confusion(title: str, score: dict[str, Any]) -> str:
    """A confusion table (rows: true class, columns: predicted) with each class's recall."""
    confusion = score["confusion"]
    classes = sorted(set(confusion) | {p for row in confusion.values() for p in row})
    rows = [[t, *[confusion.get(t, {}).get(c, 0) for c in classes],
             fmt_number(confusion[t].get(t, 0) / max(sum(confusion[t].values()), 1)) if t in confusion else "–"]
            for t in classes]
    return (f"<div><p><b>{escape(title)}</b>: accuracy {fmt_number(score['accuracy'])} "
            f"[{fmt_number(score.get('low'))}, {fmt_number(score.get('high'))}], chance {fmt_number(score['chance'])}"
            f", n {score['n']}</p>"
            + html_table(["true \\ predicted", *classes, "recall"], rows, tuple(range(1, len(classes) + 2)))
            + "</div>")


def _adherence(report: dict[str, Any]) -> str:
    section = report.get("adherence")
    if not section:
        return ""
    parts = [f"<h2>Adherence (musicnn)</h2><p class=meta>Judge: {escape(str(section.get('model')))}, layer "
             f"{escape(str(section.get('layer')))}; no CLAP involved.</p>"]
    tags = section.get("tags")
    if tags:
        items = tags.get("per_item", {}).values()
        parts.append("<p>Tag agreement: cosine of each generated clip's mean tag probabilities with its own reference "
                     "track's (paired) and, on average, with the other references (shuffled).</p>")
        parts.append('<div class=plots>' + svg.histogram(
            {"own reference": [v["paired"] for v in items], "other references": [v["shuffled"] for v in items]},
            "musicnn tag agreement", "cosine similarity") + "</div>")
    probe = section.get("probe")
    if probe:
        classes = ", ".join(f"{k} ({v})" for k, v in probe.get("classes", {}).items())
        parts.append(f"<p>Probe: nearest centroid of {len(probe.get('classes', {}))} classes of "
                     f"<b>{escape(probe['column'])}</b> from {probe.get('centroid_tracks')} tracks not held out: "
                     f"{escape(classes)}.</p>")
        tables = [_confusion(title, probe[key]) for key, title in (("generated", "generated clips"),
                                                                   ("real_held_out", "real held-out tracks (ceiling)"))
                  if probe.get(key)]
        parts.append('<div class=plots>' + "".join(tables) + "</div>")
    return "".join(parts)


def player_cell(uri: str | None, note: str | None = None, tags: Sequence[Sequence[Any]] | None = None,
                flatness: float | None = None) -> str:
    """A table cell with an audio player for a ``data:`` URI (or ``note`` when there is none) and, under it, the
    clip's top tags ``[[tag, probability], ...]`` and its spectral flatness (:mod:`n2m.eval.flatness`)."""
    if uri:
        cell = f'<audio controls preload=none src="{uri}"></audio>'
    else:
        cell = f"<span class=meta>{escape(note or 'no audio')}</span>"
    if tags:
        cell += "<div class=tags>" + escape(", ".join(f"{t} {p:.2f}" for t, p in tags)) + "</div>"
    if flatness is not None:
        cell += f"<div class=tags>spectral flatness {flatness:.3f}</div>"
    return f"<td>{cell}</td>"


def _player(sample: dict[str, Any], side: str) -> str:
    return player_cell(sample.get(f"{side}_uri"), sample.get(f"{side}_note"), sample.get(f"{side}_tags"),
                       sample.get(f"{side}_flatness"))


def _samples(report: dict[str, Any]) -> str:
    samples = report.get("samples")
    if not samples:
        return ""
    rows = []
    for s in samples:
        cells = [f"<td>{escape(str(s['id']))}</td><td>{escape(str(s.get('prompt') or ''))}</td>"]
        cells += [_player(s, side) for side in ("generated", "reference")]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    tagged = any(s.get("generated_tags") or s.get("reference_tags") for s in samples)
    note = " Under each player: its top musicnn tags with their mean probability." if tagged else ""
    if any(s.get("generated_flatness") is not None or s.get("reference_flatness") is not None for s in samples):
        note += (f" Spectral flatness: {NOISE:.2f} for white noise, near 0 for a pure tone; real music lies well below "
                 "noise.")
    return (f"<h2>Listen</h2><p class=meta>The middle 10 s of each clip (all of a shorter one), mono 16 kHz Ogg Vorbis.{note}</p>"
            "<table><tr><th>id</th>"
            "<th>prompt</th><th>generated</th><th>reference</th></tr>" + "".join(rows) + "</table>")


def _noise_banner(report: dict[str, Any]) -> str:
    """A line at the top of the page when the generated clips' median flatness is nearer white noise than the flattest
    reference's (``flatness.noise_like``)."""
    section = report.get("flatness") or {}
    if not section.get("noise_like"):
        return ""
    return (f"<p class=alarm>The generated clips sound like noise, not audio: their median spectral flatness "
            f"{fmt_number(section['generated']['median'])} is nearer white noise's ({NOISE:.2f}) than the flattest "
            f"reference track's ({fmt_number(section['reference']['max'])}). The other figures compare noise "
            "with music.</p>")


def render_html(report: dict[str, Any]) -> str:
    """The report as one self-contained HTML page."""
    title = f"n2m eval {report['kind']}: {report['name']}"
    parts = [f"<h1>{escape(title)}</h1><p class=meta>{escape(report['created'])} · n2m "
             f"{escape(report['versions'].get('n2m', '?'))}</p>", _noise_banner(report),
             "<h2>Metrics</h2>",
             html_table(["metric", "value", "95% interval", "n", "note"], metric_rows(report["metrics"]), (1, 3))]
    warnings = report.get("warnings") or []
    if warnings:
        parts.append("<ul>" + "".join(f"<li class=warn>{escape(w)}</li>" for w in warnings) + "</ul>")
    parts.append(_plots(report))
    parts.append(_adherence(report))
    counts = report.get("counts")
    if counts:
        parts.append("<h2>Counts</h2>" + html_table(["what", "count"], [[k, v] for k, v in counts.items()], (1,)))
    sets = report.get("sets", {})
    if sets:
        rows = [[name, s.get("files"), s.get("used"), s.get("excluded"),
                 ", ".join(f"{k}: {v}" for k, v in s.get("excluded_by_reason", {}).items())]
                for name, s in sets.items()]
        parts.append("<h2>Audio sets</h2>" + html_table(["set", "files", "used", "excluded", "reasons"], rows,
                                                         (1, 2, 3)))
    models = report.get("models", {})
    if models:
        rows = [[name, m.get("id"), m.get("sample_rate"), json.dumps(m.get("settings"), sort_keys=True)]
                for name, m in models.items()]
        preprocess = json.dumps(report.get("preprocess", {}), sort_keys=True)
        parts.append("<h2>Models</h2>" + html_table(["model", "id (weights hash)", "rate", "settings"], rows)
                     + f"<p class=meta>Preprocessing of both sets: {escape(preprocess)}</p>")
    source = report.get("lineage")
    if source:
        rows = [[k, ", ".join(json.dumps(v) for v in vals)] for k, vals in source.get("values", {}).items()]
        parts.append(f"<h2>Lineage</h2><p class=meta>{source.get('with_sidecar', 0)} of {source.get('files', 0)} "
                     "generated files have a JSON sidecar.</p>" + (html_table(["field", "values"], rows) if rows else ""))
    missing = report.get("missing", {})
    for what, ids in missing.items():
        if ids:
            parts.append(f"<details><summary>{len(ids)} {escape(what)}</summary><pre>"
                         f"{escape(chr(10).join(map(str, ids)))}</pre></details>")
    parts.append(_samples(report))
    detail = {k: v for k, v in report.items() if k not in ("samples",)}
    parts.append("<h2>Settings, models and lineage</h2><details><summary>report.json (without per-item values)"
                 f"</summary><pre>{escape(json.dumps(_compact(detail), indent=2, default=str))}</pre></details>")
    return page(title, "".join(parts))


def _compact(obj: Any) -> Any:
    """Drop long per-item lists from the JSON shown on the page (they stay in report.json)."""
    if isinstance(obj, dict):
        return {k: _compact(v) for k, v in obj.items() if k not in ("per_item", "shuffled_values", "per_song")}
    if isinstance(obj, list) and len(obj) > 50:
        return obj[:50] + [f"... {len(obj) - 50} more"]
    return obj


def write(report: dict[str, Any], out: str | Path) -> tuple[Path, Path]:
    """Write ``out/report.json`` (without audio data URIs) and ``out/report.html``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stored = dict(report)
    if "samples" in stored:
        stored["samples"] = [{k: v for k, v in s.items() if not k.endswith("_uri")} for s in stored["samples"]]
    json_path, html_path = out / "report.json", out / "report.html"
    write_json(str(json_path), stored)
    write_bytes_atomic(str(html_path), render_html(report).encode("utf-8"))
    return json_path, html_path

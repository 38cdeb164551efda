"""Optional sections of ``n2m eval compare``'s page: a label-eval table (``n2m label-eval --out``), training curves
(the Lightning CSV logs of ``n2m train`` run directories) and the listening table (one row per prompt: each run's clip
and the real track as audio players with their top musicnn tags). The quality bars are :mod:`n2m.eval.compare_bars`.
"""

from __future__ import annotations

import csv
import json
from html import escape
from pathlib import Path
from typing import Any

from n2m.errors import UserError
from n2m.eval import report as reports
from n2m.eval import svg
from n2m.eval.compare_bars import ratio_with_interval

CURVE_COLUMNS = ("train/loss", "val/loss")


def read_json(path: str | Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except OSError as err:
        raise UserError(f"cannot read {what} {path}: {err.strerror}") from err
    except ValueError as err:
        raise UserError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(data, dict):
        raise UserError(f"{path} is not a {what}")
    return data


# ---------------------------------------------------------------------------------------------------------------------
# Label evaluation


def label_eval_rows(data: dict[str, Any]) -> list[list[str]]:
    """``[subset, vocabulary, aspect, precision, chance, ratio, captions]`` rows of a label-eval report."""
    subsets = data.get("subsets")
    if not isinstance(subsets, dict):
        raise UserError("the label-eval file has no 'subsets' (write it with n2m label-eval --out)")
    rows = []
    for subset, result in subsets.items():
        for vocab, aspects in result.get("aspects", {}).items():
            for aspect, m in aspects.items():
                rows.append([f"{subset} ({result.get('clips', '?')} clips)", vocab, aspect,
                             reports.fmt_number(m.get("precision")), reports.fmt_number(m.get("chance")),
                             ratio_with_interval(m),
                             str(m.get("captions", "–"))])
    return rows


def label_clap_rows(data: dict[str, Any]) -> list[list[str]]:
    rows = []
    for subset, result in data.get("subsets", {}).items():
        for vocab, s in result.get("clap_score", {}).items():
            rows.append([subset, vocab, reports.fmt_number(s.get("assigned")), reports.fmt_number(s.get("shuffled")),
                         str(s.get("clips", "–"))])
    return rows


# ---------------------------------------------------------------------------------------------------------------------
# Training curves


def read_curves(run_dir: str | Path) -> dict[str, list[tuple[float, float]]]:
    """``{column: [(step, value)]}`` for the loss columns of ``RUNDIR/csv/metrics.csv`` (Lightning's CSVLogger)."""
    path = Path(run_dir) / "csv" / "metrics.csv"
    try:
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as err:
        raise UserError(f"no training log at {path} ({err.strerror}): is {run_dir} an n2m train run directory?") from err
    curves: dict[str, list[tuple[float, float]]] = {}
    for row in rows:
        for column in CURVE_COLUMNS:
            value, step = row.get(column), row.get("step")
            if value not in (None, "") and step not in (None, ""):
                curves.setdefault(column, []).append((float(step), float(value)))
    return curves


def curves_html(run_dirs: list[str]) -> str:
    plots = []
    for run_dir in run_dirs:
        curves = read_curves(run_dir)
        name = Path(run_dir).name
        plots.append(svg.lines(curves, f"{name}: training curves", "step", "loss"))
    return '<div class=plots>' + "".join(plots) + "</div>"


# ---------------------------------------------------------------------------------------------------------------------
# Listening: one row per prompt, one player per run and the real track


def listen_rows(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``[{"id", "prompt", "runs": {name: (path, tags, flatness)}, "reference": (path, tags, flatness)}]`` in id
    order, from each report's ``samples`` (ids, prompts, audio paths, top musicnn tags
    (:func:`n2m.eval.adherence.tag_samples`) and spectral flatness (:mod:`n2m.eval.flatness`))."""
    rows: dict[str, dict[str, Any]] = {}
    for run in runs:
        for sample in run.get("samples") or []:
            row = rows.setdefault(str(sample["id"]), {"id": str(sample["id"]), "prompt": None, "runs": {},
                                                      "reference": None})
            row["prompt"] = row["prompt"] or sample.get("prompt")
            if sample.get("generated"):
                row["runs"][run["name"]] = (sample["generated"], sample.get("generated_tags"),
                                            sample.get("generated_flatness"))
            if sample.get("reference") and row["reference"] is None:
                row["reference"] = (sample["reference"], sample.get("reference_tags"),
                                    sample.get("reference_flatness"))
    return [rows[k] for k in sorted(rows)]


def listen_html(runs: list[dict[str, Any]], max_bytes: int = 4 * reports.MAX_SAMPLE_BYTES) -> str:
    """The table of :func:`listen_rows`: prompt, each run's clip and the real track as audio players (the middle
    10 s, :func:`n2m.eval.report.audio_data_uri`) with their top musicnn tags; audio beyond ``max_bytes`` is left out."""
    rows = listen_rows(runs)
    if not rows:
        return ""
    names = [r["name"] for r in runs]
    used, body = 0, []
    for row in rows:
        cells = [f"<td>{escape(row['id'])}</td><td>{escape(row['prompt'] or '')}</td>"]
        for item in [row["runs"].get(name) for name in names] + [row["reference"]]:
            uri = reports.audio_data_uri(item[0]) if item else None
            note = "no audio" if item is None or uri is None else None
            if uri is not None and used + len(uri) > max_bytes:
                uri, note = None, "left out: the page's audio size cap was reached"
            used += len(uri or "")
            cells.append(reports.player_cell(uri, note, *(item[1:] if item else ())))
        body.append("<tr>" + "".join(cells) + "</tr>")
    head = "".join(f"<th>{escape(h)}</th>" for h in ["id", "prompt", *names, "real track"])
    return ("<p class=meta>The middle 10 s of each clip (all of a shorter one), mono 16 kHz Ogg Vorbis; under each player its top musicnn tags "
            "with their mean probability and its spectral flatness (white noise 0.56; the real tracks' are in their column).</p>"
            f"<table><tr>{head}</tr>{''.join(body)}</table>")

"""Optional sections of ``n2m eval compare``'s page: a label-eval table (``n2m label-eval --json``), training curves
(the Lightning CSV logs of ``n2m train`` run directories) and quality bars computed from the figures.

Quality bars (each pass / fail / n/a, with the numbers it was judged on):
- FAD gain: for each run other than ``--baseline``, ``1 - FAD_run / FAD_baseline >= --min-fad-gain`` per FAD metric;
- CLAP score above shuffled: ``CLAP_score > CLAP_score_shuffled`` for each run (a clip matches its own prompt better
  than another clip's prompt);
- label precision: ``precision / chance >= --min-precision-ratio`` for each of ``--precision-aspects`` in the
  label-eval subset ``--label-subset`` (held-out tracks by default).
"""

from __future__ import annotations

import csv
import json
from html import escape
from pathlib import Path
from typing import Any

from eval import report as reports
from eval import svg
from n2m.errors import UserError

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
        raise UserError("the label-eval file has no 'subsets' (write it with n2m label-eval --json)")
    rows = []
    for subset, result in subsets.items():
        for vocab, aspects in result.get("aspects", {}).items():
            for aspect, m in aspects.items():
                ratio = f"{m['ratio']:.2f}x" if m.get("ratio") is not None else "–"
                rows.append([f"{subset} ({result.get('clips', '?')} clips)", vocab, aspect,
                             reports.fmt_number(m.get("precision")), reports.fmt_number(m.get("chance")), ratio,
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
# Quality bars


def _bar(name: str, passed: bool | None, detail: str) -> dict[str, Any]:
    return {"bar": name, "result": {True: "pass", False: "fail", None: "n/a"}[passed], "detail": detail}


def quality_bars(runs: list[dict[str, Any]], baseline: str | None, min_fad_gain: float,
                 label_eval: dict[str, Any] | None, aspects: list[str], min_ratio: float,
                 label_subset: str) -> list[dict[str, Any]]:
    """Pass/fail of each bar (module docstring) from the reports' headline metrics and the label-eval figures."""
    bars = []
    base = next((r for r in runs if r["name"] == baseline), None) if baseline else None
    if baseline and base is None:
        raise UserError(f"--baseline {baseline}: no report has that name ({', '.join(r['name'] for r in runs)})")
    for run in runs:
        if base is None or run is base:
            continue
        for metric, entry in run["metrics"].items():
            ref = base["metrics"].get(metric, {}).get("value")
            value = entry.get("value")
            if not metric.startswith("FAD") or not isinstance(value, int | float) or not isinstance(ref, int | float):
                continue
            gain = 1.0 - value / ref if ref > 0 else None
            detail = (f"{metric}: {run['name']} {reports.fmt_number(value)} vs {base['name']} "
                      f"{reports.fmt_number(ref)}" + (f" ({gain:+.1%} lower; bar {min_fad_gain:.0%})"
                                                      if gain is not None else ""))
            bars.append(_bar(f"{run['name']} beats {base['name']} on {metric} by >= {min_fad_gain:.0%}",
                             None if gain is None else gain >= min_fad_gain, detail))
    for run in runs:
        score = run["metrics"].get("CLAP_score", {}).get("value")
        shuffled = run["metrics"].get("CLAP_score_shuffled", {}).get("value")
        if score is None and shuffled is None:
            continue
        known = isinstance(score, int | float) and isinstance(shuffled, int | float)
        bars.append(_bar(f"{run['name']}: CLAP score above the shuffled-prompt baseline",
                         score > shuffled if known else None,
                         f"CLAP_score {reports.fmt_number(score)} vs shuffled {reports.fmt_number(shuffled)}"))
    if label_eval is not None:
        result = label_eval.get("subsets", {}).get(label_subset)
        for aspect in aspects:
            figures = [(vocab, per[aspect]) for vocab, per in (result or {}).get("aspects", {}).items()
                       if aspect in per]
            if not figures:
                bars.append(_bar(f"label precision on {aspect} >= {min_ratio:g}x chance", None,
                                 f"no {aspect} figures in the label-eval subset {label_subset!r}"))
                continue
            for vocab, m in figures:
                ratio = m.get("ratio")
                bars.append(_bar(f"label precision on {aspect} >= {min_ratio:g}x chance ({vocab}, {label_subset})",
                                 None if ratio is None else ratio >= min_ratio,
                                 f"precision {reports.fmt_number(m.get('precision'))}, chance "
                                 f"{reports.fmt_number(m.get('chance'))}, ratio "
                                 + (f"{ratio:.2f}x" if ratio is not None else "–")))
    return bars


def bars_html(bars: list[dict[str, Any]]) -> str:
    colour = {"pass": "#e3f4e6", "fail": "#fbe3e0", "n/a": "#f3f3f3"}
    rows = "".join(f'<tr><td>{escape(b["bar"])}</td><td style="background:{colour[b["result"]]};font-weight:600">'
                   f'{b["result"]}</td><td>{escape(b["detail"])}</td></tr>' for b in bars)
    return f"<table><tr><th>bar</th><th>result</th><th>measured</th></tr>{rows}</table>"

"""``n2m eval compare A B ...``: the headline metrics of several reports side by side (printed, JSON and HTML)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from eval import report as reports
from n2m.config import leaf, resolved
from n2m.errors import UserError
from n2m.provenance import now_iso, versions, write_json

# Direction of "better" for known metric families (prefix match); others are not ranked.
LOWER_IS_BETTER = ("FAD",)
HIGHER_IS_BETTER = ("CLAP_score", "CLAP_gt_audio")


def load(path: str | Path) -> dict[str, Any]:
    """A ``report.json`` (or the directory holding one)."""
    target = Path(path)
    if target.is_dir():
        target = target / "report.json"
    try:
        data = json.loads(target.read_text())
    except OSError as err:
        raise UserError(f"cannot read report {target}: {err.strerror}") from err
    except ValueError as err:
        raise UserError(f"{target} is not valid JSON: {err}") from err
    if not isinstance(data, dict) or "metrics" not in data:
        raise UserError(f"{target} is not an n2m eval report (no 'metrics')")
    data.setdefault("name", target.parent.name)
    data["_path"] = str(target)
    return data


def _direction(metric: str) -> int:
    if metric.startswith(HIGHER_IS_BETTER) and not metric.endswith("_shuffled"):
        return 1
    if metric.startswith(LOWER_IS_BETTER):
        return -1
    return 0


def table(runs: list[dict[str, Any]]) -> tuple[list[str], list[list[str]], dict[str, str]]:
    """``(header, rows, best)``: one row per metric in first-seen order, one column per run; ``best[metric]`` is the
    name of the best run where the direction is known."""
    names = [r["name"] for r in runs]
    metrics: list[str] = []
    for run in runs:
        metrics += [m for m in run["metrics"] if m not in metrics]
    rows, best = [], {}
    for metric in metrics:
        values = [run["metrics"].get(metric, {}).get("value") for run in runs]
        cells = []
        for run, value in zip(runs, values):
            entry = run["metrics"].get(metric, {})
            text = reports.fmt_number(value)
            if entry.get("low") is not None:
                text += f" [{reports.fmt_number(entry['low'])}, {reports.fmt_number(entry['high'])}]"
            cells.append(text)
        direction = _direction(metric)
        known = [(v, n) for v, n in zip(values, names) if isinstance(v, int | float)]
        if direction and len(known) > 1:
            best[metric] = (max if direction > 0 else min)(known)[1]
        rows.append([metric, *cells])
    return ["metric", *names], rows, best


def render_html(runs: list[dict[str, Any]], header: list[str], rows: list[list[str]], best: dict[str, str]) -> str:
    from html import escape

    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = [f"<td>{escape(row[0])}</td>"]
        for name, cell in zip(header[1:], row[1:]):
            mark = ' style="background:#e3f4e6;font-weight:600"' if best.get(row[0]) == name else ""
            cells.append(f"<td class=num{mark}>{escape(cell)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    sources = "".join(f"<li>{escape(r['name'])}: {escape(r['kind'] if 'kind' in r else '?')}, "
                      f"{escape(str(r.get('created', '')))} — {escape(r['_path'])}</li>" for r in runs)
    content = (f"<h1>n2m eval compare</h1><p class=meta>{len(runs)} reports; best per metric highlighted (lower FAD, "
               f"higher CLAP score)</p><table><tr>{head}</tr>{''.join(body)}</table><h2>Reports</h2><ul>{sources}</ul>")
    return reports.page("n2m eval compare", content)


def run(args: argparse.Namespace) -> int:
    if len(args.reports) < 2:
        raise UserError("give two or more reports to compare")
    runs = [load(p) for p in args.reports]
    seen: dict[str, int] = {}
    for run_ in runs:  # disambiguate equal names
        count = seen.get(run_["name"], 0)
        seen[run_["name"]] = count + 1
        if count:
            run_["name"] = f"{run_['name']} ({count + 1})"
    header, rows, best = table(runs)
    print(reports.text_table(header, rows))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        write_json(str(out / "compare.json"), {
            "created": now_iso(), "versions": versions(), "config": resolved(args),
            "reports": [{"name": r["name"], "path": r["_path"], "kind": r.get("kind")} for r in runs],
            "metrics": {row[0]: dict(zip(header[1:], row[1:])) for row in rows}, "best": best})
        (out / "compare.html").write_text(render_html(runs, header, rows, best))
        print(f"comparison: {out / 'compare.json'}  {out / 'compare.html'}")
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("reports", nargs="+", help="report.json files or report directories")
    p.add_argument("--out", help="directory for compare.json and compare.html")
    leaf(p, run)

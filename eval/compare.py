"""``n2m eval compare A B ...``: the headline metrics of several reports side by side (printed, JSON and HTML), with
optional sections: quality bars (:mod:`n2m.eval.compare_bars`), a listening table (each prompt with every run's clip and
the real track), a label-eval table and training curves (:mod:`n2m.eval.compare_extras`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from n2m.config import resolved
from n2m.errors import UserError
from n2m.eval import compare_bars as bars_
from n2m.eval import compare_extras as extra
from n2m.eval import report as reports
from n2m.provenance import now_iso, versions
from n2m.storage import write_bytes_atomic, write_json

# Direction of "better" for known metric families (prefix match); others are not ranked.
LOWER_IS_BETTER = ("FAD",)
HIGHER_IS_BETTER = ("CLAP_score", "CLAP_gt_audio", "musicnn_tag_agreement", "musicnn_tag_gain",
                    "musicnn_probe_accuracy")
BARS_HEADING = "Quality bars"


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


def render_html(runs: list[dict[str, Any]], header: list[str], rows: list[list[str]], best: dict[str, str],
                extras: dict[str, str] | None = None, title: str = "n2m eval compare") -> str:
    """The comparison page: the quality bars first (when given), the metrics table, then the other sections
    (``extras``: ``{heading: html}``: listening table, label eval, training curves)."""
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
                      f"{escape(str(r.get('created', '')))} — {escape(r['_path'])}"
                      f"{_page_link(r)}</li>" for r in runs)
    sections = dict(extras or {})
    lead = {k: sections.pop(k) for k in list(sections) if k == BARS_HEADING}
    content = (f"<h1>{escape(title)}</h1><p class=meta>{len(runs)} reports; judged by {escape(_judges(runs))}</p>"
               f"{_sections(lead)}<h2>Metrics</h2><p class=meta>Best per metric highlighted (lower FAD, higher "
               f"CLAP score, musicnn tag agreement and probe accuracy).</p><table><tr>{head}</tr>{''.join(body)}"
               f"</table>{_sections(sections)}<h2>Reports</h2><ul>{sources}</ul>")
    return reports.page(title, content)


def _sections(parts: dict[str, str]) -> str:
    from html import escape

    return "".join(f"<h2>{escape(k)}</h2>{v}" for k, v in parts.items())


def _judges(runs: list[dict[str, Any]]) -> str:
    """The embedding models the reports were scored with (name and weights hash), e.g. ``musicnn (3f2a...)``."""
    seen = {}
    for run in runs:
        for name, model in (run.get("models") or {}).items():
            seen.setdefault(name, str(model.get("id") or "?"))
    return ", ".join(f"{name} ({ident})" for name, ident in seen.items()) or "the models named in each report"


def _page_link(run: dict[str, Any]) -> str:
    from html import escape

    page = Path(run["_path"]).with_name("report.html")
    return f' (<a href="{escape(page.resolve().as_uri())}">page</a>)' if page.is_file() else ""


@dataclass(frozen=True, kw_only=True)
class CompareSettings:
    """``n2m eval compare``: the ``reports`` (two or more report.json files or folders), where the comparison goes
    (``out``, ``html``), the page ``title``, the extra sections (``label_eval``, ``training_logs``) and the quality bars'
    settings (:class:`n2m.eval.compare_bars.BarOptions`)."""

    reports: list[str]
    out: str | None = None
    html: str | None = None
    title: str = "n2m eval compare"
    label_eval: str | None = None
    training_logs: list[str] | None = None
    baseline: str | None = None
    min_fad_gain: float = 0.3
    min_probe_ratio: float | None = None
    tag_gain: bool = False
    precision_aspects: str = "style,instrument"
    min_precision_ratio: float = 3.0
    label_subset: str = "holdout"


def bar_options(settings: CompareSettings) -> bars_.BarOptions:
    return bars_.BarOptions(
        baseline=settings.baseline, min_fad_gain=settings.min_fad_gain, min_probe_ratio=settings.min_probe_ratio,
        tag_gain=settings.tag_gain,
        precision_aspects=tuple(a.strip() for a in settings.precision_aspects.split(",") if a.strip()),
        min_precision_ratio=settings.min_precision_ratio, label_subset=settings.label_subset)


def extras(settings: CompareSettings, runs: list[dict[str, Any]]) -> tuple[dict[str, str], dict[str, Any]]:
    """The optional sections as ``({heading: html}, {key: data for compare.json})``: quality bars
    (:mod:`n2m.eval.compare_bars`), the listening table, label eval and training curves (:mod:`n2m.eval.compare_extras`)."""
    label_eval = extra.read_json(settings.label_eval, "label-eval report") if settings.label_eval else None
    sections: dict[str, str] = {}
    data: dict[str, Any] = {}
    options = bar_options(settings)
    if (options.baseline or label_eval is not None or options.min_probe_ratio is not None or options.tag_gain
            or bars_.has_flatness(runs)):
        bars = bars_.quality_bars(runs, options, label_eval)
        data["quality_bars"] = bars
        for bar in bars:
            print(f"quality bar: {bar['result']:<4}  {bar['bar']}  ({bar['detail']})")
        sections[BARS_HEADING] = bars_.bars_html(bars)
    listen = extra.listen_html(runs)
    if listen:
        sections["Listen: each prompt, each run and the real track"] = listen
    if label_eval is not None:
        sections["Label evaluation (n2m label-eval)"] = (
            reports.html_table(["subset", "vocabulary", "aspect", "precision", "chance", "ratio [95% over tracks]",
                                "captions"], extra.label_eval_rows(label_eval), (3, 4, 5, 6))
            + "<p class=meta>CLAP score of the assigned captions vs the same captions on other clips:</p>"
            + reports.html_table(["subset", "vocabulary", "assigned", "shuffled", "clips"],
                                 extra.label_clap_rows(label_eval), (2, 3, 4)))
        data["label_eval"] = str(Path(settings.label_eval).resolve())
    if settings.training_logs:
        sections["Training curves (n2m train, Lightning CSV logs)"] = extra.curves_html(settings.training_logs)
        data["training_logs"] = [str(Path(p).resolve()) for p in settings.training_logs]
    return sections, data


def run_compare(settings: CompareSettings) -> int:
    """Print the reports' headline metrics side by side; with ``out`` or ``html``, write compare.json and the page."""
    if len(settings.reports) < 2:
        raise UserError("give two or more reports to compare")
    runs = [load(p) for p in settings.reports]
    seen: dict[str, int] = {}
    for run_ in runs:  # disambiguate equal names
        count = seen.get(run_["name"], 0)
        seen[run_["name"]] = count + 1
        if count:
            run_["name"] = f"{run_['name']} ({count + 1})"
    header, rows, best = table(runs)
    print(reports.text_table(header, rows))
    sections, data = extras(settings, runs)
    if settings.out or settings.html:
        out = Path(settings.out) if settings.out else Path(settings.html).parent
        out.mkdir(parents=True, exist_ok=True)
        write_json(str(out / "compare.json"), {
            "created": now_iso(), "versions": versions(), "config": resolved(settings),
            "reports": [{"name": r["name"], "path": r["_path"], "kind": r.get("kind")} for r in runs],
            "metrics": {row[0]: dict(zip(header[1:], row[1:])) for row in rows}, "best": best, **data})
        html = Path(settings.html) if settings.html else out / "compare.html"
        write_bytes_atomic(str(html), render_html(runs, header, rows, best, sections, settings.title).encode("utf-8"))
        print(f"comparison: {out / 'compare.json'}  {html}")
    return 0

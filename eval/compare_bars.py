"""Quality bars of ``n2m eval compare``: pass / fail / n/a from the reports' headline metrics and a label-eval report,
each with the figures it was judged on.

- Audio, not noise: for each run with spectral flatness figures (:mod:`n2m.eval.flatness`), its median clip flatness
  ``spectral_flatness <= spectral_flatness_reference_max``, the flattest real track's; on whenever a report has either
  figure (n/a when one is missing). It comes first: when it fails with the median nearer white noise than that track
  (:func:`n2m.eval.flatness.nearer_noise`), the run's samples are noise and its other figures compare noise with music
  (the page says so above the table); between the two they are noisier than any real track, and the bar says only that.
- FAD gain: for each run other than ``baseline``, ``1 - FAD_run / FAD_baseline >= min_fad_gain`` per FAD metric.
- CLAP score above shuffled: ``CLAP_score > CLAP_score_shuffled`` for each run that has a CLAP score.
- Probe: for each run other than ``baseline``, ``musicnn_probe_accuracy >= min_probe_ratio * musicnn_probe_chance``
  (:mod:`n2m.eval.adherence`: nearest class centroid; chance is ``sum_c P(pred = c) P(true = c)``), with the baseline's
  accuracy and the real held-out tracks' (the ceiling) beside it.
- Tag agreement: for each run other than ``baseline``, the 95% interval of ``musicnn_tag_gain`` (paired minus
  shuffled) lies above zero.
- Label precision: ``precision / chance >= min_precision_ratio`` for each of ``precision_aspects`` in the label-eval
  subset ``label_subset`` (held-out tracks by default).
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from typing import Any

from n2m.errors import UserError
from n2m.eval import report as reports
from n2m.eval.flatness import NOISE, nearer_noise

RESULTS = {True: "pass", False: "fail", None: "n/a"}
FLATNESS = ("spectral_flatness", "spectral_flatness_reference_max")
COLOURS = {"pass": "#e3f4e6", "fail": "#fbe3e0", "n/a": "#f3f3f3"}


@dataclass(frozen=True)
class BarOptions:
    """Which bars to judge and their thresholds. ``min_probe_ratio`` None and ``tag_gain`` False leave those out."""

    baseline: str | None = None
    min_fad_gain: float = 0.3
    min_probe_ratio: float | None = None
    tag_gain: bool = False
    precision_aspects: tuple[str, ...] = ("style", "instrument")
    min_precision_ratio: float = 3.0
    label_subset: str = "holdout"


def _bar(name: str, passed: bool | None, detail: str) -> dict[str, Any]:
    return {"bar": name, "result": RESULTS[passed], "detail": detail}


def _value(run: dict[str, Any], metric: str, key: str = "value") -> float | None:
    value = run["metrics"].get(metric, {}).get(key)
    return float(value) if isinstance(value, int | float) else None


def has_flatness(runs: list[dict[str, Any]]) -> bool:
    """Whether any report has a spectral flatness figure (then the audio-not-noise bar is judged by default)."""
    return any(name in run["metrics"] for run in runs for name in FLATNESS)


def _flatness_bar(run: dict[str, Any]) -> list[dict[str, Any]]:
    if not any(name in run["metrics"] for name in FLATNESS):
        return []
    median, flattest = (_value(run, name) for name in FLATNESS)
    low, high = _value(run, FLATNESS[0], "low"), _value(run, FLATNESS[0], "high")
    detail = f"median spectral flatness {reports.fmt_number(median)}"
    if low is not None and high is not None:
        detail += f" [{reports.fmt_number(low)}, {reports.fmt_number(high)}]"
    detail += f" vs the flattest real track's {reports.fmt_number(flattest)} (white noise {NOISE:.2f})"
    passed = None if median is None or flattest is None else median <= flattest
    bar = _bar(f"{run['name']}: samples are audio, not noise (median spectral flatness <= the flattest real "
               "track's)", passed, detail)
    if passed is False and nearer_noise(median, flattest):
        bar["alarm"] = (f"{run['name']}: the samples sound like noise, not audio: {detail}. Its other figures "
                        "compare noise with music.")
    return [bar]


def _fad_bars(run: dict[str, Any], base: dict[str, Any], min_gain: float) -> list[dict[str, Any]]:
    bars = []
    for metric in run["metrics"]:
        value, ref = _value(run, metric), _value(base, metric)
        if not metric.startswith("FAD") or value is None or ref is None:
            continue
        gain = 1.0 - value / ref if ref > 0 else None
        detail = (f"{metric}: {run['name']} {reports.fmt_number(value)} vs {base['name']} {reports.fmt_number(ref)}"
                  + (f" ({gain:+.1%} lower; bar {min_gain:.0%})" if gain is not None else ""))
        bars.append(_bar(f"{run['name']} beats {base['name']} on {metric} by >= {min_gain:.0%}",
                         None if gain is None else gain >= min_gain, detail))
    return bars


def _clap_bar(run: dict[str, Any]) -> list[dict[str, Any]]:
    score, shuffled = _value(run, "CLAP_score"), _value(run, "CLAP_score_shuffled")
    if "CLAP_score" not in run["metrics"] and "CLAP_score_shuffled" not in run["metrics"]:
        return []
    known = score is not None and shuffled is not None
    return [_bar(f"{run['name']}: CLAP score above the shuffled-prompt baseline", score > shuffled if known else None,
                 f"CLAP_score {reports.fmt_number(score)} vs shuffled {reports.fmt_number(shuffled)}")]


def _probe_bar(run: dict[str, Any], base: dict[str, Any] | None, ratio: float) -> list[dict[str, Any]]:
    accuracy, chance = _value(run, "musicnn_probe_accuracy"), _value(run, "musicnn_probe_chance")
    if accuracy is None and chance is None:
        return []
    measured = None if accuracy is None or not chance else accuracy / chance
    low, high = _value(run, "musicnn_probe_accuracy", "low"), _value(run, "musicnn_probe_accuracy", "high")
    detail = f"accuracy {reports.fmt_number(accuracy)}"
    if low is not None and high is not None:
        detail += f" [{reports.fmt_number(low)}, {reports.fmt_number(high)}]"
    scored = run.get("adherence", {}).get("probe", {}).get("generated", {})
    if scored.get("clips", 0) > scored.get("n", 0):
        detail += f" over {scored['n']} prompts ({scored['clips']} clips, each prompt the mean of its own)"
    detail += f", chance {reports.fmt_number(chance)}" + (f" ({measured:.2f}x)" if measured is not None else "")
    if base is not None:
        detail += f"; {base['name']} {reports.fmt_number(_value(base, 'musicnn_probe_accuracy'))}"
    ceiling = _value(run, "musicnn_probe_ceiling")
    if ceiling is not None:
        detail += f"; real held-out tracks (ceiling) {reports.fmt_number(ceiling)}"
    return [_bar(f"{run['name']}: musicnn probe accuracy >= {ratio:g}x chance",
                 None if measured is None else measured >= ratio, detail)]


def _tag_bar(run: dict[str, Any]) -> list[dict[str, Any]]:
    if "musicnn_tag_gain" not in run["metrics"]:
        return []
    gain, low, high = (_value(run, "musicnn_tag_gain", k) for k in ("value", "low", "high"))
    paired, shuffled = _value(run, "musicnn_tag_agreement"), _value(run, "musicnn_tag_agreement_shuffled")
    detail = (f"paired {reports.fmt_number(paired)} vs shuffled {reports.fmt_number(shuffled)}: gain "
              f"{reports.fmt_number(gain)}" + (f" [{reports.fmt_number(low)}, {reports.fmt_number(high)}]"
                                                if low is not None and high is not None else " (no interval)"))
    return [_bar(f"{run['name']}: musicnn tag agreement above shuffled (95% interval above 0)",
                 None if low is None else low > 0, detail)]


def ratio_with_interval(m: dict[str, Any]) -> str:
    """A label-eval aspect's ratio to chance and its 95% interval over tracks, when the file has one (label-eval
    files written before the interval existed have none)."""
    ratio, low, high = m.get("ratio"), m.get("ratio_low"), m.get("ratio_high")
    if ratio is None:
        return "–"
    if low is None or high is None:
        return f"{ratio:.2f}x"
    return f"{ratio:.2f}x [{low:.2f}, {high:.2f}] over {m.get('tracks', '?')} tracks"


def _precision_bars(label_eval: dict[str, Any], options: BarOptions) -> list[dict[str, Any]]:
    bars = []
    result = label_eval.get("subsets", {}).get(options.label_subset)
    ratio_bar = options.min_precision_ratio
    for aspect in options.precision_aspects:
        figures = [(vocab, per[aspect]) for vocab, per in (result or {}).get("aspects", {}).items() if aspect in per]
        if not figures:
            bars.append(_bar(f"label precision on {aspect} >= {ratio_bar:g}x chance", None,
                             f"no {aspect} figures in the label-eval subset {options.label_subset!r}"))
            continue
        for vocab, m in figures:
            ratio = m.get("ratio")
            bars.append(_bar(f"label precision on {aspect} >= {ratio_bar:g}x chance ({vocab}, {options.label_subset})",
                             None if ratio is None else ratio >= ratio_bar,
                             f"precision {reports.fmt_number(m.get('precision'))}, chance "
                             f"{reports.fmt_number(m.get('chance'))}, ratio {ratio_with_interval(m)}"))
    return bars


def quality_bars(runs: list[dict[str, Any]], options: BarOptions,
                 label_eval: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Pass/fail of each bar (module docstring) from the reports' headline metrics and the label-eval figures."""
    base = next((r for r in runs if r["name"] == options.baseline), None) if options.baseline else None
    if options.baseline and base is None:
        raise UserError(f"--baseline {options.baseline}: no report has that name "
                        f"({', '.join(r['name'] for r in runs)})")
    judged = [r for r in runs if r is not base]
    bars = [bar for run in runs for bar in _flatness_bar(run)]
    if base is not None:
        for run in judged:
            bars += _fad_bars(run, base, options.min_fad_gain)
    for run in runs:
        bars += _clap_bar(run)
    if options.min_probe_ratio is not None:
        for run in judged:
            bars += _probe_bar(run, base, options.min_probe_ratio)
    if options.tag_gain:
        for run in judged:
            bars += _tag_bar(run)
    if label_eval is not None:
        bars += _precision_bars(label_eval, options)
    return bars


def bars_html(bars: list[dict[str, Any]]) -> str:
    """The bars as a table, after a line for each bar that carries an ``alarm`` (a run whose samples are noise)."""
    alarms = "".join(f"<p class=alarm>{escape(b['alarm'])}</p>" for b in bars if b.get("alarm"))
    rows = "".join(f'<tr><td>{escape(b["bar"])}</td><td style="background:{COLOURS[b["result"]]};font-weight:600">'
                   f'{b["result"]}</td><td>{escape(b["detail"])}</td></tr>' for b in bars)
    return f"{alarms}<table><tr><th>bar</th><th>result</th><th>measured</th></tr>{rows}</table>"

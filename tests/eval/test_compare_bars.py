"""The audio-not-noise bar of ``n2m eval compare`` (:mod:`n2m.eval.compare_bars`) against hand-computed figures, and the
comparison page and printout that judge it by default."""

import json

from n2m import cli
from n2m.eval.compare_bars import BarOptions, quality_bars

NOISE_BAR = "samples are audio, not noise (median spectral flatness <= the flattest real track's)"


def _report(name: str, **metrics) -> dict:
    """A report with headline metrics: a number, or ``(value, low, high)``."""
    rows = {k: {"value": v[0], "low": v[1], "high": v[2]} if isinstance(v, tuple) else {"value": v}
            for k, v in metrics.items()}
    return {"name": name, "kind": "musiccaps", "metrics": rows}


def test_flatness_bar_pass_fail_and_na():
    runs = [
        _report("trained", spectral_flatness=(0.53, 0.52, 0.54), spectral_flatness_reference_max=0.099,
                FAD_musicnn=80.0),
        _report("step0", spectral_flatness=0.566, spectral_flatness_reference_max=0.099, FAD_musicnn=134.0),
        _report("music", spectral_flatness=0.05, spectral_flatness_reference_max=0.099),
        _report("texture", spectral_flatness=0.2, spectral_flatness_reference_max=0.099),  # noisier, nearer music
        _report("tie", spectral_flatness=0.099, spectral_flatness_reference_max=0.099),
        _report("half", spectral_flatness=0.2),  # the reference figure is missing
        _report("none", spectral_flatness=None, spectral_flatness_reference_max=0.099),  # no generated clip had sound
        _report("older", FAD_musicnn=90.0),  # a report from before the metric: no bar
    ]
    bars = quality_bars(runs, BarOptions(baseline="step0"))
    results = {b["bar"]: b["result"] for b in bars}
    # 0.53 > 0.099 fail; 0.566 > 0.099 fail; 0.05 <= 0.099 pass; 0.2 > 0.099 fail; 0.099 <= 0.099 pass; no max: n/a;
    # no median: n/a
    assert {k: v for k, v in results.items() if NOISE_BAR in k} == {
        f"trained: {NOISE_BAR}": "fail", f"step0: {NOISE_BAR}": "fail", f"music: {NOISE_BAR}": "pass",
        f"texture: {NOISE_BAR}": "fail", f"tie: {NOISE_BAR}": "pass", f"half: {NOISE_BAR}": "n/a", f"none: {NOISE_BAR}": "n/a"}
    # FAD 80 vs 134 is 40.3% lower: that bar passes, and the noise bars come before it
    assert results["trained beats step0 on FAD_musicnn by >= 30%"] == "pass"
    assert [NOISE_BAR in b["bar"] for b in bars] == [True] * 7 + [False] * 2
    trained = bars[0]
    assert trained["detail"] == ("median spectral flatness 0.5300 [0.5200, 0.5400] vs the flattest real track's "
                                 "0.0990 (white noise 0.56)")
    assert trained["alarm"].startswith("trained: the samples sound like noise, not audio")
    # the alarm (samples are noise) only past the midpoint to white noise, (0.099 + 0.5615) / 2 = 0.330: not for 0.2
    assert [b for b in bars if b.get("alarm")] == bars[:2]


def test_compare_judges_flatness_by_default(tmp_path, capsys):
    paths = []
    for run in (_report("trained", spectral_flatness=(0.53, 0.52, 0.54), spectral_flatness_reference_max=0.099),
                _report("step0", spectral_flatness=0.566, spectral_flatness_reference_max=0.099)):
        folder = tmp_path / run["name"]
        folder.mkdir()
        (folder / "report.json").write_text(json.dumps(run))
        paths.append(str(folder))
    out = tmp_path / "cmp"
    assert cli.main(["eval", "compare", *paths, "--out", str(out)]) == 0  # no bar option given
    printed = capsys.readouterr().out
    assert f"quality bar: fail  trained: {NOISE_BAR}" in printed
    compare = json.loads((out / "compare.json").read_text())
    assert [b["result"] for b in compare["quality_bars"]] == ["fail", "fail"]
    page = (out / "compare.html").read_text()
    assert page.index("<p class=alarm>trained: the samples sound like noise") < page.index("<h2>Metrics")

    older = tmp_path / "older"
    older.mkdir()
    (older / "report.json").write_text(json.dumps(_report("older", FAD_musicnn=90.0)))
    assert cli.main(["eval", "compare", str(older), paths[0], "--out", str(tmp_path / "cmp2")]) == 0
    assert [b["bar"] for b in json.loads((tmp_path / "cmp2" / "compare.json").read_text())["quality_bars"]] == [
        f"trained: {NOISE_BAR}"]
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "report.json").write_text(json.dumps(_report("plain", FAD_musicnn=80.0)))
    assert cli.main(["eval", "compare", str(older), str(plain), "--out", str(tmp_path / "cmp3")]) == 0
    assert "quality_bars" not in json.loads((tmp_path / "cmp3" / "compare.json").read_text())  # as before

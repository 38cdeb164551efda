"""The ``make demo`` chain, reduced, through the real CLI (in process): synth -> build -> vocab -> clap-train -> label
-> label-eval -> train (spec_generator and sr_cascader; trained and step 0) -> eval prompts -> sample (spectrogram
cascade, Griffin-Lim in the vocoder slot as the demo runs it) -> eval musiccaps judged by musicnn -> eval compare, checking each artifact's contract on the way.
Plus the pieces the demo added: the Makefile's plan at both scales, the balanced held-out corpus, the held-out clip
filter of ``n2m train --exclude-holdout``, the quality bars of ``n2m eval compare`` against hand-computed figures and
its listening table.
"""

from __future__ import annotations

import json
import random
import subprocess
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import torch

from n2m.audio import encode_flac
from n2m.cli import main
from n2m.schema import read_label_captions

STAGES = ("spec_generator", "sr_cascader")  # the demo's trained stages; its vocoder slot is griffin-lim
ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------------------------------
# Units: the held-out filter and the quality bars


def _sample(key: str, meta: dict) -> dict:
    tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(24_000) / 24_000)[None, :].astype(np.float32)
    return {"__key__": key, "flac": encode_flac(tone, 24_000), "json": json.dumps({"key": key, "meta": meta}).encode()}


@pytest.mark.parametrize("value, dropped", [(True, True), ("true", True), ("1", True), (False, False),
                                            ("false", False), (None, False)])
def test_exclude_holdout_drops_held_out_clips(value, dropped):
    from n2m.training.data import ExampleMaker
    from n2m.training.stages import get_stage

    meta = {} if value is None else {"holdout": value}
    keep = ExampleMaker(get_stage("sr_cascader"), 12_000, {}, True, exclude_holdout=True)
    example = keep(_sample("k_0000", meta), random.Random(0), 0.0)
    assert (example is None) is dropped
    everything = ExampleMaker(get_stage("sr_cascader"), 12_000, {}, True, exclude_holdout=False)
    assert everything(_sample("k_0000", meta), random.Random(0), 0.0) is not None


def _report(name: str, **metrics: float | tuple[float, float, float]) -> dict:
    """A report with headline metrics: a number, or ``(value, low, high)`` for one with an interval."""
    rows = {k: {"value": v[0], "low": v[1], "high": v[2]} if isinstance(v, tuple) else {"value": v}
            for k, v in metrics.items()}
    return {"name": name, "metrics": rows}


LABEL_EVAL = {"subsets": {"holdout": {"aspects": {"aspects": {
    "style": {"precision": 0.30, "chance": 0.05, "ratio": 6.0},
    "instrument": {"precision": 0.40, "chance": 0.16, "ratio": 2.5},
    "mood": {"precision": 0.033, "chance": 0.011, "ratio": 3.0, "ratio_low": 2.1, "ratio_high": 3.9, "tracks": 28}}}}}}


def test_quality_bars_from_the_figures():
    from n2m.eval.compare_bars import BarOptions, quality_bars

    trained = _report("trained", FAD_CLAP=6.0, CLAP_score=0.30, CLAP_score_shuffled=0.20)
    step0 = _report("step0", FAD_CLAP=10.0, CLAP_score=0.10, CLAP_score_shuffled=0.12)
    options = BarOptions(baseline="step0", min_fad_gain=0.3, precision_aspects=("style", "instrument", "mood"))
    bars = quality_bars([trained, step0], options, LABEL_EVAL)
    results = {b["bar"]: b["result"] for b in bars}
    # FAD 6 vs 10 is 40% lower (>= 30%: pass); 0.30 > 0.20 pass; 0.10 < 0.12 fail; 6x pass; 2.5x fail; 3.0x pass (>=)
    assert results == {
        "trained beats step0 on FAD_CLAP by >= 30%": "pass",
        "trained: CLAP score above the shuffled-prompt baseline": "pass",
        "step0: CLAP score above the shuffled-prompt baseline": "fail",
        "label precision on style >= 3x chance (aspects, holdout)": "pass",
        "label precision on instrument >= 3x chance (aspects, holdout)": "fail",
        "label precision on mood >= 3x chance (aspects, holdout)": "pass",
    }
    details = {b["bar"]: b["detail"] for b in bars}
    assert details["label precision on mood >= 3x chance (aspects, holdout)"].endswith(
        "ratio 3.00x [2.10, 3.90] over 28 tracks")  # the interval is shown; the bar reads the point estimate
    assert details["label precision on instrument >= 3x chance (aspects, holdout)"].endswith("ratio 2.50x")
    assert "-40.0%" not in bars[0]["detail"] and "+40.0% lower" in bars[0]["detail"]
    stricter = quality_bars([trained, step0], BarOptions(baseline="step0", min_fad_gain=0.5))
    assert [b["result"] for b in stricter][0] == "fail"  # 40% < 50%


def test_musicnn_bars_probe_and_tag_agreement():
    from n2m.eval.compare_bars import BarOptions, quality_bars

    # 7 balanced styles: chance = sum_c P(pred=c) P(true=c) = 1/7 whatever is predicted. 6 of 14 right = 0.4286 = 3.0x.
    trained = _report("trained", FAD_musicnn=(30.0, 25.0, 36.0), musicnn_probe_accuracy=(6 / 14, 0.21, 0.64),
                      musicnn_probe_chance=1 / 7, musicnn_probe_ceiling=13 / 14,
                      musicnn_tag_agreement=0.82, musicnn_tag_agreement_shuffled=0.78,
                      musicnn_tag_gain=(0.04, 0.01, 0.07))
    step0 = _report("step0", FAD_musicnn=(61.0, 55.0, 70.0), musicnn_probe_accuracy=2 / 14,
                    musicnn_probe_chance=1 / 7, musicnn_tag_gain=(0.0, -0.02, 0.02))
    bars = quality_bars([trained, step0], BarOptions(baseline="step0", min_fad_gain=0.5, min_probe_ratio=3.0,
                                                     tag_gain=True))
    results = {b["bar"]: b["result"] for b in bars}
    # FAD 1 - 30/61 = 50.8% lower (>= 50%); probe 0.4286 / 0.1429 = 3.00x (>= 3); tag gain interval [0.01, 0.07] > 0
    assert results == {"trained beats step0 on FAD_musicnn by >= 50%": "pass",
                       "trained: musicnn probe accuracy >= 3x chance": "pass",
                       "trained: musicnn tag agreement above shuffled (95% interval above 0)": "pass"}
    probe = next(b for b in bars if "probe" in b["bar"])["detail"]
    assert "(3.00x)" in probe and "step0 0.1429" in probe and "(ceiling) 0.9286" in probe
    harder = quality_bars([trained, step0], BarOptions(baseline="step0", min_fad_gain=0.55, min_probe_ratio=3.5,
                                                       tag_gain=True))
    assert [b["result"] for b in harder] == ["fail", "fail", "pass"]
    touching = _report("trained", musicnn_tag_gain=(0.04, -0.001, 0.08))  # the interval includes zero
    no_interval = _report("other", musicnn_tag_gain=0.04)
    bars = quality_bars([touching, no_interval], BarOptions(tag_gain=True))
    assert [b["result"] for b in bars] == ["fail", "n/a"]
    assert quality_bars([_report("x", musicnn_probe_accuracy=0.0, musicnn_probe_chance=0.0)],
                        BarOptions(min_probe_ratio=2.0))[0]["result"] == "n/a"  # no chance figure to compare with


def test_listening_rows_pair_each_prompt_with_every_run_and_the_real_track(tmp_path):
    from n2m.eval.compare_extras import listen_html, listen_rows

    def wav(name: str) -> str:
        path = tmp_path / name
        sf.write(path, 0.2 * np.sin(np.arange(8000) / 5.0).astype(np.float32), 16000)
        return str(path)

    trained = {"name": "trained", "samples": [
        {"id": "b", "prompt": "rock", "generated": wav("tb.wav"), "reference": wav("rb.wav"),
         "generated_tags": [["rock", 0.61]], "reference_tags": [["guitar", 0.7]], "generated_flatness": 0.5312},
        {"id": "a", "prompt": "waltz", "generated": wav("ta.wav"), "reference": wav("ra.wav")}]}
    step0 = {"name": "step0", "samples": [{"id": "a", "prompt": "waltz", "generated": wav("sa.wav"),
                                           "generated_tags": [["noise", 0.9]]}]}
    rows = listen_rows([trained, step0])
    assert [r["id"] for r in rows] == ["a", "b"]
    assert rows[0]["runs"] == {"trained": (str(tmp_path / "ta.wav"), None, None),
                               "step0": (str(tmp_path / "sa.wav"), [["noise", 0.9]], None)}
    assert rows[1]["runs"] == {"trained": (str(tmp_path / "tb.wav"), [["rock", 0.61]], 0.5312)}
    assert rows[1]["reference"] == (str(tmp_path / "rb.wav"), [["guitar", 0.7]], None)
    html = listen_html([trained, step0])
    assert html.count("<audio") == 5  # a: trained, step0, real; b: trained, real (no step-0 clip)
    assert "<th>trained</th><th>step0</th><th>real track</th>" in html
    assert "rock 0.61" in html and "noise 0.90" in html and "no audio" in html
    assert html.count("spectral flatness 0.531") == 1
    capped = listen_html([trained, step0], max_bytes=1)
    assert capped.count("<audio") == 0 and capped.count("size cap") == 5


# ---------------------------------------------------------------------------------------------------------------------
# The Makefile's demo: what make would run at each scale


def _make_plan(tmp_path, *variables: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-n", "--no-print-directory", "demo", f"DEMO={tmp_path / 'demo'}", *variables],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_make_demo_plan_at_both_scales(tmp_path):
    plan = _make_plan(tmp_path)
    assert plan.returncode == 0, plan.stderr
    lines = plan.stdout
    for stage in STAGES:
        for run in ("trained", "step0"):
            assert f"--stage {stage}" in lines and f"runs/{run}/{stage} " in lines.replace("\\\n", " ")
    assert "--stage vocoder" not in lines and lines.count(",vocoder=griffin-lim,") == 4  # samples and takes, both runs
    assert lines.count("--preset small") == 4 and "--text-encoder hf:all-MiniLM-L6-v2" in lines
    assert "--condition" not in lines  # the generator reads its captions' tokens alone (README)
    joint = "--condition text+text-embedding --joint-model {}/clap".format(tmp_path / "demo")
    assert _make_plan(tmp_path, f"DEMO_SPEC_CONDITION={joint}").stdout.count(joint) == 2  # trained and at step 0
    assert lines.count("--cascade spectrogram") == 4 and lines.count("--embedding musicnn") == 2
    assert "--clap " not in lines.split("n2m eval musiccaps", 1)[1]  # the joint model never judges the samples
    assert "--tracks 98 --seed 867 --holdout 0.143" in lines and "--audio-init musicnn:MTT_musicnn" in lines
    assert "--min-probe-ratio 2 --min-fad-gain 0.3" in lines and "--tag-gain" not in lines
    assert "--precision-aspects style,instrument,mood" in lines
    assert "aspects.parquet --skip-aspects mood" in lines and "mood.parquet --only-aspects mood" in lines
    flat = " ".join(lines.replace("\\\n", " ").split())
    assert "--vocab {0}/vocab/aspects.parquet --vocab {0}/vocab/mood.parquet".format(tmp_path / "demo") in flat
    hour = _make_plan(tmp_path, "DEMO_SCALE=hour")
    assert hour.returncode == 0 and "--min-probe-ratio 3 --min-fad-gain 0.5 --tag-gain" in hour.stdout
    assert "--tracks 112 --seed 5665 --holdout 0.25 --min-seconds 40" in hour.stdout
    assert "28 held out for evaluation (four per style)" in hour.stdout
    assert "--window 3 --batch-size 13" in lines and "--seconds 3 " in lines  # the generator samples what it trains on
    assert "--window 10 --batch-size 4" in hour.stdout and "--seconds 10 " in hour.stdout
    assert "--lr 2e-3 --decay-steps 900 --min-lr-ratio 0.1" in lines
    assert "--text-cache 4096 --num-workers 1" in lines and lines.count("--num-workers 0") == 2  # sr_cascader: trained, step 0
    assert "--lr 1e-3 --decay-steps 7000 --min-lr-ratio 0.1" in hour.stdout
    assert "--max-minutes 8.5 " in lines and "--max-minutes 44 " in hour.stdout  # the generator's time budget
    # the judge's extra clips per prompt: sampled at run seed 1 into takes/RUN, judged with samples/RUN
    for plan, takes in ((lines, 3), (hour.stdout, 1)):
        flat_plan = " ".join(plan.replace("\\\n", " ").split())
        for run in ("trained", "step0"):
            assert f"--out {tmp_path / 'demo'}/takes/{run} --seed 1 --num-samples {takes}" in flat_plan
            assert f"--generated {tmp_path / 'demo'}/samples/{run} --takes {tmp_path / 'demo'}/takes/{run}" in flat_plan
    untaken = _make_plan(tmp_path, "DEMO_TAKES=0").stdout
    assert "--takes" not in untaken and "--num-samples" not in untaken and untaken.count("n2m sample") == 2
    assert "--weighting simplified" in lines and "--weighting simplified" in hour.stdout  # the generator's loss weight
    assert "--weighting sigma" in _make_plan(tmp_path, "DEMO_SPEC_WEIGHTING=sigma").stdout
    # the generator diffuses twice the log-mel at both scales (README); the step-0 network is built the same way
    assert lines.count("--data-scale 2 ") == 2 and hour.stdout.count("--data-scale 2 ") == 2
    assert _make_plan(tmp_path, "DEMO_SPEC_DATA_SCALE=4").stdout.count("--data-scale 4 ") == 2
    wrong = _make_plan(tmp_path, "DEMO_SCALE=week")
    assert wrong.returncode != 0 and "DEMO_SCALE is quarter" in wrong.stderr
    trained = _make_plan(tmp_path, "DEMO_VOCODER_SLOT=trained")
    assert trained.returncode == 0 and trained.stdout.count("--stage vocoder") == 2
    assert "griffin-lim" not in trained.stdout and trained.stdout.count("--preset small") == 6
    wrong = _make_plan(tmp_path, "DEMO_VOCODER_SLOT=wavenet")
    assert wrong.returncode != 0 and "DEMO_VOCODER_SLOT is griffin-lim or trained" in wrong.stderr


@pytest.mark.parametrize("tracks, seed, holdout, per_style", [(98, 867, 0.143, 2), (112, 5665, 0.25, 4)])
def test_demo_corpus_holds_out_every_style_equally(tracks, seed, holdout, per_style):
    from n2m.synth.corpus import CorpusConfig, choose_spec, chosen_for_holdout
    from n2m.synth.styles import STYLES

    config = CorpusConfig(seed=seed, holdout=holdout)
    held = [choose_spec(config, i).style for i in range(tracks) if chosen_for_holdout(i, holdout)]
    assert sorted(held) == sorted(list(STYLES) * per_style)
    assert tracks - len(held) == 84  # both scales train on 84 tracks


# ---------------------------------------------------------------------------------------------------------------------
# The chain


def _installed(name: str) -> None:
    from n2m.errors import UserError
    from n2m.models import model_dir

    try:
        model_dir(name)
    except UserError as err:
        pytest.skip(f"{name} is not installed (run `n2m models fetch`): {err}")


def _train(tmp_path, stage: str, steps: int, run: str) -> None:
    shape = {"spec_generator": ["--labels", "v1", "--text-encoder", "hf:all-MiniLM-L6-v2", "--window", "1",
                                "--weighting", "simplified"],
             "sr_cascader": ["--window", "0.5"]}[stage]
    assert main(["train", "--stage", stage, "--build", str(tmp_path / "out"), "--preset", "tiny", *shape,
                 "--schedule", "cosine", "--parametrisation", "v",
                 "--exclude-holdout", "--out", str(tmp_path / "runs" / run / stage), "--max-steps", str(steps),
                 "--batch-size", "2", "--num-workers", "0", "--val-samples", "0", "--warmup-steps", "1",
                 "--lr", "1e-3", "--ema-decay", "0.5", "--log-every", "1", "--accelerator", "cpu"]) == 0


@pytest.mark.integration
def test_demo_chain(tmp_path, capsys):
    """The demo's commands in order, reduced (tiny networks, a few steps, 2 s clips): not a quality test."""
    for model in ("all-MiniLM-L6-v2", "MSD_musicnn", "MTT_musicnn"):
        _installed(model)
    corpus, out, clap = tmp_path / "corpus", tmp_path / "out", tmp_path / "clap"
    manifest = str(corpus / "manifest.jsonl")
    assert main(["synth", "--out", str(corpus), "--tracks", "8", "--seed", "1", "--min-seconds", "11",
                 "--max-seconds", "12", "--holdout", "0.5", "--formats", "flac,wav"]) == 0
    assert main(["build", "--input", manifest, "--output", str(out), "--clip-seconds", "10", "--split", "train=1.0",
                 "--no-progress"]) == 0
    shards = sorted((out / "shards" / "train").glob("*.tar"))
    assert shards and all(s.with_suffix(".json").is_file() for s in shards)
    index = pq.read_table(out / "index.parquet")
    assert index.num_rows >= 8
    assert main(["vocab", "generate", "--from", manifest, "--llm", "template", "--out", str(tmp_path / "long.parquet"),
                 "--per-track", "1", "--exclude-holdout"]) == 0
    assert main(["vocab", "aspects", "--out", str(tmp_path / "aspects.parquet"), "--skip-aspects", "mood"]) == 0
    assert main(["vocab", "aspects", "--out", str(tmp_path / "mood.parquet"), "--only-aspects", "mood"]) == 0
    assert main(["clap-train", "--build", str(out), "--captions", manifest, "--out", str(clap), "--text-init",
                 "hf:all-MiniLM-L6-v2", "--audio-init", "musicnn:MTT_musicnn", "--max-steps", "5", "--batch-size", "4",
                 "--warmup", "1", "--threads", "1"]) == 0
    assert main(["label", "--build", str(out), "--vocab", str(tmp_path / "long.parquet"), "--vocab",
                 str(tmp_path / "aspects.parquet"), "--vocab", str(tmp_path / "mood.parquet"), "--model", str(clap),
                 "--name", "v1", "--",
                 "--direct_num_workers=1"]) == 0
    assert set(read_label_captions(str(out / "labels" / "v1"))) == set(index["key"].to_pylist())
    label_eval = tmp_path / "label_eval.json"
    assert main(["label-eval", "--labels", str(out / "labels" / "v1"), "--truth", manifest, "--json",
                 str(label_eval)]) == 0

    for stage in STAGES:
        _train(tmp_path, stage, 2, "trained")
        _train(tmp_path, stage, 0, "step0")
    for run, step in (("trained", 2), ("step0", 0)):
        for stage in STAGES:
            ckpt = torch.load(tmp_path / "runs" / run / stage / "checkpoints" / "last.ckpt", map_location="cpu",
                              weights_only=False)
            assert ckpt["global_step"] == step
            assert ckpt["n2m"]["config"]["data"]["exclude_holdout"] is True
    metrics = (tmp_path / "runs" / "trained" / "spec_generator" / "csv" / "metrics.csv").read_text()
    assert "train/loss" in metrics.splitlines()[0]

    prompts = tmp_path / "eval" / "prompts.jsonl"
    assert main(["eval", "prompts", "--manifest", manifest, "--holdout-only", "--out", str(prompts)]) == 0
    rows = [json.loads(line) for line in prompts.read_text().splitlines()]
    truth = [json.loads(line) for line in (corpus / "manifest.jsonl").read_text().splitlines()]
    held = {r["path"].rsplit("/", 1)[-1].rsplit(".", 1)[0]: r["caption"] for r in truth if r["holdout"]}
    assert {r["id"]: r["text"] for r in rows} == held and len(held) == 4

    reports = {}
    for run in ("trained", "step0"):
        ckpts = ",".join(f"{s}={tmp_path / 'runs' / run / s / 'checkpoints' / 'last.ckpt'}" for s in STAGES)
        ckpts = ckpts.replace(",sr_cascader=", ",vocoder=griffin-lim,sr_cascader=")
        samples = tmp_path / "samples" / run
        for out, more in ((samples, ["--seed", "0"]), (tmp_path / "takes" / run, ["--seed", "1", "--num-samples", "2"])):
            assert main(["sample", "--prompts-file", str(prompts), "--cascade", "spectrogram", "--checkpoints", ckpts,
                         "--out", str(out), "--seconds", "2", "--steps", "2", "--sampler", "dpmpp", "--guidance", "3",
                         "--device", "cpu", "--quiet", *more]) == 0
        for ident in held:
            info = sf.info(samples / f"{ident}.wav")
            assert info.samplerate == 24_000 and abs(info.duration - 2.0) < 0.05
            assert (samples / f"{ident}.json").is_file()
        reports[run] = tmp_path / "reports" / run
        assert main(["eval", "musiccaps", "--captions", str(prompts), "--id-column", "id", "--caption-column", "text",
                     "--reference-audio", str(corpus / "audio"), "--embedding", "musicnn", "--probe-labels", manifest,
                     "--probe-column", "style", "--generated", str(samples), "--takes", str(tmp_path / "takes" / run),
                     "--no-cache", "--samples", "100", "--bootstrap", "50", "--out", str(reports[run])]) == 0
        report = json.loads((reports[run] / "report.json").read_text())
        assert report["counts"]["generated_found"] == 4 and report["counts"]["reference_found"] == 4
        assert report["counts"]["takes_found"] == 8 and report["takes"]["per_prompt"] == {i: 2 for i in held}
        probe = report["adherence"]["probe"]["generated"]
        assert probe["n"] == 4 and probe["clips"] == 12 and report["fad"]["musicnn"]["generated"]["files"] == 12
        assert {"FAD_musicnn", "musicnn_probe_accuracy", "musicnn_probe_chance", "musicnn_probe_ceiling",
                "musicnn_tag_gain"} <= set(report["metrics"])
        assert not any(m.startswith(("FAD_CLAP", "CLAP")) for m in report["metrics"])  # no joint model judges
        assert len(report["samples"]) == 4 and all(s.get("generated_tags") for s in report["samples"])

    page = tmp_path / "report.html"
    assert main(["eval", "compare", str(reports["trained"]), str(reports["step0"]), "--baseline", "step0",
                 "--label-eval", str(label_eval), "--precision-aspects", "style,instrument,mood",
                 "--min-probe-ratio", "2", "--tag-gain", "--training-logs",
                 *(str(tmp_path / "runs" / "trained" / s) for s in STAGES),
                 "--out", str(tmp_path / "reports" / "compare"), "--html", str(page)]) == 0
    compare = json.loads((tmp_path / "reports" / "compare" / "compare.json").read_text())
    bars = {b["bar"]: b["result"] for b in compare["quality_bars"]}
    assert {"trained beats step0 on FAD_musicnn by >= 30%", "trained: musicnn probe accuracy >= 2x chance",
            "trained: musicnn tag agreement above shuffled (95% interval above 0)"} <= set(bars)
    assert set(bars.values()) <= {"pass", "fail", "n/a"}
    # one bar per aspect, each from the vocabulary that holds it: moods from their own, the rest from the aspects
    precision_bars = sorted(b for b in bars if b.startswith("label precision"))
    assert precision_bars == [f"label precision on {aspect} >= 3x chance ({vocab}, holdout)" for aspect, vocab in
                              (("instrument", "aspects"), ("mood", "mood"), ("style", "aspects"))]
    html = page.read_text()
    for section in ("Quality bars", "Listen: each prompt", "Label evaluation", "Training curves", "FAD_musicnn",
                    "judged by musicnn"):
        assert section in html
    assert html.index("Quality bars") < html.index("<h2>Metrics")
    assert html.count("<audio") == 3 * len(held)  # trained, step 0 and the real track for every held-out prompt
    assert html.count("<polyline") >= len(STAGES)
    capsys.readouterr()

"""The ``make demo`` chain, reduced, through the real CLI (in process): synth -> build -> vocab -> clap-train -> label
-> label-eval -> train (generator, cascader, sr_cascader; trained and step 0) -> eval prompts -> sample -> eval
musiccaps -> eval compare, checking each artifact's contract on the way. Plus the pieces the demo added: the held-out
clip filter of ``n2m train --exclude-holdout`` and the quality bars of ``n2m eval compare``, against hand-computed
figures.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import torch

from n2m.audio import encode_flac
from n2m.cli import main
from n2m.schema import read_label_captions

STAGES = ("generator", "cascader", "sr_cascader")


# ---------------------------------------------------------------------------------------------------------------------
# Units: the held-out filter and the quality bars


def _sample(key: str, meta: dict) -> dict:
    tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(24_000) / 24_000)[None, :].astype(np.float32)
    return {"__key__": key, "flac": encode_flac(tone, 24_000), "json": json.dumps({"key": key, "meta": meta}).encode()}


@pytest.mark.parametrize("value, dropped", [(True, True), ("true", True), ("1", True), (False, False),
                                            ("false", False), (None, False)])
def test_exclude_holdout_drops_held_out_clips(value, dropped):
    from training.data import ExampleMaker
    from training.stages import get_stage

    meta = {} if value is None else {"holdout": value}
    keep = ExampleMaker(get_stage("sr_cascader"), 12_000, {}, True, exclude_holdout=True)
    example = keep(_sample("k_0000", meta), random.Random(0), 0.0)
    assert (example is None) is dropped
    everything = ExampleMaker(get_stage("sr_cascader"), 12_000, {}, True, exclude_holdout=False)
    assert everything(_sample("k_0000", meta), random.Random(0), 0.0) is not None


def _report(name: str, **metrics: float) -> dict:
    return {"name": name, "metrics": {k: {"value": v} for k, v in metrics.items()}}


def test_quality_bars_from_the_figures():
    from eval.compare_extras import quality_bars

    trained = _report("trained", FAD_CLAP=6.0, CLAP_score=0.30, CLAP_score_shuffled=0.20)
    step0 = _report("step0", FAD_CLAP=10.0, CLAP_score=0.10, CLAP_score_shuffled=0.12)
    label_eval = {"subsets": {"holdout": {"aspects": {"aspects": {
        "style": {"precision": 0.30, "chance": 0.05, "ratio": 6.0},
        "instrument": {"precision": 0.40, "chance": 0.16, "ratio": 2.5}}}}}}
    bars = quality_bars([trained, step0], "step0", 0.3, label_eval, ["style", "instrument"], 3.0, "holdout")
    results = {b["bar"]: b["result"] for b in bars}
    # FAD 6 vs 10 is 40% lower (>= 30%: pass); 0.30 > 0.20 pass; 0.10 < 0.12 fail; 6x pass; 2.5x fail
    assert results == {
        "trained beats step0 on FAD_CLAP by >= 30%": "pass",
        "trained: CLAP score above the shuffled-prompt baseline": "pass",
        "step0: CLAP score above the shuffled-prompt baseline": "fail",
        "label precision on style >= 3x chance (aspects, holdout)": "pass",
        "label precision on instrument >= 3x chance (aspects, holdout)": "fail",
    }
    assert "-40.0%" not in bars[0]["detail"] and "+40.0% lower" in bars[0]["detail"]
    stricter = quality_bars([trained, step0], "step0", 0.5, None, [], 3.0, "holdout")
    assert stricter[0]["result"] == "fail"


# ---------------------------------------------------------------------------------------------------------------------
# The chain


def _train(tmp_path, stage: str, steps: int, run: str, clap) -> None:
    text = ["--text-encoder", f"clap:{clap}"] if stage != "sr_cascader" else []
    shape = {"generator": ["--window", "2", "--net", "strides=[16,16]"], "cascader": ["--window", "0.5"],
             "sr_cascader": ["--window", "0.5"]}[stage]
    assert main(["train", "--stage", stage, "--build", str(tmp_path / "out"), "--labels", "v1", "--preset", "tiny",
                 *text, *shape, "--exclude-holdout", "--out", str(tmp_path / "runs" / run / stage),
                 "--max-steps", str(steps), "--batch-size", "2", "--num-workers", "0", "--val-samples", "0",
                 "--warmup-steps", "1", "--lr", "1e-3", "--ema-decay", "0.5", "--log-every", "1",
                 "--accelerator", "cpu"]) == 0


@pytest.mark.integration
def test_demo_chain(tmp_path, capsys):
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
    assert main(["vocab", "aspects", "--out", str(tmp_path / "aspects.parquet")]) == 0
    assert main(["clap-train", "--build", str(out), "--captions", manifest, "--out", str(clap), "--preset", "micro",
                 "--max-steps", "5", "--batch-size", "4", "--warmup", "1"]) == 0
    assert main(["label", "--build", str(out), "--vocab", str(tmp_path / "long.parquet"), "--vocab",
                 str(tmp_path / "aspects.parquet"), "--model", str(clap), "--name", "v1", "--",
                 "--direct_num_workers=1"]) == 0
    assert set(read_label_captions(str(out / "labels" / "v1"))) == set(index["key"].to_pylist())
    label_eval = tmp_path / "label_eval.json"
    assert main(["label-eval", "--labels", str(out / "labels" / "v1"), "--truth", manifest, "--json",
                 str(label_eval)]) == 0

    for stage in STAGES:
        _train(tmp_path, stage, 2, "trained", clap)
        _train(tmp_path, stage, 0, "step0", clap)
    for run, step in (("trained", 2), ("step0", 0)):
        for stage in STAGES:
            ckpt = torch.load(tmp_path / "runs" / run / stage / "checkpoints" / "last.ckpt", map_location="cpu",
                              weights_only=False)
            assert ckpt["global_step"] == step
            assert ckpt["n2m"]["config"]["data"]["exclude_holdout"] is True
    metrics = (tmp_path / "runs" / "trained" / "generator" / "csv" / "metrics.csv").read_text()
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
        samples = tmp_path / "samples" / run
        assert main(["sample", "--prompts-file", str(prompts), "--cascade", "waveform", "--checkpoints", ckpts,
                     "--out", str(samples), "--seconds", "2", "--steps", "2", "--sampler", "dpmpp", "--seed", "0",
                     "--device", "cpu", "--quiet"]) == 0
        for ident in held:
            info = sf.info(samples / f"{ident}.wav")
            assert info.samplerate == 24_000 and abs(info.duration - 2.0) < 0.05
            assert (samples / f"{ident}.json").is_file()
        reports[run] = tmp_path / "reports" / run
        assert main(["eval", "musiccaps", "--captions", str(prompts), "--id-column", "id", "--caption-column", "text",
                     "--reference-audio", str(corpus / "audio"), "--clap", str(clap), "--generated", str(samples),
                     "--clap-min-seconds", "1", "--no-cache", "--samples", "1", "--out", str(reports[run])]) == 0
        report = json.loads((reports[run] / "report.json").read_text())
        assert report["counts"]["generated_found"] == 4 and report["counts"]["reference_found"] == 4
        assert {"FAD_CLAP", "CLAP_score", "CLAP_score_shuffled"} <= set(report["metrics"])

    page = tmp_path / "report.html"
    assert main(["eval", "compare", str(reports["trained"]), str(reports["step0"]), "--baseline", "step0",
                 "--label-eval", str(label_eval), "--training-logs",
                 *(str(tmp_path / "runs" / "trained" / s) for s in STAGES),
                 "--out", str(tmp_path / "reports" / "compare"), "--html", str(page)]) == 0
    compare = json.loads((tmp_path / "reports" / "compare" / "compare.json").read_text())
    bars = {b["bar"]: b["result"] for b in compare["quality_bars"]}
    assert "trained beats step0 on FAD_CLAP by >= 30%" in bars
    assert set(bars.values()) <= {"pass", "fail", "n/a"}
    assert any(b.startswith("label precision on style") for b in bars)
    html = page.read_text()
    for section in ("Quality bars", "Label evaluation", "Training curves", "FAD_CLAP", "CLAP_score_shuffled"):
        assert section in html
    assert html.count("<polyline") >= len(STAGES)
    capsys.readouterr()

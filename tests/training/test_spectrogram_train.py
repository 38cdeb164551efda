"""``n2m train`` / ``n2m export`` for the spectrogram path's stages on the tiny build (real Lightning Trainer, mel
computed in the loader), then the exports load for sampling."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from n2m.cli import build_parser
from n2m.config import apply_config
from n2m.training.cascade import load_stage

COMMANDS = {"train": ("train", "n2m.training.train_cli"), "export": ("export", "n2m.training.export_cli")}
STEPS = 30


def run_cli(argv: list[str]) -> int:
    parser = build_parser(COMMANDS)
    args = apply_config(parser, parser.parse_args(argv), argv)
    return args.func(args)


@pytest.fixture(scope="module")
def root(tiny_build, tiny_t5, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("spec-runs")
    for stage in ("spec_generator", "vocoder"):
        argv = ["train", "--stage", stage, "--build", tiny_build["root"], "--labels", "tiny", "--preset", "tiny",
                "--text-encoder", f"t5:{tiny_t5}", "--out", str(root / stage), "--window", "0.5", "--batch-size", "4",
                "--num-workers", "0", "--lr", "3e-3", "--warmup-steps", "5", "--log-every", "1", "--val-samples", "4",
                "--accelerator", "cpu", "--devices", "1", "--max-steps", str(STEPS), "--val-every", str(STEPS),
                "--checkpoint-every", str(STEPS)]
        assert run_cli(argv) == 0
        assert run_cli(["export", str(root / stage / "checkpoints" / "last.ckpt"), "--out", str(root / f"{stage}-x")]) == 0
    return root


@pytest.mark.parametrize("stage", ["spec_generator", "vocoder"])
def test_spectrogram_stages_train_and_export(root, stage):
    with open(root / stage / "csv" / "metrics.csv") as handle:
        train = [float(r["train/loss"]) for r in csv.DictReader(handle) if r.get("train/loss")]
    assert len(train) == STEPS
    assert sum(train[-5:]) / 5 < 0.8 * sum(train[:5]) / 5  # it learns

    model = load_stage(root / f"{stage}-x")
    assert model.stage == stage and model.kind == "export"
    assert model.config["diffusion"]["weighting"] == ("sigma" if stage == "spec_generator" else "simplified")
    ckpt = load_stage(root / stage / "checkpoints" / "last.ckpt")
    for a, b in zip(model.model.net.state_dict().values(), ckpt.model.net.state_dict().values()):
        assert torch.equal(a, b)  # export and checkpoint hold the same EMA weights

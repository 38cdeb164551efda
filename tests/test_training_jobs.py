"""The training jobs as Python functions of their typed settings, without argparse: ``n2m train``
(n2m.training.train_job), ``n2m export`` and ``n2m sample`` give what their command lines give; ``quiet`` hides
Lightning's progress bar. (Beside tests/training, whose tiny inputs it borrows from tests/training/builders.py.)"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from n2m.cli import main
from n2m.errors import UserError
from n2m.training.export_job import ExportSettings, run_export
from n2m.training.sample_job import SampleSettings, run_sample
from n2m.training.train_job import TrainSettings, run_train

_spec = importlib.util.spec_from_file_location("training_builders",
                                               Path(__file__).parent / "training" / "builders.py")
builders = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(builders)

TRAIN = {"stage": "generator", "labels": "tiny", "preset": "tiny", "window": "0.5", "batch_size": 4,
         "num_workers": 0, "val_samples": 0, "accelerator": "cpu", "devices": "1", "max_steps": 2, "log_every": 1}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict:
    import torch

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("build")
    builders.write_build(root, {"train": [3, 3]})
    t5 = builders.write_tiny_t5(tmp_path_factory.mktemp("t5"), builders.LONG + builders.SHORT)
    return {"build": str(root), "t5": f"t5:{t5}"}


def _argv(settings: dict) -> list[str]:
    return [item for key, value in settings.items()
            for item in ([f"--{key.replace('_', '-')}"] + ([] if value is True else [str(value)]))]


def test_train_and_export_from_python_give_what_the_cli_gives(inputs, tmp_path, capfd):
    common = {**TRAIN, "build": inputs["build"], "text_encoder": inputs["t5"]}
    assert run_train(TrainSettings(out=str(tmp_path / "py"), quiet=True, **common)) == 0
    quiet = capfd.readouterr()
    assert main(["train", *_argv({**common, "out": str(tmp_path / "cli")})]) == 0
    loud = capfd.readouterr()
    assert "reached step 2" in quiet.out and "reached step 2" in loud.out
    assert "Epoch 0" in loud.out + loud.err and "Epoch 0" not in quiet.out + quiet.err  # quiet: no progress bar
    configs = [json.loads((tmp_path / run / "config.json").read_text()) for run in ("py", "cli")]
    assert configs[0] == configs[1] and configs[0]["trainer"]["max_steps"] == 2

    assert run_export(ExportSettings(checkpoint=str(tmp_path / "py/checkpoints/last.ckpt"),
                                     out=str(tmp_path / "export"))) == 0
    assert "n2m export: generator" in capfd.readouterr().out
    assert (tmp_path / "export" / "model.safetensors").is_file()


def test_a_dry_run_from_python_prints_what_the_cli_prints(capsys):
    assert run_train(TrainSettings(stage="cascader", preset="tiny", dry_run=True)) == 0
    python = capsys.readouterr().out
    assert main(["train", "--stage", "cascader", "--preset", "tiny", "--dry-run"]) == 0
    assert capsys.readouterr().out == python and "parameters: " in python


def test_sample_from_python_writes_what_the_cli_writes(inputs, tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    for seed, stage in enumerate(("generator", "cascader", "sr_cascader")):
        builders.tiny_checkpoint(stage, models / f"{stage}.ckpt", inputs["t5"], seed=seed)
    options = {"cascade": "waveform", "checkpoints": str(models), "seconds": 1.5, "steps": "1", "seed": 5}
    assert run_sample(SampleSettings(prompts=["a calm piano piece"], out=str(tmp_path / "py"), quiet=True,
                                     **options)) == 0
    assert main(["sample", "--prompts", "a calm piano piece", "--out", str(tmp_path / "cli"), "--quiet",
                 *_argv(options)]) == 0
    assert (tmp_path / "py/0000.wav").read_bytes() == (tmp_path / "cli/0000.wav").read_bytes()
    sidecars = [json.loads((tmp_path / run / "0000.json").read_text()) for run in ("py", "cli")]
    assert sidecars[0]["config"].pop("out").endswith("py") and sidecars[1]["config"].pop("out").endswith("cli")
    assert sidecars[0]["config"] == sidecars[1]["config"] and sidecars[0]["seed"] == sidecars[1]["seed"]


@pytest.mark.parametrize(("make", "message"), [
    (lambda: TrainSettings(stage="generator", preset="tiny"), "missing --build, --out"),
    (lambda: SampleSettings(cascade="waveform", checkpoints="m", out="o"), "give --prompts, --prompts-file or"),
])
def test_training_settings_are_checked_at_construction(make, message):
    with pytest.raises(UserError, match=message):
        make()

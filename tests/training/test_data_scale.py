"""A stage trained with ``--data-scale`` and ``--t-min``: the sampler works on the scaled signal, clipping acts in data
units and the stage hands its next stage the signal in data units; ``--t-stop`` returns the estimate at that noise
level; the lowest trained level is read back from the checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pytest
from builders import tiny_checkpoint

from n2m.training.cascade import load_stage
from n2m.training.sampling import generate, load_cascade, stage_settings

CASCADE = ("spec_generator", "vocoder", "sr_cascader")


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_t5):
    work = tmp_path_factory.mktemp("scaled")
    spec = tiny_checkpoint("spec_generator", work / "spec.ckpt", f"t5:{tiny_t5}",
                           extra=("--data-scale", "4", "--parametrisation", "v", "--t-min", "0.3"))
    sr = tiny_checkpoint("sr_cascader", work / "sr.ckpt", f"t5:{tiny_t5}", seed=2)
    return load_cascade("spectrogram", {"spec_generator": spec, "vocoder": "griffin-lim", "sr_cascader": sr})


def constant_x0(model, value: float):
    """A v-prediction network whose x0 estimate is ``value`` everywhere (in the diffusion space):
    ``v = (alpha x_t - x0) / sigma``."""
    schedule = model.denoiser.schedule

    def net(x, t, **_):
        alpha, sigma = (v.view(-1, 1, 1) for v in schedule.alpha_sigma(t))
        return (alpha * x - value) / sigma
    return net


@pytest.mark.parametrize("value, clip, expected", [(2.0, "none", 0.5), (2.0, "static", 0.5), (8.0, "static", 1.0),
                                                    (-8.0, "none", -2.0)])
def test_the_stage_output_is_in_data_units_and_clipped_there(models, value, clip, expected):
    model = models["spec_generator"]
    assert model.config["diffusion"]["data_scale"] == 4.0 and model.denoiser.data_scale == 4.0
    model.denoiser.net = constant_x0(model, value)
    settings = stage_settings(CASCADE, sampler="ddim", steps=3, clip=clip)
    out = generate(["a calm piano"], "spectrogram", models, seconds=0.5, settings=settings, keep_stages=True,
                   progress=False)[0]
    mel = out.stages["spec_generator"][0]
    np.testing.assert_allclose(mel, expected, atol=1e-5)  # x0 / 4, clipped to [-1, 1] of the data, not of x0


def test_t_stop_is_recorded_and_checked(models, tmp_path, capsys):
    from n2m.cli import main

    model = load_stage(models["spec_generator"].path)
    assert model.denoiser.data_scale == 4.0 and model.denoiser.t_min == 0.3  # read back from the checkpoint
    assert models["sr_cascader"].denoiser.t_min == 0.0  # the default: every level trained
    settings = stage_settings(CASCADE, t_stop={"spec_generator": 0.3}, steps=3)
    assert settings["spec_generator"].t_stop == 0.3 and settings["vocoder"].t_stop == 0.0
    out = tmp_path / "out"
    argv = ["sample", "--prompts", "a calm piano", "--cascade", "spectrogram", "--checkpoints",
            f"spec_generator={models['spec_generator'].path},vocoder=griffin-lim,sr_cascader={models['sr_cascader'].path}",
            "--out", str(out), "--steps", "3", "--seconds", "0.5", "--t-stop", "spec_generator=0.3", "--quiet"]
    assert main(argv) == 0
    meta = json.loads((out / "0000.json").read_text())
    assert meta["sampler_settings"]["spec_generator"]["t_stop"] == 0.3
    assert meta["sampler_settings"]["sr_cascader"]["t_stop"] == 0.0
    assert main(argv[:-3] + ["--t-stop", "1.5", "--overwrite", "--quiet"]) == 2
    assert "--t-stop '1.5': expected a number in [0, 1)" in capsys.readouterr().err

"""The stage registry: each stage is one object whose parts fit together (what its example maker makes is what its
network takes; an augmentation exactly for a conditioning signal; its sampling inputs have the network's shape)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from n2m.training.cascade import StageModel
from n2m.training.config import DiffusionConfig
from n2m.training.export import build_model
from n2m.training.module import conditioning_field
from n2m.training.networks.presets import build_network
from n2m.training.stages import STAGES, get_stage


def _clip(seconds: float, sr: int) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)[None]


@pytest.mark.parametrize("name", list(STAGES))
def test_a_stage_makes_the_examples_its_network_takes(name):
    stage = STAGES[name]
    cfg = stage.network("tiny", 32 if stage.text else None)
    window = 2 * cfg.total_stride * (160 if name == "vocoder" else 1)
    example = stage.example.make(_clip(2.0, 24_000), 24_000, stage, window, 0.25)
    field = conditioning_field(cfg)
    assert example["x0"].shape == (cfg.in_channels, window)
    assert set(example) == {"x0"} | ({field} if field else set())
    if field:
        channels = cfg.lowfi_channels if field == "lowfi" else cfg.aligned_channels
        assert example[field].shape[0] == channels
    assert (stage.augmentation is not None) == (field is not None)
    assert stage.to_dict()["example"] == stage.example.name


@pytest.mark.parametrize("name", list(STAGES))
def test_a_stages_sampling_inputs_have_its_networks_shape(name):
    stage = STAGES[name]
    cfg = stage.network("tiny", 32 if stage.text else None)
    diffusion = DiffusionConfig(stage.schedule, stage.parametrisation, stage.weighting, aug_t_max=stage.aug_t_max)
    config = {"stage": name, "spec": stage.to_dict(), "net": cfg.to_dict(), "diffusion": diffusion.to_dict()}
    model = StageModel(build_model(config, build_network(cfg).state_dict(), "random weights"), "-", "-", "export")
    net = model.model.net
    seconds = 0.5
    prev = None
    if not stage.generates:  # the previous stage's output: audio at cond_rate, or 80 mel frames at 100 frames/s
        prev = torch.zeros(2, cfg.aligned_channels or 1, round(seconds * stage.cond_rate))
    got = stage.inputs(model, prev, 2, seconds, 0.3, torch.zeros_like)
    assert got.shape == (2, cfg.in_channels, round(seconds * stage.sample_rate))
    cond = {k: v for k, v in got.cond.kwargs().items() if v is not None}
    if got.aligned:
        assert set(cond) == {*got.aligned, "aug_t"} and torch.allclose(cond["aug_t"], torch.full((2,), 0.3))
    with torch.no_grad():
        out = net(torch.zeros(got.shape), torch.full((2,), 0.5), **cond,
                  **({"text": torch.zeros(2, 3, 32), "text_mask": torch.ones(2, 3, dtype=torch.bool)} if cfg.text_dim
                     else {}))
    assert out.shape == got.shape


def test_unknown_stage_is_a_user_error():
    from n2m.errors import UserError

    with pytest.raises(UserError, match="unknown stage 'choir'; choose from generator, cascader"):
        get_stage("choir")

"""The spectrogram path's stages: paper sizes, training examples, 2D blur augmentation, and a vocoder forward."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage
import torch

from n2m.training.diffusion.denoiser import Conditioning, Denoiser
from n2m.training.diffusion.schedules import get_schedule
from n2m.training.mel import MelFrontend
from n2m.training.networks.presets import build_network, count_parameters
from n2m.training.stages import STAGES
from n2m.training.stages_spectrogram import (
    SpectrogramAugmentation,
    blur_2d,
    spectrogram_example,
    vocoder_example,
)


@pytest.mark.parametrize(
    "name,params,base,strides,mults",
    [
        ("spec_generator", 745e6, 256, [4, 3, 2, 2, 2], [1, 2, 2, 3, 4]),
        ("vocoder", 25.7e6, 128, [2, 4, 4, 5], [1, 1, 2, 4]),
    ],
)
def test_paper_presets_match_the_paper(name, params, base, strides, mults):
    stage = STAGES[name]
    cfg = stage.network("paper", 1024 if stage.text else None)
    assert (cfg.base_channels, cfg.strides, cfg.channel_mults) == (base, strides, mults)
    assert abs(count_parameters(cfg) - params) / params < 0.10
    assert cfg.in_channels == cfg.out_channels == (80 if name == "spec_generator" else 1)


def test_stage_settings_follow_the_paper():
    spec, voc = STAGES["spec_generator"], STAGES["vocoder"]
    assert (spec.weighting, spec.schedule, spec.token_length, spec.text) == ("sigma", "linear", 96, True)
    assert (voc.text, voc.aug_t_max, voc.aug_blur_sigma, voc.sample_rate, voc.cond_rate) == (False, 1.0, (0.2, 1.0), 16000, 100)
    tiny = voc.network("tiny")
    assert tiny.total_stride == 160 and tiny.aligned_channels == 80 and tiny.aug_conditioning


def _clip(seconds: float, sr: int) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.4 * np.sin(2 * np.pi * 330 * t) * (1 + np.sin(2 * np.pi * 0.5 * t)) / 2).astype(np.float32)[None]


def test_examples_are_mel_of_the_16k_window():
    clip = _clip(31.0, 24000)
    spec = spectrogram_example(clip, 24000, STAGES["spec_generator"], 3000, 0.0)
    assert spec["x0"].shape == (80, 3000) and spec["x0"].dtype == np.float32
    assert -1.0 <= spec["x0"].min() and spec["x0"].max() <= 1.0

    voc = vocoder_example(clip, 24000, STAGES["vocoder"], 64000, 0.5)
    assert voc["x0"].shape == (1, 64000) and voc["aligned"].shape == (80, 400)
    expected = MelFrontend()(torch.from_numpy(voc["x0"]))[0].numpy()
    np.testing.assert_allclose(voc["aligned"], expected, atol=1e-6)
    assert vocoder_example(clip, 24000, STAGES["vocoder"], 48123, 0.5)["aligned"].shape == (80, 300)


def test_blur_2d_matches_scipy_gaussian_filter():
    gen = torch.Generator().manual_seed(0)
    mel = torch.rand(3, 80, 50, generator=gen) * 2 - 1
    sigma = torch.tensor([0.2, 0.6, 1.0])
    out = blur_2d(mel, sigma)
    for i, s in enumerate(sigma.tolist()):
        ref = scipy.ndimage.gaussian_filter(mel[i].double().numpy(), s, mode="mirror", radius=2)
        np.testing.assert_allclose(out[i].numpy(), ref, atol=1e-5)
    torch.testing.assert_close(blur_2d(torch.full((1, 80, 20), 0.3), torch.tensor([1.0])), torch.full((1, 80, 20), 0.3))


def test_spectrogram_augmentation_levels_and_identity_at_zero():
    aug = SpectrogramAugmentation(get_schedule("linear"), 1.0, (0.2, 1.0))
    mel = torch.rand(64, 80, 10, generator=torch.Generator().manual_seed(1))
    z, t = aug(mel, generator=torch.Generator().manual_seed(2))
    assert z.shape == mel.shape and float(t.min()) >= 0.0 and float(t.max()) <= 1.0 and float(t.std()) > 0.2
    same = aug.apply(mel, torch.zeros(64), noise=torch.zeros_like(mel))
    torch.testing.assert_close(same, mel, atol=1e-6, rtol=1e-6)


def test_tiny_vocoder_trains_through_the_denoiser_with_aligned_mel():
    torch.manual_seed(0)
    stage = STAGES["vocoder"]
    net = build_network(stage.network("tiny"))
    denoiser = Denoiser(net, get_schedule(stage.schedule), stage.parametrisation, stage.weighting)
    ex = vocoder_example(_clip(1.0, 16000), 16000, stage, 6400, 0.0)
    x0 = torch.from_numpy(ex["x0"])[None].repeat(2, 1, 1)
    mel = torch.from_numpy(ex["aligned"])[None].repeat(2, 1, 1)
    aug = SpectrogramAugmentation(denoiser.schedule, stage.aug_t_max, stage.aug_blur_sigma)
    aligned, aug_t = aug(mel)
    loss = denoiser.loss(x0, Conditioning(aligned=aligned, aug_t=aug_t)).mean()
    loss.backward()
    assert torch.isfinite(loss)
    torch.nn.init.normal_(net.head.weight)  # zero-initialised: make the output depend on the layers below
    t, x_t = torch.full((2,), 0.5), torch.randn_like(x0)
    with torch.no_grad():
        a = net(x_t, t, aligned=mel, aug_t=torch.zeros(2))
        b = net(x_t, t, aligned=-mel, aug_t=torch.zeros(2))
    assert float((a - b).abs().max()) > 1e-4  # the spectrogram reaches the output

"""The waveform path of Noise2Music (arXiv 2302.03917, section 3, tables 7-8): three stages, one entry each.

- ``generator``: text -> 3.2 kHz waveform of full 30 s clips; cosine schedule, 64 text tokens.
- ``cascader``: text + the 3.2 kHz low-fi signal -> 16 kHz, trained on random 3-4 s windows; the low-fi input is
  blurred (10 taps, sigma 0.1-5) and diffused to ``t in [0, 0.5]`` (conditioning augmentation, section 3.1).
- ``sr_cascader``: 16 kHz -> 24 kHz without text; the low-fi input diffused to ``t in [0, 1]``.

Training examples are cut from a clip at the stage's rate; a cascader's low-fi version of its window is made with
:data:`LOWFI_MARGIN_S` of context on both sides (:mod:`n2m.training.lowfi`). At sampling, a cascader's low-fi input is
the previous stage's audio FFT-upsampled to the stage's rate, as in training. Sampling defaults: table 7.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from n2m.audio import resample
from n2m.training.conditioning import fit_frames
from n2m.training.diffusion.augment import ConditioningAugmentation
from n2m.training.diffusion.denoiser import Conditioning
from n2m.training.lowfi import fft_upsample, make_lowfi
from n2m.training.networks.presets import SUPER_RESOLUTION, WAVEFORM_CASCADER, WAVEFORM_GENERATOR
from n2m.training.stage_spec import (
    Example,
    Noise,
    SamplingDefaults,
    StageInput,
    StageSpec,
    augmented,
    generator_inputs,
)

if TYPE_CHECKING:
    from n2m.training.cascade import StageModel

LOWFI_MARGIN_S = 0.25  # context kept on both sides of a window while making its low-fi version (edge effects)


def waveform_example(mono: np.ndarray, sr: int, stage: StageSpec, window: int, offset_frac: float) -> dict:
    """Generator: the clip at the stage rate, a window of ``window`` samples at ``offset_frac`` of the free range."""
    x = resample(mono, sr, stage.sample_rate)
    start = int(offset_frac * max(0, x.shape[1] - window))
    return {"x0": fit_frames(x[:, start:], window)}


def cascade_example(mono: np.ndarray, sr: int, stage: StageSpec, window: int, offset_frac: float) -> dict:
    """Cascader: the target window at the stage rate and its low-fi version (made with some context around it)."""
    x = resample(mono, sr, stage.sample_rate)
    start = int(offset_frac * max(0, x.shape[1] - window))
    margin = int(LOWFI_MARGIN_S * stage.sample_rate)
    lo, hi = max(0, start - margin), min(x.shape[1], start + window + margin)
    lowfi = make_lowfi(x[:, lo:hi], stage.sample_rate, stage.cond_rate)
    return {"x0": fit_frames(x[:, start:], window), "lowfi": fit_frames(lowfi[:, start - lo:], window)}


def upsampler_inputs(model: StageModel, prev: torch.Tensor, batch: int, seconds: float, aug_t: float,
                     noise: Noise) -> StageInput:
    """Cascaders: the previous stage's audio, FFT-upsampled to this stage's rate (as in training, n2m.training.lowfi),
    then diffused to the augmentation level ``aug_t``."""
    length = round(prev.shape[-1] * model.rate / model.cond_rate)
    lowfi, level = augmented(ConditioningAugmentation, model, fft_upsample(prev.float(), length), aug_t, noise)
    return StageInput((batch, model.model.net.cfg.in_channels, length), Conditioning(lowfi=lowfi, aug_t=level),
                      aligned=("lowfi",))


WAVEFORM = Example("waveform", waveform_example)
CASCADE = Example("cascade", cascade_example)

WAVEFORM_STAGES: tuple[StageSpec, ...] = (
    StageSpec(
        name="generator",
        description="text -> 3.2 kHz waveform, full 30 s clips",
        example=WAVEFORM,
        sample_rate=3200,
        cond_rate=None,
        window_s=(30.0, 30.0),
        text=True,
        token_length=64,
        schedule="cosine",
        weighting="simplified",
        parametrisation="eps",
        cfg_dropout=0.1,
        aug_t_max=0.0,
        aug_blur_sigma=None,
        paper_steps=1_600_000,
        architecture=WAVEFORM_GENERATOR,
        inputs=generator_inputs,
        sampling=SamplingDefaults(steps=1000, gamma=0.0, guidance=10.0),
    ),
    StageSpec(
        name="cascader",
        description="text + 3.2 kHz low-fi -> 16 kHz waveform, random 3-4 s windows",
        example=CASCADE,
        sample_rate=16000,
        cond_rate=3200,
        window_s=(3.0, 4.0),
        text=True,
        token_length=64,
        schedule="linear",
        weighting="simplified",
        parametrisation="eps",
        cfg_dropout=0.1,
        aug_t_max=0.5,
        aug_blur_sigma=(0.1, 5.0),
        paper_steps=460_000,
        architecture=WAVEFORM_CASCADER,
        inputs=upsampler_inputs,
        sampling=SamplingDefaults(steps=800, gamma=1.0, guidance=5.0),
        augmentation=ConditioningAugmentation,
    ),
    StageSpec(
        name="sr_cascader",
        description="16 kHz low-fi -> 24 kHz waveform (no text), random 3-4 s windows",
        example=CASCADE,
        sample_rate=24000,
        cond_rate=16000,
        window_s=(3.0, 4.0),
        text=False,
        token_length=0,
        schedule="linear",
        weighting="simplified",
        parametrisation="eps",
        cfg_dropout=0.0,
        aug_t_max=1.0,
        aug_blur_sigma=None,
        paper_steps=270_000,
        architecture=SUPER_RESOLUTION,
        inputs=upsampler_inputs,
        sampling=SamplingDefaults(steps=800, gamma=0.0, guidance=1.0),
        augmentation=ConditioningAugmentation,
    ),
)

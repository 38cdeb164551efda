"""A training stage as one object: what it generates, how it trains and how it samples.

A :class:`StageSpec` holds everything that makes a stage what it is (Noise2Music, arXiv 2302.03917, tables 7-8 and
sections 3-4): rates, training window, text on/off and token length, loss weighting, noise schedule, conditioning
augmentation (its levels and its kind), how a training example is made from a clip, the network architecture the
presets scale, what the stage is given at sampling time and the paper's sampling settings. The stages are the entries
of :data:`n2m.training.stages.STAGES`, written in :mod:`n2m.training.stages_waveform` and :mod:`n2m.training.stages_spectrogram`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from n2m.training.diffusion.augment import ConditioningAugmentation
from n2m.training.diffusion.denoiser import Conditioning
from n2m.training.networks.presets import Architecture, network_config
from n2m.training.networks.unet1d import UNetConfig

if TYPE_CHECKING:
    from n2m.training.cascade import StageModel


@dataclass(frozen=True)
class SamplingDefaults:
    """The paper's sampling settings of a stage (table 7): steps, the ancestral sampler's gamma, the guidance scale."""

    steps: int
    gamma: float
    guidance: float


@dataclass(frozen=True)
class Example:
    """How a training example is made from a decoded clip: ``make(mono [C, T], sr, stage, window, offset_frac)`` ->
    arrays ``{"x0": [C, window], ...conditioning signals [C_k, T_k]}``, the window starting at ``offset_frac`` of the
    free range (:mod:`n2m.training.data` calls it in the loader workers). ``name`` is what a config records."""

    name: str
    make: Callable[[np.ndarray, int, StageSpec, int, float], dict[str, np.ndarray]]


@dataclass
class StageInput:
    """The signal shape ``[B, C, L]`` a stage generates, its conditioning (text added later), and for windowing the
    conditioning fields that run along time and the granularity (samples) at which they may be cut."""

    shape: tuple[int, int, int]
    cond: Conditioning
    aligned: tuple[str, ...] = ()
    frame: int = 1


Noise = Callable[[torch.Tensor], torch.Tensor]  # per-example seeded noise shaped like its argument
# (model, previous stage's output or None, batch, seconds, augmentation level, noise) -> what the stage samples from
Inputs = Callable[["StageModel", "torch.Tensor | None", int, float, float, Noise], StageInput]


@dataclass(frozen=True)
class StageSpec:
    """A training stage. ``window_s`` = (min, max) seconds of a training example (equal for a fixed length)."""

    name: str
    description: str
    example: Example  # how a training example is made from a clip
    sample_rate: int  # rate of the signal the stage generates
    cond_rate: int | None  # rate of the low-fi conditioning (cascaders), None otherwise
    window_s: tuple[float, float]
    text: bool
    token_length: int  # text tokens (0 without text)
    schedule: str  # diffusion.schedules.SCHEDULES key
    weighting: str  # diffusion.denoiser.WEIGHTINGS key
    parametrisation: str  # diffusion.denoiser.PARAMETRISATIONS key
    cfg_dropout: float  # probability of dropping the text of an example (classifier-free guidance)
    aug_t_max: float  # conditioning augmentation: diffusion noise at t in [0, aug_t_max]; 0 = none
    aug_blur_sigma: tuple[float, float] | None  # conditioning augmentation: Gaussian blur sigma range; None = no blur
    paper_steps: int  # training steps in the paper (table 7); the default --max-steps
    architecture: Architecture
    inputs: Inputs  # what the stage samples from, given the previous stage's output
    sampling: SamplingDefaults
    augmentation: type[ConditioningAugmentation] | None = None  # the kind of augmentation of its conditioning signal

    def __post_init__(self) -> None:
        conditioned = self.architecture.lowfi_channels > 0 or self.architecture.aligned_channels > 0
        if conditioned != (self.augmentation is not None):
            raise ValueError(f"stage {self.name}: a conditioning augmentation goes with a conditioning signal")

    @property
    def generates(self) -> bool:
        """A generator: the first stage of a cascade (conditioned on no lower-rate signal; may take a melody)."""
        return self.cond_rate is None

    def network(self, preset: str, text_dim: int | None = None, joint_dim: int = 0,
                melody_channels: int = 0) -> UNetConfig:
        """The preset factory: this stage's network at ``preset`` size (``tiny`` | ``small`` | ``paper``), with the
        text width, the joint-embedding width and the melody channels of its conditioning (:mod:`n2m.training.conditioning`)."""
        return network_config(self.architecture, preset, text_dim if self.text else 0, name=f"{self.name}-{preset}",
                              joint_dim=joint_dim, melody_channels=melody_channels)

    def to_dict(self) -> dict[str, Any]:
        """The ``spec`` section of a config (the example by name; no architecture, inputs or sampling settings)."""
        return {"name": self.name, "description": self.description, "example": self.example.name,
                "sample_rate": self.sample_rate, "cond_rate": self.cond_rate, "window_s": self.window_s,
                "text": self.text, "token_length": self.token_length, "schedule": self.schedule,
                "weighting": self.weighting, "parametrisation": self.parametrisation, "cfg_dropout": self.cfg_dropout,
                "aug_t_max": self.aug_t_max, "aug_blur_sigma": self.aug_blur_sigma, "paper_steps": self.paper_steps}


# ---------------------------------------------------------------------------------------------------------------------
# Sampling-time inputs every family of stages uses


def generator_inputs(model: StageModel, prev: torch.Tensor | None, batch: int, seconds: float, aug_t: float,
                     noise: Noise) -> StageInput:
    """Generators: ``seconds`` of the stage's rate (frames for the spectrogram generator), text only."""
    return StageInput((batch, model.model.net.cfg.in_channels, round(seconds * model.rate)), Conditioning())


def augmented(kind: type[ConditioningAugmentation], model: StageModel, z: torch.Tensor, aug_t: float,
              noise: Noise) -> tuple[torch.Tensor, torch.Tensor]:
    """The conditioning ``z`` ``[B, C, T]`` diffused to the fixed augmentation level ``aug_t`` (no blur) with the
    stage's schedule and per-example noise, and the level ``[B]`` (Ho et al. 2022, section 3: condition on a noised
    input)."""
    aug = kind(model.denoiser.schedule, model.diffusion.aug_t_max)
    t = torch.full((z.shape[0],), float(aug_t), device=z.device)
    return aug.apply(z, t, noise=noise(z)), t

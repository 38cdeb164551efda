"""The stage registry: everything that makes ``generator``, ``cascader`` and ``sr_cascader`` what they are.

One :class:`StageSpec` per stage (Noise2Music, arXiv 2302.03917, tables 7-8 and section 3): rates, training window,
text on/off and token length, loss weighting, noise schedule, conditioning augmentation, the kind of training example
the data module makes (``example``, a key of ``training.data.EXAMPLES``) and the network architecture the presets
scale. A new stage (the spectrogram path) is one more entry here, plus its example maker if it needs a new one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from training.networks.presets import (
    SUPER_RESOLUTION,
    WAVEFORM_CASCADER,
    WAVEFORM_GENERATOR,
    Architecture,
    network_config,
)
from training.networks.unet1d import UNetConfig


@dataclass(frozen=True)
class StageSpec:
    """A training stage. ``window_s`` = (min, max) seconds of a training example (equal for a fixed length)."""

    name: str
    description: str
    example: str  # data.EXAMPLES key: how a training example is made from a clip
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

    @property
    def generates(self) -> bool:
        """A generator: the first stage of a cascade (conditioned on no lower-rate signal; may take a melody)."""
        return self.cond_rate is None

    def network(self, preset: str, text_dim: int | None = None, joint_dim: int = 0,
                melody_channels: int = 0) -> UNetConfig:
        """The preset factory: this stage's network at ``preset`` size (``tiny`` | ``small`` | ``paper``), with the
        text width, the joint-embedding width and the melody channels of its conditioning (:mod:`training.conditioning`)."""
        return network_config(self.architecture, preset, text_dim if self.text else 0, name=f"{self.name}-{preset}",
                              joint_dim=joint_dim, melody_channels=melody_channels)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("architecture")
        return out


STAGES: dict[str, StageSpec] = {
    "generator": StageSpec(
        name="generator",
        description="text -> 3.2 kHz waveform, full 30 s clips",
        example="waveform",
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
    ),
    "cascader": StageSpec(
        name="cascader",
        description="text + 3.2 kHz low-fi -> 16 kHz waveform, random 3-4 s windows",
        example="cascade",
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
    ),
    "sr_cascader": StageSpec(
        name="sr_cascader",
        description="16 kHz low-fi -> 24 kHz waveform (no text), random 3-4 s windows",
        example="cascade",
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
    ),
}


def get_stage(name: str) -> StageSpec:
    if name not in STAGES:
        raise KeyError(f"unknown stage {name!r}; choose from {sorted(STAGES)}")
    return STAGES[name]


# the spectrogram path (spec_generator, vocoder) adds its stages to STAGES: training/stages_spectrogram.py
import training.stages_spectrogram  # noqa: E402, F401

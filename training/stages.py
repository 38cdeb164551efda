"""The stage registry: every stage of the two Noise2Music cascades (arXiv 2302.03917, tables 7-8), by name.

A stage is one :class:`n2m.training.stage_spec.StageSpec` (spec, example maker, conditioning augmentation, sampling-time
inputs, paper sampling settings, network architecture); the waveform stages are written in
:mod:`n2m.training.stages_waveform`, the spectrogram path's in :mod:`n2m.training.stages_spectrogram`. A new stage is one more
entry in either (a new family of stages: its own module, added to :data:`STAGES` here), plus its ``Architecture`` if
its network has a new shape.
"""

from __future__ import annotations

from n2m.errors import UserError
from n2m.training.stage_spec import StageSpec
from n2m.training.stages_spectrogram import SPECTROGRAM_STAGES
from n2m.training.stages_waveform import WAVEFORM_STAGES

STAGES: dict[str, StageSpec] = {stage.name: stage for stage in (*WAVEFORM_STAGES, *SPECTROGRAM_STAGES)}


def get_stage(name: str) -> StageSpec:
    """The stage called ``name``; a one-line :class:`UserError` naming the stages for any other name."""
    if name not in STAGES:
        raise UserError(f"unknown stage {name!r}; choose from {', '.join(STAGES)}")
    return STAGES[name]

"""The two Noise2Music cascades, their stage models and what each stage is conditioned on at sampling time.

- ``waveform``: generator (text -> 3.2 kHz) -> cascader (text + low-fi -> 16 kHz) -> sr_cascader (16 -> 24 kHz).
- ``spectrogram``: spec_generator (text -> log-mel, 100 frames/s) -> vocoder (mel -> 16 kHz) -> sr_cascader.

A stage model comes from an export directory (``n2m export``: safetensors + config.json) or a Lightning checkpoint
(``n2m train``: its EMA weights); both carry the stage's config, so :func:`check_cascade` can refuse a model in the
wrong place (wrong stage, rates that do not chain, a spectrogram of the wrong size) with one clear line. The vocoder's
slot also takes ``griffin-lim``, a vocoder with nothing to train (:mod:`n2m.training.griffin_lim`; kind ``classical``).

What a stage samples from (its inputs) and its paper sampling settings are part of the stage
(:class:`n2m.training.stage_spec.StageSpec`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from n2m.config import checked
from n2m.errors import UserError
from n2m.provenance import dir_hash, file_hash, sha1_bytes
from n2m.training.conditioning import StageConditioning
from n2m.training.config import DiffusionConfig
from n2m.training.diffusion.denoiser import Denoiser
from n2m.training.export import Exported, load_checkpoint, load_exported
from n2m.training.griffin_lim import NAME as GRIFFIN_LIM
from n2m.training.griffin_lim import GriffinLim

OUTPUT_RATE = 24_000

CASCADES: dict[str, tuple[str, str, str]] = {
    "waveform": ("generator", "cascader", "sr_cascader"),
    "spectrogram": ("spec_generator", "vocoder", "sr_cascader"),
}


# ---------------------------------------------------------------------------------------------------------------------
# Stage models


@dataclass
class StageModel:
    """A loaded stage: the EMA network's denoiser, its config, and where it came from (path + SHA-1)."""

    model: Exported
    path: str
    sha1: str
    kind: str  # "export" | "checkpoint" | "classical" (nothing trained: n2m.training.griffin_lim)

    @property
    def stage(self) -> str:
        return self.model.stage

    @property
    def config(self) -> dict[str, Any]:
        return self.model.config

    @property
    def denoiser(self) -> Denoiser:
        return self.model.denoiser

    @property
    def diffusion(self) -> DiffusionConfig:
        return self.model.diffusion

    @property
    def rate(self) -> int:
        return int(self.config["spec"]["sample_rate"])

    @property
    def cond_rate(self) -> int | None:
        rate = self.config["spec"].get("cond_rate")
        return None if rate is None else int(rate)

    def text_encoder_spec(self) -> str | None:
        """A loadable ``KIND:DIR`` of the encoder this model was trained with (:func:`n2m.training.encoder_ref.resolve`:
        the recorded path, else a folder with the recorded content near the model); None for stages without text."""
        from n2m.training.encoder_ref import resolve

        spec = self.config.get("text_encoder")
        if not spec:
            return None
        return resolve(spec, (self.config.get("lineage") or {}).get("text_encoder_sha1"), self.path)

    @property
    def conditioning(self) -> StageConditioning:
        """What the stage is conditioned on besides its input signal (captions, joint embedding, melody)."""
        return StageConditioning.of(self.config)

    @property
    def conditioned(self) -> bool:
        """Whether classifier-free guidance applies: the stage takes text or a joint embedding."""
        cfg = self.model.net.cfg
        return cfg.text_dim > 0 or cfg.joint_dim > 0

    def provenance(self) -> dict[str, Any]:
        lineage = self.config.get("lineage") or {}
        return {"stage": self.stage, "path": self.path, "sha1": self.sha1, "kind": self.kind,
                "preset": self.config.get("preset"), "build_id": lineage.get("build_id"),
                "labels": lineage.get("labels"), "text_encoder": self.config.get("text_encoder"),
                "conditioning": self.conditioning.to_dict(),
                "global_step": (self.config.get("source") or {}).get("global_step")}


def load_stage(path: str | Path, device: str | torch.device = "cpu") -> StageModel:
    """A stage model from an export directory or a ``.ckpt`` file; ``griffin-lim`` (when no such file exists) is the
    classical vocoder of :mod:`n2m.training.griffin_lim`."""
    path = Path(path)
    if str(path) == GRIFFIN_LIM and not path.exists():
        inversion = GriffinLim().to(device)
        config = inversion.config()
        digest = sha1_bytes(json.dumps(config, sort_keys=True).encode())
        return StageModel(Exported(inversion, None, config, None), GRIFFIN_LIM, digest, "classical")
    if path.is_dir():
        return StageModel(load_exported(path, device), str(path), dir_hash(path), "export")
    if path.is_file():
        return StageModel(load_checkpoint(path, device), str(path), file_hash(path), "checkpoint")
    raise UserError(f"checkpoint {path} does not exist")


def _in_dir(root: Path, stage: str) -> Path:
    """Where a stage's model sits in a checkpoint directory: ``ROOT/STAGE`` (export), ``ROOT/STAGE.ckpt``, or
    ``ROOT/STAGE/checkpoints/{best,last}.ckpt`` (an ``n2m train`` run directory)."""
    candidates = [root / stage / "config.json", root / f"{stage}.ckpt", root / stage / "checkpoints" / "best.ckpt",
                  root / stage / "checkpoints" / "last.ckpt"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.parent if candidate.name == "config.json" else candidate
    raise UserError(f"no {stage} model in {root}: expected {stage}/ (n2m export), {stage}.ckpt or {stage}/checkpoints/")


def resolve_checkpoints(cascade: str, checkpoints: str | Path | dict[str, str | Path]) -> dict[str, Path]:
    """Stage -> model path for a cascade, from a directory or a ``{stage: path}`` mapping (every stage needed)."""
    stages = cascade_stages(cascade)
    if isinstance(checkpoints, dict):
        unknown = set(checkpoints) - set(stages)
        if unknown:
            raise UserError(f"the {cascade} cascade has no stage {sorted(unknown)[0]!r}; its stages: {', '.join(stages)}")
        missing = [s for s in stages if s not in checkpoints]
        if missing:
            raise UserError(f"the {cascade} cascade needs a {missing[0]} checkpoint")
        return {s: Path(checkpoints[s]) for s in stages}
    root = Path(checkpoints)
    if not root.is_dir():
        raise UserError(f"checkpoint directory {root} does not exist")
    return {s: _in_dir(root, s) for s in stages}


def cascade_stages(cascade: str) -> tuple[str, ...]:
    if cascade not in CASCADES:
        raise UserError(f"unknown cascade {cascade!r}; choose from {', '.join(CASCADES)}")
    return CASCADES[cascade]


def check_cascade(cascade: str, models: dict[str, StageModel]) -> None:
    """Refuse models in the wrong place: each must be its slot's stage, and each stage's output rate (and, for the
    spectrogram, its channel count) must be what the next stage is conditioned on; the last must make 24 kHz."""
    stages = cascade_stages(cascade)
    for slot in stages:
        got = models[slot]
        if got.stage != slot:
            raise UserError(f"{got.path} is a {got.stage} model, but the {cascade} cascade needs a {slot} here")
    for first, second in zip(stages, stages[1:]):
        a, b = models[first], models[second]
        if b.cond_rate != a.rate:
            raise UserError(f"{b.path} ({second}) is conditioned on {b.cond_rate} Hz but {a.path} ({first}) "
                            f"makes {a.rate} Hz")
        made, wanted = a.model.net.cfg.out_channels, b.model.net.cfg
        needed = wanted.aligned_channels or wanted.lowfi_channels
        if made != needed:
            raise UserError(f"{b.path} ({second}) takes {needed} conditioning channels but {a.path} ({first}) makes {made}")
    last = models[stages[-1]]
    if last.rate != OUTPUT_RATE:
        raise UserError(f"{last.path} ({last.stage}) makes {last.rate} Hz audio; the cascade must end at {OUTPUT_RATE} Hz")


def per_stage(text: str | None, cast: Callable[[str], Any], name: str) -> Any:
    """``"V"`` -> V, ``"stage=V,stage=V"`` -> {stage: V}; None stays None. ``cast`` may be a number type of
    :mod:`n2m.config` (its range message is kept: ``--NAME 'TEXT': expected ...``)."""
    if text is None:
        return None
    what = f"--{name} {text!r}"
    try:
        if "=" not in text:
            return checked(text, cast, what)
        pairs = (item.split("=", 1) for item in text.split(",") if item.strip())
        return {stage.strip(): checked(value.strip(), cast, what) for stage, value in pairs}
    except ValueError as err:
        raise UserError(f"--{name} takes a value or stage=value pairs, got {text!r}") from err


def checkpoint_spec(text: str) -> str | dict[str, str]:
    """``--checkpoints``: a directory, or ``stage=path`` pairs."""
    if "=" not in text:
        return text
    return per_stage(text, str, "checkpoints")

"""Typed training configs: the sections of a run's config as dataclasses, validated once, read and written as dicts.

A run's config (``RUNDIR/config.json``, every checkpoint's ``n2m.config``; its model sections travel into an export's
``config.json``) is one JSON object with the sections ``stage``, ``preset``, ``spec``, ``net``, ``text_encoder``,
``conditioning``, ``diffusion``, ``optim``, ``data``, ``trainer``, ``lineage`` and ``versions``. :class:`TrainConfig`
reads (``from_dict``) and writes (``to_dict``) exactly that format: a config written by any earlier n2m train loads,
and one written by this version round-trips unchanged. Every value is checked when a section is made (from flags,
from a file or from code), each bad one a one-line :class:`UserError` naming ``section.key``; what reads a config
afterwards trusts it. The Noise2Music defaults (arXiv 2302.03917, section 4: Adam (0.9, 0.999), peak learning rate
1e-4, 10k warm-up steps, EMA 0.9999) are the field defaults, and ``n2m train``'s flags take theirs from here.

:meth:`DiffusionConfig.denoiser` is the one place a :class:`n2m.training.diffusion.denoiser.Denoiser` is built from a
config.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

import torch

from n2m.config import FRACTION, NONNEGATIVE, NONNEGATIVE_INT, POSITIVE, POSITIVE_INT, checked, number
from n2m.errors import UserError
from n2m.training.conditioning import StageConditioning
from n2m.training.diffusion.denoiser import PARAMETRISATIONS, WEIGHTINGS, Denoiser
from n2m.training.diffusion.schedules import SCHEDULES, get_schedule
from n2m.training.networks.presets import PRESETS
from n2m.training.networks.unet1d import UNetConfig
from n2m.training.stages import STAGES

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
UNIT_OPEN = number(float, low=0, high=1, high_open=True)  # [0, 1): an EMA decay, an Adam beta, a noise level


def _choice(value: Any, names: Iterable[str], what: str) -> str:
    names = list(names)
    if value not in names:
        raise UserError(f"{what}: {value!r} is not one of {', '.join(names)}")
    return value


def _pair(value: Any, parse: Callable[[Any], float], what: str) -> tuple[float, float]:
    """Two numbers, each checked by ``parse``."""
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise UserError(f"{what}: expected two numbers, got {value!r}")
    return tuple(checked(v, parse, what) for v in value)


def _range(value: Any, what: str) -> tuple[float, float] | None:
    """``[low, high]`` of positive numbers, low <= high (None stays None)."""
    if value is None:
        return None
    low, high = _pair(value, POSITIVE, what)
    if low > high:
        raise UserError(f"{what}: low {low:g} is above high {high:g}")
    return (low, high)


class _Section:
    """A config section: a frozen dataclass whose ``_checks`` (field -> parser) run when it is made."""

    _name = ""
    _checks: Mapping[str, Callable[[Any], Any]] = {}

    def __post_init__(self) -> None:
        for name, parse in self._checks.items():
            object.__setattr__(self, name, checked(getattr(self, name), parse, f"{self._name}.{name}"))

    def to_dict(self) -> dict[str, Any]:
        """The section as a config file holds it (tuples as lists)."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, section: Mapping[str, Any]):
        """The section from a config file, refusing unknown keys and missing required ones in one line."""
        if not isinstance(section, Mapping):
            raise UserError(f"config section {cls._name!r} must be a mapping, got {type(section).__name__}")
        known = [f.name for f in fields(cls)]
        unknown = [k for k in section if k not in known]
        if unknown:
            raise UserError(f"config section {cls._name!r} has no setting {unknown[0]!r} (settings: {', '.join(known)})")
        try:
            return cls(**section)
        except TypeError as err:  # a required field is missing
            raise UserError(f"config section {cls._name!r} is incomplete ({err})") from None


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


@dataclass(frozen=True)
class DiffusionConfig(_Section):
    """``diffusion``: noise schedule, parametrisation, loss weighting, data scale and the lowest noise level trained
    (``t_min``) (:mod:`n2m.training.diffusion`), dropout of the text and of the joint audio embedding (classifier-free
    guidance), the joint embedding's perturbation while training (``joint_noise``,
    :func:`n2m.training.diffusion.denoiser.perturb_joint`), conditioning augmentation (max level and blur range) and the
    text tokens."""

    schedule: str
    parametrisation: str
    weighting: str
    cfg_dropout: float = 0.0
    audio_dropout: float = 0.0
    joint_noise: float = 0.0
    aug_t_max: float = 0.0
    aug_blur_sigma: tuple[float, float] | None = None
    token_length: int = 0
    data_scale: float = 1.0
    t_min: float = 0.0

    _name = "diffusion"
    _checks = {"schedule": lambda v: _choice(v, SCHEDULES, "diffusion.schedule"),
               "parametrisation": lambda v: _choice(v, PARAMETRISATIONS, "diffusion.parametrisation"),
               "weighting": lambda v: _choice(v, WEIGHTINGS, "diffusion.weighting"),
               "cfg_dropout": FRACTION, "audio_dropout": FRACTION, "joint_noise": NONNEGATIVE, "aug_t_max": FRACTION,
               "aug_blur_sigma": lambda v: _range(v, "diffusion.aug_blur_sigma"), "token_length": NONNEGATIVE_INT,
               "data_scale": POSITIVE, "t_min": UNIT_OPEN}

    def denoiser(self, net: Callable[..., torch.Tensor]) -> Denoiser:
        """The denoiser of ``net`` under this schedule, parametrisation, weighting, data scale and ``t_min``."""
        return Denoiser(net, get_schedule(self.schedule), self.parametrisation, self.weighting, self.data_scale,
                        self.t_min)


@dataclass(frozen=True)
class OptimConfig(_Section):
    """``optim``: the optimiser and its learning-rate schedule (linear warm-up, then cosine decay to ``min_lr_ratio``
    of the peak at ``decay_steps``), the EMA decay of the weights used to validate and export, gradient clipping."""

    optimizer: str = "adam"
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    warmup_steps: int = 10_000
    decay_steps: int = 2_500_000
    min_lr_ratio: float = 0.0
    ema_decay: float = 0.9999
    grad_clip: float = 1.0
    compile: bool = False

    _name = "optim"
    _checks = {"optimizer": lambda v: _choice(v, OPTIMIZERS, "optim.optimizer"), "lr": POSITIVE,
               "betas": lambda v: _pair(v, UNIT_OPEN, "optim.betas"), "weight_decay": NONNEGATIVE,
               "warmup_steps": NONNEGATIVE_INT, "decay_steps": POSITIVE_INT, "min_lr_ratio": FRACTION,
               "ema_decay": UNIT_OPEN, "grad_clip": NONNEGATIVE, "compile": bool}

    def make(self, params: Iterable[torch.nn.Parameter], fused: bool = False) -> torch.optim.Optimizer:
        """The optimiser over ``params`` (``fused``: one kernel for the whole update, CUDA only)."""
        return OPTIMIZERS[self.optimizer](params, lr=self.lr, betas=self.betas, weight_decay=self.weight_decay,
                                          fused=fused)


def _window(value: Any) -> tuple[float, float] | None:
    """The training window ``[min, max]`` seconds, 0 < min <= max (None: the stage's own)."""
    if value is None:
        return None
    low, high = _pair(value, number(float), "data.window_s")
    if not 0 < low <= high:
        raise UserError(f"window must be 0 < min <= max seconds, got {value!r}")
    return (low, high)


def _batch_size(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"batch size must be at least 1, got {value!r}")
    return value


@dataclass(frozen=True)
class DataConfig(_Section):
    """``data``: the build and label set, batches per device, loader workers, the shuffle buffer, the training window
    (None: the stage's own), the captions' sources, the fixed validation set, the seed and the text-encoder cache."""

    build: str | None  # None only in a dry run's config
    labels: str | None = None
    batch_size: int = 8
    num_workers: int = 2
    shuffle_buffer: int = 256
    window_s: tuple[float, float] | None = None
    meta_text: bool = True  # add the clip json's text[] to the caption items
    exclude_holdout: bool = False  # skip clips whose source is marked held out (clip json meta.holdout)
    val_samples: int = 64
    seed: int = 0
    text_cache: int = 0  # encoded captions kept in an LRU in front of the text encoder (0 = off)

    _name = "data"
    _checks = {"build": lambda v: v if v is None else str(v), "batch_size": _batch_size, "num_workers": NONNEGATIVE_INT,
               "shuffle_buffer": POSITIVE_INT, "window_s": _window, "meta_text": bool, "exclude_holdout": bool,
               "val_samples": NONNEGATIVE_INT, "seed": number(int), "text_cache": NONNEGATIVE_INT}


@dataclass(frozen=True)
class TrainerConfig(_Section):
    """``trainer``: Lightning's run settings (how long and where to train, how often to validate, checkpoint and
    log). ``max_minutes`` > 0 also stops a run after that much wall-clock time (:class:`n2m.budget.TimeBudget`; its
    learning-rate schedule then runs on the larger of the step and time fractions used)."""

    max_steps: int
    accelerator: str = "auto"
    devices: str | int = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    val_every: int = 1000
    checkpoint_every: int = 1000
    log_every: int = 50
    max_minutes: float = 0.0

    _name = "trainer"
    _checks = {"max_steps": NONNEGATIVE_INT, "max_minutes": NONNEGATIVE, "num_nodes": POSITIVE_INT,
               "val_every": POSITIVE_INT, "checkpoint_every": POSITIVE_INT, "log_every": POSITIVE_INT}


# ---------------------------------------------------------------------------------------------------------------------
# The whole config


@dataclass(frozen=True)
class TrainConfig:
    """A run's resolved config (see the module docstring). ``spec`` is the stage's record as the run saw it
    (:meth:`n2m.training.stage_spec.StageSpec.to_dict`), ``lineage`` the build, label set and text encoder identity,
    ``versions`` the packages that trained it."""

    stage: str
    preset: str
    spec: dict[str, Any]
    net: UNetConfig
    text_encoder: str | None
    conditioning: StageConditioning
    diffusion: DiffusionConfig
    optim: OptimConfig
    data: DataConfig
    trainer: TrainerConfig
    lineage: dict[str, Any]
    versions: dict[str, Any]

    def __post_init__(self) -> None:
        _choice(self.stage, STAGES, "stage")
        _choice(self.preset, PRESETS, "preset")

    def to_dict(self) -> dict[str, Any]:
        """The config as ``config.json`` and checkpoints hold it."""
        return {"stage": self.stage, "preset": self.preset, "spec": self.spec, "net": self.net.to_dict(),
                "text_encoder": self.text_encoder, "conditioning": self.conditioning.to_dict(),
                "diffusion": self.diffusion.to_dict(), "optim": self.optim.to_dict(), "data": self.data.to_dict(),
                "trainer": self.trainer.to_dict(), "lineage": self.lineage, "versions": self.versions}

    @classmethod
    def from_dict(cls, config: Mapping[str, Any], source: str = "config") -> TrainConfig:
        """A config as :meth:`to_dict` writes it (``conditioning`` may be missing: configs written before it existed
        are text-conditioned); ``source`` (a file) starts every error line."""
        try:
            missing = [k for k in ("stage", "preset", "spec", "net", "diffusion", "optim", "data", "trainer")
                       if k not in config]
            if missing:
                raise UserError(f"missing section {missing[0]!r}")
            return cls(stage=config["stage"], preset=config["preset"], spec=dict(config["spec"]),
                       net=network_config(config["net"]), text_encoder=config.get("text_encoder"),
                       conditioning=StageConditioning.of(config),
                       diffusion=DiffusionConfig.from_dict(config["diffusion"]),
                       optim=OptimConfig.from_dict(config["optim"]), data=DataConfig.from_dict(config["data"]),
                       trainer=TrainerConfig.from_dict(config["trainer"]), lineage=dict(config.get("lineage") or {}),
                       versions=dict(config.get("versions") or {}))
        except UserError as err:
            raise UserError(f"{source}: {err}") from None

    def resumed_as(self, new: TrainConfig) -> TrainConfig:
        """This saved config continued with ``new``'s run settings: how long and where to run (``trainer``) and the
        loader workers may change; what is trained may not."""
        return replace(self, trainer=new.trainer, data=replace(self.data, num_workers=new.data.num_workers))


def network_config(section: Any) -> UNetConfig:
    """The network of a config's ``net`` section, with a one-line error for one that does not describe a network."""
    try:
        return section if isinstance(section, UNetConfig) else UNetConfig.from_dict(dict(section))
    except (KeyError, TypeError, ValueError) as err:
        raise UserError(f"the network config is not valid ({err})") from None

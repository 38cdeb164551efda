"""The ``n2m train`` job: train one stage of the Noise2Music cascade from a build's shards and a label set.

Before training, every shard is checked against its commit marker (byte count and SHA-1), the label set must have
been made from this build, and at least one training example must be possible (n2m.layout, n2m.training.data_checks).
The resolved config (:class:`n2m.training.config.TrainConfig`: sections ``net``, ``diffusion``, ``optim``, ``data``,
``trainer``, ``lineage`` and ``conditioning``: captions, the joint model's audio embedding or both, and the melody,
:mod:`n2m.training.conditioning`) is printed by ``--dry-run`` (which reads no build, weights or text encoder), written to
``RUNDIR/config.json`` and stored in every checkpoint. ``RUNDIR`` gets ``checkpoints/last.ckpt``
(every ``--checkpoint-every`` steps and at the end) and ``checkpoints/best.ckpt`` (lowest validation loss), CSV logs
under ``csv/`` and TensorBoard logs under ``tb/``. Multi-GPU and multi-node runs use Lightning's own flags, ``--devices`` per node and ``--num-nodes``: one
``n2m train`` per node, started by torchrun, SLURM's srun, or by hand with ``NODE_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT`` set (docs/scaling.md); each rank reads its own shards of every epoch (n2m.training.data).

The job is :func:`run_train` of :class:`TrainSettings` (the command line: :mod:`n2m.training.train_cli`). From Python::

    from n2m.training.train_job import TrainSettings, run_train
    run_train(TrainSettings(stage="generator", build="out/", labels="v1", preset="tiny", out="runs/gen",
                            text_encoder="hf:all-MiniLM-L6-v2", max_steps=100, quiet=True))
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from n2m.config import POSITIVE, checked
from n2m.errors import UserError
from n2m.layout import BuildLayout, build_id, check_label_set, committed_shards
from n2m.names import check_name
from n2m.progress import honours_quiet
from n2m.provenance import file_hash, versions
from n2m.storage import write_json
from n2m.training.conditioning import MELODY_CHANNELS, resolve_conditioning
from n2m.training.config import (
    DataConfig,
    DiffusionConfig,
    OptimConfig,
    TrainConfig,
    TrainerConfig,
    network_config,
)
from n2m.training.networks.presets import PAPER_TEXT_DIM, count_parameters
from n2m.training.stages import STAGES, get_stage

# Set by what starts one process per node (by hand, torchrun, SLURM, LSF, MPI); Lightning reads the node rank from them
_LAUNCHER_ENV = ("NODE_RANK", "GROUP_RANK", "RANK", "SLURM_NTASKS", "LSB_JOBID", "OMPI_COMM_WORLD_SIZE")


@dataclass(frozen=True, kw_only=True)
class TrainSettings:
    """What ``n2m train`` does: one field per option (``n2m train --help`` says what each means). ``stage``,
    ``build``, ``preset`` and ``out`` are required (``stage`` and ``preset`` with ``dry_run``; ``preset`` alone counts
    every stage's parameters); unset diffusion fields take the stage's values, unset ``max_steps`` the paper's."""

    stage: str | None = None
    build: str | None = None
    labels: str | None = None
    preset: str | None = None
    text_encoder: str | None = None
    out: str | None = None
    net: list[str] = field(default_factory=list)
    max_steps: int | None = None
    max_minutes: float = TrainerConfig.max_minutes
    batch_size: int = DataConfig.batch_size
    optimizer: str = OptimConfig.optimizer
    lr: float = OptimConfig.lr
    weight_decay: float = OptimConfig.weight_decay
    warmup_steps: int = OptimConfig.warmup_steps
    decay_steps: int = OptimConfig.decay_steps
    min_lr_ratio: float = OptimConfig.min_lr_ratio
    ema_decay: float = OptimConfig.ema_decay
    grad_clip: float = OptimConfig.grad_clip
    compile: bool = False
    schedule: str | None = None
    parametrisation: str | None = None
    weighting: str | None = None
    data_scale: float = DiffusionConfig.data_scale
    t_min: float = DiffusionConfig.t_min
    cfg_dropout: float | None = None
    aug_t_max: float | None = None
    window: str | None = None
    num_workers: int = DataConfig.num_workers
    shuffle_buffer: int = DataConfig.shuffle_buffer
    no_meta_text: bool = False
    exclude_holdout: bool = False
    text_cache: int = DataConfig.text_cache
    val_samples: int = DataConfig.val_samples
    seed: int = DataConfig.seed
    accelerator: str = TrainerConfig.accelerator
    devices: str = TrainerConfig.devices
    num_nodes: int = TrainerConfig.num_nodes
    strategy: str = TrainerConfig.strategy
    precision: str | None = None
    val_every: int = TrainerConfig.val_every
    checkpoint_every: int = TrainerConfig.checkpoint_every
    log_every: int = TrainerConfig.log_every
    resume: str | None = None
    dry_run: bool = False
    quiet: bool = False
    condition: str = "text"
    joint_model: str | None = None
    audio_dropout: float | None = None
    joint_noise: float = 0.0
    melody: bool = False

    def __post_init__(self) -> None:
        if self.every_stage:
            return
        needed = ("stage", "preset") if self.dry_run else ("stage", "build", "preset", "out")
        missing = [f"--{k.replace('_', '-')}" for k in needed if getattr(self, k) in (None, "")]
        if missing:
            raise UserError(f"missing {', '.join(missing)} (give them as flags or in --config)")

    @property
    def every_stage(self) -> bool:
        """A dry run without a stage: every stage's parameter count at ``preset``."""
        return self.dry_run and not self.stage and bool(self.preset)


# ---------------------------------------------------------------------------------------------------------------------
# Resolving the config


def _window(text: str | None) -> tuple[float, float] | None:
    """``--window MIN[,MAX]`` in seconds, each finite and positive (:class:`DataConfig` checks MIN <= MAX)."""
    if text is None:
        return None
    parts = [p for p in str(text).split(",")]
    if len(parts) not in (1, 2):
        raise UserError(f"--window takes MIN[,MAX] seconds, got {text!r}")
    low, high = (checked(p, POSITIVE, "--window") for p in (parts[0], parts[-1]))
    return (low, high)


def _net_overrides(net: dict[str, Any], items: list[str]):
    """The stage's network config with ``--net KEY=VALUE`` overrides (values read as YAML)."""
    out = dict(net)
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in out:
            raise UserError(f"--net takes KEY=VALUE with KEY one of {sorted(out)}, got {item!r}")
        out[key] = yaml.safe_load(value)
    try:
        return network_config(out)
    except UserError as err:
        raise UserError(f"bad --net override: {err}") from None


def _lineage(settings: TrainSettings, strict: bool) -> dict[str, Any]:
    """Build id, label set (refused unless made from this build) and text encoder identity (absolute path + content
    hash, :mod:`n2m.training.encoder_ref`) recorded with the run; a dry run without ``--build`` records none."""
    from n2m.training.encoder_ref import record

    out: dict[str, Any] = {"build": settings.build and str(settings.build), "labels": settings.labels,
                           "text_encoder": settings.text_encoder}
    out["build_id"] = (build_id(settings.build) or None) if settings.build else None
    layout = BuildLayout(settings.build or "")
    if strict and not out["build_id"]:
        raise UserError(f"{layout.build_json} is missing: is {settings.build} an n2m build?")
    if settings.labels and strict:
        check_label_set(settings.build, settings.labels)
        out["label_manifest_sha1"] = file_hash(layout.label_manifest(settings.labels))
    if settings.text_encoder and strict:
        out.update(record(settings.text_encoder))
    return out


def resolve_config(settings: TrainSettings, strict: bool = True) -> TrainConfig:
    """The full training config from the command line (see the module docstring). Not ``strict`` (``--dry-run``):
    nothing on disk is read but what the flags name, and a text stage without ``--text-encoder`` counts a
    :data:`PAPER_TEXT_DIM`-wide one."""
    from n2m.training.encoder_ref import absolute
    from n2m.training.text import text_width

    stage = get_stage(settings.stage)
    if settings.labels is not None:
        check_name(settings.labels, "--labels")
    conditioning = resolve_conditioning(settings, stage, strict)
    text = stage.text and conditioning.text
    if text and not settings.text_encoder and strict:
        raise UserError(f"stage {stage.name} is text-conditioned: pass --text-encoder hf:DIR, t5:DIR or clap:DIR "
                        "(hf:all-MiniLM-L6-v2 once `n2m models fetch` has run)")
    if text and not settings.labels and settings.no_meta_text:
        raise UserError(f"stage {stage.name} needs captions: pass --labels NAME or allow the clips' metadata text")
    width = (text_width(settings.text_encoder) if settings.text_encoder else PAPER_TEXT_DIM) if text else 0
    melody = MELODY_CHANNELS if conditioning.melody else 0
    net = _net_overrides(stage.network(settings.preset, width, conditioning.joint_dim, melody).to_dict(), settings.net)
    pick = lambda value, default: default if value is None else value  # noqa: E731
    precision = settings.precision or ("bf16-mixed" if _gpu_requested(settings.accelerator) else "32-true")
    return TrainConfig(
        stage=stage.name,
        preset=settings.preset,
        spec=stage.to_dict(),
        net=net,
        text_encoder=absolute(settings.text_encoder) if text and settings.text_encoder else None,
        conditioning=conditioning,
        diffusion=DiffusionConfig(
            schedule=pick(settings.schedule, stage.schedule),
            parametrisation=pick(settings.parametrisation, stage.parametrisation),
            weighting=pick(settings.weighting, stage.weighting),
            cfg_dropout=pick(settings.cfg_dropout, stage.cfg_dropout),
            audio_dropout=pick(settings.audio_dropout, stage.cfg_dropout) if conditioning.joint else 0.0,
            joint_noise=settings.joint_noise,
            aug_t_max=pick(settings.aug_t_max, stage.aug_t_max),
            aug_blur_sigma=stage.aug_blur_sigma,
            token_length=stage.token_length,
            data_scale=settings.data_scale,
            t_min=settings.t_min,
        ),
        optim=OptimConfig(
            optimizer=settings.optimizer, lr=settings.lr, weight_decay=settings.weight_decay, warmup_steps=settings.warmup_steps,
            decay_steps=settings.decay_steps, min_lr_ratio=settings.min_lr_ratio, ema_decay=settings.ema_decay,
            grad_clip=settings.grad_clip, compile=bool(settings.compile),
        ),
        data=DataConfig(
            build=settings.build and str(settings.build), labels=settings.labels, batch_size=settings.batch_size,
            num_workers=settings.num_workers, shuffle_buffer=settings.shuffle_buffer,
            window_s=_window(settings.window) or stage.window_s, meta_text=not settings.no_meta_text,
            exclude_holdout=bool(settings.exclude_holdout), val_samples=settings.val_samples, seed=settings.seed,
            text_cache=settings.text_cache,
        ),
        trainer=TrainerConfig(
            max_steps=pick(settings.max_steps, stage.paper_steps), accelerator=settings.accelerator, devices=settings.devices,
            num_nodes=settings.num_nodes, strategy=settings.strategy, precision=precision, val_every=settings.val_every,
            checkpoint_every=settings.checkpoint_every, log_every=settings.log_every, max_minutes=settings.max_minutes,
        ),
        lineage=_lineage(settings, strict),
        versions=versions(),
    )


def _gpu_requested(accelerator: str) -> bool:
    import torch

    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())


def _resume_path(settings: TrainSettings) -> Path | None:
    if not settings.resume:
        return None
    if settings.resume == "last" and not settings.out:
        raise UserError("--resume without CKPT resumes RUNDIR/checkpoints/last.ckpt: pass --out RUNDIR")
    path = Path(settings.out) / "checkpoints" / "last.ckpt" if settings.resume == "last" else Path(settings.resume)
    if not path.is_file():
        raise UserError(f"cannot resume: {path} does not exist")
    return path


# ---------------------------------------------------------------------------------------------------------------------
# Running


@honours_quiet
def run_train(settings: TrainSettings, extra_callbacks: tuple = ()) -> int:
    """Resolve the config, then train (or with ``dry_run`` print it and the parameter count). ``extra_callbacks``: more
    Lightning callbacks (for programmatic use)."""
    if settings.every_stage:
        return _count_every_stage(settings)
    resume = _resume_path(settings)
    config = resolve_config(settings, strict=not settings.dry_run)
    if resume is not None:
        from n2m.training.export import read_checkpoint

        saved = read_checkpoint(resume).config
        if saved.stage != config.stage:
            raise UserError(f"{resume} trains stage {saved.stage}, not {config.stage}")
        config = saved.resumed_as(config)
    params = count_parameters(config.net)  # on the meta device: no memory, no weights
    if settings.dry_run:
        sys.stdout.write(yaml.safe_dump(config.to_dict(), sort_keys=False))
        assumed = config.net.text_dim > 0 and not config.text_encoder
        print(f"parameters: {params}"
              + (f" (with a {PAPER_TEXT_DIM}-wide text encoder; --text-encoder counts yours)" if assumed else ""))
        return 0
    if settings.num_nodes > 1 and not any(name in os.environ for name in _LAUNCHER_ENV):
        raise UserError(f"--num-nodes {settings.num_nodes}: start one n2m train per node under torchrun or SLURM, or with "
                        "NODE_RANK, MASTER_ADDR and MASTER_PORT set (docs/scaling.md); alone it would wait for the "
                        "other nodes forever")
    return fit(config, Path(settings.out), resume, params, extra_callbacks, quiet=settings.quiet)


def _count_every_stage(settings: TrainSettings) -> int:
    """``--dry-run`` without ``--stage``: every stage's parameter count at ``--preset``."""
    for name in STAGES:
        config = resolve_config(replace(settings, stage=name), strict=False)
        print(f"{name}: {count_parameters(config.net):,} parameters")
    return 0


def fit(config: TrainConfig, out: Path, resume: Path | None = None, params: int | None = None,
        extra_callbacks: tuple = (), quiet: bool = False) -> int:
    """Train with Lightning from a resolved config; prints a one-line summary. ``extra_callbacks``: more Lightning
    callbacks (for programmatic use); ``quiet``: no progress bar."""
    import lightning as L
    from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    from n2m.training.callbacks import BudgetStop, LastCheckpoint
    from n2m.training.data import ShardDataModule
    from n2m.training.encoder_ref import resolve
    from n2m.training.module import DiffusionModule
    from n2m.training.text import load_text_encoder

    verbose = logging.getLogger().isEnabledFor(logging.INFO)  # n2m.cli sets the root logger to INFO for --verbose
    logging.getLogger("lightning.pytorch").setLevel(logging.INFO if verbose else logging.WARNING)  # GPU available, tips
    if not verbose:
        warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")  # Lightning's own
    trainer_cfg, data_cfg = config.trainer, config.data
    L.seed_everything(data_cfg.seed, workers=True, verbose=False)
    out.mkdir(parents=True, exist_ok=True)
    write_json(str(out / "config.json"), config.to_dict())

    module = DiffusionModule(config)
    if config.text_encoder:
        spec = resolve(config.text_encoder, config.lineage.get("text_encoder_sha1"), out)
        module.attach_text_encoder(load_text_encoder(spec, config.diffusion.token_length, data_cfg.text_cache))
    else:
        module.attach_text_encoder(None)
    datamodule = ShardDataModule(get_stage(config.stage), data_cfg, length_multiple=module.net.cfg.total_stride,
                                 conditioning=config.conditioning)

    has_valid = data_cfg.val_samples > 0 and _has_valid_split(data_cfg.build)
    monitor = "val/loss" if has_valid else "train/loss"
    ckpt_dir = out / "checkpoints"
    callbacks = [
        *([BudgetStop(module.budget)] if trainer_cfg.max_minutes else []),
        ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor=monitor, mode="min", save_top_k=1,
                        enable_version_counter=False,
                        every_n_train_steps=None if has_valid else trainer_cfg.checkpoint_every),
        LastCheckpoint(ckpt_dir / "last.ckpt", trainer_cfg.checkpoint_every),
        LearningRateMonitor(logging_interval="step"),
        *extra_callbacks,
    ]
    trainer = L.Trainer(
        max_steps=trainer_cfg.max_steps,
        accelerator=trainer_cfg.accelerator,
        devices=trainer_cfg.devices,
        num_nodes=trainer_cfg.num_nodes,
        strategy=trainer_cfg.strategy,
        precision=trainer_cfg.precision,
        gradient_clip_val=config.optim.grad_clip or None,
        val_check_interval=min(trainer_cfg.val_every, trainer_cfg.max_steps) if has_valid else None,
        check_val_every_n_epoch=None,
        limit_val_batches=None if has_valid else 0,
        num_sanity_val_steps=0,
        log_every_n_steps=trainer_cfg.log_every,
        logger=[CSVLogger(str(out), name="csv", version=""), TensorBoardLogger(str(out), name="tb", version="")],
        callbacks=callbacks,
        default_root_dir=str(out),
        enable_model_summary=False,
        enable_progress_bar=not quiet,
    )
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(resume) if resume else None, weights_only=True)
    if trainer_cfg.max_steps == 0 and resume is None:  # Lightning runs no step, so no callback writes one
        trainer.save_checkpoint(str(ckpt_dir / "last.ckpt"), weights_only=False)
    if trainer.is_global_zero:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k in ("train/loss", "val/loss")}
        shown = ", ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items()))
        params = params if params is not None else sum(p.numel() for p in module.net.parameters())
        cut = (f" ({trainer_cfg.max_minutes:g}-minute budget spent, of {trainer_cfg.max_steps} steps)"
               if module.budget.spent() and trainer.global_step < trainer_cfg.max_steps else "")
        print(f"n2m train: {config.stage} ({params:,} parameters) reached step {trainer.global_step}{cut}; {shown}; "
              f"checkpoints in {ckpt_dir}")
    return 0


def _has_valid_split(build: str) -> bool:
    return bool(committed_shards(build, ["valid"]))

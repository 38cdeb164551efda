"""``n2m train``: train one stage of the Noise2Music cascade from a build's shards and a label set.

Before training, every shard is checked against its commit marker (byte count and SHA-1), the label set must have
been made from this build, and at least one training example must be possible (n2m.layout, training.data_checks).
The resolved config (:class:`training.config.TrainConfig`: sections ``net``, ``diffusion``, ``optim``, ``data``,
``trainer``, ``lineage`` and ``conditioning``: captions, the joint model's audio embedding or both, and the melody,
:mod:`training.conditioning`) is printed by ``--dry-run`` (which reads no build, weights or text encoder), written to
``RUNDIR/config.json`` and stored in every checkpoint. ``RUNDIR`` gets ``checkpoints/last.ckpt``
(every ``--checkpoint-every`` steps and at the end) and ``checkpoints/best.ckpt`` (lowest validation loss), CSV logs
under ``csv/`` and TensorBoard logs under ``tb/``. Multi-GPU and multi-node runs use Lightning's own flags, ``--devices`` per node and ``--num-nodes``: one
``n2m train`` per node, started by torchrun, SLURM's srun, or by hand with ``NODE_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT`` set (docs/scaling.md); each rank reads its own shards of every epoch (training.data).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import yaml

from n2m.config import (
    FRACTION,
    NONNEGATIVE,
    NONNEGATIVE_INT,
    POSITIVE,
    POSITIVE_INT,
    checked,
    leaf,
)
from n2m.errors import UserError
from n2m.layout import BuildLayout, build_id, check_label_set, committed_shards
from n2m.names import check_name
from n2m.provenance import file_hash, versions
from n2m.storage import write_json
from training.conditioning import MELODY_CHANNELS, resolve_conditioning
from training.conditioning import add_train_arguments as add_conditioning_arguments
from training.config import (
    OPTIMIZERS,
    UNIT_OPEN,
    DataConfig,
    DiffusionConfig,
    OptimConfig,
    TrainConfig,
    TrainerConfig,
    network_config,
)
from training.diffusion.denoiser import PARAMETRISATIONS, WEIGHTINGS
from training.diffusion.schedules import SCHEDULES
from training.networks.presets import PAPER_TEXT_DIM, PRESETS, count_parameters
from training.stages import STAGES, get_stage

# Set by what starts one process per node (by hand, torchrun, SLURM, LSF, MPI); Lightning reads the node rank from them
_LAUNCHER_ENV = ("NODE_RANK", "GROUP_RANK", "RANK", "SLURM_NTASKS", "LSB_JOBID", "OMPI_COMM_WORLD_SIZE")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    req = parser.add_argument_group("what to train (required, on the command line or in --config)")
    req.add_argument("--stage", choices=list(STAGES),
                     help="; ".join(f"{s.name}: {s.description}" for s in STAGES.values()))
    req.add_argument("--build", metavar="OUT", help="build output directory (n2m build --out)")
    req.add_argument("--labels", metavar="NAME",
                     help="label set under OUT/labels/ whose captions condition the model; it must have been made "
                          "from this build (its manifest's build id equals build.json's)")
    req.add_argument("--preset", choices=list(PRESETS),
                     help="network size: paper (Noise2Music tables 7-8), small (3-7M parameters a stage, CPU demos) "
                          "or tiny (CPU tests)")
    req.add_argument("--text-encoder", metavar="KIND:DIR",
                     help="frozen text encoder for text stages: hf:DIR (any transformers text encoder; "
                          "hf:all-MiniLM-L6-v2 finds the model `n2m models fetch` installed), t5:DIR (T5EncoderModel "
                          "directory) or clap:DIR (a CLAP or joint model directory's text tower); recorded as an absolute path plus the directory's "
                          "content hash, so sampling finds it from any folder (and by hash if it moves)")
    req.add_argument("--out", metavar="RUNDIR", help="run directory (checkpoints, logs, config)")
    req.add_argument("--net", action="append", default=[], metavar="KEY=VALUE",
                     help="override a network config field, e.g. --net base_channels=128 --net 'num_res_blocks=[1,2]'")

    opt = parser.add_argument_group("optimisation (Noise2Music section 4 defaults)")
    opt.add_argument("--max-steps", type=NONNEGATIVE_INT, help="training steps (default: the paper's for the stage); 0 writes "
                     "the initial, untrained weights as checkpoints/last.ckpt (a step-0 baseline for n2m eval)")
    opt.add_argument("--batch-size", type=POSITIVE_INT, default=DataConfig.batch_size,
                     help="examples per step per device")
    opt.add_argument("--optimizer", default=OptimConfig.optimizer, choices=list(OPTIMIZERS),
                     help=f"betas {OptimConfig.betas}")
    opt.add_argument("--lr", type=POSITIVE, default=OptimConfig.lr, help="peak learning rate")
    opt.add_argument("--weight-decay", type=NONNEGATIVE, default=OptimConfig.weight_decay, help="weight decay")
    opt.add_argument("--warmup-steps", type=NONNEGATIVE_INT, default=OptimConfig.warmup_steps,
                     help="linear warm-up steps")
    opt.add_argument("--decay-steps", type=POSITIVE_INT, default=OptimConfig.decay_steps,
                     help="cosine decay reaches --min-lr-ratio here")
    opt.add_argument("--min-lr-ratio", type=FRACTION, default=OptimConfig.min_lr_ratio, help="final learning rate / peak")
    opt.add_argument("--ema-decay", type=UNIT_OPEN, default=OptimConfig.ema_decay,
                     help="EMA decay of the weights used to validate/export")
    opt.add_argument("--grad-clip", type=NONNEGATIVE, default=OptimConfig.grad_clip,
                     help="gradient norm clipping (0 = off)")
    opt.add_argument("--compile", action="store_true", help="torch.compile the network")

    dif = parser.add_argument_group("diffusion (default: the stage's)")
    dif.add_argument("--schedule", choices=list(SCHEDULES), help="noise schedule")
    dif.add_argument("--parametrisation", choices=list(PARAMETRISATIONS), help="what the network predicts")
    dif.add_argument("--weighting", choices=list(WEIGHTINGS), help="loss weight: 1 (simplified) or sigma_t^2 (sigma)")
    dif.add_argument("--cfg-dropout", "--text-dropout", type=FRACTION, dest="cfg_dropout",
                     help="probability of dropping an example's text (classifier-free guidance)")
    dif.add_argument("--aug-t-max", type=FRACTION, help="conditioning augmentation: max diffusion time of the low-fi input")

    dat = parser.add_argument_group("data")
    dat.add_argument("--window", metavar="MIN[,MAX]",
                     help="training window in seconds (default: the stage's); clips shorter than the window are "
                          "zero-padded, with one warning giving the padding share when it exceeds 10%%")
    dat.add_argument("--num-workers", type=NONNEGATIVE_INT, default=DataConfig.num_workers,
                     help="data-loader worker processes per device")
    dat.add_argument("--shuffle-buffer", type=POSITIVE_INT, default=DataConfig.shuffle_buffer,
                     help="samples in the shuffle buffer")
    dat.add_argument("--no-meta-text", action="store_true", help="do not use the clips' metadata text as captions")
    dat.add_argument("--exclude-holdout", action="store_true",
                     help="skip clips whose source is marked held out (a 'holdout' manifest column, e.g. n2m synth "
                          "--holdout, carried into the clip json by n2m build), so held-out tracks stay unseen for "
                          "eval; an error before training when no clip is left")
    dat.add_argument("--text-cache", type=NONNEGATIVE_INT, default=DataConfig.text_cache, metavar="N",
                     help="cache N encoded captions (0 = off)")
    dat.add_argument("--val-samples", type=NONNEGATIVE_INT, default=DataConfig.val_samples,
                     help="valid-split clips in the fixed validation set")
    dat.add_argument("--seed", type=int, default=DataConfig.seed, help="seed of weights, data order and noise")

    run = parser.add_argument_group("trainer (Lightning)")
    run.add_argument("--accelerator", default=TrainerConfig.accelerator, help="cpu, gpu, auto, ...")
    run.add_argument("--devices", default=TrainerConfig.devices, help="devices per node: N, a list, or auto")
    run.add_argument("--num-nodes", type=POSITIVE_INT, default=TrainerConfig.num_nodes,
                     help="nodes for multi-node DDP: start one n2m train per node (same flags) under torchrun or "
                          "SLURM, or with NODE_RANK, MASTER_ADDR and MASTER_PORT set; each rank reads its own shards "
                          "(docs/scaling.md)")
    run.add_argument("--strategy", default=TrainerConfig.strategy,
                     help="auto, ddp, ddp_find_unused_parameters_true, fsdp, ...")
    run.add_argument("--precision", help="Lightning precision (default: bf16-mixed on GPU, 32-true on CPU)")
    run.add_argument("--val-every", type=POSITIVE_INT, default=TrainerConfig.val_every, help="validate every N steps")
    run.add_argument("--checkpoint-every", type=POSITIVE_INT, default=TrainerConfig.checkpoint_every,
                     help="write last.ckpt every N steps")
    run.add_argument("--log-every", type=POSITIVE_INT, default=TrainerConfig.log_every, help="log every N steps")
    run.add_argument("--resume", nargs="?", const="last", metavar="CKPT",
                     help="resume exactly (weights, optimizer, step) from CKPT, or RUNDIR/checkpoints/last.ckpt")
    run.add_argument("--dry-run", action="store_true",
                     help="print the resolved config and parameter count, then exit; needs no build, no weights and "
                          f"no text encoder (without one, a text stage counts a {PAPER_TEXT_DIM}-wide encoder, "
                          "T5-large's; without --stage, every stage's count at --preset)")
    add_conditioning_arguments(parser)
    leaf(parser, run_train)


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


def _lineage(args: argparse.Namespace, strict: bool) -> dict[str, Any]:
    """Build id, label set (refused unless made from this build) and text encoder identity (absolute path + content
    hash, :mod:`training.encoder_ref`) recorded with the run; a dry run without ``--build`` records none."""
    from training.encoder_ref import record

    out: dict[str, Any] = {"build": args.build and str(args.build), "labels": args.labels,
                           "text_encoder": args.text_encoder}
    out["build_id"] = (build_id(args.build) or None) if args.build else None
    layout = BuildLayout(args.build or "")
    if strict and not out["build_id"]:
        raise UserError(f"{layout.build_json} is missing: is {args.build} an n2m build?")
    if args.labels and strict:
        check_label_set(args.build, args.labels)
        out["label_manifest_sha1"] = file_hash(layout.label_manifest(args.labels))
    if args.text_encoder and strict:
        out.update(record(args.text_encoder))
    return out


def resolve_config(args: argparse.Namespace, strict: bool = True) -> TrainConfig:
    """The full training config from the command line (see the module docstring). Not ``strict`` (``--dry-run``):
    nothing on disk is read but what the flags name, and a text stage without ``--text-encoder`` counts a
    :data:`PAPER_TEXT_DIM`-wide one."""
    from training.encoder_ref import absolute
    from training.text import text_width

    stage = get_stage(args.stage)
    if args.labels is not None:
        check_name(args.labels, "--labels")
    conditioning = resolve_conditioning(args, stage, strict)
    text = stage.text and conditioning.text
    if text and not args.text_encoder and strict:
        raise UserError(f"stage {stage.name} is text-conditioned: pass --text-encoder hf:DIR, t5:DIR or clap:DIR "
                        "(hf:all-MiniLM-L6-v2 once `n2m models fetch` has run)")
    if text and not args.labels and args.no_meta_text:
        raise UserError(f"stage {stage.name} needs captions: pass --labels NAME or allow the clips' metadata text")
    width = (text_width(args.text_encoder) if args.text_encoder else PAPER_TEXT_DIM) if text else 0
    melody = MELODY_CHANNELS if conditioning.melody else 0
    net = _net_overrides(stage.network(args.preset, width, conditioning.joint_dim, melody).to_dict(), args.net)
    pick = lambda value, default: default if value is None else value  # noqa: E731
    precision = args.precision or ("bf16-mixed" if _gpu_requested(args.accelerator) else "32-true")
    return TrainConfig(
        stage=stage.name,
        preset=args.preset,
        spec=stage.to_dict(),
        net=net,
        text_encoder=absolute(args.text_encoder) if text and args.text_encoder else None,
        conditioning=conditioning,
        diffusion=DiffusionConfig(
            schedule=pick(args.schedule, stage.schedule),
            parametrisation=pick(args.parametrisation, stage.parametrisation),
            weighting=pick(args.weighting, stage.weighting),
            cfg_dropout=pick(args.cfg_dropout, stage.cfg_dropout),
            audio_dropout=pick(args.audio_dropout, stage.cfg_dropout) if conditioning.joint else 0.0,
            aug_t_max=pick(args.aug_t_max, stage.aug_t_max),
            aug_blur_sigma=stage.aug_blur_sigma,
            token_length=stage.token_length,
        ),
        optim=OptimConfig(
            optimizer=args.optimizer, lr=args.lr, weight_decay=args.weight_decay, warmup_steps=args.warmup_steps,
            decay_steps=args.decay_steps, min_lr_ratio=args.min_lr_ratio, ema_decay=args.ema_decay,
            grad_clip=args.grad_clip, compile=bool(args.compile),
        ),
        data=DataConfig(
            build=args.build and str(args.build), labels=args.labels, batch_size=args.batch_size,
            num_workers=args.num_workers, shuffle_buffer=args.shuffle_buffer,
            window_s=_window(args.window) or stage.window_s, meta_text=not args.no_meta_text,
            exclude_holdout=bool(args.exclude_holdout), val_samples=args.val_samples, seed=args.seed,
            text_cache=args.text_cache,
        ),
        trainer=TrainerConfig(
            max_steps=pick(args.max_steps, stage.paper_steps), accelerator=args.accelerator, devices=args.devices,
            num_nodes=args.num_nodes, strategy=args.strategy, precision=precision, val_every=args.val_every,
            checkpoint_every=args.checkpoint_every, log_every=args.log_every,
        ),
        lineage=_lineage(args, strict),
        versions=versions(),
    )


def _gpu_requested(accelerator: str) -> bool:
    import torch

    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())


def _resume_path(args: argparse.Namespace) -> Path | None:
    if not args.resume:
        return None
    if args.resume == "last" and not args.out:
        raise UserError("--resume without CKPT resumes RUNDIR/checkpoints/last.ckpt: pass --out RUNDIR")
    path = Path(args.out) / "checkpoints" / "last.ckpt" if args.resume == "last" else Path(args.resume)
    if not path.is_file():
        raise UserError(f"cannot resume: {path} does not exist")
    return path


# ---------------------------------------------------------------------------------------------------------------------
# Running


def run_train(args: argparse.Namespace, extra_callbacks: tuple = ()) -> int:
    if args.dry_run and not args.stage and args.preset:
        return _count_every_stage(args)
    needed = ("stage", "preset") if args.dry_run else ("stage", "build", "preset", "out")
    missing = [f"--{k}" for k in needed if getattr(args, k) in (None, "")]
    if missing:
        raise UserError(f"missing {', '.join(missing)} (give them as flags or in --config)")
    resume = _resume_path(args)
    config = resolve_config(args, strict=not args.dry_run)
    if resume is not None:
        from training.export import read_checkpoint

        saved = read_checkpoint(resume).config
        if saved.stage != config.stage:
            raise UserError(f"{resume} trains stage {saved.stage}, not {config.stage}")
        config = saved.resumed_as(config)
    params = count_parameters(config.net)  # on the meta device: no memory, no weights
    if args.dry_run:
        sys.stdout.write(yaml.safe_dump(config.to_dict(), sort_keys=False))
        assumed = config.net.text_dim > 0 and not config.text_encoder
        print(f"parameters: {params}"
              + (f" (with a {PAPER_TEXT_DIM}-wide text encoder; --text-encoder counts yours)" if assumed else ""))
        return 0
    if args.num_nodes > 1 and not any(name in os.environ for name in _LAUNCHER_ENV):
        raise UserError(f"--num-nodes {args.num_nodes}: start one n2m train per node under torchrun or SLURM, or with "
                        "NODE_RANK, MASTER_ADDR and MASTER_PORT set (docs/scaling.md); alone it would wait for the "
                        "other nodes forever")
    return fit(config, Path(args.out), resume, params, extra_callbacks)


def _count_every_stage(args: argparse.Namespace) -> int:
    """``--dry-run`` without ``--stage``: every stage's parameter count at ``--preset``."""
    for name in STAGES:
        config = resolve_config(argparse.Namespace(**{**vars(args), "stage": name}), strict=False)
        print(f"{name}: {count_parameters(config.net):,} parameters")
    return 0


def fit(config: TrainConfig, out: Path, resume: Path | None = None, params: int | None = None,
        extra_callbacks: tuple = ()) -> int:
    """Train with Lightning from a resolved config; prints a one-line summary. ``extra_callbacks``: more Lightning
    callbacks (for programmatic use)."""
    import lightning as L
    from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    from training.callbacks import LastCheckpoint
    from training.data import ShardDataModule
    from training.encoder_ref import resolve
    from training.module import DiffusionModule
    from training.text import load_text_encoder

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
    )
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(resume) if resume else None, weights_only=True)
    if trainer_cfg.max_steps == 0 and resume is None:  # Lightning runs no step, so no callback writes one
        trainer.save_checkpoint(str(ckpt_dir / "last.ckpt"), weights_only=False)
    if trainer.is_global_zero:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k in ("train/loss", "val/loss")}
        shown = ", ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items()))
        params = params if params is not None else sum(p.numel() for p in module.net.parameters())
        print(f"n2m train: {config.stage} ({params:,} parameters) reached step {trainer.global_step}; {shown}; "
              f"checkpoints in {ckpt_dir}")
    return 0


def _has_valid_split(build: str) -> bool:
    return bool(committed_shards(build, ["valid"]))

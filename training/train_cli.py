"""``n2m train``'s command line: the options, parsed into :class:`n2m.training.train_job.TrainSettings` for the job
:func:`n2m.training.train_job.run_train` (train one stage of the Noise2Music cascade from a build's shards and a label set;
its module docstring says what a run reads and writes).
"""

from __future__ import annotations

import argparse

from n2m.config import FRACTION, NONNEGATIVE, NONNEGATIVE_INT, POSITIVE, POSITIVE_INT, job, leaf
from n2m.training.conditioning import CONDITIONS
from n2m.training.config import OPTIMIZERS, UNIT_OPEN, DataConfig, DiffusionConfig, OptimConfig, TrainerConfig
from n2m.training.diffusion.denoiser import PARAMETRISATIONS, WEIGHTINGS
from n2m.training.diffusion.schedules import SCHEDULES
from n2m.training.networks.presets import PAPER_TEXT_DIM, PRESETS
from n2m.training.stages import STAGES

# the run function of the parser, also for callers holding parsed options: run_train(args, extra_callbacks=(...))
run_train = job("n2m.training.train_job:run_train")
# the resolved config (n2m.training.config.TrainConfig) of parsed options: resolve_config(args, strict=...)
resolve_config = job("n2m.training.train_job:resolve_config")


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
    opt.add_argument("--max-minutes", type=NONNEGATIVE, default=TrainerConfig.max_minutes, metavar="M",
                     help="also stop after M minutes of training (0 = no limit); the learning-rate schedule runs on the "
                          "larger of the step and time fractions used, so a run cut short still decays in full")
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
    dif.add_argument("--data-scale", type=POSITIVE, default=DiffusionConfig.data_scale,
                     help="diffuse data_scale x the signal: 4 brings the log-mel (std 0.25) to unit deviation "
                          "(1 = the paper's setting)")
    dif.add_argument("--t-min", type=UNIT_OPEN, default=DiffusionConfig.t_min, metavar="T",
                     help="train on noise levels t ~ U[T, 1] (0 = the paper's U[0, 1]); a sampler stopped at "
                          "--t-stop T never runs the network below T")
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
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    _conditioning_arguments(parser)
    leaf(parser, run_train)


def _conditioning_arguments(parser: argparse.ArgumentParser) -> None:
    """The conditioning flags (:mod:`n2m.training.conditioning`; ``--text-dropout`` is ``--cfg-dropout``'s other name)."""
    group = parser.add_argument_group("conditioning beyond captions (MusicLM, MusicGen-Style)")
    group.add_argument("--condition", choices=CONDITIONS, default="text",
                       help="text stages: caption tokens (text), the joint model's audio embedding of each clip "
                            "(audio-embedding: clips without captions train too; a text prompt's joint text "
                            "embedding replaces it at sampling), both (text+audio-embedding), or the caption tokens "
                            "plus the joint model's text embedding of the same caption (text+text-embedding: a "
                            "pooled, audio-aligned summary of the caption; text prompts only)")
    group.add_argument("--joint-model", metavar="DIR",
                       help="joint audio-text model for the joint-embedding conditions (a CLAP directory or n2m "
                            "clap-train's model on pretrained towers); recorded by content hash")
    group.add_argument("--audio-dropout", type=FRACTION, metavar="P",
                       help="probability of dropping an example's joint embedding (audio, or the caption's text "
                            "embedding; default: the stage's text dropout), independent of the text's")
    group.add_argument("--joint-noise", type=NONNEGATIVE, default=0.0, metavar="XI",
                       help="perturb each training clip's joint embedding by noise of XI times its norm and "
                            "renormalise (LAFITE), so that text embeddings and mixes of clips, which lie between the "
                            "clips' points, fall where the stage trained; 0: off")
    group.add_argument("--melody", action="store_true",
                       help="generator stages: condition on the melody (argmax chroma, n2m.melody) of the training "
                            "window, 12 more input channels; n2m sample then needs --melody FILE")

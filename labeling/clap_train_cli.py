"""``n2m clap-train``'s command line: the options, parsed into :class:`n2m.labeling.clap_train.ClapTrainSettings` for the
job :func:`n2m.labeling.clap_train.run_clap_train` (contrastive training of a small CLAP, fine-tuning one, or a joint model
on pretrained towers: :mod:`n2m.labeling.clap_towers`)."""

from __future__ import annotations

import argparse

from n2m.cli import old_spellings
from n2m.config import FRACTION, NONNEGATIVE, NONNEGATIVE_INT, POSITIVE, POSITIVE_INT, job, leaf, number
from n2m.joint import DEFAULT_LAYERS
from n2m.labeling.clap_train import TAG_LOSS
from n2m.labeling.presets import PRESETS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--build", required=True, metavar="OUT", help="build output folder (n2m build --out)")
    parser.add_argument("--captions", required=True, metavar="MANIFEST",
                        help="manifest with a caption per track (path/url + caption columns; n2m synth's "
                             "manifest.jsonl); rows with holdout: true are kept out of training")
    parser.add_argument("--out", required=True, metavar="DIR", help="output model directory: a transformers CLAP, or with --text-init/--audio-init "
                             "a joint model on pretrained towers (both load wherever a CLAP directory goes)")
    parser.add_argument("--preset", default="tiny", choices=sorted(PRESETS),
                        help="model size when training from scratch (default tiny)")
    old_spellings(parser, parser.add_argument(
        "--joint-model", dest="init", metavar="DIR",  # the setting keeps its name (docs/architecture.md, section 6)
        help="fine-tune this CLAP directory instead of a fresh preset"), "--init")
    parser.add_argument("--max-steps", type=POSITIVE_INT, default=3000, help="stop after this many optimiser steps")
    parser.add_argument("--minutes", type=POSITIVE, default=5.0, help="stop after this much training time")
    parser.add_argument("--batch-size", type=number(int, low=2), default=32, help="tracks per contrastive batch (distinct tracks; >= 2, a batch needs negatives)")
    parser.add_argument("--lr", type=POSITIVE, default=None,
                        help="peak learning rate (default 1e-3 from scratch and for the heads on pretrained towers, "
                             "1e-5 with --joint-model)")
    parser.add_argument("--weight-decay", type=NONNEGATIVE, default=0.01, help="AdamW weight decay")
    parser.add_argument("--warmup", type=NONNEGATIVE_INT, default=100, help="linear warm-up steps")
    parser.add_argument("--tag-prob", type=FRACTION, default=None,
                        help="probability of pairing a window with a random subset of its track's tags instead of "
                             "its caption (keyword-to-caption augmentation, as in CLAP; 0 disables; default 0.5, "
                             "0.8 with pretrained towers)")
    parser.add_argument("--seed", type=NONNEGATIVE_INT, default=0, help="initialisation and batch sampling seed")
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    parser.add_argument("--threads", type=NONNEGATIVE_INT, default=0, help="torch CPU threads (0: torch's default)")
    old_spellings(parser, parser.add_argument("--overwrite", action="store_true",
                                              help="overwrite a non-empty --out directory"), "--force")
    _tower_arguments(parser.add_argument_group(
        "pretrained towers (LiT-style joint model; both --text-init and --audio-init, instead of --preset/--joint-model)"))
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    leaf(parser, job("n2m.labeling.clap_train:run_clap_train"))


def _tower_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--text-init", metavar="hf:DIR",
                       help="pretrained text tower: a transformers text encoder folder, or the name of one that "
                            "'n2m models fetch' installs (hf:all-MiniLM-L6-v2)")
    group.add_argument("--audio-init", metavar="musicnn:MODEL[:LAYER[+LAYER]]",
                       help="pretrained audio tower: a musicnn model name (MSD_musicnn, MTT_musicnn, MSD_vgg, ...) or "
                            f"folder, and the layers whose per-patch features it gives (default "
                            f"{'+'.join(DEFAULT_LAYERS['musicnn'])} for musicnn, "
                            f"{'+'.join(DEFAULT_LAYERS['vgg'])} for VGG; e.g. musicnn:MSD_musicnn:mean_pool+max_pool)")
    group.add_argument("--text-head-layers", type=number(int, low=0, high=2), default=0,
                       help="layers of the text head: 0 (default: none, the locked text tower's mean-pooled vector is "
                            "the joint space, as in LiT), 1 (linear) or 2 (Linear-GELU-Linear)")
    group.add_argument("--audio-head-layers", type=number(int, low=1, high=2), default=2,
                       help="layers of the audio head: 2 (Linear-GELU-Linear, default) or 1 (linear)")
    group.add_argument("--head-hidden", type=POSITIVE_INT, default=512, help="hidden width of 2-layer heads")
    group.add_argument("--embed-dim", type=POSITIVE_INT, default=None,
                       help="joint embedding size D (default: the text tower's width with --text-head-layers 0, "
                            "else 128)")
    group.add_argument("--dropout", type=number(float, low=0, high=1, high_open=True), default=0.1,
                       help="dropout on the heads' inputs while training (default 0.1)")
    group.add_argument("--text-views", type=NONNEGATIVE_INT, default=16,
                       help="tag-subset texts cached per training track (default 16; 0: captions only)")
    group.add_argument("--tag-loss", type=NONNEGATIVE, default=TAG_LOSS,
                       help=f"weight of the sigmoid tag loss: each window against every distinct tag of the training "
                            f"tracks, positive for its own track's tags (SigLIP's pairwise sigmoid; default {TAG_LOSS}, "
                            "0 disables)")
    group.add_argument("--tune-text-layers", type=NONNEGATIVE_INT, default=0,
                       help="also train the text tower's top N blocks (default 0: both towers locked)")
    group.add_argument("--tune-lr", type=POSITIVE, default=2e-5, help="peak learning rate of tuned tower blocks")

"""``n2m clap``: CLAP model utilities. ``n2m clap convert`` maps an original LAION checkpoint to the transformers layout
(the job: :func:`n2m.labeling.convert.run_convert` of :class:`n2m.labeling.convert.ConvertSettings`)."""

from __future__ import annotations

import argparse

from n2m.cli import old_spellings
from n2m.config import NONNEGATIVE, POSITIVE, POSITIVE_INT, SAMPLE_RATE, job, leaf
from n2m.labeling.convert import LAION_FEATURES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="clap_command", metavar="COMMAND", title="commands")
    convert = sub.add_parser(
        "convert", help="LAION CLAP .pt checkpoint -> transformers ClapModel directory",
        description="Convert an original LAION CLAP checkpoint (HTSAT audio branch + RoBERTa text branch) into a "
                    "transformers ClapModel directory that n2m label, n2m eval and training load. Every checkpoint "
                    "key is mapped or dropped by a documented rule; anything else is an error.")
    add_convert_arguments(convert)


def add_convert_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", metavar="CKPT", help="original LAION CLAP .pt checkpoint "
                        "(e.g. music_audioset_epoch_15_esc_90.14.pt; HTSAT audio branch, RoBERTa text branch)")
    parser.add_argument("--text-model", required=True, metavar="ROBERTA_DIR",
                        help="local roberta-base directory: its config.json shapes the text tower, its tokenizer is copied")
    parser.add_argument("--out", required=True, metavar="DIR", help="output transformers ClapModel directory")
    parser.add_argument("--sample-rate", type=SAMPLE_RATE, default=LAION_FEATURES["sampling_rate"],
                        help="audio rate the checkpoint was trained at (LAION: 48000)")
    parser.add_argument("--fmin", type=NONNEGATIVE, default=LAION_FEATURES["frequency_min"],
                        help="lowest mel frequency (Hz), below --fmax")
    parser.add_argument("--fmax", type=POSITIVE, default=LAION_FEATURES["frequency_max"],
                        help="highest mel frequency (Hz), at most half of --sample-rate")
    parser.add_argument("--spec-size", type=POSITIVE_INT, default=256,
                        help="HTSAT input size (LAION: 256); checked by embedding one window of silence")
    old_spellings(parser, parser.add_argument("--overwrite", action="store_true",
                                              help="overwrite a non-empty --out directory"), "--force")
    leaf(parser, job("n2m.labeling.convert:run_convert"))
